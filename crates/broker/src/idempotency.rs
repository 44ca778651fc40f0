//! Idempotency keys: a retry with the same (tenant, key) inside the window
//! gets the first answer and appends nothing.
//!
//! The key travels inside the WAL frame, so after a restart the window is
//! rebuilt by reading the frames written within it: a retry that crosses a
//! broker restart is still recognised. A retry that arrives while the first
//! request is still committing waits for its outcome instead of appending.

use crate::ingest::Accepted;
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
    slots: Mutex<HashMap<(String, String), Slot>>,
}

/// What the caller should do with a keyed request.
pub enum Claim {
    /// First sighting: append, then settle the ticket.
    Fresh(Ticket),
    /// Already answered: return this.
    Replay(Accepted),
}

/// Held while the first request with a key commits; settles the slot.
pub struct Ticket {
    key: (String, String),
    tx: watch::Sender<Option<Accepted>>,
    settled: bool,
}

impl IdempotencyCache {
    pub fn new(window_ms: u64) -> Self {
        IdempotencyCache { window_ms, slots: Mutex::new(HashMap::new()) }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<(String, String), Slot>> {
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
                    _ => {
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
        self.slots().retain(|_, s| !matches!(s, Slot::Done { expires_at_ms, .. } if *expires_at_ms <= now_ms));
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
