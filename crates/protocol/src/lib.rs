//! # api — Weir's wire protocol
//!
//! Owns every JSON shape that crosses a process boundary: ingest answers,
//! error bodies, the lease protocol between broker and exporters, and the
//! admin API. The broker, the exporter and `broker-admin` all use these
//! types, so the two sides of a call cannot drift apart.
//!
//! Invariants:
//! - [`ErrorCode`] is the only table from error codes to HTTP statuses,
//!   declared once (variant, wire name, status).
//! - [`routes`] holds every endpoint's pattern (for the router) and path
//!   builder (for the clients), and the lease and admin actions as enums.
//! - Payloads cross the lease protocol as bytes: in the binary v2 format
//!   ([`lease_binary`]) as they were acknowledged, in v1's JSON as base64
//!   (records are bytes, not necessarily UTF-8).
//!
//! Never: depend on the broker or the exporter; do I/O.

pub mod downstream_id;
pub mod lease;
pub mod lease_binary;
pub mod routes;

use serde::{Deserialize, Serialize};

/// Declares [`ErrorCode`] from one table — variant, wire name, HTTP status —
/// so the enum, [`ErrorCode::ALL`], the names and the statuses cannot drift.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $status:literal;)*) => {
        /// Every error code an HTTP answer may carry, with its status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorCode {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The HTTP status that carries this code.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// The code's name on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }
        }
    };
}

error_codes! {
    /// A line is not JSON, or the body is empty.
    InvalidBody = "invalid_body", 400;
    /// A malformed header, query, or lease/admin body.
    InvalidRequest = "invalid_request", 400;
    /// No such endpoint.
    NotFound = "not_found", 404;
    MethodNotAllowed = "method_not_allowed", 405;
    HeadersTooLarge = "headers_too_large", 431;
    /// Connection, memory or in-flight caps reached (with `Retry-After`).
    Overloaded = "overloaded", 503;
    Unauthorized = "unauthorized", 401;
    Forbidden = "forbidden", 403;
    UnknownTopic = "unknown_topic", 404;
    UnknownDestination = "unknown_destination", 404;
    /// The lease is not held: expired, rewound or already settled.
    LeaseNotFound = "lease_not_found", 404;
    PayloadTooLarge = "payload_too_large", 413;
    UnsupportedMediaType = "unsupported_media_type", 415;
    /// An `Idempotency-Key` reused within the window for a different request
    /// (topic, content type or inflated body): nothing was appended.
    IdempotencyKeyReused = "idempotency_key_reused", 422;
    RateLimited = "rate_limited", 429;
    Backpressure = "backpressure", 429;
    WalUnavailable = "wal_unavailable", 503;
    InsufficientStorage = "insufficient_storage", 507;
    Internal = "internal", 500;
}

/// An error code as read from the wire: one this build knows, or one a
/// newer broker added (then act on the HTTP status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WireCode {
    Known(ErrorCode),
    Unknown(String),
}

impl WireCode {
    /// The code, if this build knows it.
    pub fn known(&self) -> Option<ErrorCode> {
        match self {
            WireCode::Known(c) => Some(*c),
            WireCode::Unknown(_) => None,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            WireCode::Known(c) => c.as_str(),
            WireCode::Unknown(s) => s,
        }
    }
}

impl std::fmt::Display for WireCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"code":"…","message":"…"}` of an error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: WireCode,
    pub message: String,
}

/// `{"error":{"code":"…","message":"…"}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody { error: ErrorDetail { code: WireCode::Known(code), message: message.into() } }
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

pub fn b64_decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_in_the_table_once_and_parses_back() {
        for &c in ErrorCode::ALL {
            let wire = serde_json::to_string(&ErrorBody::new(c, "m")).unwrap();
            let back: ErrorBody = serde_json::from_str(&wire).unwrap();
            assert_eq!(back.error.code.known(), Some(c));
            assert_eq!(ErrorCode::ALL.iter().filter(|x| **x == c).count(), 1);
            assert_eq!(ErrorCode::ALL.iter().filter(|x| x.as_str() == c.as_str()).count(), 1, "{c:?}'s name is unique");
            assert!((400..600).contains(&c.status()));
        }
        let newer: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"from_a_newer_broker","message":""}}"#).unwrap();
        assert_eq!(newer.error.code, WireCode::Unknown("from_a_newer_broker".into()));
        assert_eq!(newer.error.code.known(), None);
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
