//! The periodic loop: one pass runs the destinations' upkeep (lease
//! expiry, lag and backpressure, `drop_oldest`, retention), then the
//! intake's disk and idempotency checks, and the WAL lane gauges.

use crate::deliveries::Deliveries;
use crate::error::BrokerError;
use crate::metrics::Metrics;
use api::Intake;
use plumbing::clock::now_ms;
use std::sync::Arc;
use std::time::Duration;
use wal::LaneId;
use wal::Wal;

/// What one maintenance pass did to the destinations' cursors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub leases_expired: usize,
    /// (destination index, lane, offset): the cursor was moved forward to
    /// the offset by drop-oldest or age retention, dropping what was below.
    pub skipped: Vec<(config::DestinationId, LaneId, u64)>,
}

/// The services one maintenance pass touches, each through what it owns:
/// the deliveries (upkeep, retention), the intake (disk flags, the
/// idempotency window, the memory gauge's source), the WAL (lane health)
/// and the metrics. Built by [`crate::core::Broker::maintenance`]; never reaches back
/// through the broker.
pub(crate) struct Maintenance {
    pub(crate) deliveries: Arc<Deliveries>,
    pub(crate) intake: Arc<Intake>,
    pub(crate) wal: Arc<Wal>,
    pub(crate) metrics: Arc<Metrics>,
    /// How often a pass runs (`maintenance_interval_ms`).
    pub(crate) interval: Duration,
}

impl Maintenance {
    /// Run a pass every interval until the process stops.
    pub(crate) async fn run(self) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.pass_at(now_ms()).await {
                tracing::error!(error = %e, "maintenance pass failed; retrying next tick");
            }
        }
    }

    /// One maintenance pass at `now` (the clock is an argument for the tests).
    pub(crate) async fn pass_at(&self, now: u64) -> Result<MaintenanceReport, BrokerError> {
        let mut report = MaintenanceReport::default();
        self.deliveries.upkeep(now, &mut report).await?;
        let wal_bytes = self.deliveries.retain(now, &mut report).await?;
        self.intake.refresh_disk(wal_bytes);
        self.intake.expire_idempotency(now);
        let held = i64::try_from(self.intake.memory().held_bytes()).unwrap_or(i64::MAX);
        self.metrics.memory_budget_held.set(held);
        for lane in self.wal.lanes() {
            let failed = i64::from(lane.failure().is_some());
            self.metrics.wal_lane_failed.with_label_values(&[&lane.id().to_string()]).set(failed);
        }
        Ok(report)
    }
}
