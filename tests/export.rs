//! Exporters end to end: real broker and exporter processes, sinks on
//! loopback (HTTP test sinks, files, a real ClickHouse server).

mod common;

use common::clickhouse::{start_clickhouse, KillOnDrop};
use common::sink::TestSink;
use common::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Send `n` requests of `per` records each for `tenant`, paced over `over`;
/// records are `{"id":"<prefix>-<i>","sent_ms":...}`. Returns all ids; panics
/// on any non-200 answer.
async fn produce(url: &str, token: &str, prefix: &str, n: usize, per: usize, over: Duration) -> Vec<String> {
    let mut ids = Vec::new();
    let gap = over / n as u32;
    for r in 0..n {
        let mut body = String::new();
        for k in 0..per {
            let id = format!("{prefix}-{}", r * per + k);
            body.push_str(&format!("{{\"id\":\"{id}\",\"sent_ms\":{}}}\n", now_ms()));
            ids.push(id);
        }
        let a = ingest(url, token, "events", body).await;
        assert_eq!(a.status, 200, "producer got an error: {a:?}");
        tokio::time::sleep(gap).await;
    }
    ids
}

fn id_of(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn percentile(mut v: Vec<u64>, p: f64) -> u64 {
    v.sort_unstable();
    v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0)
}

/// Delivery latency (ms) of each line: arrival at the sink minus its sent_ms.
fn latencies(sink: &TestSink, started: Instant, started_ms: u64) -> Vec<u64> {
    sink.arrivals()
        .iter()
        .filter_map(|(line, at)| {
            let sent = serde_json::from_str::<serde_json::Value>(line).ok()?["sent_ms"].as_u64()?;
            let arrived_ms = started_ms + at.duration_since(started).as_millis() as u64;
            Some(arrived_ms.saturating_sub(sent))
        })
        .collect()
}

const TWO_DESTS: &str = r#"
[[destination]]
name = "healthy"
topics = ["events"]
token = "healthy-t"

[[destination]]
name = "hole"
topics = ["events"]
token = "hole-t"
failure_threshold = 2
breaker_open_ms = 3000
"#;

async fn healthy_latency_run(with_black_hole: bool) -> (usize, u64, u64) {
    let mut b = BrokerProc::start(TWO_DESTS);
    let healthy = TestSink::start().await;
    let hole = TestSink::start().await;
    hole.state.delay_ms.store(10_000, Ordering::Relaxed);
    let _e1 = ExporterProc::start(&b.url, "healthy", "healthy-t", &healthy.url, &["--wait-ms", "1000"]);
    let mut e2 = with_black_hole.then(|| {
        ExporterProc::start(&b.url, "hole", "hole-t", &hole.url, &["--sink-timeout-ms", "1000", "--max-in-flight", "2"])
    });
    let (started, started_ms) = (Instant::now(), now_ms());
    let ids = produce(&b.url, "acme-t", "rec", 100, 5, Duration::from_secs(4)).await;
    wait_until("healthy sink has every record", Duration::from_secs(60), || async {
        let got: std::collections::HashSet<String> = healthy.lines().iter().map(|l| id_of(l)).collect();
        ids.iter().all(|id| got.contains(id))
    })
    .await;
    let lat = latencies(&healthy, started, started_ms);
    if let Some(e2) = e2.as_mut() {
        wait_until("the black hole's breaker opens", Duration::from_secs(30), || async {
            destination(&b.url, "hole").await["breaker"]["state"] != "closed"
        })
        .await;
        wait_until("breaker gauge shows open or half-open", Duration::from_secs(5), || async {
            metric(&b.url, "weir_destination_breaker_state{destination=\"hole\"}").await > 0.0
        })
        .await;
        assert!(hole.state.requests.load(Ordering::Relaxed) >= 2);
        // The breaker is in sled: it survives an exporter and a broker restart.
        assert_eq!(e2.sigterm(), Some(0));
        b.restart();
        let st = destination(&b.url, "hole").await;
        assert_ne!(st["breaker"]["state"], "closed", "breaker state lost across restart: {st}");
        assert!(st["breaker"]["consecutive_failures"].as_u64().unwrap() >= 2);
    }
    (lat.len(), percentile(lat.clone(), 0.5), percentile(lat, 0.99))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_destination_receives_everything_while_a_black_hole_trips_its_breaker() {
    let (n0, p50_0, p99_0) = healthy_latency_run(false).await;
    let (n1, p50_1, p99_1) = healthy_latency_run(true).await;
    eprintln!("healthy delivery latency alone: n={n0} p50={p50_0}ms p99={p99_0}ms; beside a black hole: n={n1} p50={p50_1}ms p99={p99_1}ms");
    assert!(n1 >= 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_exporter_lease_is_redelivered_and_duplicates_come_only_from_it() {
    let b = BrokerProc::start(
        "lease_timeout_ms = 2000\n[[destination]]\nname = \"f\"\ntopics = [\"events\"]\ntoken = \"f-t\"\n",
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.ndjson");
    let sink = format!("file:{}", out.display());
    let args = [
        "--lease-timeout-ms",
        "2000",
        "--sink-timeout-ms",
        "300",
        "--max-retries",
        "0",
        "--batch-records",
        "40",
        "--wait-ms",
        "200",
    ];
    let mut first = ExporterProc::start(&b.url, "f", "f-t", &sink, &args);
    let url = b.url.clone();
    let producer = tokio::spawn(async move { produce(&url, "acme-t", "k", 300, 2, Duration::from_secs(6)).await });
    // Freeze the exporter while it holds a lease, then kill it.
    wait_until("some records delivered", Duration::from_secs(30), || async { file_lines(&out).len() >= 40 }).await;
    let mut caught = false;
    let holding = || async { destination(&b.url, "f").await["leases_in_flight"].as_u64() == Some(1) };
    for _ in 0..500 {
        unsafe { libc::kill(first.child.id() as i32, libc::SIGSTOP) };
        // A commit the exporter wrote just before it stopped still lands
        // (in a few ms): the lease must still be out after that.
        if holding().await && {
            tokio::time::sleep(Duration::from_millis(20)).await;
            holding().await
        } {
            caught = true;
            break;
        }
        unsafe { libc::kill(first.child.id() as i32, libc::SIGCONT) };
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert!(caught, "never caught the exporter holding a lease");
    first.kill9();
    let _second = ExporterProc::start(&b.url, "f", "f-t", &sink, &args);
    let ids = producer.await.unwrap();
    wait_until("file sink holds every record", Duration::from_secs(60), || async {
        let got: std::collections::HashSet<String> = file_lines(&out).iter().map(|l| id_of(l)).collect();
        ids.iter().all(|id| got.contains(id))
    })
    .await;
    // The file may hold the lease's records before the lease expires (the
    // sink wrote them; the commit never went): wait for the expiry itself.
    wait_until("the killed exporter's lease expired", Duration::from_secs(30), || async {
        metric(&b.url, "weir_lease_expired_total{destination=\"f\"}").await >= 1.0
    })
    .await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for l in file_lines(&out) {
        *counts.entry(id_of(&l)).or_default() += 1;
    }
    let dups: Vec<&String> = counts.iter().filter(|(_, c)| **c > 1).map(|(id, _)| id).collect();
    assert!(dups.len() <= 40, "duplicates beyond one lease of 40 records: {}", dups.len());
    eprintln!("kill -9 mid-lease: {} records, {} delivered twice", ids.len(), dups.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_record_goes_to_dead_letters_and_redrive_delivers_it_after_the_fix() {
    let b = BrokerProc::start("[[destination]]\nname = \"w\"\ntopics = [\"events\"]\ntoken = \"w-t\"\n");
    let sink = TestSink::start().await;
    sink.state.reject_poison.store(true, Ordering::Relaxed);
    let body: String = (0..100)
        .map(|i| if i == 63 { "{\"id\":\"poison-63\"}\n".to_string() } else { format!("{{\"id\":\"ok-{i}\"}}\n") })
        .collect();
    assert_eq!(ingest(&b.url, "acme-t", "events", body).await.status, 200);
    let _e = ExporterProc::start(&b.url, "w", "w-t", &sink.url, &["--batch-records", "100", "--wait-ms", "200"]);
    wait_until("99 delivered and 1 dead letter", Duration::from_secs(30), || async {
        sink.lines().len() >= 99 && destination(&b.url, "w").await["dead_letter_records"] == 1
    })
    .await;
    let lines = sink.lines();
    assert_eq!(lines.len(), 99);
    assert!(lines.iter().all(|l| !l.contains("poison")));
    let (code, listed, _) =
        run_admin(&["dead-letters", "--broker", &b.url, "--token", "admin-t", "--destination", "w", "--json"]);
    assert_eq!(code, 0);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(protocol::b64_decode(listed[0]["payload_b64"].as_str().unwrap()).unwrap(), b"{\"id\":\"poison-63\"}");
    assert!(listed[0]["error"].as_str().unwrap().contains("400"));
    // Fix the sink, re-drive.
    sink.state.reject_poison.store(false, Ordering::Relaxed);
    let (code, _, err) = run_admin(&["redrive", "--broker", &b.url, "--token", "admin-t", "--destination", "w"]);
    assert_eq!(code, 0, "{err}");
    wait_until("the dead letter is delivered and gone", Duration::from_secs(30), || async {
        sink.lines().iter().any(|l| l.contains("poison-63"))
            && destination(&b.url, "w").await["dead_letter_records"] == 0
    })
    .await;
    assert_eq!(metric(&b.url, "weir_dead_letter_records_total{destination=\"w\"}").await, 1.0);
}

fn lane_segments(data_dir: &std::path::Path) -> HashMap<String, usize> {
    let (code, out, err) = run_admin(&["segments", "--data-dir", data_dir.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let mut per_lane = HashMap::new();
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["quarantined"] == false {
            *per_lane.entry(v["lane"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    per_lane
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_deleted_only_after_every_destination_passed_them() {
    let b = BrokerProc::start(
        "[[destination]]\nname = \"a\"\ntopics = [\"events\"]\ntoken = \"a-t\"\n\n[[destination]]\nname = \"b\"\ntopics = [\"events\"]\ntoken = \"b-t\"\n",
    );
    let pad = "p".repeat(900);
    for i in 0..40 {
        let body: String = (0..10).map(|k| format!("{{\"id\":\"r{}\",\"pad\":\"{pad}\"}}\n", i * 10 + k)).collect();
        assert_eq!(ingest(&b.url, "acme-t", "events", body).await.status, 200);
    }
    let lane = ingest(&b.url, "acme-t", "events", "{\"id\":\"last\"}").await.json["lane"].as_str().unwrap().to_string();
    let before = lane_segments(&b.data_dir)[&lane];
    assert!(before >= 4, "expected several 64 KiB segments, got {before}");
    let tmp = tempfile::tempdir().unwrap();
    let (fa, fb) = (tmp.path().join("a.ndjson"), tmp.path().join("b.ndjson"));
    let _ea = ExporterProc::start(&b.url, "a", "a-t", &format!("file:{}", fa.display()), &["--wait-ms", "200"]);
    wait_until("a caught up", Duration::from_secs(30), || async {
        destination(&b.url, "a").await["lag_records"] == 0 && file_lines(&fa).len() == 401
    })
    .await;
    // b has not read anything: every segment is still needed.
    tokio::time::sleep(Duration::from_millis(300)).await; // several maintenance passes (50 ms)
    assert_eq!(lane_segments(&b.data_dir)[&lane], before);
    let _eb = ExporterProc::start(&b.url, "b", "b-t", &format!("file:{}", fb.display()), &["--wait-ms", "200"]);
    wait_until("b caught up and retention ran", Duration::from_secs(30), || async {
        file_lines(&fb).len() == 401 && lane_segments(&b.data_dir)[&lane] == 1
    })
    .await;
    // Counted right after the files go: wait for the counter, not the files.
    wait_until("deletions counted", Duration::from_secs(5), || async {
        metric(&b.url, "weir_segments_deleted_total").await >= (before - 1) as f64
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_lag_under_the_limit_and_counts_what_it_dropped() {
    let b = BrokerProc::start(
        "[[destination]]\nname = \"d\"\ntopics = [\"events\"]\ntoken = \"d-t\"\nmax_lag_bytes = 20000\non_lag_limit = \"drop_oldest\"\n",
    );
    let pad = "q".repeat(500);
    for i in 0..20 {
        let body: String = (0..10).map(|k| format!("{{\"id\":\"r{}\",\"pad\":\"{pad}\"}}\n", i * 10 + k)).collect();
        assert_eq!(ingest(&b.url, "acme-t", "events", body).await.status, 200, "drop_oldest never pushes back");
    }
    // A pass that ran while the last requests were still arriving may
    // publish a lag over the limit (records appended after its drop); the
    // limit holds from the first pass that saw every record: its lag is
    // then exactly end − cursor (every record of the lane goes to d).
    wait_until("oldest records dropped, by a pass that saw every record", Duration::from_secs(20), || async {
        let st = destination(&b.url, "d").await;
        let (mut end, mut committed) = (0, 0);
        for c in st["cursors"].as_array().unwrap() {
            end += c["end"].as_u64().unwrap();
            committed += c["committed"].as_u64().unwrap();
        }
        end == 200 && st["lag_records"].as_u64() == Some(end - committed) && st["dropped_records"].as_u64() > Some(0)
    })
    .await;
    assert!(metric(&b.url, "weir_destination_dropped_records_total{destination=\"d\"}").await > 0.0);
    let st = destination(&b.url, "d").await;
    assert!(st["lag_bytes"].as_u64().unwrap() <= 20000, "{st}");
    assert!(st["dropped_records"].as_u64().unwrap() > 0);
    // What remains is the newest data.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("d.ndjson");
    let _e = ExporterProc::start(&b.url, "d", "d-t", &format!("file:{}", out.display()), &["--wait-ms", "200"]);
    wait_until("remaining records delivered", Duration::from_secs(20), || async {
        file_lines(&out).iter().any(|l| l.contains("\"r199\""))
    })
    .await;
    assert!(!file_lines(&out).iter().any(|l| l.contains("\"r0\"")));
}

#[test]
fn exporter_refuses_a_lease_timeout_that_cannot_cover_its_retries_and_exits_zero_on_sigterm() {
    let out = std::process::Command::new(&EXPORTER)
        .args(["--broker", "http://127.0.0.1:9", "--destination", "d", "--token", "t", "--sink", "file:/tmp/never"])
        .args(["--sink-timeout-ms", "5000", "--lease-timeout-ms", "6000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lease timeout"));
    let b = BrokerProc::start("[[destination]]\nname = \"s\"\ntopics = [\"events\"]\ntoken = \"s-t\"\n");
    let tmp = tempfile::tempdir().unwrap();
    let mut e = ExporterProc::start(
        &b.url,
        "s",
        "s-t",
        &format!("file:{}", tmp.path().join("o").display()),
        &["--wait-ms", "500"],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(e.sigterm(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_exported_to_a_real_clickhouse_arrive_with_the_right_row_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (ch, pid) = start_clickhouse(&tmp.path().join("ch"));
    let _guard = KillOnDrop(pid);
    let q = |sql: &str| {
        let (ch, sql) = (ch.clone(), sql.to_string());
        async move { client().post(format!("{ch}/")).body(sql).send().await.unwrap().text().await.unwrap() }
    };
    q("CREATE TABLE weir_events (id String, n UInt32) ENGINE = Memory").await;
    let b = BrokerProc::start("[[destination]]\nname = \"ch\"\ntopics = [\"events\"]\ntoken = \"ch-t\"\n");
    for r in 0..10 {
        let body: String = (0..50).map(|k| format!("{{\"id\":\"r{}\",\"n\":{k}}}\n", r * 50 + k)).collect();
        assert_eq!(ingest(&b.url, "acme-t", "events", body).await.status, 200);
    }
    // One row ClickHouse cannot parse for this table: it must end in dead letters.
    ingest(&b.url, "acme-t", "events", "{\"id\":\"bad\",\"n\":\"not a number\"}").await;
    let sink = format!("clickhouse+{ch}/?table=weir_events");
    let log = tmp.path().join("exporter.log");
    let _e = ExporterProc::start_logging(&b.url, "ch", "ch-t", &sink, &["--wait-ms", "200"], &log);
    wait_until("500 rows in ClickHouse and 1 dead letter", Duration::from_secs(60), || async {
        q("SELECT count() FROM weir_events").await.trim() == "500"
            && destination(&b.url, "ch").await["dead_letter_records"] == 1
    })
    .await;
    assert_eq!(q("SELECT uniqExact(id) FROM weir_events").await.trim(), "500");
    // 18.16 does not know insert_deduplication_token (Code 115 if sent):
    // the exporter asked once at start, warned once, and sends none.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let warned = text.matches("does not know the setting insert_deduplication_token").count();
    assert_eq!(warned, 1, "one warning, never a retry loop:\n{text}");
    assert!(!text.contains("Code: 115"), "a token was sent:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_older_than_the_retention_age_go_even_if_undelivered_and_count_as_dropped() {
    let b = BrokerProc::start(
        "retention_max_age_secs = 1\ngroup_commit_linger_us = 200\n[[destination]]\nname = \"slow\"\ntopics = [\"events\"]\ntoken = \"slow-t\"\n",
    );
    let pad = "z".repeat(900);
    let mut lane = String::new();
    for i in 0..30 {
        let body: String = (0..10).map(|k| format!("{{\"id\":\"r{}\",\"pad\":\"{pad}\"}}\n", i * 10 + k)).collect();
        let a = ingest(&b.url, "acme-t", "events", body).await;
        assert_eq!(a.status, 200);
        lane = a.json["lane"].as_str().unwrap().to_string();
    }
    let before = lane_segments(&b.data_dir)[&lane];
    assert!(before >= 3, "{before}");
    wait_until("aged segments deleted", Duration::from_secs(20), || async { lane_segments(&b.data_dir)[&lane] == 1 })
        .await;
    wait_until("their records counted as dropped", Duration::from_secs(5), || async {
        metric(&b.url, "weir_destination_dropped_records_total{destination=\"slow\"}").await > 0.0
    })
    .await;
    // What is left (the active segment) is still delivered.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("slow.ndjson");
    let _e = ExporterProc::start(&b.url, "slow", "slow-t", &format!("file:{}", out.display()), &["--wait-ms", "200"]);
    wait_until("the newest record delivered", Duration::from_secs(20), || async {
        file_lines(&out).iter().any(|l| l.contains("\"r299\""))
    })
    .await;
    let st = destination(&b.url, "slow").await;
    let delivered = file_lines(&out).len() as u64;
    assert_eq!(
        delivered + st["dropped_records"].as_u64().unwrap(),
        300,
        "every record delivered or counted as dropped"
    );
}
