//! The read an acquire makes before it takes the destination's lock.
//!
//! Why: reading records from the WAL (file reads, authentication, copies)
//! is most of an acquire's work; done under the destination's lock, it
//! serialises every exporter of that destination behind it. So an acquire
//! first looks, under a brief lock, at what its search would read first,
//! reads it without the lock, and then runs the search as before, which
//! takes the prefetched read wherever it asks for exactly that read.
//!
//! Correctness does not depend on the guess: the durable records of a range
//! never change, so a read of `[from, end)` made earlier answers the same
//! question later; a lane that grew meanwhile only makes the prefetched read
//! end sooner than it could, which is a shorter lease, never a wrong one.
//! Anything else the search asks for (another lane, another offset: a
//! concurrent acquire moved the state) is read under the lock, as before.

use super::Deliveries;
use crate::breaker::Admission;
use crate::destination::{DestState, Destination};
use crate::fair::Cover;
use crate::leased::LeasedRecord;
use wal::LaneId;

/// The search's first read: lane, cover, from, end and limits.
type FirstRead = (LaneId, Cover, u64, u64, (usize, usize));

/// One read of `[from, end)` of `lane` within `limits` (records, bytes).
pub(super) struct Prefetch {
    lane: LaneId,
    cover: Cover,
    from: u64,
    end: u64,
    limits: (usize, usize),
    read: (Vec<LeasedRecord>, u64),
}

impl Prefetch {
    /// Whether this read answers a read of `[from, end)` of `lane` within `limits`.
    fn answers(&self, (lane, cover): (LaneId, &Cover), from: u64, end: u64, limits: (usize, usize)) -> bool {
        self.lane == lane && self.from == from && self.limits == limits && self.end <= end && self.cover == *cover
    }
}

impl Deliveries {
    /// What the acquire at `now` will most likely read first, read now,
    /// without the destination's lock. `None` when it will read nothing from
    /// the WAL (it will answer idle, or re-drive dead letters) or the guess
    /// finds no data.
    pub(super) fn prefetch(&self, dest: &Destination, limits: (usize, usize), now: u64) -> Option<Prefetch> {
        let (lane, cover, from, end, limits) = {
            let st = dest.state();
            self.first_read(dest, &st, limits, now)?
        };
        let read = self.read_matching(dest, (lane, &cover), from, end, limits.0, limits.1).ok()?;
        Some(Prefetch { lane, cover, from, end, limits, read })
    }

    /// The search's first WAL read for `st`, as `build_from_lanes` would
    /// make it when the tenant share leaves the floor going on (a tenant
    /// lease reads its own runs, under the lock).
    fn first_read(&self, dest: &Destination, st: &DestState, limits: (usize, usize), now: u64) -> Option<FirstRead> {
        let idle = st.paused || now < st.not_before_ms || st.deliveries_out().len() >= dest.cfg.max_in_flight as usize;
        if idle || !st.redrive.is_empty() || matches!(st.breaker.admit(now, dest.policy).1, Admission::Deny { .. }) {
            return None;
        }
        let plan = self.search_plan(st, limits, dest.capacity(now));
        for &(lane_id, _) in &plan {
            let Some(((from, _), range)) = st.lanes.get(&lane_id).and_then(|ll| ll.expired.first_key_value()) else {
                continue;
            };
            let lane = self.wal.lane(lane_id).ok()?;
            let from = (*from).max(lane.earliest_offset());
            let cover = range.cover.above(from);
            return (from < range.to).then_some((lane_id, cover, from, range.to, (usize::MAX, usize::MAX)));
        }
        for &(lane_id, lane_limits) in &plan {
            let (Ok(lane), Some(ll)) = (self.wal.lane(lane_id), st.lanes.get(&lane_id)) else {
                continue;
            };
            let (from, end) = (ll.next_unleased.max(lane.earliest_offset()), lane.next_offset());
            if from < end {
                return Some((lane_id, ll.floor_cover_from(from, end), from, end, lane_limits));
            }
        }
        None
    }

    /// [`Deliveries::read_matching`], answered by `pre` when it holds exactly that read.
    pub(super) fn read_with(
        &self,
        pre: &mut Option<Prefetch>,
        dest: &Destination,
        at: (LaneId, &Cover),
        from: u64,
        end: u64,
        limits: (usize, usize),
    ) -> Result<(Vec<LeasedRecord>, u64), crate::error::BrokerError> {
        if let Some(p) = pre.take_if(|p| p.answers(at, from, end, limits)) {
            debug_assert!(p.read.1 <= end, "a prefetched read ends inside the range asked for");
            return Ok(p.read);
        }
        self.read_matching(dest, at, from, end, limits.0, limits.1)
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::{normal0, Harness};
    use protocol::lease::AcquireRequest;

    const DEST: &str = "[[destination]]\nname = \"d\"\ntopics = [\"events\"]\ntoken = \"d-t\"\nmax_in_flight = 4\n";

    fn records(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{{\"i\":{i}}}")).collect()
    }

    /// The guess is the search's own first read: each acquire's lease is
    /// exactly the range that was read before the lock was taken — for new
    /// data, and for a range offered again after its lease failed.
    #[test]
    fn the_prefetched_read_is_the_range_the_acquire_leases() {
        let h = Harness::new("", DEST);
        for _ in 0..3 {
            h.append("acme", "events", &records(10));
        }
        let d = h.b().deliveries();
        let dest = &d.dest("d").expect("dest");
        let req = AcquireRequest { max_records: Some(10), max_bytes: None, wait_ms: Some(0), ..Default::default() };
        let now = plumbing::clock::now_ms();
        let pre = d.prefetch(dest, (10, usize::MAX), now).expect("a first read");
        assert_eq!((pre.lane, pre.from, pre.read.1), (normal0(), 0, 10));
        let lease = h.run(d.acquire_at("d", req.clone(), now)).expect("acquire").lease.expect("a lease");
        assert_eq!((lease.from_offset, lease.to_offset), (pre.from, pre.read.1));
        assert_eq!(lease.records.len(), pre.read.0.len());

        let pre = d.prefetch(dest, (10, usize::MAX), now).expect("the next read");
        assert_eq!((pre.from, pre.read.1), (10, 20), "the next range, not the leased one");

        let fail = protocol::lease::FailRequest {
            class: protocol::lease::FailureClass::Released,
            message: "given back".into(),
            retry_after_ms: None,
        };
        h.run(d.fail_at("d", &lease.id, fail, now)).expect("release");
        let pre = d.prefetch(dest, (10, usize::MAX), now).expect("the range offered again");
        assert_eq!((pre.from, pre.end), (0, 10), "a range given back is read first, whole");
        let again = h.run(d.acquire_at("d", req, now)).expect("acquire").lease.expect("a lease");
        assert_eq!((again.from_offset, again.to_offset), (0, 10));
    }
}
