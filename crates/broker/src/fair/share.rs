//! The share between the tenants of one priority: start-time fair
//! queueing over leases, by weight.
//!
//! Each (priority, tenant) has a *tag*: the service it has had, in records
//! divided by its weight. A tenant that starts waiting gets the priority's
//! clock as its tag (it banks no credit while idle); the clock is the tag
//! of the last lease handed out. A lease charges each tenant whose records
//! it holds `records / weight`. The acquire serves the waiting tenant with
//! the lowest tag (`Fair::pick` compares it with the floor's tenant), so
//! over any busy interval each waiting tenant gets records in proportion to
//! its weight, and a tenant with one record waiting is served by the next
//! lease of its priority.
//!
//! Memory: one tag per tenant served recently. Tags at or below the clock
//! say nothing a missing tag does not; when the map grows past
//! [`MAX_TAGS`], each priority's clock moves up to its median tag and the
//! tags at or below it go (those tenants had the least service: they lose
//! no turn, they are treated as if they had just started waiting).

use std::collections::HashMap;
use std::sync::Arc;
use wal::Priority;

/// The weights the share tells apart (a config weight beyond is taken as
/// the nearest): a tag grows by at most `max_lease_records / MIN_WEIGHT`.
pub const MIN_WEIGHT: f64 = 1e-6;
/// See [`MIN_WEIGHT`].
pub const MAX_WEIGHT: f64 = 1e6;

/// Tags kept before those at or below the clock are dropped.
pub const MAX_TAGS: usize = 8192;

/// Per priority, each tenant's tag and the clock (see the module doc).
#[derive(Debug, Default)]
pub struct TenantShare {
    tags: HashMap<(Priority, Arc<str>), f64>,
    clock: [f64; 3],
}

impl TenantShare {
    /// `tenant`'s tag at `p`: its service so far, never below the clock.
    pub fn tag(&self, p: Priority, tenant: &Arc<str>) -> f64 {
        let clock = self.clock[p as usize];
        self.tags.get(&(p, tenant.clone())).map_or(clock, |&t| t.max(clock))
    }

    /// A lease at `p` whose chosen tenant had tag `start` holds `records`
    /// of `tenant`, whose weight is `weight`.
    pub fn charge(&mut self, p: Priority, start: f64, tenant: &Arc<str>, records: u64, weight: f64) {
        debug_assert!(weight > 0.0 && weight.is_finite(), "weights are checked at load");
        // Any weight the config takes keeps every tag finite.
        let weight = weight.clamp(MIN_WEIGHT, MAX_WEIGHT);
        let clock = &mut self.clock[p as usize];
        *clock = clock.max(start);
        let from = self.tag(p, tenant);
        self.tags.insert((p, tenant.clone()), from + records as f64 / weight);
        if self.tags.len() > MAX_TAGS {
            self.forget_half();
        }
    }

    /// Move each priority's clock up to its median tag and drop the tags
    /// it reached: halves the map (see the module doc).
    fn forget_half(&mut self) {
        for p in Priority::ALL {
            let mut tags: Vec<f64> = self.tags.iter().filter(|((q, _), _)| *q == p).map(|(_, &t)| t).collect();
            if tags.is_empty() {
                continue;
            }
            let mid = tags.len() / 2;
            let (_, median, _) = tags.select_nth_unstable_by(mid, f64::total_cmp);
            self.clock[p as usize] = self.clock[p as usize].max(*median);
        }
        let clocks = self.clock;
        self.tags.retain(|(p, _), t| *t > clocks[*p as usize]);
    }

    /// Tags kept (for the bounds' tests).
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        self.tags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_that_starts_waiting_gets_the_clock_and_weights_divide_the_charge() {
        let mut s = TenantShare::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let p = Priority::Normal;
        s.charge(p, 0.0, &a, 500, 1.0);
        assert_eq!(s.tag(p, &a), 500.0);
        assert_eq!(s.tag(p, &b), 0.0, "b banks nothing while idle");
        s.charge(p, 500.0, &a, 500, 1.0);
        assert_eq!(s.tag(p, &b), 500.0, "the clock moved to the last lease's start");
        s.charge(p, 500.0, &b, 100, 4.0);
        assert_eq!(s.tag(p, &b), 525.0);
        assert_eq!(s.tag(Priority::High, &a), 0.0, "priorities keep their own tags");
    }

    #[test]
    fn tags_stay_bounded() {
        let mut s = TenantShare::default();
        for i in 0..(3 * MAX_TAGS) {
            let t: Arc<str> = format!("t{i}").into();
            let start = s.tag(Priority::Low, &t);
            s.charge(Priority::Low, start, &t, 1, 1.0);
        }
        assert!(s.kept() <= MAX_TAGS + 1);
    }
}
