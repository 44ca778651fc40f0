//! Online `broker-admin` subcommands: the admin API of a running broker.

use crate::error::AdminError;
use protocol::routes::{self, AdminAction};
use protocol::{ActionResult, DeadLetter, DestinationStatus, ErrorBody, RewindTarget};
use std::io::Write;

/// The TLS files of an `https://` broker (`--ca-file`, `--client-cert`,
/// `--client-key`).
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientTls {
    pub(crate) ca_file: Option<std::path::PathBuf>,
    pub(crate) client_cert: Option<std::path::PathBuf>,
    pub(crate) client_key: Option<std::path::PathBuf>,
}

impl ClientTls {
    /// `builder` trusting the CA file only (when set) and presenting the
    /// client certificate (when set); errors name the flag and the file.
    fn apply(&self, mut builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, AdminError> {
        let read = |flag: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|source| AdminError::TlsFile { flag, path: path.to_path_buf(), source })
        };
        if let Some(path) = &self.ca_file {
            let certs = reqwest::Certificate::from_pem_bundle(&read("ca-file", path)?)
                .map_err(|source| AdminError::TlsPem { flag: "ca-file", path: path.clone(), source })?;
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            let mut pem = read("client-cert", cert)?;
            pem.push(b'\n');
            pem.extend_from_slice(&read("client-key", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|source| AdminError::TlsPem {
                flag: "client-cert",
                path: cert.clone(),
                source,
            })?;
            builder = builder.identity(identity);
        }
        Ok(builder)
    }
}

/// A client of one broker's admin API, with its admin token.
pub(crate) struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client of the broker at `base` (`http://127.0.0.1:7070`); each
    /// call times out after 30 s.
    pub(crate) fn new(base: &str, token: &str, tls: &ClientTls) -> Result<AdminClient, AdminError> {
        reqwest::Url::parse(base).map_err(|source| AdminError::BadUrl { url: base.to_string(), source })?;
        let builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        let http = tls.apply(builder)?.build().map_err(AdminError::HttpClient)?;
        Ok(AdminClient { base: base.trim_end_matches('/').to_string(), token: token.to_string(), http })
    }

    async fn send<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, AdminError> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(AdminError::Unreachable)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(AdminError::Unreachable)?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(AdminError::Answer);
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => AdminError::Refused { status, code: b.error.code, message: b.error.message },
            Err(_) => AdminError::RefusedBare { status },
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Every destination's status.
    pub(crate) async fn destinations(&self) -> Result<Vec<DestinationStatus>, AdminError> {
        self.send(self.http.get(self.url(routes::destinations()))).await
    }

    /// `action` on destination `dest`, with `target` as the body of a rewind.
    pub(crate) async fn action(
        &self,
        dest: &str,
        action: AdminAction,
        target: Option<&RewindTarget>,
    ) -> Result<ActionResult, AdminError> {
        let mut req = self.http.post(self.url(&routes::admin_action(dest, action)));
        if let Some(target) = target {
            req = req.json(target);
        }
        self.send(req).await
    }

    /// Move `dest`'s cursors to `target`.
    pub(crate) async fn rewind(&self, dest: &str, target: &RewindTarget) -> Result<ActionResult, AdminError> {
        self.action(dest, AdminAction::Rewind, Some(target)).await
    }

    /// At most `limit` of `dest`'s dead letters.
    pub(crate) async fn dead_letters(&self, dest: &str, limit: usize) -> Result<Vec<DeadLetter>, AdminError> {
        self.send(self.http.get(self.url(&routes::dead_letters(dest, limit)))).await
    }
}

/// Destinations as a table, or as pretty JSON with `json`.
pub(crate) fn print_destinations(list: &[DestinationStatus], json: bool, out: &mut impl Write) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", serde_json::to_string_pretty(list).unwrap_or_default());
    }
    writeln!(
        out,
        "{:<20} {:>12} {:>14} {:>12} {:>7} {:>6} {:<10} {:>9} {:<7} REASON",
        "DESTINATION", "LAG_RECORDS", "LAG_BYTES", "OLDEST_MS", "LEASES", "DEAD", "BREAKER", "FAILURES", "PAUSED"
    )?;
    for d in list {
        writeln!(
            out,
            "{:<20} {:>12} {:>14} {:>12} {:>7} {:>6} {:<10} {:>9} {:<7} {}",
            d.name,
            d.lag_records,
            d.lag_bytes,
            d.oldest_pending_age_ms,
            d.leases_in_flight,
            d.dead_letter_records,
            d.breaker.state,
            d.breaker.consecutive_failures,
            d.paused,
            d.paused_reason.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

/// Dead letters as a table, or as pretty JSON with `json`.
pub(crate) fn print_dead_letters(list: &[DeadLetter], json: bool, out: &mut impl Write) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", serde_json::to_string_pretty(list).unwrap_or_default());
    }
    writeln!(out, "{:>20} {:<10} {:>10} {:<12} {:<12} ERROR", "ID", "LANE", "OFFSET", "TENANT", "TOPIC")?;
    for d in list {
        writeln!(out, "{:>20} {:<10} {:>10} {:<12} {:<12} {}", d.id, d.lane, d.offset, d.tenant, d.topic, d.error)?;
    }
    Ok(())
}
