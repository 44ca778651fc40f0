//! Opening a lane directory: apply the recovery rules of [`crate::segment`]
//! to every segment, and hand the writer an active segment that ends at its
//! last valid frame.
//!
//! Each rule leaves a [`RecoveryEvent`] so operators see what happened; none
//! of them crashes the process or drops a valid frame.

use crate::error::{FrameError, Result, WalError};
use crate::fs::{FileBytes, FileSystem, WalFile};
use crate::lane_id::LaneId;
use crate::layout::{clean_copy_path, is_spare, segment_of_clean_copy, segment_paths, summary_path};
use crate::segment::{scan, Corruption, Scan, SegmentHeader, Summary, Tail, SEGMENT_HEADER_LEN};
use crate::segment_file::{create_segment, ensure_dir, write_summary, RecoveredSegment, Reserve};
use crate::shared::SealedSegment;
use crate::WalOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What recovery did to the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryEvent {
    /// Bytes after the last valid frame were cut off. `torn` is false for the
    /// zeros that preallocation leaves behind (the normal case after a stop).
    TruncatedTail {
        /// The lane.
        lane: LaneId,
        /// The segment cut.
        path: PathBuf,
        /// Where it now ends (the end of its last valid frame).
        at: u64,
        /// How many bytes were cut off.
        bytes: u64,
        /// They were a torn (or stale) write rather than preallocated zeros.
        torn: bool,
    },
    /// A segment with corrupt frames between valid ones was moved to
    /// `moved_to`; a copy holding only its valid frames took its place.
    Quarantined {
        /// The lane.
        lane: LaneId,
        /// The segment, now holding only its valid frames (if any).
        path: PathBuf,
        /// Where the damaged file is kept, byte for byte.
        moved_to: PathBuf,
        /// The damaged regions and the offsets each lost.
        corruptions: Vec<Corruption>,
    },
    /// A segment whose header was never completely written held no frame and was removed.
    RemovedEmptySegment {
        /// The lane.
        lane: LaneId,
        /// The file removed.
        path: PathBuf,
    },
    /// A segment summary was missing or disagreed with its segment and was rewritten.
    SummaryRebuilt {
        /// The lane.
        lane: LaneId,
        /// The summary file rewritten.
        path: PathBuf,
    },
    /// Offsets missing between two segments (data lost before this start).
    OffsetGap {
        /// The lane.
        lane: LaneId,
        /// The first offset missing.
        from: u64,
        /// The offset after the last one missing (the next segment's base).
        to: u64,
    },
    /// A quarantine that a crash interrupted after the damaged segment was
    /// moved aside was completed: its cleaned copy took the segment's place.
    QuarantineCompleted {
        /// The lane.
        lane: LaneId,
        /// The segment put back in place.
        path: PathBuf,
    },
}

impl RecoveryEvent {
    /// Whether the event means damage (as opposed to routine tidying).
    pub fn is_damage(&self) -> bool {
        !matches!(
            self,
            RecoveryEvent::TruncatedTail { torn: false, .. }
                | RecoveryEvent::SummaryRebuilt { .. }
                | RecoveryEvent::QuarantineCompleted { .. }
        )
    }
}

pub(crate) struct RecoveredLane {
    pub sealed: Vec<SealedSegment>,
    pub active: RecoveredSegment,
    pub active_file: Arc<dyn WalFile>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |e| WalError::io(path, e)
}

pub(crate) fn recover_lane(
    fs: &dyn FileSystem,
    lane: LaneId,
    dir: &Path,
    quarantine_dir: &Path,
    opts: &WalOptions,
    events: &mut Vec<RecoveryEvent>,
) -> Result<RecoveredLane> {
    ensure_dir(fs, dir)?;
    for path in fs.list_dir(dir).map_err(io(dir))? {
        if is_spare(&path) {
            // A spare segment never used: holds no frame.
            fs.remove_file(&path).map_err(io(&path))?;
        } else if let Some(seg) = segment_of_clean_copy(&path) {
            finish_clean_copy(fs, lane, &path, &seg, events)?;
        }
    }
    let paths = segment_paths(fs, dir)?;
    let mut segments: Vec<Opened> = Vec::with_capacity(paths.len());
    for (i, (base, path)) in paths.iter().enumerate() {
        let found = Found { fs, lane, base: *base, path, quarantine_dir, is_last: i + 1 == paths.len() };
        let opened = match trusted_sealed(&found) {
            Some(sealed) => Some(Opened::Trusted(sealed)),
            None => recover_segment(&found, events)?.map(Opened::Scanned),
        };
        if let Some(seg) = opened {
            if let Some(prev) = segments.last() {
                if prev.next() != seg.base() {
                    events.push(RecoveryEvent::OffsetGap { lane, from: prev.next(), to: seg.base() });
                }
            }
            segments.push(seg);
        }
    }
    let (active, active_file) = match segments.pop() {
        Some(Opened::Scanned(seg)) => open_active(fs, seg)?,
        // The lane's last file held no segment: the sealed one before it
        // is appended to again, so its frames must be known: scanned.
        Some(Opened::Trusted(sealed)) => {
            let found = Found { fs, lane, base: sealed.base, path: &sealed.path, quarantine_dir, is_last: true };
            match recover_segment(&found, events)? {
                Some(seg) => open_active(fs, seg)?,
                None => create_segment(fs, lane, dir, sealed.next, opts, Reserve::Now)?,
            }
        }
        None => create_segment(fs, lane, dir, 0, opts, Reserve::Later)?,
    };
    // A lane's first segment, short of its early roll, is left as it is: a
    // lane that never received data keeps a header-only file, and one with
    // a few frames is not zero-filled at start (see `segment_file::Reserve`).
    if opts.preallocate && active.bytes >= crate::spare::early_roll_at(opts.segment_bytes) {
        active_file.preallocate(opts.segment_bytes, true).map_err(io(&active.path))?;
    }
    active_file.sync_data().map_err(io(&active.path))?;
    let mut sealed = Vec::with_capacity(segments.len());
    for seg in segments {
        sealed.push(match seg {
            Opened::Scanned(seg) => {
                check_summary(fs, lane, &seg, events)?;
                SealedSegment::new(seg)
            }
            Opened::Trusted(seg) => seg,
        });
    }
    Ok(RecoveredLane { sealed, active, active_file })
}

/// A segment file as the open found it.
enum Opened {
    /// Read and scanned (the recovery rules applied): its frames known.
    Scanned(RecoveredSegment),
    /// A sealed segment taken on its summary's word (see [`trusted_sealed`]).
    Trusted(SealedSegment),
}

impl Opened {
    fn base(&self) -> u64 {
        match self {
            Opened::Scanned(s) => s.base,
            Opened::Trusted(s) => s.base,
        }
    }

    fn next(&self) -> u64 {
        match self {
            Opened::Scanned(s) => s.next,
            Opened::Trusted(s) => s.next,
        }
    }
}

fn open_active(fs: &dyn FileSystem, seg: RecoveredSegment) -> Result<(RecoveredSegment, Arc<dyn WalFile>)> {
    let file = fs.open_rw(&seg.path).map_err(io(&seg.path))?;
    Ok((seg, file))
}

/// Sealed segments: a sealed segment is trimmed to its last frame and its
/// summary written beside it; both are derived from frames already synced.
/// When the summary is intact (its crc32c), names this segment, and the
/// file is exactly as long as it says, the segment is taken on its word:
/// only its header is read at open, and its frames are scanned — and every
/// frame's MAC checked — at its first read (`SealedSegment::frames`). A
/// crash or power loss before the trim or the summary reached the disk
/// leaves one of them missing or disagreeing, and the segment is scanned
/// here as before. Never the lane's last file (a crash may have left it
/// mid-write). So a restart reads a few bytes per sealed segment, not the
/// whole log.
fn trusted_sealed(found: &Found<'_>) -> Option<SealedSegment> {
    if found.is_last {
        return None;
    }
    let sum = Summary::decode(&found.fs.read_copy(&summary_path(found.path)).ok()?)?;
    let len = found.fs.file_len(found.path).ok()?;
    let plausible = sum.base_offset == found.base
        && sum.bytes == len
        && len >= SEGMENT_HEADER_LEN as u64
        && sum.next_offset >= sum.base_offset;
    if !plausible {
        return None;
    }
    let file = found.fs.open_rw(found.path).ok()?;
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    file.read_exact_at(&mut head, 0).ok()?;
    let header = SegmentHeader::decode(&head).ok()?;
    (header.lane == found.lane && header.base_offset == found.base)
        .then(|| SealedSegment::summarised(found.path.to_path_buf(), header.key, &sum))
}

/// A segment file found in a lane's directory, and where it goes if it is
/// damaged.
struct Found<'a> {
    fs: &'a dyn FileSystem,
    lane: LaneId,
    /// The base offset its name says.
    base: u64,
    path: &'a Path,
    quarantine_dir: &'a Path,
    /// It is the lane's last segment (the one a crash may have left mid-write).
    is_last: bool,
}

/// Apply the recovery rules to one segment file: `None` when it holds no
/// segment any more (removed, or quarantined whole).
fn recover_segment(found: &Found<'_>, events: &mut Vec<RecoveryEvent>) -> Result<Option<RecoveredSegment>> {
    let path = found.path;
    let bytes = found.fs.read_all(path).map_err(io(path))?;
    let file_len = bytes.len() as u64;
    let header = match SegmentHeader::decode(&bytes) {
        Ok(h) if h.lane == found.lane && h.base_offset == found.base => h,
        Err(FrameError::UnsupportedFormat(version)) => {
            return Err(WalError::UnsupportedFormat {
                path: path.to_path_buf(),
                version,
                current: crate::segment::SEGMENT_VERSION,
            });
        }
        Ok(_) | Err(_) => {
            let never_written = found.is_last && bytes.iter().take(SEGMENT_HEADER_LEN * 2).all(|&b| b == 0);
            drop(bytes);
            discard_headerless(found, never_written, file_len, events)?;
            return Ok(None);
        }
    };
    let scanned = scan(&bytes, &header);
    if !scanned.corruptions.is_empty() {
        return quarantine_corrupt(found, bytes, header, scanned, events).map(Some);
    }
    drop(bytes);
    cut_tail(found, &scanned, file_len, events)?;
    Ok(Some(recovered(path, &header, scanned)))
}

/// A segment without a usable header. The lane's last one, all zeros: the
/// roll that created it never synced its header, so nothing in it was ever
/// acknowledged: remove it. Any other: quarantine it whole.
fn discard_headerless(
    found: &Found<'_>,
    never_written: bool,
    file_len: u64,
    events: &mut Vec<RecoveryEvent>,
) -> Result<()> {
    let (fs, lane, path) = (found.fs, found.lane, found.path);
    if never_written {
        fs.remove_file(path).map_err(io(path))?;
        sync_parent(fs, path)?;
        events.push(RecoveryEvent::RemovedEmptySegment { lane, path: path.to_path_buf() });
        return Ok(());
    }
    let moved_to = move_to_quarantine(fs, lane, path, found.quarantine_dir)?;
    let corruptions = vec![Corruption {
        at: 0,
        what: FrameError::BadMagic,
        resumes_at: file_len,
        lost_offsets: (found.base, found.base),
    }];
    events.push(RecoveryEvent::Quarantined { lane, path: path.to_path_buf(), moved_to, corruptions });
    Ok(())
}

/// A segment with damage between valid frames: a copy holding every valid
/// frame takes its place, the damaged file goes to quarantine.
fn quarantine_corrupt(
    found: &Found<'_>,
    bytes: FileBytes,
    header: SegmentHeader,
    scanned: Scan,
    events: &mut Vec<RecoveryEvent>,
) -> Result<RecoveredSegment> {
    // The copy keeps the key: its frames stay authentic as they are.
    let clean_header = SegmentHeader { recycled: false, ..header };
    let mut clean = clean_header.encode().to_vec();
    for frame in &scanned.frames {
        clean.extend_from_slice(&bytes[frame.pos as usize..frame.end() as usize]);
    }
    drop(bytes);
    let moved_to = quarantine_keeping_frames(found.fs, found.lane, found.path, &clean, found.quarantine_dir)?;
    events.push(RecoveryEvent::Quarantined {
        lane: found.lane,
        path: found.path.to_path_buf(),
        moved_to,
        corruptions: scanned.corruptions,
    });
    let rescanned = scan(&clean, &clean_header);
    debug_assert!(rescanned.corruptions.is_empty() && rescanned.tail == Tail::Clean, "a cleaned copy is clean");
    Ok(recovered(found.path, &clean_header, rescanned))
}

/// Cut what follows the last valid frame, and sync the cut. A zero tail on
/// the active segment is its preallocated space: kept (already zero-filled)
/// rather than cut and filled again. A stale tail is cut: recycled bytes
/// never outlive a restart.
fn cut_tail(found: &Found<'_>, scanned: &Scan, file_len: u64, events: &mut Vec<RecoveryEvent>) -> Result<()> {
    let keep_zero_tail = found.is_last && matches!(scanned.tail, Tail::Zeros { .. });
    if scanned.valid_end >= file_len || keep_zero_tail {
        return Ok(());
    }
    let torn = matches!(scanned.tail, Tail::Torn { .. });
    if torn || !found.is_last {
        events.push(RecoveryEvent::TruncatedTail {
            lane: found.lane,
            path: found.path.to_path_buf(),
            at: scanned.valid_end,
            bytes: file_len - scanned.valid_end,
            torn,
        });
    }
    let path = found.path;
    let file = found.fs.open_rw(path).map_err(io(path))?;
    file.set_len(scanned.valid_end).map_err(io(path))?;
    file.sync_data().map_err(io(path))?;
    Ok(())
}

fn recovered(path: &Path, header: &SegmentHeader, scanned: Scan) -> RecoveredSegment {
    let base = header.base_offset;
    RecoveredSegment {
        path: path.to_path_buf(),
        base,
        next: scanned.next_offset(base),
        bytes: scanned.valid_end,
        frames: scanned.frames,
        key: header.key,
    }
}

/// Replace the damaged segment at `path` by `clean` (its authentic frames),
/// moving the damaged file into quarantine. Crash-safe at every step: the
/// copy is synced and its name made durable *before* the segment moves, so
/// whenever `<base>.seg` is missing, `<base>.seg.tmp` is a whole copy, which
/// [`finish_clean_copy`] puts in place at the next start.
fn quarantine_keeping_frames(
    fs: &dyn FileSystem,
    lane: LaneId,
    path: &Path,
    clean: &[u8],
    quarantine_dir: &Path,
) -> Result<PathBuf> {
    let tmp = clean_copy_path(path);
    if fs.exists(&tmp) {
        fs.remove_file(&tmp).map_err(io(&tmp))?;
    }
    let f = fs.create_new(&tmp).map_err(io(&tmp))?;
    f.write_all_at(clean, 0).map_err(io(&tmp))?;
    f.sync_data().map_err(io(&tmp))?;
    sync_parent(fs, &tmp)?;
    let moved_to = move_to_quarantine(fs, lane, path, quarantine_dir)?;
    fs.rename(&tmp, path).map_err(io(path))?;
    sync_parent(fs, path)?;
    Ok(moved_to)
}

/// A cleaned copy found at start: if its segment is gone, a crash
/// interrupted [`quarantine_keeping_frames`] after the segment moved, and
/// the copy is whole: put it in place. Otherwise the copy may be partial
/// and the segment is still there (to be quarantined again): drop the copy.
fn finish_clean_copy(
    fs: &dyn FileSystem,
    lane: LaneId,
    tmp: &Path,
    seg: &Path,
    events: &mut Vec<RecoveryEvent>,
) -> Result<()> {
    if fs.exists(seg) {
        fs.remove_file(tmp).map_err(io(tmp))?;
    } else {
        fs.rename(tmp, seg).map_err(io(seg))?;
        events.push(RecoveryEvent::QuarantineCompleted { lane, path: seg.to_path_buf() });
    }
    sync_parent(fs, seg)
}

fn check_summary(
    fs: &dyn FileSystem,
    lane: LaneId,
    seg: &RecoveredSegment,
    events: &mut Vec<RecoveryEvent>,
) -> Result<()> {
    let want = summary_of(seg);
    let sum_path = summary_path(&seg.path);
    let have = fs.read_all(&sum_path).ok().and_then(|b| Summary::decode(&b));
    if have != Some(want) {
        write_summary(fs, &seg.path, &want, true)?;
        events.push(RecoveryEvent::SummaryRebuilt { lane, path: sum_path });
    }
    Ok(())
}

fn summary_of(seg: &RecoveredSegment) -> Summary {
    Summary::from_frames(seg.base, seg.bytes, &seg.frames)
}

fn move_to_quarantine(fs: &dyn FileSystem, lane: LaneId, path: &Path, quarantine_dir: &Path) -> Result<PathBuf> {
    let dir = crate::layout::lane_dir(quarantine_dir, lane);
    ensure_dir(fs, &dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("segment");
    let mut n = 0u32;
    let target = loop {
        let t = dir.join(format!("{name}.{n}"));
        if !fs.exists(&t) {
            break t;
        }
        n += 1;
    };
    fs.rename(path, &target).map_err(io(path))?;
    fs.sync_dir(&dir).map_err(io(&dir))?;
    sync_parent(fs, path)?;
    Ok(target)
}

fn sync_parent(fs: &dyn FileSystem, path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) => fs.sync_dir(dir).map_err(io(dir)),
        None => Ok(()),
    }
}
