//! Whose fault a content refusal is, when every record gets one.
//!
//! A sink answers a content status (400, 413, 415, 422, a ClickHouse data
//! error) for a record it will not take; bisection isolates such records and
//! they go to dead letters. But a sink that answers, say, 400 to every
//! request (a wrong path behind a gateway, a schema change, an auth proxy
//! that says 400) would then dead-letter the whole backlog at full speed.
//! The rule (docs/sinks.md, "Whose fault a refusal is"):
//!
//! - A **row** is the single-record requests the sink refused since its last
//!   delivery of anything (any request of any lease answered 2xx ends it),
//!   all with one [`Refusal`]; another refusal starts a new row.
//! - A lease that delivered nothing, every single-record request of which was
//!   refused with the row's refusal, is a **fault of the sink** when the row
//!   holds at least [`MIN_ROW`] records of at least two tenants: the lease
//!   goes back as a retryable failure, the breaker counts it, the records
//!   stay. One tenant's records can never make such a row, so one tenant's
//!   bad records never stop the destination for the others.
//! - A lease kept that way is remembered (by a fingerprint of its records,
//!   which a lease given back repeats). When it comes back and is refused
//!   again after the sink delivered anything since, the sink works: its
//!   records are bad and go to dead letters. After [`MAX_KEEPS`] keeps with
//!   no delivery in between, its records go to dead letters too: records of
//!   several tenants that are all bad may stall a lane only for a bounded
//!   number of breaker probes, while a sink that truly refuses everything
//!   dead-letters at most one lease per [`MAX_KEEPS`] probes instead of the
//!   whole backlog at full speed.
//!
//! This is the exporter's only state of its own besides metrics: soft, in
//! memory, per process. A restart forgets it, which costs at most another
//! [`MAX_KEEPS`] probes per lease.

use crate::sink::Refusal;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// Single-record refusals in a row before one content status can be the
/// sink's fault: a few bad records of two tenants meeting in one batch are
/// not enough.
pub const MIN_ROW: u64 = 8;

/// How many times one lease is kept on account of the row before its
/// records are taken as bad anyway.
pub const MAX_KEEPS: u32 = 5;

/// Leases remembered as kept (the oldest is forgotten first).
const KEPT_CAP: usize = 1024;

#[derive(Debug)]
struct Row {
    refusal: Refusal,
    first_tenant: Arc<str>,
    several_tenants: bool,
    records: u64,
}

#[derive(Debug)]
struct Kept {
    lease: u64,
    times: u32,
    /// The sink's delivery count when this lease was last kept.
    deliveries: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Requests the sink accepted since start.
    deliveries: u64,
    row: Option<Row>,
    kept: VecDeque<Kept>,
}

/// A sink's row of single-record content refusals; shared by every
/// delivery to that sink.
#[derive(Debug, Default)]
pub struct RefusalStreak {
    inner: Mutex<Inner>,
}

impl RefusalStreak {
    pub fn new() -> RefusalStreak {
        RefusalStreak::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section is a plain field update.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sink accepted a request: the row ends.
    pub fn delivered(&self) {
        let mut g = self.lock();
        g.deliveries += 1;
        g.row = None;
    }

    /// The sink refused a single-record request of `tenant` with `refusal`.
    pub fn refused(&self, tenant: &Arc<str>, refusal: Refusal) {
        let mut g = self.lock();
        match &mut g.row {
            Some(row) if row.refusal == refusal => {
                row.records += 1;
                row.several_tenants |= row.first_tenant != *tenant;
            }
            _ => {
                g.row = Some(Row { refusal, first_tenant: Arc::clone(tenant), several_tenants: false, records: 1 });
            }
        }
    }

    /// Judge a lease that delivered nothing and whose every single-record
    /// request was refused with `refusal`: Some(why) when that is the
    /// sink's fault (the lease goes back), None when the records are bad.
    /// `lease` fingerprints its records.
    pub fn judge(&self, lease: u64, refusal: Refusal) -> Option<String> {
        let mut g = self.lock();
        let records = match &g.row {
            Some(row) if row.refusal == refusal && row.several_tenants && row.records >= MIN_ROW => row.records,
            _ => return None,
        };
        let deliveries = g.deliveries;
        let times = match g.kept.iter().position(|k| k.lease == lease) {
            Some(i) => {
                let k = &mut g.kept[i];
                if k.deliveries != deliveries || k.times >= MAX_KEEPS {
                    // The sink delivered since (it works), or the bound is reached.
                    g.kept.remove(i);
                    return None;
                }
                k.times += 1;
                k.times
            }
            None => {
                if g.kept.len() >= KEPT_CAP {
                    g.kept.pop_front();
                }
                g.kept.push_back(Kept { lease, times: 1, deliveries });
                1
            }
        };
        Some(format!(
            "the sink refused each of the last {records} single-record requests, of several tenants, with {refusal} and delivered nothing since: taken as a fault of the sink, records kept (keep {times} of {MAX_KEEPS} for these records)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse_row(s: &RefusalStreak, tenants: &[&str], n: u64, refusal: Refusal) {
        for i in 0..n {
            s.refused(&Arc::from(tenants[i as usize % tenants.len()]), refusal);
        }
    }

    #[test]
    fn one_tenant_never_makes_a_row_that_is_the_sinks_fault() {
        let s = RefusalStreak::new();
        refuse_row(&s, &["acme"], 1000, Refusal::Status(400));
        assert_eq!(s.judge(1, Refusal::Status(400)), None);
    }

    #[test]
    fn a_short_row_a_mixed_row_or_a_delivery_keeps_it_the_records_fault() {
        let s = RefusalStreak::new();
        refuse_row(&s, &["a", "b"], MIN_ROW - 1, Refusal::Status(400));
        assert_eq!(s.judge(1, Refusal::Status(400)), None, "short row");
        refuse_row(&s, &["a", "b"], MIN_ROW, Refusal::Status(422));
        assert_eq!(s.judge(1, Refusal::Status(400)), None, "the row is of another status");
        s.delivered();
        assert_eq!(s.judge(1, Refusal::Status(422)), None, "a delivery ends the row");
    }

    #[test]
    fn several_tenants_refused_in_a_row_is_the_sinks_fault_a_bounded_number_of_times() {
        let s = RefusalStreak::new();
        for keep in 1..=MAX_KEEPS {
            refuse_row(&s, &["a", "b"], MIN_ROW, Refusal::ClickHouse(27));
            let why = s.judge(7, Refusal::ClickHouse(27)).expect("the sink's fault");
            assert!(why.contains(&format!("keep {keep} of {MAX_KEEPS}")), "{why}");
        }
        refuse_row(&s, &["a", "b"], MIN_ROW, Refusal::ClickHouse(27));
        assert_eq!(s.judge(7, Refusal::ClickHouse(27)), None, "bounded: then dead letters");
        assert!(s.judge(8, Refusal::ClickHouse(27)).is_some(), "another lease is kept");
    }

    #[test]
    fn a_kept_lease_refused_again_after_the_sink_delivered_is_the_records_fault() {
        let s = RefusalStreak::new();
        refuse_row(&s, &["a", "b"], MIN_ROW, Refusal::Status(400));
        assert!(s.judge(7, Refusal::Status(400)).is_some());
        s.delivered();
        refuse_row(&s, &["a", "b"], MIN_ROW, Refusal::Status(400));
        assert_eq!(s.judge(7, Refusal::Status(400)), None, "the sink works: these records are bad");
    }
}
