//! The intake service: who may ingest, into which lane, and whether the
//! broker can take more right now.
//!
//! Owns the tenants (their lanes and rate limiters), the topics and the
//! routes from (tenant, topic) to destinations, the idempotency window, the
//! memory budget of requests in flight, and the disk flags that maintenance
//! refreshes. `ingest` is the accept path over them.
//!
//! Invariants: a tenant over its rate, or one the limiter cannot decide
//! for, goes to `low`; only the tenants whose data routes to a lagging
//! destination are refused for its lag.
//!
//! Never: block on a destination (the lag flags are read, never waited on).

pub(crate) mod ingest;
mod roster;

use crate::idempotency::IdempotencyCache;
use crate::lag::LagFlags;
use crate::memory::MemoryBudget;
use crate::metrics::AcceptMetrics;
use config::{TenantId, ValidConfig};
use roster::Roster;
pub use roster::{Tenant, TopicSlot, OTHER_TENANTS};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use wal::Wal;

/// Disk-level backpressure, refreshed by the maintenance loop.
#[derive(Default)]
struct DiskState {
    over_watermark: AtomicBool,
    over_quota: AtomicBool,
}

/// Stable shard of a tenant: crc32c of its name (not std's randomised hash).
pub fn shard_of(tenant: &str, shards: u16) -> u16 {
    (crc32c::crc32c(tenant.as_bytes()) % u32::from(shards.max(1))) as u16
}

/// The accept path's service: tenants, topics, routes, the idempotency
/// window, the memory budget and the disk flags. The tenants and topics
/// are a snapshot a reload swaps ([`Intake::reload`]); the rest is built
/// once from the configuration the broker started with. The broker holds
/// one and calls [`crate::http::accept`] with it for every ingest request.
pub struct Intake {
    pub(crate) cfg: Arc<ValidConfig>,
    pub(crate) metrics: AcceptMetrics,
    /// The destinations' lag flags (the broker's deliveries, behind [`LagFlags`]).
    pub(crate) lag: Arc<dyn LagFlags>,
    /// The log every accepted batch is appended to.
    pub(crate) wal: Arc<Wal>,
    /// The tenants and topics in force.
    roster: RwLock<Arc<Roster>>,
    /// Rebuilt from the WAL in the background after open; keyed requests
    /// wait for it ([`IdempotencyCache::rebuild_in_background`]).
    idempotency: Arc<IdempotencyCache>,
    /// The rebuild's thread, joined when the intake goes (it holds the WAL).
    rebuild: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    disk: DiskState,
    /// Bytes that request bodies in flight may hold (see [`crate::memory`]).
    memory: MemoryBudget,
}

impl Intake {
    /// Tenants (with the ids `tenant_ids`, in the configuration's order),
    /// topics and routes from the configuration; the idempotency window
    /// rebuilt from the WAL.
    pub fn open(
        cfg: Arc<ValidConfig>,
        tenant_ids: &[TenantId],
        wal: Arc<Wal>,
        metrics: AcceptMetrics,
        lag: Arc<dyn LagFlags>,
    ) -> Intake {
        let roster = RwLock::new(Arc::new(Roster::build(&cfg, tenant_ids, lag.as_ref(), None)));
        let window_ms = u64::try_from(cfg.timing.idempotency_window.as_millis()).unwrap_or(u64::MAX);
        let idempotency = Arc::new(IdempotencyCache::new(window_ms, cfg.idempotency_max_keys_per_tenant));
        let rebuild =
            std::sync::Mutex::new(idempotency.rebuild_in_background(Arc::clone(&wal), plumbing::clock::now_ms()));
        let memory = MemoryBudget::per_tenant(
            cfg.memory_budget_bytes,
            cfg.memory_budget_tenant_share,
            cfg.largest_request_charge(),
        );
        Intake { cfg, metrics, lag, wal, roster, idempotency, disk: DiskState::default(), memory, rebuild }
    }

    /// Put the tenants and topics of `cfg` in force (their ids
    /// `tenant_ids`, in its order), with routes to the destinations the
    /// lag flags know now. Requests already holding a [`Tenant`] finish
    /// with it; a tenant that stays keeps its limiter state and memory
    /// account; a removed tenant's next request finds no tenant.
    pub fn reload(&self, cfg: &ValidConfig, tenant_ids: &[TenantId]) {
        let mut slot = self.roster.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = Roster::build(cfg, tenant_ids, self.lag.as_ref(), Some(&slot));
        *slot = Arc::new(fresh);
    }

    fn roster(&self) -> Arc<Roster> {
        Arc::clone(&self.roster.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The tenant `id` names in the configuration in force; `None` when a
    /// reload removed it after its token was resolved.
    pub fn tenant(&self, id: TenantId) -> Option<Arc<Tenant>> {
        self.roster().tenant(id).cloned()
    }

    /// Whether `topic` is configured now (for a metric's label).
    pub fn knows_topic(&self, topic: &str) -> bool {
        self.roster().has_topic(topic)
    }

    /// Ingest's memory budget (`memory_budget_bytes`) of bodies in flight.
    pub fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    /// The log batches are appended to.
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    /// The accept path's metric handles.
    pub fn metrics(&self) -> &AcceptMetrics {
        &self.metrics
    }

    /// Count a request to `topic` answered 200.
    pub fn count_ok(&self, topic: &str) {
        self.roster().ok_requests(&self.metrics, topic).inc();
    }

    /// Forget idempotency keys older than the window.
    pub fn expire_idempotency(&self, now: u64) {
        self.idempotency.expire(now);
    }

    /// Refresh the disk flags: the quota against the WAL's `wal_bytes`, the
    /// watermark against the data disk's use.
    pub fn refresh_disk(&self, wal_bytes: u64) {
        let over_quota = self.cfg.disk_quota_bytes > 0 && wal_bytes >= self.cfg.disk_quota_bytes;
        self.disk.over_quota.store(over_quota, Ordering::Relaxed);
        self.check_disk();
    }

    fn check_disk(&self) {
        let ratio = disk_used_ratio(&self.cfg.data_dir);
        if let Some(r) = ratio {
            self.metrics.disk_used_ratio.set(r);
        }
        let over = ratio.is_some_and(|r| r > self.cfg.disk_high_watermark);
        self.disk.over_watermark.store(over, Ordering::Relaxed);
    }
}

impl Drop for Intake {
    /// The idempotency rebuild stops and its thread is joined: once the
    /// intake is gone nothing of it holds the WAL (a log reopened on the
    /// same directory, in tests, never meets the old one's threads).
    fn drop(&mut self) {
        let thread = self.rebuild.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        self.idempotency.stop_rebuild(thread);
    }
}

/// Fraction of the filesystem holding `dir` that is in use, as `df` shows
/// it: what is used over what is used plus what we may still write.
fn disk_used_ratio(dir: &std::path::Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and a zeroed out-struct.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    used_ratio(s.f_blocks as u64, s.f_bfree as u64, s.f_bavail as u64)
}

/// `df`'s use: (blocks − free) / ((blocks − free) + available). Blocks
/// reserved for root, and on shared or thinly provisioned volumes whole
/// stretches of `free` that we may not write, are neither used nor ours:
/// measured against the total they would read as use (a 252 GB volume with
/// 11 GB used and 80 GB available is 13 % full, not 68 %).
fn used_ratio(blocks: u64, free: u64, available: u64) -> Option<f64> {
    let used = blocks.checked_sub(free)?;
    let usable = used.checked_add(available)?;
    if usable == 0 {
        return None;
    }
    Some(used as f64 / usable as f64)
}

#[cfg(test)]
mod tests {
    use super::used_ratio;

    #[test]
    fn use_is_counted_as_df_counts_it() {
        // The volume CI runs on: 252 GB, 241 GB free, 80 GB available.
        let r = used_ratio(66_053_021, 63_169_747, 20_938_198).unwrap();
        assert!((0.12..0.13).contains(&r), "{r}");
        // Available gone: full, whatever is nominally free.
        assert_eq!(used_ratio(1000, 600, 0), Some(1.0));
        assert_eq!(used_ratio(1000, 1000, 1000), Some(0.0));
        assert_eq!(used_ratio(1000, 1001, 5), None, "free over total is not a measure");
        assert_eq!(used_ratio(0, 0, 0), None);
    }
}
