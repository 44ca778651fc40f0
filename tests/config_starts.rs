//! Issue 19, defect 10: generated valid configurations, started for real.
//!
//! A deterministic generator draws configurations within the documented
//! ranges (docs/config.md; small segments so starts are quick). Each is
//! started as a real broker, one at a time, and must: become ready; answer
//! ingest — plain, chunked and an idempotent retry — with 200 or a refusal
//! the configuration explains (429 with its reason, 507, or 413 when the
//! body is over a configured limit); give an exporter a lease and take its
//! commit; stop on SIGTERM with exit 0; and never answer 500, panic or hang
//! (every wait is bounded). `WEIR_CONFIG_STARTS=N` runs N configurations
//! (default 50; docs/testing.md).

mod common;

use common::{answer, spawn_broker_logging, wait_exit, Answer};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

/// xorshift64*: the same configurations on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// In `lo..=hi`, log-uniform (small and large values alike), edges often.
    fn int(&mut self, lo: u64, hi: u64) -> u64 {
        match self.next() % 6 {
            0 => lo,
            1 => hi,
            _ => {
                let (l, h) = ((lo.max(1) as f64).ln(), (hi.max(1) as f64).ln());
                let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
                ((l + (h - l) * u).exp() as u64).clamp(lo, hi)
            }
        }
    }
    fn float(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (lo * (hi / lo).powf(u)).clamp(lo, hi)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// What a generated configuration says ingest may answer.
struct Limits {
    max_body: u64,
    max_inflated: u64,
    max_record: u64,
    /// `on_lag_limit = "drop_oldest"`: records over the lag limit may be
    /// skipped before or while they are leased (the lease then answers 404
    /// `lease_not_found`), as configured.
    drop_oldest: bool,
}

/// One configuration within every documented range.
fn generate(seed: u64, data_dir: &Path) -> (String, Limits) {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let inflated = r.int(64, 8 << 20);
    let body = if r.chance(80) { r.int(256.min(inflated), inflated) } else { r.int(1, inflated) };
    let record = if r.chance(80) { r.int(64.min(inflated), inflated) } else { r.int(1, inflated) };
    let charge = (body * 2).div_ceil(1024) * 1024 + (inflated * 2).div_ceil(1024) * 1024;
    let rate = r.float(0.01, 1e6);
    let hard = if r.chance(40) {
        let hard_rate = r.float(0.01, 1e6);
        let mut most = (hard_rate * 3600.0) as u64;
        while most > 1 && (most as f64 / hard_rate).ceil() > 3600.0 {
            most -= 1;
        }
        format!("hard_rate_per_sec = {hard_rate:?}\nhard_burst = {}\n", r.int(1, most.max(1)))
    } else {
        String::new()
    };
    let dest_lease =
        if r.chance(30) { format!("lease_timeout_ms = {}\n", r.int(1000, 86_400_000)) } else { String::new() };
    let drop_oldest = r.chance(50);
    let text = format!(
        r#"listen = "127.0.0.1:0"
data_dir = "{data}"
admin_token = "admin-t"
shards = {shards}
segment_bytes = {segment}
preallocate = {prealloc}
group_commit_linger_us = {linger}
retention_max_age_secs = {retention}
max_body_bytes = {body}
max_inflated_bytes = {inflated}
max_record_bytes = {record}
idempotency_window_secs = {window}
disk_high_watermark = {watermark:?}
disk_quota_bytes = {quota}
retry_after_secs = {retry}
lease_timeout_ms = {lease}
max_lease_records = {lease_records}
max_lease_bytes = {lease_bytes}
max_long_poll_ms = {long_poll}
maintenance_interval_ms = {maint}
max_connections = {conns}
memory_budget_bytes = {budget}
memory_budget_tenant_share = {share:?}
body_read_timeout_ms = {body_timeout}
shutdown_drain_ms = {drain}
idempotency_max_keys_per_tenant = {keys}

[[tenant]]
name = "acme"
token = "acme-t"
rate_per_sec = {rate:?}
burst = {burst}
priority = "{priority}"
{hard}
[[topic]]
name = "events"

[[destination]]
name = "d"
topics = ["events"]
token = "d-t"
max_lag_bytes = {lag_bytes}
max_lag_records = {lag_records}
on_lag_limit = "{on_lag}"
max_in_flight = {in_flight}
failure_threshold = {threshold}
breaker_open_ms = {open_ms}
{dest_lease}"#,
        data = data_dir.display(),
        shards = r.int(1, 4),
        segment = r.int(64 << 10, 1 << 20),
        prealloc = r.chance(50),
        linger = r.int(0, 100_000),
        retention = r.int(0, 3600),
        window = r.int(1, 604_800),
        watermark = if r.chance(75) { 1.0 } else { r.float(0.01, 1.0) },
        quota = if r.chance(80) { 0 } else { r.int(1, 64 << 20) },
        retry = r.int(1, 3600),
        lease = r.int(1000, 86_400_000),
        lease_records = r.int(1, 5000),
        lease_bytes = r.int(1, 4 << 20),
        long_poll = r.int(0, 300_000),
        maint = r.int(10, 1000),
        // The harness holds at most two connections at once, plus one closing.
        conns = r.int(4, 64),
        budget = r.int(charge, charge * 4),
        share = r.float(0.001, 1.0),
        body_timeout = r.int(100, 30_000),
        drain = r.int(0, 5_000),
        keys = r.int(1, 100_000),
        burst = r.int(1, 1 << 20),
        priority = ["high", "normal", "low"][(r.next() % 3) as usize],
        lag_bytes = r.int(1, 1 << 30),
        lag_records = if r.chance(50) { 0 } else { r.int(1, 1000) },
        on_lag = if drop_oldest { "drop_oldest" } else { "backpressure" },
        in_flight = r.int(1, 64),
        threshold = r.int(1, 1000),
        open_ms = r.int(0, 3_600_000),
    );
    (text, Limits { max_body: body, max_inflated: inflated, max_record: record, drop_oldest })
}

/// A broker child, killed and reaped on drop (a failed assertion included).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const BODY: &str = "{\"n\":1}\n{\"n\":2}\n";

/// Is `a` an ingest answer this configuration explains?
fn explained(a: &Answer, limits: &Limits, sent: usize, what: &str, cfg: &str) {
    let over_limit = sent as u64 > limits.max_body.min(limits.max_inflated) || 8 > limits.max_record;
    let ok = match (a.status, a.code()) {
        (200, _) => true,
        (429, "rate_limited" | "backpressure") => a.retry_after.is_some(),
        (507, "insufficient_storage") => true,
        (413, "payload_too_large") => over_limit,
        _ => false,
    };
    assert!(ok, "{what}: an answer the configuration does not explain: {a:?}\n{cfg}");
    if let Some(ra) = &a.retry_after {
        let secs: u64 = ra.parse().unwrap_or_else(|_| panic!("{what}: Retry-After {ra:?}\n{cfg}"));
        assert!((1..=3600).contains(&secs), "{what}: Retry-After {secs}\n{cfg}");
    }
}

/// A chunked request (no Content-Length: charged 2 x max_body_bytes),
/// on its own connection, answered within a bound. Returns the status.
fn chunked_ingest(url: &str, body: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let req = format!(
        "POST /v1/topics/events/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer acme-t\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status =
        out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no answer: {out:?}"));
    (status, out)
}

async fn run_one(seed: u64, dir: &Path) {
    let data = dir.join(format!("data-{seed}"));
    let (cfg, limits) = generate(seed, &data);
    let path = dir.join(format!("broker-{seed}.toml"));
    std::fs::write(&path, &cfg).expect("write config");
    let log_path = dir.join(format!("broker-{seed}.log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let (child, url) = spawn_broker_logging(&path, Stdio::from(log), "warn");
    let mut proc = Proc(child);
    let c = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let mut ready = false;
    for _ in 0..300 {
        if c.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "seed {seed}: not ready within 6 s\n{cfg}");
    let post = |path: String, token: &'static str, body: String| {
        c.post(format!("{url}{path}")).bearer_auth(token).header("content-type", "application/x-ndjson").body(body)
    };
    // Plain, then the same Idempotency-Key again: the same answer.
    let first = answer(
        post("/v1/topics/events/records".into(), "acme-t", BODY.into())
            .header("idempotency-key", "k1")
            .send()
            .await
            .expect("ingest"),
    )
    .await;
    explained(&first, &limits, BODY.len(), &format!("seed {seed} ingest"), &cfg);
    let again = answer(
        post("/v1/topics/events/records".into(), "acme-t", BODY.into())
            .header("idempotency-key", "k1")
            .send()
            .await
            .expect("ingest"),
    )
    .await;
    explained(&again, &limits, BODY.len(), &format!("seed {seed} retry"), &cfg);
    if first.status == 200 && again.status == 200 {
        assert_eq!(first.json["first_offset"], again.json["first_offset"], "seed {seed}: a retry appended\n{cfg}");
    }
    let status = tokio::task::spawn_blocking({
        let url = url.clone();
        move || chunked_ingest(&url, BODY)
    })
    .await
    .expect("chunked");
    let (status, text) = status;
    assert!([200, 413, 429, 507].contains(&status), "seed {seed}: chunked ingest answered {text}\n{cfg}");
    // An exporter's acquire (bounded long poll) and commit.
    let lease = answer(
        post("/v1/destinations/d/leases".into(), "d-t", r#"{"wait_ms":500}"#.into()).send().await.expect("acquire"),
    )
    .await;
    assert_eq!(lease.status, 200, "seed {seed}: acquire: {lease:?}\n{cfg}");
    match lease.json["lease"]["id"].as_str() {
        Some(id) => {
            let commit = answer(
                post(format!("/v1/destinations/d/leases/{id}/commit"), "d-t", "{}".into())
                    .send()
                    .await
                    .expect("commit"),
            )
            .await;
            let dropped = limits.drop_oldest && commit.status == 404 && commit.code() == "lease_not_found";
            assert!(commit.status == 200 || dropped, "seed {seed}: commit: {commit:?}\n{cfg}");
        }
        None => assert!(
            first.status != 200 || limits.drop_oldest,
            "seed {seed}: records were stored but no lease given: {lease:?}\n{cfg}"
        ),
    }
    drop(c);
    unsafe { libc::kill(proc.0.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut proc.0, Duration::from_secs(30)), Some(0), "seed {seed}: SIGTERM\n{cfg}");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(!log.contains("panicked"), "seed {seed}: the broker panicked:\n{log}\n{cfg}");
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_generated_valid_configs_start_serve_and_stop() {
    let n: u64 = std::env::var("WEIR_CONFIG_STARTS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let tmp = tempfile::tempdir().expect("tempdir");
    // Every generated file passes the one validation before it is started.
    for seed in 0..n {
        let (cfg, _) = generate(seed, Path::new("/tmp/x"));
        let parsed = config::Config::from_toml(&cfg).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{cfg}"));
        parsed.validate().unwrap_or_else(|e| panic!("seed {seed}: {e}\n{cfg}"));
    }
    for seed in 0..n {
        run_one(seed, tmp.path()).await;
    }
}
