//! The exporter's own metrics (served on `--metrics-listen`): every name here.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::Arc;

/// The lane priorities, as the broker names them (`normal/2` → `normal`);
/// a re-drive of dead letters is `dead_letters`.
pub const PRIORITIES: [&str; 4] = ["high", "normal", "low", "dead_letters"];

pub struct ExporterMetrics {
    registry: Registry,
    /// outcome: delivered, retryable, poison, lease_lost, gone
    pub deliveries: IntCounterVec,
    pub delivery_seconds: HistogramVec,
    pub records_delivered: IntCounterVec,
    pub dead_letters: IntCounterVec,
    /// The adaptive (or pinned) limit on leases delivered at once.
    pub concurrency_limit: IntGaugeVec,
    /// Leases being delivered now, by the priority of their lane.
    pub in_flight: IntGaugeVec,
    /// Records per lease delivered.
    pub lease_records: HistogramVec,
    /// SIGHUP reloads by result (ok, error).
    pub reloads: IntCounterVec,
    /// When the configuration was last (re)loaded whole, unix seconds.
    pub last_reload_success: prometheus::Gauge,
}

impl ExporterMetrics {
    pub fn new() -> Arc<ExporterMetrics> {
        let registry = Registry::new();
        plumbing::build_info::register(&registry, env!("CARGO_PKG_VERSION"))
            .expect("the build and process series register once");
        let deliveries = counter(
            "weir_exporter_deliveries_total",
            "Sink calls by outcome (delivered, retryable, poison, lease_lost).",
            &["destination", "outcome"],
        );
        let delivery_seconds = histogram(
            "weir_exporter_delivery_seconds",
            "Time from record ingest to its delivery at the sink.",
            // Up to an hour: during a sink's outage records wait that long.
            vec![
                0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0, 900.0, 1800.0, 3600.0,
            ],
        );
        let records_delivered =
            counter("weir_exporter_records_delivered_total", "Records the sink accepted.", &["destination"]);
        let dead_letters = counter(
            "weir_exporter_dead_letters_total",
            "Records isolated as poison and sent to dead letters.",
            &["destination"],
        );
        let concurrency_limit = gauge(
            "weir_exporter_concurrency_limit",
            "Leases this exporter may deliver at once (adaptive or pinned).",
            &["destination"],
        );
        let in_flight = gauge(
            "weir_exporter_in_flight",
            "Leases being delivered now, by the priority of their lane.",
            &["destination", "priority"],
        );
        let lease_records = histogram(
            "weir_exporter_lease_records",
            "Records per lease delivered.",
            vec![1.0, 10.0, 50.0, 100.0, 500.0, 1_000.0, 5_000.0, 10_000.0, 50_000.0, 100_000.0],
        );
        let reloads =
            counter("weir_config_reloads_total", "Configuration reloads (SIGHUP) by result (ok, error).", &["result"]);
        let last_reload_success = prometheus::Gauge::new(
            "weir_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded whole (start or SIGHUP), unix seconds.",
        )
        .expect("valid metric");
        registry.register(Box::new(last_reload_success.clone())).expect("metric registered once");
        for c in [&deliveries, &records_delivered, &dead_letters, &reloads] {
            registry.register(Box::new(c.clone())).expect("metric registered once");
        }
        for g in [&concurrency_limit, &in_flight] {
            registry.register(Box::new(g.clone())).expect("metric registered once");
        }
        for h in [&delivery_seconds, &lease_records] {
            registry.register(Box::new(h.clone())).expect("metric registered once");
        }
        Arc::new(ExporterMetrics {
            registry,
            deliveries,
            delivery_seconds,
            records_delivered,
            dead_letters,
            concurrency_limit,
            in_flight,
            lease_records,
            reloads,
            last_reload_success,
        })
    }

    /// The configuration was just loaded whole.
    pub fn reloaded_now(&self) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        self.last_reload_success.set(now);
    }

    /// Create this process's series at 0 (its one destination, every
    /// outcome), so dashboards and alerts see the exporter from its start.
    pub fn init_series(&self, destination: &str) {
        for outcome in ["delivered", "retryable", "poison", "lease_lost", "gone"] {
            self.deliveries.with_label_values(&[destination, outcome]);
        }
        self.delivery_seconds.with_label_values(&[destination]);
        self.records_delivered.with_label_values(&[destination]);
        self.dead_letters.with_label_values(&[destination]);
        self.concurrency_limit.with_label_values(&[destination]);
        self.lease_records.with_label_values(&[destination]);
        for result in ["ok", "error"] {
            self.reloads.with_label_values(&[result]);
        }
        self.reloaded_now();
        for p in PRIORITIES {
            self.in_flight.with_label_values(&[destination, p]);
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// A counter family named `name`, one series per value of `labels`.
fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

/// A gauge family named `name`, one series per value of `labels`.
fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

/// A histogram family by destination with these bucket bounds.
fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["destination"]).expect("valid metric")
}
