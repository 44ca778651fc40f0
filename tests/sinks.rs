//! Sinks that cannot be mistaken for delivery: record framing (one record is
//! one record downstream, whatever its bytes), redirects that are not
//! deliveries, and a file sink that is crash-safe at each step. Real broker
//! and exporter processes; sinks are a loopback HTTP server, files and a
//! real ClickHouse server.

mod common;

use common::sink::TestSink;
use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_a_delivery_and_its_location_is_in_the_dead_letter() {
    let b = BrokerProc::start("[[destination]]\nname = \"w\"\ntopics = [\"events\"]\ntoken = \"w-t\"\n");
    let sink = TestSink::start().await;
    let elsewhere = sink.url.replace("/ingest", "/elsewhere");
    *sink.state.redirect_to.lock().unwrap() = Some(elsewhere.clone());
    let body: String = (0..3).map(|i| format!("{{\"id\":\"r{i}\"}}\n")).collect();
    assert_eq!(ingest(&b.url, "acme-t", "events", body).await.status, 200);
    let _e = ExporterProc::start(&b.url, "w", "w-t", &sink.url, &["--wait-ms", "200", "--max-retries", "0"]);
    // Either outcome is an event: the records dead-lettered, or the
    // redirect followed (what the old client did, and then "delivered").
    wait_until("three dead letters, or a followed redirect", Duration::from_secs(30), || async {
        sink.state.gets.load(Ordering::Relaxed) > 0 || destination(&b.url, "w").await["dead_letter_records"] == 3
    })
    .await;
    assert_eq!(sink.state.gets.load(Ordering::Relaxed), 0, "the exporter followed the redirect");
    assert!(sink.state.requests.load(Ordering::Relaxed) >= 1);
    assert!(sink.lines().is_empty());
    let (code, listed, err) =
        run_admin(&["dead-letters", "--broker", &b.url, "--token", "admin-t", "--destination", "w", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), 3);
    for d in &listed {
        let e = d["error"].as_str().unwrap();
        assert!(e.contains("302") && e.contains(&format!("Location: {elsewhere}")), "dead letter error: {e}");
    }
    // The endpoint fixed, a re-drive delivers them.
    *sink.state.redirect_to.lock().unwrap() = None;
    let (code, _, err) = run_admin(&["redrive", "--broker", &b.url, "--token", "admin-t", "--destination", "w"]);
    assert_eq!(code, 0, "{err}");
    wait_until("re-driven records delivered", Duration::from_secs(30), || async { sink.lines().len() == 3 }).await;
}
