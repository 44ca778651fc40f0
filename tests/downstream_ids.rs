//! Downstream ids (issue 19, defect 1; contract v1.2): a receiver that
//! deduplicates on the webhook's `Idempotency-Key` keeps every record of
//! two brokers, through a rewind and through a data directory restored
//! from a copy that then takes new records. On the code before the fix the
//! key was `{dest}/{lane}/{first}-{last}`: both brokers sent `d1/…/0-4`
//! for different records and the receiver dropped one broker's batch.
//!
//! The brokers are reached directly here; the same check behind the
//! shipped nginx template belongs with the scale-out proxy (defect 5).

mod common;

use common::dedup::{copy_dir, start_receiver, Dedup};
use common::*;
use std::collections::HashSet;
use std::time::Duration;

const DEST: &str = r#"
[[destination]]
name = "d1"
topics = ["events"]
token = "d1-t"
"#;

fn kept(r: &Dedup) -> HashSet<String> {
    r.kept()
}

/// Send `n` records, one request each (one frame, one offset each), ids `prefix-i`.
async fn send(url: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for i in 0..n {
        let line = format!("{{\"id\":\"{prefix}-{i}\"}}");
        let a = ingest(url, "acme-t", "events", format!("{line}\n")).await;
        assert_eq!(a.status, 200, "{a:?}");
        lines.push(line);
    }
    lines
}

async fn all_kept(what: &str, r: &Dedup, want: &HashSet<String>) {
    wait_until(what, Duration::from_secs(30), || async { want.is_subset(&kept(r)) }).await;
}

fn exporter(url: &str, hook: &str) -> ExporterProc {
    ExporterProc::start(url, "d1", "d1-t", hook, &["--wait-ms", "200", "--batch-records", "5"])
}

async fn broker_id(url: &str) -> String {
    let v: serde_json::Value =
        client().get(format!("{url}/readyz")).send().await.expect("readyz").json().await.expect("json");
    v["broker_id"].as_str().expect("readyz names the broker").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deduplicating_receiver_keeps_every_record_of_two_brokers_through_rewind_and_restore() {
    let (hook, rx) = start_receiver().await;
    let mut b1 = BrokerProc::start(DEST);
    let mut b2 = BrokerProc::start(DEST);
    let (id1, id2) = (broker_id(&b1.url).await, broker_id(&b2.url).await);
    assert_ne!(id1, id2, "two fresh data directories, two broker ids");
    assert_eq!(id1.len(), 32);

    // Two brokers, same offsets, different records.
    let mut want: HashSet<String> = send(&b1.url, "one", 5).await.into_iter().collect();
    want.extend(send(&b2.url, "two-a", 5).await);
    let mut e1 = exporter(&b1.url, &hook);
    let mut e2 = exporter(&b2.url, &hook);
    all_kept("both brokers' records", &rx, &want).await;

    // A rewind redelivers: duplicates may be dropped, nothing else.
    let (code, _, err) =
        run_admin(&["rewind", "--broker", &b1.url, "--token", "admin-t", "--destination", "d1", "--earliest"]);
    assert_eq!(code, 0, "{err}");
    want.extend(send(&b1.url, "one-after-rewind", 3).await);
    all_kept("records after the rewind", &rx, &want).await;

    // A copy of broker 2's directory, then more records on the original.
    assert_eq!(e2.sigterm(), Some(0));
    assert_eq!(b2.stop_signal(libc::SIGTERM), Some(0));
    let copy = b2.data_dir.with_extension("copy");
    copy_dir(&b2.data_dir, &copy);
    b2.start_again();
    e2 = exporter(&b2.url, &hook);
    want.extend(send(&b2.url, "two-b", 5).await);
    all_kept("records before the restore", &rx, &want).await;

    // Restore the copy: offsets 5.. are taken again, by other records.
    assert_eq!(e2.sigterm(), Some(0));
    assert_eq!(b2.stop_signal(libc::SIGTERM), Some(0));
    std::fs::remove_dir_all(&b2.data_dir).expect("remove");
    std::fs::rename(&copy, &b2.data_dir).expect("restore the copy");
    b2.start_again();
    assert_eq!(broker_id(&b2.url).await, id2, "a restored copy keeps its id");
    let _e2 = exporter(&b2.url, &hook);
    want.extend(send(&b2.url, "two-c", 5).await);
    all_kept("records written after the restore", &rx, &want).await;

    assert_eq!(*rx.missing_key.lock().unwrap(), 0, "every request carries a key");
    let received = kept(&rx);
    let lost: Vec<&String> = want.difference(&received).collect();
    assert!(lost.is_empty(), "a receiver that deduplicates dropped {lost:?}");
    assert_eq!(e1.sigterm(), Some(0));
    let _ = b1.stop_signal(libc::SIGTERM);
}
