//! The HTTP client of the webhook and ClickHouse sinks: one timeout over
//! the whole exchange, redirects never followed (`super::http` says why),
//! `User-Agent: weir-exporter/<version>`, and the TLS files of an HTTPS
//! sink (`--sink-ca-file`, `--sink-client-cert`, `--sink-client-key`).
//!
//! TLS is rustls (on ring, as the rest of the workspace). A CA file
//! replaces the built-in web roots: a sink behind a private CA is trusted
//! for that CA only. A client certificate is sent when the sink asks for
//! one (mTLS). The files are read once, at start; a bad or unreadable file
//! stops the exporter (exit 2) naming the flag and the path, never the
//! key's contents.

use super::OpenError;
use crate::config::SinkTls;
use std::path::Path;
use std::time::Duration;

/// What every sink request says it is.
pub const USER_AGENT: &str = concat!("weir-exporter/", env!("CARGO_PKG_VERSION"));

fn read_pem(flag: &str, path: &Path) -> Result<Vec<u8>, OpenError> {
    std::fs::read(path).map_err(|e| OpenError::Spec(format!("--{flag} {}: {e}", path.display())))
}

/// The client a sink sends with.
pub fn build(timeout: Duration, tls: &SinkTls) -> Result<reqwest::Client, OpenError> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT);
    let builder = with_tls(builder, tls, &SINK_FLAGS)?;
    builder.build().map_err(|e| OpenError::Spec(format!("http client: {e}")))
}

/// The flags that name TLS files, for messages: the CA, the certificate, the key.
pub(crate) struct TlsFlags(pub [&'static str; 3]);

/// A sink's.
pub(crate) const SINK_FLAGS: TlsFlags = TlsFlags(["sink-ca-file", "sink-client-cert", "sink-client-key"]);
/// The broker's (an `https://` broker).
pub(crate) const BROKER_FLAGS: TlsFlags = TlsFlags(["ca-file", "client-cert", "client-key"]);

/// `builder` trusting `tls.ca_file` only (when set) and presenting
/// `tls.client_cert` (when set); errors name the flag and the file, never
/// the key's contents.
pub(crate) fn with_tls(
    mut builder: reqwest::ClientBuilder,
    tls: &SinkTls,
    flags: &TlsFlags,
) -> Result<reqwest::ClientBuilder, OpenError> {
    let [ca_flag, cert_flag, key_flag] = flags.0;
    if let Some(path) = &tls.ca_file {
        let pem = read_pem(ca_flag, path)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| OpenError::Spec(format!("--{ca_flag} {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(OpenError::Spec(format!("--{ca_flag} {}: no PEM certificate in it", path.display())));
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        let mut pem = read_pem(cert_flag, cert)?;
        pem.push(b'\n');
        pem.extend_from_slice(&read_pem(key_flag, key)?);
        // The error names the files only: its text never holds the key.
        let identity = reqwest::Identity::from_pem(&pem).map_err(|_| {
            OpenError::Spec(format!(
                "--{cert_flag} {} / --{key_flag} {}: not a PEM certificate and private key",
                cert.display(),
                key.display()
            ))
        })?;
        builder = builder.identity(identity);
    }
    Ok(builder)
}
