//! Process lifecycle: configuration, the data-directory lock, listening
//! before recovery (so /healthz answers and /readyz says why not yet),
//! serving, and a graceful stop on SIGTERM/SIGINT that lets in-flight
//! commits finish.

use crate::core::Broker;
use crate::http::AppState;
use crate::listeners::{start_grpc, Bound, GrpcTask};
use crate::metrics::Metrics;
use config::{Config, ConfigError, ValidConfig, DEV_ADMIN_TOKEN, DEV_EXPORTER_TOKEN, DEV_TENANT_TOKEN};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Command-line flags; they override the config file.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "broker",
    version,
    about = "Weir broker: durable HTTP ingest, WAL, leases, admin API, /metrics",
    after_help = "Without --config the broker runs on embedded development defaults:\n  listen 127.0.0.1:7070, data dir ./weir-data, tenant dev (token dev-token),\n  topic events, destination dev (exporter token dev-exporter), admin token dev-admin.\n\nExample:\n  broker --config /etc/weir/broker.toml\n  curl -H 'Authorization: Bearer dev-token' -H 'Content-Type: application/x-ndjson' \\\n       --data-binary '{\"hello\":\"weir\"}' http://127.0.0.1:7070/v1/topics/events/records"
)]
pub struct Args {
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory (WAL segments, metadata).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Listen address, IP:PORT (port 0 picks a free one).
    #[arg(long)]
    pub listen: Option<String>,
    /// OTLP/gRPC listen address, IP:PORT, or `off` (overrides
    /// `otlp_grpc_listen`; off unless set, 127.0.0.1:4317 on the embedded
    /// development defaults).
    #[arg(long, value_name = "ADDR|off")]
    pub otlp_grpc_listen: Option<String>,
    /// Validate FILE, print the effective configuration (defaults filled
    /// in, tokens redacted) and exit: 0 valid, 2 not. Starts nothing.
    #[arg(long, value_name = "FILE")]
    pub check_config: Option<PathBuf>,
    /// Log lines as `text` (default) or `json` (one object per line);
    /// overrides WEIR_LOG_FORMAT.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<plumbing::logging::LogFormat>,
}

/// Why the process stops with a non-zero code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration file or a flag is invalid (exit 2): the message
    /// names the key; fix it and start again.
    #[error("{0}")]
    Usage(#[from] ConfigError),
    /// The data directory is in an on-disk format this build does not
    /// read: a usage error (exit 2), never a crash loop or a guess.
    #[error("{0}")]
    Format(wal::WalError),
    /// Anything else that stops the broker (exit 1): the data directory's
    /// lock or id, the listen address, recovery, the metadata store, a
    /// server task. The message says which; the operator acts on it.
    #[error("{0}")]
    Fatal(String),
}

impl RunError {
    /// The process's exit code: 2 for a usage error (configuration or
    /// on-disk format, a restart will not help), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Usage(_) | RunError::Format(_) => 2,
            RunError::Fatal(_) => 1,
        }
    }
}

/// The configuration `args` name (the file, or the embedded development
/// defaults when there is none; `true` then), flags applied, validated.
pub(crate) fn load_config(args: &Args) -> Result<(ValidConfig, bool), ConfigError> {
    let (mut cfg, dev) = match &args.config {
        Some(path) => (Config::read_file(path)?, false),
        None => (Config::development(), true),
    };
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(l) = &args.listen {
        cfg.listen = l.clone();
    }
    if let Some(l) = &args.otlp_grpc_listen {
        cfg.otlp_grpc_listen = Some(l.clone());
    }
    if cfg.low_priority_every.is_some() {
        tracing::warn!(
            "low_priority_every is deprecated and ignored: a weighted share of 8:4:1 leases (high:normal:low) keeps priority to the sink and guarantees low progress (docs/leases.md)"
        );
    }
    Ok((cfg.validate()?, dev))
}

/// The address line (tests and scripts read it) and, on the embedded
/// defaults, how to use them. A stdout that cannot be written (closed, a full
/// disk) must not stop a broker whose job does not depend on it: write
/// errors are ignored, where `println!` would panic.
/// Where the broker listens, as announced.
struct Listening {
    /// `http`, or `https` with TLS on.
    scheme: &'static str,
    main: std::net::SocketAddr,
    grpc: Option<std::net::SocketAddr>,
    admin: Option<std::net::SocketAddr>,
}

fn announce(at: Listening, dev: bool) {
    use std::io::Write;
    let (scheme, addr) = (at.scheme, at.main);
    let mut text = format!("weir broker listening on {scheme}://{addr}");
    if dev {
        text.push_str(&format!(
            " (embedded development defaults)\n  tenant dev        token {DEV_TENANT_TOKEN}\n  topic  events (and otel_logs, otel_traces, otel_metrics for OTLP)\n  destination dev   exporter token {DEV_EXPORTER_TOKEN}\n  admin             token {DEV_ADMIN_TOKEN}\nsend a record:\n  curl -sS -H 'Authorization: Bearer {DEV_TENANT_TOKEN}' -H 'Content-Type: application/x-ndjson' --data-binary '{{\"hello\":\"weir\"}}' {scheme}://{addr}/v1/topics/events/records"
        ));
    }
    if let Some(grpc) = at.grpc {
        text.push_str(&format!(
            "\nOTLP/gRPC listening on {scheme}://{grpc} (OTLP/HTTP: {scheme}://{addr}/v1/logs, /v1/traces, /v1/metrics)"
        ));
    }
    if let Some(admin) = at.admin {
        text.push_str(&format!("\nadmin API, /metrics and /openapi.json on {scheme}://{admin} (admin_listen)"));
    }
    text.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// The stop signal; once it arrives, the broker (if recovered) ends its
/// long-polls, so the drain waits only for requests that are working.
async fn shutdown_signal(broker: Arc<OnceLock<Arc<Broker>>>) {
    plumbing::signals::shutdown_signal().await;
    tracing::info!("signal received: finishing in-flight commits, then stopping");
    crate::notify::notify_or_log(crate::notify::STOPPING);
    if let Some(b) = broker.get() {
        b.begin_shutdown();
    }
}

/// Run the broker until a signal; returns after a clean stop.
pub async fn run(args: Args) -> Result<(), RunError> {
    let (cfg, dev) = load_config(&args)?;
    let _lock = plumbing::datadir::DirLock::acquire(&cfg.data_dir).map_err(|e| RunError::Fatal(e.to_string()))?;
    // Before recovery: /readyz names the broker while it recovers too.
    let broker_id =
        plumbing::datadir::BrokerId::load_or_create(&cfg.data_dir).map_err(|e| RunError::Fatal(e.to_string()))?;
    // Before recovery: a SIGHUP while the WAL recovers waits for the reload
    // handler instead of stopping the broker.
    let hangups = plumbing::signals::hangups();
    let bound = Bound::bind(&cfg).await?;
    let metrics = Metrics::new();
    metrics.init_series(&cfg);
    let state = AppState {
        broker: Arc::new(OnceLock::new()),
        metrics: Arc::clone(&metrics),
        broker_id: Arc::from(broker_id.as_str()),
    };
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let stopped_for_reload = stopped.clone();
    let broker_slot = Arc::clone(&state.broker);
    let stop = async move {
        shutdown_signal(broker_slot).await;
        let _ = stopping.send(true);
    };
    let local = bound.local;
    let served = bound.serve(&cfg, &state, stop, stopped.clone())?;
    tracing::info!(%local, data_dir = %cfg.data_dir.display(), %broker_id, "listening; recovering the WAL");
    crate::notify::notify_or_log(crate::notify::RECOVERING);
    let broker = recover(cfg, metrics).await?;
    let _ = state.broker.set(Arc::clone(&broker));
    let grpc = match served.grpc_listener {
        Some(l) => Some(start_grpc(l, served.grpc_tls.clone(), &broker, stopped)?),
        None => None,
    };
    let scheme = if served.tls.is_empty() { "http" } else { "https" };
    announce(
        Listening { scheme, main: local, grpc: grpc.as_ref().map(|g| g.0), admin: served.admin.as_ref().map(|a| a.0) },
        dev,
    );
    if let Some(hangups) = hangups {
        crate::reload::spawn(hangups, args.clone(), Arc::clone(&broker), served.tls.clone(), stopped_for_reload);
    }
    // Only now: recovery is done and requests are served (Type=notify).
    crate::notify::notify_or_log(crate::notify::READY);
    let maintenance = tokio::spawn(broker.maintenance().run());
    served.main.await.map_err(|e| RunError::Fatal(format!("server task failed: {e}")))?;
    if let Some((_, admin)) = served.admin {
        admin.await.map_err(|e| RunError::Fatal(format!("admin server task failed: {e}")))?;
    }
    finish(broker, grpc.map(|g| g.1), maintenance).await
}

/// Open the WAL (recovery) and the store on the blocking pool.
async fn recover(cfg: ValidConfig, metrics: Arc<Metrics>) -> Result<Arc<Broker>, RunError> {
    let fs: Arc<dyn wal::FileSystem> = Arc::new(wal::RealFs);
    let broker = tokio::task::spawn_blocking(move || Broker::open(cfg, fs, metrics))
        .await
        .map_err(|e| RunError::Fatal(format!("recovery task failed: {e}")))?
        .map_err(|e| match e {
            crate::core::OpenError::Wal(e @ wal::WalError::UnsupportedFormat { .. }) => RunError::Format(e),
            other => RunError::Fatal(other.to_string()),
        })?;
    let damage = broker.wal().recovery_events().iter().filter(|e| e.is_damage()).count();
    tracing::info!(damage_events = damage, "recovery done; ready");
    Ok(Arc::new(broker))
}

/// After the listener drained: let the gRPC server finish its calls, stop
/// maintenance, commit what the WAL still holds, flush the store.
async fn finish(
    broker: Arc<Broker>,
    grpc: Option<GrpcTask>,
    maintenance: tokio::task::JoinHandle<()>,
) -> Result<(), RunError> {
    if let Some(task) = grpc {
        match task.await {
            Ok(Err(e)) => tracing::error!(error = %e, "the OTLP/gRPC server failed"),
            Err(e) => tracing::error!(error = %e, "the OTLP/gRPC server task failed"),
            Ok(Ok(())) => {}
        }
    }
    maintenance.abort();
    // In-flight requests have been answered; commit anything still queued.
    broker.wal().shutdown();
    broker.deliveries().store().flush().await.map_err(|e| RunError::Fatal(e.to_string()))?;
    tracing::info!("stopped cleanly");
    Ok(())
}
