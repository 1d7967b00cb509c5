//! Thin handles on the pure parts of the hot path, for `benches/` only.
//!
//! **Not a stable API.** Compiled only with the `bench-api` feature, hidden
//! from the docs, exempt from semver: it exists so criterion benchmarks (a
//! separate crate) can reach `pub(crate)` code — scoring and ranking, the
//! rate limiter, the daily ledger, fact extraction — without widening the
//! crate's real public surface. Each handle owns its fixtures, built once
//! outside the measured loop; ranking runs over the channels of a real
//! [`Snapshot`], as a payment's does.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, RequestConfig};
use crate::limits::daily::DailyLedger;
use crate::limits::rate::{Limiter, RateLimits};
use crate::metrics::Metrics;
use crate::outcome::Verdict;
use crate::snapshot::Snapshot;

fn config(channels: usize) -> Config {
    let mut text = String::from("[routing]\nexplore_share = 0.01\n");
    for i in 0..channels {
        text.push_str(&format!(
            "[[channel]]\nid = \"ch-{i:02}\"\nurl = \"http://127.0.0.1:{}\"\nfee_percent = {:.2}\nfee_fixed = {}\ncurrencies = [\"CNY\", \"USD\"]\n",
            9000 + i,
            0.30 + 0.01 * (i % 30) as f64,
            i % 3
        ));
    }
    Config::parse(&text, Path::new("bench.toml")).expect("bench config is valid")
}

/// `n` channels with some recorded history (successes, declines, failures,
/// latencies that differ per channel), as a running proxy has them.
pub struct Routing {
    snapshot: Snapshot,
}

impl Routing {
    pub fn new(n: usize) -> Routing {
        let snapshot = Snapshot::build(config(n), 1, None, &Metrics::new(), 1);
        for (i, ch) in snapshot.channels.iter().enumerate() {
            for k in 0..200 {
                let verdict = match (k + i) % 50 {
                    0 => Verdict::PassFailure,
                    1 | 2 => Verdict::Decline,
                    _ => Verdict::Success,
                };
                let rtt = Duration::from_millis(10 + (i as u64 * 7) % 90);
                ch.live
                    .record(verdict, Some(rtt), std::time::Instant::now(), &snapshot.routing);
            }
        }
        Routing { snapshot }
    }

    /// Ranks every channel for one CNY payment; the best channel's index.
    pub fn rank(&self, amount: u64) -> usize {
        let snap = &self.snapshot;
        let ask = crate::routing::Ask {
            currency: "CNY",
            amount,
            pay_type: None,
            merchant: "m",
        };
        let now = crate::routing::Moment::now();
        let mut rng = fastrand::Rng::new();
        match crate::routing::rank(
            &snap.channels,
            &snap.rules,
            |_| true,
            &ask,
            &snap.routing,
            now,
            &mut rng,
        ) {
            Ok(ranked) => ranked.order[0],
            Err(_) => usize::MAX,
        }
    }

    /// Scores every channel once (what `rank` does per channel, without the
    /// sort); the sum, so the work cannot be optimised away.
    pub fn score_all(&self, amount: u64) -> f64 {
        let snap = &self.snapshot;
        let now = crate::routing::Moment::now();
        let prior = crate::routing::prior_of(snap.channels.iter().map(|c| c.live.totals_at(now.at)), &snap.routing);
        snap.channels
            .iter()
            .map(|c| c.live.score(&c.config, prior, amount, &snap.routing))
            .sum()
    }
}

/// One quota's keyed rate limiter with `merchants` keys.
pub struct RateLimit {
    limiter: Limiter,
    keys: Vec<Arc<str>>,
}

impl RateLimit {
    pub fn new(merchants: usize) -> RateLimit {
        let limiter = RateLimits::default().limiter(1_000_000, 1_000_000, None);
        let keys = (0..merchants).map(|i| Arc::from(format!("m-{i:07}"))).collect();
        RateLimit { limiter, keys }
    }

    /// One admission check for merchant `i % merchants`.
    pub fn check(&self, i: usize) -> bool {
        self.limiter.check(&self.keys[i % self.keys.len()]).is_ok()
    }
}

/// The daily ledger with `merchants` merchants.
pub struct Daily {
    ledger: Arc<DailyLedger>,
    keys: Vec<Arc<str>>,
}

impl Daily {
    pub fn new(merchants: usize) -> Daily {
        let keys = (0..merchants).map(|i| Arc::from(format!("m-{i:07}"))).collect();
        Daily {
            ledger: Arc::default(),
            keys,
        }
    }

    /// Reserve then release (a failed payment), for merchant `i % merchants`.
    pub fn reserve_release(&self, i: usize, amount: u64) -> bool {
        self.ledger
            .reserve(&self.keys[i % self.keys.len()], 20_000, amount, u64::MAX)
            .is_ok()
    }

    /// Reserve then commit (a successful payment); the limit is never hit.
    pub fn reserve_commit(&self, i: usize, amount: u64) -> bool {
        match self
            .ledger
            .reserve(&self.keys[i % self.keys.len()], 20_000, amount, u64::MAX)
        {
            Ok(r) => {
                r.commit();
                true
            }
            Err(_) => false,
        }
    }
}

/// Fact extraction with the default pointers (`/amount`, `/currency`, `/order_id`).
pub struct Facts {
    request: RequestConfig,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            request: config(1).request,
        }
    }
}

impl Facts {
    /// The amount, or `None` if the body is not a valid payment.
    pub fn extract(&self, body: &[u8]) -> Option<u64> {
        crate::payment::facts::extract(body, &self.request)
            .ok()
            .map(|f| f.amount)
    }
}
