//! A lane whose writer stops unexpectedly.
//!
//! The writer ([`crate::writer`]) is the only thread that commits a lane's
//! appends. Should it panic (a bug, a failed assertion, a panicking
//! dependency), its waiters must not hang or be told the log is shutting
//! down, and later appends must not queue for a writer that is gone.
//!
//! Design:
//! - The writer runs inside [`guarded`]: with the thread drive, its whole
//!   loop; with the manual drive, each round the caller runs. A panic is
//!   caught at that boundary and the lane is *stopped*
//!   ([`crate::shared::LaneShared::writer_stopped`]): what is queued is
//!   answered `WriterStopped` and taken out, later appends are refused at
//!   once (under the queue's lock, so none slips in after the drain),
//!   [`crate::Wal::failures`] lists the lane with the panic's message (the
//!   broker's `/readyz` says why, ingest answers 503 `wal_unavailable`).
//! - Every waiter holds the other end of a [`Reply`]. A reply dropped
//!   unanswered while its thread unwinds answers by itself: `WriterStopped`
//!   for an append, so the waiters of the round in flight hear why at once,
//!   whatever point of the round the panic hit. Before it answers, it marks
//!   the lane stopped ([`LaneShared::stopping`]), so an append made after
//!   any waiter heard is refused at once, not queued for the drain.
//!   (Dropped unanswered without a panic, which the writer never does, it
//!   answers `ShuttingDown`.)
//! - A release asked of a stopped lane answers `Ok(0)`: not deleting a
//!   segment is always safe, and retention goes on with the other lanes.
//!   The stopped lane's segments stay until the log is opened again.
//!
//! Invariants:
//! - Every reply is answered exactly once: sent, or answered by its drop.
//! - Nothing acknowledged is lost: an append is answered `Ok` only after
//!   its sync returned, and a stopped lane never writes again; opening the
//!   log again recovers it as after a crash.
//! - A stopped lane stays stopped until the log is opened again: no writer
//!   is left to reopen it.

use crate::error::{Result, StopReason, WalError};
use crate::lane_id::LaneId;
use crate::shared::{Appended, LaneShared};
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio::sync::oneshot;

/// What a waiter hears when its reply is dropped unanswered.
pub(crate) trait Unanswered: Sized {
    /// `panicking`: the reply was dropped by a thread unwinding a panic.
    fn unanswered(lane: LaneId, panicking: bool) -> Result<Self>;
}

impl Unanswered for Appended {
    fn unanswered(lane: LaneId, panicking: bool) -> Result<Self> {
        Err(if panicking {
            WalError::WriterStopped { lane, reason: StopReason::PanickedInRound }
        } else {
            WalError::ShuttingDown
        })
    }
}

/// A release's answer: how many segments went.
impl Unanswered for usize {
    fn unanswered(_lane: LaneId, panicking: bool) -> Result<Self> {
        if panicking {
            Ok(0)
        } else {
            Err(WalError::ShuttingDown)
        }
    }
}

enum Tx<T> {
    Async(oneshot::Sender<Result<T>>),
    Blocking(std::sync::mpsc::SyncSender<Result<T>>),
}

/// The writer's end of a waiter: answered exactly once, by [`Reply::send`]
/// or, failing that, by its drop.
pub(crate) struct Reply<T: Unanswered> {
    lane: Arc<LaneShared>,
    tx: Option<Tx<T>>,
}

impl<T: Unanswered> Reply<T> {
    /// A reply an async waiter awaits.
    pub fn pair(lane: &Arc<LaneShared>) -> (Reply<T>, oneshot::Receiver<Result<T>>) {
        let (tx, rx) = oneshot::channel();
        (Reply { lane: Arc::clone(lane), tx: Some(Tx::Async(tx)) }, rx)
    }

    /// A reply a blocking waiter receives.
    pub fn blocking(lane: &Arc<LaneShared>) -> (Reply<T>, std::sync::mpsc::Receiver<Result<T>>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        (Reply { lane: Arc::clone(lane), tx: Some(Tx::Blocking(tx)) }, rx)
    }

    /// Answer the waiter (who may have stopped waiting: that is fine).
    pub fn send(mut self, result: Result<T>) {
        deliver(self.tx.take(), result);
    }
}

fn deliver<T>(tx: Option<Tx<T>>, result: Result<T>) {
    match tx {
        Some(Tx::Async(tx)) => drop(tx.send(result)),
        Some(Tx::Blocking(tx)) => drop(tx.send(result)),
        None => {}
    }
}

impl<T: Unanswered> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let panicking = std::thread::panicking();
            if panicking {
                self.lane.stopping();
            }
            deliver(Some(tx), T::unanswered(self.lane.id(), panicking));
        }
    }
}

/// Run `f` (the writer's loop, or one round of it); if it panics, stop the
/// lane. Returns whether it panicked.
pub(crate) fn guarded(shared: &LaneShared, body: impl FnOnce()) -> bool {
    match std::panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(()) => false,
        Err(payload) => {
            shared.writer_stopped(panic_message(&*payload));
            true
        }
    }
}

/// The message a panic was raised with, if it has one: text the panicking
/// code wrote, kept as text ([`StopReason::Panicked`]).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
