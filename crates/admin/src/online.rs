//! Online `broker-admin` subcommands: the admin API of a running broker.

use crate::error::AdminError;
use protocol::routes::{self, AdminAction};
use protocol::{ActionResult, DeadLetter, DestinationStatus, ErrorBody, RewindTarget};
use std::io::Write;

pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(base: &str, token: &str) -> Result<AdminClient, AdminError> {
        reqwest::Url::parse(base).map_err(|e| AdminError::BadUrl { url: base.to_string(), reason: e.to_string() })?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| AdminError::Unreachable(format!("http client: {e}")))?;
        Ok(AdminClient { base: base.trim_end_matches('/').to_string(), token: token.to_string(), http })
    }

    async fn send<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, AdminError> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(|e| AdminError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| AdminError::Unreachable(e.to_string()))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| AdminError::Answer(e.to_string()));
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => AdminError::Refused { status, code: b.error.code, message: b.error.message },
            Err(_) => AdminError::RefusedBare { status },
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn destinations(&self) -> Result<Vec<DestinationStatus>, AdminError> {
        self.send(self.http.get(self.url(routes::destinations()))).await
    }

    pub async fn action(
        &self,
        dest: &str,
        action: AdminAction,
        body: Option<serde_json::Value>,
    ) -> Result<ActionResult, AdminError> {
        let mut req = self.http.post(self.url(&routes::admin_action(dest, action)));
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    pub async fn rewind(&self, dest: &str, target: &RewindTarget) -> Result<ActionResult, AdminError> {
        let body = serde_json::to_value(target).map_err(|e| AdminError::Answer(e.to_string()))?;
        self.action(dest, AdminAction::Rewind, Some(body)).await
    }

    pub async fn dead_letters(&self, dest: &str, limit: usize) -> Result<Vec<DeadLetter>, AdminError> {
        self.send(self.http.get(self.url(&routes::dead_letters(dest, limit)))).await
    }
}

pub fn print_destinations(list: &[DestinationStatus], json: bool, out: &mut impl Write) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", serde_json::to_string_pretty(list).unwrap_or_default());
    }
    writeln!(
        out,
        "{:<20} {:>12} {:>14} {:>12} {:>7} {:>6} {:<10} {:>9} {:<7}",
        "DESTINATION", "LAG_RECORDS", "LAG_BYTES", "OLDEST_MS", "LEASES", "DEAD", "BREAKER", "FAILURES", "PAUSED"
    )?;
    for d in list {
        writeln!(
            out,
            "{:<20} {:>12} {:>14} {:>12} {:>7} {:>6} {:<10} {:>9} {:<7}",
            d.name,
            d.lag_records,
            d.lag_bytes,
            d.oldest_pending_age_ms,
            d.leases_in_flight,
            d.dead_letter_records,
            d.breaker.state,
            d.breaker.consecutive_failures,
            d.paused
        )?;
    }
    Ok(())
}

pub fn print_dead_letters(list: &[DeadLetter], json: bool, out: &mut impl Write) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", serde_json::to_string_pretty(list).unwrap_or_default());
    }
    writeln!(out, "{:>20} {:<10} {:>10} {:<12} {:<12} ERROR", "ID", "LANE", "OFFSET", "TENANT", "TOPIC")?;
    for d in list {
        writeln!(out, "{:>20} {:<10} {:>10} {:<12} {:<12} {}", d.id, d.lane, d.offset, d.tenant, d.topic, d.error)?;
    }
    Ok(())
}
