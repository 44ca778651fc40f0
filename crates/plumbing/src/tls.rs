//! TLS for the listeners (rustls, on its `ring` provider like the rest of
//! the workspace): a certificate chain and its key from PEM files, and
//! optionally a CA whose clients must present a certificate at the
//! handshake (mTLS).
//!
//! [`LiveTls`] holds the configuration in force; a reload builds a new one
//! from the files and swaps it whole, so each handshake uses one generation
//! and a renewed certificate needs no restart. A reload that fails (a file
//! missing, a key that does not match) leaves the old one in force.
//!
//! Never: log or return a key's bytes; an error names the file only.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

/// The files of one listener's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, leaf first (`tls_cert_file`).
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1) (`tls_key_file`).
    pub key: PathBuf,
    /// When set, clients must present a certificate this CA signed
    /// (`tls_client_ca_file`); `None`: no client certificate is asked for.
    pub client_ca: Option<PathBuf>,
}

/// Why a listener's TLS could not be set up from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the kind needed.
    #[error("{key} {}: {why}", path.display())]
    File {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong (the reader's error, or "no certificate in it").
        why: String,
    },
    /// rustls refused the chain and key (a key that does not match the
    /// certificate, an unsupported algorithm) or the client CA.
    #[error("{key}: {source}")]
    Rustls {
        /// The configuration key the refusal is about.
        key: &'static str,
        /// rustls' error.
        #[source]
        source: rustls::Error,
    },
    /// The client CA could not make a verifier (no usable certificate).
    #[error("tls_client_ca_file {}: {why}", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// The verifier builder's error.
        why: String,
    },
}

/// What a PEM reader's error may say: an I/O error's text, else a fixed
/// sentence — its own text can quote a line of the file, and a key's line
/// is the key.
fn pem_why(e: &rustls::pki_types::pem::Error, kind: &str) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        _ => format!("not PEM holding {kind}"),
    }
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |e: rustls::pki_types::pem::Error| TlsError::File {
        key,
        path: path.to_path_buf(),
        why: pem_why(&e, "certificates"),
    };
    let certs = CertificateDer::pem_file_iter(path).map_err(fail)?.collect::<Result<Vec<_>, _>>().map_err(fail)?;
    if certs.is_empty() {
        return Err(TlsError::File { key, path: path.to_path_buf(), why: "no PEM certificate in it".into() });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from `files`, offering `alpn` (`http/1.1`, `h2`).
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]], ask_client: bool) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs("tls_cert_file", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::File {
        key: "tls_key_file",
        path: files.key.clone(),
        why: pem_why(&e, "a private key (PKCS#8, PKCS#1 or SEC1)"),
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { key: "tls_cert_file", source })?;
    let builder = match (&files.client_ca, ask_client) {
        (Some(ca), true) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs("tls_client_ca_file", ca)? {
                roots.add(cert).map_err(|source| TlsError::Rustls { key: "tls_client_ca_file", source })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::ClientCa { path: ca.clone(), why: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_single_cert(chain, key).map_err(|source| TlsError::Rustls { key: "tls_key_file", source })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// One listener's TLS configuration in force, swapped whole on reload.
pub struct LiveTls {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    ask_client: bool,
    current: RwLock<Arc<ServerConfig>>,
}

impl LiveTls {
    /// Load `files` for a listener offering `alpn`; `ask_client`: require a
    /// client certificate when `files.client_ca` is set (never on the
    /// operator's listener, whose probes carry none).
    pub fn load(files: TlsFiles, alpn: &[&[u8]], ask_client: bool) -> Result<Arc<LiveTls>, TlsError> {
        let current = RwLock::new(server_config(&files, alpn, ask_client)?);
        let alpn = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(LiveTls { files, alpn, ask_client, current }))
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Read the files again into a configuration, not yet in force: a
    /// reload prepares every listener's first, then installs them all, so
    /// a file that fails leaves every listener on its old one.
    pub fn prepare(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let alpn: Vec<&[u8]> = self.alpn.iter().map(Vec::as_slice).collect();
        server_config(&self.files, &alpn, self.ask_client)
    }

    /// Put a [`LiveTls::prepare`]d configuration in force (the next
    /// handshake uses it).
    pub fn install(&self, fresh: Arc<ServerConfig>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    /// The files it reads (a reload compares them with the new configuration's).
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificate(&self) -> bool {
        self.ask_client && self.files.client_ca.is_some()
    }
}

/// The first byte of a TLS connection: a handshake record. Anything else
/// on a TLS port is a plain-text client, answered with a clear error.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;
