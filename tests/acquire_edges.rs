//! Issue 19, defects 16 and 18(b), against a real broker: SIGTERM answers an
//! open acquire long-poll idle at once (it does not sit out
//! `shutdown_drain_ms` and then cut the poll), and an `Accept` that refuses
//! the binary lease format with `Q=0` (parameter names are
//! case-insensitive) gets v1 JSON.

mod common;

use common::*;
use std::time::{Duration, Instant};

const DEST: &str = "[[destination]]\nname = \"d\"\ntopics = [\"events\"]\ntoken = \"d-t\"\n";

/// An acquire of destination `d` waiting up to `wait_ms`: (status, content type, body).
async fn acquire(url: &str, accept: &str, wait_ms: u64) -> (u16, String, bytes::Bytes) {
    let resp = client()
        .post(format!("{url}/v1/destinations/d/leases"))
        .bearer_auth("d-t")
        .header("accept", accept)
        .timeout(Duration::from_secs(60))
        .json(&serde_json::json!({"max_records": 100, "wait_ms": wait_ms}))
        .send()
        .await
        .expect("acquire answered");
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (status, ct, resp.bytes().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_an_open_long_poll_idle_at_once_and_exits_well_before_the_drain() {
    // A drain far longer than the bound below: waiting it out fails the test.
    let drain_ms = 60_000;
    let b = BrokerProc::start(&format!("shutdown_drain_ms = {drain_ms}\nmax_long_poll_ms = 20000\n{DEST}"));
    let url = b.url.clone();
    let poll = tokio::spawn(async move { acquire(&url, "application/json", 20_000).await });
    // Let the acquire reach its wait (nothing to lease: it waits).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(!poll.is_finished(), "the acquire long-polls while there is nothing to lease");
    let stopped = Instant::now();
    let (b, code) = tokio::task::spawn_blocking(move || {
        let mut b = b;
        let code = b.stop_signal(libc::SIGTERM);
        (b, code)
    })
    .await
    .expect("stop task");
    let exited_after = stopped.elapsed();
    let (status, ct, body) = tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .expect("the long-poll is answered")
        .expect("poll task");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(ct.starts_with("application/json"), "{ct}");
    let a: protocol::lease::AcquireResponse = serde_json::from_slice(&body).expect("an acquire answer");
    assert!(a.lease.is_none(), "{a:?}");
    assert_eq!(a.idle, Some(protocol::lease::IdleReason::Empty), "{a:?}");
    assert_eq!(code, Some(0), "a clean stop");
    assert!(
        exited_after < Duration::from_millis(drain_ms / 4),
        "exited {exited_after:?} after SIGTERM: it waited for the long-poll"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_refusing_the_binary_lease_format_with_upper_case_q_zero_gets_json() {
    let b = BrokerProc::start(DEST);
    let v2 = protocol::lease_binary::CONTENT_TYPE;
    for refused in [format!("{v2};Q=0"), format!("{v2}; Q=0.000"), format!("{v2} ;Q=0, application/json;q=0.5")] {
        let (status, ct, _) = acquire(&b.url, &refused, 0).await;
        assert_eq!(status, 200);
        assert!(ct.starts_with("application/json"), "Accept {refused:?} refuses v2, got {ct}");
    }
    // A positive weight in any case still asks for v2.
    let (status, ct, _) = acquire(&b.url, &format!("{v2};Q=1"), 0).await;
    assert_eq!((status, ct.as_str()), (200, v2));
}
