//! An idle lane costs one small file (`segment_file::Reserve::Later`): a
//! fresh log with preallocation on holds a header-only first segment per
//! lane, not a zero-filled `segment_bytes` one; the first append does not
//! wait for a zero fill (its segment stays small), and the writer rolls to a
//! preallocated spare prepared off the commit path soon after. A reopen
//! keeps idle lanes small and every batch.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use wal::fs::RealFs;
use wal::WalOptions;

const SEGMENT: u64 = 16 << 20;

fn opts() -> WalOptions {
    WalOptions { shards: 4, segment_bytes: SEGMENT, preallocate: true, ..small_opts() }
}

/// Bytes the files under `dir` take on disk (allocated blocks).
fn disk_use(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

#[test]
fn an_idle_lane_costs_a_small_file_and_the_first_append_waits_for_no_zero_fill() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = open(Arc::new(RealFs), tmp.path(), opts());
    let lanes = wal.lanes().count() as u64;
    assert_eq!(lanes, 12, "3 priorities x 4 shards");
    let fresh = disk_use(tmp.path());
    assert!(fresh < lanes * (64 << 10), "a fresh log takes {fresh} bytes for {lanes} lanes, not {lanes} x 16 MiB");

    let rt = rt();
    rt.block_on(wal.append(NORMAL0, batch(0, 3, 300))).unwrap();
    let lane = wal.lane(NORMAL0).unwrap();
    let first = &lane.segments()[0];
    let len = std::fs::metadata(&first.path).unwrap().len();
    assert!(len < 1 << 20, "the first append extended a header-only segment ({len} bytes), no zero fill");

    // The spare is prepared off the commit path; the writer rolls once it
    // is ready. Bounded: each append is one commit round.
    let mut id = 1;
    while lane.segments().len() < 2 {
        assert!(id < 5_000, "no roll to a preallocated spare after {id} appends");
        rt.block_on(wal.append(NORMAL0, batch(id, 10, 1000))).unwrap();
        id += 1;
    }
    let active = lane.segments().into_iter().find(|s| !s.sealed).unwrap();
    assert_eq!(std::fs::metadata(&active.path).unwrap().len(), SEGMENT, "the next segment is preallocated");
    let written: Vec<u64> = read_lane(&wal, NORMAL0).into_iter().map(|(_, id, _)| id).collect();
    drop(wal);

    let wal = open(Arc::new(RealFs), tmp.path(), opts());
    let read: Vec<u64> = read_lane(&wal, NORMAL0).into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(read, written, "every batch after a reopen");
    let idle = disk_use(tmp.path()) - disk_use(&tmp.path().join("normal").join("0"));
    assert!(idle < (lanes - 1) * (64 << 10), "the idle lanes stay small after a reopen: {idle} bytes");
}
