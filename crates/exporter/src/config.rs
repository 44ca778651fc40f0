//! Exporter options: flags, or the same keys in a TOML `--config` file.
//!
//! One struct, [`Settings`], is both the flags and the file's keys; a flag
//! wins over the file, and `defaults` fills what neither gave.

mod webhook;

use crate::backoff::Backoff;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
pub(crate) use webhook::read_secret_file;
pub use webhook::{EventOrder, WebhookMode};
pub(crate) use webhook::{SinkTls, WebhookOptions};

/// The defaults, in one place (`--help` and `docs/exporter.md` say them too).
pub(crate) mod defaults {
    pub const SINK_TIMEOUT_MS: u64 = 3_000;
    pub const MAX_RETRIES: u32 = 2;
    pub const BACKOFF_BASE_MS: u64 = 100;
    pub const BACKOFF_MAX_MS: u64 = 2_000;
    pub const BATCH_RECORDS: u32 = 5_000;
    pub const BATCH_BYTES: u64 = 4 << 20;
    pub const MAX_IN_FLIGHT: u32 = crate::concurrency::ADAPTIVE_MAX as u32;
    pub const LEASE_TIMEOUT_MS: u64 = 30_000;
    pub const WAIT_MS: u64 = 2_000;
    pub const MAX_RETRY_AFTER_MS: u64 = 60_000;
}

/// What stops the exporter from starting: one line, exit 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The `--config` file given.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML of these keys.
    #[error("config {path}: {message}")]
    Parse {
        /// The `--config` file given.
        path: PathBuf,
        /// The TOML error, quoted values shown as `<redacted>`.
        message: String,
    },
    /// A `${VAR}` in the file names an unset variable or is malformed:
    /// set it, or write `$$` for a literal `$`.
    #[error("config {path}: {source}")]
    Expand {
        /// The `--config` file given.
        path: PathBuf,
        /// Which key and variable (never its value); boxed, as it is rare
        /// and large.
        #[source]
        source: Box<plumbing::env_vars::ExpandError>,
    },
    /// A required option is in neither the flags nor the file.
    #[error("--{0} is required")]
    Missing(&'static str),
    /// `--concurrency` is neither `adaptive` nor a number.
    #[error(transparent)]
    Concurrency(#[from] crate::concurrency::BadMode),
    /// A file a secret is read from cannot be read.
    #[error("cannot read --{flag} {path}: {source}")]
    SecretFile {
        /// The flag that named the file, without its `--` (e.g. `token-file`).
        flag: &'static str,
        /// The file named.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// A signing secret or key cannot be used (never shown).
    #[error("signing: {0}")]
    Key(#[from] crate::sign::KeyError),
    /// A `--header` cannot be sent.
    #[error("--header: {0}")]
    Header(#[from] crate::headers::HeaderError),
    /// A line of the `--header-file` cannot be sent.
    #[error("--header-file {path}: {source}")]
    HeaderFile {
        /// The `--header-file` given.
        path: PathBuf,
        /// What is wrong with the line.
        #[source]
        source: crate::headers::HeaderError,
    },
    /// Both `--token` and `--token-file`.
    #[error("give --token or --token-file, not both")]
    TwoTokens,
    /// A client certificate without its key, or the other way round.
    #[error("--sink-client-cert and --sink-client-key (and --client-cert and --client-key) go together")]
    ClientPair,
    /// The lease would expire before a delivery's retries could end.
    #[error("lease timeout {lease_ms} ms cannot cover the sink timeout {sink_ms} ms x {attempts} attempts plus backoff ({budget_ms} ms in all): raise --lease-timeout-ms (and the broker's) or lower --sink-timeout-ms / --max-retries")]
    LeaseBudget {
        /// `--lease-timeout-ms`, ms.
        lease_ms: u128,
        /// `--sink-timeout-ms`, ms.
        sink_ms: u128,
        /// Attempts per delivery: `--max-retries` + 1.
        attempts: u32,
        /// What a delivery may take in all, attempts and backoff, ms.
        budget_ms: u128,
    },
}

/// The command line: `--config`, `--check-config` and every [`Settings`] flag.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "exporter",
    version,
    about = "Weir exporter: leases a destination's records from a broker, delivers them to a sink, commits",
    after_help = "SINK is file:PATH, http(s)://URL (NDJSON POST), clickhouse+http(s)://HOST:PORT/?table=T, clickhouse+http(s)://HOST:PORT/?format=otel (OTLP records as OpenTelemetry rows) or otlp+http(s)://HOST:PORT (OTLP protobuf)\n\nExample:\n  exporter --broker http://127.0.0.1:7070 --destination dev --token dev-exporter --sink file:/tmp/weir-out.ndjson"
)]
pub struct Args {
    /// TOML file with the same keys as the long flags (snake_case); a flag wins over the file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the effective settings (flags, then `--config` or FILE, then the defaults), secrets
    /// redacted, and exit: 0 when the exporter would start with them, else 2.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub check_config: Option<Option<PathBuf>>,
    #[command(flatten)]
    pub(crate) settings: Settings,
}

/// Every option, as a flag and as a key of the `--config` file.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The broker's base URL, e.g. http://127.0.0.1:7070 (required).
    #[arg(long)]
    pub broker: Option<String>,
    /// The destination this exporter serves (required).
    #[arg(long)]
    pub destination: Option<String>,
    /// The destination's exporter token (required, or --token-file).
    #[arg(long)]
    pub token: Option<String>,
    /// A file holding the exporter token (its first line), instead of --token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Where records go: file:PATH, http(s)://URL, clickhouse+http(s)://HOST:PORT/?table=T or ?format=otel, or otlp+http(s)://HOST:PORT (required).
    #[arg(long)]
    pub sink: Option<String>,
    /// Per-request sink timeout, ms [default: 3000].
    #[arg(long)]
    pub sink_timeout_ms: Option<u64>,
    /// Local retries of quick retryable failures; timeouts are never retried locally [default: 2].
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// First local retry's backoff, ms; doubles per retry [default: 100].
    #[arg(long)]
    pub backoff_base_ms: Option<u64>,
    /// Ceiling of the local backoff, ms [default: 2000].
    #[arg(long)]
    pub backoff_max_ms: Option<u64>,
    /// Most records per lease / sink batch; the broker sizes leases to a target time within it [default: 5000].
    #[arg(long)]
    pub batch_records: Option<u32>,
    /// Most payload bytes per lease / sink batch [default: 4194304].
    #[arg(long)]
    pub batch_bytes: Option<u64>,
    /// The most leases this process delivers at once: the adaptive limit's ceiling [default: 64].
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Leases delivered at once: adaptive (for HTTP sinks found from the sink's round trips and
    /// overloads, additive increase, multiplicative decrease; a file: sink, written one lease at a
    /// time, keeps 16 in flight) or a number that pins it [default: adaptive].
    #[arg(long)]
    pub concurrency: Option<String>,
    /// The broker's lease timeout for this destination, ms; checked against the retry budget [default: 30000].
    #[arg(long)]
    pub lease_timeout_ms: Option<u64>,
    /// Long-poll wait of an acquire, ms [default: 2000].
    #[arg(long)]
    pub wait_ms: Option<u64>,
    /// gzip webhook bodies [default: off].
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub gzip: Option<bool>,
    /// Serve /metrics on this address, e.g. 127.0.0.1:9464 [default: not served].
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// The longest sink Retry-After honoured, ms. A wait up to the backoff ceiling is slept
    /// locally; a longer one hands the lease back with the (capped) wait, which the broker
    /// honours (capping it at 300 s) before offering the range again — never slept holding a
    /// lease [default: 60000].
    #[arg(long)]
    pub max_retry_after_ms: Option<u64>,
    /// Webhook sinks: batch (an NDJSON body per batch, one id) or event (one record per request,
    /// its own id, concurrent within the adaptive limit) [default: batch].
    #[arg(long, value_enum)]
    pub webhook_mode: Option<WebhookMode>,
    /// Event mode: none, or tenant (a tenant's records one after another, in offset order)
    /// [default: none].
    #[arg(long, value_enum)]
    pub event_order: Option<EventOrder>,
    /// A Standard Webhooks signing secret, whsec_<base64> (24-64 bytes); repeatable: every secret
    /// signs each request, which is how a secret rotates.
    #[arg(long)]
    pub sign_secret: Option<Vec<String>>,
    /// A file of whsec_ secrets, one a line (blank lines and # comments skipped); re-read at SIGHUP.
    #[arg(long)]
    pub sign_secret_file: Option<PathBuf>,
    /// An ed25519 signing key, whsk_<base64 of the 32-byte seed or the 64-byte keypair>: adds a
    /// v1a signature.
    #[arg(long)]
    pub sign_key: Option<String>,
    /// An extra webhook header, 'Name: value' (e.g. Authorization); repeatable. Names Weir sets
    /// (webhook-*, idempotency-key, content-type, content-length, host, transfer-encoding,
    /// user-agent) are refused.
    #[arg(long)]
    pub header: Option<Vec<String>>,
    /// A file of extra headers, 'Name: value' one a line; re-read at SIGHUP.
    #[arg(long)]
    pub header_file: Option<PathBuf>,
    /// PEM file of the CA certificates an `https://` broker is verified
    /// against (instead of the built-in web roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for a broker that requires one (mTLS).
    #[arg(long)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long)]
    pub client_key: Option<PathBuf>,
    /// PEM file of the CA certificates an HTTPS sink is verified against (instead of the
    /// built-in web roots).
    #[arg(long)]
    pub sink_ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for an HTTPS sink that asks for one (mTLS).
    #[arg(long)]
    pub sink_client_cert: Option<PathBuf>,
    /// PEM private key of --sink-client-cert.
    #[arg(long)]
    pub sink_client_key: Option<PathBuf>,
}

impl Args {
    /// The flags over the `--config` file, read now (at start, and again
    /// at each SIGHUP).
    pub fn merged(&self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(p) => Settings::read(p)?,
            None => Settings::default(),
        };
        Ok(self.settings.clone().over(file))
    }
}

impl Settings {
    /// These settings where given, else `file`'s: key by key, with no
    /// per-field code to keep in step with the struct.
    fn over(self, file: Settings) -> Settings {
        let (Ok(serde_json::Value::Object(mine)), Ok(serde_json::Value::Object(mut theirs))) =
            (serde_json::to_value(&self), serde_json::to_value(&file))
        else {
            return self;
        };
        for (k, v) in mine {
            if !v.is_null() {
                theirs.insert(k, v);
            }
        }
        serde_json::from_value(serde_json::Value::Object(theirs)).unwrap_or(self)
    }

    pub(crate) fn read(path: &std::path::Path) -> Result<Settings, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let parsed: Settings = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: plumbing::env_vars::quoted_redacted(e.message()),
        })?;
        // After parsing: a variable's value is a string's content, never TOML.
        plumbing::env_vars::expand(&parsed, &plumbing::env_vars::from_environment)
            .map_err(|source| ConfigError::Expand { path: path.to_path_buf(), source: Box::new(source) })
    }
}

/// Resolved options.
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) broker: String,
    pub(crate) destination: String,
    /// The destination's exporter token (`--token` or the first line of
    /// `--token-file`); the caller keeps it in [`crate::reload::Running`].
    pub token: Secret,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) sink: String,
    pub(crate) sink_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
    pub(crate) batch_records: u32,
    pub(crate) batch_bytes: u64,
    pub(crate) max_in_flight: u32,
    pub(crate) concurrency: crate::concurrency::Mode,
    pub(crate) lease_timeout: Duration,
    pub(crate) wait_ms: u64,
    pub(crate) gzip: bool,
    pub(crate) metrics_listen: Option<String>,
    pub(crate) max_retry_after: Duration,
    pub(crate) webhook: WebhookOptions,
    pub(crate) sink_tls: SinkTls,
    /// The TLS files of an `https://` broker (`--ca-file`, `--client-cert`, `--client-key`).
    pub(crate) broker_tls: SinkTls,
}

impl Options {
    /// Options from the command line and its `--config` file (flags win),
    /// checked as at start.
    pub fn resolve(args: Args) -> Result<Options, ConfigError> {
        Options::from_settings(args.merged()?)
    }

    /// The token: `--token`, or the first line of `--token-file`.
    fn token(s: &Settings) -> Result<Secret, ConfigError> {
        match (&s.token, &s.token_file) {
            (Some(_), Some(_)) => Err(ConfigError::TwoTokens),
            (Some(t), None) => Ok(Secret::new(t.as_str())),
            (None, Some(path)) => {
                let text = read_secret_file("token-file", path)?;
                Ok(Secret::new(text.lines().next().unwrap_or("").trim()))
            }
            (None, None) => Err(ConfigError::Missing("token")),
        }
    }

    /// Options from settings already merged (flags over the file).
    pub fn from_settings(s: Settings) -> Result<Options, ConfigError> {
        use defaults as d;
        // Named in the order `--help` lists them when several are missing.
        let broker = s.broker.clone().ok_or(ConfigError::Missing("broker"))?;
        let destination = s.destination.clone().ok_or(ConfigError::Missing("destination"))?;
        let token = Options::token(&s)?;
        let (webhook, sink_tls) = (WebhookOptions::resolve(&s)?, SinkTls::resolve(&s)?);
        let broker_tls = SinkTls::resolve_broker(&s)?;
        let o = Options {
            broker,
            destination,
            token,
            token_file: s.token_file,
            sink: s.sink.ok_or(ConfigError::Missing("sink"))?,
            sink_timeout: Duration::from_millis(s.sink_timeout_ms.unwrap_or(d::SINK_TIMEOUT_MS)),
            max_retries: s.max_retries.unwrap_or(d::MAX_RETRIES),
            backoff: Backoff {
                base_ms: s.backoff_base_ms.unwrap_or(d::BACKOFF_BASE_MS),
                max_ms: s.backoff_max_ms.unwrap_or(d::BACKOFF_MAX_MS),
            },
            batch_records: s.batch_records.unwrap_or(d::BATCH_RECORDS).max(1),
            batch_bytes: s.batch_bytes.unwrap_or(d::BATCH_BYTES).max(1),
            max_in_flight: s.max_in_flight.unwrap_or(d::MAX_IN_FLIGHT).max(1),
            concurrency: match &s.concurrency {
                Some(c) => c.parse()?,
                None => crate::concurrency::Mode::Adaptive,
            },
            lease_timeout: Duration::from_millis(s.lease_timeout_ms.unwrap_or(d::LEASE_TIMEOUT_MS)),
            wait_ms: s.wait_ms.unwrap_or(d::WAIT_MS),
            gzip: s.gzip.unwrap_or(false),
            metrics_listen: s.metrics_listen,
            max_retry_after: Duration::from_millis(s.max_retry_after_ms.unwrap_or(d::MAX_RETRY_AFTER_MS)),
            webhook,
            sink_tls,
            broker_tls,
        };
        o.check_lease_budget()?;
        Ok(o)
    }

    /// The longest a lease's delivery may take: every attempt timing out
    /// plus every backoff, with a second of slack for the commit.
    pub fn delivery_budget(&self) -> Duration {
        self.sink_timeout * (self.max_retries + 1) + self.backoff.worst_case(self.max_retries) + Duration::from_secs(1)
    }

    fn check_lease_budget(&self) -> Result<(), ConfigError> {
        let budget = self.delivery_budget();
        if self.lease_timeout <= budget {
            return Err(ConfigError::LeaseBudget {
                lease_ms: self.lease_timeout.as_millis(),
                sink_ms: self.sink_timeout.as_millis(),
                attempts: self.max_retries + 1,
                budget_ms: budget.as_millis(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn lease_timeout_below_the_retry_budget_is_refused() {
        let args = Args::parse_from([
            "exporter",
            "--broker",
            "http://127.0.0.1:1",
            "--destination",
            "d",
            "--token",
            "t",
            "--sink",
            "file:/tmp/x",
            "--sink-timeout-ms",
            "3000",
            "--max-retries",
            "2",
            "--lease-timeout-ms",
            "5000",
        ]);
        let e = Options::resolve(args).unwrap_err().to_string();
        assert!(e.contains("lease timeout 5000 ms"), "{e}");
    }

    #[test]
    fn a_value_the_file_cannot_take_is_not_shown_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("e.toml");
        std::fs::write(&file, "sign_secret = \"whsec_s3cr3t\"\n").unwrap();
        let e = Options::resolve(Args::parse_from(["exporter", "--config", file.to_str().unwrap()])).unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("s3cr3t") && text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn defaults_fit_the_default_lease_timeout() {
        let args = Args::parse_from([
            "exporter",
            "--broker",
            "http://h:1",
            "--destination",
            "d",
            "--token",
            "t",
            "--sink",
            "file:/x",
        ]);
        let o = Options::resolve(args).unwrap();
        assert!(o.delivery_budget() < o.lease_timeout);
    }

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("exporter.toml");
        std::fs::write(&file, "broker = \"http://file:1\"\ndestination = \"d\"\ntoken = \"t\"\nsink = \"file:/x\"\nwait_ms = 7\nbatch_records = 9\ngzip = true\n").unwrap();
        let path = file.to_str().unwrap();
        let args =
            Args::parse_from(["exporter", "--config", path, "--broker", "http://flag:1", "--batch-records", "3"]);
        let o = Options::resolve(args).unwrap();
        assert_eq!((o.broker.as_str(), o.batch_records, o.wait_ms, o.gzip), ("http://flag:1", 3, 7, true));
        assert_eq!(o.max_in_flight, defaults::MAX_IN_FLIGHT);
        let e = Options::resolve(Args::parse_from(["exporter", "--broker", "http://h:1"])).unwrap_err();
        assert!(matches!(e, ConfigError::Missing("destination")), "{e}");
    }
}
