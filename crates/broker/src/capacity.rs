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
//! again. Bounded: at most [`MAX_EXPORTERS`] ids are remembered (the
//! stalest is forgotten first). Pure: the clock is an argument.

/// A report older than this no longer counts (exporters ask at least every
/// long-poll, 2 s by default, per worker).
pub const REPORT_TTL_MS: u64 = 30_000;

/// The most exporter ids remembered per destination.
pub const MAX_EXPORTERS: usize = 256;

/// The longest exporter id kept (longer ids are cut).
const MAX_ID_BYTES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
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
    /// Exporter `exporter` holds up to `limit` leases at once, as of `now`.
    pub fn report(&mut self, exporter: &str, limit: u32, now: u64) {
        let id = cut(exporter);
        if let Some(r) = self.reports.iter_mut().find(|r| r.exporter == id) {
            r.limit = limit;
            r.seen_ms = r.seen_ms.max(now);
            return;
        }
        if self.reports.len() >= MAX_EXPORTERS {
            if let Some(stalest) = self.reports.iter().enumerate().min_by_key(|(_, r)| r.seen_ms).map(|(i, _)| i) {
                self.reports.swap_remove(stalest);
            }
        }
        self.reports.push(Report { exporter: id.to_string(), limit, seen_ms: now });
        debug_assert!(self.reports.len() <= MAX_EXPORTERS);
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

    #[test]
    fn without_reports_the_capacity_is_the_ceiling() {
        assert_eq!(Capacity::default().total(0, 64), 64);
    }

    #[test]
    fn fresh_reports_add_up_within_the_ceiling_and_stale_ones_drop_out() {
        let mut c = Capacity::default();
        c.report("a", 4, 1_000);
        c.report("b", 3, 2_000);
        assert_eq!(c.total(2_000, 64), 7);
        assert_eq!(c.total(2_000, 5), 5, "max_in_flight caps the sum");
        c.report("a", 6, 3_000);
        assert_eq!(c.total(3_000, 64), 9, "a report replaces the exporter's last one");
        assert_eq!(c.total(2_000 + REPORT_TTL_MS + 1, 64), 6, "b stopped asking");
        assert_eq!(c.total(3_000 + REPORT_TTL_MS + 1, 64), 64, "nobody left: the ceiling");
    }

    #[test]
    fn the_ids_remembered_are_bounded_and_the_stalest_goes_first() {
        let mut c = Capacity::default();
        for i in 0..(MAX_EXPORTERS as u64 + 10) {
            c.report(&format!("e{i}"), 1, i);
        }
        assert_eq!(c.reports.len(), MAX_EXPORTERS);
        assert!(c.reports.iter().all(|r| r.seen_ms >= 10), "the ten stalest were forgotten");
        c.report(&"é".repeat(100), 1, 0);
        assert!(c.reports.iter().all(|r| r.exporter.len() <= MAX_ID_BYTES));
    }
}
