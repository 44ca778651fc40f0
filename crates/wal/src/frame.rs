//! Batch frames: one producer request, written and recovered atomically.
//!
//! Byte layout (format 3, little endian), header outside any serializer:
//!
//! | at | size | field                                                 |
//! |----|------|-------------------------------------------------------|
//! | 0  | 4    | magic `0x32465257` (`"WRF2"`), never zero             |
//! | 4  | 1    | version (3; 2 in a format-2 file)                     |
//! | 5  | 1    | flags (0)                                             |
//! | 6  | 2    | meta length M (tenant, topic, idempotency key)        |
//! | 8  | 4    | record count N (>= 1)                                 |
//! | 12 | 4    | body length B (M + records)                           |
//! | 16 | 8    | base offset (offset of the first record)              |
//! | 24 | 8    | timestamp, ms since the Unix epoch                    |
//! | 32 | 8    | body MAC: SipHash-1-3 of the body, body key (format 2: SipHash-2-4) |
//! | 40 | 8    | header MAC: SipHash-2-4 of bytes 0..40, header key    |
//! | 48 | M    | meta: u8 len + tenant, u8 len + topic, u8 len + key   |
//! | .. | ..   | N records: u32 length + bytes                         |
//!
//! **Why a tenant cannot forge a frame.** Every frame is authenticated
//! under the [`FrameKey`] of the file it is written into: 256 random bits,
//! drawn from the OS when the file's current use (its *generation*) begins,
//! kept only in that file's segment header, and never sent through any API
//! (leases and `dump` carry records, not frames). Bytes a client sends sit
//! inside a frame body, and bytes left by an earlier generation were
//! authenticated under another key; neither verifies, so neither can be read
//! as a frame — at recovery, after a file is reused, or while resynchronising
//! past damage. A crc would not do as the authenticator: crc32c is linear, so
//! a secret mixed into it is a 32-bit mask that can be guessed or learnt from
//! one checksum. The header MAC is checked before the body is touched, so a
//! forged length costs the scanner 40 hashed bytes, not a hash of the rest of
//! the file.
//!
//! **Why the body MAC stays keyed, and why format 3 takes fewer rounds.**
//! A genuine header vouches for its body only through the body MAC, and a
//! crash can leave a genuine header over bytes it was never sealed with: a
//! page of the body that did not reach the disk reads as whatever the file
//! held before, in a reused file an earlier request of the same tenant. An
//! unkeyed 64-bit check there would be a birthday search away (2^32 bodies)
//! from a tenant's two bodies that pass for each other. Keyed, the tenant
//! must guess a tag it never sees. Format 2 used SipHash-2-4; format 3 uses
//! SipHash-1-3 under the same key (the rounds std's `HashMap` trusts to
//! keep its keys unguessable), at about half the cost: the body MAC runs
//! on the WAL writer's thread over every byte, and was the broker's largest
//! single cost under OTLP ingest, whose records are ~3.5x an NDJSON
//! record's bytes (docs/performance.md). A file's header says its format
//! ([`FrameFormat`], carried by its key): a format-2 file keeps format-2
//! frames until it is retired or reused, and every new generation is
//! format 3.
//!
//! Limits are the format's own: a body length is a `u32`. No configured
//! size limit is consulted when reading, so lowering one never hides data.

use crate::error::FrameError;
use siphasher::sip::{SipHasher13, SipHasher24};
use std::hash::Hasher;

/// The first four bytes of every frame (`"WRF2"`, little endian): never zero,
/// so zeroed space is never a frame.
pub const MAGIC: u32 = 0x3246_5257;
/// The frame version this build writes (it reads format 2 too).
pub const VERSION: u8 = FrameFormat::CURRENT.version();
/// Bytes of a frame header; the body follows.
pub const HEADER_LEN: usize = 48;

/// A file generation's frame format, named by its segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFormat {
    /// Format 2: the body MAC is SipHash-2-4 under the body key (read, and
    /// appended to a format-2 file until the file's generation ends).
    V2,
    /// Format 3: the body MAC is SipHash-1-3 under the body key.
    V3,
}

impl FrameFormat {
    /// The format every new file generation gets.
    pub const CURRENT: FrameFormat = FrameFormat::V3;

    /// The format a segment header's version names (`None`: not one this
    /// build reads).
    pub fn from_version(version: u16) -> Option<FrameFormat> {
        match version {
            2 => Some(FrameFormat::V2),
            3 => Some(FrameFormat::V3),
            _ => None,
        }
    }

    /// The version byte of the segment header and of each frame.
    pub const fn version(self) -> u8 {
        match self {
            FrameFormat::V2 => 2,
            FrameFormat::V3 => 3,
        }
    }
}

/// The keys that authenticate the frames of one file generation, and the
/// format its frames have.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FrameKey {
    body: [u8; 16],
    head: [u8; 16],
    format: FrameFormat,
}

impl std::fmt::Debug for FrameKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed: a key in a log would let its reader forge frames.
        formatter.write_str("FrameKey(..)")
    }
}

impl FrameKey {
    /// Bytes of a key as stored in a segment header: the body key, then
    /// the header key.
    pub const LEN: usize = 32;

    /// A fresh key from the OS's random source.
    pub(crate) fn random() -> std::io::Result<FrameKey> {
        let mut b = [0u8; Self::LEN];
        getrandom::fill(&mut b).map_err(std::io::Error::other)?;
        Ok(FrameKey::from_bytes(&b))
    }

    /// The key stored as `bytes` (see [`FrameKey::to_bytes`]), for frames
    /// of the current format: a new generation's. A key read from a segment
    /// header takes the header's format ([`FrameKey::with_format`]).
    pub fn from_bytes(bytes: &[u8; Self::LEN]) -> FrameKey {
        FrameKey::with_format(bytes, FrameFormat::CURRENT)
    }

    /// The key stored as `bytes` in a file of `format`.
    pub fn with_format(bytes: &[u8; Self::LEN], format: FrameFormat) -> FrameKey {
        let mut body = [0u8; 16];
        let mut head = [0u8; 16];
        body.copy_from_slice(&bytes[..16]);
        head.copy_from_slice(&bytes[16..]);
        FrameKey { body, head, format }
    }

    /// The format of the frames this key seals and checks.
    pub fn format(&self) -> FrameFormat {
        self.format
    }

    /// The key as stored in a segment header. Never print or send it: whoever
    /// holds it can forge frames of its file.
    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..16].copy_from_slice(&self.body);
        b[16..].copy_from_slice(&self.head);
        b
    }

    /// The body MAC of this key's format (see the module doc).
    fn body_mac(&self, body: &[u8]) -> u64 {
        match self.format {
            FrameFormat::V2 => digest(SipHasher24::new_with_key(&self.body), body),
            FrameFormat::V3 => digest(SipHasher13::new_with_key(&self.body), body),
        }
    }

    fn header_mac(&self, header: &[u8]) -> u64 {
        digest(SipHasher24::new_with_key(&self.head), header)
    }
}

/// `bytes` through the keyed hasher `h`.
fn digest(mut h: impl Hasher, bytes: &[u8]) -> u64 {
    h.write(bytes);
    h.finish()
}

/// Who sent a batch, where to, and its optional idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchMeta {
    /// The tenant that sent the batch (at most 255 bytes).
    pub tenant: String,
    /// The topic it was sent to (at most 255 bytes).
    pub topic: String,
    /// The stored idempotency field, if any (at most 255 bytes; see
    /// `docs/wal.md` for its shape).
    pub idempotency_key: Option<String>,
}

/// A batch encoded and checksummed, waiting for its offset and timestamp.
#[derive(Debug)]
pub struct EncodedBatch {
    /// Header space (zeroed) followed by the body.
    pub(crate) bytes: Vec<u8>,
    pub(crate) records: u32,
}

impl EncodedBatch {
    /// Encode `records` with `meta`. Fails on an empty batch or over-long
    /// metadata; size limits are the caller's (the lane checks the frame max).
    pub fn new<R: AsRef<[u8]>>(meta: &BatchMeta, records: &[R]) -> Result<Self, FrameError> {
        EncodedBatch::encode(&meta.tenant, &meta.topic, meta.idempotency_key.as_deref(), records)
    }

    /// [`EncodedBatch::new`] from borrowed metadata (no owned strings needed).
    pub fn encode<R: AsRef<[u8]>>(
        tenant: &str,
        topic: &str,
        idempotency_key: Option<&str>,
        records: &[R],
    ) -> Result<Self, FrameError> {
        if records.is_empty() {
            return Err(FrameError::EmptyBatch);
        }
        let key = idempotency_key.unwrap_or("");
        for (name, field) in [("tenant", tenant), ("topic", topic), ("idempotency key", key)] {
            if field.len() > u8::MAX as usize {
                return Err(FrameError::MetaTooLong(name));
            }
        }
        let body_len: usize =
            3 + tenant.len() + topic.len() + key.len() + records.iter().map(|r| 4 + r.as_ref().len()).sum::<usize>();
        let mut bytes = Vec::with_capacity(HEADER_LEN + body_len);
        bytes.resize(HEADER_LEN, 0);
        for field in [tenant, topic, key] {
            bytes.push(field.len() as u8);
            bytes.extend_from_slice(field.as_bytes());
        }
        let meta_len = bytes.len() - HEADER_LEN;
        for r in records {
            let r = r.as_ref();
            let len = u32::try_from(r.len()).map_err(|_| FrameError::RecordTooLarge)?;
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(r);
        }
        let records = records.len() as u32;
        bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        bytes[4] = VERSION;
        bytes[6..8].copy_from_slice(&(meta_len as u16).to_le_bytes());
        bytes[8..12].copy_from_slice(&records.to_le_bytes());
        let body = u32::try_from(body_len).map_err(|_| FrameError::RecordTooLarge)?;
        bytes[12..16].copy_from_slice(&body.to_le_bytes());
        Ok(EncodedBatch { bytes, records })
    }

    /// A frame around a body already encoded (meta, then records), as a
    /// format-1 frame held it: for `migrate`, which keeps bodies verbatim.
    pub(crate) fn from_body(meta_len: u16, records: u32, body: &[u8]) -> Result<Self, FrameError> {
        if records == 0 || usize::from(meta_len) > body.len() {
            return Err(FrameError::BadLength);
        }
        let body_len = u32::try_from(body.len()).map_err(|_| FrameError::RecordTooLarge)?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
        bytes.resize(HEADER_LEN, 0);
        bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        bytes[4] = VERSION;
        bytes[6..8].copy_from_slice(&meta_len.to_le_bytes());
        bytes[8..12].copy_from_slice(&records.to_le_bytes());
        bytes[12..16].copy_from_slice(&body_len.to_le_bytes());
        bytes.extend_from_slice(body);
        Ok(EncodedBatch { bytes, records })
    }

    /// Bytes of the whole frame, header included (what
    /// [`crate::WalOptions::max_frame_bytes`] limits).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a frame always has its header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Records in the batch (at least one).
    pub fn records(&self) -> u32 {
        self.records
    }

    /// Stamp version, offset and time into the header and authenticate the
    /// frame under the key of the file it is about to be written into (its
    /// format decides the version and the body MAC).
    pub(crate) fn seal(&mut self, key: &FrameKey, base_offset: u64, ts_ms: u64) {
        self.bytes[4] = key.format.version();
        self.bytes[16..24].copy_from_slice(&base_offset.to_le_bytes());
        self.bytes[24..32].copy_from_slice(&ts_ms.to_le_bytes());
        let body = key.body_mac(&self.bytes[HEADER_LEN..]);
        self.bytes[32..40].copy_from_slice(&body.to_le_bytes());
        let head = key.header_mac(&self.bytes[0..40]);
        self.bytes[40..48].copy_from_slice(&head.to_le_bytes());
    }
}

/// A frame's header fields, after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes of the metadata at the start of the body (at most `body_len`).
    pub meta_len: u16,
    /// Records in the frame (at least one).
    pub records: u32,
    /// Bytes of the body: metadata, then the records.
    pub body_len: u32,
    /// Offset of the first record; `base_offset + records` never overflows.
    pub base_offset: u64,
    /// When the frame was committed, ms since the Unix epoch.
    pub ts_ms: u64,
}

impl FrameHeader {
    /// Bytes of the whole frame, header included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }
    /// The offset after the frame's last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.records)
    }
}

/// The little-endian `u32` at `at` (the caller checked the length).
pub(crate) fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// The little-endian `u64` at `at` (the caller checked the length).
pub(crate) fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(out)
}

/// Parse and fully check the frame starting at `buf[0]` under `key`:
/// magic, version (the key's format), lengths, the header MAC (before
/// touching the body), then the body MAC. `buf` may extend past the frame.
pub fn check_frame(buf: &[u8], key: &FrameKey) -> Result<FrameHeader, FrameError> {
    let h = check_head(buf, key)?;
    if key.body_mac(&buf[HEADER_LEN..h.frame_len()]) != u64_at(buf, 32) {
        return Err(FrameError::BadMac);
    }
    Ok(h)
}

/// [`check_frame`] without the body MAC: for a frame the log already
/// verified (one its index lists), read again only for its header and
/// metadata (`Lane::visit_frame_metas`). Never for what is delivered.
pub(crate) fn check_head(buf: &[u8], key: &FrameKey) -> Result<FrameHeader, FrameError> {
    if buf.len() < HEADER_LEN {
        return Err(FrameError::Incomplete);
    }
    if u32_at(buf, 0) != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if buf[4] != key.format.version() || buf[5] != 0 {
        return Err(FrameError::BadVersion(buf[4]));
    }
    if key.header_mac(&buf[0..40]) != u64_at(buf, 40) {
        return Err(FrameError::BadMac);
    }
    let h = FrameHeader {
        meta_len: u16::from_le_bytes([buf[6], buf[7]]),
        records: u32_at(buf, 8),
        body_len: u32_at(buf, 12),
        base_offset: u64_at(buf, 16),
        ts_ms: u64_at(buf, 24),
    };
    // An authentic header was written by the writer; this guards the
    // decoder against a bug, not against a forger. Its offsets must not run
    // past u64::MAX: `next_offset` (and the record iterator) add them.
    let offsets_fit = h.base_offset.checked_add(u64::from(h.records)).is_some();
    if h.records == 0 || u32::from(h.meta_len) > h.body_len || !offsets_fit {
        return Err(FrameError::BadLength);
    }
    if buf.len() < h.frame_len() {
        return Err(FrameError::Incomplete);
    }
    Ok(h)
}

/// A decoded frame borrowing its records from the segment bytes.
#[derive(Debug, Clone)]
pub struct FrameView<'a> {
    /// The checked header.
    pub header: FrameHeader,
    /// The tenant that sent the batch.
    pub tenant: &'a str,
    /// The topic it was sent to.
    pub topic: &'a str,
    /// The stored idempotency field, if the batch had one.
    pub idempotency_key: Option<&'a str>,
    body: &'a [u8],
}

impl<'a> FrameView<'a> {
    /// Decode a frame already passed by [`check_frame`].
    pub fn decode(buf: &'a [u8], header: FrameHeader) -> Result<Self, FrameError> {
        let body = &buf[HEADER_LEN..header.frame_len()];
        let mut at = 0usize;
        let mut field = || -> Result<&'a str, FrameError> {
            let len = *body.get(at).ok_or(FrameError::BadMeta)? as usize;
            let s = body.get(at + 1..at + 1 + len).ok_or(FrameError::BadMeta)?;
            at += 1 + len;
            std::str::from_utf8(s).map_err(|_| FrameError::BadMeta)
        };
        let tenant = field()?;
        let topic = field()?;
        let key = field()?;
        if at != header.meta_len as usize {
            return Err(FrameError::BadMeta);
        }
        Ok(FrameView { header, tenant, topic, idempotency_key: (!key.is_empty()).then_some(key), body: &body[at..] })
    }

    /// The records in order, with their offsets.
    pub fn records(&self) -> RecordIter<'a> {
        RecordIter { rest: self.body, offset: self.header.base_offset, left: self.header.records }
    }
}

/// The records of a [`FrameView`], in order, with their offsets.
pub struct RecordIter<'a> {
    rest: &'a [u8],
    offset: u64,
    left: u32,
}

impl<'a> Iterator for RecordIter<'a> {
    /// (offset, bytes); a malformed body ends the iteration early, which the
    /// MAC makes impossible for frames that passed [`check_frame`].
    type Item = (u64, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 || self.rest.len() < 4 {
            return None;
        }
        let len = u32_at(self.rest, 0) as usize;
        let rec = self.rest.get(4..4 + len)?;
        self.rest = &self.rest[4 + len..];
        self.left -= 1;
        let off = self.offset;
        self.offset += 1;
        Some((off, rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> BatchMeta {
        BatchMeta { tenant: "acme".into(), topic: "events".into(), idempotency_key: Some("k1".into()) }
    }

    fn key(fill: u8) -> FrameKey {
        FrameKey::from_bytes(&[fill; FrameKey::LEN])
    }

    #[test]
    fn encoded_frame_round_trips_every_field() {
        let mut b = EncodedBatch::new(&meta(), &[&b"{\"a\":1}"[..], b"xyz"]).unwrap();
        b.seal(&key(1), 42, 1_700_000_000_000);
        let h = check_frame(&b.bytes, &key(1)).unwrap();
        assert_eq!((h.base_offset, h.records, h.ts_ms), (42, 2, 1_700_000_000_000));
        let v = FrameView::decode(&b.bytes, h).unwrap();
        assert_eq!((v.tenant, v.topic, v.idempotency_key), ("acme", "events", Some("k1")));
        let recs: Vec<_> = v.records().collect();
        assert_eq!(recs, vec![(42, &b"{\"a\":1}"[..]), (43, &b"xyz"[..])]);
    }

    #[test]
    fn all_zero_header_never_parses_as_a_frame() {
        assert_eq!(check_frame(&[0u8; 128], &key(1)), Err(FrameError::BadMagic));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut b = EncodedBatch::new(&meta(), &[b"hello"]).unwrap();
        b.seal(&key(1), 7, 9);
        for i in 0..b.bytes.len() * 8 {
            let mut c = b.bytes.clone();
            c[i / 8] ^= 1 << (i % 8);
            assert!(check_frame(&c, &key(1)).is_err(), "flip of bit {i} went unnoticed");
        }
    }

    /// `check_head` is for frames the log already verified: it checks the
    /// header (so it never reads at a place that is not a frame of this
    /// key) and leaves the body's MAC to `check_frame`.
    #[test]
    fn check_head_checks_the_header_and_leaves_the_body_to_check_frame() {
        let mut b = EncodedBatch::new(&meta(), &[b"hello"]).unwrap();
        b.seal(&key(1), 7, 9);
        let mut c = b.bytes.clone();
        let last = c.len() - 1;
        c[last] ^= 1;
        assert_eq!(check_head(&c, &key(1)).map(|h| h.base_offset), Ok(7));
        assert_eq!(check_frame(&c, &key(1)), Err(FrameError::BadMac));
        assert_eq!(check_head(&b.bytes, &key(2)), Err(FrameError::BadMac), "another key's header");
        let mut d = b.bytes.clone();
        d[20] ^= 1; // the base offset, under the header's MAC
        assert_eq!(check_head(&d, &key(1)), Err(FrameError::BadMac));
    }

    #[test]
    fn a_frame_sealed_under_another_key_is_not_a_frame() {
        let mut b = EncodedBatch::new(&meta(), &[b"hello"]).unwrap();
        b.seal(&key(1), 7, 9);
        assert_eq!(check_frame(&b.bytes, &key(2)), Err(FrameError::BadMac));
    }

    #[test]
    fn a_forged_length_is_rejected_before_the_body_is_read() {
        let mut b = EncodedBatch::new(&meta(), &[b"hello"]).unwrap();
        b.seal(&key(1), 0, 0);
        b.bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(check_frame(&b.bytes, &key(1)), Err(FrameError::BadMac));
        // An authentic header whose body is not all there yet is incomplete.
        let mut b = EncodedBatch::new(&meta(), &[b"hello"]).unwrap();
        b.seal(&key(1), 0, 0);
        assert_eq!(check_frame(&b.bytes[..HEADER_LEN + 2], &key(1)), Err(FrameError::Incomplete));
    }

    #[test]
    fn a_frame_whose_offsets_run_past_u64_max_is_refused() {
        // Found by the fuzz target `frame` (fuzz/crashes-fixed/frame/): an
        // authentic header with base offset u64::MAX made `next_offset`
        // overflow (a panic in debug builds, a wrap to 0 in release).
        let mut b = EncodedBatch::new(&meta(), &[b"a", b"b"]).unwrap();
        b.seal(&key(1), u64::MAX - 1, 0);
        assert_eq!(check_frame(&b.bytes, &key(1)), Err(FrameError::BadLength));
        let mut b = EncodedBatch::new(&meta(), &[b"a", b"b"]).unwrap();
        b.seal(&key(1), u64::MAX - 2, 0);
        let h = check_frame(&b.bytes, &key(1)).unwrap();
        assert_eq!(h.next_offset(), u64::MAX);
        let offsets: Vec<u64> = FrameView::decode(&b.bytes, h).unwrap().records().map(|r| r.0).collect();
        assert_eq!(offsets, vec![u64::MAX - 2, u64::MAX - 1]);
    }

    /// A format-2 file's frames (keyed SipHash bodies) still read, and a
    /// frame of one format is never a frame of the other: a file's header
    /// decides which format its key checks.
    #[test]
    fn format_2_frames_still_check_and_formats_never_mix() {
        let v2 = FrameKey::with_format(&[1; FrameKey::LEN], FrameFormat::V2);
        let mut old = EncodedBatch::new(&meta(), &[b"hello"]).unwrap();
        old.seal(&v2, 7, 9);
        assert_eq!(old.bytes[4], 2);
        assert_eq!(check_frame(&old.bytes, &v2).map(|h| h.base_offset), Ok(7));
        assert_eq!(check_frame(&old.bytes, &key(1)), Err(FrameError::BadVersion(2)));
        let mut new = EncodedBatch::new(&meta(), &[b"hello"]).unwrap();
        new.seal(&key(1), 7, 9);
        assert_eq!(new.bytes[4], 3);
        assert_eq!(check_frame(&new.bytes, &v2), Err(FrameError::BadVersion(3)));
        // Same key bytes: the two formats' body MACs differ.
        assert_ne!(old.bytes[32..40], new.bytes[32..40]);
        // A format-2 frame relabelled as format 3 fails the header MAC.
        let mut relabelled = old.bytes.clone();
        relabelled[4] = 3;
        assert_eq!(check_frame(&relabelled, &key(1)), Err(FrameError::BadMac));
    }

    /// A genuine header over a body it was not sealed with (a torn write
    /// over a reused file's older bytes of the same length) is refused, as
    /// is a header MAC moved from another frame or a frame under another key.
    #[test]
    fn a_body_is_bound_to_its_authentic_header() {
        let mut a = EncodedBatch::new(&meta(), &[b"hello"]).unwrap();
        a.seal(&key(1), 7, 9);
        let mut b = EncodedBatch::new(&meta(), &[b"jello"]).unwrap();
        b.seal(&key(1), 7, 9);
        let mut swapped = a.bytes.clone();
        swapped[HEADER_LEN..].copy_from_slice(&b.bytes[HEADER_LEN..]);
        assert_eq!(check_frame(&swapped, &key(1)), Err(FrameError::BadMac));
        let mut moved = a.bytes.clone();
        moved[40..48].copy_from_slice(&b.bytes[40..48]);
        assert_eq!(check_frame(&moved, &key(1)), Err(FrameError::BadMac));
        assert_eq!(check_frame(&a.bytes, &key(2)), Err(FrameError::BadMac));
    }

    #[test]
    fn random_keys_differ_and_never_print() {
        let (a, b) = (FrameKey::random().unwrap(), FrameKey::random().unwrap());
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "FrameKey(..)");
        assert_eq!(FrameKey::from_bytes(&a.to_bytes()), a);
    }
}
