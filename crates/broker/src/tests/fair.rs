//! The tenant share within a priority (`crate::fair`), deterministically:
//! one lane (`shards = 1`) that two tenants share, leases acquired and
//! settled one by one.

use super::Harness;
use crate::leased::Lease;
use protocol::lease::{AcquireRequest, CommitRequest, FailRequest, FailureClass};
use std::collections::BTreeMap;

const DEST: &str = "[[destination]]\nname = \"d\"\ntopics = [\"events\"]\ntoken = \"d-t\"\nmax_in_flight = 8\n";

fn records(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{{\"{tag}\":{i}}}")).collect()
}

fn acquire(h: &Harness, max: u32) -> Option<Lease> {
    let req = AcquireRequest { max_records: Some(max), max_bytes: None, wait_ms: Some(0), ..Default::default() };
    h.run(h.b().deliveries().acquire("d", req)).expect("acquire").lease
}

fn commit(h: &Harness, lease: &Lease) {
    h.run(h.b().deliveries().commit("d", &lease.id, CommitRequest::default())).expect("commit");
}

/// The tenants of a lease's records, each once, in order.
fn tenants(lease: &Lease) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in &lease.records {
        if out.last().map(String::as_str) != Some(&*r.tenant) {
            out.push(r.tenant.to_string());
        }
    }
    out
}

/// Acquire and commit until nothing is left (bounded); each record's
/// deliveries by offset.
fn drain(h: &Harness, seen: &mut BTreeMap<u64, u32>) {
    for _ in 0..1000 {
        let Some(lease) = acquire(h, 10) else {
            return;
        };
        for r in &lease.records {
            *seen.entry(r.offset).or_default() += 1;
        }
        commit(h, &lease);
    }
    panic!("the lane never drained");
}

#[test]
fn a_small_tenant_behind_anothers_backlog_gets_the_next_lease_and_every_record_arrives_once() {
    let h = Harness::new("", DEST);
    for i in 0..20 {
        h.append("acme", "events", &records(&format!("a{i}"), 25));
    }
    let mut seen = BTreeMap::new();
    let first = acquire(&h, 10).expect("the backlog");
    assert_eq!(tenants(&first), ["acme"]);
    let small = h.append("globex", "events", &records("g", 1));
    let next = acquire(&h, 10).expect("a lease");
    assert_eq!(tenants(&next), ["globex"], "globex waits behind 490 of acme's records for no lease");
    assert_eq!((next.from_offset, next.records.len()), (small, 1));
    for lease in [&first, &next] {
        for r in &lease.records {
            *seen.entry(r.offset).or_default() += 1;
        }
        commit(&h, lease);
    }
    drain(&h, &mut seen);
    assert_eq!(seen.len(), 501, "every record delivered");
    assert!(seen.values().all(|&n| n == 1), "none twice: {seen:?}");
    let d = h.b().deliveries().dest("d").expect("dest");
    assert_eq!(d.state().committed(super::normal0()), 501, "the cursor passed the holes once delivered");
}

#[test]
fn a_tenant_lease_given_back_is_offered_again_with_exactly_its_records() {
    let h = Harness::new("", DEST);
    for i in 0..5 {
        h.append("acme", "events", &records(&format!("a{i}"), 10));
    }
    for i in 0..5 {
        h.append("globex", "events", &records(&format!("g{i}"), 1));
        h.append("acme", "events", &records(&format!("b{i}"), 10));
    }
    let first = acquire(&h, 10).expect("acme's first batch");
    assert_eq!(tenants(&first), ["acme"]);
    let small = acquire(&h, 10).expect("globex overtakes");
    assert_eq!(tenants(&small), ["globex"]);
    let offsets: Vec<u64> = small.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets.len(), 5, "all of globex's waiting records, skipping acme's between: {offsets:?}");
    let fail = FailRequest { class: FailureClass::Released, message: "given back".into(), retry_after_ms: None };
    h.run(h.b().deliveries().fail("d", &small.id, fail)).expect("release");
    let again = acquire(&h, 10).expect("offered again");
    assert_eq!(again.records.iter().map(|r| r.offset).collect::<Vec<_>>(), offsets);
    assert_eq!((again.from_offset, again.to_offset), (small.from_offset, small.to_offset));
    // The floor skips globex's records handed out ahead: acme's next lease holds acme's only.
    let floor = acquire(&h, 10).expect("the floor goes on");
    assert_eq!(tenants(&floor), ["acme"]);
}

#[test]
fn a_restart_neither_repeats_nor_loses_what_was_handed_out_ahead() {
    let mut h = Harness::new("", DEST);
    for i in 0..10 {
        h.append("acme", "events", &records(&format!("a{i}"), 10));
    }
    let mut seen = BTreeMap::new();
    let first = acquire(&h, 10).expect("acme");
    h.append("globex", "events", &records("g", 3));
    let small = acquire(&h, 10).expect("globex");
    assert_eq!(tenants(&small), ["globex"]);
    for r in small.records.iter().chain(&first.records) {
        *seen.entry(r.offset).or_default() += 1;
    }
    commit(&h, &small);
    // `first` is still out across the restart: it stays leased, and commits after it.
    h.restart();
    commit(&h, &first);
    drain(&h, &mut seen);
    assert_eq!(seen.len(), 103);
    assert!(seen.values().all(|&n| n == 1), "a restart handed a record out twice: {seen:?}");
}

#[test]
fn weights_divide_the_records_between_tenants_with_backlogs() {
    let mut h = Harness::new("", DEST);
    h.config = h.config.replace("name = \"acme\"\n", "name = \"acme\"\nweight = 3.0\n");
    h.restart();
    for i in 0..60 {
        h.append("acme", "events", &records(&format!("a{i}"), 10));
        h.append("globex", "events", &records(&format!("g{i}"), 10));
    }
    let mut by_tenant: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..40 {
        let lease = acquire(&h, 10).expect("both backlogged");
        for r in &lease.records {
            *by_tenant.entry(r.tenant.to_string()).or_default() += 1;
        }
        commit(&h, &lease);
    }
    let (a, g) = (by_tenant["acme"] as f64, by_tenant["globex"] as f64);
    assert!((2.5..=3.5).contains(&(a / g)), "weight 3 against 1: acme {a}, globex {g}");
}
