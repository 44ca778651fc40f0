//! The exporter's run loop: workers that pass the concurrency gate
//! (`crate::gate`, at most the adaptive or pinned limit at once), each
//! acquiring a lease (long-poll), delivering it with a heartbeat running
//! beside it, and committing (or failing) it. SIGTERM stops acquiring; leases in hand are
//! finished, and a lease granted after the signal is released unread.

use crate::client::{BrokerClient, ClientError};
use crate::concurrency::{Aimd, Mode, Signal};
use crate::config::{Args, Options};
use crate::deliver::{Deliverer, Outcome, Poisoned};
use crate::gate::Gate;
use crate::metrics::ExporterMetrics;
use crate::reload::Running;
use crate::sink::webhook::{Dressing, Live, Webhook};
use crate::sink::{OpenError, Record, Sink};
use plumbing::clock::now_ms;
use protocol::lease::*;
use protocol::lease_binary::{Decoded, DecodedLease};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why [`run`] stopped: the binary exits 2 for `Usage`, 1 for `Fatal`.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The options cannot work as given: the sink, the broker URL, the
    /// webhook's keys or `--metrics-listen` refused at start.
    #[error("{0}")]
    Usage(String),
    /// Delivery cannot go on: the broker refused the token or destination
    /// (401/403/404), the file sink is shorter than committed, or a worker panicked.
    #[error("delivery impossible: {0}")]
    Fatal(String),
}

struct Ctx {
    /// This process among the destination's exporters (see `AcquireRequest::exporter`).
    id: String,
    opts: Options,
    client: BrokerClient,
    sink: Box<dyn Sink>,
    metrics: Arc<ExporterMetrics>,
    gate: Gate,
    /// "acquire failed" lines of all workers, coalesced.
    acquire_failures: crate::coalesce::Coalesced,
}

async fn serve_metrics(
    addr: String,
    metrics: Arc<ExporterMetrics>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), ExportError> {
    use axum::http::StatusCode;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| ExportError::Usage(format!("--metrics-listen {addr}: {e}")))?;
    // /readyz: 200 once the broker answered a lease request (a probe that
    // passes before the exporter could lease would hide a wrong token or URL).
    let readyz = move || async move {
        if ready.load(std::sync::atomic::Ordering::Relaxed) {
            (StatusCode::OK, "ready\n")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: no lease answer from the broker yet\n")
        }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(move || async move { metrics.render() }))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(readyz));
    // The broker's hardened listener: a request-head deadline on every connection.
    let service = hyper_util::service::TowerToHyperService::new(app);
    let limits = plumbing::listener::Limits { max_connections: 256, ..Default::default() };
    tokio::spawn(plumbing::listener::serve(listener, service, limits, std::future::pending()));
    Ok(())
}

/// The sink of `opts`, and the cell its webhook signer and headers live in
/// (replaced at each SIGHUP, `crate::reload`).
pub(crate) fn open_sink(opts: &Options) -> Result<(Box<dyn Sink>, Arc<Live>), ExportError> {
    let dressing = Dressing::new(&opts.webhook).map_err(|e| ExportError::Usage(e.to_string()))?;
    if let Some(public) = dressing.signer().public_key() {
        tracing::info!(public_key = %public, "webhook requests carry a v1a (ed25519) signature; receivers verify it with this key");
    }
    let live = Live::new(dressing);
    let hook = Webhook { gzip: opts.gzip, mode: opts.webhook.mode, dressing: Arc::clone(&live) };
    let sink = crate::sink::from_spec(&opts.sink, opts.sink_timeout, hook, &opts.sink_tls).map_err(|e| match e {
        // Committed records missing from the sink is damage found, not bad usage.
        OpenError::Shorter { .. } => ExportError::Fatal(e.to_string()),
        _ => ExportError::Usage(e.to_string()),
    })?;
    Ok((sink, live))
}

/// Run until `stop`; `args`' files are re-read at each SIGHUP and compared
/// with `running` (`crate::reload`).
pub async fn run(args: Args, running: Running, opts: Options, stop: watch::Receiver<bool>) -> Result<(), ExportError> {
    let (sink, live) = open_sink(&opts)?;
    let token = crate::secret::LiveToken::new(opts.token.clone());
    let client = BrokerClient::new(&opts.broker, &opts.destination, Arc::clone(&token), &opts.broker_tls)
        .map_err(|e| ExportError::Usage(e.to_string()))?;
    let metrics = ExporterMetrics::new();
    let live = crate::reload::Live { dressing: live, token };
    crate::reload::spawn(args, running, live, Arc::clone(&metrics), stop.clone());
    metrics.init_series(&opts.destination);
    if let Some(addr) = &opts.metrics_listen {
        serve_metrics(addr.clone(), Arc::clone(&metrics), client.ready_flag()).await?;
    }
    let ceiling = opts.max_in_flight as usize;
    // A sink with nothing to find (a local file) gets its own fixed limit.
    let mode = match (opts.concurrency, sink.fixed_concurrency()) {
        (Mode::Adaptive, Some(n)) => Mode::Pinned(n.clamp(1, ceiling.max(1))),
        (mode, _) => mode,
    };
    // In event mode a lease's round trip is many requests': no width in it.
    let event_mode = opts.webhook.mode == crate::config::WebhookMode::Event;
    let gate = Gate::new(Aimd::new(mode, ceiling).learning_width(!event_mode), &metrics, &opts.destination);
    let ceiling = gate.ceiling();
    tracing::info!(destination = %opts.destination, sink = %sink.describe(), concurrency = ?mode, ceiling, "exporter started");
    if sink.otlp_only() {
        check_otlp_topics(&client, &opts.destination).await?;
    }
    if let Err(e) = sink.prepare().await {
        tracing::warn!(error = %e, "could not prepare the sink yet; deliveries will try again");
    }
    let acquire_failures = crate::coalesce::Coalesced::default();
    let ctx = Arc::new(Ctx { id: exporter_id(), opts, client, sink, metrics, gate, acquire_failures });
    let mut workers = Vec::new();
    // One task per slot the limit may ever open; the gate lets `limit` of
    // them work. `--event-order tenant` takes one lease at a time (a lease
    // given back is offered again first), so no record of a tenant goes out
    // before an earlier one of its lane; within the lease its tenants run
    // side by side, their requests within the limit.
    let tenant_order = ctx.opts.webhook.mode == crate::config::WebhookMode::Event
        && ctx.opts.webhook.event_order == crate::config::EventOrder::Tenant;
    for _ in 0..if tenant_order { 1 } else { ceiling } {
        let ctx = Arc::clone(&ctx);
        let stop = stop.clone();
        workers.push(tokio::spawn(async move { worker(ctx, stop).await }));
    }
    let mut result = Ok(());
    for w in workers {
        match w.await {
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(ExportError::Fatal(format!("worker panicked: {e}"))),
            Ok(Ok(())) => {}
        }
    }
    tracing::info!("exporter stopped");
    result
}

/// An `otlp` sink forwards OTLP records only: refuse to start (exit 2,
/// naming the topic) when the destination receives another topic. A broker
/// that cannot be asked now (down, or older than this route) is not a
/// refusal: such records would go to dead letters, each with its reason.
async fn check_otlp_topics(client: &BrokerClient, destination: &str) -> Result<(), ExportError> {
    match client.topics().await {
        Ok(t) => match t.topics.iter().find(|topic| !t.otlp_topics.contains(topic)) {
            Some(other) => Err(ExportError::Usage(format!(
                "destination {destination:?} receives topic {other:?}, which is not an OTLP topic ({}): an otlp sink forwards only OTLP records",
                t.otlp_topics.join(", ")
            ))),
            None => Ok(()),
        },
        Err(e) => {
            tracing::warn!(error = %e, "could not check that the destination receives only OTLP topics; a record of another topic goes to dead letters");
            Ok(())
        }
    }
}

/// An id for this process: unique among a destination's exporters in
/// practice (host-local pid and start time in nanoseconds).
fn exporter_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

async fn worker(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) -> Result<(), ExportError> {
    let mut transport_failures = 0u32;
    while !*stop.borrow() {
        tokio::select! {
            () = ctx.gate.enter() => {}
            _ = stop.changed() => break,
        }
        let req = AcquireRequest {
            max_records: Some(ctx.opts.batch_records),
            max_bytes: Some(ctx.opts.batch_bytes),
            wait_ms: Some(ctx.opts.wait_ms),
            exporter: Some(ctx.id.clone()),
            concurrency_limit: Some(u32::try_from(ctx.gate.limit()).unwrap_or(u32::MAX)),
            // Every sink here names each record's lane (as for a re-drive):
            // several lanes' short runs may share one request.
            joint: true,
            joint_lane_parts: true,
        };
        let resp = ctx.client.acquire(&req).await;
        match resp {
            Ok(Decoded { lease: Some(lease), .. }) => {
                transport_failures = 0;
                if *stop.borrow() {
                    ctx.gate.leave(None);
                    release(&ctx, &lease.head.id, "exporter stopping").await;
                    break;
                }
                let (level, at_sink) = ctx.gate.started();
                let signal = handle_lease(&ctx, lease, at_sink).await;
                ctx.gate.leave(Some((level, signal)));
            }
            Ok(Decoded { idle, retry_after_ms, .. }) => {
                ctx.gate.leave(None);
                transport_failures = 0;
                if idle != Some(IdleReason::Empty) || retry_after_ms > 0 {
                    tracing::debug!(?idle, retry_after_ms, "no lease");
                    let pause = Duration::from_millis(retry_after_ms.clamp(50, 1_000));
                    let _ = tokio::time::timeout(pause, stop.changed()).await;
                }
            }
            Err(e @ ClientError::Api { status: 401 | 403 | 404, .. }) => {
                ctx.gate.leave(None);
                return Err(ExportError::Fatal(e.to_string()));
            }
            Err(e) => {
                ctx.gate.leave(None);
                transport_failures += 1;
                if let Some(held) = ctx.acquire_failures.admit(plumbing::clock::now_ms()) {
                    tracing::warn!(error = %e, same_since_last_line = held, "acquire failed; retrying");
                }
                let pause = Duration::from_millis((200u64 << transport_failures.min(4)).min(3_000));
                let _ = tokio::time::timeout(pause, stop.changed()).await;
            }
        }
    }
    Ok(())
}

async fn release(ctx: &Ctx, id: &str, why: &str) {
    let req = FailRequest { class: FailureClass::Released, message: why.into(), retry_after_ms: None };
    if let Err(e) = ctx.client.fail(id, &req).await {
        tracing::warn!(lease = id, error = %e, "could not release lease; it will expire");
    }
}

/// Deliver one lease and settle it; what it said about the sink's capacity.
async fn handle_lease(ctx: &Ctx, lease: DecodedLease, at_sink: crate::gate::AtSink<'_>) -> Signal {
    let dest = ctx.opts.destination.as_str();
    let priority = priority_of(&lease.head.lane);
    let in_flight = ctx.metrics.in_flight.with_label_values(&[dest, priority]);
    in_flight.inc();
    ctx.metrics.lease_records.with_label_values(&[dest]).observe(lease.records.len() as f64);
    // Every line about this lease carries its destination and id (JSON
    // logs put them beside the line's own fields).
    let span = tracing::info_span!("lease", destination = dest, lease = %lease.head.id, lane = %lease.head.lane);
    let signal = tracing::Instrument::instrument(settle_lease(ctx, lease, at_sink), span).await;
    in_flight.dec();
    signal
}

/// `normal/2` → `normal`; a re-drive lease is `dead_letters`.
fn priority_of(lane: &str) -> &'static str {
    let p = lane.split('/').next().unwrap_or("");
    crate::metrics::PRIORITIES.into_iter().find(|k| *k == p).unwrap_or("dead_letters")
}

/// A decoded lease as the sink's records (payloads are slices of the
/// broker's answer: moved, never copied; names shared through `Arc`s), and
/// the records it carried undecodable, as dead letters.
fn records_of(lease: DecodedLease) -> (LeaseHead, String, Vec<Record>, Vec<Poisoned>, bytes::Bytes) {
    let shared = |names: &[String]| names.iter().map(|n| Arc::<str>::from(n.as_str())).collect::<Vec<_>>();
    let (lanes, tenants, topics) = (shared(&lease.lanes), shared(&lease.tenants), shared(&lease.topics));
    let own_lane: Arc<str> = Arc::from(lease.head.lane.as_str());
    let name = |table: &[Arc<str>], i: u32| table.get(i as usize).cloned().unwrap_or_default();
    let records = lease
        .records
        .into_iter()
        .map(|r| Record {
            position: r.position,
            offset: r.offset,
            ts_ms: r.ts_ms,
            lane: r.lane.map_or_else(|| Arc::clone(&own_lane), |i| name(&lanes, i)),
            tenant: name(&tenants, r.tenant),
            topic: name(&topics, r.topic),
            payload: r.payload,
        })
        .collect();
    let poison =
        lease.undecodable.into_iter().map(|(position, offset, reason)| Poisoned { position, offset, reason }).collect();
    (lease.head, lease.broker_id, records, poison, lease.body)
}

async fn settle_lease(ctx: &Ctx, lease: DecodedLease, at_sink: crate::gate::AtSink<'_>) -> Signal {
    let dest = ctx.opts.destination.as_str();
    let (lease, broker_id, records, mut poison, body) = records_of(lease);
    let ts: Vec<u64> = records.iter().map(|r| r.ts_ms).collect();
    // Heartbeat beside the delivery so a slow-but-alive sink keeps its lease.
    let (hb_stop_tx, hb_stop) = watch::channel(false);
    let hb = heartbeat(ctx, &lease, hb_stop);
    let deliverer = Deliverer {
        sink: &*ctx.sink,
        backoff: ctx.opts.backoff,
        max_retries: ctx.opts.max_retries,
        broker_id,
        destination: dest.to_string(),
        lane: lease.lane.clone(),
        body,
        max_retry_after: ctx.opts.max_retry_after,
        event_order: ctx.opts.webhook.event_order,
        gate: Some(&ctx.gate),
    };
    let started = std::time::Instant::now();
    let delivery = async {
        let out = deliverer.deliver(&records).await;
        // The sink answered: this delivery no longer counts at its door
        // (a heartbeat still in flight is not the sink's).
        drop(at_sink);
        let rtt = started.elapsed();
        let _ = hb_stop_tx.send(true);
        (out, rtt)
    };
    let ((outcome, rtt), ()) = tokio::join!(delivery, hb);
    let signal = match &outcome {
        Outcome::Delivered { .. } => Signal::Done { rtt, records: u32::try_from(records.len()).unwrap_or(u32::MAX) },
        Outcome::Retry { overload: true, .. } => Signal::Overload,
        Outcome::Retry { .. } | Outcome::Gone { .. } => Signal::Other,
    };
    match outcome {
        Outcome::Delivered { poison: rejected } => {
            poison.extend(rejected);
            poison.sort();
            commit(ctx, &lease.id, records.len(), &ts, &poison).await;
        }
        Outcome::Retry { message, retry_after, .. } => {
            ctx.metrics.deliveries.with_label_values(&[dest, "retryable"]).inc();
            tracing::warn!(lease = %lease.id, sink = %ctx.sink.describe(), error = %message, "delivery failed; lease returned");
            let req = FailRequest {
                class: FailureClass::Retryable,
                message,
                retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
            };
            if let Err(e) = ctx.client.fail(&lease.id, &req).await {
                tracing::warn!(lease = %lease.id, error = %e, "could not report the failure; the lease will expire");
            }
        }
        Outcome::Gone { message } => gone(ctx, &lease.id, message).await,
    }
    signal
}

/// Heartbeat `lease` every third of its lease time (at least 200 ms) until
/// `stop` changes or the broker says the lease is gone, so a slow-but-alive
/// sink keeps its lease.
async fn heartbeat(ctx: &Ctx, lease: &LeaseHead, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_millis((lease.lease_ms / 3).max(200));
    loop {
        if tokio::time::timeout(every, stop.changed()).await.is_ok() {
            return;
        }
        if let Err(e) = ctx.client.heartbeat(&lease.id).await {
            tracing::warn!(lease = %lease.id, error = %e, "heartbeat failed");
            if e.is_lease_gone() {
                return;
            }
        }
    }
}

/// The sink accepted every one of the lease's `count` records not in
/// `poison` (sorted): observe each record's ingest-to-delivery time (`ts`,
/// ms), commit with the poison as dead letters, and count the outcome.
async fn commit(ctx: &Ctx, lease: &str, count: usize, ts: &[u64], poison: &[Poisoned]) {
    let dest = ctx.opts.destination.as_str();
    let delivered = count.saturating_sub(poison.len()) as u64;
    let now = now_ms();
    let hist = ctx.metrics.delivery_seconds.with_label_values(&[dest]);
    for t in ts {
        hist.observe(now.saturating_sub(*t) as f64 / 1000.0);
    }
    let req = CommitRequest {
        dead_letters: poison
            .iter()
            .map(|p| PoisonRecord { index: Some(p.position), offset: p.offset, error: p.reason.clone() })
            .collect(),
    };
    match ctx.client.commit(lease, &req).await {
        Ok(_) => {
            ctx.metrics.deliveries.with_label_values(&[dest, "delivered"]).inc();
            ctx.metrics.records_delivered.with_label_values(&[dest]).inc_by(delivered);
            if !poison.is_empty() {
                ctx.metrics.deliveries.with_label_values(&[dest, "poison"]).inc();
                ctx.metrics.dead_letters.with_label_values(&[dest]).inc_by(poison.len() as u64);
                tracing::warn!(lease = %lease, records = poison.len(), "poison records sent to dead letters");
            }
        }
        Err(e) => {
            // Delivered but not committed: the range comes back (at-least-once).
            ctx.metrics.deliveries.with_label_values(&[dest, "lease_lost"]).inc();
            tracing::warn!(lease = %lease, error = %e, "commit failed after delivery; records may be delivered again");
        }
    }
}

/// The sink answered 410 Gone: it asks to stop. The lease is given back
/// as `gone` — nothing dead-lettered, not counted by the breaker — and the
/// broker pauses the destination until an operator resumes it. A broker
/// before v1.2 does not know `gone`: the lease is then released with a
/// wait of `--max-retry-after-ms`, so a gone endpoint is asked at most
/// once per wait.
async fn gone(ctx: &Ctx, lease: &str, message: String) {
    let dest = ctx.opts.destination.as_str();
    ctx.metrics.deliveries.with_label_values(&[dest, "gone"]).inc();
    let wait_ms = u64::try_from(ctx.opts.max_retry_after.as_millis()).unwrap_or(u64::MAX);
    tracing::warn!(lease, sink = %ctx.sink.describe(), error = %message, "the sink answered 410 Gone (stop sending): lease given back, nothing dead-lettered; the broker pauses the destination");
    let req = FailRequest { class: FailureClass::Gone, message: message.clone(), retry_after_ms: Some(wait_ms) };
    if ctx.client.fail(lease, &req).await.is_ok() {
        return;
    }
    let released = FailRequest {
        class: FailureClass::Released,
        message: format!("sink answered 410 Gone: {message}"),
        retry_after_ms: Some(wait_ms),
    };
    if let Err(e) = ctx.client.fail(lease, &released).await {
        tracing::warn!(lease, error = %e, "could not release the lease; it will expire");
    }
}
