//! The deliveries side of the accept path's narrow interface
//! ([`api::LagFlags`]): which destinations receive a tenant's topic, and
//! whether one of them is behind its lag limit for a priority. Read from
//! the flags maintenance publishes; never a wait, never a lock held long.

use super::Deliveries;
use api::{DestinationId, LagFlags, Lagging};
use std::sync::atomic::Ordering;
use wal::Priority;

impl LagFlags for Deliveries {
    fn routes(&self, tenant: &str, topic: &str) -> Vec<DestinationId> {
        self.dests().iter().filter(|d| d.wants(tenant, topic)).map(|d| d.id).collect()
    }

    fn sheds(&self, dest: DestinationId, priority: Priority) -> Option<Lagging> {
        let d = self.dest_by_id(dest)?;
        d.sheds(priority).then(|| Lagging {
            name: d.name.clone(),
            records: d.lag_records.load(Ordering::Relaxed),
            bytes: d.lag_bytes.load(Ordering::Relaxed),
        })
    }
}
