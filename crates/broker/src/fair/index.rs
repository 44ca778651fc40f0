//! Where each tenant's records wait in one lane, for one destination: the
//! hints that let a tenant lease start at its tenant's first waiting
//! record instead of reading another tenant's backlog to find it.
//!
//! The index is derived, never persisted: from the lane's frame headers
//! (scanned once each, `Lane::visit_frame_metas`, bounded per call) and
//! from the destination's state (the floor and the tenant's ahead entry,
//! which only grow, except by an operator's rewind). A restart or a rewind
//! rebuilds it as it goes.
//!
//! # Invariant (what makes a hint safe to lease from)
//! For each indexed tenant, `runs` hold every record of that tenant routed
//! to the destination in `[trimmed_to, scanned)`: two runs never overlap,
//! and no such record lies outside them. A tenant is *exact* while
//! `trimmed_to <= unleased_from(tenant)`: then its first run starts at or
//! before its first waiting record, and nothing of it waits between. Only
//! an exact tenant is leased from the index; any other waits for the floor.
//!
//! # Limits
//! At most [`MAX_TENANTS`] tenants per lane (others are left to the
//! floor) and [`MAX_RUNS`] runs per tenant (beyond, its last run grows to
//! hold the new frames: coarser, never wrong — a read of a run passes the
//! other tenants' records in it). A call scans at most `budget` frames.

use crate::destination::LaneLeases;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::Arc;
use wal::Lane;

/// Tenants indexed per lane and destination.
pub const MAX_TENANTS: usize = 4096;
/// Runs kept per tenant before its last run grows instead.
pub const MAX_RUNS: usize = 64;
/// Runs of a tenant [`LaneIndex::waiting`] shows (its first): what one
/// pick or one tenant lease reads at most, so an acquire copies little.
pub const RUNS_SHOWN: usize = 8;

/// One tenant's waiting records in the lane.
#[derive(Debug, Default)]
struct TenantRuns {
    /// Runs below this were dropped: the tenant's records there were handed out.
    trimmed_to: u64,
    /// `[from, to)` offset runs holding its records, in order.
    runs: VecDeque<(u64, u64)>,
}

impl TenantRuns {
    /// Drop what lies below `start`; false when the tenant is not exact at
    /// `start` (its runs may miss a waiting record).
    fn trim(&mut self, start: u64) -> bool {
        if start < self.trimmed_to {
            return false;
        }
        self.trimmed_to = start;
        while let Some(r) = self.runs.front_mut() {
            if r.1 <= start {
                self.runs.pop_front();
            } else {
                r.0 = r.0.max(start);
                break;
            }
        }
        true
    }

    fn push(&mut self, from: u64, to: u64) {
        let full = self.runs.len() >= MAX_RUNS;
        match self.runs.back_mut() {
            Some(last) if last.1 == from || full => last.1 = to,
            _ => self.runs.push_back((from, to)),
        }
    }
}

/// One lane's index for one destination (see the module doc).
#[derive(Debug, Default)]
pub struct LaneIndex {
    /// Frames below this offset were scanned.
    scanned: u64,
    /// Every frame of `[complete_from, scanned)` that is not below the
    /// floor was added to its tenant's runs, and no tenant was forgotten
    /// since: a tenant first seen now has no earlier record there, so its
    /// runs are whole from here. `None` before the first scan.
    complete_from: Option<u64>,
    tenants: HashMap<Arc<str>, TenantRuns>,
    /// The tenants whose runs are not empty.
    waiting: BTreeSet<Arc<str>>,
}

/// A tenant with records waiting, as the index sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub tenant: Arc<str>,
    /// Its first runs, in order, at most [`RUNS_SHOWN`] (the first starts
    /// at its first waiting record).
    pub runs: Vec<(u64, u64)>,
}

impl Waiting {
    /// The same tenant's runs cut to below `until` (at least its first run
    /// begins below it: `until` is past its first waiting record).
    pub fn below(mut self, until: u64) -> Waiting {
        self.runs.retain(|r| r.0 < until);
        for r in &mut self.runs {
            r.1 = r.1.min(until);
        }
        self
    }
}

impl LaneIndex {
    /// Scan up to `budget` frames appended since the last call. A frame
    /// whose (tenant, topic) `wants` is added to its tenant's runs.
    pub fn sync(
        &mut self,
        lane: &Lane,
        ll: &LaneLeases,
        wants: &dyn Fn(&str, &str) -> bool,
        budget: usize,
    ) -> wal::Result<()> {
        self.scanned = self.scanned.max(ll.next_unleased).max(lane.earliest_offset());
        self.complete_from.get_or_insert(self.scanned);
        if self.scanned >= lane.next_offset() {
            return Ok(());
        }
        let (mut seen, mut end) = (0usize, self.scanned);
        let from = self.scanned;
        let visited = lane.visit_frame_metas(from, |f| {
            let (first, next) = (f.header.base_offset.max(from), f.header.next_offset());
            if next <= from {
                return ControlFlow::Continue(());
            }
            if wants(f.tenant, f.topic) {
                self.add(f.tenant, first, next);
            }
            end = next;
            seen += 1;
            if seen >= budget {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        // What was added is scanned even when a later frame failed to read:
        // the next call goes on from there, never adds a frame twice.
        self.scanned = self.scanned.max(end);
        visited
    }

    fn add(&mut self, tenant: &str, from: u64, to: u64) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.push(from, to);
            self.waiting.insert(self.key_of(tenant));
            return;
        }
        if self.tenants.len() >= MAX_TENANTS {
            // Someone is forgotten (or this tenant is left out): from here
            // on only what is scanned next is whole for a newcomer.
            self.complete_from = Some(to);
            self.evict_one();
            if self.tenants.len() >= MAX_TENANTS {
                return;
            }
        }
        let key: Arc<str> = Arc::from(tenant);
        // No frame of it since `complete_from` (it would be indexed): its
        // runs are whole from there.
        let whole_from = self.complete_from.unwrap_or(from).min(from);
        let mut runs = TenantRuns { trimmed_to: whole_from, runs: VecDeque::new() };
        runs.push(from, to);
        self.tenants.insert(key.clone(), runs);
        self.waiting.insert(key);
    }

    /// The shared name of an indexed tenant.
    fn key_of(&self, tenant: &str) -> Arc<str> {
        self.tenants.get_key_value(tenant).map_or_else(|| Arc::from(tenant), |(k, _)| k.clone())
    }

    /// Make room: forget one tenant with nothing waiting.
    fn evict_one(&mut self) {
        let idle = self.tenants.keys().find(|k| !self.waiting.contains(*k)).cloned();
        if let Some(k) = idle {
            self.tenants.remove(&k);
        }
    }

    /// The exact tenants with records waiting, each trimmed to where its
    /// waiting records begin in `ll`. Cost: the tenants waiting in the index.
    pub fn waiting(&mut self, ll: &LaneLeases) -> Vec<Waiting> {
        let mut out = Vec::with_capacity(self.waiting.len());
        let mut drained = Vec::new();
        for t in &self.waiting {
            let Some(runs) = self.tenants.get_mut(t) else {
                drained.push(t.clone());
                continue;
            };
            let start = ll.unleased_from(t);
            if !runs.trim(start) {
                // A rewind moved it back: its runs may miss records now
                // waiting again. Exact again only from what is scanned on.
                let seen = runs.runs.back().map_or(0, |r| r.1).max(runs.trimmed_to).max(self.scanned);
                *runs = TenantRuns { trimmed_to: seen, runs: VecDeque::new() };
            }
            if runs.runs.is_empty() {
                drained.push(t.clone());
                continue;
            }
            out.push(Waiting { tenant: t.clone(), runs: runs.runs.iter().take(RUNS_SHOWN).copied().collect() });
        }
        for t in drained {
            self.waiting.remove(&t);
        }
        out
    }

    /// Tenants indexed (for the bounds' tests).
    #[cfg(test)]
    pub fn indexed(&self) -> usize {
        self.tenants.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_when_adjacent_and_grow_past_the_limit() {
        let mut t = TenantRuns::default();
        t.push(0, 5);
        t.push(5, 9);
        assert_eq!(t.runs, [(0, 9)]);
        for i in 0..(MAX_RUNS as u64 + 10) {
            t.push(100 + 10 * i, 101 + 10 * i);
        }
        assert_eq!(t.runs.len(), MAX_RUNS);
        assert_eq!(t.runs.back().map(|r| r.1), Some(101 + 10 * (MAX_RUNS as u64 + 9)));
        assert!(t.trim(100));
        assert_eq!(t.runs.front(), Some(&(100, 101)));
        assert!(!t.trim(50), "a start below the trimmed point is not exact");
    }

    #[test]
    fn the_index_holds_at_most_its_tenants_and_a_newcomer_after_a_forgotten_one_is_not_whole() {
        let mut ix = LaneIndex { complete_from: Some(0), ..LaneIndex::default() };
        for i in 0..MAX_TENANTS as u64 {
            ix.add(&format!("t{i}"), i, i + 1);
        }
        let ll = LaneLeases::at(0);
        assert_eq!(ix.waiting(&ll).len(), MAX_TENANTS, "all whole from the start");
        ix.add("late", 10_000, 10_001);
        assert_eq!(ix.indexed(), MAX_TENANTS, "no room: every indexed tenant has records waiting");
        assert!(ix.waiting(&ll).iter().all(|w| &*w.tenant != "late"), "late's runs start where the index forgot");
    }

    #[test]
    fn a_tenant_first_seen_mid_lane_is_exact_only_from_there() {
        let mut ix = LaneIndex { complete_from: Some(10), ..LaneIndex::default() };
        ix.add("a", 10, 12);
        let mut ll = LaneLeases::at(0);
        assert!(ix.waiting(&ll).is_empty(), "records of a before 10 were never indexed");
        ix.add("a", 20, 21);
        ll.raise_floor(12);
        let w = ix.waiting(&ll);
        assert_eq!(w, vec![Waiting { tenant: "a".into(), runs: vec![(20, 21)] }]);
    }
}
