//! Offline `broker-admin` subcommands over a data directory: segments,
//! dump, verify (read-only, safe beside a running broker) and repair
//! (refuses while a broker holds the directory).

use crate::error::AdminError;
use plumbing::datadir::{wal_dir, DirLock};
use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use wal::inspect::{inspect_all, visit_segment_frames, SegmentReport};
use wal::segment::Tail;
use wal::{LaneId, RealFs};

/// Beside a running broker, each lane's durable watermark: frames at or
/// past it may still be in flight (written, not yet synced) and are not
/// shown. Empty when no broker holds the directory.
fn watermarks(data_dir: &Path) -> std::collections::HashMap<LaneId, u64> {
    if !DirLock::is_held(data_dir) {
        return Default::default();
    }
    let wal_dir = wal_dir(data_dir);
    wal::inspect::lanes_on_disk(&RealFs, &wal_dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|l| Some((l, wal::inspect::durable_watermark(&RealFs, &wal_dir, l)?)))
        .collect()
}

fn reports(data_dir: &Path) -> Result<Vec<SegmentReport>, AdminError> {
    let wal_dir = wal_dir(data_dir);
    if !wal_dir.exists() {
        return Err(AdminError::NoWal { data_dir: data_dir.to_path_buf(), wal_dir });
    }
    Ok(inspect_all(&RealFs, &wal_dir)?)
}

fn last_ts(report: &SegmentReport) -> u64 {
    report.scan.frames.last().map_or(0, |f| f.ts_ms)
}

/// `segments`: one row (or JSON object) per segment file.
pub(crate) fn segments(data_dir: &Path, json: bool, out: &mut impl Write) -> Result<(), AdminError> {
    let reps = reports(data_dir)?;
    // Read, never made here: a directory no broker has started on since
    // ids exist has none yet (null).
    let broker_id = plumbing::datadir::BrokerId::read(data_dir)?;
    let broker_id = broker_id.as_ref().map(plumbing::datadir::BrokerId::as_str);
    let w = AdminError::Output;
    if !json {
        writeln!(
            out,
            "{:<10} {:>12} {:>12} {:>10} {:>12} {:>15} {:>15} {:<7} {:<11} PATH",
            "LANE", "BASE", "LAST", "RECORDS", "BYTES", "FIRST_TS", "LAST_TS", "SEALED", "QUARANTINED"
        )
        .map_err(w)?;
    }
    let active: std::collections::HashMap<LaneId, std::path::PathBuf> =
        reps.iter().filter(|r| !r.quarantined).map(|r| (r.lane, r.path.clone())).collect();
    for r in &reps {
        let sealed = r.quarantined || active.get(&r.lane) != Some(&r.path);
        let last = r.next_offset().checked_sub(1).filter(|_| r.records() > 0);
        if json {
            let v = serde_json::json!({
                "broker_id": broker_id,
                "lane": r.lane.to_string(),
                "path": r.path.display().to_string(),
                "base_offset": r.base_offset,
                "last_offset": last,
                "records": r.records(),
                "bytes": r.scan.valid_end,
                "file_bytes": r.file_len,
                "first_ts_ms": r.scan.frames.first().map(|f| f.ts_ms),
                "last_ts_ms": r.scan.frames.last().map(|f| f.ts_ms),
                "sealed": sealed,
                "quarantined": r.quarantined,
            });
            writeln!(out, "{v}").map_err(w)?;
        } else {
            let first = r.scan.frames.first().map_or(0, |f| f.ts_ms);
            let last_s = last.map_or("-".to_string(), |l| l.to_string());
            writeln!(
                out,
                "{:<10} {:>12} {:>12} {:>10} {:>12} {:>15} {:>15} {:<7} {:<11} {}",
                r.lane.to_string(),
                r.base_offset,
                last_s,
                r.records(),
                r.scan.valid_end,
                first,
                last_ts(r),
                sealed,
                r.quarantined,
                r.path.display()
            )
            .map_err(w)?;
        }
    }
    Ok(())
}

/// Which records `dump` prints.
pub(crate) struct DumpFilter {
    /// Only this lane.
    pub(crate) lane: Option<LaneId>,
    /// Only offsets from this one on.
    pub(crate) from: u64,
    /// At most this many records.
    pub(crate) limit: Option<u64>,
    /// Only this tenant's.
    pub(crate) tenant: Option<String>,
    /// Only this topic's.
    pub(crate) topic: Option<String>,
}

/// `dump`: one JSON object per record; returns how many were printed.
pub(crate) fn dump(data_dir: &Path, filter: &DumpFilter, out: &mut impl Write) -> Result<u64, AdminError> {
    dump_from(data_dir, filter, &mut std::collections::HashMap::new(), out)
}

/// Dump records after the per-lane positions in `seen` (updated), for follow mode.
pub(crate) fn dump_from(
    data_dir: &Path,
    filter: &DumpFilter,
    seen: &mut std::collections::HashMap<LaneId, u64>,
    out: &mut impl Write,
) -> Result<u64, AdminError> {
    let mut printed = 0u64;
    let mut err = None;
    let marks = watermarks(data_dir);
    for r in reports(data_dir)?.iter().filter(|r| !r.quarantined && filter.lane.is_none_or(|l| l == r.lane)) {
        let durable_end = marks.get(&r.lane).copied().unwrap_or(u64::MAX);
        let from = seen.get(&r.lane).copied().unwrap_or(filter.from).max(filter.from);
        if r.next_offset() <= from {
            continue;
        }
        let flow = visit_segment_frames(&RealFs, r, from, |v| {
            if filter.tenant.as_deref().is_some_and(|t| t != v.tenant)
                || filter.topic.as_deref().is_some_and(|t| t != v.topic)
            {
                seen.insert(r.lane, v.header.next_offset());
                return ControlFlow::Continue(());
            }
            if v.header.next_offset() > durable_end {
                return ControlFlow::Break(());
            }
            for (off, rec) in v.records() {
                if off < from {
                    continue;
                }
                if filter.limit.is_some_and(|l| printed >= l) {
                    return ControlFlow::Break(());
                }
                let mut obj = serde_json::json!({
                    "lane": r.lane.to_string(), "offset": off, "tenant": v.tenant, "topic": v.topic, "ts_ms": v.header.ts_ms,
                });
                match std::str::from_utf8(rec) {
                    Ok(s) => obj["payload"] = s.into(),
                    Err(_) => obj["payload_b64"] = protocol::b64_encode(rec).into(),
                }
                if let Err(e) = writeln!(out, "{obj}") {
                    err = Some(AdminError::Output(e));
                    return ControlFlow::Break(());
                }
                printed += 1;
                seen.insert(r.lane, off + 1);
            }
            ControlFlow::Continue(())
        })?;
        if let Some(e) = err.take() {
            return Err(e);
        }
        if flow.is_break() && filter.limit.is_some_and(|l| printed >= l) {
            break;
        }
    }
    Ok(printed)
}

/// What `verify` found.
#[derive(Debug, Default)]
pub(crate) struct Verification {
    /// Corrupt or torn data, or offsets missing: exit 1.
    pub(crate) problems: Vec<String>,
    /// Untidy but harmless (derived state, an untrimmed sealed tail left by
    /// a crash right after a roll): recovery tidies it at the next start.
    pub(crate) notes: Vec<String>,
}

/// `verify`: every frame of every segment checked.
pub(crate) fn verify(data_dir: &Path, progress: bool) -> Result<Verification, AdminError> {
    let reps = reports(data_dir)?;
    // Beside a running broker the active segments are being written: their
    // tails are not checked (a write may be in flight there).
    let live = DirLock::is_held(data_dir);
    let show = progress && std::io::stderr().is_terminal();
    let mut found = Verification::default();
    let mut prev: Option<(LaneId, u64)> = None;
    let last_of_lane: std::collections::HashMap<LaneId, std::path::PathBuf> =
        reps.iter().filter(|r| !r.quarantined).map(|r| (r.lane, r.path.clone())).collect();
    for (i, r) in reps.iter().enumerate() {
        if show {
            eprint!("\rverifying segment {}/{} ", i + 1, reps.len());
        }
        if !found.readable(&reps, r) {
            continue;
        }
        let is_active = last_of_lane.get(&r.lane) == Some(&r.path);
        found.check_frames(r, live, is_active);
        if let Some((lane, next)) = prev {
            if lane == r.lane && next != r.base_offset {
                found.problems.push(format!(
                    "{}: gap in offsets of lane {lane}: previous segment ends at {next}, this one starts at {}",
                    r.path.display(),
                    r.base_offset
                ));
            }
        }
        prev = Some((r.lane, r.next_offset()));
    }
    if show {
        eprintln!();
    }
    Ok(found)
}

impl Verification {
    /// Whether `report`'s frames can be checked: not when it is
    /// quarantined or its header is unusable (a problem either way).
    /// `reps`: every segment of the data directory.
    fn readable(&mut self, reps: &[SegmentReport], report: &SegmentReport) -> bool {
        let p = report.path.display();
        if report.quarantined {
            let lost = crate::legacy_lost::lost_offsets(reps, report);
            self.problems.push(format!("{p}: quarantined segment of lane {}; {}", report.lane, describe_lost(&lost)));
            return false;
        }
        if let Some(e) = report.header_error {
            self.problems.push(format!("{p}: segment header unusable at byte 0: {e}"));
            return false;
        }
        true
    }

    /// Corrupt frames, the tail (not of an active segment beside a `live`
    /// broker) and the summary of one readable segment.
    fn check_frames(&mut self, report: &SegmentReport, live: bool, is_active: bool) {
        let p = report.path.display();
        for c in &report.scan.corruptions {
            self.problems.push(format!(
                "{p}: corrupt frame at byte {}: {} (valid frames resume at byte {}; offsets {}..{} lost)",
                c.at, c.what, c.resumes_at, c.lost_offsets.0, c.lost_offsets.1
            ));
        }
        match report.scan.tail {
            _ if live && is_active => {}
            Tail::Torn { at, what } => self.problems.push(format!(
                "{p}: torn tail at byte {at}: {what} ({} bytes after the last valid frame)",
                report.file_len - at
            )),
            Tail::Zeros { at } if !is_active => self.notes.push(format!(
                "{p}: sealed segment keeps {} preallocated zero bytes after byte {at} (trimmed at the next start)",
                report.file_len - at
            )),
            Tail::Stale { at } if !is_active => self.notes.push(format!(
                "{p}: sealed segment keeps {} bytes of a recycled file after byte {at} (trimmed at the next start)",
                report.file_len - at
            )),
            _ => {}
        }
        match report.summary_ok {
            Some(false) if report.summary_intact => self
                .problems
                .push(format!("{p}: the segment no longer matches its intact summary: it changed after it was sealed")),
            Some(false) => self.notes.push(format!(
                "{p}: summary file is damaged or empty (derived; rebuilt by repair or the next broker start)"
            )),
            _ => {}
        }
    }
}

/// What a quarantined file lost, for operators.
fn describe_lost(lost: &[(u64, Option<u64>)]) -> String {
    if lost.is_empty() {
        return "no offsets lost (its valid frames were kept in the live log)".into();
    }
    let ranges: Vec<String> = lost
        .iter()
        .map(|(from, to)| match to {
            Some(to) => format!("{from}..{to}"),
            None => format!("{from}.. (header unusable: the end is unknown)"),
        })
        .collect();
    format!("offsets {} lost; acknowledge with `broker-admin repair --discard-quarantine`", ranges.join(", "))
}

/// `repair`: run WAL recovery under the directory lock; with
/// `discard_quarantine`, then delete the quarantined segments. Returns what
/// it did.
pub(crate) fn repair(data_dir: &Path, discard_quarantine: bool) -> Result<Vec<String>, AdminError> {
    let _lock = DirLock::acquire(data_dir).map_err(|source| AdminError::Locked { action: "repair", source })?;
    let opts = wal::WalOptions { shards: 0, ..wal::WalOptions::default() };
    let wal_dir = wal_dir(data_dir);
    let wal = wal::Wal::open(Arc::new(RealFs), &wal_dir, opts, None)?;
    let mut done: Vec<String> = wal
        .recovery_events()
        .iter()
        .filter(|e| e.is_damage() || matches!(e, wal::RecoveryEvent::SummaryRebuilt { .. }))
        .map(describe)
        .collect();
    wal.shutdown();
    drop(wal);
    if discard_quarantine {
        let reps = reports(data_dir)?;
        for r in reps.iter().filter(|r| r.quarantined) {
            // Named before the file goes: what the operator acknowledges.
            let lost = crate::legacy_lost::lost_offsets(&reps, r);
            std::fs::remove_file(&r.path).map_err(|source| AdminError::Io { path: r.path.clone(), source })?;
            if let Some(dir) = r.path.parent() {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|source| AdminError::Io { path: dir.to_path_buf(), source })?;
            }
            done.push(format!("discarded quarantined {}; {}", r.path.display(), describe_lost(&lost)));
        }
    }
    Ok(done)
}

/// What `migrate` did: lines for the operator, and how many segments had
/// records it could not convert (kept aside whole; exit 1 when any).
pub(crate) struct Migration {
    /// What it did, one line each.
    pub(crate) lines: Vec<String>,
    /// Segments whose original was kept aside with records not converted.
    pub(crate) kept_aside: usize,
}

/// `migrate`: convert format-1 segments to the current format under the directory lock.
pub(crate) fn migrate(data_dir: &Path) -> Result<Migration, AdminError> {
    let _lock = DirLock::acquire(data_dir).map_err(|source| AdminError::Locked { action: "migrate", source })?;
    let report = wal::legacy::migrate(&RealFs, &wal_dir(data_dir))?;
    let mut out = vec![format!(
        "converted {} segment(s) ({} frames, {} records) to format {}; {} already current",
        report.segments,
        report.frames,
        report.records,
        wal::segment::SEGMENT_VERSION,
        report.current
    )];
    let reps = if report.kept_aside.is_empty() { Vec::new() } else { reports(data_dir)? };
    for (seg, aside, from) in &report.kept_aside {
        // The range `verify` and `repair --discard-quarantine` name too.
        let lost = match reps.iter().find(|r| r.quarantined && &r.path == aside) {
            Some(r) => crate::legacy_lost::lost_offsets(&reps, r),
            None => vec![(*from, None)],
        };
        out.push(format!(
            "{}: records could not be read as format 1 and were not converted ({}); the whole original is kept at {}",
            seg.display(),
            describe_lost(&lost),
            aside.display()
        ));
    }
    Ok(Migration { lines: out, kept_aside: report.kept_aside.len() })
}

fn describe(event: &wal::RecoveryEvent) -> String {
    use wal::RecoveryEvent::*;
    match event {
        TruncatedTail { lane, path, at, bytes, .. } => format!("{lane}: truncated {bytes} torn bytes at byte {at} of {}", path.display()),
        Quarantined { lane, path, moved_to, corruptions } => format!(
            "{lane}: quarantined {} ({} corrupt region(s), first at byte {}) to {}; its valid frames were kept in place",
            path.display(),
            corruptions.len(),
            corruptions.first().map_or(0, |c| c.at),
            moved_to.display()
        ),
        RemovedEmptySegment { lane, path } => format!("{lane}: removed never-used segment {}", path.display()),
        SummaryRebuilt { lane, path } => format!("{lane}: rebuilt summary {}", path.display()),
        OffsetGap { lane, from, to } => format!("{lane}: offsets {from}..{to} are missing (lost before this repair)"),
        QuarantineCompleted { lane, path } => {
            format!("{lane}: completed an interrupted quarantine: the cleaned copy of {} is in place", path.display())
        }
    }
}
