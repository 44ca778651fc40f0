//! The sink's width: how many deliveries it serves at once before the
//! next one waits, learned from round trips per in-flight level.
//!
//! # Why
//! The AIMD controller (`crate::concurrency`) judges a window on the mean
//! of its round trips. At a sink that serves W requests at once and queues
//! the rest (a semaphore, a worker pool: most webhook receivers), a delivery
//! past W waits only for the first of the W to finish — part of a round
//! trip — and a window that mixes it with the W that did not wait stays
//! under `RTT_RISE`. In `benches/incident.py` `flood_part` the limit sat at
//! 7 against a 4-wide sink with 3-6 deliveries out: every delivery past 4
//! queued inside the sink, and the small tenants' records with it (×2.36
//! their p99 alone). Queued at the sink, a record waits in arrival order;
//! kept in the broker, it waits where the tenant share orders it.
//!
//! # How
//! A delivery's **level** is the number of this exporter's deliveries out
//! when it started, itself included. Per level, a decayed mean of the
//! ratio of its round trip to its size class's baseline (the class's
//! shortest recent round trip, `crate::concurrency`), each ratio clamped
//! at [`RATIO_CLAMP`] so one slow retry cannot mark a level.
//! The **calm** ratio is the lowest mean of the levels judged. Level k is
//! **crowded** when its deliveries waited and it adds no throughput:
//! - its mean exceeds the calm ratio by [`CROWDED_EXCESS`] (so noise at
//!   levels that never wait, however many, marks none), and
//! - by Little's law, k out at level k's round trip deliver less than
//!   [`MIN_GAIN`] more than k-1 out at level k-1's: a sink that only slows
//!   as it gets busier but still serves more (a CPU-bound one) keeps
//!   gaining, and is not capped here (the AIMD judges it as before).
//!
//! At a W-wide sink no delivery at a level up to W waits (at most W are
//! out), and one at W+1 waits about 1/(W+1) of a round trip for the first
//! of the W to finish, while the sink serves no more: the lowest crowded
//! level is W+1 (or a little above for a wide sink, where one extra
//! delivery waits too little to tell). The cap is the level below it.
//! Level 1 is never crowded (a first delivery after an idle spell may pay
//! a new connection; that says nothing of width).
//!
//! A level is judged once it has [`MIN_SAMPLES`] round trips; one not seen
//! for [`STALE_WINDOWS`] windows is stale and starts again from its next
//! round trip. A stale level that was crowded when last judged lets the
//! cap up to it, not past it: so a capped limit probes the one level above
//! now and then (a sink that grew wider is found after [`MIN_SAMPLES`]
//! round trips there; one as narrow as before is confirmed after
//! [`PROBE_SAMPLES`], the deliveries a probe costs), and never climbs
//! further while that level is judged again.
//!
//! # Invariants
//! - `cap()` is at least 1.
//! - Memory: one entry per level up to the ceiling (at most 64 by default,
//!   `--max-in-flight`), fixed at construction.
//!
//! Pure: the window number is an argument.

/// A delivery's place among those out when it started (1: it was alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Level(pub usize);

/// Round trips a level needs before it is judged.
pub const MIN_SAMPLES: u32 = 16;
/// The decayed mean's weight of history: a new sample weighs at least 1/this.
const HISTORY: u32 = 32;
/// A level's mean this much above the calm levels' means its deliveries waited.
pub const CROWDED_EXCESS: f64 = 0.15;
/// A level that adds less throughput than this (a fraction) adds nothing.
pub const MIN_GAIN: f64 = 0.1;
/// Ratios are clamped here before they are averaged.
pub const RATIO_CLAMP: f64 = 2.0;
/// Windows without a sample after which a level is stale (windows last
/// 50 ms at least: half a minute or more).
pub const STALE_WINDOWS: u64 = 600;
/// Round trips that confirm a stale crowded level still crowded (a probe
/// that finds the sink as narrow as before ends this soon; finding it
/// wider takes [`MIN_SAMPLES`]).
pub const PROBE_SAMPLES: u32 = 4;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct LevelStat {
    mean: f64,
    samples: u32,
    last_window: u64,
    /// Crowded when last judged (kept while the level is stale).
    was_crowded: bool,
}

impl LevelStat {
    fn fresh(&self, window: u64) -> bool {
        self.samples > 0 && window.saturating_sub(self.last_window) <= STALE_WINDOWS
    }

    fn judged(&self, window: u64) -> bool {
        self.samples >= MIN_SAMPLES && self.fresh(window)
    }
}

/// Per-level round trips, and the width they show.
#[derive(Debug, Clone, PartialEq)]
pub struct Width {
    levels: Vec<LevelStat>,
}

impl Width {
    /// Levels 1..=`ceiling` are tracked; a delivery above is counted at the ceiling.
    pub fn new(ceiling: usize) -> Width {
        Width { levels: vec![LevelStat::default(); ceiling.max(1)] }
    }

    /// A delivery started at `level` took `ratio` times its class's
    /// baseline; `window` is the controller's window number.
    pub fn observe(&mut self, level: Level, ratio: f64, window: u64) {
        let i = level.0.clamp(1, self.levels.len()) - 1;
        let s = &mut self.levels[i];
        if !s.fresh(window) {
            *s = LevelStat { was_crowded: s.was_crowded, ..LevelStat::default() };
        }
        s.samples = (s.samples + 1).min(HISTORY);
        let r = if ratio.is_finite() { ratio.clamp(0.0, RATIO_CLAMP) } else { RATIO_CLAMP };
        s.mean += (r - s.mean) / f64::from(s.samples);
        s.last_window = window;
    }

    /// The most deliveries the sink is seen to serve at once, judged at
    /// `window` (`usize::MAX`: no crowded level seen).
    pub fn cap(&mut self, window: u64) -> usize {
        let judged = |s: &LevelStat| s.judged(window);
        let calm = self.levels.iter().filter(|s| judged(s)).map(|s| s.mean).reduce(f64::min);
        // Level k = i + 1, for k >= 2: judged against level k - 1.
        for i in 1..self.levels.len() {
            let (below, at, k) = (self.levels[i - 1], self.levels[i], (i + 1) as f64);
            let crowded = |calm: f64| {
                let gain = (k * below.mean) / ((k - 1.0) * at.mean);
                judged(&below) && at.mean > calm + CROWDED_EXCESS && gain < 1.0 + MIN_GAIN
            };
            // A stale crowded level being probed is judged on fewer round trips.
            let probed = at.was_crowded && at.samples >= PROBE_SAMPLES && at.fresh(window);
            match calm {
                Some(calm) if (judged(&at) || probed) && crowded(calm) => {
                    self.levels[i].was_crowded = true;
                    return i;
                }
                Some(_) if judged(&at) => self.levels[i].was_crowded = false,
                _ if at.was_crowded => return i + 1, // probe it, no further
                _ => {}
            }
        }
        usize::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(w: &mut Width, level: usize, ratio: f64, n: usize, window: u64) {
        for _ in 0..n {
            w.observe(Level(level), ratio, window);
        }
    }

    #[test]
    fn the_level_past_a_sinks_width_is_crowded_and_caps_it() {
        let mut w = Width::new(64);
        for level in 1..=4 {
            feed(&mut w, level, 1.05, 20, 1);
        }
        assert_eq!(w.cap(1), usize::MAX, "no level above the width seen yet");
        feed(&mut w, 5, 1.25, 20, 1);
        feed(&mut w, 6, 1.45, 20, 1);
        assert_eq!(w.cap(1), 4);
        // A 16-wide sink: the 17th waits 1/17 of a round trip, the 18th 2/17.
        let mut w = Width::new(64);
        for level in 1..=16 {
            feed(&mut w, level, 1.05, 20, 1);
        }
        for (level, wait) in [(17, 1.0 / 17.0), (18, 2.0 / 17.0), (19, 3.0 / 17.0), (20, 4.0 / 17.0)] {
            feed(&mut w, level, 1.05 + wait, 20, 1);
        }
        assert!((16..=19).contains(&w.cap(1)), "{}", w.cap(1));
    }

    #[test]
    fn a_sink_that_slows_but_still_serves_more_is_not_capped() {
        // Round trips grow 10 % a level (a CPU-bound sink): each level
        // adds throughput, more than MIN_GAIN up to level 6.
        let mut w = Width::new(64);
        for level in 1..=12 {
            feed(&mut w, level, 1.0 + 0.1 * (level - 1) as f64, 20, 1);
        }
        // The AIMD's own rule (a window's mean over RTT_RISE) stops such a
        // sink near level 4: the cap is not what holds it.
        assert_eq!(w.cap(1), 6);
    }

    #[test]
    fn noise_at_levels_that_never_wait_marks_none_and_level_1_is_never_crowded() {
        let mut w = Width::new(64);
        let mut x = 7u64;
        for level in 1..=64 {
            // Means scattered by +-0.06 around 1.1: noise, no queueing.
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            feed(&mut w, level, 1.1 + ((x >> 33) % 121) as f64 / 1000.0 - 0.06, 20, 1);
        }
        assert_eq!(w.cap(1), usize::MAX);
        let mut w = Width::new(64);
        feed(&mut w, 1, 1.9, 20, 1); // a new connection each time
        feed(&mut w, 2, 1.0, 20, 1);
        feed(&mut w, 3, 1.0, 20, 1);
        assert_eq!(w.cap(1), usize::MAX);
    }

    #[test]
    fn a_level_needs_its_samples_and_a_slow_outlier_is_clamped() {
        let mut w = Width::new(64);
        feed(&mut w, 1, 1.0, 20, 1);
        feed(&mut w, 2, 1.9, MIN_SAMPLES as usize - 1, 1);
        assert_eq!(w.cap(1), usize::MAX, "judged only after MIN_SAMPLES");
        w.observe(Level(2), 1.9, 1);
        assert_eq!(w.cap(1), 1);
        let mut w = Width::new(64);
        feed(&mut w, 1, 1.0, 20, 1);
        feed(&mut w, 2, 1.0, 31, 1);
        w.observe(Level(2), 50.0, 1); // one retry's wait
        assert_eq!(w.cap(1), usize::MAX, "one outlier does not crowd a level");
    }

    #[test]
    fn a_stale_level_is_forgotten_so_the_cap_is_probed_again() {
        let mut w = Width::new(64);
        feed(&mut w, 1, 1.0, 20, 1);
        feed(&mut w, 2, 1.0, 20, 1);
        feed(&mut w, 3, 1.6, 20, 1);
        assert_eq!(w.cap(1), 2);
        // Levels 1 and 2 keep being seen; level 3 not (the cap kept it out).
        let later = 2 + STALE_WINDOWS;
        feed(&mut w, 1, 1.0, 20, later);
        feed(&mut w, 2, 1.0, 20, later);
        assert_eq!(w.cap(later), 3, "the probe lets level 3 out again, no further");
        feed(&mut w, 3, 1.6, 1, later);
        assert_eq!(w.cap(later), 3, "still probing: one round trip is not a verdict");
        let mut narrow = w.clone();
        feed(&mut narrow, 3, 1.6, PROBE_SAMPLES as usize - 1, later);
        assert_eq!(narrow.cap(later), 2, "PROBE_SAMPLES confirm the old width");
        // The probe finds the sink wider now: level 3 calm.
        feed(&mut w, 3, 1.0, 20, later);
        assert_eq!(w.cap(later), usize::MAX);
        // Or as narrow as before: capped again.
        let mut w2 = w.clone();
        feed(&mut w2, 3, 1.6, 32, later);
        assert_eq!(w2.cap(later), 2);
    }

    #[test]
    fn levels_past_the_ceiling_count_at_it() {
        let mut w = Width::new(4);
        feed(&mut w, 1, 1.0, 20, 1);
        feed(&mut w, 2, 1.0, 20, 1);
        feed(&mut w, 3, 1.0, 20, 1);
        feed(&mut w, 9, 1.6, 20, 1);
        assert_eq!(w.cap(1), 3, "level 9 was counted as level 4");
    }
}
