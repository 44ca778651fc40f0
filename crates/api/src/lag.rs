//! What the accept path needs from the deliveries side, and no more: which
//! destinations receive a tenant's topic, and whether one of them is behind
//! its lag limit for a priority. The broker implements [`LagFlags`] over
//! its destinations; this crate never sees a lease, a cursor or sled.

pub use config::DestinationId;
use wal::Priority;

/// How far a lagging destination is behind, for the refusal's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lagging {
    /// The destination's configured name.
    pub name: String,
    /// Records routed to it that it has not committed, as of the last
    /// maintenance pass.
    pub records: u64,
    /// Bytes of WAL it has not committed, as of the last maintenance pass.
    pub bytes: u64,
}

/// The destinations' lag flags, read (never waited on) by every ingest.
pub trait LagFlags: Send + Sync {
    /// The destinations that receive records of (tenant, topic).
    fn routes(&self, tenant: &str, topic: &str) -> Vec<DestinationId>;

    /// `Some` when records stored at `priority` would be behind `dest`'s
    /// lag limit, so the tenants routed to it are refused with 429.
    fn sheds(&self, dest: DestinationId, priority: Priority) -> Option<Lagging>;
}
