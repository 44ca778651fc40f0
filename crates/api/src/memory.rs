//! The memory budgets of request bodies in flight.
//!
//! Ingest's budget (`memory_budget_bytes`) bounds the bytes that ingest
//! requests in flight hold. It is charged **as bytes arrive** — each body
//! chunk as it is read (twice: the body, and the frame built from it), each
//! inflated chunk of a gzip body as it is inflated — never with a declared
//! `Content-Length` before a byte came: a client that declares a large body
//! and sends nothing holds nothing. No tenant holds more than
//! `memory_budget_tenant_share` of it, so one tenant's slow, stalled or huge
//! bodies cannot spend what another tenant's requests need.
//!
//! Lease, commit, heartbeat and admin bodies are never charged to nor
//! refused by ingest's budget: they have a budget of their own
//! ([`CONTROL_BUDGET_BYTES`]), so a flood of ingest cannot stop the
//! exporters' commits (which free the WAL) or an operator's actions.
//!
//! A charge that does not fit is refused at once ([`AcceptError::MemoryBudget`],
//! or [`AcceptError::MemoryTenantShare`] when the tenant's share is
//! spent): nothing appended, nothing acknowledged is affected. What a
//! request holds is released when it ends (its [`Charge`] is dropped).
//!
//! A tenant's cap is `share × budget`, raised to one request's largest
//! charge where the share is smaller (a share may not refuse a request for
//! its size alone).
//!
//! Invariant: a tenant's held units never exceed its cap, and the sum of
//! all held units never exceeds the budget (the semaphore's count).

use crate::error::AcceptError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is kept in KiB so that one permit count covers any body.
const UNIT: u64 = 1024;

/// The budget of lease, commit, heartbeat and admin bodies (each at most
/// 1 MiB): 64 MiB, apart from ingest's.
pub const CONTROL_BUDGET_BYTES: u64 = 64 << 20;

/// Bytes of request bodies the broker may hold at once.
pub struct MemoryBudget {
    sem: Arc<Semaphore>,
    bytes: u64,
    /// Units one tenant may hold (`share × budget`).
    tenant_cap: u64,
}

/// The units one tenant's bodies in flight hold of a budget: the tenant
/// owns it (`intake::roster`), so it outlives a reload that keeps it.
pub type TenantHeld = Arc<AtomicU64>;

/// What one request holds of a budget; released on drop.
#[derive(Default)]
pub struct Charge {
    permit: Option<OwnedSemaphorePermit>,
    /// The tenant's counter and the units charged to it.
    tenant: Option<(TenantHeld, u64)>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some((held, units)) = self.tenant.take() {
            held.fetch_sub(units, Ordering::AcqRel);
        }
    }
}

impl MemoryBudget {
    /// A budget of `bytes` shared by no tenants (control bodies).
    pub fn new(bytes: u64) -> MemoryBudget {
        MemoryBudget::per_tenant(bytes, 1.0, 0)
    }

    /// A budget of `bytes` of which each tenant holds at most `share` —
    /// but never less than `one_request` bytes, the most one request may
    /// need, so that no request is refused for its size alone.
    pub fn per_tenant(bytes: u64, share: f64, one_request: u64) -> MemoryBudget {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64 / 2);
        let shared = (units as f64 * share.clamp(0.0, 1.0)) as u64;
        let tenant_cap = shared.max(one_request.div_ceil(UNIT)).clamp(1, units);
        MemoryBudget { sem: Arc::new(Semaphore::new(units as usize)), bytes, tenant_cap }
    }

    /// Bytes charged now (whole KiB).
    pub fn held_bytes(&self) -> u64 {
        let units = (self.bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64 / 2);
        units.saturating_sub(self.sem.available_permits() as u64) * UNIT
    }

    /// Add `bytes` to what `charge` holds, for no tenant, or refuse without waiting.
    pub fn charge(&self, charge: &mut Charge, bytes: u64) -> Result<(), AcceptError> {
        self.charge_for(None, charge, bytes)
    }

    /// Add `bytes` to what `charge` holds for `tenant` (its share checked
    /// first), or refuse without waiting, changing nothing.
    pub fn charge_for(&self, tenant: Option<&TenantHeld>, charge: &mut Charge, bytes: u64) -> Result<(), AcceptError> {
        let units = bytes.div_ceil(UNIT);
        // The budget first: when both are spent, the budget is the reason.
        let permit = Arc::clone(&self.sem)
            .try_acquire_many_owned(u32::try_from(units).unwrap_or(u32::MAX))
            .map_err(|_| self.refused_budget())?;
        if let Some(h) = tenant {
            if let Err(held) = h.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v + units <= self.tenant_cap).then_some(v + units)
            }) {
                return Err(self.refused_share(held)); // the permit goes back on drop
            }
        }
        match &mut charge.permit {
            Some(p) => p.merge(permit),
            None => charge.permit = Some(permit),
        }
        if let Some(h) = tenant {
            match &mut charge.tenant {
                Some((_, n)) => *n += units,
                None => charge.tenant = Some((Arc::clone(h), units)),
            }
        }
        debug_assert!(tenant.is_none_or(|h| h.load(Ordering::Relaxed) <= self.tenant_cap));
        Ok(())
    }

    fn refused_budget(&self) -> AcceptError {
        AcceptError::MemoryBudget { budget_bytes: self.bytes }
    }

    fn refused_share(&self, held_units: u64) -> AcceptError {
        AcceptError::MemoryTenantShare { held_kib: held_units, cap_kib: self.tenant_cap }
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
        assert!(matches!(b.charge(&mut c, 2 * UNIT), Err(AcceptError::MemoryBudget { .. })));
        drop(a);
        b.charge(&mut c, 10 * UNIT).unwrap();
    }

    #[test]
    fn one_tenant_holds_at_most_its_share_and_the_others_keep_theirs() {
        let b = MemoryBudget::per_tenant(100 * UNIT, 0.25, 10 * UNIT);
        let held: [TenantHeld; 3] = Default::default();
        let mut greedy = Charge::default();
        b.charge_for(Some(&held[0]), &mut greedy, 25 * UNIT).unwrap();
        let over = b.charge_for(Some(&held[0]), &mut Charge::default(), UNIT);
        assert!(matches!(over, Err(AcceptError::MemoryTenantShare { .. })));
        let mut other = Charge::default();
        b.charge_for(Some(&held[1]), &mut other, 25 * UNIT).expect("another tenant's share is untouched");
        drop(greedy);
        b.charge_for(Some(&held[0]), &mut Charge::default(), 25 * UNIT).expect("freed on drop");
        // A refusal by the budget gives the tenant's units back.
        let mut third = Charge::default();
        b.charge_for(Some(&held[2]), &mut third, 25 * UNIT).unwrap();
        drop(other);
        assert_eq!(held[1].load(Ordering::Relaxed), 0);
    }
}
