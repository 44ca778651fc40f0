//! The lease protocol's two formats against a real broker: v2 (binary,
//! asked for with `Accept`) and v1 (JSON, what an exporter from before v2
//! gets) carry the same records byte for byte; and an exporter of this
//! version delivers everything through a broker that answers only v1.

mod common;

use common::*;
use protocol::lease_binary::{self, Decoded};
use std::time::Duration;

const DEST: &str = "[[destination]]\nname = \"d\"\ntopics = [\"events\"]\ntoken = \"d-t\"\n";

/// Records a tenant could send to pose as the format's own structure.
fn hostile() -> Vec<Vec<u8>> {
    vec![
        b"two\nlines".to_vec(),
        b"\n".to_vec(),
        lease_binary::MAGIC.to_vec(),
        vec![0, 0, 0, 0, 0xff, b'\n', 0x80],
        b"{\"payload_b64\":\"AA==\"}".to_vec(),
    ]
}

async fn acquire(url: &str, accept: Option<&str>) -> (Option<String>, bytes::Bytes) {
    let mut req = client()
        .post(format!("{url}/v1/destinations/d/leases"))
        .bearer_auth("d-t")
        .json(&serde_json::json!({"max_records": 100, "wait_ms": 0}));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.expect("acquire");
    assert_eq!(resp.status(), 200);
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    (ct, resp.bytes().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_lease_formats_carry_the_same_records_byte_for_byte() {
    let b = BrokerProc::start(DEST);
    assert_eq!(ingest(&b.url, "acme-t", "events", "{\"a\":1}\n{\"b\":2}\n").await.status, 200);
    for p in hostile() {
        ingest_bytes(&b.url, &p).await;
    }
    let expected: Vec<Vec<u8>> = [b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()].into_iter().chain(hostile()).collect();

    let (ct, body) = acquire(&b.url, Some("application/vnd.weir.lease.v2, application/json;q=0.5")).await;
    assert_eq!(ct.as_deref(), Some(lease_binary::CONTENT_TYPE));
    let v2 = lease_binary::decode(body).expect("a v2 body").lease.expect("a lease");
    let v2_payloads: Vec<Vec<u8>> = v2.records.iter().map(|r| r.payload.to_vec()).collect();
    assert_eq!(v2_payloads, expected, "each record exactly as acknowledged, one record each");
    assert_eq!(v2.tenants, ["acme"]);
    let release = client()
        .post(format!("{}/v1/destinations/d/leases/{}/release", b.url, v2.head.id))
        .bearer_auth("d-t")
        .json(&serde_json::json!({"message": "compare"}))
        .send()
        .await
        .expect("release");
    assert_eq!(release.status(), 200);

    // No Accept, or one that refuses v2: v1 JSON, as before v2.
    let (ct, body) = acquire(&b.url, Some("application/vnd.weir.lease.v2;q=0")).await;
    assert!(ct.as_deref().is_some_and(|t| t.starts_with("application/json")), "{ct:?}");
    let v1: protocol::lease::AcquireResponse = serde_json::from_slice(&body).expect("a v1 body");
    let v1 = Decoded::from(v1).lease.expect("the same range again");
    assert_eq!((v1.head.from_offset, v1.head.to_offset), (v2.head.from_offset, v2.head.to_offset));
    let v1_offsets: Vec<(u64, u64)> = v1.records.iter().map(|r| (r.offset, r.ts_ms)).collect();
    let v2_offsets: Vec<(u64, u64)> = v2.records.iter().map(|r| (r.offset, r.ts_ms)).collect();
    assert_eq!(v1_offsets, v2_offsets);
    assert_eq!(v1.records.iter().map(|r| r.payload.to_vec()).collect::<Vec<_>>(), expected);
    assert!(v1.undecodable.is_empty());

    // An idle answer in v2 is a v2 body too.
    let (ct, body) = acquire(&b.url, Some(lease_binary::CONTENT_TYPE)).await;
    assert_eq!(ct.as_deref(), Some(lease_binary::CONTENT_TYPE));
    let idle = lease_binary::decode(body).expect("a v2 body");
    assert!(idle.lease.is_none() && idle.idle.is_some(), "{idle:?}");
}

/// A broker from before v2, made of this one: a proxy drops the exporter's
/// `Accept`, so the real broker answers v1 JSON to every acquire. Counts
/// the answers by content type.
async fn v1_only_proxy(broker: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use std::sync::atomic::{AtomicU64, Ordering};
    let json_leases = std::sync::Arc::new(AtomicU64::new(0));
    let counter = json_leases.clone();
    let http = reqwest::Client::new();
    let forward = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (http, broker, counter) = (http.clone(), broker.clone(), counter.clone());
        async move {
            let mut req = http.request(method, format!("{broker}{uri}")).body(body);
            for (k, v) in headers.iter().filter(|(k, _)| *k != "accept" && *k != "host") {
                req = req.header(k, v);
            }
            let resp = req.send().await.expect("the broker answers the proxy");
            let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
            let ct = resp.headers().get("content-type").cloned();
            if uri.path().ends_with("/leases")
                && ct.as_ref().is_some_and(|c| c.as_bytes().starts_with(b"application/json"))
            {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            let mut out = HeaderMap::new();
            if let Some(ct) = ct {
                out.insert("content-type", ct);
            }
            (status, out, resp.bytes().await.expect("answer body"))
        }
    };
    let app = axum::Router::new().fallback(forward);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, json_leases)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_delivers_everything_through_a_broker_that_answers_only_v1() {
    let b = BrokerProc::start(DEST);
    for i in 0..20 {
        let body: String = (0..10).map(|k| format!("{{\"id\":{}}}\n", i * 10 + k)).collect();
        assert_eq!(ingest(&b.url, "acme-t", "events", body).await.status, 200);
    }
    for p in hostile() {
        ingest_bytes(&b.url, &p).await;
    }
    let (proxy, json_leases) = v1_only_proxy(b.url.clone()).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("d.ndjson");
    let _e = ExporterProc::start(&proxy, "d", "d-t", &format!("file:{}", out.display()), &["--wait-ms", "200"]);
    let want = 200 + hostile().len();
    wait_until("everything delivered through the v1 broker", Duration::from_secs(30), || async {
        destination(&b.url, "d").await["lag_records"] == 0 && file_lines(&out).len() == want
    })
    .await;
    assert!(json_leases.load(std::sync::atomic::Ordering::Relaxed) > 0, "the leases came as v1 JSON");
    let lines = file_lines(&out);
    for i in 0..200 {
        assert!(lines.contains(&format!("{{\"id\":{i}}}")), "record {i} missing");
    }
    // The hostile records arrive framed, one line each.
    let framed = lines.iter().filter(|l| l.starts_with("{\"payload_b64\":")).count();
    assert_eq!(framed, hostile().len());
}
