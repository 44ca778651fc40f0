//! OTLP/HTTP: an authenticated `POST /v1/{logs,traces,metrics}` in, what it
//! stored out. The broker's server routes and authenticates (the tenant
//! from `Authorization: Bearer`), and renders the answer with
//! [`super::answer`].
//!
//! Order of refusals, as on the record route: the body is read first (size
//! limit, deadline, memory budget), then the media type, the encoding and
//! the `Idempotency-Key`, then the body is inflated, decoded, split and
//! appended.

use super::{export, limits, Export, ExportRequest, Exported, OtlpEncoding, Signal, INLINE_DECODE_BYTES};
use crate::http::body;
use crate::http::headers::{encoding_of, header_str, idempotency_key};
use crate::intake::ingest::{inflate_off_worker, Encoding};
use crate::{AcceptError, Intake};
use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// One OTLP/HTTP request whose token named `tenant`.
pub struct OtlpHttpRequest<'a> {
    /// The tenant its token names ([`crate::Intake::tenant`]).
    pub tenant: std::sync::Arc<crate::intake::Tenant>,
    /// The route's signal.
    pub signal: Signal,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The body, not read yet.
    pub body: Body,
}

/// Serve one authenticated OTLP/HTTP request: read its body within `limit`
/// bytes and `timeout`, then decode, split and append it.
pub async fn accept(
    intake: &Arc<Intake>,
    req: OtlpHttpRequest<'_>,
    limit: u64,
    timeout: Duration,
) -> Result<Exported, AcceptError> {
    let OtlpHttpRequest { tenant, signal, headers, body } = req;
    let arrival = intake.wal().announce();
    let declared = header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    let mut charge = crate::memory::Charge::default();
    let to = body::Budget { budget: intake.memory(), tenant: Some(&tenant.memory_held), factor: 2 };
    let bytes = body::read(body, declared, limit, timeout, to, &mut charge).await?;
    let encoding = OtlpEncoding::of(header_str(headers, "content-type"))?;
    let content_encoding = encoding_of(header_str(headers, "content-encoding"))?;
    let key = idempotency_key(headers)?;
    let inflated: Bytes = match content_encoding {
        Encoding::Identity => bytes,
        Encoding::Gzip => Box::pin(inflate_off_worker(intake, &tenant, bytes, &mut charge)).await?.into(),
    };
    let items = decode_and_split(intake, signal, encoding, inflated.clone()).await?;
    // The records are a second copy of the content (the frame the third,
    // charged with the body): held against the tenant's share too.
    intake.memory().charge_for(Some(&tenant.memory_held), &mut charge, items.bytes)?;
    let call = Export {
        tenant,
        signal,
        items,
        media_type: encoding.media_type(),
        inflated_body: &inflated,
        idempotency_key: key,
        arrival,
    };
    let exported = export(intake, call).await;
    drop(charge);
    exported
}

/// Decode and split on the request's worker when small, on the blocking
/// pool when not.
async fn decode_and_split(
    intake: &Arc<Intake>,
    signal: Signal,
    encoding: OtlpEncoding,
    body: Bytes,
) -> Result<super::records::Items, AcceptError> {
    let limits = limits(intake);
    let small = body.len() <= INLINE_DECODE_BYTES;
    let work = move || ExportRequest::decode(signal, encoding, &body).and_then(|request| request.split(limits));
    if small {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| AcceptError::TaskFailed { what: "decoding OTLP", source })?
}
