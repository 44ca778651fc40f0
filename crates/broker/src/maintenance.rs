//! The periodic loop: one pass runs the destinations' upkeep (lease
//! expiry, lag and backpressure, `drop_oldest`, retention), then the
//! intake's disk and idempotency checks, and the WAL lane gauges.

use crate::core::Broker;
use crate::error::BrokerError;
use plumbing::clock::now_ms;
use std::sync::Arc;
use wal::LaneId;

/// Run until the process stops.
pub async fn run(b: Arc<Broker>) {
    let mut tick = tokio::time::interval(b.cfg().timing.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = b.maintain().await {
            tracing::error!(error = %e, "maintenance pass failed; retrying next tick");
        }
    }
}

/// What one maintenance pass did to the destinations' cursors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub leases_expired: usize,
    /// (destination index, lane, offset): the cursor was moved forward to
    /// the offset by drop-oldest or age retention, dropping what was below.
    pub skipped: Vec<(usize, LaneId, u64)>,
}

impl Broker {
    /// One maintenance pass.
    pub async fn maintain(&self) -> Result<(), BrokerError> {
        self.maintain_at(now_ms()).await.map(|_| ())
    }

    /// One maintenance pass at `now` (the clock is an argument for the tests).
    pub async fn maintain_at(&self, now: u64) -> Result<MaintenanceReport, BrokerError> {
        let mut report = MaintenanceReport::default();
        self.deliveries().upkeep(now, &mut report).await?;
        let wal_bytes = self.deliveries().retain(now, &mut report).await?;
        self.intake().refresh_disk(wal_bytes);
        self.intake().expire_idempotency(now);
        self.metrics().memory_budget_held.set(i64::try_from(self.intake().memory().held_bytes()).unwrap_or(i64::MAX));
        for lane in self.wal().lanes() {
            let failed = i64::from(lane.failure().is_some());
            self.metrics().wal_lane_failed.with_label_values(&[&lane.id().to_string()]).set(failed);
        }
        Ok(report)
    }
}
