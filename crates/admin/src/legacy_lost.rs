//! What a quarantined file lost, in offsets — including the format-1
//! originals that `migrate` keeps aside (`quarantine/<lane>/<name>.v1.<n>`).
//!
//! Why here: `wal::inspect` reads such a copy as a current-format segment whose
//! header is unusable and names its loss from the base in its file name
//! (offset 0 for the first segment), which is served — the converted frames
//! stayed in the live log. The true loss starts where the conversion
//! stopped: after the last format-1 frame read in order from the header,
//! exactly as `wal::legacy` reads them. It ends at the next live segment's
//! base when there is one (offsets are contiguous across segments), else
//! after the last frame that still checks out past the damage (format 1 is
//! frozen; its frames carry a crc32c, not a MAC, so this bound is the
//! file's claim — the copy is kept whole for the operator).

use std::path::Path;
use wal::inspect::SegmentReport;
use wal::LaneId;

const SEGMENT_MAGIC: &[u8; 8] = b"WEIRSEG1";
const SEGMENT_HEADER_LEN: usize = 64;
const V1_FRAME_MAGIC: u32 = 0x3146_5257;
const V1_HEADER_LEN: usize = 36;

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// A format-1 segment's base offset, if `bytes` starts with a valid format-1 header.
fn v1_base(bytes: &[u8]) -> Option<u64> {
    let header = bytes.get(..SEGMENT_HEADER_LEN)?;
    let ok = &header[0..8] == SEGMENT_MAGIC
        && u16::from_le_bytes([header[8], header[9]]) == 1
        && u32_at(header, 24)? == crc32c::crc32c(&header[0..24]);
    ok.then(|| u64_at(header, 16)).flatten()
}

/// A format-1 frame at `bytes[0]` that checks out: (records, base offset, frame length).
fn v1_frame(bytes: &[u8]) -> Option<(u32, u64, usize)> {
    let h = bytes.get(..V1_HEADER_LEN)?;
    if u32_at(h, 0)? != V1_FRAME_MAGIC || h[4] != 1 || h[5] != 0 {
        return None;
    }
    let (meta_len, records, body_len) = (u16::from_le_bytes([h[6], h[7]]), u32_at(h, 8)?, u32_at(h, 12)? as usize);
    if records == 0 || usize::from(meta_len) > body_len {
        return None;
    }
    let body = bytes.get(V1_HEADER_LEN..V1_HEADER_LEN.checked_add(body_len)?)?;
    let crc = crc32c::crc32c_append(crc32c::crc32c(body), &h[0..32]);
    (crc == u32_at(h, 32)?).then(|| Some((records, u64_at(h, 16)?, V1_HEADER_LEN + body_len))).flatten()
}

/// The offsets `[from, to)` a kept-aside format-1 copy holds that were not
/// converted; `None` when `bytes` is not a format-1 segment. `next_base`:
/// the base of the lane's next live segment, if any.
fn v1_lost(bytes: &[u8], next_base: Option<u64>) -> Option<(u64, Option<u64>)> {
    let base = v1_base(bytes)?;
    let (mut pos, mut from) = (SEGMENT_HEADER_LEN, base);
    while let Some((records, frame_base, len)) = bytes.get(pos..).and_then(v1_frame) {
        if frame_base < from {
            break;
        }
        pos += len;
        from = frame_base + u64::from(records);
    }
    if let Some(next) = next_base.filter(|&n| n > from) {
        return Some((from, Some(next)));
    }
    // The last frame past the damage that still checks out.
    let end = (pos + 1..bytes.len())
        .filter_map(|at| bytes.get(at..).and_then(v1_frame))
        .filter(|&(_, frame_base, _)| frame_base >= from)
        .map(|(records, frame_base, _)| frame_base.saturating_add(u64::from(records)))
        .max();
    Some((from, end))
}

/// The base of the first live segment of `lane` above `base`.
fn next_live_base(reps: &[SegmentReport], lane: LaneId, base: u64) -> Option<u64> {
    reps.iter().filter(|s| !s.quarantined && s.lane == lane && s.base_offset > base).map(|s| s.base_offset).min()
}

/// The offset ranges `[from, to)` quarantined file `quarantined` lost (`to`
/// is `None` when its end is unknown). `reps`: every segment of the data
/// directory.
pub(crate) fn lost_offsets(reps: &[SegmentReport], quarantined: &SegmentReport) -> Vec<(u64, Option<u64>)> {
    let lane = quarantined.lane;
    if quarantined.header_error.is_some() {
        if let Some(lost) = read(&quarantined.path).and_then(|b| {
            let next = v1_base(&b).and_then(|base| next_live_base(reps, lane, base));
            v1_lost(&b, next)
        }) {
            return if lost.1.is_some_and(|to| to <= lost.0) { Vec::new() } else { vec![lost] };
        }
    }
    quarantined
        .lost_offsets()
        .into_iter()
        .map(|(from, to)| (from, to.or_else(|| next_live_base(reps, lane, from))))
        .collect()
}

/// The file's bytes; `None` when it cannot be read (then the WAL's own
/// reading of it stands).
fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(rec: &[u8], offset: u64) -> Vec<u8> {
        let mut body = vec![0u8, 0, 0];
        let meta_len = body.len() as u16;
        body.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        body.extend_from_slice(rec);
        let mut h = vec![0u8; V1_HEADER_LEN];
        h[0..4].copy_from_slice(&V1_FRAME_MAGIC.to_le_bytes());
        h[4] = 1;
        h[6..8].copy_from_slice(&meta_len.to_le_bytes());
        h[8..12].copy_from_slice(&1u32.to_le_bytes());
        h[12..16].copy_from_slice(&(body.len() as u32).to_le_bytes());
        h[16..24].copy_from_slice(&offset.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&body), &h[0..32]);
        h[32..36].copy_from_slice(&crc.to_le_bytes());
        h.extend_from_slice(&body);
        h
    }

    fn segment(base: u64, frames: u64) -> (Vec<u8>, Vec<usize>) {
        let mut s = vec![0u8; SEGMENT_HEADER_LEN];
        s[0..8].copy_from_slice(SEGMENT_MAGIC);
        s[8..10].copy_from_slice(&1u16.to_le_bytes());
        s[16..24].copy_from_slice(&base.to_le_bytes());
        let crc = crc32c::crc32c(&s[0..24]);
        s[24..28].copy_from_slice(&crc.to_le_bytes());
        let mut at = Vec::new();
        for i in 0..frames {
            at.push(s.len());
            s.extend_from_slice(&frame(b"{}", base + i));
        }
        s.resize(s.len() + 128, 0);
        (s, at)
    }

    #[test]
    fn the_loss_starts_where_the_conversion_stopped_and_ends_at_the_next_segment_or_last_good_frame() {
        let (mut s, at) = segment(10, 4);
        s[at[1] + V1_HEADER_LEN + 2] ^= 0xff;
        assert_eq!(v1_lost(&s, None), Some((11, Some(14))), "frames 12 and 13 still check out");
        assert_eq!(v1_lost(&s, Some(20)), Some((11, Some(20))), "the next segment bounds it");
        // Damage in the last frame and nothing after: the end is unknown.
        let (mut s, at) = segment(0, 3);
        s[at[2] + 40] ^= 0xff;
        assert_eq!(v1_lost(&s, None), Some((2, None)));
        assert_eq!(v1_lost(b"WEIRSEG2 not format 1", None), None);
    }
}
