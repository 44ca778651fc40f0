//! Hardened edges, on a real broker process: nothing is read for a client
//! that has not authenticated, bodies and shutdown are bounded in time,
//! connections and memory are capped with the contract's `503 overloaded`,
//! and every error answer — from any layer — carries the contract's JSON.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const DEST: &str = "[[destination]]\nname = \"main\"\ntopics = [\"events\"]\ntoken = \"main-t\"\n";

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// Send `head` (and nothing more) and read the answer until the peer closes
/// or `limit` passes.
fn raw(url: &str, head: &[u8], limit: Duration) -> String {
    let mut c = TcpStream::connect(addr(url)).unwrap();
    c.set_read_timeout(Some(limit)).unwrap();
    let _ = c.write_all(head);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}}") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&got).to_string()
}

fn assert_contract_error(answer: &str, status: u16, code: &str) {
    assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {answer}"));
    assert_eq!(v["error"]["code"], code, "{answer}");
    assert!(!v["error"]["message"].as_str().unwrap_or("").is_empty(), "{answer}");
}

#[test]
fn an_unauthenticated_client_is_answered_before_its_body_is_read() {
    let b = BrokerProc::start(DEST);
    for path in ["/v1/destinations/main/leases", "/v1/admin/destinations/main/rewind", "/v1/topics/events/records"] {
        // A 2 MB body announced, none of it sent: the token decides first.
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1999999\r\nContent-Type: application/json\r\n\r\n"
        );
        let started = Instant::now();
        let answer = raw(&b.url, head.as_bytes(), Duration::from_secs(10));
        assert_contract_error(&answer, 401, "unauthorized");
        assert!(started.elapsed() < Duration::from_secs(5), "{path}: the 401 waited for the body");
    }
}

#[tokio::test]
async fn a_body_that_never_arrives_is_cut_and_sigterm_finishes_within_the_drain_bound() {
    let mut b = BrokerProc::start(&format!("body_read_timeout_ms = 500\nshutdown_drain_ms = 1000\n{DEST}"));
    let url = b.url.clone();
    let slow = std::thread::spawn(move || {
        let head = "POST /v1/topics/events/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer acme-t\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n{\"partial\":";
        raw(&url, head.as_bytes(), Duration::from_secs(20))
    });
    let answer = slow.join().unwrap();
    assert_contract_error(&answer, 400, "invalid_request");
    assert!(answer.contains("body_read_timeout_ms"), "{answer}");
    // Clients that hold connections open do not hold up a stop.
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut c = TcpStream::connect(addr(&b.url)).unwrap();
        c.write_all(b"POST /v1/topics/events/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer acme-t\r\nContent-Length: 5000\r\n\r\n{").unwrap();
        idle.push(c);
    }
    let started = Instant::now();
    assert_eq!(b.stop_signal(libc::SIGTERM), Some(0));
    assert!(started.elapsed() < Duration::from_secs(8), "SIGTERM took {:?}", started.elapsed());
}

#[tokio::test]
async fn connections_beyond_a_roles_cap_get_503_overloaded_and_are_counted() {
    let b = BrokerProc::start(&format!("max_connections = 16\nmax_connections_per_tenant = 2\n{DEST}"));
    let ingest_head = "POST /v1/topics/events/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer acme-t\r\nContent-Type: application/x-ndjson\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(addr(&b.url)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(ingest_head.as_bytes()).unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        held.push(c); // kept alive: seated as acme's
    }
    let answer = raw(&b.url, ingest_head.as_bytes(), Duration::from_secs(5));
    assert_contract_error(&answer, 503, "overloaded");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    // Another tenant, and health, have seats of their own.
    assert_eq!(ingest(&b.url, "globex-t", "events", "{\"g\":1}").await.status, 200);
    let health = raw(&b.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(5));
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    drop(held);
    let url = b.url.clone();
    wait_until("a freed seat serves again", Duration::from_secs(10), || {
        let url = url.clone();
        async move { ingest(&url, "acme-t", "events", "{\"a\":2}").await.status == 200 }
    })
    .await;
    assert!(metric(&b.url, "weir_http_refused_total{reason=\"connections_tenant\"}").await >= 1.0);
}

#[tokio::test]
async fn the_memory_budget_refuses_the_excess_with_503_overloaded_and_appends_nothing() {
    // One request may hold 2 x 512 KiB + 2 x 512 KiB: the budget is exactly that.
    let b = BrokerProc::start(&format!(
        "max_body_bytes = 524288\nmax_inflated_bytes = 524288\nmax_record_bytes = 524288\nmemory_budget_bytes = 2097152\nmemory_budget_tenant_share = 1.0\nbody_read_timeout_ms = 20000\n{DEST}"
    ));
    // Two bodies stalled after 400 KB each hold 1.6 MB of the budget as they arrive…
    let head = "POST /v1/topics/events/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer acme-t\r\nContent-Type: application/x-ndjson\r\nContent-Length: 500000\r\n\r\n";
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = TcpStream::connect(addr(&b.url)).unwrap();
            c.write_all(head.as_bytes()).unwrap();
            c.write_all(&vec![b' '; 400_000]).unwrap();
            c
        })
        .collect();
    // Both stalled bodies are held (a probe sent before they are could take
    // the room one of them needs, and that one be refused instead).
    let url = b.url.clone();
    wait_until("the stalled bodies hold 1.6 MB of the budget", Duration::from_secs(20), || {
        let url = url.clone();
        async move { metric(&url, "weir_memory_budget_held_bytes").await >= 1_500_000.0 }
    })
    .await;
    // …so a third that sends as much is refused once its bytes pass the
    // rest. The probe is not JSON: were it ever taken whole, it would be
    // refused as such, and nothing is appended either way.
    let probe = "x".repeat(450_000);
    let url = b.url.clone();
    wait_until("the budget refuses the third body", Duration::from_secs(20), || {
        let (url, probe) = (url.clone(), probe.clone());
        async move {
            let a = ingest(&url, "acme-t", "events", probe).await;
            assert!(a.status == 503 || a.code() == "invalid_body", "{a:?}");
            a.status == 503
        }
    })
    .await;
    let refused = ingest(&b.url, "acme-t", "events", probe).await;
    refused.assert_error(503, "overloaded", true);
    assert!(refused.message().contains("memory_budget_bytes"), "{refused:?}");
    drop(stalled);
    let ok = ingest(&b.url, "acme-t", "events", "{\"small\":1}").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json["first_offset"], 0, "no refused request took an offset");
    assert!(metric(&b.url, "weir_http_refused_total{reason=\"memory\"}").await >= 2.0);
}

#[tokio::test]
async fn a_non_ascii_idempotency_key_is_refused_naming_the_header() {
    let b = BrokerProc::start(DEST);
    for _ in 0..2 {
        let resp = client()
            .post(format!("{}/v1/topics/events/records", b.url))
            .bearer_auth("acme-t")
            .header("content-type", "application/x-ndjson")
            .header("idempotency-key", reqwest::header::HeaderValue::from_bytes("clé-1".as_bytes()).unwrap())
            .body("{\"a\":1}")
            .send()
            .await
            .unwrap();
        let a = answer(resp).await;
        a.assert_error(400, "invalid_request", false);
        assert!(a.message().contains("Idempotency-Key"), "{a:?}");
    }
    let ok = ingest(&b.url, "acme-t", "events", "{\"a\":2}").await;
    assert_eq!(ok.json["first_offset"], 0, "neither refused request was appended");
}

#[test]
fn one_secret_given_to_two_roles_in_two_spellings_is_refused_naming_both() {
    use sha2_like::hex_sha256;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let text = config(&data, "")
        .replace("admin_token = \"admin-t\"", &format!("admin_token = \"sha256:{}\"", hex_sha256(b"acme-t")));
    let cfg = tmp.path().join("b.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(&BROKER).arg("--config").arg(&cfg).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("admin_token") && stderr.contains("tenant \"acme\""), "{stderr}");
}

/// SHA-256 for the test's own use (the broker's digest of a token).
mod sha2_like {
    pub fn hex_sha256(b: &[u8]) -> String {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b)?;
                c.wait_with_output()
            })
            .expect("sha256sum (coreutils)");
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
    }
}

#[test]
fn every_error_answer_from_every_layer_is_the_contracts_json() {
    let b = BrokerProc::start(DEST);
    let huge = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
    assert_contract_error(&raw(&b.url, huge.as_bytes(), Duration::from_secs(10)), 431, "headers_too_large");
    assert_contract_error(
        &raw(&b.url, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(5)),
        404,
        "not_found",
    );
    assert_contract_error(
        &raw(&b.url, b"GET /v1/destinations/main/leases HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(5)),
        405,
        "method_not_allowed",
    );
    assert_contract_error(
        &raw(&b.url, b"GET /v1/admin/destinations/main/dead-letters?limit=abc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-t\r\n\r\n", Duration::from_secs(5)),
        400,
        "invalid_request",
    );
    let big_lease = format!(
        "POST /v1/destinations/main/leases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer main-t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        3 << 20
    );
    assert_contract_error(&raw(&b.url, big_lease.as_bytes(), Duration::from_secs(5)), 413, "payload_too_large");
    assert_contract_error(&raw(&b.url, b"BREW / HTCPCP/1.0\r\n\r\n", Duration::from_secs(5)), 400, "invalid_request");
}

/// A log that cannot be written (here `/dev/full`: every write fails with
/// ENOSPC, as on a full log disk) must not stop a broker or an exporter:
/// tracing-subscriber's default answer to a failed write is `eprintln!`,
/// which panics on the same stderr, in whichever task logged. Found when an
/// exporter under RLIMIT_FSIZE inherited a test log file past the limit and
/// its delivery task died without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_and_an_exporter_whose_logs_cannot_be_written_keep_working() {
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").map(std::process::Stdio::from);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("broker.toml");
    std::fs::write(&config, common::config(&data, DEST)).unwrap();
    let (broker, url) = common::spawn_broker_logging(&config, full().unwrap(), "debug");
    let _broker = ExporterProc { child: broker };
    let ids: Vec<String> = (0..50).map(|i| format!("r{i}")).collect();
    for chunk in ids.chunks(10) {
        assert_eq!(ingest(&url, "acme-t", "events", common::ledger::ndjson(chunk)).await.status, 200);
    }
    let out = tmp.path().join("out.ndjson");
    let exporter = std::process::Command::new(&EXPORTER)
        .args(["--broker", &url, "--destination", "main", "--token", "main-t"])
        .args(["--sink", &format!("file:{}", out.display()), "--wait-ms", "100", "--batch-records", "7"])
        .env("RUST_LOG", "debug")
        .stdout(full().unwrap())
        .stderr(full().unwrap())
        .spawn()
        .expect("spawn exporter");
    let mut exporter = ExporterProc { child: exporter };
    wait_until("every record delivered by an exporter logging into a full disk", Duration::from_secs(60), || async {
        file_lines(&out).len() >= ids.len()
    })
    .await;
    assert_eq!(file_lines(&out).len(), ids.len());
    assert_eq!(exporter.sigterm(), Some(0), "the exporter stops cleanly");
}
