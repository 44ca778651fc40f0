//! Operations against real processes: every metric the dashboard and the
//! alert rules name exists on a fresh broker or exporter (with a series
//! for each configured tenant and destination), and `Type=notify`: READY
//! only after WAL recovery, STOPPING on SIGTERM, no READY when recovery fails.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn repo_file(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `weir_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("weir_") {
        let name: String =
            text[i..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        out.insert(name);
    }
    out
}

const DESTS: &str = r#"
[[destination]]
name = "d-acme"
topics = ["events"]
tenants = ["acme"]
token = "d-acme-t"

[[destination]]
name = "d-all"
topics = ["events", "other"]
token = "d-all-t"
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

async fn text_of(url: &str) -> Option<String> {
    client().get(url).send().await.ok()?.text().await.ok()
}

#[tokio::test]
async fn every_metric_of_the_rules_and_dashboard_exists_on_a_fresh_broker_or_exporter() {
    let b = BrokerProc::start(DESTS);
    let port = free_port();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = format!("file:{}", tmp.path().join("out.ndjson").display());
    let listen = format!("127.0.0.1:{port}");
    let _e = ExporterProc::start(&b.url, "d-acme", "d-acme-t", &sink, &["--metrics-listen", &listen]);
    wait_until("exporter /metrics answers", Duration::from_secs(30), || async {
        text_of(&metrics_url).await.is_some()
    })
    .await;
    let broker_text = text_of(&format!("{}/metrics", b.url)).await.expect("broker /metrics");
    let exporter_text = text_of(&metrics_url).await.expect("exporter /metrics");

    let rules = repo_file("ops/prometheus/weir-alerts.yml");
    let dashboard = repo_file("ops/grafana/weir-dashboard.json");
    let wanted: BTreeSet<String> = metric_names(&rules).union(&metric_names(&dashboard)).cloned().collect();
    assert!(wanted.len() >= 20, "{wanted:?}");
    let tenants = ["acme", "globex"];
    for name in &wanted {
        let (text, dests): (&str, &[&str]) = if name.starts_with("weir_exporter_") {
            (&exporter_text, &["d-acme"])
        } else {
            (&broker_text, &["d-acme", "d-all"])
        };
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.strip_prefix(name.as_str()).is_some_and(|r| r.starts_with('{') || r.starts_with(' ')))
            .collect();
        assert!(!lines.is_empty(), "{name} (named in ops/) has no series on a fresh process");
        if lines.iter().any(|l| l.contains("destination=\"")) {
            for d in dests {
                let label = format!("destination=\"{d}\"");
                assert!(lines.iter().any(|l| l.contains(&label)), "{name} has no series for destination {d}");
            }
        }
        if lines.iter().any(|l| l.contains("tenant=\"")) {
            for t in tenants {
                let label = format!("tenant=\"{t}\"");
                assert!(lines.iter().any(|l| l.contains(&label)), "{name} has no series for tenant {t}");
            }
        }
    }
}

/// A broker started under a test-owned NOTIFY_SOCKET, its stdout's
/// "listening on" URL delivered through a channel.
fn spawn_notified(config: &Path, socket: &Path) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(&BROKER)
        .arg("--config")
        .arg(config)
        .env("NOTIFY_SOCKET", socket)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn broker");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    (child, rx)
}

/// The next datagram on `sock`, or `None` after `timeout`.
fn next_message(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).expect("timeout");
    let mut buf = [0u8; 4096];
    sock.recv(&mut buf).ok().map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn notify_socket_sees_ready_only_after_recovery_and_stopping_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    // Records to recover: a first broker writes them, then stops.
    let mut first = BrokerProc::start_with(&data, &config(&data, DESTS));
    for i in 0..50 {
        assert_eq!(ingest(&first.url, "acme-t", "events", format!("{{\"i\":{i}}}")).await.status, 200);
    }
    assert_eq!(first.stop_signal(libc::SIGTERM), Some(0));

    let socket = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket).expect("bind NOTIFY_SOCKET");
    let (mut child, urls) = spawn_notified(&first.config, &socket);
    let mut seen = Vec::new();
    let ready = loop {
        let msg = next_message(&sock, Duration::from_secs(60)).expect("the broker notified READY within 60 s");
        seen.push(msg.clone());
        assert!(!msg.contains("STOPPING=1"), "{seen:?}");
        if msg.lines().any(|l| l == "READY=1") {
            break msg;
        }
        assert!(seen.len() < 10, "no READY after {seen:?}");
    };
    assert!(seen[0].contains("STATUS=recovering"), "a status before recovery: {seen:?}");
    // READY means recovered: /readyz is 200 and the old records are there.
    let url = urls.recv_timeout(Duration::from_secs(10)).expect("the listen address");
    let readyz = client().get(format!("{url}/readyz")).send().await.expect("readyz");
    assert_eq!(readyz.status().as_u16(), 200, "READY ({ready:?}) before /readyz was 200");
    assert_eq!(destination(&url, "d-acme").await["lag_records"].as_u64().map(|n| n <= 50), Some(true));
    let dumped = run_admin(&["dump", "--data-dir", data.to_str().expect("utf-8")]).1;
    assert_eq!(dumped.lines().count(), 50, "recovered what the first broker acknowledged");

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stopping = next_message(&sock, Duration::from_secs(30)).expect("STOPPING after SIGTERM");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), Some(0));
}

#[tokio::test]
async fn notify_socket_sees_no_ready_when_recovery_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    // A segment of WAL format 1: recovery refuses it (exit 2, see docs/wal.md).
    let lane = data.join("wal").join("normal").join("0");
    std::fs::create_dir_all(&lane).expect("mkdir");
    let mut h = vec![0u8; 64];
    h[0..8].copy_from_slice(b"WEIRSEG1");
    h[8..10].copy_from_slice(&1u16.to_le_bytes());
    h[10] = 1;
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h.resize(4096, 0);
    std::fs::write(lane.join(format!("{:020}.seg", 0)), h).expect("write segment");
    let cfg = data.with_extension("toml");
    std::fs::write(&cfg, config(&data, DESTS)).expect("write config");
    let socket = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket).expect("bind NOTIFY_SOCKET");
    let (mut child, _urls) = spawn_notified(&cfg, &socket);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), Some(2));
    let mut messages = Vec::new();
    while let Some(m) = next_message(&sock, Duration::from_millis(100)) {
        messages.push(m);
        assert!(messages.len() < 10);
    }
    assert!(!messages.iter().any(|m| m.contains("READY=1")), "READY although recovery failed: {messages:?}");
}
