//! How many leases this exporter delivers at once: found from the sink's
//! round-trip times and failures, additive increase and multiplicative
//! decrease, as Vector's adaptive request concurrency (RFC 1858) does.
//!
//! The controller watches windows of about one round trip:
//! - a window in which the limit was reached, nothing signalled overload,
//!   and the mean round trip stayed within [`RTT_RISE`] of the baseline
//!   raises the limit by one (the sink keeps up: try one more);
//! - a window whose mean round trip rose past that decreases it by
//!   [`DECREASE`] (requests queue at the sink: back off before it fails);
//! - an overload signal — a 429, a 503, a timeout or a refused connection —
//!   decreases it at once, at most once per window.
//!
//! The baseline is the sink's unloaded round trip *for a lease of that
//! size*: a round trip grows with the records a lease carries, and an
//! exporter serving small `normal` leases beside larger `low` ones would
//! otherwise read every large lease as queueing (and every small one as
//! room). So deliveries are classed by size (records rounded down to a
//! power of two), and each class's baseline is the smallest round trip it
//! had in the last [`BASELINE_WINDOWS`] windows. A window is judged on the
//! mean ratio of its round trips to their class's baseline. Queueing past
//! the sink's capacity inflates every round trip, so it shows against that
//! minimum however slowly the limit crept up; a sink that became slower
//! for good moves the minimum within those windows. A class not seen in
//! those windows only seeds its baseline.
//!
//! Other failures (a 4xx poison, a bad answer) say nothing about capacity and are
//! ignored here. A sink's 429 is therefore treated three ways: here it
//! lowers the concurrency; the delivery honours its `Retry-After` (slept
//! while short, else the lease is handed back with it); and the broker
//! counts it as a retryable failure towards the breaker, so a sink that
//! answers nothing but 429 is left alone for `breaker_open_ms`.
//!
//! Beside the windows, the sink's width is learned from each delivery's
//! round trip at its in-flight level (`crate::width`): at a sink that
//! serves W at once and queues the rest, the limit is capped at W (the
//! AIMD limit rests one above, so a stale cap is probed again). In event
//! mode a lease's round trip is many requests' and says nothing of width:
//! [`Aimd::learning_width`] turns it off.
//!
//! `--concurrency N` pins the limit at N. Pure: the clock is an argument.

use crate::width::{Level, Width};
use std::time::Duration;

/// Multiplicative decrease.
pub const DECREASE: f64 = 0.9;
/// A window's mean round trip this much above the baseline means queueing.
pub const RTT_RISE: f64 = 1.3;
/// Windows the baseline's minimum is taken over.
pub const BASELINE_WINDOWS: usize = 32;
/// The shortest window, ms (a sink answering in microseconds is still
/// judged over enough completions).
const MIN_WINDOW_MS: u64 = 50;
/// The adaptive limit's default ceiling (`--max-in-flight`); the broker's
/// own `max_in_flight` bounds all of a destination's exporters together.
pub const ADAPTIVE_MAX: usize = 64;

/// What one delivery said about the sink's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// A lease of `records` delivered (or refused as poison) after `rtt`.
    Done { rtt: Duration, records: u32 },
    /// 429, 503, a timeout, a refused connection: the sink is overloaded.
    Overload,
    /// Anything else: no word on capacity.
    Other,
}

/// The `--concurrency` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Adaptive,
    Pinned(usize),
}

/// A `--concurrency` that is neither `adaptive` nor a number of leases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--concurrency {0:?}: use adaptive or a number of leases (1 or more)")]
pub struct BadMode(pub String);

/// As `--concurrency` takes it: `adaptive` or the number.
impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Adaptive => f.write_str("adaptive"),
            Mode::Pinned(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = BadMode;
    fn from_str(s: &str) -> Result<Mode, BadMode> {
        match s {
            "adaptive" => Ok(Mode::Adaptive),
            n => match n.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Mode::Pinned(n)),
                _ => Err(BadMode(s.to_string())),
            },
        }
    }
}

/// Size classes: records rounded down to a power of two (0, 1, 2-3, 4-7, ...).
const CLASSES: usize = 33;

fn class(records: u32) -> usize {
    (u32::BITS - records.leading_zeros()) as usize
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Window {
    end_ms: u64,
    /// Round trips judged against their class's baseline, and their ratios' sum.
    judged: u32,
    ratio_sum: f64,
    /// Per class seen in this window, its smallest round trip (ms).
    mins: Vec<(usize, f64)>,
    saturated: bool,
    overloaded: bool,
}

/// The controller.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    limit: f64,
    max: f64,
    pinned: bool,
    /// Windows closed so far.
    window_no: u64,
    /// Per size class, (window, smallest round trip in it) of the last
    /// [`BASELINE_WINDOWS`] windows that had one (oldest first).
    baselines: Vec<std::collections::VecDeque<(u64, f64)>>,
    window: Window,
    /// The width learned per level (none: not learned), and its cap as of
    /// the last window's close.
    width: Option<Width>,
    cap: usize,
}

impl Aimd {
    /// `ceiling`: the most an adaptive limit may reach (at least 1).
    pub fn new(mode: Mode, ceiling: usize) -> Aimd {
        let (limit, max, pinned) = match mode {
            Mode::Adaptive => (1.0, ceiling.max(1) as f64, false),
            Mode::Pinned(n) => (n as f64, n as f64, true),
        };
        Aimd {
            limit,
            max,
            pinned,
            window_no: 0,
            baselines: vec![std::collections::VecDeque::new(); CLASSES],
            window: Window::default(),
            width: (!pinned).then(|| Width::new(max as usize)),
            cap: usize::MAX,
        }
    }

    /// Learn the sink's width (`crate::width`) or not (event mode).
    pub fn learning_width(mut self, on: bool) -> Aimd {
        if !on {
            self.width = None;
            self.cap = usize::MAX;
        }
        self
    }

    /// The unloaded round trip of a lease of size class `c`, if known.
    fn baseline(&self, c: usize) -> Option<f64> {
        self.baselines[c].iter().map(|&(_, ms)| ms).reduce(f64::min)
    }

    /// Leases that may be out now.
    pub fn limit(&self) -> usize {
        (self.limit.floor() as usize).min(self.cap).max(1)
    }

    /// The most this controller will ever allow.
    pub fn ceiling(&self) -> usize {
        self.max as usize
    }

    /// A delivery starts with `in_flight` out (this one included).
    pub fn on_start(&mut self, in_flight: usize) {
        if in_flight >= self.limit() {
            self.window.saturated = true;
        }
    }

    /// A delivery that started at `level` ended at `now_ms`.
    pub fn on_done(&mut self, signal: Signal, level: Level, now_ms: u64) {
        if self.pinned {
            return;
        }
        match signal {
            Signal::Overload if !self.window.overloaded => {
                self.window.overloaded = true;
                self.decrease();
            }
            Signal::Done { rtt, records } => {
                let (c, ms) = (class(records), rtt.as_secs_f64() * 1000.0);
                if let Some(base) = self.baseline(c) {
                    self.window.judged += 1;
                    // A round trip under a millisecond is all noise: judged against 1 ms.
                    let ratio = ms.max(1.0) / base.max(1.0);
                    self.window.ratio_sum += ratio;
                    if let Some(w) = &mut self.width {
                        w.observe(level, ratio, now_ms);
                    }
                }
                match self.window.mins.iter_mut().find(|(k, _)| *k == c) {
                    Some((_, min)) => *min = min.min(ms),
                    None => self.window.mins.push((c, ms)),
                }
            }
            Signal::Overload | Signal::Other => {}
        }
        if now_ms >= self.window.end_ms {
            self.close_window(now_ms);
        }
    }

    fn close_window(&mut self, now_ms: u64) {
        let w = std::mem::take(&mut self.window);
        if w.judged > 0 && !w.overloaded {
            if w.ratio_sum / f64::from(w.judged) > RTT_RISE {
                self.decrease();
            } else if w.saturated {
                self.limit = (self.limit + 1.0).min(self.max);
            }
        }
        self.window_no += 1;
        self.recap(now_ms);
        let oldest = self.window_no.saturating_sub(BASELINE_WINDOWS as u64);
        let mut longest = 0f64;
        for &(c, ms) in &w.mins {
            self.baselines[c].push_back((self.window_no, ms));
            longest = longest.max(ms);
        }
        for b in &mut self.baselines {
            while b.front().is_some_and(|&(no, _)| no <= oldest) {
                b.pop_front();
            }
        }
        // About one round trip per window, never under the minimum.
        self.window = Window { end_ms: now_ms + (MIN_WINDOW_MS as f64).max(longest) as u64, ..Window::default() };
        debug_assert!(self.baselines.iter().all(|b| b.len() <= BASELINE_WINDOWS), "baselines stay bounded");
        debug_assert!(self.limit >= 1.0 && self.limit <= self.max, "the limit stays within [1, max]");
    }

    /// Take the width's cap as of this window; the AIMD limit rests at
    /// most one above it, so a cap that goes stale lets one more out.
    fn recap(&mut self, now_ms: u64) {
        self.cap = self.width.as_mut().map_or(usize::MAX, |w| w.cap(now_ms));
        if let Some(w) = &self.width {
            tracing::debug!(cap = self.cap, levels = %w.summary(), "width");
        }
        if self.cap < usize::MAX {
            self.limit = self.limit.min(self.cap as f64 + 1.0).max(1.0);
        }
    }

    fn decrease(&mut self) {
        self.limit = (self.limit * DECREASE).max(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive `k` windows of completions at `rtt` ms with the limit reached.
    fn windows(c: &mut Aimd, now: &mut u64, k: usize, rtt: u64, signal: impl Fn(usize) -> Signal) {
        for i in 0..k {
            let n = c.limit();
            for _ in 0..n {
                c.on_start(n);
            }
            for j in 0..n {
                *now += rtt / n as u64 + 1;
                let s = match signal(i * 1000 + j) {
                    Signal::Done { records, .. } => Signal::Done { rtt: Duration::from_millis(rtt), records },
                    s => s,
                };
                c.on_done(s, Level(j + 1), *now);
            }
            *now += MIN_WINDOW_MS.max(rtt);
            c.on_done(Signal::Other, Level(1), *now);
        }
    }

    fn ok(_: usize) -> Signal {
        Signal::Done { rtt: Duration::ZERO, records: 10 }
    }

    #[test]
    fn fast_successes_raise_the_limit_one_step_per_window() {
        let mut c = Aimd::new(Mode::Adaptive, ADAPTIVE_MAX);
        let mut now = 0;
        windows(&mut c, &mut now, 2, 20, ok);
        let before = c.limit();
        windows(&mut c, &mut now, 10, 20, ok);
        assert!(c.limit() >= before + 8, "{before} -> {}", c.limit());
        windows(&mut c, &mut now, 200, 20, ok);
        assert_eq!(c.limit(), ADAPTIVE_MAX, "capped at the ceiling");
    }

    #[test]
    fn a_rising_round_trip_lowers_the_limit() {
        let mut c = Aimd::new(Mode::Adaptive, ADAPTIVE_MAX);
        let mut now = 0;
        windows(&mut c, &mut now, 20, 20, ok);
        let high = c.limit();
        // The sink queues: round trips triple.
        windows(&mut c, &mut now, 5, 60, ok);
        assert!(c.limit() < high, "{high} -> {}", c.limit());
    }

    #[test]
    fn overloads_cut_the_limit_once_per_window_and_never_below_one() {
        let mut c = Aimd::new(Mode::Adaptive, ADAPTIVE_MAX);
        let mut now = 0;
        windows(&mut c, &mut now, 30, 20, ok);
        let high = c.limit();
        windows(&mut c, &mut now, 1, 20, |_| Signal::Overload);
        let once = c.limit();
        assert!(once < high && once as f64 >= (high as f64 * DECREASE).floor() - 1.0, "{high} -> {once}");
        windows(&mut c, &mut now, 100, 20, |_| Signal::Overload);
        assert_eq!(c.limit(), 1);
    }

    /// A sink that serves `capacity` requests at once in 20 ms; more wait
    /// their turn, so a round trip grows with the leases out past it — for
    /// every lease out alike, as if shared (the width learned must not
    /// hold it more than one under the capacity: every level slows together).
    #[test]
    fn the_limit_settles_near_a_sinks_capacity() {
        for capacity in [1usize, 4, 16] {
            let mut c = Aimd::new(Mode::Adaptive, ADAPTIVE_MAX);
            let mut now = 0;
            let mut limits = Vec::new();
            for _ in 0..400 {
                let n = c.limit();
                let rtt = 20 * n.div_ceil(capacity) as u64;
                windows(&mut c, &mut now, 1, rtt, ok);
                limits.push(c.limit());
            }
            let settled = &limits[200..];
            let (lo, hi) = (*settled.iter().min().unwrap(), *settled.iter().max().unwrap());
            assert!(
                lo >= capacity.saturating_sub(1).max(1) && hi <= capacity * 2 + 1,
                "capacity {capacity}: the limit ranged {lo}..={hi}"
            );
        }
    }

    /// A sink that serves `capacity` at once in 20 ms and queues the rest
    /// in arrival order (a worker pool): the j-th delivery out waits
    /// `ceil(j / capacity) - 1` rounds. The width learned holds the limit
    /// at the capacity, where the windows' mean alone let it reach twice it.
    #[test]
    fn at_a_worker_pool_sink_the_limit_settles_at_its_width() {
        for capacity in [1usize, 4, 16] {
            let mut c = Aimd::new(Mode::Adaptive, ADAPTIVE_MAX);
            let mut now = 0;
            let mut limits = Vec::new();
            for _ in 0..600 {
                let n = c.limit();
                for _ in 0..n {
                    c.on_start(n);
                }
                for j in 1..=n {
                    let rtt = 20 * j.div_ceil(capacity) as u64;
                    now += 20 / n as u64 + 1;
                    c.on_done(Signal::Done { rtt: Duration::from_millis(rtt), records: 1 }, Level(j), now);
                }
                now += MIN_WINDOW_MS.max(20 * n.div_ceil(capacity) as u64);
                c.on_done(Signal::Other, Level(1), now);
                limits.push(c.limit());
            }
            let settled = &limits[300..];
            let (lo, hi) = (*settled.iter().min().unwrap(), *settled.iter().max().unwrap());
            let at_width = settled.iter().filter(|&&l| l <= capacity).count();
            assert!(
                lo >= capacity.saturating_sub(1).max(1) && hi <= capacity + 1 && at_width * 10 >= settled.len() * 8,
                "capacity {capacity}: the limit ranged {lo}..={hi}, at most the width {at_width} of {} windows",
                settled.len()
            );
        }
    }

    /// One window at the limit of leases of `size(j)` records whose round
    /// trips cost 20 ms + 2 ms per record, times `queue(limit)`.
    fn mixed_window(c: &mut Aimd, now: &mut u64, size: impl Fn(usize) -> u32, queue: impl Fn(usize) -> u64) {
        let n = c.limit();
        for _ in 0..n {
            c.on_start(n);
        }
        for j in 0..n {
            let records = size(j);
            let rtt = (20 + 2 * u64::from(records)) * queue(n);
            *now += rtt / n as u64 + 1;
            c.on_done(Signal::Done { rtt: Duration::from_millis(rtt), records }, Level(j + 1), *now);
        }
        *now += MIN_WINDOW_MS.max(50 * queue(n));
        c.on_done(Signal::Other, Level(1), *now);
    }

    #[test]
    fn leases_of_different_sizes_are_not_read_as_queueing() {
        // 22 ms and 50 ms round trips, no queueing at all: windows of small
        // leases, of large ones, and of both.
        let mut c = Aimd::new(Mode::Adaptive, ADAPTIVE_MAX);
        let mut now = 0;
        for i in 0..300 {
            mixed_window(&mut c, &mut now, |j| [1, 15, [1, 15][j % 2]][i % 3], |_| 1);
        }
        assert_eq!(c.limit(), ADAPTIVE_MAX, "the sink kept up at every limit");
    }

    #[test]
    fn with_mixed_sizes_the_limit_still_settles_near_a_sinks_capacity() {
        let mut c = Aimd::new(Mode::Adaptive, ADAPTIVE_MAX);
        let mut now = 0;
        let mut limits = Vec::new();
        for _ in 0..400 {
            mixed_window(&mut c, &mut now, |j| [1, 15][j % 2], |n| n.div_ceil(4) as u64);
            limits.push(c.limit());
        }
        let settled = &limits[200..];
        let (lo, hi) = (*settled.iter().min().unwrap(), *settled.iter().max().unwrap());
        assert!(lo >= 3 && hi <= 9, "capacity 4: the limit ranged {lo}..={hi}");
    }

    #[test]
    fn other_failures_say_nothing_about_capacity() {
        let mut c = Aimd::new(Mode::Adaptive, ADAPTIVE_MAX);
        let mut now = 0;
        windows(&mut c, &mut now, 10, 20, ok);
        let before = c.limit();
        for _ in 0..50 {
            now += 1;
            c.on_done(Signal::Other, Level(1), now);
        }
        assert_eq!(c.limit(), before);
    }

    #[test]
    fn a_pinned_limit_never_moves() {
        let mut c = Aimd::new(Mode::Pinned(3), ADAPTIVE_MAX);
        let mut now = 0;
        windows(&mut c, &mut now, 10, 20, |_| Signal::Overload);
        windows(&mut c, &mut now, 10, 20, ok);
        assert_eq!((c.limit(), c.ceiling()), (3, 3));
        assert_eq!("adaptive".parse::<Mode>(), Ok(Mode::Adaptive));
        assert_eq!("8".parse::<Mode>(), Ok(Mode::Pinned(8)));
        assert!("0".parse::<Mode>().is_err());
    }
}
