//! # exporter — delivers one destination's records to its sink
//!
//! Owns the exporter process: leasing ranges from the broker over the
//! lease protocol (`protocol::lease`), delivering them to a sink (file, HTTP
//! webhook, ClickHouse) with short timeouts, bisecting rejected batches into
//! dead letters, and committing.
//!
//! ## Invariants
//! - A lease is committed only after its sink accepted (the file sink:
//!   after fsync and after storing its committed length) every record not
//!   sent to dead letters.
//! - One record is one record at every sink, whatever its bytes
//!   (`sink::framing`, docs/sinks.md); a redirect is never a delivery.
//! - A failure of the sink (busy, down, or refusing whatever it is sent)
//!   never dead-letters records: the lease goes back and the breaker counts
//!   it; only content refusals are bisected to dead letters (`deliver`,
//!   `streak`).
//! - Timeouts are never retried locally: the broker's breaker must see a
//!   slow sink at once. Quick failures are retried with full-jitter backoff
//!   within a budget the lease timeout covers (checked at start).
//! - The downstream id of a batch or record (`protocol::downstream_id`) is the
//!   same on every redelivery; a webhook sends it as `Idempotency-Key` and
//!   `webhook-id`, signed by the Standard Webhooks rule (`sign`,
//!   `sink::webhook`).
//! - No secret (token, signing secret or key, header value) and no URL
//!   credential is ever shown: logs, metrics, messages to the broker and
//!   `--check-config` see `<redacted>` (`secret`).
//!
//! ## Never
//! - keep state of its own: cursors, leases and breakers live in the broker
//!   (the one exception is soft and in memory: `streak`'s row of refusals);
//! - open the broker's data directory.

#![deny(missing_docs)]

pub(crate) mod backoff;
pub mod check_config;
pub(crate) mod client;
pub(crate) mod coalesce;
pub(crate) mod concurrency;
pub mod config;
pub(crate) mod deliver;
pub(crate) mod gate;
pub(crate) mod headers;
pub(crate) mod metrics;
pub mod reload;
pub(crate) mod secret;
pub(crate) mod sign;
pub(crate) mod sink;
pub(crate) mod streak;
pub(crate) mod width;
pub mod worker;

/// The OTLP record → ClickHouse row mapping (`sink::otel_rows::row`), for
/// the fuzz target `otel_rows` only: its table and row, or why it has none.
#[doc(hidden)]
pub fn fuzz_otel_row(payload: &[u8], tenant: &str) -> Result<(&'static str, serde_json::Value), String> {
    sink::otel_rows::row(payload, tenant).map(|r| (r.table, r.json))
}

/// The tables of the `otel` format (`sink::otel_rows::TABLES`), for the fuzz
/// target `otel_rows`.
#[doc(hidden)]
pub const FUZZ_OTEL_TABLES: [&str; 7] = sink::otel_rows::TABLES;
