//! The routes.toml schema exactly as written by the operator.
//!
//! Every table denies unknown keys (a typo must not pass silently), and every
//! optional scalar is `Option<Spanned<T>>`: absence means "use the default",
//! presence keeps the byte span so validation can point at line and column.
//! Nothing here is trusted; [`super::validate`] turns it into the typed model.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(crate) type Opt<T> = Option<Spanned<T>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub request: RawRequest,
    #[serde(default)]
    pub routing: RawRouting,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub notify: RawNotify,
    #[serde(default)]
    pub sweeper: RawSweeper,
    #[serde(default)]
    pub journal: RawJournal,
    #[serde(default, rename = "channel")]
    pub channels: Vec<Spanned<RawChannel>>,
    #[serde(default, rename = "merchant")]
    pub merchants: Vec<Spanned<RawMerchant>>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<RawRule>>,
    /// `[simulation]`: a scenario for `payroute simulate` is a routes.toml
    /// plus this table, which the simulator reads itself. Accepted here only
    /// so a scenario's other tables are validated by this very schema;
    /// every other reader refuses it (`validate::parse_split_from`).
    #[serde(default)]
    pub simulation: Option<Spanned<serde::de::IgnoredAny>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Opt<String>,
    pub admin_listen: Opt<String>,
    pub admin_token: Opt<String>,
    pub max_body_bytes: Opt<u64>,
    pub deadline_ms: Opt<u64>,
    pub drain_ms: Opt<u64>,
    pub header_timeout_ms: Opt<u64>,
    pub idle_timeout_ms: Opt<u64>,
    pub body_timeout_ms: Opt<u64>,
    pub max_connections: Opt<u64>,
    pub workers: Opt<u64>,
    pub public_url: Opt<String>,
    pub tls: Option<Spanned<RawServerTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServerTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    pub client_ca: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequest {
    pub merchant_header: Opt<String>,
    pub amount_pointer: Opt<String>,
    pub currency_pointer: Opt<String>,
    pub order_id_pointer: Opt<String>,
    pub payment_paths: Opt<Vec<Spanned<String>>>,
    pub followup_paths: Opt<Vec<Spanned<String>>>,
    pub idempotency_ttl_ms: Opt<u64>,
    pub pay_type_pointer: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouting {
    pub window_ms: Opt<u64>,
    pub max_attempts: Opt<u64>,
    pub failover_on: Opt<Vec<Spanned<String>>>,
    pub explore_share: Opt<f64>,
    pub latency_penalty_per_s: Opt<f64>,
    pub prior_success_rate: Opt<f64>,
    pub prior_weight: Opt<f64>,
    pub latency_decay_ms: Opt<u64>,
    pub eject_consecutive_failures: Opt<u64>,
    pub eject_base_ms: Opt<u64>,
    pub eject_max_ms: Opt<u64>,
    pub unpaid_after_ms: Opt<u64>,
    pub share_margin: Opt<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    pub backend: Opt<String>,
    pub redis_url: Opt<String>,
    pub key_prefix: Opt<String>,
    pub on_unavailable: Opt<String>,
    pub memory_max_records: Opt<u64>,
    pub memory_max_bytes: Opt<u64>,
    pub max_answer_bytes: Opt<u64>,
    pub redis_timeout_ms: Opt<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJournal {
    pub backend: Opt<String>,
    pub path: Opt<String>,
    pub url: Opt<String>,
    pub synchronous: Opt<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChannel {
    pub id: Spanned<String>,
    pub url: Spanned<String>,
    pub fee_percent: Opt<f64>,
    pub fee_fixed: Opt<u64>,
    pub timeout_ms: Opt<u64>,
    pub connect_timeout_ms: Opt<u64>,
    pub currencies: Opt<Vec<Spanned<String>>>,
    pub min_amount: Opt<u64>,
    pub max_amount: Opt<u64>,
    pub max_in_flight: Opt<u64>,
    pub enabled: Opt<bool>,
    pub headers: Opt<BTreeMap<String, Spanned<String>>>,
    pub query: Option<Spanned<RawEndpoint>>,
    pub reversal: Option<Spanned<RawEndpoint>>,
    pub tls: Option<Spanned<RawChannelTls>>,
    pub h2c: Opt<bool>,
    pub outcome: Option<Spanned<RawOutcome>>,
    pub notify: Option<Spanned<RawChannelNotify>>,
    /// `"http"` (default) or `"epay"`.
    pub protocol: Opt<String>,
    /// epay channels: payroute's merchant id and key at the gateway.
    pub pid: Opt<String>,
    pub key: Opt<String>,
    pub pay_types: Opt<Vec<Spanned<String>>>,
    pub statement: Option<Spanned<RawStatement>>,
    pub daily_cap: Opt<u64>,
    pub day_starts: Opt<String>,
    pub max_share: Opt<f64>,
    pub maintenance: Opt<Vec<Spanned<String>>>,
    pub ramp: Option<Spanned<RawRamp>>,
}

/// `ramp = { ... }`: a canary's share over time.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRamp {
    pub from_percent: Spanned<f64>,
    pub to_percent: Spanned<f64>,
    pub start: Spanned<String>,
    pub over_ms: Spanned<u64>,
    pub guardrail_pp: Opt<f64>,
    pub min_samples: Opt<u64>,
}

/// `[[rule]]`: which payments go to which channels, and how.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<RawRuleMatch>>,
    pub channels: Spanned<Vec<Spanned<String>>>,
    pub mode: Opt<String>,
    pub weights: Option<Spanned<BTreeMap<String, Spanned<i64>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuleMatch {
    pub pay_types: Opt<Vec<Spanned<String>>>,
    pub currencies: Opt<Vec<Spanned<String>>>,
    pub min_amount: Opt<u64>,
    pub max_amount: Opt<u64>,
    pub merchants: Opt<Vec<Spanned<String>>>,
}

/// `[channel.statement]`: the columns of the channel's statement, for
/// `payroute reconcile`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStatement {
    pub trade_no: Spanned<String>,
    pub amount: Spanned<String>,
    pub amount_unit: Opt<String>,
    pub fee: Opt<String>,
    pub status: Opt<String>,
    pub paid_values: Opt<Vec<Spanned<String>>>,
    pub refund_values: Opt<Vec<Spanned<String>>>,
    pub day_starts: Opt<String>,
    pub encoding: Opt<String>,
}

/// `[channel.outcome]`: where an acquirer states the outcome in its body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutcome {
    pub pointer: Spanned<String>,
    #[serde(default)]
    pub paid: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    pub pending: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    pub declined: Vec<Spanned<toml::Value>>,
    pub trade_no_pointer: Opt<String>,
}

/// `[channel.notify]`: how a JSON channel signs and names its notifications.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChannelNotify {
    pub signature_header: Spanned<String>,
    pub secret: Spanned<String>,
    pub order_id_pointer: Opt<String>,
    pub amount_pointer: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    pub retry_ms: Opt<Vec<Spanned<u64>>>,
    pub timeout_ms: Opt<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSweeper {
    pub query_after_ms: Opt<Vec<Spanned<u64>>>,
    pub close_after_ms: Opt<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    pub method: Spanned<String>,
    pub path: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChannelTls {
    pub ca: Opt<String>,
    pub cert: Opt<String>,
    pub key: Opt<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMerchant {
    pub id: Spanned<String>,
    pub api_key_sha256: Opt<String>,
    pub rate_per_sec: Opt<u64>,
    pub burst: Opt<u64>,
    pub max_amount: Opt<u64>,
    pub daily_limit: Opt<u64>,
    pub day_starts: Opt<String>,
    pub channels: Opt<Vec<Spanned<String>>>,
    pub notify_url: Opt<String>,
    pub notify_secret: Opt<String>,
    /// Set: the merchant may use the epay endpoints, signing with this key.
    pub epay_key: Opt<String>,
}
