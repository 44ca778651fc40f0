//! The lease protocol: acquire (long-poll), heartbeat, commit, fail,
//! release — see `docs/leases.md`.
//!
//! Order of the search for data: dead letters queued for re-drive, then
//! ranges whose lease expired or failed (offered again first), then new
//! data, in the order of the acquire's plan (`order.rs`): the weighted
//! share of priorities with its reservation (`crate::share`), and each
//! lease sized to its priority's target time (`crate::sizing`).
//!
//! Durability: acquire, commit, fail and breaker transitions are flushed to
//! sled before the answer, so a broker crash loses no committed cursor and
//! re-offers every range that was out. Every change goes through
//! `Deliveries::transact` and every lease ends through `settle::end_lease`.
//!
//! The clock is an argument (`*_at(.., now)`): the HTTP paths pass the wall
//! clock, the model test a virtual one.

use super::settle::end_members;
use super::Deliveries;
use crate::breaker::{Admission, LeaseEnd};
use crate::destination::{DestState, Destination, LeaseSource, LiveLease};
use crate::error::{BrokerError, NamedRecord};
use crate::leased::{Acquired, Lease, LeaseLane, LeasedRecord};
use crate::store::DeadLetterRecord;
use plumbing::clock::now_ms;
use protocol::lease::{
    AcquireRequest, CommitRequest, CommitResponse, FailRequest, FailureClass, HeartbeatResponse, IdleReason,
    PoisonRecord,
};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The longest sink `Retry-After` the broker honours (docs/leases.md): a
/// destination whose sink asked for more is offered leases again after this.
pub const MAX_SINK_RETRY_AFTER_MS: u64 = 300_000;

/// The parts a lane a joint lease may hold for this acquire: none (no
/// joint lease), one (an exporter whose decoder wants a lane's offsets
/// increasing), or several (`joint_lane_parts`).
fn joining(req: &AcquireRequest) -> Option<usize> {
    req.joint.then_some(if req.joint_lane_parts { super::joint::PARTS_PER_LANE } else { 1 })
}

fn idle(reason: IdleReason, retry_after_ms: u64) -> Acquired {
    Acquired::idle(reason, retry_after_ms)
}

impl Deliveries {
    /// Acquire a lease, waiting up to `wait_ms` for data to arrive.
    pub async fn acquire(self: &Arc<Self>, dest_name: &str, req: AcquireRequest) -> Result<Acquired, BrokerError> {
        let dest = &self.dest(dest_name)?;
        let wait = Duration::from_millis(req.wait_ms.unwrap_or(0)).min(self.cfg.timing.max_long_poll);
        let deadline = tokio::time::Instant::now() + wait;
        // Bounded by the deadline: each round waits for an append or the deadline.
        loop {
            // Register for wake-ups before looking, so no append slips between;
            // the broker's stop wakes the wait too (it answers idle at once).
            let mut notified: Vec<_> = self.wal.lanes().map(|l| Box::pin(l.appended())).collect();
            notified.push(Box::pin(self.shutdown.notified()));
            let resp = self.acquire_once(dest, &req, now_ms()).await?;
            let now = tokio::time::Instant::now();
            let stopping = self.shutdown.has_begun();
            if resp.lease.is_some() || resp.idle != Some(IdleReason::Empty) || now >= deadline || stopping {
                return Ok(resp);
            }
            // Held back by the place kept for short runs, or a lane's batch by
            // the one out: look again when the window lapses.
            let until = resp
                .recheck_at_ms
                .map_or(deadline, |at| deadline.min(now + Duration::from_millis(at.saturating_sub(now_ms()))));
            let any = futures_select_any(notified);
            let timed_out = tokio::time::timeout(until - now, any).await.is_err();
            if (timed_out && until >= deadline) || self.shutdown.has_begun() {
                return Ok(idle(IdleReason::Empty, 0));
            }
        }
    }

    /// One acquire attempt at `now`, without waiting; flushed before it
    /// returns a lease. The tests' way in: they drive the clock.
    #[cfg(test)]
    pub async fn acquire_at(
        self: &Arc<Self>,
        dest_name: &str,
        req: AcquireRequest,
        now: u64,
    ) -> Result<Acquired, BrokerError> {
        let dest = self.dest(dest_name)?;
        self.acquire_once(&dest, &req, now).await
    }

    async fn acquire_once(
        self: &Arc<Self>,
        dest: &Arc<Destination>,
        req: &AcquireRequest,
        now: u64,
    ) -> Result<Acquired, BrokerError> {
        let (held, req) = (Arc::clone(dest), req.clone());
        // It reads the WAL and writes sled: on the blocking pool, not an async worker.
        let resp = self.off_worker(move |b| b.try_acquire(&held, &req, now)).await?;
        if resp.lease.is_some() {
            self.store.flush().await?;
            self.metrics.leases_acquired.with_label_values(&[dest.name.as_str()]).inc();
        }
        Ok(resp)
    }

    fn try_acquire(&self, dest: &Destination, req: &AcquireRequest, now: u64) -> Result<Acquired, BrokerError> {
        let max_records =
            req.max_records.unwrap_or(self.cfg.max_lease_records).clamp(1, self.cfg.max_lease_records) as usize;
        let max_bytes = req.max_bytes.unwrap_or(self.cfg.max_lease_bytes).clamp(1, self.cfg.max_lease_bytes) as usize;
        if let (Some(exporter), Some(limit)) = (&req.exporter, req.concurrency_limit) {
            dest.report_capacity(exporter, limit, now);
        }
        // The WAL read, made before the lock (see `prefetch`).
        let mut pre = self.prefetch(dest, (max_records, max_bytes), now);
        let mut st = dest.state();
        if st.paused {
            return Ok(idle(IdleReason::Paused, 1000));
        }
        if now < st.not_before_ms {
            return Ok(idle(IdleReason::Backoff, st.not_before_ms - now));
        }
        if st.deliveries_out().len() >= dest.cfg.max_in_flight as usize {
            return Ok(idle(IdleReason::MaxInFlight, 200));
        }
        let (next_breaker, admission) = st.breaker.admit(now, dest.policy);
        if let Admission::Deny { retry_after_ms } = admission {
            return Ok(idle(IdleReason::BreakerOpen, retry_after_ms));
        }
        let probe = admission == Admission::Probe;
        let (lease, _) = self.transact(dest, &mut st, |next, _| {
            let lease = match self.build_redrive(dest, next, max_records, now, probe)? {
                Some(l) => Some(l),
                None => {
                    let limits = (max_records, max_bytes);
                    self.build_from_lanes(dest, next, limits, &mut pre, now, probe, joining(req))?
                }
            };
            if lease.is_some() && probe {
                next.breaker = next_breaker;
            }
            Ok(lease)
        })?;
        let Some(lease) = lease else {
            let mut empty = idle(IdleReason::Empty, 0);
            // Held back by the kept place, or a lane's batch by the one out
            // (`one_batch_at_a_time`): both lapse with the window.
            if req.joint && Self::keeping(&st, now) {
                empty.recheck_at_ms = st.last_short_ms.map(|t| t + super::joint::RESERVE_WINDOW_MS);
            }
            return Ok(empty);
        };
        if probe {
            tracing::info!(destination = %dest.name, "breaker half-open: probe lease handed out");
        }
        Ok(Acquired::lease(lease))
    }

    fn build_redrive(
        &self,
        dest: &Destination,
        st: &mut DestState,
        max_records: usize,
        now: u64,
        probe: bool,
    ) -> Result<Option<Lease>, BrokerError> {
        let mut ids = Vec::new();
        let mut records = Vec::new();
        while records.len() < max_records {
            let Some(id) = st.redrive.pop_front() else {
                break;
            };
            if let Some(dl) = self.store.dead_letter(&dest.name, id)? {
                records.push(LeasedRecord {
                    lane: Some(dl.lane),
                    offset: dl.offset,
                    tenant: dl.tenant.into(),
                    topic: dl.topic.into(),
                    ts_ms: dl.ts_ms,
                    payload: dl.payload.into(),
                });
                ids.push(id);
            }
        }
        let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
            return Ok(None);
        };
        let id = st.next_lease_id(dest.id);
        let (from, to) = (first, last + 1);
        st.leases.insert(
            id.clone(),
            LiveLease {
                id: id.clone(),
                source: LeaseSource::DeadLetters(ids),
                from,
                to,
                cover: crate::fair::Cover::default(),
                expires_at_ms: now + dest.lease_ms,
                acquired_at: std::time::Instant::now(),
                probe,
                redeliveries: 0,
                records: u32::try_from(records.len()).unwrap_or(u32::MAX),
                ingested: Vec::new(),
                joint: None,
                bulk: false,
            },
        );
        Ok(Some(Lease {
            id,
            destination: dest.name.clone(),
            lane: LeaseLane::DeadLetters,
            from_offset: from,
            to_offset: to,
            lease_ms: dest.lease_ms,
            probe,
            redeliveries: 0,
            records,
        }))
    }

    pub fn heartbeat(&self, dest_name: &str, id: &str) -> Result<HeartbeatResponse, BrokerError> {
        self.heartbeat_at(dest_name, id, now_ms())
    }

    /// Extend lease `id` (every member of a joint lease) to `now +
    /// lease_ms`. Written to sled but not flushed: a heartbeat lost in a
    /// crash only makes the lease expire sooner, and its range is then
    /// offered again.
    pub fn heartbeat_at(&self, dest_name: &str, id: &str, now: u64) -> Result<HeartbeatResponse, BrokerError> {
        let dest = &self.dest(dest_name)?;
        let mut st = dest.state();
        self.transact(dest, &mut st, |next, _| {
            let members = next.members_of(id);
            if members.is_empty() {
                return Err(BrokerError::LeaseNotFound { lease: id.to_string() });
            }
            for m in members {
                if let Some(lease) = next.leases.get_mut(&m) {
                    lease.expires_at_ms = now + dest.lease_ms;
                }
            }
            Ok(())
        })?;
        Ok(HeartbeatResponse { lease_ms: dest.lease_ms })
    }

    pub async fn commit(
        self: &Arc<Self>,
        dest_name: &str,
        id: &str,
        req: CommitRequest,
    ) -> Result<CommitResponse, BrokerError> {
        self.commit_at(dest_name, id, req, now_ms()).await
    }

    /// Commit lease `id`: everything is checked before anything changes, and
    /// the dead letters, the lease's end, the breaker and the cursor go to
    /// sled in one transaction, so a refused commit leaves the lease held.
    pub async fn commit_at(
        self: &Arc<Self>,
        dest_name: &str,
        id: &str,
        req: CommitRequest,
        now: u64,
    ) -> Result<CommitResponse, BrokerError> {
        let dest = self.dest(dest_name)?;
        let (held, lease_id) = (Arc::clone(&dest), id.to_string());
        // It reads the WAL (poison records) and writes sled: on the blocking pool.
        let cursor = self.off_worker(move |b| b.settle_commit(&held, &lease_id, &req, now)).await?;
        self.store.flush().await?;
        self.metrics.leases_committed.with_label_values(&[dest.name.as_str()]).inc();
        Ok(CommitResponse { committed: true, cursor })
    }

    /// The commit's one transaction (every member of a joint lease);
    /// returns the cursor of the (first member's) lane after it.
    fn settle_commit(&self, dest: &Destination, id: &str, req: &CommitRequest, now: u64) -> Result<u64, BrokerError> {
        let (cursor, latency) = {
            let mut st = dest.state();
            let before = st.breaker;
            let ((leases, cursor, redriven), added) = self.transact(dest, &mut st, |next, ch| {
                let members = next.members_of(id);
                let leases: Vec<LiveLease> = members.iter().filter_map(|m| next.leases.get(m).cloned()).collect();
                if leases.is_empty() {
                    return Err(BrokerError::LeaseNotFound { lease: id.to_string() });
                }
                ch.add_dead_letters = self.dead_letters_named(dest, &leases, &req.dead_letters, now)?;
                let mut redriven = 0;
                for l in &leases {
                    if let LeaseSource::DeadLetters(ids) = &l.source {
                        ch.remove_dead_letters.extend(ids.iter().copied());
                        redriven += ids.len() as u64;
                    }
                }
                end_members(dest, next, &members, LeaseEnd::Committed, now)?;
                let lanes: Vec<_> = leases.iter().filter_map(|l| l.lane()).collect();
                for &lane in &lanes {
                    // A tenant lease committed at the floor: the cursor follows now.
                    self.sweep_floor(dest, next, lane);
                }
                let cursor = lanes.first().map_or(0, |&lane| next.committed(lane));
                Ok((leases, cursor, redriven))
            })?;
            let poisoned = added.len() as u64;
            if poisoned > 0 {
                self.metrics.dead_letter_records.with_label_values(&[dest.name.as_str()]).inc_by(poisoned);
            }
            dest.dead_letters.fetch_add(poisoned, Ordering::Relaxed);
            dest.dead_letters.fetch_sub(redriven.min(dest.dead_letters.load(Ordering::Relaxed)), Ordering::Relaxed);
            if before != st.breaker {
                tracing::info!(destination = %dest.name, "breaker closed after a successful delivery");
            }
            let took = leases.iter().map(|l| l.acquired_at.elapsed()).max().unwrap_or_default();
            self.metrics.lease_seconds.with_label_values(&[dest.name.as_str()]).observe(took.as_secs_f64());
            // One delivery, one sample of the sink's cost: all its records.
            let in_lanes: Vec<&LiveLease> = leases.iter().filter(|l| l.lane().is_some()).collect();
            let records: u32 = in_lanes.iter().map(|l| l.records).sum();
            if records > 0 {
                st.cost.observe(records as usize, took.as_secs_f64() * 1000.0);
            }
            let latency: Vec<_> =
                in_lanes.into_iter().filter_map(|l| Some((l.lane()?.priority, l.ingested.clone()))).collect();
            (cursor, latency)
        };
        // One observation per record: after the destination's lock is released.
        for (priority, ingested) in latency {
            let hist = self.metrics.delivery_latency.with_label_values(&[dest.name.as_str(), priority.as_str()]);
            for (ts, n) in ingested {
                let secs = now.saturating_sub(ts) as f64 / 1000.0;
                for _ in 0..n {
                    hist.observe(secs);
                }
            }
        }
        Ok(cursor)
    }

    /// Dead-letter records for the records an exporter named in the lease
    /// it holds (`members`: a lease of its own, or a joint lease's parts
    /// still out). A joint lease's records are named by their place in what
    /// it was sent (`JointPart`), by place only (its offsets repeat across
    /// lanes); a place in a part cancelled since (retention, drop-oldest,
    /// rewind: those records were skipped) is ignored. Refused, changing
    /// nothing, when a name is not a record of the lease.
    fn dead_letters_named(
        &self,
        dest: &Destination,
        members: &[LiveLease],
        poison: &[PoisonRecord],
        now: u64,
    ) -> Result<Vec<DeadLetterRecord>, BrokerError> {
        let [first, ..] = members else {
            return Ok(Vec::new());
        };
        let Some(sent) = first.joint.as_ref().map(|j| j.sent as usize) else {
            return self.dead_letter_records(dest, first, poison, now);
        };
        let refuse = |named| BrokerError::NotInLease { named, lease: first.held_as().to_string(), from: 0, to: 0 };
        if let Some(p) = poison.iter().find(|p| p.index.is_none_or(|i| i as usize >= sent)) {
            return Err(refuse(match p.index {
                Some(i) => NamedRecord::Place { index: u64::from(i) },
                None => NamedRecord::Offset { offset: p.offset },
            }));
        }
        let mut out = Vec::new();
        for m in members {
            let base = m.joint.as_ref().map_or(0, |j| j.first as usize);
            let candidates = self.dead_letter_candidates(dest, m, now)?;
            let held = base..base + candidates.len();
            let mine: Vec<PoisonRecord> = poison
                .iter()
                .filter_map(|p| {
                    let i = p.index? as usize;
                    held.contains(&i).then(|| PoisonRecord { index: Some((i - base) as u32), ..p.clone() })
                })
                .collect();
            if !mine.is_empty() {
                out.extend(super::named::pick_named(m, candidates, &mine, now)?);
            }
        }
        Ok(out)
    }

    /// Dead-letter records for the records an exporter named, read back
    /// from the WAL (or the dead letters being re-driven). A record is
    /// named by its place in the lease (`index`, unique even where a
    /// re-drive's lanes repeat an offset) or, from an exporter before
    /// v1.2, by its offset alone: then every record of the lease at that
    /// offset is kept as a dead letter (nothing is lost; one delivered
    /// already may be re-driven twice). Refused, changing nothing, when a
    /// name is not a record of the lease.
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
        let candidates = self.dead_letter_candidates(dest, lease, now)?;
        super::named::pick_named(lease, candidates, poison, now)
    }

    /// The records `lease` handed out, in its order, as dead letters to be
    /// (`None` where a re-driven one was purged since: it keeps its place).
    fn dead_letter_candidates(
        &self,
        dest: &Destination,
        lease: &LiveLease,
        now: u64,
    ) -> Result<Vec<Option<DeadLetterRecord>>, BrokerError> {
        match &lease.source {
            LeaseSource::Lane(lane) => {
                let (records, _) =
                    self.read_matching(dest, (*lane, &lease.cover), lease.from, lease.to, usize::MAX, usize::MAX)?;
                Ok(records
                    .into_iter()
                    .map(|r| {
                        Some(DeadLetterRecord {
                            lane: lane.to_string(),
                            offset: r.offset,
                            tenant: r.tenant.to_string(),
                            topic: r.topic.to_string(),
                            ts_ms: r.ts_ms,
                            payload: r.payload.to_vec(),
                            error: String::new(),
                            failed_at_ms: now,
                        })
                    })
                    .collect())
            }
            LeaseSource::DeadLetters(ids) => {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    out.push(self.store.dead_letter(&dest.name, *id)?);
                }
                Ok(out)
            }
        }
    }

    /// Give a lease back: `Retryable` counts towards the breaker; `Released` does not.
    pub async fn fail(self: &Arc<Self>, dest_name: &str, id: &str, req: FailRequest) -> Result<(), BrokerError> {
        self.fail_at(dest_name, id, req, now_ms()).await
    }

    pub async fn fail_at(
        self: &Arc<Self>,
        dest_name: &str,
        id: &str,
        req: FailRequest,
        now: u64,
    ) -> Result<(), BrokerError> {
        let (held, lease_id) = (self.dest(dest_name)?, id.to_string());
        self.off_worker(move |b| b.settle_failure(&held, &lease_id, &req, now)).await?;
        self.store.flush().await?;
        Ok(())
    }

    /// The lease's end as a failure or a release, in one transaction.
    fn settle_failure(&self, dest: &Destination, id: &str, req: &FailRequest, now: u64) -> Result<(), BrokerError> {
        {
            let mut st = dest.state();
            let before = st.breaker;
            let end = match req.class {
                FailureClass::Retryable => LeaseEnd::Failed,
                // Gone: given back whole, not the sink's failure to count.
                FailureClass::Released | FailureClass::Gone => LeaseEnd::Released,
            };
            self.transact(dest, &mut st, |next, _| {
                let members = next.members_of(id);
                if members.is_empty() {
                    return Err(BrokerError::LeaseNotFound { lease: id.to_string() });
                }
                end_members(dest, next, &members, end, now)?;
                // A gone sink waits for the operator's resume, not a clock:
                // its wait (for brokers that do not pause) is not kept.
                if let Some(ms) = req.retry_after_ms.filter(|_| req.class != FailureClass::Gone) {
                    next.not_before_ms = next.not_before_ms.max(now + ms.min(MAX_SINK_RETRY_AFTER_MS));
                }
                Ok(())
            })?;
            if st.breaker.state != before.state {
                tracing::warn!(destination = %dest.name, state = st.breaker.state.as_str(), reason = %req.message, "breaker transition");
            }
            if req.class == FailureClass::Gone {
                // The receiver asked to stop (Standard Webhooks, Svix): paused
                // until an operator resumes it; nothing is dead-lettered.
                self.pause_as(dest, &mut st, Some(format!("sink answered 410 Gone: {}", req.message)))?;
                tracing::warn!(destination = %dest.name, reason = %req.message, "sink answered 410 Gone; destination paused until resumed");
            }
        }
        Ok(())
    }

    /// Expire leases past their deadline; their ranges are offered again
    /// first. The caller flushes.
    pub(crate) fn expire_leases(&self, dest: &Destination, now: u64) -> Result<usize, BrokerError> {
        let mut st = dest.state();
        // What exporters hold: a joint lease's members expire together,
        // as one delivery (the breaker hears of it once).
        let mut expired: Vec<String> =
            st.leases.values().filter(|l| l.expires_at_ms <= now).map(|l| l.held_as().to_string()).collect();
        if expired.is_empty() {
            return Ok(0);
        }
        expired.sort();
        expired.dedup();
        self.transact(dest, &mut st, |next, _| {
            for id in &expired {
                let members: Vec<String> = next
                    .members_of(id)
                    .into_iter()
                    .filter(|m| next.leases.get(m).is_some_and(|l| l.expires_at_ms <= now))
                    .collect();
                end_members(dest, next, &members, LeaseEnd::Expired, now)?;
            }
            Ok(())
        })?;
        for id in &expired {
            tracing::warn!(destination = %dest.name, lease = %id, "lease expired; its range will be offered again");
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
