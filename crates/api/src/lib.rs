//! # api — Weir's wire protocol
//!
//! Owns every JSON shape that crosses a process boundary: ingest answers,
//! error bodies, the lease protocol between broker and exporters, and the
//! admin API. The broker, the exporter and `broker-admin` all use these
//! types, so the two sides of a call cannot drift apart.
//!
//! Invariants:
//! - [`ErrorCode`] is the only table from error codes to HTTP statuses.
//! - Payloads cross the lease protocol as base64 (records are bytes, not
//!   necessarily UTF-8).
//!
//! Never: depend on the broker or the exporter; do I/O.

pub mod lease;

use serde::{Deserialize, Serialize};

/// Every error code an HTTP answer may carry, with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidBody,
    InvalidRequest,
    NotFound,
    MethodNotAllowed,
    HeadersTooLarge,
    Overloaded,
    Unauthorized,
    Forbidden,
    UnknownTopic,
    UnknownDestination,
    LeaseNotFound,
    LeaseExpired,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    Backpressure,
    WalUnavailable,
    InsufficientStorage,
    Internal,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: [ErrorCode; 19] = {
        use ErrorCode::*;
        [
            InvalidBody,
            InvalidRequest,
            NotFound,
            MethodNotAllowed,
            HeadersTooLarge,
            Overloaded,
            Unauthorized,
            Forbidden,
            UnknownTopic,
            UnknownDestination,
            LeaseNotFound,
            LeaseExpired,
            PayloadTooLarge,
            UnsupportedMediaType,
            RateLimited,
            Backpressure,
            WalUnavailable,
            InsufficientStorage,
            Internal,
        ]
    };

    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidBody | InvalidRequest => 400,
            NotFound => 404,
            MethodNotAllowed => 405,
            HeadersTooLarge => 431,
            Overloaded => 503,
            Unauthorized => 401,
            Forbidden => 403,
            UnknownTopic | UnknownDestination | LeaseNotFound => 404,
            LeaseExpired => 409,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
            RateLimited | Backpressure => 429,
            Internal => 500,
            WalUnavailable => 503,
            InsufficientStorage => 507,
        }
    }

    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidBody => "invalid_body",
            InvalidRequest => "invalid_request",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            HeadersTooLarge => "headers_too_large",
            Overloaded => "overloaded",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            UnknownTopic => "unknown_topic",
            UnknownDestination => "unknown_destination",
            LeaseNotFound => "lease_not_found",
            LeaseExpired => "lease_expired",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            RateLimited => "rate_limited",
            Backpressure => "backpressure",
            WalUnavailable => "wal_unavailable",
            InsufficientStorage => "insufficient_storage",
            Internal => "internal",
        }
    }
}

/// The wire form keeps the code a string, so a client can read a code
/// that a newer broker added; [`ErrorDetail::known_code`] types it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ErrorDetail {
    /// The code, if this build knows it (else act on the HTTP status).
    pub fn known_code(&self) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == self.code)
    }
}

/// `{"error":{"code":"…","message":"…"}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody { error: ErrorDetail { code: code.as_str().to_string(), message: message.into() } }
    }
}

/// The 200 answer to an ingest request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    pub accepted: u64,
    pub priority: String,
    pub lane: String,
    pub first_offset: u64,
}

/// Circuit breaker as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerView {
    /// `closed`, `half_open` or `open`.
    pub state: String,
    pub consecutive_failures: u32,
    /// Milliseconds until an open breaker lets a probe through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// One destination's cursor on one lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneCursor {
    pub lane: String,
    /// Every record below this offset was delivered (or skipped) for good.
    pub committed: u64,
    /// The lane's durable end.
    pub end: u64,
}

/// `GET /v1/admin/destinations`: one per destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationStatus {
    pub name: String,
    pub topics: Vec<String>,
    pub lag_records: u64,
    pub lag_bytes: u64,
    pub oldest_pending_age_ms: u64,
    pub leases_in_flight: u64,
    pub dead_letter_records: u64,
    pub breaker: BreakerView,
    pub paused: bool,
    pub dropped_records: u64,
    pub backpressure: bool,
    pub cursors: Vec<LaneCursor>,
}

/// A record the destination's sink rejected as poison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    pub lane: String,
    pub offset: u64,
    pub tenant: String,
    pub topic: String,
    pub ts_ms: u64,
    pub payload_b64: String,
    pub error: String,
    pub failed_at_ms: u64,
}

/// `POST /v1/admin/destinations/{name}/rewind`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum RewindTarget {
    /// Every lane back to its earliest retained record.
    Earliest,
    /// One lane (or all, if `lane` is absent) to an offset.
    Offset { offset: u64, lane: Option<String> },
    /// Every lane to its first record at or after `ts_ms`.
    Timestamp { ts_ms: u64 },
}

/// Answer of admin actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub destination: String,
    pub action: String,
    pub detail: String,
}

/// Standard base64 for payloads.
pub fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn b64_decode(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| format!("invalid base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_in_the_table_once_and_parses_back() {
        for c in ErrorCode::ALL {
            // Exhaustive: a new variant fails to compile until it is listed.
            let listed = match c {
                ErrorCode::InvalidBody
                | ErrorCode::InvalidRequest
                | ErrorCode::NotFound
                | ErrorCode::MethodNotAllowed
                | ErrorCode::HeadersTooLarge
                | ErrorCode::Overloaded
                | ErrorCode::Unauthorized
                | ErrorCode::Forbidden
                | ErrorCode::UnknownTopic
                | ErrorCode::UnknownDestination
                | ErrorCode::LeaseNotFound
                | ErrorCode::LeaseExpired
                | ErrorCode::PayloadTooLarge
                | ErrorCode::UnsupportedMediaType
                | ErrorCode::RateLimited
                | ErrorCode::Backpressure
                | ErrorCode::WalUnavailable
                | ErrorCode::InsufficientStorage
                | ErrorCode::Internal => true,
            };
            assert!(listed);
            let d = ErrorDetail { code: c.as_str().into(), message: String::new() };
            assert_eq!(d.known_code(), Some(c));
            assert_eq!(ErrorCode::ALL.iter().filter(|x| **x == c).count(), 1);
        }
        assert_eq!(ErrorDetail { code: "from_a_newer_broker".into(), message: String::new() }.known_code(), None);
    }

    #[test]
    fn error_codes_serialize_as_their_snake_case_names() {
        for code in [ErrorCode::InvalidBody, ErrorCode::WalUnavailable, ErrorCode::InsufficientStorage] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn rewind_targets_read_as_tagged_objects() {
        let t: RewindTarget = serde_json::from_str(r#"{"to":"offset","offset":5,"lane":"normal/0"}"#).unwrap();
        assert_eq!(t, RewindTarget::Offset { offset: 5, lane: Some("normal/0".into()) });
    }
}
