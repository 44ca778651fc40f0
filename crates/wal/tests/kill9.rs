//! kill -9 a real process that appends with concurrent writers and reports
//! each acknowledgement over a pipe; after every kill, reopen and check that
//! every acknowledged batch is present and intact.
//!
//! The child is this same test binary, re-run with `WEIR_KILL9_CHILD=<dir>`.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wal::{Priority, RealFs, WalOptions};

const CHILD_ENV: &str = "WEIR_KILL9_CHILD";
const WRITERS: u64 = 8;

fn opts() -> WalOptions {
    WalOptions {
        shards: 2,
        segment_bytes: 64 << 10,
        max_frame_bytes: 1 << 20,
        preallocate: true,
        ..WalOptions::default()
    }
}

fn lane_for(id: u64) -> wal::LaneId {
    wal::LaneId::new(if id.is_multiple_of(3) { Priority::Low } else { Priority::Normal }, (id % 2) as u16)
}

/// The child: append forever from several tasks, print "id lane offset" per ack.
#[test]
fn kill9_child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let start: u64 = std::env::var("WEIR_KILL9_FIRST_ID").unwrap().parse().unwrap();
    let wal = Arc::new(open(Arc::new(RealFs), std::path::Path::new(&dir), opts()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let wal = Arc::clone(&wal);
            let out = Arc::clone(&out);
            tasks.push(tokio::spawn(async move {
                let mut id = start + w;
                loop {
                    let lane = lane_for(id);
                    let ack = wal.append(lane, batch(id, 1 + (id % 5) as u32, 120)).await.expect("append");
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ACK {id} {lane} {}", ack.base_offset).unwrap();
                    o.flush().unwrap();
                    id += WRITERS;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn kill9_at_random_points_never_loses_an_acknowledged_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut acked: Vec<(u64, String, u64)> = Vec::new();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut first_id = 0u64;
    for round in 0..20 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["kill9_child_process", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, tmp.path())
            .env("WEIR_KILL9_FIRST_ID", first_id.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = 5 + rng % 400;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        while seen < kill_after && Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() == 4 && parts[0] == "ACK" {
                acked.push((parts[1].parse().unwrap(), parts[2].to_string(), parts[3].parse().unwrap()));
                seen += 1;
            }
        }
        assert!(seen > 0, "round {round}: child acknowledged nothing");
        // SIGKILL: no destructor, no flush.
        // SAFETY: kill(2) takes a pid and a signal number and touches no memory
        // of ours; the child is not yet reaped, so its pid is still its own.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        // Acks printed before the kill landed still count.
        for line in lines.map_while(Result::ok) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() == 4 && parts[0] == "ACK" {
                acked.push((parts[1].parse().unwrap(), parts[2].to_string(), parts[3].parse().unwrap()));
            }
        }
        child.wait().unwrap();
        first_id += 1_000_000;

        let wal = open(Arc::new(RealFs), tmp.path(), opts());
        let mut held = std::collections::HashMap::new();
        for lane in wal.lanes() {
            for (off, id, recs) in read_lane(&wal, lane.id()) {
                assert_eq!(recs, records_of(id, 1 + (id % 5) as u32, 120), "batch {id} not intact");
                held.insert((lane.id().to_string(), off), id);
            }
        }
        for (id, lane, off) in &acked {
            assert_eq!(held.get(&(lane.clone(), *off)), Some(id), "round {round}: acked batch {id} lost");
        }
    }
    assert!(acked.len() >= 20);
    eprintln!("kill9: {} acknowledged batches verified over 20 kills", acked.len());
}
