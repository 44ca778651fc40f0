//! A restart reads a few bytes per sealed segment, not the whole log
//! (`recovery`, "Sealed segments"): a sealed segment whose summary and
//! length agree is taken on its word and scanned at its first read; one
//! whose summary is missing or disagrees is scanned at open as before; a
//! trusted segment found damaged at its first read fails that read and is
//! quarantined by the next open, its valid frames kept.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use wal::fs::{FileBytes, FileSystem, RealFs, WalFile};
use wal::WalOptions;

/// The real filesystem, counting the whole-file reads of lane normal/0's
/// segment files.
#[derive(Default)]
struct Counting {
    whole_reads: AtomicUsize,
    read: Mutex<Vec<PathBuf>>,
}

impl FileSystem for Counting {
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        RealFs.create_dir_all(path)
    }
    fn create_new(&self, path: &Path) -> std::io::Result<Arc<dyn WalFile>> {
        RealFs.create_new(path)
    }
    fn open_rw(&self, path: &Path) -> std::io::Result<Arc<dyn WalFile>> {
        RealFs.open_rw(path)
    }
    fn read_all(&self, path: &Path) -> std::io::Result<FileBytes> {
        // Lane normal/0's segments (each other lane has its empty active one).
        if path.extension().is_some_and(|e| e == "seg") && path.parent().is_some_and(|d| d.ends_with("normal/0")) {
            self.whole_reads.fetch_add(1, Ordering::Relaxed);
            self.read.lock().unwrap().push(path.to_path_buf());
        }
        RealFs.read_all(path)
    }
    fn read_copy(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        RealFs.read_copy(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        RealFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        RealFs.remove_file(path)
    }
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<PathBuf>> {
        RealFs.list_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        RealFs.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        RealFs.exists(path)
    }
    fn file_len(&self, path: &Path) -> std::io::Result<u64> {
        RealFs.file_len(path)
    }
}

fn small() -> WalOptions {
    WalOptions { shards: 1, segment_bytes: 4096, ..small_opts() }
}

/// 30 batches of 3 records in lane normal/0: about ten sealed segments.
fn write_log(dir: &Path) -> Vec<u64> {
    let wal = open(Arc::new(RealFs), dir, small());
    let rt = rt();
    for id in 0..30 {
        rt.block_on(wal.append(NORMAL0, batch(id, 3, 300))).unwrap();
    }
    let ids = read_lane(&wal, NORMAL0).into_iter().map(|(_, id, _)| id).collect();
    drop(wal);
    ids
}

#[test]
fn an_open_reads_only_the_last_segment_whole_and_the_rest_at_their_first_read() {
    let tmp = tempfile::tempdir().unwrap();
    let written = write_log(tmp.path());
    let fs = Arc::new(Counting::default());
    let wal = open(Arc::clone(&fs) as Arc<dyn FileSystem>, tmp.path(), small());
    let sealed = wal.lane(NORMAL0).unwrap().segments().iter().filter(|s| s.sealed).count();
    assert!(sealed >= 5, "the log rolled: {sealed} sealed segments");
    assert_eq!(
        fs.whole_reads.load(Ordering::Relaxed),
        1,
        "only the active segment at open: {:?}",
        fs.read.lock().unwrap()
    );
    assert!(wal.recovery_events().iter().all(|e| !e.is_damage()), "{:?}", wal.recovery_events());
    let read: Vec<u64> = read_lane(&wal, NORMAL0).into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(read, written, "every batch, read back after the open");
    let after = fs.whole_reads.load(Ordering::Relaxed);
    assert_eq!(after, 1 + sealed, "each sealed segment mapped for the read, then let go");
}

#[test]
fn a_segment_whose_summary_disagrees_is_scanned_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let written = write_log(tmp.path());
    let lane_dir = tmp.path().join("normal").join("0");
    let mut summaries: Vec<PathBuf> = std::fs::read_dir(&lane_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sum"))
        .collect();
    summaries.sort();
    assert!(summaries.len() >= 3, "{summaries:?}");
    std::fs::remove_file(&summaries[0]).unwrap();
    std::fs::write(&summaries[1], b"not a summary").unwrap();
    let fs = Arc::new(Counting::default());
    let wal = open(Arc::clone(&fs) as Arc<dyn FileSystem>, tmp.path(), small());
    assert_eq!(fs.whole_reads.load(Ordering::Relaxed), 3, "the two untrusted and the active segment");
    let read: Vec<u64> = read_lane(&wal, NORMAL0).into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(read, written);
    assert!(summaries[0].exists() && summaries[1].exists(), "the summaries were rebuilt");
}

#[test]
fn a_trusted_segment_damaged_on_disk_fails_its_read_and_is_quarantined_by_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    let written = write_log(tmp.path());
    let wal = open(Arc::new(RealFs), tmp.path(), small());
    let victim = wal.lane(NORMAL0).unwrap().segments().iter().find(|s| s.sealed && s.base_offset > 0).unwrap().clone();
    // A bit flipped in the middle of its first frame's payload, the length unchanged.
    let mut bytes = std::fs::read(&victim.path).unwrap();
    let at = 64 + (bytes.len() - 64) / 4;
    bytes[at] ^= 0x40;
    std::fs::write(&victim.path, &bytes).unwrap();
    let lane = wal.lane(NORMAL0).unwrap();
    let refused = lane.read(victim.base_offset, usize::MAX, usize::MAX);
    assert!(matches!(refused, Err(wal::WalError::Corrupt { .. })), "{refused:?}");
    drop(wal);
    let wal = open(Arc::new(RealFs), tmp.path(), small());
    let quarantined =
        wal.recovery_events().iter().filter(|e| matches!(e, wal::RecoveryEvent::Quarantined { .. })).count();
    assert_eq!(quarantined, 1, "{:?}", wal.recovery_events());
    let read: Vec<u64> = read_lane(&wal, NORMAL0).into_iter().map(|(_, id, _)| id).collect();
    assert!(read.len() < written.len() && read.len() + 2 >= written.len(), "only the damaged frame is lost: {read:?}");
}
