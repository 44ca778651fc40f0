//! The sink fault matrix: a real broker and a real exporter delivering to a
//! loopback sink that fails in one way — connection refused, slow, a black
//! hole, 500, 429 with Retry-After, a redirect or another status about the
//! endpoint (401, 403, 404), a 400 about the content, a connection closed
//! mid-response. For each: the breaker, the lease, the dead letters, the
//! metrics while the fault lasts, and the final delivery once it is gone.
//! Timings are short (breaker opens after 2 failures, stays open 1 s; the
//! sink timeout is 400 ms).

mod common;

use common::raw_sink::{Mode, RawSink};
use common::*;
use std::time::Duration;

const DEST: &str = "lease_timeout_ms = 3000
[[destination]]
name = \"w\"
topics = [\"events\"]
token = \"w-t\"
failure_threshold = 2
breaker_open_ms = 1000
";

const ARGS: &[&str] = &[
    "--sink-timeout-ms",
    "400",
    "--max-retries",
    "0",
    "--wait-ms",
    "200",
    "--batch-records",
    "50",
    "--backoff-base-ms",
    "50",
    "--backoff-max-ms",
    "200",
    "--lease-timeout-ms",
    "3000",
];

const N: usize = 10;

fn ids() -> Vec<String> {
    (0..N).map(|i| format!("{{\"id\":\"r{i}\"}}")).collect()
}

async fn start_with_records() -> BrokerProc {
    let b = BrokerProc::start(DEST);
    let body: String = ids().iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(ingest(&b.url, "acme-t", "events", body).await.status, 200);
    b
}

fn committed_and_end(st: &serde_json::Value) -> (u64, u64) {
    let cursors = st["cursors"].as_array().cloned().unwrap_or_default();
    (
        cursors.iter().filter_map(|c| c["committed"].as_u64()).sum(),
        cursors.iter().filter_map(|c| c["end"].as_u64()).sum(),
    )
}

async fn breaker_metric(url: &str) -> f64 {
    metric(url, "weir_destination_breaker_state{destination=\"w\"}").await
}

/// While a retryable fault lasts: the breaker opens, nothing is committed
/// or dead-lettered, and the lease is handed back rather than held.
async fn assert_retryable_fault(b: &BrokerProc, what: &str) {
    wait_until(&format!("{what}: the breaker opens"), Duration::from_secs(30), || async {
        let st = destination(&b.url, "w").await;
        st["breaker"]["state"] != "closed" && st["breaker"]["consecutive_failures"].as_u64() >= Some(2)
    })
    .await;
    // The gauge is refreshed by the maintenance pass (every 50 ms here).
    wait_until(&format!("{what}: weir_destination_breaker_state is not 0"), Duration::from_secs(10), || async {
        breaker_metric(&b.url).await >= 1.0
    })
    .await;
    wait_until(&format!("{what}: no lease held while the sink fails"), Duration::from_secs(30), || async {
        destination(&b.url, "w").await["leases_in_flight"] == 0
    })
    .await;
    let st = destination(&b.url, "w").await;
    assert_eq!(committed_and_end(&st).0, 0, "{what}: nothing is committed while the sink fails: {st}");
    assert_eq!(st["dead_letter_records"], 0, "{what}: a retryable failure is never a dead letter: {st}");
    assert_eq!(metric(&b.url, "weir_dead_letter_records_total{destination=\"w\"}").await, 0.0);
}

/// Once the fault is gone: everything delivered, committed, breaker closed.
async fn assert_recovered(b: &BrokerProc, sink: &RawSink, what: &str, exactly_once: bool) {
    wait_until(&format!("{what}: every record delivered and committed"), Duration::from_secs(30), || async {
        let st = destination(&b.url, "w").await;
        let (c, e) = committed_and_end(&st);
        let lines = sink.lines();
        c == e && st["leases_in_flight"] == 0 && ids().iter().all(|id| lines.contains(id))
    })
    .await;
    let st = destination(&b.url, "w").await;
    assert_eq!(st["breaker"]["state"], "closed", "{what}: {st}");
    assert_eq!(st["breaker"]["consecutive_failures"], 0, "{what}: {st}");
    assert_eq!(st["dead_letter_records"], 0, "{what}: {st}");
    wait_until(&format!("{what}: breaker gauge back to 0"), Duration::from_secs(10), || async {
        breaker_metric(&b.url).await == 0.0
    })
    .await;
    if exactly_once {
        assert_eq!(sink.lines().len(), N, "{what}: the failing answers accepted nothing: {:?}", sink.lines());
    }
}

async fn retryable(mode: Mode, what: &str) -> (BrokerProc, RawSink) {
    let b = start_with_records().await;
    let sink = RawSink::start(mode).await;
    let mut e = ExporterProc::start(&b.url, "w", "w-t", &sink.url, ARGS);
    assert_retryable_fault(&b, what).await;
    assert!(sink.requests.load(std::sync::atomic::Ordering::Relaxed) >= 2, "{what}: the sink was tried");
    sink.set(Mode::Accept);
    assert_recovered(&b, &sink, what, !matches!(what, "slow")).await;
    assert_eq!(e.sigterm(), Some(0), "{what}: the exporter stops cleanly");
    (b, sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_connection_refused_opens_the_breaker_and_delivers_once_the_sink_listens() {
    let b = start_with_records().await;
    // A port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/ingest");
    let mut e = ExporterProc::start(&b.url, "w", "w-t", &url, ARGS);
    assert_retryable_fault(&b, "refused").await;
    let sink = RawSink::start_on(port, Mode::Accept).await;
    assert_recovered(&b, &sink, "refused", true).await;
    assert_eq!(e.sigterm(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_slower_than_the_timeout_opens_the_breaker_and_slow_within_it_is_a_delivery() {
    // Within the timeout: delivered, the breaker never counts a failure.
    let b = start_with_records().await;
    let sink = RawSink::start(Mode::Slow(Duration::from_millis(150))).await;
    let mut e = ExporterProc::start(&b.url, "w", "w-t", &sink.url, ARGS);
    assert_recovered(&b, &sink, "slow within the timeout", true).await;
    assert_eq!(e.sigterm(), Some(0));
    drop(b);
    // Beyond it: a timeout is a retryable failure (what the slow sink
    // accepted late may arrive twice: at least once, not exactly once).
    retryable(Mode::Slow(Duration::from_millis(1500)), "slow").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_black_hole_times_out_opens_the_breaker_and_never_holds_the_lease() {
    let (_b, sink) = retryable(Mode::BlackHole, "black hole").await;
    assert!(sink.connections.load(std::sync::atomic::Ordering::Relaxed) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_500_is_retryable_opens_the_breaker_and_delivers_after() {
    retryable(Mode::Status(500, vec![]), "500").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_connection_closed_mid_status_line_is_not_a_delivery() {
    retryable(Mode::CloseMidStatusLine, "closed mid-status-line").await;
}

/// A `200` head whose promised body never arrives: the answer is
/// incomplete, a connection error (retryable), not a delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_connection_closed_mid_response_body_is_not_a_delivery() {
    let b = start_with_records().await;
    let sink = RawSink::start(Mode::CloseMidResponse).await;
    let _e = ExporterProc::start(&b.url, "w", "w-t", &sink.url, ARGS);
    // Either event ends the wait: the breaker counts failures, or the
    // cursor moved although no answer was ever complete.
    wait_until("a failure counted, or a commit", Duration::from_secs(30), || async {
        let st = destination(&b.url, "w").await;
        st["breaker"]["consecutive_failures"].as_u64() >= Some(1) || committed_and_end(&st).0 > 0
    })
    .await;
    let st = destination(&b.url, "w").await;
    assert_eq!(committed_and_end(&st).0, 0, "committed on a 200 whose body was cut short: {st}");
    drop(_e);
    drop(b);
    retryable(Mode::CloseMidResponse, "closed mid-response").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_429_with_retry_after_is_honoured_before_the_next_attempt() {
    let (_b, sink) = retryable(Mode::Status(429, vec![("retry-after".into(), "2".into())]), "429").await;
    let log = sink.log.lock().unwrap().clone();
    let throttled: Vec<_> = log.iter().filter(|(_, m)| matches!(m, Mode::Status(429, _))).collect();
    assert!(throttled.len() >= 2);
    // Each attempt after a 429 came at least Retry-After (2 s) later.
    for pair in log.windows(2) {
        if matches!(pair[0].1, Mode::Status(429, _)) {
            let gap = pair[1].0 - pair[0].0;
            assert!(gap >= Duration::from_millis(1900), "an attempt {gap:?} after a 429 with Retry-After: 2");
        }
    }
}

/// A poison answer: every record dead-lettered (with the answer in its
/// error), the cursor moves past them, the breaker stays closed, nothing
/// counts as delivered; a re-drive after the fix delivers them.
async fn poison(mode: Mode, what: &str, error_has: &[&str]) {
    let b = start_with_records().await;
    let sink = RawSink::start(mode).await;
    let mut e = ExporterProc::start(&b.url, "w", "w-t", &sink.url, ARGS);
    wait_until(
        &format!("{what}: every record dead-lettered and the cursor past them"),
        Duration::from_secs(30),
        || async {
            let st = destination(&b.url, "w").await;
            let (c, end) = committed_and_end(&st);
            st["dead_letter_records"] == N as u64 && c == end && st["leases_in_flight"] == 0
        },
    )
    .await;
    let st = destination(&b.url, "w").await;
    assert_eq!(st["breaker"]["state"], "closed", "{what}: a poison answer does not trip the breaker: {st}");
    assert_eq!(st["breaker"]["consecutive_failures"], 0, "{what}: {st}");
    assert_eq!(breaker_metric(&b.url).await, 0.0);
    assert_eq!(metric(&b.url, "weir_dead_letter_records_total{destination=\"w\"}").await, N as f64);
    assert!(sink.lines().is_empty(), "{what}: nothing counts as delivered");
    let dl = admin_get(&b.url, "/v1/admin/destinations/w/dead-letters").await;
    let dl = dl.as_array().cloned().unwrap_or_default();
    assert_eq!(dl.len(), N, "{dl:?}");
    for d in &dl {
        let err = d["error"].as_str().unwrap_or("");
        for want in error_has {
            assert!(err.contains(want), "{what}: dead letter error {err:?} lacks {want:?}");
        }
    }
    sink.set(Mode::Accept);
    let r = admin_post(&b.url, "/v1/admin/destinations/w/redrive", serde_json::json!({})).await;
    assert_eq!(r.status, 200, "{r:?}");
    wait_until(&format!("{what}: re-driven records delivered"), Duration::from_secs(30), || async {
        let lines = sink.lines();
        ids().iter().all(|id| lines.contains(id)) && destination(&b.url, "w").await["dead_letter_records"] == 0
    })
    .await;
    assert_eq!(sink.lines().len(), N);
    assert_eq!(e.sigterm(), Some(0));
}

/// Records of both tenants (acme the first half of `ids()`, globex the rest).
async fn start_with_records_of_two_tenants() -> BrokerProc {
    let b = BrokerProc::start(DEST);
    let ids = ids();
    for (token, part) in [("acme-t", &ids[..N / 2]), ("globex-t", &ids[N / 2..])] {
        let body: String = part.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(ingest(&b.url, token, "events", body).await.status, 200);
    }
    b
}

/// Issue 19, defect 9: a sink answering 307 (or 401, 403, 404) to every
/// request dead-lettered the whole backlog at full speed and the breaker
/// never opened. Such a status is about the endpoint, not the records:
/// nothing is dead-lettered (while several breaker probes go by), the
/// breaker opens, and once the endpoint is fixed every record is delivered
/// exactly once. Fails on 39baa17 (3xx and other 4xx were poison).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_endpoint_statuses_keep_the_records_open_the_breaker_and_deliver_after_the_fix() {
    let location = || vec![("location".to_string(), "http://127.0.0.1:9/elsewhere".to_string())];
    for (code, headers) in [(307, location()), (302, location()), (401, vec![]), (403, vec![]), (404, vec![])] {
        let what = format!("{code} to everything");
        let b = start_with_records_of_two_tenants().await;
        let sink = RawSink::start(Mode::Status(code, headers)).await;
        let mut e = ExporterProc::start(&b.url, "w", "w-t", &sink.url, ARGS);
        assert_retryable_fault(&b, &what).await;
        // Past more than one breaker period: still nothing dead-lettered.
        let tried = sink.requests.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let st = destination(&b.url, "w").await;
        assert_eq!(st["dead_letter_records"], 0, "{what}: {st}");
        assert_eq!(committed_and_end(&st).0, 0, "{what}: {st}");
        let tried_after = sink.requests.load(std::sync::atomic::Ordering::Relaxed);
        assert!(tried_after > tried, "{what}: the breaker lets probes through");
        // Whole batches only: a bisection would send single records.
        assert!(tried_after < 50, "{what}: {tried_after} requests: bisected, or no breaker");
        sink.set(Mode::Accept);
        assert_recovered(&b, &sink, &what, true).await;
        assert_eq!(e.sigterm(), Some(0), "{what}: the exporter stops cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_4xx_is_poison_dead_lettered_and_redriven_after_the_fix() {
    poison(Mode::Status(400, vec![]), "400", &["400"]).await;
}

/// The exporter's adaptive concurrency, against a real sink: it rises
/// while a steady sink keeps up with a backlog, and a 429 (with no
/// Retry-After, so nothing else slows the exporter) lowers it. The other
/// two treatments of a 429 — the delivery honouring its Retry-After, the
/// breaker counting it — are the test above and `retryable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_429_lowers_the_exporters_adaptive_concurrency() {
    let b = BrokerProc::start(
        "lease_timeout_ms = 3000\n[[destination]]\nname = \"w\"\ntopics = [\"events\"]\ntoken = \"w-t\"\nfailure_threshold = 1000\nbreaker_open_ms = 100\n",
    );
    // A backlog that lasts until the limit has risen (bounded: 1,000 batches).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (url, stop) = (b.url.clone(), std::sync::Arc::clone(&stop));
        tokio::spawn(async move {
            for r in 0..1000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let body: String = (0..20).map(|i| format!("{{\"id\":\"c{r}-{i}\"}}\n")).collect();
                assert_eq!(ingest(&url, "acme-t", "events", body).await.status, 200);
            }
        })
    };
    let sink = RawSink::start(Mode::Slow(Duration::from_millis(5))).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let args = ["--batch-records", "20", "--max-retries", "0", "--wait-ms", "200", "--metrics-listen", &listen];
    let _e = ExporterProc::start(&b.url, "w", "w-t", &sink.url, &args);
    let limit = exporter_limit(format!("http://127.0.0.1:{port}/metrics"));
    wait_until("the limit rises while the sink keeps up", Duration::from_secs(60), || async {
        limit().await.is_some_and(|l| l >= 3.0)
    })
    .await;
    let peak = limit().await.expect("a limit");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    producer.await.expect("producer");
    sink.set(Mode::Status(429, vec![]));
    wait_until("a 429 lowers the limit", Duration::from_secs(30), || async { limit().await.is_some_and(|l| l < peak) })
        .await;
    sink.set(Mode::Accept);
    wait_until("everything delivered after the sink recovers", Duration::from_secs(120), || async {
        let st = destination(&b.url, "w").await;
        let (committed, end) = committed_and_end(&st);
        end > 0 && committed == end
    })
    .await;
}

/// Issue 24: a worker-pool sink (4 requests at once, 20 ms each; more
/// wait their turn, as behind gunicorn's workers), fed in bursts of 8
/// single-record leases. The exporter's adaptive limit learns the pool's
/// width from the round trips of the deliveries started past it and holds
/// there (not under it), so the rest of a burst waits in the broker — where the tenant
/// share orders it — not inside the sink in arrival order. With the
/// windows' mean alone (the learner turned off) the limit stayed at 5 or
/// more for all 200 bursts, and the test fails there; now only the rare
/// probe of one more waits for a worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_pool_sinks_width_is_learned_and_requests_stop_queueing_inside_it() {
    const WIDTH: usize = 4;
    const BURST: u64 = 8;
    let b = BrokerProc::start(DEST);
    let sink = RawSink::start(Mode::Pool(WIDTH, Duration::from_millis(20))).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let args = ["--batch-records", "1", "--wait-ms", "1000", "--metrics-listen", &listen];
    let _e = ExporterProc::start(&b.url, "w", "w-t", &sink.url, &args);
    let limit = exporter_limit(format!("http://127.0.0.1:{port}/metrics"));
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    // One burst: 8 records at once, then wait until the sink has all of them.
    let burst = |n: u64| {
        let (url, sink_requests) = (b.url.clone(), std::sync::Arc::clone(&sink.requests));
        async move {
            let posts: Vec<_> = (0..BURST)
                .map(|i| {
                    let url = url.clone();
                    tokio::spawn(
                        async move { ingest(&url, "acme-t", "events", format!("{{\"id\":\"b{n}-{i}\"}}\n")).await },
                    )
                })
                .collect();
            for p in posts {
                assert_eq!(p.await.expect("post").status, 200);
            }
            let want = (n + 1) * BURST;
            wait_until("the burst delivered", Duration::from_secs(30), || {
                let got = sink_requests.load(std::sync::atomic::Ordering::Relaxed);
                async move { got >= want }
            })
            .await;
        }
    };
    // Bursts until the limit has come down to the pool (at most 200).
    let mut n = 0;
    while n < 200 && !(n >= 20 && limit().await.is_some_and(|l| l <= WIDTH as f64)) {
        burst(n).await;
        n += 1;
    }
    assert!(n < 200, "the limit never settled at the pool's width: {:?}", limit().await);
    let (requests, queued) = (count(&sink.requests), count(&sink.queued));
    let mut lowest = f64::MAX;
    for k in n..n + 60 {
        burst(k).await;
        lowest = lowest.min(limit().await.unwrap_or(0.0));
    }
    let (requests, queued) = (count(&sink.requests) - requests, count(&sink.queued) - queued);
    assert!(
        queued * 10 < requests,
        "{queued} of {requests} requests waited for a worker: the limit {:?}",
        limit().await
    );
    // Nor under the pool: a cap that learned too little would pass the above.
    assert!(lowest >= (WIDTH - 1) as f64, "the limit fell to {lowest} against a pool of {WIDTH}");
}

/// The exporter's `weir_exporter_concurrency_limit`, read from its /metrics.
fn exporter_limit(
    metrics_url: String,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<f64>>>> {
    move || {
        let url = metrics_url.clone();
        Box::pin(async move {
            let text = client().get(&url).send().await.ok()?.text().await.ok()?;
            let line = text.lines().find(|l| l.starts_with("weir_exporter_concurrency_limit{"))?;
            line.rsplit(' ').next()?.parse::<f64>().ok()
        })
    }
}

/// Issue 22: a sink's 410 Gone ("stop sending", as Standard Webhooks and
/// Svix mean it) pauses the destination: the lease is given back (nothing
/// dead-lettered, nothing committed), `paused_reason` says why in the
/// admin JSON, `weir_destination_paused` is 1; a resume sends again and
/// every record arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_410_pauses_the_destination_until_a_resume_and_loses_nothing() {
    let b = start_with_records_of_two_tenants().await;
    let sink = RawSink::start(Mode::Status(410, vec![])).await;
    let mut e = ExporterProc::start(&b.url, "w", "w-t", &sink.url, ARGS);
    wait_until("the 410 paused the destination", Duration::from_secs(30), || async {
        let st = destination(&b.url, "w").await;
        st["paused"] == true && st["leases_in_flight"] == 0
    })
    .await;
    let st = destination(&b.url, "w").await;
    let reason = st["paused_reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("410"), "paused_reason names the 410: {st}");
    assert_eq!(st["dead_letter_records"], 0, "{st}");
    assert_eq!(committed_and_end(&st).0, 0, "{st}");
    assert_eq!(metric(&b.url, "weir_destination_paused{destination=\"w\"}").await, 1.0);
    let tried = sink.requests.load(std::sync::atomic::Ordering::Relaxed);
    assert!((1..10).contains(&tried), "{tried} requests: a paused destination gets no new lease");
    sink.set(Mode::Accept);
    let resumed = admin_post(&b.url, "/v1/admin/destinations/w/resume", serde_json::json!({})).await;
    assert_eq!(resumed.status, 200, "{resumed:?}");
    let st = destination(&b.url, "w").await;
    assert!(st["paused_reason"].is_null(), "a resume clears the reason: {st}");
    assert_recovered(&b, &sink, "410 then resume", true).await;
    assert_eq!(metric(&b.url, "weir_destination_paused{destination=\"w\"}").await, 0.0);
    assert_eq!(e.sigterm(), Some(0));
}
