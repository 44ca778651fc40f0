//! Typed errors of the WAL. The API crate maps them to HTTP answers.

use std::io;
use std::path::PathBuf;

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("fewer bytes than the frame needs")]
    Incomplete,
    #[error("no frame magic")]
    BadMagic,
    #[error("unsupported frame version {0}")]
    BadVersion(u8),
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
    #[error("malformed batch metadata")]
    BadMeta,
    #[error("a batch needs at least one record")]
    EmptyBatch,
    #[error("{0} longer than 255 bytes")]
    MetaTooLong(&'static str),
    #[error("a record is larger than 4 GiB")]
    RecordTooLarge,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The lane saw an fsync (or write) error and failed closed. Nothing in
    /// flight was acknowledged; the lane reopens through recovery.
    #[error("lane {lane} failed closed after an I/O error ({reason}); it is recovering")]
    LaneFailed { lane: String, reason: String },
    /// ENOSPC while writing or preallocating; the batch was not acknowledged
    /// and its bytes were cut off again.
    #[error("no space left on the device holding lane {lane}")]
    NoSpace { lane: String },
    #[error("batch of {len} bytes exceeds the frame limit of {max} bytes")]
    FrameTooLarge { len: usize, max: u32 },
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] FrameError),
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("unknown lane {0}")]
    UnknownLane(String),
    #[error("the WAL is shutting down")]
    ShuttingDown,
    /// The lane's writer thread ended without being asked to (it panicked).
    /// Nothing in its last round was acknowledged; every waiter and every
    /// later append of the lane gets this at once, until the log is opened
    /// again (a broker restart), which recovers what was acknowledged.
    #[error(
        "the writer of lane {lane} stopped unexpectedly ({reason}); the lane refuses appends until the broker restarts"
    )]
    WriterStopped { lane: String, reason: String },
    #[error("offset {offset} of lane {lane} is no longer retained (earliest is {earliest})")]
    OffsetGone { lane: String, offset: u64, earliest: u64 },
    #[error("corrupt data in {path} at byte {pos}: {what}")]
    Corrupt { path: PathBuf, pos: u64, what: FrameError },
    /// A segment of another on-disk format: the broker never guesses at it.
    /// Format 1 is converted by `broker-admin migrate`.
    #[error("{path} is in WAL format {version}; this build reads format {current}{hint}", hint = if *version == 1 { " (convert it with `broker-admin migrate --data-dir DIR` while the broker is stopped)" } else { " (written by a newer Weir?)" })]
    UnsupportedFormat { path: PathBuf, version: u16, current: u16 },
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io { path: path.into(), source }
    }

    /// Whether an I/O error is ENOSPC (or a quota), which the API maps to 507.
    pub fn is_enospc(err: &io::Error) -> bool {
        matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;
