//! Outlier ejection: a channel that keeps failing is taken out of rotation,
//! then probed back one payment at a time.
//!
//! Modelled on Envoy's consecutive-failure outlier detection and linkerd's
//! failure accrual: `eject_consecutive_failures` channel failures in a row
//! eject it for `eject_base × 2^(n-1)` (capped at `eject_max`, `n` = recent
//! ejections). When that time is up the channel is `probing`: exactly one
//! payment at a time may use it; a success closes the breaker, a failure
//! ejects it again for longer. Only channel failures count: a decline proves
//! the acquirer is alive and resets the run. All state is atomics: admission
//! is on the hot path of every payment.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::config::RoutingConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BreakerState {
    Healthy,
    Ejected,
    Probing,
}

impl BreakerState {
    fn from_u8(v: u8) -> BreakerState {
        match v {
            1 => BreakerState::Ejected,
            2 => BreakerState::Probing,
            _ => BreakerState::Healthy,
        }
    }
}

/// How a payment was let onto the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Normal,
    Probe,
}

/// Permission for one attempt. Record its result with [`Ticket::record`]; a
/// ticket dropped unrecorded (the channel was full, the client went away
/// mid-attempt) frees its probe slot so the channel cannot stay stuck.
pub(crate) struct Ticket<'a> {
    breaker: &'a Breaker,
    pub admission: Admission,
    recorded: bool,
}

impl Ticket<'_> {
    /// Records the attempt; returns the ejection time if this result ejected the channel.
    pub fn record(mut self, failed: bool, now: Instant, cfg: &RoutingConfig) -> Option<Duration> {
        self.recorded = true;
        self.breaker.record(self.admission, failed, now, cfg)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.admission == Admission::Probe && !self.recorded {
            self.breaker.probe_in_flight.store(false, Relaxed);
        }
    }
}

pub(crate) struct Breaker {
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    /// Recent ejections, for the exponential back-off; forgotten after
    /// `eject_max` without an ejection.
    ejections: AtomicU32,
    /// Millis since `started`: end of the current ejection.
    ejected_until: AtomicU64,
    /// Millis since `started`: when the current ejection began.
    ejected_at: AtomicU64,
    probe_in_flight: AtomicBool,
    started: Instant,
}

impl Breaker {
    pub fn new() -> Breaker {
        Breaker {
            state: AtomicU8::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejected_at: AtomicU64::new(0),
            probe_in_flight: AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    /// Millis since `started`. Time is given, not read, so the simulator
    /// can run a breaker in virtual time.
    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_millis() as u64
    }

    /// The state as seen at `now` (an ejection whose time is up reads as probing).
    pub fn state(&self, now: Instant) -> BreakerState {
        match BreakerState::from_u8(self.state.load(Relaxed)) {
            BreakerState::Ejected if self.ms(now) >= self.ejected_until.load(Relaxed) => BreakerState::Probing,
            s => s,
        }
    }

    /// Could a payment be admitted now? (No side effect; see [`Breaker::admit`].)
    pub fn available(&self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Healthy => true,
            BreakerState::Probing => !self.probe_in_flight.load(Relaxed),
            BreakerState::Ejected => false,
        }
    }

    /// Lets one payment onto the channel, or refuses it. The ticket must be
    /// handed back with the result; dropped unused, it frees a probe slot.
    pub fn admit(&self, now: Instant) -> Option<Ticket<'_>> {
        let admission = match self.state(now) {
            BreakerState::Healthy => Admission::Normal,
            BreakerState::Ejected => return None,
            BreakerState::Probing => {
                // Move a timed-out ejection to probing, then take the one probe slot.
                let _ = self.state.compare_exchange(1, 2, Relaxed, Relaxed);
                self.probe_in_flight
                    .compare_exchange(false, true, Relaxed, Relaxed)
                    .ok()?;
                Admission::Probe
            }
        };
        Some(Ticket {
            breaker: self,
            admission,
            recorded: false,
        })
    }

    /// Records the result of an admitted payment's attempt. `failed` is a
    /// channel failure (connect, timeout, 5xx); successes and declines are not.
    fn record(&self, admission: Admission, failed: bool, now: Instant, cfg: &RoutingConfig) -> Option<Duration> {
        match (admission, failed) {
            (Admission::Probe, false) => {
                self.consecutive_failures.store(0, Relaxed);
                self.state.store(0, Relaxed);
                self.probe_in_flight.store(false, Relaxed);
                None
            }
            (Admission::Probe, true) => {
                let time = self.eject(now, cfg);
                self.probe_in_flight.store(false, Relaxed);
                Some(time)
            }
            (Admission::Normal, false) => {
                self.consecutive_failures.store(0, Relaxed);
                None
            }
            (Admission::Normal, true) => {
                let run = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
                let trips = run >= cfg.eject_consecutive_failures;
                // Only the attempt that flips healthy → ejected ejects.
                (trips && self.state.compare_exchange(0, 1, Relaxed, Relaxed).is_ok()).then(|| self.eject(now, cfg))
            }
        }
    }

    fn eject(&self, now: Instant, cfg: &RoutingConfig) -> Duration {
        let now = self.ms(now);
        // The back-off remembers ejections until the channel has been quiet
        // (not ejected) for `eject_max`: a channel that stays down keeps
        // doubling, one that recovered for good starts from the base again.
        let quiet = now.saturating_sub(self.ejected_until.load(Relaxed));
        if quiet > cfg.eject_max.as_millis() as u64 {
            self.ejections.store(0, Relaxed);
        }
        let n = self.ejections.fetch_add(1, Relaxed).min(20);
        let time = cfg.eject_base.saturating_mul(1 << n).min(cfg.eject_max);
        self.ejected_at.store(now, Relaxed);
        self.ejected_until.store(now + time.as_millis() as u64, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.state.store(1, Relaxed);
        time
    }

    /// A new config's `eject_max` applies to the ejection under way too: it
    /// ends no later than `eject_max` after it began. (An operator lowering
    /// the ceiling wants the channel back, not after the old ceiling.)
    pub fn limit_ejection(&self, eject_max: Duration) {
        let latest = self
            .ejected_at
            .load(Relaxed)
            .saturating_add(eject_max.as_millis() as u64);
        self.ejected_until.fetch_min(latest, Relaxed);
    }

    /// Time left in the current ejection.
    #[cfg(test)]
    fn ejected_for(&self, now: Instant) -> Duration {
        Duration::from_millis(self.ejected_until.load(Relaxed).saturating_sub(self.ms(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(base_ms: u64) -> RoutingConfig {
        let text = format!(
            "[routing]\neject_consecutive_failures = 3\neject_base_ms = {base_ms}\n[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n"
        );
        crate::config::Config::parse(&text, "t.toml".as_ref()).unwrap().routing
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let (b, cfg) = (Breaker::new(), cfg(60_000));
        let now = Instant::now();
        let attempt = |failed| b.admit(now).unwrap().record(failed, now, &cfg);
        attempt(true);
        attempt(true);
        attempt(false); // a decline or success breaks the run
        attempt(true);
        attempt(true);
        assert_eq!(b.state(now), BreakerState::Healthy);
        attempt(true);
        assert_eq!(b.state(now), BreakerState::Ejected);
        assert!(b.admit(now).is_none());
        assert!(!b.available(now));
    }

    #[test]
    fn probes_one_at_a_time_then_heals() {
        let (b, cfg) = (Breaker::new(), cfg(1));
        let mut now = Instant::now();
        for _ in 0..3 {
            b.admit(now).unwrap().record(true, now, &cfg);
        }
        now += Duration::from_millis(5);
        assert_eq!(b.state(now), BreakerState::Probing);
        let probe = b.admit(now).unwrap();
        assert_eq!(probe.admission, Admission::Probe);
        assert!(b.admit(now).is_none(), "a second probe must wait");
        drop(probe);
        let probe = b.admit(now).expect("an unused probe ticket frees the slot");
        probe.record(false, now, &cfg);
        assert_eq!(b.state(now), BreakerState::Healthy);
        assert_eq!(b.admit(now).unwrap().admission, Admission::Normal);
    }

    #[test]
    fn failed_probe_ejects_for_longer() {
        let (b, cfg) = (Breaker::new(), cfg(50));
        let mut now = Instant::now();
        for _ in 0..3 {
            b.admit(now).unwrap().record(true, now, &cfg);
        }
        now += Duration::from_millis(60);
        let probe = b.admit(now).unwrap();
        assert_eq!(probe.admission, Admission::Probe);
        probe.record(true, now, &cfg);
        assert_eq!(b.state(now), BreakerState::Ejected);
        // Second ejection: base × 2.
        assert!(b.ejected_for(now) > Duration::from_millis(50));
        assert!(b.ejected_for(now) <= Duration::from_millis(100));
    }

    #[test]
    fn back_off_keeps_growing_while_the_channel_stays_down() {
        let mut cfg = cfg(20);
        cfg.eject_max = Duration::from_millis(40);
        let b = Breaker::new();
        let mut now = Instant::now();
        for _ in 0..3 {
            b.admit(now).unwrap().record(true, now, &cfg);
        }
        // Probe failures well past `eject_max` since start: still ejected for the cap, not the base.
        for _ in 0..2 {
            now += Duration::from_millis(45);
            b.admit(now).expect("probe").record(true, now, &cfg);
        }
        assert!(
            b.ejected_for(now) > Duration::from_millis(25),
            "{:?}",
            b.ejected_for(now)
        );
    }

    /// Finding 10 of issue 18: a reload that lowers `eject_max` shortens
    /// the ejection under way; a higher one never lengthens it.
    #[test]
    fn a_lower_eject_max_shortens_the_current_ejection() {
        let mut long = cfg(10);
        long.eject_base = Duration::from_millis(86_400_000);
        long.eject_max = Duration::from_millis(86_400_000);
        let b = Breaker::new();
        let now = Instant::now();
        for _ in 0..3 {
            b.admit(now).unwrap().record(true, now, &long);
        }
        assert!(b.ejected_for(now) > Duration::from_secs(86_000));
        b.limit_ejection(Duration::from_secs(172_800));
        assert!(
            b.ejected_for(now) <= Duration::from_millis(86_400_000),
            "a higher ceiling lengthened it"
        );
        b.limit_ejection(Duration::from_secs(60));
        assert!(
            b.ejected_for(now) <= Duration::from_secs(60),
            "{:?}",
            b.ejected_for(now)
        );
        assert_eq!(b.state(now), BreakerState::Ejected);
        b.limit_ejection(Duration::ZERO);
        assert_eq!(b.state(now), BreakerState::Probing);
        // A healthy channel is untouched.
        let fresh = Breaker::new();
        fresh.limit_ejection(Duration::ZERO);
        assert_eq!(fresh.state(now), BreakerState::Healthy);
    }
}
