//! Event-mode webhooks (issue 22) with real broker and exporter processes:
//! every record exactly once at a receiver that deduplicates on
//! `webhook-id`, through exporter kill -9s, sink 503s with retries and a
//! rewind (each record's id repeats, so it is kept once), each
//! request one record byte for byte; and no secret or URL credential in
//! any log line, metric, admin answer or `--check-config` output.

mod common;

use common::event_receiver::{self, Events};
use common::*;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A short lease, so a killed exporter's leases come back within seconds.
const DEST: &str = r#"lease_timeout_ms = 3000
[[destination]]
name = "hook"
topics = ["events"]
token = "hook-t"
"#;

/// Within the 3 s lease: 500 ms x 3 attempts + backoff + 1 s.
const FAST: [&str; 12] = [
    "--webhook-mode",
    "event",
    "--wait-ms",
    "200",
    "--batch-records",
    "40",
    "--sink-timeout-ms",
    "500",
    "--backoff-max-ms",
    "20",
    "--lease-timeout-ms",
    "3000",
];

fn hostile() -> Vec<Vec<u8>> {
    vec![
        b"line one\nline two".to_vec(),
        vec![0x00, 0xff, 0xfe, b'\n', 0x80],
        "{\"u\":\"a\u{2028}b\"}".as_bytes().to_vec(),
        b"{\"payload_b64\":\"AAEC\"}".to_vec(),
        b"{\"multi\":\n1}".to_vec(),
        b"\r\n".to_vec(),
    ]
}

fn kept(rx: &Events) -> usize {
    rx.kept.lock().unwrap().len()
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_mode_delivers_every_record_exactly_once_through_kill9_sink_503s_and_a_rewind() {
    let (addr, rx) = event_receiver::start().await;
    rx.fail_every.store(4, Ordering::SeqCst);
    let b = BrokerProc::start(DEST);
    let mut want = hostile();
    want.extend((0..300).map(|i| format!("{{\"i\":{i}}}").into_bytes()));
    for r in &want {
        ingest_bytes(&b.url, r).await;
    }
    let hook = format!("http://{addr}/hook");
    for stop_at in [60, 160] {
        let mut e = ExporterProc::start(&b.url, "hook", "hook-t", &hook, &FAST);
        wait_until(&format!("{stop_at} records kept"), Duration::from_secs(60), || async { kept(&rx) >= stop_at })
            .await;
        e.kill9();
    }
    let _e = ExporterProc::start(&b.url, "hook", "hook-t", &hook, &FAST);
    wait_until("every record kept", Duration::from_secs(90), || async { kept(&rx) >= want.len() }).await;
    // A rewind to the start: every record is sent again under its own id,
    // so the deduplicating receiver keeps each once still.
    let before = rx.duplicates.load(Ordering::SeqCst);
    let (code, out, err) =
        run_admin(&["rewind", "--broker", &b.url, "--token", "admin-t", "--destination", "hook", "--earliest"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until("every record redelivered after the rewind", Duration::from_secs(90), || async {
        rx.duplicates.load(Ordering::SeqCst) >= before + want.len() as u64
    })
    .await;
    assert_eq!(*rx.malformed.lock().unwrap(), Vec::<String>::new(), "a request was not exactly one record");
    assert_eq!(sorted(rx.kept_records()), sorted(want.clone()), "each record exactly once, byte for byte");
    assert!(rx.failed_503.load(Ordering::SeqCst) > 0, "the sink's 503s were never exercised");
    let requests = rx.requests.load(Ordering::SeqCst);
    assert!(requests > want.len() as u64, "no request was retried or redelivered ({requests})");
    let ids = rx.headers.lock().unwrap().get("idempotency-key").cloned().unwrap_or_default();
    let hooks = rx.headers.lock().unwrap().get("webhook-id").cloned().unwrap_or_default();
    assert_eq!(ids, hooks, "Idempotency-Key and webhook-id are one value");
}

/// Values that must never be shown anywhere.
const LEAKS: [&str; 6] = [
    "weirp4ssw0rd",
    "weiruser",
    "hdr-s3cr3t-value",
    "file-h3ader-s3cret",
    "exp-t0ken-7f3a9c",
    "c2lnbmluZy1zZWNyZXQtb2YtMzItYnl0ZXMhIS",
];

fn assert_no_leak(what: &str, text: &str) {
    for leak in LEAKS {
        assert!(!text.contains(leak), "{what} shows {leak:?}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_url_credential_appears_in_logs_metrics_admin_answers_or_check_config() {
    let (addr, rx) = event_receiver::start().await;
    // Endpoint faults first (logged, and sent to the broker's breaker), then 503s.
    rx.refuse_first.store(3, Ordering::SeqCst);
    rx.refuse_status.store(401, Ordering::SeqCst);
    rx.fail_every.store(5, Ordering::SeqCst);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = config(&data, &DEST.replace("hook-t", "exp-t0ken-7f3a9c"));
    let b_log = dir.path().join("broker.log");
    // Its log kept: the breaker's reasons land there.
    let mut b = BrokerProc::start_logging(&data, &config, &b_log, "debug");
    for i in 0..20 {
        ingest_bytes(&b.url, format!("{{\"i\":{i}}}").as_bytes()).await;
    }
    let (token_file, header_file) = (dir.path().join("token"), dir.path().join("headers"));
    std::fs::write(&token_file, "exp-t0ken-7f3a9c\n").expect("write");
    std::fs::write(&header_file, "X-File-Auth: file-h3ader-s3cret\n").expect("write");
    let secret = format!("whsec_{}", protocol::b64_encode(b"signing-secret-of-32-bytes!!!!!!"));
    assert!(secret.contains(LEAKS[5]));
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let listen = format!("127.0.0.1:{port}");
    let sink = format!("http://weiruser:weirp4ssw0rd@{addr}/hook");
    let args: Vec<String> = [
        "--broker",
        &b.url,
        "--destination",
        "hook",
        "--token-file",
        token_file.to_str().expect("utf-8"),
        "--sink",
        &sink,
        "--sign-secret",
        &secret,
        "--header",
        "X-Api-Key: hdr-s3cr3t-value",
        "--header-file",
        header_file.to_str().expect("utf-8"),
        "--metrics-listen",
        &listen,
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(FAST.iter().map(|s| s.to_string()))
    .collect();
    let e_log = dir.path().join("exporter.log");
    let mut e = Command::new(&EXPORTER)
        .args(&args)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&e_log).expect("log")))
        .spawn()
        .expect("spawn exporter");
    wait_until("every record kept", Duration::from_secs(60), || async { kept(&rx) >= 20 }).await;
    let metrics_text = client().get(format!("http://{listen}/metrics")).send().await.expect("metrics").text().await;
    let broker_metrics = client().get(format!("{}/metrics", b.url)).send().await.expect("metrics").text().await;
    let (code, admin_out, admin_err) = run_admin(&["destinations", "--broker", &b.url, "--token", "admin-t", "--json"]);
    assert_eq!(code, 0, "{admin_err}");
    let check = Command::new(&EXPORTER).arg("--check-config").args(&args).output().expect("check-config");
    unsafe { libc::kill(e.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut e, Duration::from_secs(30)), Some(0));
    b.kill9();

    // The secrets were used: the receiver got them.
    let headers = rx.headers.lock().unwrap().clone();
    let first = |name: &str| headers.get(name).and_then(|v| v.first().cloned()).unwrap_or_default();
    assert_eq!(first("x-api-key"), "hdr-s3cr3t-value");
    assert_eq!(first("x-file-auth"), "file-h3ader-s3cret");
    assert_eq!(first("authorization"), format!("Basic {}", protocol::b64_encode(b"weiruser:weirp4ssw0rd")));
    assert!(first("webhook-signature").starts_with("v1,"));
    // And shown nowhere.
    let e_text = std::fs::read_to_string(&e_log).expect("exporter log");
    assert!(e_text.contains("<redacted>@127.0.0.1"), "the sink is named, redacted:\n{e_text}");
    assert!(e_text.contains("401"), "the endpoint faults were logged:\n{e_text}");
    assert_no_leak("the exporter's log", &e_text);
    assert_no_leak("the broker's log", &std::fs::read_to_string(&b_log).expect("broker log"));
    assert_no_leak("the exporter's /metrics", &metrics_text.expect("text"));
    assert_no_leak("the broker's /metrics", &broker_metrics.expect("text"));
    assert_no_leak("broker-admin destinations", &admin_out);
    let check_out = String::from_utf8_lossy(&check.stdout).to_string();
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(check_out.contains("sink = \"http://<redacted>@127.0.0.1"), "{check_out}");
    assert_no_leak("--check-config", &format!("{check_out}{}", String::from_utf8_lossy(&check.stderr)));
}

#[test]
fn a_header_weir_sets_itself_is_refused_with_exit_2() {
    for header in ["webhook-signature: x", "Idempotency-Key: x", "User-Agent: x", "Host: x"] {
        let out = Command::new(&EXPORTER)
            .args([
                "--broker",
                "http://127.0.0.1:1",
                "--destination",
                "d",
                "--token",
                "t",
                "--sink",
                "http://127.0.0.1:2/",
            ])
            .args(["--header", header])
            .output()
            .expect("run exporter");
        assert_eq!(out.status.code(), Some(2), "{header}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("set by Weir itself"), "{header}: {err}");
    }
}

/// `--event-order tenant` across leases: two tenants' records interleaved,
/// many small leases, the sink answering 503 now and then (the lease goes
/// back and is offered again first). Each tenant's records first arrive in
/// the order they were stored; every record arrives, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_event_order_holds_across_leases_and_retries() {
    let (addr, rx) = event_receiver::start().await;
    rx.fail_every.store(7, Ordering::SeqCst);
    let b = BrokerProc::start(DEST);
    let mut want = Vec::new();
    for i in 0..80 {
        for (tenant, token) in [("acme", "acme-t"), ("globex", "globex-t")] {
            let record = format!("{{\"t\":\"{tenant}\",\"i\":{i}}}");
            assert_eq!(ingest(&b.url, token, "events", record.clone()).await.status, 200);
            want.push(record.into_bytes());
        }
    }
    let hook = format!("http://{addr}/hook");
    let mut flags = FAST.to_vec();
    flags[5] = "10"; // --batch-records 10: many leases
                     // 8 at once: without the tenant order several leases of a lane would be
                     // in flight together, and a later lease's records could arrive first.
    flags.extend(["--event-order", "tenant", "--concurrency", "8"]);
    let _e = ExporterProc::start(&b.url, "hook", "hook-t", &hook, &flags);
    wait_until("every record kept", Duration::from_secs(90), || async { kept(&rx) >= want.len() }).await;
    assert!(rx.failed_503.load(Ordering::SeqCst) > 0, "the sink's 503s were never exercised");
    assert_eq!(sorted(rx.kept_records()), sorted(want), "each record once");
    let arrivals = rx.arrivals.lock().unwrap().clone();
    for tenant in ["acme", "globex"] {
        let order: Vec<u64> = arrivals
            .iter()
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(r).ok())
            .filter(|v| v["t"] == tenant)
            .filter_map(|v| v["i"].as_u64())
            .collect();
        assert_eq!(order, (0..80).collect::<Vec<u64>>(), "{tenant}'s records in the order they were stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redriven_record_is_sent_under_the_id_it_had_in_its_lane() {
    let (addr, rx) = event_receiver::start().await;
    // The first request is refused as poison (400): the record goes to dead letters.
    rx.refuse_status.store(400, Ordering::SeqCst);
    rx.refuse_first.store(1, Ordering::SeqCst);
    let b = BrokerProc::start(DEST);
    ingest_bytes(&b.url, b"{\"poison\":true}").await;
    let hook = format!("http://{addr}/hook");
    let _e = ExporterProc::start(&b.url, "hook", "hook-t", &hook, &FAST);
    wait_until("the record is a dead letter", Duration::from_secs(30), || async {
        destination(&b.url, "hook").await["dead_letter_records"] == 1
    })
    .await;
    let first = rx.headers.lock().unwrap().get("webhook-id").and_then(|v| v.first().cloned()).expect("an id");
    let (code, out, err) = run_admin(&["redrive", "--broker", &b.url, "--token", "admin-t", "--destination", "hook"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until("the re-driven record is kept", Duration::from_secs(30), || async { kept(&rx) == 1 }).await;
    let kept_ids: Vec<String> = rx.kept.lock().unwrap().keys().cloned().collect();
    // The lease of a re-drive names each record's lane (lease format v3):
    // without it the id would be over `dead_letters`, and a receiver that
    // saw the record before could not tell it is the same.
    assert_eq!(kept_ids, [first], "the re-drive keeps the record's own id");
}
