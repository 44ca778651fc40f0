//! Wall-clock time, in one place. Pure logic (breaker, limiter, leases)
//! takes the time as an argument; only the edges read the clock.

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
