//! The directory layout: every path and file name the log uses, in one
//! place (`docs/wal.md`, "Layout"). Pure: names only, no I/O but listing.
//!
//! ```text
//! <wal>/<priority>/<shard>/<base, 20 digits>.seg      segments
//! <wal>/<priority>/<shard>/<base>.sum                 summary of a sealed segment (derived)
//! <wal>/<priority>/<shard>/<base>.seg.tmp             cleaned copy of a segment being quarantined
//! <wal>/<priority>/<shard>/<base>.seg.migrate         current-format copy being written by `migrate`
//! <wal>/<priority>/<shard>/spare-<instance>-<n>.spare prepared file for the next roll
//! <wal>/<priority>/<shard>/recycled-<base>.spare      released segment waiting for reuse
//! <wal>/<priority>/<shard>/watermark                  durable next offset (advisory, for tools)
//! <wal>/quarantine/<priority>/<shard>/<name>.<n>      damaged segments, kept byte for byte
//! ```

use crate::error::{Result, WalError};
use crate::fs::FileSystem;
use crate::lane_id::{LaneId, Priority};
use std::path::{Path, PathBuf};

pub(crate) const SEGMENT_EXT: &str = "seg";
pub(crate) const SUMMARY_EXT: &str = "sum";
pub(crate) const SPARE_EXT: &str = "spare";
pub(crate) const QUARANTINE_DIR: &str = "quarantine";
/// `<lane dir>/watermark`: the durable next offset a running broker
/// publishes for read-only tools (advisory: recovery never reads it).
pub const WATERMARK_FILE: &str = "watermark";
/// Suffix of a segment's cleaned copy during a quarantine.
pub(crate) const CLEAN_COPY_SUFFIX: &str = ".seg.tmp";
/// Extension of a segment's current-format copy during `migrate`.
pub(crate) const MIGRATE_EXT: &str = "seg.migrate";

/// `<wal_dir>/<priority>/<shard>`: the directory of lane `id`.
pub fn lane_dir(wal_dir: &Path, id: LaneId) -> PathBuf {
    wal_dir.join(id.priority.as_str()).join(id.shard.to_string())
}

pub(crate) fn quarantine_lane_dir(wal_dir: &Path, id: LaneId) -> PathBuf {
    lane_dir(&wal_dir.join(QUARANTINE_DIR), id)
}

pub(crate) fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.{SEGMENT_EXT}")
}

pub(crate) fn summary_path(seg: &Path) -> PathBuf {
    seg.with_extension(SUMMARY_EXT)
}

/// `<base>.seg.tmp` beside `<base>.seg`.
pub(crate) fn clean_copy_path(seg: &Path) -> PathBuf {
    PathBuf::from(format!("{}{CLEAN_COPY_SUFFIX}", seg.with_extension("").display()))
}

/// The segment a cleaned copy belongs to, if `p` is one.
pub(crate) fn segment_of_clean_copy(path: &Path) -> Option<PathBuf> {
    path.to_str().and_then(|s| s.strip_suffix(CLEAN_COPY_SUFFIX)).map(|s| PathBuf::from(format!("{s}.{SEGMENT_EXT}")))
}

/// The `n`th spare of writer instance `instance`: a name no other
/// instance or thread uses.
pub(crate) fn spare_name(instance: u64, nth: u64) -> String {
    format!("spare-{instance:016x}-{nth}.{SPARE_EXT}")
}

pub(crate) fn recycled_path(lane_dir: &Path, base: u64) -> PathBuf {
    lane_dir.join(format!("recycled-{base:020}.{SPARE_EXT}"))
}

/// Whether `p` is a spare (`*.spare`: prepared or recycled), a file that
/// holds no frame of the log.
pub fn is_spare(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some(SPARE_EXT)
}

/// Segment files of a lane directory, ordered by base offset.
pub(crate) fn segment_paths(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for p in fs.list_dir(dir).map_err(|e| WalError::io(dir, e))? {
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

/// Lanes that have a directory under `wal_dir`.
pub fn lanes_on_disk(fs: &dyn FileSystem, wal_dir: &Path) -> Result<Vec<LaneId>> {
    let mut out = Vec::new();
    if !fs.exists(wal_dir) {
        return Ok(out);
    }
    for p in Priority::ALL {
        let pdir = wal_dir.join(p.as_str());
        if !fs.exists(&pdir) {
            continue;
        }
        for d in fs.list_dir(&pdir).map_err(|e| WalError::io(&pdir, e))? {
            if let Some(shard) = d.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()) {
                out.push(LaneId::new(p, shard));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let seg = Path::new("/w/normal/0").join(segment_file_name(42));
        assert_eq!(seg, Path::new("/w/normal/0/00000000000000000042.seg"));
        assert_eq!(summary_path(&seg), Path::new("/w/normal/0/00000000000000000042.sum"));
        let tmp = clean_copy_path(&seg);
        assert_eq!(tmp, Path::new("/w/normal/0/00000000000000000042.seg.tmp"));
        assert_eq!(segment_of_clean_copy(&tmp), Some(seg.clone()));
        assert_eq!(segment_of_clean_copy(&seg), None);
        assert!(is_spare(Path::new(&spare_name(7, 1))) && is_spare(&recycled_path(Path::new("/w"), 3)));
        assert_ne!(spare_name(7, 1), spare_name(8, 1));
    }
}
