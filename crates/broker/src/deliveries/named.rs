//! Which records of a lease a commit names as dead letters.
//!
//! A commit names each poison record by its place in the lease as it was
//! sent (`PoisonRecord::index`), unique within the lease. Offsets alone are
//! not: a re-drive of dead letters mixes lanes, and two lanes' records may
//! share an offset — naming by offset made such a commit ambiguous, so it
//! was refused and the lease came back forever. An exporter from before
//! v1.2 names offsets only; every record at a named offset is then kept
//! as a dead letter, which loses nothing.

use crate::destination::{LeaseSource, LiveLease};
use crate::error::{BrokerError, NamedRecord};
use crate::store::DeadLetterRecord;
use protocol::lease::PoisonRecord;

/// The records of `lease` (in the order it was sent; `None` where one is
/// gone) that `poison` names, each with its error, as dead letters.
pub(super) fn pick_named(
    lease: &LiveLease,
    records: Vec<Option<DeadLetterRecord>>,
    poison: &[PoisonRecord],
    now: u64,
) -> Result<Vec<DeadLetterRecord>, BrokerError> {
    let refuse =
        |named: NamedRecord| BrokerError::NotInLease { named, lease: lease.id.clone(), from: lease.from, to: lease.to };
    // The error per place in the lease; a place named twice keeps its first.
    let mut errors: Vec<Option<&str>> = vec![None; records.len()];
    for p in poison {
        match p.index {
            Some(i) => {
                let i = i as usize;
                let at = records.get(i).ok_or_else(|| refuse(NamedRecord::Place { index: i as u64 }))?;
                if at.as_ref().is_some_and(|r| r.offset != p.offset) {
                    return Err(refuse(NamedRecord::PlaceAndOffset { index: i as u64, offset: p.offset }));
                }
                errors[i].get_or_insert(p.error.as_str());
            }
            None => {
                let mut found = false;
                for (i, r) in records.iter().enumerate() {
                    if r.as_ref().is_some_and(|r| r.offset == p.offset) {
                        errors[i].get_or_insert(p.error.as_str());
                        found = true;
                    }
                }
                if !found {
                    return Err(refuse(NamedRecord::Offset { offset: p.offset }));
                }
            }
        }
    }
    let sent = records.len();
    let out: Vec<DeadLetterRecord> = records
        .into_iter()
        .zip(errors)
        .filter_map(|(r, err)| {
            let mut r = r?;
            r.error = err?.to_string();
            r.failed_at_ms = now;
            Some(r)
        })
        .collect();
    debug_assert!(out.len() <= sent, "more dead letters than records sent");
    // Invariant: a lane lease's dead letters are records of its range; one
    // outside it would be a record the exporter never had, kept as failed.
    if let LeaseSource::Lane(_) = lease.source {
        assert!(
            out.iter().all(|r| (lease.from..lease.to).contains(&r.offset)),
            "a dead letter outside lease {} [{}, {})",
            lease.id,
            lease.from,
            lease.to
        );
    }
    Ok(out)
}
