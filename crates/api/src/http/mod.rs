//! The HTTP edge of the ingest route: an authenticated request — its
//! tenant known — in, the accept path's answer out. The broker's server
//! routes, authenticates (the token table is `config::tokens`), counts and
//! renders; everything between the token and the acknowledgement is here.
//!
//! Order of refusals (the contract's, unchanged): the body is read first
//! (size limit, deadline, memory budget), then the topic, the media type,
//! the encoding and the `Idempotency-Key` are checked, then the batch is
//! parsed, admitted and appended.

pub mod body;
pub mod headers;

use crate::intake::ingest::{ingest, IngestInput};
use crate::{AcceptError, Accepted, Intake};
use axum::body::Body;
use axum::http::HeaderMap;
use headers::{encoding_of, format_of, header_str, idempotency_key};
use std::sync::Arc;
use std::time::Duration;

/// One ingest request whose token named `tenant`.
pub struct IngestRequest<'a> {
    /// The tenant its token names ([`Intake::tenant`]).
    pub tenant: Arc<crate::intake::Tenant>,
    /// The topic as the path named it; one the tenant's configuration does
    /// not know is refused as [`AcceptError::UnknownTopic`] after the body.
    pub topic: &'a str,
    /// The request's headers (`Content-Type`, `Content-Encoding`,
    /// `Content-Length`, `Idempotency-Key`).
    pub headers: &'a HeaderMap,
    /// The body, not read yet: [`accept`] reads it within its limits.
    pub body: Body,
}

/// Serve one authenticated ingest request: read its body within `limit`
/// bytes and `timeout`, then accept it (parse, admit, append: see
/// `intake::ingest`).
pub async fn accept(
    intake: &Arc<Intake>,
    req: IngestRequest<'_>,
    limit: u64,
    timeout: Duration,
) -> Result<Accepted, AcceptError> {
    let IngestRequest { tenant, topic, headers, body } = req;
    // Announced before the body is read: the WAL's group commit waits for
    // batches that are on their way.
    let arrival = intake.wal().announce();
    let declared = header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    let mut charge = crate::memory::Charge::default();
    // Twice: the body, and the frame built from it; against the tenant's share.
    let to = body::Budget { budget: intake.memory(), tenant: Some(&tenant.memory_held), factor: 2 };
    let bytes = body::read(body, declared, limit, timeout, to, &mut charge).await?;
    let topic_slot = tenant.topic(topic).ok_or_else(|| AcceptError::UnknownTopic { topic: topic.to_string() })?;
    let format = format_of(header_str(headers, "content-type"))?;
    let encoding = encoding_of(header_str(headers, "content-encoding"))?;
    let idempotency_key = idempotency_key(headers)?;
    let input =
        IngestInput { tenant, topic, topic_slot, format, encoding, idempotency_key, body: bytes, charge, arrival };
    ingest(intake, input).await
}
