//! The one validation of a [`Config`], and its typed answer.

use super::{
    Config, ConfigError, DestinationConfig, TokenOwner, DEV_ADMIN_TOKEN, DEV_EXPORTER_TOKEN, DEV_TENANT_TOKEN,
};
use crate::tokens::TokenSpec;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Deref;
use std::time::Duration;
use wal::Priority;

/// A configuration that passed [`Config::validate`]: the file's values, and
/// every one that needs parsing already parsed. Plain numbers are read
/// through [`Deref`] from the file as written.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    file: Config,
    /// `listen`, parsed.
    pub listen: SocketAddr,
    /// Every token, as its digest.
    pub tokens: Tokens,
    /// Each tenant's priority, in `tenants` order.
    pub priorities: Vec<Priority>,
    /// Every duration, in its type.
    pub timing: Timing,
    /// `otlp_grpc_listen`, parsed; `None`: off.
    pub otlp_grpc_listen: Option<SocketAddr>,
    /// `admin_listen`, parsed; `None`: the admin routes are on `listen`.
    pub admin_listen: Option<SocketAddr>,
    /// The TLS files, when `tls_cert_file` and `tls_key_file` are set
    /// (checked: they load); `None`: plain HTTP.
    pub tls: Option<plumbing::tls::TlsFiles>,
}

/// Every token as its digest, in the file's order. A principal holds one
/// or more (`token`, `tokens`, the `*_file` keys), all valid at once.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The admin's.
    pub admin: Vec<TokenSpec>,
    /// Each tenant's, in `tenants` order.
    pub tenants: Vec<Vec<TokenSpec>>,
    /// Each destination's, in `destinations` order.
    pub destinations: Vec<Vec<TokenSpec>>,
}

impl Tokens {
    /// Every digest, the admin's first, then the tenants', then the
    /// destinations'.
    pub fn all(&self) -> impl Iterator<Item = &TokenSpec> + Clone {
        self.admin.iter().chain(self.tenants.iter().flatten()).chain(self.destinations.iter().flatten())
    }
}

/// The configuration's durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `group_commit_linger_us`.
    pub group_commit_linger: Duration,
    /// `retention_max_age_secs`; `None`: keep until every destination committed.
    pub retention_max_age: Option<Duration>,
    /// `idempotency_window_secs`.
    pub idempotency_window: Duration,
    /// `retry_after_secs`.
    pub retry_after: Duration,
    /// `max_long_poll_ms`.
    pub max_long_poll: Duration,
    /// `maintenance_interval_ms`.
    pub maintenance_interval: Duration,
    /// `body_read_timeout_ms`.
    pub body_read_timeout: Duration,
    /// `shutdown_drain_ms`.
    pub shutdown_drain: Duration,
}

impl Deref for ValidConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.file
    }
}

impl ValidConfig {
    /// The file as written (for `--check-config`).
    pub fn file(&self) -> &Config {
        &self.file
    }

    /// How long a lease of `dest` lives without a heartbeat.
    pub fn destination_lease(&self, dest: &DestinationConfig) -> Duration {
        Duration::from_millis(self.file.destination_lease_ms(dest))
    }
}

impl Config {
    /// Reject what would start but not work, or not be safe; parse what
    /// needs parsing. The only check: a start, `--check-config` and every
    /// test go through it, and what it answers needs no other.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        let listen: SocketAddr =
            self.listen.parse().map_err(|source| ConfigError::ListenAddress { value: self.listen.clone(), source })?;
        let otlp_grpc_listen = match self.otlp_grpc_listen.as_deref().map(str::trim) {
            None | Some("off") => None,
            Some(addr) => {
                Some(addr.parse().map_err(|source| ConfigError::OtlpGrpcListenAddress { value: addr.into(), source })?)
            }
        };
        self.check_token_counts()?;
        let admin_listen = self.admin_listen(listen)?;
        let tls = self.tls_files()?;
        let tokens = self.parse_tokens()?;
        // Every listener counts: an admin or gRPC port on a public address
        // exposes the tokens as much as `listen` does.
        let exposed =
            [Some(listen), admin_listen, otlp_grpc_listen].into_iter().flatten().find(|a| !a.ip().is_loopback());
        self.check_tokens(exposed, &tokens)?;
        let file = self.with_otlp_topics();
        file.check_rules()?;
        let priorities = self
            .tenants
            .iter()
            .map(|t| t.priority.parse().map_err(|source| ConfigError::Priority { tenant: t.name.clone(), source }))
            .collect::<Result<Vec<Priority>, ConfigError>>()?;
        Ok(ValidConfig { timing: self.timing(), file, listen, tokens, priorities, otlp_grpc_listen, admin_listen, tls })
    }

    /// `admin_listen`, parsed: an address of its own (port 0, any free one,
    /// is never the same as another).
    fn admin_listen(&self, listen: SocketAddr) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(value) = self.admin_listen.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let addr: SocketAddr =
            value.parse().map_err(|source| ConfigError::AdminListenAddress { value: value.into(), source })?;
        if addr.port() != 0 && addr == listen {
            return Err(ConfigError::AdminListenIsListen { addr });
        }
        Ok(Some(addr))
    }

    /// The TLS files, when set: the certificate and key together, the
    /// client CA only with them, and all of them loadable (so
    /// `--check-config` catches a wrong file, not the first handshake).
    fn tls_files(&self) -> Result<Option<plumbing::tls::TlsFiles>, ConfigError> {
        let files = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => plumbing::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca_file.clone(),
            },
            (None, None) if self.tls_client_ca_file.is_none() => return Ok(None),
            _ => return Err(ConfigError::TlsIncomplete),
        };
        plumbing::tls::server_config(&files, &[], true)?;
        Ok(Some(files))
    }

    /// This configuration with the OTLP topics declared (after the declared
    /// ones, in the order logs, traces, metrics) where no `[[topic]]` does:
    /// they exist whenever OTLP is on.
    fn with_otlp_topics(&self) -> Config {
        let mut file = self.clone();
        for name in self.otlp.topics() {
            if !file.topics.iter().any(|t| t.name == name) {
                file.topics.push(super::TopicConfig { name: name.to_string() });
            }
        }
        file
    }

    /// Development tokens only on loopback, no weak token where any listener
    /// (`exposed`: the first not on loopback) is public, and no two keys
    /// with the same token.
    fn check_tokens(&self, exposed: Option<SocketAddr>, tokens: &Tokens) -> Result<(), ConfigError> {
        let dev_in_use = tokens
            .all()
            .any(|spec| [DEV_TENANT_TOKEN, DEV_EXPORTER_TOKEN, DEV_ADMIN_TOKEN].iter().any(|d| spec.matches(d)));
        if let Some(listen) = exposed.filter(|_| dev_in_use) {
            return Err(ConfigError::DevTokenOnPublicAddress { listen });
        }
        if let Some(listen) = exposed {
            self.check_public_tokens(listen)?;
        }
        // Compare digests, not strings: `x` and `sha256:<digest of x>` are
        // the same secret, and one role would shadow the other. The same
        // token twice in one principal's keys is harmless and allowed.
        let mut seen: HashMap<&TokenSpec, TokenOwner> = HashMap::new();
        for ((owner, _), spec) in self.token_owners().zip(tokens.all()) {
            match seen.insert(spec, owner.clone()) {
                Some(first) if first != owner => return Err(ConfigError::SharedToken { first, second: owner }),
                _ => {}
            }
        }
        Ok(())
    }

    /// Each principal's tokens as digests, in [`Config::principals`] order.
    fn parse_tokens(&self) -> Result<Tokens, ConfigError> {
        let mut principals = self.principals().into_iter().map(|(owner, tokens)| {
            tokens
                .into_iter()
                .map(|token| {
                    TokenSpec::parse(token).map_err(|source| ConfigError::Token { owner: owner.clone(), source })
                })
                .collect::<Result<Vec<TokenSpec>, ConfigError>>()
        });
        let mut next = || principals.next().unwrap_or_else(|| Ok(Vec::new()));
        let admin = next()?;
        let tenants = self.tenants.iter().map(|_| next()).collect::<Result<_, _>>()?;
        let destinations = self.destinations.iter().map(|_| next()).collect::<Result<_, _>>()?;
        Ok(Tokens { admin, tenants, destinations })
    }

    fn timing(&self) -> Timing {
        Timing {
            group_commit_linger: Duration::from_micros(self.group_commit_linger_us),
            retention_max_age: (self.retention_max_age_secs > 0)
                .then(|| Duration::from_secs(self.retention_max_age_secs)),
            idempotency_window: Duration::from_secs(self.idempotency_window_secs),
            retry_after: Duration::from_secs(self.retry_after_secs),
            max_long_poll: Duration::from_millis(self.max_long_poll_ms),
            maintenance_interval: Duration::from_millis(self.maintenance_interval_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            shutdown_drain: Duration::from_millis(self.shutdown_drain_ms),
        }
    }

    /// The range of each value (`ranges`) and the references between sections.
    fn check_rules(&self) -> Result<(), ConfigError> {
        self.check_ranges()?;
        let mut names = HashSet::new();
        for t in &self.tenants {
            if !names.insert(&t.name) || t.name.is_empty() || t.name.len() > 255 {
                return Err(ConfigError::TenantName { tenant: t.name.clone() });
            }
        }
        let mut topics = HashSet::new();
        for t in &self.topics {
            if !topics.insert(&t.name) || t.name.is_empty() || t.name.len() > 255 {
                return Err(ConfigError::TopicName { topic: t.name.clone() });
            }
        }
        let mut dnames = HashSet::new();
        for d in &self.destinations {
            if !dnames.insert(&d.name) || d.name.is_empty() {
                return Err(ConfigError::DestinationName { destination: d.name.clone() });
            }
            if let Some(t) = d.topics.iter().find(|t| !topics.contains(t)) {
                return Err(ConfigError::UnknownTopic { destination: d.name.clone(), topic: t.clone() });
            }
            if let Some(t) = d.tenants.iter().flatten().find(|t| !names.contains(t)) {
                return Err(ConfigError::UnknownTenant { destination: d.name.clone(), tenant: t.clone() });
            }
        }
        Ok(())
    }
}
