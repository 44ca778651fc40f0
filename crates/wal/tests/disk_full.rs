//! A full disk refuses appends (507 at the broker) only until retention
//! frees space: then ingest recovers without a restart (issue 19, defect 6).
//!
//! On the simulated disk's capacity ([`SimFs::set_capacity`], where a
//! deleted file gives its space back and a renamed one keeps it), with the
//! manual drive so every file operation happens in the test's order:
//! - a roll after ENOSPC takes the released segment the lane kept, which
//!   needs no new space;
//! - released segments kept by one lane are deleted once another lane runs
//!   out of space, so that lane rolls again;
//! - fill, release, recover, several times over, losing nothing acknowledged.
//!
//! On a real filesystem: a 24 MiB tmpfs mounted by the test (root only).
//! Where it cannot mount one it prints `SKIPPED: <test name>: <why>` and
//! returns; the line goes to the process's stderr, past the harness's
//! capture, so every run shows it without `--nocapture`.

mod common;

use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use wal::sim::SimFs;
use wal::{Drive, FileSystem, LaneId, Priority, RealFs, Wal, WalError, WalOptions};

const HIGH0: LaneId = LaneId { priority: Priority::High, shard: 0 };
/// Batch ids have three digits, so every frame has the same length.
const FIRST_ID: u64 = 100;

fn frame_len() -> u64 {
    batch(FIRST_ID, 1, 600).len() as u64
}

/// Six frames fill a segment's preallocated space exactly: a write never
/// grows a file, so the disk refuses a roll (a new file), not a write.
fn segment() -> u64 {
    wal::segment::SEGMENT_HEADER_LEN as u64 + 6 * frame_len()
}

fn opts() -> WalOptions {
    WalOptions { shards: 1, segment_bytes: segment(), drive: Drive::Manual, ..small_opts() }
}

/// Append batch `id` (one ~600-byte record) on `lane`, run the round.
fn append(wal: &Wal, lane: LaneId, id: u64) -> Result<wal::Appended, WalError> {
    assert!((FIRST_ID..1000).contains(&id), "three-digit ids keep frames of one length");
    let fut = wal.append(lane, batch(id, 1, 600));
    wal.commit_queued();
    rt().block_on(fut)
}

/// Append on `lane` until the disk refuses (bounded); the ids acknowledged.
fn fill(wal: &Wal, lane: LaneId, next_id: &mut u64) -> Vec<u64> {
    let mut acked = Vec::new();
    for _ in 0..200 {
        *next_id += 1;
        match append(wal, lane, *next_id) {
            Ok(_) => acked.push(*next_id),
            Err(WalError::NoSpace { .. }) => return acked,
            Err(e) => panic!("unexpected error while filling the disk: {e}"),
        }
    }
    panic!("the disk never filled up");
}

fn spares(sim: &SimFs, lane: LaneId) -> Vec<PathBuf> {
    let dir = wal::layout::lane_dir(Path::new(DIR), lane);
    sim.list_dir(&dir).expect("list lane dir").into_iter().filter(|p| wal::layout::is_spare(p)).collect()
}

#[test]
fn a_roll_after_enospc_takes_a_recycled_segment_once_space_is_released() {
    let sim = SimFs::new(6);
    let wal = open(Arc::new(sim.clone()), Path::new(DIR), opts());
    let mut id = FIRST_ID;
    // The lane's first segment is created header-only, not preallocated
    // (`writer`, "Idle lanes"): past it, and released, every segment below
    // is a preallocated one, which is what this test is about.
    let mut acked = Vec::new();
    while wal.lane(NORMAL0).unwrap().segments().len() < 2 {
        assert!(acked.len() < 10, "the first segment rolled");
        id += 1;
        append(&wal, NORMAL0, id).expect("append");
        acked.push(id);
    }
    let lane = wal.lane(NORMAL0).unwrap();
    assert_eq!(lane.delete_segments_below(lane.segments()[0].next_offset).unwrap(), 1);
    // Room for a few more segments.
    sim.set_capacity(Some(sim.used_bytes() + 7 * segment()));
    acked.extend(fill(&wal, NORMAL0, &mut id));
    assert!(wal.lane(NORMAL0).unwrap().segments().len() >= 3, "the lane rolled before the disk filled");
    // Retention releases the oldest segment only: a rename keeps its
    // space, so the next roll succeeds only if it takes that very file.
    let lane = wal.lane(NORMAL0).unwrap();
    let oldest = lane.segments()[0].next_offset;
    assert_eq!(lane.delete_segments_below(oldest).unwrap(), 1);
    assert_eq!(spares(&sim, NORMAL0).len(), 1, "the starving lane keeps the released segment for its roll");
    id += 1;
    append(&wal, NORMAL0, id).expect("the roll after ENOSPC takes the recycled segment");
    acked.push(id);
    assert!(spares(&sim, NORMAL0).is_empty(), "the recycled file became the new segment");
    // Fill, release everything, recover: a few times over.
    for round in 0..4 {
        acked.extend(fill(&wal, NORMAL0, &mut id));
        let lane = wal.lane(NORMAL0).unwrap();
        let before = sim.used_bytes();
        lane.delete_segments_below(lane.next_offset()).unwrap();
        assert!(sim.used_bytes() < before, "round {round}: released segments give their space back");
        assert!(spares(&sim, NORMAL0).len() <= 1, "round {round}: at most one kept file under pressure");
        id += 1;
        append(&wal, NORMAL0, id).unwrap_or_else(|e| panic!("round {round}: ingest did not recover: {e}"));
        acked.push(id);
    }
    // Nothing acknowledged since the last release is lost, after a crash too.
    let earliest = wal.lane(NORMAL0).unwrap().earliest_offset();
    let held: Vec<u64> = read_lane(&wal, NORMAL0).into_iter().map(|(_, id, _)| id).collect();
    let kept: Vec<u64> = acked.iter().copied().skip(earliest as usize).collect();
    assert_eq!(held, kept);
    drop(wal);
    let wal = open(Arc::new(sim.crash()), Path::new(DIR), opts());
    let after: Vec<u64> = read_lane(&wal, NORMAL0).into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(after, kept, "every acknowledged record survives a crash");
}

#[test]
fn the_spare_pool_shrinks_under_disk_pressure_so_another_lane_rolls_again() {
    let sim = SimFs::new(66);
    sim.set_capacity(Some(12 * segment()));
    let wal = open(Arc::new(sim.clone()), Path::new(DIR), opts());
    let mut id = FIRST_ID;
    // normal/0 writes several segments, and retention releases them all:
    // without pressure they wait in its pool, still holding their space.
    for _ in 0..30 {
        id += 1;
        append(&wal, NORMAL0, id).expect("room for normal/0");
    }
    let normal = wal.lane(NORMAL0).unwrap();
    assert!(normal.delete_segments_below(normal.next_offset()).unwrap() >= 2);
    let kept = spares(&sim, NORMAL0).len();
    assert!(kept >= 2, "released segments are kept for reuse while space is plenty ({kept})");
    // high/0 fills what is left and is refused: normal/0's pool must go.
    fill(&wal, HIGH0, &mut id);
    wal.commit_queued(); // normal/0's writer runs (a thread would be woken)
    assert!(spares(&sim, NORMAL0).is_empty(), "normal/0 gave its kept files back");
    id += 1;
    append(&wal, HIGH0, id).expect("high/0 rolls into the space normal/0 gave back");
    id += 1;
    append(&wal, NORMAL0, id).expect("normal/0 still takes appends");
}

/// Unmounts the test's tmpfs when dropped (after the log on it).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Say, visibly, that `test` did not run.
fn skipped(test: &str, why: &str) {
    let line = format!("SKIPPED: {test}: {why}");
    println!("{line}");
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn mount_tmpfs(test: &str) -> Option<Mount> {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        skipped(test, "mounting a tmpfs needs root");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("weir-disk-full-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        skipped(test, &format!("cannot create {}: {e}", dir.display()));
        return None;
    }
    let out = Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).arg(&dir).output();
    match out {
        Ok(o) if o.status.success() => Some(Mount(dir)),
        Ok(o) => {
            let _ = std::fs::remove_dir(&dir);
            skipped(test, &format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
            None
        }
        Err(e) => {
            let _ = std::fs::remove_dir(&dir);
            skipped(test, &format!("cannot run mount: {e}"));
            None
        }
    }
}

#[test]
fn a_full_tmpfs_takes_ingest_again_once_retention_released_its_segments() {
    const TEST: &str = "a_full_tmpfs_takes_ingest_again_once_retention_released_its_segments";
    let Some(mount) = mount_tmpfs(TEST) else { return };
    let dir = mount.0.join("wal");
    let opts = WalOptions { shards: 1, segment_bytes: 1 << 20, ..WalOptions::default() };
    let wal = Wal::open(Arc::new(RealFs) as Arc<dyn FileSystem>, &dir, opts, None).expect("open on tmpfs");
    let rt = rt();
    let mut id = 0u64;
    for round in 0..3 {
        let mut refused = false;
        for _ in 0..2000 {
            id += 1;
            match rt.block_on(wal.append(NORMAL0, batch(id, 1, 32 << 10))) {
                Ok(_) => {}
                Err(WalError::NoSpace { .. }) => {
                    refused = true;
                    break;
                }
                Err(e) => panic!("round {round}: unexpected error while filling the tmpfs: {e}"),
            }
        }
        assert!(refused, "round {round}: 24 MiB never filled up");
        let lane = wal.lane(NORMAL0).unwrap();
        assert!(lane.delete_segments_below(lane.next_offset()).unwrap() > 0, "round {round}: segments released");
        id += 1;
        let ack = rt.block_on(wal.append(NORMAL0, batch(id, 1, 32 << 10)));
        let ack = ack.unwrap_or_else(|e| panic!("round {round}: ingest stayed refused after the release: {e}"));
        let last = read_lane(&wal, NORMAL0).last().map(|(_, id, _)| *id);
        assert_eq!((last, ack.lane), (Some(id), NORMAL0), "round {round}: the record is readable");
    }
    drop(wal);
}
