//! Why a configuration is refused: [`ConfigError`], one variant per
//! problem, each holding what it is about as typed fields (the key, the
//! value, the allowed range, the file, the underlying error as its
//! `source`). Its `Display` is the one line the broker prints before it
//! exits 2 (and `--check-config` prints); callers that only report the
//! error print it, callers that act on it match the variant.

use crate::tokens::TokenError;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where a numeric key lives: at the top of the file, or in one tenant's
/// or destination's section. Displays as the key's name, prefixed with
/// its section (`tenant "acme": rate_per_sec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigKey {
    /// A key at the top of the file (`max_lease_bytes`).
    Top(&'static str),
    /// A key of the `[[tenant]]` named `tenant`.
    Tenant {
        /// The tenant's `name`.
        tenant: String,
        /// The key within its section.
        key: &'static str,
    },
    /// A key of the `[[destination]]` named `destination`.
    Destination {
        /// The destination's `name`.
        destination: String,
        /// The key within its section.
        key: &'static str,
    },
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigKey::Top(key) => out.write_str(key),
            ConfigKey::Tenant { tenant, key } => write!(out, "tenant {tenant:?}: {key}"),
            ConfigKey::Destination { destination, key } => write!(out, "destination {destination:?}: {key}"),
        }
    }
}

/// The key that holds a token: the admin's, a tenant's or a destination's
/// (its exporters'). Displays as the operator finds it in the file
/// (`admin_token`, `tenant "acme" token`); never shows the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOwner {
    /// `admin_token`.
    Admin,
    /// The `token` of the `[[tenant]]` with this name.
    Tenant(String),
    /// The `token` of the `[[destination]]` with this name.
    Destination(String),
}

impl fmt::Display for TokenOwner {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenOwner::Admin => out.write_str("admin_token"),
            TokenOwner::Tenant(name) => write!(out, "tenant {name:?} token"),
            TokenOwner::Destination(name) => write!(out, "destination {name:?} token"),
        }
    }
}

/// A configuration problem: the broker prints it as one line and exits 2
/// (the contract's bad-config code); nothing has started. Each variant
/// says when it happens and what the operator does about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be opened or read (missing, unreadable,
    /// permissions). Check the `--config` path and its permissions.
    #[error("{}", OneLine(format_args!("cannot read config {}: {source}", path.display())))]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than `max` (4 MiB): most likely not
    /// a configuration at all (`/dev/zero`, a log). Name the right file.
    #[error("{}", OneLine(format_args!("config {}: larger than {max} bytes; is this the right file?", path.display())))]
    TooLarge {
        /// The file named by `--config`.
        path: PathBuf,
        /// The most bytes read.
        max: u64,
    },
    /// The file is not UTF-8 text. Name the right file, or re-save it as UTF-8.
    #[error("{}", OneLine(format_args!("config {}: not UTF-8 text", path.display())))]
    NotText {
        /// The file named by `--config`.
        path: PathBuf,
    },
    /// The text is not TOML of the configuration's shape: a syntax error,
    /// an unknown key (the message lists the expected ones), a value of
    /// the wrong type, a required key missing. Fix the line it names.
    #[error("config{}: {}", AtLine(*line), plumbing::env_vars::quoted_redacted(source.message()))]
    Parse {
        /// The 1-based line the problem starts on, when the parser knows it.
        line: Option<usize>,
        /// The parser's error.
        #[source]
        source: toml::de::Error,
    },
    /// `listen` is not an `IP:PORT` address (a host name is not resolved).
    /// Write an address such as `0.0.0.0:7070`.
    #[error("listen: {value:?} is not an IP:PORT address")]
    ListenAddress {
        /// `listen` as written (or as `--listen` gave it).
        value: String,
        /// Why it does not parse.
        #[source]
        source: std::net::AddrParseError,
    },
    /// `otlp_grpc_listen` is neither `off` nor an `IP:PORT` address.
    #[error("otlp_grpc_listen: {value:?} is neither off nor an IP:PORT address")]
    OtlpGrpcListenAddress {
        /// `otlp_grpc_listen` as written (or as `--otlp-grpc-listen` gave it).
        value: String,
        /// Why it does not parse.
        #[source]
        source: std::net::AddrParseError,
    },
    /// A development token (`dev-token`, `dev-exporter`, `dev-admin`) is
    /// configured while `listen` is not a loopback address: anyone who can
    /// reach the port would know it. Replace it with a secret.
    #[error("listen: refusing non-loopback address {listen} while a development token is in use")]
    DevTokenOnPublicAddress {
        /// The public address.
        listen: SocketAddr,
    },
    /// A token is empty or a malformed `sha256:` digest. Fix the key it names.
    #[error("{owner}: {source}")]
    Token {
        /// The key that holds it.
        owner: TokenOwner,
        /// What is wrong with it.
        #[source]
        source: TokenError,
    },
    /// Two keys hold the same token (also one plain and one as its
    /// `sha256:` digest): one role would shadow the other. Give each its own.
    #[error("tokens: {first} and {second} have the same token (compared by sha256 digest)")]
    SharedToken {
        /// The key met first in the file.
        first: TokenOwner,
        /// The key that repeats it.
        second: TokenOwner,
    },
    /// Only part of the TLS keys is set: `tls_cert_file` and
    /// `tls_key_file` go together, and `tls_client_ca_file` needs them.
    #[error("tls_cert_file and tls_key_file go together, and tls_client_ca_file needs them")]
    TlsIncomplete,
    /// A TLS file does not load (unreadable, no PEM item, a key that does
    /// not match the certificate). The message names the key and the file.
    #[error(transparent)]
    Tls(#[from] plumbing::tls::TlsError),
    /// `admin_listen` is not an `IP:PORT` address.
    #[error("admin_listen: {value:?} is not an IP:PORT address")]
    AdminListenAddress {
        /// `admin_listen` as written.
        value: String,
        /// Why it does not parse.
        #[source]
        source: std::net::AddrParseError,
    },
    /// `admin_listen` is the same address as `listen`: give the operator's
    /// listener a port of its own (or leave `admin_listen` out).
    #[error("admin_listen: {addr} is also `listen`; give it its own port")]
    AdminListenIsListen {
        /// The address both name.
        addr: SocketAddr,
    },
    /// A principal has no token in any of its keys (`token`, `tokens`, a
    /// `*_file`). Give it one.
    #[error("{owner}: no token is set (use token, tokens, token_file or tokens_file; admin: admin_token, admin_tokens or admin_token_file)")]
    NoToken {
        /// Whose token is missing.
        owner: TokenOwner,
    },
    /// A principal holds more tokens than a rotation needs.
    #[error("{owner}: more than {max} tokens; remove the retired ones")]
    TooManyTokens {
        /// Whose tokens.
        owner: TokenOwner,
        /// The most one principal may hold.
        max: usize,
    },
    /// A `*_file` key's file could not be opened or read. Check the path
    /// and that the broker's user may read it.
    #[error("{}", OneLine(format_args!("{key}: cannot read {}: {source}", path.display())))]
    SecretFile {
        /// The key naming the file (`tenant "acme": token_file`).
        key: String,
        /// The file.
        path: PathBuf,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// A `*_file` key's file is not a token file: empty, too large, not text.
    #[error("{}", OneLine(format_args!("{key}: {}: {why}", path.display())))]
    SecretFileInvalid {
        /// The key naming the file.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A `${VAR}` in a string value names an unset variable, or is not a
    /// well-formed reference. Set the variable, or write `$$` for a `$`.
    #[error(transparent)]
    Expand(#[from] plumbing::env_vars::ExpandError),
    /// On a non-loopback `listen`, a token that ships in `ops/` (an
    /// example anyone can read, plain or as its digest). Replace it with a
    /// secret of your own.
    #[error("{owner}: refusing a token shipped in ops/ (an example anyone can read) on non-loopback address {listen}; replace it with a secret of your own")]
    ShippedTokenOnPublicAddress {
        /// The key that holds it.
        owner: TokenOwner,
        /// The public address.
        listen: SocketAddr,
    },
    /// On a non-loopback `listen`, a plain token shorter than
    /// `min_bytes` (16). Use a long random secret.
    #[error("{owner}: refusing a plain token shorter than {min_bytes} bytes on non-loopback address {listen}; use a long random secret (e.g. `openssl rand -hex 24`)")]
    ShortTokenOnPublicAddress {
        /// The key that holds it.
        owner: TokenOwner,
        /// The public address.
        listen: SocketAddr,
        /// The shortest plain token accepted there.
        min_bytes: usize,
    },
    /// A tenant's `priority` is not `high`, `normal` or `low`.
    #[error("tenant {tenant:?}: priority: {source}")]
    Priority {
        /// The tenant's `name`.
        tenant: String,
        /// Why the value is not a priority.
        #[source]
        source: wal::lane_id::ParseLaneError,
    },
    /// Two tenants share a name, or a name is empty or over 255 bytes.
    /// Rename it.
    #[error("tenant {tenant:?}: names must be unique, 1 to 255 bytes")]
    TenantName {
        /// The offending name.
        tenant: String,
    },
    /// Two topics share a name, or a name is empty or over 255 bytes.
    /// Rename it.
    #[error("topic: names must be unique, 1 to 255 bytes")]
    TopicName {
        /// The offending name.
        topic: String,
    },
    /// Two destinations share a name, or a name is empty. Rename it.
    #[error("destination {destination:?}: names must be unique and non-empty")]
    DestinationName {
        /// The offending name.
        destination: String,
    },
    /// A destination's `topics` names no `[[topic]]`. Add the topic or fix the name.
    #[error("destination {destination:?}: unknown topic {topic:?}")]
    UnknownTopic {
        /// The destination's `name`.
        destination: String,
        /// The name it lists.
        topic: String,
    },
    /// A destination's `tenants` names no `[[tenant]]`. Add the tenant or fix the name.
    #[error("destination {destination:?}: unknown tenant {tenant:?}")]
    UnknownTenant {
        /// The destination's `name`.
        destination: String,
        /// The name it lists.
        tenant: String,
    },
    /// An integer key outside its documented range (`docs/config.md`;
    /// [`crate::ranges`] says why each bound). Set it within `min..=max`.
    #[error("{key}: {value} is out of range: must be {min} to {max} (docs/config.md)")]
    OutOfRange {
        /// The key.
        key: ConfigKey,
        /// Its value.
        value: u64,
        /// The smallest value accepted.
        min: u64,
        /// The largest value accepted.
        max: u64,
    },
    /// A number key (a rate, a fraction) that is not finite or is outside
    /// its documented range. Set it within `min..=max`.
    #[error("{key}: {value} is out of range: must be a number from {min} to {max} (docs/config.md)")]
    NumberOutOfRange {
        /// The key.
        key: ConfigKey,
        /// Its value (possibly NaN or infinite).
        value: f64,
        /// The smallest value accepted.
        min: f64,
        /// The largest value accepted.
        max: f64,
    },
    /// `memory_budget_bytes` is below what one request may hold
    /// ([`crate::Config::largest_request_charge`]): such a request would
    /// always be refused. Raise the budget or lower the body limits.
    #[error("memory_budget_bytes: {budget} is below {least}, what one request may hold (2 x max_body_bytes + 2 x max_inflated_bytes, in whole KiB); such a request would always be refused")]
    MemoryBudgetBelowOneRequest {
        /// `memory_budget_bytes`.
        budget: u64,
        /// The smallest budget that admits one largest request.
        least: u64,
    },
    /// A tenant's full hard bucket would take longer than `max_secs` to
    /// drain, so its `Retry-After` would not be small. Raise
    /// `hard_rate_per_sec` or lower `hard_burst`.
    #[error("tenant {tenant:?}: hard_burst / hard_rate_per_sec: a full hard bucket takes {drain_secs} s to drain; at most {max_secs} (Retry-After)")]
    HardBucketTooSlow {
        /// The tenant's `name`.
        tenant: String,
        /// `ceil(hard_burst / hard_rate_per_sec)`.
        drain_secs: f64,
        /// The longest accepted ([`crate::ranges::MAX_RETRY_AFTER_SECS`]).
        max_secs: u64,
    },
    /// A tenant sets one of `hard_rate_per_sec` and `hard_burst` without
    /// the other. Set both, or neither.
    #[error("tenant {tenant:?}: hard_rate_per_sec: hard_rate_per_sec and hard_burst go together")]
    HardLimitIncomplete {
        /// The tenant's `name`.
        tenant: String,
    },
    /// The effective configuration could not be written back as TOML
    /// (`--check-config`); a bug, not the operator's: report it.
    #[error("cannot print the effective configuration: {0}")]
    Print(#[source] toml::ser::Error),
}

/// `config line N` when the line is known, else `config`.
struct AtLine(Option<usize>);

impl fmt::Display for AtLine {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(out, " line {line}"),
            None => Ok(()),
        }
    }
}

/// Text written on one line: every newline becomes a space (a parser's
/// message, an OS error or a path may hold newlines; the error is one line).
struct OneLine<T>(T);

impl<T: fmt::Display> fmt::Display for OneLine<T> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str(&self.0.to_string().replace('\n', " "))
    }
}
