//! The gather policy: how long a commit round waits for more appends
//! before it writes and syncs. Pure: it decides from what it was told of
//! recent rounds and the numbers the writer passes in; the writer does the
//! waiting (`LaneShared::gather_until`). The single description of the
//! policy; `docs/wal.md` and the config docs point here.
//!
//! With a fixed linger (`group_commit_linger`), a round waits exactly that
//! long from its first append. Never a timer-driven sync: every sync serves
//! appends that are waiting for it.
//!
//! The adaptive gather (when no fixed linger is configured): the appenders a
//! round answers usually append again at once, but a few microseconds too
//! late for the next round, which takes only those that queued during the
//! sync. Left alone, N closed-loop appenders settle into two cohorts of N/2
//! that take turns, halving the batches per sync. So the next round waits
//! for as many appends as were in play when the last one ended (those it
//! answered plus those then queued), never longer than half a recent sync;
//! an append wakes the writer only once that many are queued. One appender
//! alone never waits.
//!
//! Busy lanes (at least `BUSY_ROUND` appends in play) whose callers have
//! announced appends still on their way ([`crate::Wal::announce`]) hold the
//! round for two and a half recent syncs from its start (at most 800 µs)
//! instead: fewer, larger syncs. The hold ends early once the round holds
//! as many appends as were recently in play at once (a peak that decays
//! per round): with 16 clients it ends when all 16 are in, with 64 it runs
//! its time. Under the HTTP load here (the load tool on the same two CPUs)
//! ~0.4% of syncs took over 2 ms at ~2,300 syncs/s, each one stalling every
//! waiting request; at ~1,000/s, a few in 10,000. The device alone does not
//! do this: the slow ones are completions waiting for a busy CPU, so fewer
//! syncs per second is the lever.

use std::time::Duration;

/// The adaptive gather never waits longer than this, whatever syncs cost.
pub const MAX_GATHER: Duration = Duration::from_micros(500);

/// This many appends in play when a round ends means a busy lane: many
/// appenders wait on each sync, and a longer gather costs each little.
pub const BUSY_ROUND: usize = 8;

/// A busy lane's gather, in recent fdatasync times (capped by
/// [`MAX_BUSY_GATHER`]). At 1.5 the 64-connection load made ~50 commit
/// rounds over 2 ms per 10 s and p99 4.4–5.8 ms; at 2.5, 8–25 and
/// 2.5–4.1 ms, at the same throughput (docs/performance.md).
pub const BUSY_GATHER_SYNCS: f64 = 2.5;

/// Per round, the remembered peak of appends in play shrinks by this
/// factor (to half in ~70 rounds, a few tens of milliseconds when busy).
pub const PEAK_DECAY: f64 = 0.99;

/// A busy lane never holds a round longer than this.
pub const MAX_BUSY_GATHER: Duration = Duration::from_micros(800);

/// Wait until the round holds `want` appends or `budget` passed since it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub want: usize,
    pub budget: Duration,
}

/// What the policy remembers of recent rounds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gather {
    /// Appends in play when the last round ended: the adaptive gather's goal.
    expected: usize,
    /// Recent peak of appends in play at a round's end (decays per round):
    /// a busy round that holds this many has nothing more to wait for.
    peak_in_play: f64,
    /// Moving average of fdatasync time, microseconds: bounds the waits.
    avg_sync_us: f64,
}

impl Gather {
    /// The first wait of a round that already holds `have` appends: a fixed
    /// linger, or (adaptive) for the appends in play when the last round
    /// ended, at most half a recent sync. `None`: commit at once.
    pub fn first_wait(&self, linger: Duration, have: usize) -> Option<Wait> {
        if have == 0 {
            return None;
        }
        if !linger.is_zero() {
            return Some(Wait { want: usize::MAX, budget: linger });
        }
        (have < self.expected).then(|| Wait {
            want: self.expected,
            budget: Duration::from_secs_f64(self.avg_sync_us / 2e6).min(MAX_GATHER),
        })
    }

    /// After the first wait: a busy lane with `arriving` announced appends
    /// still on their way holds the round (from its start) for two and a
    /// half recent syncs, until it holds the recent peak.
    pub fn busy_hold(&self, linger: Duration, have: usize, arriving: usize) -> Option<Wait> {
        if have == 0 || !linger.is_zero() || self.expected < BUSY_ROUND || arriving == 0 {
            return None;
        }
        debug_assert!(self.peak_in_play >= self.expected as f64, "the peak is never below expected");
        Some(Wait {
            want: self.peak_in_play.ceil() as usize,
            budget: Duration::from_secs_f64(BUSY_GATHER_SYNCS * self.avg_sync_us / 1e6).min(MAX_BUSY_GATHER),
        })
    }

    /// A round was taken: its goal is spent.
    pub fn round_started(&mut self) {
        self.expected = 0;
    }

    /// One fdatasync took `d`.
    pub fn synced(&mut self, took: Duration) {
        self.avg_sync_us = 0.9 * self.avg_sync_us + 0.1 * took.as_secs_f64() * 1e6;
    }

    /// A round answered `answered` appends while `queued` more waited.
    pub fn round_ended(&mut self, answered: usize, queued: usize) {
        self.expected = answered + queued;
        self.peak_in_play = (self.expected as f64).max(self.peak_in_play * PEAK_DECAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO: Duration = Duration::ZERO;

    fn after_rounds(syncs_us: u64, answered: usize, queued: usize) -> Gather {
        let mut g = Gather::default();
        for _ in 0..50 {
            g.round_started();
            g.synced(Duration::from_micros(syncs_us));
            g.round_ended(answered, queued);
        }
        g
    }

    #[test]
    fn one_appender_alone_never_waits() {
        let g = after_rounds(400, 1, 0);
        assert_eq!(g.first_wait(ZERO, 1), None);
        assert_eq!(g.busy_hold(ZERO, 1, 5), None);
    }

    #[test]
    fn a_round_waits_for_the_appends_in_play_at_most_half_a_sync() {
        let g = after_rounds(400, 6, 2);
        let w = g.first_wait(ZERO, 3).expect("waits");
        assert_eq!(w.want, 8);
        assert!(w.budget > Duration::from_micros(150) && w.budget <= Duration::from_micros(200), "{w:?}");
        // Slow syncs never make it wait longer than the cap.
        let slow = after_rounds(50_000, 6, 2);
        assert_eq!(slow.first_wait(ZERO, 3).expect("waits").budget, MAX_GATHER);
        // A round that already holds them all commits at once.
        assert_eq!(g.first_wait(ZERO, 8), None);
    }

    #[test]
    fn a_busy_lane_holds_only_while_announced_appends_are_on_their_way() {
        let g = after_rounds(200, 40, 24);
        assert_eq!(g.busy_hold(ZERO, 10, 0), None, "nothing announced: no hold");
        let w = g.busy_hold(ZERO, 10, 3).expect("holds");
        assert_eq!(w.want, 64);
        assert!(w.budget > Duration::from_micros(400) && w.budget <= Duration::from_micros(500), "{w:?}");
        assert_eq!(after_rounds(10_000, 40, 24).busy_hold(ZERO, 10, 3).expect("holds").budget, MAX_BUSY_GATHER);
        assert_eq!(after_rounds(200, 4, 2).busy_hold(ZERO, 3, 3), None, "not busy: no hold");
    }

    #[test]
    fn the_peak_decays_so_a_hold_follows_a_shrinking_load() {
        let mut g = after_rounds(200, 60, 4);
        for _ in 0..200 {
            g.round_started();
            g.round_ended(16, 0);
        }
        let w = g.busy_hold(ZERO, 10, 1).expect("holds");
        assert!(w.want >= 16 && w.want < 30, "{w:?}");
    }

    #[test]
    fn a_fixed_linger_replaces_the_adaptive_gather() {
        let g = after_rounds(200, 40, 24);
        let linger = Duration::from_micros(300);
        assert_eq!(g.first_wait(linger, 1), Some(Wait { want: usize::MAX, budget: linger }));
        assert_eq!(g.busy_hold(linger, 1, 9), None);
        assert_eq!(g.first_wait(linger, 0), None, "an empty round never waits");
    }
}
