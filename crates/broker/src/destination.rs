//! A destination's live state: per-lane cursors, leases in flight, ranges
//! to offer again, breaker, pause flag and lag figures.
//!
//! Cursor rule: a destination's committed cursor on a lane is the lowest
//! offset still *outstanding* — the start of a lease in flight, of an
//! expired range waiting to be offered again, or the first offset never
//! leased. Everything below it was committed (or skipped as not matching the
//! destination). So commits may arrive in any order and the cursor advances
//! over the contiguous committed prefix without tracking committed ranges.
//!
//! Tenant leases (`crate::fair`) keep the rule: they are leases like the
//! others, so one in flight or waiting holds the cursor at its start, and a
//! committed one ahead of the floor is remembered by its tenant's *ahead*
//! offset until the floor passes it (floor leases skip its records).

use crate::breaker::{Breaker, BreakerPolicy, BreakerState};
use crate::capacity::Capacity;
use crate::deliveries::pending::LanePending;
use crate::fair::Cover;
use crate::store::{JointPart, LeaseRecord};
use config::{DestinationConfig, DestinationId, OnLagLimit};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use wal::{LaneId, Priority};

/// Where a waiting range sits: its first offset, and the tenant of a
/// tenant range (a floor range and a tenant range may start at one offset).
pub type RangeKey = (u64, Option<Arc<str>>);

/// Per-lane lease bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaneLeases {
    /// The floor: the first offset no floor lease handed out.
    pub next_unleased: u64,
    /// Ranges whose lease expired or failed, by first offset.
    pub expired: BTreeMap<RangeKey, ExpiredRange>,
    /// Per tenant, the offset below which its records of `[next_unleased, ..)`
    /// were handed out by tenant leases; only entries above the floor.
    pub ahead: BTreeMap<Arc<str>, u64>,
}

impl LaneLeases {
    /// A lane with its floor at `floor` and nothing out.
    pub fn at(floor: u64) -> LaneLeases {
        LaneLeases { next_unleased: floor, ..LaneLeases::default() }
    }

    /// Where `tenant`'s records not yet handed out begin.
    pub fn unleased_from(&self, tenant: &str) -> u64 {
        self.ahead.get(tenant).map_or(self.next_unleased, |&a| a.max(self.next_unleased))
    }

    /// Raise the floor to `to`, forgetting ahead entries it passed.
    pub fn raise_floor(&mut self, to: u64) {
        self.next_unleased = self.next_unleased.max(to);
        let floor = self.next_unleased;
        self.ahead.retain(|_, a| *a > floor);
    }

    /// The floor cover of a floor lease from the floor to `to`: the ahead
    /// entries it must skip, cut to its range.
    pub fn floor_cover(&self, to: u64) -> Cover {
        self.floor_cover_from(self.next_unleased, to)
    }

    /// [`LaneLeases::floor_cover`] of a floor lease over `[from, to)`, `from`
    /// at or above the floor (what the floor will be once raised to it).
    pub fn floor_cover_from(&self, from: u64, to: u64) -> Cover {
        let from = from.max(self.next_unleased);
        Cover::Floor(self.ahead.iter().filter(|(_, &a)| a > from).map(|(t, &a)| (t.clone(), a.min(to))).collect())
    }
}

/// A range to offer again first. Its sled record (`expired: true`) is
/// keyed by `record_id`, the id of the lease it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredRange {
    pub to: u64,
    pub redeliveries: u32,
    pub record_id: String,
    pub expired_at_ms: u64,
    /// Which records of the range it holds.
    pub cover: Cover,
    /// The joint lease it was a part of: offered again together with the
    /// other ranges of that joint lease, so with the same records in one lease.
    pub joint: Option<JointPart>,
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
    /// Which records of `[from, to)` it holds (lane leases).
    pub cover: Cover,
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
    /// The joint lease it is a part of (`deliveries::joint`): the id the
    /// exporter names (the first part's own) and its records' place in
    /// what was sent. `None`: a lease of its own.
    pub joint: Option<JointPart>,
    /// It holds a tenant's batch of its own (a run of `fair::SOLO_RUN`
    /// records or more): while short runs are being served, such leases
    /// leave one place of the destination to them (`deliveries::joint`).
    /// False after a restart.
    pub bulk: bool,
}

impl LiveLease {
    /// Its lane, for a lease of a lane (not a re-drive).
    pub fn lane(&self) -> Option<LaneId> {
        match self.source {
            LeaseSource::Lane(lane) => Some(lane),
            LeaseSource::DeadLetters(_) => None,
        }
    }

    /// Its priority, for a lease of a lane (not a re-drive).
    pub fn priority(&self) -> Option<Priority> {
        self.lane().map(|l| l.priority)
    }

    /// The id the exporter holds it by: its own, or its joint lease's.
    pub fn held_as(&self) -> &str {
        self.joint.as_ref().map_or(self.id.as_str(), |j| j.id.as_str())
    }
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
    /// When a lease of `high`'s or `normal`'s short runs was last handed
    /// out (ms): for [`crate::deliveries::joint`]'s reservation of one
    /// place for them (`low`'s keep none).
    pub last_short_ms: Option<u64>,
}

impl DestState {
    /// What the exporters hold, one lease each: a lease of its own, or a
    /// joint lease's part of the lowest lane still out (its first part may
    /// have been cancelled) — per `max_in_flight` and the priorities' share.
    pub fn deliveries_out(&self) -> Vec<&LiveLease> {
        let mut held: HashMap<&str, &LiveLease> = HashMap::new();
        for l in self.leases.values() {
            held.entry(l.held_as())
                .and_modify(|r| {
                    if (l.lane(), &l.id) < (r.lane(), &r.id) {
                        *r = l;
                    }
                })
                .or_insert(l);
        }
        held.into_values().collect()
    }

    /// The members of the lease an exporter names `id`, in the order their
    /// records were sent (lanes, then a lane's parts): a joint lease's
    /// (those left: a cancellation may have taken some), or the lease `id`
    /// alone. Empty when neither is held.
    pub fn members_of(&self, id: &str) -> Vec<String> {
        let mut joint: Vec<(u32, &str)> = self
            .leases
            .values()
            .filter(|l| l.lane().is_some())
            .filter_map(|l| l.joint.as_ref().filter(|j| j.id == id).map(|j| (j.first, l.id.as_str())))
            .collect();
        if joint.is_empty() {
            return self.leases.get(id).map(|l| vec![l.id.clone()]).unwrap_or_default();
        }
        joint.sort_unstable();
        joint.into_iter().map(|(_, id)| id.to_string()).collect()
    }

    /// The committed cursor of `lane` (see the module rule).
    pub fn committed(&self, lane: LaneId) -> u64 {
        let Some(ll) = self.lanes.get(&lane) else {
            return 0;
        };
        let mut c = ll.next_unleased;
        if let Some(((from, _), _)) = ll.expired.first_key_value() {
            c = c.min(*from);
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
                    tenant: l.cover.tenant().map(|t| t.to_string()),
                    skips: l.cover.stored_skips(),
                    joint: l.joint.clone(),
                };
                out.insert(rec.id.clone(), rec);
            }
        }
        for (lane, ll) in &self.lanes {
            for ((from, _), r) in &ll.expired {
                let rec = LeaseRecord {
                    id: r.record_id.clone(),
                    lane: lane.to_string(),
                    from: *from,
                    to: r.to,
                    expires_at_ms: r.expired_at_ms,
                    expired: true,
                    probe: false,
                    redeliveries: r.redeliveries,
                    tenant: r.cover.tenant().map(|t| t.to_string()),
                    skips: r.cover.stored_skips(),
                    joint: r.joint.clone(),
                };
                out.insert(rec.id.clone(), rec);
            }
        }
        out
    }

    /// The written invariants of this state; checked in debug builds after
    /// every change. On each lane: the ranges out or waiting are non-empty;
    /// floor ranges lie below the floor and never overlap; a tenant's
    /// ranges lie below where its unleased records begin and never overlap;
    /// a floor range overlapping a tenant's range skips that tenant over
    /// the overlap (`fair::cover`); ahead entries lie above the floor. A
    /// half-open breaker with its probe out has that probe among the leases
    /// (so its end can settle it).
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        for (lane, ll) in &self.lanes {
            let mut ranges: Vec<(u64, u64, &Cover)> =
                ll.expired.iter().map(|((f, _), r)| (*f, r.to, &r.cover)).collect();
            let live = self.leases.values().filter(|l| l.source == LeaseSource::Lane(*lane));
            ranges.extend(live.map(|l| (l.from, l.to, &l.cover)));
            check_lane(*lane, ll, &mut ranges)?;
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

/// [`DestState::check_invariants`] for one lane's ranges (from, to, cover).
fn check_lane(lane: LaneId, ll: &LaneLeases, ranges: &mut [(u64, u64, &Cover)]) -> Result<(), InvariantViolation> {
    let broken = |what: String| Err(InvariantViolation(format!("lane {lane}: {what}")));
    if let Some((t, a)) = ll.ahead.iter().find(|(_, &a)| a <= ll.next_unleased) {
        return broken(format!("ahead entry of {t:?} at {a} not above the floor {}", ll.next_unleased));
    }
    ranges.sort_unstable_by_key(|r| (r.0, r.1));
    for (i, &(f, t, c)) in ranges.iter().enumerate() {
        let limit = c.tenant().map_or(ll.next_unleased, |ten| ll.unleased_from(ten));
        if f >= t || t > limit {
            return broken(format!("range [{f},{t}) of {c:?} is empty or above {limit}"));
        }
        for &(f2, t2, c2) in &ranges[i + 1..] {
            if f2 >= t {
                break;
            }
            let apart = match (c.tenant(), c2.tenant()) {
                (None, None) => false,
                (Some(a), Some(b)) => a != b,
                (None, Some(ten)) => c.skip_of(ten).is_some_and(|s| s >= t.min(t2)),
                (Some(ten), None) => c2.skip_of(ten).is_some_and(|s| s >= t.min(t2)),
            };
            if !apart {
                return broken(format!("ranges [{f},{t}) {c:?} and [{f2},{t2}) {c2:?} share records"));
            }
        }
    }
    Ok(())
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
    /// The tenant share and the lanes' indexes (`crate::fair`): derived,
    /// in memory only. Taken after `state`, never before it.
    fair: Mutex<crate::fair::Fair>,
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
            fair: Mutex::default(),
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

    /// The fairness state; lock it while holding `state` (lock order).
    pub fn fair(&self) -> MutexGuard<'_, crate::fair::Fair> {
        self.fair.lock().unwrap_or_else(|e| e.into_inner())
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
            cover: Cover::default(),
            expires_at_ms: 0,
            acquired_at: std::time::Instant::now(),
            probe: false,
            redeliveries: 0,
            records: 0,
            ingested: Vec::new(),
            joint: None,
            bulk: false,
        }
    }

    #[test]
    fn cursor_advances_only_over_the_contiguous_committed_prefix() {
        let mut st = DestState::default();
        st.lanes.insert(lane(), LaneLeases::at(30));
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
        let mut ll = LaneLeases::at(50);
        let range = ExpiredRange {
            to: 20,
            redeliveries: 1,
            record_id: "x".into(),
            expired_at_ms: 0,
            cover: Cover::default(),
            joint: None,
        };
        ll.expired.insert((10, None), range);
        st.lanes.insert(lane(), ll);
        assert_eq!(st.committed(lane()), 10);
    }
}
