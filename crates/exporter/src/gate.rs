//! The exporter's workers pass through one gate: at most the concurrency
//! controller's limit of them hold a lease (or wait on an acquire) at once.
//! Each delivery's end feeds the controller, whose limit the gate follows.
//!
//! In event mode (one record per request) a lease fans out into many
//! requests: those pass a second count against the same limit
//! ([`Gate::request`]), across all leases, so the sink never has more
//! requests in flight than the adaptive limit however many leases are
//! being delivered.

use crate::concurrency::{Aimd, Signal};
use crate::metrics::ExporterMetrics;
use crate::width::Level;
use plumbing::clock::monotonic_ms;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

struct Inner {
    aimd: Aimd,
    /// Workers inside the gate (at the sink, or waiting on an acquire).
    inside: usize,
    /// Of those, the ones delivering a lease: what the limit is judged on
    /// (workers long-polling an empty destination are not using the sink).
    delivering: usize,
    /// Of those, the ones whose lease is at the sink (not yet committing):
    /// a delivery's level (`crate::width`).
    at_sink: usize,
    /// Event-mode requests in flight, across leases.
    requests: usize,
}

/// A delivery at the sink: its level counts it, and it holds its place
/// inside the gate, until dropped (when the sink answered). Its commit to
/// the broker then runs outside the gate: the place is the sink's, and a
/// commit holding it (a sled flush, a round trip) left the sink a place
/// short for that long at every delivery.
pub struct AtSink<'a>(&'a Gate);

impl Drop for AtSink<'_> {
    fn drop(&mut self) {
        {
            let mut g = self.0.lock();
            g.at_sink = g.at_sink.saturating_sub(1);
            g.inside = g.inside.saturating_sub(1);
        }
        self.0.changed.notify_waiters();
    }
}

/// A place for one event-mode request; freed when dropped (also when the
/// request's future is dropped part-way).
pub struct RequestSlot<'a>(&'a Gate);

impl Drop for RequestSlot<'_> {
    fn drop(&mut self) {
        self.0.lock().requests -= 1;
        self.0.request_freed.notify_one();
    }
}

pub struct Gate {
    inner: Mutex<Inner>,
    changed: Notify,
    /// Wakes one event-mode request waiting for a place (a place freed
    /// wakes one waiter, not all: a lease fans out into thousands).
    request_freed: Notify,
    limit_gauge: prometheus::IntGauge,
}

impl Gate {
    pub fn new(aimd: Aimd, metrics: &ExporterMetrics, destination: &str) -> Gate {
        let limit_gauge = metrics.concurrency_limit.with_label_values(&[destination]);
        limit_gauge.set(aimd.limit() as i64);
        Gate {
            inner: Mutex::new(Inner { aimd, inside: 0, delivering: 0, at_sink: 0, requests: 0 }),
            changed: Notify::new(),
            request_freed: Notify::new(),
            limit_gauge,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section is a plain field update.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most workers the limit may ever let in.
    pub fn ceiling(&self) -> usize {
        self.lock().aimd.ceiling()
    }

    /// The current limit: what this exporter reports to the broker with
    /// each acquire, for the reservation of the higher priorities.
    pub fn limit(&self) -> usize {
        self.lock().aimd.limit()
    }

    /// Wait for a place inside.
    pub async fn enter(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the check: a place freed meanwhile wakes us.
            notified.as_mut().enable();
            {
                let mut g = self.lock();
                if g.inside < g.aimd.limit() {
                    g.inside += 1;
                    return;
                }
            }
            notified.await;
        }
    }

    /// Wait for a place for one event-mode request.
    pub async fn request(&self) -> RequestSlot<'_> {
        loop {
            let notified = self.request_freed.notified();
            tokio::pin!(notified);
            // Registered before the check: a place freed meanwhile wakes us.
            notified.as_mut().enable();
            {
                let mut g = self.lock();
                if g.requests < g.aimd.limit() {
                    g.requests += 1;
                    return RequestSlot(self);
                }
            }
            notified.await;
        }
    }

    /// The worker inside starts delivering a lease: its level (the
    /// deliveries at the sink, itself included), to hand back to
    /// [`Gate::leave`], and its place at the sink, to drop when the sink
    /// has answered. A delivery committing to the broker is not at the
    /// sink: counted, a fifth lease out while one of four commits made
    /// level 5 of a 4-wide sink look calm, and the width learned one too
    /// wide (`benches/incident.py` `flood_part`: limit 5, the sink's queue
    /// p99 15 ms).
    pub fn started(&self) -> (Level, AtSink<'_>) {
        let mut g = self.lock();
        g.delivering += 1;
        g.at_sink += 1;
        debug_assert!(g.at_sink <= g.inside, "only a worker inside is at the sink");
        debug_assert!(g.at_sink <= g.delivering, "only a delivery is at the sink");
        let (delivering, at_sink) = (g.delivering, g.at_sink);
        g.aimd.on_start(delivering);
        (Level(at_sink), AtSink(self))
    }

    /// The worker leaves; `done` is the level its delivery started at and
    /// what it said (its place was freed when the sink answered, `AtSink`),
    /// none for an acquire that brought no lease (its place is freed now).
    pub fn leave(&self, done: Option<(Level, Signal)>) {
        let limit = {
            let mut g = self.lock();
            if done.is_none() {
                debug_assert!(g.inside > 0, "only a worker inside leaves");
                g.inside = g.inside.saturating_sub(1);
            }
            if let Some((level, s)) = done {
                g.delivering = g.delivering.saturating_sub(1);
                g.aimd.on_done(s, level, monotonic_ms());
                tracing::trace!(signal = ?s, inside = g.inside, limit = g.aimd.limit(), "delivery ended");
            }
            g.aimd.limit()
        };
        self.limit_gauge.set(limit as i64);
        self.changed.notify_waiters();
        // The limit may have grown: every waiting request looks again.
        self.request_freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concurrency::Mode;

    #[tokio::test]
    async fn event_requests_never_exceed_the_limit_and_a_dropped_slot_frees_its_place() {
        let metrics = ExporterMetrics::new();
        let gate = Gate::new(Aimd::new(Mode::Pinned(2), 8), &metrics, "d");
        let a = gate.request().await;
        let _b = gate.request().await;
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), gate.request()).await;
        assert!(third.is_err(), "a third request passed a limit of 2");
        drop(a);
        let c = tokio::time::timeout(std::time::Duration::from_secs(5), gate.request()).await;
        assert!(c.is_ok(), "a freed place was not handed on");
    }
}
