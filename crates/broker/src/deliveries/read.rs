//! The WAL read of a lease: the records of a range of one lane that go to
//! a destination, within the lease's limits. A lease may end inside a
//! frame (ranges are by record), so one huge batch never becomes one huge
//! lease; it holds at least one record, whatever its size.

use super::Deliveries;
use crate::destination::Destination;
use crate::error::BrokerError;
use crate::leased::LeasedRecord;
use std::ops::ControlFlow;
use wal::LaneId;

impl Deliveries {
    /// Records of [from, to) of a lane that go to `dest`, record by record
    /// up to the limits (`max_records`, `max_bytes`; at least one). Returns
    /// them and the end of what was read: records of other destinations in
    /// the range are read past, not returned.
    pub(super) fn read_matching(
        &self,
        dest: &Destination,
        lane_id: LaneId,
        from: u64,
        to: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<(Vec<LeasedRecord>, u64), BrokerError> {
        let lane = self.wal.lane(lane_id).map_err(|e| BrokerError::Internal(e.to_string()))?;
        let mut out = Vec::new();
        let (mut n, mut bytes, mut end) = (0usize, 0usize, from);
        lane.visit_frames(from, |f| {
            if f.header.base_offset >= to {
                return ControlFlow::Break(());
            }
            let wanted = dest.wants(f.tenant, f.topic);
            // A lease may end inside a frame: one huge batch never becomes
            // one huge lease. At least one record, whatever its size.
            for (off, rec) in f.records() {
                if off < from || off >= to {
                    continue;
                }
                if n > 0 && (n >= max_records || bytes + rec.len() > max_bytes) {
                    return ControlFlow::Break(());
                }
                n += 1;
                bytes += rec.len();
                end = off + 1;
                if wanted {
                    out.push(LeasedRecord {
                        lane: None,
                        offset: off,
                        tenant: f.tenant.to_string(),
                        topic: f.topic.to_string(),
                        ts_ms: f.header.ts_ms,
                        payload: rec.to_vec(),
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
        .map_err(|e| BrokerError::Internal(format!("reading lane {lane_id} for {}: {e}", dest.name)))?;
        Ok((out, end))
    }
}
