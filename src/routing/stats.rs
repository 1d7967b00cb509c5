//! Live statistics of one channel: outcomes over a sliding time window and a
//! Peak-EWMA latency estimate.
//!
//! Both are updated by every attempt on every core, so both are lock-free:
//! the window is a ring of time buckets of atomic counters (a bucket is
//! recycled by whoever first writes to it in a new epoch), and the latency is
//! one atomic `f64`. Readers sum the buckets whose epoch is inside the window,
//! so an idle channel forgets old failures by itself: "60 s ago" really means
//! 60 s ago, not "since start". Counts are approximate under a recycle race
//! (an increment can land just before a reset); never negative, never stuck.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::outcome::Verdict;

/// Buckets per window: the window slides in steps of `window / BUCKETS`.
const BUCKETS: usize = 20;

/// Totals over the current window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct WindowTotals {
    pub successes: u64,
    pub declines: u64,
    pub failures: u64,
    /// Payments whose first attempt went to the channel: its share's numerator.
    pub picks: u64,
}

impl WindowTotals {
    pub fn attempts(&self) -> u64 {
        self.successes + self.declines + self.failures
    }
}

#[derive(Default)]
struct Bucket {
    epoch: AtomicU64,
    successes: AtomicU64,
    declines: AtomicU64,
    failures: AtomicU64,
    picks: AtomicU64,
}

/// Time-bucketed outcome counts over a sliding window.
pub(crate) struct Window {
    started: Instant,
    bucket_nanos: u64,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    pub fn new(window: Duration) -> Window {
        Window::starting(window, Instant::now())
    }

    /// A window whose buckets are cut from `started` on: the simulator
    /// gives its virtual clock's origin, so bucket edges, and with them
    /// its output, do not depend on when the process ran.
    pub fn starting(window: Duration, started: Instant) -> Window {
        Window {
            started,
            bucket_nanos: (window.as_nanos() as u64 / BUCKETS as u64).max(1),
            // Epoch 0 marks an unused bucket; real epochs start at 1.
            buckets: Default::default(),
        }
    }

    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.bucket_nanos * BUCKETS as u64)
    }

    fn epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_nanos() as u64 / self.bucket_nanos + 1
    }

    /// Counts `n` outcomes learnt after their attempt (an epay order paid,
    /// or still unpaid when it should have been): successes when `paid`,
    /// failures otherwise.
    pub fn record_settled(&self, paid: bool, n: u64, now: Instant) {
        let bucket = self.bucket_at(now);
        let counter = if paid { &bucket.successes } else { &bucket.failures };
        counter.fetch_add(n, Relaxed);
    }

    /// The bucket of `now`, recycled first if it still holds an older epoch.
    fn bucket_at(&self, now: Instant) -> &Bucket {
        let epoch = self.epoch(now);
        let bucket = &self.buckets[epoch as usize % BUCKETS];
        let seen = bucket.epoch.load(Relaxed);
        if seen != epoch && bucket.epoch.compare_exchange(seen, epoch, Relaxed, Relaxed).is_ok() {
            bucket.successes.store(0, Relaxed);
            bucket.declines.store(0, Relaxed);
            bucket.failures.store(0, Relaxed);
            bucket.picks.store(0, Relaxed);
        }
        bucket
    }

    /// Counts a payment that chose this channel first.
    pub fn record_pick(&self, now: Instant) {
        self.bucket_at(now).picks.fetch_add(1, Relaxed);
    }

    pub fn record_at(&self, verdict: Verdict, now: Instant) {
        let bucket = self.bucket_at(now);
        // A 2xx went through (a pending payment too: the acquirer took it);
        // any other answer but a 5xx was declined; a connect error, timeout,
        // 5xx or unreadable answer is the channel's failure.
        let counter = match verdict {
            Verdict::Success | Verdict::Pending => &bucket.successes,
            Verdict::Decline => &bucket.declines,
            Verdict::PassFailure | Verdict::Failed { .. } => &bucket.failures,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn totals(&self) -> WindowTotals {
        self.totals_at(Instant::now())
    }

    /// Totals as of `now` (one clock read can serve many channels).
    pub fn totals_at(&self, now: Instant) -> WindowTotals {
        let current = self.epoch(now);
        let oldest = current.saturating_sub(BUCKETS as u64 - 1).max(1);
        let mut t = WindowTotals::default();
        for b in &self.buckets {
            if (oldest..=current).contains(&b.epoch.load(Relaxed)) {
                t.successes += b.successes.load(Relaxed);
                t.declines += b.declines.load(Relaxed);
                t.failures += b.failures.load(Relaxed);
                t.picks += b.picks.load(Relaxed);
            }
        }
        t
    }

    /// A window of another length that starts with this one's totals, so a
    /// reload that changes `window_ms` keeps what the channel has shown.
    pub fn resized(&self, window: Duration) -> Window {
        let next = Window::new(window);
        let t = self.totals();
        let epoch = next.epoch(Instant::now());
        let b = &next.buckets[epoch as usize % BUCKETS];
        b.epoch.store(epoch, Relaxed);
        b.successes.store(t.successes, Relaxed);
        b.declines.store(t.declines, Relaxed);
        b.failures.store(t.failures, Relaxed);
        b.picks.store(t.picks, Relaxed);
        next
    }
}

/// Peak-EWMA latency (as in linkerd2-proxy): a sample above the estimate
/// replaces it at once, so a slowdown is seen on the first slow answer; lower
/// samples pull it down with time-based decay, so recovery is trusted slowly.
pub(crate) struct PeakEwma {
    /// f64 bits of the estimate in milliseconds; NaN bits: no sample yet.
    estimate_ms: AtomicU64,
    /// Nanoseconds since `started` of the last update.
    updated: AtomicU64,
    started: Instant,
}

impl PeakEwma {
    pub fn new() -> PeakEwma {
        PeakEwma {
            estimate_ms: AtomicU64::new(f64::NAN.to_bits()),
            updated: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// The estimate, or `None` before the first sample.
    pub fn get(&self) -> Option<f64> {
        let v = f64::from_bits(self.estimate_ms.load(Relaxed));
        (!v.is_nan()).then_some(v)
    }

    pub fn observe(&self, rtt: Duration, now: Instant, decay: Duration) {
        let now = now.saturating_duration_since(self.started).as_nanos() as u64;
        let last = self.updated.swap(now, Relaxed);
        let elapsed = now.saturating_sub(last) as f64;
        let weight = (-elapsed / decay.as_nanos().max(1) as f64).exp();
        let sample = rtt.as_secs_f64() * 1000.0;
        // A CAS loop: concurrent observers each fold their sample in.
        let _ = self.estimate_ms.fetch_update(Relaxed, Relaxed, |bits| {
            let old = f64::from_bits(bits);
            let next = if old.is_nan() || sample > old {
                sample
            } else {
                old * weight + sample * (1.0 - weight)
            };
            Some(next.to_bits())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_forgets_old_buckets() {
        let w = Window::new(Duration::from_secs(10));
        let t0 = w.started;
        w.record_at(Verdict::PassFailure, t0);
        w.record_at(Verdict::Success, t0 + Duration::from_secs(5));
        w.record_at(Verdict::Decline, t0 + Duration::from_secs(5));
        let t = w.totals_at(t0 + Duration::from_secs(6));
        assert_eq!((t.successes, t.declines, t.failures), (1, 1, 1));
        // 10.5 s later the failure at t0 has left the window; the rest stays.
        let t = w.totals_at(t0 + Duration::from_millis(10_500));
        assert_eq!((t.successes, t.declines, t.failures), (1, 1, 0));
        let t = w.totals_at(t0 + Duration::from_secs(30));
        assert_eq!(t.attempts(), 0);
    }

    #[test]
    fn recycled_bucket_starts_from_zero() {
        let w = Window::new(Duration::from_secs(2));
        let t0 = w.started;
        for _ in 0..5 {
            w.record_at(Verdict::PassFailure, t0);
        }
        // Same ring slot, one full window later.
        w.record_at(Verdict::Success, t0 + Duration::from_secs(2));
        let t = w.totals_at(t0 + Duration::from_secs(2));
        assert_eq!((t.successes, t.failures), (1, 0));
    }

    #[test]
    fn resized_window_keeps_totals() {
        let w = Window::new(Duration::from_secs(60));
        w.record_at(Verdict::Success, Instant::now());
        w.record_at(Verdict::PassFailure, Instant::now());
        let r = w.resized(Duration::from_secs(10));
        assert_eq!(r.window(), Duration::from_secs(10));
        assert_eq!(r.totals().attempts(), 2);
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let e = PeakEwma::new();
        assert_eq!(e.get(), None);
        let decay = Duration::from_secs(10);
        let now = Instant::now();
        e.observe(Duration::from_millis(10), now, decay);
        e.observe(Duration::from_millis(500), now, decay);
        assert_eq!(e.get(), Some(500.0));
        // A fast sample right away barely moves the peak.
        e.observe(Duration::from_millis(10), now, decay);
        assert!(e.get().unwrap() > 450.0);
    }
}
