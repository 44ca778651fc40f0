//! What each maintenance pass does for the destinations: lease expiry,
//! lag accounting and the backpressure flags derived from it,
//! `drop_oldest`, age retention, and the release of segments every
//! destination has durably committed past.

use super::settle::skip_to;
use super::Deliveries;
use crate::destination::{Destination, Lag};
use crate::error::BrokerError;
use crate::maintenance::MaintenanceReport;
use config::OnLagLimit;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use wal::{Lane, LaneId};

impl Deliveries {
    /// Expire leases, account lag (dropping the oldest where configured) and
    /// mirror it in the gauges; flushed when anything changed. The lag's
    /// WAL scans run on the blocking pool.
    pub(crate) async fn upkeep(self: &Arc<Self>, now: u64, report: &mut MaintenanceReport) -> Result<(), BrokerError> {
        let mut dirty = false;
        for dest in self.dests().iter() {
            let (id, held) = (dest.id, Arc::clone(dest));
            let (expired, skips) = self.off_worker(move |d| d.upkeep_one(&held, now)).await?;
            report.leases_expired += expired;
            dirty |= expired > 0 || !skips.is_empty();
            report.skipped.extend(skips.into_iter().map(|(lane, to)| (id, lane, to)));
        }
        if dirty {
            self.store.flush().await?;
        }
        Ok(())
    }

    /// One destination's pass: leases expired, and the cursor moves of
    /// `drop_oldest`.
    fn upkeep_one(&self, dest: &Destination, now: u64) -> Result<(usize, Vec<(LaneId, u64)>), BrokerError> {
        let expired = self.expire_leases(dest, now)?;
        let mut lag = self.lag_of(dest, now);
        let mut skips = Vec::new();
        if dest.cfg.on_lag_limit == OnLagLimit::DropOldest && dest.over_limit(lag) {
            skips = self.drop_oldest(dest, lag, now)?;
            if !skips.is_empty() {
                lag = self.lag_of(dest, now);
            }
        }
        dest.publish_lag(lag);
        let name = dest.name.as_str();
        self.metrics.destination_lag_records.with_label_values(&[name]).set(lag.records as i64);
        self.metrics.destination_lag_bytes.with_label_values(&[name]).set(lag.bytes as i64);
        let age = lag.oldest_pending_age_ms as f64 / 1000.0;
        self.metrics.destination_oldest_pending_age.with_label_values(&[name]).set(age);
        self.publish_tenant_ages(dest, now);
        let (state, paused) = {
            let st = dest.state();
            (st.breaker.state, st.paused)
        };
        self.metrics.destination_breaker_state.with_label_values(&[name]).set(state.gauge());
        self.metrics.destination_paused.with_label_values(&[name]).set(i64::from(paused));
        Ok((expired, skips))
    }

    /// The records routed to `dest` that its cursors have not passed, from
    /// its pending account brought up to date (scans the WAL: call it off
    /// the async workers).
    pub fn lag_of(&self, dest: &Destination, now: u64) -> Lag {
        let cursors: Vec<(LaneId, u64)> = {
            let st = dest.state();
            self.wal.lanes().map(|l| (l.id(), st.committed(l.id()))).collect()
        };
        let routes = |tenant: &str, topic: &str| dest.wants(tenant, topic);
        let mut pending = dest.pending();
        let mut lag = Lag::default();
        let mut oldest: Option<u64> = None;
        for (id, cursor) in cursors {
            let Ok(lane) = self.wal.lane(id) else {
                continue;
            };
            let account = pending.entry(id).or_default();
            if let Err(e) = account.sync(lane, cursor, &routes) {
                lag.unsynced = true;
                tracing::warn!(destination = %dest.name, lane = %id, error = %e, "pending account not synced; retrying next pass");
            }
            let c = account.total();
            lag.records += c.records;
            lag.bytes += c.bytes;
            let p = &mut lag.by_priority[id.priority as usize];
            *p = (p.0 + c.records, p.1 + c.bytes);
            if let Some(ts) = account.oldest_ts_ms() {
                oldest = Some(oldest.map_or(ts, |o: u64| o.min(ts)));
            }
        }
        lag.oldest_pending_age_ms = oldest.map_or(0, |ts| now.saturating_sub(ts));
        lag
    }

    /// `weir_tenant_oldest_pending_age_seconds` of `dest`: per tenant label
    /// (tenants past `metrics_max_tenant_series` share `_other`, the oldest
    /// of theirs), from the pending account [`Deliveries::lag_of`] synced;
    /// a label with nothing pending any more goes back to 0.
    fn publish_tenant_ages(&self, dest: &Destination, now: u64) {
        let own = self.tenant_series();
        let mut oldest: std::collections::HashMap<Arc<str>, u64> = std::collections::HashMap::new();
        for account in dest.pending().values() {
            for (tenant, ts) in account.oldest_by_tenant() {
                let label: Arc<str> = match own.get(tenant) {
                    Some(name) => Arc::clone(name),
                    None => Arc::from(api::intake::OTHER_TENANTS),
                };
                let at = oldest.entry(label).or_insert(ts);
                *at = (*at).min(ts);
            }
        }
        let gauge = &self.metrics.tenant_oldest_pending_age;
        let mut shown = dest.tenant_ages.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for gone in shown.iter().filter(|label| !oldest.contains_key(*label)) {
            gauge.with_label_values(&[dest.name.as_str(), gone]).set(0.0);
        }
        for (label, ts) in &oldest {
            gauge.with_label_values(&[dest.name.as_str(), label]).set(now.saturating_sub(*ts) as f64 / 1000.0);
        }
        *shown = oldest.into_keys().collect();
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
        // Low first: what is dropped to get under the limit is the flood
        // that was demoted, before any in-rate tenant's records.
        let mut lanes: Vec<&Lane> = self.wal.lanes().collect();
        lanes.sort_by_key(|l| std::cmp::Reverse(l.id().priority));
        for lane in lanes {
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
                new_cursor = f.header.next_offset();
                // Only what is routed here was lag; the rest is passed over.
                if dest.wants(f.tenant, f.topic) {
                    freed_bytes += u64::from(f.header.body_len);
                    dropped += new_cursor - f.header.base_offset.max(cursor);
                }
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
        for dest in self.dests().iter() {
            let mut st = dest.state();
            let cursor = st.committed(lane.id());
            if cursor < end {
                self.transact(dest, &mut st, |next, _| skip_to(dest, next, lane.id(), end, now))?;
                report.skipped.push((dest.id, lane.id(), end));
                self.count_dropped(dest, end - cursor, "older than retention_max_age_secs");
            }
        }
        Ok(Some(end))
    }

    /// Delete sealed segments every destination has durably committed past.
    /// Cursors are flushed by commit before they are visible here.
    /// Returns the bytes the WAL holds afterwards.
    pub(crate) async fn retain(&self, now: u64, report: &mut MaintenanceReport) -> Result<u64, BrokerError> {
        let mut total_bytes = 0u64;
        for lane in self.wal.lanes() {
            let id = lane.id();
            if self.expire_by_age(lane, now, report)?.is_some() {
                // The moved cursors must be durable before segments go.
                self.store.flush().await?;
            }
            // What each destination still needs: from its first pending
            // routed record, not its cursor (records of other tenants and
            // topics below that are not its to hold).
            let released = self
                .dests()
                .iter()
                .map(|d| {
                    let cursor = d.state().persisted.get(&id).copied().unwrap_or(0);
                    d.pending().get(&id).map_or(cursor, |p| p.needed_from(cursor))
                })
                .min()
                .unwrap_or_else(|| lane.next_offset());
            // The lane's writer does the file work; this task waits off the async workers.
            let handle = self.wal.lane_handle(id).map_err(|source| BrokerError::Wal { lane: id, source })?;
            let n = match handle.release_below(released).await {
                Ok(n) => n,
                // A stop is under way: the next start retires what is left.
                Err(wal::WalError::ShuttingDown) => return Ok(total_bytes),
                Err(source) => return Err(BrokerError::Wal { lane: id, source }),
            };
            if n > 0 {
                self.metrics.segments_deleted.inc_by(n as u64);
                tracing::info!(lane = %id, segments = n, released, "retention deleted segments");
            }
            total_bytes += lane.segments().iter().map(|s| s.bytes).sum::<u64>();
        }
        self.metrics.wal_bytes.set(total_bytes as i64);
        Ok(total_bytes)
    }
}
