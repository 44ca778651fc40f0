//! The state a lane's handle ([`crate::Lane`]) and its writer
//! ([`crate::writer`]) share: the append queue, the index of durable frames,
//! the durable watermark and the failure flag.
//!
//! Invariants (asserted where they change):
//! - Only the writer changes the index and the watermark: [`LaneShared::publish`],
//!   [`LaneShared::seal_active`] and [`LaneShared::take_sealed_below`] are
//!   called from the writer alone; a handle reads through [`LaneShared::index`].
//! - The durable watermark never moves back, nor does the durable end of the
//!   active segment; offsets continue across a roll.
//! - The index shows only synced frames: readers never pass the watermark.
//! - Nothing here touches a file but the advisory watermark file, which
//!   recovery never reads.
//! - Once the writer stopped unexpectedly ([`LaneShared::writer_stopped`],
//!   see [`crate::guard`]), the queue is empty and stays empty: the check
//!   and the drain happen under the queue's lock.

use crate::error::{Fault, Result, StopReason, WalError};
use crate::frame::{EncodedBatch, FrameKey};
use crate::fs::{FileSystem, WalFile};
use crate::guard::Reply;
use crate::lane_id::LaneId;
use crate::segment::FrameLoc;
use crate::segment_file::RecoveredSegment;
use crate::WalOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

/// The answer to a durable append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The lane it went to.
    pub lane: LaneId,
    /// Offset of its first record; the others follow densely.
    pub base_offset: u64,
    /// Records in the batch.
    pub records: u32,
    /// The commit's timestamp, ms since the Unix epoch (never below an
    /// earlier commit's of the lane).
    pub ts_ms: u64,
}

/// An append waiting for its commit round.
pub(crate) struct Pending {
    pub batch: EncodedBatch,
    pub reply: Reply<Appended>,
}

/// A segment that takes no more appends; immutable once built.
///
/// Its file is mapped only while a read walks it (see `Lane::visit`), so a
/// broker's mapped bytes are bounded by the reads in progress, not by the
/// segments it holds.
pub(crate) struct SealedSegment {
    pub path: PathBuf,
    pub base: u64,
    pub next: u64,
    pub bytes: u64,
    pub key: FrameKey,
    /// Derived once: listing segments must not walk every frame.
    pub records: u64,
    /// Commit times of its first and last frame (0 when empty).
    pub first_ts_ms: u64,
    pub last_ts_ms: u64,
    /// Where its frames are: known when it was sealed or scanned at open;
    /// found by one verifying scan at its first read when the open trusted
    /// its summary instead (see `recovery`, "Sealed segments").
    frames: OnceLock<Arc<[FrameLoc]>>,
}

impl SealedSegment {
    /// A segment whose frames are known.
    pub fn new(seg: RecoveredSegment) -> Self {
        let RecoveredSegment { path, base, next, frames, bytes, key } = seg;
        let records = frames.iter().map(|f| u64::from(f.records)).sum();
        let (first_ts_ms, last_ts_ms) = (frames.first().map_or(0, |f| f.ts_ms), frames.last().map_or(0, |f| f.ts_ms));
        let known = OnceLock::new();
        let _ = known.set(frames.into());
        SealedSegment { path, base, next, bytes, key, records, first_ts_ms, last_ts_ms, frames: known }
    }

    /// A segment described by its summary, its frames not read yet.
    pub fn summarised(path: PathBuf, key: FrameKey, sum: &crate::segment::Summary) -> Self {
        SealedSegment {
            path,
            base: sum.base_offset,
            next: sum.next_offset,
            bytes: sum.bytes,
            key,
            records: sum.records,
            first_ts_ms: sum.first_ts_ms,
            last_ts_ms: sum.last_ts_ms,
            frames: OnceLock::new(),
        }
    }

    /// Its frames, scanned from `bytes` (the whole file) on the first call,
    /// every MAC checked. A segment whose header is not the one its summary
    /// was written for fails as corrupt. One with damage between frames
    /// keeps every valid frame before and after it — served, as a
    /// quarantine's clean copy would be — and is reported; either way its
    /// summary is dropped, so the next open scans the segment and
    /// quarantines the damage.
    pub fn frames(&self, fs: &dyn FileSystem, bytes: &[u8]) -> Result<Arc<[FrameLoc]>> {
        if let Some(known) = self.frames.get() {
            return Ok(Arc::clone(known));
        }
        let header = decode_header(bytes, &self.path)?;
        if header.base_offset != self.base || header.key != self.key {
            let _ = fs.remove_file(&crate::layout::summary_path(&self.path));
            return Err(WalError::Corrupt {
                path: self.path.clone(),
                pos: 0,
                what: crate::error::FrameError::BadMagic,
            });
        }
        let scanned = crate::segment::scan(bytes, &header);
        let sound = scanned.corruptions.is_empty()
            && scanned.next_offset(self.base) == self.next
            && scanned.valid_end == self.bytes;
        if !sound {
            let _ = fs.remove_file(&crate::layout::summary_path(&self.path));
            let lost: Vec<(u64, u64)> = scanned.corruptions.iter().map(|c| c.lost_offsets).collect();
            tracing::error!(
                path = %self.path.display(),
                lost_offsets = ?lost,
                "a sealed segment is damaged on disk: its valid frames are served; the next start quarantines it"
            );
        }
        Ok(Arc::clone(self.frames.get_or_init(|| scanned.frames.into())))
    }
}

/// The header at the start of a segment's `bytes`.
fn decode_header(bytes: &[u8], path: &Path) -> Result<crate::segment::SegmentHeader> {
    crate::segment::SegmentHeader::decode(bytes).map_err(|what| WalError::Corrupt {
        path: path.to_path_buf(),
        pos: 0,
        what,
    })
}

/// The segment being appended to: its synced frames and durable length.
pub(crate) struct ActiveSegment {
    pub path: PathBuf,
    pub base: u64,
    pub file: Arc<dyn WalFile>,
    pub frames: Vec<FrameLoc>,
    pub bytes: u64,
    pub key: FrameKey,
}

impl ActiveSegment {
    fn new(seg: RecoveredSegment, file: Arc<dyn WalFile>) -> Self {
        ActiveSegment { path: seg.path, base: seg.base, file, frames: seg.frames, bytes: seg.bytes, key: seg.key }
    }
}

/// Where a lane's durable frames are, oldest first.
pub(crate) struct Index {
    pub sealed: Vec<Arc<SealedSegment>>,
    pub active: ActiveSegment,
}

/// A release of segments below `offset`, for the writer to carry out.
pub(crate) struct Release {
    pub offset: u64,
    pub reply: Reply<usize>,
}

struct Queue {
    items: Vec<Pending>,
    releases: Vec<Release>,
    shutdown: bool,
    /// The writer sleeps on the condvar: only then does an append signal it
    /// (a busy writer takes the queue after its sync without a wake-up).
    writer_waiting: bool,
    /// How many queued appends make an append wake a waiting writer: 1
    /// normally; while the writer gathers a round, the number it waits for
    /// (so it is woken once, not once per append).
    wake_at: usize,
    /// Why the writer stopped unexpectedly, once it did (see [`crate::guard`]).
    stopped: Option<StopReason>,
    /// Wake the writer with nothing queued: disk pressure (see [`crate::recycle`]).
    nudged: bool,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            items: Vec::new(),
            releases: Vec::new(),
            shutdown: false,
            writer_waiting: false,
            wake_at: 1,
            stopped: None,
            nudged: false,
        }
    }
}

/// What every lane of one log shares.
#[derive(Default)]
pub(crate) struct LogWide {
    /// Appends announced by callers and not yet queued, on every lane of
    /// this log (see [`crate::Wal::announce`]).
    pub arriving: AtomicUsize,
    /// Lanes refused for lack of space (see [`crate::recycle`]).
    pub pressure: crate::recycle::Pressure,
}

pub(crate) struct LaneShared {
    id: LaneId,
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    opts: WalOptions,
    queue: Mutex<Queue>,
    wake: Condvar,
    index: RwLock<Index>,
    durable_next: AtomicU64,
    /// Why the lane is failed closed, while it is.
    failure: Mutex<Option<Fault>>,
    /// Woken after every commit, for long-polling readers.
    appended: tokio::sync::Notify,
    /// `<lane dir>/watermark`: the durable next offset, rewritten (not
    /// synced) after each commit so read-only tools beside a running broker
    /// stop there. Advisory: recovery never reads it.
    watermark: Option<Arc<dyn WalFile>>,
    /// Released segments kept for reuse as spares (see [`crate::recycle`]).
    recycled: Mutex<Vec<PathBuf>>,
    /// What every lane of this log shares.
    log: Arc<LogWide>,
}

fn open_watermark(fs: &dyn FileSystem, dir: &Path, next: u64) -> Option<Arc<dyn WalFile>> {
    let path = dir.join(crate::layout::WATERMARK_FILE);
    let f = fs.open_rw(&path).or_else(|_| fs.create_new(&path)).ok()?;
    f.write_all_at(&next.to_le_bytes(), 0).ok()?;
    Some(f)
}

/// What a publish must hold, from the durable point `(offset, byte)` to
/// the new one `(next, bytes)` (TIGER_STYLE): the frames start exactly at
/// the durable point and the new point is exactly where the last one ends,
/// so the watermark never moves back and never passes what was written (a
/// gap or an overlap would lose or invent records: `assert!`); in between
/// the frames are dense (`debug_assert!`: the writer lays them so).
fn check_publish(durable: (u64, u64), locs: &[FrameLoc], new: (u64, u64)) {
    let (Some(first), Some(last)) = (locs.first(), locs.last()) else {
        assert_eq!(new, durable, "a publish without frames moves nothing");
        return;
    };
    assert_eq!((first.base_offset, first.pos), durable, "published frames start at the durable point");
    assert_eq!((last.next_offset(), last.end()), new, "the watermark moves to the end of the last frame written");
    debug_assert!(
        locs.windows(2).all(|w| w[1].base_offset == w[0].next_offset() && w[1].pos == w[0].end()),
        "a round's frames are dense"
    );
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent across a panic in another holder
    // (every critical section is a plain field update).
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl LaneShared {
    /// The shared state of a lane recovered as `sealed` + `active`.
    pub fn new(
        id: LaneId,
        dir: PathBuf,
        fs: Arc<dyn FileSystem>,
        opts: WalOptions,
        sealed: Vec<SealedSegment>,
        active: (&RecoveredSegment, &Arc<dyn WalFile>),
        log: Arc<LogWide>,
    ) -> LaneShared {
        let next = active.0.next;
        let sealed = sealed.into_iter().map(Arc::new).collect();
        let watermark = open_watermark(&*fs, &dir, next);
        let active = ActiveSegment::new(active.0.clone(), Arc::clone(active.1));
        LaneShared {
            id,
            dir,
            fs,
            opts,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            index: RwLock::new(Index { sealed, active }),
            durable_next: AtomicU64::new(next),
            failure: Mutex::new(None),
            appended: tokio::sync::Notify::new(),
            watermark,
            recycled: Mutex::new(Vec::new()),
            log,
        }
    }

    pub fn id(&self) -> LaneId {
        self.id
    }

    /// The lane's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn fs(&self) -> &Arc<dyn FileSystem> {
        &self.fs
    }

    pub fn opts(&self) -> &WalOptions {
        &self.opts
    }

    /// Released segments kept for reuse as spares (see [`crate::recycle`]).
    pub fn recycled(&self) -> MutexGuard<'_, Vec<PathBuf>> {
        lock(&self.recycled)
    }

    /// Appends announced by callers and not yet queued, on every lane of this log.
    pub fn arriving(&self) -> usize {
        self.log.arriving.load(Ordering::Acquire)
    }

    /// Disk pressure on this log (see [`crate::recycle`]).
    pub fn pressure(&self) -> &crate::recycle::Pressure {
        &self.log.pressure
    }

    /// The offset the next durable record will get.
    pub fn durable_next(&self) -> u64 {
        self.durable_next.load(Ordering::Acquire)
    }

    /// Read the index (what is durable, and where).
    pub fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves after the next commit (for long polls).
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    /// Queue an append for the next round, waking a waiting writer once
    /// enough arrived.
    pub fn enqueue(&self, pending: Pending) -> Result<()> {
        let mut q = lock(&self.queue);
        if let Some(reason) = &q.stopped {
            return Err(self.stopped_error(reason));
        }
        if q.shutdown {
            return Err(WalError::ShuttingDown);
        }
        q.items.push(pending);
        let wake = q.writer_waiting && q.items.len() >= q.wake_at;
        if wake {
            q.writer_waiting = false;
        }
        drop(q);
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Queue a release for the writer and wake it. A lane whose writer
    /// stopped keeps its segments: the release answers `Ok(0)` at once.
    pub fn enqueue_release(&self, release: Release) -> Result<()> {
        {
            let mut q = lock(&self.queue);
            if q.stopped.is_some() {
                drop(q);
                release.reply.send(Ok(0));
                return Ok(());
            }
            if q.shutdown {
                return Err(WalError::ShuttingDown);
            }
            q.releases.push(release);
            q.writer_waiting = false;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Take the queued releases only (the manual drive).
    pub fn take_releases(&self) -> Vec<Release> {
        std::mem::take(&mut lock(&self.queue).releases)
    }

    /// Take no more appends; wake the writer so it drains and exits.
    pub fn close(&self) {
        lock(&self.queue).shutdown = true;
        self.wake.notify_all();
    }

    /// Block until appends are queued; `None` once shut down and drained.
    /// With `timeout`, may return an empty round so the writer can retry a reopen.
    pub fn take_pending(&self, timeout: Option<Duration>) -> Option<(Vec<Pending>, Vec<Release>)> {
        let mut q = lock(&self.queue);
        while q.items.is_empty() && q.releases.is_empty() && !q.nudged {
            if q.shutdown {
                return None;
            }
            q.writer_waiting = true;
            match timeout {
                Some(t) => {
                    let (guard, res) = self.wake.wait_timeout(q, t).unwrap_or_else(|e| e.into_inner());
                    q = guard;
                    q.writer_waiting = false;
                    if res.timed_out() {
                        return Some((Vec::new(), Vec::new()));
                    }
                }
                None => {
                    q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                    q.writer_waiting = false;
                }
            }
        }
        q.nudged = false;
        Some((std::mem::take(&mut q.items), std::mem::take(&mut q.releases)))
    }

    /// Wake the writer even with nothing queued (it checks the disk pressure).
    pub fn nudge(&self) {
        lock(&self.queue).nudged = true;
        self.wake.notify_all();
    }

    /// Take what is queued now, without waiting (the manual drive).
    pub fn take_now(&self) -> (Vec<Pending>, Vec<Release>) {
        let mut q = lock(&self.queue);
        (std::mem::take(&mut q.items), std::mem::take(&mut q.releases))
    }

    /// Take sealed segments wholly below `offset` out of the index, for the
    /// writer to retire.
    pub fn take_sealed_below(&self, offset: u64) -> Vec<Arc<SealedSegment>> {
        let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
        debug_assert!(idx.sealed.windows(2).all(|w| w[0].next <= w[1].base), "sealed segments are in offset order");
        let keep_from = idx.sealed.partition_point(|s| s.next <= offset);
        idx.sealed.drain(..keep_from).collect()
    }

    /// Add to `round` what arrives until it holds `want` appends, `deadline`
    /// passes, or the lane shuts down; the writer is woken once, when enough
    /// arrived (pass `usize::MAX` to wait out the deadline).
    pub fn gather_until(&self, round: &mut Vec<Pending>, want: usize, deadline: Instant) {
        let mut q = lock(&self.queue);
        loop {
            round.append(&mut q.items);
            let now = Instant::now();
            if q.shutdown || round.len() >= want || now >= deadline {
                q.wake_at = 1;
                return;
            }
            q.wake_at = want - round.len();
            q.writer_waiting = true;
            let (guard, _) = self.wake.wait_timeout(q, deadline - now).unwrap_or_else(|e| e.into_inner());
            q = guard;
            q.writer_waiting = false;
        }
    }

    /// Appends queued now (they wait for the next round).
    pub fn queued(&self) -> usize {
        lock(&self.queue).items.len()
    }

    /// Why the lane takes no appends: its writer stopped, or it failed closed.
    pub fn failure(&self) -> Option<String> {
        let stopped = lock(&self.queue).stopped.as_ref().map(|r| format!("its writer stopped unexpectedly: {r}"));
        stopped.or_else(|| lock(&self.failure).as_ref().map(Fault::to_string))
    }

    /// The error an append gets at once, if the lane takes none now.
    pub fn refusal(&self) -> Option<WalError> {
        if let Some(reason) = &lock(&self.queue).stopped {
            return Some(self.stopped_error(reason));
        }
        lock(&self.failure).as_ref().map(|fault| fault.error(self.id))
    }

    fn stopped_error(&self, reason: &StopReason) -> WalError {
        WalError::WriterStopped { lane: self.id, reason: reason.clone() }
    }

    /// The writer is unwinding a panic: refuse appends from now on (what
    /// is queued is drained by [`LaneShared::writer_stopped`] once it has
    /// unwound). Never blocks on the queue's lock (this thread may hold it
    /// in a frame being unwound): after a bounded number of tries it leaves
    /// the marking to the drain, which answers every append queued meanwhile.
    pub fn stopping(&self) {
        for _ in 0..10_000 {
            let mut q = match self.queue.try_lock() {
                Ok(q) => q,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    std::thread::yield_now();
                    continue;
                }
            };
            q.stopped.get_or_insert(StopReason::Unwinding);
            return;
        }
    }

    /// The writer ended unexpectedly (a panic with `message`): answer what
    /// is queued and refuse every later append (see [`crate::guard`]).
    pub fn writer_stopped(&self, message: String) {
        let reason = StopReason::Panicked(message);
        tracing::error!(lane = %self.id, %reason, "WAL lane writer stopped unexpectedly; restart the broker to reopen the lane");
        let (items, releases) = {
            let mut q = lock(&self.queue);
            q.stopped = Some(reason.clone());
            (std::mem::take(&mut q.items), std::mem::take(&mut q.releases))
        };
        for p in items {
            p.reply.send(Err(self.stopped_error(&reason)));
        }
        for r in releases {
            r.reply.send(Ok(0));
        }
        debug_assert!(lock(&self.queue).items.is_empty(), "a stopped lane queues nothing");
        self.pressure().fed(self.id);
        self.appended.notify_waiters();
    }

    /// The lane failed closed with `fault`, or (`None`) reopened.
    pub fn set_failure(&self, fault: Option<Fault>) {
        *lock(&self.failure) = fault;
    }

    /// Make synced frames visible to readers: `locs`, which end at byte
    /// `bytes` of the active segment and before offset `next`.
    pub fn publish(&self, locs: Vec<FrameLoc>, bytes: u64, next: u64) {
        {
            let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
            let durable = (self.durable_next.load(Ordering::Acquire), idx.active.bytes);
            check_publish(durable, &locs, (next, bytes));
            idx.active.frames.extend(locs);
            idx.active.bytes = bytes;
        }
        self.durable_next.store(next, Ordering::Release);
        if let Some(w) = &self.watermark {
            // Advisory for inspection tools; a failure here is not a commit failure.
            let _ = w.write_all_at(&next.to_le_bytes(), 0);
        }
        self.appended.notify_waiters();
    }

    /// Turn the active segment into a sealed one and start `new`.
    pub fn seal_active(
        &self,
        old: &RecoveredSegment,
        new: RecoveredSegment,
        file: Arc<dyn WalFile>,
    ) -> Arc<SealedSegment> {
        let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
        let frames = std::mem::take(&mut idx.active.frames);
        debug_assert!(frames.last().is_none_or(|f| f.next_offset() == old.next), "sealed at its last frame");
        debug_assert_eq!(new.base, old.next, "offsets continue across a roll");
        let sealed = Arc::new(SealedSegment::new(RecoveredSegment { frames, ..old.clone() }));
        idx.sealed.push(Arc::clone(&sealed));
        idx.active = ActiveSegment::new(new, file);
        sealed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(base_offset: u64, records: u32, pos: u64, len: u32) -> FrameLoc {
        FrameLoc { base_offset, records, pos, len, ts_ms: 1 }
    }

    #[test]
    fn a_publish_continues_the_durable_point_exactly() {
        check_publish((10, 64), &[loc(10, 2, 64, 100), loc(12, 1, 164, 50)], (13, 214));
        check_publish((10, 64), &[], (10, 64));
    }

    #[test]
    #[should_panic(expected = "the watermark moves to the end of the last frame written")]
    fn a_watermark_past_the_frames_written_is_refused() {
        check_publish((10, 64), &[loc(10, 2, 64, 100)], (13, 164));
    }

    #[test]
    #[should_panic(expected = "published frames start at the durable point")]
    fn a_watermark_that_moves_back_is_refused() {
        check_publish((10, 64), &[loc(8, 2, 64, 100)], (10, 164));
    }

    #[test]
    #[should_panic(expected = "published frames start at the durable point")]
    fn frames_that_leave_a_gap_are_refused() {
        check_publish((10, 64), &[loc(10, 2, 80, 100)], (12, 180));
    }
}
