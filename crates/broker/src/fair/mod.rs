//! Fair delivery between the tenants of one priority.
//!
//! # Why
//! Records of a lane used to be leased in offset order, whoever sent them:
//! a tenant within its rate with a backlog queued every other tenant of its
//! priority behind it at a constrained sink (`benches/incident.py`
//! `flood_part`: three small tenants' p99 ×2.36).
//!
//! # How
//! A lane keeps its **floor** (`LaneLeases::next_unleased`): floor leases
//! take the lane in offset order, as before. Beside it, a **tenant lease**
//! takes one tenant's records ahead of the floor; the lane remembers, per
//! tenant, where its records handed out ahead end (`LaneLeases::ahead`),
//! and floor leases skip those records ([`Cover`]). Which to hand out is
//! the tenant share ([`share`]): start-time fair queueing by `weight`
//! between the tenants with records waiting, which the per-lane
//! [`index`] finds without reading other tenants' records. The weighted
//! share between priorities (`crate::share`) decides the lane first; this
//! module decides within it.
//!
//! # Invariants
//! - Every routed record is handed out by exactly one lease cover at a
//!   time: a floor lease's or its tenant's (`fair::cover`), asserted by
//!   `DestState::check_invariants`.
//! - The cursor rule is unchanged: the cursor is the lowest offset still
//!   outstanding (a floor or tenant lease out or waiting, or the floor), so
//!   no record is passed before it is delivered. Committed tenant leases
//!   ahead of the cursor are holes the pending account still counts (lag
//!   overstates by at most what tenant leases delivered ahead of the
//!   floor) and retention keeps (it deletes only below the cursor).
//! - A lease given back is offered again with its cover, so with exactly
//!   the records it held.
//! - Floors and ahead entries are in sled (`Store::frontiers`), written in
//!   the transaction of the acquire that moves them, so a restart neither
//!   hands out an ahead record again nor leaves one out.
//!
//! # Limits
//! The index's (tenants per lane, runs per tenant, frames per scan) and
//! the share's (tags) bounds are in their modules; an acquire's work grows
//! with the tenants waiting in the lanes it reads, never with those
//! configured.

pub mod cover;
pub mod index;
pub mod share;

pub use cover::Cover;

use index::{LaneIndex, Waiting};
use share::TenantShare;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use wal::{Lane, LaneId, Priority};

use crate::destination::LaneLeases;

/// Frames an acquire scans into a lane's index at most.
pub const SCAN_BUDGET: usize = 4096;

/// Frames the floor passes at most in one sweep ([`sweep_floor`]).
pub const SWEEP_BUDGET: usize = 1024;

/// Raise the floor of `lane` over what is handed out already: frames not
/// routed to the destination and records its tenant leases took ahead. So
/// the cursor follows deliveries that were all tenant leases (each tenant
/// sending batches of its own), and the ahead entries the floor passes go.
/// Frame headers only; at most [`SWEEP_BUDGET`] frames.
pub fn sweep_floor(lane: &Lane, ll: &mut LaneLeases, wants: &dyn Fn(&str, &str) -> bool) -> wal::Result<()> {
    let floor = ll.next_unleased;
    let (mut to, mut seen) = (floor, 0usize);
    lane.visit_frame_metas(floor, |f| {
        let (first, next) = (f.header.base_offset.max(floor), f.header.next_offset());
        if next <= floor {
            return ControlFlow::Continue(());
        }
        seen += 1;
        let handed_out_to = if wants(f.tenant, f.topic) { ll.ahead.get(f.tenant).copied().unwrap_or(0) } else { next };
        if handed_out_to >= next && seen < SWEEP_BUDGET {
            to = next;
            return ControlFlow::Continue(());
        }
        // Its records from `handed_out_to` on wait: the floor stops there.
        to = handed_out_to.clamp(first, next);
        ControlFlow::Break(())
    })?;
    ll.raise_floor(to);
    Ok(())
}

/// A tenant's run at least this long (records) is a batch of its own: it
/// goes in a tenant lease, and floor leases end before it, so the records
/// of other tenants behind it do not wait out its sink time.
pub const SOLO_RUN: u64 = 8;

/// Runs of each tenant looked at for a batch of its own (a bound on the
/// acquire's work: the tenants waiting times this).
const RUNS_LOOKED_AT: usize = 4;

/// What an acquire hands out from a lane's new data.
#[derive(Debug, Clone, PartialEq)]
pub enum Pick {
    /// A floor lease (offset order), ending before `until`.
    Floor { until: u64 },
    /// A tenant lease of this tenant's waiting records below `until`.
    Tenant { waiting: Waiting, until: u64 },
}

/// A destination's fairness state: kept in memory only (derived).
#[derive(Debug, Default)]
pub struct Fair {
    lanes: HashMap<LaneId, LaneIndex>,
    share: TenantShare,
}

impl Fair {
    /// Which lease to hand out from `lane`'s new data.
    ///
    /// One tenant waiting: the floor, in offset order, full leases. Several:
    /// a run of [`SOLO_RUN`] records or more of one tenant is a *batch of
    /// its own*, and floor leases end before the first one (`until`), so
    /// small batches of several tenants travel together in one lease and no
    /// record rides behind another tenant's batch. Then the tags decide:
    /// - the head of the floor holds small batches: the floor goes on,
    ///   unless the lowest-tag tenant waits only behind a batch of its own
    ///   of another tenant and its tag is below the head's — it then gets
    ///   a tenant lease;
    /// - the head's first run is a batch of its own: it gets a tenant lease
    ///   of its records up to the next tenant's (no hole below them),
    ///   unless another tenant's tag is lower — that tenant then does.
    pub fn pick(&mut self, lane: &Lane, ll: &LaneLeases, wants: &dyn Fn(&str, &str) -> bool) -> wal::Result<Pick> {
        let ix = self.lanes.entry(lane.id()).or_default();
        ix.sync(lane, ll, wants, SCAN_BUDGET)?;
        let waiting = ix.waiting(ll);
        if waiting.len() < 2 {
            return Ok(Pick::Floor { until: u64::MAX });
        }
        let p = lane.id().priority;
        let head = waiting.iter().min_by_key(|w| w.runs[0].0);
        let lowest = waiting.iter().min_by(|a, b| {
            let (ta, tb) = (self.share.tag(p, &a.tenant), self.share.tag(p, &b.tenant));
            ta.total_cmp(&tb).then(a.runs[0].0.cmp(&b.runs[0].0))
        });
        let (Some(head), Some(lowest)) = (head, lowest) else {
            return Ok(Pick::Floor { until: u64::MAX });
        };
        let long = |r: &(u64, u64)| r.1 - r.0 >= SOLO_RUN;
        let until = waiting
            .iter()
            .filter_map(|w| w.runs.iter().take(RUNS_LOOKED_AT).find(|r| long(r)).map(|r| r.0))
            .min()
            .unwrap_or(u64::MAX);
        let lower = head.tenant != lowest.tenant && self.share.tag(p, &lowest.tenant) < self.share.tag(p, &head.tenant);
        let start = head.runs[0].0;
        if until > start {
            let floor_reaches_it = lowest.runs[0].0 < until;
            return Ok(if lower && !floor_reaches_it {
                Pick::Tenant { waiting: lowest.clone(), until: u64::MAX }
            } else {
                Pick::Floor { until }
            });
        }
        if lower {
            return Ok(Pick::Tenant { waiting: lowest.clone(), until: u64::MAX });
        }
        // The head's own batch: up to the next tenant's waiting records, so
        // its lease leaves no hole below them (the cursor follows it).
        let next_other = waiting.iter().filter(|w| w.tenant != head.tenant).map(|w| w.runs[0].0).min();
        Ok(Pick::Tenant { waiting: head.clone(), until: next_other.unwrap_or(u64::MAX) })
    }

    /// A lease of `lane` that holds only short runs (no [`SOLO_RUN`]
    /// records of one tenant in a row), for a joint lease
    /// (`deliveries::joint`), or none: the floor up to the first waiting
    /// run of a batch (among each tenant's first runs); when the floor's
    /// first waiting run is itself a batch, the lowest-tag other tenant
    /// whose first run is short and that is not in `taken`, its records
    /// up to its own first batch.
    pub fn short_pick(
        &mut self,
        lane: &Lane,
        ll: &LaneLeases,
        wants: &dyn Fn(&str, &str) -> bool,
        taken: &[Arc<str>],
    ) -> wal::Result<Option<Pick>> {
        let ix = self.lanes.entry(lane.id()).or_default();
        ix.sync(lane, ll, wants, SCAN_BUDGET)?;
        let waiting = ix.waiting(ll);
        let long = |r: &(u64, u64)| r.1 - r.0 >= SOLO_RUN;
        let first_batch = |w: &Waiting| w.runs.iter().take(RUNS_LOOKED_AT).find(|r| long(r)).map(|r| r.0);
        let Some(head) = waiting.iter().filter_map(|w| w.runs.first()).map(|r| r.0).min() else {
            return Ok(None);
        };
        let until = waiting.iter().filter_map(first_batch).min().unwrap_or(u64::MAX);
        if until > head {
            return Ok(Some(Pick::Floor { until }));
        }
        let p = lane.id().priority;
        let lowest = waiting
            .iter()
            .filter(|w| w.runs.first().is_some_and(|r| !long(r)) && !taken.contains(&w.tenant))
            .min_by(|a, b| self.share.tag(p, &a.tenant).total_cmp(&self.share.tag(p, &b.tenant)));
        Ok(lowest.map(|w| {
            // Past the runs looked at, a batch may hide: stop before them.
            let unseen = w.runs.get(RUNS_LOOKED_AT).map_or(u64::MAX, |r| r.0);
            let until = first_batch(w).unwrap_or(unseen);
            Pick::Tenant { waiting: w.clone().below(until), until: u64::MAX }
        }))
    }

    /// Forget what the index knows of `lane` (a rewind moved its floor
    /// back): it is scanned again from the floor.
    pub fn forget_lane(&mut self, lane: LaneId) {
        self.lanes.remove(&lane);
    }

    /// A lease at `p` held `records` per tenant: charge each by its weight.
    pub fn charge(&mut self, p: Priority, records: &[(Arc<str>, u64)], weight: &dyn Fn(&str) -> f64) {
        let start = records.iter().map(|(t, _)| self.share.tag(p, t)).fold(f64::INFINITY, f64::min);
        if !start.is_finite() {
            return;
        }
        for (t, n) in records {
            self.share.charge(p, start, t, *n, weight(t));
        }
    }
}
