//! Event mode: a lease delivered one record per request, each with its own
//! id (`protocol::downstream_id::record_id`), many requests at once.
//!
//! ## Concurrency
//! A lease's records are cut into **chains**: with `--event-order none`
//! each record is its own chain; with `tenant`, each tenant's records, in
//! lease (offset) order, are one chain sent one after another. A few
//! runners per lease ([`RUNNERS`]) take chains in turn; every request first
//! takes a place at the exporter's gate ([`Gate::request`]), so requests in
//! flight across all leases stay within the adaptive limit, which the
//! leases' outcomes keep finding (`crate::concurrency`).
//!
//! ## Outcomes, per record
//! Each request is classed as a batch is (`super`): a 2xx delivers the
//! record; a content refusal (400, 413, 415, 422) dead-letters that record
//! alone (judged against the sink's row of refusals, `crate::streak`, as a
//! batch's single records are); an endpoint fault (3xx, 401, 403, 404,
//! 405, 407), a busy or down sink, or a 410 ends the lease: no request
//! starts after it, those in flight finish, and the lease goes back whole
//! (or, for a 410, is released). Records already delivered are delivered
//! again with the lease, under the same ids, which receivers deduplicate
//! on. With `tenant` order a chain stops at its first failure, so no
//! later record of that tenant is sent before it.

use super::{fingerprint, Deliverer, Leaves, Outcome, Poisoned};
use crate::backoff::Jitter;
use crate::config::EventOrder;
use crate::sink::{Record, SinkError};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The most runners one lease has: its share of requests in flight is
/// bounded by the gate, this only bounds the futures it keeps.
pub const RUNNERS: usize = 64;

/// What a lease's requests came to so far.
#[derive(Default)]
struct Tally {
    leaves: Leaves,
    poison: Vec<Poisoned>,
    /// The first failure that gives the lease back.
    failure: Option<SinkError>,
}

/// The lease's records cut into chains of indices (see the module doc).
fn chains(records: &[Record], order: EventOrder) -> Vec<Vec<usize>> {
    match order {
        EventOrder::None => (0..records.len()).map(|i| vec![i]).collect(),
        EventOrder::Tenant => {
            let mut by_tenant: Vec<(&str, Vec<usize>)> = Vec::new();
            for (i, r) in records.iter().enumerate() {
                match by_tenant.iter_mut().find(|(t, _)| *t == &*r.tenant) {
                    Some((_, chain)) => chain.push(i),
                    None => by_tenant.push((&r.tenant, vec![i])),
                }
            }
            by_tenant.into_iter().map(|(_, chain)| chain).collect()
        }
    }
}

fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    // Every critical section is a plain field update.
    tally.lock().unwrap_or_else(|e| e.into_inner())
}

impl Deliverer<'_> {
    /// Deliver `records` one per request (see the module doc).
    pub(super) async fn deliver_events(&self, records: &[Record]) -> Outcome {
        let (refused, screened) = self.screen(records);
        let records = screened.as_deref().unwrap_or(records);
        let chains = chains(records, self.event_order);
        let next = AtomicUsize::new(0);
        let tally = Mutex::new(Tally { poison: refused, ..Tally::default() });
        let mut runners: FuturesUnordered<_> =
            (0..chains.len().min(RUNNERS)).map(|_| self.runner(records, &chains, &next, &tally)).collect();
        while runners.next().await.is_some() {}
        drop(runners);
        let Tally { leaves, mut poison, failure } = tally.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = failure {
            return self.failed(e);
        }
        if let (Some(s), Some(refusal)) = (self.sink.streak(), leaves.only_refusal()) {
            if let Some(message) = s.judge(fingerprint(records), refusal) {
                return Outcome::Retry { message, retry_after: None, overload: false };
            }
        }
        poison.sort();
        Outcome::Delivered { poison }
    }

    /// Take chains in turn until none is left or the lease failed.
    async fn runner(&self, records: &[Record], chains: &[Vec<usize>], next: &AtomicUsize, tally: &Mutex<Tally>) {
        let mut jitter = Jitter::seeded();
        while let Some(chain) = chains.get(next.fetch_add(1, Ordering::Relaxed)) {
            for &i in chain {
                if lock(tally).failure.is_some() {
                    return;
                }
                let slot = match self.gate {
                    Some(g) => Some(g.request().await),
                    None => None,
                };
                // Looked at again: the lease may have failed while this waited.
                if lock(tally).failure.is_some() {
                    return;
                }
                let record = &records[i];
                let out = self.attempt(std::slice::from_ref(record), &self.record_key(record), &mut jitter).await;
                drop(slot);
                if !self.settle(record, out, tally) {
                    break;
                }
            }
        }
    }

    /// Count one request's end; false when its chain must stop.
    fn settle(&self, record: &Record, out: Result<(), SinkError>, tally: &Mutex<Tally>) -> bool {
        let streak = self.sink.streak();
        let mut t = lock(tally);
        match out {
            Ok(()) => {
                t.leaves.delivered = true;
                if let Some(s) = streak {
                    s.delivered();
                }
                true
            }
            Err(SinkError::Poison { message, refusal }) => {
                if let (Some(s), Some(r)) = (streak, refusal) {
                    s.refused(&record.tenant, r);
                }
                t.leaves.refused(refusal);
                t.poison.push(Poisoned::of(record, message));
                true
            }
            Err(e) => {
                t.failure.get_or_insert(e);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
