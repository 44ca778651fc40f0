//! Issue 19, defect 13: an `Idempotency-Key` names one request. Reused for
//! another topic, content type or body it is refused (422
//! `idempotency_key_reused`, nothing appended, counted); a retry of the same
//! request — compressed differently or not — gets the first answer; and the
//! fingerprint survives a `kill -9` of the broker.

mod common;

use common::*;
use std::io::Write;

const KEY: &str = "order-42";
const BODY: &str = "{\"order\":42}\n{\"line\":2}\n";

/// POST `body` to `topic` for acme under [`KEY`].
async fn send(url: &str, topic: &str, content_type: &str, gzip: bool, body: Vec<u8>) -> Answer {
    let mut req = client()
        .post(format!("{url}/v1/topics/{topic}/records"))
        .bearer_auth("acme-t")
        .header("content-type", content_type)
        .header("idempotency-key", KEY);
    if gzip {
        req = req.header("content-encoding", "gzip");
    }
    answer(req.body(body).send().await.expect("ingest request")).await
}

fn gzipped(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(body).expect("gzip");
    enc.finish().expect("gzip")
}

/// Every record on disk, as (topic, payload).
fn stored(data_dir: &std::path::Path) -> Vec<(String, String)> {
    let (code, out, err) = run_admin(&["dump", "--data-dir", data_dir.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("dump line");
            (v["topic"].as_str().unwrap_or("").to_string(), v["payload"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

/// Every way to reuse the key for another request: 422, nothing appended.
async fn every_other_request_is_refused(url: &str) -> usize {
    let others: [(&str, &str, bool, Vec<u8>); 5] = [
        ("other", "application/x-ndjson", false, BODY.into()),
        ("events", "application/x-ndjson", false, b"{\"order\":43}\n".to_vec()),
        ("events", "application/x-ndjson", false, format!("{BODY}{{\"line\":3}}\n").into_bytes()),
        ("events", "application/octet-stream", false, BODY.into()),
        ("events", "application/x-ndjson", true, gzipped(b"{\"order\":43}\n")),
    ];
    for (topic, ct, gz, body) in others.iter().cloned() {
        let a = send(url, topic, ct, gz, body).await;
        a.assert_error(422, "idempotency_key_reused", false);
        assert!(a.message().contains("Idempotency-Key"), "{a:?}");
    }
    others.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_idempotency_key_is_refused_a_gzip_retry_replays_and_the_fingerprint_survives_a_kill() {
    let mut b = BrokerProc::start("");
    let reused = r#"weir_idempotency_key_reused_total{tenant="#;
    assert_eq!(metric(&b.url, &format!("{reused}\"globex\"}}")).await, 0.0);
    let first = send(&b.url, "events", "application/x-ndjson", false, BODY.into()).await;
    assert_eq!(first.status, 200, "{first:?}");
    let refused = every_other_request_is_refused(&b.url).await;
    assert_eq!(metric(&b.url, &format!("{reused}\"acme\"}}")).await, refused as f64);
    // The same request compressed, and with a parameter on its media type: the first answer.
    let gz = send(&b.url, "events", "application/x-ndjson", true, gzipped(BODY.as_bytes())).await;
    assert_eq!((gz.status, &gz.json), (200, &first.json));
    let param = send(&b.url, "events", "Application/X-Ndjson; charset=utf-8", false, BODY.into()).await;
    assert_eq!((param.status, &param.json), (200, &first.json));

    // kill -9: the window, fingerprints included, is rebuilt from the WAL.
    b.kill9();
    b.start_again();
    every_other_request_is_refused(&b.url).await;
    let again = send(&b.url, "events", "application/x-ndjson", true, gzipped(BODY.as_bytes())).await;
    assert_eq!((again.status, &again.json), (200, &first.json));
    assert_eq!(
        stored(&b.data_dir),
        vec![("events".to_string(), "{\"order\":42}".to_string()), ("events".to_string(), "{\"line\":2}".to_string())],
        "the first request's records, once; nothing of the refused ones"
    );
}
