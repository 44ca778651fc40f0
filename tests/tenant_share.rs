//! The share between tenants of one priority (issue 24), end to end:
//! a real broker with `shards = 1` (so both tenants share one lane), a
//! real exporter pinned at 4 leases of at most 10 records, and a sink that
//! holds every request until the test lets it finish — so "a lease round
//! trip" is a step the test takes, not a time.
//!
//! A small tenant's record acknowledged behind another tenant's backlog of
//! 400 records of the same priority is delivered within two lease round
//! trips: in one of the four requests the sink receives after the four that
//! were in flight when it was acknowledged. In offset order it would wait
//! for 40 requests.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use common::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// A webhook that finishes one request per permit the test adds.
struct Gate {
    permits: Semaphore,
    /// Each request's body lines, in the order the requests arrived.
    received: Mutex<Vec<Vec<String>>>,
    finished: Mutex<usize>,
}

async fn held(State(g): State<Arc<Gate>>, body: Bytes) -> &'static str {
    let lines = String::from_utf8_lossy(&body).lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
    g.received.lock().unwrap().push(lines);
    if let Ok(p) = g.permits.acquire().await {
        p.forget();
    }
    *g.finished.lock().unwrap() += 1;
    "ok"
}

async fn gated_sink() -> (String, Arc<Gate>) {
    let gate = Arc::new(Gate { permits: Semaphore::new(0), received: Mutex::default(), finished: Mutex::default() });
    let app = axum::Router::new().route("/in", axum::routing::post(held)).with_state(Arc::clone(&gate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/in"), gate)
}

fn received(g: &Gate) -> usize {
    g.received.lock().unwrap().len()
}

/// The 1-based place of the first request holding a line with `needle`.
fn request_holding(g: &Gate, needle: &str) -> Option<usize> {
    g.received.lock().unwrap().iter().position(|r| r.iter().any(|l| l.contains(needle))).map(|i| i + 1)
}

const CONFIG: &str = r#"shards = 1

[[destination]]
name = "d"
topics = ["events"]
token = "d-t"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_tenants_record_behind_anothers_backlog_is_delivered_within_two_lease_round_trips() {
    let (sink, gate) = gated_sink().await;
    let broker = BrokerProc::start(CONFIG);
    for i in 0..16 {
        let body: String = (0..25).map(|j| format!("{{\"from\":\"acme\",\"n\":{}}}\n", i * 25 + j)).collect();
        assert_eq!(ingest(&broker.url, "acme-t", "events", body).await.status, 200);
    }
    let _exporter =
        ExporterProc::start(&broker.url, "d", "d-t", &sink, &["--concurrency", "4", "--batch-records", "10"]);
    wait_until("four leases in flight at the sink", Duration::from_secs(30), || async { received(&gate) == 4 }).await;

    assert_eq!(ingest(&broker.url, "globex-t", "events", "{\"from\":\"globex\"}\n").await.status, 200);
    let in_flight_then = received(&gate);
    // One lease round trip at a time: let one request finish, wait for the
    // exporter's next request (bounded: the backlog is 41 leases).
    for step in 1..=60usize {
        gate.permits.add_permits(1);
        wait_until("the next request", Duration::from_secs(30), || async {
            received(&gate) >= in_flight_then + step || *gate.finished.lock().unwrap() >= 401
        })
        .await;
        if request_holding(&gate, "globex").is_some() {
            break;
        }
    }
    let at = request_holding(&gate, "globex").expect("globex's record delivered");
    assert!(
        at <= in_flight_then + 4,
        "globex's record came in request {at}: more than two lease round trips after the {in_flight_then} in flight"
    );

    // Everything arrives, each record once.
    gate.permits.add_permits(10_000);
    wait_until("every record delivered", Duration::from_secs(60), || async {
        gate.received.lock().unwrap().iter().map(Vec::len).sum::<usize>() >= 401
    })
    .await;
    let lines: Vec<String> = gate.received.lock().unwrap().iter().flatten().cloned().collect();
    let distinct: std::collections::BTreeSet<&String> = lines.iter().collect();
    assert_eq!((lines.len(), distinct.len()), (401, 401), "every record once");
}
