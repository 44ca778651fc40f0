//! SIGHUP reloads under load (issue 23): 50 reloads while 16 producers
//! ingest. A tenant whose configuration does not change sees no failed
//! request; a token rotated through its `tokens_file` (add the new one,
//! move the producers, remove the old) costs no failed request, and the
//! removed token is refused as soon as the reload is done; a bad file is
//! refused with the old configuration in force; a tenant added by a reload
//! is accepted at once, and refused at once when the next removes it.
//! `WEIR_RELOADS=N` runs N reloads (docs/testing.md: the soak).

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

fn broker_config(data: &std::path::Path, acme_tokens: &std::path::Path) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
data_dir = "{}"
admin_token = "admin-t"
segment_bytes = 1048576
disk_high_watermark = 1.0
[[tenant]]
name = "acme"
tokens_file = "{}"
rate_per_sec = 1000000.0
burst = 1000000
[[tenant]]
name = "globex"
token = "globex-t"
rate_per_sec = 1000000.0
burst = 1000000
[[topic]]
name = "events"
"#,
        data.display(),
        acme_tokens.display()
    )
}

async fn reloads_done(url: &str) -> f64 {
    metric(url, "weir_config_reloads_total{result=\"ok\"}").await
        + metric(url, "weir_config_reloads_total{result=\"error\"}").await
}

/// Send SIGHUP and wait until the broker counted the reload.
async fn reload(b: &BrokerProc) {
    let before = reloads_done(&b.url).await;
    unsafe { libc::kill(b.child.id() as i32, libc::SIGHUP) };
    wait_until("the reload is counted", Duration::from_secs(30), || async { reloads_done(&b.url).await > before })
        .await;
}

struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: [Arc<AtomicU64>; 2],
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// 8 producers as globex (never changed) and 8 as acme, with the token
/// `acme` holds now.
fn start_load(url: &str, acme: Arc<RwLock<String>>) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let mut tasks = Vec::new();
    for producer in 0..16 {
        let (stop, sent, url, acme) = (Arc::clone(&stop), Arc::clone(&sent), url.to_string(), Arc::clone(&acme));
        let failed = Arc::clone(&failed[producer % 2]);
        tasks.push(tokio::spawn(async move {
            for _ in 0..1_000_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let token = if producer % 2 == 0 { "globex-t".to_string() } else { acme.read().unwrap().clone() };
                sent.fetch_add(1, Ordering::Relaxed);
                if ingest(&url, &token, "events", "{\"load\":1}").await.status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    Load { stop, sent, failed, tasks }
}

#[tokio::test]
async fn fifty_reloads_under_load_rotate_a_token_and_refuse_a_bad_file_with_no_failed_request() {
    let reloads: usize = std::env::var("WEIR_RELOADS").ok().and_then(|v| v.parse().ok()).unwrap_or(50).max(30);
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("acme.tokens");
    std::fs::write(&tokens, "acme-old\n").unwrap();
    let good = broker_config(&dir.path().join("data"), &tokens);
    let b = BrokerProc::start_with(&dir.path().join("data"), &good);
    let acme = Arc::new(RwLock::new("acme-old".to_string()));
    let load = start_load(&b.url, Arc::clone(&acme));
    let (mut bad_files, rotate_at, retire_at) = (0u32, reloads / 3, 2 * reloads / 3);
    let (add_at, remove_at) = (reloads / 2, reloads / 2 + 1);
    let with_initech =
        format!("{good}[[tenant]]\nname = \"initech\"\ntoken = \"initech-t\"\nrate_per_sec = 1000.0\nburst = 1000\n");
    for i in 0..reloads {
        if i == add_at {
            std::fs::write(&b.config, &with_initech).unwrap();
            reload(&b).await;
            let new = ingest(&b.url, "initech-t", "events", "{}").await;
            assert_eq!(new.status, 200, "a tenant added by a reload is accepted at once: {new:?}");
            continue;
        }
        if i == remove_at {
            std::fs::write(&b.config, &good).unwrap();
            reload(&b).await;
            let gone = ingest(&b.url, "initech-t", "events", "{}").await;
            assert_eq!(gone.status, 401, "a tenant removed by a reload is refused at once: {gone:?}");
            continue;
        }
        if i % 10 == 7 {
            // A file that does not validate: refused, the old one stays.
            std::fs::write(&b.config, good.replace("rate_per_sec = 1000000.0", "rate_per_sec = \"fast\"")).unwrap();
            reload(&b).await;
            bad_files += 1;
            assert_eq!(ingest(&b.url, "globex-t", "events", "{}").await.status, 200, "the old configuration serves");
            std::fs::write(&b.config, &good).unwrap();
            continue;
        }
        if i == rotate_at {
            std::fs::write(&tokens, "acme-old\nacme-new\n").unwrap();
            reload(&b).await;
            *acme.write().unwrap() = "acme-new".to_string();
            continue;
        }
        if i == retire_at {
            std::fs::write(&tokens, "acme-new\n").unwrap();
            reload(&b).await;
            let old = ingest(&b.url, "acme-old", "events", "{}").await;
            assert_eq!(old.status, 401, "the removed token is refused at once: {old:?}");
            continue;
        }
        reload(&b).await;
    }
    load.stop.store(true, Ordering::Relaxed);
    for task in load.tasks {
        task.await.unwrap();
    }
    let sent = load.sent.load(Ordering::Relaxed);
    println!("{reloads} reloads ({bad_files} bad files) under 16 producers: {sent} requests");
    assert!(sent >= 500, "the producers ran through the reloads: {sent}");
    assert_eq!(load.failed[0].load(Ordering::Relaxed), 0, "globex (unchanged) failed requests, of {sent}");
    assert_eq!(load.failed[1].load(Ordering::Relaxed), 0, "acme (rotated) failed requests, of {sent}");
    let errors = metric(&b.url, "weir_config_reloads_total{result=\"error\"}").await;
    let oks = metric(&b.url, "weir_config_reloads_total{result=\"ok\"}").await;
    assert_eq!((oks as u32, errors as u32), (reloads as u32 - bad_files, bad_files));
    assert!(metric(&b.url, "weir_config_last_reload_success_timestamp_seconds").await > 1.6e9);
}

/// Acquire and commit everything `dest` has now: each record as
/// (tenant, topic, payload). Bounded: at most 100 leases.
async fn drain(url: &str, dest: &str, token: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for _ in 0..100 {
        let resp = client()
            .post(format!("{url}/v1/destinations/{dest}/leases"))
            .bearer_auth(token)
            .json(&serde_json::json!({"max_records": 1000, "wait_ms": 0}))
            .send()
            .await
            .expect("acquire");
        let acquired = answer(resp).await;
        assert_eq!(acquired.status, 200, "{dest}'s acquire: {acquired:?}");
        let Some(id) = acquired.json["lease"]["id"].as_str() else {
            return out;
        };
        for r in acquired.json["lease"]["records"].as_array().expect("records") {
            let payload = protocol::b64_decode(r["payload_b64"].as_str().unwrap()).unwrap();
            let (tenant, topic) = (r["tenant"].as_str().unwrap(), r["topic"].as_str().unwrap());
            out.push((tenant.to_string(), topic.to_string(), String::from_utf8(payload).unwrap()));
        }
        let commit = client()
            .post(format!("{url}/v1/destinations/{dest}/leases/{id}/commit"))
            .bearer_auth(token)
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("commit");
        assert_eq!(commit.status().as_u16(), 200, "{dest}'s commit");
    }
    panic!("{dest} still had records after 100 leases");
}

fn payloads(records: &[(String, String, String)]) -> Vec<String> {
    let mut p: Vec<String> = records.iter().map(|(tenant, topic, body)| format!("{tenant}/{topic}/{body}")).collect();
    p.sort();
    p
}

const BEFORE: &str = r#"
[[tenant]]
name = "acme"
token = "acme-t"
rate_per_sec = 1000.0
burst = 1000
[[tenant]]
name = "gone"
token = "gone-t"
rate_per_sec = 1000.0
burst = 1000
[[topic]]
name = "events"
[[destination]]
name = "d"
topics = ["events"]
token = "d-t"
"#;

const AFTER: &str = r#"
[[tenant]]
name = "initech"
token = "initech-t"
rate_per_sec = 50.0
burst = 50
[[tenant]]
name = "acme"
token = "acme-t"
rate_per_sec = 1000.0
burst = 1000
[[topic]]
name = "events"
[[topic]]
name = "audit"
[[destination]]
name = "d"
topics = ["events"]
token = "d-t"
[[destination]]
name = "early"
topics = ["events"]
token = "early-t"
[[destination]]
name = "late"
topics = ["events", "audit"]
token = "late-t"
start_at = "latest"
"#;

#[tokio::test]
async fn a_reload_adds_and_removes_tenants_topics_and_destinations_and_refuses_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let head = format!("listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nadmin_token = \"admin-t\"\n", data.display());
    let log = dir.path().join("broker.log");
    let b = BrokerProc::start_logging(&data, &format!("{head}{BEFORE}"), &log, "info");
    for (token, body) in [("acme-t", "a1"), ("gone-t", "g1"), ("acme-t", "a2")] {
        assert_eq!(ingest(&b.url, token, "events", format!("\"{body}\"")).await.status, 200);
    }
    assert_eq!(ingest(&b.url, "initech-t", "events", "\"i0\"").await.status, 401, "not a tenant yet");

    std::fs::write(&b.config, format!("{head}{AFTER}")).unwrap();
    reload(&b).await;
    assert_eq!(metric(&b.url, "weir_config_reloads_total{result=\"ok\"}").await, 1.0);
    assert_eq!(ingest(&b.url, "gone-t", "events", "\"g2\"").await.status, 401, "a removed tenant is refused at once");
    assert_eq!(ingest(&b.url, "initech-t", "events", "\"i1\"").await.status, 200, "a new tenant is accepted at once");
    assert_eq!(ingest(&b.url, "initech-t", "audit", "\"i2\"").await.status, 200, "on a new topic");
    assert_eq!(ingest(&b.url, "acme-t", "events", "\"a3\"").await.status, 200);
    assert!(
        metric(&b.url, "weir_ingest_records_total{priority=\"normal\",tenant=\"initech\",topic=\"audit\"}").await
            >= 1.0
    );

    let all = [
        "acme/events/\"a1\"",
        "acme/events/\"a2\"",
        "acme/events/\"a3\"",
        "gone/events/\"g1\"",
        "initech/events/\"i1\"",
    ];
    assert_eq!(payloads(&drain(&b.url, "d", "d-t").await), all, "a removed tenant's records stay deliverable");
    assert_eq!(payloads(&drain(&b.url, "early", "early-t").await), all, "start_at = earliest: the backlog too");

    // A change that needs a restart is refused whole: initech's rate stays.
    let restart = format!(
        "{head}max_body_bytes = 1048576\n{}",
        AFTER.replace("rate_per_sec = 50.0\nburst = 50", "rate_per_sec = 1.0\nburst = 1")
    );
    std::fs::write(&b.config, restart).unwrap();
    reload(&b).await;
    let kept = format!("{head}{}", AFTER.replace("topics = [\"events\", \"audit\"]", "topics = [\"audit\"]"));
    std::fs::write(&b.config, kept).unwrap();
    reload(&b).await;
    assert_eq!(metric(&b.url, "weir_config_reloads_total{result=\"error\"}").await, 2.0);
    let logged = std::fs::read_to_string(&log).unwrap();
    let refusals: Vec<&str> = logged.lines().filter(|l| l.contains("need a restart")).collect();
    assert_eq!(refusals.len(), 2, "one line a refusal: {refusals:?}");
    assert!(refusals[0].contains("max_body_bytes") && !refusals[0].contains("tenant"), "{}", refusals[0]);
    assert!(refusals[1].contains("late") && refusals[1].contains(": topics"), "{}", refusals[1]);
    for n in 0..5 {
        let a = ingest(&b.url, "initech-t", "events", format!("\"burst{n}\"")).await;
        assert_eq!(a.status, 200, "the old configuration stays in force: {a:?}");
    }
    assert_eq!(
        metric(&b.url, "weir_demoted_records_total{reason=\"over_rate\",tenant=\"initech\"}").await,
        0.0,
        "initech's rate is still 50/s, not the refused file's 1/s"
    );

    // `late` has records pending: its removal is refused until it drains.
    let without_late = format!("{head}{}", AFTER.split("[[destination]]\nname = \"late\"").next().unwrap());
    std::fs::write(&b.config, &without_late).unwrap();
    reload(&b).await;
    assert_eq!(metric(&b.url, "weir_config_reloads_total{result=\"error\"}").await, 3.0);
    let late = drain(&b.url, "late", "late-t").await;
    let mut expect_late: Vec<String> =
        ["acme/events/\"a3\"", "initech/audit/\"i2\"", "initech/events/\"i1\""].map(String::from).to_vec();
    expect_late.extend((0..5).map(|n| format!("initech/events/\"burst{n}\"")));
    expect_late.sort();
    assert_eq!(payloads(&late), expect_late, "start_at = latest: only what arrived after the reload");
    reload(&b).await;
    assert_eq!(metric(&b.url, "weir_config_reloads_total{result=\"ok\"}").await, 2.0, "drained, `late` goes");
    let gone = client()
        .post(format!("{}/v1/destinations/late/leases", b.url))
        .bearer_auth("late-t")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 401, "a removed destination's token is refused");
    let listed = admin_get(&b.url, "/v1/admin/destinations").await;
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["d", "early"]);
}
