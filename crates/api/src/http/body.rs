//! Request bodies: read only after the token was checked, within a size
//! limit and a deadline, and charged to a memory budget ([`crate::memory`])
//! chunk by chunk as the bytes arrive — never with a declared length before
//! a byte came, so a client that declares much and sends nothing holds
//! nothing of the budget.

use crate::error::AcceptError;
use crate::memory::{Charge, MemoryBudget};
use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use std::time::Duration;

/// Where a body's bytes are charged: the budget, the tenant whose share
/// they count against (none for control bodies), and how many times each
/// byte (ingest holds the body and the frame built from it: twice).
pub struct Budget<'a> {
    /// The budget charged: ingest's, or the control bodies' own.
    pub budget: &'a MemoryBudget,
    /// The account of the tenant whose share is checked; `None` for
    /// control bodies.
    pub tenant: Option<&'a crate::memory::TenantHeld>,
    /// Bytes charged per byte read: 2 for ingest (the body and the frame
    /// built from it), 1 for control bodies.
    pub factor: u64,
}

/// Read `body` (declared as `declared` bytes, if it said) within `limit`
/// bytes and `timeout`, charging each chunk as it arrives.
pub async fn read(
    mut body: Body,
    declared: Option<u64>,
    limit: u64,
    timeout: Duration,
    to: Budget<'_>,
    charge: &mut Charge,
) -> Result<Bytes, AcceptError> {
    let too_large = || AcceptError::BodyTooLarge { limit };
    // Refused before a byte is read: answered at once, and the front reads
    // (bounded) what the client sends beside the answer
    // (`http::front`), so it reads the 413, not a reset.
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let late = || AcceptError::BodyTimeout { timeout };
    let collect = async {
        // A body of one chunk (the common case) is that chunk, not a copy.
        let mut first: Option<Bytes> = None;
        let mut joined: Vec<u8> = Vec::new();
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|source| AcceptError::BodyRead { source })?;
            let Ok(chunk) = frame.into_data() else { continue };
            total += chunk.len() as u64;
            if total > limit {
                return Err(too_large());
            }
            // Charged before it is kept; never reserved ahead of what arrived.
            to.budget.charge_for(to.tenant, charge, (chunk.len() as u64).saturating_mul(to.factor))?;
            match first.take() {
                None if joined.is_empty() => first = Some(chunk),
                held => {
                    if let Some(f) = held {
                        joined.extend_from_slice(&f);
                    }
                    joined.extend_from_slice(&chunk);
                }
            }
        }
        Ok(if joined.is_empty() { first.unwrap_or_default() } else { Bytes::from(joined) })
    };
    // On a refusal the rest of the body is dropped unread here; the front
    // reads it (bounded) beside the answer.
    match tokio::time::timeout(timeout, collect).await {
        Ok(r) => r,
        Err(_) => Err(late()),
    }
}

/// Read and discard up to `limit` bytes of a refused body (within
/// `timeout`), holding one chunk at a time: a client that sends its body
/// before reading the answer then gets the refusal, not a reset connection
/// that unread bytes would cause.
pub async fn drain(mut body: Body, limit: u64, timeout: Duration) {
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
