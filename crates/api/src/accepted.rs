//! The answer to an accepted batch: a domain value, shared by the accept
//! path and the idempotency window (which replays it).

use wal::LaneId;

/// An accepted batch: what the 200 says, without owning any string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Records the batch held, all appended (at least one).
    pub records: u64,
    /// The lane the batch went to: the tenant's own, or `low` when demoted.
    pub lane: LaneId,
    /// The lane offset of the batch's first record; its records hold
    /// `first_offset..first_offset + records` of that lane.
    pub first_offset: u64,
}

impl Accepted {
    /// The 200 body, in the shape of [`protocol::IngestResponse`]. Written by
    /// hand: every field is a number or a fixed identifier (nothing to
    /// escape), and serde's writer cost ten times as much per request.
    pub fn to_json(&self) -> Vec<u8> {
        let mut n = itoa::Buffer::new();
        let priority = self.lane.priority.as_str().as_bytes();
        let mut out = Vec::with_capacity(112);
        out.extend_from_slice(b"{\"accepted\":");
        out.extend_from_slice(n.format(self.records).as_bytes());
        out.extend_from_slice(b",\"priority\":\"");
        out.extend_from_slice(priority);
        out.extend_from_slice(b"\",\"lane\":\"");
        out.extend_from_slice(priority);
        out.push(b'/');
        out.extend_from_slice(n.format(self.lane.shard).as_bytes());
        out.extend_from_slice(b"\",\"first_offset\":");
        out.extend_from_slice(n.format(self.first_offset).as_bytes());
        out.push(b'}');
        out
    }
}
