//! The broker's "stopping" signal, for the waits a graceful stop must not
//! sit out: an acquire long-poll (up to `max_long_poll_ms`) would otherwise
//! hold the listener's drain until `shutdown_drain_ms` and then be cut
//! without an answer. On SIGTERM the server begins the shutdown; a wait
//! selects on [`Shutdown::notified`] and answers at once.
//!
//! Race-free by construction: a waiter creates its [`Notified`] before it
//! checks [`Shutdown::has_begun`], and `notify_waiters` wakes every
//! `Notified` created before it, polled yet or not.

use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Shutdown {
    begun: AtomicBool,
    notify: Notify,
}

impl Shutdown {
    /// Begin the stop: every wait registered now or later ends. Idempotent.
    pub fn begin(&self) {
        self.begun.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn has_begun(&self) -> bool {
        self.begun.load(Ordering::SeqCst)
    }

    /// Resolves at [`Shutdown::begin`]; create it before checking
    /// [`Shutdown::has_begun`].
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wait_registered_before_the_stop_ends_at_it() {
        let s = std::sync::Arc::new(Shutdown::default());
        let waiter = {
            let s = std::sync::Arc::clone(&s);
            tokio::spawn(async move {
                let n = s.notified();
                if !s.has_begun() {
                    n.await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.begin();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("joined");
        // After the stop, a new waiter does not wait: the flag says so.
        assert!(s.has_begun());
    }
}
