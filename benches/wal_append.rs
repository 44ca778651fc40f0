//! Durable WAL appends (criterion). Every measured append has returned from
//! fdatasync. Run: `cargo bench --bench wal_append`.
//!
//! After each iteration a consumer that keeps up releases the sealed
//! segments, so rolls reuse them (the steady state of a broker whose
//! exporters keep up), except in the `_unreleased` group.
//!
//! - `records/{size}B/{appenders}`: that many concurrent appenders, each
//!   appending one-record batches; throughput in records.
//! - `batch_1MiB/{appenders}`: 1 MiB batches (1024 x 1 KiB records); throughput
//!   in bytes.
//! - `batch_1MiB_unreleased/{appenders}`: the same with nothing released, so
//!   every segment is a fresh file (a cold or lagging broker).
//!
//! Latency percentiles and fsyncs per commit come from `examples/wal_load.rs`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wal::{BatchMeta, EncodedBatch, LaneId, Priority, RealFs, Wal, WalOptions};

fn meta() -> BatchMeta {
    BatchMeta { tenant: "bench".into(), topic: "events".into(), idempotency_key: None }
}

fn open(dir: &std::path::Path) -> Arc<Wal> {
    let opts = WalOptions { shards: 1, segment_bytes: 64 << 20, ..WalOptions::default() };
    Arc::new(Wal::open(Arc::new(RealFs), dir, opts, None).expect("open wal"))
}

const LANE: LaneId = LaneId { priority: Priority::Normal, shard: 0 };

/// `appenders` tasks append `batches_each` batches of `records` records of `size` bytes.
async fn run(wal: &Arc<Wal>, appenders: usize, batches_each: usize, records: usize, size: usize) {
    let payload = vec![b'x'; size];
    let mut tasks = Vec::with_capacity(appenders);
    for _ in 0..appenders {
        let wal = Arc::clone(wal);
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let recs: Vec<&[u8]> = (0..records).map(|_| &payload[..]).collect();
            for _ in 0..batches_each {
                let batch = EncodedBatch::new(&meta(), &recs).expect("batch");
                wal.append(LANE, batch).await.expect("durable append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("appender");
    }
}

/// A consumer that keeps up: every sealed segment is released (and recycled).
fn release_all(wal: &Wal) {
    let lane = wal.lane(LANE).expect("lane");
    lane.delete_segments_below(lane.next_offset()).expect("release");
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let base = std::env::var("WEIR_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
    let tmp = tempfile::tempdir_in(base).expect("tempdir");
    let wal = open(tmp.path());

    let mut g = c.benchmark_group("records");
    g.measurement_time(Duration::from_secs(4)).sample_size(10);
    for size in [200usize, 1024] {
        for appenders in [1usize, 16, 64, 256] {
            let total = 4096usize.max(appenders * 8);
            g.throughput(Throughput::Elements(total as u64));
            g.bench_with_input(BenchmarkId::new(format!("{size}B"), appenders), &appenders, |b, &k| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        rt.block_on(run(&wal, k, total / k, 1, size));
                        release_all(&wal);
                    }
                    start.elapsed()
                })
            });
        }
    }
    g.finish();

    for (group, release) in [("batch_1MiB", true), ("batch_1MiB_unreleased", false)] {
        let mut g = c.benchmark_group(group);
        g.measurement_time(Duration::from_secs(4)).sample_size(10);
        for appenders in [1usize, 4] {
            g.throughput(Throughput::Bytes((appenders * 16 * 1024 * 1024) as u64));
            g.bench_with_input(BenchmarkId::from_parameter(appenders), &appenders, |b, &k| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        rt.block_on(run(&wal, k, 16, 1024, 1024));
                        if release {
                            release_all(&wal);
                        }
                    }
                    start.elapsed()
                })
            });
        }
        g.finish();
    }
    wal.shutdown();
}

criterion_group!(benches, bench);
criterion_main!(benches);
