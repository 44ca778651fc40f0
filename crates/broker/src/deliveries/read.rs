//! The WAL read of a lease: the records of a range of one lane that go to
//! a destination, within the lease's limits. A lease may end inside a
//! frame (ranges are by record), so one huge batch never becomes one huge
//! lease; it holds at least one record, whatever its size.

use super::Deliveries;
use crate::destination::Destination;
use crate::error::BrokerError;
use crate::fair::Cover;
use crate::leased::LeasedRecord;
use bytes::Bytes;
use std::ops::{ControlFlow, Range};
use std::sync::Arc;
use wal::LaneId;

/// Frames a read of new data passes at most (see `read_matching`).
const NEW_DATA_FRAMES: usize = 1024;

impl Deliveries {
    /// Records of [from, to) of a lane that go to `dest` and that `cover`
    /// holds, record by record up to the limits (`max_records`,
    /// `max_bytes`; at least one). Returns them and the end of what was
    /// read: other records in the range are read past, not returned.
    pub(super) fn read_matching(
        &self,
        dest: &Destination,
        (lane_id, cover): (LaneId, &Cover),
        from: u64,
        to: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<(Vec<LeasedRecord>, u64), BrokerError> {
        let lane = self.wal.lane(lane_id).map_err(|source| BrokerError::Wal { lane: lane_id, source })?;
        let mut picked: Vec<Picked> = Vec::new();
        let mut arena: Vec<u8> = Vec::new();
        let mut names = Names::default();
        let (mut n, mut bytes, mut end) = (0usize, 0usize, from);
        // A read of new data (bounded limits) passes at most this many
        // frames: a floor lease over records handed out ahead, or over
        // another destination's, ends where the read stopped. A range read
        // again whole (limits unbounded) is never cut.
        let mut frames_left = if max_records == usize::MAX { usize::MAX } else { NEW_DATA_FRAMES };
        lane.visit_frames(from, |f| {
            if f.header.base_offset >= to || frames_left == 0 {
                return ControlFlow::Break(());
            }
            frames_left -= 1;
            if cover.tenant().is_some_and(|t| **t != *f.tenant) {
                end = end.max(f.header.next_offset().min(to));
                return ControlFlow::Continue(());
            }
            let wanted = dest.wants(f.tenant, f.topic).then(|| names.of(f.tenant, f.topic));
            // A lease may end inside a frame: one huge batch never becomes
            // one huge lease. At least one record, whatever its size.
            for (off, rec) in f.records() {
                if off < from || off >= to {
                    continue;
                }
                if !cover.holds(f.tenant, off) {
                    continue;
                }
                if n > 0 && (n >= max_records || bytes + rec.len() > max_bytes) {
                    return ControlFlow::Break(());
                }
                n += 1;
                bytes += rec.len();
                end = off + 1;
                if let Some((tenant, topic)) = &wanted {
                    let at = arena.len();
                    arena.extend_from_slice(rec);
                    picked.push(Picked {
                        offset: off,
                        ts_ms: f.header.ts_ms,
                        tenant: tenant.clone(),
                        topic: topic.clone(),
                        payload: at..arena.len(),
                    });
                }
            }
            // The frame's records past `to` (or none) are not this read's.
            end = end.max(f.header.next_offset().min(to));
            if n >= max_records || bytes >= max_bytes {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .map_err(|source| BrokerError::Wal { lane: lane_id, source })?;
        let arena = Bytes::from(arena);
        let out = picked
            .into_iter()
            .map(|p| LeasedRecord {
                lane: None,
                offset: p.offset,
                tenant: p.tenant,
                topic: p.topic,
                ts_ms: p.ts_ms,
                payload: arena.slice(p.payload),
            })
            .collect();
        Ok((out, end))
    }
}

/// A record chosen by a read, its payload a range of the read's buffer.
struct Picked {
    offset: u64,
    ts_ms: u64,
    tenant: Arc<str>,
    topic: Arc<str>,
    payload: Range<usize>,
}

/// The names of the frames read, shared between their records: a new
/// allocation only when a frame's tenant or topic differs from the last.
#[derive(Default)]
struct Names {
    tenant: Option<Arc<str>>,
    topic: Option<Arc<str>>,
}

impl Names {
    fn of(&mut self, tenant: &str, topic: &str) -> (Arc<str>, Arc<str>) {
        let t = match &self.tenant {
            Some(t) if &**t == tenant => t.clone(),
            _ => self.tenant.insert(Arc::from(tenant)).clone(),
        };
        let p = match &self.topic {
            Some(p) if &**p == topic => p.clone(),
            _ => self.topic.insert(Arc::from(topic)).clone(),
        };
        (t, p)
    }
}
