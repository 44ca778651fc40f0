//! Kill loops with real processes: `kill -9` the broker (or the exporter)
//! at random moments under live traffic, start it again, and at the end
//! check every acknowledgement against what is stored and delivered.
//!
//! CI sizes are small; the long runs (docs/testing.md):
//!   WEIR_KILL_CYCLES=200 cargo test --release --test kill_loop broker_kill_loop -- --nocapture
//!   WEIR_EXPORTER_KILL_CYCLES=50 cargo test --release --test kill_loop exporter_kill_loop -- --nocapture
//! `WEIR_KILL_SEED=<n>` replays a run's random choices (the seed is printed).

mod common;

use common::ledger::{self, Ledger, Outcome, Rng};
use common::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

const PRODUCERS: u64 = 16;

/// Segments are deleted once every destination has passed them, so a
/// broker with no destination keeps nothing: `keep` (never exported)
/// holds every record for the final check. The disk watermark is off so
/// that a full shared disk does not turn the run into 429s.
const KEEP: &str = "[[destination]]\nname = \"keep\"\ntopics = [\"events\"]\ntoken = \"keep-t\"\n";

/// One producer: batches of 1..=8 records with unique ids. Even producers
/// send an `Idempotency-Key` and retry an unanswered batch (across broker
/// restarts) until it is acknowledged; odd ones send no key and give an
/// unanswered batch up (it may then be stored whole or not at all).
async fn producer(
    p: u64,
    url: String,
    seed: u64,
    ledger: Arc<Ledger>,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    odd: Arc<Mutex<Vec<String>>>,
) {
    let keyed = p.is_multiple_of(2);
    let token = if p % 4 < 2 { "acme-t" } else { "globex-t" };
    let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut rng = Rng::new(seed ^ (p + 1).wrapping_mul(0x1234_5678_9abc));
    for i in 0..10_000_000u64 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let ids: Vec<String> = (0..rng.range(1, 8)).map(|k| format!("p{p}-r{i}-{k}")).collect();
        let body = ledger::ndjson(&ids);
        let mut outcome = Outcome::Unknown;
        // Bounded: 60 s of retries for a keyed batch, one attempt otherwise.
        for _attempt in 0..3000 {
            let mut req = c
                .post(format!("{url}/v1/topics/events/records"))
                .bearer_auth(token)
                .header("content-type", "application/x-ndjson")
                .body(body.clone());
            if keyed {
                req = req.header("idempotency-key", format!("p{p}-r{i}"));
            }
            match req.send().await {
                Ok(r) if r.status() == 200 => {
                    let v: serde_json::Value = r.json().await.expect("200 body");
                    assert_eq!(v["accepted"].as_u64(), Some(ids.len() as u64), "{v}");
                    outcome = Outcome::Acked {
                        lane: v["lane"].as_str().unwrap().to_string(),
                        first_offset: v["first_offset"].as_u64().unwrap(),
                    };
                    break;
                }
                Ok(r) => {
                    // A broker that is recovering may say 503 wal_unavailable; nothing else is expected.
                    let status = r.status().as_u16();
                    let a = answer(r).await;
                    if status != 503 || a.code() != "wal_unavailable" {
                        odd.lock().unwrap().push(format!("{status} {:?}", a.json));
                    }
                }
                Err(_) => {} // the broker was killed under this request, or is not up yet
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // backoff while the broker is down
            if !keyed {
                break;
            }
        }
        if keyed {
            assert!(matches!(outcome, Outcome::Acked { .. }), "keyed batch p{p}-r{i} never acknowledged in 60 s");
        }
        if matches!(outcome, Outcome::Acked { .. }) {
            acked.fetch_add(ids.len() as u64, Ordering::Relaxed);
        }
        ledger.push(ids, outcome);
    }
}

/// 16 producers; the broker is killed with SIGKILL at a random moment after
/// it has acknowledged at least 16 more records, and started again on the
/// same port. At the end (a clean stop): `verify` is clean and every
/// acknowledged record is stored exactly once, at the offset its answer
/// named; an unanswered batch is whole or absent; nothing is corrupt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_kill_loop_keeps_every_acknowledged_record_exactly_once() {
    let cycles = ledger::knob("WEIR_KILL_CYCLES", 10);
    let seed = ledger::seed("WEIR_KILL_SEED");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let text = config(&data, KEEP).replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()));
    let mut b = BrokerProc::start_with(&data, &text);
    let url = b.url.clone();

    let (ledger, acked, stop) =
        (Arc::new(Ledger::default()), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let odd = Arc::new(Mutex::new(Vec::new()));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let args = (url.clone(), Arc::clone(&ledger), Arc::clone(&acked), Arc::clone(&stop), Arc::clone(&odd));
            tokio::spawn(producer(p, args.0, seed, args.1, args.2, args.3, args.4))
        })
        .collect();

    for cycle in 0..cycles {
        let before = acked.load(Ordering::Relaxed);
        wait_until(&format!("cycle {cycle}: 16 more records acknowledged"), Duration::from_secs(60), || async {
            acked.load(Ordering::Relaxed) >= before + 16
        })
        .await;
        // The random moment: anywhere in the next 0–150 ms of traffic.
        tokio::time::sleep(Duration::from_millis(rng.range(0, 150))).await;
        b.kill9();
        b.start_again();
        assert_eq!(b.url, url, "restarted on the same port");
    }
    // Let every keyed batch in flight be acknowledged, then stop cleanly.
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        tokio::time::timeout(Duration::from_secs(120), p).await.expect("producers finish").expect("producer panicked");
    }
    assert_eq!(b.stop_signal(libc::SIGTERM), Some(0), "clean stop");
    let (code, report, err) = run_admin(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "verify after {cycles} kills:\n{report}\n{err}");

    let sent = ledger.sent.lock().unwrap().clone();
    let f = ledger::check(&sent, &ledger::dumped(&data));
    let odd = odd.lock().unwrap().clone();
    assert!(odd.is_empty(), "answers other than 200 / 503 wal_unavailable: {odd:?}");
    assert!(f.acked_records as u64 >= cycles * 16);
    eprintln!(
        "broker kill loop: {cycles} kill -9 cycles, {} acknowledged requests ({} records), {} unanswered ({} of them stored whole), {} records stored, wall {:.1} s",
        f.acked_requests,
        f.acked_records,
        f.unknown_requests,
        f.unknown_stored,
        f.stored_records,
        started.elapsed().as_secs_f64()
    );
}

/// What was true the moment an exporter was killed.
struct Kill {
    /// Leases out (all of them this exporter's) × the batch size.
    leased_bound: u64,
    /// The lease held at the kill ended by expiry (no commit landed after).
    expired: bool,
    /// Ids in the output file whose offset is at or past the destination's
    /// committed cursor: delivered but not committed, so delivered again.
    uncommitted_in_file: HashSet<String>,
}

/// A file sink exporter killed with SIGKILL at random moments, mid-stream;
/// each kill is taken while the process is frozen (SIGSTOP), so what it had
/// leased and written is known. At the end every acknowledged record is in
/// the file at least once, and every duplicate is a record that was in the
/// file but not committed at some kill — never more of them than that
/// kill's leases held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_kill_loop_delivers_everything_with_duplicates_bounded_by_the_leases_at_each_kill() {
    let cycles = ledger::knob("WEIR_EXPORTER_KILL_CYCLES", 5);
    let seed = ledger::seed("WEIR_KILL_SEED");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    const BATCH: u64 = 20;
    let b = BrokerProc::start(
        "lease_timeout_ms = 1500\n[[destination]]\nname = \"f\"\ntopics = [\"events\"]\ntoken = \"f-t\"\n",
    );
    // Each cycle first acknowledges fresh records, from two tenants (two
    // lanes), so the exporter it starts always has work to be killed in the
    // middle of: an exporter on a busy machine, where the test is slow to
    // poll, can drain a shared backlog in fewer cycles than planned.
    let per_cycle = 200;
    let mut ids = Vec::new();
    let mut offsets: HashMap<String, (String, u64)> = HashMap::new();
    let acknowledge = async |ids: &mut Vec<String>, offsets: &mut HashMap<String, (String, u64)>, n: u64| {
        let first = ids.len();
        for r in 0..n / 10 {
            let r = first as u64 / 10 + r;
            let batch: Vec<String> = (0..10).map(|k| format!("e{r}-{k}")).collect();
            let token = if r.is_multiple_of(2) { "acme-t" } else { "globex-t" };
            let a = ingest(&b.url, token, "events", ledger::ndjson(&batch)).await;
            assert_eq!(a.status, 200, "{a:?}");
            ids.extend(batch);
        }
        // Merged, not replaced: retention may already have removed the
        // segments of records delivered in earlier cycles.
        offsets.extend(
            ledger::dumped(&b.data_dir).into_iter().map(|(lane, off, p)| (ledger::id_of(&p).unwrap(), (lane, off))),
        );
        assert!(ids[first..].iter().all(|id| offsets.contains_key(id)), "every new record is in the WAL");
        assert_eq!(offsets.len(), ids.len());
    };

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.ndjson");
    let sink = format!("file:{}", out.display());
    let batch = BATCH.to_string();
    let args = [
        "--lease-timeout-ms",
        "1500",
        "--sink-timeout-ms",
        "300",
        "--max-retries",
        "0",
        "--batch-records",
        &batch,
        "--max-in-flight",
        "1",
        "--wait-ms",
        "200",
    ];
    let in_file =
        |text: &str| -> Vec<String> { text.lines().filter_map(|l| ledger::id_of(l.as_bytes()).ok()).collect() };
    let mut kills = Vec::new();
    for cycle in 0..cycles {
        acknowledge(&mut ids, &mut offsets, per_cycle).await;
        // Counted before the start: at open the exporter may cut back lines
        // the killed one wrote but never committed.
        let before = file_lines(&out).len();
        let mut e = ExporterProc::start(&b.url, "f", "f-t", &sink, &args);
        wait_until(&format!("cycle {cycle}: the exporter delivers"), Duration::from_secs(60), || async {
            file_lines(&out).len() >= before + 2 * BATCH as usize
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.range(0, 60))).await; // the random moment
        unsafe { libc::kill(e.child.id() as i32, libc::SIGSTOP) };
        let st = destination(&b.url, "f").await;
        let committed: HashMap<String, u64> = st["cursors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["lane"].as_str().unwrap().to_string(), c["committed"].as_u64().unwrap()))
            .collect();
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let uncommitted_in_file = in_file(&text)
            .into_iter()
            .filter(|id| {
                let (lane, off) = &offsets[id];
                *off >= committed.get(lane).copied().unwrap_or(0)
            })
            .collect();
        let leased_bound = st["leases_in_flight"].as_u64().unwrap() * BATCH;
        e.kill9();
        // The dead process's lease expires before the next one starts, so
        // the committed cursor has no gaps at the next kill.
        wait_until("the killed exporter's lease expired", Duration::from_secs(30), || async {
            destination(&b.url, "f").await["leases_in_flight"] == 0
        })
        .await;
        // A commit sent just before SIGSTOP may still land after the read
        // above; only a lease whose cursor did not move since must have
        // expired rather than been committed.
        let after = destination(&b.url, "f").await;
        let unmoved = after["cursors"].as_array().unwrap().iter().all(|c| {
            committed.get(c["lane"].as_str().unwrap()).copied().unwrap_or(0) == c["committed"].as_u64().unwrap()
        });
        kills.push(Kill { leased_bound, uncommitted_in_file, expired: leased_bound > 0 && unmoved });
    }
    acknowledge(&mut ids, &mut offsets, 400).await;
    let mut last = ExporterProc::start(&b.url, "f", "f-t", &sink, &args);
    wait_until("every acknowledged record delivered and committed", Duration::from_secs(120), || async {
        let st = destination(&b.url, "f").await;
        st["leases_in_flight"] == 0
            && st["cursors"].as_array().unwrap().iter().all(|c| c["committed"] == c["end"])
            && in_file(&std::fs::read_to_string(&out).unwrap_or_default()).len() >= ids.len()
    })
    .await;
    assert_eq!(last.sigterm(), Some(0));

    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "the file ends with a whole line");
    let mut counts: HashMap<String, u64> = HashMap::new();
    for line in text.lines() {
        let id = ledger::id_of(line.as_bytes()).unwrap_or_else(|e| panic!("corrupt line in the file sink: {e}"));
        *counts.entry(id).or_default() += 1;
    }
    let missing: Vec<&String> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records never delivered, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(counts.len(), ids.len(), "records in the file that were never sent");
    for (k, kill) in kills.iter().enumerate() {
        assert!(
            kill.uncommitted_in_file.len() as u64 <= kill.leased_bound,
            "kill {k}: {} records written but uncommitted, more than its leases held ({})",
            kill.uncommitted_in_file.len(),
            kill.leased_bound
        );
    }
    let mut duplicates = 0;
    for (id, n) in &counts {
        let exposures = kills.iter().filter(|k| k.uncommitted_in_file.contains(id)).count() as u64;
        assert!(n - 1 <= exposures, "{id} delivered {n} times, but uncommitted in the file at only {exposures} kills");
        duplicates += n - 1;
    }
    let bound: u64 = kills.iter().map(|k| k.leased_bound).sum();
    assert!(duplicates <= bound);
    if kills.iter().any(|k| k.expired) {
        let expired = metric(&b.url, "weir_lease_expired_total{destination=\"f\"}").await;
        assert!(expired >= 1.0, "a killed exporter's lease expired, but weir_lease_expired_total is {expired}");
    }
    eprintln!(
        "exporter kill loop: {cycles} kill -9 cycles, {} records, {duplicates} duplicates (bound by leases at the kills: {bound}), wall {:.1} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
}
