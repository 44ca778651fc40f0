//! The OTLP/HTTP routes (`POST /v1/logs`, `/v1/traces`, `/v1/metrics`):
//! authenticate the tenant, hand the request to `api::otlp::http`, and
//! answer as the OTLP specification says (`api::otlp::answer`) — on these
//! routes a `google.rpc.Status` takes the place of the contract's JSON
//! error body.

use super::{body_timeout, count_refusal, AppState};
use api::http::headers::header_str;
use api::otlp::answer::{success_response, Refusal};
use api::otlp::http::{accept, OtlpHttpRequest};
use api::otlp::{OtlpEncoding, Signal};
use axum::extract::{Request, State};
use axum::response::Response;

/// `POST /v1/logs`.
pub(crate) async fn logs(State(s): State<AppState>, req: Request) -> Response {
    serve(&s, Signal::Logs, req).await
}

/// `POST /v1/traces`.
pub(crate) async fn traces(State(s): State<AppState>, req: Request) -> Response {
    serve(&s, Signal::Traces, req).await
}

/// `POST /v1/metrics`.
pub(crate) async fn metrics(State(s): State<AppState>, req: Request) -> Response {
    serve(&s, Signal::Metrics, req).await
}

async fn serve(s: &AppState, signal: Signal, req: Request) -> Response {
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let encoding = OtlpEncoding::answer_for(header_str(&parts.headers, "content-type"));
    let outcome = async {
        let b = s.ready()?;
        let tenant = super::tenant_of(b, &parts.headers)?;
        let req = OtlpHttpRequest { tenant, signal, headers: &parts.headers, body };
        let exported = accept(b.intake(), req, b.cfg().max_body_bytes, body_timeout(b)).await?;
        Ok((b, exported))
    };
    let topic_of = |s: &AppState| s.broker.get().map(|b| signal.topic(&b.cfg().otlp).to_string());
    match outcome.await {
        Ok((b, exported)) => {
            s.metrics.ingest_seconds.observe(started.elapsed().as_secs_f64());
            let resp = success_response(signal, encoding, &exported, b.cfg().max_record_bytes);
            let topic = topic_of(s).unwrap_or_default();
            s.metrics.ingest_requests.with_label_values(&[topic.as_str(), "200"]).inc();
            resp
        }
        Err(e) => {
            count_refusal(s, &e);
            let retry = s.broker.get().map_or(1, |b| b.cfg().retry_after_secs);
            let refusal = Refusal::new(e.code(), e.to_string(), e.retry_after_secs(), retry);
            if e.code().status() >= 500 {
                tracing::warn!(signal = ?signal, code = e.code().as_str(), error = %e, "OTLP export refused");
            } else {
                // A client's own error: counted by status; at debug (see ingest).
                tracing::debug!(signal = ?signal, code = e.code().as_str(), error = %e, "OTLP export refused");
            }
            let resp = refusal.http_response(encoding);
            let topic = topic_of(s).unwrap_or_else(|| "_unknown".into());
            s.metrics.ingest_requests.with_label_values(&[topic.as_str(), resp.status().as_str()]).inc();
            resp
        }
    }
}
