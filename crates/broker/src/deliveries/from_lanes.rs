//! A lease from the lanes: a range given back, offered again first, else
//! new data — a floor lease or a tenant lease, as the tenant share says
//! (`crate::fair`).

use super::prefetch::Prefetch;
use super::Deliveries;
use crate::destination::{DestState, Destination, ExpiredRange, LeaseSource, LiveLease};
use crate::error::BrokerError;
use crate::fair::{index::Waiting, Cover, Pick};
use crate::leased::{Lease, LeaseLane, LeasedRecord};
use std::sync::Arc;
use wal::LaneId;

/// Where a lease lies: its lane, range, redeliveries so far and cover.
pub(super) struct Span {
    pub lane: LaneId,
    pub from: u64,
    pub to: u64,
    pub redeliveries: u32,
    pub cover: Cover,
}

/// Reads of new data a floor lease makes at most before it gives up on a
/// lane whose records are all another destination's or handed out ahead.
const FLOOR_READS: usize = 16;

impl Deliveries {
    /// A lease from the lanes of the acquire's plan, or none; a joint
    /// lease (`super::joint`) when the exporter takes them (`joint`: at
    /// most that many parts a lane). The lease's priority is charged once
    /// in the share between priorities.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn build_from_lanes(
        &self,
        dest: &Destination,
        st: &mut DestState,
        limits: (usize, usize),
        pre: &mut Option<Prefetch>,
        now: u64,
        probe: bool,
        joint: Option<usize>,
    ) -> Result<Option<Lease>, BrokerError> {
        let capacity = dest.capacity(now);
        let plan = self.search_plan(st, limits, capacity);
        let lease = match (self.offer_again(dest, st, &plan, pre, now, probe)?, joint) {
            (Some(lease), _) => Some(lease),
            (None, Some(parts)) if !probe && Self::reserving(st, capacity, now) => {
                self.short_only(dest, st, &plan, (now, parts))?
            }
            (None, _) => self.first_new(dest, st, &plan, pre, (now, probe, joint))?,
        };
        if let Some(l) = &lease {
            match l.lane {
                LeaseLane::Lane(lane) => Self::charge(st, lane.priority),
                LeaseLane::Joint(p) => Self::charge(st, p),
                LeaseLane::DeadLetters => {}
            }
        }
        Ok(lease)
    }

    /// New data from the first lane of the plan that has some; joined with
    /// the priority's lanes when short and `joint` (parts a lane at most).
    fn first_new(
        &self,
        dest: &Destination,
        st: &mut DestState,
        plan: &[(LaneId, (usize, usize))],
        pre: &mut Option<Prefetch>,
        (now, probe, joint): (u64, bool, Option<usize>),
    ) -> Result<Option<Lease>, BrokerError> {
        let joint = joint.filter(|_| !probe);
        for &(lane, lane_limits) in plan {
            if let Some(parts) = joint {
                if self.one_batch_at_a_time(st, lane, lane_limits.0, now) {
                    match self.short_of_lane(dest, st, plan, (lane, lane_limits), (now, parts)) {
                        Some(lease) => return Ok(Some(lease)),
                        None => continue,
                    }
                }
            }
            if let Some(lease) = self.lease_new(dest, st, (lane, lane_limits), pre, now, probe)? {
                let Some(parts) = joint else {
                    return Ok(Some(lease));
                };
                return self.joined(dest, st, plan, (lease, lane, lane_limits), (now, parts)).map(Some);
            }
        }
        Ok(None)
    }

    /// The first range given back, in plan order, offered again with its
    /// cover. A range that holds no record for this destination any more
    /// (retention) is dropped; its record goes with it.
    fn offer_again(
        &self,
        dest: &Destination,
        st: &mut DestState,
        plan: &[(LaneId, (usize, usize))],
        pre: &mut Option<Prefetch>,
        now: u64,
        probe: bool,
    ) -> Result<Option<Lease>, BrokerError> {
        for &(lane_id, _) in plan {
            let lane = self.wal.lane(lane_id).map_err(|source| BrokerError::Wal { lane: lane_id, source })?;
            let Some(ll) = st.lanes.get_mut(&lane_id) else {
                continue;
            };
            while let Some(((from, _), range)) = ll.expired.pop_first() {
                if range.joint.is_some() {
                    // Its parts are taken out of waiting either way: look again.
                    return match self.offer_joint_again(dest, st, (lane_id, from, range), pre, (now, probe))? {
                        Some(lease) => Ok(Some(lease)),
                        None => self.offer_again(dest, st, plan, pre, now, probe),
                    };
                }
                if let Some((span, records)) = self.read_again(pre, dest, lane, (from, &range))? {
                    return Ok(Some(self.start_lease(dest, st, span, records, now, probe)));
                }
            }
        }
        Ok(None)
    }

    /// What a range given back (`from` on) still holds, with its span: its
    /// cover's records from what the lane still has; none when retention
    /// took them all (the range is then dropped).
    pub(super) fn read_again(
        &self,
        pre: &mut Option<Prefetch>,
        dest: &Destination,
        lane: &wal::Lane,
        (from, range): (u64, &ExpiredRange),
    ) -> Result<Option<(Span, Vec<LeasedRecord>)>, BrokerError> {
        let from = from.max(lane.earliest_offset());
        if from >= range.to {
            return Ok(None);
        }
        let cover = range.cover.above(from);
        let records = self.read_with(pre, dest, (lane.id(), &cover), from, range.to, (usize::MAX, usize::MAX))?.0;
        if records.is_empty() {
            return Ok(None);
        }
        Ok(Some((Span { lane: lane.id(), from, to: range.to, redeliveries: range.redeliveries, cover }, records)))
    }

    /// Raise `lane`'s floor to what the lane still holds and over what went
    /// out ahead (`sweep_floor`), before new data is read from it; false
    /// when the destination has no such lane.
    pub(super) fn catch_up_floor(&self, dest: &Destination, st: &mut DestState, lane: &wal::Lane) -> bool {
        let Some(ll) = st.lanes.get_mut(&lane.id()) else {
            return false;
        };
        ll.raise_floor(lane.earliest_offset());
        self.sweep_floor(dest, st, lane.id());
        true
    }

    /// New data of one lane: a tenant lease when the share picks a tenant
    /// waiting behind another's records, else a floor lease. Charged to
    /// the tenants whose records it holds.
    fn lease_new(
        &self,
        dest: &Destination,
        st: &mut DestState,
        (lane_id, limits): (LaneId, (usize, usize)),
        pre: &mut Option<Prefetch>,
        now: u64,
        probe: bool,
    ) -> Result<Option<Lease>, BrokerError> {
        let wal_err = |source| BrokerError::Wal { lane: lane_id, source };
        let lane = self.wal.lane(lane_id).map_err(wal_err)?;
        if !self.catch_up_floor(dest, st, lane) {
            return Ok(None);
        }
        let Some(ll) = st.lanes.get_mut(&lane_id) else {
            return Ok(None);
        };
        // The index is a hint: a lane it cannot scan is leased in offset order.
        let pick = dest.fair().pick(lane, ll, &|tenant, topic| dest.wants(tenant, topic)).unwrap_or_else(|e| {
            tracing::warn!(destination = %dest.name, lane = %lane_id, error = %e, "tenant index: cannot scan; offset order");
            Pick::Floor { until: u64::MAX }
        });
        let end = lane.next_offset();
        let lease = match pick {
            Pick::Tenant { waiting, until } => {
                match self.tenant_lease(dest, st, lane_id, waiting.below(until), limits, now, probe)? {
                    Some(l) => Some(l),
                    None => self.floor_lease(dest, st, (lane_id, end), limits, pre, (now, probe))?,
                }
            }
            Pick::Floor { until } => {
                self.floor_lease(dest, st, (lane_id, end.min(until)), limits, pre, (now, probe))?
            }
        };
        if let Some(l) = &lease {
            self.charge_tenants(dest, lane_id.priority, &l.records);
        }
        Ok(lease)
    }

    /// A lease at `p` holding `records` is charged to their tenants (the
    /// tenant share, `crate::fair`).
    pub(super) fn charge_tenants(&self, dest: &Destination, p: wal::Priority, records: &[LeasedRecord]) {
        let weights = self.tenant_weights();
        let weight = |t: &str| weights.get(t).copied().unwrap_or(1.0);
        dest.fair().charge(p, &per_tenant(records), &weight);
    }

    /// Raise `lane`'s floor over what went out ahead (`fair::sweep_floor`),
    /// at an acquire and at a commit, so the cursor follows tenant leases.
    pub(super) fn sweep_floor(&self, dest: &Destination, st: &mut DestState, lane_id: LaneId) {
        let (Ok(lane), Some(ll)) = (self.wal.lane(lane_id), st.lanes.get_mut(&lane_id)) else {
            return;
        };
        if let Err(e) = crate::fair::sweep_floor(lane, ll, &|tenant, topic| dest.wants(tenant, topic)) {
            // Only the floor's catching up waits: the leases' own reads report it.
            tracing::warn!(destination = %dest.name, lane = %lane_id, error = %e, "floor sweep: cannot read");
        }
    }

    /// A floor lease of `lane` up to `end`: the floor's records in offset
    /// order, skipping those handed out ahead of it.
    pub(super) fn floor_lease(
        &self,
        dest: &Destination,
        st: &mut DestState,
        (lane, end): (LaneId, u64),
        limits: (usize, usize),
        pre: &mut Option<Prefetch>,
        (now, probe): (u64, bool),
    ) -> Result<Option<Lease>, BrokerError> {
        // Bounded: skip at most a few reads of data not for this destination.
        for _ in 0..FLOOR_READS {
            let Some(ll) = st.lanes.get_mut(&lane) else {
                break;
            };
            let from = ll.next_unleased;
            if from >= end {
                break;
            }
            let (records, to) = self.read_with(pre, dest, (lane, &ll.floor_cover(end)), from, end, limits)?;
            let cover = ll.floor_cover(to);
            ll.raise_floor(to);
            if records.is_empty() {
                continue;
            }
            let span = Span { lane, from, to, redeliveries: 0, cover };
            return Ok(Some(self.start_lease(dest, st, span, records, now, probe)));
        }
        Ok(None)
    }

    /// A tenant lease of `w`'s waiting records, read run by run from its
    /// first (the index's runs hold all of them, see `fair::index`), within
    /// `limits`; its tenant's ahead entry moves to its end.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tenant_lease(
        &self,
        dest: &Destination,
        st: &mut DestState,
        lane: LaneId,
        w: Waiting,
        limits: (usize, usize),
        now: u64,
        probe: bool,
    ) -> Result<Option<Lease>, BrokerError> {
        let cover = Cover::Tenant(w.tenant.clone());
        let (records, to) = self.read_runs(dest, (lane, &cover), &w.runs, limits)?;
        let (Some(first), Some(ll)) = (records.first(), st.lanes.get_mut(&lane)) else {
            return Ok(None);
        };
        let from = first.offset;
        debug_assert!(
            from >= ll.unleased_from(&w.tenant),
            "a tenant lease starts at its tenant's first waiting record"
        );
        ll.ahead.insert(w.tenant.clone(), to.max(ll.unleased_from(&w.tenant)));
        let span = Span { lane, from, to, redeliveries: 0, cover };
        Ok(Some(self.start_lease(dest, st, span, records, now, probe)))
    }

    /// The records `cover` holds in `runs`, in order, within `limits` (at
    /// least one); and the end of what was read.
    fn read_runs(
        &self,
        dest: &Destination,
        at: (LaneId, &Cover),
        runs: &[(u64, u64)],
        (max_records, max_bytes): (usize, usize),
    ) -> Result<(Vec<LeasedRecord>, u64), BrokerError> {
        let (mut out, mut bytes, mut to) = (Vec::<LeasedRecord>::new(), 0usize, 0u64);
        for &(a, b) in runs {
            let left = (max_records - out.len(), max_bytes.saturating_sub(bytes));
            if left.0 == 0 || left.1 == 0 {
                break;
            }
            let (got, end) = self.read_matching(dest, at, a, b, left.0, left.1)?;
            for r in got {
                // A read returns one record over the bytes left when it
                // holds none yet: only the lease's first may be.
                if !out.is_empty() && bytes + r.payload.len() > max_bytes {
                    return Ok((out, r.offset));
                }
                bytes += r.payload.len();
                to = r.offset + 1;
                out.push(r);
            }
            to = to.max(end);
            if end < b {
                break;
            }
        }
        Ok((out, to))
    }

    /// A lease of `span`, held in `st` (its sled record follows from the
    /// state, see `settle`). Its priority's charge is the caller's
    /// (`build_from_lanes`: a joint lease's members are one delivery).
    pub(super) fn start_lease(
        &self,
        dest: &Destination,
        st: &mut DestState,
        span: Span,
        records: Vec<LeasedRecord>,
        now: u64,
        probe: bool,
    ) -> Lease {
        let Span { lane, from, to, redeliveries, cover } = span;
        let id = st.next_lease_id(dest.id);
        let expires_at_ms = now + dest.lease_ms;
        st.leases.insert(
            id.clone(),
            LiveLease {
                id: id.clone(),
                source: LeaseSource::Lane(lane),
                from,
                to,
                cover,
                expires_at_ms,
                acquired_at: std::time::Instant::now(),
                probe,
                redeliveries,
                records: u32::try_from(records.len()).unwrap_or(u32::MAX),
                ingested: ingest_runs(&records),
                joint: None,
                bulk: false,
            },
        );
        Lease {
            id,
            destination: dest.name.clone(),
            lane: LeaseLane::Lane(lane),
            from_offset: from,
            to_offset: to,
            lease_ms: dest.lease_ms,
            probe,
            redeliveries,
            records,
        }
    }
}

/// Records per tenant, in order of first appearance.
fn per_tenant(records: &[LeasedRecord]) -> Vec<(Arc<str>, u64)> {
    let mut out: Vec<(Arc<str>, u64)> = Vec::new();
    for r in records {
        match out.iter_mut().find(|(t, _)| *t == r.tenant) {
            Some((_, n)) => *n += 1,
            None => out.push((r.tenant.clone(), 1)),
        }
    }
    out
}

/// Runs of records with one ingest time (a frame's records share theirs).
fn ingest_runs(records: &[LeasedRecord]) -> Vec<(u64, u32)> {
    let mut runs: Vec<(u64, u32)> = Vec::new();
    for r in records {
        match runs.last_mut() {
            Some((ts, n)) if *ts == r.ts_ms => *n += 1,
            _ => runs.push((r.ts_ms, 1)),
        }
    }
    runs
}
