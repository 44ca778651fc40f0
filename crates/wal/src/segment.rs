//! Segment files: a 64-byte header, then frames back to back.
//!
//! | at | size | field                                   |
//! |----|------|-----------------------------------------|
//! | 0  | 8    | magic `"WEIRSEG1"`                      |
//! | 8  | 2    | version (1)                             |
//! | 10 | 1    | priority (0 high, 1 normal, 2 low)      |
//! | 11 | 1    | reserved (0)                            |
//! | 12 | 4    | shard                                   |
//! | 16 | 8    | base offset                             |
//! | 24 | 4    | crc32c of bytes 0..24                   |
//! | 28 | 36   | reserved (0)                            |
//!
//! [`scan`] is a pure function over a segment's bytes: it finds every valid
//! frame and classifies what is not valid. The recovery rules stand on it:
//! - zeros, or an invalid frame with no valid frame after it, form a tail the
//!   last write tore (or preallocation left): cut it off;
//! - an invalid frame *followed by* a valid one is corruption of bytes that
//!   were once durable: the segment is quarantined and its valid frames kept.

use crate::error::FrameError;
use crate::frame::{check_frame, HEADER_LEN, MAGIC};
use crate::lane_id::{LaneId, Priority};

pub const SEGMENT_MAGIC: &[u8; 8] = b"WEIRSEG1";
pub const SEGMENT_HEADER_LEN: usize = 64;
pub const SEGMENT_EXT: &str = "seg";
pub const SUMMARY_EXT: &str = "sum";

pub fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.{SEGMENT_EXT}")
}

pub fn encode_header(lane: LaneId, base_offset: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..10].copy_from_slice(&1u16.to_le_bytes());
    h[10] = lane.priority as u8;
    h[12..16].copy_from_slice(&u32::from(lane.shard).to_le_bytes());
    h[16..24].copy_from_slice(&base_offset.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Parse a segment header: (lane, base offset).
pub fn decode_header(b: &[u8]) -> Result<(LaneId, u64), FrameError> {
    if b.len() < SEGMENT_HEADER_LEN {
        return Err(FrameError::Incomplete);
    }
    if &b[0..8] != SEGMENT_MAGIC {
        return Err(FrameError::BadMagic);
    }
    let crc = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
    if crc != crc32c::crc32c(&b[0..24]) {
        return Err(FrameError::BadCrc);
    }
    if u16::from_le_bytes([b[8], b[9]]) != 1 {
        return Err(FrameError::BadVersion(b[8]));
    }
    let priority = Priority::from_index(b[10]).ok_or(FrameError::BadMeta)?;
    let shard = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    let shard = u16::try_from(shard).map_err(|_| FrameError::BadMeta)?;
    let mut base = [0u8; 8];
    base.copy_from_slice(&b[16..24]);
    Ok((LaneId { priority, shard }, u64::from_le_bytes(base)))
}

/// Where one valid frame sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLoc {
    pub base_offset: u64,
    pub records: u32,
    pub pos: u64,
    pub len: u32,
    pub ts_ms: u64,
}

impl FrameLoc {
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.records)
    }
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
    Zeros { at: u64 },
    /// An incomplete or invalid frame with nothing valid after it.
    Torn { at: u64, what: FrameError },
    /// What follows is left over from the file's earlier life as an older
    /// segment of the same lane (see `docs/wal.md`, recycling): it holds frames
    /// with offsets below this segment's base. A write torn over such bytes
    /// looks the same and is cut the same way.
    Stale { at: u64 },
}

/// A damaged region followed by valid frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corruption {
    pub at: u64,
    pub what: FrameError,
    /// Where the next valid frame starts.
    pub resumes_at: u64,
    /// Offsets lost with the damaged bytes: [from, to).
    pub lost_offsets: (u64, u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub frames: Vec<FrameLoc>,
    /// End of the last valid frame (or of the header).
    pub valid_end: u64,
    pub tail: Tail,
    pub corruptions: Vec<Corruption>,
}

impl Scan {
    pub fn next_offset(&self, base_offset: u64) -> u64 {
        self.frames.last().map_or(base_offset, FrameLoc::next_offset)
    }
    pub fn records(&self) -> u64 {
        self.frames.iter().map(|f| u64::from(f.records)).sum()
    }
}

/// Classify every byte after the segment header of `bytes`.
pub fn scan(bytes: &[u8], base_offset: u64, max_body: u32) -> Scan {
    let mut frames = Vec::new();
    let mut corruptions = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN.min(bytes.len());
    let mut expected = base_offset;
    let tail = loop {
        if pos == bytes.len() {
            break Tail::Clean;
        }
        let what = match check_frame(&bytes[pos..], max_body) {
            // Offsets may jump forward (records lost to an earlier quarantine),
            // never back: stale bytes always carry lower offsets.
            Ok(h) if h.base_offset >= expected => {
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
            Ok(h) if h.base_offset < base_offset => break Tail::Stale { at: pos as u64 },
            Ok(_) => FrameError::BadMeta,
            Err(e) => e,
        };
        if bytes[pos..].iter().all(|&b| b == 0) {
            break Tail::Zeros { at: pos as u64 };
        }
        match find_next_valid(bytes, pos + 1, expected, base_offset, max_body) {
            NextValid::Found(next, next_base) => {
                corruptions.push(Corruption {
                    at: pos as u64,
                    what,
                    resumes_at: next as u64,
                    lost_offsets: (expected, next_base),
                });
                pos = next;
                expected = next_base;
            }
            NextValid::OnlyStale => break Tail::Stale { at: pos as u64 },
            NextValid::Nothing => break Tail::Torn { at: pos as u64, what },
        }
    };
    let valid_end = frames.last().map_or(SEGMENT_HEADER_LEN.min(bytes.len()) as u64, FrameLoc::end);
    Scan { frames, valid_end, tail, corruptions }
}

enum NextValid {
    /// (position, base offset) of the next frame whose offset does not go backwards.
    Found(usize, u64),
    /// No such frame, but frames older than the segment itself: recycled bytes.
    OnlyStale,
    Nothing,
}

/// Search from `from` for a valid frame whose offset does not go backwards
/// (at least `min_offset`), noting stale frames (below `segment_base`) seen.
fn find_next_valid(bytes: &[u8], from: usize, min_offset: u64, segment_base: u64, max_body: u32) -> NextValid {
    let magic = MAGIC.to_le_bytes();
    let mut stale = false;
    let mut at = from;
    while at + HEADER_LEN <= bytes.len() {
        if bytes[at..at + 4] == magic {
            if let Ok(h) = check_frame(&bytes[at..], max_body) {
                if h.base_offset >= min_offset {
                    return NextValid::Found(at, h.base_offset);
                }
                stale |= h.base_offset < segment_base;
            }
        }
        at += 1;
    }
    if stale {
        NextValid::OnlyStale
    } else {
        NextValid::Nothing
    }
}

/// Derived per-segment summary, written beside a sealed segment. Recovery
/// rebuilds it from the segment whenever it is missing or disagrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub base_offset: u64,
    pub next_offset: u64,
    pub records: u64,
    pub bytes: u64,
    pub first_ts_ms: u64,
    pub last_ts_ms: u64,
}

const SUMMARY_MAGIC: &[u8; 8] = b"WEIRSUM1";
pub const SUMMARY_LEN: usize = 8 + 6 * 8 + 4;

impl Summary {
    pub fn of(base_offset: u64, scan: &Scan) -> Summary {
        Summary::from_frames(base_offset, scan.valid_end, &scan.frames)
    }

    pub fn from_frames(base_offset: u64, bytes: u64, frames: &[FrameLoc]) -> Summary {
        Summary {
            base_offset,
            next_offset: frames.last().map_or(base_offset, FrameLoc::next_offset),
            records: frames.iter().map(|f| u64::from(f.records)).sum(),
            bytes,
            first_ts_ms: frames.first().map_or(0, |f| f.ts_ms),
            last_ts_ms: frames.last().map_or(0, |f| f.ts_ms),
        }
    }

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

    pub fn decode(b: &[u8]) -> Option<Summary> {
        if b.len() != SUMMARY_LEN || &b[0..8] != SUMMARY_MAGIC {
            return None;
        }
        let crc = u32::from_le_bytes(b[SUMMARY_LEN - 4..].try_into().ok()?);
        if crc != crc32c::crc32c(&b[..SUMMARY_LEN - 4]) {
            return None;
        }
        let f = |i: usize| u64::from_le_bytes(b[8 + i * 8..16 + i * 8].try_into().unwrap_or([0; 8]));
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

    fn segment_with(frames: &[(u64, u32)]) -> Vec<u8> {
        let lane = LaneId { priority: Priority::Normal, shard: 1 };
        let mut b = encode_header(lane, frames.first().map_or(0, |f| f.0)).to_vec();
        let meta = BatchMeta { tenant: "t".into(), topic: "e".into(), idempotency_key: None };
        for &(base, n) in frames {
            let recs: Vec<Vec<u8>> = (0..n).map(|i| vec![b'a' + i as u8; 700]).collect();
            let mut f = EncodedBatch::new(&meta, &recs).unwrap();
            f.seal(base, 1);
            b.extend_from_slice(&f.bytes);
        }
        b
    }

    #[test]
    fn header_round_trips_and_zero_header_is_rejected() {
        let lane = LaneId { priority: Priority::Low, shard: 3 };
        assert_eq!(decode_header(&encode_header(lane, 99)), Ok((lane, 99)));
        assert!(decode_header(&[0u8; 64]).is_err());
    }

    #[test]
    fn preallocated_zeros_after_frames_are_a_zero_tail() {
        let mut b = segment_with(&[(0, 2), (2, 1)]);
        let end = b.len() as u64;
        b.resize(b.len() + 4096, 0);
        let s = scan(&b, 0, 1 << 20);
        assert_eq!((s.frames.len(), s.valid_end, s.tail), (2, end, Tail::Zeros { at: end }));
    }

    #[test]
    fn half_written_last_frame_is_a_torn_tail() {
        let b = segment_with(&[(0, 2), (2, 3)]);
        let s = scan(&b[..b.len() - 100], 0, 1 << 20);
        assert_eq!(s.frames.len(), 1);
        assert!(matches!(s.tail, Tail::Torn { what: FrameError::Incomplete, .. }));
        assert!(s.corruptions.is_empty());
    }

    #[test]
    fn flipped_byte_before_valid_frames_is_corruption_not_a_torn_tail() {
        let mut b = segment_with(&[(0, 2), (2, 3), (5, 1)]);
        let clean = scan(&b, 0, 1 << 20);
        let second = clean.frames[1];
        b[second.pos as usize + 200] ^= 0xff;
        let s = scan(&b, 0, 1 << 20);
        assert_eq!(s.tail, Tail::Clean);
        assert_eq!(s.frames.iter().map(|f| f.base_offset).collect::<Vec<_>>(), vec![0, 5]);
        assert_eq!(s.corruptions.len(), 1);
        assert_eq!(s.corruptions[0].at, second.pos);
        assert_eq!(s.corruptions[0].lost_offsets, (2, 5));
    }

    #[test]
    fn stale_frames_of_a_recycled_segment_are_a_stale_tail_not_data_or_corruption() {
        // An old segment (offsets 0..6) reused for the segment starting at 100.
        let old = segment_with(&[(0, 2), (2, 3), (5, 1)]);
        let new = segment_with(&[(100, 1)]);
        let mut b = old.clone();
        b[..new.len()].copy_from_slice(&new);
        let s = scan(&b, 100, 1 << 20);
        assert_eq!(s.frames.iter().map(|f| f.base_offset).collect::<Vec<_>>(), vec![100]);
        assert!(matches!(s.tail, Tail::Stale { at } if at == new.len() as u64), "{:?}", s.tail);
        assert!(s.corruptions.is_empty());
        // New bytes ending exactly where an old frame starts.
        let mut b = new.clone();
        b.extend_from_slice(&old[SEGMENT_HEADER_LEN..]);
        let s = scan(&b, 100, 1 << 20);
        assert_eq!(s.frames.len(), 1);
        assert_eq!(s.tail, Tail::Stale { at: new.len() as u64 });
    }

    #[test]
    fn summary_round_trips_and_detects_damage() {
        let b = segment_with(&[(10, 2)]);
        let sum = Summary::of(10, &scan(&b, 10, 1 << 20));
        assert_eq!(sum.next_offset, 12);
        let mut enc = sum.encode();
        assert_eq!(Summary::decode(&enc), Some(sum));
        enc[9] ^= 1;
        assert_eq!(Summary::decode(&enc), None);
    }
}
