//! The fuzz corpora as regression tests (docs/fuzzing.md).
//!
//! Every file of `fuzz/corpus/<target>/` (the seeds) and
//! `fuzz/crashes-fixed/<target>/` (inputs that once crashed a target, kept
//! after the fix) runs through the target's own body: `fuzz/src/targets.rs`
//! is compiled into this test by path, so the replay cannot drift from what
//! AFL++ runs, and CI never builds the fuzz workspace or AFL++ itself.

#[path = "../fuzz/src/targets.rs"]
#[allow(dead_code)]
mod targets;

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

fn replay(target: &str) {
    let (_, run) = targets::TARGETS.iter().find(|(n, _)| *n == target).expect("a known target");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = files(&root.join("corpus").join(target));
    assert!(!seeds.is_empty(), "fuzz/corpus/{target}/ holds no seed: the replay would prove nothing");
    let fixed = files(&root.join("crashes-fixed").join(target));
    for f in seeds.iter().chain(&fixed) {
        let bytes = std::fs::read(f).unwrap();
        if let Err(e) = std::panic::catch_unwind(|| run(&bytes)) {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("fuzz target {target} fails on {}: {}", f.display(), msg.unwrap_or_default());
        }
    }
    eprintln!("fuzz target {target}: {} seeds and {} fixed crashes replayed", seeds.len(), fixed.len());
}

#[test]
fn fuzz_corpus_frame() {
    replay("frame");
}

#[test]
fn fuzz_corpus_scan() {
    replay("scan");
}

#[test]
fn fuzz_corpus_ingest_body() {
    replay("ingest_body");
}

#[test]
fn fuzz_corpus_config() {
    replay("config");
}

#[test]
fn fuzz_corpus_api_json() {
    replay("api_json");
}

#[test]
fn fuzz_corpus_otlp_proto() {
    replay("otlp_proto");
}

#[test]
fn fuzz_corpus_otlp_json() {
    replay("otlp_json");
}

#[test]
fn fuzz_corpus_otel_rows() {
    replay("otel_rows");
}

#[test]
fn every_corpus_directory_is_a_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for dir in ["corpus", "crashes-fixed"] {
        for e in std::fs::read_dir(root.join(dir)).into_iter().flatten() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(targets::TARGETS.iter().any(|(n, _)| *n == name), "fuzz/{dir}/{name} is not a fuzz target");
        }
    }
}

/// The targets make frames themselves (to reach what the MAC guards):
/// they must be the frames the WAL writes, byte for byte.
#[test]
fn the_targets_frames_are_the_wals_frames() {
    let dir = tempfile::tempdir().unwrap();
    let lane = wal::LaneId::new(wal::Priority::Normal, 0);
    let opts = wal::WalOptions { shards: 1, preallocate: false, ..wal::WalOptions::default() };
    let w = wal::Wal::open(std::sync::Arc::new(wal::RealFs), dir.path(), opts, None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let batches: [(Option<&str>, &[&[u8]]); 2] = [(Some("req-1"), &[b"{\"a\":1}", b"xyz"]), (None, &[b""])];
    for (key, recs) in batches {
        rt.block_on(w.append(lane, wal::EncodedBatch::encode("acme", "events", key, recs).unwrap())).unwrap();
    }
    let seg = w.lane(lane).unwrap().segments().into_iter().next().unwrap();
    w.shutdown();
    drop(w);
    let bytes = std::fs::read(&seg.path).unwrap();
    let header = wal::segment::SegmentHeader::decode(&bytes).unwrap();
    let scan = wal::segment::scan(&bytes, &header);
    assert_eq!(scan.frames.len(), 2);
    for (loc, (key, recs)) in scan.frames.iter().zip(batches) {
        let written = &bytes[loc.pos as usize..loc.end() as usize];
        let made = targets::make_frame(&header.key.to_bytes(), "acme", "events", key, recs, loc.base_offset, loc.ts_ms);
        assert_eq!(made, written);
        let mut resealed = written.to_vec();
        resealed[32..48].fill(0);
        targets::seal(&mut resealed, &header.key.to_bytes());
        assert_eq!(resealed, written);
    }
}
