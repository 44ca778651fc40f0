//! Writes the seed corpora: `cargo run --release --bin gen_corpus` from
//! `fuzz/` (re-running it rewrites the generated seeds; hand-made and
//! crash files are left alone). Segments are written by the real WAL;
//! frames for the frame target are sealed under the fixed key by
//! `targets::make_frame`, which `tests/fuzz_corpus.rs` holds to the WAL's
//! own sealing.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use weir_fuzz::targets::{fixed_header, make_frame, KEY_BYTES};

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Real segments: batches appended through the WAL, read back from disk.
fn wal_segments() -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let opts = wal::WalOptions { shards: 1, preallocate: false, segment_bytes: 1 << 16, ..Default::default() };
    let rt = tokio::runtime::Runtime::new().unwrap();
    {
        let w = wal::Wal::open(Arc::new(wal::RealFs), dir.path(), opts, None).unwrap();
        let lane = wal::LaneId::new(wal::Priority::Normal, 0);
        let batches: [(&str, Option<&str>, Vec<&[u8]>); 4] = [
            ("acme", None, vec![b"{\"a\":1}"]),
            ("acme", Some("req-1"), vec![b"{\"a\":2}", b"{\"b\":[1,2,3]}"]),
            ("globex", None, vec![b"\x00\x01binary\xff"]),
            ("acme", Some("req-2"), vec![b"{}", b"[]", b"\"s\""]),
        ];
        for (tenant, key, recs) in batches {
            let b = wal::EncodedBatch::encode(tenant, "events", key, &recs).unwrap();
            rt.block_on(w.append(lane, b)).unwrap();
        }
        w.shutdown();
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "seg") {
                let bytes = std::fs::read(&p).unwrap();
                if bytes.len() > 64 {
                    out.push((p.file_name().unwrap().to_string_lossy().into_owned(), bytes));
                }
            }
        }
    }
    assert!(!out.is_empty(), "the WAL wrote no segment");
    out
}

fn main() {
    // frame: frames under the fixed key.
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("one-record", make_frame(&KEY_BYTES, "acme", "events", None, &[b"{\"a\":1}"], 0, 1_700_000_000_000)),
        ("keyed", make_frame(&KEY_BYTES, "acme", "events", Some("req-1"), &[b"{\"a\":1}", b"{\"b\":2}"], 42, 7)),
        ("binary", make_frame(&KEY_BYTES, "t", "bin", None, &[b"\x00\xff\x00", b"", b"x"], 1 << 40, 0)),
        ("empty-meta", make_frame(&KEY_BYTES, "", "", None, &[b"r"], 5, 5)),
    ];
    for (name, f) in &frames {
        put("frame", name, f);
    }
    let mut trailing = frames[1].1.clone();
    trailing.extend_from_slice(&frames[0].1);
    put("frame", "two-frames", &trailing);

    // scan, raw: real segment files (mode byte 0), and damaged copies.
    for (i, (name, seg)) in wal_segments().into_iter().enumerate() {
        let with = |mode: u8, s: &[u8]| [&[mode][..], s].concat();
        put("scan", &format!("wal-{i}-{name}"), &with(0, &seg));
        put("scan", &format!("wal-{i}-torn"), &with(0, &seg[..seg.len() - 5]));
        let mut flipped = seg.clone();
        flipped[64 + 50] ^= 0x10; // inside the first frame: corruption, later frames kept
        put("scan", &format!("wal-{i}-flipped"), &with(0, &flipped));
        let mut zeros = seg.clone();
        zeros.resize(seg.len() + 256, 0);
        put("scan", &format!("wal-{i}-zero-tail"), &with(0, &zeros));
    }
    // scan, raw under the fixed header (the file's own header destroyed).
    let h = fixed_header(false, 0);
    let mut seg = h.encode().to_vec();
    seg.extend(make_frame(&KEY_BYTES, "acme", "events", None, &[b"1"], 0, 1));
    seg.extend(make_frame(&KEY_BYTES, "acme", "events", None, &[b"2", b"3"], 1, 2));
    put("scan", "fixed-header", &[&[0u8][..], &seg].concat());
    // scan, structured: (tag, n, bytes) pieces (see targets::scan).
    put("scan", "structured-frames", &[1, 2, 5, b'h', b'e', b'l', b'l', b'o', 2, 3, b'a', b'b', b'c']);
    put("scan", "structured-gap-corrupt", &[1, 2, 2, b'h', b'i', 0, 4, 1, 2, 3, 4, 2 | 8, 1, b'z']);
    put("scan", "structured-back-torn", &[3, 2, 1, b'a', 2 | 0x40 | 4, 1, b'b', 3 | 0x80, 4, 1, 2, 3, 4]);
    put("scan", "structured-zeros", &[1, 2, 1, b'a', 1, 8]);

    // ingest_body: selector byte (see targets::ingest_body), then the body.
    let ndjson = b"{\"a\":1}\n{\"b\":[1,2,{\"c\":null}]}\r\n\n  \n\"caf\xc3\xa9\"\n".to_vec();
    put("ingest_body", "ndjson", &[&[0u8][..], &ndjson].concat());
    put("ingest_body", "ndjson-gzip", &[&[1u8 << 3][..], &gzip(&ndjson)].concat());
    put("ingest_body", "ndjson-gzip-twice", &[&[3u8 << 3][..], &[gzip(b"{}\n"), gzip(b"[1]\n")].concat()].concat());
    put("ingest_body", "ndjson-bad-line", &[&[2u8][..], &b"{\"a\":1}\n{oops}\n"[..]].concat());
    put("ingest_body", "binary", &[&[1u8][..], &b"\x00\x01\x02 any bytes"[..]].concat());
    put("ingest_body", "binary-gzip", &[&[1u8 | 1 << 3][..], &gzip(b"\x00\xffbinary")].concat());
    put("ingest_body", "ndjson-small-limit", &[&[0x40u8][..], &b"{\"k\":\"a long value\"}\n1\n"[..]].concat());

    // config: the shipped broker.toml, and the development config's shape.
    put("config", "broker.toml", &std::fs::read("../ops/broker.toml").unwrap());
    put(
        "config",
        "minimal.toml",
        b"admin_token = \"admin\"\n[[tenant]]\nname = \"dev\"\ntoken = \"t\"\nrate_per_sec = 10000.0\nburst = 20000\n\
          [[topic]]\nname = \"events\"\n[[destination]]\nname = \"dev\"\ntopics = [\"events\"]\ntoken = \"e\"\n",
    );

    // api_json: lease and admin bodies.
    let json: &[(&str, &str)] = &[
        ("acquire", r#"{"max_records":500,"max_bytes":1048576,"wait_ms":1000}"#),
        ("acquire-empty", "{}"),
        ("commit", r#"{"dead_letters":[{"offset":3,"error":"422 from sink"}]}"#),
        ("fail", r#"{"class":"retryable","message":"timeout","retry_after_ms":2000}"#),
        ("release", r#"{"class":"released","message":"stopping"}"#),
        ("rewind-earliest", r#"{"to":"earliest"}"#),
        ("rewind-offset", r#"{"to":"offset","offset":10,"lane":"normal/2"}"#),
        ("rewind-ts", r#"{"to":"timestamp","ts_ms":1700000000000}"#),
        (
            "acquire-response",
            r#"{"lease":{"id":"l-1","destination":"dev","lane":"normal/0","from_offset":0,"to_offset":2,"lease_ms":30000,"probe":false,"redeliveries":0,"records":[{"offset":0,"tenant":"acme","topic":"events","ts_ms":1,"payload_b64":"eyJhIjoxfQ=="}]},"idle":null,"retry_after_ms":0}"#,
        ),
        ("acquire-idle", r#"{"lease":null,"idle":"breaker_open","retry_after_ms":500}"#),
        ("error", r#"{"error":{"code":"overloaded","message":"retry"}}"#),
    ];
    for (name, j) in json {
        put("api_json", name, j.as_bytes());
    }
    println!("corpus written under fuzz/corpus/");
}
