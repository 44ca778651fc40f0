//! Integrity regressions, each on real broker and `broker-admin` processes:
//! tenant bytes never become records, a config change never destroys
//! acknowledged data, read-only tools are safe beside a live broker, and
//! quarantined data is reported until an operator discards it.

mod common;

use common::format1::v1_frame;
use common::*;
use std::collections::BTreeSet;
use std::path::Path;

/// A format-1 frame (crc-only) as the previous format wrote it: what a
/// tenant would plant to be read as `victim`'s record by a crc scanner.
fn planted_v1_frame(offset: u64) -> Vec<u8> {
    v1_frame("victim", b"{\"planted\":true}", offset)
}

/// A format-2 frame whose MACs are a guess (the tenant has no key).
fn planted_v2_frame(offset: u64, guess: u64) -> Vec<u8> {
    let mut f = planted_v1_frame(offset);
    let body = f.split_off(36);
    let mut h = vec![0u8; 48];
    h[0..4].copy_from_slice(&0x3246_5257u32.to_le_bytes());
    h[4] = 2;
    h[6..32].copy_from_slice(&f[6..32]);
    h[32..40].copy_from_slice(&guess.to_le_bytes());
    h[40..48].copy_from_slice(&guess.rotate_left(17).to_le_bytes());
    h.extend_from_slice(&body);
    h
}

/// A frame of the current format (3) whose MACs are a guess.
fn planted_v3_frame(offset: u64, guess: u64) -> Vec<u8> {
    let mut f = planted_v2_frame(offset, guess.rotate_left(7));
    f[4] = 3;
    f
}

/// A record full of planted frames, padded so it spans many sectors.
fn hostile_record(i: u64) -> Vec<u8> {
    let mut r = format!("hostile-{i:08}:").into_bytes();
    while r.len() < 6000 {
        r.extend_from_slice(&planted_v1_frame(1_000_000));
        r.extend_from_slice(&planted_v2_frame(1_000_000, i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ r.len() as u64));
        r.extend_from_slice(&planted_v3_frame(1_000_000, i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ r.len() as u64));
    }
    r
}

async fn post_octets(url: &str, body: Vec<u8>) -> Answer {
    answer(
        client()
            .post(format!("{url}/v1/topics/events/records"))
            .bearer_auth("acme-t")
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .expect("ingest"),
    )
    .await
}

/// Every record `dump` shows: (tenant, offset, payload bytes).
fn dumped(data_dir: &Path) -> Vec<(String, u64, Vec<u8>)> {
    let (code, out, err) = run_admin(&["dump", "--data-dir", data_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let payload = match v["payload"].as_str() {
                Some(s) => s.as_bytes().to_vec(),
                None => decode_b64(v["payload_b64"].as_str().unwrap()),
            };
            (v["tenant"].as_str().unwrap().to_string(), v["offset"].as_u64().unwrap(), payload)
        })
        .collect()
}

fn decode_b64(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | A.iter().position(|&a| a == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test]
async fn a_frame_hidden_in_a_record_never_becomes_a_record_after_its_segment_is_reused() {
    // No destination: retention releases (and recycles) every sealed segment.
    let mut b = BrokerProc::start("");
    let mut sent: BTreeSet<Vec<u8>> = BTreeSet::new();
    // The old generation: segments full of planted frames, released and reused.
    for i in 0..60 {
        let r = hostile_record(i);
        assert_eq!(post_octets(&b.url, r.clone()).await.status, 200);
        sent.insert(r);
    }
    let url = b.url.clone();
    wait_until("segments were released for reuse", std::time::Duration::from_secs(30), || {
        let url = url.clone();
        async move { metric(&url, "weir_segments_deleted_total").await >= 2.0 }
    })
    .await;
    // The new generation ends inside an old frame. The 60 hostile frames
    // leave 5 in the active segment (11 fit in one); 6 plain records of the
    // same size take it past half (its spare is now taken from the released
    // segments: a file full of planted frames) and full, so the lane rolls
    // onto that file; then short records end inside its first old frame.
    let mut last = 0;
    let hostile_len = hostile_record(0).len();
    for i in 0..6 {
        let mut r = format!("fill-{i}:").into_bytes();
        r.resize(hostile_len, b'f');
        assert_eq!(post_octets(&b.url, r.clone()).await.status, 200);
        sent.insert(r);
    }
    for i in 0..25 {
        let r = format!("new-{i}").into_bytes();
        let a = post_octets(&b.url, r.clone()).await;
        assert_eq!(a.status, 200);
        last = a.json["first_offset"].as_u64().unwrap();
        sent.insert(r);
    }
    b.restart();
    let after = post_octets(&b.url, b"after".to_vec()).await;
    assert_eq!(after.json["first_offset"].as_u64(), Some(last + 1), "the lane did not jump: {after:?}");
    sent.insert(b"after".to_vec());
    // Then kill -9 at moments spread through more hostile traffic into reused files.
    let mut attempted = last + 2;
    for round in 0..3u64 {
        let url = b.url.clone();
        let sender = tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..200u64 {
                let r = if i % 3 == 0 {
                    hostile_record(1000 * (round + 1) + i)
                } else {
                    format!("k{round}-{i}").into_bytes()
                };
                mine.push(r.clone());
                let sent = client()
                    .post(format!("{url}/v1/topics/events/records"))
                    .bearer_auth("acme-t")
                    .header("content-type", "application/octet-stream")
                    .body(r)
                    .send()
                    .await;
                if sent.is_err() {
                    break;
                }
            }
            mine
        });
        tokio::time::sleep(std::time::Duration::from_millis(150 + 170 * round)).await;
        b.kill9();
        let mine = sender.await.unwrap();
        attempted += mine.len() as u64;
        sent.extend(mine);
        b.start_again();
        let probe = post_octets(&b.url, format!("probe-{round}").into_bytes()).await;
        let at = probe.json["first_offset"].as_u64().unwrap();
        assert!(at <= attempted, "round {round}: the lane jumped to {at} (only {attempted} records were ever sent)");
        sent.insert(format!("probe-{round}").into_bytes());
        attempted += 1;
        last = at;
    }
    assert_eq!(b.stop_signal(libc::SIGTERM), Some(0));
    let held = dumped(&b.data_dir);
    assert!(!held.is_empty());
    for (tenant, offset, payload) in &held {
        assert_eq!(tenant, "acme", "a planted frame became a record at offset {offset}");
        assert!(*offset <= last, "offset {offset} was never handed out");
        assert!(sent.contains(payload), "record at {offset} is not one the tenant sent");
    }
    let (code, out, _) = run_admin(&["verify", "--data-dir", b.data_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn lowering_max_inflated_bytes_never_cuts_or_quarantines_an_acknowledged_batch() {
    // A destination that never leases: every record is retained.
    let mut b = BrokerProc::start("[[destination]]\nname = \"f\"\ntopics = [\"events\"]\ntoken = \"f-t\"\n");
    let big: Vec<String> = (0..3).map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(900_000))).collect();
    assert_eq!(ingest(&b.url, "acme-t", "events", big.join("\n")).await.status, 200);
    assert_eq!(ingest(&b.url, "globex-t", "events", big.join("\n")).await.status, 200);
    // acme's batch has a later frame behind it; globex's may be its lane's last.
    assert_eq!(ingest(&b.url, "acme-t", "events", "{\"after\":1}").await.status, 200);
    assert_eq!(b.stop_signal(libc::SIGTERM), Some(0));
    let lowered = std::fs::read_to_string(&b.config).unwrap().replacen(
        "segment_bytes = 65536\n",
        // (body and record limits may not exceed the inflated one: lowered with it)
        "segment_bytes = 65536\nmax_inflated_bytes = 1048576\nmax_body_bytes = 1048576\nmax_record_bytes = 1048576\n",
        1,
    );
    std::fs::write(&b.config, lowered).unwrap();
    b.start_again();
    assert_eq!(ingest(&b.url, "acme-t", "events", "{\"later\":1}").await.status, 200);
    assert_eq!(b.stop_signal(libc::SIGTERM), Some(0));
    let held = dumped(&b.data_dir);
    let bigs = held.iter().filter(|(_, _, p)| p.len() > 900_000).count();
    assert_eq!(bigs, 6, "every record of both large batches is still there");
    assert_eq!(held.len(), 8);
    let (code, out, _) = run_admin(&["verify", "--data-dir", b.data_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "nothing was quarantined or cut: {out}");
}

#[tokio::test]
async fn read_only_commands_beside_a_live_broker_survive_rolls_and_reuse() {
    let b = BrokerProc::start("");
    let url = b.url.clone();
    let writer = tokio::spawn(async move {
        for i in 0..400 {
            let rec = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "y".repeat(3000));
            assert_eq!(ingest(&url, "acme-t", "events", rec).await.status, 200);
        }
    });
    let dir = b.data_dir.to_str().unwrap().to_string();
    let mut runs = 0;
    while !writer.is_finished() && runs < 60 {
        for cmd in ["dump", "segments", "verify"] {
            let (code, out, err) = run_admin(&[cmd, "--data-dir", &dir]);
            assert!(code == 0 || code == 1, "{cmd} died ({code}): {err}");
            if cmd == "dump" {
                for l in out.lines() {
                    let v: serde_json::Value = serde_json::from_str(l).expect("dump prints whole JSON lines");
                    assert_eq!(v["tenant"], "acme");
                }
            }
        }
        runs += 1;
    }
    writer.await.unwrap();
}

/// Run the broker on `cfg` expecting it to refuse to start: (exit code, stderr).
/// Bounded: a broker that starts anyway is killed and reported as `None`.
fn refused_start(cfg: &Path) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(&BROKER)
        .arg("--config")
        .arg(cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_exit(&mut child, std::time::Duration::from_secs(60));
    if code.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    (code, stderr)
}

/// A segment file of format 1 for lane normal/0 holding `records` from offset 0.
fn v1_segment(records: &[&[u8]]) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[0..8].copy_from_slice(b"WEIRSEG1");
    h[8..10].copy_from_slice(&1u16.to_le_bytes());
    h[10] = 1; // normal
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    for (i, r) in records.iter().enumerate() {
        h.extend_from_slice(&v1_frame("acme", r, i as u64));
    }
    h.resize(h.len() + 4096, 0);
    h
}

#[tokio::test]
async fn a_format_1_directory_is_refused_with_one_line_and_migrate_makes_it_servable() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let lane_dir = data.join("wal").join("normal").join("0");
    std::fs::create_dir_all(&lane_dir).unwrap();
    let recs: [&[u8]; 3] = [b"{\"old\":0}", b"{\"old\":1}", b"{\"old\":2}"];
    std::fs::write(lane_dir.join(format!("{:020}.seg", 0)), v1_segment(&recs)).unwrap();
    let cfg = data.with_extension("toml");
    std::fs::write(&cfg, config(&data, "[[destination]]\nname = \"f\"\ntopics = [\"events\"]\ntoken = \"f-t\"\n"))
        .unwrap();
    let (code, stderr) = refused_start(&cfg);
    assert_eq!(code, Some(2), "{stderr}");
    let reason: Vec<&str> = stderr.lines().filter(|l| l.contains("format 1")).collect();
    assert!(reason.len() == 1 && reason[0].contains("broker-admin migrate"), "{stderr}");
    let (code, out, err) = run_admin(&["migrate", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("converted 1 segment(s) (3 frames, 3 records)"), "{out}");
    let held = dumped(&data);
    assert_eq!(
        held.iter().map(|(_, o, p)| (*o, p.clone())).collect::<Vec<_>>(),
        recs.iter().enumerate().map(|(i, r)| (i as u64, r.to_vec())).collect::<Vec<_>>()
    );
    let mut b = BrokerProc::start_with(&data, &std::fs::read_to_string(&cfg).unwrap());
    let (code, out, _) = run_admin(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(b.stop_signal(libc::SIGTERM), Some(0));
    // A format this build does not know is refused the same way, untouched.
    let mut future = v1_segment(&recs);
    future[8..10].copy_from_slice(&4u16.to_le_bytes());
    let crc = crc32c::crc32c(&future[0..56]);
    future[56..60].copy_from_slice(&crc.to_le_bytes());
    let seg = lane_dir.join(format!("{:020}.seg", 100));
    std::fs::write(&seg, &future).unwrap();
    let (code, stderr) = refused_start(&cfg);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("format 4") && stderr.contains("newer Weir"), "{stderr}");
    assert_eq!(std::fs::read(&seg).unwrap(), future, "an unknown format is never modified");
}
