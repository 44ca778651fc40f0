//! The broker assembled: its configuration, the WAL, and the two services
//! over them — [`Intake`] (who may ingest, into which lane, whether there
//! is room) and [`Deliveries`] (destinations: cursors, leases, breakers,
//! dead letters, retention's cursors). Each service keeps its state
//! private; the broker hands them out, and the HTTP edge calls them.

use crate::deliveries::Deliveries;
use crate::metrics::Metrics;
use crate::store::Store;
use api::intake::Intake;
use config::ids::IdsExhausted;
use config::tokens::{Authenticator, Role};
use config::{Assigned, Ids, ValidConfig};
use std::path::PathBuf;
use std::sync::Arc;
use wal::{FileSystem, Wal, WalOptions};

/// One broker's services over one data directory: opened once recovery is
/// done, then shared (`Arc`) by the HTTP edge and the maintenance loop.
pub struct Broker {
    /// The configuration in force: the one the broker started with, or
    /// the last a reload put in force (which changed no key that needs a
    /// restart, so the services' own copies still hold for those).
    cfg: std::sync::RwLock<Arc<ValidConfig>>,
    /// Tenants' and destinations' ids, by name, for the process's life.
    ids: std::sync::Mutex<config::Ids>,
    wal: Arc<Wal>,
    metrics: Arc<Metrics>,
    /// The token table in force; a reload swaps it whole (`crate::reload`).
    auth: std::sync::RwLock<Arc<Authenticator>>,
    intake: Arc<Intake>,
    deliveries: Arc<Deliveries>,
    /// Lease, commit, heartbeat and admin bodies: never ingest's budget.
    control_memory: api::memory::MemoryBudget,
}

/// Every principal's tokens to its role: a tenant's and a destination's by
/// their ids (`ids`, parallel to the configuration's tables).
fn token_table(t: &config::Tokens, ids: &Assigned) -> Authenticator {
    assert_eq!(t.tenants.len(), ids.tenants.len(), "one id per tenant");
    assert_eq!(t.destinations.len(), ids.destinations.len(), "one id per destination");
    let tenants =
        t.tenants.iter().zip(&ids.tenants).flat_map(|(specs, &id)| specs.iter().map(move |s| (*s, Role::Tenant(id))));
    let exporters = t
        .destinations
        .iter()
        .zip(&ids.destinations)
        .flat_map(|(specs, &id)| specs.iter().map(move |s| (*s, Role::Exporter(id))));
    Authenticator::new(t.admin.iter().map(|s| (*s, Role::Admin)).chain(tenants).chain(exporters))
}

/// The names of `cfg`'s tenants with metric series of their own: those
/// whose id is under `metrics_max_tenant_series` (the first the broker saw).
fn own_series(cfg: &ValidConfig, ids: &Assigned) -> Vec<Arc<str>> {
    let cap = cfg.metrics_max_tenant_series;
    cfg.tenants
        .iter()
        .zip(&ids.tenants)
        .filter(|(_, id)| id.index() < cap)
        .map(|(t, _)| Arc::from(t.name.as_str()))
        .collect()
}

/// The ids of `cfg`'s tenants and destinations in `ids`.
fn assign(ids: &mut Ids, cfg: &ValidConfig) -> Result<Assigned, IdsExhausted> {
    ids.assign(cfg.tenants.iter().map(|t| t.name.as_str()), cfg.destinations.iter().map(|d| d.name.as_str()))
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
    /// More tenant and destination names than one process gives ids to
    /// (`config::ids::MAX_IDS`); never at start, where the file bounds them.
    #[error(transparent)]
    Ids(#[from] IdsExhausted),
}

/// Why a reload's configuration could not be put in force.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    /// Too many names over the process's life: restart to start afresh.
    #[error(transparent)]
    Ids(#[from] IdsExhausted),
    /// A new destination's state did not load from sled (or its first
    /// cursors were not written); the destinations in force stay.
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
        let mut ids = Ids::default();
        let assigned = assign(&mut ids, &cfg)?;
        let deliveries = Arc::new(Deliveries::open(
            Arc::clone(&cfg),
            &assigned.destinations,
            Arc::clone(&wal),
            Arc::clone(&metrics),
            store,
        )?);
        deliveries.set_tenant_series(own_series(&cfg, &assigned));
        let lag: Arc<dyn api::LagFlags> = Arc::clone(&deliveries) as Arc<dyn api::LagFlags>;
        let intake =
            Arc::new(Intake::open(Arc::clone(&cfg), &assigned.tenants, Arc::clone(&wal), metrics.accept(), lag));
        let auth = std::sync::RwLock::new(Arc::new(token_table(&cfg.tokens, &assigned)));
        let control_memory = api::memory::MemoryBudget::new(api::memory::CONTROL_BUDGET_BYTES);
        let (cfg, ids) = (std::sync::RwLock::new(cfg), std::sync::Mutex::new(ids));
        Ok(Broker { auth, cfg, ids, wal, metrics, intake, deliveries, control_memory })
    }

    /// The configuration in force.
    pub(crate) fn cfg(&self) -> Arc<ValidConfig> {
        Arc::clone(&self.cfg.read().unwrap_or_else(std::sync::PoisonError::into_inner))
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

    /// Put `fresh`'s tenants, topics, destinations and tokens in force, in
    /// that order of dependence: destinations first (routes are built
    /// over them), then the tenants and topics, then the tokens — so a
    /// token never names a principal the services do not hold yet. The
    /// caller ([`crate::reload`]) has checked that `fresh` changes no key
    /// that needs a restart. On an error the tokens and tenants stay.
    pub(crate) fn apply(&self, fresh: ValidConfig) -> Result<(), ApplyError> {
        let mut ids = self.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let assigned = assign(&mut ids, &fresh)?;
        self.deliveries.reconcile(&fresh, &assigned.destinations)?;
        self.deliveries.set_tenant_series(own_series(&fresh, &assigned));
        self.deliveries.set_tenant_weights(&fresh);
        self.intake.reload(&fresh, &assigned.tenants);
        let table = Arc::new(token_table(&fresh.tokens, &assigned));
        *self.auth.write().unwrap_or_else(std::sync::PoisonError::into_inner) = table;
        let cap = fresh.metrics_max_tenant_series;
        let labels = fresh
            .tenants
            .iter()
            .zip(&assigned.tenants)
            .map(|(t, id)| crate::metrics::tenant_label(&t.name, id.index() < cap));
        self.metrics.init_series_labelled(fresh.file(), labels);
        *self.cfg.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
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
            interval: self.cfg().timing.maintenance_interval,
        }
    }

    pub(crate) fn deliveries(&self) -> &Arc<Deliveries> {
        &self.deliveries
    }
}
