//! Read-only inspection of a WAL directory, for `broker-admin`.
//!
//! Nothing here writes, locks, truncates or maps: it is safe beside a
//! running broker by construction. Files are read with positional reads into
//! memory ([`FileSystem::read_copy`]), never mapped, so a segment the broker
//! cuts at a roll or overwrites when it reuses a released file can only give
//! a shorter or newer read, never SIGBUS. Frames are authenticated under the
//! key of the header read with them, and [`visit_segment_frames`] re-reads
//! the header to check the file is still the generation it scanned: a file
//! reused meanwhile is skipped, never read as the old segment, and one
//! deleted or recycled since the listing is left out. Callers stop
//! at the broker's published durable watermark ([`durable_watermark`]).
//! A segment being appended to may show a zero tail (preallocated space) —
//! that is not damage; a torn tail there may be a write in flight.

use crate::error::{FrameError, Result, WalError};
use crate::frame::{check_frame, FrameView};
use crate::fs::FileSystem;
use crate::lane_id::LaneId;
use crate::layout::{quarantine_lane_dir, segment_paths, summary_path, WATERMARK_FILE};
use crate::segment::{scan, Scan, SegmentHeader, Summary, Tail, SEGMENT_HEADER_LEN};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

pub use crate::layout::lanes_on_disk;
use crate::layout::{lane_dir, QUARANTINE_DIR};

/// One segment file as found on disk.
#[derive(Debug, Clone)]
pub struct SegmentReport {
    /// The lane whose directory holds the file.
    pub lane: LaneId,
    /// The file.
    pub path: PathBuf,
    /// From the header, or from the file's name when the header is unusable.
    pub base_offset: u64,
    /// Bytes of the file as read.
    pub file_len: u64,
    /// Why the header is unusable, if it is.
    pub header_error: Option<FrameError>,
    /// The header as scanned (its key authenticates the frames; never shown).
    header: Option<SegmentHeader>,
    /// What the scan found (no frame when the header is unusable).
    pub scan: Scan,
    /// Whether the summary beside it agrees with the segment (None: no summary).
    pub summary_ok: Option<bool>,
    /// Whether that summary is intact (its own crc holds). An intact summary
    /// that disagrees means the segment changed after it was sealed; a
    /// damaged or empty one is what a crash leaves of an unsynced write.
    pub summary_intact: bool,
    /// The file sits under `quarantine/`, outside the live log.
    pub quarantined: bool,
}

impl SegmentReport {
    /// Records in the valid frames found.
    pub fn records(&self) -> u64 {
        self.scan.records()
    }
    /// The offset after the last valid frame (the base when there is none).
    pub fn next_offset(&self) -> u64 {
        self.scan.next_offset(self.base_offset)
    }

    /// Offset ranges `[from, to)` whose records this file lost: its corrupt
    /// regions, or, when its header is unusable, everything from its base
    /// (`to` is `None`: the end is unknown).
    pub fn lost_offsets(&self) -> Vec<(u64, Option<u64>)> {
        if self.header_error.is_some() {
            return vec![(self.base_offset, None)];
        }
        self.scan.corruptions.iter().map(|c| (c.lost_offsets.0, Some(c.lost_offsets.1))).collect()
    }
}

/// Scan one segment file without modifying it.
pub(crate) fn inspect_segment(
    fs: &dyn FileSystem,
    lane: LaneId,
    path: &Path,
    quarantined: bool,
) -> Result<SegmentReport> {
    let bytes = fs.read_copy(path).map_err(|e| WalError::io(path, e))?;
    let name_base = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.split('.').next())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let (header_error, header) = match SegmentHeader::decode(&bytes) {
        Ok(h) => (None, Some(h)),
        Err(e) => (Some(e), None),
    };
    let base = header.map_or(name_base, |h| h.base_offset);
    let s = match &header {
        Some(h) => scan(&bytes, h),
        // Without the key nothing in the file can be authenticated.
        None => {
            let end = SEGMENT_HEADER_LEN.min(bytes.len()) as u64;
            Scan { frames: Vec::new(), valid_end: end, tail: Tail::Clean, corruptions: Vec::new() }
        }
    };
    let summary = fs.read_all(&summary_path(path)).ok().map(|b| Summary::decode(&b));
    let summary_ok = summary.as_ref().map(|sum| *sum == Some(Summary::of(base, &s)));
    let summary_intact = matches!(summary, Some(Some(_)));
    Ok(SegmentReport {
        lane,
        path: path.to_path_buf(),
        base_offset: base,
        file_len: bytes.len() as u64,
        header_error,
        header,
        scan: s,
        summary_ok,
        summary_intact,
        quarantined,
    })
}

/// Every segment of every lane (and the quarantined ones), in lane order.
pub fn inspect_all(fs: &dyn FileSystem, wal_dir: &Path) -> Result<Vec<SegmentReport>> {
    let mut out = Vec::new();
    for lane in lanes_on_disk(fs, wal_dir)? {
        for (_, path) in segment_paths(fs, &lane_dir(wal_dir, lane))? {
            out.extend(present(inspect_segment(fs, lane, &path, false))?);
        }
        let qdir = quarantine_lane_dir(wal_dir, lane);
        if fs.exists(&qdir) {
            for path in fs.list_dir(&qdir).map_err(|e| WalError::io(&qdir, e))? {
                out.extend(present(inspect_segment(fs, lane, &path, true))?);
            }
        }
    }
    Ok(out)
}

/// Beside a running broker, retention may delete a segment (or recycle it
/// as a spare) between the directory listing and the read: the file is no
/// longer a segment, so it is left out rather than failing the whole scan.
fn present<T>(read: Result<T>) -> Result<Option<T>> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(WalError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every file under `<wal_dir>/quarantine/<priority>/<shard>/`.
pub(crate) fn quarantined_files(fs: &dyn FileSystem, wal_dir: &Path) -> Result<Vec<PathBuf>> {
    let qdir = wal_dir.join(QUARANTINE_DIR);
    let mut out = Vec::new();
    for lane in lanes_on_disk(fs, &qdir)? {
        let d = quarantine_lane_dir(wal_dir, lane);
        out.extend(fs.list_dir(&d).map_err(|e| WalError::io(&d, e))?);
    }
    Ok(out)
}

/// The durable next offset a running broker published for `lane` (see
/// `LaneShared::watermark`); `None` when there is none.
pub fn durable_watermark(fs: &dyn FileSystem, wal_dir: &Path, lane: LaneId) -> Option<u64> {
    let b = fs.read_copy(&lane_dir(wal_dir, lane).join(WATERMARK_FILE)).ok()?;
    Some(u64::from_le_bytes(b.get(0..8)?.try_into().ok()?))
}

/// Visit the valid frames of one segment file from offset `from`. A file
/// that is no longer the generation the report scanned (reused meanwhile)
/// yields nothing.
pub fn visit_segment_frames(
    fs: &dyn FileSystem,
    report: &SegmentReport,
    from: u64,
    mut visit: impl FnMut(&FrameView<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>> {
    let Some(header) = report.header else {
        return Ok(ControlFlow::Continue(()));
    };
    let read = fs.read_copy(&report.path).map_err(|e| WalError::io(&report.path, e));
    let Some(bytes) = present(read)? else {
        return Ok(ControlFlow::Continue(()));
    };
    if SegmentHeader::decode(&bytes).ok() != Some(header) {
        return Ok(ControlFlow::Continue(()));
    }
    for loc in report.scan.frames.iter().filter(|f| f.next_offset() > from) {
        let b = bytes.get(loc.pos as usize..loc.end() as usize).unwrap_or(&[]);
        // The file may have changed since the scan (a running broker): check again.
        let Ok(h) = check_frame(b, &header.key) else {
            continue;
        };
        let Ok(view) = FrameView::decode(b, h) else {
            continue;
        };
        if visit(&view).is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(()))
}
