//! One channel's bound on the sweeper's queries: how many at once, how many
//! a second, and a pause after failures. The sweeper never waits on a gate:
//! a payment the gate does not let through now is put off to a time the
//! gate hands out, so the loop goes on with other channels' payments.
//!
//! Put-off times are handed out one rate interval apart (a cursor), so a
//! backlog of thousands of payments on one channel comes back spread at
//! the rate the channel is asked at — each put off once, not on every tick.
//! The sweeper wakes for them ([`Gate::next_put_off`]) rather than on its
//! tick alone: the bucket holds no more than the concurrency, so a loop
//! that came only once a second would ask four a second, not the rate.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The first pause after a query that left the fate unknown; doubles with
/// each further one in a row.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause.
const MAX_PAUSE: Duration = Duration::from_secs(300);

/// What the gate says to one payment's query.
#[derive(Debug)]
pub(super) enum Admission {
    /// Ask now; hold the permit for the length of the query.
    Go(OwnedSemaphorePermit),
    /// The channel is busy (queries in flight or rate spent): come back then.
    Later(Instant),
    /// The channel is failing: no queries until then (the time handed out
    /// is spread past the pause's end).
    Paused(Instant),
}

pub(super) struct Gate {
    permits: Arc<Semaphore>,
    /// Queries at once: the semaphore's size.
    concurrency: usize,
    /// Queries a second.
    rate: f64,
    /// One query's share of a second (`1 / rate`).
    interval: Duration,
    state: Mutex<State>,
}

struct State {
    /// Token bucket: whole tokens are queries allowed now (at most `concurrency`).
    tokens: f64,
    refilled: Instant,
    /// Queries in a row that left the fate unknown.
    failures: u32,
    paused_until: Option<Instant>,
    /// The last put-off time handed out.
    cursor: Instant,
    /// The first time of the run of put-off times that ends at `cursor`.
    run_start: Instant,
}

impl Gate {
    pub fn new(concurrency: usize, rate: f64, now: Instant) -> Gate {
        let concurrency = concurrency.max(1);
        let rate = rate.max(0.001);
        Gate {
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            rate,
            interval: Duration::from_nanos((1e9 / rate) as u64),
            state: Mutex::new(State {
                tokens: concurrency as f64,
                refilled: now,
                failures: 0,
                paused_until: None,
                cursor: now,
                run_start: now,
            }),
        }
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// May a query go to the channel at `now`?
    pub fn admit(&self, now: Instant) -> Admission {
        let mut st = self.lock();
        if let Some(until) = st.paused_until.filter(|u| *u > now) {
            return Admission::Paused(self.spread(&mut st, until));
        }
        let elapsed = now.saturating_duration_since(st.refilled).as_secs_f64();
        st.tokens = (st.tokens + elapsed * self.rate).min(self.concurrency as f64);
        st.refilled = now;
        if st.tokens < 1.0 {
            return Admission::Later(self.spread(&mut st, now));
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                st.tokens -= 1.0;
                Admission::Go(permit)
            }
            Err(_) => Admission::Later(self.spread(&mut st, now)),
        }
    }

    /// The next put-off time, one rate interval after the last one handed
    /// out (and not before `from`).
    fn spread(&self, st: &mut State, from: Instant) -> Instant {
        let at = st.cursor.max(from) + self.interval;
        if st.cursor < from {
            st.run_start = at;
        }
        st.cursor = at;
        at
    }

    /// The next time after `now` a payment put off by this gate comes due,
    /// if any is still to come: the start of the run of handed-out times,
    /// or, inside it, one interval on.
    pub fn next_put_off(&self, now: Instant) -> Option<Instant> {
        let st = self.lock();
        (st.cursor > now).then(|| st.run_start.max(now + self.interval).min(st.cursor))
    }

    /// A query's result: `clear` when the channel gave an answer that says
    /// something (paid, declined, pending, never had it); otherwise the
    /// channel is paused, longer with each failure in a row.
    pub fn report(&self, clear: bool, now: Instant) {
        let mut st = self.lock();
        if clear {
            st.failures = 0;
            st.paused_until = None;
            return;
        }
        st.failures = st.failures.saturating_add(1);
        let pause = FIRST_PAUSE
            .saturating_mul(1 << (st.failures - 1).min(16))
            .min(MAX_PAUSE);
        st.paused_until = Some(now + pause);
    }

    /// Queries in flight now.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.concurrency - self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(a: Admission) -> OwnedSemaphorePermit {
        match a {
            Admission::Go(p) => p,
            other => panic!("expected Go, got {other:?}"),
        }
    }

    fn later(a: Admission) -> Instant {
        match a {
            Admission::Later(t) => t,
            other => panic!("expected Later, got {other:?}"),
        }
    }

    #[test]
    fn never_more_queries_at_once_than_the_bound() {
        let t0 = Instant::now();
        let gate = Gate::new(2, 1_000.0, t0);
        let a = go(gate.admit(t0));
        let _b = go(gate.admit(t0 + Duration::from_millis(5)));
        assert_eq!(gate.in_flight(), 2);
        later(gate.admit(t0 + Duration::from_millis(10)));
        drop(a);
        let _c = go(gate.admit(t0 + Duration::from_millis(15)));
        assert_eq!(gate.in_flight(), 2);
    }

    #[test]
    fn never_faster_than_the_rate() {
        let t0 = Instant::now();
        let gate = Gate::new(4, 10.0, t0);
        // A burst of the concurrency, then one per 100 ms.
        let mut admitted = 0;
        for i in 0..100u64 {
            let now = t0 + Duration::from_millis(i * 10); // one second in 10 ms steps
            if let Admission::Go(permit) = gate.admit(now) {
                admitted += 1;
                drop(permit);
            }
        }
        assert!((13..=14).contains(&admitted), "{admitted} admitted in one second");
    }

    #[test]
    fn put_off_payments_come_back_spread_at_the_rate() {
        let t0 = Instant::now();
        let gate = Gate::new(1, 20.0, t0);
        let _held = go(gate.admit(t0));
        let times: Vec<Instant> = (0..5).map(|_| later(gate.admit(t0))).collect();
        for (i, t) in times.iter().enumerate() {
            assert_eq!(*t, t0 + Duration::from_millis(50) * (i as u32 + 1));
        }
    }

    #[test]
    fn the_next_put_off_is_the_runs_start_then_one_interval_on() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // One at once, ten a second: the second payment is put off.
        let gate = Gate::new(1, 10.0, t0);
        assert!(gate.next_put_off(t0).is_none(), "nothing put off yet");
        let _p = go(gate.admit(t0));
        let first = later(gate.admit(t0));
        let last = later(gate.admit(t0));
        assert_eq!((first, last), (t0 + ms(100), t0 + ms(200)));
        assert_eq!(gate.next_put_off(t0), Some(first));
        assert_eq!(gate.next_put_off(t0 + ms(150)), Some(last));
        assert!(gate.next_put_off(last).is_none(), "the run is over");
        // A pause: the run starts past its end, and nothing is due before.
        gate.report(false, last);
        let after = match gate.admit(last) {
            Admission::Paused(t) => t,
            other => panic!("expected Paused, got {other:?}"),
        };
        assert!(after > last + ms(1_000));
        assert_eq!(gate.next_put_off(last), Some(after));
    }

    #[test]
    fn a_failing_channel_is_paused_longer_each_time_until_it_answers() {
        let t0 = Instant::now();
        let gate = Gate::new(4, 100.0, t0);
        gate.report(false, t0);
        let Admission::Paused(until) = gate.admit(t0) else {
            panic!("not paused")
        };
        assert!(until >= t0 + FIRST_PAUSE);
        gate.report(false, t0);
        gate.report(false, t0);
        let Admission::Paused(until) = gate.admit(t0 + Duration::from_secs(3)) else {
            panic!("not paused")
        };
        assert!(until >= t0 + Duration::from_secs(4), "1 s, 2 s, 4 s");
        // Many failures: capped.
        for _ in 0..40 {
            gate.report(false, t0);
        }
        let Admission::Paused(until) = gate.admit(t0) else {
            panic!("not paused")
        };
        assert!(until <= t0 + MAX_PAUSE + Duration::from_secs(1));
        // After the pause, a query goes; a clear answer ends the pausing.
        let _p = go(gate.admit(t0 + MAX_PAUSE + Duration::from_secs(2)));
        gate.report(true, t0 + MAX_PAUSE + Duration::from_secs(2));
        let _again = go(gate.admit(t0 + MAX_PAUSE + Duration::from_secs(2)));
    }
}
