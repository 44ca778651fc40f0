//! Exponential backoff with full jitter, as a pure function of the attempt
//! number and a random draw, so it is tested without sleeping.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    /// Delay before retry number `attempt` (0-based): uniform in
    /// [0, min(max, base * 2^attempt)], never below the sink's Retry-After.
    pub fn delay(&self, attempt: u32, random: u64, retry_after: Option<Duration>) -> Duration {
        let cap = self.base_ms.saturating_mul(1u64 << attempt.min(30)).min(self.max_ms);
        let jittered = Duration::from_millis(if cap == 0 { 0 } else { random % (cap + 1) });
        jittered.max(retry_after.unwrap_or_default())
    }

    /// The longest single local wait.
    pub fn ceiling(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.max_ms)
    }

    /// The longest total sleep `retries` retries can take (for the lease-budget check).
    pub fn worst_case(&self, retries: u32) -> Duration {
        (0..retries)
            .map(|a| Duration::from_millis(self.base_ms.saturating_mul(1u64 << a.min(30)).min(self.max_ms)))
            .sum()
    }
}

/// A small xorshift source for jitter (jitter needs spread, not secrecy).
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded() -> Jitter {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        Jitter(t | 1)
    }
    pub fn draw(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff { base_ms: 100, max_ms: 1000 };

    #[test]
    fn delay_grows_exponentially_within_full_jitter_and_caps() {
        assert_eq!(B.delay(0, u64::MAX, None), Duration::from_millis(u64::MAX % 101));
        for (attempt, cap) in [(0, 100), (1, 200), (2, 400), (3, 800), (4, 1000), (20, 1000)] {
            for r in [0u64, 1, 99, 12345, u64::MAX] {
                assert!(B.delay(attempt, r, None) <= Duration::from_millis(cap));
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_as_a_floor() {
        assert_eq!(B.delay(0, 0, Some(Duration::from_secs(3))), Duration::from_secs(3));
    }

    #[test]
    fn worst_case_sums_the_capped_steps() {
        assert_eq!(B.worst_case(3), Duration::from_millis(100 + 200 + 400));
    }
}
