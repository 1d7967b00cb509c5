//! A snapshot: everything one config version needs to route a payment,
//! immutable once built.
//!
//! A payment loads the current snapshot once (one `ArcSwap` load) and keeps it
//! to the end, so a reload can never change the rules under a payment in
//! flight. What must outlive a version — channel statistics, connection
//! pools, rate-limit buckets — is carried from the previous snapshot by id
//! when the next one is built.
//!
//! Merchants can number a million, so they are held compactly: one
//! exact-size `Vec<Merchant>` plus a hash index of `u32` positions into it
//! (5 bytes a slot), rather than a `HashMap` whose slots — sized to the next
//! power of two — would each hold a whole `Merchant`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use crate::config::{
    ChannelConfig, Config, Inputs, MerchantConfig, NotifyConfig, RequestConfig, RoutingConfig, Rule, ServerConfig,
    StateConfig, SweeperConfig,
};
use crate::limits::rate::{Limiter, RateLimits};
use crate::metrics::{ChannelMetrics, Metrics};
use crate::routing::score::{success_rate, REFERENCE_AMOUNT};
use crate::routing::stats::WindowTotals;
use crate::routing::{prior_of, ChannelLive, Moment};
use crate::upstream::client::Upstream;

pub(crate) struct Snapshot {
    pub version: u64,
    pub server: ServerConfig,
    pub request: RequestConfig,
    pub routing: RoutingConfig,
    pub state: StateConfig,
    pub notify: NotifyConfig,
    pub sweeper: SweeperConfig,
    pub channels: Vec<Channel>,
    /// `[[rule]]`s, in order (channels by index into `channels`).
    pub rules: Vec<Rule>,
    merchants: Merchants,
    /// Whether the epay endpoints are served: some channel speaks epay or
    /// some merchant has an `epay_key` (otherwise their paths stay unknown
    /// routes, as before epay).
    pub epay: bool,
    pub rate_limits: RateLimits,
    /// Files besides routes.toml this version was built from (certificates,
    /// secrets): a reload compares them too, and the file watcher watches them.
    pub inputs: Inputs,
}

pub(crate) struct Channel {
    pub config: ChannelConfig,
    pub live: Arc<ChannelLive>,
    pub upstream: Upstream,
    pub metrics: ChannelMetrics,
}

/// What `routing::rank` reads of a channel.
impl AsRef<ChannelConfig> for Channel {
    fn as_ref(&self) -> &ChannelConfig {
        &self.config
    }
}

impl AsRef<ChannelLive> for Channel {
    fn as_ref(&self) -> &ChannelLive {
        &self.live
    }
}

pub(crate) struct Merchant {
    pub config: MerchantConfig,
    pub limiter: Limiter,
    /// `allowed[i]`: may use channel `i`; `None`: every channel.
    allowed: Option<Box<[bool]>>,
}

impl Merchant {
    pub fn may_use(&self, channel: usize) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|a| a.get(channel).copied().unwrap_or(false))
    }
}

/// The merchants of one version, by id.
struct Merchants {
    list: Box<[Merchant]>,
    /// Positions in `list`, by the hash of the merchant's id.
    index: HashTable<u32>,
    /// SipHash with a random key: merchant ids arrive in request headers.
    hasher: RandomState,
}

impl Merchants {
    /// Validation guarantees unique ids; should two ever meet, the later wins
    /// (as a `HashMap` insert would).
    fn new(merchants: impl Iterator<Item = Merchant>) -> Merchants {
        let list: Box<[Merchant]> = merchants.collect();
        let hasher = RandomState::new();
        let mut index = HashTable::with_capacity(list.len());
        let hash = |i: &u32| hasher.hash_one(&*list[*i as usize].config.id);
        for (i, m) in list.iter().enumerate() {
            // More than 4 billion merchants do not fit in memory anyway.
            let Ok(i) = u32::try_from(i) else { break };
            let h = hasher.hash_one(&*m.config.id);
            match index.find_mut(h, |&j| list[j as usize].config.id == m.config.id) {
                Some(slot) => *slot = i,
                None => {
                    index.insert_unique(h, i, hash);
                }
            }
        }
        Merchants { list, index, hasher }
    }

    fn get(&self, id: &str) -> Option<&Merchant> {
        let h = self.hasher.hash_one(id);
        let &i = self.index.find(h, |&i| &*self.list[i as usize].config.id == id)?;
        self.list.get(i as usize)
    }
}

/// One channel as the admin API (`/-/channels`, `/metrics`) and the demo's
/// monitor show it. Computed in one place ([`Snapshot::channel_views`]), so
/// the three can never disagree on what a channel's score or state is.
pub(crate) struct ChannelView<'a> {
    pub channel: &'a Channel,
    /// `healthy`, `ejected`, `probing`, `disabled`, `maintenance`,
    /// `capped` or `rolled_back`.
    pub state: &'static str,
    /// The window's raw outcomes.
    pub totals: WindowTotals,
    /// The window's success rate, smoothed towards the pooled prior.
    pub success_rate: f64,
    pub latency_ms: Option<f64>,
    /// The score of a payment of [`REFERENCE_AMOUNT`].
    pub score: f64,
    pub in_flight: u32,
    /// Attempts since the process started.
    pub requests: u64,
    /// Its share of the window's payments (first attempts), 0 to 1.
    pub share: f64,
    /// What it has taken today against `daily_cap` (as last learnt).
    pub daily_used: u64,
    /// The share its ramp gives it now (0 to 100; 0 rolled back); `None`: no ramp.
    pub ramp_percent: Option<f64>,
}

/// How a request relates to the configured paths.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'p> {
    Payment,
    Followup { order_id: &'p str },
    Unknown,
}

impl Snapshot {
    /// Builds version `version` of the config, carrying what outlives versions
    /// over from `previous`. `workers`: how many payment workers run, each of
    /// which gets its own connection pool to every channel.
    pub fn build(
        config: Config,
        version: u64,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
        workers: usize,
    ) -> Snapshot {
        let Config {
            server,
            request,
            routing,
            state,
            notify,
            sweeper,
            // The journal is opened once at start, not per config version.
            journal: _,
            channels,
            merchants,
            rules,
            inputs,
        } = config;
        let old = |id: &str| previous.and_then(|p| p.channels.iter().find(|c| &*c.config.id == id));
        let channels: Vec<Channel> = channels
            .into_iter()
            .map(|config| {
                let prior = old(&config.id);
                let live = match prior {
                    Some(p) => {
                        p.live.breaker.limit_ejection(routing.eject_max);
                        p.live.clone()
                    }
                    None => Arc::new(ChannelLive::new(routing.window)),
                };
                live.adopt(routing.window, config.policy.ramp.as_ref());
                let upstream = match prior {
                    Some(p) if p.upstream.fits(&config) => p.upstream.clone(),
                    _ => Upstream::new(&config, workers),
                };
                Channel {
                    metrics: metrics.channel(&config.id),
                    config,
                    live,
                    upstream,
                }
            })
            .collect();
        if let Some(p) = previous {
            for gone in p
                .channels
                .iter()
                .filter(|o| !channels.iter().any(|c| c.config.id == o.config.id))
            {
                metrics.forget_channel(&gone.config.id);
            }
        }

        let epay = channels.iter().any(|c| c.config.is_epay()) || merchants.iter().any(|m| m.epay_key().is_some());
        let index: HashMap<&str, usize> = channels.iter().enumerate().map(|(i, c)| (&*c.config.id, i)).collect();
        let mut rate_limits = RateLimits::default();
        let merchants = Merchants::new(merchants.into_iter().map(|m| {
            let allowed = (!m.channels.is_empty()).then(|| {
                let mut a = vec![false; channels.len()].into_boxed_slice();
                for id in &m.channels {
                    if let Some(&i) = index.get(&**id) {
                        a[i] = true;
                    }
                }
                a
            });
            let limiter = rate_limits.limiter(m.rate_per_sec, m.burst, previous.map(|p| &p.rate_limits));
            Merchant {
                config: m,
                limiter,
                allowed,
            }
        }));
        Snapshot {
            version,
            server,
            request,
            routing,
            state,
            notify,
            sweeper,
            channels,
            rules,
            merchants,
            epay,
            rate_limits,
            inputs,
        }
    }

    /// Every channel's [`ChannelView`], in config order, against one pooled
    /// prior.
    pub fn channel_views(&self) -> impl Iterator<Item = ChannelView<'_>> {
        let now = Moment::now();
        // Each window read once: the prior, the shares and the rows agree.
        let windows: Vec<WindowTotals> = self.channels.iter().map(|c| c.live.totals_at(now.at)).collect();
        let prior = prior_of(windows.iter().copied(), &self.routing);
        let picks: u64 = windows.iter().map(|t| t.picks).sum();
        self.channels.iter().zip(windows).map(move |(c, totals)| {
            let ramp_percent = c.config.policy.ramp.as_ref().map(|r| {
                if c.live.rolled_back() {
                    0.0
                } else {
                    r.share_at(now.unix_ms) * 100.0
                }
            });
            ChannelView {
                channel: c,
                state: c.live.state_name(&c.config, now),
                totals,
                success_rate: success_rate(totals, prior, &self.routing),
                latency_ms: c.live.latency_ms(),
                score: c.live.score(&c.config, prior, REFERENCE_AMOUNT, &self.routing),
                in_flight: c.live.in_flight(),
                requests: c.live.requests(),
                share: if picks == 0 {
                    0.0
                } else {
                    totals.picks as f64 / picks as f64
                },
                daily_used: c.live.day_used(ChannelLive::day_of(&c.config, now.unix_ms)),
                ramp_percent,
            }
        })
    }

    pub fn merchant(&self, id: &str) -> Option<&Merchant> {
        self.merchants.get(id)
    }

    #[cfg(test)]
    pub fn merchant_count(&self) -> usize {
        self.merchants.list.len()
    }

    pub fn route<'p>(&self, method: &http::Method, path: &'p str) -> Route<'p> {
        if method == http::Method::POST && self.request.payment_paths.iter().any(|p| p == path) {
            return Route::Payment;
        }
        self.request
            .followup_paths
            .iter()
            .find_map(|t| t.matches(path))
            .map_or(Route::Unknown, |order_id| Route::Followup { order_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_merchant_is_found_by_id_and_no_other() {
        let mut text = String::from("[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n");
        text.push_str("[[channel]]\nid = \"b\"\nurl = \"http://127.0.0.1:2\"\n");
        for i in 0..1_000 {
            text.push_str(&format!("[[merchant]]\nid = \"m-{i}\"\nrate_per_sec = {}\n", i + 1));
        }
        text.push_str("[[merchant]]\nid = \"only-b\"\nchannels = [\"b\"]\n");
        let config = Config::parse(&text, "t.toml".as_ref()).unwrap();
        let snap = Snapshot::build(config, 1, None, &Metrics::new(), 1);
        assert_eq!(snap.merchant_count(), 1_001);
        for i in 0..1_000 {
            let m = snap.merchant(&format!("m-{i}")).expect("configured merchant");
            assert_eq!(&*m.config.id, format!("m-{i}"));
            assert_eq!(m.config.rate_per_sec, i + 1);
            assert!(m.may_use(0) && m.may_use(1));
        }
        let only_b = snap.merchant("only-b").unwrap();
        assert!(!only_b.may_use(0) && only_b.may_use(1));
        for unknown in ["", "m-1000", "m-", "M-1", "m-1 "] {
            assert!(snap.merchant(unknown).is_none(), "{unknown:?}");
        }
    }

    #[test]
    fn channel_views_follow_the_config_order_and_share_one_prior() {
        let text = "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
                    [[channel]]\nid = \"b\"\nurl = \"http://127.0.0.1:2\"\nenabled = false\nfee_percent = 2.0\n";
        let config = Config::parse(text, "t.toml".as_ref()).unwrap();
        let snap = Snapshot::build(config, 1, None, &Metrics::new(), 1);
        let views: Vec<_> = snap.channel_views().collect();
        let ids: Vec<_> = views.iter().map(|v| &*v.channel.config.id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!((views[0].state, views[1].state), ("healthy", "disabled"));
        let now = Moment::now();
        let prior = prior_of(snap.channels.iter().map(|c| c.live.totals_at(now.at)), &snap.routing);
        for v in &views {
            assert_eq!((v.totals.attempts(), v.requests, v.in_flight), (0, 0, 0));
            assert_eq!(v.latency_ms, None);
            // Unmeasured: the smoothed success rate is the prior itself.
            assert!((v.success_rate - prior).abs() < 1e-9, "{} vs {prior}", v.success_rate);
        }
        assert!(views[0].score > views[1].score, "the dearer channel scores lower");
    }

    /// A reload keeps a channel's connections unless they can no longer
    /// serve it: a plain HTTP/1 pool knows one origin, so a url to another
    /// host or port, or a change of protocol, gets new ones.
    #[test]
    fn a_reload_keeps_a_channels_connections_only_where_they_still_lead() {
        let build = |a: &str, previous: Option<&Snapshot>| {
            let text = format!("[[channel]]\nid = \"a\"\n{a}\n[[channel]]\nid = \"b\"\nurl = \"http://127.0.0.1:2\"\n");
            Snapshot::build(
                Config::parse(&text, "t.toml".as_ref()).unwrap(),
                1,
                previous,
                &Metrics::new(),
                1,
            )
        };
        let kept = |before: &Snapshot, after: &Snapshot, i: usize| {
            before.channels[i].upstream.same_pool(&after.channels[i].upstream)
        };
        let first = build("url = \"http://127.0.0.1:1/v1\"", None);
        let same = build("url = \"http://127.0.0.1:1/v2\"\nfee_percent = 1.0", Some(&first));
        assert!(kept(&first, &same, 0), "another path on the same origin keeps the pool");
        let moved = build("url = \"http://127.0.0.1:3/v1\"", Some(&same));
        assert!(!kept(&same, &moved, 0), "another port: new connections");
        assert!(kept(&same, &moved, 1), "the other channel keeps its own");
        let h2c = build("url = \"http://127.0.0.1:3/v1\"\nh2c = true", Some(&moved));
        assert!(!kept(&moved, &h2c, 0), "h2c: new connections");
        let back = build("url = \"http://127.0.0.1:3/v1\"", Some(&h2c));
        assert!(!kept(&h2c, &back, 0), "back to HTTP/1: new connections");
    }
}
