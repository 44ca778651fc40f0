//! Issue 19, defect 17 at the broker: a WAL lane whose writer thread panics
//! answers ingest 503 `wal_unavailable` (with `Retry-After`, saying the
//! writer stopped unexpectedly) at once, every time, instead of queueing
//! requests forever; `/readyz` is 503 and names the lane and why; after a
//! restart every acknowledged record is there and the lane serves again.
//! The panic is injected by the simulated disk (`SimFs::panic_next_sync`).

mod common;

use common::sim_broker::{no_pool_client, wal_records, SimBroker};
use common::*;
use std::time::Duration;
use wal::sim::SimFs;

/// One shard per priority: every acme request goes to the same lane.
const ONE_LANE: &str = "shards = 1";

/// Ingest one NDJSON body as acme, keeping no idle connection (a graceful
/// stop waits for those).
async fn ingest_one(url: &str, body: &'static str) -> Answer {
    let resp = no_pool_client()
        .post(format!("{url}/v1/topics/events/records"))
        .bearer_auth("acme-t")
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("ingest request");
    answer(resp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_whose_writer_panicked_answers_503_wal_unavailable_and_readyz_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = SimFs::new(17);
    let b = SimBroker::start(&mount, tmp.path(), ONE_LANE).await;
    let ok = ingest_one(&b.url, "{\"n\":1}\n").await;
    assert_eq!(ok.status, 200, "{:?}", ok.json);
    let lane = ok.json["lane"].as_str().expect("lane").to_string();

    mount.panic_next_sync();
    for attempt in 0..3 {
        let a = tokio::time::timeout(Duration::from_secs(10), ingest_one(&b.url, "{\"n\":2}\n"))
            .await
            .unwrap_or_else(|_| panic!("attempt {attempt}: an ingest to the stopped lane hangs"));
        assert_eq!((a.status, a.code()), (503, "wal_unavailable"), "attempt {attempt}: {:?}", a.json);
        assert!(a.retry_after.is_some(), "attempt {attempt}: 503 without Retry-After");
        assert!(a.message().contains("stopped unexpectedly"), "attempt {attempt}: {}", a.message());
    }
    let ready = no_pool_client().get(format!("{}/readyz", b.url)).send().await.unwrap();
    let status = ready.status().as_u16();
    let body = ready.text().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&lane) && body.contains("writer stopped unexpectedly"), "{body}");
    b.stop().await;

    // A restart (the process's threads are gone): the lane serves again.
    let mount = mount.remount();
    let b = SimBroker::start(&mount, tmp.path(), ONE_LANE).await;
    let again = ingest_one(&b.url, "{\"n\":3}\n").await;
    assert_eq!(again.status, 200, "{:?}", again.json);
    let ready = no_pool_client().get(format!("{}/readyz", b.url)).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    b.stop().await;
    let held: Vec<Vec<u8>> = wal_records(&mount.crash(), tmp.path()).into_iter().map(|(_, _, r)| r).collect();
    for acked in [&b"{\"n\":1}"[..], b"{\"n\":3}"] {
        assert!(held.iter().any(|r| r == acked), "acknowledged {:?} lost", String::from_utf8_lossy(acked));
    }
}
