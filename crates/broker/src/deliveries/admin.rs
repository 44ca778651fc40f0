//! Operator actions on destinations: status, pause/resume, breaker reset,
//! rewind, dead letters and their re-drive. Each change is flushed to sled
//! before it is answered.

use super::settle::end_lease;
use super::Deliveries;
use crate::breaker::{Breaker, LeaseEnd};
use crate::destination::{DestState, Destination, LaneLeases, LeaseSource};
use crate::error::{BrokerError, RequestPart};
use crate::store::DestFlags;
use plumbing::clock::now_ms;
use protocol::{ActionResult, BreakerView, DestinationStatus, LaneCursor, RewindTarget};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

/// `paused_reason` of a destination an operator paused.
const OPERATOR: &str = "operator";
use wal::LaneId;

fn done(dest: &Destination, action: &str, detail: String) -> ActionResult {
    ActionResult { destination: dest.name.clone(), action: action.into(), detail }
}

impl Deliveries {
    pub fn destination_status(&self, dest: &Destination) -> DestinationStatus {
        let now = now_ms();
        let st = dest.state();
        let cursors = self
            .wal
            .lanes()
            .map(|l| LaneCursor { lane: l.id().to_string(), committed: st.committed(l.id()), end: l.next_offset() })
            .collect();
        DestinationStatus {
            name: dest.name.clone(),
            topics: dest.cfg.topics.clone(),
            lag_records: dest.lag_records.load(Ordering::Relaxed),
            lag_bytes: dest.lag_bytes.load(Ordering::Relaxed),
            oldest_pending_age_ms: dest.oldest_pending_age_ms.load(Ordering::Relaxed),
            leases_in_flight: st.deliveries_out().len() as u64,
            dead_letter_records: dest.dead_letters.load(Ordering::Relaxed),
            breaker: BreakerView {
                state: st.breaker.state.as_str().to_string(),
                consecutive_failures: st.breaker.consecutive_failures,
                retry_in_ms: st.breaker.retry_in_ms(now, dest.policy),
            },
            paused: st.paused,
            paused_reason: st.paused_reason.clone(),
            dropped_records: dest.dropped.load(Ordering::Relaxed),
            backpressure: dest.sheds(wal::Priority::High) || dest.sheds(wal::Priority::Low),
            cursors,
        }
    }

    /// Pause `dest` for `reason` (or resume it, with none): sled first, so
    /// an error leaves the flag as it was; then the state and the gauge.
    /// Leases in flight stay held; a paused destination only gets no new
    /// ones. The caller holds `st` (the destination's lock) and flushes.
    pub(super) fn pause_as(
        &self,
        dest: &Destination,
        st: &mut DestState,
        reason: Option<String>,
    ) -> Result<(), BrokerError> {
        let paused = reason.is_some();
        self.store.set_flags(&dest.name, &DestFlags { paused, reason: reason.clone() })?;
        st.paused = paused;
        st.paused_reason = reason;
        self.metrics.destination_paused.with_label_values(&[dest.name.as_str()]).set(i64::from(paused));
        Ok(())
    }

    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<ActionResult, BrokerError> {
        let dest = &self.dest(name)?;
        {
            // sled first: an error leaves the flag as it was. Leases in
            // flight stay held; a paused destination only gets no new ones.
            let mut st = dest.state();
            self.pause_as(dest, &mut st, paused.then(|| OPERATOR.to_string()))?;
        }
        self.store.flush().await?;
        tracing::info!(destination = %dest.name, paused, "destination pause flag changed by an operator");
        let action = if paused { "pause" } else { "resume" };
        Ok(done(dest, action, format!("destination is {}", if paused { "paused" } else { "running" })))
    }

    pub async fn reset_breaker(&self, name: &str) -> Result<ActionResult, BrokerError> {
        let dest = &self.dest(name)?;
        {
            let mut st = dest.state();
            self.store.set_breaker(&dest.name, &Breaker::default())?;
            st.breaker = Breaker::default();
            st.not_before_ms = 0;
        }
        self.store.flush().await?;
        tracing::info!(destination = %dest.name, "breaker reset by an operator");
        Ok(done(dest, "reset_breaker", "breaker closed".into()))
    }

    /// Move cursors back (or forward); leases in flight are void (their
    /// commits get lease_not_found) and everything from the new cursor is
    /// delivered again.
    pub async fn rewind(&self, name: &str, target: RewindTarget) -> Result<ActionResult, BrokerError> {
        self.rewind_at(name, target, now_ms()).await
    }

    /// [`Deliveries::rewind`] at `now`. Voided leases end as cancelled (a
    /// cancelled probe frees the breaker's half-open slot), and every lease
    /// record of a rewound lane goes, so a restart cannot raise the cursor
    /// over what the rewind asked to redeliver.
    pub async fn rewind_at(&self, name: &str, target: RewindTarget, now: u64) -> Result<ActionResult, BrokerError> {
        let dest = &self.dest(name)?;
        let only_lane = match &target {
            RewindTarget::Offset { lane: Some(l), .. } => {
                Some(l.parse::<LaneId>().map_err(|e| BrokerError::bad(RequestPart::Lane, e))?)
            }
            _ => None,
        };
        let mut targets = Vec::new();
        for lane in self.wal.lanes() {
            let id = lane.id();
            if only_lane.is_some_and(|l| l != id) {
                continue;
            }
            let (earliest, end) = (lane.earliest_offset(), lane.next_offset());
            let to = match &target {
                RewindTarget::Earliest => earliest,
                RewindTarget::Offset { offset, .. } => (*offset).clamp(earliest, end),
                RewindTarget::Timestamp { ts_ms } => {
                    let mut found = end;
                    lane.visit_frames(earliest, |f| {
                        if f.header.ts_ms >= *ts_ms {
                            found = f.header.base_offset;
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    })
                    .map_err(|source| BrokerError::Wal { lane: id, source })?;
                    found
                }
            };
            targets.push((id, to));
        }
        {
            let mut st = dest.state();
            self.transact(dest, &mut st, |next, _| {
                for &(id, to) in &targets {
                    let void: Vec<String> = next
                        .leases
                        .values()
                        .filter(|l| l.source == LeaseSource::Lane(id))
                        .map(|l| l.id.clone())
                        .collect();
                    for lid in void {
                        end_lease(dest, next, &lid, LeaseEnd::Cancelled, now)?;
                    }
                    next.lanes.insert(id, LaneLeases::at(to));
                }
                Ok(())
            })?;
            // What waits moved back: each rewound lane's index starts over
            // from its new floor (still under the state's lock).
            let mut fair = dest.fair();
            for &(id, _) in &targets {
                fair.forget_lane(id);
            }
        }
        self.store.flush().await?;
        tracing::info!(destination = %dest.name, target = ?target, "cursor rewound by an operator");
        let moved: Vec<String> = targets.iter().map(|(id, to)| format!("{id}={to}")).collect();
        Ok(done(dest, "rewind", format!("cursors now {}", moved.join(" "))))
    }

    /// The destination's oldest dead letters (id, record), at most `limit`.
    pub fn dead_letters(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<(u64, crate::store::DeadLetterRecord)>, BrokerError> {
        let dest = &self.dest(name)?;
        Ok(self.store.dead_letters(&dest.name, limit)?)
    }

    /// Queue every dead letter of the destination for delivery again; they
    /// leave the dead letters when an exporter commits them.
    pub fn redrive(&self, name: &str) -> Result<ActionResult, BrokerError> {
        let dest = &self.dest(name)?;
        let ids: Vec<u64> = self.store.dead_letters(&dest.name, usize::MAX)?.into_iter().map(|(id, _)| id).collect();
        let mut st = dest.state();
        let out: std::collections::HashSet<u64> = st
            .leases
            .values()
            .filter_map(|l| match &l.source {
                LeaseSource::DeadLetters(ids) => Some(ids.clone()),
                LeaseSource::Lane(_) => None,
            })
            .flatten()
            .chain(st.redrive.iter().copied())
            .collect();
        let fresh: Vec<u64> = ids.into_iter().filter(|id| !out.contains(id)).collect();
        st.redrive.extend(fresh.iter().copied());
        tracing::info!(destination = %dest.name, records = fresh.len(), "dead letters queued for re-drive");
        Ok(done(dest, "redrive", format!("{} dead letters queued for delivery", fresh.len())))
    }
}
