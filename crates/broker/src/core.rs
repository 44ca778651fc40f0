//! The broker's assembled state: configuration resolved into tenants,
//! topics, routes and destinations, over an open WAL and metadata store.

use crate::auth::{Authenticator, Role};
use crate::config::{ConfigError, ValidConfig};
use crate::destination::Destination;
use crate::idempotency::IdempotencyCache;
use crate::limiter::{Limits, TenantLimiter};
use crate::metrics::Metrics;
use crate::store::Store;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wal::{FileSystem, Priority, Wal, WalOptions};

pub struct Tenant {
    pub name: String,
    pub priority: Priority,
    pub shard: u16,
    pub limiter: TenantLimiter,
}

/// Disk-level backpressure, refreshed by the maintenance loop.
#[derive(Default)]
pub struct DiskState {
    pub over_watermark: AtomicBool,
    pub over_quota: AtomicBool,
}

pub struct Broker {
    pub cfg: ValidConfig,
    pub wal: Wal,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub auth: Authenticator,
    pub tenants: Vec<Tenant>,
    pub topics: HashMap<String, usize>,
    pub dests: Vec<Destination>,
    /// `[tenant][topic]` -> destinations that receive that data.
    pub routes: Vec<Vec<Vec<usize>>>,
    pub idempotency: IdempotencyCache,
    pub disk: DiskState,
    pub ingest_counters: crate::metrics::IngestCounters,
    /// Bytes that request bodies in flight may hold (see [`crate::body`]).
    pub memory: crate::memory::MemoryBudget,
}

/// Stable shard of a tenant: crc32c of its name (not std's randomised hash).
pub fn shard_of(tenant: &str, shards: u16) -> u16 {
    (crc32c::crc32c(tenant.as_bytes()) % u32::from(shards.max(1))) as u16
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("WAL: {0}")]
    Wal(#[from] wal::WalError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl Broker {
    pub fn wal_dir(data_dir: &std::path::Path) -> PathBuf {
        plumbing::datadir::wal_dir(data_dir)
    }

    /// Open the WAL (running recovery) and the store, and rebuild every
    /// destination's lease state and the idempotency window.
    pub fn open(cfg: ValidConfig, fs: Arc<dyn FileSystem>, metrics: Arc<Metrics>) -> Result<Broker, OpenError> {
        let opts = WalOptions {
            shards: cfg.shards,
            segment_bytes: cfg.segment_bytes,
            max_frame_bytes: u32::try_from(cfg.max_inflated_bytes + (1 << 20)).unwrap_or(u32::MAX),
            preallocate: cfg.preallocate,
            group_commit_linger: cfg.timing.group_commit_linger,
            drive: wal::Drive::Thread,
        };
        let observer: Arc<dyn wal::CommitObserver> = metrics.clone();
        let wal = Wal::open(fs, &Self::wal_dir(&cfg.data_dir), opts, Some(observer))?;
        metrics.wal_quarantined_segments.set(wal.quarantined().len() as i64);
        let store = Store::open(&plumbing::datadir::meta_dir(&cfg.data_dir))?;

        let mut roles = vec![(cfg.tokens.admin, Role::Admin)];
        let mut tenants = Vec::new();
        for (i, t) in cfg.tenants.iter().enumerate() {
            roles.push((cfg.tokens.tenants[i], Role::Tenant(i)));
            let soft = Limits { rate_per_sec: t.rate_per_sec, burst: t.burst as f64 };
            let hard = t.hard_rate_per_sec.zip(t.hard_burst).map(|(r, b)| Limits { rate_per_sec: r, burst: b as f64 });
            tenants.push(Tenant {
                name: t.name.clone(),
                priority: cfg.priorities[i],
                shard: shard_of(&t.name, cfg.shards),
                limiter: TenantLimiter::new(soft, hard),
            });
        }
        let topics: HashMap<String, usize> = cfg.topics.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        let mut dests = Vec::new();
        for (i, d) in cfg.destinations.iter().enumerate() {
            roles.push((cfg.tokens.destinations[i], Role::Exporter(i)));
            let state = crate::settle::load_dest_state(&store, &wal, &d.name, i)?;
            let dest = Destination::new(i, d.clone(), cfg.destination_lease_ms(d), state);
            dest.dead_letters.store(store.count_dead_letters(&d.name), std::sync::atomic::Ordering::Relaxed);
            dests.push(dest);
        }
        let routes = tenants
            .iter()
            .map(|t| {
                cfg.topics
                    .iter()
                    .map(|topic| dests.iter().filter(|d| d.wants(&t.name, &topic.name)).map(|d| d.idx).collect())
                    .collect()
            })
            .collect();
        let window_ms = u64::try_from(cfg.timing.idempotency_window.as_millis()).unwrap_or(u64::MAX);
        let idempotency = IdempotencyCache::new(window_ms, cfg.idempotency_max_keys_per_tenant);
        idempotency.rebuild(&wal, plumbing::clock::now_ms());
        let ingest_counters = crate::metrics::IngestCounters::new(tenants.len(), topics.len());
        let memory = crate::memory::MemoryBudget::new(cfg.memory_budget_bytes);
        Ok(Broker {
            auth: Authenticator::new(roles),
            cfg,
            wal,
            store,
            metrics,
            tenants,
            topics,
            dests,
            routes,
            idempotency,
            disk: DiskState::default(),
            ingest_counters,
            memory,
        })
    }

    /// [`crate::settle::transact`] over this broker's store.
    pub(crate) fn transact<T>(
        &self,
        dest: &Destination,
        st: &mut crate::destination::DestState,
        f: impl FnOnce(
            &mut crate::destination::DestState,
            &mut crate::store::Changes,
        ) -> Result<T, crate::error::BrokerError>,
    ) -> Result<(T, Vec<u64>), crate::error::BrokerError> {
        crate::settle::transact(&self.store, dest, st, f)
    }

    pub fn dest_by_name(&self, name: &str) -> Option<&Destination> {
        self.dests.iter().find(|d| d.name == name)
    }

    /// Run `f` on the blocking pool: sled writes and WAL reads must not hold
    /// an async worker (and with it every connection that worker serves).
    pub(crate) async fn off_worker<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Broker) -> Result<T, crate::error::BrokerError> + Send + 'static,
    ) -> Result<T, crate::error::BrokerError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| crate::error::BrokerError::Internal(format!("a blocking task ended abnormally: {e}")))?
    }
}
