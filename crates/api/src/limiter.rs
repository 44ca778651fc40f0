//! Per-tenant rate limiting as a pure function of (state, now).
//!
//! A leaky bucket of depth `burst` drains at `rate_per_sec`. Records that fit
//! go to the tenant's own lane; records that do not are *demoted* to `low`
//! (and do not fill the bucket, so the tenant keeps its rate in its own lane
//! while the excess waits behind everyone). An optional hard bucket rejects
//! with a Retry-After computed from how long it needs to drain.
//!
//! When the limiter cannot decide — the bucket is contended, the clock went
//! backwards, the state is unknown — the answer is `low`, never the normal
//! lane: that is the lesson of a flood that reached everyone's queue because
//! failed limiter calls defaulted to "normal".

use std::sync::Mutex;

/// A leaky bucket's state: how full it was at a moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Records in the bucket at `last_ms` (0 up to the burst, or above it
    /// after a hard batch larger than the burst passed).
    pub level: f64,
    /// When `level` was computed, ms since the Unix epoch; the bucket has
    /// drained since at its rate.
    pub last_ms: u64,
}

impl Bucket {
    /// An empty bucket, drained since the epoch: a tenant's state at start.
    pub const EMPTY: Bucket = Bucket { level: 0.0, last_ms: 0 };
}

/// A bucket's limits, from the tenant's configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Records per second the bucket drains (positive; `rate_per_sec` or
    /// `hard_rate_per_sec`).
    pub rate_per_sec: f64,
    /// Records the bucket holds (`burst` or `hard_burst`).
    pub burst: f64,
}

/// Why records went to `low` although the tenant's lane is another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DemoteReason {
    /// The batch does not fit the tenant's soft bucket.
    OverRate,
    /// The tenant's limiter state stayed locked by other requests: doubt
    /// demotes rather than waits.
    LimiterContention,
    /// The clock went backwards since the bucket's last update: doubt
    /// demotes.
    LimiterClock,
}

impl DemoteReason {
    /// Its metric label (`weir_demoted_records_total{reason}`), from the one table.
    pub fn as_str(self) -> &'static str {
        let reason = match self {
            DemoteReason::OverRate => plumbing::reasons::Reason::OverRate,
            DemoteReason::LimiterContention => plumbing::reasons::Reason::LimiterContention,
            DemoteReason::LimiterClock => plumbing::reasons::Reason::LimiterClock,
        };
        reason.as_str()
    }
}

/// The limiter's decision for one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// In rate: store the batch in the tenant's own lane.
    InRate,
    /// Store the batch in `low`, for this reason.
    Demote(DemoteReason),
    /// Hard limit: reject, try again after this many seconds.
    Reject {
        /// Seconds until the hard bucket has room for the batch (at least 1).
        retry_after_secs: u64,
    },
}

/// Drain the bucket up to `now_ms`. `None` if the clock went backwards.
fn drained(b: Bucket, now_ms: u64, limits: Limits) -> Option<Bucket> {
    if now_ms < b.last_ms {
        return None;
    }
    let elapsed = (now_ms - b.last_ms) as f64 / 1000.0;
    let level = (b.level - elapsed * limits.rate_per_sec).max(0.0);
    level.is_finite().then_some(Bucket { level, last_ms: now_ms })
}

/// Admit `n` records against the soft bucket.
pub fn admit(b: Bucket, now_ms: u64, n: u64, limits: Limits) -> (Bucket, Verdict) {
    let Some(d) = drained(b, now_ms, limits) else {
        return (b, Verdict::Demote(DemoteReason::LimiterClock));
    };
    if d.level + n as f64 <= limits.burst {
        (Bucket { level: d.level + n as f64, ..d }, Verdict::InRate)
    } else {
        (d, Verdict::Demote(DemoteReason::OverRate))
    }
}

/// Admit `n` records against the hard bucket: accept or reject whole.
pub fn admit_hard(b: Bucket, now_ms: u64, n: u64, limits: Limits) -> (Bucket, Verdict) {
    let Some(d) = drained(b, now_ms, limits) else {
        // Unknown state: do not reject on doubt; the soft limiter demotes.
        return (b, Verdict::Demote(DemoteReason::LimiterClock));
    };
    // A batch larger than the whole bucket passes only on an empty bucket
    // (otherwise it could never pass); the bucket then drains from above.
    if d.level + n as f64 <= limits.burst || d.level == 0.0 {
        return (Bucket { level: d.level + n as f64, ..d }, Verdict::InRate);
    }
    // Time until the bucket has room for n (or is empty, if n > burst).
    let excess = (d.level + (n as f64).min(limits.burst) - limits.burst).max(0.0);
    let secs = (excess / limits.rate_per_sec).ceil().max(1.0);
    (d, Verdict::Reject { retry_after_secs: secs as u64 })
}

/// A tenant's live limiter state.
pub(crate) struct TenantLimiter {
    pub soft: Limits,
    pub hard: Option<Limits>,
    state: Mutex<(Bucket, Bucket)>,
}

impl TenantLimiter {
    pub fn new(soft: Limits, hard: Option<Limits>) -> Self {
        TenantLimiter { soft, hard, state: Mutex::new((Bucket::EMPTY, Bucket::EMPTY)) }
    }

    /// A limiter with new limits over this one's buckets as they are now:
    /// a reload that changes a tenant's rate grants it no fresh burst.
    pub fn with_limits(&self, soft: Limits, hard: Option<Limits>) -> Self {
        let buckets = *self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        TenantLimiter { soft, hard, state: Mutex::new(buckets) }
    }

    /// Decide for a batch of `n` records at `now_ms`. Never blocks: if the
    /// state is busy after a few tries, the batch is demoted.
    pub fn decide(&self, now_ms: u64, n: u64) -> Verdict {
        let mut guard = None;
        for _ in 0..64 {
            match self.state.try_lock() {
                Ok(g) => {
                    guard = Some(g);
                    break;
                }
                Err(std::sync::TryLockError::WouldBlock) => std::hint::spin_loop(),
                Err(std::sync::TryLockError::Poisoned(_)) => break,
            }
        }
        let Some(mut g) = guard else {
            return Verdict::Demote(DemoteReason::LimiterContention);
        };
        let (soft, hard) = *g;
        if let Some(hl) = self.hard {
            let (nh, v) = admit_hard(hard, now_ms, n, hl);
            if let Verdict::Reject { .. } = v {
                g.1 = nh;
                return v;
            }
            g.1 = nh;
        }
        let (ns, v) = admit(soft, now_ms, n, self.soft);
        g.0 = ns;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits { rate_per_sec: 100.0, burst: 200.0 };

    #[test]
    fn in_rate_records_pass_and_fill_the_bucket() {
        let (b, v) = admit(Bucket::EMPTY, 1_000, 50, L);
        assert_eq!(v, Verdict::InRate);
        assert_eq!(b.level, 50.0);
    }

    #[test]
    fn a_full_burst_passes_then_the_excess_is_demoted() {
        let (b, v) = admit(Bucket::EMPTY, 1_000, 200, L);
        assert_eq!(v, Verdict::InRate);
        let (b2, v2) = admit(b, 1_000, 1, L);
        assert_eq!(v2, Verdict::Demote(DemoteReason::OverRate));
        assert_eq!(b2.level, 200.0, "demoted records do not fill the bucket");
    }

    #[test]
    fn the_bucket_drains_at_the_configured_rate() {
        let (b, _) = admit(Bucket::EMPTY, 0, 200, L);
        // 0.5 s later 50 records have drained.
        let (b, v) = admit(b, 500, 50, L);
        assert_eq!(v, Verdict::InRate);
        let (_, v) = admit(b, 500, 1, L);
        assert_eq!(v, Verdict::Demote(DemoteReason::OverRate));
    }

    #[test]
    fn clock_going_backwards_is_doubt_and_doubt_demotes() {
        let (b, _) = admit(Bucket::EMPTY, 10_000, 1, L);
        let (_, v) = admit(b, 9_000, 1, L);
        assert_eq!(v, Verdict::Demote(DemoteReason::LimiterClock));
    }

    #[test]
    fn contended_limiter_demotes_instead_of_waiting() {
        let t = TenantLimiter::new(L, None);
        let _held = t.state.lock().unwrap();
        assert_eq!(t.decide(1_000, 1), Verdict::Demote(DemoteReason::LimiterContention));
    }

    #[test]
    fn hard_limit_rejects_with_retry_after_from_the_bucket() {
        let hard = Limits { rate_per_sec: 10.0, burst: 20.0 };
        let (b, v) = admit_hard(Bucket::EMPTY, 0, 20, hard);
        assert_eq!(v, Verdict::InRate);
        // 15 more need 15 drained at 10/s: 1.5 s, rounded up.
        let (_, v) = admit_hard(b, 0, 15, hard);
        assert_eq!(v, Verdict::Reject { retry_after_secs: 2 });
        let (_, v) = admit_hard(b, 1_500, 15, hard);
        assert_eq!(v, Verdict::InRate, "after the Retry-After the same batch fits");
        // A batch larger than the bucket waits for it to empty (2 s), then passes.
        let (_, v) = admit_hard(b, 0, 25, hard);
        assert_eq!(v, Verdict::Reject { retry_after_secs: 2 });
        let (_, v) = admit_hard(b, 2_000, 25, hard);
        assert_eq!(v, Verdict::InRate);
    }

    #[test]
    fn tenant_limiter_applies_hard_before_soft() {
        let t = TenantLimiter::new(L, Some(Limits { rate_per_sec: 1.0, burst: 5.0 }));
        assert_eq!(t.decide(0, 5), Verdict::InRate);
        assert!(matches!(t.decide(0, 1), Verdict::Reject { retry_after_secs: 1 }));
    }
}
