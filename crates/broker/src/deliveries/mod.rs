//! The deliveries service: every destination's cursors, leases, breaker
//! and dead letters, held in memory and mirrored in sled.
//!
//! Owns the destinations and the metadata store; nothing outside this
//! module changes either. Its parts:
//! - [`leases`]: the lease protocol (acquire, heartbeat, commit, fail);
//! - [`admin`]: the operator's actions (pause, breaker reset, rewind,
//!   dead letters and their re-drive) and the status views;
//! - [`upkeep`]: what each maintenance pass does for the destinations;
//! - [`settle`]: the one transaction every change goes through, and the
//!   one way a lease ends;
//! - [`joint`]: joint leases (several lanes' short runs in one lease) and
//!   the place kept for short runs;
//! - `read`: a lease's WAL read; `prefetch`: that read made before the
//!   destination's lock; `named`: the records a commit names as dead
//!   letters; [`pending`]: what each destination has pending, per lane
//!   and tenant (its lag, backpressure and retention count only that).
//!
//! Invariants: sled holds exactly the live leases; a cursor is flushed
//! before its commit is answered; a refused call changes nothing (every
//! change is computed on a copy, see [`settle::transact`]).
//!
//! Never: do blocking file or sled work on an async worker (see
//! [`Deliveries::off_worker`]); hold a destination's lock across an await.

pub mod admin;
mod from_lanes;
pub mod joint;
pub mod lag_flags;
pub mod leases;
mod named;
mod order;
pub mod pending;
mod prefetch;
mod read;
pub(crate) mod settle;
pub mod upkeep;

use crate::destination::{DestState, Destination};
use crate::error::BrokerError;
use crate::metrics::Metrics;
use crate::store::{Changes, Store};
use config::{DestinationId, ValidConfig};
use std::sync::{Arc, RwLock};
use wal::Wal;

/// The destinations in force, in the configuration's order.
pub type Destinations = Arc<[Arc<Destination>]>;

pub struct Deliveries {
    cfg: Arc<ValidConfig>,
    wal: Arc<Wal>,
    metrics: Arc<Metrics>,
    store: Store,
    /// Swapped whole by a reload that adds or removes destinations
    /// ([`Deliveries::reconcile`]); a call holds the one it looked up.
    dests: RwLock<Destinations>,
    /// The tenants with metric series of their own (`metrics_max_tenant_series`):
    /// set by the broker at open and at each reload.
    tenant_series: RwLock<Arc<std::collections::HashSet<Arc<str>>>>,
    /// Each tenant's `weight` (`crate::fair`): set at open and at each reload.
    tenant_weights: RwLock<Arc<std::collections::HashMap<String, f64>>>,
    /// Begun on SIGTERM: the acquire long-poll waits on it too, so it
    /// answers idle at once instead of holding the stop's drain.
    shutdown: crate::shutdown::Shutdown,
}

impl Deliveries {
    /// Rebuild every destination's state from sled and the WAL; `ids` are
    /// the destinations' ids, in the configuration's order.
    pub fn open(
        cfg: Arc<ValidConfig>,
        ids: &[DestinationId],
        wal: Arc<Wal>,
        metrics: Arc<Metrics>,
        store: Store,
    ) -> Result<Deliveries, crate::store::StoreError> {
        assert_eq!(ids.len(), cfg.destinations.len(), "one id per configured destination");
        let mut dests = Vec::new();
        for (d, &id) in cfg.destinations.iter().zip(ids) {
            dests.push(Arc::new(load_destination(&store, &wal, &cfg, d, id)?));
        }
        let dests = RwLock::new(dests.into());
        let tenant_series = RwLock::default();
        let weights = cfg.tenants.iter().map(|t| (t.name.clone(), t.weight)).collect();
        let tenant_weights = RwLock::new(Arc::new(weights));
        Ok(Deliveries {
            cfg,
            wal,
            metrics,
            store,
            dests,
            tenant_series,
            tenant_weights,
            shutdown: crate::shutdown::Shutdown::default(),
        })
    }

    /// Put the destinations of `cfg` (ids `ids`, in its order) in force: one
    /// already in force is kept as it is (its leases, lag and breaker), a
    /// new one is loaded from sled or starts at its `start_at`, one no
    /// longer configured is dropped. The caller has checked that no kept
    /// destination's settings changed and no dropped one has pending data
    /// ([`Deliveries::removable`]).
    pub fn reconcile(&self, cfg: &ValidConfig, ids: &[DestinationId]) -> Result<(), crate::store::StoreError> {
        let before = self.dests();
        let mut next = Vec::with_capacity(ids.len());
        for (d, &id) in cfg.destinations.iter().zip(ids) {
            match before.iter().find(|kept| kept.id == id) {
                Some(kept) => next.push(Arc::clone(kept)),
                None => next.push(Arc::new(load_destination(&self.store, &self.wal, cfg, d, id)?)),
            }
        }
        *self.dests.write().unwrap_or_else(std::sync::PoisonError::into_inner) = next.into();
        Ok(())
    }

    /// `Err` with the records and bytes it has not committed when `dest`
    /// may not be removed by a reload: it has records pending (counted
    /// afresh, not as of the last maintenance pass) or leases out.
    /// Fails closed: a lane whose account could not be brought up to date
    /// counts as pending.
    pub fn removable(&self, dest: &Destination) -> Result<(), (u64, u64)> {
        let lag = self.lag_of(dest, plumbing::clock::now_ms());
        let leased = !dest.state().leases.is_empty();
        if lag.records > 0 || leased || lag.unsynced {
            return Err((lag.records, lag.bytes));
        }
        Ok(())
    }

    /// The broker is stopping: waiting acquires answer idle now (see
    /// [`crate::shutdown`]).
    pub fn begin_shutdown(&self) {
        self.shutdown.begin();
    }

    /// Put in force the names of the tenants with series of their own.
    pub fn set_tenant_series(&self, names: impl IntoIterator<Item = Arc<str>>) {
        let set = Arc::new(names.into_iter().collect());
        *self.tenant_series.write().unwrap_or_else(std::sync::PoisonError::into_inner) = set;
    }

    /// Put in force each tenant's weight (a reload may change them).
    pub fn set_tenant_weights(&self, cfg: &ValidConfig) {
        let weights = cfg.tenants.iter().map(|t| (t.name.clone(), t.weight)).collect();
        *self.tenant_weights.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(weights);
    }

    /// Each tenant's weight (1.0 for one the configuration no longer names).
    pub(crate) fn tenant_weights(&self) -> Arc<std::collections::HashMap<String, f64>> {
        Arc::clone(&self.tenant_weights.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The tenants with series of their own.
    pub(crate) fn tenant_series(&self) -> Arc<std::collections::HashSet<Arc<str>>> {
        Arc::clone(&self.tenant_series.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The destinations in force, in configuration order.
    pub fn dests(&self) -> Destinations {
        Arc::clone(&self.dests.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub fn dest_by_name(&self, name: &str) -> Option<Arc<Destination>> {
        self.dests().iter().find(|d| d.name == name).cloned()
    }

    /// The destination `id` names, if it is in force.
    pub fn dest_by_id(&self, id: DestinationId) -> Option<Arc<Destination>> {
        self.dests().iter().find(|d| d.id == id).cloned()
    }

    pub fn dest(&self, name: &str) -> Result<Arc<Destination>, BrokerError> {
        self.dest_by_name(name).ok_or_else(|| BrokerError::UnknownDestination { name: name.to_string() })
    }

    /// The metadata store (for a stop's final flush, and the tests).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// [`settle::transact`] over this service's store.
    pub(crate) fn transact<T>(
        &self,
        dest: &Destination,
        st: &mut DestState,
        f: impl FnOnce(&mut DestState, &mut Changes) -> Result<T, BrokerError>,
    ) -> Result<(T, Vec<u64>), BrokerError> {
        settle::transact(&self.store, dest, st, f)
    }

    /// Run `f` on the blocking pool: sled writes and WAL reads must not hold
    /// an async worker (and with it every connection that worker serves).
    pub(crate) async fn off_worker<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Deliveries) -> Result<T, BrokerError> + Send + 'static,
    ) -> Result<T, BrokerError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&me)).await.map_err(BrokerError::TaskFailed)?
    }
}

/// One destination's state rebuilt from sled and the WAL.
/// What a destination receives, canonically: its topics, then its tenants
/// (`*` for all), each sorted.
fn routes_of(d: &config::DestinationConfig) -> String {
    let mut topics = d.topics.clone();
    topics.sort();
    let tenants = d.tenants.as_ref().map_or_else(
        || "*".to_string(),
        |t| {
            let mut t = t.clone();
            t.sort();
            t.join("\u{0}")
        },
    );
    format!("{}\u{1}{tenants}", topics.join("\u{0}"))
}

fn load_destination(
    store: &Store,
    wal: &Wal,
    cfg: &ValidConfig,
    d: &config::DestinationConfig,
    id: DestinationId,
) -> Result<Destination, crate::store::StoreError> {
    let state = settle::load_dest_state(store, wal, (&d.name, id), d.start_at, &routes_of(d))?;
    let dest = Destination::new(id, d.clone(), cfg.destination_lease_ms(d), state);
    dest.dead_letters.store(store.count_dead_letters(&d.name), std::sync::atomic::Ordering::Relaxed);
    Ok(dest)
}
