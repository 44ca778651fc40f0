//! Every metric the broker exports: names, labels and help text live here
//! and nowhere else.

use plumbing::reasons::Reason;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use std::sync::Arc;

/// The broker's Prometheus registry and a handle to each of its series;
/// made once per process ([`Metrics::new`]) and rendered at `/metrics`.
pub struct Metrics {
    registry: Registry,
    pub(crate) ingest_requests: IntCounterVec,
    pub(crate) ingest_records: IntCounterVec,
    pub(crate) ingest_seconds: Histogram,
    pub(crate) demoted_records: IntCounterVec,
    pub(crate) backpressure_shed: IntCounterVec,
    pub(crate) idempotent_replays: IntCounterVec,
    pub(crate) idempotency_key_reused: IntCounterVec,
    pub(crate) wal_commit_seconds: Histogram,
    pub(crate) wal_fsyncs: IntCounter,
    pub(crate) wal_commits: IntCounter,
    pub(crate) wal_records_per_commit: Histogram,
    pub(crate) wal_batches_per_commit: Histogram,
    pub(crate) wal_lane_failed: IntGaugeVec,
    pub(crate) wal_bytes: IntGauge,
    pub(crate) memory_budget_held: IntGauge,
    pub(crate) wal_quarantined_segments: IntGauge,
    pub(crate) http_refused: IntCounterVec,
    /// SIGHUP reloads by result (`ok`, `error`).
    pub(crate) config_reloads: IntCounterVec,
    /// When the configuration was last loaded whole (start or reload), unix seconds.
    pub(crate) config_last_reload_success: prometheus::Gauge,
    pub(crate) wal_fsync_seconds: Histogram,
    pub(crate) disk_used_ratio: Gauge,
    pub(crate) destination_oldest_pending_age: GaugeVec,
    /// `weir_tenant_oldest_pending_age_seconds{destination,tenant}`.
    pub(crate) tenant_oldest_pending_age: GaugeVec,
    pub(crate) destination_lag_records: IntGaugeVec,
    pub(crate) destination_lag_bytes: IntGaugeVec,
    pub(crate) destination_breaker_state: IntGaugeVec,
    /// `weir_destination_paused{destination}`: 1 while paused.
    pub(crate) destination_paused: IntGaugeVec,
    pub(crate) lease_expired: IntCounterVec,
    pub(crate) leases_acquired: IntCounterVec,
    pub(crate) leases_committed: IntCounterVec,
    pub(crate) lease_seconds: HistogramVec,
    /// Ingest to commit, per record.
    pub(crate) delivery_latency: HistogramVec,
    pub(crate) dead_letter_records: IntCounterVec,
    pub(crate) destination_dropped_records: IntCounterVec,
    pub(crate) segments_deleted: IntCounter,
}

fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    // Names are static and unique: registration cannot fail.
    r.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(r, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    reg(r, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    reg(r, Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric"))
}

const LATENCY: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.5, 1.0, 5.0];
/// Ingest to commit: milliseconds when all is well, up to an hour during a
/// sink's outage (a p99 that flat-lines at the top bucket hides how long).
const DELIVERY: [f64; 20] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];
const COUNTS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 512.0, 2048.0];

impl Metrics {
    /// The configuration was just loaded whole.
    pub(crate) fn config_loaded_now(&self) {
        self.config_last_reload_success.set(plumbing::clock::now_ms() as f64 / 1000.0);
    }

    /// A fresh registry with every series registered, and the
    /// `weir_http_refused_total` reasons at zero.
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new();
        plumbing::build_info::register(&r, env!("CARGO_PKG_VERSION"))
            .expect("the build and process series register once");
        let m = Arc::new(Metrics {
            ingest_requests: counter_vec(&r, "weir_ingest_requests_total", "Ingest requests by topic and HTTP status code.", &["topic", "code"]),
            ingest_records: counter_vec(&r, "weir_ingest_records_total", "Records acknowledged, by tenant, topic and the priority they were stored at.", &["tenant", "topic", "priority"]),
            ingest_seconds: histogram(&r, "weir_ingest_request_seconds", "Ingest request latency, parse to durable ack.", LATENCY.to_vec()),
            demoted_records: counter_vec(&r, "weir_demoted_records_total", "Records sent to the low lane instead of the tenant's own, by reason (over_rate, limiter_contention, limiter_clock).", &["tenant", "reason"]),
            backpressure_shed: counter_vec(&r, "weir_backpressure_shed_total", "Requests refused with 429/507 to protect a lagging destination or the disk, by reason.", &["tenant", "reason"]),
            idempotent_replays: counter_vec(&r, "weir_idempotent_replays_total", "Requests answered from the idempotency window without appending.", &["tenant"]),
            idempotency_key_reused: counter_vec(&r, "weir_idempotency_key_reused_total", "Requests refused (422 idempotency_key_reused) because their Idempotency-Key names a different request inside the window.", &["tenant"]),
            wal_commit_seconds: histogram(&r, "weir_wal_commit_seconds", "Duration of one WAL commit round (write + fdatasync).", LATENCY.to_vec()),
            wal_fsyncs: reg(&r, IntCounter::new("weir_wal_fsyncs_total", "fdatasync calls made by WAL commit rounds.").expect("valid metric")),
            wal_commits: reg(&r, IntCounter::new("weir_wal_commits_total", "WAL commit rounds; fsyncs per commit = weir_wal_fsyncs_total / this.").expect("valid metric")),
            wal_records_per_commit: histogram(&r, "weir_wal_records_per_commit", "Records made durable by one commit round.", COUNTS.to_vec()),
            wal_batches_per_commit: histogram(&r, "weir_wal_batches_per_commit", "Batches (requests) sharing one commit round.", COUNTS.to_vec()),
            wal_lane_failed: gauge_vec(&r, "weir_wal_lane_failed", "1 while a WAL lane is failed closed.", &["lane"]),
            wal_bytes: reg(&r, IntGauge::new("weir_wal_bytes", "Bytes held in WAL segments.").expect("valid metric")),
            memory_budget_held: reg(&r, IntGauge::new("weir_memory_budget_held_bytes", "Bytes of ingest request bodies in flight charged to memory_budget_bytes (read, inflated, framed), as of the last maintenance pass.").expect("valid metric")),
            config_reloads: counter_vec(&r, "weir_config_reloads_total", "Configuration reloads (SIGHUP) by result (ok, error).", &["result"]),
            config_last_reload_success: reg(&r, prometheus::Gauge::new("weir_config_last_reload_success_timestamp_seconds", "When the configuration was last loaded whole (at start or by a reload), unix seconds.").expect("valid metric")),
            http_refused: counter_vec(&r, "weir_http_refused_total", "Connections and requests refused before any tenant is known, by reason (connections, memory, idempotency_keys).", &["reason"]),
            wal_quarantined_segments: reg(&r, IntGauge::new("weir_wal_quarantined_segments", "Quarantined WAL segment files awaiting the operator (broker-admin verify names the offsets they lost).").expect("valid metric")),
            wal_fsync_seconds: histogram(&r, "weir_wal_fsync_seconds", "Duration of one commit round's fdatasync alone (the device's share of weir_wal_commit_seconds).", LATENCY.to_vec()),
            disk_used_ratio: reg(&r, Gauge::new("weir_disk_used_ratio", "Fraction of the data directory's filesystem in use (ingest gets 429 above disk_high_watermark).").expect("valid metric")),
            destination_oldest_pending_age: reg(&r, GaugeVec::new(Opts::new("weir_destination_oldest_pending_age_seconds", "Age of the oldest record the destination has not committed (0 when caught up)."), &["destination"]).expect("valid metric")),
            tenant_oldest_pending_age: reg(&r, GaugeVec::new(Opts::new("weir_tenant_oldest_pending_age_seconds", "Age of a tenant's oldest record the destination has not committed, as of the last maintenance pass (0 when it has none pending); tenants past metrics_max_tenant_series share tenant=\"_other\" (the oldest of theirs)."), &["destination", "tenant"]).expect("valid metric")),
            destination_lag_records: gauge_vec(&r, "weir_destination_lag_records", "Records not yet committed by the destination.", &["destination"]),
            destination_lag_bytes: gauge_vec(&r, "weir_destination_lag_bytes", "Bytes not yet committed by the destination (estimate).", &["destination"]),
            destination_breaker_state: gauge_vec(&r, "weir_destination_breaker_state", "Breaker state: 0 closed, 1 half-open, 2 open.", &["destination"]),
            destination_paused: gauge_vec(&r, "weir_destination_paused", "1 while the destination is paused (by an operator, or by its sink's 410 Gone): no leases are handed out.", &["destination"]),
            lease_expired: counter_vec(&r, "weir_lease_expired_total", "Leases that expired before commit and were offered again.", &["destination"]),
            leases_acquired: counter_vec(&r, "weir_leases_acquired_total", "Leases handed to exporters.", &["destination"]),
            leases_committed: counter_vec(&r, "weir_leases_committed_total", "Leases committed.", &["destination"]),
            lease_seconds: reg(&r, HistogramVec::new(HistogramOpts::new("weir_lease_seconds", "Time from acquire to commit.").buckets(LATENCY.to_vec()), &["destination"]).expect("valid metric")),
            delivery_latency: reg(&r, HistogramVec::new(HistogramOpts::new("weir_delivery_latency_seconds", "Time from a record's ingest to its destination's commit, by the lane priority it was stored at.").buckets(DELIVERY.to_vec()), &["destination", "priority"]).expect("valid metric")),
            dead_letter_records: counter_vec(&r, "weir_dead_letter_records_total", "Records moved to the destination's dead letters.", &["destination"]),
            destination_dropped_records: counter_vec(&r, "weir_destination_dropped_records_total", "Records skipped by on_lag_limit = drop_oldest.", &["destination"]),
            segments_deleted: reg(&r, IntCounter::new("weir_segments_deleted_total", "Sealed segments deleted by retention.").expect("valid metric")),
            registry: r,
        });
        for reason in Reason::HTTP_REFUSED.map(Reason::as_str) {
            m.http_refused.with_label_values(&[reason]);
        }
        m
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl wal::CommitObserver for Metrics {
    fn on_commit(&self, _lane: wal::LaneId, s: &wal::CommitStats) {
        self.wal_commits.inc();
        self.wal_fsyncs.inc_by(u64::from(s.fsyncs));
        self.wal_commit_seconds.observe(s.duration.as_secs_f64());
        self.wal_fsync_seconds.observe(s.sync_duration.as_secs_f64());
        self.wal_records_per_commit.observe(s.records as f64);
        self.wal_batches_per_commit.observe(s.batches as f64);
    }
}

impl Metrics {
    /// Handles to the accept path's series, for `api::Intake`.
    pub fn accept(&self) -> api::metrics::AcceptMetrics {
        api::metrics::AcceptMetrics {
            ingest_requests: self.ingest_requests.clone(),
            ingest_records: self.ingest_records.clone(),
            demoted_records: self.demoted_records.clone(),
            backpressure_shed: self.backpressure_shed.clone(),
            idempotent_replays: self.idempotent_replays.clone(),
            idempotency_key_reused: self.idempotency_key_reused.clone(),
            disk_used_ratio: self.disk_used_ratio.clone(),
        }
    }

    /// Create every labelled series the configuration implies, at 0, so
    /// that dashboards and alert rules (`ops/`) see each tenant and
    /// destination from the start: an absent series is not a zero to
    /// Prometheus (`rate()` of nothing is nothing, and an alert on it
    /// never fires).
    ///
    /// Tenants get series of their own up to `metrics_max_tenant_series`
    /// (the first in the file's order at start); the others share
    /// `tenant="_other"` ([`api::intake::OTHER_TENANTS`]).
    pub fn init_series(&self, cfg: &config::Config) {
        let cap = cfg.metrics_max_tenant_series;
        let labels = cfg.tenants.iter().enumerate().map(|(i, t)| tenant_label(&t.name, i < cap));
        self.init_series_labelled(cfg, labels);
    }

    /// [`Metrics::init_series`] with each tenant's label given (a reload's:
    /// by id, see `config::ids`).
    pub fn init_series_labelled<'a>(&self, cfg: &config::Config, tenant_labels: impl IntoIterator<Item = &'a str>) {
        for topic in &cfg.topics {
            self.ingest_requests.with_label_values(&[topic.name.as_str(), "200"]);
        }
        let mut seen = std::collections::HashSet::new();
        let labels: Vec<&str> = tenant_labels.into_iter().filter(|l| seen.insert(*l)).collect();
        for d in &cfg.destinations {
            let routed = |label: &&str| d.tenants.as_ref().is_none_or(|t| t.iter().any(|n| n == label));
            for tenant in labels.iter().filter(|l| **l == api::intake::OTHER_TENANTS || routed(l)) {
                self.tenant_oldest_pending_age.with_label_values(&[d.name.as_str(), tenant]);
            }
        }
        for &tenant in &labels {
            for topic in &cfg.topics {
                for p in wal::Priority::ALL {
                    self.ingest_records.with_label_values(&[tenant, topic.name.as_str(), p.as_str()]);
                }
            }
            for reason in Reason::DEMOTED.map(Reason::as_str) {
                self.demoted_records.with_label_values(&[tenant, reason]);
            }
            for reason in Reason::SHED.map(Reason::as_str) {
                self.backpressure_shed.with_label_values(&[tenant, reason]);
            }
            self.idempotent_replays.with_label_values(&[tenant]);
            self.idempotency_key_reused.with_label_values(&[tenant]);
        }
        for result in ["ok", "error"] {
            self.config_reloads.with_label_values(&[result]);
        }
        self.config_loaded_now();
        for d in &cfg.destinations {
            let l = [d.name.as_str()];
            for g in [
                &self.destination_lag_records,
                &self.destination_lag_bytes,
                &self.destination_breaker_state,
                &self.destination_paused,
            ] {
                g.with_label_values(&l);
            }
            for c in [
                &self.lease_expired,
                &self.leases_acquired,
                &self.leases_committed,
                &self.dead_letter_records,
                &self.destination_dropped_records,
            ] {
                c.with_label_values(&l);
            }
            self.lease_seconds.with_label_values(&l);
            self.destination_oldest_pending_age.with_label_values(&l);
            for p in wal::Priority::ALL {
                self.delivery_latency.with_label_values(&[d.name.as_str(), p.as_str()]);
            }
        }
        for p in wal::Priority::ALL {
            for shard in 0..cfg.shards {
                self.wal_lane_failed.with_label_values(&[&wal::LaneId::new(p, shard).to_string()]);
            }
        }
    }
}

/// A tenant's `tenant` label: its name while it has series of its own.
pub fn tenant_label(name: &str, own_series: bool) -> &str {
    if own_series {
        name
    } else {
        api::intake::OTHER_TENANTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::limiter::DemoteReason;

    #[test]
    fn every_demote_reason_is_initialised() {
        // Exhaustive on purpose: a new reason fails to compile here until listed.
        let name = |r: DemoteReason| match r {
            DemoteReason::OverRate | DemoteReason::LimiterContention | DemoteReason::LimiterClock => r.as_str(),
        };
        for r in [DemoteReason::OverRate, DemoteReason::LimiterContention, DemoteReason::LimiterClock] {
            assert!(Reason::DEMOTED.map(Reason::as_str).contains(&name(r)), "{}", r.as_str());
        }
    }

    #[test]
    fn a_fresh_config_has_every_labelled_series_at_zero() {
        let m = Metrics::new();
        m.init_series(&config::Config::development());
        let text = m.render();
        for line in [
            r#"weir_backpressure_shed_total{reason="disk_watermark",tenant="dev"} 0"#,
            r#"weir_demoted_records_total{reason="over_rate",tenant="dev"} 0"#,
            r#"weir_destination_breaker_state{destination="dev"} 0"#,
            r#"weir_destination_oldest_pending_age_seconds{destination="dev"} 0"#,
            r#"weir_dead_letter_records_total{destination="dev"} 0"#,
            r#"weir_idempotency_key_reused_total{tenant="dev"} 0"#,
            r#"weir_wal_lane_failed{lane="low/3"} 0"#,
            "weir_disk_used_ratio 0",
            "weir_wal_fsync_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
    }
}
