//! The one way a destination's lease state changes, and the one way a
//! lease ends.
//!
//! [`transact`] runs an operation on a copy of the state, derives
//! what sled must change from the difference (lease records, cursors,
//! breaker), applies that in one sled transaction, and only then installs
//! the copy. So a refused call or a sled error changes nothing, and sled's
//! lease records are by construction exactly the leases in flight and the
//! ranges waiting to be offered again.
//!
//! [`end_lease`] is called by every path that ends a lease — commit, fail,
//! release, expiry, and cancellation by rewind, drop-oldest or retention —
//! and settles the breaker's probe on the way ([`Breaker::on_lease_end`]).
//! A restart rebuilds the state from sled in [`load_dest_state`], which
//! repairs what an older version left behind.

use crate::breaker::{BreakerState, LeaseEnd};
use crate::destination::{DestState, Destination, ExpiredRange, LaneLeases, LeaseSource, LiveLease, RangeKey};
use crate::error::BrokerError;
use crate::fair::Cover;
use crate::store::{Changes, Frontier, JointPart, LeaseRecord, Store, StoreError};
use config::{DestinationId, StartAt};
use std::collections::HashMap;
use std::sync::Arc;
use wal::{LaneId, Wal};

/// Run `f` on a copy of `st`, write what it changed to sled atomically,
/// then install the copy. `f` adds what the state does not mirror (dead
/// letters) to the `Changes`. Returns `f`'s value and the ids of the dead
/// letters added. The caller flushes before answering.
pub(crate) fn transact<T>(
    store: &Store,
    dest: &Destination,
    st: &mut DestState,
    f: impl FnOnce(&mut DestState, &mut Changes) -> Result<T, BrokerError>,
) -> Result<(T, Vec<u64>), BrokerError> {
    let mut next = st.clone();
    let mut ch = Changes::default();
    let out = f(&mut next, &mut ch)?;
    diff_records(&st.lease_records(), &next.lease_records(), &mut ch);
    diff_frontiers(st, &next, &mut ch);
    if next.breaker != st.breaker {
        ch.breaker = Some(next.breaker);
    }
    let lanes: Vec<LaneId> = next.lanes.keys().copied().collect();
    for lane in lanes {
        let c = next.committed(lane);
        if next.persisted.get(&lane) != Some(&c) {
            ch.cursors.push((lane.to_string(), c));
            next.persisted.insert(lane, c);
        }
    }
    if cfg!(debug_assertions) {
        if let Err(e) = next.check_invariants() {
            debug_assert!(false, "{} after an operation: {e}", dest.name);
        }
    }
    let ids = if ch.is_empty() { Vec::new() } else { store.apply(&dest.name, &ch)? };
    *st = next;
    Ok((out, ids))
}

/// Lease records to remove and to write so that sled goes from `before` to `after`.
fn diff_records(before: &HashMap<String, LeaseRecord>, after: &HashMap<String, LeaseRecord>, ch: &mut Changes) {
    let mut removed: Vec<String> = before.keys().filter(|id| !after.contains_key(*id)).cloned().collect();
    removed.sort();
    ch.remove_leases.extend(removed);
    let mut put: Vec<LeaseRecord> = after.values().filter(|r| before.get(&r.id) != Some(*r)).cloned().collect();
    put.sort_by(|a, b| a.id.cmp(&b.id));
    ch.put_leases.extend(put);
}

/// The floors and ahead entries to write so that sled goes from `before` to `after`.
fn diff_frontiers(before: &DestState, after: &DestState, ch: &mut Changes) {
    let empty = LaneLeases::default();
    for (lane, ll) in &after.lanes {
        let old = before.lanes.get(lane).unwrap_or(&empty);
        let name = lane.to_string();
        if old.next_unleased != ll.next_unleased || !before.lanes.contains_key(lane) {
            ch.frontiers.push((Frontier { lane: name.clone(), tenant: None }, Some(ll.next_unleased)));
        }
        for (t, &a) in &ll.ahead {
            if old.ahead.get(t) != Some(&a) {
                ch.frontiers.push((Frontier { lane: name.clone(), tenant: Some(t.to_string()) }, Some(a)));
            }
        }
        for t in old.ahead.keys().filter(|t| !ll.ahead.contains_key(*t)) {
            ch.frontiers.push((Frontier { lane: name.clone(), tenant: Some(t.to_string()) }, None));
        }
    }
}

/// End lease `id` of `st` the way `end` says, settling the breaker. A
/// failed, released or expired lane lease's range is offered again first;
/// a failed re-drive's dead letters are queued again; a committed range is
/// gone; a cancelled lane lease's range is the caller's to reposition.
pub(crate) fn end_lease(
    dest: &Destination,
    st: &mut DestState,
    id: &str,
    end: LeaseEnd,
    now: u64,
) -> Result<LiveLease, BrokerError> {
    let lease = st.leases.remove(id).ok_or_else(|| BrokerError::LeaseNotFound { lease: id.to_string() })?;
    check_in_window(st, &lease, end);
    st.breaker = st.breaker.on_lease_end(lease.probe, end, now, dest.policy);
    match (&lease.source, end) {
        (_, LeaseEnd::Committed) | (LeaseSource::Lane(_), LeaseEnd::Cancelled) => {}
        (LeaseSource::Lane(lane), _) => {
            let ll = st.lanes.get_mut(lane);
            debug_assert!(ll.is_some(), "lease {id} on unknown lane {lane}");
            if let Some(ll) = ll {
                let range = ExpiredRange {
                    to: lease.to,
                    redeliveries: lease.redeliveries + 1,
                    record_id: lease.id.clone(),
                    expired_at_ms: now,
                    cover: lease.cover.clone(),
                    joint: lease.joint.clone(),
                };
                ll.expired.insert((lease.from, lease.cover.tenant().cloned()), range);
            }
        }
        (LeaseSource::DeadLetters(ids), _) => {
            for dl in ids.iter().rev() {
                st.redrive.push_front(*dl);
            }
        }
    }
    Ok(lease)
}

/// End the members of one delivery (a lease, or a joint lease's members,
/// `DestState::members_of`) the way `end` says: each as [`end_lease`]
/// does, the breaker settled once (by the probe if one holds it, else the
/// first), as for the one request they were.
pub(crate) fn end_members(
    dest: &Destination,
    st: &mut DestState,
    ids: &[String],
    end: LeaseEnd,
    now: u64,
) -> Result<Vec<LiveLease>, BrokerError> {
    let mut ids: Vec<&String> = ids.iter().collect();
    ids.sort_by_key(|id| !st.leases.get(*id).is_some_and(|l| l.probe));
    let mut out = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        let breaker = st.breaker;
        let lease = end_lease(dest, st, id, end, now)?;
        if i > 0 {
            st.breaker = breaker;
        }
        out.push(lease);
    }
    Ok(out)
}

/// Invariant: a lane lease covers a non-empty range inside its lane's
/// window — at or after the committed cursor (by construction: the cursor
/// is the lowest outstanding offset) and below the next offset never
/// handed out (the floor; for a tenant lease, where its tenant's
/// unleased records begin). A commit outside it would move the cursor past records no
/// exporter was given (lost) or over a range already settled (invented):
/// asserted always for a commit, in debug builds for the other ends.
fn check_in_window(st: &DestState, lease: &LiveLease, end: LeaseEnd) {
    let LeaseSource::Lane(lane) = &lease.source else {
        return;
    };
    let next_unleased =
        st.lanes.get(lane).map(|ll| lease.cover.tenant().map_or(ll.next_unleased, |t| ll.unleased_from(t)));
    let inside = lease.from < lease.to && next_unleased.is_some_and(|n| lease.to <= n);
    if end == LeaseEnd::Committed {
        assert!(
            inside,
            "lease {} [{}, {}) outside lane {lane}'s window (next unleased {next_unleased:?})",
            lease.id, lease.from, lease.to
        );
    } else {
        debug_assert!(inside, "lease {} [{}, {}) outside lane {lane}'s window", lease.id, lease.from, lease.to);
    }
}

/// Move the cursor of `lane` forward to `to` (drop-oldest, retention),
/// voiding what is outstanding below it. Leases and waiting ranges that
/// reach past `to` keep their part above it, waiting to be offered again:
/// only what is below `to` is dropped.
pub(crate) fn skip_to(
    dest: &Destination,
    st: &mut DestState,
    lane: LaneId,
    to: u64,
    now: u64,
) -> Result<(), BrokerError> {
    let void: Vec<String> = st
        .leases
        .values()
        .filter(|l| l.source == LeaseSource::Lane(lane) && l.from < to)
        .map(|l| l.id.clone())
        .collect();
    let mut tails = Vec::new();
    for id in void {
        let l = end_lease(dest, st, &id, LeaseEnd::Cancelled, now)?;
        if l.to > to {
            tails.push((l.to, l.redeliveries, l.cover.above(to), l.joint));
        }
    }
    let tail_ids: Vec<String> = tails.iter().map(|_| st.next_lease_id(dest.id)).collect();
    let Some(ll) = st.lanes.get_mut(&lane) else {
        return Ok(());
    };
    let below: Vec<RangeKey> = ll.expired.range(..(to, None)).map(|(k, _)| k.clone()).collect();
    for key in below {
        if let Some(r) = ll.expired.remove(&key) {
            if r.to > to {
                let cover = r.cover.above(to);
                ll.expired.insert((to, cover.tenant().cloned()), ExpiredRange { cover, ..r });
            }
        }
    }
    // The ranges of one cover are disjoint, so at most one tail per cover
    // (the floor's, each tenant's) reaches past `to`.
    for ((end, redeliveries, cover, joint), record_id) in tails.into_iter().zip(tail_ids) {
        // A joint lease's part keeps its joint lease: offered again with
        // the others, less the records cut (other records, another id).
        let range = ExpiredRange { to: end, redeliveries, record_id, expired_at_ms: now, cover, joint };
        ll.expired.insert((to, range.cover.tenant().cloned()), range);
    }
    ll.raise_floor(to);
    Ok(())
}

/// Rebuild a destination's state at start from its cursors and lease
/// records. Leases in flight stay in flight (their exporter may still
/// commit); waiting ranges are offered again first. The floor starts at
/// the stored floor or the end of the highest floor record, whichever is
/// higher: every offset between the cursor and it was leased and is either
/// in a record or committed (each tenant's ahead entry likewise). Records an older
/// version left behind (overlapping, below the cursor, past the log's end)
/// are merged or dropped, and a half-open breaker whose probe is gone gets
/// its slot back; those repairs are written back. `routes` names what the
/// destination receives (its topics and tenants): when it differs from
/// the last start's, no stored lease, floor or ahead entry is trusted and
/// each lane starts again at its cursor (a tenant lease chose its records
/// under the old routes) — records may be delivered again, never left out.
pub(crate) fn load_dest_state(
    store: &Store,
    wal: &Wal,
    (dest, dest_id): (&str, DestinationId),
    start_at: StartAt,
    routes: &str,
) -> Result<DestState, StoreError> {
    let flags = store.flags(dest)?;
    let mut st = DestState {
        breaker: store.breaker(dest)?,
        paused: flags.paused,
        paused_reason: flags.reason,
        ..DestState::default()
    };
    if start_at == StartAt::Latest {
        start_at_latest(store, wal, dest)?;
    }
    let ends = load_cursors(store, wal, dest, &mut st)?;
    let raw = store.leases(dest)?;
    // Routes changed: what was handed out was chosen under the old ones (a
    // tenant lease left a newly routed topic's records out), so nothing of
    // it is trusted — every lane starts again at its cursor, as a rewind
    // to it would (records may be delivered again, never left out).
    let same_routes = store.routes(dest)?.is_none_or(|r| r == routes);
    let trusted = if same_routes { raw.as_slice() } else { &[] };
    let waiting = load_leases(trusted, &ends, &mut st);
    if same_routes {
        load_frontiers(store, dest, &ends, &mut st)?;
    }
    queue_waiting(waiting, dest_id, &mut st);
    if st.breaker.state == BreakerState::HalfOpen && st.breaker.probe_out && !st.leases.values().any(|l| l.probe) {
        st.breaker.probe_out = false;
    }
    repair_records(store, dest, raw, &mut st)?;
    // After the repair that drops untrusted ahead entries (sled keeps the
    // order of writes): a crash between leaves the old routes, which
    // distrusts them again.
    if !same_routes || store.routes(dest)?.is_none() {
        store.set_routes(dest, routes)?;
    }
    debug_assert!(st.check_invariants().is_ok(), "{dest} after load: {:?}", st.check_invariants());
    Ok(st)
}

/// A destination with no cursor yet (new to this data directory) that
/// starts at the end of each lane: its cursors are written there, so a
/// restart before its first commit does not move them further.
fn start_at_latest(store: &Store, wal: &Wal, dest: &str) -> Result<(), StoreError> {
    for lane in wal.lanes() {
        if store.cursor(dest, &lane.id().to_string())?.is_some() {
            return Ok(());
        }
    }
    let cursors = wal.lanes().map(|lane| (lane.id().to_string(), lane.next_offset())).collect();
    store.apply(dest, &Changes { cursors, ..Changes::default() })?;
    store.flush_now()
}

/// Each lane's durable cursor, clamped to what the lane still holds; returns
/// each lane's end.
fn load_cursors(store: &Store, wal: &Wal, dest: &str, st: &mut DestState) -> Result<HashMap<LaneId, u64>, StoreError> {
    let mut ends = HashMap::new();
    for lane in wal.lanes() {
        let id = lane.id();
        let cursor =
            store.cursor(dest, &id.to_string())?.unwrap_or(0).clamp(lane.earliest_offset(), lane.next_offset());
        st.lanes.insert(id, LaneLeases::at(cursor));
        st.persisted.insert(id, cursor);
        ends.insert(id, lane.next_offset());
    }
    Ok(ends)
}

/// A range given back, waiting to be offered again: (from, to,
/// redeliveries, its lease record's id, its cover, its joint lease).
type Waiting = (u64, u64, u32, String, Cover, Option<JointPart>);

/// The stored lease records, cut to each lane's window: live ones become
/// leases again; given-back ones are returned by lane, to be queued once
/// every live lease is known. A floor record raises its lane's floor to
/// its end, a tenant record its tenant's ahead entry.
fn load_leases(raw: &[LeaseRecord], ends: &HashMap<LaneId, u64>, st: &mut DestState) -> HashMap<LaneId, Vec<Waiting>> {
    let mut waiting: HashMap<LaneId, Vec<Waiting>> = HashMap::new();
    for rec in raw {
        st.seq = st.seq.max(rec.id.split('-').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0));
        let Ok(lane) = rec.lane.parse::<LaneId>() else {
            continue;
        };
        let (Some(&committed), Some(&end)) = (st.persisted.get(&lane), ends.get(&lane)) else {
            continue;
        };
        let (from, to) = (rec.from.max(committed), rec.to.min(end));
        if from >= to {
            continue;
        }
        let cover = Cover::from_stored(rec.tenant.as_deref(), &rec.skips).above(from);
        if let Some(ll) = st.lanes.get_mut(&lane) {
            match cover.tenant() {
                None => ll.next_unleased = ll.next_unleased.max(to),
                Some(t) => {
                    let a = ll.ahead.entry(t.clone()).or_insert(to);
                    *a = (*a).max(to);
                }
            }
        }
        if rec.expired {
            let joint = rec.joint.clone();
            waiting.entry(lane).or_default().push((from, to, rec.redeliveries, rec.id.clone(), cover, joint));
        } else {
            st.leases.insert(rec.id.clone(), reloaded_lease(rec, lane, (from, to), cover));
        }
    }
    waiting
}

/// The stored floors and ahead entries, cut to each lane's end; ahead
/// entries the floor passed are dropped.
fn load_frontiers(
    store: &Store,
    dest: &str,
    ends: &HashMap<LaneId, u64>,
    st: &mut DestState,
) -> Result<(), StoreError> {
    for (f, off) in store.frontiers(dest)? {
        let Ok(lane) = f.lane.parse::<LaneId>() else {
            continue;
        };
        let (Some(ll), Some(&end)) = (st.lanes.get_mut(&lane), ends.get(&lane)) else {
            continue;
        };
        let off = off.min(end);
        match f.tenant {
            None => ll.next_unleased = ll.next_unleased.max(off),
            Some(t) => {
                let a = ll.ahead.entry(Arc::from(t)).or_insert(off);
                *a = (*a).max(off);
            }
        }
    }
    for ll in st.lanes.values_mut() {
        ll.raise_floor(ll.next_unleased);
    }
    Ok(())
}

/// A live lease as a restart rebuilds it from its record.
fn reloaded_lease(rec: &LeaseRecord, lane: LaneId, (from, to): (u64, u64), cover: Cover) -> LiveLease {
    LiveLease {
        id: rec.id.clone(),
        source: LeaseSource::Lane(lane),
        from,
        to,
        cover,
        expires_at_ms: rec.expires_at_ms,
        acquired_at: std::time::Instant::now(),
        probe: rec.probe,
        redeliveries: rec.redeliveries,
        records: 0,
        ingested: Vec::new(),
        joint: rec.joint.clone(),
        bulk: false,
    }
}

/// Queue the given-back ranges no live lease of their cover covers, to be
/// offered first: a floor range gives way to floor leases, a tenant's to
/// that tenant's leases.
fn queue_waiting(waiting: HashMap<LaneId, Vec<Waiting>>, dest_id: DestinationId, st: &mut DestState) {
    for (lane, ranges) in waiting {
        let mut groups: HashMap<Option<Arc<str>>, Vec<Waiting>> = HashMap::new();
        for w in ranges {
            groups.entry(w.4.tenant().cloned()).or_default().push(w);
        }
        for (tenant, ranges) in groups {
            let live: Vec<(u64, u64)> = st
                .leases
                .values()
                .filter(|l| l.source == LeaseSource::Lane(lane) && l.cover.tenant() == tenant.as_ref())
                .map(|l| (l.from, l.to))
                .collect();
            let covers: Vec<(u64, u64, Cover)> = ranges.iter().map(|w| (w.0, w.1, w.4.clone())).collect();
            let joints: HashMap<String, JointPart> =
                ranges.iter().filter_map(|w| Some((w.3.clone(), w.5.clone()?))).collect();
            let plain = ranges.into_iter().map(|(f, t, r, id, _, _)| (f, t, r, id)).collect();
            for (from, to, redeliveries, id) in uncovered(plain, &live) {
                // A range kept whole keeps its joint lease; a piece is a new range.
                let joint = id.as_ref().and_then(|id| joints.get(id).cloned());
                let record_id = id.unwrap_or_else(|| st.next_lease_id(dest_id));
                // A piece lies inside the ranges it came from: it keeps the
                // cover of the one holding its start.
                let cover =
                    covers.iter().find(|c| c.0 <= from && from < c.1).map_or_else(Cover::default, |c| c.2.above(from));
                if let Some(ll) = st.lanes.get_mut(&lane) {
                    let range = ExpiredRange { to, redeliveries, record_id, expired_at_ms: 0, cover, joint };
                    ll.expired.insert((from, tenant.clone()), range);
                }
            }
        }
    }
}

/// Write back what loading repaired (records cut, merged or dropped; a
/// probe flag of no lease), keeping unchanged expired records as they were.
fn repair_records(store: &Store, dest: &str, raw: Vec<LeaseRecord>, st: &mut DestState) -> Result<(), StoreError> {
    let mut ch = Changes::default();
    let before: HashMap<String, LeaseRecord> = raw.into_iter().map(|r| (r.id.clone(), r)).collect();
    let mut after = st.lease_records();
    // Expired ranges loaded unchanged keep their record as it was.
    for (id, rec) in after.iter_mut() {
        if let Some(old) = before.get(id) {
            if rec.expired && (old.from, old.to, old.redeliveries) == (rec.from, rec.to, rec.redeliveries) {
                rec.expires_at_ms = old.expires_at_ms;
            }
        }
    }
    diff_records(&before, &after, &mut ch);
    repair_frontiers(store, dest, st, &mut ch)?;
    if st.breaker != store.breaker(dest)? {
        ch.breaker = Some(st.breaker);
    }
    if !ch.is_empty() {
        tracing::warn!(
            destination = dest,
            removed = ch.remove_leases.len(),
            rewritten = ch.put_leases.len(),
            "repaired lease records at start"
        );
        store.apply(dest, &ch)?;
    }
    for ll in st.lanes.values_mut() {
        for r in ll.expired.values_mut() {
            if let Some(old) = before.get(&r.record_id) {
                r.expired_at_ms = old.expires_at_ms;
            }
        }
    }
    Ok(())
}

/// Stored frontiers the loaded state does not hold as they are (an ahead
/// entry the floor passed, a floor a lease record raised) are rewritten.
fn repair_frontiers(store: &Store, dest: &str, st: &DestState, ch: &mut Changes) -> Result<(), StoreError> {
    let stored: HashMap<Frontier, u64> = store.frontiers(dest)?.into_iter().collect();
    for (f, &off) in &stored {
        let held = f.lane.parse::<LaneId>().ok().and_then(|lane| st.lanes.get(&lane)).and_then(|ll| match &f.tenant {
            None => Some(ll.next_unleased),
            Some(t) => ll.ahead.get(t.as_str()).copied(),
        });
        if held != Some(off) {
            ch.frontiers.push((f.clone(), held));
        }
    }
    for (lane, ll) in &st.lanes {
        for (t, &a) in &ll.ahead {
            let f = Frontier { lane: lane.to_string(), tenant: Some(t.to_string()) };
            if !stored.contains_key(&f) {
                ch.frontiers.push((f, Some(a)));
            }
        }
    }
    Ok(())
}

/// The parts of the waiting `ranges` (from, to, redeliveries, record id)
/// that no lease in flight covers, merged where they overlap; a part keeps
/// the record id of a range it equals exactly.
fn uncovered(mut ranges: Vec<(u64, u64, u32, String)>, live: &[(u64, u64)]) -> Vec<(u64, u64, u32, Option<String>)> {
    ranges.sort();
    let mut merged: Vec<(u64, u64, u32)> = Vec::new();
    for &(f, t, r, _) in &ranges {
        match merged.last_mut() {
            // Overlapping only: ranges that merely touch keep their own
            // records (two floor ranges side by side may skip differently).
            Some(last) if f < last.1 => {
                last.1 = last.1.max(t);
                last.2 = last.2.max(r);
            }
            _ => merged.push((f, t, r)),
        }
    }
    let mut live = live.to_vec();
    live.sort_unstable();
    let mut out = Vec::new();
    for (mut f, t, r) in merged {
        for &(lf, lt) in &live {
            if lt <= f || lf >= t {
                continue;
            }
            if lf > f {
                out.push((f, lf, r));
            }
            f = f.max(lt);
        }
        if f < t {
            out.push((f, t, r));
        }
    }
    out.into_iter()
        .map(|(f, t, r)| {
            let id = ranges.iter().find(|x| (x.0, x.1) == (f, t)).map(|x| x.3.clone());
            (f, t, r, id)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::uncovered;

    #[test]
    fn leftover_waiting_ranges_merge_and_give_way_to_leases_in_flight() {
        let ranges = vec![(3, 6, 1, "a".to_string()), (3, 6, 2, "b".to_string()), (10, 12, 0, "c".to_string())];
        let got = uncovered(ranges, &[(3, 6), (11, 12)]);
        assert_eq!(got, vec![(10, 11, 0, None)]);
        let got = uncovered(vec![(0, 9, 0, "x".into())], &[(3, 5)]);
        assert_eq!(got, vec![(0, 3, 0, None), (5, 9, 0, None)]);
        assert_eq!(uncovered(vec![(0, 9, 1, "x".into())], &[]), vec![(0, 9, 1, Some("x".into()))]);
    }
}
