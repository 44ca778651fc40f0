//! The lease protocol between the broker and exporters (see `docs/leases.md`).
//!
//! All calls take the destination's exporter token:
//!
//! | call | path |
//! |------|------|
//! | acquire (long-poll) | `POST /v1/destinations/{d}/leases` with [`AcquireRequest`] → [`AcquireResponse`] |
//! | heartbeat | `POST /v1/destinations/{d}/leases/{id}/heartbeat` → [`HeartbeatResponse`] |
//! | commit | `POST /v1/destinations/{d}/leases/{id}/commit` with [`CommitRequest`] |
//! | fail | `POST /v1/destinations/{d}/leases/{id}/fail` with [`FailRequest`] |
//! | release | `POST /v1/destinations/{d}/leases/{id}/release` (give back, no failure) |

use serde::{Deserialize, Serialize};

/// The body of an acquire: how much the exporter wants, and how long it
/// waits for it. Every field is optional (the broker's limits apply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AcquireRequest {
    /// Most records in the lease (the broker caps it).
    #[serde(default)]
    pub max_records: Option<u32>,
    /// Most payload bytes in the lease (at least one frame is always given).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Long-poll: wait up to this long for data before answering idle.
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// The asking exporter process, an id it draws at start: the broker sums
    /// the concurrency limits of the exporters it has heard from recently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<String>,
    /// That exporter's current concurrency limit (leases it will hold at
    /// once): the destination's capacity the reservation for the higher
    /// priorities is taken from (see `docs/leases.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u32>,
    /// This exporter takes *joint* leases: one lease of several lanes of a
    /// priority, holding each lane's short runs (lane `normal/joint`, each
    /// record naming its own lane, as in a re-drive). Absent: one lane per
    /// lease (exporters before joint leases).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joint: bool,
    /// With `joint`: this exporter also takes several parts of one lane in
    /// a joint lease (several small tenants' runs waiting behind a batch),
    /// so a lane's offsets are each there once but need not increase.
    /// Absent: one part per lane (exporters whose decoder wants a lane's
    /// offsets increasing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joint_lane_parts: bool,
}

/// Why an acquire got no lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdleReason {
    /// Nothing to deliver.
    Empty,
    /// The breaker is open (or half-open with its probe out).
    BreakerOpen,
    /// The destination is paused by an operator.
    Paused,
    /// `max_in_flight` leases are out already.
    MaxInFlight,
    /// The sink asked to wait (Retry-After) and the time has not come.
    Backoff,
}

/// A v1 (JSON) acquire answer: a lease, or why none and when to ask again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireResponse {
    /// The lease granted, if any.
    pub lease: Option<Lease>,
    /// Set when `lease` is absent: why, and when to ask again.
    pub idle: Option<IdleReason>,
    /// When `lease` is absent: wait this long before the next acquire.
    pub retry_after_ms: u64,
}

/// The `lane` of a lease that re-drives dead letters (records of any lane).
pub const DEAD_LETTERS_LANE: &str = "dead_letters";

/// The shard part of a joint lease's `lane` (`normal/joint`): its records
/// are of several lanes of that priority, each naming its own.
pub const JOINT_SHARD: &str = "joint";

/// A lease's fields, the same in both formats (v1 JSON below, v2 binary in
/// [`crate::lease_binary`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHead {
    /// The lease's id: what heartbeat, commit, fail and release name.
    pub id: String,
    /// The destination it delivers to.
    pub destination: String,
    /// `normal/2`; `normal/joint` for a joint lease (records of several
    /// lanes of one priority); `dead_letters` for a re-drive lease.
    pub lane: String,
    /// Offsets [from, to) of the lane; records of other topics or tenants in
    /// the range are not included.
    pub from_offset: u64,
    /// The end of the range, exclusive.
    pub to_offset: u64,
    /// How long the lease lives without a heartbeat.
    pub lease_ms: u64,
    /// This lease is the one probe of a half-open breaker.
    pub probe: bool,
    /// How many times this range was handed out before.
    pub redeliveries: u32,
}

/// A v1 lease: its fields at the top level of the JSON object, and its
/// records with base64 payloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease's fields.
    #[serde(flatten)]
    pub head: LeaseHead,
    /// The broker's data directory id (downstream ids cover it); absent
    /// from a broker before v1.2.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub broker_id: String,
    /// The records, in offset order (a re-drive: in dead-letter order).
    pub records: Vec<LeasedRecord>,
}

/// One record of a v1 lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedRecord {
    /// The lane the record was acknowledged in, in a re-drive of dead
    /// letters and a joint lease only (a lane lease's records are of its lane).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    /// Its offset in its lane.
    pub offset: u64,
    /// The tenant that sent it.
    pub tenant: String,
    /// Its topic.
    pub topic: String,
    /// When it was acknowledged, ms since the Unix epoch.
    pub ts_ms: u64,
    /// The payload, standard base64.
    pub payload_b64: String,
}

/// What a destination receives, for its exporters: an exporter whose sink
/// takes only OTLP records (`otlp+http`) refuses to start when the
/// destination receives another topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationTopics {
    /// The destination's name.
    pub destination: String,
    /// The topics it receives, as configured.
    pub topics: Vec<String>,
    /// The topics the OTLP signals land in (logs, traces, metrics).
    pub otlp_topics: Vec<String>,
}

/// The answer to a heartbeat: the lease was extended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The lease now lives this long from the heartbeat, without another.
    pub lease_ms: u64,
}

/// A record of the lease to move to dead letters instead of delivering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoisonRecord {
    /// The record's place in the lease as it was sent (0-based): unique
    /// within the lease, where an offset may not be (a re-drive mixes
    /// lanes). Absent from exporters before v1.2, which name the offset
    /// alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The record's offset (checked against `index` when both are given).
    pub offset: u64,
    /// Why the sink refused it (kept with the dead letter).
    pub error: String,
}

/// The body of a commit: the lease was delivered, but for these records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CommitRequest {
    /// Records the sink rejected as poison; stored as dead letters in the
    /// same durable step as the commit.
    #[serde(default)]
    pub dead_letters: Vec<PoisonRecord>,
}

/// The answer to a commit, sent once it is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitResponse {
    /// The commit was applied (always true in a 200).
    pub committed: bool,
    /// The destination's cursor on the lease's lane after the commit.
    pub cursor: u64,
}

/// What kind of failure a fail reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Timeouts, connection errors, 408/429/5xx: counts towards the breaker.
    Retryable,
    /// The exporter is stopping or gave the lease back for another reason.
    Released,
    /// The sink answered 410 Gone (Standard Webhooks and Svix: "stop
    /// sending"): the lease is given back, nothing is dead-lettered, and the
    /// broker pauses the destination until an operator resumes it.
    Gone,
}

/// The body of a fail (and of a release): the lease was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailRequest {
    /// Whether it counts towards the breaker.
    pub class: FailureClass,
    /// The sink's or the exporter's reason, for operators.
    pub message: String,
    /// The sink's Retry-After, if it gave one.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}
