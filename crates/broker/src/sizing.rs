//! How many records a destination's next lease should hold: sized to a
//! target delivery time, from what recent deliveries cost.
//!
//! Each committed lease is a sample (records, seconds from acquire to
//! commit). The model fits `cost = per_lease + per_record × records` by
//! least squares over exponentially decayed sums (recent deliveries weigh
//! most: a sink that slows down is followed within a few leases), and a
//! lease of priority `p` gets `(target[p] − per_lease) / per_record`
//! records, within the record cap.
//!
//! Targets ([`TARGET_MS`]): `high` and `normal` leases aim at 200 ms of
//! sink time — large enough that commits do not bound throughput (a sink
//! taking 2 µs a record gets 100,000-record leases), small enough to keep
//! latency low; `low` leases aim at 50 ms, so a higher-priority lease never
//! waits more than about a third of a 150 ms in-rate latency target behind
//! the one `low` lease the share lets out while higher data waits.
//!
//! Before the model has seen [`MIN_SAMPLES`] leases it answers the cap for
//! `high` and `normal` and [`COLD_LOW_RECORDS`] for `low`.
//!
//! Leases of (nearly) one size cannot tell the two costs apart. Their size
//! is often set by the data, not by the model: small tenants' one-record
//! leases, each a sink round trip. Charging all of their time per record
//! (20 ms a record where the sink takes 2) cut the next batch to a tenth of
//! its size, spread over as many sink places (`benches/incident.py`
//! `flood_part`: 25-record requests went out as three leases of 8–10,
//! taking three of four places). So the last fit made from leases of
//! different sizes is kept (`TRUST_SPREAD`), scaled to what the uniform
//! leases take now (a sink that slows down still gets smaller leases) and
//! asking for at most `UNIFORM_GROWTH` times what the all-per-record
//! charge gives; only a model that never had one charges everything per
//! record.
//!
//! Pure: samples carry their own duration; nothing here reads a clock.

use wal::Priority;

/// Target sink time per lease, ms, by priority (high, normal, low).
pub const TARGET_MS: [f64; 3] = [200.0, 200.0, 50.0];

/// Samples before the fit is trusted.
pub const MIN_SAMPLES: f64 = 3.0;

/// A `low` lease's size before the fit is trusted.
pub const COLD_LOW_RECORDS: usize = 100;

/// The spread of lease sizes (their variance, records²) a fit must come
/// from to be kept for leases of one size: a fit from sizes 1 to 4 is
/// mostly timing noise.
const TRUST_SPREAD: f64 = 4.0;

/// While leases are of one size, a kept fit's cost per record is at least
/// the all-per-record charge divided by this: leases grow at most this many
/// times past what that charge gives (a fit learned before the records got
/// costlier cannot ask for leases past the lease timeout).
const UNIFORM_GROWTH: f64 = 10.0;

/// Weight kept by the older samples at each new one.
const DECAY: f64 = 0.8;

/// Decayed least-squares sums of (records, ms) samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CostModel {
    w: f64,
    n: f64,
    d: f64,
    nn: f64,
    nd: f64,
    /// The last fit made from leases of different sizes (per lease, per
    /// record), kept while leases are of one size.
    trusted: Option<(f64, f64)>,
}

impl CostModel {
    /// One delivered lease: `records` in `ms` from acquire to commit.
    pub fn observe(&mut self, records: usize, ms: f64) {
        debug_assert!(ms >= 0.0 && ms.is_finite(), "a lease's duration is a finite time");
        let n = records as f64;
        self.w = self.w * DECAY + 1.0;
        self.n = self.n * DECAY + n;
        self.d = self.d * DECAY + ms;
        self.nn = self.nn * DECAY + n * n;
        self.nd = self.nd * DECAY + n * ms;
        if let Some(fit) = self.fit_of_sizes().filter(|_| self.spread() > TRUST_SPREAD) {
            self.trusted = Some(fit);
        }
    }

    /// The decayed variance of the lease sizes seen, records².
    fn spread(&self) -> f64 {
        (self.w * self.nn - self.n * self.n) / (self.w * self.w)
    }

    /// The least-squares fit, when the leases seen differ enough in size
    /// to tell the two costs apart.
    fn fit_of_sizes(&self) -> Option<(f64, f64)> {
        if self.w < MIN_SAMPLES || self.n <= 0.0 || self.spread() <= 1.0 {
            return None;
        }
        let det = self.w * self.nn - self.n * self.n;
        let b = (self.w * self.nd - self.n * self.d) / det;
        if b <= 0.0 {
            return None;
        }
        Some((((self.d - b * self.n) / self.w).max(0.0), b))
    }

    /// (ms per lease, ms per record), once enough samples were seen.
    pub fn fit(&self) -> Option<(f64, f64)> {
        if self.w < MIN_SAMPLES || self.n <= 0.0 {
            return None;
        }
        if let Some(fit) = self.fit_of_sizes() {
            return Some(fit);
        }
        let (mean_n, mean_d) = (self.n / self.w, self.d / self.w);
        let per_record = mean_d / mean_n;
        let (a, b) = match self.trusted {
            // Leases of one size (or of sizes whose slope says nothing):
            // the last split of the costs, scaled to what these leases take
            // now, its cost per record bounded below (`UNIFORM_GROWTH`).
            Some((a0, b0)) if a0 + b0 * mean_n > 0.0 => {
                let k = mean_d / (a0 + b0 * mean_n);
                (a0 * k, (b0 * k).max(per_record / UNIFORM_GROWTH))
            }
            // Never seen different sizes: all of it is charged per record
            // (the safe side: leases get smaller, and differently sized
            // leases follow).
            _ => (0.0, per_record),
        };
        debug_assert!(a >= 0.0, "a cost per lease is never negative");
        Some((a, b.max(1e-6)))
    }

    /// Records for the next lease of `priority`, at most `cap`, at least 1.
    pub fn records_for(&self, priority: Priority, cap: usize) -> usize {
        let cap = cap.max(1);
        let i = priority as usize;
        let Some((a, b)) = self.fit() else {
            return if priority == Priority::Low { COLD_LOW_RECORDS.min(cap) } else { cap };
        };
        let n = ((TARGET_MS[i] - a) / b).floor();
        if n.is_finite() && n >= 1.0 {
            (n as usize).min(cap)
        } else {
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink of known cost: 20 ms a request, 2 ms a record.
    fn cost(n: usize) -> f64 {
        20.0 + 2.0 * n as f64
    }

    #[test]
    fn sizing_converges_for_a_sink_of_known_cost() {
        let mut m = CostModel::default();
        // Leases as the broker would hand them out, each sized from the
        // model so far (cold: the caps).
        let mut sizes = Vec::new();
        for k in 0..30 {
            let p = if k % 3 == 0 { Priority::Low } else { Priority::Normal };
            let n = m.records_for(p, 5_000);
            sizes.push((p, n));
            m.observe(n, cost(n));
        }
        let (a, b) = m.fit().expect("fitted");
        assert!((a - 20.0).abs() < 1.0 && (b - 2.0).abs() < 0.05, "fit {a} + {b}/record");
        // (200 - 20) / 2 = 90 records for normal, (50 - 20) / 2 = 15 for low.
        assert_eq!(m.records_for(Priority::Normal, 5_000), 90);
        assert_eq!(m.records_for(Priority::Low, 5_000), 15);
        assert!(cost(m.records_for(Priority::Low, 5_000)) <= 50.0, "a low lease takes the sink at most its target");
    }

    #[test]
    fn one_record_leases_do_not_make_the_next_batch_small() {
        let mut m = CostModel::default();
        // Small tenants' leases and now and then another tenant's batch.
        for n in [1, 10, 1, 25, 1, 3, 1, 8, 1, 1] {
            m.observe(n, cost(n));
        }
        let mixed = m.records_for(Priority::Normal, 5_000);
        assert!((88..=92).contains(&mixed), "fit from mixed sizes: {mixed}");
        // A long run of one-record leases, each a sink round trip: their
        // 22 ms is mostly the request's, not the record's.
        for _ in 0..40 {
            m.observe(1, cost(1));
        }
        let kept = m.records_for(Priority::Normal, 5_000);
        assert!((80..=mixed).contains(&kept), "the split is kept (at most 10x of 9): {kept}");
        // The sink gets twice as slow: the uniform leases still say so.
        for _ in 0..40 {
            m.observe(1, 2.0 * cost(1));
        }
        let slow = m.records_for(Priority::Normal, 5_000);
        assert!((34..=42).contains(&slow), "about (200 - 40) / 4 = 40 records: {slow}");
    }

    #[test]
    fn a_kept_split_cannot_ask_for_leases_far_past_the_target() {
        let mut m = CostModel::default();
        // Learned when records were cheap: 20 ms a request, 0.2 ms a record.
        for n in [1, 50, 1, 200, 1, 20, 1, 100, 1, 1] {
            m.observe(n, 20.0 + 0.2 * n as f64);
        }
        assert!(m.records_for(Priority::Normal, 100_000) > 800);
        // Then one-record leases of 22 ms: the record may now cost 2 ms.
        for _ in 0..40 {
            m.observe(1, 22.0);
        }
        let n = m.records_for(Priority::Normal, 100_000);
        assert!(n <= 10 * 9 + 1, "at most ten times the all-per-record size (9): {n}");
        assert!(20.0 + 2.0 * n as f64 <= 10.0 * 200.0, "far inside a 30 s lease timeout");
    }

    #[test]
    fn sizes_too_alike_to_split_the_costs_are_not_kept() {
        let mut m = CostModel::default();
        for n in [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4] {
            m.observe(n, 20.0 + 2.0 * n as f64);
        }
        assert_eq!(m.trusted, None, "a spread of about 1.25 records²");
    }

    #[test]
    fn never_seen_different_sizes_everything_is_charged_per_record() {
        let mut m = CostModel::default();
        for _ in 0..10 {
            m.observe(1, 22.0);
        }
        assert_eq!(m.records_for(Priority::Normal, 5_000), 9, "200 / 22 ms a record");
    }

    #[test]
    fn a_sink_that_slows_down_gets_smaller_leases_within_a_few_samples() {
        let mut m = CostModel::default();
        for n in [100, 50, 200, 80, 120] {
            m.observe(n, 1.0 + 0.1 * n as f64);
        }
        let fast = m.records_for(Priority::Normal, 100_000);
        for n in [100, 50, 200, 80, 120, 60] {
            m.observe(n, 1.0 + 1.0 * n as f64);
        }
        let slow = m.records_for(Priority::Normal, 100_000);
        assert!(slow * 5 < fast, "ten times slower per record: {fast} -> {slow}");
    }

    #[test]
    fn the_caps_and_the_floor_hold() {
        let mut m = CostModel::default();
        assert_eq!(m.records_for(Priority::Normal, 500), 500, "cold: the cap");
        assert_eq!(m.records_for(Priority::Low, 500), COLD_LOW_RECORDS);
        for _ in 0..5 {
            m.observe(1, 10_000.0);
        }
        assert_eq!(m.records_for(Priority::High, 500), 1, "a sink slower than the target still gets one record");
        let mut fast = CostModel::default();
        for n in [1_000, 2_000, 3_000] {
            fast.observe(n, 0.001 * n as f64);
        }
        assert_eq!(fast.records_for(Priority::Normal, 5_000), 5_000, "a fast sink: the cap");
    }
}
