//! Issue 19, defects 10 and 11: what the one validation accepts, the
//! runtime can run with. Named regression tests for each refused example,
//! and a property test over thousands of generated configurations: every
//! documented range is exactly what `validate` accepts, and for whatever it
//! accepts, every bound the runtime divides, multiplies or adds by holds.

use api::limiter::{admit, admit_hard, Bucket, Limits, Verdict};
use api::memory::{Charge, MemoryBudget};
use config::ranges::*;
use config::*;
use proptest::prelude::*;

/// A far wall clock (2^44 ms is the year 2527): deadlines computed from it
/// must not overflow.
const FAR_NOW_MS: u64 = 1 << 44;

fn refused(edit: impl FnOnce(&mut Config), key: &str) -> String {
    let mut c = Config::development();
    edit(&mut c);
    let e = c.validate().expect_err("refused").to_string();
    assert!(e.contains(key), "the error names {key}: {e}");
    e
}

#[test]
fn config_refuses_zero_max_lease_bytes() {
    refused(|c| c.max_lease_bytes = 0, "max_lease_bytes");
}

#[test]
fn config_refuses_zero_max_connections() {
    refused(|c| c.max_connections = 0, "max_connections");
}

#[test]
fn config_refuses_zero_hard_rate_per_sec() {
    refused(
        |c| {
            c.tenants[0].hard_rate_per_sec = Some(0.0);
            c.tenants[0].hard_burst = Some(10);
        },
        "hard_rate_per_sec",
    );
}

#[test]
fn config_refuses_negative_and_nan_rates_and_bursts() {
    for bad in [-1.0, f64::NAN, f64::INFINITY, 0.0] {
        refused(|c| c.tenants[0].rate_per_sec = bad, "rate_per_sec");
        refused(
            |c| {
                c.tenants[0].hard_rate_per_sec = Some(bad);
                c.tenants[0].hard_burst = Some(10);
            },
            "hard_rate_per_sec",
        );
    }
    refused(|c| c.tenants[0].burst = 0, "burst");
    // A negative burst is not a u64: refused when parsed, naming the line.
    let text = "admin_token = \"x\"\n[[tenant]]\nname = \"a\"\ntoken = \"t\"\nrate_per_sec = 1.0\nburst = -5\n";
    let e = Config::from_toml(text).unwrap_err().to_string();
    assert!(e.contains("line 6"), "{e}");
    // A hard bucket that takes more than an hour to drain: Retry-After would not be small.
    refused(
        |c| {
            c.tenants[0].hard_rate_per_sec = Some(0.01);
            c.tenants[0].hard_burst = Some(1000);
        },
        "hard_burst",
    );
}

#[test]
fn config_refuses_an_idempotency_window_that_overflows_deadlines() {
    refused(|c| c.idempotency_window_secs = 9_223_372_036_854_775_807, "idempotency_window_secs");
    refused(|c| c.idempotency_window_secs = MAX_IDEMPOTENCY_WINDOW_SECS + 1, "idempotency_window_secs");
    refused(|c| c.lease_timeout_ms = u64::MAX, "lease_timeout_ms");
    refused(|c| c.destinations[0].lease_timeout_ms = Some(u64::MAX), "lease_timeout_ms");
    refused(|c| c.destinations[0].breaker_open_ms = u64::MAX, "breaker_open_ms");
    refused(|c| c.destinations[0].max_lag_bytes = u64::MAX, "max_lag_bytes");
}

#[test]
fn config_refuses_a_memory_budget_below_one_chunked_body() {
    let e = refused(
        |c| {
            c.max_body_bytes = 8 << 20;
            c.memory_budget_bytes = (16 << 20) - 1;
        },
        "memory_budget_bytes",
    );
    assert!(e.contains("max_body_bytes"), "{e}");
    let mut c = Config::development();
    c.memory_budget_bytes = c.largest_request_charge();
    c.validate().unwrap();
}

#[test]
fn config_refuses_other_zero_and_unbounded_values() {
    refused(|c| c.maintenance_interval_ms = 0, "maintenance_interval_ms");
    refused(|c| c.retry_after_secs = 0, "retry_after_secs");
    refused(|c| c.retry_after_secs = u64::MAX, "retry_after_secs");
    refused(|c| c.max_lease_records = 0, "max_lease_records");
    refused(|c| c.body_read_timeout_ms = 0, "body_read_timeout_ms");
    refused(|c| c.idempotency_max_keys_per_tenant = 0, "idempotency_max_keys_per_tenant");
    refused(|c| c.disk_high_watermark = f64::NAN, "disk_high_watermark");
    refused(|c| c.disk_high_watermark = 0.0, "disk_high_watermark");
    refused(|c| c.max_body_bytes = c.max_inflated_bytes + 1, "max_body_bytes");
    refused(|c| c.shards = 0, "shards");
    refused(|c| c.destinations[0].max_in_flight = 0, "max_in_flight");
}

#[test]
fn config_refuses_weak_tokens_on_a_public_address() {
    let public = |c: &mut Config| {
        c.listen = "0.0.0.0:7070".into();
        c.admin_token = "an-admin-secret-of-32-bytes-long".into();
        c.tenants[0].token = "a-tenant-secret-of-32-bytes-long".into();
        c.destinations[0].token = "an-exporter-secret-32-bytes-long".into();
    };
    let mut ok = Config::development();
    public(&mut ok);
    ok.validate().unwrap();
    // Short plain tokens, naming the key that holds them.
    let e = refused(
        |c| {
            public(c);
            c.tenants[0].token = "fifteen-bytes!!".into();
        },
        "tenant \"dev\" token",
    );
    assert!(e.contains("16 bytes") && e.contains("non-loopback"), "{e}");
    // Every shipped token, in either form.
    for (plain, key) in
        [("password", "admin_token"), ("REPLACE-ME-acme-ch-exporter-token", "destination \"dev\" token")]
    {
        let digest = format!("sha256:{}", SHIPPED_TOKEN_DIGESTS.iter().find(|d| TokenSpec_of(plain) == **d).unwrap());
        for form in [plain.to_string(), digest] {
            let e = refused(
                |c| {
                    public(c);
                    match key {
                        "admin_token" => c.admin_token = form.clone(),
                        _ => c.destinations[0].token = form.clone(),
                    }
                },
                key,
            );
            assert!(e.contains("shipped in ops/"), "{e}");
        }
    }
    // An unknown digest cannot be length-checked: accepted.
    let mut c = ok.clone();
    c.admin_token = format!("sha256:{}", "ab".repeat(32));
    c.validate().unwrap();
    // On loopback, short development tokens and shipped examples stay allowed.
    let mut c = Config::development();
    c.admin_token = "password".into();
    c.tenants[0].token = "t".into();
    c.validate().unwrap();
    c.listen = "[::1]:7070".into();
    c.validate().unwrap();
}

/// The hex digest of a plain token (what `SHIPPED_TOKEN_DIGESTS` lists).
#[allow(non_snake_case)]
fn TokenSpec_of(plain: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(plain.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn config_refuses_the_shipped_examples_on_their_public_address() {
    for (name, text) in [
        ("ops/broker.toml", include_str!("../../../../ops/broker.toml")),
        ("ops/k8s/broker.toml", include_str!("../../../../ops/k8s/broker.toml")),
    ] {
        let c = Config::from_toml(text).unwrap();
        // As shipped it holds no token (it names secret files): refused.
        let e = c.validate().expect_err(name).to_string();
        assert!(e.contains("no token"), "{name}: {e}");
        // A secret file holding a token once shipped in ops/: refused on
        // the public address, naming the key.
        let mut shipped = c.clone();
        shipped.admin_file_tokens = vec![format!("sha256:{}", SHIPPED_TOKEN_DIGESTS[0])];
        for (i, t) in shipped.tenants.iter_mut().enumerate() {
            t.file_tokens = vec![format!("tenant-{i}-secret-of-32-bytes-long!!")];
        }
        for (i, d) in shipped.destinations.iter_mut().enumerate() {
            d.file_tokens = vec![format!("exporter-{i}-secret-of-32-bytes-long")];
        }
        let e = shipped.validate().expect_err(name).to_string();
        assert!(e.contains("shipped in ops/") && e.contains("admin_token"), "{name}: {e}");
        // The same file with every listener on loopback runs (a try-out on
        // one host); one public listener is enough to refuse it.
        let mut local = shipped.clone();
        local.listen = "127.0.0.1:7070".into();
        local.admin_listen = Some("127.0.0.1:7071".into());
        local.otlp_grpc_listen = Some("127.0.0.1:4317".into());
        local.validate().unwrap_or_else(|e| panic!("{name} on loopback: {e}"));
    }
    // Every listed digest is well-formed.
    for d in SHIPPED_TOKEN_DIGESTS {
        assert!(is_shipped_token(&format!("sha256:{d}")), "{d}");
    }
}

/// Draws configuration values from seeds: within each key's documented
/// range (edges often), or — for the one key chosen to be corrupted — just
/// outside it.
struct Gen<'a> {
    seeds: &'a [u64],
    corrupt: Option<usize>,
    next: usize,
    corrupted: Option<&'static str>,
}

fn pick_in(s: u64, lo: u64, hi: u64) -> u64 {
    let hi = hi.max(lo);
    match s % 5 {
        0 => lo,
        1 => hi,
        _ => {
            let bits = (s >> 3) % 65;
            let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
            let r = (s >> 9).wrapping_mul(0x9E37_79B9_7F4A_7C15) & mask;
            let span = hi - lo;
            if span == u64::MAX {
                r
            } else {
                lo + r % (span + 1)
            }
        }
    }
}

impl Gen<'_> {
    fn seed(&mut self) -> (usize, u64) {
        let i = self.next;
        self.next += 1;
        (i, self.seeds[i % self.seeds.len()].rotate_left(i as u32))
    }

    fn int(&mut self, key: &'static str, lo: u64, hi: u64) -> u64 {
        let (i, s) = self.seed();
        if self.corrupt == Some(i) {
            if hi < u64::MAX && (s & 1 == 0 || lo == 0) {
                self.corrupted = Some(key);
                return hi.saturating_add(1 + (s >> 1) % 1000);
            }
            if lo > 0 {
                self.corrupted = Some(key);
                return lo - 1 - (s >> 1) % lo;
            }
        }
        pick_in(s, lo, hi)
    }

    fn float(&mut self, key: &'static str, lo: f64, hi: f64) -> f64 {
        let (i, s) = self.seed();
        if self.corrupt == Some(i) {
            self.corrupted = Some(key);
            return [f64::NAN, -1.0, 0.0, f64::INFINITY, f64::NEG_INFINITY, hi * 2.0, lo / 2.0][(s % 7) as usize];
        }
        let u = (s >> 11) as f64 / (1u64 << 53) as f64;
        match s % 5 {
            0 => lo,
            1 => hi,
            _ => (lo * (hi / lo).powf(u)).clamp(lo, hi),
        }
    }
}

/// A configuration from `seeds`, with at most the `corrupt`-th key drawn
/// out of its range; and the key that was.
fn generate(seeds: &[u64], corrupt: Option<usize>) -> (Config, Option<&'static str>) {
    let mut g = Gen { seeds, corrupt, next: 0, corrupted: None };
    let mut c = Config::development();
    c.shards = g.int("shards", 1, 64) as u16;
    c.segment_bytes = g.int("segment_bytes", 64 << 10, 1 << 30);
    c.group_commit_linger_us = g.int("group_commit_linger_us", 0, 100_000);
    c.retention_max_age_secs = g.int("retention_max_age_secs", 0, 10 * 365 * 24 * 3600);
    c.disk_high_watermark = g.float("disk_high_watermark", 0.01, 1.0);
    c.disk_quota_bytes = g.int("disk_quota_bytes", 0, 1 << 60);
    c.maintenance_interval_ms = g.int("maintenance_interval_ms", 10, 60_000);
    c.shutdown_drain_ms = g.int("shutdown_drain_ms", 0, 600_000);
    c.max_inflated_bytes = g.int("max_inflated_bytes", 1, MAX_BODY_LIMIT);
    c.max_body_bytes = g.int("max_body_bytes", 1, c.max_inflated_bytes);
    c.max_record_bytes = g.int("max_record_bytes", 1, c.max_inflated_bytes);
    c.idempotency_window_secs = g.int("idempotency_window_secs", 1, MAX_IDEMPOTENCY_WINDOW_SECS);
    c.idempotency_max_keys_per_tenant = g.int("idempotency_max_keys_per_tenant", 1, 10_000_000) as usize;
    c.retry_after_secs = g.int("retry_after_secs", 1, MAX_RETRY_AFTER_SECS);
    c.max_connections = g.int("max_connections", MIN_CONNECTIONS as u64, MAX_CONNECTIONS as u64) as usize;
    c.max_connections_per_tenant = g.int("max_connections_per_tenant", 1, MAX_CONNECTIONS as u64) as usize;
    c.max_connections_per_peer = g.int("max_connections_per_peer", 0, MAX_CONNECTIONS as u64) as usize;
    c.first_byte_timeout_ms = g.int("first_byte_timeout_ms", 100, 60_000);
    c.body_read_timeout_ms = g.int("body_read_timeout_ms", 100, 600_000);
    c.memory_budget_bytes = g.int("memory_budget_bytes", c.largest_request_charge(), MAX_MEMORY_BUDGET);
    c.memory_budget_tenant_share = g.float("memory_budget_tenant_share", 0.001, 1.0);
    c.lease_timeout_ms = g.int("lease_timeout_ms", MIN_LEASE_TIMEOUT_MS, MAX_LEASE_TIMEOUT_MS);
    c.max_lease_records = g.int("max_lease_records", 1, 1_000_000) as u32;
    c.max_lease_bytes = g.int("max_lease_bytes", 1, MAX_BODY_LIMIT);
    c.max_long_poll_ms = g.int("max_long_poll_ms", 0, 300_000);
    let t = &mut c.tenants[0];
    t.rate_per_sec = g.float("rate_per_sec", MIN_RATE, MAX_RATE);
    t.burst = g.int("burst", 1, MAX_BURST);
    if seeds[0] & 1 == 1 {
        let rate = g.float("hard_rate_per_sec", MIN_RATE, MAX_RATE);
        let mut most = if rate.is_finite() && rate > 0.0 { (rate * MAX_RETRY_AFTER_SECS as f64) as u64 } else { 1 };
        // The largest depth whose drain time, rounded as `limiter` does, is allowed.
        while most > 1 && (most as f64 / rate).ceil() > MAX_RETRY_AFTER_SECS as f64 {
            most -= 1;
        }
        t.hard_rate_per_sec = Some(rate);
        t.hard_burst = Some(g.int("hard_burst", 1, most.clamp(1, MAX_BURST)));
    }
    let d = &mut c.destinations[0];
    d.max_lag_bytes = g.int("max_lag_bytes", 1, MAX_LAG_LIMIT);
    d.max_lag_records = g.int("max_lag_records", 0, MAX_LAG_LIMIT);
    d.max_in_flight = g.int("max_in_flight", 1, 65_536) as u32;
    if seeds[0] & 2 == 2 {
        d.lease_timeout_ms = Some(g.int("lease_timeout_ms", MIN_LEASE_TIMEOUT_MS, MAX_LEASE_TIMEOUT_MS));
    }
    d.failure_threshold = g.int("failure_threshold", 1, 1000) as u32;
    d.breaker_open_ms = g.int("breaker_open_ms", 0, 3_600_000);
    (c, g.corrupted)
}

/// Every bound the runtime relies on, checked with the runtime's own code
/// where it is reachable (limiter, memory budget) and its arithmetic
/// elsewhere.
fn assert_runtime_bounds(v: &ValidConfig) {
    let t = v.timing;
    // Deadlines: now + window / lease / breaker wait, from a far clock.
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).expect("fits u64");
    assert!(FAR_NOW_MS.checked_add(ms(t.idempotency_window)).is_some());
    for d in &v.destinations {
        assert!(FAR_NOW_MS.checked_add(ms(v.destination_lease(d))).is_some());
        assert!(FAR_NOW_MS.checked_add(d.breaker_open_ms).is_some());
        // Lag targets: limit * 9 / 10.
        assert!(d.max_lag_bytes.checked_mul(9).is_some() && d.max_lag_records.checked_mul(9).is_some());
        assert!(d.max_in_flight >= 1 && d.failure_threshold >= 1);
    }
    for d in [t.idempotency_window, t.retry_after, t.max_long_poll, t.body_read_timeout, t.shutdown_drain] {
        assert!(std::time::Instant::now().checked_add(d).is_some());
    }
    // tokio::time::interval panics on a zero period; a body needs time.
    assert!(!t.maintenance_interval.is_zero() && !t.body_read_timeout.is_zero());
    // Lease limits: `clamp(1, max)` panics when max < 1.
    assert_eq!(u64::MAX.clamp(1, v.max_lease_bytes), v.max_lease_bytes);
    assert_eq!(u32::MAX.clamp(1, v.max_lease_records), v.max_lease_records);
    // One request is one WAL frame: its length fits the frame header.
    assert!(u32::try_from(v.max_inflated_bytes + (1 << 20)).is_ok());
    assert!(v.shards >= 1 && v.max_connections >= 1);
    // Retry-After from the configuration: finite and small.
    assert!((1..=MAX_RETRY_AFTER_SECS).contains(&t.retry_after.as_secs()));
    // The largest request fits an empty memory budget.
    let budget = MemoryBudget::new(v.memory_budget_bytes);
    let mut charge = Charge::default();
    budget.charge(&mut charge, v.max_body_bytes * 2).expect("one chunked body fits");
    budget.charge(&mut charge, v.max_inflated_bytes * 2).expect("and its inflated form");
    // And within one tenant's share of it.
    let one = v.largest_request_charge();
    let shared = MemoryBudget::per_tenant(v.memory_budget_bytes, v.memory_budget_tenant_share, one);
    let mut charge = Charge::default();
    let tenant = api::memory::TenantHeld::default();
    shared
        .charge_for(Some(&tenant), &mut charge, v.max_body_bytes * 2)
        .expect("one chunked body fits a tenant's share");
    shared.charge_for(Some(&tenant), &mut charge, v.max_inflated_bytes * 2).expect("and its inflated form");
    for tenant in &v.tenants {
        assert!(tenant.rate_per_sec.is_finite() && tenant.rate_per_sec > 0.0);
        let soft = Limits { rate_per_sec: tenant.rate_per_sec, burst: tenant.burst as f64 };
        let (b, _) = admit(Bucket { level: soft.burst, last_ms: 0 }, FAR_NOW_MS, 1, soft);
        assert!(b.level.is_finite() && b.level >= 0.0);
        if let (Some(rate), Some(burst)) = (tenant.hard_rate_per_sec, tenant.hard_burst) {
            let hard = Limits { rate_per_sec: rate, burst: burst as f64 };
            // A full bucket, asked for one record and for a whole bucket.
            for n in [1, burst] {
                let full = Bucket { level: hard.burst, last_ms: FAR_NOW_MS };
                match admit_hard(full, FAR_NOW_MS, n, hard).1 {
                    Verdict::Reject { retry_after_secs } => {
                        assert!((1..=MAX_RETRY_AFTER_SECS).contains(&retry_after_secs), "{retry_after_secs}")
                    }
                    other => panic!("a full hard bucket admitted {n}: {other:?}"),
                }
            }
        }
    }
}

/// Keys drawn per configuration (an upper bound; see `generate`).
const KNOBS: usize = 34;

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Drawn within every range, a configuration is accepted and the
    /// runtime's bounds hold; with one key drawn outside its range, it is
    /// refused with an error naming that key.
    #[test]
    fn config_validation_accepts_exactly_the_documented_ranges(
        seeds in proptest::collection::vec(any::<u64>(), KNOBS),
        corrupt in proptest::option::weighted(0.5, 0..KNOBS),
    ) {
        let (c, corrupted) = generate(&seeds, corrupt);
        match (c.validate(), corrupted) {
            (Ok(v), None) => assert_runtime_bounds(&v),
            (Err(e), Some(key)) => prop_assert!(e.to_string().contains(key), "{key} was out of range; the error: {}", e),
            (Ok(_), Some(key)) => prop_assert!(false, "{key} out of range was accepted: {c:?}"),
            (Err(e), None) => prop_assert!(false, "a configuration within every range was refused: {}\n{c:?}", e),
        }
    }
}
