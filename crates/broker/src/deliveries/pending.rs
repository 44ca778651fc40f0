//! What a destination has pending: per (destination, lane, tenant), the
//! records routed to it — its topics and tenants — that its committed
//! cursor has not passed.
//!
//! Why: lag was `end − cursor` per lane, so a destination counted every
//! record of the lane, routed to it or not. `d2` (`tenants = ["beta"]`,
//! no exporter running) answered beta's ingest 429 after 2,000 records of
//! acme, none of them its own, and its cursor pinned retention of acme's
//! data. Lag, backpressure and retention now count what is routed only;
//! the tenant-fairness work reads the same account per tenant.
//!
//! # How
//! A [`LanePending`] accounts the offsets `[floor, scanned)` of one lane:
//! `floor` is the destination's committed cursor at the last sync,
//! `scanned` the lane's end then. Each maintenance pass syncs it: frames
//! appended since are scanned once and added; frames the cursor passed
//! since are scanned once and taken away. So each frame is read twice per
//! destination over its life, never once per pass — its header and
//! metadata only, without the body's MAC (`Lane::visit_frame_metas`: the
//! log verified these frames when it wrote or recovered them). A cursor that moved
//! back (rewind), or forward over segments retention already deleted,
//! resets the account and rescans from the cursor.
//!
//! # Invariants
//! - `floor <= scanned`;
//! - `total` is the sum of `by_tenant`, and no tenant holds a zero count;
//! - `first`, when set, is the offset and time of the first routed record
//!   in `[floor, scanned)`, and it is set whenever `total.records > 0`;
//!   each tenant's own `first` likewise for its records (what
//!   `weir_tenant_oldest_pending_age_seconds` shows).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use wal::Lane;

/// Records and their bytes (frame body bytes, prorated by record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub records: u64,
    pub bytes: u64,
}

/// Whether a record of (tenant, topic) goes to the destination.
pub type Routes<'a> = &'a dyn Fn(&str, &str) -> bool;

/// One tenant's pending records in one lane, and its first one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TenantPending {
    count: Count,
    /// (offset, ts_ms) of its first pending record; `None` only while a
    /// sync finds it again (the cursor passed the one it had).
    first: Option<(u64, u64)>,
}

/// One lane's pending records for one destination.
#[derive(Debug, Default)]
pub struct LanePending {
    floor: u64,
    scanned: u64,
    total: Count,
    by_tenant: HashMap<Arc<str>, TenantPending>,
    /// (offset, ts_ms) of the first routed record at or after `floor`.
    first: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sign {
    Add,
    Remove,
}

impl LanePending {
    /// Bring the account to `cursor` (the destination's committed cursor)
    /// and the lane's current end.
    pub fn sync(&mut self, lane: &Lane, cursor: u64, routes: Routes<'_>) -> Result<(), wal::WalError> {
        let end = lane.next_offset();
        let deleted_under = cursor > self.floor && self.floor < lane.earliest_offset();
        if cursor < self.floor || deleted_under {
            self.reset(cursor);
        }
        if cursor > self.floor {
            let upto = cursor.min(self.scanned);
            if upto > self.floor {
                self.scan(lane, (self.floor, upto), Sign::Remove, routes)?;
            }
            self.floor = cursor;
            self.scanned = self.scanned.max(cursor);
        }
        if end > self.scanned {
            self.scan(lane, (self.scanned, end), Sign::Add, routes)?;
            self.scanned = end;
        }
        if self.total.records == 0 {
            self.first = None;
        } else {
            self.find_firsts(lane, routes)?;
        }
        self.check();
        Ok(())
    }

    /// When each tenant's oldest pending record was acknowledged.
    pub fn oldest_by_tenant(&self) -> impl Iterator<Item = (&str, u64)> {
        self.by_tenant.iter().filter_map(|(tenant, p)| p.first.map(|(_, ts)| (&**tenant, ts)))
    }

    /// Pending records and bytes of the lane.
    pub fn total(&self) -> Count {
        self.total
    }

    /// Pending records and bytes of one tenant.
    // Kept unused: the per-tenant account is what the tenant-fairness work
    // reads (see the module docs), and it is maintained and checked now.
    #[allow(dead_code)]
    pub fn tenant(&self, tenant: &str) -> Count {
        self.by_tenant.get(tenant).map(|p| p.count).unwrap_or_default()
    }

    /// When the oldest pending record was acknowledged.
    pub fn oldest_ts_ms(&self) -> Option<u64> {
        self.first.map(|(_, ts)| ts)
    }

    /// The lowest offset of the lane the destination still needs, given
    /// its durable cursor now: below it, retention may release. The
    /// account was synced at `floor`; a cursor moved back since (a rewind)
    /// needs everything from itself.
    pub fn needed_from(&self, cursor_now: u64) -> u64 {
        if cursor_now < self.floor {
            return cursor_now;
        }
        let point = self.first.map_or(self.scanned, |(at, _)| at);
        point.max(cursor_now)
    }

    fn reset(&mut self, cursor: u64) {
        *self = LanePending { floor: cursor, scanned: cursor, ..LanePending::default() };
    }

    /// Add or take away the routed records of `[from, to)`.
    fn scan(
        &mut self,
        lane: &Lane,
        (from, to): (u64, u64),
        sign: Sign,
        routes: Routes<'_>,
    ) -> Result<(), wal::WalError> {
        lane.visit_frame_metas(from, |f| {
            let (base, next) = (f.header.base_offset, f.header.next_offset());
            if base >= to {
                return ControlFlow::Break(());
            }
            if routes(f.tenant, f.topic) {
                let n = next.min(to) - base.max(from);
                let frame_records = u64::from(f.header.records).max(1);
                let bytes = u64::from(f.header.body_len) * n / frame_records;
                let at = (base.max(from), f.header.ts_ms);
                self.apply(f.tenant, Count { records: n, bytes }, sign, at);
            }
            ControlFlow::Continue(())
        })
    }

    /// `at`: the (offset, ts_ms) of the counted records' first.
    fn apply(&mut self, tenant: &str, c: Count, sign: Sign, at: (u64, u64)) {
        let pending = match self.by_tenant.get_mut(tenant) {
            Some(e) => e,
            None => self.by_tenant.entry(Arc::from(tenant)).or_default(),
        };
        // Records are added in offset order: a tenant's first is the first added.
        if sign == Sign::Add && pending.count.records == 0 {
            pending.first = Some(at);
        }
        let entry = &mut pending.count;
        match sign {
            Sign::Add => {
                entry.records += c.records;
                entry.bytes += c.bytes;
                self.total.records += c.records;
                self.total.bytes += c.bytes;
            }
            Sign::Remove => {
                // Never below zero: a count lost to a bug must not wrap.
                debug_assert!(entry.records >= c.records, "removing records never added");
                entry.records = entry.records.saturating_sub(c.records);
                entry.bytes = entry.bytes.saturating_sub(c.bytes);
                self.total.records = self.total.records.saturating_sub(c.records);
                self.total.bytes = self.total.bytes.saturating_sub(c.bytes);
            }
        }
        if entry.records == 0 {
            self.by_tenant.remove(tenant);
        }
    }

    /// Find again the firsts the cursor passed: the lane's, and each
    /// tenant's still pending, by one scan of `[floor, scanned)` that stops
    /// once every one is found.
    fn find_firsts(&mut self, lane: &Lane, routes: Routes<'_>) -> Result<(), wal::WalError> {
        let floor = self.floor;
        let stale = |first: Option<(u64, u64)>| first.is_none_or(|(at, _)| at < floor);
        let mut lost: usize = self.by_tenant.values().filter(|p| stale(p.first)).count();
        let mut lane_first = if stale(self.first) { None } else { self.first };
        if lost == 0 && lane_first.is_some() {
            return Ok(());
        }
        for pending in self.by_tenant.values_mut().filter(|p| stale(p.first)) {
            pending.first = None;
        }
        let (scanned, by_tenant) = (self.scanned, &mut self.by_tenant);
        lane.visit_frame_metas(floor, |f| {
            if f.header.base_offset >= scanned {
                return ControlFlow::Break(());
            }
            if routes(f.tenant, f.topic) && f.header.next_offset() > floor {
                let at = (f.header.base_offset.max(floor), f.header.ts_ms);
                lane_first = lane_first.or(Some(at));
                if let Some(pending) = by_tenant.get_mut(f.tenant).filter(|p| p.first.is_none()) {
                    pending.first = Some(at);
                    lost -= 1;
                }
                if lost == 0 {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })?;
        self.first = lane_first;
        Ok(())
    }

    fn check(&self) {
        debug_assert!(self.floor <= self.scanned, "floor past scanned");
        debug_assert_eq!(self.total.records, self.by_tenant.values().map(|p| p.count.records).sum::<u64>());
        debug_assert!(self.by_tenant.values().all(|p| p.first.is_some()), "a pending tenant without its first");
        debug_assert!(self.total.records == 0 || self.first.is_some(), "pending records but no first");
    }
}
