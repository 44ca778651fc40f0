//! The accept path's error: what ingest refuses, each with a message that
//! says what happened and what to do. [`AcceptError::code`] is this
//! crate's one mapping to the contract's [`ErrorCode`] (and so to a
//! status); the broker's HTTP edge answers with it.

use protocol::ErrorCode;

/// Why a batch was not accepted. Nothing of a refused batch is stored.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The path names a topic the configuration does not declare.
    #[error("topic {0:?} does not exist; topics are declared in the broker config")]
    UnknownTopic(String),
    /// The body is not what its content type says (a bad NDJSON line, not
    /// UTF-8, empty): fix the request; retrying it as is fails again.
    #[error("{0}")]
    InvalidBody(String),
    /// A header or parameter is malformed (an over-long `Idempotency-Key`).
    #[error("{0}")]
    InvalidRequest(String),
    /// The body's media type or encoding is not one ingest takes: send
    /// one of those the message names.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A record, the inflated body or the frame is over its limit: split
    /// the batch.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The `Idempotency-Key` names an earlier, different request (see
    /// [`crate::idempotency`]): answering its 200 would drop these records.
    /// Send the new records under a new key.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// The tenant is over its hard rate: retry after the given time.
    #[error("tenant {tenant:?} is over its hard rate limit; retry after {retry_after_secs} s")]
    RateLimited { tenant: String, retry_after_secs: u64 },
    /// A destination that receives this data, or the disk, is behind its
    /// limit (`reason` names which): retry later.
    #[error("{message}")]
    Backpressure { reason: &'static str, message: String, retry_after_secs: u64 },
    /// The lane cannot write (its writer failed or stopped, or the WAL is
    /// shutting down): nothing was acknowledged; retry later.
    #[error("{message}")]
    WalUnavailable { message: String, retry_after_secs: u64 },
    /// No space for the batch (ENOSPC or the quota): free space or raise it.
    #[error("{0}")]
    InsufficientStorage(String),
    /// The memory budget, the tenant's share of it, or the idempotency
    /// keys are full (`reason`): retry shortly.
    #[error("{message}")]
    Overloaded { reason: &'static str, message: String, retry_after_secs: u64 },
    /// A fault of the broker itself (a task ended abnormally, the WAL
    /// answered with corruption): logged and answered 500.
    #[error("{0}")]
    Internal(String),
}

impl AcceptError {
    /// The contract's code for this refusal (and so its status).
    pub fn code(&self) -> ErrorCode {
        use AcceptError::*;
        match self {
            UnknownTopic(_) => ErrorCode::UnknownTopic,
            InvalidBody(_) => ErrorCode::InvalidBody,
            InvalidRequest(_) => ErrorCode::InvalidRequest,
            PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            IdempotencyKeyReused(_) => ErrorCode::IdempotencyKeyReused,
            RateLimited { .. } => ErrorCode::RateLimited,
            Backpressure { .. } => ErrorCode::Backpressure,
            WalUnavailable { .. } => ErrorCode::WalUnavailable,
            InsufficientStorage(_) => ErrorCode::InsufficientStorage,
            Overloaded { .. } => ErrorCode::Overloaded,
            Internal(_) => ErrorCode::Internal,
        }
    }

    /// `Retry-After` in seconds (at least 1) for the refusals a retry can fix.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            AcceptError::RateLimited { retry_after_secs, .. }
            | AcceptError::Backpressure { retry_after_secs, .. }
            | AcceptError::WalUnavailable { retry_after_secs, .. }
            | AcceptError::Overloaded { retry_after_secs, .. } => Some((*retry_after_secs).max(1)),
            _ => None,
        }
    }

    /// Map a WAL append error; `retry_after_secs` for transient ones.
    pub fn from_wal(e: wal::WalError, retry_after_secs: u64) -> AcceptError {
        use wal::WalError::*;
        match e {
            NoSpace { lane, .. } => AcceptError::InsufficientStorage(format!(
                "no space left on the device holding lane {lane}; the batch was not stored — free disk space or raise the quota"
            )),
            FrameTooLarge { len, max } => {
                AcceptError::PayloadTooLarge(format!("batch of {len} bytes exceeds the WAL frame limit of {max} bytes"))
            }
            e @ (LaneFailed { .. } | WriterStopped { .. } | ShuttingDown) => AcceptError::WalUnavailable {
                message: format!("{e}; the batch was not acknowledged, retry later"),
                retry_after_secs,
            },
            e @ (Io { .. }
            | Corrupt { .. }
            | UnknownLane(_)
            | WriterNotStarted { .. }
            | OffsetGone { .. }
            | InvalidBatch(_)
            | UnsupportedFormat { .. }) => AcceptError::Internal(e.to_string()),
        }
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
}
