//! Connections counted by who holds them, once their request head says so.
//!
//! Before its first head a connection is anonymous and held apart by the
//! listener (`plumbing::admission`). From its first request on, it takes a
//! **seat** in its role's pool: each tenant its own
//! (`max_connections_per_tenant`), the exporters one, admin and health
//! calls one, requests with no valid token one; tenants and tokenless
//! requests together leave a quarter of `max_connections` to the others,
//! and exporters leave a sixteenth to admin and health ([`SeatCaps::derive`]). A request whose role has no
//! free seat is answered `503 overloaded` (reason `connections_<role>`) and
//! its connection closed: one tenant's connections, however many, never
//! take another tenant's, an exporter's, or `/readyz`'s.
//!
//! `max_connections_per_peer` (off by default) bounds the connections of
//! one client address, whatever their roles. It is unsafe behind a proxy:
//! there every tenant is one peer.
//!
//! A keep-alive connection that changes role (rare) gives its seat back and
//! takes one in the new role. A seat is given back when the connection
//! closes.
//!
//! Invariant: each pool's count equals the seats held in it, and never
//! exceeds its cap.

use crate::error::BrokerError;
use config::TenantId;
use plumbing::reasons::Reason;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Who a connection's request is from, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatRole {
    Tenant(TenantId),
    Exporter,
    /// Admin calls, health checks, metrics.
    Control,
    /// No valid token.
    Anonymous,
}

/// The caps of each pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatCaps {
    pub per_tenant: usize,
    /// All tenants' and anonymous connections together.
    pub tenants_total: usize,
    pub exporters: usize,
    pub control: usize,
    pub anonymous: usize,
    /// 0: off.
    pub per_peer: usize,
}

impl SeatCaps {
    /// The pools of a broker with `max_connections` (N) in all. Tenants
    /// (and requests with no valid token, at most N/8 of them) hold at most
    /// N − N/4 together, so a quarter is always left for exporters, admin
    /// and health; one tenant at most `per_tenant` of that. Exporters hold
    /// at most N − N/16, so health and admin calls always find a seat.
    pub fn derive(max_connections: usize, per_tenant: usize, per_peer: usize) -> SeatCaps {
        let n = max_connections.max(1);
        let tenants_total = n.saturating_sub((n / 4).max(1)).max(1);
        SeatCaps {
            per_tenant: per_tenant.clamp(1, tenants_total),
            tenants_total,
            exporters: n.saturating_sub((n / 16).max(1)).max(1),
            control: n,
            anonymous: (n / 8).max(1),
            per_peer: per_peer.min(n),
        }
    }
}

/// Every pool's count.
pub struct Seats {
    caps: SeatCaps,
    /// Each tenant's seats, by id; a tenant holding none has no entry, so
    /// the map is bounded by the seats held, not by the tenants configured.
    tenants: Mutex<HashMap<TenantId, usize>>,
    tenants_total: AtomicUsize,
    exporters: AtomicUsize,
    control: AtomicUsize,
    anonymous: AtomicUsize,
    peers: Mutex<HashMap<IpAddr, usize>>,
}

impl Seats {
    pub fn new(caps: SeatCaps) -> Arc<Seats> {
        Arc::new(Seats {
            caps,
            tenants: Mutex::default(),
            tenants_total: AtomicUsize::new(0),
            exporters: AtomicUsize::new(0),
            control: AtomicUsize::new(0),
            anonymous: AtomicUsize::new(0),
            peers: Mutex::default(),
        })
    }

    /// The pool of a role other than a tenant's (see [`Seats::take_keyed`]).
    fn pool(&self, role: SeatRole) -> Option<(&AtomicUsize, usize, Reason)> {
        match role {
            SeatRole::Tenant(_) => None,
            SeatRole::Exporter => Some((&self.exporters, self.caps.exporters, Reason::ConnectionsExporter)),
            SeatRole::Control => Some((&self.control, self.caps.control, Reason::ConnectionsControl)),
            SeatRole::Anonymous => Some((&self.anonymous, self.caps.anonymous, Reason::ConnectionsAnonymous)),
        }
    }

    /// The shared pool a role also counts in: tenants' and anonymous.
    fn shared(&self, role: SeatRole) -> Option<&AtomicUsize> {
        matches!(role, SeatRole::Tenant(_) | SeatRole::Anonymous).then_some(&self.tenants_total)
    }

    fn take(&self, role: SeatRole) -> Result<(), BrokerError> {
        if let Some(total) = self.shared(role) {
            take_one(total, self.caps.tenants_total)
                .map_err(|()| refused(Reason::ConnectionsTenants, self.caps.tenants_total))?;
        }
        let own = match (role, self.pool(role)) {
            (SeatRole::Tenant(id), _) => take_keyed(&self.tenants, id, self.caps.per_tenant)
                .map_err(|()| refused(Reason::ConnectionsTenant, self.caps.per_tenant)),
            (_, Some((count, cap, reason))) => take_one(count, cap).map_err(|()| refused(reason, cap)),
            (_, None) => Ok(()),
        };
        if own.is_err() {
            if let Some(total) = self.shared(role) {
                give_one(total);
            }
        }
        own
    }

    fn give_back(&self, role: SeatRole) {
        if let SeatRole::Tenant(id) = role {
            give_keyed(&self.tenants, id);
        }
        if let Some((count, _, _)) = self.pool(role) {
            give_one(count);
        }
        if let Some(total) = self.shared(role) {
            give_one(total);
        }
    }

    fn take_peer(&self, peer: IpAddr) -> Result<(), BrokerError> {
        take_keyed(&self.peers, peer, self.caps.per_peer)
            .map_err(|()| refused(Reason::ConnectionsPeer, self.caps.per_peer))
    }

    fn give_back_peer(&self, peer: IpAddr) {
        give_keyed(&self.peers, peer);
    }
}

/// One seat of `key`'s pool in `counts`, if it holds fewer than `cap`.
fn take_keyed<K: std::hash::Hash + Eq>(counts: &Mutex<HashMap<K, usize>>, key: K, cap: usize) -> Result<(), ()> {
    let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
    let n = counts.entry(key).or_default();
    if *n >= cap {
        return Err(());
    }
    *n += 1;
    Ok(())
}

/// Give one of `key`'s seats back; a pool at 0 leaves the map.
fn give_keyed<K: std::hash::Hash + Eq>(counts: &Mutex<HashMap<K, usize>>, key: K) {
    let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = counts.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

fn take_one(count: &AtomicUsize, cap: usize) -> Result<(), ()> {
    count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1)).map(|_| ()).map_err(|_| ())
}

fn give_one(count: &AtomicUsize) {
    let _ = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
}

fn refused(reason: Reason, cap: usize) -> BrokerError {
    BrokerError::Overloaded { reason, cap }
}

/// One connection's seat: none until its first request.
pub struct Seat {
    seats: Arc<Seats>,
    peer: Option<IpAddr>,
    held: Mutex<SeatState>,
}

#[derive(Default)]
struct SeatState {
    role: Option<SeatRole>,
    peer_counted: bool,
    /// The request class and `Authorization` value `role` was found for:
    /// a keep-alive connection's next request with the same needs no lookup.
    class: u8,
    auth: Vec<u8>,
}

impl Seat {
    pub fn new(seats: Arc<Seats>, peer: Option<IpAddr>) -> Seat {
        Seat { seats, peer, held: Mutex::default() }
    }

    /// Sit this connection in the pool of the role `resolve` finds for a
    /// request of `class` (which paths: health or other) with `auth` (its
    /// `Authorization` value); the last role is kept without a lookup while
    /// both are the same.
    pub fn sit_for(&self, class: u8, auth: &[u8], resolve: impl FnOnce() -> SeatRole) -> Result<(), BrokerError> {
        {
            let st = self.held.lock().unwrap_or_else(|e| e.into_inner());
            if st.role.is_some() && st.class == class && st.auth == auth {
                return Ok(());
            }
        }
        let role = resolve();
        self.sit(role)?;
        let mut st = self.held.lock().unwrap_or_else(|e| e.into_inner());
        st.class = class;
        st.auth.clear();
        // A longer value is looked up every time rather than kept.
        if auth.len() <= 512 {
            st.auth.extend_from_slice(auth);
        } else {
            st.class = u8::MAX; // never matches a request's class
        }
        Ok(())
    }

    /// Sit this connection in `role`'s pool (a no-op when it sits there).
    pub fn sit(&self, role: SeatRole) -> Result<(), BrokerError> {
        let mut st = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(peer), false, true) = (self.peer, st.peer_counted, self.seats.caps.per_peer > 0) {
            self.seats.take_peer(peer)?;
            st.peer_counted = true;
        }
        if st.role == Some(role) {
            return Ok(());
        }
        self.seats.take(role)?;
        if let Some(old) = st.role.replace(role) {
            self.seats.give_back(old);
        }
        Ok(())
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let st = self.held.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(role) = st.role.take() {
            self.seats.give_back(role);
        }
        if let (Some(peer), true) = (self.peer, st.peer_counted) {
            self.seats.give_back_peer(peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id of the `n`th of three tenants.
    fn tenant(n: usize) -> TenantId {
        config::Ids::default().assign(["a", "b", "c"], []).expect("three ids").tenants[n]
    }

    #[test]
    fn a_tenant_fills_only_its_own_pool_and_seats_come_back_on_close() {
        let caps = SeatCaps { per_tenant: 2, tenants_total: 3, exporters: 1, control: 1, anonymous: 1, per_peer: 0 };
        let seats = Seats::new(caps);
        let a: Vec<Seat> = (0..2).map(|_| Seat::new(Arc::clone(&seats), None)).collect();
        for s in &a {
            s.sit(SeatRole::Tenant(tenant(0))).expect("within the tenant's cap");
        }
        let third = Seat::new(Arc::clone(&seats), None);
        assert!(matches!(
            third.sit(SeatRole::Tenant(tenant(0))),
            Err(BrokerError::Overloaded { reason: Reason::ConnectionsTenant, .. })
        ));
        third.sit(SeatRole::Tenant(tenant(1))).expect("another tenant's pool is untouched");
        Seat::new(Arc::clone(&seats), None).sit(SeatRole::Exporter).expect("exporters have their own");
        let fourth = Seat::new(Arc::clone(&seats), None);
        assert!(
            matches!(
                fourth.sit(SeatRole::Anonymous),
                Err(BrokerError::Overloaded { reason: Reason::ConnectionsTenants, .. })
            ),
            "tenants and anonymous together hold at most tenants_total"
        );
        a[0].sit(SeatRole::Tenant(tenant(0))).expect("the same role again takes no second seat");
        drop(a);
        Seat::new(Arc::clone(&seats), None).sit(SeatRole::Tenant(tenant(0))).expect("seats came back on close");
    }

    #[test]
    fn the_peer_cap_counts_connections_per_address_when_on() {
        let caps =
            SeatCaps { per_tenant: 10, tenants_total: 10, exporters: 10, control: 10, anonymous: 10, per_peer: 1 };
        let seats = Seats::new(caps);
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let one = Seat::new(Arc::clone(&seats), Some(ip));
        one.sit(SeatRole::Tenant(tenant(0))).expect("first");
        let two = Seat::new(Arc::clone(&seats), Some(ip));
        assert!(matches!(
            two.sit(SeatRole::Control),
            Err(BrokerError::Overloaded { reason: Reason::ConnectionsPeer, .. })
        ));
        drop(one);
        two.sit(SeatRole::Control).expect("after the first closed");
    }
}
