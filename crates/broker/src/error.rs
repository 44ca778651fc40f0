//! The broker's domain error: what leases, admin actions, maintenance and
//! the server refuse, each variant holding what it is about as typed
//! fields and its cause as `#[source]`; the message is made from them when
//! it is shown. It names no HTTP status: [`crate::http::errors`] is the one
//! place that maps it to the contract's [`protocol::ErrorCode`] and
//! `Retry-After`. The accept path's refusals are [`api::AcceptError`],
//! carried whole in [`BrokerError::Accept`].

use plumbing::reasons::Reason;
use wal::LaneId;

/// A cause kept whole whose type belongs to a layer this module must not
/// name (an HTTP extractor's rejection, a parser's error).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The broker's refusals and failures.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No token, or one the token table does not know: send
    /// `Authorization: Bearer <token>`.
    #[error("missing or unknown bearer token: send `Authorization: Bearer <token>`")]
    Unauthorized,
    /// An admin endpoint was called with another role's token.
    #[error("this endpoint needs the admin token")]
    AdminOnly,
    /// A lease endpoint was called with a token that is no exporter's.
    #[error("lease endpoints need the destination's exporter token")]
    ExporterOnly,
    /// Ingest was called with an exporter's or the admin's token.
    #[error("only tenant tokens may ingest; this is an exporter or admin token")]
    TenantOnly,
    /// An exporter token was used for another destination than its own.
    #[error("this exporter token belongs to destination {token_of:?}, not {asked:?}")]
    WrongDestination { token_of: String, asked: String },
    /// The path names a destination the configuration does not declare.
    #[error("destination {name:?} does not exist")]
    UnknownDestination { name: String },
    /// The lease is not held (expired, rewound or settled): acquire anew.
    #[error("lease {lease:?} is not held: it expired, was rewound or was already settled; acquire a new lease")]
    LeaseNotFound { lease: String },
    /// A commit named a dead letter that is not a record of its lease:
    /// nothing was committed.
    #[error("{named} is not a record of lease {lease} [{from}, {to}); nothing was committed")]
    NotInLease { named: NamedRecord, lease: String, from: u64, to: u64 },
    /// A part of the request (`part`) does not parse.
    #[error("{}", part.describe(source))]
    BadRequest {
        part: RequestPart,
        #[source]
        source: BoxError,
    },
    /// The broker is still recovering its WAL: retry shortly.
    #[error("the broker is recovering its write-ahead log; retry shortly")]
    Recovering,
    /// A connection pool of the caller's role is full (`reason` names it).
    #[error("this client's kind of connection is at its limit ({cap} at once); retry shortly or reuse a connection")]
    Overloaded { reason: Reason, cap: usize },
    /// Reading or retiring a lane failed: a fault, logged and answered 500.
    #[error("lane {lane}: {source}")]
    Wal {
        lane: LaneId,
        #[source]
        source: wal::WalError,
    },
    /// The metadata store failed: a fault, logged and answered 500.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A blocking task ended abnormally: a fault, answered 500.
    #[error("a blocking task ended abnormally: {0}")]
    TaskFailed(#[source] tokio::task::JoinError),
    /// The accept path refused a batch (`api`'s own error and codes).
    #[error(transparent)]
    Accept(#[from] api::AcceptError),
}

/// How a commit named a record its lease does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedRecord {
    /// By its place in the lease.
    Place { index: u64 },
    /// By its place, with an offset the record there does not have.
    PlaceAndOffset { index: u64, offset: u64 },
    /// By its offset alone (an exporter from before places).
    Offset { offset: u64 },
}

impl std::fmt::Display for NamedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamedRecord::Place { index } => write!(f, "dead letter #{index}"),
            NamedRecord::PlaceAndOffset { index, offset } => write!(f, "dead letter #{index} at offset {offset}"),
            NamedRecord::Offset { offset } => write!(f, "dead-letter offset {offset}"),
        }
    }
}

/// Which part of a request did not parse, and what a good one looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestPart {
    /// The path's parameters.
    Path,
    /// A dead-letter listing's query string.
    Query,
    /// A JSON request body.
    Body,
    /// A rewind's body.
    RewindBody,
    /// A lease action in the path.
    LeaseAction,
    /// An admin action in the path.
    AdminAction,
    /// A lane name.
    Lane,
}

impl RequestPart {
    fn describe(self, e: &BoxError) -> String {
        match self {
            RequestPart::Path => format!("request path: {e}"),
            RequestPart::Query => format!("query string: {e}; e.g. ?limit=100"),
            RequestPart::Body => format!("request body: {e}"),
            RequestPart::RewindBody => format!("rewind body: {e}; e.g. {{\"to\":\"earliest\"}}"),
            RequestPart::LeaseAction => format!("{e}: use heartbeat, commit, fail or release"),
            RequestPart::AdminAction => format!("{e}: use pause, resume, reset-breaker, rewind or redrive"),
            RequestPart::Lane => format!("lane: {e}"),
        }
    }
}

impl BrokerError {
    /// A request part that did not parse, its parser's error kept whole.
    pub fn bad(part: RequestPart, source: impl Into<BoxError>) -> BrokerError {
        BrokerError::BadRequest { part, source: source.into() }
    }

    /// The reason `weir_http_refused_total` counts this refusal under, when
    /// it is a cap of the broker's rather than the request's fault.
    pub fn refusal(&self) -> Option<Reason> {
        match self {
            BrokerError::Overloaded { reason, .. } => Some(*reason),
            BrokerError::Accept(e) => e.refusal(),
            _ => None,
        }
    }
}
