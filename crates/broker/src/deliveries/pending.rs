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
//!   in `[floor, scanned)`, and it is set whenever `total.records > 0`.

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

/// One lane's pending records for one destination.
#[derive(Debug, Default)]
pub struct LanePending {
    floor: u64,
    scanned: u64,
    total: Count,
    by_tenant: HashMap<Arc<str>, Count>,
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
        } else if self.first.is_none_or(|(at, _)| at < self.floor) {
            self.first = self.find_first(lane, routes)?;
        }
        self.check();
        Ok(())
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
        self.by_tenant.get(tenant).copied().unwrap_or_default()
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
                self.apply(f.tenant, Count { records: n, bytes }, sign);
            }
            ControlFlow::Continue(())
        })
    }

    fn apply(&mut self, tenant: &str, c: Count, sign: Sign) {
        let entry = match self.by_tenant.get_mut(tenant) {
            Some(e) => e,
            None => self.by_tenant.entry(Arc::from(tenant)).or_default(),
        };
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

    /// The first routed record in `[floor, scanned)`.
    fn find_first(&self, lane: &Lane, routes: Routes<'_>) -> Result<Option<(u64, u64)>, wal::WalError> {
        let (floor, scanned) = (self.floor, self.scanned);
        let mut first = None;
        lane.visit_frame_metas(floor, |f| {
            if f.header.base_offset >= scanned {
                return ControlFlow::Break(());
            }
            if routes(f.tenant, f.topic) && f.header.next_offset() > floor {
                first = Some((f.header.base_offset.max(floor), f.header.ts_ms));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        Ok(first)
    }

    fn check(&self) {
        debug_assert!(self.floor <= self.scanned, "floor past scanned");
        debug_assert_eq!(self.total.records, self.by_tenant.values().map(|c| c.records).sum::<u64>());
        debug_assert!(self.total.records == 0 || self.first.is_some(), "pending records but no first");
    }
}
