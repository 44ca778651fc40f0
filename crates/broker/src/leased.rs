//! What an acquire hands out, in the domain's terms: a lease over a range
//! of one lane (or over dead letters being re-driven) and its records as
//! the bytes the tenant sent. How a lease travels — the binary v2 format,
//! or v1's JSON with base64 payloads — is [`crate::http`]'s business, never
//! this module's.

use bytes::Bytes;
use protocol::lease::IdleReason;
use std::sync::Arc;
use wal::{LaneId, Priority};

/// Where a lease's records come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseLane {
    /// A range of one lane.
    Lane(LaneId),
    /// Dead letters being re-driven (records of any lane).
    DeadLetters,
    /// A joint lease: short runs of several lanes of this priority, each
    /// record naming its lane (`crate::deliveries::joint`).
    Joint(Priority),
}

impl std::fmt::Display for LeaseLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseLane::Lane(l) => l.fmt(f),
            LeaseLane::DeadLetters => f.write_str(protocol::lease::DEAD_LETTERS_LANE),
            LeaseLane::Joint(p) => write!(f, "{}/{}", p.as_str(), protocol::lease::JOINT_SHARD),
        }
    }
}

/// A lease's lane compares with its wire name (`normal/2`, `dead_letters`).
impl PartialEq<&str> for LeaseLane {
    fn eq(&self, other: &&str) -> bool {
        match self {
            LeaseLane::Lane(l) => other.parse::<LaneId>().is_ok_and(|o| o == *l),
            LeaseLane::DeadLetters => *other == protocol::lease::DEAD_LETTERS_LANE,
            LeaseLane::Joint(p) => {
                other.split_once('/').is_some_and(|(q, shard)| q == p.as_str() && shard == protocol::lease::JOINT_SHARD)
            }
        }
    }
}

/// One leased record, its payload exactly as it was acknowledged.
///
/// Names are shared and payloads are slices of one buffer per read: a
/// lease of thousands of records is a few allocations, not three per
/// record (making and freeing those was a tenth of the broker's CPU while
/// it served an exporter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedRecord {
    /// The lane it was acknowledged in, in a re-drive of dead letters
    /// and a joint lease only (a lane lease's records are of its lane).
    pub lane: Option<String>,
    pub offset: u64,
    pub tenant: Arc<str>,
    pub topic: Arc<str>,
    pub ts_ms: u64,
    pub payload: Bytes,
}

/// A lease: offsets [from_offset, to_offset) of its lane, and the records
/// of that range that go to its destination (others are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub destination: String,
    pub lane: LeaseLane,
    pub from_offset: u64,
    pub to_offset: u64,
    /// How long the lease lives without a heartbeat.
    pub lease_ms: u64,
    /// This lease is the one probe of a half-open breaker.
    pub probe: bool,
    /// How many times this range was handed out before.
    pub redeliveries: u32,
    pub records: Vec<LeasedRecord>,
}

/// The answer to an acquire: a lease, or why none and when to ask again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    pub lease: Option<Lease>,
    pub idle: Option<IdleReason>,
    pub retry_after_ms: u64,
    /// Nothing now, but look again at this time (ms) even if nothing is
    /// appended: data waits that the place kept for short runs held back
    /// (`deliveries::joint`). Not on the wire: the long-poll's own business.
    pub recheck_at_ms: Option<u64>,
}

impl Acquired {
    pub fn idle(reason: IdleReason, retry_after_ms: u64) -> Acquired {
        Acquired { lease: None, idle: Some(reason), retry_after_ms, recheck_at_ms: None }
    }

    pub fn lease(lease: Lease) -> Acquired {
        Acquired { lease: Some(lease), idle: None, retry_after_ms: 0, recheck_at_ms: None }
    }
}
