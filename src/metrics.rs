//! Prometheus metrics: the contract's names, bounded labels, cheap updates.
//!
//! Label values are channel ids (bounded by the config) and the fixed sets
//! spelled by [`crate::outcome`] — never merchant or order ids. The request
//! path never looks a label up: per-channel handles are resolved once per
//! config version ([`ChannelMetrics`]) and outcome handles once at start,
//! each in an array indexed by its `outcome` enum, so counting is an index
//! and a relaxed atomic add. Channel gauges (score, success rate, state) are
//! computed at scrape time from the live state, so they are never stale.

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::journal::State;
use crate::outcome::{Failure, Outcome, Verdict};

pub(crate) const CHANNEL_STATES: &[&str] = &[
    "healthy",
    "ejected",
    "probing",
    "disabled",
    "maintenance",
    "capped",
    "rolled_back",
];

pub(crate) struct Metrics {
    registry: Registry,
    /// `payroute_requests_total`, indexed by [`Outcome`].
    outcomes: [IntCounter; Outcome::ALL.len()],
    attempts: IntCounterVec,
    latency: HistogramVec,
    failovers: IntCounterVec,
    channel_score: GaugeVec,
    channel_success_rate: GaugeVec,
    channel_latency: GaugeVec,
    channel_in_flight: IntGaugeVec,
    channel_state: IntGaugeVec,
    channel_share: GaugeVec,
    channel_daily_used: IntGaugeVec,
    reloads: IntCounterVec,
    ambiguous: IntCounterVec,
    pub reversals: IntCounterVec,
    pub replays: prometheus::IntCounter,
    pub state_fallbacks: prometheus::IntCounter,
    pub state_up: IntGauge,
    pub config_version: IntGauge,
    pub rate_limiter_keys: IntGauge,
    /// Time inside payroute per payment request, attempts included.
    pub request_duration: Histogram,
    /// `payroute_payments_total{state}`, indexed by [`State`]: payments as
    /// they enter each state (recorded in the journal).
    payments: [IntCounter; State::ALL.len()],
    /// `payroute_notifications_in_total{channel,result}`: rare, so by label.
    pub notifications_in: IntCounterVec,
    /// `payroute_notifications_out_total{result}`: delivered, retry, failed.
    pub notifications_out: IntCounterVec,
    /// Outgoing notifications not yet delivered nor given up (from the journal).
    pub notification_backlog: IntGauge,
    /// `payroute_sweeper_queries_total{channel,result}`.
    pub sweeper_queries: IntCounterVec,
    /// Journal writes or reads that failed (the database down, a refused write).
    pub journal_errors: IntCounter,
    /// `payroute_channel_effective_fee_percent{channel}`: the fee each
    /// channel really charged, by its newest `payroute reconcile`.
    pub channel_effective_fee: GaugeVec,
}

/// One channel's pre-resolved handles.
#[derive(Clone)]
pub(crate) struct ChannelMetrics {
    /// By [`Verdict::result`].
    attempts: [IntCounter; Verdict::RESULTS.len()],
    /// By [`Failure`].
    failovers: [IntCounter; Failure::ALL.len()],
    pub ambiguous: IntCounter,
    latency: Histogram,
}

impl ChannelMetrics {
    /// One attempt: its result and how long it took.
    pub fn attempt(&self, verdict: Verdict, elapsed: Duration) {
        self.attempts[verdict.result()].inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// A payment leaving this channel for the next after `failure`.
    pub fn failover(&self, failure: Failure) {
        self.failovers[failure as usize].inc();
    }

    /// Failovers from this channel so far, by [`Failure::reason`] (read
    /// from the pre-resolved handles: no label lookup).
    pub fn failover_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Failure::ALL
            .iter()
            .zip(&self.failovers)
            .map(|(f, c)| (f.reason(), c.get()))
    }
}

/// Live values of one channel, read at scrape time.
pub(crate) struct ChannelGauges<'a> {
    pub id: &'a str,
    pub score: f64,
    pub success_rate: f64,
    pub latency_ms: f64,
    pub in_flight: u32,
    pub state: &'static str,
    pub share: f64,
    pub daily_used: u64,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry.register(Box::new(v.clone())).expect("metric registered once");
    v
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let v = GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry.register(Box::new(v.clone())).expect("metric registered once");
    v
}

fn int_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry.register(Box::new(v.clone())).expect("metric registered once");
    v
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    registry.register(Box::new(g.clone())).expect("metric registered once");
    g
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = counter_vec(
            &registry,
            "payroute_requests_total",
            "Payment requests by final outcome.",
            &["outcome"],
        );
        let outcomes = Outcome::ALL.map(|o| requests.with_label_values(&[o.as_str()]));
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "payroute_upstream_latency_seconds",
                "Duration of each upstream attempt.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["channel"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(latency.clone()))
            .expect("metric registered once");
        // Finer at the low end than the upstream histogram: what a proxy adds
        // is measured in tens of microseconds.
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "payroute_request_duration_seconds",
                "Time inside payroute per payment request, from its head to its response (upstream attempts included).",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("static metric definition");
        registry
            .register(Box::new(request_duration.clone()))
            .expect("metric registered once");
        Metrics {
            request_duration,
            outcomes,
            attempts: counter_vec(
                &registry,
                "payroute_attempts_total",
                "Upstream attempts by channel and result.",
                &["channel", "result"],
            ),
            latency,
            failovers: counter_vec(
                &registry,
                "payroute_failovers_total",
                "Payments moved from a channel to the next, by reason.",
                &["from_channel", "reason"],
            ),
            channel_score: gauge_vec(
                &registry,
                "payroute_channel_score",
                "Routing score (for an amount of 100.00).",
                &["channel"],
            ),
            channel_success_rate: gauge_vec(
                &registry,
                "payroute_channel_success_rate",
                "Smoothed success rate over the window.",
                &["channel"],
            ),
            channel_latency: gauge_vec(
                &registry,
                "payroute_channel_latency_ms",
                "Peak-EWMA latency estimate.",
                &["channel"],
            ),
            channel_in_flight: int_gauge_vec(
                &registry,
                "payroute_channel_in_flight",
                "Attempts in flight.",
                &["channel"],
            ),
            channel_state: int_gauge_vec(
                &registry,
                "payroute_channel_state",
                "1 for the channel's current state.",
                &["channel", "state"],
            ),
            channel_share: gauge_vec(
                &registry,
                "payroute_channel_share",
                "Share of the window's payments whose first attempt went to the channel (0 to 1).",
                &["channel"],
            ),
            channel_daily_used: int_gauge_vec(
                &registry,
                "payroute_channel_daily_used",
                "Amount (minor units) the channel took today against its daily_cap, as last learnt.",
                &["channel"],
            ),
            reloads: counter_vec(
                &registry,
                "payroute_config_reloads_total",
                "Config reloads by result.",
                &["result"],
            ),
            ambiguous: counter_vec(
                &registry,
                "payroute_ambiguous_total",
                "Attempts whose fate was unknown (timeout or 5xx after sending).",
                &["channel"],
            ),
            reversals: counter_vec(
                &registry,
                "payroute_reversals_total",
                "Reversal tries of ambiguous attempts, by result.",
                &["channel", "result"],
            ),
            replays: {
                let c = IntCounter::new(
                    "payroute_replays_total",
                    "Repeated payments answered from the idempotency record.",
                )
                .expect("static metric definition");
                registry.register(Box::new(c.clone())).expect("metric registered once");
                c
            },
            state_fallbacks: {
                let c = IntCounter::new(
                    "payroute_state_fallback_total",
                    "Requests served from local state because Redis was unavailable (fail_open).",
                )
                .expect("static metric definition");
                registry.register(Box::new(c.clone())).expect("metric registered once");
                c
            },
            state_up: int_gauge(&registry, "payroute_state_up", "1 while the state backend answers."),
            config_version: int_gauge(&registry, "payroute_config_version", "Version of the config in force."),
            rate_limiter_keys: int_gauge(
                &registry,
                "payroute_rate_limiter_keys",
                "Merchants tracked by the rate limiters.",
            ),
            payments: {
                let v = counter_vec(
                    &registry,
                    "payroute_payments_total",
                    "Payments entering each state, as the journal records them.",
                    &["state"],
                );
                State::ALL.map(|st| v.with_label_values(&[st.as_str()]))
            },
            notifications_in: counter_vec(
                &registry,
                "payroute_notifications_in_total",
                "Channels' notifications by result.",
                &["channel", "result"],
            ),
            notifications_out: counter_vec(
                &registry,
                "payroute_notifications_out_total",
                "Deliveries of notifications to merchants, by result.",
                &["result"],
            ),
            notification_backlog: int_gauge(
                &registry,
                "payroute_notification_backlog",
                "Notifications to merchants waiting for delivery.",
            ),
            channel_effective_fee: gauge_vec(
                &registry,
                "payroute_channel_effective_fee_percent",
                "Fee the channel charged as a percent of the amounts, by its newest reconciliation.",
                &["channel"],
            ),
            sweeper_queries: counter_vec(
                &registry,
                "payroute_sweeper_queries_total",
                "Queries of pending payments by the sweeper, by channel and result.",
                &["channel", "result"],
            ),
            journal_errors: {
                let c = IntCounter::new(
                    "payroute_journal_errors_total",
                    "Journal operations that failed (database unreachable or a write refused).",
                )
                .expect("static metric definition");
                registry.register(Box::new(c.clone())).expect("metric registered once");
                c
            },
            registry,
        }
    }

    /// A payment entered `state`.
    pub fn payment_state(&self, state: State) {
        self.payments[state as usize].inc();
    }

    /// One finished request.
    pub fn outcome(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].inc();
    }

    /// Requests so far by [`Outcome::as_str`].
    pub fn outcome_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Outcome::ALL
            .iter()
            .zip(&self.outcomes)
            .map(|(o, c)| (o.as_str(), c.get()))
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    pub fn channel(&self, id: &str) -> ChannelMetrics {
        let attempt = |r: &str| self.attempts.with_label_values(&[id, r]);
        let failover = |r: &str| self.failovers.with_label_values(&[id, r]);
        ChannelMetrics {
            attempts: Verdict::RESULTS.map(attempt),
            failovers: Failure::ALL.map(|f| failover(f.reason())),
            ambiguous: self.ambiguous.with_label_values(&[id]),
            latency: self.latency.with_label_values(&[id]),
        }
    }

    /// Drops every series of a channel that left the config.
    pub fn forget_channel(&self, id: &str) {
        for r in Verdict::RESULTS {
            let _ = self.attempts.remove_label_values(&[id, r]);
        }
        for f in Failure::ALL {
            let _ = self.failovers.remove_label_values(&[id, f.reason()]);
        }
        for s in CHANNEL_STATES {
            let _ = self.channel_state.remove_label_values(&[id, s]);
        }
        let _ = self.latency.remove_label_values(&[id]);
        let _ = self.ambiguous.remove_label_values(&[id]);
        let _ = self.channel_score.remove_label_values(&[id]);
        let _ = self.channel_success_rate.remove_label_values(&[id]);
        let _ = self.channel_latency.remove_label_values(&[id]);
        let _ = self.channel_in_flight.remove_label_values(&[id]);
        let _ = self.channel_share.remove_label_values(&[id]);
        let _ = self.channel_daily_used.remove_label_values(&[id]);
    }

    /// The text exposition, with channel gauges refreshed from `channels`.
    pub fn render<'a>(&self, channels: impl Iterator<Item = ChannelGauges<'a>>) -> String {
        for c in channels {
            set(&self.channel_score.with_label_values(&[c.id]), c.score);
            set(&self.channel_success_rate.with_label_values(&[c.id]), c.success_rate);
            set(&self.channel_latency.with_label_values(&[c.id]), c.latency_ms);
            self.channel_in_flight
                .with_label_values(&[c.id])
                .set(i64::from(c.in_flight));
            set(&self.channel_share.with_label_values(&[c.id]), c.share);
            self.channel_daily_used
                .with_label_values(&[c.id])
                .set(i64::try_from(c.daily_used).unwrap_or(i64::MAX));
            for s in CHANNEL_STATES {
                self.channel_state
                    .with_label_values(&[c.id, s])
                    .set(i64::from(*s == c.state));
            }
        }
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn set(g: &Gauge, v: f64) {
    g.set(if v.is_finite() { v } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_contract_names_and_forgets_channels() {
        let m = Metrics::new();
        m.outcome(Outcome::Success);
        let ch = m.channel("acq-a");
        ch.attempt(Verdict::PassFailure, Duration::from_millis(20));
        ch.failover(Failure::Timeout);
        let gauges = ChannelGauges {
            id: "acq-a",
            score: 0.9,
            success_rate: 0.95,
            latency_ms: 20.0,
            in_flight: 0,
            state: "healthy",
            share: 0.25,
            daily_used: 7_000,
        };
        let text = m.render(std::iter::once(gauges));
        for needle in [
            r#"payroute_requests_total{outcome="success"} 1"#,
            r#"payroute_attempts_total{channel="acq-a",result="upstream_5xx"} 1"#,
            r#"payroute_failovers_total{from_channel="acq-a",reason="timeout"} 1"#,
            r#"payroute_channel_state{channel="acq-a",state="healthy"} 1"#,
            r#"payroute_channel_state{channel="acq-a",state="ejected"} 0"#,
            r#"payroute_channel_state{channel="acq-a",state="rolled_back"} 0"#,
            r#"payroute_channel_share{channel="acq-a"} 0.25"#,
            r#"payroute_channel_daily_used{channel="acq-a"} 7000"#,
            "payroute_upstream_latency_seconds_bucket",
            "payroute_request_duration_seconds_bucket{le=\"0.0001\"}",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        for o in Outcome::ALL {
            assert!(text.contains(&format!(r#"outcome="{}""#, o.as_str())), "{o:?}");
        }
        m.forget_channel("acq-a");
        assert!(!m.render(std::iter::empty()).contains("acq-a"));
    }
}
