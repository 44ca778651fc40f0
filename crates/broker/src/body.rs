//! Request bodies: read only after the token was checked, within a size
//! limit and a deadline, and charged to the broker's memory budget.
//!
//! The budget (`memory_budget_bytes`) bounds the bytes that requests in
//! flight hold: a body is charged before it is read (its declared length,
//! or the limit when it declares none), twice for ingest (the body and the
//! frame built from it), and an inflated gzip body is charged again once
//! inflated. A request that does not fit is refused at once with 503
//! `overloaded` and `Retry-After` — nothing is read, nothing appended,
//! nothing acknowledged is affected. The charge is released when the request
//! ends (the [`Charge`] is dropped).

use crate::error::BrokerError;
use axum::body::{Body, Bytes};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is kept in KiB so that one permit count covers any body.
const UNIT: u64 = 1024;

/// Bytes of request bodies the broker may hold at once.
pub struct MemoryBudget {
    sem: Arc<Semaphore>,
    bytes: u64,
}

/// What one request holds of the budget; released on drop.
#[derive(Default)]
pub struct Charge(Option<OwnedSemaphorePermit>);

impl MemoryBudget {
    pub fn new(bytes: u64) -> MemoryBudget {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64 / 2) as usize;
        MemoryBudget { sem: Arc::new(Semaphore::new(units)), bytes }
    }

    /// Add `bytes` to what `charge` holds, or refuse without waiting.
    pub fn charge(&self, charge: &mut Charge, bytes: u64) -> Result<(), BrokerError> {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.sem).try_acquire_many_owned(units).map_err(|_| BrokerError::Overloaded {
            reason: "memory",
            message: format!(
                "the broker's memory budget for requests in flight ({} bytes, memory_budget_bytes) is spent; retry shortly",
                self.bytes
            ),
            retry_after_secs: 1,
        })?;
        match &mut charge.0 {
            Some(held) => held.merge(permit),
            None => charge.0 = Some(permit),
        }
        Ok(())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_what_does_not_fit_and_frees_on_drop() {
        let b = MemoryBudget::new(10 * UNIT);
        let mut a = Charge::default();
        b.charge(&mut a, 6 * UNIT).unwrap();
        b.charge(&mut a, 3 * UNIT).unwrap();
        let mut c = Charge::default();
        assert!(matches!(b.charge(&mut c, 2 * UNIT), Err(BrokerError::Overloaded { reason: "memory", .. })));
        drop(a);
        b.charge(&mut c, 10 * UNIT).unwrap();
    }
}
