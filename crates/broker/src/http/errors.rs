//! The one mapping from errors to HTTP answers: status and code from the
//! contract's [`ErrorCode`] table, the error's message, and `Retry-After`
//! where the contract wants it. Handlers return [`BrokerError`] (the
//! domain's refusals) or [`RouteError`] (the router's own).

use crate::error::BrokerError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::{ErrorBody, ErrorCode};

/// What the router itself refuses, before any handler runs.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No such endpoint.
    #[error("no such endpoint {0}; see docs/api.md for the routes")]
    NotFound(String),
    /// The endpoint exists but not with this method.
    #[error("{0} is not allowed here; see docs/api.md for the routes")]
    MethodNotAllowed(String),
}

impl BrokerError {
    /// The contract's code for this error (and so its status).
    pub fn code(&self) -> ErrorCode {
        use BrokerError::*;
        match self {
            Unauthorized => ErrorCode::Unauthorized,
            AdminOnly | ExporterOnly | TenantOnly | WrongDestination { .. } => ErrorCode::Forbidden,
            UnknownDestination { .. } => ErrorCode::UnknownDestination,
            NotInLease { .. } | BadRequest { .. } => ErrorCode::InvalidRequest,
            LeaseNotFound { .. } => ErrorCode::LeaseNotFound,
            Recovering => ErrorCode::WalUnavailable,
            Overloaded { .. } => ErrorCode::Overloaded,
            Wal { .. } | Store(_) | TaskFailed(_) => ErrorCode::Internal,
            Accept(e) => e.code(),
        }
    }

    /// `Retry-After` in seconds (at least 1) for the refusals a retry can fix.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            BrokerError::Recovering | BrokerError::Overloaded { .. } => Some(1),
            BrokerError::Accept(e) => e.retry_after_secs(),
            _ => None,
        }
    }
}

/// The contract's JSON error answer, with `Retry-After` when given.
pub fn answer(code: ErrorCode, message: String, retry_after_secs: Option<u64>) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, axum::Json(ErrorBody::new(code, message))).into_response();
    if let Some(secs) = retry_after_secs {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

impl IntoResponse for BrokerError {
    fn into_response(self) -> Response {
        let (code, retry) = (self.code(), self.retry_after_secs());
        answer(code, self.to_string(), retry)
    }
}

impl IntoResponse for RouteError {
    fn into_response(self) -> Response {
        let code = match self {
            RouteError::NotFound(_) => ErrorCode::NotFound,
            RouteError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
        };
        answer(code, self.to_string(), None)
    }
}
