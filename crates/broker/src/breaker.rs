//! A destination's circuit breaker as a pure state machine over (state, now).
//!
//! closed --(failure_threshold consecutive retryable failures)--> open
//! open --(open_ms elapsed; next acquire)--> half-open, that acquire is the probe
//! half-open: exactly one probe lease; success -> closed, failure -> open.
//!
//! The broker persists the state in sled after each transition, so it
//! survives broker and exporter restarts.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
    /// The value of `weir_destination_breaker_state`.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    pub state: BreakerState,
    pub consecutive_failures: u32,
    pub opened_at_ms: u64,
    /// Half-open: the probe lease is out.
    pub probe_out: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failure_threshold: u32,
    pub open_ms: u64,
}

/// How a lease ended: every path that ends one says which, and the
/// breaker settles from it ([`Breaker::on_lease_end`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEnd {
    /// The exporter delivered it.
    Committed,
    /// The exporter failed it as retryable: counts towards opening.
    Failed,
    /// The exporter gave it back without a verdict (e.g. on SIGTERM).
    Released,
    /// Nobody committed it in time.
    Expired,
    /// The broker voided it: rewind, drop-oldest or age retention moved
    /// the cursor over it. Says nothing about the sink.
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allow,
    /// Allowed as the half-open breaker's single probe.
    Probe,
    Deny {
        retry_after_ms: u64,
    },
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { state: BreakerState::Closed, consecutive_failures: 0, opened_at_ms: 0, probe_out: false }
    }
}

impl Breaker {
    /// May a lease be handed out now?
    pub fn admit(self, now_ms: u64, p: BreakerPolicy) -> (Breaker, Admission) {
        match self.state {
            BreakerState::Closed => (self, Admission::Allow),
            BreakerState::Open => {
                let until = self.opened_at_ms.saturating_add(p.open_ms);
                if now_ms >= until {
                    (Breaker { state: BreakerState::HalfOpen, probe_out: true, ..self }, Admission::Probe)
                } else {
                    (self, Admission::Deny { retry_after_ms: until - now_ms })
                }
            }
            BreakerState::HalfOpen if self.probe_out => (self, Admission::Deny { retry_after_ms: p.open_ms.min(1000) }),
            BreakerState::HalfOpen => (Breaker { probe_out: true, ..self }, Admission::Probe),
        }
    }

    pub fn on_success(self) -> Breaker {
        Breaker::default()
    }

    pub fn on_failure(self, now_ms: u64, p: BreakerPolicy) -> Breaker {
        let failures = self.consecutive_failures.saturating_add(1);
        let open = Breaker {
            state: BreakerState::Open,
            consecutive_failures: failures,
            opened_at_ms: now_ms,
            probe_out: false,
        };
        match self.state {
            BreakerState::HalfOpen | BreakerState::Open => open,
            BreakerState::Closed if failures >= p.failure_threshold => open,
            BreakerState::Closed => Breaker { consecutive_failures: failures, ..self },
        }
    }

    /// The probe came back without a verdict (released, or its lease
    /// expired): a lost probe counts as a failure, a released one does not.
    pub fn on_probe_returned(self, now_ms: u64, p: BreakerPolicy, failed: bool) -> Breaker {
        if failed {
            self.on_failure(now_ms, p)
        } else {
            Breaker { probe_out: false, ..self }
        }
    }

    /// Settle the breaker for a lease that ended. A probe that ends without
    /// a verdict (released or cancelled) frees the half-open slot for the
    /// next probe, so the breaker can always leave half-open; an expired
    /// probe counts as a failure.
    pub fn on_lease_end(self, probe: bool, end: LeaseEnd, now_ms: u64, p: BreakerPolicy) -> Breaker {
        match end {
            LeaseEnd::Committed => self.on_success(),
            LeaseEnd::Failed => self.on_failure(now_ms, p),
            LeaseEnd::Expired if probe => self.on_probe_returned(now_ms, p, true),
            LeaseEnd::Released | LeaseEnd::Cancelled if probe => self.on_probe_returned(now_ms, p, false),
            LeaseEnd::Expired | LeaseEnd::Released | LeaseEnd::Cancelled => self,
        }
    }

    pub fn retry_in_ms(self, now_ms: u64, p: BreakerPolicy) -> Option<u64> {
        (self.state == BreakerState::Open).then(|| self.opened_at_ms.saturating_add(p.open_ms).saturating_sub(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BreakerPolicy = BreakerPolicy { failure_threshold: 2, open_ms: 5_000 };

    #[test]
    fn two_consecutive_failures_open_the_breaker() {
        let b = Breaker::default().on_failure(0, P);
        assert_eq!(b.state, BreakerState::Closed);
        let b = b.on_failure(10, P);
        assert_eq!(b.state, BreakerState::Open);
        assert_eq!(b.admit(1_000, P).1, Admission::Deny { retry_after_ms: 4_010 });
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let b = Breaker::default().on_failure(0, P).on_success().on_failure(1, P);
        assert_eq!((b.state, b.consecutive_failures), (BreakerState::Closed, 1));
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let open = Breaker::default().on_failure(0, P).on_failure(0, P);
        let (b, first) = open.admit(5_000, P);
        assert_eq!(first, Admission::Probe);
        assert_eq!(b.state, BreakerState::HalfOpen);
        for t in [5_000, 5_001, 60_000] {
            assert!(matches!(b.admit(t, P).1, Admission::Deny { .. }), "second probe at {t}");
        }
        assert_eq!(b.on_success().admit(5_002, P).1, Admission::Allow);
    }

    #[test]
    fn failed_probe_reopens_for_a_full_period() {
        let (b, _) = Breaker::default().on_failure(0, P).on_failure(0, P).admit(5_000, P);
        let b = b.on_failure(6_000, P);
        assert_eq!(b.state, BreakerState::Open);
        assert_eq!(b.admit(10_999, P).1, Admission::Deny { retry_after_ms: 1 });
        assert_eq!(b.admit(11_000, P).1, Admission::Probe);
    }

    #[test]
    fn cancelled_probe_lets_another_probe_through() {
        let (b, _) = Breaker::default().on_failure(0, P).on_failure(0, P).admit(5_000, P);
        let b = b.on_lease_end(true, LeaseEnd::Cancelled, 5_100, P);
        assert_eq!(b.admit(5_100, P).1, Admission::Probe);
        let b = b.on_lease_end(false, LeaseEnd::Cancelled, 5_100, P);
        assert_eq!(b.state, BreakerState::HalfOpen, "a cancelled ordinary lease says nothing about the sink");
    }

    #[test]
    fn released_probe_lets_another_probe_through() {
        let (b, _) = Breaker::default().on_failure(0, P).on_failure(0, P).admit(5_000, P);
        let b = b.on_probe_returned(5_100, P, false);
        assert_eq!(b.admit(5_100, P).1, Admission::Probe);
    }
}
