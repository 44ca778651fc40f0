//! A destination's live state: per-lane cursors, leases in flight, ranges
//! to offer again, breaker, pause flag and lag figures.
//!
//! Cursor rule: a destination's committed cursor on a lane is the lowest
//! offset still *outstanding* — the start of a lease in flight, of an
//! expired range waiting to be offered again, or the first offset never
//! leased. Everything below it was committed (or skipped as not matching the
//! destination). So commits may arrive in any order and the cursor advances
//! over the contiguous committed prefix without tracking committed ranges.

use crate::breaker::{Breaker, BreakerPolicy, BreakerState};
use crate::capacity::Capacity;
use crate::deliveries::pending::LanePending;
use crate::store::LeaseRecord;
use config::{DestinationConfig, DestinationId, OnLagLimit};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use wal::LaneId;

/// Per-lane lease bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaneLeases {
    /// First offset never handed out.
    pub next_unleased: u64,
    /// Ranges whose lease expired or failed, by first offset.
    pub expired: BTreeMap<u64, ExpiredRange>,
}

/// A range to offer again first. Its sled record (`expired: true`) is
/// keyed by `record_id`, the id of the lease it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredRange {
    pub to: u64,
    pub redeliveries: u32,
    pub record_id: String,
    pub expired_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseSource {
    Lane(LaneId),
    /// A re-drive of these dead-letter ids.
    DeadLetters(Vec<u64>),
}

#[derive(Debug, Clone)]
pub struct LiveLease {
    pub id: String,
    pub source: LeaseSource,
    pub from: u64,
    pub to: u64,
    pub expires_at_ms: u64,
    pub acquired_at: std::time::Instant,
    pub probe: bool,
    pub redeliveries: u32,
    /// Records handed out (0 for a lease rebuilt after a restart): with
    /// the lease's time, a sample for the lease sizing.
    pub records: u32,
    /// (ingest time, records) of each run of records stored together, for
    /// `weir_delivery_latency_seconds` at the commit (empty after a restart).
    pub ingested: Vec<(u64, u32)>,
}

#[derive(Debug, Clone, Default)]
pub struct DestState {
    pub lanes: BTreeMap<LaneId, LaneLeases>,
    pub leases: HashMap<String, LiveLease>,
    pub breaker: Breaker,
    pub paused: bool,
    /// Why it is paused (`operator`, or a sink's 410 Gone); none while running.
    pub paused_reason: Option<String>,
    /// Honour the sink's Retry-After: no lease before this time.
    pub not_before_ms: u64,
    pub seq: u64,
    /// Dead-letter ids queued for re-drive.
    pub redrive: VecDeque<u64>,
    /// Last committed cursor written to the store, per lane.
    pub persisted: HashMap<LaneId, u64>,
    /// Which priority the next lease serves (kept in memory only).
    pub share: crate::share::Share,
    /// Per priority, the shard the next lease of it starts at.
    pub shard_turn: [u64; 3],
    /// What this destination's sink costs, from recent deliveries.
    pub cost: crate::sizing::CostModel,
}

impl DestState {
    /// The committed cursor of `lane` (see the module rule).
    pub fn committed(&self, lane: LaneId) -> u64 {
        let Some(ll) = self.lanes.get(&lane) else {
            return 0;
        };
        let mut c = ll.next_unleased;
        if let Some((&from, _)) = ll.expired.first_key_value() {
            c = c.min(from);
        }
        for l in self.leases.values() {
            if l.source == LeaseSource::Lane(lane) {
                c = c.min(l.from);
            }
        }
        c
    }

    /// The sled lease records this state implies: one per lease in flight
    /// on a lane and one per range waiting to be offered again — exactly
    /// what sled must hold (re-drive leases are not persisted: their dead
    /// letters are).
    pub fn lease_records(&self) -> HashMap<String, LeaseRecord> {
        let mut out = HashMap::new();
        for l in self.leases.values() {
            if let LeaseSource::Lane(lane) = l.source {
                let rec = LeaseRecord {
                    id: l.id.clone(),
                    lane: lane.to_string(),
                    from: l.from,
                    to: l.to,
                    expires_at_ms: l.expires_at_ms,
                    expired: false,
                    probe: l.probe,
                    redeliveries: l.redeliveries,
                };
                out.insert(rec.id.clone(), rec);
            }
        }
        for (lane, ll) in &self.lanes {
            for (&from, r) in &ll.expired {
                let rec = LeaseRecord {
                    id: r.record_id.clone(),
                    lane: lane.to_string(),
                    from,
                    to: r.to,
                    expires_at_ms: r.expired_at_ms,
                    expired: true,
                    probe: false,
                    redeliveries: r.redeliveries,
                };
                out.insert(rec.id.clone(), rec);
            }
        }
        out
    }

    /// The written invariants of this state; checked in debug builds after
    /// every change. Ranges out or waiting on one lane never overlap, lie
    /// below `next_unleased`, and a half-open breaker with its probe out
    /// has that probe among the leases (so its end can settle it).
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        for (lane, ll) in &self.lanes {
            let mut ranges: Vec<(u64, u64)> = ll.expired.iter().map(|(&f, r)| (f, r.to)).collect();
            ranges
                .extend(self.leases.values().filter(|l| l.source == LeaseSource::Lane(*lane)).map(|l| (l.from, l.to)));
            ranges.sort_unstable();
            for w in ranges.windows(2) {
                if w[0].1 > w[1].0 {
                    return Err(InvariantViolation(format!("lane {lane}: ranges {:?} and {:?} overlap", w[0], w[1])));
                }
            }
            if let Some(&(f, t)) = ranges.iter().find(|(f, t)| f >= t || *t > ll.next_unleased) {
                let next = ll.next_unleased;
                return Err(InvariantViolation(format!(
                    "lane {lane}: range [{f},{t}) is empty or above next_unleased {next}"
                )));
            }
        }
        let ids = self.lease_records().len();
        let lane_leases = self.leases.values().filter(|l| matches!(l.source, LeaseSource::Lane(_))).count();
        let expired: usize = self.lanes.values().map(|ll| ll.expired.len()).sum();
        if ids != lane_leases + expired {
            return Err(InvariantViolation("two lease records share an id".into()));
        }
        if self.breaker.state == BreakerState::HalfOpen
            && self.breaker.probe_out
            && !self.leases.values().any(|l| l.probe)
        {
            return Err(InvariantViolation("breaker half-open with its probe out, but no probe lease is held".into()));
        }
        Ok(())
    }

    pub fn next_lease_id(&mut self, dest: DestinationId) -> String {
        self.seq += 1;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        format!("{}-{}-{:08x}", dest.index(), self.seq, nanos)
    }
}

/// A broken invariant of [`DestState`]: a bug, never an input error.
#[derive(Debug, thiserror::Error)]
#[error("destination state invariant broken: {0}")]
pub struct InvariantViolation(pub String);

/// Lag figures computed by the maintenance loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    pub records: u64,
    pub bytes: u64,
    pub oldest_pending_age_ms: u64,
    /// (records, bytes) behind in the lanes of each priority (high, normal, low).
    pub by_priority: [(u64, u64); 3],
    /// Some lane's pending account could not be brought up to date: the
    /// figures may be short (a removal counts it as pending).
    pub unsynced: bool,
}

impl Lag {
    /// The lag of the lanes at `p` or above: what a record stored at `p`
    /// waits behind, by the share's order.
    pub fn at_or_above(&self, p: wal::Priority) -> Lag {
        let upto = p as usize;
        let (records, bytes) = self.by_priority[..=upto].iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        Lag { records, bytes, ..*self }
    }
}

pub struct Destination {
    /// Its id: stable across reloads (`config::ids`).
    pub id: DestinationId,
    pub name: String,
    pub topics: HashSet<String>,
    pub tenants: Option<HashSet<String>>,
    pub cfg: DestinationConfig,
    pub policy: BreakerPolicy,
    pub lease_ms: u64,
    state: Mutex<DestState>,
    /// Its exporters' reported concurrency limits (soft state, see [`Capacity`]).
    capacity: Mutex<Capacity>,
    /// Per lane, the records routed to it that its cursor has not passed
    /// (see `deliveries::pending`); only the maintenance pass syncs it.
    pending: Mutex<HashMap<LaneId, LanePending>>,
    /// Per priority (high, normal, low), set while the lag of the lanes at
    /// or above it is over the limit and on_lag_limit is backpressure: a
    /// request whose records would be stored at that priority gets 429. So
    /// a backlog in the low lanes sheds only what goes to low (the tenants
    /// being demoted), never the in-rate tenants' traffic.
    pub backpressure: [AtomicBool; 3],
    pub lag_records: AtomicU64,
    pub lag_bytes: AtomicU64,
    pub oldest_pending_age_ms: AtomicU64,
    pub dead_letters: AtomicU64,
    pub dropped: AtomicU64,
    /// The `tenant` labels of `weir_tenant_oldest_pending_age_seconds`
    /// this destination set last pass (set to 0 once they have nothing
    /// pending).
    pub tenant_ages: Mutex<HashSet<Arc<str>>>,
}

impl Destination {
    pub fn new(id: DestinationId, cfg: DestinationConfig, lease_ms: u64, state: DestState) -> Destination {
        Destination {
            id,
            name: cfg.name.clone(),
            topics: cfg.topics.iter().cloned().collect(),
            tenants: cfg.tenants.as_ref().map(|t| t.iter().cloned().collect()),
            policy: BreakerPolicy { failure_threshold: cfg.failure_threshold, open_ms: cfg.breaker_open_ms },
            lease_ms,
            cfg,
            state: Mutex::new(state),
            capacity: Mutex::default(),
            pending: Mutex::default(),
            backpressure: Default::default(),
            lag_records: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            oldest_pending_age_ms: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            tenant_ages: Mutex::default(),
        }
    }

    /// The pending account, per lane.
    pub fn pending(&self) -> MutexGuard<'_, HashMap<LaneId, LanePending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> MutexGuard<'_, DestState> {
        // Critical sections keep the state consistent at every step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An exporter asked with its concurrency limit (see [`crate::capacity`]),
    /// from no connection (in-process callers).
    pub fn report_capacity(&self, exporter: &str, limit: u32, now: u64) {
        self.report_capacity_from(None, exporter, limit, now);
    }

    /// An exporter asked with its concurrency limit from `peer` (the
    /// connection's client address): reports are bounded per peer.
    pub fn report_capacity_from(&self, peer: Option<std::net::IpAddr>, exporter: &str, limit: u32, now: u64) {
        self.capacity.lock().unwrap_or_else(|e| e.into_inner()).report(peer, exporter, limit, now);
    }

    /// Leases this destination's exporters hold at once, within `max_in_flight`.
    pub fn capacity(&self, now: u64) -> u32 {
        self.capacity.lock().unwrap_or_else(|e| e.into_inner()).total(now, self.cfg.max_in_flight)
    }

    /// Does a record of (tenant, topic) go to this destination?
    pub fn wants(&self, tenant: &str, topic: &str) -> bool {
        self.topics.contains(topic) && self.tenants.as_ref().is_none_or(|t| t.contains(tenant))
    }

    pub fn applies_backpressure(&self) -> bool {
        self.cfg.on_lag_limit == OnLagLimit::Backpressure
    }

    /// Whether `lag` is over this destination's limits.
    pub fn over_limit(&self, lag: Lag) -> bool {
        lag.bytes > self.cfg.max_lag_bytes || (self.cfg.max_lag_records > 0 && lag.records > self.cfg.max_lag_records)
    }

    /// Whether a record stored at `p` would be refused for this destination's lag.
    pub fn sheds(&self, p: wal::Priority) -> bool {
        self.backpressure[p as usize].load(Ordering::Relaxed)
    }

    pub fn publish_lag(&self, lag: Lag) {
        self.lag_records.store(lag.records, Ordering::Relaxed);
        self.lag_bytes.store(lag.bytes, Ordering::Relaxed);
        self.oldest_pending_age_ms.store(lag.oldest_pending_age_ms, Ordering::Relaxed);
        for p in wal::Priority::ALL {
            let over = self.applies_backpressure() && self.over_limit(lag.at_or_above(p));
            self.backpressure[p as usize].store(over, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane() -> LaneId {
        LaneId::new(wal::Priority::Normal, 0)
    }

    fn lease(id: &str, from: u64, to: u64) -> LiveLease {
        LiveLease {
            id: id.into(),
            source: LeaseSource::Lane(lane()),
            from,
            to,
            expires_at_ms: 0,
            acquired_at: std::time::Instant::now(),
            probe: false,
            redeliveries: 0,
            records: 0,
            ingested: Vec::new(),
        }
    }

    #[test]
    fn cursor_advances_only_over_the_contiguous_committed_prefix() {
        let mut st = DestState::default();
        st.lanes.insert(lane(), LaneLeases { next_unleased: 30, expired: BTreeMap::new() });
        st.leases.insert("a".into(), lease("a", 0, 10));
        st.leases.insert("b".into(), lease("b", 10, 20));
        st.leases.insert("c".into(), lease("c", 20, 30));
        st.leases.remove("b");
        assert_eq!(st.committed(lane()), 0, "b committed out of order");
        st.leases.remove("a");
        assert_eq!(st.committed(lane()), 20);
        st.leases.remove("c");
        assert_eq!(st.committed(lane()), 30);
    }

    #[test]
    fn expired_range_holds_the_cursor_until_redelivered() {
        let mut st = DestState::default();
        let mut ll = LaneLeases { next_unleased: 50, expired: BTreeMap::new() };
        ll.expired.insert(10, ExpiredRange { to: 20, redeliveries: 1, record_id: "x".into(), expired_at_ms: 0 });
        st.lanes.insert(lane(), ll);
        assert_eq!(st.committed(lane()), 10);
    }
}
