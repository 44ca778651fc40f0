//! The exporter's side of the lease protocol (`api::lease`).

use api::lease::*;
use api::routes::{self, LeaseAction};
use api::ErrorBody;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker could not be reached, or its answer not read.
    #[error("broker unreachable: {0}")]
    Transport(String),
    /// `--broker` is not a URL.
    #[error("--broker {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The broker answered with an error body.
    #[error("broker answered {status} {}: {message}", code.map_or("(a code this exporter does not know)", |c| c.as_str()))]
    Api { status: u16, code: Option<api::ErrorCode>, message: String },
}

impl ClientError {
    /// The lease is no longer held. Decided on the code when it is known,
    /// on the status when it is not (a newer broker's code): a 404 or 409
    /// from a lease call means the lease is gone either way.
    pub fn is_lease_gone(&self) -> bool {
        match self {
            ClientError::Api { code: Some(c), .. } => {
                matches!(c, api::ErrorCode::LeaseNotFound)
            }
            ClientError::Api { status, code: None, .. } => matches!(status, 404 | 409),
            ClientError::Transport(_) | ClientError::BadUrl { .. } => false,
        }
    }
}

pub struct BrokerClient {
    base: String,
    dest: String,
    token: String,
    http: reqwest::Client,
}

impl BrokerClient {
    pub fn new(base: &str, dest: &str, token: &str) -> Result<BrokerClient, ClientError> {
        reqwest::Url::parse(base).map_err(|e| ClientError::BadUrl { url: base.to_string(), reason: e.to_string() })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| ClientError::Transport(format!("http client: {e}")))?;
        Ok(BrokerClient {
            base: base.trim_end_matches('/').to_string(),
            dest: dest.to_string(),
            token: token.to_string(),
            http,
        })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .timeout(timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport(e.to_string()))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Transport(format!("bad answer: {e}")));
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => (b.error.code.known(), b.error.message),
            Err(_) => (None, String::from_utf8_lossy(&bytes).chars().take(200).collect()),
        };
        Err(ClientError::Api { status, code, message })
    }

    pub async fn acquire(&self, req: &AcquireRequest) -> Result<AcquireResponse, ClientError> {
        let wait = Duration::from_millis(req.wait_ms.unwrap_or(0)) + Duration::from_secs(10);
        self.call(&routes::leases(&self.dest), serde_json::to_value(req).unwrap_or_default(), wait).await
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
