//! A destination's live state: per-lane cursors, leases in flight, ranges
//! to offer again, breaker, pause flag and lag figures.
//!
//! Cursor rule: a destination's committed cursor on a lane is the lowest
//! offset still *outstanding* — the start of a lease in flight, of an
//! expired range waiting to be offered again, or the first offset never
//! leased. Everything below it was committed (or skipped as not matching the
//! destination). So commits may arrive in any order and the cursor advances
//! over the contiguous committed prefix without tracking committed ranges.

use crate::breaker::{Breaker, BreakerPolicy};
use crate::config::{DestinationConfig, OnLagLimit};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use wal::LaneId;

/// Per-lane lease bookkeeping.
#[derive(Debug, Clone, Default)]
pub struct LaneLeases {
    /// First offset never handed out.
    pub next_unleased: u64,
    /// Ranges whose lease expired or failed: from -> (to, redeliveries).
    pub expired: BTreeMap<u64, (u64, u32)>,
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
}

#[derive(Debug, Default)]
pub struct DestState {
    pub lanes: BTreeMap<LaneId, LaneLeases>,
    pub leases: HashMap<String, LiveLease>,
    pub breaker: Breaker,
    pub paused: bool,
    /// Honour the sink's Retry-After: no lease before this time.
    pub not_before_ms: u64,
    pub acquires: u64,
    pub seq: u64,
    /// Dead-letter ids queued for re-drive.
    pub redrive: VecDeque<u64>,
    /// Last committed cursor written to the store, per lane.
    pub persisted: HashMap<LaneId, u64>,
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

    pub fn next_lease_id(&mut self, dest_idx: usize) -> String {
        self.seq += 1;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        format!("{dest_idx}-{}-{:08x}", self.seq, nanos)
    }
}

/// Lag figures computed by the maintenance loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    pub records: u64,
    pub bytes: u64,
    pub oldest_pending_age_ms: u64,
}

pub struct Destination {
    pub idx: usize,
    pub name: String,
    pub topics: HashSet<String>,
    pub tenants: Option<HashSet<String>>,
    pub cfg: DestinationConfig,
    pub policy: BreakerPolicy,
    pub lease_ms: u64,
    state: Mutex<DestState>,
    /// Set while this destination's lag is over its limit and on_lag_limit
    /// is backpressure: its tenants get 429.
    pub backpressure: AtomicBool,
    pub lag_records: AtomicU64,
    pub lag_bytes: AtomicU64,
    pub oldest_pending_age_ms: AtomicU64,
    pub dead_letters: AtomicU64,
    pub dropped: AtomicU64,
}

impl Destination {
    pub fn new(idx: usize, cfg: DestinationConfig, lease_ms: u64, state: DestState) -> Destination {
        Destination {
            idx,
            name: cfg.name.clone(),
            topics: cfg.topics.iter().cloned().collect(),
            tenants: cfg.tenants.as_ref().map(|t| t.iter().cloned().collect()),
            policy: BreakerPolicy { failure_threshold: cfg.failure_threshold, open_ms: cfg.breaker_open_ms },
            lease_ms,
            cfg,
            state: Mutex::new(state),
            backpressure: AtomicBool::new(false),
            lag_records: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            oldest_pending_age_ms: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, DestState> {
        // Critical sections keep the state consistent at every step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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

    pub fn publish_lag(&self, lag: Lag) {
        self.lag_records.store(lag.records, Ordering::Relaxed);
        self.lag_bytes.store(lag.bytes, Ordering::Relaxed);
        self.oldest_pending_age_ms.store(lag.oldest_pending_age_ms, Ordering::Relaxed);
        self.backpressure.store(self.applies_backpressure() && self.over_limit(lag), Ordering::Relaxed);
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
        ll.expired.insert(10, (20, 1));
        st.lanes.insert(lane(), ll);
        assert_eq!(st.committed(lane()), 10);
    }
}
