//! HTTP routes (axum). Handlers authenticate, call into the broker, and
//! turn errors into contract answers through [`BrokerError`]'s
//! `IntoResponse` — the only error-to-status mapping.

pub(crate) mod errors;
pub(crate) mod front;
pub(crate) mod openapi;
pub(crate) mod otlp;
pub(crate) mod seats;
pub(crate) mod wire;

use crate::core::Broker;
use crate::error::{BrokerError, RequestPart};
use api::http::body;
use api::http::headers::header_str;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use config::tokens::{bearer, Role};
use protocol::routes::{pattern, AdminAction, LeaseAction};
use serde::de::DeserializeOwned;
use std::sync::{Arc, OnceLock};

/// Shared by every handler. The broker appears once recovery is done.
#[derive(Clone)]
pub struct AppState {
    /// The broker, set once when recovery is done; until then the routes
    /// that need it answer 503 (`wal_unavailable`, recovering).
    pub broker: Arc<OnceLock<Arc<Broker>>>,
    /// The process's metrics, served at `/metrics` from before recovery.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The data directory's id (`plumbing::datadir::BrokerId`): in
    /// `/readyz` and every lease, for downstream ids.
    pub broker_id: Arc<str>,
}

impl AppState {
    fn ready(&self) -> Result<&Arc<Broker>, BrokerError> {
        self.broker.get().ok_or(BrokerError::Recovering)
    }
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Every route: the one listener when `admin_listen` is not set.
    Everything,
    /// `listen` beside an `admin_listen`: ingest, OTLP, leases and the
    /// probes; the operator's routes are 404 here.
    Clients,
    /// `admin_listen`: `/v1/admin/*`, `/metrics`, `/openapi.json` and the
    /// probes, nothing a producer or an exporter calls.
    Operator,
}

/// Every route of the contract over `state`: `/healthz`, `/readyz`,
/// `/metrics`, `/openapi.json`, ingest, leases, destinations, dead letters
/// and admin; any other path or method gets the contract's 404 or 405.
pub fn router(state: AppState) -> Router {
    router_for(state, Surface::Everything)
}

/// The routes of `surface` over `state`; any other path gets the contract's
/// 404, any other method on a served path 405.
pub fn router_for(state: AppState, surface: Surface) -> Router {
    let probes = Router::new().route("/healthz", get(|| async { "ok\n" })).route("/readyz", get(readyz));
    let operator = Router::new()
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::handler))
        .route(pattern::DESTINATIONS, get(list_destinations))
        .route(pattern::DESTINATION, get(one_destination))
        .route(pattern::DEAD_LETTERS, get(dead_letters))
        .route(pattern::ADMIN_ACTION, post(admin_action));
    let clients = Router::new()
        .route(pattern::INGEST, post(ingest_handler))
        .route("/v1/logs", post(otlp::logs))
        .route("/v1/traces", post(otlp::traces))
        .route("/v1/metrics", post(otlp::metrics))
        .route(pattern::LEASES, post(acquire))
        .route(pattern::TOPICS, get(destination_topics))
        .route(pattern::LEASE_ACTION, post(lease_action));
    let routes = match surface {
        Surface::Everything => probes.merge(operator).merge(clients),
        Surface::Clients => probes.merge(clients),
        Surface::Operator => probes.merge(operator),
    };
    routes
        .fallback(|req: Request| async move { no_such_endpoint(req.uri().path()) })
        .method_not_allowed_fallback(|req: Request| async move {
            errors::RouteError::MethodNotAllowed(format!("{} {}", req.method(), req.uri().path())).into_response()
        })
        .with_state(state)
}

fn no_such_endpoint(path: &str) -> Response {
    errors::RouteError::NotFound(path.to_string()).into_response()
}

/// Refusals for lack of a resource are counted by reason.
fn count_refusal(s: &AppState, e: &BrokerError) {
    if let Some(reason) = e.refusal() {
        s.metrics.http_refused.with_label_values(&[reason.as_str()]).inc();
    }
}

/// How long a request body may take to arrive.
fn body_timeout(b: &Broker) -> std::time::Duration {
    b.cfg().timing.body_read_timeout
}

/// Lease and admin bodies are small JSON documents.
const CONTROL_BODY_LIMIT: u64 = 1 << 20;

/// A lease or admin body: read only after the token was checked.
async fn control_body(b: &Broker, req: Request, charge: &mut api::memory::Charge) -> Result<Bytes, BrokerError> {
    let declared = header_str(req.headers(), "content-length").and_then(|v| v.parse::<u64>().ok());
    let to = body::Budget { budget: b.control_memory(), tenant: None, factor: 1 };
    Ok(body::read(req.into_body(), declared, CONTROL_BODY_LIMIT, body_timeout(b), to, charge).await?)
}

fn role(b: &Broker, headers: &HeaderMap) -> Result<Role, BrokerError> {
    let h = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    bearer(h).and_then(|t| b.auth().role(t)).ok_or(BrokerError::Unauthorized)
}

/// The tenant a request's token names, as the configuration in force has
/// it; a tenant a reload removed since its token resolved is unknown.
pub(crate) fn tenant_of(b: &Broker, headers: &HeaderMap) -> Result<Arc<api::intake::Tenant>, BrokerError> {
    match role(b, headers)? {
        Role::Tenant(id) => b.intake().tenant(id).ok_or(BrokerError::Unauthorized),
        _ => Err(BrokerError::TenantOnly),
    }
}

fn require_admin(b: &Broker, headers: &HeaderMap) -> Result<(), BrokerError> {
    match role(b, headers)? {
        Role::Admin => Ok(()),
        _ => Err(BrokerError::AdminOnly),
    }
}

fn require_exporter(b: &Broker, headers: &HeaderMap, dest: &str) -> Result<(), BrokerError> {
    match role(b, headers)? {
        Role::Exporter(id) => match b.deliveries().dest_by_id(id) {
            Some(own) if own.name == dest => Ok(()),
            Some(own) => Err(BrokerError::WrongDestination { token_of: own.name.clone(), asked: dest.to_string() }),
            // Removed by a reload after the token was resolved.
            None => Err(BrokerError::Unauthorized),
        },
        _ => Err(BrokerError::ExporterOnly),
    }
}

fn parse_json<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, BrokerError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| BrokerError::bad(RequestPart::Body, e))
}

async fn readyz(State(s): State<AppState>) -> Response {
    let Some(b) = s.broker.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "ready": false,
                "broker_id": &*s.broker_id,
                "reasons": ["recovering the write-ahead log"],
            })),
        )
            .into_response();
    };
    let failures: Vec<String> =
        b.wal().failures().into_iter().map(|(lane, r)| format!("lane {lane} failed closed: {r}")).collect();
    // Quarantined data does not stop service, but an operator must see it.
    let notes: Vec<String> = b
        .wal()
        .quarantined()
        .iter()
        .map(|p| format!("quarantined segment {} (see `broker-admin verify`)", p.display()))
        .collect();
    if failures.is_empty() && notes.is_empty() {
        Json(serde_json::json!({"ready": true, "broker_id": &*s.broker_id})).into_response()
    } else if failures.is_empty() {
        Json(serde_json::json!({"ready": true, "broker_id": &*s.broker_id, "reasons": notes})).into_response()
    } else {
        let body = serde_json::json!({"ready": false, "broker_id": &*s.broker_id, "reasons": failures});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

/// The router's way in: the topic arrives percent-decoded.
async fn ingest_handler(State(s): State<AppState>, Path(topic): Path<String>, req: Request) -> Response {
    // The request's own header map, not the `HeaderMap` extractor's clone.
    let (parts, body) = req.into_parts();
    ingest_parts(&s, &topic, &parts.headers, body).await
}

/// `POST /v1/topics/{topic}/records` → the raw topic segment, when it can
/// be used as is (non-empty, no percent-escape).
pub fn ingest_topic(path: &str) -> Option<&str> {
    let topic = path.strip_prefix("/v1/topics/")?.strip_suffix("/records")?;
    (!topic.is_empty() && !topic.contains(['/', '%'])).then_some(topic)
}

/// The front service's way in (see [`front`]): the path is
/// `/v1/topics/{topic}/records` with a topic that needs no decoding.
pub async fn ingest_request(s: AppState, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    match ingest_topic(parts.uri.path()) {
        Some(topic) => ingest_parts(&s, topic, &parts.headers, body).await,
        // The front only sends ingest paths here; anything else is the
        // router's fallback answer.
        None => no_such_endpoint(parts.uri.path()),
    }
}

async fn ingest_parts(s: &AppState, topic: &str, headers: &HeaderMap, body: Body) -> Response {
    let started = std::time::Instant::now();
    let broker = s.broker.get();
    let (result, tenant) = ingest_inner(s, topic, headers, body).await;
    match result {
        Ok(r) => {
            s.metrics.ingest_seconds.observe(started.elapsed().as_secs_f64());
            if let Some(b) = broker {
                b.intake().count_ok(topic);
            }
            accepted_answer(&r)
        }
        Err(e) => {
            count_refusal(s, &e);
            let tenant = tenant.as_ref().map_or("-", |t| t.name.as_str());
            let status = e.code().status();
            if status >= 500 {
                tracing::warn!(tenant, topic = %topic, code = e.code().as_str(), error = %e, "ingest refused");
            } else {
                // A client's own error: counted in weir_ingest_requests_total
                // by status; at debug, so a client sending garbage cannot
                // flood the broker's log.
                tracing::debug!(tenant, topic = %topic, code = e.code().as_str(), error = %e, "ingest refused");
            }
            let resp = e.into_response();
            let known = broker.is_some_and(|b| b.intake().knows_topic(topic));
            let topic_label = if known { topic } else { "_unknown" };
            s.metrics.ingest_requests.with_label_values(&[topic_label, resp.status().as_str()]).inc();
            resp
        }
    }
}

/// The 200 answer to an ingest request.
fn accepted_answer(a: &api::Accepted) -> Response {
    let body = Bytes::from(a.to_json());
    ([(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"))], body).into_response()
}

async fn ingest_inner(
    s: &AppState,
    topic: &str,
    headers: &HeaderMap,
    body: Body,
) -> (Result<api::Accepted, BrokerError>, Option<Arc<api::intake::Tenant>>) {
    let b = match s.ready() {
        Ok(b) => b,
        Err(e) => return (Err(e), None),
    };
    let tenant = match tenant_of(b, headers) {
        Ok(tenant) => tenant,
        Err(e) => return (Err(e), None),
    };
    let req = api::http::IngestRequest { tenant: Arc::clone(&tenant), topic, headers, body };
    let accepted = api::http::accept(b.intake(), req, b.cfg().max_body_bytes, body_timeout(b)).await;
    (accepted.map_err(BrokerError::from), Some(tenant))
}

fn answer<T: serde::Serialize>(s: &AppState, r: Result<T, BrokerError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            count_refusal(s, &e);
            if e.code().status() >= 500 {
                tracing::error!(code = e.code().as_str(), error = %e, "request failed");
            }
            e.into_response()
        }
    }
}

async fn acquire(State(s): State<AppState>, path: Result<Path<String>, PathRejection>, req: Request) -> Response {
    let r = async {
        let Path(dest) = path.map_err(path_error)?;
        let b = s.ready()?;
        require_exporter(b, req.headers(), &dest)?;
        let format = wire::LeaseFormat::accepted(req.headers());
        let peer = req.extensions().get::<front::Peer>().map(|p| p.0);
        let mut charge = api::memory::Charge::default();
        let body = control_body(b, req, &mut charge).await?;
        let mut req: protocol::lease::AcquireRequest = parse_json(&body)?;
        // v2 cannot name a record's lane: no joint lease goes out in it.
        req.joint &= format != wire::LeaseFormat::Binary(protocol::lease_binary::Version::V2);
        report_capacity(b, &dest, peer, &mut req);
        b.deliveries().acquire(&dest, req).await.map(|a| (format, a))
    };
    match r.await {
        Ok((wire::LeaseFormat::Binary(v), a)) => {
            ([(header::CONTENT_TYPE, v.media_type())], wire::acquired_binary(a, v, &s.broker_id)).into_response()
        }
        Ok((wire::LeaseFormat::Json, a)) => Json(wire::acquired(a, &s.broker_id)).into_response(),
        Err(e) => answer::<()>(&s, Err(e)),
    }
}

/// Count the asking exporter's capacity report under its connection's
/// client address (known here, not in `Deliveries`: reports are bounded per
/// peer, see [`crate::capacity`]), and hand the acquire on without it so it
/// is counted once.
fn report_capacity(b: &Broker, dest: &str, peer: Option<std::net::IpAddr>, req: &mut protocol::lease::AcquireRequest) {
    if let (Some(exporter), Some(limit)) = (req.exporter.take(), req.concurrency_limit.take()) {
        if let Some(d) = b.deliveries().dest_by_name(dest) {
            d.report_capacity_from(peer, &exporter, limit, plumbing::clock::now_ms());
        }
    }
}

fn path_error(e: PathRejection) -> BrokerError {
    BrokerError::bad(RequestPart::Path, e)
}

#[derive(serde::Deserialize, Default)]
struct FailBody {
    class: Option<protocol::lease::FailureClass>,
    message: Option<String>,
    retry_after_ms: Option<u64>,
}

async fn lease_action(
    State(s): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    req: Request,
) -> Response {
    let r = async {
        let Path((dest, id, action)) = path.map_err(path_error)?;
        let b = s.ready()?;
        require_exporter(b, req.headers(), &dest)?;
        let mut charge = api::memory::Charge::default();
        let body = control_body(b, req, &mut charge).await?;
        let action: LeaseAction = action.parse().map_err(|e| BrokerError::bad(RequestPart::LeaseAction, e))?;
        match action {
            LeaseAction::Heartbeat => {
                Ok(serde_json::to_value(b.deliveries().heartbeat(&dest, &id)?).unwrap_or_default())
            }
            LeaseAction::Commit => {
                Ok(serde_json::to_value(b.deliveries().commit(&dest, &id, parse_json(&body)?).await?)
                    .unwrap_or_default())
            }
            LeaseAction::Fail | LeaseAction::Release => {
                let f: FailBody = parse_json(&body)?;
                let class = if action == LeaseAction::Release {
                    protocol::lease::FailureClass::Released
                } else {
                    f.class.unwrap_or(protocol::lease::FailureClass::Retryable)
                };
                let message = f.message.unwrap_or_else(|| action.to_string());
                b.deliveries()
                    .fail(&dest, &id, protocol::lease::FailRequest { class, message, retry_after_ms: f.retry_after_ms })
                    .await?;
                Ok(serde_json::json!({"ok": true}))
            }
        }
    };
    answer(&s, r.await)
}

/// `GET /v1/destinations/{dest}/topics`: what `dest` receives, for its
/// exporters (an OTLP sink refuses a destination with other topics).
async fn destination_topics(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    answer(
        &s,
        s.ready().and_then(|b| {
            let Path(dest) = path.map_err(path_error)?;
            require_exporter(b, &headers, &dest)?;
            let d = b.deliveries().dest(&dest)?;
            let cfg = b.cfg();
            let otlp = &cfg.otlp;
            let mut topics: Vec<String> = d.cfg.topics.clone();
            topics.sort();
            Ok(protocol::lease::DestinationTopics {
                destination: d.name.clone(),
                topics,
                otlp_topics: vec![otlp.logs_topic.clone(), otlp.traces_topic.clone(), otlp.metrics_topic.clone()],
            })
        }),
    )
}

async fn list_destinations(State(s): State<AppState>, headers: HeaderMap) -> Response {
    answer(
        &s,
        s.ready().and_then(|b| {
            require_admin(b, &headers)?;
            Ok(b.deliveries().dests().iter().map(|d| b.deliveries().destination_status(d)).collect::<Vec<_>>())
        }),
    )
}

async fn one_destination(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    answer(
        &s,
        s.ready().and_then(|b| {
            require_admin(b, &headers)?;
            let Path(dest) = path.map_err(path_error)?;
            let one = b.deliveries().dest(&dest)?;
            Ok(b.deliveries().destination_status(&one))
        }),
    )
}

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn dead_letters(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Limit>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    answer(
        &s,
        s.ready().and_then(|b| {
            require_admin(b, &headers)?;
            let Path(dest) = path.map_err(path_error)?;
            let Query(q) = query.map_err(|e| BrokerError::bad(RequestPart::Query, e))?;
            b.deliveries()
                .dead_letters(&dest, q.limit.unwrap_or(1000))
                .map(|d| d.into_iter().map(wire::dead_letter).collect::<Vec<_>>())
        }),
    )
}

async fn admin_action(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Response {
    let r = async {
        let Path((dest, action)) = path.map_err(path_error)?;
        let b = s.ready()?;
        require_admin(b, req.headers())?;
        let mut charge = api::memory::Charge::default();
        let body = control_body(b, req, &mut charge).await?;
        let action: AdminAction = action.parse().map_err(|e| BrokerError::bad(RequestPart::AdminAction, e))?;
        match action {
            AdminAction::Pause => b.deliveries().set_paused(&dest, true).await,
            AdminAction::Resume => b.deliveries().set_paused(&dest, false).await,
            AdminAction::ResetBreaker => b.deliveries().reset_breaker(&dest).await,
            AdminAction::Rewind => {
                let target: protocol::RewindTarget =
                    serde_json::from_slice(&body).map_err(|e| BrokerError::bad(RequestPart::RewindBody, e))?;
                b.deliveries().rewind(&dest, target).await
            }
            AdminAction::Redrive => b.deliveries().redrive(&dest),
        }
    };
    answer(&s, r.await)
}

#[cfg(test)]
mod tests {
    use super::ingest_topic;

    #[test]
    fn only_plain_ingest_paths_take_the_short_way() {
        assert_eq!(ingest_topic("/v1/topics/events/records"), Some("events"));
        assert_eq!(ingest_topic("/v1/topics//records"), None);
        assert_eq!(ingest_topic("/v1/topics/a/b/records"), None);
        assert_eq!(ingest_topic("/v1/topics/ev%65nts/records"), None);
        assert_eq!(ingest_topic("/v1/topics/events/records/"), None);
        assert_eq!(ingest_topic("/v1/destinations/d/leases"), None);
    }
}
