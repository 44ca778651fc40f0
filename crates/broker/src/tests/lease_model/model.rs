//! The reference model of the lease model test, and the checks that
//! compare the broker with it after every step.

use super::super::Harness;
use super::{DESTS, LANES};
use crate::error::BrokerError;
use proptest::prelude::*;
use protocol::ErrorCode;
use std::collections::{BTreeMap, BTreeSet};
use wal::{LaneId, Priority};

/// A record: its lane and offset.
pub type Rec = (LaneId, u64);

/// The longest run of new-data leases of a lane that may pass over a
/// tenant with records waiting there. A waiting tenant's tag is fixed (the
/// clock never passes it) and each other tenant is served only while its
/// tag is at most that, each lease raising it by at least 1/weight: so the
/// bound is what the waiting tenant was served ahead of the clock, times
/// the others' weights — a few leases in these cases. A starving share
/// fails it at once (see invariant 6).
pub const MAX_PASSED_OVER: u32 = 32;

/// A lease as the model knows it.
#[derive(Debug, Clone)]
pub struct MLease {
    /// The parts it still holds, by (lane, where the part's range begins),
    /// each with its records' places as sent: one part, or a joint
    /// lease's several (of several lanes, or several tenants of a lane);
    /// none for a re-drive of dead letters.
    pub parts: Vec<(LaneId, u64, std::ops::Range<usize>)>,
    /// The records as sent (a commit names them by place).
    pub records: Vec<Rec>,
    pub expires: u64,
}

impl MLease {
    /// The records it still holds: a part cancelled since holds none.
    pub fn held(&self) -> impl Iterator<Item = &Rec> {
        let held = |i: usize| self.parts.is_empty() || self.parts.iter().any(|(_, _, places)| places.contains(&i));
        self.records.iter().enumerate().filter(move |(i, _)| held(*i)).map(|(_, r)| r)
    }
}

#[derive(Debug, Default)]
pub struct MDest {
    /// Acknowledged records this destination wants and has not had yet.
    pub owed: BTreeSet<Rec>,
    pub live: BTreeMap<String, MLease>,
    pub dead: Vec<Rec>,
    pub paused: bool,
    /// Per (priority, tenant): new-data leases of the priority in a row
    /// that held none of the tenant's records while some waited.
    pub passed_over: BTreeMap<(Priority, &'static str), u32>,
}

impl MDest {
    /// Owed records no lane lease in flight holds (waiting to be handed out).
    pub fn waiting(&self) -> BTreeSet<Rec> {
        let lane_leases = self.live.values().filter(|l| !l.parts.is_empty());
        let held: BTreeSet<Rec> = lane_leases.flat_map(|l| l.held().copied()).collect();
        self.owed.difference(&held).copied().collect()
    }

    /// The broker voided the parts of `lane` whose start `void` says: a
    /// lease of that lane alone ends, a joint lease goes on without it.
    pub fn drop_parts(&mut self, lane: LaneId, void: impl Fn(u64) -> bool) {
        let mut emptied = Vec::new();
        for (id, l) in self.live.iter_mut() {
            let before = l.parts.len();
            l.parts.retain(|&(part_lane, from, _)| part_lane != lane || !void(from));
            if before > 0 && l.parts.is_empty() {
                emptied.push(id.clone());
            }
        }
        for id in emptied {
            self.live.remove(&id);
        }
    }

    /// Lane leases of priority `p` in flight.
    pub fn in_flight(&self, p: Priority) -> usize {
        self.live.values().filter(|l| l.parts.iter().any(|(lane, _, _)| lane.priority == p)).count()
    }
}

pub struct Model {
    pub now: u64,
    /// (lane, offset) -> (tenant, topic)
    pub records: BTreeMap<Rec, (&'static str, &'static str)>,
    /// (lane, base offset, ts_ms) of every batch
    pub batches: Vec<(LaneId, u64, u64)>,
    pub dests: Vec<MDest>,
    pub serial: u64,
}

impl Model {
    pub fn excuse_below(&mut self, d: usize, lane: LaneId, to: u64) {
        self.dests[d].owed.retain(|&(l, o)| l != lane || o >= to);
    }

    pub fn cancel_lane_leases(&mut self, d: usize, lane: LaneId, below: u64) {
        self.dests[d].drop_parts(lane, |from| from < below);
    }

    /// A rewind of `lane` to `to`: its leases are void and everything
    /// from `to` is owed again.
    pub fn rewound(&mut self, d: usize, lane: LaneId, to: u64) {
        self.dests[d].drop_parts(lane, |_| true);
        let again: Vec<Rec> = self
            .records
            .iter()
            .filter(|(&(l, o), (t, p))| l == lane && o >= to && super::wants(d, t, p))
            .map(|(&r, _)| r)
            .collect();
        let md = &mut self.dests[d];
        md.owed.retain(|&(l, _)| l != lane);
        md.owed.extend(again);
        md.passed_over.retain(|(p, _), _| *p != lane.priority);
    }
}

/// Everything a refused call must leave as it was.
pub fn snapshot(h: &Harness, d: usize) -> String {
    let b = h.b();
    let dest = b.deliveries().dest(DESTS[d]).expect("dest");
    let st = dest.state();
    let mut leases: Vec<String> = st
        .leases
        .values()
        .map(|l| {
            let (id, src, cover) = (&l.id, &l.source, &l.cover);
            format!("{id}:{src:?}:{}-{}:{cover:?}:{}:{}:{}", l.from, l.to, l.expires_at_ms, l.probe, l.redeliveries)
        })
        .collect();
    leases.sort();
    let store = b.deliveries().store();
    let mut sled = store.leases(DESTS[d]).expect("sled");
    sled.sort_by(|x, y| x.id.cmp(&y.id));
    let dead = store.dead_letters(DESTS[d], usize::MAX).expect("dead letters");
    let mut frontiers = store.frontiers(DESTS[d]).expect("frontiers");
    frontiers.sort();
    let cursors: Vec<_> = LANES.iter().map(|l| store.cursor(DESTS[d], &l.to_string()).ok().flatten()).collect();
    format!(
        "{leases:?} {:?} {:?} {:?} {} {} {:?} {sled:?} {dead:?} {cursors:?} {frontiers:?}",
        st.lanes, st.breaker, st.redrive, st.paused, st.not_before_ms, st.persisted,
    )
}

/// The broker against the model: no owed record passed or deleted, the
/// state's invariants, sled's lease records and frontiers, dead letters.
pub fn check(h: &Harness, m: &Model) -> Result<(), TestCaseError> {
    let b = h.b();
    for (d, md) in m.dests.iter().enumerate() {
        let dest = b.deliveries().dest(DESTS[d]).expect("dest");
        let st = dest.state();
        for lane_id in LANES {
            let lane = b.wal().lane(lane_id).expect("lane");
            let cursor = st.committed(lane_id);
            if let Some(&(_, first)) = md.owed.range((lane_id, 0)..(lane_id, u64::MAX)).next() {
                prop_assert!(cursor <= first, "{}: cursor {cursor} of {lane_id} passed undelivered {first}", DESTS[d]);
                prop_assert!(first >= lane.earliest_offset(), "{}: undelivered {lane_id} {first} deleted", DESTS[d]);
            }
        }
        if let Err(e) = st.check_invariants() {
            return Err(TestCaseError::fail(e.to_string()));
        }
        // What exporters hold: a joint lease's members under its one id.
        let ids: BTreeSet<String> = st.leases.values().map(|l| l.held_as().to_string()).collect();
        let model_ids: BTreeSet<String> = md.live.keys().cloned().collect();
        prop_assert_eq!(ids, model_ids, "{}: leases in flight differ from the model", DESTS[d]);
        check_sled(h, d, &st)?;
        let mut dead: Vec<Rec> = b
            .deliveries()
            .store()
            .dead_letters(DESTS[d], usize::MAX)
            .expect("dl")
            .into_iter()
            .map(|(_, r)| (r.lane.parse::<LaneId>().expect("a lane"), r.offset))
            .collect();
        dead.sort_unstable();
        let mut mdead = md.dead.clone();
        mdead.sort_unstable();
        prop_assert_eq!(dead, mdead, "{}: dead letters differ", DESTS[d]);
        prop_assert_eq!(st.paused, md.paused);
    }
    Ok(())
}

/// sled holds exactly the lease records and frontiers the state implies.
fn check_sled(h: &Harness, d: usize, st: &crate::destination::DestState) -> Result<(), TestCaseError> {
    let store = h.b().deliveries().store();
    let mut sled = store.leases(DESTS[d]).expect("sled");
    sled.sort_by(|x, y| x.id.cmp(&y.id));
    let mut want: Vec<_> = st.lease_records().into_values().collect();
    want.sort_by(|x, y| x.id.cmp(&y.id));
    prop_assert_eq!(&sled, &want, "{}: sled lease records are not the state's", DESTS[d]);
    for (f, off) in store.frontiers(DESTS[d]).expect("frontiers") {
        let lane: LaneId = f.lane.parse().expect("a lane");
        let ll = st.lanes.get(&lane).ok_or_else(|| TestCaseError::fail("a frontier of no lane"))?;
        let held = match &f.tenant {
            None => ll.next_unleased,
            Some(t) => ll.ahead.get(t.as_str()).copied().unwrap_or(0),
        };
        prop_assert_eq!(off, held, "{}: stored frontier {:?} is not the state's", DESTS[d], f);
    }
    Ok(())
}

pub fn refused(e: &BrokerError) -> bool {
    matches!(e.code(), ErrorCode::InvalidRequest | ErrorCode::LeaseNotFound)
}
