//! Model test: random appends, releases, fsync failures, ENOSPC, power
//! losses, and power cuts between any two file operations (of appends,
//! rolls, recycling, retention and recovery itself) over the simulated
//! filesystem. After every crash the log must hold every acknowledged batch
//! intact at its acknowledged offset, and every batch it holds must be whole
//! (a batch that was never acknowledged may be present, but only complete).
//!
//! Two drives:
//! - `..._deterministic`: the WAL runs with [`Drive::Manual`] — no writer or
//!   helper thread; each `Append` is one commit round run by the test. Every
//!   file operation happens in an order fixed by the case, so a failure
//!   replays from its seed and proptest shrinks it.
//! - `..._threaded`: the production drive (writer thread, spare helper);
//!   timing varies, so it is run with a CPU hog beside it in CI
//!   (`.ci/run`) to shake out races such as a helper outliving its `Wal`.
//!
//! CI runs a few hundred cases; `cargo test -p wal --features long-model`
//! (or `WEIR_MODEL_CASES=N`) runs many more.

mod common;

use common::*;
use proptest::prelude::*;
use std::collections::HashMap;
use wal::sim::SimFs;
use wal::{Drive, LaneId, Priority, Wal, WalError};

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
    /// Cut the power when the `(ops + 1)`th file operation from now starts.
    PowerCut {
        ops: u64,
    },
    /// Power loss, then a power cut during the recovery that follows.
    CrashDuringRecovery {
        ops: u64,
    },
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
        2 => (0u64..12).prop_map(|ops| Action::PowerCut { ops }),
        1 => (0u64..40).prop_map(|ops| Action::CrashDuringRecovery { ops }),
    ]
}

fn lane_of(index: u16) -> LaneId {
    [LaneId::new(Priority::High, 0), LaneId::new(Priority::Normal, 1), LaneId::new(Priority::Low, 0)][index as usize]
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

fn run(seed: u64, actions: Vec<Action>, drive: Drive) -> Result<(), TestCaseError> {
    // Half the cases run with a group-commit linger: same invariants.
    let linger = if seed.is_multiple_of(2) { std::time::Duration::from_micros(200) } else { std::time::Duration::ZERO };
    let opts = wal::WalOptions { group_commit_linger: linger, drive, ..small_opts() };
    let rt = rt();
    let mut rig = Rig::new(SimFs::new(seed), opts);
    rig.open(None)?;
    let mut model = Model { acked: HashMap::new(), attempted: HashMap::new(), released: HashMap::new() };
    let mut next_id = 0u64;
    for a in actions {
        match a {
            Action::Append { lane, n, records, size } => {
                append_round(&rig, &rt, &mut model, &mut next_id, lane_of(lane), (n, records, size))?;
            }
            Action::Release { lane, percent } => release(&rig, &mut model, lane_of(lane), percent)?,
            Action::Crash => {
                rig.crash(None)?;
                check(rig.wal(), &model)?;
            }
            Action::CrashDuringRecovery { ops } => {
                rig.crash(Some(ops))?;
                check(rig.wal(), &model)?;
            }
            Action::PowerCut { ops } => rig.sim.crash_after_ops(ops),
            Action::FailNextSync => rig.sim.fail_next_syncs(1),
            Action::DiskFull { bytes } => rig.sim.set_space_left(Some(bytes)),
            Action::Reopen => {
                drop(rig.wal.take());
                rig.sim.set_space_left(None);
                rig.sim.fail_next_syncs(0);
                rig.sim.crash_after_ops(u64::MAX);
                rig.open(None)?;
                check(rig.wal(), &model)?;
            }
        }
        if rig.after_cut()? {
            check(rig.wal(), &model)?;
        }
    }
    rig.sim.crash_after_ops(u64::MAX);
    rig.crash(None)?;
    check(rig.wal(), &model)
}

/// `n` appends of `records` records of `size` bytes to `lane`, queued
/// together (one round with the manual drive); the acknowledged ones join
/// the model.
fn append_round(
    rig: &Rig,
    rt: &tokio::runtime::Runtime,
    model: &mut Model,
    next_id: &mut u64,
    lane: LaneId,
    (n, records, size): (usize, u32, usize),
) -> Result<(), TestCaseError> {
    let mut futs = Vec::new();
    for _ in 0..n {
        let id = *next_id;
        *next_id += 1;
        model.attempted.insert(id, (records, size));
        futs.push((id, rig.wal().append(lane, batch(id, records, size))));
    }
    // Manual drive: the queued appends are one round, run here.
    rig.wal().commit_queued();
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
    Ok(())
}

/// Release `percent` of what `lane` holds, recorded in the model first.
fn release(rig: &Rig, model: &mut Model, lane: LaneId, percent: u64) -> Result<(), TestCaseError> {
    let l = rig.wal().lane(lane).expect("lane");
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
    Ok(())
}

/// An error the simulated filesystem was told to cause.
fn sim_failure(err: &WalError) -> bool {
    matches!(err, WalError::Io { .. })
}

fn cases(ci: u32) -> u32 {
    if let Some(n) = std::env::var("WEIR_MODEL_CASES").ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    if cfg!(feature = "long-model") {
        10_000
    } else {
        ci
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(300), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_batches_survive_any_crash_and_no_batch_is_torn_deterministic(
        seed in any::<u64>(),
        actions in prop::collection::vec(action(), 1..40),
    ) {
        run(seed, actions, Drive::Manual)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(150), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_batches_survive_any_crash_and_no_batch_is_torn_threaded(
        seed in any::<u64>(),
        actions in prop::collection::vec(action(), 1..40),
    ) {
        run(seed, actions, Drive::Thread)?;
    }
}
