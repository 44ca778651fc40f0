//! The accept path's metrics: handles into the broker's registry (the
//! broker registers them with the rest of `/metrics` and hands clones
//! here). Per-label handles the accept path resolves once live with the
//! tenants and topics they label (`intake::roster`).

use prometheus::{Gauge, IntCounterVec};

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
