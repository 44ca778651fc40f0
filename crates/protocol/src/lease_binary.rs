//! The binary lease formats (lease protocol v2 and v3): what an acquire
//! answers when the exporter's `Accept` names `CONTENT_TYPE_V3` or
//! [`CONTENT_TYPE`] (v2). Without either the broker answers v1, JSON with
//! base64 payloads ([`crate::lease`]), so a broker and its exporters can be
//! upgraded one at a time: an exporter reads the answer by its
//! `Content-Type`, whichever the broker chose.
//!
//! v3 is v2 with what downstream ids need ([`crate::downstream_id`]): the
//! broker's id, and for a re-drive of dead letters each record's own lane
//! (a table of lane names, like tenants and topics). A v3 header is v2's
//! with those fields; the magic says which one follows.
//!
//! # Layout
//!
//! ```text
//! magic       4 bytes   b"WLB2" (v2) or b"WLB3" (v3)
//! header_len  u32 LE    length of the header
//! header      bincode (standard config) of `Header`: the answer, the
//!             lease's fields, a table of tenants and one of topics, and
//!             per record its offset, timestamp, table indices and length
//!             (v3 adds the broker id, a table of lanes, and per record
//!             its lane's index, absent for the lease's own lane)
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
//!   mixes lanes, so its offsets are only bounded by `u64`; a joint lease,
//!   lane `normal/joint`, names each record's lane, in the table's order,
//!   and holds each offset of a lane once: a lane's records are its parts'
//!   runs, each in offset order, one after another);
//! - the header is at most `MAX_HEADER_BYTES`.

pub use crate::lease::LeaseHead;
use crate::lease::{AcquireResponse, IdleReason, DEAD_LETTERS_LANE, JOINT_SHARD};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The media type of a v2 answer, and what an exporter puts in `Accept`.
pub const CONTENT_TYPE: &str = "application/vnd.weir.lease.v2";

/// The media type of a v3 answer.
pub const CONTENT_TYPE_V3: &str = "application/vnd.weir.lease.v3";

/// A binary lease format's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// [`CONTENT_TYPE`]: no broker id, no lanes of re-driven records.
    V2,
    /// `CONTENT_TYPE_V3`: what downstream ids need.
    V3,
}

impl Version {
    /// Its media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Version::V2 => CONTENT_TYPE,
            Version::V3 => CONTENT_TYPE_V3,
        }
    }
}

/// Which binary format a media type — a `Content-Type`, or one range of an
/// `Accept`, parameters included — names, if any.
pub(crate) fn media_version(value: &str) -> Option<Version> {
    let m = value.split(';').next()?.trim();
    if m.eq_ignore_ascii_case(CONTENT_TYPE_V3) {
        Some(Version::V3)
    } else if m.eq_ignore_ascii_case(CONTENT_TYPE) {
        Some(Version::V2)
    } else {
        None
    }
}

/// Whether a media type names a binary format (v2 or v3): [`decode`] reads both.
pub fn is_binary_media(value: &str) -> bool {
    media_version(value).is_some()
}

/// The newest binary format an `Accept` header's value accepts: a range
/// with `q=0` (any case: parameter names are case-insensitive, RFC 9110
/// §5.6.6) refuses its type.
pub fn accepted_version(accept: &str) -> Option<Version> {
    accept
        .split(',')
        .filter(|range| {
            !range.split(';').skip(1).any(|p| {
                let mut kv = p.splitn(2, '=');
                let name = kv.next().unwrap_or("").trim();
                let value = kv.next().unwrap_or("").trim();
                name.eq_ignore_ascii_case("q") && value.parse::<f32>().map_or(true, |q| q.is_nan() || q <= 0.0)
            })
        })
        .filter_map(media_version)
        .max()
}

/// The first bytes of every v2 body.
pub const MAGIC: [u8; 4] = *b"WLB2";

/// The first bytes of every v3 body.
pub(crate) const MAGIC_V3: [u8; 4] = *b"WLB3";

/// The largest header a decoder accepts (about 12 million records).
pub(crate) const MAX_HEADER_BYTES: usize = 64 << 20;

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

#[derive(Debug, Serialize, Deserialize)]
struct HeaderV3 {
    idle: Option<IdleReason>,
    retry_after_ms: u64,
    lease: Option<LeaseIndexV3>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseIndexV3 {
    head: LeaseHead,
    broker_id: String,
    lanes: Vec<String>,
    tenants: Vec<String>,
    topics: Vec<String>,
    records: Vec<EntryV3>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct EntryV3 {
    offset: u64,
    ts_ms: u64,
    /// Index into `lanes`; `None`: the lease's own lane.
    lane: Option<u32>,
    tenant: u32,
    topic: u32,
    len: u32,
}

/// Why a body is not a binary lease answer. The body came from the broker
/// over HTTP: the exporter treats it as the broker's fault (a bad answer),
/// gives the lease up to expire, and asks again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseFormatError {
    /// The body does not start with [`MAGIC`] or `MAGIC_V3` and a header
    /// length: not a binary lease at all.
    #[error("not a v2 lease body (bad magic or too short)")]
    NotV2,
    /// The header length is past the body or over `MAX_HEADER_BYTES`.
    #[error("header length {0} out of bounds")]
    HeaderLength(usize),
    /// The header does not decode as the format its magic names.
    #[error("header: {0}")]
    Header(#[source] HeaderDecodeError),
    /// The header decodes in fewer bytes than its length says: this many
    /// are left over.
    #[error("header: {0} bytes left in the header")]
    HeaderLeftover(usize),
    /// A record's lengths, separator or indices do not fit the body.
    #[error("record {index}: {fault}")]
    Record {
        /// The record's place in the lease (0-based).
        index: usize,
        /// What does not fit.
        fault: RecordFault,
    },
    /// The payload section holds bytes no record accounts for.
    #[error("{0} bytes after the last record")]
    Trailing(usize),
}

/// What is wrong with one record of a binary lease ([`LeaseFormatError::Record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordFault {
    /// Its tenant or topic index is past its table.
    #[error("tenant or topic index out of range")]
    NameIndex,
    /// Its lane index is past the table of lanes.
    #[error("lane index out of range")]
    LaneIndex,
    /// In a lane's lease: its offset is outside `[from_offset, to_offset)`
    /// or not above the previous record's; in a joint lease: its lane comes
    /// back after another, or its offset is there twice in its lane.
    #[error("offset outside the lease, not increasing, or repeated in its lane")]
    Offset,
    /// Its payload runs past the end of the body.
    #[error("payload past the body")]
    PastBody,
    /// Its payload is not followed by the `\n` separator.
    #[error("payload not followed by its separator")]
    Separator,
    /// More records than a `u32` position counts.
    #[error("more records than a lease holds")]
    TooMany,
}

/// bincode's error for a header that does not decode, shared so that
/// [`LeaseFormatError`] stays `Clone`. bincode's error has no equality: two
/// are equal when they say the same.
#[derive(Debug, Clone)]
pub struct HeaderDecodeError(Arc<bincode::error::DecodeError>);

impl PartialEq for HeaderDecodeError {
    fn eq(&self, other: &HeaderDecodeError) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl Eq for HeaderDecodeError {}

impl std::fmt::Display for HeaderDecodeError {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(out)
    }
}

impl std::error::Error for HeaderDecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// One record as the exporter holds it: its payload is a slice of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    /// Its place in the lease as the broker sent it (what a commit names a
    /// dead letter by: offsets repeat in a re-drive of several lanes).
    pub position: u32,
    /// Index into [`DecodedLease::lanes`]; `None`: the lease's own lane.
    pub lane: Option<u32>,
    /// Its offset in its lane.
    pub offset: u64,
    /// When it was acknowledged, ms since the Unix epoch.
    pub ts_ms: u64,
    /// Index into [`DecodedLease::tenants`].
    pub tenant: u32,
    /// Index into [`DecodedLease::topics`].
    pub topic: u32,
    /// The payload as acknowledged: a slice of the answer's body.
    pub payload: Bytes,
}

/// A lease with its payloads as bytes, whichever format carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedLease {
    /// The lease's fields.
    pub head: LeaseHead,
    /// The broker's data directory id (empty from a broker before v3).
    pub broker_id: String,
    /// The names [`DecodedRecord::lane`] indexes.
    pub lanes: Vec<String>,
    /// The names [`DecodedRecord::tenant`] indexes.
    pub tenants: Vec<String>,
    /// The names [`DecodedRecord::topic`] indexes.
    pub topics: Vec<String>,
    /// The records that decoded, in the order sent.
    pub records: Vec<DecodedRecord>,
    /// Records a v1 answer carried with a payload that is not base64
    /// (position, offset, why): they cannot be delivered as sent.
    pub undecodable: Vec<(u32, u64, String)>,
    /// A binary answer's whole body, which every payload is a slice of
    /// (each followed by its `\n`); empty for v1. Downstream ids hash a
    /// batch's payloads from it in one piece (`crate::downstream_id`).
    pub body: Bytes,
}

/// An acquire's answer, whichever format carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The lease granted, if any.
    pub lease: Option<DecodedLease>,
    /// Set when `lease` is absent: why.
    pub idle: Option<IdleReason>,
    /// When `lease` is absent: wait this long before the next acquire.
    pub retry_after_ms: u64,
}

#[cfg(test)]
impl DecodedLease {
    /// The lane `record` was acknowledged in (only the tests ask: the
    /// exporter keeps lanes as indices).
    pub(crate) fn lane_of(&self, record: &DecodedRecord) -> &str {
        record.lane.and_then(|i| self.lanes.get(i as usize)).map_or(self.head.lane.as_str(), String::as_str)
    }
}

/// Builds a binary body record by record (the broker's side).
#[derive(Debug)]
pub struct Encoder {
    version: Version,
    broker_id: String,
    lanes: Vec<String>,
    tenants: Vec<String>,
    topics: Vec<String>,
    records: Vec<EntryV3>,
    payloads: Vec<u8>,
}

/// A v2 encoder with no room reserved (the tests build leases this way).
#[cfg(test)]
impl Default for Encoder {
    fn default() -> Encoder {
        Encoder::new(Version::V2, "", 0, 0)
    }
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
    /// An encoder of `version` for a broker whose data directory is `broker_id`.
    pub fn new(version: Version, broker_id: &str, records: usize, payload_bytes: usize) -> Encoder {
        Encoder {
            version,
            broker_id: broker_id.to_string(),
            lanes: Vec::new(),
            tenants: Vec::new(),
            topics: Vec::new(),
            records: Vec::with_capacity(records),
            payloads: Vec::with_capacity(payload_bytes + records),
        }
    }

    /// A v2 encoder (what an exporter from before v3 reads; the tests
    /// build leases this way).
    #[cfg(test)]
    pub(crate) fn with_capacity(records: usize, payload_bytes: usize) -> Encoder {
        Encoder::new(Version::V2, "", records, payload_bytes)
    }

    /// Add one record of the lease's own lane (the tests build leases
    /// this way; the broker names each record's lane, [`Encoder::push_from`]).
    #[cfg(test)]
    pub(crate) fn push(&mut self, offset: u64, ts_ms: u64, tenant: &str, topic: &str, payload: &[u8]) {
        self.push_from(None, offset, ts_ms, tenant, topic, payload);
    }

    /// Add one record; `lane`: the lane it was acknowledged in, when that
    /// is not the lease's (a re-drive). v2 carries no lane: it is dropped.
    /// Payloads are stored records, so under `u32::MAX` bytes (the WAL's
    /// frames are far smaller); a larger one is a bug.
    pub fn push_from(
        &mut self,
        lane: Option<&str>,
        offset: u64,
        ts_ms: u64,
        tenant: &str,
        topic: &str,
        payload: &[u8],
    ) {
        debug_assert!(u32::try_from(payload.len()).is_ok(), "a stored record over 4 GiB");
        let lane = match self.version {
            Version::V3 => lane.map(|l| intern(&mut self.lanes, l)),
            Version::V2 => None,
        };
        let entry = EntryV3 {
            offset,
            ts_ms,
            lane,
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
        match self.version {
            Version::V2 => {
                let records = self
                    .records
                    .iter()
                    .map(|e| Entry { offset: e.offset, ts_ms: e.ts_ms, tenant: e.tenant, topic: e.topic, len: e.len })
                    .collect();
                let lease = LeaseIndex { head, tenants: self.tenants, topics: self.topics, records };
                body(MAGIC, &Header { idle: None, retry_after_ms: 0, lease: Some(lease) }, &self.payloads)
            }
            Version::V3 => {
                let lease = LeaseIndexV3 {
                    head,
                    broker_id: self.broker_id,
                    lanes: self.lanes,
                    tenants: self.tenants,
                    topics: self.topics,
                    records: self.records,
                };
                body(MAGIC_V3, &HeaderV3 { idle: None, retry_after_ms: 0, lease: Some(lease) }, &self.payloads)
            }
        }
    }
}

/// The body of a v2 answer that grants no lease (the tests' shorthand).
#[cfg(test)]
pub(crate) fn encode_idle(idle: Option<IdleReason>, retry_after_ms: u64) -> Vec<u8> {
    encode_idle_as(Version::V2, idle, retry_after_ms)
}

/// The body of an answer of `version` that grants no lease.
pub fn encode_idle_as(version: Version, idle: Option<IdleReason>, retry_after_ms: u64) -> Vec<u8> {
    match version {
        Version::V2 => body(MAGIC, &Header { idle, retry_after_ms, lease: None }, &[]),
        Version::V3 => body(MAGIC_V3, &HeaderV3 { idle, retry_after_ms, lease: None }, &[]),
    }
}

fn body<H: Serialize>(magic: [u8; 4], header: &H, payloads: &[u8]) -> Vec<u8> {
    // A plain struct of strings and integers always encodes.
    let head = bincode::serde::encode_to_vec(header, bincode::config::standard()).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + head.len() + payloads.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payloads);
    out
}

/// The header of a body of the format its magic names, decoded whole.
fn decode_header<H: serde::de::DeserializeOwned>(body: &Bytes) -> Result<(H, usize), LeaseFormatError> {
    let head_len = u32::from_le_bytes([body[4], body[5], body[6], body[7]]) as usize;
    if head_len > MAX_HEADER_BYTES || head_len > body.len() - 8 {
        return Err(LeaseFormatError::HeaderLength(head_len));
    }
    let config = bincode::config::standard().with_limit::<MAX_HEADER_BYTES>();
    let (header, used): (H, usize) = bincode::serde::decode_from_slice(&body[8..8 + head_len], config)
        .map_err(|source| LeaseFormatError::Header(HeaderDecodeError(Arc::new(source))))?;
    if used != head_len {
        return Err(LeaseFormatError::HeaderLeftover(head_len - used));
    }
    Ok((header, 8 + head_len))
}

/// Read a v2 or v3 body (its magic says which). Every payload is a slice
/// of `body` (no copy).
pub fn decode(body: Bytes) -> Result<Decoded, LeaseFormatError> {
    if body.len() < 8 {
        return Err(LeaseFormatError::NotV2);
    }
    let (idle, retry_after_ms, index, start) = if body[..4] == MAGIC {
        let (h, start): (Header, usize) = decode_header(&body)?;
        let index = h.lease.map(|l| LeaseIndexV3 {
            head: l.head,
            broker_id: String::new(),
            lanes: Vec::new(),
            tenants: l.tenants,
            topics: l.topics,
            records: l
                .records
                .into_iter()
                .map(|e| EntryV3 {
                    offset: e.offset,
                    ts_ms: e.ts_ms,
                    lane: None,
                    tenant: e.tenant,
                    topic: e.topic,
                    len: e.len,
                })
                .collect(),
        });
        (h.idle, h.retry_after_ms, index, start)
    } else if body[..4] == MAGIC_V3 {
        let (h, start): (HeaderV3, usize) = decode_header(&body)?;
        (h.idle, h.retry_after_ms, h.lease, start)
    } else {
        return Err(LeaseFormatError::NotV2);
    };
    let lease = match index {
        Some(index) => Some(records(index, &body, start)?),
        None if body.len() > start => return Err(LeaseFormatError::Trailing(body.len() - start)),
        None => None,
    };
    Ok(Decoded { lease, idle, retry_after_ms })
}

fn records(index: LeaseIndexV3, body: &Bytes, start: usize) -> Result<DecodedLease, LeaseFormatError> {
    let LeaseIndexV3 { head, broker_id, lanes, tenants, topics, records: entries } = index;
    // A re-drive mixes lanes; a joint lease holds several lanes' records,
    // each naming its own, one lane after another.
    let joint = head.lane.rsplit('/').next() == Some(JOINT_SHARD) && head.lane != DEAD_LETTERS_LANE;
    let in_lane = head.lane != DEAD_LETTERS_LANE && !joint;
    let mut prev_lane: Option<u32> = None;
    // A joint lease's offsets seen in the current lane: each record once.
    let mut in_joint_lane = std::collections::HashSet::new();
    let mut records = Vec::with_capacity(entries.len());
    let mut pos = start;
    let mut prev: Option<u64> = None;
    for (i, e) in entries.iter().enumerate() {
        let bad = |fault| LeaseFormatError::Record { index: i, fault };
        if e.tenant as usize >= tenants.len() || e.topic as usize >= topics.len() {
            return Err(bad(RecordFault::NameIndex));
        }
        if e.lane.is_some_and(|l| l as usize >= lanes.len()) {
            return Err(bad(RecordFault::LaneIndex));
        }
        if in_lane && (e.offset < head.from_offset || e.offset >= head.to_offset || prev.is_some_and(|p| p >= e.offset))
        {
            return Err(bad(RecordFault::Offset));
        }
        if joint {
            // Each record names its lane; a lane's records are together and
            // each is there once (its parts' runs each in offset order,
            // one tenant's part after another's: not increasing overall).
            let Some(lane) = e.lane else {
                return Err(bad(RecordFault::LaneIndex));
            };
            if prev_lane != Some(lane) {
                in_joint_lane.clear();
            }
            if prev_lane.is_some_and(|l| l > lane) || !in_joint_lane.insert(e.offset) {
                return Err(bad(RecordFault::Offset));
            }
            prev_lane = Some(lane);
        }
        let end = pos.checked_add(e.len as usize).filter(|&end| end < body.len()).ok_or(bad(RecordFault::PastBody))?;
        if body[end] != b'\n' {
            return Err(bad(RecordFault::Separator));
        }
        records.push(DecodedRecord {
            position: u32::try_from(i).map_err(|_| bad(RecordFault::TooMany))?,
            lane: e.lane,
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
    Ok(DecodedLease { head, broker_id, lanes, tenants, topics, records, undecodable: Vec::new(), body: body.clone() })
}

impl From<AcquireResponse> for Decoded {
    /// A v1 answer (JSON, base64 payloads).
    fn from(answer: AcquireResponse) -> Decoded {
        let lease = answer.lease.map(|l| {
            let head = l.head;
            let (mut lanes, mut tenants, mut topics) = (Vec::new(), Vec::new(), Vec::new());
            let (mut records, mut undecodable) = (Vec::with_capacity(l.records.len()), Vec::new());
            for (i, rec) in l.records.into_iter().enumerate() {
                let position = u32::try_from(i).unwrap_or(u32::MAX);
                match crate::b64_decode(&rec.payload_b64) {
                    Ok(payload) => records.push(DecodedRecord {
                        position,
                        lane: rec.lane.as_deref().map(|name| intern(&mut lanes, name)),
                        offset: rec.offset,
                        ts_ms: rec.ts_ms,
                        tenant: intern(&mut tenants, &rec.tenant),
                        topic: intern(&mut topics, &rec.topic),
                        payload: Bytes::from(payload),
                    }),
                    Err(e) => undecodable.push((position, rec.offset, format!("invalid base64: {e}"))),
                }
            }
            DecodedLease {
                head,
                broker_id: l.broker_id,
                lanes,
                tenants,
                topics,
                records,
                undecodable,
                body: Bytes::new(),
            }
        });
        Decoded { lease, idle: answer.idle, retry_after_ms: answer.retry_after_ms }
    }
}

#[cfg(test)]
mod tests;
