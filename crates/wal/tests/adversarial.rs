//! Tenant bytes are hostile: records whose payloads are frames — copied
//! verbatim from this log's own segments (other lanes, other generations of
//! a reused file) or crafted with guessed MACs and a victim's tenant and far
//! offsets — appended into small, constantly recycled segments, with power
//! losses and power cuts at random points. After every restart the records
//! the log holds are exactly the acknowledged ones (and whole unacknowledged
//! batches), byte for byte, each on the lane and at the offset it was
//! acknowledged at, each batch at most once. Deterministic drive: a failure
//! replays from its seed and shrinks.
//!
//! Also: each step of a quarantine and a new lane directory survive a crash.

mod common;

use common::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use wal::sim::SimFs;
use wal::{BatchMeta, Drive, EncodedBatch, LaneId, Priority, WalError, WalOptions};

#[derive(Debug, Clone)]
enum Action {
    /// A batch of `n` hostile records on `lane`, of kind `kind`.
    Append {
        lane: u16,
        n: u32,
        kind: u8,
        salt: u64,
    },
    Release {
        lane: u16,
        percent: u64,
    },
    Crash,
    PowerCut {
        ops: u64,
    },
    Reopen,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (0u16..2, 1u32..4, 0u8..3, any::<u64>()).prop_map(|(lane, n, kind, salt)| Action::Append { lane, n, kind, salt }),
        3 => (0u16..2, 0u64..=100).prop_map(|(lane, percent)| Action::Release { lane, percent }),
        2 => Just(Action::Crash),
        1 => (0u64..10).prop_map(|ops| Action::PowerCut { ops }),
        1 => Just(Action::Reopen),
    ]
}

fn lane_of(index: u16) -> LaneId {
    [LaneId::new(Priority::Normal, 0), LaneId::new(Priority::Normal, 1)][index as usize]
}

/// Real frames of this log, copied from its segment files (any lane).
fn real_frames(sim: &SimFs) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Ok(reports) = wal::inspect::inspect_all(sim, Path::new(DIR)) else { return out };
    for r in reports {
        let Some(bytes) = sim.file_bytes(&r.path) else { continue };
        for f in r.scan.frames.iter().filter(|f| f.len < 1500).take(2) {
            if let Some(b) = bytes.get(f.pos as usize..f.end() as usize) {
                out.push(b.to_vec());
            }
        }
    }
    out.truncate(3);
    out
}

/// A frame for `victim` at a far offset, with its body and guessed MACs:
/// the current format for even salts (so the MACs, not the version, are
/// what refuses it), format 2 for odd ones.
fn crafted_frame(salt: u64) -> Vec<u8> {
    let mut body = Vec::new();
    for field in ["victim", "events", "k999999"] {
        body.push(field.len() as u8);
        body.extend_from_slice(field.as_bytes());
    }
    let meta_len = body.len() as u16;
    let record = b"{\"planted\":1}";
    body.extend_from_slice(&(record.len() as u32).to_le_bytes());
    body.extend_from_slice(record);
    let version = if salt & 1 == 0 { wal::frame::VERSION } else { 2 };
    let check = salt;
    let mut b = vec![0u8; 48];
    b[0..4].copy_from_slice(&0x3246_5257u32.to_le_bytes());
    b[4] = version;
    b[6..8].copy_from_slice(&meta_len.to_le_bytes());
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    b[12..16].copy_from_slice(&(body.len() as u32).to_le_bytes());
    b[16..24].copy_from_slice(&1_000_000u64.to_le_bytes());
    b[32..40].copy_from_slice(&check.to_le_bytes());
    b[40..48].copy_from_slice(&salt.rotate_left(29).to_le_bytes());
    b.extend_from_slice(&body);
    b
}

/// Hostile records: each embeds frames and is padded across sectors.
fn hostile_records(sim: &SimFs, id: u64, count: u32, kind: u8, salt: u64) -> Vec<Vec<u8>> {
    let real = real_frames(sim);
    (0..count)
        .map(|i| {
            let mut r = format!("id={id};i={i};").into_bytes();
            match kind {
                0 => r.extend(real.iter().flatten()),
                1 => (0..8).for_each(|k| r.extend(crafted_frame(salt ^ k))),
                _ => {
                    r.extend(crafted_frame(salt));
                    r.extend(real.iter().take(1).flatten());
                }
            }
            r.resize(r.len().max(300 + (salt % 900) as usize), b'.');
            r
        })
        .collect()
}

fn opts() -> WalOptions {
    WalOptions { shards: 2, segment_bytes: 4096, drive: Drive::Manual, ..small_opts() }
}

/// id -> (lane, records) of every batch attempted.
type Attempted = HashMap<u64, (LaneId, Vec<Vec<u8>>)>;

fn check(
    rig: &Rig,
    acked: &HashMap<LaneId, HashMap<u64, u64>>,
    attempted: &Attempted,
    released: &HashMap<LaneId, u64>,
) -> Result<(), TestCaseError> {
    let mut seen = std::collections::HashSet::new();
    for i in 0..2 {
        let lane = lane_of(i);
        let l = rig.wal().lane(lane).expect("lane");
        let batches =
            l.read(l.earliest_offset(), usize::MAX, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut by_offset = HashMap::new();
        for b in batches {
            prop_assert_eq!(&b.meta.tenant, "acme", "a planted frame became a record at {}/{}", lane, b.base_offset);
            let id: u64 = b
                .meta
                .idempotency_key
                .as_deref()
                .and_then(|k| k[1..].parse().ok())
                .ok_or_else(|| TestCaseError::fail("no batch key"))?;
            let (on, records) =
                attempted.get(&id).ok_or_else(|| TestCaseError::fail(format!("batch {id} was never sent")))?;
            prop_assert_eq!(*on, lane, "batch {} found on another lane", id);
            prop_assert_eq!(&b.records, records, "batch {} not byte for byte", id);
            prop_assert!(seen.insert(id), "batch {} held twice", id);
            by_offset.insert(b.base_offset, id);
        }
        let floor = released.get(&lane).copied().unwrap_or(0);
        for (off, id) in acked.get(&lane).into_iter().flatten().filter(|(o, _)| **o >= floor) {
            prop_assert_eq!(by_offset.get(off), Some(id), "acked batch {} at {}/{} missing", id, lane, off);
        }
    }
    Ok(())
}

fn run(seed: u64, actions: Vec<Action>) -> Result<(), TestCaseError> {
    let rt = rt();
    let mut rig = Rig::new(SimFs::new(seed), opts());
    rig.open(None)?;
    let mut acked: HashMap<LaneId, HashMap<u64, u64>> = HashMap::new();
    let mut attempted: Attempted = HashMap::new();
    let mut released: HashMap<LaneId, u64> = HashMap::new();
    for (id, a) in (0u64..).zip(actions) {
        match a {
            Action::Append { lane, n, kind, salt } => {
                let lane = lane_of(lane);
                let records = hostile_records(&rig.sim, id, n, kind, salt);
                let meta = BatchMeta {
                    tenant: "acme".into(),
                    topic: "events".into(),
                    idempotency_key: Some(format!("k{id}")),
                };
                let batch = EncodedBatch::new(&meta, &records).map_err(|e| TestCaseError::fail(e.to_string()))?;
                attempted.insert(id, (lane, records));
                let fut = rig.wal().append(lane, batch);
                rig.wal().commit_queued();
                match rt.block_on(fut) {
                    Ok(ack) => {
                        acked.entry(lane).or_default().insert(ack.base_offset, id);
                    }
                    Err(WalError::LaneFailed { .. } | WalError::NoSpace { .. }) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
                }
            }
            Action::Release { lane, percent } => {
                let lane = lane_of(lane);
                let l = rig.wal().lane(lane).expect("lane");
                let below = l.earliest_offset() + (l.next_offset() - l.earliest_offset()) * percent / 100;
                let r = released.entry(lane).or_default();
                *r = (*r).max(below);
                let _ = l.delete_segments_below(below);
            }
            Action::Crash => {
                rig.crash(None)?;
                check(&rig, &acked, &attempted, &released)?;
            }
            Action::PowerCut { ops } => rig.sim.crash_after_ops(ops),
            Action::Reopen => {
                drop(rig.wal.take());
                rig.sim.crash_after_ops(u64::MAX);
                rig.open(None)?;
                check(&rig, &acked, &attempted, &released)?;
            }
        }
        if rig.after_cut()? {
            check(&rig, &acked, &attempted, &released)?;
        }
    }
    rig.sim.crash_after_ops(u64::MAX);
    rig.crash(None)?;
    check(&rig, &acked, &attempted, &released)
}

fn cases() -> u32 {
    std::env::var("WEIR_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(if cfg!(feature = "long-model") {
        10_000
    } else {
        200
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn recovered_records_are_exactly_the_acknowledged_ones_whatever_the_payloads(
        seed in any::<u64>(),
        actions in prop::collection::vec(action(), 1..50),
    ) {
        run(seed, actions)?;
    }
}

const NORMAL_0: LaneId = LaneId { priority: Priority::Normal, shard: 0 };

/// Six batches in one segment, the third damaged on disk: recovery must
/// quarantine it and keep the other five. Returns the disk.
fn damaged_log(seed: u64) -> SimFs {
    let sim = SimFs::new(seed);
    let o = WalOptions { segment_bytes: 1 << 20, ..opts() };
    let w = open(Arc::new(sim.clone()), Path::new(DIR), o);
    let rt = rt();
    for id in 0..6 {
        let f = w.append(NORMAL_0, batch(id, 2, 100));
        w.commit_queued();
        rt.block_on(f).expect("append");
    }
    drop(w);
    let r = wal::inspect::inspect_all(&sim, Path::new(DIR))
        .expect("inspect")
        .into_iter()
        .find(|r| r.lane == NORMAL_0 && r.records() > 0)
        .expect("segment");
    let mut bytes = sim.file_bytes(&r.path).expect("bytes");
    bytes[r.scan.frames[2].pos as usize + 60] ^= 0x40;
    sim.set_file_bytes(&r.path, bytes);
    sim
}

#[test]
fn a_crash_at_any_step_of_a_quarantine_keeps_every_valid_frame() {
    let rt = rt();
    // n: the crash point, after n file operations of the recovery.
    for n in 0..400u64 {
        let sim = damaged_log(n);
        sim.crash_after_ops(n);
        let first = wal::Wal::open(Arc::new(sim.clone()), Path::new(DIR), opts(), None);
        let cut = sim.power_cuts() > 0;
        drop(first);
        let disk = if cut { sim.remount() } else { sim.clone() };
        disk.crash_after_ops(u64::MAX);
        let w = open(Arc::new(disk), Path::new(DIR), opts());
        let ids: Vec<u64> = read_lane(&w, NORMAL_0).into_iter().map(|(_, id, _)| id).collect();
        assert_eq!(ids, vec![0, 1, 3, 4, 5], "crash after {n} operations of recovery lost valid frames");
        let f = w.append(NORMAL_0, batch(99, 1, 10));
        w.commit_queued();
        assert_eq!(rt.block_on(f).expect("append").base_offset, 12, "offsets are never reused (cut after {n})");
        if !cut {
            // Every earlier n was a cut inside the recovery.
            assert!(n > 5, "the recovery took only {n} operations?");
            return;
        }
    }
    panic!("recovery did not finish within 400 operations");
}

#[test]
fn a_new_lane_directory_survives_a_power_loss_after_its_first_acknowledgement() {
    let sim = SimFs::new(5);
    let w = open(Arc::new(sim.clone()), Path::new(DIR), opts());
    let f = w.append(NORMAL_0, batch(1, 1, 50));
    w.commit_queued();
    rt().block_on(f).expect("acknowledged");
    drop(w);
    let after = sim.crash();
    let w = open(Arc::new(after), Path::new(DIR), opts());
    assert_eq!(read_lane(&w, NORMAL_0).into_iter().map(|(_, id, _)| id).collect::<Vec<_>>(), vec![1]);
}
