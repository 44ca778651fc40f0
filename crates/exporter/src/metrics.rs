//! The exporter's own metrics (served on `--metrics-listen`): every name here.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
use std::sync::Arc;

pub struct ExporterMetrics {
    registry: Registry,
    /// outcome: delivered, retryable, poison, lease_lost
    pub deliveries: IntCounterVec,
    pub delivery_seconds: HistogramVec,
    pub records_delivered: IntCounterVec,
    pub dead_letters: IntCounterVec,
}

impl ExporterMetrics {
    pub fn new() -> Arc<ExporterMetrics> {
        let registry = Registry::new();
        let deliveries = IntCounterVec::new(
            Opts::new(
                "weir_exporter_deliveries_total",
                "Sink calls by outcome (delivered, retryable, poison, lease_lost).",
            ),
            &["destination", "outcome"],
        )
        .expect("valid metric");
        let delivery_seconds = HistogramVec::new(
            HistogramOpts::new(
                "weir_exporter_delivery_seconds",
                "Time from record ingest to its delivery at the sink.",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
            &["destination"],
        )
        .expect("valid metric");
        let records_delivered = IntCounterVec::new(
            Opts::new("weir_exporter_records_delivered_total", "Records the sink accepted."),
            &["destination"],
        )
        .expect("valid metric");
        let dead_letters = IntCounterVec::new(
            Opts::new("weir_exporter_dead_letters_total", "Records isolated as poison and sent to dead letters."),
            &["destination"],
        )
        .expect("valid metric");
        for c in [&deliveries, &records_delivered, &dead_letters] {
            registry.register(Box::new(c.clone())).expect("metric registered once");
        }
        registry.register(Box::new(delivery_seconds.clone())).expect("metric registered once");
        Arc::new(ExporterMetrics { registry, deliveries, delivery_seconds, records_delivered, dead_letters })
    }

    /// Create this process's series at 0 (its one destination, every
    /// outcome), so dashboards and alerts see the exporter from its start.
    pub fn init_series(&self, destination: &str) {
        for outcome in ["delivered", "retryable", "poison", "lease_lost"] {
            self.deliveries.with_label_values(&[destination, outcome]);
        }
        self.delivery_seconds.with_label_values(&[destination]);
        self.records_delivered.with_label_values(&[destination]);
        self.dead_letters.with_label_values(&[destination]);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
