//! Logs people can search (issue 23): JSON lines carry the fields of the
//! span they are in (a lease's `destination`, `lease`, `lane`); a client's
//! 4xx is logged at debug, not as a WARN per bad request; the exporter's
//! "acquire failed" of all its workers is one line per window, and it says
//! why ("Connection refused"). Real broker and exporter processes.

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// An exporter logging JSON lines at `info` to `log`.
fn json_exporter(broker: &str, sink: &str, log: &Path) -> ExporterProc {
    let child: Child = Command::new(&EXPORTER)
        .args(["--broker", broker, "--destination", "d", "--token", "d-t", "--sink", sink])
        .args(["--sink-timeout-ms", "300", "--wait-ms", "100"])
        .env("WEIR_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).expect("create the log")))
        .spawn()
        .expect("spawn exporter");
    ExporterProc { child }
}

fn json_lines(log: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect()
}

#[tokio::test]
async fn json_lines_carry_the_lease_span_and_a_down_broker_is_one_line_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    // A broker whose sink is a closed port: every delivery fails, inside a lease.
    let b = BrokerProc::start("[[destination]]\nname = \"d\"\ntopics = [\"events\"]\ntoken = \"d-t\"\n");
    assert_eq!(ingest(&b.url, "acme-t", "events", "{}").await.status, 200);
    let log = dir.path().join("exporter.log");
    let dead_sink = format!("http://127.0.0.1:{}/hook", free_port());
    let exporter = json_exporter(&b.url, &dead_sink, &log);
    wait_until("a delivery failure is logged", Duration::from_secs(30), || async {
        json_lines(&log).iter().any(|l| l["message"] == "delivery failed; lease returned")
    })
    .await;
    drop(exporter);
    let failed = json_lines(&log).into_iter().find(|l| l["message"] == "delivery failed; lease returned").unwrap();
    assert_eq!(failed["destination"], "d", "the lease span's fields: {failed}");
    assert!(failed["lane"].as_str().is_some_and(|l| l.starts_with("normal/")), "{failed}");
    assert!(failed["lease"].as_str().is_some_and(|l| !l.is_empty()), "{failed}");

    // A broker that is not there: 64 workers, one line per window, with the cause.
    let log = dir.path().join("down.log");
    let down = format!("http://127.0.0.1:{}", free_port());
    let sink = format!("file://{}", dir.path().join("out.ndjson").display());
    let exporter = json_exporter(&down, &sink, &log);
    wait_until("the first acquire failure is logged", Duration::from_secs(30), || async {
        json_lines(&log).iter().any(|l| l["message"] == "acquire failed; retrying")
    })
    .await;
    // Within the first window every worker has failed at least once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(exporter);
    let failures: Vec<_> =
        json_lines(&log).into_iter().filter(|l| l["message"] == "acquire failed; retrying").collect();
    assert_eq!(failures.len(), 1, "one line for the workers' failures: {failures:?}");
    let error = failures[0]["error"].as_str().unwrap_or("");
    assert!(error.to_lowercase().contains("connection refused"), "the cause is named: {error}");
}

#[tokio::test]
async fn a_clients_bad_requests_are_not_a_warn_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("broker.log");
    let b = BrokerProc::start_logging(&data, &config(&data, ""), &log, "info");
    for _ in 0..50 {
        let a = ingest(&b.url, "acme-t", "events", "{not json").await;
        assert_eq!(a.status, 400);
    }
    assert_eq!(ingest(&b.url, "nobody", "events", "{}").await.status, 401);
    let bad = "weir_ingest_requests_total{code=\"400\",topic=\"events\"}";
    assert_eq!(metric(&b.url, bad).await, 50.0, "each bad request is counted");
    let text = std::fs::read_to_string(&log).unwrap();
    let warned = text.lines().filter(|l| l.contains("WARN") && l.contains("ingest refused")).count();
    assert_eq!(warned, 0, "no WARN per client error:\n{text}");
}
