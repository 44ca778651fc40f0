//! `broker-admin` through its binary: byte surgery found by verify and
//! mended by repair, dump round trips, the repair lock, and the online
//! commands against a live broker.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEST: &str = "[[destination]]\nname = \"f\"\ntopics = [\"events\"]\ntoken = \"f-t\"\n";

/// Ingest `n` single-record batches for acme; returns the lane they went to.
async fn fill(url: &str, n: usize) -> String {
    let mut lane = String::new();
    for i in 0..n {
        let a = ingest(url, "acme-t", "events", format!("{{\"i\":{i}}}")).await;
        assert_eq!(a.status, 200);
        lane = a.json["lane"].as_str().unwrap().to_string();
    }
    lane
}

/// The active segment of `lane` and its frames (read-only inspection).
fn frames(data_dir: &Path, lane: &str) -> (PathBuf, Vec<wal::segment::FrameLoc>) {
    let reports = wal::inspect::inspect_all(&wal::RealFs, &data_dir.join("wal")).unwrap();
    let r = reports.iter().rfind(|r| r.lane.to_string() == lane && !r.quarantined).unwrap();
    (r.path.clone(), r.scan.frames.clone())
}

fn dumped_ids(data_dir: &Path) -> Vec<u64> {
    let (code, out, err) = run_admin(&["dump", "--data-dir", data_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let mut ids: Vec<u64> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| serde_json::from_str::<serde_json::Value>(v["payload"].as_str()?).ok()?["i"].as_u64())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn torn_tail_is_found_by_verify_and_mended_by_repair() {
    let mut b = BrokerProc::start(DEST);
    let lane = fill(&b.url, 10).await;
    assert_eq!(b.stop_signal(libc::SIGTERM), Some(0));
    let dir = b.data_dir.clone();
    let (seg, fr) = frames(&dir, &lane);
    let last = fr[9];
    // The last write tore half-way.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(last.pos + u64::from(last.len) / 2).unwrap();
    drop(f);
    let (code, out, err) = run_admin(&["verify", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&seg.display().to_string()) && out.contains(&format!("torn tail at byte {}", last.pos)),
        "{out}"
    );
    let (code, out, _) = run_admin(&["repair", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("truncated"), "{out}");
    let (code, out, _) = run_admin(&["verify", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(dumped_ids(&dir), (0..9).collect::<Vec<_>>());
}

#[tokio::test]
async fn flipped_byte_is_found_by_verify_and_repair_keeps_every_record_around_it_and_reports_the_quarantine() {
    let mut b = BrokerProc::start(DEST);
    let lane = fill(&b.url, 10).await;
    assert_eq!(b.stop_signal(libc::SIGTERM), Some(0));
    let dir = b.data_dir.clone();
    let (seg, fr) = frames(&dir, &lane);
    let hit = fr[4];
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[hit.pos as usize + 40] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let (code, out, _) = run_admin(&["verify", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&seg.display().to_string()) && out.contains(&format!("corrupt frame at byte {}", hit.pos)),
        "{out}"
    );
    let (code, out, _) = run_admin(&["repair", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("quarantined"), "{out}");
    assert_eq!(dumped_ids(&dir), vec![0, 1, 2, 3, 5, 6, 7, 8, 9], "records before and after the damage survive");
    // The damaged original is kept aside and listed as quarantined.
    let (_, segs, _) = run_admin(&["segments", "--data-dir", dir.to_str().unwrap(), "--json"]);
    assert!(segs.lines().any(|l| l.contains("\"quarantined\":true")), "{segs}");
    quarantine_is_reported_until_the_operator_discards_it(&mut b, &dir).await;
}

/// While quarantined data exists: verify exits 1 naming it and the offsets
/// it lost, the broker serves but says so in /readyz and its gauge; after
/// `repair --discard-quarantine` verify is clean.
async fn quarantine_is_reported_until_the_operator_discards_it(b: &mut BrokerProc, dir: &Path) {
    let (code, out, _) = run_admin(&["verify", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("quarantined segment") && out.contains("offsets 4..5 lost"), "{out}");
    b.start_again();
    assert_eq!(ingest(&b.url, "acme-t", "events", "{\"i\":10}").await.status, 200);
    assert_eq!(metric(&b.url, "weir_wal_quarantined_segments").await, 1.0);
    let ready = client().get(format!("{}/readyz", b.url)).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200, "quarantined data does not stop service");
    assert!(ready.text().await.unwrap().contains("quarantined segment"));
    assert_eq!(b.stop_signal(libc::SIGTERM), Some(0));
    let (code, out, _) = run_admin(&["repair", "--data-dir", dir.to_str().unwrap(), "--discard-quarantine"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("discarded quarantined"), "{out}");
    let (code, out, _) = run_admin(&["verify", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(dumped_ids(dir), vec![0, 1, 2, 3, 5, 6, 7, 8, 9, 10]);
}

#[tokio::test]
async fn dump_round_trips_text_and_binary_payloads() {
    let b = BrokerProc::start(DEST);
    let text = "{\"msg\":\"héllo \\\"wörld\\\"\"}";
    assert_eq!(ingest(&b.url, "acme-t", "events", text.to_string()).await.status, 200);
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    let resp = client()
        .post(format!("{}/v1/topics/events/records", b.url))
        .bearer_auth("globex-t")
        .header("content-type", "application/octet-stream")
        .body(binary.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Read-only beside the running broker.
    let (code, out, err) = run_admin(&["dump", "--data-dir", b.data_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let t = rows.iter().find(|r| r["tenant"] == "acme").unwrap();
    assert_eq!(t["payload"].as_str().unwrap(), text);
    assert_eq!(t["topic"], "events");
    assert!(t["lane"].as_str().unwrap().starts_with("normal/") && t["offset"].is_u64() && t["ts_ms"].is_u64());
    let bin = rows.iter().find(|r| r["tenant"] == "globex").unwrap();
    assert!(bin.get("payload").is_none());
    assert_eq!(protocol::b64_decode(bin["payload_b64"].as_str().unwrap()).unwrap(), binary);
    let (code, filtered, _) =
        run_admin(&["dump", "--data-dir", b.data_dir.to_str().unwrap(), "--tenant", "globex", "--limit", "5"]);
    assert_eq!((code, filtered.lines().count()), (0, 1));
    let (code, out, _) = run_admin(&["verify", "--data-dir", b.data_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "verify beside a running broker: {out}");
}

#[tokio::test]
async fn repair_refuses_while_a_broker_holds_the_directory() {
    let b = BrokerProc::start(DEST);
    let (code, _, err) = run_admin(&["repair", "--data-dir", b.data_dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("refusing to repair") && err.contains("in use"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_commands_rewind_pause_and_show_destinations() {
    let b = BrokerProc::start(DEST);
    fill(&b.url, 20).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f.ndjson");
    let _e = ExporterProc::start(&b.url, "f", "f-t", &format!("file:{}", out.display()), &["--wait-ms", "200"]);
    wait_until("first delivery", Duration::from_secs(20), || async { file_lines(&out).len() == 20 }).await;
    let admin = |args: &[&str]| {
        let mut all = vec![args[0], "--broker", &b.url, "--token", "admin-t"];
        all.extend_from_slice(&args[1..]);
        run_admin(&all)
    };
    let (code, table, _) = admin(&["destinations"]);
    assert_eq!(code, 0);
    assert!(table.contains("DESTINATION") && table.lines().any(|l| l.starts_with('f')), "{table}");
    let (code, json, _) = admin(&["destinations", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in ["name", "lag_records", "lag_bytes", "oldest_pending_age_ms", "leases_in_flight", "dead_letter_records"]
    {
        assert!(v[0].get(key).is_some(), "missing {key}");
    }
    assert_eq!(v[0]["breaker"]["state"], "closed");
    assert_eq!(v[0]["breaker"]["consecutive_failures"], 0);
    // Rewind to the earliest record: the exporter delivers everything again.
    let (code, said, err) = admin(&["rewind", "--destination", "f", "--earliest"]);
    assert_eq!(code, 0, "{err}");
    assert!(said.contains("rewind"));
    wait_until("redelivery after rewind", Duration::from_secs(20), || async { file_lines(&out).len() == 40 }).await;
    // Pause: nothing is delivered until resume.
    assert_eq!(admin(&["pause", "--destination", "f"]).0, 0);
    assert_eq!(destination(&b.url, "f").await["paused"], true);
    fill(&b.url, 3).await;
    tokio::time::sleep(Duration::from_millis(600)).await; // > the exporter's poll interval
    assert_eq!(file_lines(&out).len(), 40, "a paused destination gets no lease");
    assert_eq!(admin(&["resume", "--destination", "f"]).0, 0);
    wait_until("delivery after resume", Duration::from_secs(20), || async { file_lines(&out).len() == 43 }).await;
    assert_eq!(admin(&["reset-breaker", "--destination", "f"]).0, 0);
    let (code, _, err) = admin(&["pause", "--destination", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown_destination"), "{err}");
    let help = std::process::Command::new(&ADMIN).args(["rewind", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("Example"));
}

#[tokio::test]
async fn dump_beside_a_running_broker_stops_at_the_durable_watermark() {
    let mut b = BrokerProc::start(DEST);
    let lane = fill(&b.url, 6).await;
    let mark = b.data_dir.join("wal").join(&lane).join(wal::WATERMARK_FILE);
    assert_eq!(std::fs::read(&mark).unwrap(), 6u64.to_le_bytes(), "the broker publishes its durable watermark");
    // Pretend the last two records are still in flight (written, not yet synced).
    std::fs::write(&mark, 4u64.to_le_bytes()).unwrap();
    assert_eq!(dumped_ids(&b.data_dir), vec![0, 1, 2, 3]);
    // With no broker holding the directory, everything on disk is shown.
    assert_eq!(b.stop_signal(libc::SIGTERM), Some(0));
    assert_eq!(dumped_ids(&b.data_dir), (0..6).collect::<Vec<_>>());
}

#[test]
fn untrimmed_sealed_tail_and_empty_summary_are_notes_but_lost_or_flipped_bytes_are_problems() {
    let dir = tempfile::tempdir().unwrap();
    let lane = wal::LaneId::new(wal::Priority::Normal, 0);
    let opts = wal::WalOptions { shards: 1, segment_bytes: 4096, ..wal::WalOptions::default() };
    let w = wal::Wal::open(std::sync::Arc::new(wal::RealFs), &dir.path().join("wal"), opts, None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let meta = wal::BatchMeta { tenant: "acme".into(), topic: "events".into(), idempotency_key: None };
    for i in 0..20 {
        let rec = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(500));
        rt.block_on(w.append(lane, wal::EncodedBatch::new(&meta, &[rec]).unwrap())).unwrap();
    }
    let sealed = w.lane(lane).unwrap().segments().into_iter().find(|s| s.sealed).unwrap();
    w.shutdown();
    drop(w);
    // A crash right after a roll: the sealed segment's trim and summary never reached the disk.
    let f = std::fs::OpenOptions::new().write(true).open(&sealed.path).unwrap();
    f.set_len(sealed.bytes + 4096).unwrap();
    drop(f);
    std::fs::write(sealed.path.with_extension("sum"), b"").unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let (code, out, err) = run_admin(&["verify", "--data-dir", data_dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("note:") && out.contains("preallocated zero bytes") && out.contains("summary"), "{out}");
    // An intact summary that claims more than the segment holds: the segment lost data after sealing.
    let claims_more = wal::segment::Summary {
        base_offset: sealed.base_offset,
        next_offset: sealed.next_offset + 5,
        records: sealed.records + 5,
        bytes: sealed.bytes + 100,
        first_ts_ms: sealed.first_ts_ms,
        last_ts_ms: sealed.last_ts_ms,
    };
    std::fs::write(sealed.path.with_extension("sum"), claims_more.encode()).unwrap();
    let (code, out, _) = run_admin(&["verify", "--data-dir", data_dir]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("changed after it was sealed"), "{out}");
    // Damage to the frames fails verify too.
    let mut bytes = std::fs::read(&sealed.path).unwrap();
    bytes[200] ^= 0xff;
    std::fs::write(&sealed.path, bytes).unwrap();
    let (code, out, _) = run_admin(&["verify", "--data-dir", data_dir]);
    assert_eq!(code, 1, "{out}");
}
