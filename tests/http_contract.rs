//! The contract's HTTP table, one test per row, against a real broker
//! process on an ephemeral port; plus roles, idempotency, demotion and the
//! process contract (flags, exit codes, SIGTERM).

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

const EXTRA: &str = r#"max_body_bytes = 4096
max_inflated_bytes = 8192
max_record_bytes = 1024
retry_after_secs = 2

[[tenant]]
name = "limited"
token = "limited-t"
rate_per_sec = 1000.0
burst = 1000
hard_rate_per_sec = 1.0
hard_burst = 3

[[tenant]]
name = "slowpoke"
token = "slowpoke-t"
rate_per_sec = 1.0
burst = 2

[[tenant]]
name = "lagger"
token = "lagger-t"
rate_per_sec = 1000.0
burst = 1000

[[destination]]
name = "stuck"
topics = ["events"]
tenants = ["lagger"]
token = "stuck-t"
max_lag_records = 3

[[destination]]
name = "main"
topics = ["events"]
tenants = ["acme", "globex"]
token = "main-t"
"#;

#[tokio::test]
async fn accepted_batch_answers_with_count_priority_lane_and_first_offset() {
    let b = BrokerProc::start(EXTRA);
    let a = ingest(&b.url, "acme-t", "events", "{\"a\":1}\n{\"b\":2}\n").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json["accepted"], 2);
    assert_eq!(a.json["priority"], "normal");
    assert!(a.json["lane"].as_str().unwrap().starts_with("normal/"));
    let second = ingest(&b.url, "acme-t", "events", "{\"c\":3}").await;
    assert_eq!(second.json["first_offset"].as_u64(), Some(a.json["first_offset"].as_u64().unwrap() + 2));
    assert_eq!(
        metric(&b.url, "weir_ingest_records_total{priority=\"normal\",tenant=\"acme\",topic=\"events\"}").await,
        3.0
    );
}

#[tokio::test]
async fn invalid_json_line_is_400_naming_the_line() {
    let b = BrokerProc::start(EXTRA);
    let a = ingest(&b.url, "acme-t", "events", "{\"ok\":1}\n{\"ok\":2}\nnot json\n").await;
    a.assert_error(400, "invalid_body", false);
    assert!(a.message().contains("line 3"), "{a:?}");
    ingest(&b.url, "acme-t", "events", "\n \n").await.assert_error(400, "invalid_body", false);
}

#[tokio::test]
async fn missing_or_unknown_token_is_401() {
    let b = BrokerProc::start(EXTRA);
    let no_token = client().post(format!("{}/v1/topics/events/records", b.url)).body("{}").send().await.unwrap();
    answer(no_token).await.assert_error(401, "unauthorized", false);
    ingest(&b.url, "who-knows", "events", "{}").await.assert_error(401, "unauthorized", false);
}

#[tokio::test]
async fn tokens_outside_their_role_are_403() {
    let b = BrokerProc::start(EXTRA);
    // Exporter and admin tokens cannot ingest.
    ingest(&b.url, "main-t", "events", "{}").await.assert_error(403, "forbidden", false);
    ingest(&b.url, "admin-t", "events", "{}").await.assert_error(403, "forbidden", false);
    // A tenant token cannot use admin or lease endpoints.
    let c = client();
    let admin = c.get(format!("{}/v1/admin/destinations", b.url)).bearer_auth("acme-t").send().await.unwrap();
    answer(admin).await.assert_error(403, "forbidden", false);
    let lease = c.post(format!("{}/v1/destinations/main/leases", b.url)).bearer_auth("acme-t").send().await.unwrap();
    answer(lease).await.assert_error(403, "forbidden", false);
    // An exporter token works for its own destination only, and not for admin.
    let other = c.post(format!("{}/v1/destinations/stuck/leases", b.url)).bearer_auth("main-t").send().await.unwrap();
    answer(other).await.assert_error(403, "forbidden", false);
    let admin =
        c.post(format!("{}/v1/admin/destinations/main/pause", b.url)).bearer_auth("main-t").send().await.unwrap();
    answer(admin).await.assert_error(403, "forbidden", false);
    // And no token on admin endpoints is 401.
    let none = c.get(format!("{}/v1/admin/destinations", b.url)).send().await.unwrap();
    answer(none).await.assert_error(401, "unauthorized", false);
}

#[tokio::test]
async fn unknown_topic_is_404() {
    let b = BrokerProc::start(EXTRA);
    let a = ingest(&b.url, "acme-t", "nope", "{}").await;
    a.assert_error(404, "unknown_topic", false);
    assert!(a.message().contains("nope"));
}

#[tokio::test]
async fn ingest_answers_the_same_by_the_short_way_and_through_the_router() {
    // Plain topic paths skip the router; a percent-encoded topic, an empty
    // one and other methods go through it. The answers must not differ.
    let b = BrokerProc::start(EXTRA);
    let plain = ingest(&b.url, "acme-t", "events", "{\"a\":1}").await;
    assert_eq!(plain.status, 200, "{plain:?}");
    let encoded = ingest(&b.url, "acme-t", "ev%65nts", "{\"a\":2}").await;
    assert_eq!(encoded.status, 200, "{encoded:?}");
    assert_eq!(encoded.json["lane"], plain.json["lane"]);
    assert_eq!(encoded.json["first_offset"].as_u64(), Some(plain.json["first_offset"].as_u64().unwrap() + 1));
    ingest(&b.url, "acme-t", "n%6Fpe", "{}").await.assert_error(404, "unknown_topic", false);
    ingest(&b.url, "acme-t", "", "{}").await.assert_error(404, "unknown_topic", false);
    let get = client().get(format!("{}/v1/topics/events/records", b.url)).bearer_auth("acme-t").send().await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(
        metric(&b.url, "weir_ingest_records_total{priority=\"normal\",tenant=\"acme\",topic=\"events\"}").await,
        2.0
    );
}

#[tokio::test]
async fn oversized_body_inflated_body_or_record_is_413() {
    let b = BrokerProc::start(EXTRA);
    let big_body: String = (0..100).map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(40))).collect();
    assert!(big_body.len() > 4096);
    ingest(&b.url, "acme-t", "events", big_body).await.assert_error(413, "payload_too_large", false);

    let big_record = format!("{{\"pad\":\"{}\"}}", "y".repeat(2000));
    let a = ingest(&b.url, "acme-t", "events", big_record).await;
    a.assert_error(413, "payload_too_large", false);
    assert!(a.message().contains("record 1"), "{a:?}");

    // 20 KB of small records compress under the body limit but inflate over the cap.
    let lines: String = (0..400).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(lines.repeat(5).as_bytes()).unwrap();
    let gz = enc.finish().unwrap();
    assert!(gz.len() < 4096);
    let resp = client()
        .post(format!("{}/v1/topics/events/records", b.url))
        .bearer_auth("acme-t")
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(gz)
        .send()
        .await
        .unwrap();
    answer(resp).await.assert_error(413, "payload_too_large", false);
}

#[tokio::test]
async fn gzip_body_within_the_cap_is_accepted() {
    let b = BrokerProc::start(EXTRA);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b"{\"z\":1}\n{\"z\":2}\n").unwrap();
    let resp = client()
        .post(format!("{}/v1/topics/events/records", b.url))
        .bearer_auth("acme-t")
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(enc.finish().unwrap())
        .send()
        .await
        .unwrap();
    let a = answer(resp).await;
    assert_eq!((a.status, a.json["accepted"].as_u64()), (200, Some(2)), "{a:?}");
}

#[tokio::test]
async fn wrong_content_type_or_encoding_is_415() {
    let b = BrokerProc::start(EXTRA);
    let c = client();
    let url = format!("{}/v1/topics/events/records", b.url);
    let plain =
        c.post(&url).bearer_auth("acme-t").header("content-type", "text/plain").body("{}").send().await.unwrap();
    answer(plain).await.assert_error(415, "unsupported_media_type", false);
    let br = c
        .post(&url)
        .bearer_auth("acme-t")
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "br")
        .body("{}")
        .send()
        .await
        .unwrap();
    answer(br).await.assert_error(415, "unsupported_media_type", false);
    let bin = c
        .post(&url)
        .bearer_auth("acme-t")
        .header("content-type", "application/octet-stream")
        .body(vec![0u8, 159, 146, 150])
        .send()
        .await
        .unwrap();
    assert_eq!(answer(bin).await.json["accepted"], 1, "octet-stream: the body is one record");
}

#[tokio::test]
async fn application_json_is_one_record_per_array_element_or_one_record() {
    let b = BrokerProc::start(EXTRA);
    let c = client();
    let url = format!("{}/v1/topics/events/records", b.url);
    let post = |body: &'static str| {
        c.post(&url).bearer_auth("acme-t").header("content-type", "application/json; charset=utf-8").body(body).send()
    };
    let array = answer(post("[{\"a\":1}, [2], \"three\"]").await.unwrap()).await;
    assert_eq!(array.json["accepted"], 3, "{array:?}");
    let object = answer(post("{\"a\": [1, 2, 3]}").await.unwrap()).await;
    assert_eq!(object.json["accepted"], 1, "{object:?}");
    answer(post("[]").await.unwrap()).await.assert_error(400, "invalid_body", false);
    answer(post("{\"a\": ").await.unwrap()).await.assert_error(400, "invalid_body", false);
}

#[tokio::test]
async fn tenant_over_its_hard_limit_gets_429_rate_limited_with_retry_after() {
    let b = BrokerProc::start(EXTRA);
    let a = ingest(&b.url, "limited-t", "events", "{}\n{}\n{}").await;
    assert_eq!(a.status, 200, "{a:?}");
    let a = ingest(&b.url, "limited-t", "events", "{}\n{}").await;
    a.assert_error(429, "rate_limited", true);
    // Two records need two seconds to drain at 1/s.
    assert_eq!(a.retry_after.as_deref(), Some("2"));
    // Other tenants are not affected.
    assert_eq!(ingest(&b.url, "acme-t", "events", "{}").await.status, 200);
}

#[tokio::test]
async fn tenant_over_its_rate_is_demoted_to_low_not_rejected() {
    let b = BrokerProc::start(EXTRA);
    let a = ingest(&b.url, "slowpoke-t", "events", "{}\n{}").await;
    assert_eq!(a.json["priority"], "normal", "{a:?}");
    let a = ingest(&b.url, "slowpoke-t", "events", "{}\n{}\n{}").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["priority"], "low", "{a:?}");
    assert!(a.json["lane"].as_str().unwrap().starts_with("low/"));
    let demoted = metric(&b.url, "weir_demoted_records_total{reason=\"over_rate\",tenant=\"slowpoke\"}").await;
    assert_eq!(demoted, 3.0);
}

#[tokio::test]
async fn lagging_destination_gives_429_backpressure_only_to_its_own_tenants() {
    let b = BrokerProc::start(EXTRA);
    for _ in 0..2 {
        assert_eq!(ingest(&b.url, "lagger-t", "events", "{}\n{}\n{}").await.status, 200);
    }
    let url = b.url.clone();
    wait_until("destination stuck over its lag limit", Duration::from_secs(10), || {
        let url = url.clone();
        async move { destination(&url, "stuck").await["backpressure"] == true }
    })
    .await;
    let a = ingest(&b.url, "lagger-t", "events", "{}").await;
    a.assert_error(429, "backpressure", true);
    assert!(a.message().contains("stuck"), "the message names the destination: {a:?}");
    assert_eq!(a.retry_after.as_deref(), Some("2"));
    // acme's data goes to `main`, not to `stuck`: no 429 for it.
    for _ in 0..5 {
        assert_eq!(ingest(&b.url, "acme-t", "events", "{}").await.status, 200);
    }
    assert!(metric(&b.url, "weir_backpressure_shed_total{reason=\"destination_lag\",tenant=\"lagger\"}").await >= 1.0);
}

#[tokio::test]
async fn disk_quota_reached_is_507() {
    let b = BrokerProc::start("disk_quota_bytes = 1\n");
    let url = b.url.clone();
    // The first maintenance pass sees the segment headers over a 1-byte quota.
    wait_until("quota noticed", Duration::from_secs(10), || {
        let url = url.clone();
        async move { ingest(&url, "acme-t", "events", "{}").await.status == 507 }
    })
    .await;
    let a = ingest(&b.url, "acme-t", "events", "{}").await;
    a.assert_error(507, "insufficient_storage", false);
}

#[tokio::test]
async fn idempotency_key_replays_the_first_answer_even_across_a_restart() {
    let mut b = BrokerProc::start(EXTRA);
    let send = |url: String| async move {
        let resp = client()
            .post(format!("{url}/v1/topics/events/records"))
            .bearer_auth("acme-t")
            .header("content-type", "application/x-ndjson")
            .header("idempotency-key", "order-42")
            .body("{\"order\":42}\n{\"line\":2}")
            .send()
            .await
            .unwrap();
        answer(resp).await
    };
    let first = send(b.url.clone()).await;
    assert_eq!(first.status, 200);
    let again = send(b.url.clone()).await;
    assert_eq!(again.json, first.json);
    b.restart();
    let after_restart = send(b.url.clone()).await;
    assert_eq!(after_restart.json, first.json);
    let (code, out, _) = run_admin(&["dump", "--data-dir", b.data_dir.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().filter(|l| l.contains("order")).count(), 1, "appended once: {out}");
}

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let b = BrokerProc::start(EXTRA);
    let c = client();
    assert_eq!(c.get(format!("{}/healthz", b.url)).send().await.unwrap().status(), 200);
    assert_eq!(c.get(format!("{}/readyz", b.url)).send().await.unwrap().status(), 200);
    ingest(&b.url, "acme-t", "events", "{}").await;
    let text = c.get(format!("{}/metrics", b.url)).send().await.unwrap().text().await.unwrap();
    for name in [
        "weir_ingest_requests_total",
        "weir_ingest_records_total",
        "weir_wal_commit_seconds",
        "weir_wal_fsyncs_total",
        "weir_destination_lag_records",
        "weir_destination_breaker_state",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
}

#[test]
fn sigterm_finishes_and_exits_zero() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut b = BrokerProc::start(EXTRA);
    let url = b.url.clone();
    let statuses = rt.block_on(async move {
        let reqs: Vec<_> = (0..20).map(|i| tokio::spawn(ingest_owned(url.clone(), i))).collect();
        let mut out = Vec::new();
        for r in reqs {
            out.push(r.await.unwrap());
        }
        out
    });
    assert!(statuses.iter().all(|s| *s == 200));
    assert_eq!(b.stop_signal(libc::SIGTERM), Some(0));
}

async fn ingest_owned(url: String, i: u32) -> u16 {
    ingest(&url, "acme-t", "events", format!("{{\"i\":{i}}}")).await.status
}

#[test]
fn bad_config_exits_2_with_a_one_line_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "admin_token = \"a\"\nsegment_byts = 5\n").unwrap();
    let out = std::process::Command::new(&BROKER).arg("--config").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("segment_byts"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = std::process::Command::new(&BROKER)
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path().join("d"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("non-loopback"));
    let help = std::process::Command::new(&BROKER).arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
}

#[tokio::test]
async fn readme_quickstart_curl_gets_200_on_the_embedded_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(&BROKER)
        .current_dir(tmp.path())
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed and reaped on drop, also when an assertion fails.
    let mut broker = ExporterProc { child };
    let stdout = broker.child.stdout.take().unwrap();
    let lines: Vec<String> = {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).take(7).collect()
    };
    let banner = lines.join("\n");
    assert!(
        banner.contains("dev-token") && banner.contains("dev-exporter") && banner.contains("dev-admin"),
        "{banner}"
    );
    // Run the exact curl line the broker prints (the README shows the same one on port 7070).
    let curl = lines.iter().find(|l| l.trim_start().starts_with("curl ")).expect("a curl line").trim().to_string();
    let out = std::process::Command::new("sh").arg("-c").arg(format!("{curl} -w ' %{{http_code}}'")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("disk_high_watermark") && df_capacity_percent(tmp.path()).is_some_and(|p| p > 95) {
        // The embedded defaults keep 5 % of the disk free; on a machine
        // whose disk `df` itself shows fuller than that, 429 is the right
        // answer and the quickstart cannot show its 200 here.
        eprintln!("SKIPPED readme_quickstart_curl_gets_200_on_the_embedded_defaults: df shows the disk over 95 %");
        return;
    }
    assert!(text.trim_end().ends_with("200"), "{text}");
    assert!(text.contains("\"accepted\":1"), "{text}");
    assert!(tmp.path().join("weir-data").exists(), "default data dir ./weir-data");
    assert_eq!(broker.sigterm(), Some(0));
}

/// The "Capacity" `df -P` prints for the filesystem holding `dir`: a
/// measure of the disk taken apart from the broker's own.
fn df_capacity_percent(dir: &std::path::Path) -> Option<u32> {
    let out = std::process::Command::new("df").arg("-P").arg(dir).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = text.lines().nth(1)?;
    row.split_whitespace().nth(4)?.trim_end_matches('%').parse().ok()
}
