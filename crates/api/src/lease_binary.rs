//! The binary lease format (lease protocol v2): what an acquire answers
//! when the exporter's `Accept` names [`CONTENT_TYPE`]. Without it the
//! broker answers v1, JSON with base64 payloads ([`crate::lease`]), so a
//! broker and its exporters can be upgraded one at a time: an exporter
//! reads the answer by its `Content-Type`, whichever the broker chose.
//!
//! # Layout
//!
//! ```text
//! magic       4 bytes   b"WLB2"
//! header_len  u32 LE    length of the header
//! header      bincode (standard config) of `Header`: the answer, the
//!             lease's fields, a table of tenants and one of topics, and
//!             per record its offset, timestamp, table indices and length
//! payloads    each record's payload followed by one b'\n', in record order
//! ```
//!
//! Why: a JSON lease spent most of the export path's CPU on base64 and
//! JSON on both sides, with the tenant and topic repeated per record. Here
//! a payload is copied once into the answer and handed to the sink as a
//! slice of the received body, never decoded. The b'\n' after each payload
//! makes a run of records that are each one JSON line already an NDJSON
//! body; it is a separator the decoder checks, never a record boundary it
//! searches for — a payload holding newlines stays one record.
//!
//! The format carries no WAL frame header, MAC or key: only what v1 says.
//!
//! # Invariants (checked by [`decode`], which trusts nothing it reads)
//! - the lengths account for every byte after the header, each payload is
//!   followed by b'\n', and nothing follows the last one;
//! - table indices are in range; offsets strictly increase within
//!   `[from_offset, to_offset)` (a re-drive lease, lane `dead_letters`,
//!   mixes lanes, so its offsets are only bounded by `u64`);
//! - the header is at most [`MAX_HEADER_BYTES`].

pub use crate::lease::LeaseHead;
use crate::lease::{AcquireResponse, IdleReason, DEAD_LETTERS_LANE};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The media type of a v2 answer, and what an exporter puts in `Accept`.
pub const CONTENT_TYPE: &str = "application/vnd.weir.lease.v2";

/// Whether a media type — a `Content-Type`, or one range of an `Accept`,
/// parameters included — names [`CONTENT_TYPE`].
pub fn is_v2_media(value: &str) -> bool {
    value.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

/// The first bytes of every v2 body.
pub const MAGIC: [u8; 4] = *b"WLB2";

/// The largest header a decoder accepts (about 12 million records).
pub const MAX_HEADER_BYTES: usize = 64 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    idle: Option<IdleReason>,
    retry_after_ms: u64,
    lease: Option<LeaseIndex>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseIndex {
    head: LeaseHead,
    tenants: Vec<String>,
    topics: Vec<String>,
    records: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Entry {
    offset: u64,
    ts_ms: u64,
    tenant: u32,
    topic: u32,
    len: u32,
}

/// Why a body is not a v2 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseFormatError {
    /// The body does not start with [`MAGIC`] and a header length.
    #[error("not a v2 lease body (bad magic or too short)")]
    NotV2,
    /// The header length is past the body or over [`MAX_HEADER_BYTES`].
    #[error("header length {0} out of bounds")]
    HeaderLength(usize),
    /// The header does not decode.
    #[error("header: {0}")]
    Header(String),
    /// A record's lengths, separator or indices do not fit the body.
    #[error("record {index}: {why}")]
    Record { index: usize, why: &'static str },
    /// The payload section holds bytes no record accounts for.
    #[error("{0} bytes after the last record")]
    Trailing(usize),
}

/// One record as the exporter holds it: its payload is a slice of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    pub offset: u64,
    pub ts_ms: u64,
    pub tenant: u32,
    pub topic: u32,
    pub payload: Bytes,
}

/// A lease with its payloads as bytes, whichever format carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedLease {
    pub head: LeaseHead,
    /// The names [`DecodedRecord::tenant`] and `topic` index.
    pub tenants: Vec<String>,
    pub topics: Vec<String>,
    pub records: Vec<DecodedRecord>,
    /// Records a v1 answer carried with a payload that is not base64
    /// (offset, why): they cannot be delivered as sent.
    pub undecodable: Vec<(u64, String)>,
}

/// An acquire's answer, whichever format carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub lease: Option<DecodedLease>,
    pub idle: Option<IdleReason>,
    pub retry_after_ms: u64,
}

/// Builds a v2 body record by record (the broker's side).
#[derive(Debug, Default)]
pub struct Encoder {
    tenants: Vec<String>,
    topics: Vec<String>,
    records: Vec<Entry>,
    payloads: Vec<u8>,
}

/// The index of `name` in `table`, added if new. Leases hold few distinct
/// tenants and topics, and consecutive records mostly share them.
fn intern(table: &mut Vec<String>, name: &str) -> u32 {
    if let Some(i) = table.iter().rposition(|t| t == name) {
        return i as u32;
    }
    table.push(name.to_string());
    (table.len() - 1) as u32
}

impl Encoder {
    pub fn with_capacity(records: usize, payload_bytes: usize) -> Encoder {
        Encoder {
            records: Vec::with_capacity(records),
            payloads: Vec::with_capacity(payload_bytes + records),
            ..Encoder::default()
        }
    }

    /// Add one record. Payloads are stored records, so under `u32::MAX`
    /// bytes (the WAL's frames are far smaller); a larger one is a bug.
    pub fn push(&mut self, offset: u64, ts_ms: u64, tenant: &str, topic: &str, payload: &[u8]) {
        debug_assert!(u32::try_from(payload.len()).is_ok(), "a stored record over 4 GiB");
        let entry = Entry {
            offset,
            ts_ms,
            tenant: intern(&mut self.tenants, tenant),
            topic: intern(&mut self.topics, topic),
            len: payload.len() as u32,
        };
        self.records.push(entry);
        self.payloads.extend_from_slice(payload);
        self.payloads.push(b'\n');
    }

    /// The body of an answer that grants `head` with the records pushed.
    pub fn finish(self, head: LeaseHead) -> Vec<u8> {
        let lease = LeaseIndex { head, tenants: self.tenants, topics: self.topics, records: self.records };
        body(&Header { idle: None, retry_after_ms: 0, lease: Some(lease) }, &self.payloads)
    }
}

/// The body of an answer that grants no lease.
pub fn encode_idle(idle: Option<IdleReason>, retry_after_ms: u64) -> Vec<u8> {
    body(&Header { idle, retry_after_ms, lease: None }, &[])
}

fn body(header: &Header, payloads: &[u8]) -> Vec<u8> {
    // A plain struct of strings and integers always encodes.
    let head = bincode::serde::encode_to_vec(header, bincode::config::standard()).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + head.len() + payloads.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payloads);
    out
}

/// Read a v2 body. Every payload is a slice of `body` (no copy).
pub fn decode(body: Bytes) -> Result<Decoded, LeaseFormatError> {
    if body.len() < 8 || body[..4] != MAGIC {
        return Err(LeaseFormatError::NotV2);
    }
    let head_len = u32::from_le_bytes([body[4], body[5], body[6], body[7]]) as usize;
    if head_len > MAX_HEADER_BYTES || head_len > body.len() - 8 {
        return Err(LeaseFormatError::HeaderLength(head_len));
    }
    let config = bincode::config::standard().with_limit::<MAX_HEADER_BYTES>();
    let (header, used): (Header, usize) = bincode::serde::decode_from_slice(&body[8..8 + head_len], config)
        .map_err(|e| LeaseFormatError::Header(e.to_string()))?;
    if used != head_len {
        return Err(LeaseFormatError::Header(format!("{} bytes left in the header", head_len - used)));
    }
    let start = 8 + head_len;
    let lease = match header.lease {
        Some(index) => Some(records(index, &body, start)?),
        None if body.len() > start => return Err(LeaseFormatError::Trailing(body.len() - start)),
        None => None,
    };
    Ok(Decoded { lease, idle: header.idle, retry_after_ms: header.retry_after_ms })
}

fn records(index: LeaseIndex, body: &Bytes, start: usize) -> Result<DecodedLease, LeaseFormatError> {
    let LeaseIndex { head, tenants, topics, records: entries } = index;
    let in_lane = head.lane != DEAD_LETTERS_LANE;
    let mut records = Vec::with_capacity(entries.len());
    let mut pos = start;
    let mut prev: Option<u64> = None;
    for (i, e) in entries.iter().enumerate() {
        let bad = |why| LeaseFormatError::Record { index: i, why };
        if e.tenant as usize >= tenants.len() || e.topic as usize >= topics.len() {
            return Err(bad("tenant or topic index out of range"));
        }
        if in_lane && (e.offset < head.from_offset || e.offset >= head.to_offset || prev.is_some_and(|p| p >= e.offset))
        {
            return Err(bad("offset outside the lease or not increasing"));
        }
        let end =
            pos.checked_add(e.len as usize).filter(|&end| end < body.len()).ok_or(bad("payload past the body"))?;
        if body[end] != b'\n' {
            return Err(bad("payload not followed by its separator"));
        }
        records.push(DecodedRecord {
            offset: e.offset,
            ts_ms: e.ts_ms,
            tenant: e.tenant,
            topic: e.topic,
            payload: body.slice(pos..end),
        });
        prev = Some(e.offset);
        pos = end + 1;
    }
    if pos != body.len() {
        return Err(LeaseFormatError::Trailing(body.len() - pos));
    }
    Ok(DecodedLease { head, tenants, topics, records, undecodable: Vec::new() })
}

impl From<AcquireResponse> for Decoded {
    /// A v1 answer (JSON, base64 payloads), as a broker before v2 sends it.
    fn from(r: AcquireResponse) -> Decoded {
        let lease = r.lease.map(|l| {
            let head = l.head;
            let (mut tenants, mut topics) = (Vec::new(), Vec::new());
            let (mut records, mut undecodable) = (Vec::with_capacity(l.records.len()), Vec::new());
            for rec in l.records {
                match crate::b64_decode(&rec.payload_b64) {
                    Ok(payload) => records.push(DecodedRecord {
                        offset: rec.offset,
                        ts_ms: rec.ts_ms,
                        tenant: intern(&mut tenants, &rec.tenant),
                        topic: intern(&mut topics, &rec.topic),
                        payload: Bytes::from(payload),
                    }),
                    Err(e) => undecodable.push((rec.offset, format!("invalid base64: {e}"))),
                }
            }
            DecodedLease { head, tenants, topics, records, undecodable }
        });
        Decoded { lease, idle: r.idle, retry_after_ms: r.retry_after_ms }
    }
}

#[cfg(test)]
mod tests;
