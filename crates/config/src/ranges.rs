//! The documented range of every numeric key (`docs/config.md`), checked
//! in the one validation ([`Config::validate`]).
//!
//! Why ranges and not just "non-zero": the runtime adds config numbers to
//! clocks (`now_ms + window`, `now + lease_ms`, `opened_at + open_ms`),
//! multiplies them (`max_lag_bytes * 9 / 10`, `2 * max_body_bytes` charged
//! to the memory budget), divides by them (`excess / hard_rate_per_sec` is a
//! `Retry-After`) and clamps with them (`clamp(1, max_lease_bytes)`, which
//! panics when the bound is 0). Each bound below is chosen so that every such
//! expression stays finite, in range and meaningful for any accepted file;
//! `config::proptests` holds the runtime's arithmetic to them.

use super::{Config, ConfigError, ConfigKey, DestinationConfig, TenantConfig};

/// Longest idempotency window: a week. Deadlines are `now_ms + window`, and
/// a week of milliseconds added to any wall clock this side of year 200,000
/// cannot overflow.
pub const MAX_IDEMPOTENCY_WINDOW_SECS: u64 = 7 * 24 * 3600;
/// Longest `Retry-After` a configuration can ask for, and longest wait a full
/// hard-limit bucket can give (`hard_burst / hard_rate_per_sec`): an hour.
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;
/// Longest lease lifetime: a day (`now + lease_ms` is a deadline).
pub const MAX_LEASE_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// Shortest lease lifetime: an exporter needs time to deliver and heartbeat.
pub const MIN_LEASE_TIMEOUT_MS: u64 = 1000;
/// Largest body, inflated body and lease: 1 GiB (one request is one WAL
/// frame, `max_inflated_bytes + 1 MiB` must fit the frame's u32 length).
pub const MAX_BODY_LIMIT: u64 = 1 << 30;
/// Largest lag limit, bytes or records: 2^50, so `limit * 9` cannot overflow.
pub const MAX_LAG_LIMIT: u64 = 1 << 50;
/// Largest rate, records per second.
pub const MAX_RATE: f64 = 1e9;
/// Smallest rate: one record per 100 s (a rate of 0 divides by zero).
pub const MIN_RATE: f64 = 0.01;
/// Largest bucket depth, records: integers up to it are exact in an f64.
pub const MAX_BURST: u64 = 1 << 50;
/// Largest memory budget: 1 TiB.
pub const MAX_MEMORY_BUDGET: u64 = 1 << 40;
/// Fewest connections: a producer, an exporter's long poll and a health
/// probe must be able to be served at once.
pub const MIN_CONNECTIONS: usize = 3;
/// Most connections (file descriptors are the real limit; see LimitNOFILE).
pub const MAX_CONNECTIONS: usize = 1 << 20;

/// The unit the memory budget counts in (`memory::MemoryBudget`).
const BUDGET_UNIT: u64 = 1024;

/// `key` is `value`, outside `min..=max`.
fn int(key: impl Into<ConfigKey>, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(ConfigError::OutOfRange { key: key.into(), value, min, max })
}

/// `key` is `value`, not a finite number within `min..=max` (NaN is refused).
fn float(key: impl Into<ConfigKey>, value: f64, min: f64, max: f64) -> Result<(), ConfigError> {
    if value.is_finite() && (min..=max).contains(&value) {
        return Ok(());
    }
    Err(ConfigError::NumberOutOfRange { key: key.into(), value, min, max })
}

impl From<&'static str> for ConfigKey {
    fn from(key: &'static str) -> ConfigKey {
        ConfigKey::Top(key)
    }
}

/// Widen a `usize` key for [`int`] (lossless on every supported target).
fn wide(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

impl Config {
    /// The most one ingest request can hold of `memory_budget_bytes`: a body
    /// without a declared length is charged twice its limit (the body and the
    /// frame built from it, `http::body::read`), and a gzip body twice its
    /// inflated size more (`intake::ingest`). A budget below it refuses such
    /// a request every time, whatever else is in flight. The budget counts
    /// whole KiB (`memory::MemoryBudget`: the budget rounded down, each
    /// charge rounded up), so the sum is of charges rounded up to KiB.
    pub fn largest_request_charge(&self) -> u64 {
        let kib = |bytes: u64| bytes.saturating_mul(2).div_ceil(BUDGET_UNIT).saturating_mul(BUDGET_UNIT);
        kib(self.max_body_bytes).saturating_add(kib(self.max_inflated_bytes))
    }

    /// Every numeric key within its documented range, and the relations
    /// between keys the runtime relies on.
    pub(super) fn check_ranges(&self) -> Result<(), ConfigError> {
        self.check_storage_ranges()?;
        self.check_request_ranges()?;
        self.check_lease_ranges()?;
        for tenant in &self.tenants {
            check_tenant(tenant)?;
        }
        for dest in &self.destinations {
            check_destination(dest)?;
        }
        Ok(())
    }

    fn check_storage_ranges(&self) -> Result<(), ConfigError> {
        int("shards", self.shards.into(), 1, 64)?;
        int("segment_bytes", self.segment_bytes, 64 << 10, 1 << 30)?;
        int("group_commit_linger_us", self.group_commit_linger_us, 0, 100_000)?;
        int("retention_max_age_secs", self.retention_max_age_secs, 0, 10 * 365 * 24 * 3600)?;
        float("disk_high_watermark", self.disk_high_watermark, 0.01, 1.0)?;
        int("disk_quota_bytes", self.disk_quota_bytes, 0, 1 << 60)?;
        int("maintenance_interval_ms", self.maintenance_interval_ms, 10, 60_000)?;
        int("shutdown_drain_ms", self.shutdown_drain_ms, 0, 600_000)
    }

    fn check_request_ranges(&self) -> Result<(), ConfigError> {
        int("max_inflated_bytes", self.max_inflated_bytes, 1, MAX_BODY_LIMIT)?;
        // A plain body is one frame as it is: it may not be larger than an
        // inflated one could be.
        int("max_body_bytes", self.max_body_bytes, 1, self.max_inflated_bytes)?;
        int("max_record_bytes", self.max_record_bytes, 1, self.max_inflated_bytes)?;
        int("idempotency_window_secs", self.idempotency_window_secs, 1, MAX_IDEMPOTENCY_WINDOW_SECS)?;
        int("idempotency_max_keys_per_tenant", wide(self.idempotency_max_keys_per_tenant), 1, 10_000_000)?;
        int("metrics_max_tenant_series", wide(self.metrics_max_tenant_series), 0, 1_000_000)?;
        int("retry_after_secs", self.retry_after_secs, 1, MAX_RETRY_AFTER_SECS)?;
        int("max_connections", wide(self.max_connections), wide(MIN_CONNECTIONS), wide(MAX_CONNECTIONS))?;
        // Above max_connections they are max_connections (`http::seats`).
        int("max_connections_per_tenant", wide(self.max_connections_per_tenant), 1, wide(MAX_CONNECTIONS))?;
        int("max_connections_per_peer", wide(self.max_connections_per_peer), 0, wide(MAX_CONNECTIONS))?;
        int("first_byte_timeout_ms", self.first_byte_timeout_ms, 100, 60_000)?;
        int("body_read_timeout_ms", self.body_read_timeout_ms, 100, 600_000)?;
        let least = self.largest_request_charge();
        if self.memory_budget_bytes < least {
            return Err(ConfigError::MemoryBudgetBelowOneRequest { budget: self.memory_budget_bytes, least });
        }
        int("memory_budget_bytes", self.memory_budget_bytes, least, MAX_MEMORY_BUDGET)?;
        // A share below one request's largest charge is raised to it at
        // run time (`memory::MemoryBudget::per_tenant`): no request is
        // refused for its own size alone.
        float("memory_budget_tenant_share", self.memory_budget_tenant_share, 0.001, 1.0)
    }

    fn check_lease_ranges(&self) -> Result<(), ConfigError> {
        int("lease_timeout_ms", self.lease_timeout_ms, MIN_LEASE_TIMEOUT_MS, MAX_LEASE_TIMEOUT_MS)?;
        int("max_lease_records", self.max_lease_records.into(), 1, 1_000_000)?;
        int("max_lease_bytes", self.max_lease_bytes, 1, MAX_BODY_LIMIT)?;
        int("max_long_poll_ms", self.max_long_poll_ms, 0, 300_000)
    }
}

fn check_tenant(tenant: &TenantConfig) -> Result<(), ConfigError> {
    let key = |key: &'static str| ConfigKey::Tenant { tenant: tenant.name.clone(), key };
    float(key("rate_per_sec"), tenant.rate_per_sec, MIN_RATE, MAX_RATE)?;
    int(key("burst"), tenant.burst, 1, MAX_BURST)?;
    // > 0 and finite (contract v1.2); the share takes it within 1e-6 to
    // 1e6 (`broker::fair::share`).
    float(key("weight"), tenant.weight, f64::MIN_POSITIVE, f64::MAX)?;
    match (tenant.hard_rate_per_sec, tenant.hard_burst) {
        (None, None) => Ok(()),
        (Some(rate), Some(burst)) => {
            float(key("hard_rate_per_sec"), rate, MIN_RATE, MAX_RATE)?;
            int(key("hard_burst"), burst, 1, MAX_BURST)?;
            // A full bucket answers a whole-bucket request with Retry-After
            // = ceil(hard_burst / hard_rate_per_sec), as `limiter` computes it.
            let wait = (burst as f64 / rate).ceil();
            if wait > MAX_RETRY_AFTER_SECS as f64 {
                return Err(ConfigError::HardBucketTooSlow {
                    tenant: tenant.name.clone(),
                    drain_secs: wait,
                    max_secs: MAX_RETRY_AFTER_SECS,
                });
            }
            Ok(())
        }
        _ => Err(ConfigError::HardLimitIncomplete { tenant: tenant.name.clone() }),
    }
}

fn check_destination(dest: &DestinationConfig) -> Result<(), ConfigError> {
    let key = |key: &'static str| ConfigKey::Destination { destination: dest.name.clone(), key };
    int(key("max_lag_bytes"), dest.max_lag_bytes, 1, MAX_LAG_LIMIT)?;
    int(key("max_lag_records"), dest.max_lag_records, 0, MAX_LAG_LIMIT)?;
    int(key("max_in_flight"), dest.max_in_flight.into(), 1, 65_536)?;
    if let Some(ms) = dest.lease_timeout_ms {
        int(key("lease_timeout_ms"), ms, MIN_LEASE_TIMEOUT_MS, MAX_LEASE_TIMEOUT_MS)?;
    }
    int(key("failure_threshold"), dest.failure_threshold.into(), 1, 1000)?;
    int(key("breaker_open_ms"), dest.breaker_open_ms, 0, 3_600_000)
}
