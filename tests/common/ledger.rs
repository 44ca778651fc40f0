//! What producers sent and what the broker answered, checked against what
//! is stored: the invariant of the kill, power-loss and fault suites.
//!
//! Every record is `{"id":"<unique>","sum":<crc32c of id>,"pad":"<x…>"}`
//! with a pad whose length depends on the id, so a record that is stored
//! with any byte wrong, or under another record's id, is caught as corrupt.

use std::collections::HashMap;
use std::sync::Mutex;

/// A small deterministic generator (xorshift64*), seeded per test run.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The run's seed: `$VAR` if set (to replay a failure), else from the clock.
/// Printed, so a failing run can be replayed.
pub fn seed(var: &str) -> u64 {
    let s = std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    eprintln!("seed: {var}={s}");
    s
}

/// A knob from the environment (a long run's size), with its CI default.
pub fn knob(var: &str, default: u64) -> u64 {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn record(id: &str) -> String {
    let sum = crc32c::crc32c(id.as_bytes());
    let pad = "x".repeat((sum % 97) as usize);
    format!("{{\"id\":\"{id}\",\"sum\":{sum},\"pad\":\"{pad}\"}}")
}

pub fn ndjson(ids: &[String]) -> String {
    ids.iter().map(|id| record(id) + "\n").collect()
}

/// The id of a stored record, or why it is corrupt.
pub fn id_of(payload: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(payload).map_err(|_| format!("not UTF-8: {payload:?}"))?;
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text}"))?;
    let id = v["id"].as_str().ok_or_else(|| format!("no id: {text}"))?;
    if record(id) != text {
        return Err(format!("bytes differ from what was sent for {id}: {text}"));
    }
    Ok(id.to_string())
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 200: the answer's lane and first offset.
    Acked { lane: String, first_offset: u64 },
    /// No answer, or an error answer: the batch may be stored whole, or not at all.
    Unknown,
    /// An error answer that promises the batch was not stored (507).
    Refused,
}

#[derive(Debug, Clone)]
pub struct Sent {
    pub ids: Vec<String>,
    pub outcome: Outcome,
}

/// Requests of a run, shared by its producers.
#[derive(Default)]
pub struct Ledger {
    pub sent: Mutex<Vec<Sent>>,
}

impl Ledger {
    pub fn push(&self, ids: Vec<String>, outcome: Outcome) {
        self.sent.lock().unwrap().push(Sent { ids, outcome });
    }
    pub fn acked_records(&self) -> usize {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Acked { .. }))
            .map(|s| s.ids.len())
            .sum()
    }
}

/// Figures of a checked run.
#[derive(Debug, Default)]
pub struct Figures {
    pub acked_requests: usize,
    pub acked_records: usize,
    pub unknown_requests: usize,
    pub unknown_stored: usize,
    pub refused_requests: usize,
    pub stored_records: usize,
}

/// Check `stored` — every record as (lane, offset, payload) — against the
/// ledger: each acknowledged request's records are stored exactly once, at
/// the lane and offsets its answer named; an unanswered request is stored
/// whole or not at all; a refused one not at all; nothing is corrupt and
/// nothing was invented. Panics naming the first violations.
pub fn check(sent: &[Sent], stored: &[(String, u64, Vec<u8>)]) -> Figures {
    let mut problems = Vec::new();
    let mut at: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for (lane, offset, payload) in stored {
        match id_of(payload) {
            Ok(id) => at.entry(id).or_default().push((lane.clone(), *offset)),
            Err(e) => problems.push(format!("corrupt record at {lane}@{offset}: {e}")),
        }
    }
    let mut f = Figures { stored_records: stored.len(), ..Figures::default() };
    let mut known = 0usize;
    for s in sent {
        let places: Vec<&Vec<(String, u64)>> = s.ids.iter().filter_map(|id| at.get(id)).collect();
        known += places.len();
        match &s.outcome {
            Outcome::Acked { lane, first_offset } => {
                f.acked_requests += 1;
                f.acked_records += s.ids.len();
                for (i, id) in s.ids.iter().enumerate() {
                    let want = (lane.clone(), first_offset + i as u64);
                    match at.get(id).map(Vec::as_slice) {
                        Some([one]) if *one == want => {}
                        Some(got) => {
                            problems.push(format!("acknowledged {id}: stored at {got:?}, answer said {want:?}"))
                        }
                        None => problems.push(format!("acknowledged {id} (at {want:?}) is lost")),
                    }
                }
            }
            Outcome::Unknown | Outcome::Refused => {
                if matches!(s.outcome, Outcome::Refused) {
                    f.refused_requests += 1;
                } else {
                    f.unknown_requests += 1;
                }
                if places.iter().any(|p| p.len() > 1) {
                    problems.push(format!("unacknowledged batch {:?} stored twice: {places:?}", s.ids[0]));
                }
                if !places.is_empty() && places.len() != s.ids.len() {
                    problems.push(format!(
                        "unacknowledged batch {:?} half stored: {} of {} records",
                        s.ids[0],
                        places.len(),
                        s.ids.len()
                    ));
                }
                if !places.is_empty() && matches!(s.outcome, Outcome::Refused) {
                    problems.push(format!("refused batch {:?} (507) is stored", s.ids[0]));
                }
                if !places.is_empty() && matches!(s.outcome, Outcome::Unknown) {
                    f.unknown_stored += 1;
                }
            }
        }
    }
    let sent_ids: usize = sent.iter().map(|s| s.ids.len()).sum();
    if known != at.len() {
        let all: std::collections::HashSet<&String> = sent.iter().flat_map(|s| &s.ids).collect();
        let invented: Vec<&String> = at.keys().filter(|id| !all.contains(id)).take(5).collect();
        problems
            .push(format!("{} stored ids were never sent (of {sent_ids} sent), e.g. {invented:?}", at.len() - known));
    }
    assert!(
        problems.is_empty(),
        "{} violations, first ones:\n{}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n")
    );
    f
}

/// Every record of a data directory, read with `broker-admin dump`.
pub fn dumped(data_dir: &std::path::Path) -> Vec<(String, u64, Vec<u8>)> {
    let (code, out, err) = super::run_admin(&["dump", "--data-dir", data_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "broker-admin dump: {err}");
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("dump line {l:?}: {e}"));
            let payload = match (v["payload"].as_str(), v["payload_b64"].as_str()) {
                (Some(p), _) => p.as_bytes().to_vec(),
                (None, Some(b)) => protocol::b64_decode(b).expect("payload_b64"),
                _ => panic!("dump line without payload: {l}"),
            };
            (v["lane"].as_str().unwrap().to_string(), v["offset"].as_u64().unwrap(), payload)
        })
        .collect()
}
