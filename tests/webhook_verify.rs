//! Webhooks a receiver can trust (issue 22), checked by the receivers' own
//! libraries: a Python receiver (`tests/support/webhook_receiver.py`)
//! verifies every request with `standardwebhooks` (both modes), `svix`
//! (event mode) and, for `v1a`, `cryptography`'s ed25519 by the
//! specification's rule; a gzip body by the specification's HMAC rule over
//! the bytes received. Real broker and exporter processes on loopback.
//!
//! Needs the Python packages (`WEIR_PYTHON` or `.venv-ci`, see
//! `tests/common/python.rs`): without them each test fails in CI and is
//! reported skipped elsewhere.

mod common;

use common::python::{python_or_skip, PyReceiver};
use common::*;
use std::path::Path;
use std::time::Duration;

const DEST: &str = r#"
[[destination]]
name = "hook"
topics = ["events"]
token = "hook-t"
"#;

fn whsec(byte: u8) -> String {
    format!("whsec_{}", protocol::b64_encode(&[byte; 32]))
}

/// An ed25519 seed as `whsk_`, and its public key as `whpk_`.
fn ed25519_pair(python: &Path) -> (String, String) {
    let seed = [42u8; 32];
    let script = "import base64,sys\nfrom cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey\nfrom cryptography.hazmat.primitives import serialization as s\nk=Ed25519PrivateKey.from_private_bytes(base64.b64decode(sys.argv[1]))\nprint(base64.b64encode(k.public_key().public_bytes(s.Encoding.Raw,s.PublicFormat.Raw)).decode())";
    let out = std::process::Command::new(python)
        .args(["-c", script, &protocol::b64_encode(&seed)])
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (format!("whsk_{}", protocol::b64_encode(&seed)), format!("whpk_{public}"))
}

/// Records no line-oriented reader keeps whole, and ordinary ones.
fn records(tag: &str, n: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        format!("line one {tag}\nline two").into_bytes(),
        [&[0x00, 0xff, 0xfe, b'\n', 0x80][..], tag.as_bytes()].concat(),
        format!("{{\"u\":\"a\u{2028}b\",\"t\":\"{tag}\"}}").into_bytes(),
        b"{\"payload_b64\":\"AAEC\"}".to_vec(),
        format!("{{\"multi\":\n\"{tag}\"}}").into_bytes(),
    ];
    out.extend((0..n).map(|i| format!("{{\"tag\":\"{tag}\",\"i\":{i}}}").into_bytes()));
    out
}

async fn ingest_all(url: &str, recs: &[Vec<u8>]) {
    for r in recs {
        ingest_bytes(url, r).await;
    }
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// Wait until the receiver kept `want` records.
async fn wait_kept(rx: &PyReceiver, want: usize, what: &str) {
    wait_until(what, Duration::from_secs(60), || async {
        let stats = rx.stats().await;
        assert_eq!(failures(&stats), Vec::<String>::new(), "{what}: a request failed verification");
        stats["records"].as_array().map_or(0, Vec::len) >= want
    })
    .await;
}

fn failures(stats: &serde_json::Value) -> Vec<String> {
    let list = stats["failures"].as_array().cloned().unwrap_or_default();
    list.iter().map(|v| v.as_str().unwrap_or("").to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standardwebhooks_svix_and_ed25519_verify_every_request_in_both_modes_and_with_gzip() {
    let test = "standardwebhooks_svix_and_ed25519_verify_every_request_in_both_modes_and_with_gzip";
    let Some(py) = python_or_skip(test) else { return };
    let (sk, pk) = ed25519_pair(&py);
    let secret = whsec(1);
    for (mode, gzip) in [("event", false), ("batch", false), ("batch", true)] {
        let b = BrokerProc::start(DEST);
        let rx = PyReceiver::start(&py, &secret, Some(&pk));
        let want = records(mode, 40);
        ingest_all(&b.url, &want).await;
        let mut args = vec!["--webhook-mode", mode, "--sign-secret", &secret, "--sign-key", &sk];
        args.extend(["--wait-ms", "200", "--batch-records", "7"]);
        if gzip {
            args.push("--gzip");
        }
        let _e = ExporterProc::start(&b.url, "hook", "hook-t", &rx.url, &args);
        wait_kept(&rx, want.len(), &format!("{mode} gzip={gzip}: every record")).await;
        let stats = rx.stats().await;
        assert_eq!(failures(&stats), Vec::<String>::new(), "{mode} gzip={gzip}: a request failed verification");
        assert_eq!(sorted(rx.records().await), sorted(want.clone()), "{mode} gzip={gzip}: records, byte for byte");
        let requests = stats["verified"].as_u64().unwrap_or(0);
        if mode == "event" {
            assert_eq!(stats["event_requests"].as_u64(), Some(want.len() as u64), "one record per request");
        } else {
            assert!(requests < want.len() as u64, "batch mode sent {requests} requests for {} records", want.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotation_by_sighup_fails_no_verification() {
    let Some(py) = python_or_skip("a_secret_rotation_by_sighup_fails_no_verification") else { return };
    let (old, new) = (whsec(7), whsec(8));
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("whsec");
    std::fs::write(&secrets, format!("{old}\n")).expect("write secrets");
    let b = BrokerProc::start(DEST);
    let rx = PyReceiver::start(&py, &old, None);
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let (listen, metrics) = (format!("127.0.0.1:{port}"), format!("http://127.0.0.1:{port}"));
    let secret_file = secrets.to_str().expect("utf-8");
    let args =
        ["--webhook-mode", "event", "--sign-secret-file", secret_file, "--wait-ms", "200", "--metrics-listen", &listen];
    let e = ExporterProc::start(&b.url, "hook", "hook-t", &rx.url, &args);
    let pid = e.child.id() as i32;
    let mut sent = 0;
    let mut phase = |tag: &'static str| {
        let recs = records(tag, 10);
        sent += recs.len();
        (recs, sent)
    };
    let reloads = |n: f64| {
        let m = metrics.clone();
        async move {
            wait_until("the exporter reloaded", Duration::from_secs(30), || async {
                metric(&m, "weir_config_reloads_total{result=\"ok\"}").await >= n
            })
            .await
        }
    };

    // 1. The old secret only.
    let (recs, total) = phase("old");
    ingest_all(&b.url, &recs).await;
    wait_kept(&rx, total, "phase 1").await;
    // 2. Both secrets (SIGHUP), the receiver still on the old one.
    std::fs::write(&secrets, format!("{old}\n{new}\n")).expect("write secrets");
    unsafe { libc::kill(pid, libc::SIGHUP) };
    reloads(1.0).await;
    let (recs, total) = phase("both-old");
    ingest_all(&b.url, &recs).await;
    wait_kept(&rx, total, "phase 2").await;
    // 3. The receiver deployed with the new secret.
    rx.configure(serde_json::json!({ "secret": new })).await;
    let (recs, total) = phase("both-new");
    ingest_all(&b.url, &recs).await;
    wait_kept(&rx, total, "phase 3").await;
    // 4. The old secret removed (SIGHUP).
    std::fs::write(&secrets, format!("{new}\n")).expect("write secrets");
    unsafe { libc::kill(pid, libc::SIGHUP) };
    reloads(2.0).await;
    let before = rx.stats().await["v1_counts"].as_array().map_or(0, Vec::len);
    let (recs, total) = phase("new");
    ingest_all(&b.url, &recs).await;
    wait_kept(&rx, total, "phase 4").await;

    let stats = rx.stats().await;
    assert_eq!(failures(&stats), Vec::<String>::new(), "a request failed verification during the rotation");
    let counts: Vec<u64> = stats["v1_counts"].as_array().expect("counts").iter().filter_map(|v| v.as_u64()).collect();
    assert!(counts.contains(&2), "no request carried both secrets' signatures: {counts:?}");
    assert!(counts[before..].iter().all(|&c| c == 1), "the old secret still signs after its removal: {counts:?}");
    assert_eq!(rx.records().await.len(), sent, "every record kept once");
}
