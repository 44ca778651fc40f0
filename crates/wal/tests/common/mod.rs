//! Helpers shared by the WAL's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use wal::{BatchMeta, EncodedBatch, FileSystem, LaneId, Priority, Wal, WalOptions};

pub const NORMAL0: LaneId = LaneId { priority: Priority::Normal, shard: 0 };

/// Records of batch `id`: recognisable, so a reader can tell whole from torn.
pub fn records_of(id: u64, n: u32, size: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut r = format!("{{\"batch\":{id},\"i\":{i},\"pad\":\"").into_bytes();
            while r.len() + 2 < size {
                r.push(b'a' + ((id as usize + r.len()) % 26) as u8);
            }
            r.extend_from_slice(b"\"}");
            r
        })
        .collect()
}

pub fn batch(id: u64, n: u32, size: usize) -> EncodedBatch {
    let meta = BatchMeta { tenant: "acme".into(), topic: "events".into(), idempotency_key: Some(format!("k{id}")) };
    EncodedBatch::new(&meta, &records_of(id, n, size)).expect("valid batch")
}

pub fn small_opts() -> WalOptions {
    WalOptions { shards: 2, segment_bytes: 4096, max_frame_bytes: 1 << 20, preallocate: true, ..WalOptions::default() }
}

pub fn open(fs: Arc<dyn FileSystem>, dir: &Path, opts: WalOptions) -> Wal {
    Wal::open(fs, dir, opts, None).expect("open wal")
}

/// Every batch of a lane as (base offset, batch id, records).
pub fn read_lane(wal: &Wal, lane: LaneId) -> Vec<(u64, u64, Vec<Vec<u8>>)> {
    let l = wal.lane(lane).expect("lane");
    let batches = l.read(l.earliest_offset(), usize::MAX, usize::MAX).expect("read lane");
    batches
        .into_iter()
        .map(|b| {
            let id = b.meta.idempotency_key.as_deref().and_then(|k| k[1..].parse().ok()).expect("batch key");
            (b.base_offset, id, b.records)
        })
        .collect()
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}
