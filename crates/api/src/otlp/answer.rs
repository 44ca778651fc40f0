//! OTLP answers: the one mapping from the contract's [`ErrorCode`] to an
//! OTLP/HTTP status and a gRPC code, and the bodies the specification
//! wants in place of the contract's JSON error body.
//!
//! Retry meaning is what OTLP clients act on: they retry 429, 502, 503 and
//! 504 (gRPC `RESOURCE_EXHAUSTED` with `RetryInfo`, `UNAVAILABLE`) and drop
//! the data on anything else. So every refusal a retry can fix answers 429
//! or 503 with `Retry-After` — a full disk too, which the record route
//! answers 507 (no OTLP client would retry that) — and nothing else does.

use super::{Exported, OtlpEncoding, Signal};
use crate::AcceptError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use prost::Message;
use protocol::ErrorCode;
use std::time::Duration;
use tonic_types::{ErrorDetails, StatusExt};

/// A refusal on an OTLP route: the contract's code, its message and, when a
/// retry can fix it, after how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The contract's code (the message starts with it).
    pub code: ErrorCode,
    /// What went wrong and what to do.
    pub message: String,
    /// `Retry-After` seconds, for what a retry can fix.
    pub retry_after_secs: Option<u64>,
}

impl Refusal {
    /// The refusal for an accept-path error; `retry_after_secs` (the
    /// broker's `retry_after_secs`) for a full disk, which the record route
    /// does not ask to retry.
    pub fn of(e: &AcceptError, retry_after_secs: u64) -> Refusal {
        Refusal::new(e.code(), e.to_string(), e.retry_after_secs(), retry_after_secs)
    }

    /// A refusal with `code`; `default_retry_secs` where OTLP wants a retry
    /// and the code gave no time.
    pub fn new(code: ErrorCode, message: String, retry: Option<u64>, default_retry_secs: u64) -> Refusal {
        let retry_after_secs = match code {
            ErrorCode::InsufficientStorage => Some(retry.unwrap_or(default_retry_secs).max(1)),
            _ => retry,
        };
        Refusal { code, message, retry_after_secs }
    }

    /// The OTLP/HTTP status: the contract's, but 503 for a full disk.
    pub fn http_status(&self) -> StatusCode {
        let status = match self.code {
            ErrorCode::InsufficientStorage => 503,
            code => code.status(),
        };
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The gRPC code for the same refusal.
    pub fn grpc_code(&self) -> tonic::Code {
        match self.http_status().as_u16() {
            400 | 404 | 405 | 413 | 415 | 422 | 431 => tonic::Code::InvalidArgument,
            401 => tonic::Code::Unauthenticated,
            403 => tonic::Code::PermissionDenied,
            429 => tonic::Code::ResourceExhausted,
            503 => tonic::Code::Unavailable,
            500 => tonic::Code::Internal,
            _ => tonic::Code::Unknown,
        }
    }

    /// The message of the `google.rpc.Status`: the contract's code first.
    pub fn status_message(&self) -> String {
        format!("{}: {}", self.code.as_str(), self.message)
    }

    /// The gRPC status, with `RetryInfo` when a retry can fix it.
    pub fn grpc_status(&self) -> tonic::Status {
        let (code, message) = (self.grpc_code(), self.status_message());
        match self.retry_after_secs {
            Some(secs) => {
                let details = ErrorDetails::with_retry_info(Some(Duration::from_secs(secs)));
                tonic::Status::with_error_details(code, message, details)
            }
            None => tonic::Status::new(code, message),
        }
    }

    /// The OTLP/HTTP answer: the status, a `google.rpc.Status` body in
    /// `encoding`, and `Retry-After` when a retry can fix it.
    pub fn http_response(&self, encoding: OtlpEncoding) -> Response {
        let status =
            tonic_types::Status { code: self.grpc_code() as i32, message: self.status_message(), details: Vec::new() };
        let body = match encoding {
            OtlpEncoding::Protobuf => status.encode_to_vec(),
            OtlpEncoding::Json => {
                serde_json::json!({ "code": status.code, "message": status.message, "details": [] }).to_string().into()
            }
        };
        let mut resp = (self.http_status(), body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(encoding.media_type()));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The `partial_success` message when items were refused alone.
pub fn partial_message(signal: Signal, exported: &Exported, max_record_bytes: u64) -> String {
    format!(
        "{}: {} of {} {} were not stored: over max_record_bytes ({max_record_bytes} bytes) as a record, or holding what OTLP/JSON cannot carry (a NaN or infinite double, a profiles string index); the others were",
        ErrorCode::PayloadTooLarge.as_str(),
        exported.rejected,
        exported.rejected + exported.accepted,
        signal.items(),
    )
}

/// The `Export…ServiceResponse` of `signal`, as protobuf bytes or JSON.
pub fn success_body(signal: Signal, encoding: OtlpEncoding, exported: &Exported, max_record_bytes: u64) -> Vec<u8> {
    let rejected = i64::try_from(exported.rejected).unwrap_or(i64::MAX);
    let message = || partial_message(signal, exported, max_record_bytes);
    let partial = exported.rejected > 0;
    macro_rules! body {
        ($response:ident, $partial:ident, $field:ident) => {{
            let response =
                $response { partial_success: partial.then(|| $partial { $field: rejected, error_message: message() }) };
            match encoding {
                OtlpEncoding::Protobuf => response.encode_to_vec(),
                // A full success is `{}`: no `partialSuccess` at all.
                OtlpEncoding::Json if !partial => b"{}".to_vec(),
                OtlpEncoding::Json => serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec()),
            }
        }};
    }
    match signal {
        Signal::Logs => body!(ExportLogsServiceResponse, ExportLogsPartialSuccess, rejected_log_records),
        Signal::Traces => body!(ExportTraceServiceResponse, ExportTracePartialSuccess, rejected_spans),
        Signal::Metrics => body!(ExportMetricsServiceResponse, ExportMetricsPartialSuccess, rejected_data_points),
    }
}

/// The OTLP/HTTP 200.
pub fn success_response(
    signal: Signal,
    encoding: OtlpEncoding,
    exported: &Exported,
    max_record_bytes: u64,
) -> Response {
    let body = success_body(signal, encoding, exported, max_record_bytes);
    ([(header::CONTENT_TYPE, HeaderValue::from_static(encoding.media_type()))], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_a_retry_can_fix_answers_429_or_503_with_retry_after() {
        let cases = [
            (ErrorCode::RateLimited, Some(3), 429, tonic::Code::ResourceExhausted, Some(3)),
            (ErrorCode::Backpressure, Some(1), 429, tonic::Code::ResourceExhausted, Some(1)),
            (ErrorCode::WalUnavailable, Some(2), 503, tonic::Code::Unavailable, Some(2)),
            (ErrorCode::Overloaded, Some(1), 503, tonic::Code::Unavailable, Some(1)),
            (ErrorCode::InsufficientStorage, None, 503, tonic::Code::Unavailable, Some(7)),
            (ErrorCode::InvalidBody, None, 400, tonic::Code::InvalidArgument, None),
            (ErrorCode::PayloadTooLarge, None, 413, tonic::Code::InvalidArgument, None),
            (ErrorCode::UnsupportedMediaType, None, 415, tonic::Code::InvalidArgument, None),
            (ErrorCode::Unauthorized, None, 401, tonic::Code::Unauthenticated, None),
            (ErrorCode::Forbidden, None, 403, tonic::Code::PermissionDenied, None),
        ];
        for (code, retry, status, grpc, want_retry) in cases {
            let r = Refusal::new(code, "why".into(), retry, 7);
            assert_eq!((r.http_status().as_u16(), r.grpc_code(), r.retry_after_secs), (status, grpc, want_retry));
            assert!(r.status_message().starts_with(code.as_str()), "{}", r.status_message());
            let retryable = matches!(status, 429 | 503);
            assert_eq!(retryable, r.retry_after_secs.is_some(), "{code:?}");
        }
    }

    #[test]
    fn an_error_body_is_a_google_rpc_status_in_the_requests_encoding() {
        let r = Refusal::new(ErrorCode::RateLimited, "tenant over its rate".into(), Some(2), 1);
        let resp = r.http_response(OtlpEncoding::Protobuf);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/x-protobuf");
        let json = r.http_response(OtlpEncoding::Json);
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
        let status = r.grpc_status();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(details.retry_info().and_then(|i| i.retry_delay), Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_partial_success_names_the_rejected_items_and_the_reason() {
        let exported = Exported { accepted: 3, rejected: 2 };
        let body = success_body(Signal::Logs, OtlpEncoding::Protobuf, &exported, 100);
        let decoded = ExportLogsServiceResponse::decode(body.as_slice()).unwrap();
        let partial = decoded.partial_success.unwrap();
        assert_eq!(partial.rejected_log_records, 2);
        assert!(
            partial.error_message.starts_with("payload_too_large: 2 of 5 log records"),
            "{}",
            partial.error_message
        );
        let none = success_body(Signal::Traces, OtlpEncoding::Json, &Exported { accepted: 1, rejected: 0 }, 100);
        let value: serde_json::Value = serde_json::from_slice(&none).unwrap();
        assert!(value.get("partialSuccess").is_none_or(serde_json::Value::is_null), "{value}");
    }
}
