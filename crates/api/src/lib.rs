//! # api — Weir's durable accept path
//!
//! Owns what happens to a batch from the moment its tenant is known to its
//! acknowledgement: the ingest formats (NDJSON, octet-stream, OTLP over
//! HTTP and gRPC: [`otlp`]), the limiter
//! and demotion, idempotency, scoped backpressure, the memory budget of
//! bodies in flight, the WAL append and the answer ([`Accepted`]).
//!
//! ## Invariants
//! - An answer of [`Accepted`] only after the batch's WAL frame is durable;
//!   one request is one frame.
//! - A tenant over its rate goes to `low`; when the limiter cannot decide,
//!   `low` as well — never the tenant's own lane on doubt.
//! - Only the tenants whose data routes to a lagging destination are
//!   refused for its lag ([`LagFlags`]); disk pressure refuses everyone.
//! - A refused batch stores nothing and leaves no idempotency entry.
//! - No tenant holds more than its share of the memory budget.
//!
//! ## Never
//! - depend on sled, leases, cursors or sinks: what it needs of the
//!   deliveries comes through [`LagFlags`], which the broker implements;
//! - block on a destination (lag flags are read, never waited on);
//! - hold a lock across an fsync, or inflate a body on an async worker;
//! - parse a record as anything but its tenant's payload.

#![deny(missing_docs)]

pub mod accepted;
pub mod error;
pub mod http;
pub(crate) mod idempotency;
pub mod intake;
pub mod lag;
pub mod limiter;
pub mod memory;
pub mod metrics;
pub mod otlp;

pub use accepted::Accepted;
pub use error::AcceptError;
pub use intake::Intake;
pub use lag::{DestinationId, LagFlags, Lagging};
