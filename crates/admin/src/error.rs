//! Why a `broker-admin` command failed: one enum for the offline tools and
//! the online client, each variant a line an operator can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The data directory has no WAL directory.
    #[error("{data_dir} holds no WAL (no {wal_dir} directory)")]
    NoWal { data_dir: PathBuf, wal_dir: PathBuf },
    /// Reading, recovering or converting the WAL failed.
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    /// A file operation on the data directory failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The command's output could not be written (stdout closed or full).
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
    /// A running broker holds the directory (or its lock cannot be taken).
    #[error("refusing to {action}: {source}")]
    Locked { action: &'static str, source: plumbing::datadir::LockError },
    /// The data directory's id file is unreadable or damaged.
    #[error(transparent)]
    BrokerId(#[from] plumbing::datadir::BrokerIdError),
    /// `--broker` is not a URL.
    #[error("--broker {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The broker could not be reached, or its answer not read.
    #[error("broker unreachable: {0}")]
    Unreachable(String),
    /// The broker refused, with the contract's error body.
    #[error("broker answered {status} {code}: {message}")]
    Refused { status: u16, code: protocol::WireCode, message: String },
    /// The broker refused without an error body.
    #[error("broker answered {status}")]
    RefusedBare { status: u16 },
    /// A 2xx answer that is not the expected JSON.
    #[error("unexpected answer: {0}")]
    Answer(String),
}

impl AdminError {
    pub fn output(e: std::io::Error) -> AdminError {
        AdminError::Output(e)
    }
}
