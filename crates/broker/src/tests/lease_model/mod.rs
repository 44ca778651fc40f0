//! Model-based test of the lease protocol: random sequences of acquire
//! (with exporters' capacity reports), heartbeat, commit (valid and
//! refused), fail/release, clock advances (expiry, drop-oldest), age
//! retention, rewinds (earliest, offset, time), pause/resume, dead letters
//! and their re-drive, and broker restarts, over five lanes of three
//! priorities (`shards = 2`) and three tenants (one of weight 2), run
//! against a real broker (WAL on SimFs, sled in tmpfs) and checked against
//! a small reference model after every step. The clock is virtual.
//!
//! Invariants checked after every step (`docs/leases.md`):
//! 1. every acknowledged record a destination wants is delivered (or
//!    dead-lettered) before its lane's cursor passes it, unless an operator
//!    rewind, drop-oldest or retention explicitly skipped it;
//! 2. a refused call changes nothing (memory and sled);
//! 3. a half-open breaker with its probe out holds that probe lease (so it
//!    can always leave half-open), and the drain at the end leaves it closed;
//! 4. sled holds exactly the lease records and frontiers the state implies,
//!    and no lease in flight the model does not hold; dead letters match
//!    the model's;
//! 5. the low reservation: a `low` lease of new data is handed out while
//!    `high` or `normal` records wait only when no `low` lease is out;
//! 6. the tenant share: a tenant with records waiting at a priority is
//!    passed over by at most [`model::MAX_PASSED_OVER`] new-data leases of
//!    that priority in a row, even behind another tenant's flood of 120 records
//!    leased 2 at a time (offset order would pass it over 60 times);
//! 7. a lane lease holds only records of its lane that the destination
//!    wants, each at most once among the lane leases in flight.
//!
//! `WEIR_LEASE_MODEL_CASES=N` runs N cases (default 200).

mod model;
mod steps;

use super::Harness;
use model::{check, MDest, Model};
use proptest::prelude::*;
use std::collections::BTreeMap;
use wal::{LaneId, Priority};

const LEASE_MS: u64 = 1_000;
const OPEN_MS: u64 = 2_000;
const DESTS: [&str; 2] = ["a", "b"];
const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
/// The lanes records are appended to (`shards = 2`; normal/1 and low/1
/// hold records, high/1 stays empty).
const LANES: [LaneId; 5] = [
    LaneId::new(Priority::High, 0),
    LaneId::new(Priority::Normal, 0),
    LaneId::new(Priority::Normal, 1),
    LaneId::new(Priority::Low, 0),
    LaneId::new(Priority::Low, 1),
];

fn dest_config() -> String {
    format!(
        r#"
[[destination]]
name = "a"
topics = ["events"]
token = "a-t"
lease_timeout_ms = {LEASE_MS}
breaker_open_ms = {OPEN_MS}
max_in_flight = 4
on_lag_limit = "drop_oldest"
max_lag_records = 12

[[destination]]
name = "b"
topics = ["events", "other"]
tenants = ["acme", "globex"]
token = "b-t"
lease_timeout_ms = {LEASE_MS}
breaker_open_ms = {OPEN_MS}
failure_threshold = 1
max_in_flight = 2
"#
    )
}

/// The top of the config: retention, and a third tenant of weight 2.
const TOP: &str = r#"retention_max_age_secs = 3600

[[tenant]]
name = "initech"
token = "initech-t"
rate_per_sec = 100000.0
burst = 200000
weight = 2.0
"#;

fn wants(dest: usize, tenant: &str, topic: &str) -> bool {
    match dest {
        0 => topic == "events",
        _ => tenant != "initech",
    }
}

#[derive(Debug, Clone)]
enum Action {
    Ingest {
        tenant: usize,
        events: bool,
        n: usize,
        lane: usize,
    },
    /// One tenant's backlog: 12 batches of 10 records in one lane.
    Flood {
        tenant: usize,
        lane: usize,
    },
    Acquire {
        dest: usize,
        max: u32,
        report: Option<u32>,
        /// The exporter takes joint leases.
        joint: bool,
    },
    Heartbeat {
        dest: usize,
        pick: usize,
    },
    Commit {
        dest: usize,
        pick: usize,
        poison: Option<usize>,
        refuse: u8,
    },
    Fail {
        dest: usize,
        pick: usize,
        retryable: bool,
    },
    Advance {
        ms: u64,
    },
    Retention,
    RewindEarliest {
        dest: usize,
    },
    RewindOffset {
        dest: usize,
        at: usize,
    },
    RewindTime {
        dest: usize,
        batch: usize,
    },
    Pause {
        dest: usize,
        paused: bool,
    },
    Redrive {
        dest: usize,
    },
    Restart,
}

fn action() -> impl Strategy<Value = Action> {
    let d = 0..DESTS.len();
    prop_oneof![
        5 => (0..TENANTS.len(), any::<bool>(), 1..4usize, 0..LANES.len())
            .prop_map(|(tenant, events, n, lane)| Action::Ingest { tenant, events, n, lane }),
        1 => (0..TENANTS.len(), 0..LANES.len()).prop_map(|(tenant, lane)| Action::Flood { tenant, lane }),
        6 => (d.clone(), 1..9u32, proptest::option::of(1..6u32), any::<bool>())
            .prop_map(|(dest, max, report, joint)| Action::Acquire { dest, max, report, joint }),
        1 => (d.clone(), any::<usize>()).prop_map(|(dest, pick)| Action::Heartbeat { dest, pick }),
        4 => (d.clone(), any::<usize>(), proptest::option::of(any::<usize>()), 0..4u8)
            .prop_map(|(dest, pick, poison, refuse)| Action::Commit { dest, pick, poison, refuse }),
        2 => (d.clone(), any::<usize>(), any::<bool>()).prop_map(|(dest, pick, retryable)| Action::Fail { dest, pick, retryable }),
        3 => (0..2_500u64).prop_map(|ms| Action::Advance { ms }),
        1 => Just(Action::Retention),
        1 => d.clone().prop_map(|dest| Action::RewindEarliest { dest }),
        1 => (d.clone(), any::<usize>()).prop_map(|(dest, at)| Action::RewindOffset { dest, at }),
        1 => (d.clone(), any::<usize>()).prop_map(|(dest, batch)| Action::RewindTime { dest, batch }),
        1 => (d.clone(), any::<bool>()).prop_map(|(dest, paused)| Action::Pause { dest, paused }),
        1 => d.prop_map(|dest| Action::Redrive { dest }),
        1 => Just(Action::Restart),
    ]
}

fn cases() -> u32 {
    std::env::var("WEIR_LEASE_MODEL_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(200)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn lease_protocol_matches_the_model(actions in proptest::collection::vec(action(), 1..48)) {
        let mut h = Harness::new_edited(TOP, &dest_config(), |c| c.replace("shards = 1", "shards = 2"));
        let mut m = Model {
            now: plumbing::clock::now_ms(),
            records: BTreeMap::new(),
            batches: Vec::new(),
            dests: (0..DESTS.len()).map(|_| MDest::default()).collect(),
            serial: 0,
        };
        for a in &actions {
            steps::step(&mut h, &mut m, a)?;
            check(&h, &m)?;
        }
        steps::drain(&mut h, &mut m)?;
    }
}
