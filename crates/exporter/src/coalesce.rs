//! One log line for a failure every worker meets at once. When the broker
//! is down, each of up to 64 workers fails its acquire within the same
//! moment; a line each would bury the one cause ("connection refused") in
//! identical WARNs. [`Coalesced::admit`] lets the first through, then one
//! per [`WINDOW_MS`] with the count of those it held back.

use std::sync::atomic::{AtomicU64, Ordering};

/// At most one line per this many milliseconds.
pub(crate) const WINDOW_MS: u64 = 5_000;

/// A failure's log lines, coalesced.
#[derive(Debug, Default)]
pub(crate) struct Coalesced {
    /// When the last line was written, ms since the epoch (0: never).
    last_ms: AtomicU64,
    /// Lines held back since.
    held: AtomicU64,
}

impl Coalesced {
    /// `Some(held back since the last line)` when this occurrence is to be
    /// logged (now `now_ms`), `None` when it is counted instead.
    pub(crate) fn admit(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Acquire);
        let due = last == 0 || now_ms.saturating_sub(last) >= WINDOW_MS;
        if due && self.last_ms.compare_exchange(last, now_ms.max(1), Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return Some(self.held.swap(0, Ordering::AcqRel));
        }
        self.held.fetch_add(1, Ordering::AcqRel);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_goes_through_then_one_per_window_with_the_count_held_back() {
        let c = Coalesced::default();
        assert_eq!(c.admit(1_000), Some(0));
        for _ in 0..63 {
            assert_eq!(c.admit(1_001), None);
        }
        assert_eq!(c.admit(1_000 + WINDOW_MS - 1), None);
        assert_eq!(c.admit(1_000 + WINDOW_MS), Some(64));
        assert_eq!(c.admit(1_000 + WINDOW_MS), None);
    }
}
