//! Broker-level power loss: the whole broker (HTTP, ingest, WAL) over the
//! simulated filesystem, which on a crash drops every unsynced byte, tears
//! the first unsynced write of each file at sector granularity and rolls
//! back unsynced directory entries. Producers ingest; the power is cut at a
//! random point (at once, or at a random upcoming filesystem operation);
//! the broker is opened again on what the disk kept. At the end every
//! acknowledged record is stored exactly once at the offset its answer
//! named, unanswered batches are whole or absent, nothing is corrupt.
//!
//! Long run: `WEIR_POWER_CYCLES=500 cargo test --release --test power_loss -- --nocapture`
//! (`WEIR_POWER_SEED=<n>` replays one).

mod common;

use common::ledger::{self, Ledger, Outcome, Rng};
use common::sim_broker::{no_pool_client, wal_records, SimBroker};
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wal::sim::SimFs;

/// Ingest until `stop`: batches of 1..=6 unique records. 200 is
/// acknowledged; anything else (the power is out) is unknown.
async fn produce(
    url: String,
    tag: String,
    ledger: Arc<Ledger>,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    seed: u64,
) {
    let c = no_pool_client();
    let mut rng = Rng::new(seed);
    let token = if seed.is_multiple_of(2) { "acme-t" } else { "globex-t" };
    for i in 0..1_000_000u64 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let ids: Vec<String> = (0..rng.range(1, 6)).map(|k| format!("{tag}-r{i}-{k}")).collect();
        let started = Instant::now();
        let resp = c
            .post(format!("{url}/v1/topics/events/records"))
            .bearer_auth(token)
            .header("content-type", "application/x-ndjson")
            .body(ledger::ndjson(&ids))
            .send()
            .await;
        let outcome = match resp {
            Ok(r) if r.status() == 200 => {
                let v: serde_json::Value = r.json().await.expect("200 body");
                acked.fetch_add(ids.len() as u64, Ordering::Relaxed);
                Outcome::Acked {
                    lane: v["lane"].as_str().unwrap().into(),
                    first_offset: v["first_offset"].as_u64().unwrap(),
                }
            }
            Ok(r) => {
                let a = answer(r).await;
                seen.lock().unwrap().push(format!("{} {}", a.status, a.code()));
                Outcome::Unknown
            }
            Err(e) => panic!("request failed without an answer after {:?}: {e}", started.elapsed()),
        };
        let refused = !matches!(outcome, Outcome::Acked { .. });
        ledger.push(ids, outcome);
        if refused {
            // The lane failed closed; give the loop a moment instead of spinning.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_loop_keeps_every_acknowledged_record_exactly_once() {
    let cycles = ledger::knob("WEIR_POWER_CYCLES", 40);
    let seed = ledger::seed("WEIR_POWER_SEED");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ledger = Arc::new(Ledger::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut mount = SimFs::new(seed);
    let (mut cuts_at_once, mut cuts_at_an_op) = (0, 0);
    for cycle in 0..cycles {
        let b = SimBroker::start(&mount, dir, "").await;
        let ready = no_pool_client().get(format!("{}/readyz", b.url)).send().await.unwrap();
        assert_eq!(ready.status(), 200, "cycle {cycle}: ready after recovery");
        let (acked, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let tag = format!("c{cycle}-p{p}");
                let args = (Arc::clone(&ledger), Arc::clone(&acked), Arc::clone(&stop), Arc::clone(&seen));
                tokio::spawn(produce(b.url.clone(), tag, args.0, args.1, args.2, args.3, rng.next() ^ p))
            })
            .collect();
        let before_cuts = mount.power_cuts();
        let next = if rng.next().is_multiple_of(2) {
            // Power fails at a random upcoming write, sync, create, rename...
            mount.crash_after_ops(rng.range(0, 400));
            let m = &mount;
            wait_until("the armed power cut fires", Duration::from_secs(60), || async { m.power_cuts() > before_cuts })
                .await;
            cuts_at_an_op += 1;
            mount.remount()
        } else {
            // Power fails now, between operations, after some acknowledgements.
            let want = rng.range(0, 200);
            let a = &acked;
            wait_until("some records acknowledged", Duration::from_secs(60), || async {
                a.load(Ordering::Relaxed) >= want
            })
            .await;
            cuts_at_once += 1;
            mount.crash()
        };
        stop.store(true, Ordering::Relaxed);
        for p in producers {
            tokio::time::timeout(Duration::from_secs(30), p).await.expect("no request hangs").expect("producer");
        }
        b.stop().await;
        mount = next;
    }
    // One last start: the broker serves again on what the disk kept.
    let b = SimBroker::start(&mount, dir, "").await;
    let a = ingest(&b.url, "acme-t", "events", ledger::ndjson(&["final-0".to_string()])).await;
    assert_eq!(a.status, 200, "{a:?}");
    ledger.push(
        vec!["final-0".into()],
        Outcome::Acked {
            lane: a.json["lane"].as_str().unwrap().into(),
            first_offset: a.json["first_offset"].as_u64().unwrap(),
        },
    );
    b.stop().await;

    let sent = ledger.sent.lock().unwrap().clone();
    let f = ledger::check(&sent, &wal_records(&mount, dir));
    let seen = seen.lock().unwrap().clone();
    let codes: std::collections::BTreeSet<&String> = seen.iter().collect();
    // While the power is out the WAL cannot accept: the contract's answer is 503 wal_unavailable.
    assert!(seen.iter().all(|s| s == "503 wal_unavailable"), "answers after a power cut: {codes:?}");
    assert!(f.acked_records > 0);
    eprintln!(
        "power loss loop: {cycles} cuts ({cuts_at_once} between operations, {cuts_at_an_op} at an operation), {} acknowledged requests ({} records) all kept, {} unanswered ({} stored whole), answers seen after cuts {codes:?}, wall {:.1} s",
        f.acked_requests,
        f.acked_records,
        f.unknown_requests,
        f.unknown_stored,
        started.elapsed().as_secs_f64()
    );
}
