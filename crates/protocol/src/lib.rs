//! # protocol — Weir's wire protocol
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

#![deny(missing_docs)]

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
    /// The endpoint exists but does not take this method.
    MethodNotAllowed = "method_not_allowed", 405;
    /// The request head is larger than the server reads.
    HeadersTooLarge = "headers_too_large", 431;
    /// Connection, memory or in-flight caps reached (with `Retry-After`).
    Overloaded = "overloaded", 503;
    /// No token, or one the broker does not know.
    Unauthorized = "unauthorized", 401;
    /// A known token whose role may not call this endpoint (or act on this
    /// tenant's or destination's data).
    Forbidden = "forbidden", 403;
    /// The ingest path names no configured topic.
    UnknownTopic = "unknown_topic", 404;
    /// The path names no configured destination.
    UnknownDestination = "unknown_destination", 404;
    /// The lease is not held: expired, rewound or already settled.
    LeaseNotFound = "lease_not_found", 404;
    /// A body, inflated body or record over its configured limit.
    PayloadTooLarge = "payload_too_large", 413;
    /// A `Content-Type` or `Content-Encoding` the endpoint does not read.
    UnsupportedMediaType = "unsupported_media_type", 415;
    /// An `Idempotency-Key` reused within the window for a different request
    /// (topic, content type or inflated body): nothing was appended.
    IdempotencyKeyReused = "idempotency_key_reused", 422;
    /// Over the tenant's hard rate limit (with `Retry-After`).
    RateLimited = "rate_limited", 429;
    /// The disk is past its watermark or a destination is past its lag
    /// limit: nothing was appended; retry after `Retry-After`.
    Backpressure = "backpressure", 429;
    /// The WAL cannot take appends now (a lane failed, or it is stopping):
    /// nothing was acknowledged; retry after `Retry-After`.
    WalUnavailable = "wal_unavailable", 503;
    /// The disk or the WAL's quota is full: nothing was appended.
    InsufficientStorage = "insufficient_storage", 507;
    /// A bug or an unexpected failure inside the server.
    Internal = "internal", 500;
}

/// An error code as read from the wire: one this build knows, or one a
/// newer broker added (then act on the HTTP status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WireCode {
    /// A code of this build's table.
    Known(ErrorCode),
    /// A code this build does not know, as the peer sent it.
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

    /// The code's name, as on the wire (what `Display` writes).
    pub(crate) fn as_str(&self) -> &str {
        match self {
            WireCode::Known(c) => c.as_str(),
            WireCode::Unknown(s) => s,
        }
    }
}

impl std::fmt::Display for WireCode {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.write_str(self.as_str())
    }
}

/// `{"code":"…","message":"…"}` of an error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What went wrong, as a machine reads it.
    pub code: WireCode,
    /// What went wrong and what to do, as a person reads it.
    pub message: String,
}

/// `{"error":{"code":"…","message":"…"}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

impl ErrorBody {
    /// The body of an answer with `code` and a message for people.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody { error: ErrorDetail { code: WireCode::Known(code), message: message.into() } }
    }
}

/// The 200 answer to an ingest request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    /// Records appended, all durable (fsync'd) before this answer.
    pub accepted: u64,
    /// The priority they were stored at (`high`, `normal`, `low`; a
    /// tenant over its rate is demoted to `low`).
    pub priority: String,
    /// The lane they went to (`normal/2`).
    pub lane: String,
    /// The lane offset of the first record; the others follow it in order.
    pub first_offset: u64,
}

/// Circuit breaker as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerView {
    /// `closed`, `half_open` or `open`.
    pub state: String,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Milliseconds until an open breaker lets a probe through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// One destination's cursor on one lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneCursor {
    /// The lane (`normal/2`).
    pub lane: String,
    /// Every record below this offset was delivered (or skipped) for good.
    pub committed: u64,
    /// The lane's durable end.
    pub end: u64,
}

/// `GET /v1/admin/destinations`: one per destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationStatus {
    /// The destination's name.
    pub name: String,
    /// The topics it receives.
    pub topics: Vec<String>,
    /// Records acknowledged but not yet delivered to it.
    pub lag_records: u64,
    /// Their payload bytes.
    pub lag_bytes: u64,
    /// Age of the oldest record not yet delivered (0: none).
    pub oldest_pending_age_ms: u64,
    /// Leases held by its exporters now.
    pub leases_in_flight: u64,
    /// Records kept as dead letters.
    pub dead_letter_records: u64,
    /// Its circuit breaker.
    pub breaker: BreakerView,
    /// It is paused: no leases are handed out.
    pub paused: bool,
    /// Why it is paused (`operator`, or the sink's 410 Gone with its
    /// message); none while it runs. Absent from brokers before v1.2.
    #[serde(default)]
    pub paused_reason: Option<String>,
    /// Records skipped for it by `drop_oldest` or retention, never delivered.
    pub dropped_records: u64,
    /// Its lag is over a limit with `on_lag_limit = "backpressure"`:
    /// producers of its topics get 429.
    pub backpressure: bool,
    /// Its cursor on every lane.
    pub cursors: Vec<LaneCursor>,
}

/// A record the destination's sink rejected as poison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its id within the destination's dead letters.
    pub id: u64,
    /// The lane the record was acknowledged in.
    pub lane: String,
    /// Its offset in that lane.
    pub offset: u64,
    /// The tenant that sent it.
    pub tenant: String,
    /// Its topic.
    pub topic: String,
    /// When it was acknowledged, ms since the Unix epoch.
    pub ts_ms: u64,
    /// The payload, standard base64.
    pub payload_b64: String,
    /// Why the sink refused it, as the exporter reported it.
    pub error: String,
    /// When it was made a dead letter, ms since the Unix epoch.
    pub failed_at_ms: u64,
}

/// `POST /v1/admin/destinations/{name}/rewind`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum RewindTarget {
    /// Every lane back to its earliest retained record.
    Earliest,
    /// One lane (or all, if `lane` is absent) to an offset.
    Offset {
        /// The offset the cursor moves to.
        offset: u64,
        /// Only this lane (`normal/0`); absent: every lane.
        lane: Option<String>,
    },
    /// Every lane to its first record at or after `ts_ms`.
    Timestamp {
        /// Milliseconds since the Unix epoch.
        ts_ms: u64,
    },
}

/// Answer of admin actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// The destination acted on.
    pub destination: String,
    /// The action's name (`pause`, `rewind`, ...).
    pub action: String,
    /// What it did, for people.
    pub detail: String,
}

/// Standard base64 for payloads.
pub fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Standard base64 back to bytes.
pub fn b64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text)
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
