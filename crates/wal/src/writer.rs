//! The group-commit writer: one thread per lane, the only one that writes
//! or syncs that lane's files.
//!
//! A commit round takes every append queued so far, stamps offsets, writes
//! all their frames with one positional (vectored) write, calls `fdatasync`
//! once, and only then moves the durable watermark and answers the waiters. Appends
//! that arrive during the sync wait for the next round, so one fsync serves
//! as many batches as arrived while the previous one ran; there is no timer.
//!
//! How long a round waits for more appends before it syncs is the pure
//! policy of [`crate::gather`].
//!
//! Asserted on every round (TIGER_STYLE; `assert!` where a violation would
//! lose or invent records, `debug_assert!` where the code lays it so): a
//! round's offsets continue the lane's, increasing and never wrapping; the
//! durable end never passes what was written and synced, and the watermark
//! never moves back ([`crate::shared::LaneShared::publish`] checks the
//! frames it publishes start exactly at the durable point).
//!
//! Idle lanes: a lane's first segment is created header-only at open (every
//! lane has one, most never receive data). Its first rounds extend the file
//! (`fdatasync` carries the size); half-way to its early roll (1/64 of
//! `segment_bytes`, at least 256 KiB or the whole segment) the writer has a
//! spare prepared — zero-filled — off the commit path, and rolls to it at
//! the first round past that point that finds it ready. So an idle lane costs one small file, and no request
//! waits for a zero fill.
//!
//! Failures:
//! - ENOSPC on write or roll: the round's bytes are cut off again (and that
//!   cut is synced) before its waiters hear `NoSpace`; the lane stays open
//!   and *starves* until a commit succeeds, which makes every lane give
//!   back the space it keeps for reuse ([`crate::recycle`], "Disk
//!   pressure"). A roll takes a kept file before it asks for new space.
//! - a panic: caught at the thread's boundary ([`crate::guard`]); the lane
//!   stops, and every waiter and later append hears `WriterStopped`.
//! - any other write or sync error: the lane *fails closed*. Every waiter and
//!   every later append gets `LaneFailed` at once; the sync is never retried
//!   on the same handle (the kernel may have dropped the dirty pages). After a
//!   back-off the writer reopens the segment, cuts it back to the last
//!   acknowledged byte, syncs, and resumes.

use crate::error::{Fault, LaneOp, WalError};
use crate::frame::FrameKey;
use crate::fs::WalFile;
use crate::gather::Gather;
use crate::layout::{spare_name, summary_path};
use crate::segment::{FrameLoc, Summary};
use crate::segment_file::{
    create_segment, prepare_spare, segment_from_spare, write_summary, RecoveredSegment, Reserve, Spare,
};
use crate::shared::{Appended, LaneShared, Pending, Release};
use crate::spare::{early_roll_at, SpareSlot};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A round's frames as stamped: where each goes, before they are written.
struct Stamped {
    /// Each frame's place, in order: dense offsets, back-to-back bytes.
    locs: Vec<FrameLoc>,
    /// Bytes of all the frames.
    len: u64,
    /// The offset after the round's last record.
    next: u64,
    /// The round's timestamp (never below the lane's last).
    ts: u64,
}

impl Stamped {
    fn records(&self) -> u64 {
        self.locs.iter().map(|l| u64::from(l.records)).sum()
    }
}

/// Numbers of one commit round, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct CommitStats {
    /// Appends the round answered.
    pub batches: usize,
    /// Records in them.
    pub records: u64,
    /// Frame bytes written.
    pub bytes: u64,
    /// fdatasyncs it took: its own, plus a roll's (the new header and its
    /// directory).
    pub fsyncs: u32,
    /// From the round's start (a roll included) until its frames were
    /// published to readers (its waiters are answered right after).
    pub duration: Duration,
    /// The round's own fdatasync alone (not a roll's syncs): what the
    /// device costs, apart from the write and the gather.
    pub sync_duration: Duration,
}

/// Receives one call per successful commit round (metrics live outside the WAL).
pub trait CommitObserver: Send + Sync {
    /// `lane` made a round durable; called on its writer thread after the
    /// waiters were answered, so it must be quick.
    fn on_commit(&self, lane: crate::LaneId, stats: &CommitStats);
}

pub(crate) struct Writer {
    shared: Arc<LaneShared>,
    /// Told of every successful round (metrics live outside the WAL).
    observer: Option<Arc<dyn CommitObserver>>,
    file: Arc<dyn WalFile>,
    path: PathBuf,
    base: u64,
    /// The key that authenticates the active segment's frames.
    key: FrameKey,
    /// Durable end of the active segment: every byte before it is synced.
    used: u64,
    next_offset: u64,
    last_ts: u64,
    frames_in_segment: usize,
    /// Since when, and why, the lane is failed closed.
    failed: Option<(Instant, Fault)>,
    /// The next segment's file.
    spare: SpareSlot,
    /// Names this instance's spares: `spare-<instance>-<n>.spare`.
    instance: u64,
    spares_made: u64,
    /// Moving average of bytes per commit round (decides the spare's zero fill).
    avg_commit_bytes: f64,
    /// What the gather policy remembers of recent rounds.
    gather: Gather,
    /// The last round was refused for lack of space (see [`crate::recycle`]).
    starving: bool,
    /// The disk-pressure epoch whose spare space this writer gave back.
    pressure_seen: u64,
    /// The active segment was not preallocated (a lane's first, created
    /// header-only at open): roll to a spare as soon as one is ready.
    early_roll: bool,
}

impl Drop for Writer {
    /// No thread of a lane outlives its writer: a helper still preparing a
    /// spare is joined, so nothing of this instance touches the directory
    /// once the lane is gone (its spare is deleted by the next recovery).
    fn drop(&mut self) {
        let _ = self.spare.take(self.shared.id());
    }
}

/// Zero-filling pays off when commits are small (each fdatasync would
/// otherwise journal an extent conversion, ~0.25 ms here); for large
/// commits that cost is amortised and the zero fill only doubles the I/O.
const ZERO_FILL_BELOW_BYTES: f64 = 256.0 * 1024.0;

const REOPEN_BACKOFF: Duration = Duration::from_millis(500);

/// The WAL depends on no crate of ours (not even `plumbing`, whose
/// `clock::now_ms` the broker and exporter share), so it reads the clock here.
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Let the gather's short waits end on time: Linux lets a normal thread's
/// timed sleep overrun by 50 µs by default, a quarter of a sync here.
fn precise_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong);
    }
}

impl Writer {
    /// The writer of a lane whose active segment recovery handed over.
    pub fn new(
        shared: Arc<LaneShared>,
        observer: Option<Arc<dyn CommitObserver>>,
        active: &RecoveredSegment,
        file: Arc<dyn WalFile>,
    ) -> Writer {
        let instance = FrameKey::random().map_or(0, |k| {
            let b = k.to_bytes();
            u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        });
        // A segment short of the early-roll point may be a lane's first,
        // not preallocated (recovery leaves it so).
        let early_roll = shared.opts().preallocate && active.bytes < early_roll_at(shared.opts().segment_bytes);
        Writer {
            shared,
            observer,
            file,
            path: active.path.clone(),
            base: active.base,
            key: active.key,
            used: active.bytes,
            next_offset: active.next,
            last_ts: active.frames.last().map_or(0, |f| f.ts_ms),
            frames_in_segment: active.frames.len(),
            failed: None,
            spare: SpareSlot::None,
            instance,
            spares_made: 0,
            avg_commit_bytes: 0.0,
            gather: Gather::default(),
            starving: false,
            pressure_seen: 0,
            early_roll,
        }
    }

    /// The writer thread's loop: take what is queued, let the round grow,
    /// commit it; until the lane shuts down and its queue is drained.
    pub fn run(mut self) {
        precise_timer_slack();
        loop {
            let wait = self.failed.as_ref().map(|_| REOPEN_BACKOFF);
            let Some((mut round, releases)) = self.shared.take_pending(wait) else {
                return;
            };
            self.release(releases);
            self.gather(&mut round);
            self.step(round, false);
        }
    }

    /// Carry out releases: retire the sealed segments below each offset
    /// (kept for reuse or deleted, see [`crate::recycle`]), then sync the
    /// directory once, and answer.
    pub fn release(&mut self, releases: Vec<Release>) {
        self.give_back_under_pressure();
        for r in releases {
            r.reply.send(self.retire_below(r.offset));
        }
    }

    /// Once per disk-pressure epoch: delete this lane's kept files and its
    /// prepared spare, so the space goes to whichever lane starves.
    fn give_back_under_pressure(&mut self) {
        let epoch = self.shared.pressure().epoch();
        if epoch == self.pressure_seen {
            return;
        }
        self.pressure_seen = epoch;
        let kept = crate::recycle::empty_pool(&self.shared);
        let spare = self.spare.take(self.shared.id()).map(|s| {
            if let Err(e) = self.shared.fs().remove_file(&s.path) {
                tracing::warn!(lane = %self.shared.id(), error = %e, "could not delete a prepared spare");
            }
        });
        tracing::info!(lane = %self.shared.id(), kept, spare = spare.is_some(), "disk pressure: gave back spare space");
    }

    /// A round was refused for lack of space.
    fn starve(&mut self) {
        self.starving = true;
        self.shared.pressure().starving(self.shared.id());
        self.give_back_under_pressure();
    }

    fn retire_below(&mut self, offset: u64) -> Result<usize, WalError> {
        let gone = self.shared.take_sealed_below(offset);
        let removed = gone.len();
        let fs = &**self.shared.fs();
        for seg in gone {
            let sum = summary_path(&seg.path);
            if fs.exists(&sum) {
                fs.remove_file(&sum).map_err(|e| WalError::io(&sum, e))?;
            }
            crate::recycle::retire(&self.shared, seg)?;
        }
        if removed > 0 {
            fs.sync_dir(self.shared.dir()).map_err(|e| WalError::io(self.shared.dir(), e))?;
        }
        Ok(removed)
    }

    /// One round: reopen a failed lane once its back-off passed (or at once
    /// with `reopen_now`), then commit `round` or fail it.
    pub fn step(&mut self, round: Vec<Pending>, reopen_now: bool) {
        self.gather.round_started();
        if self.failed.as_ref().is_some_and(|(since, _)| reopen_now || since.elapsed() >= REOPEN_BACKOFF) {
            self.try_reopen();
        }
        if round.is_empty() {
            return;
        }
        match &self.failed {
            Some((_, fault)) => self.reply_failed(round, fault),
            None => self.commit(round),
        }
    }

    /// Let `round` grow before it is written: a fixed linger if one is
    /// configured, else the adaptive gather (see the module doc).
    fn gather(&self, round: &mut Vec<Pending>) {
        let started = Instant::now();
        if let Some(p) = self.gather.first_wait(self.shared.opts().group_commit_linger, round.len()) {
            self.shared.gather_until(round, p.want, started + p.budget);
        }
        let arriving = self.shared.arriving();
        if let Some(p) = self.gather.busy_hold(self.shared.opts().group_commit_linger, round.len(), arriving) {
            self.shared.gather_until(round, p.want, started + p.budget);
        }
    }

    fn fail_closed(&mut self, fault: Fault) {
        tracing::error!(lane = %self.shared.id(), reason = %fault, "WAL lane failed closed");
        self.shared.set_failure(Some(fault.clone()));
        self.failed = Some((Instant::now(), fault));
    }

    /// Answer every append of `round` with the lane's failure.
    fn reply_failed(&self, round: Vec<Pending>, fault: &Fault) {
        for p in round {
            p.reply.send(Err(fault.error(self.shared.id())));
        }
    }

    /// Answer every append of `round`: refused for lack of space.
    fn reply_no_space(&self, round: Vec<Pending>, source: &Arc<std::io::Error>) {
        for p in round {
            p.reply.send(Err(WalError::NoSpace { lane: self.shared.id(), source: Arc::clone(source) }));
        }
    }

    /// Reopen the active segment after a failure: cut it back to the last
    /// acknowledged byte and sync through a fresh handle.
    fn try_reopen(&mut self) {
        let fs = &self.shared.fs();
        let attempt = || -> std::io::Result<Arc<dyn WalFile>> {
            let f = fs.open_rw(&self.path)?;
            f.set_len(self.used)?;
            if self.shared.opts().preallocate {
                f.preallocate(self.shared.opts().segment_bytes, true)?;
            }
            f.sync_data()?;
            Ok(f)
        };
        match attempt() {
            Ok(f) => {
                tracing::info!(lane = %self.shared.id(), "WAL lane recovered");
                self.file = f;
                self.failed = None;
                self.shared.set_failure(None);
            }
            Err(e) => {
                tracing::warn!(lane = %self.shared.id(), error = %e, "WAL lane still failing");
                if let Some((since, _)) = &mut self.failed {
                    *since = Instant::now();
                }
            }
        }
    }

    /// One commit round: roll if the segment is full, stamp every frame and
    /// write them all with one write, sync once, and only then publish the
    /// frames and answer their waiters.
    fn commit(&mut self, mut round: Vec<Pending>) {
        let started = Instant::now();
        let mut fsyncs = 0u32;
        let segment_bytes = self.shared.opts().segment_bytes;
        let early = self.early_roll && self.used >= early_roll_at(segment_bytes) && self.spare.is_ready();
        let full = self.used >= segment_bytes || early;
        if full && self.frames_in_segment > 0 {
            match self.roll() {
                Ok(n) => fsyncs += n,
                Err(e) => return self.roll_failed(round, e),
            }
        }
        let start = self.used;
        let stamped = self.stamp(&mut round, start);
        let frames: Vec<&[u8]> = round.iter().map(|p| &p.batch.bytes[..]).collect();
        let write = self.file.write_all_vectored_at(&frames, start);
        if let Err(e) = write {
            return self.write_failed(round, start, e);
        }
        let written_end = start + stamped.len;
        let sync_started = Instant::now();
        if let Err(e) = self.file.sync_data() {
            let fault = Fault::new(LaneOp::Sync, &self.path, e);
            self.fail_closed(fault.clone());
            self.reply_failed(round, &fault);
            return;
        }
        fsyncs += 1;
        let sync_duration = sync_started.elapsed();
        self.gather.synced(sync_duration);
        let (batches, records, bytes) = (round.len(), stamped.records(), stamped.len);
        // Every byte below `written_end` is durable now: publish, then answer.
        let published = self.made_durable(round, stamped, written_end);
        let duration = published.duration_since(started);
        let stats = CommitStats { batches, records, bytes, fsyncs, duration, sync_duration };
        self.round_done(&stats);
    }

    /// Stamp the frames of `round` with their offsets and the round's
    /// timestamp and seal each under the segment's key, back to back from
    /// byte `start`. Offsets continue the lane's, dense and increasing.
    fn stamp(&self, round: &mut [Pending], start: u64) -> Stamped {
        let ts = now_ms().max(self.last_ts);
        let mut next = self.next_offset;
        let mut locs = Vec::with_capacity(round.len());
        let mut len = 0u64;
        for pending in round.iter_mut() {
            let records = pending.batch.records();
            debug_assert!(records > 0, "a frame holds at least one record");
            pending.batch.seal(&self.key, next, ts);
            locs.push(FrameLoc {
                base_offset: next,
                records,
                pos: start + len,
                len: pending.batch.len() as u32,
                ts_ms: ts,
            });
            // Offsets that wrapped would name records already stored.
            next = next.checked_add(u64::from(records)).expect("a lane's offsets never wrap");
            len += pending.batch.len() as u64;
        }
        assert!(next > self.next_offset || round.is_empty(), "a round's offsets increase");
        Stamped { locs, len, next, ts }
    }

    /// The round's frames are synced up to `synced_end`: move the durable end
    /// and the watermark past them, publish them to readers, then answer
    /// each waiter (never before: an append is acknowledged only once durable).
    /// Returns when the frames were published.
    fn made_durable(&mut self, round: Vec<Pending>, stamped: Stamped, synced_end: u64) -> Instant {
        let Stamped { locs, next, ts, .. } = stamped;
        let end = locs.last().map_or(self.used, FrameLoc::end);
        // Past what was synced, readers would be served bytes that are not on
        // disk; behind the old watermark, offsets would be handed out twice.
        assert!(end <= synced_end, "the durable end {end} is past the synced end {synced_end}");
        assert!(next >= self.next_offset, "the durable watermark never moves back");
        debug_assert!(ts >= self.last_ts, "commit times never go back");
        self.used = end;
        self.next_offset = next;
        self.last_ts = ts;
        self.frames_in_segment += locs.len();
        let answers: Vec<(u64, u32)> = locs.iter().map(|l| (l.base_offset, l.records)).collect();
        self.shared.publish(locs, self.used, next);
        let published = Instant::now();
        for (pending, (base_offset, records)) in round.into_iter().zip(answers) {
            pending.reply.send(Ok(Appended { lane: self.shared.id(), base_offset, records, ts_ms: ts }));
        }
        published
    }

    /// After a durable round: the lane no longer starves; tell the gather
    /// policy and the observer; start preparing the next segment's file once
    /// this one is half full.
    fn round_done(&mut self, stats: &CommitStats) {
        if std::mem::take(&mut self.starving) {
            self.shared.pressure().fed(self.shared.id());
        }
        self.gather.round_ended(stats.batches, self.shared.queued());
        if let Some(obs) = &self.observer {
            obs.on_commit(self.shared.id(), stats);
        }
        self.avg_commit_bytes = 0.9 * self.avg_commit_bytes + 0.1 * stats.bytes as f64;
        // Half-way to the roll, as for any segment: for a lane's first,
        // half-way to its early roll.
        let segment_bytes = self.shared.opts().segment_bytes;
        let roll_at = if self.early_roll { early_roll_at(segment_bytes) } else { segment_bytes };
        let due = self.used > roll_at / 2;
        if matches!(self.spare, SpareSlot::None)
            && self.shared.opts().preallocate
            && !self.shared.pressure().on()
            && due
        {
            self.start_spare();
        }
    }

    /// A roll before `round` failed: ENOSPC refuses the round and starves
    /// the lane; any other error fails it closed.
    fn roll_failed(&mut self, round: Vec<Pending>, err: WalError) {
        let (path, source) = match err {
            WalError::Io { path, source } => (path, source),
            // Every step of a roll is a file operation that reports `Io`;
            // anything else is kept whole as the cause.
            other => (self.path.clone(), std::io::Error::other(other)),
        };
        if WalError::is_enospc(&source) {
            self.reply_no_space(round, &Arc::new(source));
            self.starve();
        } else {
            let fault = Fault::new(LaneOp::Roll, path, source);
            self.reply_failed(round, &fault);
            self.fail_closed(fault);
        }
    }

    /// Writing `round` at `start` failed: on ENOSPC cut it off again and
    /// starve; else fail the lane closed.
    fn write_failed(&mut self, round: Vec<Pending>, start: u64, err: std::io::Error) {
        if WalError::is_enospc(&err) {
            self.undo_write(start);
            self.reply_no_space(round, &Arc::new(err));
            self.starve();
        } else {
            let fault = Fault::new(LaneOp::Write, &self.path, err);
            self.fail_closed(fault.clone());
            self.reply_failed(round, &fault);
        }
    }

    /// Prepare the next segment's file: on a helper thread this writer owns,
    /// or inline when the lane is driven by its caller (deterministic tests).
    fn start_spare(&mut self) {
        let shared = Arc::clone(&self.shared);
        let zero_fill = self.avg_commit_bytes < ZERO_FILL_BELOW_BYTES;
        let recycled = crate::recycle::take(&shared);
        let name = spare_name(self.instance, self.spares_made);
        self.spares_made += 1;
        let prepare = move || prepare_spare(&**shared.fs(), shared.dir(), &name, shared.opts(), zero_fill, recycled);
        self.spare = match self.shared.opts().drive {
            crate::Drive::Manual => match prepare() {
                Ok(spare) => SpareSlot::Ready(spare),
                Err(e) => {
                    tracing::warn!(lane = %self.shared.id(), error = %e, "could not prepare a spare segment");
                    SpareSlot::None
                }
            },
            crate::Drive::Thread => {
                match std::thread::Builder::new().name(format!("wal-spare-{}", self.shared.id())).spawn(prepare) {
                    Ok(h) => SpareSlot::Preparing(h),
                    Err(e) => {
                        tracing::warn!(lane = %self.shared.id(), error = %e, "could not start the spare helper");
                        SpareSlot::None
                    }
                }
            }
        };
    }

    /// A kept file of this lane made a spare inline, for a roll that found
    /// none prepared (after ENOSPC, say): it needs no new space.
    fn kept_spare(&mut self) -> Option<Spare> {
        let kept = crate::recycle::take(&self.shared)?;
        let name = spare_name(self.instance, self.spares_made);
        self.spares_made += 1;
        let shared = &self.shared;
        match prepare_spare(&**shared.fs(), shared.dir(), &name, shared.opts(), false, Some(kept)) {
            Ok(spare) => Some(spare),
            Err(e) => {
                tracing::warn!(lane = %shared.id(), error = %e, "could not reuse a kept segment; creating one");
                None
            }
        }
    }

    /// Cut off a round that hit ENOSPC so no unacknowledged frame can surface
    /// later, and make the cut durable before anyone is answered.
    fn undo_write(&mut self, start: u64) {
        let undo = || -> std::io::Result<()> {
            self.file.set_len(start)?;
            if self.shared.opts().preallocate && !self.early_roll {
                // Best effort: without the space, later writes extend the file.
                let _ = self.file.preallocate(self.shared.opts().segment_bytes, true);
            }
            self.file.sync_data()
        };
        if let Err(e) = undo() {
            self.fail_closed(Fault::new(LaneOp::CutBack, &self.path, e));
        }
    }

    /// Start a new segment at the next offset, then seal the current one.
    /// Returns the number of fsyncs it took (the new header, its directory).
    fn roll(&mut self) -> Result<u32, WalError> {
        let shared = Arc::clone(&self.shared);
        let spare = self.spare.take(shared.id()).or_else(|| self.kept_spare());
        let (seg, file) = match spare {
            Some(spare) => segment_from_spare(&**shared.fs(), shared.id(), shared.dir(), self.next_offset, spare)?,
            None => create_segment(
                &**shared.fs(),
                shared.id(),
                shared.dir(),
                self.next_offset,
                shared.opts(),
                Reserve::Now,
            )?,
        };
        // Cut the sealed segment's preallocated tail. Not synced: every frame
        // in it already is, and recovery cuts a tail that comes back.
        self.file.set_len(self.used).map_err(|e| WalError::io(&self.path, e))?;
        let old = RecoveredSegment {
            path: std::mem::replace(&mut self.path, seg.path.clone()),
            base: self.base,
            next: self.next_offset,
            frames: Vec::new(),
            bytes: self.used,
            key: self.key,
        };
        self.key = seg.key;
        let sealed = shared.seal_active(&old, seg, Arc::clone(&file));
        if let Err(e) = write_summary(
            &**shared.fs(),
            &sealed.path,
            &Summary {
                base_offset: sealed.base,
                next_offset: sealed.next,
                records: sealed.records,
                bytes: sealed.bytes,
                first_ts_ms: sealed.first_ts_ms,
                last_ts_ms: sealed.last_ts_ms,
            },
            false,
        ) {
            // Derived state only: recovery rebuilds it.
            tracing::warn!(lane = %shared.id(), error = %e, "could not write segment summary");
        }
        self.file = file;
        self.base = self.next_offset;
        self.used = crate::segment::SEGMENT_HEADER_LEN as u64;
        self.frames_in_segment = 0;
        self.early_roll = false;
        Ok(2)
    }
}
