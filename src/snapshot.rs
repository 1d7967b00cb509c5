//! A snapshot: everything one config version needs to route a payment,
//! immutable once built.
//!
//! A payment loads the current snapshot once (one `ArcSwap` load) and keeps it
//! to the end, so a reload can never change the rules under a payment in
//! flight. What must outlive a version — channel statistics, connection
//! pools, rate-limit buckets — is carried from the previous snapshot by id
//! when the next one is built.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{
    ChannelConfig, Config, Inputs, MerchantConfig, RequestConfig, RoutingConfig, ServerConfig, StateConfig,
};
use crate::limits::rate::{Limiter, RateLimits};
use crate::metrics::{ChannelMetrics, Metrics};
use crate::routing::{ChannelLive, Routable};
use crate::upstream::client::Upstream;

pub(crate) struct Snapshot {
    pub version: u64,
    pub server: ServerConfig,
    pub request: RequestConfig,
    pub routing: RoutingConfig,
    pub state: StateConfig,
    pub channels: Vec<Channel>,
    merchants: HashMap<Arc<str>, Merchant>,
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

impl Routable for Channel {
    fn config(&self) -> &ChannelConfig {
        &self.config
    }
    fn live(&self) -> &ChannelLive {
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

/// How a request relates to the configured paths.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'p> {
    Payment,
    Followup { order_id: &'p str },
    Unknown,
}

impl Snapshot {
    pub fn build(config: Config, version: u64, previous: Option<&Snapshot>, metrics: &Metrics) -> Snapshot {
        let Config {
            server,
            request,
            routing,
            state,
            channels,
            merchants,
            inputs,
        } = config;
        let old = |id: &str| previous.and_then(|p| p.channels.iter().find(|c| &*c.config.id == id));
        let channels: Vec<Channel> = channels
            .into_iter()
            .map(|config| {
                let prior = old(&config.id);
                let live = match prior {
                    Some(p) => {
                        p.live.set_window(routing.window);
                        p.live.clone()
                    }
                    None => Arc::new(ChannelLive::new(routing.window)),
                };
                let upstream = match prior {
                    Some(p) if p.upstream.fits(&config) => p.upstream.clone(),
                    _ => Upstream::new(&config),
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

        let index: HashMap<&str, usize> = channels.iter().enumerate().map(|(i, c)| (&*c.config.id, i)).collect();
        let mut rate_limits = RateLimits::default();
        let merchants = merchants
            .into_iter()
            .map(|m| {
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
                (
                    m.id.clone(),
                    Merchant {
                        config: m,
                        limiter,
                        allowed,
                    },
                )
            })
            .collect();
        Snapshot {
            version,
            server,
            request,
            routing,
            state,
            channels,
            merchants,
            rate_limits,
            inputs,
        }
    }

    pub fn merchant(&self, id: &str) -> Option<&Merchant> {
        self.merchants.get(id)
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
