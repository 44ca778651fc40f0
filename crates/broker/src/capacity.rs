//! How many leases a destination's exporters hold at their sinks at once:
//! the capacity the reservation for the higher priorities is taken from
//! ([`crate::share`]).
//!
//! Each exporter reports its concurrency limit (adaptive, found from its
//! sink's round trips, or pinned) with every acquire, under an id it draws
//! at start. The capacity is the sum of the limits reported within the
//! last [`REPORT_TTL_MS`], capped by the destination's `max_in_flight`; an
//! exporter that stopped asking drops out after that time. With no report
//! (exporters from before reports, or none yet) it is `max_in_flight`.
//!
//! Soft state, in memory only: after a restart the first acquires report
//! again. Bounded per peer and in all: a report is kept under (the client
//! address of the connection it came on, the id), one peer holds at most
//! [`MAX_PER_PEER`] ids and the destination at most [`MAX_EXPORTERS`].
//! Why per peer: every exporter of a destination holds the same token, so a
//! holder sending fresh ids must not push the other exporters' reports out
//! (their capacity would then read as the attacker's). A peer at its bound
//! forgets its own stalest report; when the destination is full, a report
//! past [`REPORT_TTL_MS`] goes first, else the stalest of the peer holding
//! the most (the reporting peer itself on a tie) — so one peer's fresh ids
//! never take a report from a peer holding fewer. Pure: the clock is an
//! argument.

use std::collections::HashMap;
use std::net::IpAddr;

/// A report older than this no longer counts (exporters ask at least every
/// long-poll, 2 s by default, per worker).
pub const REPORT_TTL_MS: u64 = 30_000;

/// The most exporter ids remembered per destination, over every peer.
pub const MAX_EXPORTERS: usize = 1024;

/// The most exporter ids remembered from one peer (one client address):
/// far more exporter processes than one host or NAT address runs for one
/// destination.
pub const MAX_PER_PEER: usize = 64;

/// The longest exporter id kept (longer ids are cut).
const MAX_ID_BYTES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    /// `None`: reported without a connection (in-process callers).
    peer: Option<IpAddr>,
    exporter: String,
    limit: u32,
    seen_ms: u64,
}

/// The recent reports of one destination's exporters.
#[derive(Debug, Default)]
pub struct Capacity {
    reports: Vec<Report>,
}

impl Capacity {
    /// Exporter `exporter`, asking from `peer`, holds up to `limit` leases
    /// at once, as of `now`.
    pub fn report(&mut self, peer: Option<IpAddr>, exporter: &str, limit: u32, now: u64) {
        let id = cut(exporter);
        if let Some(r) = self.reports.iter_mut().find(|r| r.peer == peer && r.exporter == id) {
            r.limit = limit;
            r.seen_ms = r.seen_ms.max(now);
            return;
        }
        let own = self.reports.iter().filter(|r| r.peer == peer).count();
        let victim = if own >= MAX_PER_PEER {
            self.stalest(|r| r.peer == peer)
        } else if self.reports.len() >= MAX_EXPORTERS {
            self.stalest(|r| now.saturating_sub(r.seen_ms) > REPORT_TTL_MS).or_else(|| {
                let largest = self.largest_peer(peer);
                self.stalest(|r| r.peer == largest)
            })
        } else {
            None
        };
        if let Some(i) = victim {
            self.reports.swap_remove(i);
        }
        self.reports.push(Report { peer, exporter: id.to_string(), limit, seen_ms: now });
        debug_assert!(self.reports.len() <= MAX_EXPORTERS);
    }

    /// The index of the stalest report among those `which` selects.
    fn stalest(&self, which: impl Fn(&Report) -> bool) -> Option<usize> {
        self.reports.iter().enumerate().filter(|(_, r)| which(r)).min_by_key(|(_, r)| r.seen_ms).map(|(i, _)| i)
    }

    /// The peer holding the most reports; `asking` wins a tie.
    fn largest_peer(&self, asking: Option<IpAddr>) -> Option<IpAddr> {
        let mut held: HashMap<Option<IpAddr>, usize> = HashMap::new();
        for r in &self.reports {
            *held.entry(r.peer).or_default() += 1;
        }
        held.into_iter().max_by_key(|&(p, n)| (n, p == asking)).map_or(asking, |(p, _)| p)
    }

    /// Leases the destination's exporters hold at once, at most `ceiling`
    /// (its `max_in_flight`); `ceiling` when no exporter reported lately.
    pub fn total(&self, now: u64, ceiling: u32) -> u32 {
        let fresh = self.reports.iter().filter(|r| now.saturating_sub(r.seen_ms) <= REPORT_TTL_MS);
        let (mut sum, mut any) = (0u32, false);
        for r in fresh {
            sum = sum.saturating_add(r.limit);
            any = true;
        }
        if any {
            sum.clamp(1, ceiling.max(1))
        } else {
            ceiling.max(1)
        }
    }
}

/// The longest prefix of `id` within [`MAX_ID_BYTES`] that is whole characters.
fn cut(id: &str) -> &str {
    let mut end = id.len().min(MAX_ID_BYTES);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    &id[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    #[test]
    fn without_reports_the_capacity_is_the_ceiling() {
        assert_eq!(Capacity::default().total(0, 64), 64);
    }

    #[test]
    fn fresh_reports_add_up_within_the_ceiling_and_stale_ones_drop_out() {
        let mut c = Capacity::default();
        c.report(A, "a", 4, 1_000);
        c.report(B, "b", 3, 2_000);
        assert_eq!(c.total(2_000, 64), 7);
        assert_eq!(c.total(2_000, 5), 5, "max_in_flight caps the sum");
        c.report(A, "a", 6, 3_000);
        assert_eq!(c.total(3_000, 64), 9, "a report replaces the exporter's last one");
        assert_eq!(c.total(2_000 + REPORT_TTL_MS + 1, 64), 6, "b stopped asking");
        assert_eq!(c.total(3_000 + REPORT_TTL_MS + 1, 64), 64, "nobody left: the ceiling");
    }

    #[test]
    fn the_ids_remembered_are_bounded_per_peer_and_in_all_and_the_stalest_goes_first() {
        let mut c = Capacity::default();
        for i in 0..(MAX_PER_PEER as u64 + 10) {
            c.report(A, &format!("e{i}"), 1, i);
        }
        assert_eq!(c.reports.len(), MAX_PER_PEER);
        assert!(c.reports.iter().all(|r| r.seen_ms >= 10), "the peer's ten stalest were forgotten");
        c.report(A, &"é".repeat(100), 1, 100);
        assert!(c.reports.iter().all(|r| r.exporter.len() <= MAX_ID_BYTES));
        // Many peers: never more than MAX_EXPORTERS in all.
        let mut c = Capacity::default();
        for p in 0..(2 * MAX_EXPORTERS as u32) {
            c.report(Some(IpAddr::V4(p.into())), "x", 1, u64::from(p));
        }
        assert_eq!(c.reports.len(), MAX_EXPORTERS);
    }

    /// Issue 19 (defect 18): a holder of the destination's token sending
    /// 256 fresh ids (or any number) evicted every other exporter's report.
    #[test]
    fn one_peers_fresh_ids_evict_only_its_own_reports() {
        let mut c = Capacity::default();
        c.report(A, "honest-1", 4, 0);
        c.report(A, "honest-2", 4, 0);
        for i in 0..10_000u64 {
            c.report(B, &format!("fresh-{i}"), 1, 1 + i / 100);
        }
        let honest: Vec<&str> = c.reports.iter().filter(|r| r.peer == A).map(|r| r.exporter.as_str()).collect();
        assert_eq!(honest, ["honest-1", "honest-2"], "the other peer's reports are all kept");
        assert_eq!(c.reports.iter().filter(|r| r.peer == B).count(), MAX_PER_PEER);
        // The honest reports still count (the attacker's add at most MAX_PER_PEER).
        assert!(c.total(100, 1_000) >= 8);
    }

    #[test]
    fn with_the_destination_full_a_newcomer_takes_from_the_largest_peer_never_from_a_smaller_one() {
        let mut c = Capacity::default();
        // Fill with many peers holding one report each, and one holding the most.
        for p in 0..(MAX_EXPORTERS - MAX_PER_PEER) as u32 {
            c.report(Some(IpAddr::V4((p + 1000).into())), "one", 1, 5);
        }
        for i in 0..MAX_PER_PEER {
            c.report(B, &format!("b{i}"), 1, 5);
        }
        assert_eq!(c.reports.len(), MAX_EXPORTERS);
        c.report(A, "new", 1, 6);
        assert_eq!(c.reports.iter().filter(|r| r.peer == B).count(), MAX_PER_PEER - 1, "the largest peer gave one");
        assert_eq!(c.reports.iter().filter(|r| r.exporter == "one").count(), MAX_EXPORTERS - MAX_PER_PEER);
        // A stale report goes before anyone's fresh one.
        let mut c = Capacity::default();
        for p in 0..MAX_EXPORTERS as u32 {
            c.report(Some(IpAddr::V4(p.into())), "x", 1, if p == 7 { 0 } else { REPORT_TTL_MS + 10 });
        }
        c.report(A, "new", 1, REPORT_TTL_MS + 10);
        assert!(!c.reports.iter().any(|r| r.peer == Some(IpAddr::V4(7u32.into()))), "the stale one went");
    }
}
