//! The broker's listeners: `listen` (producers, exporters, and the operator
//! unless `admin_listen` is set), `admin_listen` (the operator's routes,
//! `/metrics`, `/openapi.json`, and the probes) and `otlp_grpc_listen`.
//!
//! Every address is bound before recovery, so a taken port stops the start
//! at once and the probes answer while the WAL recovers. Each listener has
//! its own connection bounds: a flood of producers' connections cannot take
//! the operator's, nor the other way round.

use crate::core::Broker;
use crate::http::front::Front;
use crate::http::seats::{SeatCaps, Seats};
use crate::http::{router_for, AppState, Surface};
use crate::server::RunError;
use config::ValidConfig;
use plumbing::tls::{LiveTls, TlsError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Connections the operator's listener serves at once: scrapers, probes and
/// `broker-admin` need a few; the bound keeps them from costing more.
pub(crate) const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The OTLP/gRPC server's task.
pub(crate) type GrpcTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// Every listener, bound and not yet served.
pub(crate) struct Bound {
    main: TcpListener,
    /// `listen`'s address as bound (port 0 resolved).
    pub(crate) local: SocketAddr,
    admin: Option<TcpListener>,
    grpc: Option<TcpListener>,
}

/// What [`Bound::serve`] started.
pub(crate) struct Served {
    /// Every listener's TLS in force (empty without TLS): a reload
    /// re-reads their files.
    pub(crate) tls: Vec<Arc<LiveTls>>,
    /// The gRPC listener's TLS, when TLS is on.
    pub(crate) grpc_tls: Option<Arc<LiveTls>>,
    /// The main listener's task; it ends once the stop drained it.
    pub(crate) main: JoinHandle<()>,
    /// The admin listener's address and task, when `admin_listen` is set.
    pub(crate) admin: Option<(SocketAddr, JoinHandle<()>)>,
    /// The gRPC listener, served once the broker is recovered.
    pub(crate) grpc_listener: Option<TcpListener>,
}

async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr).await.map_err(|e| RunError::Fatal(format!("cannot listen on {addr} ({key}): {e}")))
}

impl Bound {
    /// Bind every configured address.
    pub(crate) async fn bind(cfg: &ValidConfig) -> Result<Bound, RunError> {
        let main = bind(cfg.listen, "listen").await?;
        let local = main.local_addr().map_err(|e| RunError::Fatal(e.to_string()))?;
        let admin = match cfg.admin_listen {
            Some(addr) => Some(bind(addr, "admin_listen").await?),
            None => None,
        };
        let grpc = match cfg.otlp_grpc_listen {
            Some(addr) => Some(bind(addr, "otlp_grpc_listen").await?),
            None => None,
        };
        Ok(Bound { main, local, admin, grpc })
    }

    /// Serve the HTTP listeners: the main one until `stop` resolves (then
    /// drained), the admin one until `stopped` turns true.
    pub(crate) fn serve(
        self,
        cfg: &ValidConfig,
        state: &AppState,
        stop: impl Future<Output = ()> + Send + 'static,
        stopped: watch::Receiver<bool>,
    ) -> Result<Served, RunError> {
        let tls = ListenerTls::load(cfg, self.admin.is_some(), self.grpc.is_some())?;
        let surface = if self.admin.is_some() { Surface::Clients } else { Surface::Everything };
        let caps = SeatCaps::derive(cfg.max_connections, cfg.max_connections_per_tenant, cfg.max_connections_per_peer);
        let seats = Seats::new(caps);
        let app = Front::new(state.clone(), router_for(state.clone(), surface)).with_seats(seats);
        let limits = plumbing::listener::Limits { tls: tls.main.clone(), ..limits(cfg, state, cfg.max_connections) };
        let main =
            tokio::spawn(plumbing::listener::serve_per_peer(self.main, move |peer| app.for_peer(peer), limits, stop));
        let admin = match self.admin {
            Some(listener) => Some(serve_admin(listener, cfg, state, tls.admin.clone(), stopped)?),
            None => None,
        };
        let all = [&tls.main, &tls.admin, &tls.grpc].into_iter().flatten().cloned().collect();
        Ok(Served { tls: all, grpc_tls: tls.grpc, main, admin, grpc_listener: self.grpc })
    }
}

/// Each listener's TLS: the same certificate everywhere; a client
/// certificate required (when `tls_client_ca_file` is set) on `listen` and
/// gRPC, never on the operator's listener.
struct ListenerTls {
    main: Option<Arc<LiveTls>>,
    admin: Option<Arc<LiveTls>>,
    grpc: Option<Arc<LiveTls>>,
}

impl ListenerTls {
    fn load(cfg: &ValidConfig, admin: bool, grpc: bool) -> Result<ListenerTls, RunError> {
        let Some(files) = &cfg.tls else {
            return Ok(ListenerTls { main: None, admin: None, grpc: None });
        };
        let usage = |e: TlsError| RunError::Usage(config::ConfigError::Tls(e));
        let http1: &[&[u8]] = &[b"http/1.1"];
        Ok(ListenerTls {
            main: Some(LiveTls::load(files.clone(), http1, true).map_err(usage)?),
            admin: admin.then(|| LiveTls::load(files.clone(), http1, false)).transpose().map_err(usage)?,
            grpc: grpc.then(|| LiveTls::load(files.clone(), &[b"h2"], true)).transpose().map_err(usage)?,
        })
    }
}

/// One listener's bounds, `max_connections` at once.
fn limits(cfg: &ValidConfig, state: &AppState, max_connections: usize) -> plumbing::listener::Limits {
    let refused = Arc::clone(&state.metrics);
    plumbing::listener::Limits {
        max_connections,
        // Before its head a connection is no one's: a quarter of the cap
        // (at least 4 where the cap leaves room, so one stray silent
        // connection does not refuse the next), the oldest silent one
        // evicted for a new one.
        max_pending: (max_connections / 4).max(max_connections.saturating_sub(1).min(4)).max(1),
        first_byte_timeout: std::time::Duration::from_millis(cfg.first_byte_timeout_ms),
        first_head_timeout: std::time::Duration::from_millis(cfg.first_byte_timeout_ms.saturating_mul(5)),
        drain: cfg.timing.shutdown_drain,
        on_refused: Arc::new(move |reason| refused.http_refused.with_label_values(&[reason.as_str()]).inc()),
        tls: None,
    }
}

/// The operator's listener: its own routes, no ingest fast path, no role
/// pools (its bound is [`ADMIN_MAX_CONNECTIONS`]).
fn serve_admin(
    listener: TcpListener,
    cfg: &ValidConfig,
    state: &AppState,
    tls: Option<Arc<LiveTls>>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), RunError> {
    let addr = listener.local_addr().map_err(|e| RunError::Fatal(e.to_string()))?;
    let app = Front::new(state.clone(), router_for(state.clone(), Surface::Operator)).operator_only();
    let limits =
        plumbing::listener::Limits { tls, ..limits(cfg, state, ADMIN_MAX_CONNECTIONS.min(cfg.max_connections)) };
    let stop = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    tracing::info!(%addr, "admin listener (admin_listen): /v1/admin/*, /metrics, /openapi.json");
    Ok((addr, tokio::spawn(plumbing::listener::serve_per_peer(listener, move |peer| app.for_peer(peer), limits, stop))))
}

/// Serve OTLP/gRPC on `listener` until `stopped` turns true.
pub(crate) fn start_grpc(
    listener: TcpListener,
    tls: Option<Arc<LiveTls>>,
    broker: &Arc<Broker>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(SocketAddr, GrpcTask), RunError> {
    let addr = listener.local_addr().map_err(|e| RunError::Fatal(e.to_string()))?;
    let tokens = Arc::clone(broker);
    let auth: api::otlp::grpc::Authenticate = Arc::new(move |token| tokens.auth().role(token));
    let receiver = api::otlp::grpc::Receiver::new(Arc::clone(broker.intake()), auth);
    let stop = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    tracing::info!(%addr, "OTLP/gRPC listening");
    Ok((addr, tokio::spawn(api::otlp::grpc::serve(listener, receiver, tls, stop))))
}
