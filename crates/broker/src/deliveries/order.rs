//! An acquire's plan: which lanes to search, in what order, and how many
//! records a lease from each may hold — the weighted share
//! ([`crate::share`]) and the lease sizing ([`crate::sizing`]) applied to
//! one destination's state.

use super::Deliveries;
use crate::destination::{DestState, LeaseSource};
use crate::share::Demand;
use wal::LaneId;

impl Deliveries {
    /// Lanes in the order this acquire searches them, each with the
    /// (records, bytes) limits of a lease from it. `limits` are the caps
    /// (the request's, within the broker's); `capacity` the destination's
    /// leases at once ([`crate::capacity`]), which the reservation divides.
    pub(super) fn search_plan(
        &self,
        st: &DestState,
        limits: (usize, usize),
        capacity: u32,
    ) -> Vec<(LaneId, (usize, usize))> {
        let shards = self.cfg.shards.max(1);
        let demand = self.demand(st, capacity);
        let mut plan = Vec::with_capacity(3 * usize::from(shards));
        for p in st.share.order(&demand) {
            let turn = (st.shard_turn[p as usize] % u64::from(shards)) as u16;
            let records = st.cost.records_for(p, limits.0);
            for s in 0..shards {
                plan.push((LaneId::new(p, (s + turn) % shards), (records, limits.1)));
            }
        }
        plan
    }

    /// Per priority: whether a lane holds data not yet leased (for any
    /// destination: a hint), and how many of this destination's leases are out.
    fn demand(&self, st: &DestState, capacity: u32) -> Demand {
        let mut d = Demand { capacity, ..Demand::default() };
        for lane in self.wal.lanes() {
            let i = lane.id().priority as usize;
            let waiting = st.lanes.get(&lane.id()).is_some_and(|ll| {
                !ll.expired.is_empty() || ll.next_unleased.max(lane.earliest_offset()) < lane.next_offset()
            });
            d.waiting[i] |= waiting;
        }
        for l in st.deliveries_out() {
            if let LeaseSource::Lane(lane) = l.source {
                d.in_flight[lane.priority as usize] += 1;
            }
        }
        d
    }

    /// A lease of priority `p` was handed out: `p` is charged in the
    /// share, and the next lease of it starts at the next shard.
    pub(super) fn charge(st: &mut DestState, p: wal::Priority) {
        st.share.charge(p);
        st.shard_turn[p as usize] += 1;
    }
}
