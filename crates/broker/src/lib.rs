//! # broker — Weir's server
//!
//! Owns the server that composes the accept path (the `api` crate: ingest,
//! limiter and demotion, idempotency, backpressure, the memory budget) and
//! the deliveries behind one listener: the lease protocol with
//! per-destination cursors and breakers, dead letters, retention, the admin
//! API and `/metrics`. Storage is the `wal` crate; configuration and tokens
//! the `config` crate; metadata (cursors, leases, breakers, flags, dead
//! letters) lives in sled, opened by this process only.
//!
//! ## Invariants
//! - 200 on ingest only after the batch's WAL frame is durable; one request
//!   is one frame.
//! - A tenant over its rate goes to `low`; when the limiter cannot decide,
//!   `low` as well — never the normal lane on doubt.
//! - A full queue is a 429 with `Retry-After` and a reason, scoped to the
//!   tenants whose data is behind the lagging destination or disk; a WAL
//!   failure is a 503 `wal_unavailable`; ENOSPC/quota a 507.
//! - A destination's cursor is flushed to sled before its commit is
//!   answered; a segment is deleted only below every destination's durable
//!   cursor.
//! - Every error answer carries a code and a message saying what happened;
//!   [`http::errors`] is the one mapping from errors to HTTP.
//!
//! ## Structure
//! The domain (`ingest`, `leases`, `settle`, `admin`, `maintenance`,
//! `config`, ...) takes and returns its own types and [`error::BrokerError`];
//! everything HTTP — routing, header and body parsing, wire encodings,
//! status codes — is under [`http`]. See `docs/architecture.md`.
//!
//! ## Never
//! - block ingest on a slow destination (exporters lease; nothing pushes);
//! - hold a lock across an fsync on the ingest path;
//! - log a token;
//! - name an axum or hyper type outside [`http`].

#![deny(missing_docs)]

pub(crate) mod breaker;
pub(crate) mod capacity;
pub mod check_config;
pub mod core;
pub(crate) mod deliveries;
pub(crate) mod destination;
pub(crate) mod error;
pub(crate) mod fair;
pub mod http;
pub(crate) mod leased;
pub(crate) mod listeners;
pub(crate) mod maintenance;
pub mod metrics;
pub(crate) mod notify;
pub(crate) mod reload;
pub mod server;
pub(crate) mod share;
pub(crate) mod shutdown;
pub(crate) mod sizing;
pub(crate) mod store;
#[cfg(test)]
mod tests;
