//! The accept path's error: why a batch was not accepted. Nothing of a
//! refused batch is stored, and no idempotency entry is left for it.
//!
//! Each variant holds what it is about as typed fields (a topic, a limit,
//! a line number) and its cause as `#[source]`; the message is made from
//! them when it is shown. [`AcceptError::code`] is this crate's one mapping
//! to the contract's [`ErrorCode`] (and so to a status),
//! [`AcceptError::refusal`] the one to a metric reason; the broker's HTTP
//! edge answers with them.

use plumbing::reasons::Reason;
use protocol::ErrorCode;
use std::time::Duration;

/// Why a batch was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The path names a topic the configuration does not declare: declare
    /// it, or send to one that is.
    #[error("topic {topic:?} does not exist; topics are declared in the broker config")]
    UnknownTopic {
        /// The topic as the path named it.
        topic: String,
    },
    /// `Content-Type` is not one ingest takes.
    #[error("Content-Type {content_type:?} is not accepted: use application/x-ndjson (one JSON record per line), application/json (an array: one record per element; any other value: one record) or application/octet-stream (the body is one record)")]
    UnsupportedContentType {
        /// The header as sent, parameters included (empty when absent).
        content_type: String,
    },
    /// `Content-Encoding` is not one ingest takes.
    #[error("Content-Encoding {encoding:?} is not supported: send identity or gzip")]
    UnsupportedEncoding {
        /// The header as sent, trimmed.
        encoding: String,
    },
    /// `Idempotency-Key` is not visible ASCII; a key silently dropped would
    /// let a retry append twice, so it is refused.
    #[error("header Idempotency-Key must be visible ASCII (RFC 9110 field value); send the key in ASCII, e.g. hex or base64")]
    IdempotencyKeyNotAscii,
    /// `Idempotency-Key` is over 255 bytes.
    #[error("Idempotency-Key is longer than 255 bytes")]
    IdempotencyKeyTooLong {
        /// Bytes of the key as sent (more than 255).
        len: usize,
    },
    /// The body is over `max_body_bytes` (declared or as it arrived): split
    /// the batch.
    #[error("the request body is over {limit} bytes; split or shorten it")]
    BodyTooLarge {
        /// The limit, bytes: `max_body_bytes` for ingest, the control-body
        /// limit for lease, commit and admin bodies.
        limit: u64,
    },
    /// The body did not arrive within `body_read_timeout_ms`.
    #[error("the request body did not arrive within {} ms (body_read_timeout_ms)", timeout.as_millis())]
    BodyTimeout {
        /// The deadline the body missed (`body_read_timeout_ms`).
        timeout: Duration,
    },
    /// The connection failed while the body was read.
    #[error("reading the request body: {source}")]
    BodyRead {
        /// The connection's error.
        #[source]
        source: axum::Error,
    },
    /// `Content-Encoding: gzip`, but the body does not inflate.
    #[error("Content-Encoding is gzip but the body does not inflate: {source}")]
    GzipInvalid {
        /// The inflater's error.
        #[source]
        source: std::io::Error,
    },
    /// The gzip body inflates past `max_inflated_bytes`: send smaller batches.
    #[error("the gzip body inflates to more than {cap} bytes (max_inflated_bytes); send smaller batches")]
    InflatedTooLarge {
        /// The cap, bytes of inflated body (`max_inflated_bytes`).
        cap: u64,
    },
    /// The body holds no record.
    #[error("the body is empty: send at least one record")]
    EmptyBody,
    /// One record is over `max_record_bytes`.
    #[error("record {record} is {len} bytes, over the {max}-byte limit (max_record_bytes)")]
    RecordTooLarge {
        /// The record's line in the body, from 1, blank lines counted (1
        /// for an octet-stream body; the element, from 1, of a JSON array).
        record: usize,
        /// Bytes of the record, without its line end.
        len: usize,
        /// The limit, bytes (`max_record_bytes`).
        max: u64,
    },
    /// An NDJSON line is not UTF-8 (so not JSON).
    #[error("line {line} is not valid JSON: it is not UTF-8 (invalid byte at column {column})")]
    LineNotUtf8 {
        /// The line, from 1, blank lines counted.
        line: usize,
        /// The byte column of the first invalid byte, from 1.
        column: usize,
    },
    /// An NDJSON line is not one JSON value.
    #[error("line {line} is not valid JSON: {source}")]
    LineNotJson {
        /// The line, from 1, blank lines counted.
        line: usize,
        /// The JSON parser's error (it names the column).
        #[source]
        source: serde_json::Error,
    },
    /// An `application/json` body is not one JSON value (in UTF-8).
    #[error("the body is not one JSON value: {source}")]
    BodyNotJson {
        /// The JSON parser's error (it names the line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The WAL cannot frame this batch (its names or records are over the
    /// frame format's limits).
    #[error("cannot store this batch: {source}")]
    Unframeable {
        /// What the frame format refused.
        #[source]
        source: wal::FrameError,
    },
    /// The `Idempotency-Key` names an earlier, different request (see the
    /// `idempotency` module): answering its 200 would drop these records.
    /// Send the new records under a new key.
    #[error("this Idempotency-Key was used within the idempotency window for a different request (another topic, content type or body); nothing was stored — send new records under a new key")]
    IdempotencyKeyReused,
    /// The tenant holds `max` keys inside the window: retry shortly.
    #[error("tenant {tenant:?} holds {max} idempotency keys inside the window (idempotency_max_keys_per_tenant); retry shortly")]
    IdempotencyKeysFull {
        /// The tenant's name.
        tenant: String,
        /// Keys one tenant may hold at once (`idempotency_max_keys_per_tenant`).
        max: usize,
    },
    /// The tenant is over its hard rate: retry after the given time.
    #[error("tenant {tenant:?} is over its hard rate limit; retry after {retry_after_secs} s")]
    RateLimited {
        /// The tenant's name.
        tenant: String,
        /// Seconds until its hard bucket has room for the batch (at least 1).
        retry_after_secs: u64,
    },
    /// The WAL reached `disk_quota_bytes`: retry once exporters catch up
    /// and retention frees space.
    #[error("the WAL reached its disk quota of {quota_bytes} bytes (disk_quota_bytes); retry once exporters catch up and retention frees space")]
    DiskQuota {
        /// The quota, bytes (`disk_quota_bytes`).
        quota_bytes: u64,
    },
    /// The data disk is over `disk_high_watermark`: slow down and retry.
    #[error("the data disk is more than {:.0}% full (disk_high_watermark); slow down and retry", watermark * 100.0)]
    DiskWatermark {
        /// The watermark, the fraction of the disk in use (0.01 to 1,
        /// `disk_high_watermark`).
        watermark: f64,
        /// The `Retry-After` to send, seconds (`retry_after_secs`).
        retry_after_secs: u64,
    },
    /// A destination that receives this data is over its lag limit: retry
    /// later (only the tenants routed to it are refused).
    #[error("destination {destination:?} that receives this data is {records} records / {bytes} bytes behind, over its lag limit; retry later")]
    DestinationLag {
        /// The lagging destination's name.
        destination: String,
        /// Records it has not committed, as of the last maintenance pass.
        records: u64,
        /// Bytes of WAL it has not committed, as of the last maintenance pass.
        bytes: u64,
        /// The `Retry-After` to send, seconds (`retry_after_secs`).
        retry_after_secs: u64,
    },
    /// The memory budget of bodies in flight is spent: retry shortly.
    #[error("the broker's memory budget for requests in flight ({budget_bytes} bytes, memory_budget_bytes) is spent; retry shortly")]
    MemoryBudget {
        /// The spent budget, bytes: `memory_budget_bytes` for ingest,
        /// [`crate::memory::CONTROL_BUDGET_BYTES`] for control bodies.
        budget_bytes: u64,
    },
    /// The tenant's share of the memory budget is spent: retry shortly.
    #[error("this tenant's requests in flight hold {held_kib} KiB, its share of the memory budget ({cap_kib} KiB, memory_budget_tenant_share); retry shortly")]
    MemoryTenantShare {
        /// KiB the tenant's requests in flight held when the charge was
        /// refused (this request's earlier chunks included).
        held_kib: u64,
        /// KiB one tenant may hold: its share of the budget, raised to one
        /// request's largest charge.
        cap_kib: u64,
    },
    /// The WAL refused the append (see [`AcceptError::code`] for how each
    /// kind answers): nothing was acknowledged.
    #[error("{}", wal_message(source))]
    Wal {
        /// The WAL's error.
        #[source]
        source: wal::WalError,
        /// The `Retry-After` to send, seconds, when the lane is unavailable
        /// (`retry_after_secs`); unused for the other kinds.
        retry_after_secs: u64,
    },
    /// An OTLP route's `Content-Type` is neither protobuf nor JSON.
    #[error("Content-Type {content_type:?} is not accepted on an OTLP route: use application/x-protobuf or application/json")]
    OtlpContentType {
        /// The header as sent, parameters included (empty when absent).
        content_type: String,
    },
    /// An OTLP body does not decode as its signal's export request.
    #[error("the body is not a valid OTLP export request: {source}")]
    OtlpUndecodable {
        /// The protobuf or JSON decoder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An OTLP item could not be written as an OTLP/JSON record (a value
    /// JSON cannot hold).
    #[error("an item cannot be written as an OTLP/JSON record: {source}")]
    OtlpUnencodable {
        /// The JSON writer's error.
        #[source]
        source: serde_json::Error,
    },
    /// An OTLP request's records (each item under its resource and scope)
    /// come to more than `max_inflated_bytes`: send smaller requests.
    #[error("this export's items come to more than {cap} bytes as records (max_inflated_bytes; each repeats its resource and scope); send smaller batches")]
    OtlpRecordsTooLarge {
        /// The cap, bytes (`max_inflated_bytes`).
        cap: u64,
    },
    /// A task of the accept path ended abnormally (`what` names it): a
    /// fault of the broker, logged and answered 500.
    #[error("the {what} task ended abnormally: {source}")]
    TaskFailed {
        /// The task (`"inflating"`, `"commit"`).
        what: &'static str,
        /// How it ended: a panic or a cancellation.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// How a WAL error answers.
enum WalKind {
    NoSpace,
    TooLarge,
    Unavailable,
    Fault,
}

fn wal_kind(e: &wal::WalError) -> WalKind {
    use wal::WalError::*;
    match e {
        NoSpace { .. } => WalKind::NoSpace,
        FrameTooLarge { .. } => WalKind::TooLarge,
        LaneFailed { .. } | WriterStopped { .. } | ShuttingDown => WalKind::Unavailable,
        _ => WalKind::Fault,
    }
}

fn wal_message(e: &wal::WalError) -> String {
    match (wal_kind(e), e) {
        (WalKind::NoSpace, wal::WalError::NoSpace { lane, .. }) => format!(
            "no space left on the device holding lane {lane}; the batch was not stored — free disk space or raise the quota"
        ),
        (WalKind::TooLarge, wal::WalError::FrameTooLarge { len, max, .. }) => {
            format!("batch of {len} bytes exceeds the WAL frame limit of {max} bytes")
        }
        (WalKind::Unavailable, _) => format!("{e}; the batch was not acknowledged, retry later"),
        _ => e.to_string(),
    }
}

impl AcceptError {
    /// The contract's code for this refusal (and so its status).
    pub fn code(&self) -> ErrorCode {
        use AcceptError::*;
        match self {
            UnknownTopic { .. } => ErrorCode::UnknownTopic,
            UnsupportedContentType { .. } | UnsupportedEncoding { .. } | OtlpContentType { .. } => {
                ErrorCode::UnsupportedMediaType
            }
            IdempotencyKeyNotAscii | IdempotencyKeyTooLong { .. } | BodyTimeout { .. } | BodyRead { .. } => {
                ErrorCode::InvalidRequest
            }
            BodyTooLarge { .. } | InflatedTooLarge { .. } | RecordTooLarge { .. } | OtlpRecordsTooLarge { .. } => {
                ErrorCode::PayloadTooLarge
            }
            GzipInvalid { .. }
            | EmptyBody
            | LineNotUtf8 { .. }
            | LineNotJson { .. }
            | BodyNotJson { .. }
            | Unframeable { .. }
            | OtlpUndecodable { .. }
            | OtlpUnencodable { .. } => ErrorCode::InvalidBody,
            IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            IdempotencyKeysFull { .. } | MemoryBudget { .. } | MemoryTenantShare { .. } => ErrorCode::Overloaded,
            RateLimited { .. } => ErrorCode::RateLimited,
            DiskQuota { .. } => ErrorCode::InsufficientStorage,
            DiskWatermark { .. } | DestinationLag { .. } => ErrorCode::Backpressure,
            Wal { source, .. } => match wal_kind(source) {
                WalKind::NoSpace => ErrorCode::InsufficientStorage,
                WalKind::TooLarge => ErrorCode::PayloadTooLarge,
                WalKind::Unavailable => ErrorCode::WalUnavailable,
                WalKind::Fault => ErrorCode::Internal,
            },
            TaskFailed { .. } => ErrorCode::Internal,
        }
    }

    /// `Retry-After` in seconds (at least 1) for the refusals a retry can fix.
    pub fn retry_after_secs(&self) -> Option<u64> {
        use AcceptError::*;
        let secs = match self {
            RateLimited { retry_after_secs, .. }
            | DiskWatermark { retry_after_secs, .. }
            | DestinationLag { retry_after_secs, .. } => *retry_after_secs,
            Wal { retry_after_secs, source } if matches!(wal_kind(source), WalKind::Unavailable) => *retry_after_secs,
            IdempotencyKeysFull { .. } | MemoryBudget { .. } | MemoryTenantShare { .. } => 1,
            _ => return None,
        };
        Some(secs.max(1))
    }

    /// The reason `weir_http_refused_total` counts this refusal under, when
    /// it is a cap of the broker's rather than the request's fault.
    pub fn refusal(&self) -> Option<Reason> {
        match self {
            AcceptError::MemoryBudget { .. } => Some(Reason::Memory),
            AcceptError::MemoryTenantShare { .. } => Some(Reason::MemoryTenantShare),
            AcceptError::IdempotencyKeysFull { .. } => Some(Reason::IdempotencyKeys),
            _ => None,
        }
    }

    /// Map a WAL append error; `retry_after_secs` for transient ones.
    pub fn from_wal(source: wal::WalError, retry_after_secs: u64) -> AcceptError {
        AcceptError::Wal { source, retry_after_secs }
    }
}

#[cfg(test)]
mod tests {
    use super::AcceptError;
    use protocol::ErrorCode;

    /// Issue 19, defect 17: a lane whose writer stopped unexpectedly answers
    /// 503 `wal_unavailable` with `Retry-After`, saying why.
    #[test]
    fn a_lane_whose_writer_stopped_answers_503_wal_unavailable() {
        let lane = wal::LaneId::new(wal::Priority::Normal, 0);
        let stopped = wal::WalError::WriterStopped { lane, reason: wal::StopReason::Panicked("boom".into()) };
        let e = AcceptError::from_wal(stopped, 2);
        assert_eq!((e.code(), e.code().status(), e.retry_after_secs()), (ErrorCode::WalUnavailable, 503, Some(2)));
        assert!(e.to_string().contains("writer of lane normal/0 stopped unexpectedly"), "{e}");
    }

    #[test]
    fn every_refusal_keeps_its_code_and_retry_after() {
        let cases: Vec<(AcceptError, ErrorCode, Option<u64>)> = vec![
            (AcceptError::UnknownTopic { topic: "t".into() }, ErrorCode::UnknownTopic, None),
            (AcceptError::BodyTooLarge { limit: 1 }, ErrorCode::PayloadTooLarge, None),
            (AcceptError::EmptyBody, ErrorCode::InvalidBody, None),
            (AcceptError::IdempotencyKeyReused, ErrorCode::IdempotencyKeyReused, None),
            (AcceptError::MemoryTenantShare { held_kib: 1, cap_kib: 1 }, ErrorCode::Overloaded, Some(1)),
            (AcceptError::DiskQuota { quota_bytes: 1 }, ErrorCode::InsufficientStorage, None),
            (AcceptError::DiskWatermark { watermark: 0.9, retry_after_secs: 0 }, ErrorCode::Backpressure, Some(1)),
            (AcceptError::RateLimited { tenant: "a".into(), retry_after_secs: 7 }, ErrorCode::RateLimited, Some(7)),
        ];
        for (e, code, retry) in cases {
            assert_eq!((e.code(), e.retry_after_secs()), (code, retry), "{e}");
        }
    }
}
