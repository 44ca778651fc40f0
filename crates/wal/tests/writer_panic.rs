//! A lane writer that panics (issue 19, defect 17): every waiter of its
//! round and of its queue hears that the writer stopped unexpectedly, later
//! appends are refused at once, `Wal::failures` says why, the other lanes
//! go on, and nothing acknowledged is lost. The panic is injected by the
//! simulated disk ([`SimFs::panic_next_sync`]) inside the writer's sync.

mod common;

use common::*;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use wal::sim::SimFs;
use wal::{Drive, LaneId, Priority, Wal, WalError, WalOptions};

const NORMAL1: LaneId = LaneId { priority: Priority::Normal, shard: 1 };

fn opts(drive: Drive) -> WalOptions {
    // Segments large enough that no roll (and no spare helper) runs.
    WalOptions { shards: 2, segment_bytes: 1 << 20, drive, ..small_opts() }
}

fn is_stopped(answer: &Result<wal::Appended, WalError>) -> bool {
    matches!(answer, Err(e @ WalError::WriterStopped { .. }) if e.to_string().contains("stopped unexpectedly"))
}

/// An append to a stopped lane is answered on its first poll: it never waits.
fn refused_at_once(wal: &Wal, lane: LaneId, id: u64) -> Result<wal::Appended, WalError> {
    let mut fut = Box::pin(wal.append(lane, batch(id, 1, 50)));
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => panic!("an append to a stopped lane waited"),
    }
}

/// After the lane stopped: refused at once, listed, others unaffected,
/// releases keep its segments; after a crash every acknowledged batch is
/// there, whole.
fn check_stopped_lane(wal: Wal, sim: &SimFs, acked: &[u64], drive: Drive) {
    assert!(is_stopped(&refused_at_once(&wal, NORMAL0, 900)), "later appends are refused at once");
    // The waiters hear while the writer unwinds; the panic's own message is
    // recorded once it has unwound (`guard::guarded`): wait for that, bounded.
    let mut failures = wal.failures();
    for _ in 0..2_000 {
        if failures.first().is_some_and(|f| f.1.contains("simulated panic")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        failures = wal.failures();
    }
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, NORMAL0);
    assert!(
        failures[0].1.contains("writer stopped unexpectedly") && failures[0].1.contains("simulated panic"),
        "{failures:?}"
    );
    let other = wal.append(NORMAL1, batch(901, 1, 50));
    wal.commit_queued();
    rt().block_on(other).expect("the other lanes go on");
    assert_eq!(wal.lane(NORMAL0).unwrap().delete_segments_below(u64::MAX).unwrap(), 0);
    drop(wal);
    let wal = open(Arc::new(sim.crash()), Path::new(DIR), opts(drive));
    let held = read_lane(&wal, NORMAL0);
    let ids: Vec<u64> = held.iter().map(|(_, id, _)| *id).collect();
    assert_eq!(&ids[..acked.len()], acked, "every acknowledged batch is kept, in order");
    for (_, id, records) in &held {
        assert_eq!(records, &records_of(*id, 1, 50), "batch {id} is whole");
    }
    assert!(wal.failures().is_empty(), "opening the log again reopens the lane");
}

#[test]
fn a_writer_that_panics_fails_every_waiter_and_refuses_later_appends() {
    let sim = SimFs::new(17);
    let wal = open(Arc::new(sim.clone()), Path::new(DIR), opts(Drive::Thread));
    let rt = rt();
    let acked: Vec<u64> = (0..5).collect();
    for &id in &acked {
        rt.block_on(wal.append(NORMAL0, batch(id, 1, 50))).expect("append before the panic");
    }
    sim.panic_next_sync();
    // Queued at once: the round in flight and those waiting behind it.
    let waiters: Vec<_> = (10..18).map(|id| wal.append(NORMAL0, batch(id, 1, 50))).collect();
    let results = rt.block_on(async {
        let all = async {
            let mut out = Vec::new();
            for w in waiters {
                out.push(w.await);
            }
            out
        };
        tokio::time::timeout(Duration::from_secs(30), all).await.expect("no waiter hangs")
    });
    for r in &results {
        assert!(is_stopped(r), "every waiter hears the writer stopped: {r:?}");
    }
    check_stopped_lane(wal, &sim, &acked, Drive::Thread);
}

#[test]
fn a_panic_in_a_manually_driven_round_stops_the_lane_the_same_way() {
    let sim = SimFs::new(1717);
    let wal = open(Arc::new(sim.clone()), Path::new(DIR), opts(Drive::Manual));
    let rt = rt();
    let acked: Vec<u64> = (0..3).collect();
    for &id in &acked {
        let fut = wal.append(NORMAL0, batch(id, 1, 50));
        wal.commit_queued();
        rt.block_on(fut).expect("append before the panic");
    }
    sim.panic_next_sync();
    let waiters: Vec<_> = (10..14).map(|id| wal.append(NORMAL0, batch(id, 1, 50))).collect();
    wal.commit_queued(); // the round panics here, and is caught
    for w in waiters {
        assert!(is_stopped(&rt.block_on(w)), "the round's waiters hear the writer stopped");
    }
    check_stopped_lane(wal, &sim, &acked, Drive::Manual);
}
