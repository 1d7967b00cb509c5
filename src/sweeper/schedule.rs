//! When a pending payment is asked about, and what a visit does: plain
//! arithmetic on ages, kept free of I/O so it is tested on its own.
//!
//! Everything is by the payment's **age** (now − created), not by how often
//! it was asked: a missed tick, a restart, an instance's claim that expired
//! or a deferral never shifts the schedule, and every instance of a fleet
//! computes the same next time.
//!
//! - `query_after_ms` lists ages; past the last, the last repeats as an
//!   interval: `[60 s, 300 s]` asks at 60 s, 300 s, 600 s, 900 s, …
//! - At `close_after_ms` the payment is asked one last time (an answer may
//!   still settle it) and otherwise closed.
//! - Never before the payment's own deadline (`[server] deadline_ms`) has
//!   passed, with a margin: until then an attempt of it may still be on its
//!   way to a channel, and a query arriving first would read "never had
//!   it" for a payment about to be charged.

use std::time::Duration;

use crate::snapshot::Snapshot;

/// After the payment's deadline, time for its close to be written.
const GUARD_MARGIN: Duration = Duration::from_millis(250);
/// The sweeper looks for due payments at least this often...
const MAX_TICK: Duration = Duration::from_secs(1);
/// ...and at most this often (short schedules, as in tests).
const MIN_TICK: Duration = Duration::from_millis(20);

/// What a visit to a claimed payment does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// Not asked now; due again at this time (Unix ms).
    Later(i64),
    /// Ask the channel. `closing`: past `close_after`, so an answer that
    /// does not settle the payment closes it.
    Ask { closing: bool },
    /// Close without asking (the channel has no `query`, or is gone).
    Close,
}

/// The `[sweeper]` schedule of one config version, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Schedule {
    /// Ages at which to ask, ascending; never empty, each at least 1.
    steps: Vec<i64>,
    close_after: i64,
    /// No visit before this age.
    guard: i64,
}

impl Schedule {
    pub fn of(snap: &Snapshot) -> Schedule {
        Schedule::new(
            &snap.sweeper.query_after,
            snap.sweeper.close_after,
            snap.server.deadline,
        )
    }

    pub fn new(query_after: &[Duration], close_after: Duration, deadline: Duration) -> Schedule {
        let mut steps: Vec<i64> = query_after.iter().map(|d| (d.as_millis() as i64).max(1)).collect();
        // Validation keeps them ascending in practice; the arithmetic must not
        // rely on a config it does not check itself.
        steps.sort_unstable();
        steps.dedup();
        if steps.is_empty() {
            steps.push(close_after.as_millis().max(1) as i64);
        }
        Schedule {
            steps,
            close_after: close_after.as_millis() as i64,
            guard: (deadline + GUARD_MARGIN).as_millis() as i64,
        }
    }

    /// How often to look for due payments: half the shortest step, within
    /// [20 ms, 1 s], so a payment is asked within that of its due time.
    pub fn tick(&self) -> Duration {
        let shortest = self.steps[0].min(self.close_after.max(1)) as u64;
        Duration::from_millis(shortest / 2).clamp(MIN_TICK, MAX_TICK)
    }

    /// The visit to a payment created at `created`, claimed at `now`;
    /// `can_ask`: its channel is configured and has a `query`.
    pub fn plan(&self, created: i64, now: i64, can_ask: bool) -> Plan {
        let age = now - created;
        if age < self.guard {
            return Plan::Later(created + self.guard);
        }
        let closing = age >= self.close_after;
        match (can_ask, closing) {
            (true, closing) => Plan::Ask { closing },
            (false, true) => Plan::Close,
            // Nothing to ask: the next thing that can happen to it is the close.
            (false, false) => Plan::Later(created + self.close_after),
        }
    }

    /// When to ask next about a payment still pending at `now`: the next
    /// step after its age, or the close, whichever is first; never at or
    /// before `now`.
    pub fn next_at(&self, created: i64, now: i64) -> i64 {
        let age = now - created;
        let next = self.next_age(age).min(self.close_after.max(self.guard));
        (created + next).max(now + 1)
    }

    /// The first asking age after `age`: a listed step, or past the last,
    /// the next multiple of the last.
    fn next_age(&self, age: i64) -> i64 {
        if let Some(step) = self.steps.iter().copied().find(|s| *s > age) {
            return step;
        }
        let last = self.steps[self.steps.len() - 1];
        (age / last + 1) * last
    }

    /// Whether a payment created at `created` is past its close at `now`.
    pub fn closing(&self, created: i64, now: i64) -> bool {
        now - created >= self.close_after
    }

    /// The latest a payment created at `created` is visited again when it
    /// is put off (its close).
    pub fn close_at(&self, created: i64) -> i64 {
        created + self.close_after.max(self.guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    fn schedule(steps: &[u64], close: u64, deadline: u64) -> Schedule {
        Schedule::new(
            &ms(steps),
            Duration::from_millis(close),
            Duration::from_millis(deadline),
        )
    }

    #[test]
    fn steps_are_ages_and_the_last_repeats() {
        let s = schedule(&[60_000, 300_000, 900_000, 3_600_000], 7_200_000, 10_000);
        let created = 1_000_000;
        let at = |age| s.next_at(created, created + age) - created;
        assert_eq!(at(10_250), 60_000);
        assert_eq!(at(60_000), 300_000, "a step reached moves on to the next");
        assert_eq!(at(61_234), 300_000);
        assert_eq!(at(300_500), 900_000);
        assert_eq!(at(900_000), 3_600_000);
        // Past the last: the last repeats, but the close comes first.
        assert_eq!(at(3_600_000), 7_200_000);
        let r = schedule(&[500], 60_000, 0);
        let at = |age| r.next_at(0, age);
        assert_eq!(
            [at(250), at(500), at(700), at(1_000), at(1_499)],
            [500, 1_000, 1_000, 1_500, 1_500]
        );
    }

    #[test]
    fn a_late_visit_does_not_shift_the_schedule() {
        let s = schedule(&[1_000, 5_000], 60_000, 0);
        // Asked at 1.0 s or, after a missed tick, at 4.9 s: next at 5 s all the same.
        assert_eq!(s.next_at(0, 1_000), 5_000);
        assert_eq!(s.next_at(0, 4_900), 5_000);
        // Far behind (a restart): the next multiple, never the past.
        assert_eq!(s.next_at(0, 23_000), 25_000);
        assert!(s.next_at(0, 60_000) > 60_000, "never at or before now");
    }

    #[test]
    fn nothing_is_asked_while_the_payment_may_still_be_running() {
        let s = schedule(&[100], 10_000, 1_000);
        assert_eq!(s.plan(0, 100, true), Plan::Later(1_250));
        assert_eq!(s.plan(0, 1_249, true), Plan::Later(1_250));
        assert_eq!(s.plan(0, 1_250, true), Plan::Ask { closing: false });
        // Even a close waits for the deadline.
        let tight = schedule(&[100], 200, 1_000);
        assert_eq!(tight.plan(0, 300, false), Plan::Later(1_250));
        assert_eq!(tight.plan(0, 1_300, false), Plan::Close);
        assert!(tight.next_at(0, 1_300) > 1_300);
    }

    #[test]
    fn a_channel_without_query_is_only_closed() {
        let s = schedule(&[100], 10_000, 0);
        assert_eq!(s.plan(0, 300, false), Plan::Later(10_000));
        assert_eq!(s.plan(0, 10_000, false), Plan::Close);
        assert_eq!(s.plan(0, 10_000, true), Plan::Ask { closing: true });
        assert_eq!(s.plan(0, 9_999, true), Plan::Ask { closing: false });
        assert!(s.closing(0, 10_000) && !s.closing(0, 9_999));
        assert_eq!(s.close_at(5), 10_005);
    }

    #[test]
    fn the_tick_follows_the_shortest_step_within_bounds() {
        assert_eq!(schedule(&[60_000], 7_200_000, 0).tick(), Duration::from_secs(1));
        assert_eq!(schedule(&[300], 7_200_000, 0).tick(), Duration::from_millis(150));
        assert_eq!(schedule(&[1], 7_200_000, 0).tick(), Duration::from_millis(20));
        assert_eq!(schedule(&[60_000], 400, 0).tick(), Duration::from_millis(200));
        // Out-of-order or empty lists are still well-defined.
        let odd = Schedule::new(&ms(&[900, 300]), Duration::from_secs(9), Duration::ZERO);
        assert_eq!(odd.next_at(0, 0), 300);
        let empty = Schedule::new(&[], Duration::from_secs(2), Duration::ZERO);
        assert_eq!(empty.next_at(0, 0), 2_000);
    }
}
