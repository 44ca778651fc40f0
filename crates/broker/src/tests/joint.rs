//! Joint leases (`deliveries::joint`), deterministically: four lanes of
//! one priority (`shards = 4`), short runs in several of them, leases
//! acquired and settled one by one on a driven clock.

use super::Harness;
use crate::leased::{Lease, LeaseLane};
use protocol::lease::{AcquireRequest, CommitRequest, FailRequest, FailureClass, PoisonRecord};
use wal::{LaneId, Priority};

const DEST: &str = "[[destination]]\nname = \"d\"\ntopics = [\"events\"]\ntoken = \"d-t\"\nmax_in_flight = 8\n";

fn harness() -> Harness {
    Harness::new_edited("", DEST, |c| c.replace("shards = 1", "shards = 4"))
}

fn lane(shard: u16) -> LaneId {
    LaneId::new(Priority::Normal, shard)
}

fn records(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{{\"{tag}\":{i}}}")).collect()
}

/// An acquire at `now` by exporter `e` whose limit is `limit`.
fn acquire(h: &Harness, joint: bool, limit: u32, now: u64) -> Option<Lease> {
    let req = AcquireRequest {
        max_records: Some(100),
        wait_ms: Some(0),
        exporter: Some("e".into()),
        concurrency_limit: Some(limit),
        joint,
        joint_lane_parts: joint,
        ..Default::default()
    };
    h.run(h.b().deliveries().acquire_at("d", req, now)).expect("acquire").lease
}

/// (lane, offset, payload) of each record, as the exporter gets them.
fn held(lease: &Lease) -> Vec<(String, u64, Vec<u8>)> {
    let own = lease.lane.to_string();
    lease
        .records
        .iter()
        .map(|r| (r.lane.clone().unwrap_or_else(|| own.clone()), r.offset, r.payload.to_vec()))
        .collect()
}

fn commit(h: &Harness, lease: &Lease, poison: Vec<PoisonRecord>) {
    let req = CommitRequest { dead_letters: poison };
    h.run(h.b().deliveries().commit("d", &lease.id, req)).expect("commit");
}

#[test]
fn short_runs_of_several_lanes_go_out_in_one_joint_lease_that_commits_as_one() {
    let h = harness();
    let now = plumbing::clock::now_ms();
    for shard in 0..4 {
        let tenant = if shard % 2 == 0 { "acme" } else { "globex" };
        h.append_to(lane(shard), tenant, "events", &records(&format!("s{shard}"), 2));
    }
    let lease = acquire(&h, true, 4, now).expect("a lease");
    assert_eq!(lease.lane, LeaseLane::Joint(Priority::Normal));
    assert_eq!(lease.lane.to_string(), "normal/joint");
    let lanes: Vec<String> = held(&lease).into_iter().map(|r| r.0).collect();
    assert_eq!(lanes, ["normal/0", "normal/0", "normal/1", "normal/1", "normal/2", "normal/2", "normal/3", "normal/3"]);
    let d = h.b().deliveries().dest("d").expect("dest");
    assert_eq!(d.state().deliveries_out().len(), 1, "one delivery out");
    assert_eq!(d.state().leases.len(), 4, "four members, one per lane");
    h.b().deliveries().heartbeat_at("d", &lease.id, now + 10).expect("a heartbeat reaches the joint lease");
    commit(&h, &lease, Vec::new());
    for shard in 0..4 {
        assert_eq!(d.state().committed(lane(shard)), 2, "lane {shard}'s cursor moved by the one commit");
    }
    assert!(d.state().leases.is_empty());
    // An exporter that does not take joint leases gets one lane a lease.
    h.append_to(lane(1), "acme", "events", &records("x", 1));
    h.append_to(lane(2), "acme", "events", &records("y", 1));
    let single = acquire(&h, false, 4, now).expect("a lease");
    assert!(matches!(single.lane, LeaseLane::Lane(_)), "{:?}", single.lane);
    assert_eq!(single.records.len(), 1);
}

#[test]
fn a_joint_lease_given_back_comes_back_whole_with_the_same_records_also_after_a_restart() {
    let mut h = harness();
    let now = plumbing::clock::now_ms();
    h.append_to(lane(0), "acme", "events", &records("a", 1));
    h.append_to(lane(2), "globex", "events", &records("g", 3));
    h.append_to(lane(3), "acme", "events", &records("b", 1));
    let first = acquire(&h, true, 4, now).expect("a lease");
    assert_eq!(first.lane, LeaseLane::Joint(Priority::Normal));
    let fail = FailRequest { class: FailureClass::Retryable, message: "sink down".into(), retry_after_ms: None };
    h.run(h.b().deliveries().fail("d", &first.id, fail)).expect("fail");
    let d = h.b().deliveries().dest("d").expect("dest");
    assert_eq!(d.state().breaker.consecutive_failures, 1, "one delivery failed once, not once per lane");
    // New records in another lane must not join the lease given back.
    h.append_to(lane(1), "globex", "events", &records("new", 1));
    let again = acquire(&h, false, 4, now + 1).expect("offered again");
    assert_eq!(again.lane, first.lane);
    assert_eq!(held(&again), held(&first), "the same records, in the same order");
    assert_eq!(again.redeliveries, 1);
    // Expired, then the broker restarts: still the same lease.
    let report = h.run(h.b().maintenance().pass_at(now + 600_000)).expect("pass");
    assert_eq!(report.leases_expired, 1, "the joint lease expired as one");
    h.restart();
    let after = acquire(&h, true, 4, now + 600_001).expect("offered again after a restart");
    assert_eq!(held(&after), held(&first));
    commit(&h, &after, Vec::new());
    let rest = acquire(&h, true, 4, now + 600_002).expect("the new record");
    assert_eq!(held(&rest).len(), 1);
}

#[test]
fn a_batch_is_never_joined_and_leaves_one_place_to_short_runs_while_they_flow() {
    let h = harness();
    let now = plumbing::clock::now_ms();
    h.append_to(lane(0), "acme", "events", &records("a", 25));
    h.append_to(lane(1), "globex", "events", &records("g", 1));
    h.append_to(lane(3), "acme", "events", &records("b", 25));
    // Capacity 2 (this exporter's limit): at most one place for batches
    // while short runs flow.
    let mut got = Vec::new();
    for i in 0..2 {
        got.push(acquire(&h, true, 2, now + i).expect("a lease"));
    }
    for l in &got {
        let tenants: std::collections::BTreeSet<&str> = l.records.iter().map(|r| &*r.tenant).collect();
        assert_eq!(tenants.len(), 1, "a batch rides with no short run: {:?}", held(l));
    }
    let short = got.iter().filter(|l| l.records.len() == 1).count();
    assert_eq!(short, 1, "the short run went out beside one batch");
    let req = AcquireRequest {
        max_records: Some(100),
        exporter: Some("e".into()),
        concurrency_limit: Some(2),
        joint: true,
        ..Default::default()
    };
    let held_back = h.run(h.b().deliveries().acquire_at("d", req, now + 10)).expect("acquire");
    assert_eq!(held_back.lease, None, "the second batch waits: one place kept for short runs");
    let window = crate::deliveries::joint::RESERVE_WINDOW_MS;
    let recheck = held_back.recheck_at_ms.expect("a long-poll told when the kept place lapses");
    assert!((now + window..=now + 1 + window).contains(&recheck), "{recheck}");
    h.append_to(lane(2), "globex", "events", &records("h", 1));
    let next = acquire(&h, true, 2, now + 20).expect("a short run is served in the kept place");
    assert_eq!(held(&next).len(), 1);
    let late = acquire(&h, true, 2, now + 20 + window).expect("no short run for a while: the batch goes");
    assert_eq!(late.records.len(), 25);
}

#[test]
fn a_poison_record_of_a_joint_lease_is_named_by_its_place() {
    let h = harness();
    let now = plumbing::clock::now_ms();
    h.append_to(lane(0), "acme", "events", &records("a", 2));
    h.append_to(lane(1), "globex", "events", &records("g", 2));
    let lease = acquire(&h, true, 4, now).expect("a lease");
    assert_eq!(held(&lease).len(), 4);
    // Offset 0 is in both lanes: by offset alone it is ambiguous.
    let by_offset = CommitRequest { dead_letters: vec![PoisonRecord { index: None, offset: 0, error: "x".into() }] };
    assert!(h.run(h.b().deliveries().commit("d", &lease.id, by_offset)).is_err(), "refused");
    commit(&h, &lease, vec![PoisonRecord { index: Some(2), offset: 0, error: "bad".into() }]);
    let dead = h.b().deliveries().store().dead_letters("d", 10).expect("dead letters");
    let got: Vec<(String, u64, String)> = dead.into_iter().map(|(_, r)| (r.lane, r.offset, r.error)).collect();
    assert_eq!(got, [("normal/1".to_string(), 0, "bad".to_string())]);
}

#[test]
fn a_part_cancelled_by_a_rewind_leaves_the_rest_held_and_places_named_as_sent() {
    let h = harness();
    let now = plumbing::clock::now_ms();
    h.append_to(lane(0), "acme", "events", &records("a", 2));
    h.append_to(lane(1), "globex", "events", &records("g", 2));
    h.append_to(lane(2), "acme", "events", &records("c", 1));
    let lease = acquire(&h, true, 4, now).expect("a lease");
    assert_eq!(held(&lease).len(), 5);
    let target = protocol::RewindTarget::Offset { offset: 0, lane: Some("normal/0".into()) };
    h.run(h.b().deliveries().rewind_at("d", target, now + 1)).expect("rewind");
    let d = h.b().deliveries().dest("d").expect("dest");
    assert_eq!(d.state().leases.len(), 2, "the rewound lane's part is void");
    assert_eq!(d.state().deliveries_out().len(), 1, "the joint lease is still one delivery out");
    h.b().deliveries().heartbeat_at("d", &lease.id, now + 2).expect("its id still names the rest");
    // Place 3 is normal/1's second record as sent; place 0 was normal/0's
    // (rewound: ignored, not refused); place 5 was never sent.
    let bad = CommitRequest { dead_letters: vec![PoisonRecord { index: Some(5), offset: 0, error: "x".into() }] };
    assert!(h.run(h.b().deliveries().commit("d", &lease.id, bad)).is_err(), "a place never sent is refused");
    let poison = |i| PoisonRecord { index: Some(i), offset: if i == 3 { 1 } else { 0 }, error: "bad".into() };
    commit(&h, &lease, vec![poison(0), poison(3)]);
    let dead = h.b().deliveries().store().dead_letters("d", 10).expect("dead letters");
    let got: Vec<(String, u64)> = dead.into_iter().map(|(_, r)| (r.lane, r.offset)).collect();
    assert_eq!(got, [("normal/1".to_string(), 1)]);
    assert_eq!(d.state().committed(lane(1)), 2);
    assert_eq!(d.state().committed(lane(0)), 0, "the rewound lane waits to be delivered again");
}

/// A third tenant, for short runs of several tenants in one lane.
fn harness_of_three() -> Harness {
    Harness::new_edited("", DEST, |c| {
        c.replace("shards = 1", "shards = 4")
            + "\n[[tenant]]\nname = \"initech\"\ntoken = \"initech-t\"\nrate_per_sec = 100000.0\nburst = 200000\n"
    })
}

/// At capacity 2, only the kept place left: a short run of lane 2 goes
/// out and is delivered (short runs are flowing, so one place is kept for
/// them for a while), then a batch of lane 1 takes the other place. The
/// batch's lease.
fn only_the_kept_place_left(h: &Harness, now: u64) -> Lease {
    h.append_to(lane(2), "globex", "events", &records("s", 1));
    let short = acquire(h, true, 2, now).expect("a short run");
    commit(h, &short, Vec::new());
    h.append_to(lane(1), "acme", "events", &records("b", 25));
    let batch = acquire(h, true, 2, now + 1).expect("a batch takes the place not kept");
    assert_eq!(batch.records.len(), 25);
    batch
}

#[test]
fn short_runs_of_several_tenants_waiting_behind_a_batch_go_out_together_in_one_joint_lease() {
    let h = harness_of_three();
    let now = plumbing::clock::now_ms();
    only_the_kept_place_left(&h, now);
    // Lane 0: a batch held back (only the kept place is left), and behind
    // it two small tenants' records, one tenant's between the other's.
    h.append_to(lane(0), "acme", "events", &records("a", 25));
    for (tenant, tag) in [("globex", "g0"), ("initech", "i0"), ("globex", "g1"), ("initech", "i1")] {
        h.append_to(lane(0), tenant, "events", &records(tag, 1));
    }
    let joint = acquire(&h, true, 2, now + 2).expect("the small tenants' runs");
    assert_eq!(joint.lane, LeaseLane::Joint(Priority::Normal), "{:?}", held(&joint));
    let sent: Vec<(String, u64)> = held(&joint).into_iter().map(|r| (r.0, r.1)).collect();
    let lane0 = |offsets: [u64; 4]| offsets.map(|o| ("normal/0".to_string(), o)).to_vec();
    assert_eq!(sent, lane0([25, 27, 26, 28]), "two parts of lane 0 (by first offset), not the batch");
    let d = h.b().deliveries().dest("d").expect("dest");
    assert_eq!(d.state().deliveries_out().len(), 2, "the batch and one joint lease");
    // Given back, it comes back with the same records in the same order.
    let fail = FailRequest { class: FailureClass::Retryable, message: "sink down".into(), retry_after_ms: None };
    h.run(h.b().deliveries().fail("d", &joint.id, fail)).expect("fail");
    let again = acquire(&h, true, 2, now + 3).expect("offered again");
    assert_eq!(held(&again), held(&joint));
    commit(&h, &again, Vec::new());
    assert_eq!(d.state().committed(lane(0)), 0, "the batch below them is not delivered yet");
    // An exporter whose decoder wants a lane's offsets increasing gets one
    // part a lane; and a tenant gets one part, however many short runs.
    for (tenant, tag) in [("globex", "g2"), ("initech", "i2"), ("globex", "g3")] {
        h.append_to(lane(0), tenant, "events", &records(tag, 1));
    }
    let req = AcquireRequest { max_records: Some(100), concurrency_limit: Some(2), joint: true, ..Default::default() };
    let one = h.run(h.b().deliveries().acquire_at("d", req, now + 4)).expect("acquire").lease.expect("a lease");
    let tenants: Vec<&str> = one.records.iter().map(|r| &*r.tenant).collect();
    assert_eq!(tenants, ["initech"], "one part of lane 0: the lowest-tag tenant's");
    let rest = acquire(&h, true, 2, now + 5).expect("the other tenant's records");
    assert_eq!(held(&rest).into_iter().map(|r| r.1).collect::<Vec<_>>(), [29, 31], "one part for globex's two runs");
}

#[test]
fn a_less_urgent_lease_leaves_the_kept_place_to_the_short_runs_it_is_kept_for() {
    let h = harness();
    let now = plumbing::clock::now_ms();
    let batch = only_the_kept_place_left(&h, now);
    // Normal data waits (a second batch, held back); low's record is on its turn.
    h.append_to(lane(3), "acme", "events", &records("c", 25));
    let low = LaneId::new(Priority::Low, 0);
    h.append_to(low, "globex", "events", &records("l", 1));
    let got = acquire(&h, true, 2, now + 2).map(|l| held(&l));
    assert_eq!(got, None, "the kept place is for normal's short runs, not low's");
    h.append_to(lane(0), "globex", "events", &records("n", 1));
    let kept = acquire(&h, true, 2, now + 3).expect("normal's short run takes the kept place");
    assert_eq!(kept.lane, LeaseLane::Lane(lane(0)));
    // Once the batch is delivered, low takes the place it leaves.
    commit(&h, &batch, Vec::new());
    let next = acquire(&h, true, 2, now + 4).expect("a lease");
    assert_eq!(next.lane, LeaseLane::Lane(low), "low's turn, in the place the batch left");
}

#[test]
fn a_lane_gives_one_batch_at_a_time_while_short_runs_flow_until_a_full_lease_waits() {
    let h = harness();
    let now = plumbing::clock::now_ms();
    // Short runs are flowing: a place is kept.
    h.append_to(lane(2), "globex", "events", &records("s", 1));
    let short = acquire(&h, true, 4, now).expect("a short run");
    commit(&h, &short, Vec::new());
    h.append_to(lane(1), "acme", "events", &records("a", 25));
    let first = acquire(&h, true, 4, now + 1).expect("a batch");
    assert_eq!(first.records.len(), 25);
    // A second burst, smaller than a lease (100 records, the request's
    // cap: the sizing has no samples yet): it waits for the first, though
    // three of the four places are free.
    h.append_to(lane(1), "acme", "events", &records("b", 25));
    let req = AcquireRequest { max_records: Some(100), concurrency_limit: Some(4), joint: true, ..Default::default() };
    let held_back = h.run(h.b().deliveries().acquire_at("d", req, now + 2)).expect("acquire");
    assert_eq!(held_back.lease.map(|l| held(&l)), None, "one batch of a lane at a time");
    let window = crate::deliveries::joint::RESERVE_WINDOW_MS;
    assert_eq!(held_back.recheck_at_ms, Some(now + window), "a long-poll looks again when the hold lapses");
    // A small tenant's record behind it still goes at once.
    h.append_to(lane(1), "globex", "events", &records("g", 1));
    let small = acquire(&h, true, 4, now + 3).expect("the short run behind the held batch");
    assert_eq!(held(&small), vec![("normal/1".to_string(), 50, b"{\"g\":0}".to_vec())]);
    // A full lease's worth waiting: the tenant spreads over another place.
    h.append_to(lane(1), "acme", "events", &records("c", 90));
    let second = acquire(&h, true, 4, now + 4).expect("a second batch: a full lease waits");
    assert!(second.records.iter().all(|r| &*r.tenant == "acme") && second.records.len() == 100);
    // The rest (15 records: a batch) waits while short runs flow, and goes once none
    // went out for a while: no place is kept then.
    commit(&h, &small, Vec::new());
    assert_eq!(acquire(&h, true, 4, now + 5).map(|l| held(&l)), None, "less than a lease: held");
    let late = acquire(&h, true, 4, now + 4 + window).expect("the rest, once no place is kept");
    assert_eq!(late.records.len(), 15);
}
