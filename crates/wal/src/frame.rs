//! Batch frames: one producer request, written and recovered atomically.
//!
//! Byte layout (little endian), header outside any serializer:
//!
//! | at | size | field                                              |
//! |----|------|----------------------------------------------------|
//! | 0  | 4    | magic `0x31465257` (`"WRF1"`), never zero          |
//! | 4  | 1    | version (1)                                        |
//! | 5  | 1    | flags (0)                                          |
//! | 6  | 2    | meta length M (tenant, topic, idempotency key)     |
//! | 8  | 4    | record count N (>= 1)                              |
//! | 12 | 4    | body length B (M + records)                        |
//! | 16 | 8    | base offset (offset of the first record)           |
//! | 24 | 8    | timestamp, ms since the Unix epoch                 |
//! | 32 | 4    | crc32c of body, then extended over bytes 0..32     |
//! | 36 | M    | meta: u8 len + tenant, u8 len + topic, u8 len + key |
//! | .. | ..   | N records: u32 length + bytes                      |
//!
//! The crc covers every header field and the whole body, so any flipped bit
//! is caught; the body's part is computed by the producer's thread, and the
//! writer only extends it over the header once it assigned the offset.

use crate::error::FrameError;

pub const MAGIC: u32 = 0x3146_5257;
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 36;

/// Who sent a batch, where to, and its optional idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchMeta {
    pub tenant: String,
    pub topic: String,
    pub idempotency_key: Option<String>,
}

/// A batch encoded and checksummed, waiting for its offset and timestamp.
#[derive(Debug)]
pub struct EncodedBatch {
    /// Header space (zeroed) followed by the body.
    pub(crate) bytes: Vec<u8>,
    pub(crate) body_crc: u32,
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
        let body_crc = crc32c::crc32c(&bytes[HEADER_LEN..]);
        let records = records.len() as u32;
        bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        bytes[4] = VERSION;
        bytes[6..8].copy_from_slice(&(meta_len as u16).to_le_bytes());
        bytes[8..12].copy_from_slice(&records.to_le_bytes());
        let body = u32::try_from(body_len).map_err(|_| FrameError::RecordTooLarge)?;
        bytes[12..16].copy_from_slice(&body.to_le_bytes());
        Ok(EncodedBatch { bytes, body_crc, records })
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn records(&self) -> u32 {
        self.records
    }

    /// Stamp offset and time into the header and finish the crc.
    pub(crate) fn seal(&mut self, base_offset: u64, ts_ms: u64) {
        self.bytes[16..24].copy_from_slice(&base_offset.to_le_bytes());
        self.bytes[24..32].copy_from_slice(&ts_ms.to_le_bytes());
        let crc = crc32c::crc32c_append(self.body_crc, &self.bytes[0..32]);
        self.bytes[32..36].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A frame's header fields, after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub meta_len: u16,
    pub records: u32,
    pub body_len: u32,
    pub base_offset: u64,
    pub ts_ms: u64,
}

impl FrameHeader {
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.records)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parse and fully check the frame starting at `buf[0]`: magic, version,
/// lengths (before touching the body), and the crc. `buf` may extend past
/// the frame.
pub fn check_frame(buf: &[u8], max_body: u32) -> Result<FrameHeader, FrameError> {
    if buf.len() < HEADER_LEN {
        return Err(FrameError::Incomplete);
    }
    if u32_at(buf, 0) != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if buf[4] != VERSION || buf[5] != 0 {
        return Err(FrameError::BadVersion(buf[4]));
    }
    let h = FrameHeader {
        meta_len: u16::from_le_bytes([buf[6], buf[7]]),
        records: u32_at(buf, 8),
        body_len: u32_at(buf, 12),
        base_offset: u64_at(buf, 16),
        ts_ms: u64_at(buf, 24),
    };
    if h.records == 0 || h.body_len > max_body || u32::from(h.meta_len) > h.body_len {
        return Err(FrameError::BadLength);
    }
    if buf.len() < h.frame_len() {
        return Err(FrameError::Incomplete);
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[HEADER_LEN..h.frame_len()]), &buf[0..32]);
    if crc != u32_at(buf, 32) {
        return Err(FrameError::BadCrc);
    }
    Ok(h)
}

/// A decoded frame borrowing its records from the segment bytes.
#[derive(Debug, Clone)]
pub struct FrameView<'a> {
    pub header: FrameHeader,
    pub tenant: &'a str,
    pub topic: &'a str,
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

pub struct RecordIter<'a> {
    rest: &'a [u8],
    offset: u64,
    left: u32,
}

impl<'a> Iterator for RecordIter<'a> {
    /// (offset, bytes); a malformed body ends the iteration early, which the
    /// crc makes impossible for frames that passed [`check_frame`].
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

    #[test]
    fn encoded_frame_round_trips_every_field() {
        let mut b = EncodedBatch::new(&meta(), &[&b"{\"a\":1}"[..], b"xyz"]).unwrap();
        b.seal(42, 1_700_000_000_000);
        let h = check_frame(&b.bytes, 1 << 20).unwrap();
        assert_eq!((h.base_offset, h.records, h.ts_ms), (42, 2, 1_700_000_000_000));
        let v = FrameView::decode(&b.bytes, h).unwrap();
        assert_eq!((v.tenant, v.topic, v.idempotency_key), ("acme", "events", Some("k1")));
        let recs: Vec<_> = v.records().collect();
        assert_eq!(recs, vec![(42, &b"{\"a\":1}"[..]), (43, &b"xyz"[..])]);
    }

    #[test]
    fn all_zero_header_never_parses_as_a_frame() {
        assert_eq!(check_frame(&[0u8; 128], 1 << 20), Err(FrameError::BadMagic));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut b = EncodedBatch::new(&meta(), &[b"hello"]).unwrap();
        b.seal(7, 9);
        for i in 0..b.bytes.len() * 8 {
            let mut c = b.bytes.clone();
            c[i / 8] ^= 1 << (i % 8);
            assert!(check_frame(&c, 1 << 20).is_err(), "flip of bit {i} went unnoticed");
        }
    }

    #[test]
    fn oversized_length_is_rejected_before_reading_the_body() {
        let mut b = EncodedBatch::new(&meta(), &[b"hello"]).unwrap();
        b.seal(0, 0);
        assert_eq!(check_frame(&b.bytes[..HEADER_LEN], 4), Err(FrameError::BadLength));
    }
}
