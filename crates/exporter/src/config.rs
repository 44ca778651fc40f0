//! Exporter options: flags, or the same keys in a TOML `--config` file.

use crate::backoff::Backoff;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "exporter",
    version,
    about = "Weir exporter: leases a destination's records from a broker, delivers them to a sink, commits",
    after_help = "SINK is file:PATH, http(s)://URL (NDJSON POST) or clickhouse+http(s)://HOST:PORT/?table=T\n\nExample:\n  exporter --broker http://127.0.0.1:7070 --destination dev --token dev-exporter --sink file:/tmp/weir-out.ndjson"
)]
pub struct Args {
    /// TOML file with the same keys as the long flags (snake_case).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub broker: Option<String>,
    #[arg(long)]
    pub destination: Option<String>,
    #[arg(long)]
    pub token: Option<String>,
    #[arg(long)]
    pub sink: Option<String>,
    /// Per-request sink timeout.
    #[arg(long)]
    pub sink_timeout_ms: Option<u64>,
    /// Local retries of quick retryable failures (timeouts are never retried locally).
    #[arg(long)]
    pub max_retries: Option<u32>,
    #[arg(long)]
    pub backoff_base_ms: Option<u64>,
    #[arg(long)]
    pub backoff_max_ms: Option<u64>,
    /// Most records per lease / sink batch.
    #[arg(long)]
    pub batch_records: Option<u32>,
    /// Most payload bytes per lease / sink batch.
    #[arg(long)]
    pub batch_bytes: Option<u64>,
    /// Leases delivered concurrently by this process.
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// The broker's lease timeout for this destination (checked against the retry budget).
    #[arg(long)]
    pub lease_timeout_ms: Option<u64>,
    /// Long-poll wait of an acquire.
    #[arg(long)]
    pub wait_ms: Option<u64>,
    /// gzip webhook bodies.
    #[arg(long)]
    pub gzip: bool,
    /// Serve /metrics here (e.g. 127.0.0.1:9464).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// The longest sink `Retry-After` honoured, ms (default 60000). A wait
    /// up to the backoff ceiling is slept locally; a longer one hands the
    /// lease back with the (capped) wait, which the broker honours (it caps
    /// it at 300 s) before offering the range again — never slept holding a lease.
    #[arg(long)]
    pub max_retry_after_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    broker: Option<String>,
    destination: Option<String>,
    token: Option<String>,
    sink: Option<String>,
    sink_timeout_ms: Option<u64>,
    max_retries: Option<u32>,
    backoff_base_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    batch_records: Option<u32>,
    batch_bytes: Option<u64>,
    max_in_flight: Option<u32>,
    lease_timeout_ms: Option<u64>,
    wait_ms: Option<u64>,
    gzip: Option<bool>,
    metrics_listen: Option<String>,
    max_retry_after_ms: Option<u64>,
}

/// Resolved options.
#[derive(Debug, Clone)]
pub struct Options {
    pub broker: String,
    pub destination: String,
    pub token: String,
    pub sink: String,
    pub sink_timeout: Duration,
    pub max_retries: u32,
    pub backoff: Backoff,
    pub batch_records: u32,
    pub batch_bytes: u64,
    pub max_in_flight: u32,
    pub lease_timeout: Duration,
    pub wait_ms: u64,
    pub gzip: bool,
    pub metrics_listen: Option<String>,
    pub max_retry_after: Duration,
}

impl Options {
    pub fn resolve(args: Args) -> Result<Options, String> {
        let file: FileConfig = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                toml::from_str(&text)
                    .map_err(|e| format!("config {}: {}", p.display(), e.message().replace('\n', " ")))?
            }
            None => FileConfig::default(),
        };
        let need = |flag: Option<String>, file: Option<String>, name: &str| {
            flag.or(file).ok_or_else(|| format!("--{name} is required"))
        };
        let o = Options {
            broker: need(args.broker, file.broker, "broker")?,
            destination: need(args.destination, file.destination, "destination")?,
            token: need(args.token, file.token, "token")?,
            sink: need(args.sink, file.sink, "sink")?,
            sink_timeout: Duration::from_millis(args.sink_timeout_ms.or(file.sink_timeout_ms).unwrap_or(3_000)),
            max_retries: args.max_retries.or(file.max_retries).unwrap_or(2),
            backoff: Backoff {
                base_ms: args.backoff_base_ms.or(file.backoff_base_ms).unwrap_or(100),
                max_ms: args.backoff_max_ms.or(file.backoff_max_ms).unwrap_or(2_000),
            },
            batch_records: args.batch_records.or(file.batch_records).unwrap_or(500).max(1),
            batch_bytes: args.batch_bytes.or(file.batch_bytes).unwrap_or(1 << 20).max(1),
            max_in_flight: args.max_in_flight.or(file.max_in_flight).unwrap_or(1).max(1),
            lease_timeout: Duration::from_millis(args.lease_timeout_ms.or(file.lease_timeout_ms).unwrap_or(30_000)),
            wait_ms: args.wait_ms.or(file.wait_ms).unwrap_or(2_000),
            gzip: args.gzip || file.gzip.unwrap_or(false),
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            max_retry_after: Duration::from_millis(
                args.max_retry_after_ms.or(file.max_retry_after_ms).unwrap_or(60_000),
            ),
        };
        o.check_lease_budget()?;
        Ok(o)
    }

    /// The longest a lease's delivery may take: every attempt timing out
    /// plus every backoff, with a second of slack for the commit.
    pub fn delivery_budget(&self) -> Duration {
        self.sink_timeout * (self.max_retries + 1) + self.backoff.worst_case(self.max_retries) + Duration::from_secs(1)
    }

    fn check_lease_budget(&self) -> Result<(), String> {
        let budget = self.delivery_budget();
        if self.lease_timeout <= budget {
            return Err(format!(
                "lease timeout {} ms cannot cover the sink timeout {} ms x {} attempts plus backoff ({} ms in all): raise --lease-timeout-ms (and the broker's) or lower --sink-timeout-ms / --max-retries",
                self.lease_timeout.as_millis(),
                self.sink_timeout.as_millis(),
                self.max_retries + 1,
                budget.as_millis()
            ));
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
        let e = Options::resolve(args).unwrap_err();
        assert!(e.contains("lease timeout 5000 ms"), "{e}");
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
}
