//! Opening a lane directory: apply the recovery rules of [`crate::segment`]
//! to every segment, and hand the writer an active segment that ends at its
//! last valid frame.
//!
//! Each rule leaves a [`RecoveryEvent`] so operators see what happened; none
//! of them crashes the process or drops a valid frame.

use crate::error::{Result, WalError};
use crate::fs::{FileSystem, WalFile};
use crate::lane_id::LaneId;
use crate::segment::{
    decode_header, encode_header, scan, segment_file_name, Corruption, FrameLoc, Scan, Summary, Tail, SEGMENT_EXT,
    SEGMENT_HEADER_LEN, SUMMARY_EXT,
};
use crate::WalOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What recovery did to the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryEvent {
    /// Bytes after the last valid frame were cut off. `torn` is false for the
    /// zeros that preallocation leaves behind (the normal case after a stop).
    TruncatedTail { lane: LaneId, path: PathBuf, at: u64, bytes: u64, torn: bool },
    /// A segment with corrupt frames between valid ones was moved to
    /// `moved_to`; a copy holding only its valid frames took its place.
    Quarantined { lane: LaneId, path: PathBuf, moved_to: PathBuf, corruptions: Vec<Corruption> },
    /// A segment whose header was never completely written held no frame and was removed.
    RemovedEmptySegment { lane: LaneId, path: PathBuf },
    /// A segment summary was missing or disagreed with its segment and was rewritten.
    SummaryRebuilt { lane: LaneId, path: PathBuf },
    /// Offsets missing between two segments (data lost before this start).
    OffsetGap { lane: LaneId, from: u64, to: u64 },
}

impl RecoveryEvent {
    /// Whether the event means damage (as opposed to routine tidying).
    pub fn is_damage(&self) -> bool {
        !matches!(self, RecoveryEvent::TruncatedTail { torn: false, .. } | RecoveryEvent::SummaryRebuilt { .. })
    }
}

pub(crate) struct RecoveredSegment {
    pub path: PathBuf,
    pub base: u64,
    pub next: u64,
    pub frames: Vec<FrameLoc>,
    pub bytes: u64,
}

pub(crate) struct RecoveredLane {
    pub sealed: Vec<RecoveredSegment>,
    pub active: RecoveredSegment,
    pub active_file: Arc<dyn WalFile>,
}

pub(crate) fn summary_path(seg: &Path) -> PathBuf {
    seg.with_extension(SUMMARY_EXT)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |e| WalError::io(path, e)
}

/// Segment files of a lane directory, ordered by base offset.
pub(crate) fn segment_paths(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for p in fs.list_dir(dir).map_err(io(dir))? {
        if p.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
            continue;
        }
        if let Some(base) = p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()) {
            out.push((base, p));
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn recover_lane(
    fs: &dyn FileSystem,
    lane: LaneId,
    dir: &Path,
    quarantine_dir: &Path,
    opts: &WalOptions,
    events: &mut Vec<RecoveryEvent>,
) -> Result<RecoveredLane> {
    fs.create_dir_all(dir).map_err(io(dir))?;
    for p in fs.list_dir(dir).map_err(io(dir))? {
        if p.extension().and_then(|e| e.to_str()) == Some(SPARE_EXT) {
            // A spare segment never used: holds no frame.
            fs.remove_file(&p).map_err(io(&p))?;
        }
    }
    let paths = segment_paths(fs, dir)?;
    let mut segments: Vec<RecoveredSegment> = Vec::with_capacity(paths.len());
    for (i, (base, path)) in paths.iter().enumerate() {
        let is_last = i + 1 == paths.len();
        if let Some(seg) = recover_segment(fs, lane, *base, path, quarantine_dir, opts, is_last, events)? {
            if let Some(prev) = segments.last() {
                if prev.next != seg.base {
                    events.push(RecoveryEvent::OffsetGap { lane, from: prev.next, to: seg.base });
                }
            }
            segments.push(seg);
        }
    }
    let (active, active_file) = match segments.pop() {
        Some(seg) => {
            let f = fs.open_rw(&seg.path).map_err(io(&seg.path))?;
            (seg, f)
        }
        None => create_segment(fs, lane, dir, 0, opts)?,
    };
    if opts.preallocate {
        active_file.preallocate(opts.segment_bytes, true).map_err(io(&active.path))?;
    }
    active_file.sync_data().map_err(io(&active.path))?;
    for seg in &segments {
        check_summary(fs, lane, seg, events)?;
    }
    Ok(RecoveredLane { sealed: segments, active, active_file })
}

#[allow(clippy::too_many_arguments)]
fn recover_segment(
    fs: &dyn FileSystem,
    lane: LaneId,
    base: u64,
    path: &Path,
    quarantine_dir: &Path,
    opts: &WalOptions,
    is_last: bool,
    events: &mut Vec<RecoveryEvent>,
) -> Result<Option<RecoveredSegment>> {
    let bytes = fs.read_all(path).map_err(io(path))?;
    let file_len = bytes.len() as u64;
    match decode_header(&bytes) {
        Ok((l, b)) if l == lane && b == base => {}
        Ok(_) | Err(_) if is_last && bytes.iter().take(SEGMENT_HEADER_LEN * 2).all(|&b| b == 0) => {
            // The roll that created it never synced its header: nothing was
            // ever acknowledged in it.
            drop(bytes);
            fs.remove_file(path).map_err(io(path))?;
            sync_parent(fs, path)?;
            events.push(RecoveryEvent::RemovedEmptySegment { lane, path: path.to_path_buf() });
            return Ok(None);
        }
        Ok(_) | Err(_) => {
            drop(bytes);
            let moved_to = move_to_quarantine(fs, lane, path, quarantine_dir)?;
            let corruptions = vec![Corruption {
                at: 0,
                what: crate::error::FrameError::BadMagic,
                resumes_at: file_len,
                lost_offsets: (base, base),
            }];
            events.push(RecoveryEvent::Quarantined { lane, path: path.to_path_buf(), moved_to, corruptions });
            return Ok(None);
        }
    }
    let mut s = scan(&bytes, base, opts.max_frame_bytes);
    if !s.corruptions.is_empty() {
        let mut clean = encode_header(lane, base).to_vec();
        for f in &s.frames {
            clean.extend_from_slice(&bytes[f.pos as usize..f.end() as usize]);
        }
        drop(bytes);
        let tmp = path.with_extension("seg.tmp");
        if fs.exists(&tmp) {
            fs.remove_file(&tmp).map_err(io(&tmp))?;
        }
        let f = fs.create_new(&tmp).map_err(io(&tmp))?;
        f.write_all_at(&clean, 0).map_err(io(&tmp))?;
        f.sync_data().map_err(io(&tmp))?;
        let moved_to = move_to_quarantine(fs, lane, path, quarantine_dir)?;
        fs.rename(&tmp, path).map_err(io(path))?;
        sync_parent(fs, path)?;
        events.push(RecoveryEvent::Quarantined {
            lane,
            path: path.to_path_buf(),
            moved_to,
            corruptions: s.corruptions.clone(),
        });
        s = scan(&clean, base, opts.max_frame_bytes);
        return Ok(Some(recovered(path, base, s)));
    }
    drop(bytes);
    // A zero tail on the active segment is its preallocated space: keep it
    // (already zero-filled) rather than cut and fill it again. A stale tail
    // is cut: recycled bytes never outlive a restart.
    let keep_zero_tail = is_last && matches!(s.tail, Tail::Zeros { .. });
    if s.valid_end < file_len && !keep_zero_tail {
        let torn = matches!(s.tail, Tail::Torn { .. });
        if torn || !is_last {
            events.push(RecoveryEvent::TruncatedTail {
                lane,
                path: path.to_path_buf(),
                at: s.valid_end,
                bytes: file_len - s.valid_end,
                torn,
            });
        }
        let f = fs.open_rw(path).map_err(io(path))?;
        f.set_len(s.valid_end).map_err(io(path))?;
        f.sync_data().map_err(io(path))?;
    }
    Ok(Some(recovered(path, base, s)))
}

fn recovered(path: &Path, base: u64, s: Scan) -> RecoveredSegment {
    RecoveredSegment { path: path.to_path_buf(), base, next: s.next_offset(base), bytes: s.valid_end, frames: s.frames }
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

/// Write a summary beside a segment: temp file, rename. With `durable`,
/// the file and the rename are synced. Without, a crash may leave the
/// summary missing, empty or old; recovery checks every summary against its
/// segment and rebuilds it, so a roll need not wait for two more syncs.
pub(crate) fn write_summary(fs: &dyn FileSystem, seg_path: &Path, sum: &Summary, durable: bool) -> Result<()> {
    let path = summary_path(seg_path);
    let tmp = path.with_extension("sum.tmp");
    if fs.exists(&tmp) {
        fs.remove_file(&tmp).map_err(io(&tmp))?;
    }
    let f = fs.create_new(&tmp).map_err(io(&tmp))?;
    f.write_all_at(&sum.encode(), 0).map_err(io(&tmp))?;
    if durable {
        f.sync_data().map_err(io(&tmp))?;
    }
    fs.rename(&tmp, &path).map_err(io(&path))?;
    if durable {
        sync_parent(fs, &path)?;
    }
    Ok(())
}

pub(crate) const SPARE_EXT: &str = "spare";

/// Prepare the file of the next segment, off the commit path: reuse a
/// released segment of this lane when one waits (see [`crate::recycle`]),
/// else create one; then preallocate (zero-filling on request) and sync.
pub(crate) fn prepare_spare(
    fs: &dyn FileSystem,
    dir: &Path,
    opts: &WalOptions,
    zero_fill: bool,
    recycled: Option<PathBuf>,
) -> Result<(PathBuf, Arc<dyn WalFile>)> {
    let path = dir.join(format!("next.{SPARE_EXT}"));
    if fs.exists(&path) {
        fs.remove_file(&path).map_err(io(&path))?;
    }
    let reused = recycled.and_then(|old| match fs.rename(&old, &path).and_then(|()| fs.open_rw(&path)) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(path = %old.display(), error = %e, "could not reuse a released segment");
            let _ = fs.remove_file(&old);
            let _ = fs.remove_file(&path);
            None
        }
    });
    let f = match reused {
        Some(f) => f,
        None => fs.create_new(&path).map_err(io(&path))?,
    };
    let fill = || -> std::io::Result<()> {
        f.preallocate(opts.segment_bytes, zero_fill)?;
        f.sync_data()
    };
    if let Err(e) = fill() {
        let _ = fs.remove_file(&path);
        return Err(WalError::io(&path, e));
    }
    Ok((path, f))
}

/// Turn a prepared spare into the segment starting at `base`: header, sync,
/// rename, directory sync.
pub(crate) fn segment_from_spare(
    fs: &dyn FileSystem,
    lane: LaneId,
    dir: &Path,
    base: u64,
    spare: (PathBuf, Arc<dyn WalFile>),
) -> Result<(RecoveredSegment, Arc<dyn WalFile>)> {
    let (spare_path, f) = spare;
    let path = dir.join(segment_file_name(base));
    let setup = || -> std::io::Result<()> {
        f.write_all_at(&encode_header(lane, base), 0)?;
        f.sync_data()?;
        fs.rename(&spare_path, &path)?;
        fs.sync_dir(dir)
    };
    setup().map_err(|e| WalError::io(&path, e))?;
    let seg = RecoveredSegment { path, base, next: base, frames: Vec::new(), bytes: SEGMENT_HEADER_LEN as u64 };
    Ok((seg, f))
}

/// Create, preallocate and sync a fresh segment, then make its name durable.
pub(crate) fn create_segment(
    fs: &dyn FileSystem,
    lane: LaneId,
    dir: &Path,
    base: u64,
    opts: &WalOptions,
) -> Result<(RecoveredSegment, Arc<dyn WalFile>)> {
    let path = dir.join(segment_file_name(base));
    if fs.exists(&path) {
        // Left by a roll that failed before it was used: holds no frame.
        fs.remove_file(&path).map_err(io(&path))?;
    }
    let f = fs.create_new(&path).map_err(io(&path))?;
    let setup = || -> std::io::Result<()> {
        f.write_all_at(&encode_header(lane, base), 0)?;
        if opts.preallocate {
            f.preallocate(opts.segment_bytes, true)?;
        }
        f.sync_data()?;
        fs.sync_dir(dir)
    };
    if let Err(e) = setup() {
        let _ = fs.remove_file(&path);
        return Err(WalError::io(&path, e));
    }
    let seg = RecoveredSegment { path, base, next: base, frames: Vec::new(), bytes: SEGMENT_HEADER_LEN as u64 };
    Ok((seg, f))
}

fn move_to_quarantine(fs: &dyn FileSystem, lane: LaneId, path: &Path, quarantine_dir: &Path) -> Result<PathBuf> {
    let dir = quarantine_dir.join(lane.priority.as_str()).join(lane.shard.to_string());
    fs.create_dir_all(&dir).map_err(io(&dir))?;
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
