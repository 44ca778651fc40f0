//! The broker's domain error: what ingest, leases, admin actions and
//! maintenance refuse, each with a message that says what happened and what
//! to do. It names no HTTP status: [`crate::http::errors`] is the one place
//! that maps it to the contract's [`protocol::ErrorCode`] and `Retry-After`.

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
    /// The `Idempotency-Key` names an earlier, different request (see
    /// [`api::idempotency`]): answering its 200 would drop these records.
    #[error("{0}")]
    IdempotencyKeyReused(String),
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
    /// A connection, memory or in-flight cap was reached.
    #[error("{message}")]
    Overloaded { reason: &'static str, message: String, retry_after_secs: u64 },
    #[error("{0}")]
    Internal(String),
    /// The accept path refused a batch (`api`'s own error and codes).
    #[error(transparent)]
    Accept(#[from] api::AcceptError),
}

impl From<crate::store::StoreError> for BrokerError {
    fn from(e: crate::store::StoreError) -> Self {
        BrokerError::Internal(e.to_string())
    }
}
