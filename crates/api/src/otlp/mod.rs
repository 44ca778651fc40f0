//! # OTLP receivers: OpenTelemetry logs, traces and metrics in, records out
//!
//! OTLP/HTTP (`POST /v1/logs`, `/v1/traces`, `/v1/metrics` on the broker's
//! listener: [`http`]) and OTLP/gRPC (the three collector `Export` services
//! on `otlp_grpc_listen`: [`grpc`]) end in one function, [`export`]: the
//! request's items become records ([`records`]) and go through the same
//! accept path as the record route — the limiter counts items, demotion,
//! idempotency, backpressure, the memory budget and one WAL frame.
//!
//! ## Design
//! - **One export request is one batch**: every item durable before the
//!   answer, or none acknowledged. Each signal has one topic (`[otlp]`), so
//!   a request is one frame.
//! - **A record is one item, whole**: a valid OTLP/JSON export request
//!   holding exactly that item under its resource and scope. File and
//!   webhook destinations deliver lines any OTLP tool reads.
//! - **Answers as the specification says** ([`answer`]): 200 with the
//!   `Export…ServiceResponse` in the request's encoding, `partial_success`
//!   for the items refused alone; errors as a `google.rpc.Status` whose
//!   message starts with the contract's code; 429 and 503 (gRPC
//!   `RESOURCE_EXHAUSTED`, `UNAVAILABLE` with `RetryInfo`) only for what a
//!   retry can fix — OTLP clients drop data on any other status.
//!
//! ## Invariants
//! - An export with no items is answered 200 and appends nothing.
//! - The records of one request are appended together or not at all.
//!
//! ## Never
//! - decode a record's payload after it is stored: tenant bytes are theirs;
//!   the OTLP types are decoded only from the request, here.
//! - decode or split a large request on an async worker.

pub mod answer;
pub mod finite;
pub mod grpc;
mod grpc_tls;
pub mod http;
pub mod json;
pub mod records;

use crate::error::AcceptError;
use crate::intake::ingest::{append_records, Batch};
use crate::Intake;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::sync::Arc;

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Log records (`/v1/logs`).
    Logs,
    /// Spans (`/v1/traces`).
    Traces,
    /// Metric data points (`/v1/metrics`).
    Metrics,
}

impl Signal {
    /// The signal's topic in `[otlp]`.
    pub fn topic(self, otlp: &config::OtlpConfig) -> &str {
        match self {
            Signal::Logs => &otlp.logs_topic,
            Signal::Traces => &otlp.traces_topic,
            Signal::Metrics => &otlp.metrics_topic,
        }
    }

    /// What its items are called, for messages.
    pub fn items(self) -> &'static str {
        match self {
            Signal::Logs => "log records",
            Signal::Traces => "spans",
            Signal::Metrics => "data points",
        }
    }
}

/// How an OTLP/HTTP body (and its answer) is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpEncoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`: the OTLP/JSON mapping.
    Json,
}

impl OtlpEncoding {
    /// The encoding a `Content-Type` names, parameters and case aside.
    pub fn of(content_type: Option<&str>) -> Result<OtlpEncoding, AcceptError> {
        let sent = content_type.unwrap_or("");
        let media = sent.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/x-protobuf") {
            Ok(OtlpEncoding::Protobuf)
        } else if media.eq_ignore_ascii_case("application/json") {
            Ok(OtlpEncoding::Json)
        } else {
            Err(AcceptError::OtlpContentType { content_type: sent.to_string() })
        }
    }

    /// The encoding of the answer to a request with this `Content-Type`:
    /// its own, and JSON when it is not one OTLP takes.
    pub fn answer_for(content_type: Option<&str>) -> OtlpEncoding {
        OtlpEncoding::of(content_type).unwrap_or(OtlpEncoding::Json)
    }

    /// The media type, for `Content-Type` and idempotency fingerprints.
    pub fn media_type(self) -> &'static str {
        match self {
            OtlpEncoding::Protobuf => "application/x-protobuf",
            OtlpEncoding::Json => "application/json",
        }
    }
}

/// One decoded export request.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportRequest {
    /// `ExportLogsServiceRequest`.
    Logs(ExportLogsServiceRequest),
    /// `ExportTraceServiceRequest`.
    Traces(ExportTraceServiceRequest),
    /// `ExportMetricsServiceRequest`.
    Metrics(ExportMetricsServiceRequest),
}

impl ExportRequest {
    /// Decode `body` (already inflated) as `signal`'s request.
    pub fn decode(signal: Signal, encoding: OtlpEncoding, body: &[u8]) -> Result<ExportRequest, AcceptError> {
        let bad_proto = |source: prost::DecodeError| AcceptError::OtlpUndecodable { source: Box::new(source) };
        let bad_json = |source: serde_json::Error| AcceptError::OtlpUndecodable { source: Box::new(source) };
        Ok(match (signal, encoding) {
            (Signal::Logs, OtlpEncoding::Protobuf) => {
                ExportRequest::Logs(ExportLogsServiceRequest::decode(body).map_err(bad_proto)?)
            }
            (Signal::Traces, OtlpEncoding::Protobuf) => {
                ExportRequest::Traces(ExportTraceServiceRequest::decode(body).map_err(bad_proto)?)
            }
            (Signal::Metrics, OtlpEncoding::Protobuf) => {
                ExportRequest::Metrics(ExportMetricsServiceRequest::decode(body).map_err(bad_proto)?)
            }
            (Signal::Logs, OtlpEncoding::Json) => ExportRequest::Logs(serde_json::from_slice(body).map_err(bad_json)?),
            (Signal::Traces, OtlpEncoding::Json) => {
                ExportRequest::Traces(serde_json::from_slice(body).map_err(bad_json)?)
            }
            (Signal::Metrics, OtlpEncoding::Json) => {
                ExportRequest::Metrics(serde_json::from_slice(body).map_err(bad_json)?)
            }
        })
    }

    /// Its signal.
    pub fn signal(&self) -> Signal {
        match self {
            ExportRequest::Logs(_) => Signal::Logs,
            ExportRequest::Traces(_) => Signal::Traces,
            ExportRequest::Metrics(_) => Signal::Metrics,
        }
    }

    /// Its items as records (see [`records`]).
    pub fn split(&self, limits: records::Limits) -> Result<records::Items, AcceptError> {
        match self {
            ExportRequest::Logs(r) => records::logs(r, limits),
            ExportRequest::Traces(r) => records::traces(r, limits),
            ExportRequest::Metrics(r) => records::metrics(r, limits),
        }
    }
}

/// What an export stored: the answer's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Exported {
    /// Items appended (durable).
    pub accepted: u64,
    /// Items refused alone (over `max_record_bytes`): `partial_success`.
    pub rejected: u64,
}

/// Bodies up to this size are decoded and split on the request's worker;
/// larger ones on the blocking pool (a 4 MiB body takes milliseconds).
pub(crate) const INLINE_DECODE_BYTES: usize = 64 << 10;

/// One export on its way in: its tenant, its request's items as records,
/// and what idempotency needs (gRPC has no key).
pub struct Export<'a> {
    /// The tenant its token names ([`Intake::tenant`]).
    pub tenant: Arc<crate::intake::Tenant>,
    /// The request's signal.
    pub signal: Signal,
    /// The items as records, and those refused alone.
    pub items: records::Items,
    /// The request's canonical media type (part of its fingerprint).
    pub media_type: &'static str,
    /// The body after its content encoding (the fingerprint's content).
    pub inflated_body: &'a [u8],
    /// `Idempotency-Key`, when sent.
    pub idempotency_key: Option<&'a str>,
    /// Announced to the WAL when the request arrived.
    pub arrival: wal::Arrival,
}

/// Append an export's records as one batch to its signal's topic; an export
/// with no records left appends nothing and answers 200.
pub async fn export(intake: &Arc<Intake>, call: Export<'_>) -> Result<Exported, AcceptError> {
    let Export { tenant, signal, items, media_type, inflated_body, idempotency_key, arrival } = call;
    let rejected = items.rejected;
    if items.is_empty() {
        return Ok(Exported { accepted: 0, rejected });
    }
    let topic = signal.topic(&intake.cfg.otlp);
    let topic_slot = tenant.topic(topic).ok_or_else(|| AcceptError::UnknownTopic { topic: topic.to_string() })?;
    let batch = Batch { tenant: &tenant, topic, topic_slot, media_type, inflated_body, idempotency_key, arrival };
    let records: Vec<&[u8]> = items.records().collect();
    let accepted = append_records(intake, batch, records).await?;
    Ok(Exported { accepted: accepted.records, rejected })
}

/// The limits a request's split works within.
pub(crate) fn limits(intake: &Intake) -> records::Limits {
    records::Limits { max_record_bytes: intake.cfg.max_record_bytes, max_total_bytes: intake.cfg.max_inflated_bytes }
}
