//! Why a `broker-admin` command failed: one enum for the offline tools and
//! the online client, each variant a line an operator can act on, and the
//! one mapping from it to the process's exit code ([`AdminError::exit_code`]).

use std::path::PathBuf;

/// What `reqwest::Url::parse` refuses a `--broker` value with.
type UrlError = <reqwest::Url as std::str::FromStr>::Err;

/// Why a command failed. `broker-admin` prints it as one line after
/// `broker-admin: ` and exits with [`AdminError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The data directory has no WAL directory: the wrong `--data-dir`, or
    /// a broker never started there. Check the path.
    #[error("{} holds no WAL (no {} directory)", data_dir.display(), wal_dir.display())]
    NoWal {
        /// `--data-dir`.
        data_dir: PathBuf,
        /// Where its WAL would be.
        wal_dir: PathBuf,
    },
    /// Reading, recovering or converting the WAL failed; the message says
    /// what and where (`wal::WalError` documents each case).
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    /// A file operation on the data directory failed (`repair
    /// --discard-quarantine` removing a segment or syncing its directory).
    /// Check permissions and the disk, then run it again.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system answered.
        source: std::io::Error,
    },
    /// The command's output could not be written (stdout closed or full).
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
    /// A running broker holds the directory (or its lock cannot be taken):
    /// stop the broker first.
    #[error("refusing to {action}: {source}")]
    Locked {
        /// The command refused (`repair`, `migrate`).
        action: &'static str,
        /// Why the lock could not be taken.
        source: plumbing::datadir::LockError,
    },
    /// The data directory's id file is unreadable or damaged; the message
    /// says how to restore it.
    #[error(transparent)]
    BrokerId(#[from] plumbing::datadir::BrokerIdError),
    /// `--lane` is not a lane name (`normal/0`). Bad usage: exit 2.
    #[error("--lane: {0}")]
    BadLane(#[source] wal::lane_id::ParseLaneError),
    /// `rewind` was given none of `--earliest`, `--offset`, `--timestamp`.
    /// Bad usage: exit 2.
    #[error("rewind needs exactly one of --earliest, --offset, --timestamp")]
    RewindTarget,
    /// `--broker` is not a URL. Give one such as `http://127.0.0.1:7070`.
    #[error("--broker {url:?}: {source}")]
    BadUrl {
        /// `--broker` as given.
        url: String,
        /// Why it does not parse.
        source: UrlError,
    },
    /// The async runtime of the online commands could not start (out of
    /// threads or file descriptors).
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A TLS file (`--ca-file`, `--client-cert`, `--client-key`) could not
    /// be read.
    #[error("--{flag} {}: {source}", path.display())]
    TlsFile {
        /// The flag naming it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file is not PEM of the kind needed (certificates; a
    /// certificate and its private key). The message never holds the key.
    #[error("--{flag} {}: not PEM of the kind needed", path.display())]
    TlsPem {
        /// The flag naming it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP client could not be built (its TLS backend failed to load).
    #[error("broker unreachable: http client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The broker could not be reached, or its answer not read: check
    /// `--broker`, the network, and that the broker runs.
    #[error("broker unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The broker refused, with the contract's error body (its message is
    /// the broker's text). Act on the code: a wrong `--token`, an unknown
    /// destination, ...
    #[error("broker answered {status} {code}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The contract's error code.
        code: protocol::WireCode,
        /// The broker's message.
        message: String,
    },
    /// The broker refused without an error body (a proxy in between, or
    /// not a Weir broker at `--broker`).
    #[error("broker answered {status}")]
    RefusedBare {
        /// The HTTP status.
        status: u16,
    },
    /// A 2xx answer that is not the expected JSON: `--broker` is not a Weir
    /// broker, or one of another version.
    #[error("unexpected answer: {0}")]
    Answer(#[source] serde_json::Error),
    /// `verify` found problems (it printed each one above): exit 1. Run
    /// `broker-admin repair` with the broker stopped.
    #[error("verify: {count} problem(s) found; run `broker-admin repair` with the broker stopped")]
    VerifyProblems {
        /// How many it printed.
        count: usize,
    },
    /// `migrate` left records it could not convert aside (it printed where):
    /// exit 1, so that a script does not start the broker after it.
    #[error("migrate: {segments} segment(s) kept records it could not convert aside; read the lines above and `broker-admin verify` before starting the broker")]
    KeptAside {
        /// Segments whose original was kept aside.
        segments: usize,
    },
}

impl AdminError {
    /// The process's exit code for this error: 2 for bad usage, 1 for a
    /// problem found or a failure (the contract's codes; 0 is success).
    pub fn exit_code(&self) -> i32 {
        match self {
            AdminError::BadLane(_)
            | AdminError::RewindTarget
            | AdminError::TlsFile { .. }
            | AdminError::TlsPem { .. } => 2,
            AdminError::NoWal { .. }
            | AdminError::Wal(_)
            | AdminError::Io { .. }
            | AdminError::Output(_)
            | AdminError::Locked { .. }
            | AdminError::BrokerId(_)
            | AdminError::BadUrl { .. }
            | AdminError::Runtime(_)
            | AdminError::HttpClient(_)
            | AdminError::Unreachable(_)
            | AdminError::Refused { .. }
            | AdminError::RefusedBare { .. }
            | AdminError::Answer(_)
            | AdminError::VerifyProblems { .. }
            | AdminError::KeptAside { .. } => 1,
        }
    }
}
