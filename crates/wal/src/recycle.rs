//! Segment recycling: a released segment becomes one of its lane's next spares.
//!
//! Why: an fdatasync after appending into blocks that were written before
//! flushes data only. Appending into fresh preallocated space also journals
//! an extent conversion on every sync, and zero-filling the space ahead
//! writes every byte twice. Measured here with 1 MiB writes, each followed by
//! fdatasync: ~700 MiB/s over written blocks, ~430 over fallocated ones. So,
//! like PostgreSQL with its WAL files, released segments are reused.
//!
//! Invariants:
//! - A reused file gets a fresh frame key before it is named a segment
//!   (`segment_file`): its stale frames were authenticated under the old
//!   key and never verify again, so the scanner reads them as the end of the
//!   log ([`crate::segment::Tail::Stale`]), never as data and never as
//!   corruption — whatever their offsets, and whatever a tenant's payload
//!   inside them looks like.
//! - Only a segment that no reader holds (no cloned handle, no live mapping)
//!   is reused; any other is unlinked, which keeps open mappings valid.
//! - Recycled files are named `recycled-<base>.spare`. Recovery deletes every
//!   spare, so stale bytes never outlive a restart, and a lane that restarts
//!   at a lower offset (say, after its segments were quarantined) never meets
//!   them.
//! - At most [`pool_limit`] files wait per lane (128 MiB of segments, at
//!   least two); the others are deleted, so the pool's disk use stays
//!   bounded. 128 MiB covers the rolls of a lane taking ~500 MiB/s between
//!   two of the broker's retention passes (every 250 ms by default).
//! - Stale bytes sit only past the durable watermark of the active segment,
//!   which no reader passes; sealing cuts the file to its last frame.
//!
//! ## Disk pressure
//!
//! Kept files and prepared spares hold disk space no record is in. On a
//! full disk that space must go back to the records, or a lane stays
//! refused (507) after retention released every segment:
//! - A roll takes, in order: the prepared spare, a kept file of the pool,
//!   a new file. So once a lane's own segments are released, its next roll
//!   needs no free space at all.
//! - A lane refused for lack of space (a roll or a write hit ENOSPC) is
//!   *starving* until its next commit succeeds. While any lane of the log
//!   starves ([`Pressure::on`]), no lane prepares a spare, and a released
//!   segment is deleted, but for one that a starving lane keeps for its
//!   own next roll (its pool holds at most that one: the roll then takes no
//!   new space, so it succeeds even if another lane takes what retention
//!   freed first). When a lane starts starving every
//!   writer is woken ([`crate::shared::LaneShared::nudge`]) and deletes its
//!   pool and its prepared spare ([`Pressure::epoch`] tells it that it has
//!   not yet). Only the lane's own writer deletes its files, as always.
//! - A lane whose writer stopped does not starve: it takes no appends.
//!
//! So the space retention frees becomes free space, which the next roll of
//! the starving lane takes: ingest recovers without a restart.

use crate::error::{Result, WalError};
use crate::lane_id::LaneId;
use crate::shared::{lock, LaneShared, SealedSegment};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Bytes of released segments a lane keeps for reuse.
const POOL_BYTES_PER_LANE: u64 = 128 << 20;

/// How many released segments a lane keeps for reuse.
pub fn pool_limit(segment_bytes: u64) -> usize {
    (POOL_BYTES_PER_LANE / segment_bytes.max(1)).max(2) as usize
}

fn pool(shared: &LaneShared) -> MutexGuard<'_, Vec<PathBuf>> {
    shared.recycled()
}

/// Retire a segment already taken out of the lane's index: keep it for
/// reuse when that is safe and the pool has room, else delete it. The
/// caller syncs the directory.
pub(crate) fn retire(shared: &LaneShared, seg: Arc<SealedSegment>) -> Result<()> {
    let fs = &**shared.fs();
    // A read maps the file only while it holds the segment (`Lane::visit`).
    let unread = Arc::strong_count(&seg) == 1;
    let mut pool = pool(shared);
    let pressure = shared.pressure();
    let limit = match (pressure.on(), pressure.starves(shared.id())) {
        (false, _) => pool_limit(shared.opts().segment_bytes),
        (true, true) => 1,
        (true, false) => 0,
    };
    // A lane's first segment, rolled away from early (see `writer`, "Idle
    // lanes"), holds little: reusing it would allocate nearly all its space
    // anyway, so it is not worth a place in the pool.
    let worth_keeping = seg.bytes >= shared.opts().segment_bytes / 2;
    if unread && worth_keeping && shared.opts().preallocate && pool.len() < limit {
        let to = crate::layout::recycled_path(shared.dir(), seg.base);
        match fs.rename(&seg.path, &to) {
            Ok(()) => {
                pool.push(to);
                return Ok(());
            }
            Err(e) => tracing::warn!(lane = %shared.id(), error = %e, "could not keep a released segment; deleting it"),
        }
    }
    fs.remove_file(&seg.path).map_err(|e| WalError::io(&seg.path, e))
}

/// A released segment of this lane to reuse, if one waits.
pub(crate) fn take(shared: &LaneShared) -> Option<PathBuf> {
    pool(shared).pop()
}

/// Delete every kept file of this lane (disk pressure). Returns how many.
pub(crate) fn empty_pool(shared: &LaneShared) -> usize {
    let files = std::mem::take(&mut *pool(shared));
    for path in &files {
        if let Err(e) = shared.fs().remove_file(path) {
            // Recovery deletes every spare: at worst it waits for a restart.
            tracing::warn!(lane = %shared.id(), path = %path.display(), error = %e, "could not delete a kept segment");
        }
    }
    files.len()
}

/// Which lanes of one log are refused for lack of space (see the module doc).
#[derive(Default)]
pub(crate) struct Pressure {
    starving: Mutex<BTreeSet<LaneId>>,
    /// Bumped whenever a lane starts starving.
    epoch: AtomicU64,
    /// Every lane of the log, to wake their writers.
    lanes: Mutex<Vec<Weak<LaneShared>>>,
}

impl Pressure {
    pub fn register(&self, lane: &Arc<LaneShared>) {
        lock(&self.lanes).push(Arc::downgrade(lane));
    }

    /// `lane` was refused for lack of space: every writer gives its spare
    /// space back at its next wake, and is woken now.
    pub fn starving(&self, lane: LaneId) {
        if !lock(&self.starving).insert(lane) {
            return;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        tracing::warn!(%lane, "WAL lane out of disk space; every lane gives back the space it keeps for reuse");
        let lanes: Vec<Arc<LaneShared>> = lock(&self.lanes).iter().filter_map(Weak::upgrade).collect();
        for l in lanes {
            l.nudge();
        }
    }

    /// `lane` committed again (or stopped): it no longer starves.
    pub fn fed(&self, lane: LaneId) {
        lock(&self.starving).remove(&lane);
    }

    /// Whether `lane` starves.
    pub fn starves(&self, lane: LaneId) -> bool {
        lock(&self.starving).contains(&lane)
    }

    /// Whether some lane of the log starves.
    pub fn on(&self) -> bool {
        !lock(&self.starving).is_empty()
    }

    /// Grows whenever a lane starts starving.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}
