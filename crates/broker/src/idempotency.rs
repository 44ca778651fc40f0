//! Idempotency keys: a retry with the same (tenant, key) inside the window
//! gets the first answer and appends nothing.
//!
//! The key travels inside the WAL frame, so after a restart the window is
//! rebuilt by reading the frames written within it: a retry that crosses a
//! broker restart is still recognised. A retry that arrives while the first
//! request is still committing waits for its outcome instead of appending.

use crate::accepted::Accepted;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::watch;

enum Slot {
    /// The first request is committing; its outcome is sent here (None: failed).
    InFlight(watch::Receiver<Option<Accepted>>),
    Done {
        response: Accepted,
        expires_at_ms: u64,
    },
}

pub struct IdempotencyCache {
    window_ms: u64,
    /// Keys one tenant may hold at once (in flight or remembered): the
    /// map's memory is bounded per tenant, not only by the window.
    max_per_tenant: usize,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    map: HashMap<(String, String), Slot>,
    per_tenant: HashMap<String, usize>,
}

impl Slots {
    fn get(&self, k: &(String, String)) -> Option<&Slot> {
        self.map.get(k)
    }

    fn insert(&mut self, k: (String, String), slot: Slot) {
        let tenant = k.0.clone();
        if self.map.insert(k, slot).is_none() {
            *self.per_tenant.entry(tenant).or_default() += 1;
        }
    }

    fn remove(&mut self, k: &(String, String)) {
        if self.map.remove(k).is_some() {
            self.forget_one(&k.0);
        }
    }

    fn forget_one(&mut self, tenant: &str) {
        if let Some(n) = self.per_tenant.get_mut(tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_tenant.remove(tenant);
            }
        }
    }

    fn held_by(&self, tenant: &str) -> usize {
        self.per_tenant.get(tenant).copied().unwrap_or(0)
    }
}

/// What the caller should do with a keyed request.
pub enum Claim {
    /// First sighting: append, then settle the ticket.
    Fresh(Ticket),
    /// Already answered: return this.
    Replay(Accepted),
    /// The tenant holds as many keys as it may: refuse (nothing appended).
    Full { max: usize },
}

/// Held while the first request with a key commits; settles the slot.
pub struct Ticket {
    key: (String, String),
    tx: watch::Sender<Option<Accepted>>,
    settled: bool,
}

impl IdempotencyCache {
    pub fn new(window_ms: u64, max_per_tenant: usize) -> Self {
        IdempotencyCache { window_ms, max_per_tenant, slots: Mutex::new(Slots::default()) }
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claim (tenant, key): either we are first, or here is the first answer.
    pub async fn claim(&self, tenant: &str, key: &str, now_ms: u64) -> Claim {
        let k = (tenant.to_string(), key.to_string());
        loop {
            let mut rx = {
                let mut slots = self.slots();
                match slots.get(&k) {
                    Some(Slot::Done { response, expires_at_ms }) if *expires_at_ms > now_ms => {
                        return Claim::Replay(*response);
                    }
                    Some(Slot::InFlight(rx)) => rx.clone(),
                    existing => {
                        if existing.is_none() && slots.held_by(tenant) >= self.max_per_tenant {
                            return Claim::Full { max: self.max_per_tenant };
                        }
                        let (tx, rx) = watch::channel(None);
                        slots.insert(k.clone(), Slot::InFlight(rx));
                        return Claim::Fresh(Ticket { key: k, tx, settled: false });
                    }
                }
            };
            // Wait for the first request's outcome; a failure frees the key.
            let _ = rx.changed().await;
            if let Some(resp) = *rx.borrow() {
                return Claim::Replay(resp);
            }
            let mut slots = self.slots();
            if matches!(slots.get(&k), Some(Slot::InFlight(r)) if r.same_channel(&rx)) {
                slots.remove(&k);
            }
        }
    }

    /// Record the durable answer for a ticket.
    pub fn settle(&self, mut ticket: Ticket, response: Accepted, now_ms: u64) {
        ticket.settled = true;
        self.slots().insert(ticket.key.clone(), Slot::Done { response, expires_at_ms: now_ms + self.window_ms });
        let _ = ticket.tx.send(Some(response));
    }

    /// Release a ticket whose request was not acknowledged.
    pub fn abandon(&self, ticket: Ticket) {
        let mut slots = self.slots();
        if matches!(slots.get(&ticket.key), Some(Slot::InFlight(_))) {
            slots.remove(&ticket.key);
        }
        drop(slots);
        drop(ticket);
    }

    /// Forget keys older than the window.
    pub fn expire(&self, now_ms: u64) {
        let mut slots = self.slots();
        let gone: Vec<(String, String)> = slots
            .map
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Done { expires_at_ms, .. } if *expires_at_ms <= now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            slots.remove(&k);
        }
    }

    /// Rebuild from frames written inside the window.
    pub fn rebuild(&self, wal: &wal::Wal, now_ms: u64) {
        let since = now_ms.saturating_sub(self.window_ms);
        let mut slots = self.slots();
        for lane in wal.lanes() {
            let from = lane.segments().iter().find(|s| s.last_ts_ms >= since).map(|s| s.base_offset);
            let Some(from) = from else { continue };
            let res = lane.visit_frames(from, |f| {
                if let (Some(key), true) = (f.idempotency_key, f.header.ts_ms >= since) {
                    let response = Accepted {
                        records: u64::from(f.header.records),
                        lane: lane.id(),
                        first_offset: f.header.base_offset,
                    };
                    slots.insert(
                        (f.tenant.to_string(), key.to_string()),
                        Slot::Done { response, expires_at_ms: f.header.ts_ms + self.window_ms },
                    );
                }
                ControlFlow::Continue(())
            });
            if let Err(e) = res {
                tracing::warn!(lane = %lane.id(), error = %e, "idempotency rebuild stopped early on this lane");
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            // The request failed or was cancelled: waiters retry as fresh.
            let _ = self.tx.send(None);
        }
    }
}
