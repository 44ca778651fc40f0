//! One named regression test per lease defect of issue 11 (items 7, 8, 9).
//! Each failed on the code before its fix.

use super::{normal0, Harness};
use crate::leased::Lease;
use plumbing::clock::now_ms;
use protocol::lease::{AcquireRequest, CommitRequest, FailRequest, FailureClass, IdleReason, PoisonRecord};
use protocol::RewindTarget;

const DEST: &str = r#"
[[destination]]
name = "d"
topics = ["events"]
token = "d-t"
lease_timeout_ms = 1000
failure_threshold = 1
breaker_open_ms = 0
"#;

fn recs(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{{\"{prefix}\":{i}}}")).collect()
}

fn acquire(h: &Harness, max_records: u32) -> Result<Lease, Option<IdleReason>> {
    let req =
        AcquireRequest { max_records: Some(max_records), max_bytes: None, wait_ms: Some(0), ..Default::default() };
    let resp = h.run(h.b().deliveries().acquire("d", req)).expect("acquire answers");
    resp.lease.ok_or(resp.idle)
}

fn commit(h: &Harness, id: &str, dead_letters: Vec<PoisonRecord>) -> Result<u64, crate::error::BrokerError> {
    h.run(h.b().deliveries().commit("d", id, CommitRequest { dead_letters })).map(|r| r.cursor)
}

fn poison(offset: u64) -> PoisonRecord {
    PoisonRecord { index: None, offset, error: "HTTP 400 from the sink".into() }
}

fn cursor(h: &Harness) -> u64 {
    h.b().deliveries().dest("d").expect("dest").state().committed(normal0())
}

fn sled_leases(h: &Harness) -> Vec<crate::store::LeaseRecord> {
    h.b().deliveries().store().leases("d").expect("sled leases")
}

/// Issue 11 item 7: a commit refused for a dead-letter offset outside the
/// lease, a place that holds another record, or a sled error changes nothing.
#[test]
fn refused_commit_changes_nothing_and_the_lease_stays_usable() {
    let h = Harness::new("", DEST);
    h.append("acme", "events", &recs("a", 3));
    let lease = acquire(&h, 100).expect("lease");
    assert_eq!((lease.from_offset, lease.to_offset), (0, 3));

    let outside = commit(&h, &lease.id, vec![poison(99)]).expect_err("offset outside the lease is refused");
    assert_eq!(outside.code(), protocol::ErrorCode::InvalidRequest);
    let wrong = PoisonRecord { index: Some(0), offset: 1, error: "x".into() };
    let dup = commit(&h, &lease.id, vec![wrong]).expect_err("a place holding another offset is refused");
    assert_eq!(dup.code(), protocol::ErrorCode::InvalidRequest);
    let beyond = PoisonRecord { index: Some(3), offset: 1, error: "x".into() };
    let beyond = commit(&h, &lease.id, vec![beyond]).expect_err("a place past the lease is refused");
    assert_eq!(beyond.code(), protocol::ErrorCode::InvalidRequest);

    h.b().deliveries().store().fail_writes.store(true, std::sync::atomic::Ordering::Relaxed);
    let io = commit(&h, &lease.id, vec![poison(1)]).expect_err("sled error");
    assert_eq!(io.code(), protocol::ErrorCode::Internal);
    h.b().deliveries().store().fail_writes.store(false, std::sync::atomic::Ordering::Relaxed);

    assert_eq!(cursor(&h), 0, "a refused commit moved the cursor");
    assert_eq!(h.b().deliveries().dest("d").expect("dest").state().leases.len(), 1, "the lease is still held");
    assert_eq!(h.b().deliveries().store().count_dead_letters("d"), 0, "nothing was dead-lettered");
    h.b().deliveries().heartbeat("d", &lease.id).expect("the lease can still be heartbeated");
    assert_eq!(commit(&h, &lease.id, vec![poison(1)]).expect("the retried commit succeeds"), 3);
    assert_eq!(h.b().deliveries().store().count_dead_letters("d"), 1);
}

/// Issue 11 item 8: a probe lease cancelled by a rewind must not leave the
/// breaker half-open with its probe "out" for ever — also after a restart.
#[test]
fn probe_cancelled_by_rewind_lets_the_breaker_leave_half_open() {
    let mut h = Harness::new("", DEST);
    h.append("acme", "events", &recs("a", 3));
    let first = acquire(&h, 100).expect("lease");
    let fail = FailRequest { class: FailureClass::Retryable, message: "sink down".into(), retry_after_ms: None };
    h.run(h.b().deliveries().fail("d", &first.id, fail)).expect("fail");
    let probe = acquire(&h, 100).expect("the probe lease");
    assert!(probe.probe);
    h.run(h.b().deliveries().rewind("d", RewindTarget::Earliest)).expect("rewind");
    let again = acquire(&h, 100).expect("after the cancelled probe another probe goes out");
    assert!(again.probe);
    h.run(h.b().deliveries().rewind("d", RewindTarget::Earliest)).expect("rewind");
    h.restart();
    let after_restart = acquire(&h, 100).expect("and after a restart too");
    assert!(after_restart.probe);
    assert!(commit(&h, &after_restart.id, vec![]).is_ok());
    assert_eq!(h.b().deliveries().dest("d").expect("dest").state().breaker, crate::breaker::Breaker::default());
}

/// Issue 11 item 8, the maintenance paths: drop-oldest cancels the probe.
#[test]
fn probe_cancelled_by_drop_oldest_lets_the_breaker_leave_half_open() {
    let dest =
        DEST.replace("breaker_open_ms = 0", "breaker_open_ms = 0\non_lag_limit = \"drop_oldest\"\nmax_lag_records = 4");
    let h = Harness::new("", &dest);
    h.append("acme", "events", &recs("a", 3));
    let first = acquire(&h, 100).expect("lease");
    let fail = FailRequest { class: FailureClass::Retryable, message: "sink down".into(), retry_after_ms: None };
    h.run(h.b().deliveries().fail("d", &first.id, fail)).expect("fail");
    let probe = acquire(&h, 100).expect("the probe lease");
    assert!(probe.probe);
    for i in 0..4 {
        h.append("acme", "events", &recs(&format!("b{i}"), 3));
    }
    h.run(h.b().maintenance().pass_at(plumbing::clock::now_ms())).expect("maintenance drops the oldest records");
    assert!(cursor(&h) > 0, "drop-oldest moved the cursor");
    assert!(acquire(&h, 100).expect("after the cancelled probe another probe goes out").probe);
}

/// Issue 11 item 9: a re-leased expired range leaves no sled record behind,
/// and a restart after a rewind redelivers from the rewound cursor.
#[test]
fn restart_after_rewind_redelivers_from_the_rewound_cursor() {
    let mut h = Harness::new("", DEST);
    h.append("acme", "events", &recs("a", 3));
    let a = acquire(&h, 100).expect("lease [0,3)");
    assert_eq!(commit(&h, &a.id, vec![]).expect("commit"), 3);
    h.append("acme", "events", &recs("b", 3));
    let b = acquire(&h, 100).expect("lease [3,6)");
    assert_eq!((b.from_offset, b.to_offset), (3, 6));
    let expired = h
        .b()
        .deliveries()
        .expire_leases(&h.b().deliveries().dest("d").expect("dest"), now_ms() + 10_000)
        .expect("expiry");
    assert_eq!(expired, 1);
    let again = acquire(&h, 100).expect("the expired range again");
    assert_eq!((again.from_offset, again.to_offset, again.redeliveries), (3, 6, 1));
    assert_eq!(sled_leases(&h).len(), 1, "sled holds exactly the live lease");
    assert_eq!(commit(&h, &again.id, vec![]).expect("commit"), 6);
    assert!(sled_leases(&h).is_empty(), "no lease record outlives its lease");
    let to_zero = RewindTarget::Offset { offset: 0, lane: Some(normal0().to_string()) };
    h.run(h.b().deliveries().rewind("d", to_zero)).expect("rewind");
    h.restart();
    assert_eq!(cursor(&h), 0, "the restart moved the rewound cursor");
    let redelivered = acquire(&h, 100).expect("redelivery from 0");
    assert_eq!(redelivered.from_offset, 0);
}

/// Issue 19 defect 7: dead letters of two lanes share offset 0 and one is
/// still poison. Its re-drive commit named offset 0 twice, was refused, and
/// the lease came back for ever. Named by place, it commits; an exporter
/// from before names the offset, and both stay dead letters (none lost).
#[test]
fn a_redrive_of_two_lanes_sharing_an_offset_commits_by_place() {
    let h = Harness::new("", DEST);
    h.append("acme", "events", &recs("n", 1));
    let low0: wal::LaneId = "low/0".parse().expect("lane");
    let batch = wal::EncodedBatch::encode("acme", "events", None, &recs("l", 1)).expect("batch");
    h.run(h.b().wal().append(low0, batch)).expect("append to low/0");
    for _ in 0..2 {
        let l = acquire(&h, 100).expect("a lane lease");
        assert_eq!(l.from_offset, 0);
        commit(&h, &l.id, vec![poison(0)]).expect("dead-lettered");
    }
    let store = h.b().deliveries().store();
    assert_eq!(store.count_dead_letters("d"), 2);

    h.b().deliveries().redrive("d").expect("re-drive");
    let l = acquire(&h, 100).expect("a re-drive lease");
    let offsets: Vec<u64> = l.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [0, 0], "one offset, two lanes");
    let lanes: Vec<Option<String>> = l.records.iter().map(|r| r.lane.clone()).collect();
    assert!(lanes.contains(&Some("normal/0".into())) && lanes.contains(&Some("low/0".into())), "{lanes:?}");
    let still_bad = PoisonRecord { index: Some(1), offset: 0, error: "still 400".into() };
    commit(&h, &l.id, vec![still_bad]).expect("a commit naming one place");
    let left = store.dead_letters("d", 10).expect("dead letters");
    assert_eq!(left.len(), 1, "the delivered one left, the poison one stayed");
    assert_eq!(Some(left[0].1.lane.clone()), lanes[1]);

    h.b().deliveries().redrive("d").expect("re-drive again");
    let l = acquire(&h, 100).expect("a re-drive lease");
    commit(&h, &l.id, vec![poison(0), poison(0)]).expect("an old exporter's commit by offset is not refused");
    assert_eq!(store.count_dead_letters("d"), 1);
}
