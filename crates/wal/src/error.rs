//! Typed errors of the WAL. The API crate maps them to HTTP answers, in one
//! place (`crates/api/src/error.rs`).
//!
//! No variant holds a formatted message or a stringified error: a cause is
//! kept as the variant's `source` (an `Arc<io::Error>` where one failure
//! reaches every waiter of a commit round), and what it names — a lane, a
//! path, an offset — as a typed field. The one text a variant carries is a
//! panic's message ([`StopReason::Panicked`]): the words of whatever code
//! panicked, which the WAL never formatted and cannot type.
//!
//! A variant's `Display` names its source too (`… : {source}`), so the one
//! line an operator reads (a log, `/readyz`, an HTTP answer) says why
//! without walking the chain.

use crate::lane_id::LaneId;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Why bytes are not a valid frame (or segment header, or summary).
///
/// Reading never fails on these: a frame that does not check out is a torn
/// tail, a stale one or corruption, which recovery handles (see
/// [`crate::segment::scan`]). Appending meets only [`FrameError::EmptyBatch`],
/// [`FrameError::MetaTooLong`] and [`FrameError::RecordTooLarge`], all the
/// caller's to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The buffer ends before the frame (or header) does: a write that was
    /// cut short, or the end of what was read.
    #[error("fewer bytes than the frame needs")]
    Incomplete,
    /// The bytes do not start with the frame's (or segment's) magic: not a
    /// frame at all.
    #[error("no frame magic")]
    BadMagic,
    /// A frame version (or flags) other than its file's format.
    #[error("unsupported frame version {0}")]
    BadVersion(u8),
    /// Length fields that cannot hold (no record, metadata longer than the
    /// body, offsets past `u64::MAX`).
    #[error("length fields out of range")]
    BadLength,
    /// A segment header's or summary's crc32c does not hold.
    #[error("crc32c mismatch")]
    BadCrc,
    /// The frame is not authentic under its file's key: damaged, left by an
    /// earlier use of the file, or bytes that were never a frame.
    #[error("frame authentication failed")]
    BadMac,
    /// A segment written by a format this build does not read.
    #[error("segment format {0} is not the one this build reads")]
    UnsupportedFormat(u16),
    /// The metadata (tenant, topic, idempotency key) does not decode, or a
    /// header field names no priority or shard.
    #[error("malformed batch metadata")]
    BadMeta,
    /// A batch without records: send at least one.
    #[error("a batch needs at least one record")]
    EmptyBatch,
    /// The named metadata field is over 255 bytes: shorten it.
    #[error("{0} longer than 255 bytes")]
    MetaTooLong(&'static str),
    /// A record (or a whole body) does not fit the format's `u32` length:
    /// split it.
    #[error("a record is larger than 4 GiB")]
    RecordTooLarge,
}

/// What a lane's writer was doing when an I/O error failed the lane closed
/// ([`WalError::LaneFailed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneOp {
    /// Writing a commit round's frames.
    Write,
    /// The fdatasync that makes a round durable.
    Sync,
    /// Cutting off (and syncing the cut of) a round refused for lack of
    /// space.
    CutBack,
    /// Rolling to the next segment (its header, syncs, renames).
    Roll,
}

impl fmt::Display for LaneOp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            LaneOp::Write => "write",
            LaneOp::Sync => "fdatasync",
            LaneOp::CutBack => "cutting back a failed write",
            LaneOp::Roll => "roll",
        })
    }
}

/// Why a lane's writer stopped unexpectedly ([`WalError::WriterStopped`]).
/// It always panicked (a bug); what differs is how much a waiter knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The writer panicked with this message. Kept as text because it is
    /// text: what the code that panicked wrote (a failed assertion, a
    /// dependency's panic), not a message the WAL formatted from a value.
    Panicked(String),
    /// The writer panicked during the commit round this append was in: its
    /// answer was given while the thread unwound, before the message was
    /// known.
    PanickedInRound,
    /// The append came while the writer was unwinding a panic whose message
    /// was not known yet.
    Unwinding,
}

impl fmt::Display for StopReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Panicked(message) => write!(formatter, "it panicked: {message}"),
            StopReason::PanickedInRound => formatter.write_str("it panicked during a commit round"),
            StopReason::Unwinding => formatter.write_str("it panicked"),
        }
    }
}

/// Why a WAL operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The lane saw a write, sync or roll error and *failed closed*: nothing
    /// in flight was acknowledged, every waiter of the round and every
    /// append until the lane reopens gets this at once, and the sync is
    /// never retried on the same handle. The writer reopens the lane by
    /// itself (after 500 ms, cutting the segment back to its last
    /// acknowledged byte). The caller retries later (the API answers 503).
    #[error("lane {lane} failed closed after an I/O error ({op} failed on {path}: {source}); it is recovering")]
    LaneFailed {
        /// The lane that failed.
        lane: LaneId,
        /// What its writer was doing.
        op: LaneOp,
        /// The file it was doing it to.
        path: PathBuf,
        /// The I/O error, shared by every waiter that hears of it (as a
        /// source, it downcasts to `Arc<io::Error>`).
        #[source]
        source: Arc<io::Error>,
    },
    /// ENOSPC (or a quota) while writing or rolling: the batch was not
    /// acknowledged and its bytes were cut off again. The lane stays open
    /// and *starves*: every lane gives back the space it keeps for reuse,
    /// and once retention frees space the next append succeeds. The caller
    /// retries after freeing disk space (the API answers 507).
    #[error("no space left on the device holding lane {lane}")]
    NoSpace {
        /// The lane refused.
        lane: LaneId,
        /// The ENOSPC or EDQUOT, shared by every waiter of the round (as a
        /// source, it downcasts to `Arc<io::Error>`).
        #[source]
        source: Arc<io::Error>,
    },
    /// The encoded batch is larger than [`crate::WalOptions::max_frame_bytes`]:
    /// nothing was queued. The caller splits the batch.
    #[error("batch of {len} bytes exceeds the frame limit of {max} bytes")]
    FrameTooLarge {
        /// The batch's encoded length.
        len: usize,
        /// The configured limit.
        max: u32,
    },
    /// The batch could not be encoded as a frame (see [`FrameError`]): the
    /// caller fixes the batch.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] FrameError),
    /// A file operation failed outside a commit round: opening or recovering
    /// the log, reading a segment, deleting released ones, or an offline
    /// tool. What it means depends on the call; at open, the log cannot be
    /// served until the operator fixes the directory.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The lane's writer thread could not be started (the OS refused a
    /// thread): the log does not open. Retry once the process has
    /// resources to spare.
    #[error("could not start the writer thread of lane {lane}: {source}")]
    WriterNotStarted {
        /// The lane without a writer.
        lane: LaneId,
        /// What the OS said.
        source: io::Error,
    },
    /// No such lane in this log (its shard is beyond the configured count
    /// and none is on disk): a caller's bug.
    #[error("unknown lane {0}")]
    UnknownLane(LaneId),
    /// The log is shutting down (or the append's answer was dropped while
    /// it did): nothing more is taken. Not an error to report; the caller
    /// stops.
    #[error("the WAL is shutting down")]
    ShuttingDown,
    /// The lane's writer thread ended without being asked to (it panicked).
    /// Nothing in its last round was acknowledged; every waiter and every
    /// later append of the lane gets this at once, until the log is opened
    /// again (a broker restart), which recovers what was acknowledged. The
    /// caller retries after that restart (the API answers 503).
    #[error(
        "the writer of lane {lane} stopped unexpectedly ({reason}); the lane refuses appends until the broker restarts"
    )]
    WriterStopped {
        /// The lane whose writer stopped.
        lane: LaneId,
        /// How it stopped.
        reason: StopReason,
    },
    /// A read asked for an offset that retention already deleted: the
    /// caller resumes from `earliest`.
    #[error("offset {offset} of lane {lane} is no longer retained (earliest is {earliest})")]
    OffsetGone {
        /// The lane read.
        lane: LaneId,
        /// The offset asked for.
        offset: u64,
        /// The earliest offset the lane still holds.
        earliest: u64,
    },
    /// A frame the index lists no longer checks out when read back: the
    /// file changed under the log (a disk fault, another writer). The read
    /// fails; the next open of the log quarantines the damage
    /// (`broker-admin verify` reports it).
    #[error("corrupt data in {path} at byte {pos}: {what}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where the frame starts in it.
        pos: u64,
        /// What does not check out.
        #[source]
        what: FrameError,
    },
    /// A segment of another on-disk format: the broker never guesses at it
    /// and does not start. Format 1 is converted by `broker-admin migrate`;
    /// a newer one needs the newer build.
    #[error("{path} is in WAL format {version}; this build reads formats 2 to {current}{hint}", hint = if *version == 1 { " (convert it with `broker-admin migrate --data-dir DIR` while the broker is stopped)" } else { " (written by a newer Weir?)" })]
    UnsupportedFormat {
        /// The segment file.
        path: PathBuf,
        /// The format it is in.
        version: u16,
        /// The newest format this build reads (and the one it writes).
        current: u16,
    },
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io { path: path.into(), source }
    }

    /// Whether an I/O error is ENOSPC (or a quota), which the API maps to 507.
    pub(crate) fn is_enospc(err: &io::Error) -> bool {
        matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }
}

/// Why a lane is failed closed: kept until it reopens, and handed to every
/// waiter as [`WalError::LaneFailed`].
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub op: LaneOp,
    pub path: PathBuf,
    pub source: Arc<io::Error>,
}

impl Fault {
    pub fn new(op: LaneOp, path: impl Into<PathBuf>, source: io::Error) -> Fault {
        Fault { op, path: path.into(), source: Arc::new(source) }
    }

    /// The error a waiter of `lane` hears.
    pub fn error(&self, lane: LaneId) -> WalError {
        WalError::LaneFailed { lane, op: self.op, path: self.path.clone(), source: Arc::clone(&self.source) }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} failed on {}: {}", self.op, self.path.display(), self.source)
    }
}

/// The WAL's results.
pub type Result<T, E = WalError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lane_id::Priority;
    use std::error::Error as _;

    const LANE: LaneId = LaneId { priority: Priority::Normal, shard: 0 };

    #[test]
    fn a_failed_lane_keeps_its_io_error_as_the_source_every_waiter_shares() {
        let fault = Fault::new(LaneOp::Sync, "/d/wal/normal/0/1.seg", io::Error::from_raw_os_error(libc::EIO));
        let (a, b) = (fault.error(LANE), fault.error(LANE));
        let WalError::LaneFailed { source, .. } = &a else { panic!("{a:?}") };
        let WalError::LaneFailed { source: other, .. } = &b else { panic!("{b:?}") };
        assert!(Arc::ptr_eq(source, other), "one error, shared");
        let cause = a.source().and_then(|s| s.downcast_ref::<Arc<io::Error>>()).expect("an io::Error source");
        assert_eq!(cause.raw_os_error(), Some(libc::EIO));
        let text = a.to_string();
        assert!(text.starts_with("lane normal/0 failed closed after an I/O error (fdatasync failed on "), "{text}");
        assert!(text.contains("/d/wal/normal/0/1.seg") && text.ends_with("it is recovering"), "{text}");
    }

    #[test]
    fn messages_name_the_lane_and_the_panic() {
        let full = WalError::NoSpace { lane: LANE, source: Arc::new(io::Error::from_raw_os_error(libc::ENOSPC)) };
        assert_eq!(full.to_string(), "no space left on the device holding lane normal/0");
        assert!(full.source().is_some());
        let stopped = WalError::WriterStopped { lane: LANE, reason: StopReason::Panicked("boom".into()) };
        assert!(stopped.to_string().contains("writer of lane normal/0 stopped unexpectedly (it panicked: boom)"));
        let gone = WalError::OffsetGone { lane: LANE, offset: 3, earliest: 7 };
        assert_eq!(gone.to_string(), "offset 3 of lane normal/0 is no longer retained (earliest is 7)");
    }
}
