//! Joint leases: one lease of several lanes of a priority, holding each
//! lane's short runs, so small tenants spread over the shards share one
//! sink request.
//!
//! # Why
//! A lease is one lane's. At a sink that costs a round trip per request
//! (`benches/incident.py`: 20 ms + 2 ms a record, 4 at once), fifty small
//! tenants spread over four shards needed four requests where one would
//! do, and beside a heavy tenant holding most of the sink's places those
//! four requests queued one behind another (small tenants' p99 ×1.6–2.4
//! their p99 alone; `benches/fair_model.py` finds no one-lane policy under
//! ×2.06).
//!
//! # How
//! - A lease of **short runs** holds no run of [`SOLO_RUN`] records or
//!   more of one tenant ([`is_short`]). When an acquire's first lease is
//!   short and the exporter takes joint leases (`AcquireRequest::joint`),
//!   its own lane and the other lanes of its priority add their short runs
//!   (`Fair::short_pick`: the floor's up to its first batch, then each
//!   small tenant's waiting behind a batch, a part each, lowest tag first)
//!   within the lease's record budget. Each part is a lease of its own
//!   lane in every respect the cursor, retention, rewind and sled see
//!   (`LiveLease::joint` names the joint lease, whose id is its first
//!   member's); the exporter sees one lease, lane `normal/joint`, each
//!   record naming its lane, in lane order and, within a lane, part after
//!   part by their first offset.
//! - **One place is kept for short runs** of `high` and `normal`: while
//!   such a short lease was handed out in the last [`RESERVE_WINDOW_MS`],
//!   the leases *held back* — those holding a tenant's batch of its own
//!   (`LiveLease::bulk`), and `low`'s — take at most all but one of the
//!   destination's places (`Destination::capacity`, the exporters'
//!   limits); an acquire past that hands out `high`'s or `normal`'s short
//!   runs only (in the plan's order), or nothing. So neither a batch nor a
//!   `low` record takes the place from an in-rate small tenant. Batches and
//!   `low` lose no share: they wait only while short runs are flowing, and
//!   the window lapses a second after the last.
//! - **One batch of a lane at a time** while a place is kept: a lane with
//!   a lease of a batch out gives no second batch until it holds a full
//!   lease's records (the lease sizing's) beyond it; it gives its short
//!   runs instead, or nothing. A lane's batches take several places only
//!   when more than one lease's worth waits, so a burst smaller than a
//!   lease (a 25-record request) takes one place, not all but the kept
//!   one, and a tenant falling behind still spreads over all of them. It
//!   is per lane, not per tenant: two tenants with batches in one lane
//!   take one place between them until a full lease waits (or the window
//!   lapses). `low` lanes are left out (their leases are held back as a
//!   whole). A held long-poll looks again when the window lapses; a batch
//!   delivered meanwhile frees the lane at the next acquire (the
//!   exporter's own, after its commit).
//! - Several parts of a lane only for an exporter that takes them
//!   (`AcquireRequest::joint_lane_parts`): an older decoder wants a lane's
//!   offsets increasing, and gets one part a lane. A tenant gets one part
//!   of a joint lease at most, so its records in a row stay short.
//! - A joint lease is one delivery: counted once against `max_in_flight`
//!   and the priorities' share, settling the breaker once; heartbeat,
//!   commit, fail and release name its id and reach every member.
//! - Given back (failed, released, expired), each member's range waits
//!   with its joint's id (`ExpiredRange::joint`, in sled), and the first
//!   offered again brings the others: the same records, in the same order
//!   (lanes, then parts by first offset), so the same downstream id. A
//!   range cut by retention or drop-oldest comes back with the others,
//!   less what was cut (other records, another id). A member voided by a
//!   rewind leaves the rest held; a commit names poison records by their
//!   place as sent (`JointPart`), a place in a voided member ignored.
//!
//! # Invariants
//! - Members of one joint lease are of one priority; two members of one
//!   lane share no record (each is a floor or a tenant lease of the lane,
//!   whose covers never overlap: `fair::cover`).
//! - A joint lease's records are its members', in lane order, a lane's
//!   members by their first offset, each member's in its own order (so a
//!   lane's offsets are each there once, not increasing across members:
//!   the v3 decoder checks exactly that); the probe of a half-open breaker
//!   is never a joint lease made new (only one offered again may carry
//!   it, on every member: whichever ends first settles the breaker).
//!
//! # Limits
//! A joint lease holds at most the first lane's record budget (the
//! priority's lease sizing) and [`PARTS_PER_LANE`] parts per lane; an
//! acquire's extra work is at most that many index looks per lane of the
//! priority — for each lane held to one batch (`one_batch_at_a_time`) that
//! it passes, so at most `shards` times that while a place is kept.

use super::prefetch::Prefetch;
use super::Deliveries;
use crate::destination::{DestState, Destination, ExpiredRange, LiveLease};
use crate::error::BrokerError;
use crate::fair::{Pick, SOLO_RUN};
use crate::leased::{Lease, LeaseLane, LeasedRecord};
use crate::store::JointPart;
use wal::{LaneId, Priority};

/// How long after the last short lease one place stays kept for short runs.
pub const RESERVE_WINDOW_MS: u64 = 1_000;

/// Parts a joint lease takes of one lane at most: its floor's short runs,
/// or the short runs of tenants waiting behind a batch, one part each.
pub const PARTS_PER_LANE: usize = 16;

/// Whether `records` hold only short runs: no [`SOLO_RUN`] or more
/// records of one tenant one after another.
pub fn is_short(records: &[LeasedRecord]) -> bool {
    let mut run = 0u64;
    let mut prev: Option<&str> = None;
    for r in records {
        run = if prev == Some(&*r.tenant) { run + 1 } else { 1 };
        if run >= SOLO_RUN {
            return false;
        }
        prev = Some(&r.tenant);
    }
    true
}

/// The plan's lanes of `lane`'s priority other than `lane`, in plan order;
/// `lane` itself first when `with_own`.
fn lanes_of(plan: &[(LaneId, (usize, usize))], lane: LaneId, with_own: bool) -> Vec<LaneId> {
    let others = plan.iter().map(|(l, _)| *l).filter(|l| l.priority == lane.priority && *l != lane);
    with_own.then_some(lane).into_iter().chain(others).collect()
}

impl Deliveries {
    /// Whether a place is kept for short runs: a short lease of `high` or
    /// `normal` went out in the last [`RESERVE_WINDOW_MS`]. The place is
    /// theirs (never `low`'s: demoted traffic keeps no place from the
    /// in-rate).
    pub(super) fn keeping(st: &DestState, now: u64) -> bool {
        st.last_short_ms.is_some_and(|t| now.saturating_sub(t) < RESERVE_WINDOW_MS)
    }

    /// Whether the place kept for short runs is all that is left: a place
    /// is kept (`keeping`) and the leases held back from it — those
    /// holding a batch, and `low`'s — fill all but one of `capacity`.
    pub(super) fn reserving(st: &DestState, capacity: u32, now: u64) -> bool {
        let out = st.deliveries_out().into_iter();
        let held_back = out.filter(|l| l.bulk || l.priority() == Some(Priority::Low)).count();
        capacity >= 2 && Self::keeping(st, now) && held_back + 1 >= capacity as usize
    }

    /// Whether `lane` gives no second batch now: a place is kept
    /// (`keeping`), a lease of a batch of `lane` is out (not expired), and
    /// the lane holds fewer than `records` (a full lease) beyond it — past
    /// the floor and the end of the lane's batches out, as a tenant lease
    /// ahead does not move the floor. Not for `low`.
    pub(super) fn one_batch_at_a_time(&self, st: &DestState, lane: LaneId, records: usize, now: u64) -> bool {
        if lane.priority == Priority::Low || !Self::keeping(st, now) {
            return false;
        }
        let out = |l: &&LiveLease| l.bulk && l.lane() == Some(lane) && l.expires_at_ms > now;
        let Some(batches_end) = st.leases.values().filter(out).map(|l| l.to).max() else {
            return false;
        };
        let Ok(wal_lane) = self.wal.lane(lane) else {
            return false;
        };
        let floor = st.lanes.get(&lane).map_or(0, |ll| ll.next_unleased).max(wal_lane.earliest_offset());
        wal_lane.next_offset().saturating_sub(floor.max(batches_end)) < records as u64
    }

    /// `lane`'s short runs, joined with its priority's other lanes' (the
    /// plan's), as one lease; or none. For a lane giving one batch at a
    /// time (`one_batch_at_a_time`).
    pub(super) fn short_of_lane(
        &self,
        dest: &Destination,
        st: &mut DestState,
        plan: &[(LaneId, (usize, usize))],
        (lane, limits): (LaneId, (usize, usize)),
        (now, parts): (u64, usize),
    ) -> Option<Lease> {
        self.short_lease(dest, st, &lanes_of(plan, lane, true), limits, (now, parts))
    }

    /// The short runs of `lanes` (all of one priority, the first's) as one
    /// lease, noted as a short lease; or none.
    fn short_lease(
        &self,
        dest: &Destination,
        st: &mut DestState,
        lanes: &[LaneId],
        limits: (usize, usize),
        (now, parts): (u64, usize),
    ) -> Option<Lease> {
        let priority = lanes.first()?.priority;
        let members = self.short_parts(dest, st, (lanes, Vec::new()), limits, (now, parts));
        if members.is_empty() {
            return None;
        }
        Self::note_short(st, priority, now);
        Some(compose(dest, st, members))
    }

    /// A short lease of `priority` went out at `now` (`low`'s keep no place).
    fn note_short(st: &mut DestState, priority: Priority, now: u64) {
        if priority != Priority::Low {
            st.last_short_ms = Some(now);
        }
    }

    /// `first`, just handed out from the plan's lane: a short lease grows
    /// into a joint lease with the other lanes of its priority; a lease of
    /// a batch is marked so (`LiveLease::bulk`).
    pub(super) fn joined(
        &self,
        dest: &Destination,
        st: &mut DestState,
        plan: &[(LaneId, (usize, usize))],
        first: (Lease, LaneId, (usize, usize)),
        (now, parts): (u64, usize),
    ) -> Result<Lease, BrokerError> {
        let (lease, lane, (budget, bytes)) = first;
        if !is_short(&lease.records) {
            if let Some(l) = st.leases.get_mut(&lease.id) {
                l.bulk = true;
            }
            return Ok(lease);
        }
        Self::note_short(st, lane.priority, now);
        let left = (budget.saturating_sub(lease.records.len()), bytes.saturating_sub(payload_bytes(&lease.records)));
        // Its own lane first: more short runs may wait there behind a batch.
        let others = lanes_of(plan, lane, parts > 1);
        let taken = lease.records.iter().map(|r| r.tenant.clone()).collect();
        let mut members = vec![(lane, lease)];
        members.extend(self.short_parts(dest, st, (&others, taken), left, (now, parts)));
        Ok(compose(dest, st, members))
    }

    /// While only the kept place is left: short runs only, from the first
    /// priority of the plan that has some, `low` left out, joined over its
    /// lanes (`parts` a lane at most); or none.
    pub(super) fn short_only(
        &self,
        dest: &Destination,
        st: &mut DestState,
        plan: &[(LaneId, (usize, usize))],
        (now, parts): (u64, usize),
    ) -> Result<Option<Lease>, BrokerError> {
        // The priorities in the plan's order (the share between them).
        let mut seen: Vec<Priority> = Vec::with_capacity(3);
        for &(lane, limits) in plan {
            if seen.contains(&lane.priority) || lane.priority == Priority::Low {
                continue;
            }
            seen.push(lane.priority);
            // `lane` is its priority's first in the plan: its lanes in plan order.
            if let Some(lease) = self.short_lease(dest, st, &lanes_of(plan, lane, true), limits, (now, parts)) {
                return Ok(Some(lease));
            }
        }
        Ok(None)
    }

    /// Each of `lanes`' short runs as a lease of its lane, up to `parts` a
    /// lane, within `left` (records, bytes) altogether; charged to their
    /// tenants, not to the priority (the joint lease is one delivery). A
    /// tenant gets one part at most (none when in `taken`, the first
    /// lease's tenants: its records in a row stay short). A lane that
    /// cannot be read is left out (its own leases report it): it holds
    /// back no other.
    fn short_parts(
        &self,
        dest: &Destination,
        st: &mut DestState,
        (lanes, mut taken): (&[LaneId], Vec<std::sync::Arc<str>>),
        mut left: (usize, usize),
        (now, parts): (u64, usize),
    ) -> Vec<(LaneId, Lease)> {
        assert!(parts <= PARTS_PER_LANE, "parts a lane are bounded");
        let mut out = Vec::new();
        for &lane_id in lanes {
            // Several parts of a lane when its short runs wait behind a
            // batch: each small tenant's there is a tenant lease of its own.
            for _ in 0..parts {
                if left.0 == 0 || left.1 == 0 {
                    return out;
                }
                let lease = match self.short_part(dest, st, (lane_id, &taken), left, now) {
                    Ok(Some(lease)) => lease,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(destination = %dest.name, lane = %lane_id, error = %e, "joint lease: lane left out");
                        break;
                    }
                };
                left =
                    (left.0.saturating_sub(lease.records.len()), left.1.saturating_sub(payload_bytes(&lease.records)));
                self.charge_tenants(dest, lane_id.priority, &lease.records);
                taken.extend(lease.records.iter().map(|r| r.tenant.clone()));
                taken.dedup();
                out.push((lane_id, lease));
            }
        }
        out
    }

    /// A lease of `lane_id`'s short runs (`Fair::short_pick`, of a tenant
    /// not in `taken` behind a batch), or none.
    fn short_part(
        &self,
        dest: &Destination,
        st: &mut DestState,
        (lane_id, taken): (LaneId, &[std::sync::Arc<str>]),
        limits: (usize, usize),
        now: u64,
    ) -> Result<Option<Lease>, BrokerError> {
        let lane = self.wal.lane(lane_id).map_err(|source| BrokerError::Wal { lane: lane_id, source })?;
        if !self.catch_up_floor(dest, st, lane) {
            return Ok(None);
        }
        let Some(ll) = st.lanes.get(&lane_id) else {
            return Ok(None);
        };
        let pick = match dest.fair().short_pick(lane, ll, &|tenant, topic| dest.wants(tenant, topic), taken) {
            Ok(Some(pick)) => pick,
            Ok(None) => return Ok(None),
            Err(e) => {
                // Only joining waits: the lane's own leases read it in offset order.
                tracing::warn!(destination = %dest.name, lane = %lane_id, error = %e, "tenant index: cannot scan");
                return Ok(None);
            }
        };
        match pick {
            Pick::Floor { until } => {
                let end = lane.next_offset().min(until);
                self.floor_lease(dest, st, (lane_id, end), limits, &mut None, (now, false))
            }
            // One tenant's records in a row: fewer than a batch of its own.
            Pick::Tenant { waiting, .. } => {
                let limits = (limits.0.min(SOLO_RUN as usize - 1), limits.1);
                self.tenant_lease(dest, st, lane_id, waiting, limits, now, false)
            }
        }
    }

    /// The range `first` (of `lane`, from `from`), given back as a joint
    /// lease's member, offered again with every other range of that joint.
    pub(super) fn offer_joint_again(
        &self,
        dest: &Destination,
        st: &mut DestState,
        first: (LaneId, u64, ExpiredRange),
        pre: &mut Option<Prefetch>,
        (now, probe): (u64, bool),
    ) -> Result<Option<Lease>, BrokerError> {
        let joint = first.2.joint.as_ref().map(|j| j.id.clone());
        let mut ranges = vec![first];
        for (&lane, ll) in st.lanes.iter_mut() {
            let keys: Vec<_> = ll
                .expired
                .iter()
                .filter(|(_, r)| r.joint.as_ref().map(|j| &j.id) == joint.as_ref())
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                if let Some(r) = ll.expired.remove(&key) {
                    ranges.push((lane, key.0, r));
                }
            }
        }
        ranges.sort_by_key(|(lane, from, _)| (*lane, *from));
        let mut members = Vec::new();
        for (lane_id, from, range) in ranges {
            let lane = self.wal.lane(lane_id).map_err(|source| BrokerError::Wal { lane: lane_id, source })?;
            let Some((span, records)) = self.read_again(pre, dest, lane, (from, &range))? else {
                continue;
            };
            // A probe's parts are each the probe: whichever ends first (a
            // cancellation too) settles the breaker, as one lease would.
            let lease = self.start_lease(dest, st, span, records, now, probe);
            members.push((lane_id, lease));
        }
        if members.is_empty() {
            return Ok(None);
        }
        Ok(Some(compose(dest, st, members)))
    }
}

/// Payload bytes of `records`.
fn payload_bytes(records: &[LeasedRecord]) -> usize {
    records.iter().map(|r| r.payload.len()).sum()
}

/// One lease of `members` (each a lease just started on its lane): itself
/// when alone, else a joint lease of their records in lane order — a
/// lane's parts by their first record's offset, so a joint lease offered
/// again comes back in the same order — each naming its lane, with the
/// first member's id.
fn compose(dest: &Destination, st: &mut DestState, mut members: Vec<(LaneId, Lease)>) -> Lease {
    members.sort_by_key(|(lane, lease)| (*lane, lease.records.first().map(|r| r.offset)));
    if members.len() == 1 {
        if let Some((_, lease)) = members.pop() {
            return lease;
        }
    }
    let priority = members.first().map_or(Priority::Normal, |(lane, _)| lane.priority);
    assert!(members.iter().all(|(l, _)| l.priority == priority), "a joint lease's members share a priority");
    let id = members.first().map(|(_, l)| l.id.clone()).unwrap_or_default();
    let sent = u32::try_from(members.iter().map(|(_, l)| l.records.len()).sum::<usize>()).unwrap_or(u32::MAX);
    let (mut records, mut redeliveries, mut probe) = (Vec::new(), 0, false);
    for (lane, lease) in members {
        let first = u32::try_from(records.len()).unwrap_or(u32::MAX);
        if let Some(live) = st.leases.get_mut(&lease.id) {
            live.joint = Some(JointPart { id: id.clone(), first, sent });
        }
        redeliveries = redeliveries.max(lease.redeliveries);
        probe |= lease.probe;
        let name = lane.to_string();
        records.extend(lease.records.into_iter().map(|r| LeasedRecord { lane: Some(name.clone()), ..r }));
    }
    Lease {
        id,
        destination: dest.name.clone(),
        lane: LeaseLane::Joint(priority),
        from_offset: 0,
        to_offset: 0,
        lease_ms: dest.lease_ms,
        probe,
        redeliveries,
        records,
    }
}
