//! The next segment's file, prepared off the commit path by a helper
//! thread its writer owns, and when a lane's first segment rolls to it
//! (see `writer`, "Idle lanes").

use crate::error::WalError;
use crate::segment_file::Spare;

/// Where a lane's first segment (not preallocated) rolls to a spare: at
/// 1/64 of `segment_bytes`, but not below 256 KiB (or the whole segment,
/// when that is smaller). Its extending writes cost a little more per
/// `fdatasync`, so it is kept short — 256 KiB of 16 MiB — yet a small
/// segment is not cut into slivers.
pub(crate) fn early_roll_at(segment_bytes: u64) -> u64 {
    (segment_bytes / 64).max(segment_bytes.min(256 << 10))
}

/// The next segment's file: being prepared by a helper thread that this
/// writer owns (and joins before it goes), or ready.
pub(crate) enum SpareSlot {
    None,
    Preparing(std::thread::JoinHandle<Result<Spare, WalError>>),
    Ready(Spare),
}

impl SpareSlot {
    /// Wait for the spare, if one is on its way.
    pub(crate) fn take(&mut self, lane: crate::LaneId) -> Option<Spare> {
        let result = match std::mem::replace(self, SpareSlot::None) {
            SpareSlot::None => return None,
            SpareSlot::Ready(spare) => Ok(spare),
            SpareSlot::Preparing(helper) => match helper.join() {
                Ok(prepared) => prepared,
                Err(_) => {
                    tracing::warn!(%lane, "the spare helper panicked; creating a segment inline");
                    return None;
                }
            },
        };
        match result {
            Ok(spare) => Some(spare),
            Err(e) => {
                tracing::warn!(%lane, error = %e, "spare segment not ready; creating one inline");
                None
            }
        }
    }

    /// Whether a roll now would find its spare without waiting.
    pub(crate) fn is_ready(&self) -> bool {
        match self {
            SpareSlot::Ready(_) => true,
            SpareSlot::Preparing(helper) => helper.is_finished(),
            SpareSlot::None => false,
        }
    }
}
