//! The lease protocol: acquire (long-poll), heartbeat, commit, fail,
//! release — see `docs/leases.md`.
//!
//! Order of the search for data: dead letters queued for re-drive, then
//! ranges whose lease expired or failed (offered again first), then new
//! data — lanes `high`, `normal`, `low`, except that every
//! `low_priority_every`-th acquire starts at `low` (starvation guard: low
//! gets at least 1 lease in N while it has data).
//!
//! Durability: acquire, commit, fail and breaker transitions are flushed to
//! sled before the answer, so a broker crash loses no committed cursor and
//! re-offers every range that was out.

use crate::breaker::Admission;
use crate::core::{now_ms, Broker};
use crate::destination::{DestState, Destination, LeaseSource, LiveLease};
use crate::error::BrokerError;
use crate::store::{DeadLetterRecord, LeaseRecord};
use api::lease::*;
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::Duration;
use wal::{LaneId, Priority};

/// A lease being built under the destination lock.
struct Built {
    lease: Lease,
    record: Option<LeaseRecord>,
}

fn idle(reason: IdleReason, retry_after_ms: u64) -> AcquireResponse {
    AcquireResponse { lease: None, idle: Some(reason), retry_after_ms }
}

impl Broker {
    pub fn dest(&self, name: &str) -> Result<&Destination, BrokerError> {
        self.dest_by_name(name).ok_or_else(|| BrokerError::UnknownDestination(name.to_string()))
    }

    /// Lanes in the order this acquire should search them.
    fn lane_order(&self, acquire_no: u64) -> Vec<LaneId> {
        let shards = self.cfg.shards.max(1);
        let rot = (acquire_no % u64::from(shards)) as u16;
        let by_priority = |p: Priority| (0..shards).map(move |s| LaneId::new(p, (s + rot) % shards));
        let low_first = acquire_no.is_multiple_of(u64::from(self.cfg.low_priority_every));
        let order: Vec<Priority> = if low_first {
            vec![Priority::Low, Priority::High, Priority::Normal]
        } else {
            vec![Priority::High, Priority::Normal, Priority::Low]
        };
        order.into_iter().flat_map(by_priority).collect()
    }

    /// Acquire a lease, waiting up to `wait_ms` for data to arrive.
    pub async fn acquire(&self, dest_name: &str, req: AcquireRequest) -> Result<AcquireResponse, BrokerError> {
        let dest = self.dest(dest_name)?;
        let wait = Duration::from_millis(req.wait_ms.unwrap_or(0).min(self.cfg.max_long_poll_ms));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for wake-ups before looking, so no append slips between.
            let notified: Vec<_> = self.wal.lanes().map(|l| Box::pin(l.appended())).collect();
            let resp = self.try_acquire(dest, &req)?;
            if resp.lease.is_some() {
                self.store.flush().await?;
                self.metrics.leases_acquired.with_label_values(&[dest.name.as_str()]).inc();
                return Ok(resp);
            }
            let now = tokio::time::Instant::now();
            if resp.idle != Some(IdleReason::Empty) || now >= deadline {
                return Ok(resp);
            }
            let any = futures_select_any(notified);
            if tokio::time::timeout(deadline - now, any).await.is_err() {
                return Ok(idle(IdleReason::Empty, 0));
            }
        }
    }

    fn try_acquire(&self, dest: &Destination, req: &AcquireRequest) -> Result<AcquireResponse, BrokerError> {
        let now = now_ms();
        let mut st = dest.state();
        if st.paused {
            return Ok(idle(IdleReason::Paused, 1000));
        }
        if now < st.not_before_ms {
            return Ok(idle(IdleReason::Backoff, st.not_before_ms - now));
        }
        if st.leases.len() >= dest.cfg.max_in_flight as usize {
            return Ok(idle(IdleReason::MaxInFlight, 200));
        }
        let (next_breaker, admission) = st.breaker.admit(now, dest.policy);
        if let Admission::Deny { retry_after_ms } = admission {
            return Ok(idle(IdleReason::BreakerOpen, retry_after_ms));
        }
        let max_records =
            req.max_records.unwrap_or(self.cfg.max_lease_records).clamp(1, self.cfg.max_lease_records) as usize;
        let max_bytes = req.max_bytes.unwrap_or(self.cfg.max_lease_bytes).clamp(1, self.cfg.max_lease_bytes) as usize;
        st.acquires += 1;
        let probe = admission == Admission::Probe;
        let built = match self.build_redrive(dest, &mut st, max_records, now, probe)? {
            Some(b) => Some(b),
            None => self.build_from_lanes(dest, &mut st, max_records, max_bytes, now, probe)?,
        };
        self.persist_cursors(dest, &mut st)?;
        let Some(built) = built else {
            return Ok(idle(IdleReason::Empty, 0));
        };
        if probe {
            st.breaker = next_breaker;
            self.store.set_breaker(&dest.name, &st.breaker)?;
            tracing::info!(destination = %dest.name, "breaker half-open: probe lease handed out");
        }
        if let Some(rec) = &built.record {
            self.store.put_lease(&dest.name, rec)?;
        }
        Ok(AcquireResponse { lease: Some(built.lease), idle: None, retry_after_ms: 0 })
    }

    fn build_redrive(
        &self,
        dest: &Destination,
        st: &mut DestState,
        max_records: usize,
        now: u64,
        probe: bool,
    ) -> Result<Option<Built>, BrokerError> {
        let mut ids = Vec::new();
        let mut records = Vec::new();
        while records.len() < max_records {
            let Some(id) = st.redrive.pop_front() else {
                break;
            };
            if let Some(dl) = self.store.dead_letter(&dest.name, id)? {
                records.push(LeasedRecord {
                    offset: dl.offset,
                    tenant: dl.tenant,
                    topic: dl.topic,
                    ts_ms: dl.ts_ms,
                    payload_b64: api::b64_encode(&dl.payload),
                });
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Ok(None);
        }
        let id = st.next_lease_id(dest.idx);
        let (from, to) = (ids[0], ids[ids.len() - 1] + 1);
        st.leases.insert(
            id.clone(),
            LiveLease {
                id: id.clone(),
                source: LeaseSource::DeadLetters(ids),
                from,
                to,
                expires_at_ms: now + dest.lease_ms,
                acquired_at: std::time::Instant::now(),
                probe,
                redeliveries: 0,
            },
        );
        let lease = Lease {
            id,
            destination: dest.name.clone(),
            lane: "dead_letters".into(),
            from_offset: from,
            to_offset: to,
            lease_ms: dest.lease_ms,
            probe,
            redeliveries: 0,
            records,
        };
        Ok(Some(Built { lease, record: None }))
    }

    fn build_from_lanes(
        &self,
        dest: &Destination,
        st: &mut DestState,
        max_records: usize,
        max_bytes: usize,
        now: u64,
        probe: bool,
    ) -> Result<Option<Built>, BrokerError> {
        let order = self.lane_order(st.acquires);
        // Expired ranges first, in lane order.
        for &lane_id in &order {
            let Some(ll) = st.lanes.get_mut(&lane_id) else {
                continue;
            };
            while let Some((from, (to, redeliveries))) = ll.expired.pop_first() {
                let lane = self.wal.lane(lane_id).map_err(|e| BrokerError::Internal(e.to_string()))?;
                let from = from.max(lane.earliest_offset());
                if from >= to {
                    continue;
                }
                let records = self.read_matching(dest, lane_id, from, to, usize::MAX, usize::MAX)?.0;
                if records.is_empty() {
                    continue;
                }
                return Ok(Some(self.start_lease(dest, st, lane_id, from, to, records, redeliveries, now, probe)));
            }
        }
        for &lane_id in &order {
            let lane = self.wal.lane(lane_id).map_err(|e| BrokerError::Internal(e.to_string()))?;
            let end = lane.next_offset();
            // Bounded: skip at most a few reads of data not for this destination per lane.
            for _ in 0..16 {
                let Some(ll) = st.lanes.get_mut(&lane_id) else {
                    break;
                };
                ll.next_unleased = ll.next_unleased.max(lane.earliest_offset());
                let from = ll.next_unleased;
                if from >= end {
                    break;
                }
                let (records, to) = self.read_matching(dest, lane_id, from, end, max_records, max_bytes)?;
                ll.next_unleased = to;
                if records.is_empty() {
                    continue;
                }
                return Ok(Some(self.start_lease(dest, st, lane_id, from, to, records, 0, now, probe)));
            }
        }
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    fn start_lease(
        &self,
        dest: &Destination,
        st: &mut DestState,
        lane: LaneId,
        from: u64,
        to: u64,
        records: Vec<LeasedRecord>,
        redeliveries: u32,
        now: u64,
        probe: bool,
    ) -> Built {
        let id = st.next_lease_id(dest.idx);
        let expires_at_ms = now + dest.lease_ms;
        st.leases.insert(
            id.clone(),
            LiveLease {
                id: id.clone(),
                source: LeaseSource::Lane(lane),
                from,
                to,
                expires_at_ms,
                acquired_at: std::time::Instant::now(),
                probe,
                redeliveries,
            },
        );
        let record = LeaseRecord {
            id: id.clone(),
            lane: lane.to_string(),
            from,
            to,
            expires_at_ms,
            expired: false,
            probe,
            redeliveries,
        };
        let lease = Lease {
            id,
            destination: dest.name.clone(),
            lane: lane.to_string(),
            from_offset: from,
            to_offset: to,
            lease_ms: dest.lease_ms,
            probe,
            redeliveries,
            records,
        };
        Built { lease, record: Some(record) }
    }

    /// Records of [from, to) of a lane that go to `dest`, whole frames at a
    /// time up to the limits. Returns them and the end of what was read.
    fn read_matching(
        &self,
        dest: &Destination,
        lane_id: LaneId,
        from: u64,
        to: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<(Vec<LeasedRecord>, u64), BrokerError> {
        let lane = self.wal.lane(lane_id).map_err(|e| BrokerError::Internal(e.to_string()))?;
        let mut out = Vec::new();
        let (mut n, mut bytes, mut end) = (0usize, 0usize, from);
        lane.visit_frames(from, |f| {
            if f.header.base_offset >= to {
                return ControlFlow::Break(());
            }
            let wanted = dest.wants(f.tenant, f.topic);
            for (off, rec) in f.records() {
                if off < from || off >= to {
                    continue;
                }
                n += 1;
                bytes += rec.len();
                if wanted {
                    out.push(LeasedRecord {
                        offset: off,
                        tenant: f.tenant.to_string(),
                        topic: f.topic.to_string(),
                        ts_ms: f.header.ts_ms,
                        payload_b64: api::b64_encode(rec),
                    });
                }
            }
            end = f.header.next_offset().min(to);
            if n >= max_records || bytes >= max_bytes {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .map_err(|e| BrokerError::Internal(format!("reading lane {lane_id} for {}: {e}", dest.name)))?;
        Ok((out, end))
    }

    /// Write cursors that moved (no flush: the caller flushes).
    pub(crate) fn persist_cursors(&self, dest: &Destination, st: &mut DestState) -> Result<(), BrokerError> {
        let lanes: Vec<LaneId> = st.lanes.keys().copied().collect();
        for lane in lanes {
            let c = st.committed(lane);
            if st.persisted.get(&lane) != Some(&c) {
                self.store.set_cursor(&dest.name, &lane.to_string(), c)?;
                st.persisted.insert(lane, c);
            }
        }
        Ok(())
    }

    pub fn heartbeat(&self, dest_name: &str, id: &str) -> Result<HeartbeatResponse, BrokerError> {
        let dest = self.dest(dest_name)?;
        let mut st = dest.state();
        let lease = st.leases.get_mut(id).ok_or_else(|| BrokerError::LeaseNotFound(id.to_string()))?;
        lease.expires_at_ms = now_ms() + dest.lease_ms;
        Ok(HeartbeatResponse { lease_ms: dest.lease_ms })
    }

    pub async fn commit(&self, dest_name: &str, id: &str, req: CommitRequest) -> Result<CommitResponse, BrokerError> {
        let dest = self.dest(dest_name)?;
        let now = now_ms();
        let cursor = {
            let mut st = dest.state();
            let lease = st.leases.remove(id).ok_or_else(|| BrokerError::LeaseNotFound(id.to_string()))?;
            let poison = self.dead_letter_records(dest, &lease, &req.dead_letters, now)?;
            if !poison.is_empty() {
                self.store.add_dead_letters(&dest.name, &poison)?;
                dest.dead_letters.fetch_add(poison.len() as u64, Ordering::Relaxed);
                self.metrics.dead_letter_records.with_label_values(&[dest.name.as_str()]).inc_by(poison.len() as u64);
            }
            let cursor = match &lease.source {
                LeaseSource::Lane(lane) => {
                    self.store.remove_lease(&dest.name, id)?;
                    st.committed(*lane)
                }
                LeaseSource::DeadLetters(ids) => {
                    self.store.remove_dead_letters(&dest.name, ids)?;
                    dest.dead_letters.fetch_sub(ids.len() as u64, Ordering::Relaxed);
                    0
                }
            };
            if st.breaker != crate::breaker::Breaker::default() {
                st.breaker = st.breaker.on_success();
                self.store.set_breaker(&dest.name, &st.breaker)?;
                tracing::info!(destination = %dest.name, "breaker closed after a successful delivery");
            }
            self.persist_cursors(dest, &mut st)?;
            self.metrics
                .lease_seconds
                .with_label_values(&[dest.name.as_str()])
                .observe(lease.acquired_at.elapsed().as_secs_f64());
            cursor
        };
        self.store.flush().await?;
        self.metrics.leases_committed.with_label_values(&[dest.name.as_str()]).inc();
        Ok(CommitResponse { committed: true, cursor })
    }

    /// Dead-letter records for the offsets an exporter named, read back from
    /// the WAL (or the dead letters being re-driven).
    fn dead_letter_records(
        &self,
        dest: &Destination,
        lease: &LiveLease,
        poison: &[PoisonRecord],
        now: u64,
    ) -> Result<Vec<DeadLetterRecord>, BrokerError> {
        if poison.is_empty() {
            return Ok(Vec::new());
        }
        let errors: std::collections::HashMap<u64, &str> =
            poison.iter().map(|p| (p.offset, p.error.as_str())).collect();
        let mut out = Vec::new();
        match &lease.source {
            LeaseSource::Lane(lane) => {
                let (records, _) = self.read_matching(dest, *lane, lease.from, lease.to, usize::MAX, usize::MAX)?;
                for r in records {
                    if let Some(err) = errors.get(&r.offset) {
                        out.push(DeadLetterRecord {
                            lane: lane.to_string(),
                            offset: r.offset,
                            tenant: r.tenant,
                            topic: r.topic,
                            ts_ms: r.ts_ms,
                            payload: api::b64_decode(&r.payload_b64).unwrap_or_default(),
                            error: err.to_string(),
                            failed_at_ms: now,
                        });
                    }
                }
            }
            LeaseSource::DeadLetters(ids) => {
                for id in ids {
                    if let Some(mut dl) = self.store.dead_letter(&dest.name, *id)? {
                        if let Some(err) = errors.get(&dl.offset) {
                            dl.error = err.to_string();
                            dl.failed_at_ms = now;
                            out.push(dl);
                        }
                    }
                }
            }
        }
        if out.len() != poison.len() {
            return Err(BrokerError::InvalidRequest(format!(
                "{} of the dead-letter offsets are not records of lease {}",
                poison.len() - out.len(),
                lease.id
            )));
        }
        Ok(out)
    }

    /// Give a lease back: `Retryable` counts towards the breaker; `Released` does not.
    pub async fn fail(&self, dest_name: &str, id: &str, req: FailRequest) -> Result<(), BrokerError> {
        let dest = self.dest(dest_name)?;
        let now = now_ms();
        {
            let mut st = dest.state();
            let lease = st.leases.remove(id).ok_or_else(|| BrokerError::LeaseNotFound(id.to_string()))?;
            self.return_range(dest, &mut st, lease.clone())?;
            let before = st.breaker;
            st.breaker = match req.class {
                FailureClass::Retryable => st.breaker.on_failure(now, dest.policy),
                FailureClass::Released if lease.probe => st.breaker.on_probe_returned(now, dest.policy, false),
                FailureClass::Released => st.breaker,
            };
            if let Some(ms) = req.retry_after_ms {
                st.not_before_ms = st.not_before_ms.max(now + ms.min(300_000));
            }
            if st.breaker != before {
                self.store.set_breaker(&dest.name, &st.breaker)?;
                if st.breaker.state != before.state {
                    tracing::warn!(destination = %dest.name, state = st.breaker.state.as_str(), reason = %req.message, "breaker transition");
                }
            }
            self.persist_cursors(dest, &mut st)?;
        }
        self.store.flush().await?;
        Ok(())
    }

    /// Put a lease's range back to be offered first (and remember that durably).
    pub(crate) fn return_range(
        &self,
        dest: &Destination,
        st: &mut DestState,
        lease: LiveLease,
    ) -> Result<(), BrokerError> {
        match lease.source {
            LeaseSource::Lane(lane) => {
                if let Some(ll) = st.lanes.get_mut(&lane) {
                    ll.expired.insert(lease.from, (lease.to, lease.redeliveries + 1));
                }
                self.store.put_lease(
                    &dest.name,
                    &LeaseRecord {
                        id: lease.id,
                        lane: lane.to_string(),
                        from: lease.from,
                        to: lease.to,
                        expires_at_ms: lease.expires_at_ms,
                        expired: true,
                        probe: false,
                        redeliveries: lease.redeliveries + 1,
                    },
                )?;
            }
            LeaseSource::DeadLetters(ids) => {
                for id in ids.into_iter().rev() {
                    st.redrive.push_front(id);
                }
            }
        }
        Ok(())
    }

    /// Expire leases past their deadline; their ranges are offered again first.
    pub(crate) fn expire_leases(&self, dest: &Destination, now: u64) -> Result<usize, BrokerError> {
        let mut st = dest.state();
        let expired: Vec<String> =
            st.leases.values().filter(|l| l.expires_at_ms <= now).map(|l| l.id.clone()).collect();
        for id in &expired {
            let Some(lease) = st.leases.remove(id) else {
                continue;
            };
            if lease.probe {
                st.breaker = st.breaker.on_probe_returned(now, dest.policy, true);
                self.store.set_breaker(&dest.name, &st.breaker)?;
            }
            tracing::warn!(destination = %dest.name, lease = %id, "lease expired; its range will be offered again");
            self.return_range(dest, &mut st, lease)?;
            self.metrics.lease_expired.with_label_values(&[dest.name.as_str()]).inc();
        }
        Ok(expired.len())
    }
}

/// Resolve when any of the lanes' notifications fires.
async fn futures_select_any(mut notified: Vec<std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>>>) {
    std::future::poll_fn(|cx| {
        for n in notified.iter_mut() {
            if n.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}
