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
    /// [`crate::idempotency`]): answering its 200 would drop these records.
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
}

impl BrokerError {
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
            e @ (LaneFailed { .. } | WriterStopped { .. } | ShuttingDown) => BrokerError::WalUnavailable {
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

#[cfg(test)]
mod tests {
    use super::BrokerError;
    use protocol::ErrorCode;

    /// Issue 19, defect 17: a lane whose writer stopped unexpectedly answers
    /// 503 `wal_unavailable` with `Retry-After`, saying why.
    #[test]
    fn a_lane_whose_writer_stopped_answers_503_wal_unavailable() {
        let stopped = wal::WalError::WriterStopped { lane: "normal/0".into(), reason: "it panicked: boom".into() };
        let e = BrokerError::from_wal(stopped, 2);
        assert_eq!((e.code(), e.code().status(), e.retry_after_secs()), (ErrorCode::WalUnavailable, 503, Some(2)));
        assert!(e.to_string().contains("writer of lane normal/0 stopped unexpectedly"), "{e}");
    }
}
