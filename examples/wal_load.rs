//! WAL load tool: N concurrent appenders for a fixed time; prints durable
//! records/s, MiB/s, append latency percentiles and fsyncs per commit.
//!
//!   cargo run --release --example wal_load -- APPENDERS RECORD_BYTES RECORDS_PER_BATCH SECONDS [DIR]
//!
//! A consumer that keeps up releases sealed segments every 10 ms (so rolls
//! reuse released files, the steady state of a broker whose exporters keep
//! up); `WEIR_NO_RELEASE=1` keeps everything (every segment a fresh file).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wal::{BatchMeta, CommitObserver, CommitStats, EncodedBatch, LaneId, Priority, RealFs, Wal, WalOptions};

#[derive(Default)]
struct Counts {
    commits: AtomicU64,
    fsyncs: AtomicU64,
    batches: AtomicU64,
    commit_us: AtomicU64,
}

impl CommitObserver for Counts {
    fn on_commit(&self, _lane: LaneId, s: &CommitStats) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.fsyncs.fetch_add(u64::from(s.fsyncs), Ordering::Relaxed);
        self.batches.fetch_add(s.batches as u64, Ordering::Relaxed);
        self.commit_us.fetch_add(s.duration.as_micros() as u64, Ordering::Relaxed);
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: u64| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (appenders, size, per_batch, secs) = (arg(1, 64) as usize, arg(2, 200) as usize, arg(3, 1) as usize, arg(4, 5));
    let base = a.get(5).map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(base).expect("tempdir");
    let counts = Arc::new(Counts::default());
    let preallocate = std::env::var_os("WEIR_NO_PREALLOCATE").is_none();
    let segment_bytes = std::env::var("WEIR_SEGMENT_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(256 << 20);
    let linger_us = std::env::var("WEIR_LINGER_US").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let group_commit_linger = Duration::from_micros(linger_us);
    let opts = WalOptions { shards: 1, segment_bytes, preallocate, group_commit_linger, ..WalOptions::default() };
    let wal = Arc::new(Wal::open(Arc::new(RealFs), tmp.path(), opts, Some(counts.clone())).expect("open"));
    let lane = LaneId::new(Priority::Normal, 0);
    let release = std::env::var_os("WEIR_NO_RELEASE").is_none();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let releaser = release.then(|| {
        let (wal, stop) = (Arc::clone(&wal), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let l = wal.lane(lane).expect("lane");
                l.delete_segments_below(l.next_offset()).expect("release");
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let lat = Arc::new(Mutex::new(Vec::<u32>::new()));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..appenders {
            let (wal, lat) = (Arc::clone(&wal), Arc::clone(&lat));
            tasks.push(tokio::spawn(async move {
                let payload = vec![b'x'; size];
                let recs: Vec<&[u8]> = (0..per_batch).map(|_| &payload[..]).collect();
                let meta = BatchMeta { tenant: "load".into(), topic: "events".into(), idempotency_key: None };
                let mut mine = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    wal.append(lane, EncodedBatch::new(&meta, &recs).expect("batch")).await.expect("append");
                    mine.push(t.elapsed().as_micros() as u32);
                }
                lat.lock().unwrap().extend(mine);
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(r) = releaser {
        r.join().expect("releaser");
    }
    let mut l = lat.lock().unwrap().clone();
    l.sort_unstable();
    let pct = |p: f64| l.get(((l.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0);
    let batches = l.len() as f64;
    let records = batches * per_batch as f64;
    let commits = counts.commits.load(Ordering::Relaxed).max(1) as f64;
    println!(
        "appenders={appenders} record={size}B batch={per_batch} release={release} records/s={:.0} MiB/s={:.1} p50={}us p99={}us p999={}us batches/commit={:.1} fsyncs/commit={:.2} commit_us={:.0} commits/s={:.0}",
        records / elapsed,
        records * size as f64 / elapsed / (1 << 20) as f64,
        pct(0.5),
        pct(0.99),
        pct(0.999),
        counts.batches.load(Ordering::Relaxed) as f64 / commits,
        counts.fsyncs.load(Ordering::Relaxed) as f64 / commits,
        counts.commit_us.load(Ordering::Relaxed) as f64 / commits,
        commits / elapsed,
    );
    wal.shutdown();
}
