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

use crate::idempotency::IdempotencyCache;
use crate::lag::{DestinationId, LagFlags};
use crate::limiter::{Limits, TenantLimiter};
use crate::memory::MemoryBudget;
use crate::metrics::{AcceptMetrics, IngestCounters};
use config::ValidConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wal::{Priority, Wal};

/// A configured tenant as the accept path holds it.
pub struct Tenant {
    /// Its configured name (what its token resolves to; the metrics' label).
    pub name: String,
    /// Its own lane's priority, where its in-rate records go.
    pub(crate) priority: Priority,
    /// Its lanes' shard ([`shard_of`] its name): stable across restarts.
    pub(crate) shard: u16,
    limiter: TenantLimiter,
}

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
/// window, the memory budget and the disk flags, built once from the
/// configuration. The broker holds one and calls [`crate::http::accept`]
/// with it for every ingest request.
pub struct Intake {
    pub(crate) cfg: Arc<ValidConfig>,
    pub(crate) metrics: AcceptMetrics,
    /// The destinations' lag flags (the broker's deliveries, behind [`LagFlags`]).
    pub(crate) lag: Arc<dyn LagFlags>,
    /// The log every accepted batch is appended to.
    pub(crate) wal: Arc<Wal>,
    tenants: Vec<Tenant>,
    topics: HashMap<String, usize>,
    /// `[tenant][topic]` -> destinations that receive that data.
    routes: Vec<Vec<Vec<DestinationId>>>,
    idempotency: IdempotencyCache,
    disk: DiskState,
    counters: IngestCounters,
    /// Bytes that request bodies in flight may hold (see [`crate::memory`]).
    memory: MemoryBudget,
}

impl Intake {
    /// Tenants, topics and routes from the configuration; the idempotency
    /// window rebuilt from the WAL.
    pub fn open(cfg: Arc<ValidConfig>, wal: Arc<Wal>, metrics: AcceptMetrics, lag: Arc<dyn LagFlags>) -> Intake {
        let tenants: Vec<Tenant> = cfg
            .tenants
            .iter()
            .zip(&cfg.priorities)
            .map(|(t, &priority)| {
                let soft = Limits { rate_per_sec: t.rate_per_sec, burst: t.burst as f64 };
                let hard =
                    t.hard_rate_per_sec.zip(t.hard_burst).map(|(r, b)| Limits { rate_per_sec: r, burst: b as f64 });
                Tenant {
                    name: t.name.clone(),
                    priority,
                    shard: shard_of(&t.name, cfg.shards),
                    limiter: TenantLimiter::new(soft, hard),
                }
            })
            .collect();
        let topics: HashMap<String, usize> = cfg.topics.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        let routes =
            tenants.iter().map(|t| cfg.topics.iter().map(|topic| lag.routes(&t.name, &topic.name)).collect()).collect();
        let window_ms = u64::try_from(cfg.timing.idempotency_window.as_millis()).unwrap_or(u64::MAX);
        let idempotency = IdempotencyCache::new(window_ms, cfg.idempotency_max_keys_per_tenant);
        idempotency.rebuild(&wal, plumbing::clock::now_ms());
        let counters = IngestCounters::new(tenants.len(), topics.len());
        let memory = MemoryBudget::per_tenant(
            cfg.memory_budget_bytes,
            cfg.memory_budget_tenant_share,
            cfg.tenants.len(),
            cfg.largest_request_charge(),
        );
        Intake {
            cfg,
            metrics,
            lag,
            wal,
            tenants,
            topics,
            routes,
            idempotency,
            disk: DiskState::default(),
            counters,
            memory,
        }
    }

    /// The tenant at index `i` of the configuration's tenant table; panics
    /// on an index outside it (indices come from the token table).
    pub fn tenant(&self, i: usize) -> &Tenant {
        &self.tenants[i]
    }

    /// The topic's index, if it is configured.
    pub fn topic_index(&self, name: &str) -> Option<usize> {
        self.topics.get(name).copied()
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

    /// The ingest counters, resolved once per label set.
    pub fn counters(&self) -> &IngestCounters {
        &self.counters
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

/// Fraction of the filesystem holding `dir` that is in use.
fn disk_used_ratio(dir: &std::path::Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and a zeroed out-struct.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 || s.f_blocks == 0 {
        return None;
    }
    Some(1.0 - s.f_bavail as f64 / s.f_blocks as f64)
}
