//! SIGHUP reloads under load (issue 23): 50 reloads while 16 producers
//! ingest. A tenant whose configuration does not change sees no failed
//! request; a token rotated through its `tokens_file` (add the new one,
//! move the producers, remove the old) costs no failed request, and the
//! removed token is refused as soon as the reload is done; a bad file is
//! refused with the old configuration in force. `WEIR_RELOADS=N` runs N
//! reloads (docs/testing.md: the soak).

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
    for i in 0..reloads {
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
