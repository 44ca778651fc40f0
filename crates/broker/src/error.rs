//! The broker's typed errors, and the one place they become HTTP answers:
//! status and code from [`api::ErrorCode`], a message that says what
//! happened and what to do, and `Retry-After` where the contract wants it.

use api::{ErrorBody, ErrorCode};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("missing or unknown bearer token: send `Authorization: Bearer <token>`")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("topic {0:?} does not exist; topics are declared in the broker config")]
    UnknownTopic(String),
    #[error("destination {0:?} does not exist")]
    UnknownDestination(String),
    #[error("{0}")]
    InvalidBody(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("tenant {tenant:?} is over its hard rate limit; retry after {retry_after_secs} s")]
    RateLimited { tenant: String, retry_after_secs: u64 },
    #[error("{message}")]
    Backpressure { reason: &'static str, message: String, retry_after_secs: u64 },
    #[error("{message}")]
    WalUnavailable { message: String, retry_after_secs: u64 },
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("lease {0:?} is not held: it expired, was rewound or was already settled; acquire a new lease")]
    LeaseNotFound(String),
    /// No such endpoint.
    #[error("no such endpoint {0}; see docs/api.md for the routes")]
    NotFound(String),
    /// The endpoint exists but not with this method.
    #[error("{0} is not allowed here; see docs/api.md for the routes")]
    MethodNotAllowed(String),
    /// A connection, memory or in-flight cap was reached.
    #[error("{message}")]
    Overloaded { reason: &'static str, message: String, retry_after_secs: u64 },
    #[error("{0}")]
    Internal(String),
}

impl BrokerError {
    pub fn code(&self) -> ErrorCode {
        use BrokerError::*;
        match self {
            Unauthorized => ErrorCode::Unauthorized,
            Forbidden(_) => ErrorCode::Forbidden,
            UnknownTopic(_) => ErrorCode::UnknownTopic,
            UnknownDestination(_) => ErrorCode::UnknownDestination,
            InvalidBody(_) => ErrorCode::InvalidBody,
            InvalidRequest(_) => ErrorCode::InvalidRequest,
            PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            RateLimited { .. } => ErrorCode::RateLimited,
            Backpressure { .. } => ErrorCode::Backpressure,
            WalUnavailable { .. } => ErrorCode::WalUnavailable,
            InsufficientStorage(_) => ErrorCode::InsufficientStorage,
            LeaseNotFound(_) => ErrorCode::LeaseNotFound,
            NotFound(_) => ErrorCode::NotFound,
            MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            Overloaded { .. } => ErrorCode::Overloaded,
            Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            BrokerError::RateLimited { retry_after_secs, .. }
            | BrokerError::Backpressure { retry_after_secs, .. }
            | BrokerError::WalUnavailable { retry_after_secs, .. }
            | BrokerError::Overloaded { retry_after_secs, .. } => Some((*retry_after_secs).max(1)),
            _ => None,
        }
    }

    /// Map a WAL append error; `retry_after_secs` for transient ones.
    pub fn from_wal(e: wal::WalError, retry_after_secs: u64) -> BrokerError {
        use wal::WalError::*;
        match e {
            NoSpace { lane } => BrokerError::InsufficientStorage(format!(
                "no space left on the device holding lane {lane}; the batch was not stored — free disk space or raise the quota"
            )),
            FrameTooLarge { len, max } => {
                BrokerError::PayloadTooLarge(format!("batch of {len} bytes exceeds the WAL frame limit of {max} bytes"))
            }
            e @ (LaneFailed { .. } | ShuttingDown) => BrokerError::WalUnavailable {
                message: format!("{e}; the batch was not acknowledged, retry later"),
                retry_after_secs,
            },
            e @ (Io { .. }
            | Corrupt { .. }
            | UnknownLane(_)
            | OffsetGone { .. }
            | InvalidBatch(_)
            | UnsupportedFormat { .. }) => {
                BrokerError::Internal(e.to_string())
            }
        }
    }
}

impl From<crate::store::StoreError> for BrokerError {
    fn from(e: crate::store::StoreError) -> Self {
        BrokerError::Internal(e.to_string())
    }
}

impl IntoResponse for BrokerError {
    fn into_response(self) -> Response {
        let code = self.code();
        let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = self.retry_after_secs();
        let body = ErrorBody::new(code, self.to_string());
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
