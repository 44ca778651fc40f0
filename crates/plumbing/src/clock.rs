//! Wall-clock time, in one place. Pure logic (breaker, limiter, leases)
//! takes the time as an argument; only the edges read the clock.

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds on a monotonic clock since this process first asked:
/// for intervals that must not jump when the wall clock is set (the
/// exporter's concurrency windows and the sink width's staleness).
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}
