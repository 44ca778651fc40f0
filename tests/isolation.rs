//! Tenants are adversaries of each other (issue 19, defects 2 and 3): one
//! tenant's slow, empty or huge bodies and its connections, and anyone's
//! idle connections, change nothing in another tenant's answers, an
//! exporter's leases and commits, or `/readyz`. Real broker, raw TCP
//! clients on loopback.
//!
//! On 39baa17: about 45 header-only requests declaring a large body spent
//! the memory budget (every other ingest and the exporters' acquire and
//! commit answered 503 `overloaded`); 64 idle connections to a broker with
//! `max_connections = 64` locked everyone out for 30 s.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEST: &str = r#"
[[destination]]
name = "d"
topics = ["events"]
token = "d-t"
"#;

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// A request head for `acme`'s ingest declaring `len` body bytes.
fn ingest_head(token: &str, len: usize) -> String {
    format!(
        "POST /v1/topics/events/records HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/x-ndjson\r\ncontent-length: {len}\r\n\r\n"
    )
}

/// What the others see while the attack holds: a globex ingest, an
/// exporter's acquire and commit, and `/readyz`, each answered as usual.
async fn others_are_served(url: &str, round: usize) {
    let a = ingest(url, "globex-t", "events", format!("{{\"round\":{round}}}\n")).await;
    assert_eq!(a.status, 200, "globex's ingest during the attack: {a:?}");
    let c = client();
    let acquire = c
        .post(format!("{url}/v1/destinations/d/leases"))
        .bearer_auth("d-t")
        .json(&serde_json::json!({"max_records": 100, "wait_ms": 0}))
        .send()
        .await
        .expect("acquire");
    let acquired = answer(acquire).await;
    assert_eq!(acquired.status, 200, "the exporter's acquire during the attack: {acquired:?}");
    if let Some(id) = acquired.json["lease"]["id"].as_str() {
        let commit = c
            .post(format!("{url}/v1/destinations/d/leases/{id}/commit"))
            .bearer_auth("d-t")
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("commit");
        let committed = answer(commit).await;
        assert_eq!(committed.status, 200, "the exporter's commit during the attack: {committed:?}");
    }
    let ready = c.get(format!("{url}/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 200, "/readyz during the attack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_silent_stalled_and_huge_bodies_change_nothing_for_the_others() {
    let b = BrokerProc::start(&format!(
        "max_body_bytes = 1048576\nmax_inflated_bytes = 1048576\nmemory_budget_bytes = 8388608\nmemory_budget_tenant_share = 0.25\nbody_read_timeout_ms = 20000\n{DEST}"
    ));
    let mut held = Vec::new();
    // 45 heads declaring 1 MiB and sending nothing.
    for _ in 0..45 {
        let mut s = TcpStream::connect(addr(&b.url)).await.expect("connect");
        s.write_all(ingest_head("acme-t", 1 << 20).as_bytes()).await.expect("head");
        held.push(s);
    }
    // 12 that send half their body, then stall.
    let half = vec![b'x'; 512 << 10];
    for _ in 0..12 {
        let mut s = TcpStream::connect(addr(&b.url)).await.expect("connect");
        s.write_all(ingest_head("acme-t", 1 << 20).as_bytes()).await.expect("head");
        let _ = s.write_all(&half).await;
        held.push(s);
    }
    // acme reaches its share: its stalled bodies hold what they sent.
    wait_until("acme's bodies fill its share of the budget", Duration::from_secs(30), || async {
        metric(&b.url, "weir_http_refused_total{reason=\"memory_tenant_share\"}").await >= 1.0
    })
    .await;
    for round in 0..5 {
        others_are_served(&b.url, round).await;
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_lock_out_producers_exporters_or_readyz() {
    let b = BrokerProc::start(&format!("max_connections = 64\nfirst_byte_timeout_ms = 1000\n{DEST}"));
    // Keep 100 silent connections open, reopening any the broker closes.
    let target = addr(&b.url);
    let attack = tokio::spawn(async move {
        let mut idle = Vec::new();
        for _ in 0..400 {
            while idle.len() < 100 {
                match TcpStream::connect(&target).await {
                    Ok(s) => idle.push(s),
                    Err(_) => break,
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            idle.retain(|s: &TcpStream| {
                let mut probe = [0u8; 1];
                !matches!(s.try_read(&mut probe), Ok(0))
            });
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // the attack is in place
    for round in 0..5 {
        others_are_served(&b.url, round).await;
    }
    attack.abort();
    let evicted = metric(&b.url, "weir_http_refused_total{reason=\"evicted\"}").await;
    let timed_out = metric(&b.url, "weir_http_refused_total{reason=\"first_byte_timeout\"}").await;
    assert!(evicted + timed_out > 0.0, "silent connections were closed: evicted {evicted}, timed out {timed_out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_connection_cap_takes_no_other_tenants_connections() {
    let b = BrokerProc::start(&format!("max_connections = 64\nmax_connections_per_tenant = 4\n{DEST}"));
    let mut acme = Vec::new();
    for i in 0..4 {
        let mut s = TcpStream::connect(addr(&b.url)).await.expect("connect");
        let body = format!("{{\"i\":{i}}}\n");
        s.write_all(format!("{}{body}", ingest_head("acme-t", body.len())).as_bytes()).await.expect("send");
        let answer = read_answer(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        acme.push(s); // kept open: keep-alive, seated as acme's
    }
    let mut fifth = TcpStream::connect(addr(&b.url)).await.expect("connect");
    let body = "{\"i\":5}\n";
    fifth.write_all(format!("{}{body}", ingest_head("acme-t", body.len())).as_bytes()).await.expect("send");
    let answer = read_answer(&mut fifth).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "acme's fifth connection: {answer}");
    assert!(answer.contains("overloaded"), "{answer}");
    others_are_served(&b.url, 0).await;
}

/// An early refusal (a bad token) of a body larger than the socket
/// buffers is answered, not reset: 50 tries, every one reads its 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_refusal_of_a_large_body_is_answered_not_reset() {
    let b = BrokerProc::start(DEST);
    let body = vec![b'{'; 256 << 10];
    for i in 0..50 {
        let mut s = TcpStream::connect(addr(&b.url)).await.expect("connect");
        s.write_all(ingest_head("not-a-token", body.len()).as_bytes()).await.expect("head");
        // Like a proxy: the whole body goes out before the answer is read.
        let sent = s.write_all(&body).await;
        let answer = read_answer(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "try {i}: sent {sent:?}, read {answer:?}");
    }
}

async fn read_answer(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length: ").and_then(|v| v.trim().parse::<usize>().ok())
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).to_string()
}
