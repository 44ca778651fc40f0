//! Segment files: a 64-byte header, then frames back to back.
//!
//! Header, formats 2 and 3 (little endian):
//!
//! | at | size | field                                          |
//! |----|------|------------------------------------------------|
//! | 0  | 8    | magic `"WEIRSEG1"` (all formats)               |
//! | 8  | 2    | format version (3; or 2: [`FrameFormat`])      |
//! | 10 | 1    | priority (0 high, 1 normal, 2 low)             |
//! | 11 | 1    | flags: bit 0 = the file was reused (recycled)  |
//! | 12 | 4    | shard                                          |
//! | 16 | 8    | base offset                                    |
//! | 24 | 32   | frame key of this generation ([`FrameKey`])    |
//! | 56 | 4    | crc32c of bytes 0..56                          |
//! | 60 | 4    | reserved (0)                                   |
//!
//! The header's version is the format of every frame in the file: a
//! format-2 file (written before format 3) is read, and appended to, with
//! format-2 frames until its generation ends; every new generation is
//! format 3. A build that knows only format 2 refuses a format-3 file with
//! its version rather than scanning it (docs/upgrade.md). Format 1
//! (crc-only frames, no key) is recognised and refused with its version,
//! never scanned: `broker-admin migrate` converts it.
//!
//! [`scan`] is a pure function over a segment's bytes and its key: it finds
//! every authentic frame and classifies what is not. The recovery rules
//! stand on it:
//! - zeros, or bytes that are not an authentic frame with no authentic
//!   frame after them, form a tail the last write tore (or preallocation, or
//!   the file's earlier generation, left): cut it off;
//! - a non-authentic region *followed by* an authentic frame whose offset
//!   does not go backwards is corruption of bytes that were once durable:
//!   the segment is quarantined and its authentic frames kept; the offsets
//!   in between are reported lost.

use crate::error::FrameError;
use crate::frame::{check_frame, FrameFormat, FrameKey, HEADER_LEN, MAGIC};
use crate::lane_id::{LaneId, Priority};

pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"WEIRSEG1";
/// Bytes of a segment header; the first frame starts here.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// The on-disk format this build writes (it reads format 2 as well).
pub const SEGMENT_VERSION: u16 = FrameFormat::CURRENT.version() as u16;

const FLAG_RECYCLED: u8 = 1;

/// A segment header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The lane the segment belongs to (recovery refuses one in another
    /// lane's directory).
    pub lane: LaneId,
    /// Offset of the segment's first record (also its file name).
    pub base_offset: u64,
    /// The key of this file generation: it authenticates every frame in it.
    pub key: FrameKey,
    /// The file held an earlier segment of its lane: bytes past the last
    /// frame are that generation's, expected, and not damage.
    pub recycled: bool,
}

impl SegmentHeader {
    /// The header's bytes, its crc32c included.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        h[0..8].copy_from_slice(SEGMENT_MAGIC);
        h[8..10].copy_from_slice(&u16::from(self.key.format().version()).to_le_bytes());
        h[10] = self.lane.priority as u8;
        h[11] = if self.recycled { FLAG_RECYCLED } else { 0 };
        h[12..16].copy_from_slice(&u32::from(self.lane.shard).to_le_bytes());
        h[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        h[24..56].copy_from_slice(&self.key.to_bytes());
        let crc = crc32c::crc32c(&h[0..56]);
        h[56..60].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parse a segment header. A header of another format whose own crc
    /// holds is [`FrameError::UnsupportedFormat`]; anything else that does
    /// not parse is damage.
    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, FrameError> {
        if buf.len() < SEGMENT_HEADER_LEN {
            return Err(FrameError::Incomplete);
        }
        if &buf[0..8] != SEGMENT_MAGIC {
            return Err(FrameError::BadMagic);
        }
        let crc_at = |at: usize, over: usize| {
            u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) == crc32c::crc32c(&buf[0..over])
        };
        let version = u16::from_le_bytes([buf[8], buf[9]]);
        let Some(format) = FrameFormat::from_version(version) else {
            // Format 1 kept its crc at 24 over 0..24.
            return Err(if crc_at(24, 24) || crc_at(56, 56) {
                FrameError::UnsupportedFormat(version)
            } else {
                FrameError::BadCrc
            });
        };
        if !crc_at(56, 56) {
            return Err(FrameError::BadCrc);
        }
        let priority = Priority::from_index(buf[10]).ok_or(FrameError::BadMeta)?;
        let shard = u32::from_le_bytes([buf[12], buf[13], buf[14], buf[15]]);
        let shard = u16::try_from(shard).map_err(|_| FrameError::BadMeta)?;
        let mut base = [0u8; 8];
        base.copy_from_slice(&buf[16..24]);
        let mut key = [0u8; FrameKey::LEN];
        key.copy_from_slice(&buf[24..56]);
        Ok(SegmentHeader {
            lane: LaneId { priority, shard },
            base_offset: u64::from_le_bytes(base),
            key: FrameKey::with_format(&key, format),
            recycled: buf[11] & FLAG_RECYCLED != 0,
        })
    }
}

/// Where one valid frame sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLoc {
    /// Offset of the frame's first record.
    pub base_offset: u64,
    /// Records in it (at least one).
    pub records: u32,
    /// Where the frame starts in its file.
    pub pos: u64,
    /// Bytes of the frame.
    pub len: u32,
    /// Its commit time, ms since the Unix epoch.
    pub ts_ms: u64,
}

impl FrameLoc {
    /// The offset after the frame's last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.records)
    }
    /// Where the frame ends in its file.
    pub fn end(&self) -> u64 {
        self.pos + u64::from(self.len)
    }
}

/// What follows the last valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// The file ends right after the last frame.
    Clean,
    /// Only zero bytes follow (preallocated space, or a write that extended
    /// the file but never landed).
    Zeros {
        /// Where the zeros start.
        at: u64,
    },
    /// An incomplete or invalid frame with nothing valid after it.
    Torn {
        /// Where it starts.
        at: u64,
        /// Why it is not a frame.
        what: FrameError,
    },
    /// What follows is left over from the file's earlier life as another
    /// segment (see `docs/wal.md`, recycling): bytes authenticated under an
    /// earlier key, which never verify under this one. A write torn over
    /// such bytes looks the same and is cut the same way.
    Stale {
        /// Where the stale bytes start.
        at: u64,
    },
}

/// A damaged region followed by valid frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corruption {
    /// Where the damage starts.
    pub at: u64,
    /// Why the bytes there are not a frame.
    pub what: FrameError,
    /// Where the next valid frame starts.
    pub resumes_at: u64,
    /// Offsets lost with the damaged bytes: [from, to).
    pub lost_offsets: (u64, u64),
}

/// What [`scan`] found in a segment: its valid frames, in order, and what
/// is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Every authentic frame, offsets increasing.
    pub frames: Vec<FrameLoc>,
    /// End of the last valid frame (or of the header).
    pub valid_end: u64,
    /// What follows the last valid frame.
    pub tail: Tail,
    /// Damaged regions between valid frames.
    pub corruptions: Vec<Corruption>,
}

impl Scan {
    /// The offset after the last valid frame (`base_offset` when there is none).
    pub fn next_offset(&self, base_offset: u64) -> u64 {
        self.frames.last().map_or(base_offset, FrameLoc::next_offset)
    }
    /// Records in the valid frames.
    pub fn records(&self) -> u64 {
        self.frames.iter().map(|f| u64::from(f.records)).sum()
    }
}

/// Classify every byte after the segment header of `bytes`, a segment
/// whose header is `header`.
pub fn scan(bytes: &[u8], header: &SegmentHeader) -> Scan {
    let key = &header.key;
    let mut frames = Vec::new();
    let mut corruptions = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN.min(bytes.len());
    let mut expected = header.base_offset;
    let tail = loop {
        if pos == bytes.len() {
            break Tail::Clean;
        }
        let what = match check_frame(&bytes[pos..], key) {
            // Offsets may jump forward (records lost to an earlier
            // quarantine), never back.
            Ok(h) if h.base_offset >= expected => {
                debug_assert!(h.next_offset() > h.base_offset, "a frame holds at least one record");
                frames.push(FrameLoc {
                    base_offset: h.base_offset,
                    records: h.records,
                    pos: pos as u64,
                    len: h.frame_len() as u32,
                    ts_ms: h.ts_ms,
                });
                pos += h.frame_len();
                expected = h.next_offset();
                continue;
            }
            Ok(_) => FrameError::BadMeta,
            Err(e) => e,
        };
        if bytes[pos..].iter().all(|&b| b == 0) {
            break Tail::Zeros { at: pos as u64 };
        }
        match find_next_authentic(bytes, pos + 1, expected, key) {
            Some((next, next_base)) => {
                corruptions.push(Corruption {
                    at: pos as u64,
                    what,
                    resumes_at: next as u64,
                    lost_offsets: (expected, next_base),
                });
                pos = next;
                expected = next_base;
            }
            None if header.recycled => break Tail::Stale { at: pos as u64 },
            None => break Tail::Torn { at: pos as u64, what },
        }
    };
    let valid_end = frames.last().map_or(SEGMENT_HEADER_LEN.min(bytes.len()) as u64, FrameLoc::end);
    Scan { frames, valid_end, tail, corruptions }
}

/// Search from `from` for an authentic frame whose offset does not go
/// backwards (at least `min_offset`): (position, base offset).
fn find_next_authentic(bytes: &[u8], from: usize, min_offset: u64, key: &FrameKey) -> Option<(usize, u64)> {
    let magic = MAGIC.to_le_bytes();
    let mut at = from;
    while at + HEADER_LEN <= bytes.len() {
        let i = memchr::memmem::find(&bytes[at..], &magic)?;
        at += i;
        if let Ok(h) = check_frame(&bytes[at..], key) {
            if h.base_offset >= min_offset {
                return Some((at, h.base_offset));
            }
        }
        at += 1;
    }
    None
}

/// Derived per-segment summary, written beside a sealed segment. Recovery
/// rebuilds it from the segment whenever it is missing or disagrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The segment's base offset.
    pub base_offset: u64,
    /// The offset after its last frame.
    pub next_offset: u64,
    /// Records in it.
    pub records: u64,
    /// Its length up to the end of its last frame.
    pub bytes: u64,
    /// Commit time of its first frame (0 when empty).
    pub first_ts_ms: u64,
    /// Commit time of its last frame (0 when empty).
    pub last_ts_ms: u64,
}

const SUMMARY_MAGIC: &[u8; 8] = b"WEIRSUM1";
pub(crate) const SUMMARY_LEN: usize = 8 + 6 * 8 + 4;

impl Summary {
    pub(crate) fn of(base_offset: u64, scan: &Scan) -> Summary {
        Summary::from_frames(base_offset, scan.valid_end, &scan.frames)
    }

    pub(crate) fn from_frames(base_offset: u64, bytes: u64, frames: &[FrameLoc]) -> Summary {
        Summary {
            base_offset,
            next_offset: frames.last().map_or(base_offset, FrameLoc::next_offset),
            records: frames.iter().map(|f| u64::from(f.records)).sum(),
            bytes,
            first_ts_ms: frames.first().map_or(0, |f| f.ts_ms),
            last_ts_ms: frames.last().map_or(0, |f| f.ts_ms),
        }
    }

    /// The summary file's bytes, its crc32c included.
    pub fn encode(&self) -> [u8; SUMMARY_LEN] {
        let mut b = [0u8; SUMMARY_LEN];
        b[0..8].copy_from_slice(SUMMARY_MAGIC);
        let fields = [self.base_offset, self.next_offset, self.records, self.bytes, self.first_ts_ms, self.last_ts_ms];
        for (i, v) in fields.iter().enumerate() {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b[..SUMMARY_LEN - 4]);
        b[SUMMARY_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(buf: &[u8]) -> Option<Summary> {
        if buf.len() != SUMMARY_LEN || &buf[0..8] != SUMMARY_MAGIC {
            return None;
        }
        let crc = u32::from_le_bytes(buf[SUMMARY_LEN - 4..].try_into().ok()?);
        if crc != crc32c::crc32c(&buf[..SUMMARY_LEN - 4]) {
            return None;
        }
        let f = |i: usize| u64::from_le_bytes(buf[8 + i * 8..16 + i * 8].try_into().unwrap_or([0; 8]));
        Some(Summary {
            base_offset: f(0),
            next_offset: f(1),
            records: f(2),
            bytes: f(3),
            first_ts_ms: f(4),
            last_ts_ms: f(5),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{BatchMeta, EncodedBatch};

    fn header(base: u64, key: u8, recycled: bool) -> SegmentHeader {
        let lane = LaneId { priority: Priority::Normal, shard: 1 };
        SegmentHeader { lane, base_offset: base, key: FrameKey::from_bytes(&[key; FrameKey::LEN]), recycled }
    }

    fn frames_of(header: &SegmentHeader, frames: &[(u64, u32)]) -> Vec<u8> {
        let meta = BatchMeta { tenant: "t".into(), topic: "e".into(), idempotency_key: None };
        let mut b = Vec::new();
        for &(base, n) in frames {
            let recs: Vec<Vec<u8>> = (0..n).map(|i| vec![b'a' + i as u8; 700]).collect();
            let mut f = EncodedBatch::new(&meta, &recs).unwrap();
            f.seal(&header.key, base, 1);
            b.extend_from_slice(&f.bytes);
        }
        b
    }

    fn segment_with(header: &SegmentHeader, frames: &[(u64, u32)]) -> Vec<u8> {
        let mut b = header.encode().to_vec();
        b.extend_from_slice(&frames_of(header, frames));
        b
    }

    #[test]
    fn header_round_trips_and_zero_header_is_rejected() {
        let h = SegmentHeader { lane: LaneId { priority: Priority::Low, shard: 3 }, ..header(99, 5, true) };
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        assert!(SegmentHeader::decode(&[0u8; 64]).is_err());
    }

    /// A format-2 file (written before format 3) decodes with a format-2
    /// key, its frames scan, and its header re-encodes as format 2; a
    /// format the build does not know is refused by version.
    #[test]
    fn a_format_2_segment_still_reads_as_format_2() {
        let key = FrameKey::with_format(&[4; FrameKey::LEN], FrameFormat::V2);
        let h = SegmentHeader { key, ..header(10, 4, false) };
        let b = segment_with(&h, &[(10, 2), (12, 1)]);
        assert_eq!(u16::from_le_bytes([b[8], b[9]]), 2);
        let decoded = SegmentHeader::decode(&b).unwrap();
        assert_eq!((decoded, decoded.key.format()), (h, FrameFormat::V2));
        let s = scan(&b, &decoded);
        assert_eq!(s.frames.iter().map(|f| f.base_offset).collect::<Vec<_>>(), vec![10, 12]);
        assert!(s.corruptions.is_empty());
        assert_eq!(header(0, 4, false).encode()[8..10], 3u16.to_le_bytes());
        let mut newer = header(0, 4, false).encode();
        newer[8..10].copy_from_slice(&4u16.to_le_bytes());
        let crc = crc32c::crc32c(&newer[0..56]);
        newer[56..60].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&newer), Err(FrameError::UnsupportedFormat(4)));
    }

    #[test]
    fn a_format_1_header_is_refused_by_version_not_called_damage() {
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&1u16.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..24]);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&b), Err(FrameError::UnsupportedFormat(1)));
        b[17] ^= 1;
        assert_eq!(SegmentHeader::decode(&b), Err(FrameError::BadCrc));
    }

    #[test]
    fn preallocated_zeros_after_frames_are_a_zero_tail() {
        let h = header(0, 1, false);
        let mut b = segment_with(&h, &[(0, 2), (2, 1)]);
        let end = b.len() as u64;
        b.resize(b.len() + 4096, 0);
        let s = scan(&b, &h);
        assert_eq!((s.frames.len(), s.valid_end, s.tail), (2, end, Tail::Zeros { at: end }));
    }

    #[test]
    fn half_written_last_frame_is_a_torn_tail() {
        let h = header(0, 1, false);
        let b = segment_with(&h, &[(0, 2), (2, 3)]);
        let s = scan(&b[..b.len() - 100], &h);
        assert_eq!(s.frames.len(), 1);
        assert!(matches!(s.tail, Tail::Torn { what: FrameError::Incomplete, .. }));
        assert!(s.corruptions.is_empty());
    }

    #[test]
    fn flipped_byte_before_valid_frames_is_corruption_not_a_torn_tail() {
        let h = header(0, 1, false);
        let mut b = segment_with(&h, &[(0, 2), (2, 3), (5, 1)]);
        let clean = scan(&b, &h);
        let second = clean.frames[1];
        b[second.pos as usize + 200] ^= 0xff;
        let s = scan(&b, &h);
        assert_eq!(s.tail, Tail::Clean);
        assert_eq!(s.frames.iter().map(|f| f.base_offset).collect::<Vec<_>>(), vec![0, 5]);
        assert_eq!(s.corruptions.len(), 1);
        assert_eq!(s.corruptions[0].at, second.pos);
        assert_eq!(s.corruptions[0].lost_offsets, (2, 5));
    }

    #[test]
    fn frames_of_an_earlier_generation_are_a_stale_tail_never_data() {
        // An old segment (offsets 0..6, key 1) reused for a segment at 100 (key 2).
        let old_h = header(0, 1, false);
        let old = segment_with(&old_h, &[(0, 2), (2, 3), (5, 1)]);
        let new_h = header(100, 2, true);
        let new = segment_with(&new_h, &[(100, 1)]);
        let mut b = old.clone();
        b[..new.len()].copy_from_slice(&new);
        let s = scan(&b, &new_h);
        assert_eq!(s.frames.iter().map(|f| f.base_offset).collect::<Vec<_>>(), vec![100]);
        assert!(matches!(s.tail, Tail::Stale { at } if at == new.len() as u64), "{:?}", s.tail);
        assert!(s.corruptions.is_empty());
        // Even old frames with offsets past the new ones are not data.
        let later = segment_with(&header(0, 1, false), &[(500, 2)]);
        let mut b = new.clone();
        b.extend_from_slice(&later[SEGMENT_HEADER_LEN..]);
        let s = scan(&b, &new_h);
        assert_eq!(s.frames.len(), 1);
        assert_eq!(s.tail, Tail::Stale { at: new.len() as u64 });
    }

    #[test]
    fn a_frame_planted_in_a_payload_is_never_found_by_resync() {
        // The tenant's record is itself a frame, sealed under a key it guessed.
        let h = header(0, 1, false);
        let planted = frames_of(&header(0, 9, false), &[(1_000_000, 1)]);
        let meta = BatchMeta { tenant: "mallory".into(), topic: "e".into(), idempotency_key: None };
        let mut carrier = EncodedBatch::new(&meta, &[planted.as_slice()]).unwrap();
        carrier.seal(&h.key, 0, 1);
        let mut b = h.encode().to_vec();
        b.extend_from_slice(&carrier.bytes);
        b.extend_from_slice(&frames_of(&h, &[(1, 1)]));
        // Damage the carrier's header: resync must skip the planted frame.
        b[SEGMENT_HEADER_LEN + 20] ^= 1;
        let s = scan(&b, &h);
        assert_eq!(s.frames.iter().map(|f| f.base_offset).collect::<Vec<_>>(), vec![1]);
        assert_eq!(s.corruptions[0].lost_offsets, (0, 1));
    }

    #[test]
    fn summary_round_trips_and_detects_damage() {
        let h = header(10, 1, false);
        let b = segment_with(&h, &[(10, 2)]);
        let sum = Summary::of(10, &scan(&b, &h));
        assert_eq!(sum.next_offset, 12);
        let mut enc = sum.encode();
        assert_eq!(Summary::decode(&enc), Some(sum));
        enc[9] ^= 1;
        assert_eq!(Summary::decode(&enc), None);
    }
}
