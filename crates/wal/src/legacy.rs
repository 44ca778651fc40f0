//! Format 1 — crc-only frames, segments without a key — read only to
//! convert it: `broker-admin migrate` (see `docs/wal.md`, upgrading).
//!
//! Format 1 cannot tell a frame from bytes a tenant sent that look like one
//! (see [`crate::frame`]), so this reader never resynchronises: it takes
//! frames in order from the segment header while each is valid and its
//! offsets do not go back, and stops at the first that is not. Whatever
//! follows that is not zeros is kept aside in the quarantine directory
//! (`<segment>.v1.<n>`) and reported, never read as records.
//!
//! Each segment is converted in place, crash-safe at every step: the
//! current-format copy is written to `<base>.seg.migrate`, synced, and renamed
//! over the segment (atomic), then the directory is synced. A crash leaves
//! each segment in one format or the other; running `migrate` again goes on.

use crate::error::{FrameError, Result, WalError};
use crate::frame::{u32_at, u64_at, EncodedBatch, FrameKey};
use crate::fs::FileSystem;
use crate::lane_id::LaneId;
use crate::layout::{lane_dir, lanes_on_disk, quarantine_lane_dir, segment_paths, summary_path, MIGRATE_EXT};
use crate::segment::{SegmentHeader, SEGMENT_HEADER_LEN, SEGMENT_MAGIC};
use crate::segment_file::ensure_dir;
use std::path::{Path, PathBuf};

const V1_FRAME_MAGIC: u32 = 0x3146_5257;
const V1_HEADER_LEN: usize = 36;

/// What `migrate` did.
#[derive(Debug, Default)]
pub struct MigrateReport {
    /// Segments converted to the current format.
    pub segments: usize,
    /// Frames converted.
    pub frames: u64,
    /// Records in those frames.
    pub records: u64,
    /// Segments already in a format this build reads (2 or 3).
    pub current: usize,
    /// (segment, where its unreadable rest was kept, first offset not converted).
    pub kept_aside: Vec<(PathBuf, PathBuf, u64)>,
}

/// A format-1 segment header: (lane, base offset), or why it is not one.
fn v1_header(buf: &[u8]) -> Result<(LaneId, u64), FrameError> {
    if buf.len() < SEGMENT_HEADER_LEN || &buf[0..8] != SEGMENT_MAGIC {
        return Err(FrameError::BadMagic);
    }
    if u16::from_le_bytes([buf[8], buf[9]]) != 1 {
        return Err(FrameError::UnsupportedFormat(u16::from_le_bytes([buf[8], buf[9]])));
    }
    if u32_at(buf, 24) != crc32c::crc32c(&buf[0..24]) {
        return Err(FrameError::BadCrc);
    }
    let priority = crate::Priority::from_index(buf[10]).ok_or(FrameError::BadMeta)?;
    let shard = u16::try_from(u32_at(buf, 12)).map_err(|_| FrameError::BadMeta)?;
    Ok((LaneId { priority, shard }, u64_at(buf, 16)))
}

/// One format-1 frame at `b[0]`: (meta length, records, base offset, ts, body).
fn v1_frame(buf: &[u8]) -> Option<(u16, u32, u64, u64, &[u8])> {
    if buf.len() < V1_HEADER_LEN || u32_at(buf, 0) != V1_FRAME_MAGIC || buf[4] != 1 || buf[5] != 0 {
        return None;
    }
    let (meta_len, records, body_len) =
        (u16::from_le_bytes([buf[6], buf[7]]), u32_at(buf, 8), u32_at(buf, 12) as usize);
    if records == 0 || usize::from(meta_len) > body_len || buf.len() < V1_HEADER_LEN + body_len {
        return None;
    }
    let body = &buf[V1_HEADER_LEN..V1_HEADER_LEN + body_len];
    let crc = crc32c::crc32c_append(crc32c::crc32c(body), &buf[0..32]);
    (crc == u32_at(buf, 32)).then(|| (meta_len, records, u64_at(buf, 16), u64_at(buf, 24), body))
}

/// Convert every format-1 segment under `wal_dir` to the current format. The caller
/// holds the data directory's lock (no broker runs).
pub fn migrate(fs: &dyn FileSystem, wal_dir: &Path) -> Result<MigrateReport> {
    let mut report = MigrateReport::default();
    for lane in lanes_on_disk(fs, wal_dir)? {
        let dir = lane_dir(wal_dir, lane);
        for p in fs.list_dir(&dir).map_err(|e| WalError::io(&dir, e))? {
            if p.to_str().is_some_and(|s| s.ends_with(MIGRATE_EXT)) {
                fs.remove_file(&p).map_err(|e| WalError::io(&p, e))?;
            }
        }
        for (_, path) in segment_paths(fs, &dir)? {
            migrate_segment(fs, wal_dir, lane, &path, &mut report)?;
        }
    }
    Ok(report)
}

fn migrate_segment(
    fs: &dyn FileSystem,
    wal_dir: &Path,
    lane: LaneId,
    path: &Path,
    report: &mut MigrateReport,
) -> Result<()> {
    let io = |e| WalError::io(path, e);
    let bytes = fs.read_copy(path).map_err(io)?;
    let base = match v1_header(&bytes) {
        Ok((l, base)) if l == lane => base,
        // Not format 1 (format 2, or damage that recovery will judge).
        _ => {
            report.current += usize::from(SegmentHeader::decode(&bytes).is_ok());
            return Ok(());
        }
    };
    let key = FrameKey::random().map_err(io)?;
    let header = SegmentHeader { lane, base_offset: base, key, recycled: false };
    let mut out = header.encode().to_vec();
    let (mut pos, mut expected) = (SEGMENT_HEADER_LEN, base);
    while let Some((meta_len, records, frame_base, ts, body)) = v1_frame(&bytes[pos..]) {
        if frame_base < expected {
            break;
        }
        let mut frame = EncodedBatch::from_body(meta_len, records, body)?;
        frame.seal(&key, frame_base, ts);
        out.extend_from_slice(&frame.bytes);
        pos += V1_HEADER_LEN + body.len();
        expected = frame_base + u64::from(records);
        report.frames += 1;
        report.records += u64::from(records);
    }
    if bytes[pos..].iter().any(|&b| b != 0) {
        let aside = keep_aside(fs, wal_dir, lane, path, &bytes)?;
        report.kept_aside.push((path.to_path_buf(), aside, expected));
    }
    let tmp = path.with_extension(MIGRATE_EXT);
    let f = fs.create_new(&tmp).map_err(io)?;
    f.write_all_at(&out, 0).map_err(io)?;
    f.sync_data().map_err(io)?;
    fs.rename(&tmp, path).map_err(io)?;
    let sum = summary_path(path);
    if fs.exists(&sum) {
        // Derived, and its byte counts were format 1's: the next start rebuilds it.
        fs.remove_file(&sum).map_err(io)?;
    }
    if let Some(dir) = path.parent() {
        fs.sync_dir(dir).map_err(|e| WalError::io(dir, e))?;
    }
    report.segments += 1;
    Ok(())
}

/// Keep a whole format-1 segment whose rest could not be converted under
/// `quarantine/<lane>/<name>.v1.<n>`, durably, before it is replaced.
fn keep_aside(fs: &dyn FileSystem, wal_dir: &Path, lane: LaneId, path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let dir = quarantine_lane_dir(wal_dir, lane);
    ensure_dir(fs, &dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("segment");
    let target = (0u32..)
        .map(|n| dir.join(format!("{name}.v1.{n}")))
        .find(|t| !fs.exists(t))
        .ok_or_else(|| WalError::io(&dir, std::io::Error::other("no free name")))?;
    let f = fs.create_new(&target).map_err(|e| WalError::io(&target, e))?;
    f.write_all_at(bytes, 0).map_err(|e| WalError::io(&target, e))?;
    f.sync_data().map_err(|e| WalError::io(&target, e))?;
    fs.sync_dir(&dir).map_err(|e| WalError::io(&dir, e))?;
    Ok(target)
}
