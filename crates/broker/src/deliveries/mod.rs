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
use config::ValidConfig;
use std::sync::Arc;
use wal::Wal;

pub struct Deliveries {
    cfg: Arc<ValidConfig>,
    wal: Arc<Wal>,
    metrics: Arc<Metrics>,
    store: Store,
    dests: Vec<Destination>,
    /// Begun on SIGTERM: the acquire long-poll waits on it too, so it
    /// answers idle at once instead of holding the stop's drain.
    shutdown: crate::shutdown::Shutdown,
}

impl Deliveries {
    /// Rebuild every destination's state from sled and the WAL.
    pub fn open(
        cfg: Arc<ValidConfig>,
        wal: Arc<Wal>,
        metrics: Arc<Metrics>,
        store: Store,
    ) -> Result<Deliveries, crate::store::StoreError> {
        let mut dests = Vec::new();
        for (i, d) in cfg.destinations.iter().enumerate() {
            let state = settle::load_dest_state(&store, &wal, &d.name, i)?;
            let dest = Destination::new(i, d.clone(), cfg.destination_lease_ms(d), state);
            dest.dead_letters.store(store.count_dead_letters(&d.name), std::sync::atomic::Ordering::Relaxed);
            dests.push(dest);
        }
        Ok(Deliveries { cfg, wal, metrics, store, dests, shutdown: crate::shutdown::Shutdown::default() })
    }

    /// The broker is stopping: waiting acquires answer idle now (see
    /// [`crate::shutdown`]).
    pub fn begin_shutdown(&self) {
        self.shutdown.begin();
    }

    /// The destinations, in configuration order.
    pub fn dests(&self) -> &[Destination] {
        &self.dests
    }

    pub fn dest_by_name(&self, name: &str) -> Option<&Destination> {
        self.dests.iter().find(|d| d.name == name)
    }

    pub fn dest(&self, name: &str) -> Result<&Destination, BrokerError> {
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
