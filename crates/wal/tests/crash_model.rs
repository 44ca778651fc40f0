//! Model test: random appends, fsync failures, ENOSPC and power losses over
//! the simulated filesystem. After every crash the log must hold every
//! acknowledged batch intact at its acknowledged offset, and every batch it
//! holds must be whole (a batch that was never acknowledged may be present,
//! but only complete).
//!
//! CI runs a few hundred cases; `cargo test -p wal --features long-model`
//! (or `WEIR_MODEL_CASES=N`) runs many more.

mod common;

use common::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use wal::sim::SimFs;
use wal::{LaneId, Priority, Wal, WalError};

#[derive(Debug, Clone)]
enum Action {
    /// `n` concurrent appends of batches with `records` records of `size` bytes.
    Append {
        lane: u16,
        n: usize,
        records: u32,
        size: usize,
    },
    /// Release the lane below `percent` of the way from its earliest to its
    /// next offset (segments wholly below are recycled or deleted).
    Release {
        lane: u16,
        percent: u64,
    },
    Crash,
    FailNextSync,
    DiskFull {
        bytes: u64,
    },
    Reopen,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0u16..3, 1usize..6, 1u32..5, 10usize..900)
            .prop_map(|(lane, n, records, size)| Action::Append { lane, n, records, size }),
        2 => (0u16..3, 0u64..=100).prop_map(|(lane, percent)| Action::Release { lane, percent }),
        2 => Just(Action::Crash),
        1 => Just(Action::FailNextSync),
        1 => (0u64..3000).prop_map(|bytes| Action::DiskFull { bytes }),
        1 => Just(Action::Reopen),
    ]
}

fn lane_of(i: u16) -> LaneId {
    [LaneId::new(Priority::High, 0), LaneId::new(Priority::Normal, 1), LaneId::new(Priority::Low, 0)][i as usize]
}

struct Model {
    /// Acknowledged: lane -> offset -> batch id.
    acked: HashMap<LaneId, HashMap<u64, u64>>,
    /// Every batch ever attempted: id -> (records, size).
    attempted: HashMap<u64, (u32, usize)>,
    /// Per lane, the offset below which the log may have been released.
    released: HashMap<LaneId, u64>,
}

fn check(wal: &Wal, model: &Model) -> Result<(), TestCaseError> {
    for (lane, acked) in &model.acked {
        let held = read_lane(wal, *lane);
        let by_offset: HashMap<u64, u64> = held.iter().map(|(o, id, _)| (*o, *id)).collect();
        let released = model.released.get(lane).copied().unwrap_or(0);
        for (off, id) in acked.iter().filter(|(off, _)| **off >= released) {
            prop_assert_eq!(by_offset.get(off), Some(id), "acked batch {} at {}/{} missing", id, lane, off);
        }
        for (_, id, recs) in &held {
            let (n, size) = model.attempted.get(id).copied().ok_or_else(|| TestCaseError::fail("unknown batch"))?;
            prop_assert_eq!(recs, &records_of(*id, n, size), "batch {} not whole", id);
        }
        let mut offs: Vec<u64> = held.iter().map(|(o, _, _)| *o).collect();
        let sorted = {
            let mut s = offs.clone();
            s.sort();
            s
        };
        prop_assert_eq!(&offs, &sorted, "offsets out of order");
        offs.dedup();
        prop_assert_eq!(offs.len(), held.len(), "duplicate offsets");
    }
    Ok(())
}

fn run(seed: u64, actions: Vec<Action>) -> Result<(), TestCaseError> {
    // Half the cases run with a group-commit linger: same invariants.
    let linger = if seed.is_multiple_of(2) { std::time::Duration::from_micros(200) } else { std::time::Duration::ZERO };
    let small_opts = || wal::WalOptions { group_commit_linger: linger, ..small_opts() };
    let sim = SimFs::new(seed);
    let fs: Arc<dyn wal::FileSystem> = Arc::new(sim.clone());
    let dir = Path::new("/data/wal");
    let rt = rt();
    let mut wal = open(Arc::clone(&fs), dir, small_opts());
    let mut model = Model { acked: HashMap::new(), attempted: HashMap::new(), released: HashMap::new() };
    let mut next_id = 0u64;
    for a in actions {
        match a {
            Action::Append { lane, n, records, size } => {
                let lane = lane_of(lane);
                let mut futs = Vec::new();
                for _ in 0..n {
                    let id = next_id;
                    next_id += 1;
                    model.attempted.insert(id, (records, size));
                    futs.push((id, wal.append(lane, batch(id, records, size))));
                }
                let results = rt.block_on(async {
                    let handles: Vec<_> = futs.into_iter().map(|(id, f)| (id, tokio::spawn(f))).collect();
                    let mut out = Vec::new();
                    for (id, h) in handles {
                        out.push((id, h.await.expect("append task")));
                    }
                    out
                });
                for (id, r) in results {
                    match r {
                        Ok(ack) => {
                            prop_assert_eq!(ack.records, records);
                            let prev = model.acked.entry(lane).or_default().insert(ack.base_offset, id);
                            prop_assert!(prev.is_none(), "offset {} acknowledged twice", ack.base_offset);
                        }
                        Err(WalError::LaneFailed { .. } | WalError::NoSpace { .. }) => {}
                        Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
                    }
                }
            }
            Action::Release { lane, percent } => {
                let lane = lane_of(lane);
                let l = wal.lane(lane).expect("lane");
                let (from, to) = (l.earliest_offset(), l.next_offset());
                let below = from + (to - from) * percent / 100;
                // Like the broker: the release is recorded before segments go.
                let r = model.released.entry(lane).or_default();
                *r = (*r).max(below);
                match l.delete_segments_below(below) {
                    Ok(_) => {}
                    Err(e) if sim_failure(&e) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("release failed: {e}"))),
                }
            }
            Action::Crash => {
                drop(wal);
                sim.crash();
                wal = open(Arc::clone(&fs), dir, small_opts());
                check(&wal, &model)?;
            }
            Action::FailNextSync => sim.fail_next_syncs(1),
            Action::DiskFull { bytes } => sim.set_space_left(Some(bytes)),
            Action::Reopen => {
                drop(wal);
                sim.set_space_left(None);
                sim.fail_next_syncs(0);
                wal = open(Arc::clone(&fs), dir, small_opts());
                check(&wal, &model)?;
            }
        }
    }
    drop(wal);
    sim.crash();
    let wal = open(fs, dir, small_opts());
    check(&wal, &model)
}

/// An error the simulated filesystem was told to cause.
fn sim_failure(e: &WalError) -> bool {
    matches!(e, WalError::Io { .. })
}

fn cases() -> u32 {
    if let Some(n) = std::env::var("WEIR_MODEL_CASES").ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    if cfg!(feature = "long-model") {
        10_000
    } else {
        300
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_batches_survive_any_crash_and_no_batch_is_torn(
        seed in any::<u64>(),
        actions in prop::collection::vec(action(), 1..40),
    ) {
        run(seed, actions)?;
    }
}
