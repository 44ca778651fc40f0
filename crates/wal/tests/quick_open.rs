//! A restart reads a few bytes per sealed segment, not the whole log
//! (`recovery`, "Sealed segments"): a sealed segment whose summary and
//! length agree is taken on its word and scanned at its first read; one
//! whose summary is missing or disagrees is scanned at open as before; a
//! trusted segment found damaged at its first read serves its valid frames
//! and is quarantined by the next open, its valid frames kept.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use wal::fs::{FileSystem, RealFs};
use wal::WalOptions;

/// The real filesystem, counting the mapped reads of lane normal/0's
/// segment files (each other lane has its empty active one), and keeping
/// their paths.
fn counting() -> (Arc<dyn FileSystem>, Arc<Mutex<Vec<PathBuf>>>) {
    let read = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&read);
    let fs = Hooked(move |how, path: &Path| {
        let ours =
            path.extension().is_some_and(|e| e == "seg") && path.parent().is_some_and(|d| d.ends_with("normal/0"));
        if how == WholeRead::Mapped && ours {
            seen.lock().unwrap().push(path.to_path_buf());
        }
    });
    (Arc::new(fs), read)
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
    let (fs, mapped) = counting();
    let wal = open(fs, tmp.path(), small());
    let sealed = wal.lane(NORMAL0).unwrap().segments().iter().filter(|s| s.sealed).count();
    assert!(sealed >= 5, "the log rolled: {sealed} sealed segments");
    let at_open = mapped.lock().unwrap().clone();
    assert_eq!(at_open.len(), 1, "only the active segment at open: {at_open:?}");
    assert!(wal.recovery_events().iter().all(|e| !e.is_damage()), "{:?}", wal.recovery_events());
    let read: Vec<u64> = read_lane(&wal, NORMAL0).into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(read, written, "every batch, read back after the open");
    let after = mapped.lock().unwrap().len();
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
    let (fs, mapped) = counting();
    let wal = open(fs, tmp.path(), small());
    assert_eq!(mapped.lock().unwrap().len(), 3, "the two untrusted and the active segment");
    let read: Vec<u64> = read_lane(&wal, NORMAL0).into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(read, written);
    assert!(summaries[0].exists() && summaries[1].exists(), "the summaries were rebuilt");
}

#[test]
fn a_trusted_segment_damaged_on_disk_serves_its_valid_frames_and_is_quarantined_by_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    let written = write_log(tmp.path());
    let wal = open(Arc::new(RealFs), tmp.path(), small());
    let victim = wal.lane(NORMAL0).unwrap().segments().iter().find(|s| s.sealed && s.base_offset > 0).unwrap().clone();
    // A bit flipped in the middle of its first frame's payload, the length unchanged.
    let mut bytes = std::fs::read(&victim.path).unwrap();
    let at = 64 + (bytes.len() - 64) / 4;
    bytes[at] ^= 0x40;
    std::fs::write(&victim.path, &bytes).unwrap();
    let served: Vec<u64> = read_lane(&wal, NORMAL0).into_iter().map(|(_, id, _)| id).collect();
    assert!(
        served.len() < written.len() && served.len() + 2 >= written.len(),
        "the valid frames are served: {served:?}"
    );
    drop(wal);
    let wal = open(Arc::new(RealFs), tmp.path(), small());
    let quarantined =
        wal.recovery_events().iter().filter(|e| matches!(e, wal::RecoveryEvent::Quarantined { .. })).count();
    assert_eq!(quarantined, 1, "{:?}", wal.recovery_events());
    let read: Vec<u64> = read_lane(&wal, NORMAL0).into_iter().map(|(_, id, _)| id).collect();
    assert!(read.len() < written.len() && read.len() + 2 >= written.len(), "only the damaged frame is lost: {read:?}");
}
