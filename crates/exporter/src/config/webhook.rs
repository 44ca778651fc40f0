//! The webhook's options: its mode, and the credentials a receiver checks
//! — signing secrets and keys, extra headers — read from the flags, the
//! `--config` file and the files they name (`--sign-secret-file`,
//! `--header-file`), so that no secret need sit in a command line (`ps`)
//! or a unit file. Read at start and again at each SIGHUP
//! ([`crate::reload`]); every secret is a [`Secret`] (never printed).

use super::{ConfigError, Settings};
use crate::headers::{self, Header};
use crate::secret::Secret;
use crate::sign::Signer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `--webhook-mode`: what one webhook request holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookMode {
    /// A batch of records, NDJSON, one id per batch.
    #[default]
    Batch,
    /// One record per request, with the record's own id.
    Event,
}

/// `--event-order`: in event mode, which records wait for which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventOrder {
    /// Every record of a lease may be in flight at once.
    #[default]
    None,
    /// A tenant's records are sent one after another, in offset order.
    Tenant,
}

impl WebhookMode {
    /// The flag's value: `batch` or `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookMode::Batch => "batch",
            WebhookMode::Event => "event",
        }
    }
}

impl EventOrder {
    /// The flag's value: `none` or `tenant`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventOrder::None => "none",
            EventOrder::Tenant => "tenant",
        }
    }
}

/// Resolved webhook options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookOptions {
    pub mode: WebhookMode,
    pub event_order: EventOrder,
    /// Every `whsec_` secret: the flags' (or the file's key), then the
    /// secret file's lines.
    pub secrets: Vec<Secret>,
    pub sign_secret_file: Option<PathBuf>,
    pub sign_key: Option<Secret>,
    /// Every extra header: the flags' (or the file's key), then the
    /// header file's lines.
    pub headers: Vec<Header>,
    pub header_file: Option<PathBuf>,
}

/// The PEM files of an HTTPS sink.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SinkTls {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// A secret file's text: read whole, each use names the flag it came from.
pub(crate) fn read_secret_file(flag: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile { flag, path: path.to_path_buf(), source })
}

/// The non-blank lines of a secret file that are not `#` comments.
fn secret_lines(text: &str) -> impl Iterator<Item = Secret> + '_ {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(Secret::new)
}

impl WebhookOptions {
    pub(super) fn resolve(s: &Settings) -> Result<WebhookOptions, ConfigError> {
        let mut secrets: Vec<Secret> = s.sign_secret.iter().flatten().map(Secret::new).collect();
        if let Some(path) = &s.sign_secret_file {
            secrets.extend(secret_lines(&read_secret_file("sign-secret-file", path)?));
        }
        let mut headers = s.header.iter().flatten().map(|h| Header::parse(h)).collect::<Result<Vec<_>, _>>()?;
        if let Some(path) = &s.header_file {
            let text = read_secret_file("header-file", path)?;
            let more =
                headers::parse_lines(&text).map_err(|source| ConfigError::HeaderFile { path: path.clone(), source })?;
            headers.extend(more);
        }
        let o = WebhookOptions {
            mode: s.webhook_mode.unwrap_or_default(),
            event_order: s.event_order.unwrap_or_default(),
            secrets,
            sign_secret_file: s.sign_secret_file.clone(),
            sign_key: s.sign_key.as_deref().map(Secret::new),
            headers,
            header_file: s.header_file.clone(),
        };
        o.signer()?;
        Ok(o)
    }

    /// The signer of these secrets and key.
    pub fn signer(&self) -> Result<Signer, ConfigError> {
        Ok(Signer::new(&self.secrets, self.sign_key.as_ref())?)
    }
}

impl SinkTls {
    /// The broker's: `--ca-file`, `--client-cert`, `--client-key`.
    pub(super) fn resolve_broker(s: &Settings) -> Result<SinkTls, ConfigError> {
        if s.client_cert.is_some() != s.client_key.is_some() {
            return Err(ConfigError::ClientPair);
        }
        Ok(SinkTls { ca_file: s.ca_file.clone(), client_cert: s.client_cert.clone(), client_key: s.client_key.clone() })
    }

    pub(super) fn resolve(s: &Settings) -> Result<SinkTls, ConfigError> {
        if s.sink_client_cert.is_some() != s.sink_client_key.is_some() {
            return Err(ConfigError::ClientPair);
        }
        Ok(SinkTls {
            ca_file: s.sink_ca_file.clone(),
            client_cert: s.sink_client_cert.clone(),
            client_key: s.sink_client_key.clone(),
        })
    }
}
