//! Connections that have not yet sent a whole request head: who they are
//! is not known, so they are held apart from everyone else's and bounded on
//! their own ([`PendingPool`]).
//!
//! Why: the connection cap was global. 64 idle TCP connections (no bytes
//! sent) to a broker with `max_connections = 64` locked out producers,
//! exporters and `/readyz` for the whole head timeout, renewably. Now:
//! - a new connection must send its first byte within `first_byte_timeout`
//!   and its whole first head within `first_head_timeout`, else it is
//!   closed (idle keep-alive connections, which have sent a request, keep
//!   the ordinary head timeout);
//! - at most `max_pending` connections wait for their first head at once;
//!   one more **evicts the oldest that has not sent a byte** (a real client
//!   sends its head as soon as it connects, so the one waiting longest is
//!   the likeliest to be idle) once it has been silent for
//!   [`MIN_EVICTABLE_AGE`], and is refused when none has;
//! - once its head is read, the server knows the connection's role and
//!   counts it there (the broker: per tenant, exporters, admin and health),
//!   releasing its place here ([`HeadSlot::release`]).
//!
//! Invariant: `pending` counts exactly the slots neither released nor
//! evicted, and never exceeds `cap`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The pool of connections waiting for their first request head.
pub(crate) struct PendingPool {
    cap: usize,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    next_id: u64,
    pending: usize,
    /// Slots that have not sent a byte yet, oldest first: the ones eviction takes.
    silent: BTreeMap<u64, Arc<SlotShared>>,
}

struct SlotShared {
    done: AtomicBool,
    evicted: Notify,
    born: Instant,
}

/// A silent connection younger than this is not evicted: a real client
/// sends its head within microseconds of connecting, and a burst of new
/// connections must not push out one that is about to speak.
pub(crate) const MIN_EVICTABLE_AGE: Duration = Duration::from_millis(50);

/// One pending connection's place; given back when its head is read
/// ([`HeadSlot::release`]), when it is evicted, or when it is dropped.
pub(crate) struct HeadSlot {
    pool: Arc<PendingPool>,
    id: u64,
    shared: Arc<SlotShared>,
}

impl PendingPool {
    /// A pool of at most `cap` pending connections (at least one).
    pub(crate) fn new(cap: usize) -> Arc<PendingPool> {
        Arc::new(PendingPool { cap: cap.max(1), state: Mutex::default() })
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection, evicting the oldest silent one if
    /// the pool is full; `None` when it is full of connections mid-head.
    /// The second value says whether a connection was evicted.
    pub(crate) fn admit(self: &Arc<Self>) -> (Option<HeadSlot>, bool) {
        let mut st = self.state();
        let mut evicted = false;
        if st.pending >= self.cap {
            let old_enough = st.silent.first_key_value().is_some_and(|(_, s)| s.born.elapsed() >= MIN_EVICTABLE_AGE);
            let Some((_, oldest)) = (if old_enough { st.silent.pop_first() } else { None }) else {
                return (None, false);
            };
            if !oldest.done.swap(true, Ordering::AcqRel) {
                st.pending -= 1;
            }
            oldest.evicted.notify_one();
            evicted = true;
        }
        st.next_id += 1;
        st.pending += 1;
        let id = st.next_id;
        let shared =
            Arc::new(SlotShared { done: AtomicBool::new(false), evicted: Notify::new(), born: Instant::now() });
        st.silent.insert(id, Arc::clone(&shared));
        debug_assert!(st.pending <= self.cap, "pending connections over the cap");
        (Some(HeadSlot { pool: Arc::clone(self), id, shared }), evicted)
    }

    /// Connections now waiting for their first head (the tests' view of
    /// the invariant; the listener needs no count).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.state().pending
    }
}

impl HeadSlot {
    /// The connection sent its first byte: it is no longer evicted for
    /// being silent (its head deadline still holds).
    pub(crate) fn spoke(&self) {
        self.pool.state().silent.remove(&self.id);
    }

    /// Resolves when the pool evicted this connection for a newer one.
    pub(crate) async fn evicted(&self) {
        self.shared.evicted.notified().await;
    }

    /// The connection's first head was read: its place goes back.
    /// Idempotent.
    pub(crate) fn release(&self) {
        let mut st = self.pool.state();
        st.silent.remove(&self.id);
        if !self.shared.done.swap(true, Ordering::AcqRel) {
            st.pending -= 1;
        }
    }

    /// Whether the first head was read (or the slot given back otherwise).
    pub(crate) fn is_released(&self) -> bool {
        self.shared.done.load(Ordering::Acquire)
    }
}

impl Drop for HeadSlot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pool_evicts_its_oldest_silent_connection_and_never_one_mid_head() {
        let pool = PendingPool::new(2);
        let (a, _) = pool.admit();
        let a = a.expect("room");
        let (b, _) = pool.admit();
        let b = b.expect("room");
        a.spoke();
        assert!(pool.admit().0.is_none(), "b is too young to be evicted: refused");
        std::thread::sleep(MIN_EVICTABLE_AGE);
        let (c, evicted) = pool.admit();
        let c = c.expect("b, silent, made room");
        assert!(evicted && b.is_released() && !a.is_released());
        assert_eq!(pool.pending(), 2);
        c.spoke();
        assert!(pool.admit().0.is_none(), "every pending connection is mid-head: refused");
        a.release();
        assert_eq!(pool.pending(), 1);
        drop(c);
        assert_eq!(pool.pending(), 0, "a dropped slot goes back once");
        drop(b);
        drop(a);
        assert_eq!(pool.pending(), 0);
    }

    #[tokio::test]
    async fn an_evicted_slot_is_told() {
        let pool = PendingPool::new(1);
        let first = pool.admit().0.expect("room");
        let waiter = tokio::spawn(async move {
            first.evicted().await;
            first.is_released()
        });
        tokio::time::sleep(MIN_EVICTABLE_AGE).await;
        let (_second, evicted) = pool.admit();
        assert!(evicted);
        assert!(tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.expect("told").expect("task"));
    }
}
