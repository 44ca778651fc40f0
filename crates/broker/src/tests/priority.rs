//! Priority kept to the sink, deterministically: a destination whose sink
//! takes one lease at a time (`max_in_flight = 1`, each lease committed
//! before the next acquire), a `low` backlog, and `normal` records that
//! arrive behind it.

use super::Harness;
use protocol::lease::{AcquireRequest, CommitRequest};
use wal::{EncodedBatch, LaneId, Priority};

const DEST: &str = "[[destination]]\nname = \"d\"\ntopics = [\"events\"]\ntoken = \"d-t\"\nmax_in_flight = 1\n";

fn append(h: &Harness, priority: Priority, tag: &str, n: usize) {
    let records: Vec<String> = (0..n).map(|i| format!("{{\"{tag}\":{i}}}")).collect();
    let batch = EncodedBatch::encode("acme", "events", None, &records).expect("batch");
    h.run(h.b().wal().append(LaneId::new(priority, 0), batch)).expect("append");
}

/// Acquire and commit one lease: the sink "delivers" it at once. Returns
/// the priority it served and how many records it held.
fn deliver_one(h: &Harness) -> Option<(Priority, usize)> {
    let d = h.b().deliveries();
    let req = AcquireRequest { max_records: Some(50), max_bytes: None, wait_ms: Some(0), ..Default::default() };
    let lease = h.run(d.acquire("d", req)).expect("acquire").lease?;
    let crate::leased::LeaseLane::Lane(lane) = lease.lane else { panic!("a lane lease") };
    h.run(d.commit("d", &lease.id, CommitRequest::default())).expect("commit");
    Some((lane.priority, lease.records.len()))
}

#[test]
fn normal_records_that_arrive_behind_a_low_backlog_are_delivered_before_it_and_low_still_progresses() {
    let h = Harness::new("", DEST);
    for _ in 0..40 {
        append(&h, Priority::Low, "flood", 50);
    }
    // The backlog alone: every lease goes to it.
    for _ in 0..3 {
        assert_eq!(deliver_one(&h).map(|(p, _)| p), Some(Priority::Low));
    }
    // In-rate records arrive behind 1,850 backlogged ones.
    for _ in 0..5 {
        append(&h, Priority::Normal, "in_rate", 10);
    }
    let mut served = Vec::new();
    let mut normal_left = 50;
    for _ in 0..100 {
        let (p, n) = deliver_one(&h).expect("data waits");
        served.push(p);
        if p == Priority::Normal {
            normal_left -= n;
            if normal_left == 0 {
                break;
            }
        }
    }
    assert_eq!(normal_left, 0, "every normal record delivered: {served:?}");
    let low_between = served.iter().filter(|p| **p == Priority::Low).count();
    assert_eq!(served[0], Priority::Normal, "the first lease after they arrive is theirs: {served:?}");
    assert!(low_between <= 1, "normal waited behind {low_between} low leases: {served:?}");

    // Low still progresses while normal data keeps waiting: its share is 1 in 5
    // leases against normal alone (weights 4 : 1).
    let mut low = 0;
    for _ in 0..50 {
        append(&h, Priority::Normal, "steady", 10);
        if deliver_one(&h).expect("data waits").0 == Priority::Low {
            low += 1;
        }
    }
    assert_eq!(low, 10, "low got its weighted share while normal kept arriving");
}

/// Several exporters report their concurrency limits (4 + 4 = 8 leases at
/// once): `low` alone may hold 6 of them (a quarter is kept), and a
/// `normal` record that arrives then gets one of the two kept at once.
#[test]
fn low_never_takes_the_places_kept_for_higher_priorities_of_the_reported_capacity() {
    let h = Harness::new("", "[[destination]]\nname = \"d\"\ntopics = [\"events\"]\ntoken = \"d-t\"\n");
    for _ in 0..40 {
        append(&h, Priority::Low, "flood", 50);
    }
    let d = h.b().deliveries();
    let req = |exporter: &str| AcquireRequest {
        max_records: Some(10),
        wait_ms: Some(0),
        exporter: Some(exporter.to_string()),
        concurrency_limit: Some(4),
        ..Default::default()
    };
    let mut low = Vec::new();
    for i in 0..10 {
        let exporter = if i % 2 == 0 { "a" } else { "b" };
        match h.run(d.acquire("d", req(exporter))).expect("acquire").lease {
            Some(l) => low.push(l),
            None => break,
        }
    }
    assert_eq!(low.len(), 6, "6 of 8 places for low, the other 2 kept");
    assert!(low
        .iter()
        .all(|l| matches!(l.lane, crate::leased::LeaseLane::Lane(lane) if lane.priority == Priority::Low)));
    append(&h, Priority::Normal, "in_rate", 3);
    let normal = h.run(d.acquire("d", req("a"))).expect("acquire").lease.expect("a kept place");
    assert!(matches!(normal.lane, crate::leased::LeaseLane::Lane(lane) if lane.priority == Priority::Normal));
    // A low lease that ends frees its place for low again.
    h.run(d.commit("d", &low[0].id, CommitRequest::default())).expect("commit");
    h.run(d.commit("d", &normal.id, CommitRequest::default())).expect("commit");
    let again = h.run(d.acquire("d", req("b"))).expect("acquire").lease.expect("low again");
    assert!(matches!(again.lane, crate::leased::LeaseLane::Lane(lane) if lane.priority == Priority::Low));
}
