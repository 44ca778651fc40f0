//! The memory budget of requests in flight (`memory_budget_bytes`).
//!
//! It bounds the bytes that requests in flight hold: a body is charged
//! before it is read (its declared length, or the limit when it declares
//! none), twice for ingest (the body and the frame built from it), and an
//! inflated gzip body is charged again once inflated. A request that does
//! not fit is refused at once ([`BrokerError::Overloaded`], reason
//! `memory`) — nothing is read, nothing appended, nothing acknowledged is
//! affected. The charge is released when the request ends (the [`Charge`]
//! is dropped).

use crate::error::BrokerError;
use std::sync::Arc;
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
