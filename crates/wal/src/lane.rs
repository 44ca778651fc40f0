//! A lane: its segments, its writer thread, and reads up to the durable
//! watermark.
//!
//! Readers never see a byte the writer has not synced: the in-memory index
//! only learns of frames after their fdatasync returned, and every frame is
//! authenticated again (under its segment's key) as it is served.

use crate::error::{Result, WalError};
use crate::frame::{check_frame, BatchMeta, EncodedBatch, FrameKey, FrameView};
use crate::fs::{FileBytes, FileSystem, WalFile};
use crate::lane_id::LaneId;
use crate::recovery::RecoveredLane;
use crate::segment::{FrameLoc, Summary};
use crate::segment_file::RecoveredSegment;
use crate::writer::{CommitObserver, Pending, Writer};
use crate::WalOptions;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// The answer to a durable append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub lane: LaneId,
    pub base_offset: u64,
    pub records: u32,
    pub ts_ms: u64,
}

/// A batch read back, records numbered from `base_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub lane: LaneId,
    pub base_offset: u64,
    pub ts_ms: u64,
    pub meta: BatchMeta,
    pub records: Vec<Vec<u8>>,
}

/// One segment as listed for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub lane: LaneId,
    pub path: PathBuf,
    pub base_offset: u64,
    pub next_offset: u64,
    pub records: u64,
    pub bytes: u64,
    pub first_ts_ms: u64,
    pub last_ts_ms: u64,
    pub sealed: bool,
}

pub(crate) struct SealedSegment {
    pub path: PathBuf,
    pub base: u64,
    pub next: u64,
    pub frames: Vec<FrameLoc>,
    pub bytes: u64,
    key: FrameKey,
    /// Derived once: listing segments must not walk every frame.
    records: u64,
    pub(crate) map: OnceLock<Arc<FileBytes>>,
}

impl SealedSegment {
    fn new(seg: RecoveredSegment) -> Self {
        let RecoveredSegment { path, base, next, frames, bytes, key } = seg;
        let records = frames.iter().map(|f| u64::from(f.records)).sum();
        SealedSegment { path, base, next, frames, bytes, key, records, map: OnceLock::new() }
    }

    fn info(&self, lane: LaneId) -> SegmentInfo {
        SegmentInfo {
            lane,
            path: self.path.clone(),
            base_offset: self.base,
            next_offset: self.next,
            records: self.records,
            bytes: self.bytes,
            first_ts_ms: self.frames.first().map_or(0, |f| f.ts_ms),
            last_ts_ms: self.frames.last().map_or(0, |f| f.ts_ms),
            sealed: true,
        }
    }
}

struct ActiveSegment {
    path: PathBuf,
    base: u64,
    file: Arc<dyn WalFile>,
    frames: Vec<FrameLoc>,
    bytes: u64,
    key: FrameKey,
}

impl ActiveSegment {
    fn new(seg: RecoveredSegment, file: Arc<dyn WalFile>) -> Self {
        ActiveSegment { path: seg.path, base: seg.base, file, frames: seg.frames, bytes: seg.bytes, key: seg.key }
    }
}

struct Index {
    sealed: Vec<Arc<SealedSegment>>,
    active: ActiveSegment,
}

/// A release of segments below `offset`, for the writer to carry out.
pub(crate) struct Release {
    pub offset: u64,
    pub reply: std::sync::mpsc::SyncSender<Result<usize>>,
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
}

impl Default for Queue {
    fn default() -> Self {
        Queue { items: Vec::new(), releases: Vec::new(), shutdown: false, writer_waiting: false, wake_at: 1 }
    }
}

pub(crate) struct LaneShared {
    pub id: LaneId,
    pub dir: PathBuf,
    pub fs: Arc<dyn FileSystem>,
    pub opts: WalOptions,
    pub observer: Option<Arc<dyn CommitObserver>>,
    queue: Mutex<Queue>,
    wake: Condvar,
    index: RwLock<Index>,
    durable_next: AtomicU64,
    failure: Mutex<Option<String>>,
    /// Woken after every commit, for long-polling readers.
    pub appended: tokio::sync::Notify,
    /// `<lane dir>/watermark`: the durable next offset, rewritten (not
    /// synced) after each commit so read-only tools beside a running broker
    /// stop there. Advisory: recovery never reads it.
    watermark: Option<Arc<dyn WalFile>>,
    /// Released segments kept for reuse as spares (see [`crate::recycle`]).
    pub recycled: Mutex<Vec<PathBuf>>,
    /// Appends announced by callers and not yet queued, on every lane of
    /// this log (see [`crate::Wal::announce`]).
    pub arriving: Arc<std::sync::atomic::AtomicUsize>,
}

fn open_watermark(fs: &dyn FileSystem, dir: &std::path::Path, next: u64) -> Option<Arc<dyn WalFile>> {
    let path = dir.join(crate::layout::WATERMARK_FILE);
    let f = fs.open_rw(&path).or_else(|_| fs.create_new(&path)).ok()?;
    f.write_all_at(&next.to_le_bytes(), 0).ok()?;
    Some(f)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent across a panic in another holder
    // (every critical section is a plain field update).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LaneShared {
    /// Block until appends are queued; `None` once shut down and drained.
    /// With `timeout`, may return an empty round so the writer can retry a reopen.
    pub fn take_pending(&self, timeout: Option<Duration>) -> Option<(Vec<Pending>, Vec<Release>)> {
        let mut q = lock(&self.queue);
        while q.items.is_empty() && q.releases.is_empty() {
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
        Some((std::mem::take(&mut q.items), std::mem::take(&mut q.releases)))
    }

    /// Take what is queued now, without waiting (the manual drive).
    fn take_now(&self) -> (Vec<Pending>, Vec<Release>) {
        let mut q = lock(&self.queue);
        (std::mem::take(&mut q.items), std::mem::take(&mut q.releases))
    }

    /// Take sealed segments wholly below `offset` out of the index, for the
    /// writer to retire.
    pub fn take_sealed_below(&self, offset: u64) -> Vec<Arc<SealedSegment>> {
        let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
        let keep_from = idx.sealed.partition_point(|s| s.next <= offset);
        idx.sealed.drain(..keep_from).collect()
    }

    /// Add to `round` what arrives until it holds `want` appends, `deadline`
    /// passes, or the lane shuts down; the writer is woken once, when enough
    /// arrived (pass `usize::MAX` to wait out the deadline).
    pub fn gather_until(&self, round: &mut Vec<Pending>, want: usize, deadline: std::time::Instant) {
        let mut q = lock(&self.queue);
        loop {
            round.append(&mut q.items);
            let now = std::time::Instant::now();
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

    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    pub fn set_failure(&self, reason: Option<String>) {
        *lock(&self.failure) = reason;
    }

    /// Make synced frames visible to readers.
    pub fn publish(&self, locs: Vec<FrameLoc>, bytes: u64, next: u64) {
        debug_assert!(next >= self.durable_next.load(Ordering::Acquire), "the watermark never moves back");
        {
            let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
            debug_assert!(bytes >= idx.active.bytes, "the durable end of a segment never moves back");
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

/// Who runs a lane's commit rounds.
enum WriterSlot {
    /// A writer thread (joined at shutdown).
    Thread(Option<JoinHandle<()>>),
    /// The caller, through [`Lane::commit_queued`] ([`crate::Drive::Manual`]).
    Manual(Option<Box<Writer>>),
}

/// One lane of the WAL. Cheap to share behind the [`crate::Wal`].
pub struct Lane {
    shared: Arc<LaneShared>,
    writer: Mutex<WriterSlot>,
}

impl Lane {
    pub(crate) fn start(
        id: LaneId,
        dir: PathBuf,
        fs: Arc<dyn FileSystem>,
        opts: WalOptions,
        observer: Option<Arc<dyn CommitObserver>>,
        rec: RecoveredLane,
        arriving: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Result<Lane> {
        let RecoveredLane { sealed, active, active_file } = rec;
        let next = active.next;
        let sealed = sealed.into_iter().map(|s| Arc::new(SealedSegment::new(s))).collect();
        let watermark = open_watermark(&*fs, &dir, next);
        let drive = opts.drive;
        let shared = Arc::new(LaneShared {
            id,
            dir,
            fs,
            opts,
            observer,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            index: RwLock::new(Index { sealed, active: ActiveSegment::new(active.clone(), Arc::clone(&active_file)) }),
            durable_next: AtomicU64::new(next),
            failure: Mutex::new(None),
            appended: tokio::sync::Notify::new(),
            watermark,
            recycled: Mutex::new(Vec::new()),
            arriving,
        });
        let writer = Writer::new(Arc::clone(&shared), &active, active_file);
        let slot = match drive {
            crate::Drive::Manual => WriterSlot::Manual(Some(Box::new(writer))),
            crate::Drive::Thread => {
                let handle = std::thread::Builder::new()
                    .name(format!("wal-{id}"))
                    .spawn(move || writer.run())
                    .map_err(|e| WalError::io("<writer thread>", e))?;
                WriterSlot::Thread(Some(handle))
            }
        };
        Ok(Lane { shared, writer: Mutex::new(slot) })
    }

    /// With [`crate::Drive::Manual`]: run one commit round of everything
    /// queued now, in the caller's thread (a failed lane tries to reopen
    /// first). A no-op for a lane with a writer thread.
    pub fn commit_queued(&self) {
        if let WriterSlot::Manual(Some(w)) = &mut *lock(&self.writer) {
            let (round, releases) = self.shared.take_now();
            w.release(releases);
            w.step(round, true);
        }
    }

    pub fn id(&self) -> LaneId {
        self.shared.id
    }

    /// Queue a batch; the future resolves once it is on stable storage.
    pub fn append(&self, batch: EncodedBatch) -> impl std::future::Future<Output = Result<Appended>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let early = self.enqueue(batch, tx);
        async move {
            early?;
            rx.await.unwrap_or(Err(WalError::ShuttingDown))
        }
    }

    fn enqueue(&self, batch: EncodedBatch, reply: tokio::sync::oneshot::Sender<Result<Appended>>) -> Result<()> {
        let max = self.shared.opts.max_frame_bytes;
        if batch.len() > max as usize {
            return Err(WalError::FrameTooLarge { len: batch.len(), max });
        }
        if let Some(reason) = self.shared.failure() {
            // Fail fast while the lane is closed: no waiter hangs on it.
            return Err(WalError::LaneFailed { lane: self.id().to_string(), reason });
        }
        let mut q = lock(&self.shared.queue);
        if q.shutdown {
            return Err(WalError::ShuttingDown);
        }
        q.items.push(Pending { batch, reply });
        let wake = q.writer_waiting && q.items.len() >= q.wake_at;
        if wake {
            q.writer_waiting = false;
        }
        drop(q);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// The offset the next durable record will get; everything below it is durable.
    pub fn next_offset(&self) -> u64 {
        self.shared.durable_next.load(Ordering::Acquire)
    }

    /// The earliest offset still stored.
    pub fn earliest_offset(&self) -> u64 {
        let idx = self.shared.index.read().unwrap_or_else(|e| e.into_inner());
        idx.sealed.first().map_or(idx.active.base, |s| s.base)
    }

    /// Why the lane is failed closed, if it is.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// Resolves after the next commit of this lane (for long polls).
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.appended.notified()
    }

    /// Visit durable frames from the one holding `from` onwards, in order,
    /// until `visit` breaks. Each frame's crc is checked before it is shown.
    pub fn visit_frames(&self, from: u64, mut visit: impl FnMut(&FrameView<'_>) -> ControlFlow<()>) -> Result<()> {
        let (sealed, active) = {
            let idx = self.shared.index.read().unwrap_or_else(|e| e.into_inner());
            let sealed: Vec<_> = idx.sealed.iter().filter(|s| s.next > from).cloned().collect();
            let start = idx.active.frames.partition_point(|f| f.next_offset() <= from);
            let a = &idx.active;
            let active = (Arc::clone(&a.file), a.path.clone(), a.frames[start..].to_vec(), a.key);
            (sealed, active)
        };
        for seg in sealed {
            let map = match seg.map.get() {
                Some(m) => Arc::clone(m),
                None => {
                    let m = Arc::new(self.shared.fs.read_all(&seg.path).map_err(|e| WalError::io(&seg.path, e))?);
                    Arc::clone(seg.map.get_or_init(|| m))
                }
            };
            let start = seg.frames.partition_point(|f| f.next_offset() <= from);
            for loc in &seg.frames[start..] {
                let bytes = map.get(loc.pos as usize..loc.end() as usize).unwrap_or(&[]);
                if visit_one(bytes, loc, &seg.key, &seg.path, &mut visit)?.is_break() {
                    return Ok(());
                }
            }
        }
        let (file, path, locs, key) = active;
        // Read the active segment in chunks of whole frames, starting small
        // (many callers stop after a frame or two) and doubling up to 4 MiB.
        const MAX_CHUNK: u64 = 4 << 20;
        let mut chunk = 64 << 10;
        let mut i = 0;
        let mut buf = Vec::new();
        while i < locs.len() {
            let first = locs[i];
            let mut j = i + 1;
            while j < locs.len() && locs[j].end() - first.pos <= chunk {
                j += 1;
            }
            chunk = (chunk * 2).min(MAX_CHUNK);
            let end = locs[j - 1].end();
            buf.resize((end - first.pos) as usize, 0);
            file.read_exact_at(&mut buf, first.pos).map_err(|e| WalError::io(&path, e))?;
            for loc in &locs[i..j] {
                let rel = (loc.pos - first.pos) as usize;
                let bytes = &buf[rel..rel + loc.len as usize];
                if visit_one(bytes, loc, &key, &path, &mut visit)?.is_break() {
                    return Ok(());
                }
            }
            i = j;
        }
        Ok(())
    }

    /// Read records from offset `from`, whole frames at a time, until at least
    /// `max_records` records or `max_bytes` bytes were read (at least one frame).
    pub fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<StoredBatch>> {
        let earliest = self.earliest_offset();
        if from < earliest {
            return Err(WalError::OffsetGone { lane: self.id().to_string(), offset: from, earliest });
        }
        let mut out = Vec::new();
        let (mut records, mut bytes) = (0usize, 0usize);
        self.visit_frames(from, |f| {
            let recs: Vec<Vec<u8>> = f.records().filter(|(o, _)| *o >= from).map(|(_, r)| r.to_vec()).collect();
            records += recs.len();
            bytes += recs.iter().map(Vec::len).sum::<usize>();
            out.push(StoredBatch {
                lane: self.id(),
                base_offset: f.header.base_offset.max(from),
                ts_ms: f.header.ts_ms,
                meta: BatchMeta {
                    tenant: f.tenant.to_string(),
                    topic: f.topic.to_string(),
                    idempotency_key: f.idempotency_key.map(str::to_string),
                },
                records: recs,
            });
            if records >= max_records || bytes >= max_bytes {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(out)
    }

    /// Segments of this lane, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let idx = self.shared.index.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = idx.sealed.iter().map(|s| s.info(self.id())).collect();
        let a = &idx.active;
        let sum = Summary::from_frames(a.base, a.bytes, &a.frames);
        out.push(SegmentInfo {
            lane: self.id(),
            path: a.path.clone(),
            base_offset: a.base,
            next_offset: sum.next_offset,
            records: sum.records,
            bytes: a.bytes,
            first_ts_ms: sum.first_ts_ms,
            last_ts_ms: sum.last_ts_ms,
            sealed: false,
        });
        out
    }

    /// Delete (or keep for reuse) sealed segments whose every record is
    /// below `offset`. The caller must have made its own release of them
    /// durable first. The lane's writer does the file work — it alone
    /// renames, unlinks and syncs the lane's files — and this call blocks
    /// until it did; async callers use [`Lane::release_below`]. Returns how
    /// many segments were removed.
    pub fn delete_segments_below(&self, offset: u64) -> Result<usize> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        {
            let mut q = lock(&self.shared.queue);
            if q.shutdown {
                return Err(WalError::ShuttingDown);
            }
            q.releases.push(Release { offset, reply: tx });
            q.writer_waiting = false;
        }
        self.shared.wake.notify_one();
        if let WriterSlot::Manual(Some(w)) = &mut *lock(&self.writer) {
            let releases = std::mem::take(&mut lock(&self.shared.queue).releases);
            w.release(releases);
        }
        rx.recv().unwrap_or(Err(WalError::ShuttingDown))
    }

    /// [`Lane::delete_segments_below`] off the async workers.
    pub async fn release_below(self: &Arc<Self>, offset: u64) -> Result<usize> {
        let lane = Arc::clone(self);
        tokio::task::spawn_blocking(move || lane.delete_segments_below(offset))
            .await
            .unwrap_or(Err(WalError::ShuttingDown))
    }

    /// Stop taking appends, commit what is queued, and join the writer.
    pub fn shutdown(&self) {
        self.commit_queued();
        lock(&self.shared.queue).shutdown = true;
        self.shared.wake.notify_all();
        let mut slot = lock(&self.writer);
        match &mut *slot {
            WriterSlot::Thread(h) => {
                if let Some(h) = h.take() {
                    let _ = h.join();
                }
            }
            // Dropping the writer joins anything it started.
            WriterSlot::Manual(w) => drop(w.take()),
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn visit_one(
    bytes: &[u8],
    loc: &FrameLoc,
    key: &FrameKey,
    path: &std::path::Path,
    visit: &mut impl FnMut(&FrameView<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>> {
    let corrupt = |what| WalError::Corrupt { path: path.to_path_buf(), pos: loc.pos, what };
    let h = check_frame(bytes, key).map_err(corrupt)?;
    let view = FrameView::decode(bytes, h).map_err(corrupt)?;
    Ok(visit(&view))
}
