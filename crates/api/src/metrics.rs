//! The accept path's metrics: handles into the broker's registry (the
//! broker registers them with the rest of `/metrics` and hands clones
//! here), and the per-(tenant, topic, priority) counters resolved once.

use prometheus::{Gauge, IntCounter, IntCounterVec};
use std::sync::OnceLock;

/// The series the accept path counts into (names: docs/operations.md).
#[derive(Clone)]
pub struct AcceptMetrics {
    /// `weir_ingest_requests_total{topic,code}`.
    pub ingest_requests: IntCounterVec,
    /// `weir_ingest_records_total{tenant,topic,priority}`.
    pub ingest_records: IntCounterVec,
    /// `weir_demoted_records_total{tenant,reason}`.
    pub demoted_records: IntCounterVec,
    /// `weir_backpressure_shed_total{tenant,reason}`.
    pub backpressure_shed: IntCounterVec,
    /// `weir_idempotent_replays_total{tenant}`.
    pub idempotent_replays: IntCounterVec,
    /// `weir_idempotency_key_reused_total{tenant}`.
    pub idempotency_key_reused: IntCounterVec,
    /// `weir_disk_used_ratio`.
    pub disk_used_ratio: Gauge,
}

/// Ingest counter handles, resolved once per label set: the accept path
/// must not hash label values and lock the vector on every request. Slots
/// fill lazily, so only label sets that occur become series.
pub struct IngestCounters {
    topics: usize,
    /// `[tenant][topic][priority]`
    records: Vec<OnceLock<IntCounter>>,
    /// `[topic]`: requests answered 200.
    ok_requests: Vec<OnceLock<IntCounter>>,
}

impl IngestCounters {
    pub(crate) fn new(tenants: usize, topics: usize) -> IngestCounters {
        IngestCounters {
            topics,
            records: (0..tenants * topics * 3).map(|_| OnceLock::new()).collect(),
            ok_requests: (0..topics).map(|_| OnceLock::new()).collect(),
        }
    }

    /// `weir_ingest_records_total{tenant,topic,priority}`; indices as in the broker's tables.
    pub fn records(
        &self,
        m: &AcceptMetrics,
        (tenant, tenant_name): (usize, &str),
        (topic, topic_name): (usize, &str),
        priority: wal::Priority,
    ) -> IntCounter {
        let slot = (tenant * self.topics + topic) * 3 + priority as usize;
        cached(&self.records, slot, || {
            m.ingest_records.with_label_values(&[tenant_name, topic_name, priority.as_str()])
        })
    }

    /// `weir_ingest_requests_total{topic,code="200"}`.
    pub fn ok_requests(&self, m: &AcceptMetrics, (topic, topic_name): (usize, &str)) -> IntCounter {
        cached(&self.ok_requests, topic, || m.ingest_requests.with_label_values(&[topic_name, "200"]))
    }
}

/// The handle in `cells[slot]`, resolved on first use (an index outside the
/// table resolves every time rather than panic).
fn cached(cells: &[OnceLock<IntCounter>], slot: usize, resolve: impl FnOnce() -> IntCounter) -> IntCounter {
    match cells.get(slot) {
        Some(cell) => cell.get_or_init(resolve).clone(),
        None => resolve(),
    }
}
