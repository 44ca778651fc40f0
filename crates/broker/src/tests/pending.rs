//! Issue 19 defect 4: a destination's lag, backpressure and retention count
//! only the records routed to it (its topics and tenants). On 39baa17 lag
//! was `end − cursor` per lane: `d2` (tenants = ["globex"], no exporter)
//! refused globex's ingest after 2,000 records of acme and pinned
//! retention of acme's data.

use super::{normal0, Harness};
use plumbing::clock::now_ms;
use std::sync::atomic::Ordering;

const D2: &str = r#"
[[destination]]
name = "d2"
topics = ["events"]
tenants = ["globex"]
token = "d2-t"
max_lag_records = 1000
"#;

/// Records of about 1 KiB each, so a few thousand roll segments (64 KiB).
fn big(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{{\"{prefix}\":{i},\"pad\":\"{}\"}}", "x".repeat(1000))).collect()
}

fn lag(h: &Harness) -> (u64, bool) {
    let d = h.b().deliveries().dest("d2").expect("d2");
    (d.lag_records.load(Ordering::Relaxed), d.sheds(wal::Priority::Normal))
}

#[test]
fn a_destination_lags_sheds_and_holds_retention_only_for_records_routed_to_it() {
    let h = Harness::new("", D2);
    for _ in 0..20 {
        h.append("acme", "events", &big("a", 100));
    }
    h.run(h.b().maintenance().pass_at(now_ms())).expect("maintenance");
    assert_eq!(lag(&h), (0, false), "2,000 records of a tenant d2 does not take are not its lag");
    let lane = h.b().wal().lane(normal0()).expect("lane");
    assert!(lane.earliest_offset() > 0, "d2's unmoved cursor pinned retention of acme's data");

    let first_globex = h.append("globex", "events", &big("g", 5));
    h.append("globex", "other", &big("o", 3));
    h.append("acme", "events", &big("a", 50));
    h.run(h.b().maintenance().pass_at(now_ms())).expect("maintenance");
    assert_eq!(lag(&h), (5, false), "globex's events only: not its other topic, not acme");
    assert!(lane.earliest_offset() <= first_globex, "a pending routed record was released");

    for _ in 0..3 {
        h.append("globex", "events", &big("g", 400));
    }
    h.run(h.b().maintenance().pass_at(now_ms())).expect("maintenance");
    assert_eq!(lag(&h), (1_205, true), "over max_lag_records on its own records: backpressure");
}

#[test]
fn the_pending_account_follows_commits_rewinds_and_restarts() {
    let mut h = Harness::new("", D2);
    h.append("globex", "events", &big("g", 10));
    h.append("acme", "events", &big("a", 10));
    h.append("globex", "events", &big("g", 10));
    h.run(h.b().maintenance().pass_at(now_ms())).expect("maintenance");
    assert_eq!(lag(&h).0, 20);
    let req = protocol::lease::AcquireRequest { max_records: Some(10), wait_ms: Some(0), ..Default::default() };
    let lease = h.run(h.b().deliveries().acquire("d2", req)).expect("acquire").lease.expect("a lease");
    let commit = protocol::lease::CommitRequest::default();
    h.run(h.b().deliveries().commit("d2", &lease.id, commit)).expect("commit");
    h.run(h.b().maintenance().pass_at(now_ms())).expect("maintenance");
    assert_eq!(lag(&h).0, 10, "the committed records left the account");
    h.restart();
    h.run(h.b().maintenance().pass_at(now_ms())).expect("maintenance");
    assert_eq!(lag(&h).0, 10, "rebuilt from the WAL after a restart");
    h.run(h.b().deliveries().rewind("d2", protocol::RewindTarget::Earliest)).expect("rewind");
    h.run(h.b().maintenance().pass_at(now_ms())).expect("maintenance");
    assert_eq!(lag(&h).0, 20, "a rewind puts the records back");
}
