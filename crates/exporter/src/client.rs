//! The exporter's side of the lease protocol (`protocol::lease`).

use protocol::lease::*;
use protocol::lease_binary::{self, Decoded};
use protocol::routes::{self, LeaseAction};
use protocol::ErrorBody;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker could not be reached, or its answer not read.
    #[error("broker unreachable: {0}")]
    Transport(String),
    /// `--broker` is not a URL.
    #[error("--broker {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// A 2xx answer that does not parse (the lease, if one was granted,
    /// expires and is offered again).
    #[error("bad answer from the broker: {0}")]
    BadAnswer(String),
    /// The broker answered with an error body.
    #[error("broker answered {status} {}: {message}", code.map_or("(a code this exporter does not know)", |c| c.as_str()))]
    Api { status: u16, code: Option<protocol::ErrorCode>, message: String },
}

impl ClientError {
    /// The lease is no longer held. Decided on the code when it is known,
    /// on the status when it is not (a newer broker's code): a 404 or 409
    /// from a lease call means the lease is gone either way.
    pub fn is_lease_gone(&self) -> bool {
        match self {
            ClientError::Api { code: Some(c), .. } => {
                matches!(c, protocol::ErrorCode::LeaseNotFound)
            }
            ClientError::Api { status, code: None, .. } => matches!(status, 404 | 409),
            ClientError::Transport(_) | ClientError::BadAnswer(_) | ClientError::BadUrl { .. } => false,
        }
    }
}

/// What an acquire accepts: v3 (the broker id and each re-driven or joint
/// record's lane, which downstream ids cover), else v2 (a broker before
/// v1.2), else v1 JSON (a broker before v2).
const ACCEPT_LEASE: &str = "application/vnd.weir.lease.v3, application/vnd.weir.lease.v2;q=0.8, application/json;q=0.5";

/// An error with its causes, `outer: inner: root` — reqwest's own text
/// ("error sending request for url …") leaves out the one that says what
/// happened ("Connection refused").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    // Bounded: error chains are short; 8 is far past any seen.
    for _ in 0..8 {
        let Some(c) = cause else { break };
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The error of a non-2xx answer: its body's code and message, or the
/// first 200 characters of a body that is not the contract's.
fn api_error(status: u16, body: &[u8]) -> ClientError {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => (b.error.code.known(), b.error.message),
        Err(_) => (None, String::from_utf8_lossy(body).chars().take(200).collect()),
    };
    ClientError::Api { status, code, message }
}

pub struct BrokerClient {
    base: String,
    dest: String,
    /// Swapped by a SIGHUP that re-reads the token.
    token: std::sync::Arc<crate::secret::LiveToken>,
    http: reqwest::Client,
    /// Set at the first acquire the broker answered with a lease (or with
    /// none): the exporter's `/readyz`.
    answered: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BrokerClient {
    pub fn new(
        base: &str,
        dest: &str,
        token: std::sync::Arc<crate::secret::LiveToken>,
        tls: &crate::config::SinkTls,
    ) -> Result<BrokerClient, ClientError> {
        reqwest::Url::parse(base).map_err(|e| ClientError::BadUrl { url: base.to_string(), reason: e.to_string() })?;
        let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(3));
        let builder = crate::sink::client::with_tls(builder, tls, &crate::sink::client::BROKER_FLAGS)
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let http = builder.build().map_err(|e| ClientError::Transport(format!("http client: {e}")))?;
        Ok(BrokerClient {
            base: base.trim_end_matches('/').to_string(),
            dest: dest.to_string(),
            token,
            http,
            answered: std::sync::Arc::default(),
        })
    }

    /// POST `body` to `path`; a 2xx answer's content type and bytes, or the
    /// error body's code and message.
    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
        timeout: Duration,
        accept: &str,
    ) -> Result<(Option<String>, bytes::Bytes), ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .post(url)
            .bearer_auth(self.token.get().expose())
            .header(reqwest::header::ACCEPT, accept)
            .timeout(timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| ClientError::Transport(with_causes(&e)))?;
        let status = resp.status().as_u16();
        let content_type =
            resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport(with_causes(&e)))?;
        if (200..300).contains(&status) {
            return Ok((content_type, bytes));
        }
        Err(api_error(status, &bytes))
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let (_, bytes) = self.post(path, body, timeout, "application/json").await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    /// True once the broker answered an acquire: what `/readyz` reports.
    pub fn ready_flag(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        std::sync::Arc::clone(&self.answered)
    }

    /// Acquire a lease, asking for the binary v3 format; a broker from
    /// before v1.2 answers v2, one from before v2 v1 JSON, each read by
    /// its content type.
    pub async fn acquire(&self, req: &AcquireRequest) -> Result<Decoded, ClientError> {
        let wait = Duration::from_millis(req.wait_ms.unwrap_or(0)) + Duration::from_secs(10);
        let body = serde_json::to_value(req).unwrap_or_default();
        let (content_type, bytes) = self.post(&routes::leases(&self.dest), body, wait, ACCEPT_LEASE).await?;
        self.answered.store(true, std::sync::atomic::Ordering::Relaxed);
        if content_type.as_deref().is_some_and(lease_binary::is_binary_media) {
            return lease_binary::decode(bytes).map_err(|e| ClientError::BadAnswer(e.to_string()));
        }
        let v1: AcquireResponse = serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        Ok(Decoded::from(v1))
    }

    /// The topics the destination receives (and the OTLP ones).
    pub async fn topics(&self) -> Result<DestinationTopics, ClientError> {
        let url = format!("{}{}", self.base, routes::topics(&self.dest));
        let resp = self
            .http
            .get(url)
            .bearer_auth(self.token.get().expose())
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| ClientError::Transport(with_causes(&e)))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport(with_causes(&e)))?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    pub async fn heartbeat(&self, id: &str) -> Result<HeartbeatResponse, ClientError> {
        let path = routes::lease_action(&self.dest, id, LeaseAction::Heartbeat);
        self.call(&path, serde_json::json!({}), Duration::from_secs(5)).await
    }

    pub async fn commit(&self, id: &str, req: &CommitRequest) -> Result<CommitResponse, ClientError> {
        let path = routes::lease_action(&self.dest, id, LeaseAction::Commit);
        self.call(&path, serde_json::to_value(req).unwrap_or_default(), Duration::from_secs(30)).await
    }

    pub async fn fail(&self, id: &str, req: &FailRequest) -> Result<serde_json::Value, ClientError> {
        let action = if req.class == FailureClass::Released { LeaseAction::Release } else { LeaseAction::Fail };
        let path = routes::lease_action(&self.dest, id, action);
        self.call(&path, serde_json::to_value(req).unwrap_or_default(), Duration::from_secs(10)).await
    }
}
