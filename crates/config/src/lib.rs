//! # config — the broker's configuration and token table
//!
//! Owns the configuration file's shape ([`Config`]), its one validation
//! into a typed [`ValidConfig`], and the token table ([`tokens`]): what a
//! presented token is (a tenant's, an exporter's, the admin's). Both the
//! accept path (`api`) and the broker read these; neither owns them.
//!
//! ## Invariants
//! - Whatever [`Config::validate`] accepts keeps every bound the runtime
//!   divides, multiplies or adds by in range (docs/config.md lists each
//!   key's range; `broker/src/tests/config_bounds.rs` holds it).
//! - Tokens are kept as SHA-256 digests only and compared in constant time.
//!
//! ## Never
//! - hold or log a plain token;
//! - do I/O beyond reading the configuration file and the secret files it
//!   names (`*_file` keys), each with a size cap;
//! - depend on the broker, the accept path, sled or HTTP.
//!
//! ## The file
//! Broker configuration: TOML, every knob with a documented default
//! (`docs/config.md`), unknown keys rejected, unsafe combinations refused.
//!
//! [`Config`] is the file as written (what `--check-config` prints back);
//! [`Config::validate`] is the one check, and its answer, a [`ValidConfig`],
//! carries every value parsed into its type — the listen address, token
//! digests, tenant priorities, durations — so nothing downstream parses or
//! validates again.

#![deny(missing_docs)]

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

mod error;
mod file;
pub mod ids;
pub mod ranges;
mod secrets;
pub mod tokens;
mod valid;
pub mod weak;
pub use error::{ConfigError, ConfigKey, TokenOwner};
pub use ids::{Assigned, DestinationId, Ids, TenantId};
pub use valid::{Timing, Tokens, ValidConfig};
pub use weak::{is_shipped_token, SHIPPED_TOKEN_DIGESTS};

/// The tenant `dev`'s token in the embedded development defaults
/// ([`Config::development`]); refused on a non-loopback address.
pub const DEV_TENANT_TOKEN: &str = "dev-token";
/// The destination `dev`'s exporter token in the development defaults.
pub const DEV_EXPORTER_TOKEN: &str = "dev-exporter";
/// The admin token of the development defaults.
pub const DEV_ADMIN_TOKEN: &str = "dev-admin";

fn d_listen() -> String {
    "127.0.0.1:7070".into()
}
fn d_data_dir() -> PathBuf {
    PathBuf::from("./weir-data")
}
fn d_shards() -> u16 {
    wal::DEFAULT_SHARDS
}
fn d_segment_bytes() -> u64 {
    wal::DEFAULT_SEGMENT_BYTES
}
fn d_max_body() -> u64 {
    8 << 20
}
fn d_max_inflated() -> u64 {
    32 << 20
}
fn d_max_record() -> u64 {
    1 << 20
}
fn d_true() -> bool {
    true
}
fn d_idem_window() -> u64 {
    600
}
fn d_watermark() -> f64 {
    0.95
}
fn d_retry_after() -> u64 {
    1
}
fn d_lease_ms() -> u64 {
    30_000
}
fn d_lease_records() -> u32 {
    5_000
}
fn d_lease_bytes() -> u64 {
    4 << 20
}
fn d_long_poll() -> u64 {
    20_000
}
fn d_threshold() -> u32 {
    2
}
fn d_open_ms() -> u64 {
    5_000
}
fn d_in_flight() -> u32 {
    64
}
fn d_max_lag_bytes() -> u64 {
    1 << 30
}
fn d_maintenance_ms() -> u64 {
    250
}
fn d_max_connections() -> usize {
    16_384
}
fn d_per_tenant_connections() -> usize {
    1024
}
fn d_first_byte_timeout() -> u64 {
    2_000
}
fn d_tenant_share() -> f64 {
    0.25
}
fn d_memory_budget() -> u64 {
    1 << 30
}
fn d_body_timeout() -> u64 {
    30_000
}
fn d_drain_ms() -> u64 {
    10_000
}
fn d_tenant_series() -> usize {
    1000
}
fn d_idem_keys() -> usize {
    100_000
}

/// The whole file. Field docs are the reference for `docs/config.md`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address to listen on, `IP:PORT` (port 0: any free one).
    #[serde(default = "d_listen")]
    pub listen: String,
    /// The certificate chain (PEM, leaf first) of `listen`, `admin_listen`
    /// and `otlp_grpc_listen`; set with `tls_key_file`, every listener
    /// speaks TLS only. Re-read on reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// A CA (PEM): `listen` and `otlp_grpc_listen` then require a client
    /// certificate it signed at the handshake (mTLS), on top of the token.
    /// Never on `admin_listen`, whose probes carry none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// A second listener, `IP:PORT`, for the operator: when set,
    /// `/v1/admin/*`, `/metrics` and `/openapi.json` are served there and
    /// nowhere else (404 on `listen`); `/healthz` and `/readyz` on both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// The data directory: the WAL, the metadata store, the lock.
    #[serde(default = "d_data_dir")]
    pub data_dir: PathBuf,
    /// The admin API's token, plain or `sha256:<hex>`. The admin needs at
    /// least one token, from this key, `admin_tokens` or `admin_token_file`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub admin_token: String,
    /// More admin tokens, all valid at once (a rotation: add the new one,
    /// move the clients, remove the old).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_tokens: Vec<String>,
    /// A file holding the admin token (its first line; re-read on reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// The tokens read from `admin_token_file` ([`Config::load_secret_files`]).
    #[serde(skip)]
    pub admin_file_tokens: Vec<String>,
    /// Shards per priority.
    #[serde(default = "d_shards")]
    pub shards: u16,
    /// Segment roll size.
    #[serde(default = "d_segment_bytes")]
    pub segment_bytes: u64,
    /// Allocate each new segment's whole size at once (fewer metadata
    /// updates per fsync).
    #[serde(default = "d_true")]
    pub preallocate: bool,
    /// Group commit: wait up to this many microseconds for more requests
    /// before a commit round's write + fsync (0: start at once).
    #[serde(default)]
    pub group_commit_linger_us: u64,
    /// Delete sealed segments older than this even if a destination has not
    /// committed them (counted as dropped for it). 0: keep until every
    /// destination committed.
    #[serde(default)]
    pub retention_max_age_secs: u64,
    /// Largest request body as sent (compressed or not).
    #[serde(default = "d_max_body")]
    pub max_body_bytes: u64,
    /// Largest request body after gzip inflation.
    #[serde(default = "d_max_inflated")]
    pub max_inflated_bytes: u64,
    /// Largest record (one NDJSON line, or one octet-stream body).
    #[serde(default = "d_max_record")]
    pub max_record_bytes: u64,
    /// How long an Idempotency-Key is remembered, seconds.
    #[serde(default = "d_idem_window")]
    pub idempotency_window_secs: u64,
    /// Fraction of the data disk in use above which ingest gets 429 backpressure.
    #[serde(default = "d_watermark")]
    pub disk_high_watermark: f64,
    /// Total WAL bytes above which ingest gets 507 (0: no quota).
    #[serde(default)]
    pub disk_quota_bytes: u64,
    /// Retry-After for backpressure and WAL unavailability, seconds.
    #[serde(default = "d_retry_after")]
    pub retry_after_secs: u64,
    /// Default lease lifetime without heartbeat.
    #[serde(default = "d_lease_ms")]
    pub lease_timeout_ms: u64,
    /// Most records in one lease.
    #[serde(default = "d_lease_records")]
    pub max_lease_records: u32,
    /// Most payload bytes in one lease (at least one record is always given).
    #[serde(default = "d_lease_bytes")]
    pub max_lease_bytes: u64,
    /// Cap on an acquire's long-poll wait.
    #[serde(default = "d_long_poll")]
    pub max_long_poll_ms: u64,
    /// Deprecated and ignored: the broker's weighted share decides
    /// which priority a lease serves. Still accepted (with a warning at
    /// start) because configurations in the field name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_priority_every: Option<u32>,
    /// Period of lag accounting, retention and lease expiry.
    #[serde(default = "d_maintenance_ms")]
    pub maintenance_interval_ms: u64,
    /// Open connections served at once; one more is answered 503
    /// `overloaded` and closed (counted in `weir_http_refused_total`).
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
    /// Connections one tenant's ingest may hold at once, once their request
    /// head is read (docs/config.md, "Connections").
    #[serde(default = "d_per_tenant_connections")]
    pub max_connections_per_tenant: usize,
    /// Connections one client address may hold at once; 0 (the default):
    /// off. Unsafe behind a proxy, where every tenant is one peer.
    #[serde(default)]
    pub max_connections_per_peer: usize,
    /// A new connection's first byte must arrive within this long, else it
    /// is closed (idle keep-alive connections keep the 30 s head timeout).
    #[serde(default = "d_first_byte_timeout")]
    pub first_byte_timeout_ms: u64,
    /// Memory budget for request bodies in flight (as read, inflated, and
    /// framed): a request that would exceed it gets 503 `overloaded` with
    /// `Retry-After`; nothing acknowledged is affected.
    #[serde(default = "d_memory_budget")]
    pub memory_budget_bytes: u64,
    /// The most of `memory_budget_bytes` one tenant's ingest requests may
    /// hold at once (0 < share <= 1): past it that tenant gets 503
    /// `overloaded`, the others keep theirs.
    #[serde(default = "d_tenant_share")]
    pub memory_budget_tenant_share: f64,
    /// A request body must arrive within this long (400 otherwise).
    #[serde(default = "d_body_timeout")]
    pub body_read_timeout_ms: u64,
    /// After SIGTERM, how long requests in flight may take before the
    /// broker stops regardless (in-flight WAL commits finish first).
    #[serde(default = "d_drain_ms")]
    pub shutdown_drain_ms: u64,
    /// Idempotency keys one tenant may hold inside the window; a request
    /// with a new key beyond it gets 503 `overloaded` with `Retry-After`.
    #[serde(default = "d_idem_keys")]
    pub idempotency_max_keys_per_tenant: usize,
    /// Tenants with series of their own in `/metrics`: the first this many
    /// tenants the broker saw (the file's order at start, then tenants added
    /// by reloads), stable across reloads. The others are counted under
    /// `tenant="_other"`, so a broker with many tenants serves a bounded
    /// scrape.
    #[serde(default = "d_tenant_series")]
    pub metrics_max_tenant_series: usize,
    /// `[[tenant]]`: who may ingest, at what rate and priority.
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    /// `[[topic]]`: the topics ingest may name. After [`Config::validate`]
    /// the OTLP topics ([`OtlpConfig`]) are among them, declared or not.
    #[serde(default, rename = "topic")]
    pub topics: Vec<TopicConfig>,
    /// OTLP/gRPC's address (`otlp_grpc_listen`); absent or `off`: no gRPC
    /// listener. OTLP/HTTP is always served on `listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_grpc_listen: Option<String>,
    /// `[otlp]`: the topics the three OTLP signals land in.
    #[serde(default)]
    pub otlp: OtlpConfig,
    /// `[[destination]]`: where records are delivered, by exporters.
    #[serde(default, rename = "destination")]
    pub destinations: Vec<DestinationConfig>,
}

/// One `[[tenant]]`: a producer's token, its rate and its priority.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Unique, 1 to 255 bytes.
    pub name: String,
    /// Its producers' token, plain or `sha256:<hex>`; at least one token
    /// comes from this key, `tokens`, `token_file` or `tokens_file`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// More tokens, all valid at once (a rotation without a failed request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<String>,
    /// A file holding one token (its first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// A file holding tokens, one a line (blank lines skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
    /// The tokens read from the two files ([`Config::load_secret_files`]).
    #[serde(skip)]
    pub file_tokens: Vec<String>,
    /// Records per second at its priority; beyond, records are demoted to low.
    pub rate_per_sec: f64,
    /// The rate's bucket depth, records.
    pub burst: u64,
    /// `high`, `normal` (the default) or `low`.
    #[serde(default = "d_priority")]
    pub priority: String,
    /// Optional hard limit: beyond it requests get 429 rate_limited.
    #[serde(default)]
    pub hard_rate_per_sec: Option<f64>,
    /// The hard limit's bucket depth (set with `hard_rate_per_sec`).
    #[serde(default)]
    pub hard_burst: Option<u64>,
    /// Its share of a destination within its priority, against the other
    /// tenants with records waiting there (> 0 and finite; default 1.0).
    #[serde(default = "d_weight")]
    pub weight: f64,
}

fn d_priority() -> String {
    "normal".into()
}

fn d_weight() -> f64 {
    1.0
}

/// One `[[topic]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Unique, 1 to 255 bytes: the `{topic}` of the ingest path.
    pub name: String,
}

/// `[otlp]`: one topic per OTLP signal (docs/otlp.md). These topics exist
/// whenever OTLP is on — always, since OTLP/HTTP is always served — whether
/// a `[[topic]]` declares them or not.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Where `/v1/logs` and the logs service land (`otel_logs`).
    pub logs_topic: String,
    /// Where `/v1/traces` and the trace service land (`otel_traces`).
    pub traces_topic: String,
    /// Where `/v1/metrics` and the metrics service land (`otel_metrics`).
    pub metrics_topic: String,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            logs_topic: "otel_logs".into(),
            traces_topic: "otel_traces".into(),
            metrics_topic: "otel_metrics".into(),
        }
    }
}

impl OtlpConfig {
    /// The three topics, logs first.
    pub fn topics(&self) -> [&str; 3] {
        [&self.logs_topic, &self.traces_topic, &self.metrics_topic]
    }
}

/// What a destination over its lag limit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLagLimit {
    /// Producers of its topics get 429 until it catches up.
    Backpressure,
    /// Its oldest records are skipped for it (counted as dropped).
    DropOldest,
}

/// Where a destination's cursor starts when the broker has none for it
/// (the destination is new to this data directory, at start or at a
/// reload that adds it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// At the oldest record the WAL still holds: it receives the backlog.
    #[default]
    Earliest,
    /// At the end of each lane: it receives what arrives from now on.
    Latest,
}

/// One `[[destination]]`: which records go to it, its exporters' token,
/// its lag limits and its breaker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Unique, non-empty: the `{dest}` of the lease paths.
    pub name: String,
    /// The topics it receives (each a `[[topic]]`).
    pub topics: Vec<String>,
    /// Only these tenants' records (each a `[[tenant]]`); absent: all.
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
    /// Its exporters' token, plain or `sha256:<hex>`; at least one token
    /// comes from this key, `tokens`, `token_file` or `tokens_file`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// More tokens, all valid at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<String>,
    /// A file holding one token (its first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// A file holding tokens, one a line (blank lines skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
    /// The tokens read from the two files ([`Config::load_secret_files`]).
    #[serde(skip)]
    pub file_tokens: Vec<String>,
    /// Lag limit in payload bytes.
    #[serde(default = "d_max_lag_bytes")]
    pub max_lag_bytes: u64,
    /// Optional limit in records (0: none).
    #[serde(default)]
    pub max_lag_records: u64,
    /// What happens over a lag limit.
    #[serde(default = "d_on_lag")]
    pub on_lag_limit: OnLagLimit,
    /// Leases out at once.
    #[serde(default = "d_in_flight")]
    pub max_in_flight: u32,
    /// Its leases' lifetime without heartbeat (absent: `lease_timeout_ms`).
    #[serde(default)]
    pub lease_timeout_ms: Option<u64>,
    /// Consecutive failures that open its breaker.
    #[serde(default = "d_threshold")]
    pub failure_threshold: u32,
    /// How long an open breaker waits before it lets a probe through.
    #[serde(default = "d_open_ms")]
    pub breaker_open_ms: u64,
    /// Where its cursor starts when it has none yet.
    #[serde(default)]
    pub start_at: StartAt,
}

fn d_on_lag() -> OnLagLimit {
    OnLagLimit::Backpressure
}

impl Config {
    /// Parse `text` (not validated: [`Config::validate`] is the check).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|source: toml::de::Error| {
            let line = source.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            ConfigError::Parse { line, source }
        })
    }

    /// The embedded development defaults (no `--config`).
    pub fn development() -> Config {
        let text = format!(
            r#"admin_token = "{DEV_ADMIN_TOKEN}"
otlp_grpc_listen = "127.0.0.1:4317"
[[tenant]]
name = "dev"
token = "{DEV_TENANT_TOKEN}"
rate_per_sec = 10000.0
burst = 20000
[[topic]]
name = "events"
[[destination]]
name = "dev"
topics = ["events", "otel_logs", "otel_traces", "otel_metrics"]
token = "{DEV_EXPORTER_TOKEN}"
"#
        );
        Config::from_toml(&text).expect("embedded development config parses")
    }

    /// How long a lease of `dest` lives without a heartbeat, ms.
    pub fn destination_lease_ms(&self, dest: &DestinationConfig) -> u64 {
        dest.lease_timeout_ms.unwrap_or(self.lease_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_defaults_are_valid() {
        let c = Config::development();
        let v = c.validate().unwrap();
        assert_eq!(c.listen, "127.0.0.1:7070");
        assert_eq!(v.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(c.destinations[0].name, "dev");
        // OTLP: gRPC on 4317, and the three topics there, undeclared.
        assert_eq!(v.otlp_grpc_listen, Some("127.0.0.1:4317".parse().unwrap()));
        let topics: Vec<&str> = v.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(topics, ["events", "otel_logs", "otel_traces", "otel_metrics"]);
    }

    #[test]
    fn otlp_topics_are_added_once_and_otlp_grpc_listen_is_off_or_an_address() {
        let mut c = Config::development();
        c.otlp.logs_topic = "events".into();
        c.destinations[0].topics = vec!["events".into()];
        c.otlp_grpc_listen = Some("off".into());
        let v = c.validate().unwrap();
        let topics: Vec<&str> = v.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(topics, ["events", "otel_traces", "otel_metrics"], "a declared topic is not added twice");
        assert_eq!(v.otlp_grpc_listen, None);
        c.otlp_grpc_listen = Some("localhost:4317".into());
        assert!(matches!(c.validate(), Err(ConfigError::OtlpGrpcListenAddress { .. })));
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let e = Config::from_toml("admin_token = \"x\"\nshardz = 3\n").unwrap_err().to_string();
        assert!(e.contains("shardz") && e.contains("line 2"), "{}", e);
        assert!(!e.contains('\n'));
    }

    #[test]
    fn dev_token_on_a_public_address_is_refused() {
        let mut c = Config::development();
        c.listen = "0.0.0.0:7070".into();
        assert!(c.validate().unwrap_err().to_string().contains("non-loopback"));
    }

    #[test]
    fn a_public_admin_or_grpc_listener_refuses_development_tokens_as_listen_does() {
        let mut c = Config::development();
        c.admin_listen = Some("0.0.0.0:7071".into());
        assert!(c.validate().unwrap_err().to_string().contains("non-loopback"));
        let mut c = Config::development();
        c.otlp_grpc_listen = Some("0.0.0.0:4317".into());
        assert!(c.validate().unwrap_err().to_string().contains("non-loopback"));
    }

    #[test]
    fn destination_with_unknown_topic_is_refused() {
        let mut c = Config::development();
        c.destinations[0].topics = vec!["nope".into()];
        assert!(c.validate().unwrap_err().to_string().contains("unknown topic"));
    }
}
