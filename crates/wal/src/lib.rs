//! # wal — Weir's write-ahead log
//!
//! Owns durable storage of record batches in **lanes**. A lane is one
//! (priority, shard) pair, named `normal/3`; it is an ordered sequence of
//! segment files (`<dir>/<priority>/<shard>/<base offset>.seg`) holding frames
//! with monotonically increasing record offsets. One producer request is one
//! frame: its records become durable together or not at all. Byte layouts are
//! in [`frame`] and [`segment`], and in `docs/wal.md`.
//!
//! ## Invariants
//! 1. An append resolves `Ok` only after `fdatasync` of every byte of its
//!    frame returned. There is no timer-driven sync and no ack before sync.
//! 2. One writer thread per lane; concurrent appends share one write and one
//!    sync per commit round (group commit). The durable watermark
//!    ([`Lane::next_offset`]) moves only after the sync.
//! 3. Readers see frames below the watermark only, and authenticate each
//!    frame (keyed MAC, see [`frame`]) as they serve it.
//! 4. New files and renames are followed by an fsync of their directory;
//!    segments are preallocated, and trimmed to their last frame when sealed
//!    (the trim and the summary are derived and not synced: recovery redoes
//!    both).
//! 5. An fsync error fails the lane closed: every waiter gets an error at
//!    once, the sync is never retried on the same handle, and the lane
//!    reopens through recovery. ENOSPC is its own error and leaves no part of
//!    the failed round behind; the lane then *starves* until a commit
//!    succeeds, and while any lane starves the space kept for reuse goes
//!    back (see `recycle`, "Disk pressure"): once retention frees space,
//!    appends succeed again without a restart.
//! 6. A segment is deleted only when the caller says every record in it was
//!    durably released ([`Lane::delete_segments_below`]). A released file
//!    may be reused as a later segment of the *same* lane only (see
//!    `recycle`), under a new frame key: its stale frames never verify, so
//!    they can never be read as data or mistaken for corruption.
//! 7. No frame is ever accepted that is not authentic under its file's key:
//!    no byte a client sends and no byte of a file's earlier generation can
//!    become a record (`docs/wal.md`, "Why a tenant cannot forge a frame").
//! 8. Every thread a lane starts (its writer, the helper preparing a spare)
//!    is owned and joined: once a [`Wal`] is dropped, nothing of it touches
//!    the directory. Spares have names of their own, so no file operation
//!    trusts a name another thread can change.
//! 9. Frames are judged by the format's own limits only: no configured
//!    limit is consulted when reading, so a config change never truncates,
//!    quarantines or hides acknowledged data.
//! 10. A writer that panics stops its lane (see `guard`): every waiter gets
//!     [`WalError::WriterStopped`], later appends are refused at once, and
//!     [`Wal::failures`] says why. Nobody waits on a writer that is gone.
//!
//! ## Recovery rules (at open; see the `recovery` module)
//! - zeros or bytes that are not an authentic frame after the last valid
//!   frame, with no authentic frame after them, is a torn write (or, in a
//!   reused file, its earlier generation): truncate, fsync, continue;
//! - a non-authentic region followed by authentic frames is corruption: the
//!   segment is moved to `<dir>/quarantine/`, a copy holding every valid
//!   frame (before and after the damage) takes its place, the lost offsets
//!   are reported; each step is crash-safe (see `recovery`);
//! - a segment of another format version stops the open with
//!   [`WalError::UnsupportedFormat`]: never scanned, never quarantined;
//! - derived state (segment summaries, in-memory indexes) is rebuilt from the
//!   segments whenever it disagrees with them; spares are deleted.
//!
//! ## Never
//! - acknowledge a batch that is not on stable storage;
//! - crash-loop on damaged data, or silently drop valid frames behind damage;
//! - allocate from an unchecked length field.
//!
//! All file I/O goes through [`fs::FileSystem`], so `sim::SimFs` (feature
//! `sim`, tests only) can crash the log at any point.

#![deny(missing_docs)]

mod error;
pub mod frame;
pub mod fs;
mod gather;
mod guard;
pub mod inspect;
mod lane;
pub mod lane_id;
pub mod layout;
pub mod legacy;
mod recovery;
mod recycle;
pub mod segment;
mod segment_file;
mod shared;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod spare;
mod writer;

pub use error::{FrameError, LaneOp, Result, StopReason, WalError};
pub use frame::{BatchMeta, EncodedBatch, FrameKey, FrameView};
pub use fs::{FileSystem, RealFs};
pub use lane::{Lane, SegmentInfo, StoredBatch};
pub use lane_id::{LaneId, ParseLaneError, Priority};
pub use layout::WATERMARK_FILE;
pub use recovery::RecoveryEvent;
pub use shared::Appended;
pub use writer::{CommitObserver, CommitStats};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Tunables of the log. Defaults suit a broker on one SSD.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Shards per priority; lanes are created for every (priority, shard).
    /// 0 opens only the lanes already on disk (for offline repair).
    pub shards: u16,
    /// A segment is rolled once it holds at least this many bytes.
    pub segment_bytes: u64,
    /// Largest frame accepted for appending. Never consulted when reading
    /// or recovering: lowering it hides nothing already written.
    pub max_frame_bytes: u32,
    /// Reserve each segment's space up front and zero-fill it (the next
    /// segment is prepared by a helper thread, off the commit path).
    pub preallocate: bool,
    /// After taking the first waiting append of a round, wait this long for
    /// more before writing and syncing. Zero (the default): the adaptive
    /// gather, described in the `gather` module.
    pub group_commit_linger: std::time::Duration,
    /// Who runs commit rounds: a writer thread per lane (the default), or
    /// the caller, for tests that must replay exactly from a seed.
    pub drive: Drive,
}

/// Who runs a lane's commit rounds and prepares its spares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Drive {
    /// A writer thread per lane, spares prepared by a helper it owns.
    #[default]
    Thread,
    /// No thread at all: [`Wal::commit_queued`] runs one round per lane of
    /// what is queued, spares are prepared inline. Every file operation then
    /// happens in an order the caller fixes, so a failing model case
    /// replays from its seed and shrinks.
    Manual,
}

/// Shards per priority unless configured (the broker's `shards` default).
pub const DEFAULT_SHARDS: u16 = 4;
/// Segment roll size unless configured (the broker's `segment_bytes` default).
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            shards: DEFAULT_SHARDS,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_frame_bytes: 16 << 20,
            preallocate: true,
            group_commit_linger: std::time::Duration::ZERO,
            drive: Drive::Thread,
        }
    }
}

/// The log: every lane of one data directory.
pub struct Wal {
    lanes: BTreeMap<LaneId, Arc<Lane>>,
    recovery: Vec<RecoveryEvent>,
    quarantined: Vec<std::path::PathBuf>,
    log: Arc<shared::LogWide>,
}

/// An append on its way: while any is alive, a busy lane's round waits for
/// it (up to its gather budget) instead of syncing without it.
pub struct Arrival(Arc<shared::LogWide>);

impl Drop for Arrival {
    fn drop(&mut self) {
        self.0.arriving.fetch_sub(1, std::sync::atomic::Ordering::Release);
    }
}

impl Wal {
    /// Open (creating if needed) the log under `dir`, running recovery on
    /// every lane found there and creating the configured ones.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        opts: WalOptions,
        observer: Option<Arc<dyn CommitObserver>>,
    ) -> Result<Wal> {
        let mut ids: Vec<LaneId> = layout::lanes_on_disk(&*fs, dir)?;
        for p in Priority::ALL {
            for shard in 0..opts.shards {
                ids.push(LaneId::new(p, shard));
            }
        }
        ids.sort();
        ids.dedup();
        let quarantine = dir.join(layout::QUARANTINE_DIR);
        let mut events = Vec::new();
        let mut lanes = BTreeMap::new();
        let log = Arc::new(shared::LogWide::default());
        for id in ids {
            let lane_dir = layout::lane_dir(dir, id);
            let rec = recovery::recover_lane(&*fs, id, &lane_dir, &quarantine, &opts, &mut events)?;
            fs.sync_dir(dir).map_err(|e| WalError::io(dir, e))?;
            let lane =
                Lane::start(id, lane_dir, Arc::clone(&fs), opts.clone(), observer.clone(), rec, Arc::clone(&log))?;
            lanes.insert(id, Arc::new(lane));
        }
        for e in &events {
            if e.is_damage() {
                tracing::warn!(event = ?e, "WAL recovery");
            } else {
                tracing::debug!(event = ?e, "WAL recovery");
            }
        }
        let quarantined = inspect::quarantined_files(&*fs, dir)?;
        Ok(Wal { lanes, recovery: events, quarantined, log })
    }

    /// Quarantined segment files (kept for the operator, outside the live
    /// log) as found once recovery was done; `broker-admin verify` names the
    /// offsets each lost.
    pub fn quarantined(&self) -> &[std::path::PathBuf] {
        &self.quarantined
    }

    /// What recovery did when this log was opened.
    pub fn recovery_events(&self) -> &[RecoveryEvent] {
        &self.recovery
    }

    /// Lane `id`, or [`WalError::UnknownLane`] when the log has none.
    pub fn lane(&self, id: LaneId) -> Result<&Lane> {
        self.lanes.get(&id).map(|l| &**l).ok_or(WalError::UnknownLane(id))
    }

    /// A lane to hold beyond a borrow of the log (to release segments off
    /// the async workers, say: [`Lane::release_below`]).
    pub fn lane_handle(&self, id: LaneId) -> Result<Arc<Lane>> {
        self.lanes.get(&id).cloned().ok_or(WalError::UnknownLane(id))
    }

    /// Lanes in drain order: high, normal, low; shards ascending.
    pub fn lanes(&self) -> impl Iterator<Item = &Lane> {
        self.lanes.values().map(|l| &**l)
    }

    /// Announce an append that is being prepared (a request whose body is
    /// being validated, say); drop the guard once it is appended or given
    /// up. Busy lanes then hold a round for it rather than sync without it.
    pub fn announce(&self) -> Arrival {
        self.log.arriving.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Arrival(Arc::clone(&self.log))
    }

    /// Append one batch to `lane`; resolves once durable.
    pub fn append(
        &self,
        lane: LaneId,
        batch: EncodedBatch,
    ) -> impl std::future::Future<Output = Result<Appended>> + Send + 'static {
        let fut = self.lane(lane).map(|l| l.append(batch));
        async move { fut?.await }
    }

    /// With [`Drive::Manual`]: run one commit round per lane of what is
    /// queued now, in the caller's thread.
    pub fn commit_queued(&self) {
        for lane in self.lanes.values() {
            lane.commit_queued();
        }
    }

    /// Lanes that take no appends, with their reasons: failed closed (they
    /// reopen by themselves) or with a writer that stopped unexpectedly
    /// (until the log is opened again).
    pub fn failures(&self) -> Vec<(LaneId, String)> {
        self.lanes.values().filter_map(|l| l.failure().map(|r| (l.id(), r))).collect()
    }

    /// Commit what is queued in every lane and stop the writers.
    pub fn shutdown(&self) {
        for lane in self.lanes.values() {
            lane.shutdown();
        }
    }
}
