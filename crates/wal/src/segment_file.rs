//! Creating segment files: new segments, spares, and summaries.
//!
//! Every file a lane writes starts here, and every multi-step change is
//! ordered so that a crash between any two of its operations leaves either
//! the old state or the new one, which recovery tells apart:
//! - a segment is named only after its header (with a fresh [`FrameKey`])
//!   is synced, and its name is made durable before any frame is written;
//! - a spare has a name of its own ([`crate::layout::spare_name`]), so no
//!   other thread or earlier instance can swap the file behind it; recovery
//!   deletes every spare, which holds no frame;
//! - a reused file gets a new key before it is named a segment, so what the
//!   earlier generation wrote never verifies again;
//! - a new directory's entry is synced in its parent.

use crate::error::{Result, WalError};
use crate::frame::FrameKey;
use crate::fs::{FileSystem, WalFile};
use crate::lane_id::LaneId;
use crate::layout::{segment_file_name, summary_path};
use crate::segment::{SegmentHeader, Summary, SEGMENT_HEADER_LEN};
use crate::WalOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A segment as the lane tracks it.
#[derive(Clone)]
pub(crate) struct RecoveredSegment {
    pub path: PathBuf,
    pub base: u64,
    pub next: u64,
    pub frames: Vec<crate::segment::FrameLoc>,
    pub bytes: u64,
    pub key: FrameKey,
}

impl RecoveredSegment {
    fn empty(path: PathBuf, header: &SegmentHeader) -> Self {
        RecoveredSegment {
            path,
            base: header.base_offset,
            next: header.base_offset,
            frames: Vec::new(),
            bytes: SEGMENT_HEADER_LEN as u64,
            key: header.key,
        }
    }
}

/// A file prepared to become the next segment.
pub(crate) struct Spare {
    pub path: PathBuf,
    pub file: Arc<dyn WalFile>,
    /// It held an earlier segment of the lane.
    pub recycled: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |e| WalError::io(path, e)
}

fn new_header(lane: LaneId, base: u64, recycled: bool, path: &Path) -> Result<SegmentHeader> {
    let key = FrameKey::random().map_err(io(path))?;
    Ok(SegmentHeader { lane, base_offset: base, key, recycled })
}

/// Create `dir` and any missing parents, syncing each new directory's
/// entry in its parent (a directory nobody synced may vanish at a crash,
/// with every segment in it).
pub(crate) fn ensure_dir(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.as_os_str().is_empty() && !fs.exists(a)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs.create_dir_all(dir).map_err(io(dir))?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent).map_err(io(parent))?;
        }
    }
    Ok(())
}

/// Create, preallocate and sync a fresh segment, then make its name durable.
/// Whether a new segment's space is reserved (and zero-filled) when it is
/// created, or left to grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserve {
    /// Preallocated now (`WalOptions::preallocate`): a roll that found no spare.
    Now,
    /// Header only: a lane's first segment, created at open whether or not
    /// the lane ever receives data. It grows with its first frames until
    /// the writer rolls to a spare prepared off the commit path (see
    /// `writer`, "Idle lanes"), so an idle lane costs one small file and
    /// no first request waits for a zero fill.
    Later,
}

pub(crate) fn create_segment(
    fs: &dyn FileSystem,
    lane: LaneId,
    dir: &Path,
    base: u64,
    opts: &WalOptions,
    reserve: Reserve,
) -> Result<(RecoveredSegment, Arc<dyn WalFile>)> {
    let path = dir.join(segment_file_name(base));
    let header = new_header(lane, base, false, &path)?;
    if fs.exists(&path) {
        // Left by a roll of this instance that failed before it was used:
        // its name was never published, so it holds no acknowledged frame.
        fs.remove_file(&path).map_err(io(&path))?;
    }
    let f = fs.create_new(&path).map_err(io(&path))?;
    let setup = || -> std::io::Result<()> {
        f.write_all_at(&header.encode(), 0)?;
        if opts.preallocate && reserve == Reserve::Now {
            f.preallocate(opts.segment_bytes, true)?;
        }
        f.sync_data()?;
        fs.sync_dir(dir)
    };
    if let Err(e) = setup() {
        let _ = fs.remove_file(&path);
        return Err(WalError::io(&path, e));
    }
    Ok((RecoveredSegment::empty(path, &header), f))
}

/// Prepare the file of the next segment under the spare name `name`, off
/// the commit path: reuse a released segment of this lane when one waits
/// (see [`crate::recycle`]), else create one; then preallocate
/// (zero-filling on request) and sync.
pub(crate) fn prepare_spare(
    fs: &dyn FileSystem,
    dir: &Path,
    name: &str,
    opts: &WalOptions,
    zero_fill: bool,
    recycled: Option<PathBuf>,
) -> Result<Spare> {
    let path = dir.join(name);
    debug_assert!(!fs.exists(&path), "spare names are never reused");
    let reused = recycled.and_then(|old| match fs.rename(&old, &path).and_then(|()| fs.open_rw(&path)) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(path = %old.display(), error = %e, "could not reuse a released segment");
            let _ = fs.remove_file(&old);
            let _ = fs.remove_file(&path);
            None
        }
    });
    let was_recycled = reused.is_some();
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
    Ok(Spare { path, file: f, recycled: was_recycled })
}

/// Turn a prepared spare into the segment starting at `base`: a header with
/// a fresh key, sync, rename, directory sync. The spare's name is this
/// lane's alone, so the file renamed is the file whose header was written.
pub(crate) fn segment_from_spare(
    fs: &dyn FileSystem,
    lane: LaneId,
    dir: &Path,
    base: u64,
    spare: Spare,
) -> Result<(RecoveredSegment, Arc<dyn WalFile>)> {
    let path = dir.join(segment_file_name(base));
    let header = new_header(lane, base, spare.recycled, &path)?;
    let f = spare.file;
    let setup = || -> std::io::Result<()> {
        f.write_all_at(&header.encode(), 0)?;
        f.sync_data()?;
        fs.rename(&spare.path, &path)?;
        fs.sync_dir(dir)
    };
    if let Err(e) = setup() {
        // The spare's space goes back (on a full disk it is what the next
        // try needs); if it was renamed already, the next roll replaces it.
        let _ = fs.remove_file(&spare.path);
        return Err(WalError::io(&path, e));
    }
    Ok((RecoveredSegment::empty(path, &header), f))
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
        if let Some(dir) = path.parent() {
            fs.sync_dir(dir).map_err(io(dir))?;
        }
    }
    Ok(())
}
