//! The broker assembled: its configuration, the WAL, and the two services
//! over them — [`Intake`] (who may ingest, into which lane, whether there
//! is room) and [`Deliveries`] (destinations: cursors, leases, breakers,
//! dead letters, retention's cursors). Each service keeps its state
//! private; the broker hands them out, and the HTTP edge calls them.

use crate::deliveries::Deliveries;
use crate::metrics::Metrics;
use crate::store::Store;
use api::intake::Intake;
use config::tokens::{Authenticator, Role};
use config::ValidConfig;
use std::path::PathBuf;
use std::sync::Arc;
use wal::{FileSystem, Wal, WalOptions};

/// One broker's services over one data directory: opened once recovery is
/// done, then shared (`Arc`) by the HTTP edge and the maintenance loop.
pub struct Broker {
    cfg: Arc<ValidConfig>,
    wal: Arc<Wal>,
    metrics: Arc<Metrics>,
    /// The token table in force; a reload that changes only tokens swaps
    /// it whole (`crate::reload`).
    auth: std::sync::RwLock<Arc<Authenticator>>,
    intake: Arc<Intake>,
    deliveries: Arc<Deliveries>,
    /// Lease, commit, heartbeat and admin bodies: never ingest's budget.
    control_memory: api::memory::MemoryBudget,
}

/// Every principal's tokens to its role: a tenant's and a destination's by
/// their index in the configuration.
fn token_table(t: &config::Tokens) -> Authenticator {
    let roles = t
        .admin
        .iter()
        .map(|s| (*s, Role::Admin))
        .chain(t.tenants.iter().enumerate().flat_map(|(i, specs)| specs.iter().map(move |s| (*s, Role::Tenant(i)))))
        .chain(
            t.destinations.iter().enumerate().flat_map(|(i, specs)| specs.iter().map(move |s| (*s, Role::Exporter(i)))),
        )
        .collect::<Vec<_>>();
    Authenticator::new(roles)
}

/// Why [`Broker::open`] failed; nothing is served from the data directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The WAL did not open or recover: an I/O error, or an on-disk format
    /// this build does not read (the server exits 2 for that, 1 otherwise).
    #[error("WAL: {0}")]
    Wal(#[from] wal::WalError),
    /// The metadata store (sled) did not open, or a destination's cursors
    /// and leases did not load from it (another process may hold its lock).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl Broker {
    fn wal_dir(data_dir: &std::path::Path) -> PathBuf {
        plumbing::datadir::wal_dir(data_dir)
    }

    /// Open the WAL (running recovery) and the store, and rebuild every
    /// destination's lease state and the idempotency window.
    pub fn open(cfg: ValidConfig, fs: Arc<dyn FileSystem>, metrics: Arc<Metrics>) -> Result<Broker, OpenError> {
        let cfg = Arc::new(cfg);
        let opts = WalOptions {
            shards: cfg.shards,
            segment_bytes: cfg.segment_bytes,
            max_frame_bytes: u32::try_from(cfg.max_inflated_bytes + (1 << 20)).unwrap_or(u32::MAX),
            preallocate: cfg.preallocate,
            group_commit_linger: cfg.timing.group_commit_linger,
            drive: wal::Drive::Thread,
        };
        let observer: Arc<dyn wal::CommitObserver> = metrics.clone();
        let wal = Arc::new(Wal::open(fs, &Self::wal_dir(&cfg.data_dir), opts, Some(observer))?);
        metrics.wal_quarantined_segments.set(wal.quarantined().len() as i64);
        let store = Store::open(&plumbing::datadir::meta_dir(&cfg.data_dir))?;
        let deliveries = Arc::new(Deliveries::open(Arc::clone(&cfg), Arc::clone(&wal), Arc::clone(&metrics), store)?);
        let lag: Arc<dyn api::LagFlags> = Arc::clone(&deliveries) as Arc<dyn api::LagFlags>;
        let intake = Arc::new(Intake::open(Arc::clone(&cfg), Arc::clone(&wal), metrics.accept(), lag));
        let auth = std::sync::RwLock::new(Arc::new(token_table(&cfg.tokens)));
        let control_memory = api::memory::MemoryBudget::new(api::memory::CONTROL_BUDGET_BYTES);
        Ok(Broker { auth, cfg, wal, metrics, intake, deliveries, control_memory })
    }

    pub(crate) fn cfg(&self) -> &ValidConfig {
        &self.cfg
    }

    /// The log every accepted batch is in; [`Wal::shutdown`] it after the
    /// last request is answered, so queued batches commit.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// The process's metrics.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The token table in force.
    pub(crate) fn auth(&self) -> Arc<Authenticator> {
        Arc::clone(&self.auth.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Put `tokens` in force. The caller has checked that the principals
    /// (the admin, the tenants and destinations, in order) are those this
    /// broker opened with, so every role's index still names the same one.
    pub(crate) fn set_tokens(&self, tokens: &config::Tokens) {
        debug_assert_eq!(tokens.tenants.len(), self.cfg.tenants.len(), "a reload keeps the tenants");
        debug_assert_eq!(tokens.destinations.len(), self.cfg.destinations.len(), "a reload keeps the destinations");
        let table = Arc::new(token_table(tokens));
        *self.auth.write().unwrap_or_else(std::sync::PoisonError::into_inner) = table;
    }

    pub(crate) fn intake(&self) -> &Arc<Intake> {
        &self.intake
    }

    /// The budget of control bodies (see [`api::memory`]).
    pub fn control_memory(&self) -> &api::memory::MemoryBudget {
        &self.control_memory
    }

    /// SIGTERM: stop the waits that would hold the drain (acquire long-polls).
    pub fn begin_shutdown(&self) {
        self.deliveries.begin_shutdown();
    }

    /// The maintenance loop's view of the services it keeps (see
    /// [`crate::maintenance`]): each through what it owns.
    pub(crate) fn maintenance(&self) -> crate::maintenance::Maintenance {
        crate::maintenance::Maintenance {
            deliveries: Arc::clone(&self.deliveries),
            intake: Arc::clone(&self.intake),
            wal: Arc::clone(&self.wal),
            metrics: Arc::clone(&self.metrics),
            interval: self.cfg.timing.maintenance_interval,
        }
    }

    pub(crate) fn deliveries(&self) -> &Arc<Deliveries> {
        &self.deliveries
    }
}
