//! Which priority a destination's next lease serves: a weighted share that
//! keeps ingest's priority all the way to the sink.
//!
//! Two rules, both decided by the broker (several exporters may serve one
//! destination, and only the broker sees all their leases):
//!
//! 1. **Weighted share.** Among the priorities that have data waiting, the
//!    next lease goes to the one with the smallest *pass*; a lease of
//!    priority `p` adds `STRIDE[p]` to its pass (stride scheduling). With
//!    the weights 8 : 4 : 1, while all three have data, `high` gets 8 of
//!    every 13 leases, `normal` 4 and `low` 1 — so `low` is never starved,
//!    and a flood demoted to `low` cannot crowd out the others. A priority
//!    that had nothing waiting re-enters at the current virtual time, so an
//!    idle spell does not bank credit for a burst later.
//! 2. **Reservation.** A share of the destination's capacity — the leases
//!    its exporters hold at once (their reported concurrency limits, see
//!    [`crate::capacity`]) — is kept for `high` and `normal`: `low` holds at
//!    most [`low_slots`] leases, the places their leases do not use less a
//!    quarter of the capacity (rounded up), so a higher-priority lease finds
//!    a place at the sink at once instead of queueing behind `low`. While
//!    `high` or `normal` data waits, `low` may have at most one lease in
//!    flight, and only on its turn in the share: a higher-priority record
//!    never waits behind more than one `low` lease (whose size the lease
//!    sizing bounds in time, see
//!    [`crate::sizing`]). With a capacity of one lease, `low` still
//!    progresses: it may take that one lease while the others have nothing
//!    waiting and nothing out (a record arriving then waits behind one `low`
//!    lease at most), and its turn comes once in every 13 leases while they
//!    have data.
//!
//! Pure: the state is plain data kept in the destination's state (so it
//! changes only inside a lease transaction), and nothing here reads a clock.

use wal::Priority;

/// Every priority, in the order a tie is broken; the arrays here are
/// indexed by `Priority as usize` (high 0, normal 1, low 2).
pub const PRIORITIES: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

/// Leases per 13 while every priority has data: 8 high, 4 normal, 1 low.
pub(crate) const WEIGHTS: [u64; 3] = [8, 4, 1];

/// What one lease adds to its priority's pass (8 / weight: derived, so
/// the weights above are the one place the share is set).
const STRIDE: [u64; 3] = [8 / WEIGHTS[0], 8 / WEIGHTS[1], 8 / WEIGHTS[2]];

/// The share's memory: each priority's pass, and the virtual time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Share {
    pass: [u64; 3],
    vtime: u64,
}

/// What the share decides on: per priority, whether data waits and how
/// many leases are out; and the destination's capacity in leases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    pub waiting: [bool; 3],
    pub in_flight: [u32; 3],
    pub capacity: u32,
}

/// The places kept for `high` and `normal` out of `capacity`: a quarter, rounded up.
pub fn reserved(capacity: u32) -> u32 {
    capacity.div_ceil(4)
}

/// The most `low` leases out at once with `capacity` and `higher` leases
/// of `high` and `normal` out: the places they do not use, but for the
/// reserved ones; and one while they have none out, even when that leaves
/// none (so `low` alone always progresses). The higher lanes' leases are
/// counted because they take places at the same sink: a place `low` takes
/// while they use most of them is one their next lease queues behind.
pub fn low_slots(capacity: u32, higher: u32) -> u32 {
    let spare = capacity.saturating_sub(reserved(capacity)).saturating_sub(higher);
    spare.max(u32::from(higher == 0))
}

impl Demand {
    fn higher_waiting(&self) -> bool {
        self.waiting[0] || self.waiting[1]
    }
}

impl Share {
    /// The priorities to search, in order, for the next lease; `low` is
    /// left out while the reservation holds it back.
    pub fn order(&self, d: &Demand) -> Vec<Priority> {
        let pass = |i: usize| self.pass[i].max(self.vtime);
        let mut order: Vec<usize> = (0..3).filter(|&i| d.waiting[i]).collect();
        // Smallest pass first; ties by priority.
        order.sort_by_key(|&i| (pass(i), i));
        // Priorities with nothing waiting are still searched (the waiting
        // flags are a hint: data may land meanwhile), after the others.
        order.extend((0..3).filter(|&i| !d.waiting[i]));
        let low = Priority::Low as usize;
        if !self.low_may_lease(d) {
            order.retain(|&i| i != low);
        }
        order.into_iter().map(|i| PRIORITIES[i]).collect()
    }

    /// Low stays within [`low_slots`]; while higher data waits, it holds
    /// one lease at most, on its turn.
    fn low_may_lease(&self, d: &Demand) -> bool {
        if !d.higher_waiting() {
            return d.in_flight[2] < low_slots(d.capacity, d.in_flight[0] + d.in_flight[1]);
        }
        let pass = |i: usize| self.pass[i].max(self.vtime);
        let low_turn = (0..2).filter(|&i| d.waiting[i]).all(|i| pass(2) < pass(i));
        d.in_flight[2] == 0 && low_turn
    }

    /// A lease of priority `p` was handed out.
    pub fn charge(&mut self, p: Priority) {
        let i = p as usize;
        let start = self.pass[i].max(self.vtime);
        self.vtime = start;
        self.pass[i] = start + STRIDE[i];
        debug_assert!(self.pass.iter().all(|&x| x <= self.vtime + STRIDE[2]), "passes stay within one stride");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_waiting() -> Demand {
        Demand { waiting: [true, true, true], in_flight: [0, 0, 0], capacity: 1 }
    }

    /// Hand out `n` leases with every priority waiting and no lease ever
    /// out for long (each ends before the next acquire).
    fn run(share: &mut Share, n: usize, d: Demand) -> [usize; 3] {
        let mut got = [0; 3];
        for _ in 0..n {
            let p = share.order(&d)[0];
            share.charge(p);
            got[p as usize] += 1;
        }
        got
    }

    #[test]
    fn every_priority_gets_its_weight_while_all_have_data() {
        let mut s = Share::default();
        assert_eq!(run(&mut s, 13 * 100, all_waiting()), [800, 400, 100]);
    }

    #[test]
    fn low_alone_takes_every_lease_within_its_slots() {
        let mut s = Share::default();
        let d = Demand { waiting: [false, false, true], in_flight: [0, 0, 5], capacity: 8 };
        assert_eq!(s.order(&d)[0], Priority::Low, "no higher data: low leases");
        assert_eq!(run(&mut s, 50, d), [0, 0, 50]);
        let full = Demand { in_flight: [0, 0, 6], ..d };
        assert!(!s.order(&full).contains(&Priority::Low), "6 of 8: the last quarter is kept for the others");
    }

    #[test]
    fn the_reservation_keeps_a_quarter_rounded_up_and_low_always_one() {
        let slots: Vec<u32> = [1, 2, 3, 4, 5, 8, 64].into_iter().map(|c| low_slots(c, 0)).collect();
        assert_eq!(slots, [1, 1, 2, 3, 3, 6, 48]);
        // Places the higher lanes use are theirs too; low alone keeps one at least.
        assert_eq!([0, 2, 5, 6, 60].map(|h| low_slots(8, h)), [6, 4, 1, 0, 0]);
        assert_eq!([0, 1].map(|h| low_slots(1, h)), [1, 0]);
        let s = Share::default();
        let one = Demand { waiting: [false, false, true], in_flight: [0; 3], capacity: 1 };
        assert_eq!(s.order(&one)[0], Priority::Low, "capacity 1: low takes it while nothing else waits");
        assert!(!s.order(&Demand { in_flight: [0, 0, 1], ..one }).contains(&Priority::Low));
    }

    #[test]
    fn low_waits_for_its_turn_and_holds_one_lease_at_most_while_higher_data_waits() {
        let mut s = Share::default();
        let mut d = Demand { waiting: [false, true, true], in_flight: [0, 0, 0], capacity: 4 };
        // Normal's turn first (tie broken by priority), then low's turn comes.
        let mut seen_low = false;
        for _ in 0..20 {
            let order = s.order(&d);
            let p = order[0];
            if p == Priority::Low {
                seen_low = true;
                s.charge(p);
                d.in_flight[2] = 1;
                // With one low lease out, low is not offered again.
                assert!(!s.order(&d).contains(&Priority::Low));
                d.in_flight[2] = 0;
            } else {
                assert_eq!(p, Priority::Normal);
                s.charge(p);
            }
        }
        assert!(seen_low, "low progresses while normal has data");
    }

    #[test]
    fn with_capacity_for_one_lease_low_still_gets_one_in_thirteen() {
        // Each lease ends before the next is handed out: the capacity-1 case.
        let mut s = Share::default();
        let got = run(&mut s, 1300, all_waiting());
        assert_eq!(got[2], 100);
    }

    #[test]
    fn an_idle_priority_banks_no_credit() {
        let mut s = Share::default();
        run(&mut s, 1000, Demand { waiting: [false, true, false], in_flight: [0; 3], capacity: 4 });
        // High wakes up: it gets its weighted share from now (within one
        // lease of the phase), not a run of 1000 leases to catch up.
        let got = run(&mut s, 12, Demand { waiting: [true, true, false], in_flight: [0; 3], capacity: 4 });
        assert!(got[0].abs_diff(8) <= 1 && got[1].abs_diff(4) <= 1, "{got:?}");
        let got = run(&mut s, 120, Demand { waiting: [true, true, false], in_flight: [0; 3], capacity: 4 });
        assert!(got[0].abs_diff(80) <= 1 && got[1].abs_diff(40) <= 1, "{got:?}");
    }
}
