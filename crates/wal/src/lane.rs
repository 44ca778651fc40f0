//! A lane: its segments, its writer thread, and reads up to the durable
//! watermark.
//!
//! Readers never see a byte the writer has not synced: the in-memory index
//! only learns of frames after their fdatasync returned, and every frame is
//! authenticated again (under its segment's key) as it is served.

use crate::error::{Result, WalError};
use crate::frame::{check_frame, BatchMeta, EncodedBatch, FrameKey, FrameView};
use crate::fs::FileSystem;
use crate::guard::{guarded, Reply};
use crate::lane_id::LaneId;
use crate::recovery::RecoveredLane;
use crate::segment::{FrameLoc, Summary};
use crate::shared::{lock, Appended, LaneShared, LogWide, Pending, Release, SealedSegment};
use crate::writer::{CommitObserver, Writer};
use crate::WalOptions;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A batch read back, records numbered from `base_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    /// The lane it was read from.
    pub lane: LaneId,
    /// Offset of `records[0]` (a frame read from its middle starts there).
    pub base_offset: u64,
    /// When its frame was committed, ms since the Unix epoch.
    pub ts_ms: u64,
    /// Who sent it, where to.
    pub meta: BatchMeta,
    /// The records, in offset order.
    pub records: Vec<Vec<u8>>,
}

/// One segment as listed for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The lane it belongs to.
    pub lane: LaneId,
    /// Its file.
    pub path: PathBuf,
    /// Offset of its first record.
    pub base_offset: u64,
    /// The offset after its last durable record (`base_offset` when empty).
    pub next_offset: u64,
    /// Durable records in it.
    pub records: u64,
    /// Its durable length: header and frames, no preallocated space.
    pub bytes: u64,
    /// Commit time of its first frame, ms since the epoch (0 when empty).
    pub first_ts_ms: u64,
    /// Commit time of its last frame, ms since the epoch (0 when empty).
    pub last_ts_ms: u64,
    /// It takes no more appends (every segment but the lane's last).
    pub sealed: bool,
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
        log: Arc<LogWide>,
    ) -> Result<Lane> {
        let RecoveredLane { sealed, active, active_file } = rec;
        let drive = opts.drive;
        let shared = Arc::new(LaneShared::new(id, dir, fs, opts, sealed, (&active, &active_file), log));
        shared.pressure().register(&shared);
        let writer = Writer::new(Arc::clone(&shared), observer, &active, active_file);
        let slot = match drive {
            crate::Drive::Manual => WriterSlot::Manual(Some(Box::new(writer))),
            crate::Drive::Thread => {
                let guard = Arc::clone(&shared);
                // A panic ends the loop here, not silently: see `guard`.
                let body = move || {
                    guarded(&guard, move || writer.run());
                };
                let handle = std::thread::Builder::new()
                    .name(format!("wal-{id}"))
                    .spawn(body)
                    .map_err(|source| WalError::WriterNotStarted { lane: id, source })?;
                WriterSlot::Thread(Some(handle))
            }
        };
        Ok(Lane { shared, writer: Mutex::new(slot) })
    }

    /// With [`crate::Drive::Manual`]: run one commit round of everything
    /// queued now, in the caller's thread (a failed lane tries to reopen
    /// first). A no-op for a lane with a writer thread. A round that
    /// panics stops the lane, as a writer thread's would.
    pub(crate) fn commit_queued(&self) {
        self.run_manual(|w, shared| {
            let (round, releases) = shared.take_now();
            w.release(releases);
            w.step(round, true);
        });
    }

    /// With [`crate::Drive::Manual`]: run `f` on the writer, guarded like a
    /// writer thread's loop (a panic stops the lane and drops the writer).
    fn run_manual(&self, work: impl FnOnce(&mut Writer, &LaneShared)) {
        let mut slot = lock(&self.writer);
        let WriterSlot::Manual(w) = &mut *slot else { return };
        let panicked = match w {
            Some(writer) => guarded(&self.shared, || work(writer, &self.shared)),
            None => false,
        };
        if panicked {
            *w = None;
        }
    }

    /// Which lane this is.
    pub fn id(&self) -> LaneId {
        self.shared.id()
    }

    /// Queue a batch; the future resolves once it is on stable storage.
    pub(crate) fn append(
        &self,
        batch: EncodedBatch,
    ) -> impl std::future::Future<Output = Result<Appended>> + Send + 'static {
        let (reply, rx) = Reply::pair(&self.shared);
        let early = self.enqueue(batch, reply);
        async move {
            early?;
            rx.await.unwrap_or(Err(WalError::ShuttingDown))
        }
    }

    fn enqueue(&self, batch: EncodedBatch, reply: Reply<Appended>) -> Result<()> {
        let max = self.shared.opts().max_frame_bytes;
        if batch.len() > max as usize {
            return Err(WalError::FrameTooLarge { len: batch.len(), max });
        }
        if let Some(refused) = self.shared.refusal() {
            // Fail fast while the lane is closed or stopped: no waiter hangs on it.
            return Err(refused);
        }
        self.shared.enqueue(Pending { batch, reply })
    }

    /// The offset the next durable record will get; everything below it is durable.
    pub fn next_offset(&self) -> u64 {
        self.shared.durable_next()
    }

    /// The earliest offset still stored.
    pub fn earliest_offset(&self) -> u64 {
        let idx = self.shared.index();
        idx.sealed.first().map_or(idx.active.base, |s| s.base)
    }

    /// Why the lane is failed closed, or its writer stopped, if so.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// Resolves after the next commit of this lane (for long polls).
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.appended()
    }

    /// Visit durable frames from the one holding `from` onwards, in order,
    /// until `visit` breaks. Each frame's crc is checked before it is shown.
    pub fn visit_frames(&self, from: u64, visit: impl FnMut(&FrameView<'_>) -> ControlFlow<()>) -> Result<()> {
        self.visit(from, Check::Whole, visit)
    }

    /// [`Lane::visit_frames`] for a frame's header and metadata (tenant,
    /// topic, record count) only: the header's MAC is checked, the body's
    /// is not — these frames were verified when written or recovered (the
    /// index lists no other), and checking every payload again made an
    /// accounting pass as costly as a delivery. Never for records that are
    /// delivered or served.
    pub fn visit_frame_metas(&self, from: u64, visit: impl FnMut(&FrameView<'_>) -> ControlFlow<()>) -> Result<()> {
        self.visit(from, Check::Head, visit)
    }

    fn visit(&self, from: u64, check: Check, mut visit: impl FnMut(&FrameView<'_>) -> ControlFlow<()>) -> Result<()> {
        let (sealed, active) = {
            let idx = self.shared.index();
            let sealed: Vec<_> = idx.sealed.iter().filter(|s| s.next > from).cloned().collect();
            let start = idx.active.frames.partition_point(|f| f.next_offset() <= from);
            let a = &idx.active;
            let active = (Arc::clone(&a.file), a.path.clone(), a.frames[start..].to_vec(), a.key);
            (sealed, active)
        };
        for seg in sealed {
            // Mapped for this walk only: dropped (unmapped) before the next
            // segment, so what a broker maps is bounded by its reads in
            // progress, not by the segments it holds.
            let map = self.shared.fs().read_all(&seg.path).map_err(|e| WalError::io(&seg.path, e))?;
            let frames = seg.frames(&**self.shared.fs(), &map)?;
            let start = frames.partition_point(|f| f.next_offset() <= from);
            for loc in &frames[start..] {
                let bytes = map.get(loc.pos as usize..loc.end() as usize).unwrap_or(&[]);
                if visit_one(bytes, loc, (&seg.key, check), &seg.path, &mut visit)?.is_break() {
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
                if visit_one(bytes, loc, (&key, check), &path, &mut visit)?.is_break() {
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
            return Err(WalError::OffsetGone { lane: self.id(), offset: from, earliest });
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
        let idx = self.shared.index();
        let mut out: Vec<_> = idx.sealed.iter().map(|s| sealed_info(s, self.id())).collect();
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
    /// many segments were removed (0 while the lane's writer is stopped:
    /// its segments stay until the log is opened again).
    pub fn delete_segments_below(&self, offset: u64) -> Result<usize> {
        let (reply, rx) = Reply::blocking(&self.shared);
        self.shared.enqueue_release(Release { offset, reply })?;
        self.run_manual(|w, shared| w.release(shared.take_releases()));
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
    pub(crate) fn shutdown(&self) {
        self.commit_queued();
        self.shared.close();
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

/// How much of a visited frame is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Header and body MACs: what is delivered or served.
    Whole,
    /// The header's MAC only (see [`Lane::visit_frame_metas`]).
    Head,
}

fn visit_one(
    bytes: &[u8],
    loc: &FrameLoc,
    (key, check): (&FrameKey, Check),
    path: &std::path::Path,
    visit: &mut impl FnMut(&FrameView<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>> {
    let corrupt = |what| WalError::Corrupt { path: path.to_path_buf(), pos: loc.pos, what };
    let h = match check {
        Check::Whole => check_frame(bytes, key),
        Check::Head => crate::frame::check_head(bytes, key),
    }
    .map_err(corrupt)?;
    let view = FrameView::decode(bytes, h).map_err(corrupt)?;
    Ok(visit(&view))
}

/// A sealed segment as listed for operators.
fn sealed_info(seg: &SealedSegment, lane: LaneId) -> SegmentInfo {
    SegmentInfo {
        lane,
        path: seg.path.clone(),
        base_offset: seg.base,
        next_offset: seg.next,
        records: seg.records,
        bytes: seg.bytes,
        first_ts_ms: seg.first_ts_ms,
        last_ts_ms: seg.last_ts_ms,
        sealed: true,
    }
}
