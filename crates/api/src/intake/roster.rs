//! The tenants and topics in force: one immutable snapshot, swapped whole
//! by a configuration reload.
//!
//! A request resolves its tenant once ([`super::Intake::tenant`]) and uses
//! that [`Tenant`] — its lane, its limiter, its routes, its topics' slots —
//! to the end, so a reload in between changes nothing of it: requests in
//! flight finish under the configuration they started with.
//!
//! What outlives a reload for a tenant that stays (found by its
//! [`TenantId`], whatever its position in the file): its limiter's buckets
//! (new limits apply to the level it has, so a reload grants no burst) and
//! its share of the memory budget held by bodies in flight.
//!
//! Invariant: every tenant of a snapshot has routes and counters for
//! exactly the snapshot's topics, indexed by [`TopicSlot`].

use super::shard_of;
use crate::lag::LagFlags;
use crate::limiter::{Limits, TenantLimiter};
use crate::metrics::AcceptMetrics;
use config::{DestinationId, TenantId, ValidConfig};
use prometheus::IntCounter;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use wal::Priority;

/// The `tenant` label of every tenant past `metrics_max_tenant_series`.
pub const OTHER_TENANTS: &str = "_other";

/// A topic's position in the snapshot its tenant belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSlot(usize);

/// A configured tenant as the accept path holds it.
pub struct Tenant {
    /// Its id: stable across reloads.
    pub id: TenantId,
    /// Its configured name (what its token resolves to).
    pub name: String,
    /// Its `tenant` label in `/metrics`: its name, or [`OTHER_TENANTS`]
    /// past `metrics_max_tenant_series` (by id: the first tenants the
    /// broker saw keep their series across reloads).
    pub(crate) label: Arc<str>,
    /// Its own lane's priority, where its in-rate records go.
    pub(crate) priority: Priority,
    /// Its lanes' shard ([`shard_of`] its name): stable across restarts.
    pub(crate) shard: u16,
    pub(crate) limiter: Arc<TenantLimiter>,
    /// Memory-budget units its bodies in flight hold (see [`crate::memory`]).
    pub(crate) memory_held: Arc<AtomicU64>,
    topics: Arc<HashMap<String, usize>>,
    /// `[topic slot]` -> the destinations that receive that data.
    routes: Vec<Vec<DestinationId>>,
    /// `[topic slot][priority]`: `weir_ingest_records_total`, resolved once.
    records: Vec<OnceLock<IntCounter>>,
}

impl Tenant {
    /// The slot of `topic` in this tenant's snapshot, if it is configured.
    pub fn topic(&self, topic: &str) -> Option<TopicSlot> {
        self.topics.get(topic).copied().map(TopicSlot)
    }

    /// The destinations that receive this tenant's records of `topic`.
    pub(crate) fn routes(&self, topic: TopicSlot) -> &[DestinationId] {
        self.routes.get(topic.0).map_or(&[], Vec::as_slice)
    }

    /// `weir_ingest_records_total{tenant,topic,priority}`.
    pub(crate) fn records_counter(
        &self,
        m: &AcceptMetrics,
        (topic, topic_name): (TopicSlot, &str),
        priority: Priority,
    ) -> IntCounter {
        let resolve = || m.ingest_records.with_label_values(&[&*self.label, topic_name, priority.as_str()]);
        match self.records.get(topic.0 * Priority::ALL.len() + priority as usize) {
            Some(cell) => cell.get_or_init(resolve).clone(),
            None => resolve(),
        }
    }
}

/// The tenants and topics of one configuration.
pub(crate) struct Roster {
    tenants: HashMap<TenantId, Arc<Tenant>>,
    topics: Arc<HashMap<String, usize>>,
    /// `[topic slot]`: `weir_ingest_requests_total{topic,code="200"}`.
    ok_requests: Vec<OnceLock<IntCounter>>,
}

impl Roster {
    /// The snapshot of `cfg`, whose tenants have the ids `ids` (in `cfg`'s
    /// order); each tenant `previous` holds keeps its limiter state and its
    /// memory account.
    pub(crate) fn build(cfg: &ValidConfig, ids: &[TenantId], lag: &dyn LagFlags, previous: Option<&Roster>) -> Roster {
        assert_eq!(ids.len(), cfg.tenants.len(), "one id per configured tenant");
        let topics: Arc<HashMap<String, usize>> =
            Arc::new(cfg.topics.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect());
        let tenants = cfg
            .tenants
            .iter()
            .zip(&cfg.priorities)
            .zip(ids)
            .map(|((t, &priority), &id)| {
                let soft = Limits { rate_per_sec: t.rate_per_sec, burst: t.burst as f64 };
                let hard =
                    t.hard_rate_per_sec.zip(t.hard_burst).map(|(r, b)| Limits { rate_per_sec: r, burst: b as f64 });
                let before = previous.and_then(|p| p.tenants.get(&id));
                let limiter = match before {
                    Some(old) if old.limiter.soft == soft && old.limiter.hard == hard => Arc::clone(&old.limiter),
                    Some(old) => Arc::new(old.limiter.with_limits(soft, hard)),
                    None => Arc::new(TenantLimiter::new(soft, hard)),
                };
                let memory_held = before.map_or_else(Arc::default, |old| Arc::clone(&old.memory_held));
                let routes = cfg.topics.iter().map(|topic| lag.routes(&t.name, &topic.name)).collect();
                let own_series = id.index() < cfg.metrics_max_tenant_series;
                let tenant = Tenant {
                    id,
                    name: t.name.clone(),
                    label: Arc::from(if own_series { t.name.as_str() } else { OTHER_TENANTS }),
                    priority,
                    shard: shard_of(&t.name, cfg.shards),
                    limiter,
                    memory_held,
                    topics: Arc::clone(&topics),
                    routes,
                    records: (0..cfg.topics.len() * Priority::ALL.len()).map(|_| OnceLock::new()).collect(),
                };
                (id, Arc::new(tenant))
            })
            .collect();
        let ok_requests = (0..cfg.topics.len()).map(|_| OnceLock::new()).collect();
        Roster { tenants, topics, ok_requests }
    }

    pub(crate) fn tenant(&self, id: TenantId) -> Option<&Arc<Tenant>> {
        self.tenants.get(&id)
    }

    pub(crate) fn has_topic(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// `weir_ingest_requests_total{topic,code="200"}`, resolved once per topic.
    pub(crate) fn ok_requests(&self, m: &AcceptMetrics, topic: &str) -> IntCounter {
        let resolve = || m.ingest_requests.with_label_values(&[topic, "200"]);
        match self.topics.get(topic).and_then(|&slot| self.ok_requests.get(slot)) {
            Some(cell) => cell.get_or_init(resolve).clone(),
            None => resolve(),
        }
    }
}
