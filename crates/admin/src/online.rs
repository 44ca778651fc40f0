//! Online `broker-admin` subcommands: the admin API of a running broker.

use api::{ActionResult, DeadLetter, DestinationStatus, ErrorBody, RewindTarget};
use std::io::Write;

pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(base: &str, token: &str) -> Result<AdminClient, String> {
        reqwest::Url::parse(base).map_err(|e| format!("--broker {base:?}: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(AdminClient { base: base.trim_end_matches('/').to_string(), token: token.to_string(), http })
    }

    async fn send<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, String> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(|e| format!("broker unreachable: {e}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| format!("unexpected answer: {e}"));
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => format!("broker answered {status} {}: {}", b.error.code, b.error.message),
            Err(_) => format!("broker answered {status}"),
        })
    }

    pub async fn destinations(&self) -> Result<Vec<DestinationStatus>, String> {
        self.send(self.http.get(format!("{}/v1/admin/destinations", self.base))).await
    }

    pub async fn action(
        &self,
        dest: &str,
        action: &str,
        body: Option<serde_json::Value>,
    ) -> Result<ActionResult, String> {
        let mut req = self.http.post(format!("{}/v1/admin/destinations/{dest}/{action}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    pub async fn rewind(&self, dest: &str, target: &RewindTarget) -> Result<ActionResult, String> {
        self.action(dest, "rewind", Some(serde_json::to_value(target).map_err(|e| e.to_string())?)).await
    }

    pub async fn dead_letters(&self, dest: &str, limit: usize) -> Result<Vec<DeadLetter>, String> {
        self.send(self.http.get(format!("{}/v1/admin/destinations/{dest}/dead-letters?limit={limit}", self.base))).await
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
