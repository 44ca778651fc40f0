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
//! queued inside the sink, and the small tenants' records with it (×2.44
//! their p99 alone). Queued at the sink, a record waits in arrival order;
//! kept in the broker, it waits where the tenant share orders it.
//!
//! # How
//! A delivery's **level** is the number of this exporter's deliveries at
//! the sink when it started, itself included (one committing to the
//! broker is not: it holds no place of the sink's, and counting it made
//! level W+1 of a W-wide sink look calm whenever one of the W committed). Per level, a decayed
//! mean and variance of the ratio of its round trip to its size class's
//! baseline (the class's shortest recent round trip, `crate::concurrency`),
//! each ratio clamped at [`RATIO_CLAMP`]. Level k is **crowded** when its
//! deliveries waited and it adds little throughput:
//! - its mean exceeds the **calm** ratio — the median of the judged levels
//!   below it — by [`CROWDED_EXCESS`] and by three standard errors of its
//!   own mean (so noise, and a jittery sink, mark none), and
//! - by Little's law, k out at level k's round trip add less than half of
//!   what one more free place would (a gain over k-1 out below
//!   [`GAIN_SHARE`] × 1/(k-1)): a sink that only slows as it gets busier
//!   but still serves more (a CPU-bound one) is capped only where a place
//!   adds under half its worth (12 % slower a level: at 7; 1 % a level:
//!   never within 64).
//!
//! - or its round trips **spread**: their variance is over [`SPREAD_JUMP`]
//!   times the calm levels' (lower median, at least [`VAR_FLOOR`]) and its
//!   mean is above the calm ratio by two standard errors (the jump in
//!   spread is the evidence; the mean only says which way). A delivery's
//!   round trip also holds time outside the sink's places (the client, the
//!   receiver's parsing): at level W+1 of a W-wide sink only those that
//!   arrive while all W places are held wait, so the mean rises a few
//!   percent, under [`CROWDED_EXCESS`], and Little's law says the level
//!   adds throughput — but the ones that wait, wait up to a round trip,
//!   queued in arrival order (`benches/incident.py` `flood_part`: levels
//!   1-4 at 1.01 ± 0.01, level 5 at 1.10 ± 0.12; the limit stayed at 5 and
//!   the sink's queue reached 15 ms at p99). A sink that slows alike for
//!   every delivery, and one whose jitter is the same at every level,
//!   shows no such jump.
//!
//! At a W-wide sink no delivery at a level up to W waits (at most W are
//! out), and one at W+1 waits about 1/(W+1) of a round trip for the first
//! of the W to finish, while the sink serves no more: the lowest crowded
//! level is W+1 (or a little above for a wide sink, where one extra
//! delivery waits too little to tell). The cap is the level below it.
//! Level 1 is never crowded (a first delivery after an idle spell may pay
//! a new connection; that says nothing of width).
//!
//! A level is judged once it has [`MIN_SAMPLES`] round trips after its
//! first (skipped: a place used for the first time may pay a new
//! connection); one not seen for [`STALE_MS`] is stale, and starts again
//! the same way. A stale
//! level that was crowded when last judged lets the cap up to it, not past
//! it: so a capped limit probes the one level above now and then (a sink
//! that grew wider is found after [`MIN_SAMPLES`] round trips there, one
//! as narrow as before confirmed after [`PROBE_SAMPLES`] — each after the
//! skipped first — the deliveries a probe costs), and never climbs further
//! while that level is judged again. Bursts more than [`STALE_MS`] apart
//! start every level afresh, so such a load runs at the AIMD's limit
//! (one above the width at most, `crate::concurrency`) while it learns. Levels are this exporter's: exporters sharing a sink each
//! learn their own share of it.
//!
//! # Invariants
//! - `cap()` is at least 1.
//! - Memory: one entry per level up to the ceiling (at most 64 by default,
//!   `--max-in-flight`), fixed at construction.
//!
//! Pure: the clock is an argument.

/// The calm levels' lower medians a level is judged against.
#[derive(Debug, Clone, Copy)]
struct Calm {
    mean: f64,
    var: f64,
}

/// A delivery's place among those out when it started (1: it was alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Level(pub usize);

/// Round trips a level needs before it is judged.
pub const MIN_SAMPLES: u32 = 16;
/// The decayed mean's weight of history: a new sample weighs at least 1/this.
const HISTORY: u32 = 32;
/// A level's mean this much above the calm levels' means its deliveries waited.
pub const CROWDED_EXCESS: f64 = 0.15;
/// A level adding less than this share of one more free place's
/// throughput (k/(k-1)) adds little.
pub const GAIN_SHARE: f64 = 0.5;
/// A level whose round trips' variance is this many times the calm
/// levels' (and significantly slower on average) had some of them wait.
pub const SPREAD_JUMP: f64 = 4.0;
/// The least variance a calm level is taken to have (a standard deviation
/// of 5 %): a near-constant sink's levels are not told apart by noise.
pub const VAR_FLOOR: f64 = 0.0025;
/// Ratios are clamped here before they are averaged.
pub const RATIO_CLAMP: f64 = 2.0;
/// A level not seen for this long (ms) is stale.
pub const STALE_MS: u64 = 30_000;
/// Round trips that confirm a stale crowded level still crowded (a probe
/// that finds the sink as narrow as before ends this soon; finding it
/// wider takes [`MIN_SAMPLES`]).
pub const PROBE_SAMPLES: u32 = 4;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct LevelStat {
    mean: f64,
    /// Decayed variance of the ratios.
    var: f64,
    samples: u32,
    /// When it was last seen (none: never, or reset after a stale spell).
    last_ms: Option<u64>,
    /// Crowded when last judged (kept while the level is stale).
    was_crowded: bool,
}

impl LevelStat {
    fn fresh(&self, now_ms: u64) -> bool {
        self.last_ms.is_some_and(|t| now_ms.saturating_sub(t) <= STALE_MS)
    }

    fn judged(&self, now_ms: u64) -> bool {
        self.samples >= MIN_SAMPLES && self.fresh(now_ms)
    }

    /// The standard error of the mean.
    fn error(&self) -> f64 {
        (self.var / f64::from(self.samples.max(1))).sqrt()
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
    /// baseline; it ended at `now_ms`.
    pub fn observe(&mut self, level: Level, ratio: f64, now_ms: u64) {
        let i = level.0.clamp(1, self.levels.len()) - 1;
        let s = &mut self.levels[i];
        if !s.fresh(now_ms) {
            // A level's first round trip, and its first after a stale
            // spell, may pay a new connection: skipped.
            *s = LevelStat { was_crowded: s.was_crowded, last_ms: Some(now_ms), ..LevelStat::default() };
            return;
        }
        s.samples = (s.samples + 1).min(HISTORY);
        let r = if ratio.is_finite() { ratio.clamp(0.0, RATIO_CLAMP) } else { RATIO_CLAMP };
        let w = 1.0 / f64::from(s.samples);
        let d = r - s.mean;
        s.mean += w * d;
        s.var = (1.0 - w) * (s.var + w * d * d);
        s.last_ms = Some(now_ms);
    }

    /// Each level seen: `k:samples/mean`, for a debug line.
    pub fn summary(&self) -> String {
        let seen = self.levels.iter().enumerate().filter(|(_, s)| s.samples > 0);
        seen.map(|(i, s)| format!("{}:{}/{:.2}±{:.2}", i + 1, s.samples, s.mean, s.var.sqrt()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether level k (index `i`, k = i + 1 >= 2) is crowded, against the
    /// lower medians `calm` of the judged levels below it (their means and
    /// variances): it waited and adds little, or its round trips spread
    /// where the calm levels' did not.
    fn crowded(&self, i: usize, calm: Calm, now_ms: u64) -> bool {
        let (below, at, k) = (self.levels[i - 1], self.levels[i], (i + 1) as f64);
        let waited = at.mean > calm.mean + CROWDED_EXCESS.max(3.0 * at.error());
        let gain = (k * below.mean) / ((k - 1.0) * at.mean);
        let little = waited && gain - 1.0 < GAIN_SHARE / (k - 1.0);
        let spread = at.var > SPREAD_JUMP * calm.var.max(VAR_FLOOR) && at.mean > calm.mean + 2.0 * at.error();
        below.judged(now_ms) && (little || spread)
    }

    /// The most deliveries the sink is seen to serve at once, judged at
    /// `now_ms` (`usize::MAX`: no crowded level seen).
    pub fn cap(&mut self, now_ms: u64) -> usize {
        let mut calm_means: Vec<f64> = Vec::with_capacity(self.levels.len());
        let mut calm_vars: Vec<f64> = Vec::with_capacity(self.levels.len());
        for i in 1..self.levels.len() {
            let below = self.levels[i - 1];
            if below.judged(now_ms) {
                calm_means.insert(calm_means.partition_point(|&x| x < below.mean), below.mean);
                calm_vars.insert(calm_vars.partition_point(|&x| x < below.var), below.var);
            }
            // The lower medians: of two levels, the calmer.
            let mid = calm_means.len().saturating_sub(1) / 2;
            let calm = calm_means.get(mid).zip(calm_vars.get(mid)).map(|(&mean, &var)| Calm { mean, var });
            let at = self.levels[i];
            // A verdict needs level k-1 judged (and so a calm ratio).
            let can_judge = calm.is_some() && self.levels[i - 1].judged(now_ms);
            // A stale crowded level being probed is judged on fewer round trips.
            let probed = at.was_crowded && at.samples >= PROBE_SAMPLES && at.fresh(now_ms);
            match calm {
                Some(calm) if (at.judged(now_ms) || probed) && self.crowded(i, calm, now_ms) => {
                    self.levels[i].was_crowded = true;
                    return i;
                }
                Some(_) if can_judge && at.judged(now_ms) => self.levels[i].was_crowded = false,
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

    /// `n` round trips at `level` of `ratio` each, at `now` (ms).
    fn feed(w: &mut Width, level: usize, ratio: f64, n: usize, now: u64) {
        for _ in 0..n {
            w.observe(Level(level), ratio, now);
        }
    }

    /// A deterministic spread of `n` ratios around `mean`, +-`spread`.
    fn feed_noisy(w: &mut Width, level: usize, mean: f64, spread: f64, n: usize, now: u64, seed: &mut u64) {
        for _ in 0..n {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let unit = ((*seed >> 33) % 2001) as f64 / 1000.0 - 1.0;
            w.observe(Level(level), mean + spread * unit, now);
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
        for level in 17..=22 {
            feed(&mut w, level, 1.05 + (level - 16) as f64 / 17.0, 20, 1);
        }
        assert!((16..=19).contains(&w.cap(1)), "{}", w.cap(1));
    }

    #[test]
    fn a_pool_whose_round_trips_hold_time_outside_it_is_found_by_the_spread_of_the_level_past_it() {
        // 4 places; a round trip spends ~15 % outside them, so at level 5
        // one delivery in five waits (up to a round trip), the rest none:
        // a mean of ~1.09, under CROWDED_EXCESS, with the gain of a place.
        let mut seed = 11u64;
        let mut w = Width::new(64);
        for level in 1..=4 {
            feed_noisy(&mut w, level, 1.01, 0.02, 40, 1, &mut seed);
        }
        for n in 0..40 {
            let waited = if n % 5 == 0 { 1.45 } else { 1.0 };
            w.observe(Level(5), waited, 1);
        }
        let at5 = w.levels[4];
        assert!(at5.mean < 1.01 + CROWDED_EXCESS, "the mean alone says calm: {}", at5.mean);
        assert_eq!(w.cap(1), 4, "the spread of level 5 marks it");
        // The same mean without the spread (every delivery a little slower): calm.
        let mut w = Width::new(64);
        for level in 1..=4 {
            feed_noisy(&mut w, level, 1.01, 0.02, 40, 1, &mut seed);
        }
        feed_noisy(&mut w, 5, 1.09, 0.02, 40, 1, &mut seed);
        assert_eq!(w.cap(1), usize::MAX);
    }

    #[test]
    fn a_sink_that_slows_but_still_serves_more_is_capped_only_where_a_place_adds_little() {
        // 12 % slower a level (a CPU-bound sink): level 8 adds under half
        // of what a free place would; the AIMD (RTT_RISE) stops it at ~3.
        let mut w = Width::new(64);
        for level in 1..=16 {
            feed(&mut w, level, 1.0 + 0.12 * (level - 1) as f64, 20, 1);
        }
        assert_eq!(w.cap(1), 7);
        // 1 % a level: every level adds most of a place's worth.
        let mut w = Width::new(64);
        for level in 1..=64 {
            feed(&mut w, level, 1.0 + 0.01 * (level - 1) as f64, 20, 1);
        }
        assert_eq!(w.cap(1), usize::MAX);
    }

    #[test]
    fn noise_and_a_jittery_sink_mark_no_level_and_a_slow_level_1_does_not_hide_a_pool() {
        let mut seed = 7u64;
        // Round trips scattered +-90 % around 1.1 at every level: no
        // queueing (the three standard errors keep it so; the 0.15 alone
        // would not).
        let mut w = Width::new(64);
        for level in 1..=64 {
            feed_noisy(&mut w, level, 1.1, 0.9, 40, 1, &mut seed);
        }
        assert_eq!(w.cap(1), usize::MAX);
        // Moderate jitter over a real 4-wide pool: still found.
        let mut w = Width::new(64);
        for level in 1..=4 {
            feed_noisy(&mut w, level, 1.2, 0.4, 40, 1, &mut seed);
        }
        feed_noisy(&mut w, 5, 1.8, 0.4, 40, 1, &mut seed);
        assert_eq!(w.cap(1), 4);
        // Level 1 pays a new connection each time (1.9), in front of a
        // 2-wide pool: the calm ratio is the lower median, level 2's.
        let mut w = Width::new(64);
        feed(&mut w, 1, 1.9, 20, 1);
        feed(&mut w, 2, 1.0, 20, 1);
        feed(&mut w, 3, 1.6, 20, 1);
        assert_eq!(w.cap(1), 2);
    }

    #[test]
    fn a_level_needs_its_samples_its_first_is_skipped_and_an_outlier_is_clamped() {
        let mut w = Width::new(64);
        feed(&mut w, 1, 1.0, 20, 1);
        feed(&mut w, 2, 1.9, MIN_SAMPLES as usize, 1);
        assert_eq!(w.cap(1), usize::MAX, "the first round trip does not count");
        w.observe(Level(2), 1.9, 1);
        assert_eq!(w.cap(1), 1);
        let mut w = Width::new(64);
        feed(&mut w, 1, 1.0, 20, 1);
        feed(&mut w, 2, 1.0, 32, 1);
        w.observe(Level(2), 50.0, 1); // one retry's wait
        assert_eq!(w.cap(1), usize::MAX, "one outlier does not crowd a level");
    }

    #[test]
    fn a_stale_crowded_level_is_probed_confirmed_or_cleared() {
        let mut w = Width::new(64);
        feed(&mut w, 1, 1.0, 20, 1);
        feed(&mut w, 2, 1.0, 20, 1);
        feed(&mut w, 3, 1.6, 20, 1);
        assert_eq!(w.cap(1), 2);
        // Levels 1 and 2 keep being seen; level 3 not (the cap kept it out).
        let later = 2 + STALE_MS;
        for level in [1, 2] {
            feed(&mut w, level, 1.0, 1, STALE_MS / 2);
            feed(&mut w, level, 1.0, 20, later);
        }
        assert_eq!(w.cap(later), 3, "the probe lets level 3 out again, no further");
        // Its first round trip after so long may pay a new connection: skipped.
        feed(&mut w, 3, 2.0, 1, later);
        feed(&mut w, 3, 1.6, PROBE_SAMPLES as usize - 1, later);
        assert_eq!(w.cap(later), 3, "still probing: the first round trip did not count");
        let mut narrow = w.clone();
        feed(&mut narrow, 3, 1.6, 1, later);
        assert_eq!(narrow.cap(later), 2, "PROBE_SAMPLES confirm the old width");
        // The probe finds the sink wider now: level 3 calm.
        feed(&mut w, 3, 1.0, 30, later);
        assert_eq!(w.cap(later), usize::MAX);
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
