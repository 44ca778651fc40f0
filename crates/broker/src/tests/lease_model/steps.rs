//! The model test's steps: each applies one action to the broker and to
//! the model and checks what the action itself promises.

use super::model::{refused, snapshot, MLease, Model, Rec, MAX_PASSED_OVER};
use super::{wants, Action, Harness, DESTS, LANES, LEASE_MS, OPEN_MS, TENANTS};
use crate::breaker::Breaker;
use crate::leased::{Lease, LeaseLane};
use proptest::prelude::*;
use protocol::lease::{AcquireRequest, CommitRequest, FailRequest, FailureClass, IdleReason, PoisonRecord};
use protocol::RewindTarget;
use std::collections::BTreeSet;
use wal::{LaneId, Priority};

/// Apply `a` to the broker and the model, checking the invariants.
pub fn step(h: &mut Harness, m: &mut Model, a: &Action) -> Result<(), TestCaseError> {
    match *a {
        Action::Ingest { tenant, events, n, lane } => ingest(h, m, (TENANTS[tenant], events), n, LANES[lane]),
        Action::Flood { tenant, lane } => {
            for _ in 0..12 {
                ingest(h, m, (TENANTS[tenant], true), 10, LANES[lane])?;
            }
            Ok(())
        }
        Action::Acquire { dest, max, report, joint } => acquire(h, m, dest, max, (report, joint)),
        Action::Heartbeat { dest, pick: p } => heartbeat(h, m, dest, p),
        Action::Commit { dest, pick: p, poison, refuse } => commit(h, m, dest, p, poison, refuse),
        Action::Fail { dest, pick: p, retryable } => fail(h, m, dest, p, retryable),
        Action::Advance { ms } => advance(h, m, ms),
        Action::Retention => retention(h, m),
        Action::RewindEarliest { dest } => rewind(h, m, dest, RewindTarget::Earliest),
        Action::RewindOffset { dest, at } => rewind_offset(h, m, dest, at),
        Action::RewindTime { dest, batch } => rewind_time(h, m, dest, batch),
        Action::Pause { dest, paused } => pause(h, m, dest, paused),
        Action::Redrive { dest } => redrive(h, dest),
        Action::Restart => restart(h, m),
    }
}

fn pick(m: &Model, dest: usize, pick: usize) -> Option<String> {
    let live = &m.dests[dest].live;
    (!live.is_empty()).then(|| live.keys().nth(pick % live.len()).cloned()).flatten()
}

fn ingest(
    h: &mut Harness,
    m: &mut Model,
    (tenant, events): (&'static str, bool),
    n: usize,
    lane: LaneId,
) -> Result<(), TestCaseError> {
    let topic = if events { "events" } else { "other" };
    // Padded so that segments (64 KiB) roll and retention has work.
    let recs: Vec<String> = (0..n)
        .map(|_| {
            m.serial += 1;
            format!("{{\"n\":{},\"pad\":\"{}\"}}", m.serial, "x".repeat(if n > 3 { 100 } else { 1500 }))
        })
        .collect();
    let app = h.append_to(lane, tenant, topic, &recs);
    m.batches.push((lane, app.base_offset, app.ts_ms));
    for i in 0..n as u64 {
        let rec = (lane, app.base_offset + i);
        m.records.insert(rec, (tenant, topic));
        for d in 0..DESTS.len() {
            if wants(d, tenant, topic) {
                m.dests[d].owed.insert(rec);
            }
        }
    }
    Ok(())
}

fn acquire(
    h: &mut Harness,
    m: &mut Model,
    dest: usize,
    max: u32,
    (report, joint): (Option<u32>, bool),
) -> Result<(), TestCaseError> {
    let exporter = report.map(|_| format!("exporter-{dest}"));
    let req = AcquireRequest {
        max_records: Some(max),
        max_bytes: None,
        wait_ms: Some(0),
        exporter,
        concurrency_limit: report,
        joint,
        joint_lane_parts: joint,
    };
    let waiting = m.dests[dest].waiting();
    let low_out = m.dests[dest].in_flight(Priority::Low);
    let resp = h
        .run(h.b().deliveries().acquire_at(DESTS[dest], req, m.now))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    if m.dests[dest].paused {
        prop_assert_eq!(resp.idle, Some(IdleReason::Paused));
    }
    let Some(l) = resp.lease else {
        return Ok(());
    };
    let records = lease_records(m, dest, &l)?;
    let priority = match l.lane {
        LeaseLane::Lane(lane) => Some(lane.priority),
        LeaseLane::Joint(p) => Some(p),
        LeaseLane::DeadLetters => None,
    };
    if let Some(p) = priority {
        let higher_waits = waiting.iter().any(|(wl, _)| wl.priority != Priority::Low);
        if p == Priority::Low && l.redeliveries == 0 && higher_waits {
            prop_assert_eq!(low_out, 0, "a second low lease while high or normal records wait");
        }
        if l.redeliveries == 0 {
            passed_over(m, dest, p, &waiting, &records)?;
        }
    }
    let parts = parts_of(h, dest, &l)?;
    let ml = MLease { parts, records, expires: m.now + LEASE_MS };
    prop_assert!(m.dests[dest].live.insert(l.id, ml).is_none(), "a lease id was reused");
    Ok(())
}

/// The parts of lease `l` and the places of each one's records: its own
/// range, or (a joint lease) each member's, read from the broker; checked
/// to be two or more of one priority, covering the places as sent.
type Parts = Vec<(LaneId, u64, std::ops::Range<usize>)>;
fn parts_of(h: &Harness, dest: usize, l: &Lease) -> Result<Parts, TestCaseError> {
    match l.lane {
        LeaseLane::Lane(lane) => Ok(vec![(lane, l.from_offset, 0..l.records.len())]),
        LeaseLane::DeadLetters => Ok(Vec::new()),
        LeaseLane::Joint(p) => {
            let d = h.b().deliveries().dest(DESTS[dest]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let st = d.state();
            let mut members: Vec<(usize, LaneId, u64)> = st
                .leases
                .values()
                .filter(|x| x.held_as() == l.id)
                .filter_map(|x| Some((x.joint.as_ref()?.first as usize, x.lane()?, x.from)))
                .collect();
            members.sort();
            prop_assert!(members.len() >= 2, "a joint lease's members: {:?}", members);
            prop_assert!(members.iter().all(|m| m.1.priority == p), "a joint lease of one priority");
            prop_assert_eq!(members.first().map(|m| m.0), Some(0), "the first part's records go first");
            let ends = members.iter().skip(1).map(|m| m.0).chain([l.records.len()]);
            let parts: Parts =
                members.iter().zip(ends).map(|(&(first, lane, from), end)| (lane, from, first..end)).collect();
            for (lane, _, places) in &parts {
                prop_assert!(!places.is_empty(), "an empty part");
                let of_lane = l.records[places.clone()].iter().all(|r| r.lane.as_deref() == Some(&*lane.to_string()));
                prop_assert!(of_lane, "a part's records are of its lane");
            }
            Ok(parts)
        }
    }
}

/// The records of lease `l`, checked: a lane lease's are of its lane,
/// acknowledged, wanted by the destination and held by no other lane
/// lease; a re-drive's are dead letters.
fn lease_records(m: &Model, dest: usize, l: &Lease) -> Result<Vec<Rec>, TestCaseError> {
    // A dead letter re-driven may also be owed again after a rewind: only
    // lane leases must not share a record.
    let lane_leases = m.dests[dest].live.values().filter(|x| !x.parts.is_empty());
    let held: BTreeSet<Rec> = lane_leases.flat_map(|x| x.held().copied()).collect();
    let mut out = Vec::with_capacity(l.records.len());
    for r in &l.records {
        let rec = match (&l.lane, &r.lane) {
            (LeaseLane::Lane(lane), None) => (*lane, r.offset),
            (LeaseLane::DeadLetters, Some(lane)) => {
                (lane.parse().map_err(|_| TestCaseError::fail("a lane"))?, r.offset)
            }
            (LeaseLane::Joint(p), Some(lane)) => {
                let lane: LaneId = lane.parse().map_err(|_| TestCaseError::fail("a lane"))?;
                prop_assert_eq!(lane.priority, *p, "a joint lease's record of another priority");
                (lane, r.offset)
            }
            _ => return Err(TestCaseError::fail("a record's lane is not its lease's")),
        };
        if l.lane == LeaseLane::DeadLetters {
            prop_assert!(m.dests[dest].dead.contains(&rec), "re-drive of a record not dead-lettered");
        } else {
            let &(t, p) = m.records.get(&rec).ok_or_else(|| TestCaseError::fail("unacked record"))?;
            prop_assert!(wants(dest, t, p) && (&*r.tenant, &*r.topic) == (t, p));
            prop_assert!(!held.contains(&rec), "{:?} is held by two leases at once", rec);
        }
        out.push(rec);
    }
    prop_assert!(!out.is_empty());
    Ok(out)
}

/// Invariant 6: count, per tenant with records waiting in `lane`'s
/// priority, the new-data leases of that priority in a row that held none
/// of them (the share is per priority: a tenant served in one shard waits
/// its turn in another).
fn passed_over(
    m: &mut Model,
    dest: usize,
    p: Priority,
    waiting: &BTreeSet<Rec>,
    got: &[Rec],
) -> Result<(), TestCaseError> {
    let tenant_of = |r: &Rec| m.records.get(r).map(|x| x.0);
    let served: BTreeSet<&'static str> = got.iter().filter_map(tenant_of).collect();
    let waits: BTreeSet<&'static str> = waiting.iter().filter(|(l, _)| l.priority == p).filter_map(tenant_of).collect();
    let md = &mut m.dests[dest];
    for t in TENANTS {
        let key = (p, t);
        if served.contains(t) || !waits.contains(t) {
            md.passed_over.remove(&key);
            continue;
        }
        let n = md.passed_over.entry(key).or_default();
        *n += 1;
        prop_assert!(*n <= MAX_PASSED_OVER, "{}: {t} passed over by {n} {p} leases in a row", DESTS[dest]);
    }
    Ok(())
}

fn heartbeat(h: &mut Harness, m: &mut Model, dest: usize, p: usize) -> Result<(), TestCaseError> {
    let id = pick(m, dest, p).unwrap_or_else(|| "0-999-0".into());
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
    let id = pick(m, dest, p).unwrap_or_else(|| "0-999-0".into());
    let lease = m.dests[dest].live.get(&id).cloned();
    let mut dead_letters: Vec<PoisonRecord> = Vec::new();
    if let (Some(l), Some(k)) = (&lease, poison) {
        let i = k % l.records.len();
        let index = Some(u32::try_from(i).unwrap_or(u32::MAX));
        dead_letters.push(PoisonRecord { index, offset: l.records[i].1, error: "poison".into() });
    }
    let first = lease.as_ref().map_or(0, |l| l.records[0].1);
    match refuse {
        1 => dead_letters.push(PoisonRecord { index: None, offset: 1 << 40, error: "not in the lease".into() }),
        // A place whose record has another offset: the exporter is confused.
        2 => dead_letters.push(PoisonRecord { index: Some(0), offset: first + 1, error: "mismatch".into() }),
        _ => {}
    }
    // A place in a joint lease's part cancelled since is ignored, not refused.
    let first_held = lease.as_ref().is_some_and(|l| l.held().next() == l.records.first());
    let should_refuse = lease.is_none() || refuse == 1 || (refuse == 2 && first_held);
    let before = snapshot(h, dest);
    let req = CommitRequest { dead_letters: dead_letters.clone() };
    let res = h.run(h.b().deliveries().commit_at(DESTS[dest], &id, req, m.now));
    match (res, lease) {
        (Ok(_), Some(l)) if !should_refuse => {
            let md = &mut m.dests[dest];
            md.live.remove(&id);
            if l.parts.is_empty() {
                for r in &l.records {
                    let i = md.dead.iter().position(|x| x == r).ok_or_else(|| TestCaseError::fail("lost dl"))?;
                    md.dead.swap_remove(i);
                }
            } else {
                for r in l.held() {
                    md.owed.remove(r);
                }
            }
            let held: BTreeSet<Rec> = l.held().copied().collect();
            let named = dead_letters.iter().filter_map(|p| p.index.map(|i| l.records[i as usize]));
            md.dead.extend(named.filter(|r| held.contains(r)));
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
    let id = pick(m, dest, p).unwrap_or_else(|| "0-999-0".into());
    let class = if retryable { FailureClass::Retryable } else { FailureClass::Released };
    let before = snapshot(h, dest);
    let req = FailRequest { class, message: "m".into(), retry_after_ms: None };
    match h.run(h.b().deliveries().fail_at(DESTS[dest], &id, req, m.now)) {
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
    maintain(h, m)
}

fn retention(h: &mut Harness, m: &mut Model) -> Result<(), TestCaseError> {
    // Past retention_max_age_secs: every sealed segment is old.
    m.now += 3_700_000;
    maintain(h, m)
}

/// Rewind `dest` to `target` and the model with it: each lane's new
/// cursor is read back from the broker's state, which the model then
/// checks as every other cursor (nothing owed may lie below it unless the
/// rewind moved it forward past it, which the model excuses).
fn rewind(h: &mut Harness, m: &mut Model, dest: usize, target: RewindTarget) -> Result<(), TestCaseError> {
    let only = match &target {
        RewindTarget::Offset { lane: Some(l), .. } => l.parse::<LaneId>().ok(),
        _ => None,
    };
    h.run(h.b().deliveries().rewind_at(DESTS[dest], target, m.now)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let d = h.b().deliveries().dest(DESTS[dest]).expect("dest");
    for lane in LANES.iter().filter(|l| only.is_none_or(|o| o == **l)) {
        let to = d.state().committed(*lane);
        m.rewound(dest, *lane, to);
    }
    Ok(())
}

fn rewind_offset(h: &mut Harness, m: &mut Model, dest: usize, at: usize) -> Result<(), TestCaseError> {
    let lane_id = LANES[at % LANES.len()];
    let lane = h.b().wal().lane(lane_id).expect("lane");
    let (earliest, end) = (lane.earliest_offset(), lane.next_offset());
    let offset = (at as u64 / LANES.len() as u64) % (end + 3);
    rewind(h, m, dest, RewindTarget::Offset { offset, lane: Some(lane_id.to_string()) })?;
    let cursor = h.b().deliveries().dest(DESTS[dest]).expect("dest").state().committed(lane_id);
    prop_assert_eq!(cursor, offset.clamp(earliest, end), "a rewind to an offset lands there");
    Ok(())
}

fn rewind_time(h: &mut Harness, m: &mut Model, dest: usize, batch: usize) -> Result<(), TestCaseError> {
    let ts = m.batches.get(batch % m.batches.len().max(1)).map_or(0, |b| b.2);
    let expect: Vec<(LaneId, u64)> = LANES
        .iter()
        .map(|&lane_id| {
            let lane = h.b().wal().lane(lane_id).expect("lane");
            let (earliest, end) = (lane.earliest_offset(), lane.next_offset());
            let at = m.batches.iter().filter(|b| b.0 == lane_id && b.1 >= earliest && b.2 >= ts).map(|b| b.1).min();
            (lane_id, at.unwrap_or(end))
        })
        .collect();
    rewind(h, m, dest, RewindTarget::Timestamp { ts_ms: ts })?;
    let d = h.b().deliveries().dest(DESTS[dest]).expect("dest");
    for (lane, to) in expect {
        prop_assert_eq!(d.state().committed(lane), to, "a rewind by time lands on the first batch at or after it");
    }
    Ok(())
}

fn pause(h: &mut Harness, m: &mut Model, dest: usize, paused: bool) -> Result<(), TestCaseError> {
    h.run(h.b().deliveries().set_paused(DESTS[dest], paused)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    m.dests[dest].paused = paused;
    Ok(())
}

fn redrive(h: &mut Harness, dest: usize) -> Result<(), TestCaseError> {
    h.b().deliveries().redrive(DESTS[dest]).map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(())
}

fn restart(h: &mut Harness, m: &mut Model) -> Result<(), TestCaseError> {
    h.restart();
    // Re-drive leases live in memory only; their dead letters stay. The
    // tenant share starts afresh.
    for md in &mut m.dests {
        md.live.retain(|_, l| !l.parts.is_empty());
        md.passed_over.clear();
    }
    Ok(())
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
        m.cancel_lane_leases(d.index(), lane, to);
        // What a lease above the skip point still covers stays owed.
        m.excuse_below(d.index(), lane, to);
    }
    Ok(())
}

/// Deliver everything: at the end every owed record must arrive. Then one
/// more record for every destination: its delivery must close every
/// breaker (a half-open one sends it as the probe).
pub fn drain(h: &mut Harness, m: &mut Model) -> Result<(), TestCaseError> {
    for d in 0..DESTS.len() {
        if m.dests[d].paused {
            step(h, m, &Action::Pause { dest: d, paused: false })?;
        }
    }
    deliver_all(h, m)?;
    step(h, m, &Action::Ingest { tenant: 0, events: true, n: 1, lane: 1 })?;
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
            step(h, m, &Action::Acquire { dest: d, max: 2, report: None, joint: d == 0 })?;
            let ids: Vec<String> = m.dests[d].live.keys().cloned().collect();
            for id in ids {
                let p = m.dests[d].live.keys().position(|k| *k == id).unwrap_or(0);
                step(h, m, &Action::Commit { dest: d, pick: p, poison: None, refuse: 0 })?;
            }
            super::check(h, m)?;
        }
    }
    Ok(())
}
