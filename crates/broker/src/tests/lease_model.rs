//! Model-based test of the lease protocol: random sequences of acquire,
//! heartbeat, commit (valid and refused), fail/release, clock advances
//! (expiry, drop-oldest), age retention, rewinds (earliest, offset, time),
//! pause/resume, dead letters and their re-drive, and broker restarts,
//! run against a real broker (WAL on SimFs, sled in tmpfs) and checked
//! against a small reference model after every step. The clock is virtual.
//!
//! Invariants checked after every step (`docs/leases.md`):
//! 1. every acknowledged record a destination wants is delivered (or
//!    dead-lettered) before its cursor passes it, unless an operator rewind,
//!    drop-oldest or retention explicitly skipped it;
//! 2. a refused call changes nothing (memory and sled);
//! 3. a half-open breaker with its probe out holds that probe lease (so it
//!    can always leave half-open), and the drain at the end leaves it closed;
//! 4. sled holds exactly the lease records the state implies, and no lease
//!    in flight the model does not hold; dead letters match the model's.
//!
//! `WEIR_LEASE_MODEL_CASES=N` runs N cases (default 200).

use super::{normal0, Harness};
use crate::breaker::Breaker;
use crate::error::BrokerError;
use proptest::prelude::*;
use protocol::lease::{AcquireRequest, CommitRequest, FailRequest, FailureClass, IdleReason, PoisonRecord};
use protocol::{ErrorCode, RewindTarget};
use std::collections::{BTreeMap, BTreeSet};

const LEASE_MS: u64 = 1_000;
const OPEN_MS: u64 = 2_000;
const DESTS: [&str; 2] = ["a", "b"];

fn dest_config() -> String {
    format!(
        r#"
[[destination]]
name = "a"
topics = ["events"]
token = "a-t"
lease_timeout_ms = {LEASE_MS}
breaker_open_ms = {OPEN_MS}
max_in_flight = 3
on_lag_limit = "drop_oldest"
max_lag_records = 6

[[destination]]
name = "b"
topics = ["events", "other"]
tenants = ["acme"]
token = "b-t"
lease_timeout_ms = {LEASE_MS}
breaker_open_ms = {OPEN_MS}
failure_threshold = 1
max_in_flight = 2
"#
    )
}

fn wants(dest: usize, tenant: &str, topic: &str) -> bool {
    match dest {
        0 => topic == "events",
        _ => tenant == "acme",
    }
}

#[derive(Debug, Clone)]
enum Action {
    Ingest { acme: bool, events: bool, n: usize },
    Acquire { dest: usize, max: u32 },
    Heartbeat { dest: usize, pick: usize },
    Commit { dest: usize, pick: usize, poison: Option<usize>, refuse: u8 },
    Fail { dest: usize, pick: usize, retryable: bool },
    Advance { ms: u64 },
    Retention,
    RewindEarliest { dest: usize },
    RewindOffset { dest: usize, at: usize },
    RewindTime { dest: usize, batch: usize },
    Pause { dest: usize, paused: bool },
    Redrive { dest: usize },
    Restart,
}

fn action() -> impl Strategy<Value = Action> {
    let d = 0..DESTS.len();
    prop_oneof![
        4 => (any::<bool>(), any::<bool>(), 1..4usize).prop_map(|(acme, events, n)| Action::Ingest { acme, events, n }),
        5 => (d.clone(), 1..9u32).prop_map(|(dest, max)| Action::Acquire { dest, max }),
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

/// A lease as the model knows it.
#[derive(Debug, Clone)]
struct MLease {
    from: u64,
    offsets: Vec<u64>,
    dead_letters: bool,
    expires: u64,
}

#[derive(Debug, Default)]
struct MDest {
    /// Acknowledged records this destination wants and has not had yet.
    owed: BTreeSet<u64>,
    live: BTreeMap<String, MLease>,
    dead: Vec<u64>,
    paused: bool,
}

struct Model {
    now: u64,
    /// offset -> (tenant, topic)
    records: BTreeMap<u64, (&'static str, &'static str)>,
    /// (base offset, ts_ms) of every batch
    batches: Vec<(u64, u64)>,
    dests: Vec<MDest>,
    serial: u64,
}

impl Model {
    fn excuse_below(&mut self, d: usize, to: u64) {
        let m = &mut self.dests[d];
        m.owed.retain(|&o| o >= to);
    }
    fn cancel_lane_leases(&mut self, d: usize, below: u64) {
        self.dests[d].live.retain(|_, l| l.dead_letters || l.from >= below);
    }
    fn reowe_from(&mut self, d: usize, to: u64) {
        let owed: BTreeSet<u64> =
            self.records.iter().filter(|(&o, (t, p))| o >= to && wants(d, t, p)).map(|(&o, _)| o).collect();
        self.dests[d].owed = owed;
    }
}

/// Everything a refused call must leave as it was.
fn snapshot(h: &Harness, d: usize) -> String {
    let b = h.b();
    let dest = b.deliveries().dest(DESTS[d]).expect("dest");
    let st = dest.state();
    let mut leases: Vec<String> = st
        .leases
        .values()
        .map(|l| {
            format!("{}:{:?}:{}-{}:{}:{}:{}", l.id, l.source, l.from, l.to, l.expires_at_ms, l.probe, l.redeliveries)
        })
        .collect();
    leases.sort();
    let mut sled = b.deliveries().store().leases(DESTS[d]).expect("sled");
    sled.sort_by(|x, y| x.id.cmp(&y.id));
    let dead = b.deliveries().store().dead_letters(DESTS[d], usize::MAX).expect("dead letters");
    format!(
        "{leases:?} {:?} {:?} {:?} {} {} {:?} {sled:?} {dead:?} {:?}",
        st.lanes,
        st.breaker,
        st.redrive,
        st.paused,
        st.not_before_ms,
        st.persisted,
        b.deliveries().store().cursor(DESTS[d], &normal0().to_string())
    )
}

fn pick(m: &MDest, pick: usize) -> Option<String> {
    (!m.live.is_empty()).then(|| m.live.keys().nth(pick % m.live.len()).cloned()).flatten()
}

fn check(h: &Harness, m: &Model) -> Result<(), TestCaseError> {
    let b = h.b();
    let lane = b.wal().lane(normal0()).expect("lane");
    for (d, md) in m.dests.iter().enumerate() {
        let dest = b.deliveries().dest(DESTS[d]).expect("dest");
        let st = dest.state();
        let cursor = st.committed(normal0());
        if let Some(&first) = md.owed.first() {
            prop_assert!(cursor <= first, "{}: cursor {cursor} passed undelivered offset {first}", DESTS[d]);
            prop_assert!(first >= lane.earliest_offset(), "{}: undelivered offset {first} was deleted", DESTS[d]);
        }
        if let Err(e) = st.check_invariants() {
            return Err(TestCaseError::fail(e.to_string()));
        }
        let ids: BTreeSet<&String> = st.leases.keys().collect();
        let model_ids: BTreeSet<&String> = md.live.keys().collect();
        prop_assert_eq!(ids, model_ids, "{}: leases in flight differ from the model", DESTS[d]);
        let mut sled: Vec<_> = b.deliveries().store().leases(DESTS[d]).expect("sled");
        sled.sort_by(|x, y| x.id.cmp(&y.id));
        let mut want: Vec<_> = st.lease_records().into_values().collect();
        want.sort_by(|x, y| x.id.cmp(&y.id));
        prop_assert_eq!(&sled, &want, "{}: sled lease records are not the state's", DESTS[d]);
        for r in sled.iter().filter(|r| !r.expired) {
            prop_assert!(md.live.contains_key(&r.id), "{}: sled holds lease {} the model does not", DESTS[d], r.id);
        }
        let mut dead: Vec<u64> = b
            .deliveries()
            .store()
            .dead_letters(DESTS[d], usize::MAX)
            .expect("dl")
            .into_iter()
            .map(|(_, r)| r.offset)
            .collect();
        dead.sort_unstable();
        let mut mdead = md.dead.clone();
        mdead.sort_unstable();
        prop_assert_eq!(dead, mdead, "{}: dead letters differ", DESTS[d]);
        prop_assert_eq!(st.paused, md.paused);
    }
    Ok(())
}

fn refused(e: &BrokerError) -> bool {
    matches!(e.code(), ErrorCode::InvalidRequest | ErrorCode::LeaseNotFound)
}

/// Apply `a` to the broker and the model, checking the invariants.
fn step(h: &mut Harness, m: &mut Model, a: &Action) -> Result<(), TestCaseError> {
    match *a {
        Action::Ingest { acme, events, n } => ingest(h, m, acme, events, n),
        Action::Acquire { dest, max } => acquire(h, m, dest, max),
        Action::Heartbeat { dest, pick: p } => heartbeat(h, m, dest, p),
        Action::Commit { dest, pick: p, poison, refuse } => commit(h, m, dest, p, poison, refuse),
        Action::Fail { dest, pick: p, retryable } => fail(h, m, dest, p, retryable),
        Action::Advance { ms } => advance(h, m, ms),
        Action::Retention => retention(h, m),
        Action::RewindEarliest { dest } => rewind_earliest(h, m, dest),
        Action::RewindOffset { dest, at } => rewind_offset(h, m, dest, at),
        Action::RewindTime { dest, batch } => rewind_time(h, m, dest, batch),
        Action::Pause { dest, paused } => pause(h, m, dest, paused),
        Action::Redrive { dest } => redrive(h, m, dest),
        Action::Restart => restart(h, m),
    }
}

fn ingest(h: &mut Harness, m: &mut Model, acme: bool, events: bool, n: usize) -> Result<(), TestCaseError> {
    let (tenant, topic) = (if acme { "acme" } else { "globex" }, if events { "events" } else { "other" });
    // Padded so that segments (64 KiB) roll and retention has work.
    let recs: Vec<String> = (0..n)
        .map(|_| {
            m.serial += 1;
            format!("{{\"n\":{},\"pad\":\"{}\"}}", m.serial, "x".repeat(1500))
        })
        .collect();
    let app = h.append_full(tenant, topic, &recs);
    m.batches.push((app.base_offset, app.ts_ms));
    for i in 0..n as u64 {
        let off = app.base_offset + i;
        m.records.insert(off, (tenant, topic));
        for d in 0..DESTS.len() {
            if wants(d, tenant, topic) {
                m.dests[d].owed.insert(off);
            }
        }
    }
    Ok(())
}

fn acquire(h: &mut Harness, m: &mut Model, dest: usize, max: u32) -> Result<(), TestCaseError> {
    let req = AcquireRequest { max_records: Some(max), max_bytes: None, wait_ms: Some(0), ..Default::default() };
    let resp = h
        .run(h.b().deliveries().acquire_at(DESTS[dest], req, m.now))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    if m.dests[dest].paused {
        prop_assert_eq!(resp.idle, Some(IdleReason::Paused));
    }
    if let Some(l) = resp.lease {
        let dl = l.lane == "dead_letters";
        let offsets: Vec<u64> = l.records.iter().map(|r| r.offset).collect();
        for r in &l.records {
            if dl {
                prop_assert!(m.dests[dest].dead.contains(&r.offset), "re-drive of a record not dead-lettered");
            } else {
                let &(t, p) = m.records.get(&r.offset).ok_or_else(|| TestCaseError::fail("unacked record"))?;
                prop_assert!(wants(dest, t, p) && (&*r.tenant, &*r.topic) == (t, p));
            }
        }
        prop_assert!(!offsets.is_empty());
        let ml = MLease { from: l.from_offset, offsets, dead_letters: dl, expires: m.now + LEASE_MS };
        prop_assert!(m.dests[dest].live.insert(l.id, ml).is_none(), "a lease id was reused");
    }
    Ok(())
}

fn heartbeat(h: &mut Harness, m: &mut Model, dest: usize, p: usize) -> Result<(), TestCaseError> {
    let id = pick(&m.dests[dest], p).unwrap_or_else(|| "0-999-0".into());
    let before = snapshot(h, dest);
    match h.b().deliveries().heartbeat_at(DESTS[dest], &id, m.now) {
        Ok(_) => {
            let l =
                m.dests[dest].live.get_mut(&id).ok_or_else(|| TestCaseError::fail("heartbeat of a lease not held"))?;
            l.expires = m.now + LEASE_MS;
        }
        Err(e) => {
            prop_assert!(refused(&e) && !m.dests[dest].live.contains_key(&id), "{e}");
            prop_assert_eq!(before, snapshot(h, dest), "a refused heartbeat changed something");
        }
    }
    Ok(())
}

fn commit(
    h: &mut Harness,
    m: &mut Model,
    dest: usize,
    p: usize,
    poison: Option<usize>,
    refuse: u8,
) -> Result<(), TestCaseError> {
    let id = pick(&m.dests[dest], p).unwrap_or_else(|| "0-999-0".into());
    let lease = m.dests[dest].live.get(&id).cloned();
    let mut dead_letters: Vec<PoisonRecord> = Vec::new();
    if let (Some(l), Some(k)) = (&lease, poison) {
        let i = k % l.offsets.len();
        let index = Some(u32::try_from(i).unwrap_or(u32::MAX));
        dead_letters.push(PoisonRecord { index, offset: l.offsets[i], error: "poison".into() });
    }
    let first = lease.as_ref().map_or(0, |l| l.offsets[0]);
    match refuse {
        1 => dead_letters.push(PoisonRecord { index: None, offset: 1 << 40, error: "not in the lease".into() }),
        // A place whose record has another offset: the exporter is confused.
        2 => dead_letters.push(PoisonRecord { index: Some(0), offset: first + 1, error: "mismatch".into() }),
        _ => {}
    }
    let should_refuse = lease.is_none() || refuse == 1 || refuse == 2;
    let before = snapshot(h, dest);
    let res = h.run(h.b().deliveries().commit_at(
        DESTS[dest],
        &id,
        CommitRequest { dead_letters: dead_letters.clone() },
        m.now,
    ));
    match (res, lease) {
        (Ok(_), Some(l)) if !should_refuse => {
            let md = &mut m.dests[dest];
            md.live.remove(&id);
            if l.dead_letters {
                for o in &l.offsets {
                    let i = md.dead.iter().position(|x| x == o).ok_or_else(|| TestCaseError::fail("lost dl"))?;
                    md.dead.swap_remove(i);
                }
            } else {
                for o in &l.offsets {
                    md.owed.remove(o);
                }
            }
            md.dead.extend(dead_letters.iter().map(|p| p.offset));
        }
        (Err(e), _) if should_refuse => {
            prop_assert!(refused(&e), "{e}");
            prop_assert_eq!(before, snapshot(h, dest), "a refused commit changed something");
        }
        (res, l) => return Err(TestCaseError::fail(format!("commit {id} ({l:?}, refuse {refuse}): {res:?}"))),
    }
    Ok(())
}

fn fail(h: &mut Harness, m: &mut Model, dest: usize, p: usize, retryable: bool) -> Result<(), TestCaseError> {
    let id = pick(&m.dests[dest], p).unwrap_or_else(|| "0-999-0".into());
    let class = if retryable { FailureClass::Retryable } else { FailureClass::Released };
    let before = snapshot(h, dest);
    match h.run(h.b().deliveries().fail_at(
        DESTS[dest],
        &id,
        FailRequest { class, message: "m".into(), retry_after_ms: None },
        m.now,
    )) {
        Ok(()) => {
            prop_assert!(m.dests[dest].live.remove(&id).is_some(), "fail of a lease not held");
        }
        Err(e) => {
            prop_assert!(refused(&e) && !m.dests[dest].live.contains_key(&id), "{e}");
            prop_assert_eq!(before, snapshot(h, dest), "a refused fail changed something");
        }
    }
    Ok(())
}

fn advance(h: &mut Harness, m: &mut Model, ms: u64) -> Result<(), TestCaseError> {
    m.now += ms;
    maintain(h, m)?;
    Ok(())
}

fn retention(h: &mut Harness, m: &mut Model) -> Result<(), TestCaseError> {
    // Past retention_max_age_secs: every sealed segment is old.
    m.now += 3_700_000;
    maintain(h, m)?;
    Ok(())
}

fn rewind_earliest(h: &mut Harness, m: &mut Model, dest: usize) -> Result<(), TestCaseError> {
    let to = h.b().wal().lane(normal0()).expect("lane").earliest_offset();
    h.run(h.b().deliveries().rewind_at(DESTS[dest], RewindTarget::Earliest, m.now))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    rewound(m, dest, to);
    Ok(())
}

fn rewind_offset(h: &mut Harness, m: &mut Model, dest: usize, at: usize) -> Result<(), TestCaseError> {
    let lane = h.b().wal().lane(normal0()).expect("lane");
    let (earliest, end) = (lane.earliest_offset(), lane.next_offset());
    let offset = (at as u64) % (end + 3);
    let target = RewindTarget::Offset { offset, lane: Some(normal0().to_string()) };
    h.run(h.b().deliveries().rewind_at(DESTS[dest], target, m.now)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    rewound(m, dest, offset.clamp(earliest, end));
    Ok(())
}

fn rewind_time(h: &mut Harness, m: &mut Model, dest: usize, batch: usize) -> Result<(), TestCaseError> {
    let lane = h.b().wal().lane(normal0()).expect("lane");
    let (earliest, end) = (lane.earliest_offset(), lane.next_offset());
    let ts = m.batches.get(batch % m.batches.len().max(1)).map_or(0, |b| b.1);
    let to = m.batches.iter().filter(|b| b.0 >= earliest && b.1 >= ts).map(|b| b.0).min().unwrap_or(end);
    h.run(h.b().deliveries().rewind_at(DESTS[dest], RewindTarget::Timestamp { ts_ms: ts }, m.now))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    rewound(m, dest, to);
    Ok(())
}

fn pause(h: &mut Harness, m: &mut Model, dest: usize, paused: bool) -> Result<(), TestCaseError> {
    h.run(h.b().deliveries().set_paused(DESTS[dest], paused)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    m.dests[dest].paused = paused;
    Ok(())
}

fn redrive(h: &mut Harness, _: &mut Model, dest: usize) -> Result<(), TestCaseError> {
    h.b().deliveries().redrive(DESTS[dest]).map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(())
}

fn restart(h: &mut Harness, m: &mut Model) -> Result<(), TestCaseError> {
    h.restart();
    // Re-drive leases live in memory only; their dead letters stay.
    for md in &mut m.dests {
        md.live.retain(|_, l| !l.dead_letters);
    }
    Ok(())
}

fn rewound(m: &mut Model, dest: usize, to: u64) {
    m.dests[dest].live.retain(|_, l| l.dead_letters);
    m.reowe_from(dest, to);
}

fn maintain(h: &Harness, m: &mut Model) -> Result<(), TestCaseError> {
    let report = h.run(h.b().maintenance().pass_at(m.now)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut expired = 0;
    for md in &mut m.dests {
        let before = md.live.len();
        md.live.retain(|_, l| l.expires > m.now);
        expired += before - md.live.len();
    }
    prop_assert_eq!(report.leases_expired, expired, "expiries differ from the model");
    for &(d, lane, to) in &report.skipped {
        prop_assert_eq!(lane, normal0());
        m.cancel_lane_leases(d.index(), to);
        // What a lease above the skip point still covers stays owed.
        m.excuse_below(d.index(), to);
    }
    Ok(())
}

/// Deliver everything: at the end every owed record must arrive. Then one
/// more record for every destination: its delivery must close every
/// breaker (a half-open one sends it as the probe).
fn drain(h: &mut Harness, m: &mut Model) -> Result<(), TestCaseError> {
    for d in 0..DESTS.len() {
        if m.dests[d].paused {
            step(h, m, &Action::Pause { dest: d, paused: false })?;
        }
    }
    deliver_all(h, m)?;
    step(h, m, &Action::Ingest { acme: true, events: true, n: 1 })?;
    deliver_all(h, m)?;
    for (d, md) in m.dests.iter().enumerate() {
        prop_assert!(md.owed.is_empty(), "{}: never delivered: {:?}", DESTS[d], md.owed);
        let st = h.b().deliveries().dest(DESTS[d]).expect("dest").state().breaker;
        prop_assert_eq!(st, Breaker::default(), "{}: the breaker did not close", DESTS[d]);
    }
    Ok(())
}

fn deliver_all(h: &mut Harness, m: &mut Model) -> Result<(), TestCaseError> {
    for _ in 0..400 {
        if m.dests.iter().all(|d| d.owed.is_empty() && d.live.is_empty()) {
            return Ok(());
        }
        step(h, m, &Action::Advance { ms: LEASE_MS + OPEN_MS })?;
        for d in 0..DESTS.len() {
            step(h, m, &Action::Acquire { dest: d, max: 5 })?;
            let ids: Vec<String> = m.dests[d].live.keys().cloned().collect();
            for id in ids {
                let p = m.dests[d].live.keys().position(|k| *k == id).unwrap_or(0);
                step(h, m, &Action::Commit { dest: d, pick: p, poison: None, refuse: 0 })?;
            }
            check(h, m)?;
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("WEIR_LEASE_MODEL_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(200)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn lease_protocol_matches_the_model(actions in proptest::collection::vec(action(), 1..40)) {
        let mut h = Harness::new("retention_max_age_secs = 3600", &dest_config());
        let mut m = Model {
            now: plumbing::clock::now_ms(),
            records: BTreeMap::new(),
            batches: Vec::new(),
            dests: (0..DESTS.len()).map(|_| MDest::default()).collect(),
            serial: 0,
        };
        for a in &actions {
            step(&mut h, &mut m, a)?;
            check(&h, &m)?;
        }
        drain(&mut h, &mut m)?;
    }
}
