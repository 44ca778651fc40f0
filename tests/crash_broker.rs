//! kill -9 the broker (and its exporter) under live producers: after a
//! restart every acknowledged record is in the WAL, and the exporter
//! delivers every one of them at least once, resuming from its cursor.

mod common;

use common::*;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn ids_in(text: &str, field: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| match field {
            "" => v["id"].as_str().map(str::to_string),
            f => serde_json::from_str::<serde_json::Value>(v[f].as_str()?).ok()?["id"].as_str().map(str::to_string),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_broker_and_exporter_loses_no_acknowledged_record() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let text = config(
        &data,
        "lease_timeout_ms = 2000\n[[destination]]\nname = \"f\"\ntopics = [\"events\"]\ntoken = \"f-t\"\n",
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let mut b = BrokerProc::start_with(&data, &text);
    let out = tmp.path().join("out.ndjson");
    let sink = format!("file:{}", out.display());
    let args = ["--lease-timeout-ms", "2000", "--sink-timeout-ms", "300", "--max-retries", "0", "--wait-ms", "200"];
    let mut e = ExporterProc::start(&b.url, "f", "f-t", &sink, &args);

    // Producers: record every acknowledged id; stop at the first failure.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut producers = Vec::new();
    for p in 0..4 {
        let (url, acked) = (b.url.clone(), Arc::clone(&acked));
        producers.push(tokio::spawn(async move {
            for i in 0..100_000 {
                let ids: Vec<String> = (0..3).map(|k| format!("p{p}-{i}-{k}")).collect();
                let body: String = ids.iter().map(|id| format!("{{\"id\":\"{id}\"}}\n")).collect();
                let resp = client()
                    .post(format!("{url}/v1/topics/events/records"))
                    .bearer_auth("acme-t")
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(ids),
                    _ => return,
                }
            }
        }));
    }
    let a = Arc::clone(&acked);
    wait_until("a few hundred acknowledged records", Duration::from_secs(30), || {
        let a = Arc::clone(&a);
        async move { a.lock().unwrap().len() >= 600 }
    })
    .await;
    b.kill9();
    e.kill9();
    for p in producers {
        p.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();

    // Restart both on the same port; the WAL holds every acknowledged record.
    b.start_again();
    let (code, dump, err) = run_admin(&["dump", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let stored = ids_in(&dump, "payload");
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(missing.is_empty(), "{} acknowledged records lost, e.g. {:?}", missing.len(), missing.first());
    let _e2 = ExporterProc::start(&b.url, "f", "f-t", &sink, &args);
    wait_until("the exporter delivered every acknowledged record", Duration::from_secs(60), || async {
        let delivered = ids_in(&std::fs::read_to_string(&out).unwrap_or_default(), "");
        acked.iter().all(|id| delivered.contains(id))
    })
    .await;
    eprintln!("broker kill -9: {} acknowledged records, all stored and delivered", acked.len());
}
