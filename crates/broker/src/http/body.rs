//! Request bodies: read only after the token was checked, within a size
//! limit and a deadline, and charged to the broker's memory budget
//! ([`crate::memory`]) before a byte is read.

use crate::error::BrokerError;
use crate::memory::{Charge, MemoryBudget};
use axum::body::{Body, Bytes};
use std::time::Duration;

/// Read `body` (declared as `declared` bytes, if it said) within `limit`
/// bytes and `timeout`, after charging `factor` times its size.
pub async fn read(
    body: Body,
    declared: Option<u64>,
    limit: u64,
    timeout: Duration,
    budget: &MemoryBudget,
    charge: &mut Charge,
    factor: u64,
) -> Result<Bytes, BrokerError> {
    let too_large =
        || BrokerError::PayloadTooLarge(format!("the request body is over {limit} bytes; split or shorten it"));
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    if let Err(refused) = budget.charge(charge, declared.unwrap_or(limit).saturating_mul(factor)) {
        drain(body, limit, timeout).await;
        return Err(refused);
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(BrokerError::InvalidRequest(format!(
            "the request body did not arrive within {} ms (body_read_timeout_ms)",
            timeout.as_millis()
        ))),
    }
}

/// Read and discard up to `limit` bytes of a refused body (within
/// `timeout`), holding one chunk at a time: a client that sends its body
/// before reading the answer then gets the 503, not a reset connection that
/// unread bytes would cause.
async fn drain(mut body: Body, limit: u64, timeout: Duration) {
    use http_body_util::BodyExt;
    let _ = tokio::time::timeout(timeout, async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > limit {
                break;
            }
        }
    })
    .await;
}
