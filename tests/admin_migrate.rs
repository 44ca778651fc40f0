//! Issue 19, defect 12: `broker-admin migrate` that leaves acknowledged
//! records unconverted exits 1, and `migrate`, `verify` and `repair
//! --discard-quarantine` all name the offsets really lost (not offset 0,
//! which is converted and served), for every quarantined copy.

mod common;

use common::format1::v1_frame;
use common::*;
use std::path::Path;

/// A format-1 segment of lane `<priority>/0` (`priority`: its index, high
/// 0, normal 1, low 2) from
/// `base`, one record per frame; returns it and where each frame starts.
fn v1_segment(priority: u8, base: u64, records: u64) -> (Vec<u8>, Vec<usize>) {
    let mut s = vec![0u8; 64];
    s[0..8].copy_from_slice(b"WEIRSEG1");
    s[8..10].copy_from_slice(&1u16.to_le_bytes());
    s[10] = priority;
    s[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&s[0..24]);
    s[24..28].copy_from_slice(&crc.to_le_bytes());
    let mut starts = Vec::new();
    for i in 0..records {
        starts.push(s.len());
        s.extend_from_slice(&v1_frame("acme", format!("{{\"old\":{}}}", base + i).as_bytes(), base + i));
    }
    s.resize(s.len() + 4096, 0);
    (s, starts)
}

/// Write a segment whose frame `damaged` (if any) has a flipped byte.
fn write_segment(dir: &Path, priority: u8, base: u64, records: u64, damaged: Option<usize>) {
    let (mut seg, starts) = v1_segment(priority, base, records);
    if let Some(i) = damaged {
        seg[starts[i] + 40] ^= 0x01;
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{base:020}.seg")), seg).unwrap();
}

/// (lane, offset) of every record served.
fn offsets_served(data: &Path) -> Vec<(String, u64)> {
    let (code, out, err) = run_admin(&["dump", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let mut all: Vec<(String, u64)> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["lane"].as_str().unwrap().to_string(), v["offset"].as_u64().unwrap()))
        .collect();
    all.sort();
    all
}

#[test]
fn migrate_that_keeps_records_aside_exits_1_and_every_tool_names_the_true_lost_range() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (normal, high) = (data.join("wal").join("normal").join("0"), data.join("wal").join("high").join("0"));
    // normal/0: offsets 0..5 with frame 1 damaged (the next segment bounds
    // the loss), 5..8 with its last frame damaged, 8..10 intact.
    write_segment(&normal, 1, 0, 5, Some(1));
    write_segment(&normal, 1, 5, 3, Some(2));
    write_segment(&normal, 1, 8, 2, None);
    // high/0: its only segment, 0..3 with frame 1 damaged and frame 2
    // intact (the last frame that checks out bounds the loss).
    write_segment(&high, 0, 0, 3, Some(1));
    let dir = data.to_str().unwrap();
    let expected: Vec<(String, u64)> =
        [("high/0", 0), ("normal/0", 0), ("normal/0", 5), ("normal/0", 6), ("normal/0", 8), ("normal/0", 9)]
            .map(|(l, o)| (l.to_string(), o))
            .to_vec();
    let lost = ["offsets 1..5 lost", "offsets 7..8 lost", "offsets 1..3 lost"];

    let (code, out, err) = run_admin(&["migrate", "--data-dir", dir]);
    assert_eq!(code, 1, "records were kept aside: {out}{err}");
    assert!(err.contains("3 segment(s)"), "{err}");
    assert!(lost.iter().all(|l| out.contains(l)), "{out}");
    assert_eq!(offsets_served(&data), expected, "what was converted is served");

    let (code, out, _) = run_admin(&["verify", "--data-dir", dir]);
    assert_eq!(code, 1, "{out}");
    let quarantined: Vec<&str> = out.lines().filter(|l| l.contains("quarantined segment")).collect();
    assert_eq!(quarantined.len(), 3, "{out}");
    assert!(lost.iter().all(|l| quarantined.iter().any(|q| q.contains(l))), "{out}");
    assert!(!out.contains("offsets 0..") && !out.contains("offsets 5.."), "served offsets named as lost: {out}");

    let (code, out, err) = run_admin(&["repair", "--data-dir", dir, "--discard-quarantine"]);
    assert_eq!(code, 0, "{out}{err}");
    let discarded: Vec<&str> = out.lines().filter(|l| l.contains("discarded quarantined")).collect();
    assert_eq!(discarded.len(), 3, "{out}");
    assert!(lost.iter().all(|l| discarded.iter().any(|d| d.contains(l))), "{out}");
    assert_eq!(offsets_served(&data), expected);
}
