//! The periodic loop: lease expiry, lag accounting and the backpressure
//! flags derived from it, `drop_oldest`, retention, disk checks, and the
//! gauges that mirror all of it.

use crate::config::OnLagLimit;
use crate::core::Broker;
use crate::destination::{Destination, Lag};
use crate::error::BrokerError;
use crate::settle::skip_to;
use plumbing::clock::now_ms;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use wal::{Lane, LaneId};

/// Run until the process stops.
pub async fn run(b: Arc<Broker>) {
    let mut tick = tokio::time::interval(b.cfg.timing.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = b.maintain().await {
            tracing::error!(error = %e, "maintenance pass failed; retrying next tick");
        }
    }
}

/// Bytes of `lane` at or after `from`: exact for whole segments, prorated
/// inside the segment holding `from`.
fn bytes_after(lane: &Lane, from: u64) -> u64 {
    lane.segments()
        .iter()
        .filter(|s| s.next_offset > from)
        .map(|s| {
            let payload = s.bytes.saturating_sub(wal::segment::SEGMENT_HEADER_LEN as u64);
            if s.base_offset >= from {
                payload
            } else {
                let span = (s.next_offset - s.base_offset).max(1);
                payload * (s.next_offset - from) / span
            }
        })
        .sum()
}

fn first_ts_at(lane: &Lane, from: u64) -> Option<u64> {
    let mut ts = None;
    let _ = lane.visit_frames(from, |f| {
        ts = Some(f.header.ts_ms);
        ControlFlow::Break(())
    });
    ts
}

/// What one maintenance pass did to the destinations' cursors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub leases_expired: usize,
    /// (destination index, lane, offset): the cursor was moved forward to
    /// the offset by drop-oldest or age retention, dropping what was below.
    pub skipped: Vec<(usize, LaneId, u64)>,
}

impl Broker {
    /// One maintenance pass.
    pub async fn maintain(&self) -> Result<(), BrokerError> {
        self.maintain_at(now_ms()).await.map(|_| ())
    }

    /// One maintenance pass at `now` (the clock is an argument for the tests).
    pub async fn maintain_at(&self, now: u64) -> Result<MaintenanceReport, BrokerError> {
        let mut report = MaintenanceReport::default();
        let mut dirty = false;
        for dest in &self.dests {
            let expired = self.expire_leases(dest, now)?;
            report.leases_expired += expired;
            dirty |= expired > 0;
            let mut lag = self.lag_of(dest, now);
            if dest.cfg.on_lag_limit == OnLagLimit::DropOldest && dest.over_limit(lag) {
                let skips = self.drop_oldest(dest, lag, now)?;
                if !skips.is_empty() {
                    dirty = true;
                    lag = self.lag_of(dest, now);
                    report.skipped.extend(skips.into_iter().map(|(lane, to)| (dest.idx, lane, to)));
                }
            }
            dest.publish_lag(lag);
            let name = dest.name.as_str();
            self.metrics.destination_lag_records.with_label_values(&[name]).set(lag.records as i64);
            self.metrics.destination_lag_bytes.with_label_values(&[name]).set(lag.bytes as i64);
            let age = lag.oldest_pending_age_ms as f64 / 1000.0;
            self.metrics.destination_oldest_pending_age.with_label_values(&[name]).set(age);
            let state = dest.state().breaker.state;
            self.metrics.destination_breaker_state.with_label_values(&[name]).set(state.gauge());
        }
        if dirty {
            self.store.flush().await?;
        }
        self.retain(now, &mut report).await?;
        self.check_disk();
        self.idempotency.expire(now);
        for lane in self.wal.lanes() {
            let failed = i64::from(lane.failure().is_some());
            self.metrics.wal_lane_failed.with_label_values(&[&lane.id().to_string()]).set(failed);
        }
        Ok(report)
    }

    pub fn lag_of(&self, dest: &Destination, now: u64) -> Lag {
        let cursors: Vec<(LaneId, u64)> = {
            let st = dest.state();
            self.wal.lanes().map(|l| (l.id(), st.committed(l.id()))).collect()
        };
        let mut lag = Lag::default();
        let mut oldest: Option<u64> = None;
        for (id, cursor) in cursors {
            let Ok(lane) = self.wal.lane(id) else {
                continue;
            };
            let end = lane.next_offset();
            if cursor >= end {
                continue;
            }
            lag.records += end - cursor;
            lag.bytes += bytes_after(lane, cursor);
            if let Some(ts) = first_ts_at(lane, cursor) {
                oldest = Some(oldest.map_or(ts, |o: u64| o.min(ts)));
            }
        }
        lag.oldest_pending_age_ms = oldest.map_or(0, |ts| now.saturating_sub(ts));
        lag
    }

    /// `on_lag_limit = "drop_oldest"`: move the cursor forward past the
    /// oldest records until the lag is back under 90% of the limit. Returns
    /// the (lane, new cursor) of each lane it moved.
    fn drop_oldest(&self, dest: &Destination, lag: Lag, now: u64) -> Result<Vec<(LaneId, u64)>, BrokerError> {
        let target_bytes = lag.bytes.saturating_sub(dest.cfg.max_lag_bytes * 9 / 10);
        let target_records = if dest.cfg.max_lag_records > 0 {
            lag.records.saturating_sub(dest.cfg.max_lag_records * 9 / 10)
        } else {
            0
        };
        let mut st = dest.state();
        let (mut freed_bytes, mut dropped) = (0u64, 0u64);
        let mut skips = Vec::new();
        for lane in self.wal.lanes() {
            if freed_bytes >= target_bytes && dropped >= target_records {
                break;
            }
            let id = lane.id();
            let cursor = st.committed(id);
            let mut new_cursor = cursor;
            let _ = lane.visit_frames(cursor, |f| {
                if freed_bytes >= target_bytes && dropped >= target_records {
                    return ControlFlow::Break(());
                }
                freed_bytes += u64::from(f.header.body_len);
                new_cursor = f.header.next_offset();
                dropped += new_cursor - f.header.base_offset.max(cursor);
                ControlFlow::Continue(())
            });
            if new_cursor > cursor {
                skips.push((id, new_cursor));
            }
        }
        self.transact(dest, &mut st, |next, _| {
            for &(lane, to) in &skips {
                skip_to(dest, next, lane, to, now)?;
            }
            Ok(())
        })?;
        self.count_dropped(dest, dropped, "lag over limit (on_lag_limit = drop_oldest)");
        Ok(skips)
    }

    fn count_dropped(&self, dest: &Destination, dropped: u64, why: &str) {
        if dropped > 0 {
            dest.dropped.fetch_add(dropped, Ordering::Relaxed);
            self.metrics.destination_dropped_records.with_label_values(&[dest.name.as_str()]).inc_by(dropped);
            tracing::warn!(destination = %dest.name, dropped, "dropped records not yet delivered: {why}");
        }
    }

    /// `retention_max_age_secs`: the end offset of the newest sealed segment
    /// of `lane` whose records are all older than the limit, after moving
    /// every destination still behind it past it.
    fn expire_by_age(&self, lane: &Lane, now: u64, report: &mut MaintenanceReport) -> Result<Option<u64>, BrokerError> {
        let Some(max_age) = self.cfg.timing.retention_max_age else {
            return Ok(None);
        };
        let cutoff = now.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
        let Some(end) =
            lane.segments().iter().filter(|s| s.sealed && s.last_ts_ms < cutoff).map(|s| s.next_offset).max()
        else {
            return Ok(None);
        };
        for dest in &self.dests {
            let mut st = dest.state();
            let cursor = st.committed(lane.id());
            if cursor < end {
                self.transact(dest, &mut st, |next, _| skip_to(dest, next, lane.id(), end, now))?;
                report.skipped.push((dest.idx, lane.id(), end));
                self.count_dropped(dest, end - cursor, "older than retention_max_age_secs");
            }
        }
        Ok(Some(end))
    }

    /// Delete sealed segments every destination has durably committed past.
    /// Cursors are flushed by commit before they are visible here.
    async fn retain(&self, now: u64, report: &mut MaintenanceReport) -> Result<(), BrokerError> {
        let mut total_bytes = 0u64;
        for lane in self.wal.lanes() {
            let id = lane.id();
            if self.expire_by_age(lane, now, report)?.is_some() {
                // The moved cursors must be durable before segments go.
                self.store.flush().await?;
            }
            let released = self
                .dests
                .iter()
                .map(|d| d.state().persisted.get(&id).copied().unwrap_or(0))
                .min()
                .unwrap_or_else(|| lane.next_offset());
            // The lane's writer does the file work; this task waits off the async workers.
            let handle = self.wal.lane_handle(id).map_err(|e| BrokerError::Internal(e.to_string()))?;
            let n = match handle.release_below(released).await {
                Ok(n) => n,
                // A stop is under way: the next start retires what is left.
                Err(wal::WalError::ShuttingDown) => return Ok(()),
                Err(e) => return Err(BrokerError::Internal(e.to_string())),
            };
            if n > 0 {
                self.metrics.segments_deleted.inc_by(n as u64);
                tracing::info!(lane = %id, segments = n, released, "retention deleted segments");
            }
            total_bytes += lane.segments().iter().map(|s| s.bytes).sum::<u64>();
        }
        self.metrics.wal_bytes.set(total_bytes as i64);
        let over_quota = self.cfg.disk_quota_bytes > 0 && total_bytes >= self.cfg.disk_quota_bytes;
        self.disk.over_quota.store(over_quota, Ordering::Relaxed);
        Ok(())
    }

    fn check_disk(&self) {
        let ratio = disk_used_ratio(&self.cfg.data_dir);
        if let Some(r) = ratio {
            self.metrics.disk_used_ratio.set(r);
        }
        let over = ratio.is_some_and(|r| r > self.cfg.disk_high_watermark);
        self.disk.over_watermark.store(over, Ordering::Relaxed);
    }
}

/// Fraction of the filesystem holding `dir` that is in use.
fn disk_used_ratio(dir: &std::path::Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and a zeroed out-struct.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 || s.f_blocks == 0 {
        return None;
    }
    Some(1.0 - s.f_bavail as f64 / s.f_blocks as f64)
}
