//! The signals operators look for (issue 23): `weir_build_info{version,
//! commit}` and `process_*` on the broker and the exporter; the exporter's
//! `/healthz` and `/readyz` (ready once the broker answered a lease
//! request) on its `--metrics-listen`; delivery latency buckets up to an
//! hour. Real broker and exporter processes on loopback.

mod common;

use common::*;
use std::time::Duration;

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("its address").port()
}

async fn get(url: &str) -> (u16, String) {
    match client().get(url).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// The process and build series every Weir process serves.
fn assert_process_series(who: &str, metrics: &str) {
    let info = metrics
        .lines()
        .find(|l| l.starts_with("weir_build_info{"))
        .unwrap_or_else(|| panic!("{who}: no weir_build_info"));
    assert!(info.ends_with(" 1"), "{who}: {info}");
    assert!(info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{who}: {info}");
    let commit = info.split("commit=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("");
    assert!(!commit.is_empty(), "{who}: {info}");
    for series in
        ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"]
    {
        let line = metrics.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("{who}: no {series}"));
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(-1.0);
        // CPU seconds are whole seconds: 0 is right for a new process.
        let least = if series == "process_cpu_seconds_total" { 0.0 } else { 1.0 };
        assert!(value >= least, "{who}: {line}");
    }
}

#[tokio::test]
async fn broker_and_exporter_serve_build_info_process_series_and_the_exporter_its_probes() {
    let b = BrokerProc::start("[[destination]]\nname = \"d\"\ntopics = [\"events\"]\ntoken = \"d-t\"\n");
    let (_, broker_metrics) = get(&format!("{}/metrics", b.url)).await;
    assert_process_series("broker", &broker_metrics);

    // An exporter whose broker is not there: alive, not ready.
    let (away, port) = (format!("http://127.0.0.1:{}", free_port()), free_port());
    let exporter_url = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let sink = format!("file://{}", dir.path().join("out.ndjson").display());
    let lonely = ExporterProc::start(&away, "d", "d-t", &sink, &["--metrics-listen", &listen]);
    wait_until("the exporter's /healthz", Duration::from_secs(30), || async {
        get(&format!("{exporter_url}/healthz")).await.0 == 200
    })
    .await;
    assert_eq!(get(&format!("{exporter_url}/readyz")).await.0, 503, "not ready without a broker's answer");
    let (_, exporter_metrics) = get(&format!("{exporter_url}/metrics")).await;
    assert_process_series("exporter", &exporter_metrics);
    drop(lonely);

    // Against the broker: ready once it leased, and a delivery is measured
    // in buckets up to an hour.
    let port = free_port();
    let (listen, exporter_url) = (format!("127.0.0.1:{port}"), format!("http://127.0.0.1:{port}"));
    let _exporter = ExporterProc::start(&b.url, "d", "d-t", &sink, &["--metrics-listen", &listen]);
    wait_until("the exporter's /readyz", Duration::from_secs(30), || async {
        get(&format!("{exporter_url}/readyz")).await.0 == 200
    })
    .await;
    assert_eq!(ingest(&b.url, "acme-t", "events", "{}").await.status, 200);
    let bucket = "weir_delivery_latency_seconds_bucket{destination=\"d\",priority=\"normal\",le=\"3600\"}";
    wait_until("a delivery counted in the one-hour bucket", Duration::from_secs(30), || async {
        metric(&b.url, bucket).await >= 1.0
    })
    .await;
}
