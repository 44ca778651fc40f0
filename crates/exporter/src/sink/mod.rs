//! Sinks: where a destination's records go. Each classifies its failures
//! as retryable (the breaker counts them) or poison (the records are bad;
//! they are bisected out to dead letters). How a record's bytes are framed
//! so that one record stays one record downstream is in [`framing`].

pub mod clickhouse;
pub mod client;
mod committed;
mod file;
pub mod framing;
mod http;
pub mod otel_rows;
pub mod otlp;
pub mod webhook;

use std::path::PathBuf;
use std::time::Duration;

pub use file::FileSink;
pub use http::{HttpSink, HttpStyle};
pub use webhook::Webhook;

/// One record to deliver: its payload as acknowledged, a slice of the
/// broker's answer (cloning a record does not copy its bytes), and what a
/// downstream id covers. Names are shared with the lease's tables.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Its place in the lease as the broker sent it.
    pub position: u32,
    pub offset: u64,
    pub ts_ms: u64,
    /// The lane it was acknowledged in (a re-drive mixes lanes).
    pub lane: std::sync::Arc<str>,
    pub tenant: std::sync::Arc<str>,
    pub topic: std::sync::Arc<str>,
    pub payload: bytes::Bytes,
}

impl Record {
    /// What a downstream id covers of this record.
    pub fn id_fields(&self) -> protocol::downstream_id::IdRecord<'_> {
        protocol::downstream_id::IdRecord {
            lane: &self.lane,
            offset: self.offset,
            ts_ms: self.ts_ms,
            tenant: &self.tenant,
            topic: &self.topic,
            payload: &self.payload,
        }
    }
}

/// What a sink said when it refused the content of a request: compared
/// between single-record refusals to tell "this record is bad" from "this
/// sink refuses everything with one answer" (see [`crate::streak`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// An HTTP status about the content (400, 413, 415, 422).
    Status(u16),
    /// A ClickHouse data error code.
    ClickHouse(u32),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Status(s) => write!(f, "HTTP {s}"),
            Refusal::ClickHouse(c) => write!(f, "ClickHouse code {c}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Timeouts, connection errors, 408/429/5xx: try again later.
    /// `overload`: the failure says the sink is at capacity (429, 503, a
    /// timeout, a refused connection), which lowers the concurrency.
    #[error("retryable: {message}")]
    Retryable { message: String, retry_after: Option<Duration>, timed_out: bool, overload: bool },
    /// The endpoint refused the request whatever it held (3xx, 401, 403,
    /// 404, 405, 407, other 4xx not about the content): the sink is
    /// misconfigured or gone, not the records. Never bisected nor retried
    /// locally: the lease goes back as a retryable failure at once, so the
    /// breaker counts it and the records stay.
    #[error("endpoint refused: {message}")]
    Endpoint { message: String, retry_after: Option<Duration> },
    /// 410 Gone: the receiver asks to stop sending (Standard Webhooks and
    /// Svix read it so). Nothing is dead-lettered and the breaker does not
    /// count it: the lease is released (see `crate::deliver`).
    #[error("gone: {message}")]
    Gone { message: String },
    /// The sink rejected the data itself: bisected down to single records,
    /// which go to dead letters. `refusal`: what the sink answered, when it
    /// answered (None: refused before sending, e.g. not a ClickHouse row).
    #[error("rejected: {message}")]
    Poison { message: String, refusal: Option<Refusal> },
}

impl SinkError {
    /// A content refusal that no sink answer stands behind.
    pub fn poison(message: impl Into<String>) -> SinkError {
        SinkError::Poison { message: message.into(), refusal: None }
    }
}

/// Why a sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The `--sink` spec itself is wrong.
    #[error("{0}")]
    Spec(String),
    #[error("sink file {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("sink file {} is locked by another exporter", path.display())]
    Locked { path: PathBuf },
    /// Records already committed to the broker are missing from the file.
    #[error(
        "sink file {} is {len} bytes, shorter than the {committed} bytes already committed: committed records are missing; restore the file, or move it and its .committed file aside to start a new one",
        path.display()
    )]
    Shorter { path: PathBuf, len: u64, committed: u64 },
}

/// The future of one delivery attempt.
pub type Delivery<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// A delivery target.
pub trait Sink: Send + Sync {
    /// Deliver `records` (a sub-range of a lease); `key` is their
    /// downstream id when [`Sink::sends_id`], else empty.
    fn deliver<'a>(&'a self, records: &'a [Record], key: &'a str) -> Delivery<'a>;

    /// A record this sink can never take as one record, and why: it goes
    /// to dead letters without being sent. Sinks that frame such records
    /// instead (file, webhook) refuse none.
    fn refuse(&self, _record: &Record) -> Option<String> {
        None
    }

    /// Where this sink keeps its row of single-record content refusals, when
    /// it has answers that may refuse everything with one content status
    /// (an HTTP sink). None: every content refusal is the records' fault.
    fn streak(&self) -> Option<&crate::streak::RefusalStreak> {
        None
    }

    /// Whether this sink sends a downstream id with each batch (a webhook's
    /// `Idempotency-Key`): the id's hash runs only then.
    fn sends_id(&self) -> bool {
        false
    }

    /// Whether each request holds one record (a webhook in event mode):
    /// the deliverer then sends records one by one, each with its own id,
    /// concurrently (`crate::deliver::events`).
    fn one_per_request(&self) -> bool {
        false
    }

    /// The parts of `records` this sink delivers apart, each bisected on its
    /// own, when there are several (ClickHouse `format=otel`: one part per
    /// table, in the order the tables first appear): a part's refusal then
    /// never makes another part's rows go again under other tokens. `None`:
    /// one part, `records` as they are.
    fn parts(&self, _records: &[Record]) -> Option<Vec<Vec<Record>>> {
        None
    }

    /// Whether this sink takes only OTLP records (`otlp+http`): the
    /// exporter then refuses to start for a destination that receives
    /// another topic.
    fn otlp_only(&self) -> bool {
        false
    }

    /// A concurrency this sink wants instead of the adaptive one: a sink
    /// with no remote capacity to find. `--concurrency N` still pins it.
    fn fixed_concurrency(&self) -> Option<usize> {
        None
    }

    /// What to do once before the first delivery (ClickHouse: ask the
    /// server what it supports and warn about deduplication). A failure is
    /// logged; deliveries ask again.
    fn prepare(&self) -> Delivery<'_> {
        Box::pin(async { Ok(()) })
    }

    fn describe(&self) -> String;
}

/// Build a sink from its `--sink` spec; `webhook` is what an
/// `http(s)://` sink sends, `tls` the TLS files of an HTTPS sink.
pub fn from_spec(
    spec: &str,
    timeout: Duration,
    webhook: Webhook,
    tls: &crate::config::SinkTls,
) -> Result<Box<dyn Sink>, OpenError> {
    if let Some(path) = spec.strip_prefix("file:") {
        if path.is_empty() {
            return Err(OpenError::Spec("--sink file: needs a path, e.g. file:/var/lib/weir/out.ndjson".into()));
        }
        return Ok(Box::new(FileSink::open(path)?));
    }
    if spec.starts_with("http://") || spec.starts_with("https://") {
        return Ok(Box::new(HttpSink::new(spec, HttpStyle::Webhook(webhook), timeout, tls)?));
    }
    if let Some(rest) = spec.strip_prefix("otlp+") {
        if !(rest.starts_with("http://") || rest.starts_with("https://")) {
            return Err(OpenError::Spec("otlp sink: use otlp+http(s)://HOST:PORT".into()));
        }
        return Ok(Box::new(HttpSink::new(rest, HttpStyle::Otlp, timeout, tls)?));
    }
    if let Some(rest) = spec.strip_prefix("clickhouse+") {
        return Ok(Box::new(HttpSink::clickhouse(rest, timeout, tls)?));
    }
    Err(OpenError::Spec(format!(
        "unknown sink {:?}: use file:PATH, http(s)://URL, clickhouse+http(s)://HOST:PORT/?table=T, clickhouse+http(s)://HOST:PORT/?format=otel or otlp+http(s)://HOST:PORT",
        crate::secret::redact_sink(spec)
    )))
}
