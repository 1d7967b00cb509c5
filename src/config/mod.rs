//! Configuration: the validated, typed model of routes.toml.
//!
//! Loading is two steps on purpose. [`raw`] is the serde schema, with spans,
//! exactly as the operator wrote it; [`validate`] checks the whole file at once
//! and either produces a [`Config`] every other module can trust without
//! re-checking, or every problem with its line and column. A config is never
//! half-applied: reload builds a new `Config` and swaps it in whole.
//!
//! Validation also reads what the file points to — TLS certificates and keys
//! ([`crate::tls`] turns them into rustls configs), `env:`/`file:` secrets
//! ([`secret`]) — so a `Config` is complete and usable, and a bad certificate
//! or a missing secret is a located config error like any other. [`Inputs`]
//! remembers those files so a reload notices when they change.

mod chunked;
mod daycut;
mod inputs;
mod issues;
mod policy;
mod raw;
mod secret;
mod validate;

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

pub(crate) use daycut::DayCut;
pub(crate) use inputs::Inputs;
pub(crate) use issues::Issues;
pub(crate) use policy::{ChannelPolicy, Mode, Ramp, Rule};
pub(crate) use secret::Secret;

use crate::tls::client::UpstreamTls;
use crate::tls::server::IngressTls;

/// A validated configuration. Built only by [`Config::parse`].
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub server: ServerConfig,
    pub request: RequestConfig,
    pub routing: RoutingConfig,
    pub state: StateConfig,
    pub notify: NotifyConfig,
    pub sweeper: SweeperConfig,
    pub journal: JournalConfig,
    pub channels: Vec<ChannelConfig>,
    pub merchants: Vec<MerchantConfig>,
    /// `[[rule]]`s in order: the first that matches a payment routes it.
    pub rules: Vec<Rule>,
    /// The files besides routes.toml it was built from (certificates, secrets).
    pub inputs: Inputs,
}

#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Bearer token for `POST /-/reload`; never logged.
    pub admin_token: Option<Secret>,
    pub max_body_bytes: usize,
    /// Whole payment, all attempts together.
    pub deadline: Duration,
    /// How long a graceful shutdown waits for in-flight payments.
    pub drain: Duration,
    /// Connections (both listeners): a request's head must arrive within
    /// `header_timeout` of its first byte; a connection with no request open
    /// and nothing arriving is closed after `idle_timeout`; a request's body
    /// must arrive within `body_timeout` of its head.
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    /// Open payment connections at most; 0: half the open-file limit.
    pub max_connections: usize,
    /// Threads serving payments (see `runtime`); 0: one per core.
    /// Fixed at startup, like the listen addresses.
    pub workers: usize,
    /// How channels and browsers reach `listen` (no trailing slash): epay
    /// `notify_url` and `return_url` start with it. Required by epay channels.
    pub public_url: Option<String>,
    /// `[server.tls]`: the payment listener speaks TLS; `None`: plain HTTP.
    pub tls: Option<IngressTls>,
}

#[derive(Debug, Clone)]
pub(crate) struct RequestConfig {
    pub merchant_header: HeaderName,
    pub amount_pointer: String,
    pub currency_pointer: String,
    pub order_id_pointer: String,
    pub payment_paths: Vec<String>,
    pub followup_paths: Vec<PathTemplate>,
    pub idempotency_ttl: Duration,
    /// Where a JSON payment states its pay type (for rules); `None`: it has none.
    pub pay_type_pointer: Option<String>,
}

/// Which channel failures move a payment to the next channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FailoverOn {
    pub connect: bool,
    pub timeout: bool,
    pub status_5xx: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct RoutingConfig {
    pub window: Duration,
    pub max_attempts: usize,
    pub failover_on: FailoverOn,
    pub explore_share: f64,
    pub latency_penalty_per_s: f64,
    /// `None`: the pooled success rate of all channels.
    pub prior_success_rate: Option<f64>,
    pub prior_weight: f64,
    pub latency_decay: Duration,
    pub eject_consecutive_failures: u32,
    pub eject_base: Duration,
    pub eject_max: Duration,
    /// epay channels: an order still unpaid this long after it was created
    /// counts as a failure of its channel (see `routing::unpaid`).
    pub unpaid_after: Duration,
    /// Channels scoring within this of the best share first places in
    /// proportion to closeness instead of all payments going to the best
    /// (no herding; see `routing::select`); 0: the best takes all.
    pub share_margin: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// One instance: state in this process.
    Memory,
    /// A fleet: state in Redis, shared by every instance with the same `key_prefix`.
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnUnavailable {
    FailClosed,
    FailOpen,
}

#[derive(Debug, Clone)]
pub(crate) struct StateConfig {
    pub backend: Backend,
    /// May carry a password: never logged.
    pub redis_url: Secret,
    /// Every Redis call's timeout.
    pub redis_timeout: Duration,
    pub key_prefix: String,
    pub on_unavailable: OnUnavailable,
    /// Memory backend: cap on idempotency records (and, separately, remembered orders).
    pub memory_max_records: usize,
    /// Memory backend: cap on the bytes those records hold (keys, answers).
    pub memory_max_bytes: usize,
    /// Both backends: the largest answer body kept for replay; a larger
    /// one is kept without its body (see `StoredResponse::body_omitted`).
    pub max_answer_bytes: usize,
}

/// `[journal]`: where the durable record of payments lives (see `crate::journal`).
#[derive(Debug, Clone)]
pub(crate) enum JournalConfig {
    /// One instance: an embedded file, relative paths already resolved
    /// against the config's directory.
    Sqlite { path: PathBuf, synchronous: Synchronous },
    /// A fleet. The URL may carry a password: never logged.
    Postgres { url: Secret },
}

/// SQLite's `synchronous` in WAL mode: what a power loss can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Synchronous {
    /// Commits survive a crash of payroute; the WAL is synced at checkpoints.
    Normal,
    /// Every commit is synced: survives power loss, costs a disk sync each.
    Full,
}

#[derive(Debug, Clone)]
pub(crate) struct ChannelConfig {
    pub id: Arc<str>,
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// Authority of the acquirer, e.g. `127.0.0.1:9001`.
    pub origin: http::uri::Authority,
    /// Path prefix from the url (no trailing slash); the request path is appended.
    pub base_path: String,
    pub fee_percent: f64,
    pub fee_fixed: u64,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Upper-cased ISO codes; empty: any.
    pub currencies: Vec<String>,
    pub min_amount: u64,
    pub max_amount: Option<u64>,
    pub max_in_flight: Option<u32>,
    pub enabled: bool,
    /// Added to every forwarded request. Values are credentials: marked sensitive.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub query: Option<Endpoint>,
    pub reversal: Option<Endpoint>,
    /// Present exactly for https urls: roots, `ca`, client certificate.
    pub tls: Option<UpstreamTls>,
    /// `h2c = true` (http urls only): HTTP/2 with prior knowledge, payments
    /// multiplexed over one connection. https channels negotiate h2 by ALPN.
    pub h2c: bool,
    /// `[channel.outcome]`: the outcome is read from the body; `None`: the status decides.
    pub outcome: Option<Arc<OutcomeRule>>,
    /// `[channel.notify]`: how this channel's notifications are verified and matched.
    pub notify: Option<Arc<ChannelNotify>>,
    /// `protocol = "epay"`: payroute's account at an epay gateway; `None`: a
    /// JSON pass-through channel.
    pub epay: Option<Arc<EpayChannel>>,
    /// `[channel.statement]`: how to read the channel's statement (`reconcile`).
    pub statement: Option<Arc<StatementColumns>>,
    /// The channel's business day (`day_starts`): `daily_cap` counts per it.
    pub day_cut: DayCut,
    /// `daily_cap`, `max_share`, `maintenance`, `ramp`.
    pub policy: ChannelPolicy,
}

/// `[channel.statement]`: which columns of the channel's statement say what.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatementColumns {
    pub trade_no: String,
    pub amount: String,
    pub amount_unit: AmountUnit,
    pub fee: Option<String>,
    /// With `paid_values` (never empty when a status column is named) and
    /// `refund_values` (possibly empty): a row of any other status says
    /// the channel did not collect the payment.
    pub status: Option<String>,
    pub paid_values: Vec<String>,
    pub refund_values: Vec<String>,
    /// The channel's business day: when its statement's day starts.
    pub day_cut: DayCut,
    pub encoding: StatementEncoding,
}

/// How a statement writes amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AmountUnit {
    /// Decimal major units (`1,234.56`), at most two decimals.
    Yuan,
    /// Integer minor units.
    Fen,
}

/// A statement's text encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatementEncoding {
    /// UTF-8 when the file starts with a UTF-8 BOM or its first 64 KiB are
    /// valid UTF-8; GBK otherwise.
    Auto,
    Utf8,
    Gbk,
}

/// An epay gateway account (`protocol = "epay"`).
#[derive(Debug, Clone)]
pub(crate) struct EpayChannel {
    /// payroute's merchant id at the gateway.
    pub pid: String,
    /// payroute's MD5 key there; never printed.
    pub key: Secret,
    /// epay `type` values the channel serves; empty: any.
    pub pay_types: Vec<String>,
}

/// Where and how an acquirer states a payment's outcome in its answer.
#[derive(Debug, Clone)]
pub(crate) struct OutcomeRule {
    /// JSON pointer to the outcome value (answers and notifications).
    pub pointer: String,
    pub paid: Vec<String>,
    pub pending: Vec<String>,
    pub declined: Vec<String>,
    /// JSON pointer to the acquirer's own id for the payment.
    pub trade_no_pointer: Option<String>,
}

/// How a JSON channel's notifications are signed and which payment they name.
#[derive(Debug, Clone)]
pub(crate) struct ChannelNotify {
    pub signature_header: HeaderName,
    /// HMAC-SHA256 key; never printed.
    pub secret: Secret,
    pub order_id_pointer: String,
    pub amount_pointer: Option<String>,
}

/// `[notify]`: deliveries to merchants.
#[derive(Debug, Clone)]
pub(crate) struct NotifyConfig {
    /// Delay before each try, from the state change: the first is usually 0.
    pub retry: Vec<Duration>,
    pub timeout: Duration,
}

/// `[sweeper]`: how pending payments are chased.
#[derive(Debug, Clone)]
pub(crate) struct SweeperConfig {
    /// Ages at which a pending payment is queried; the last repeats until close.
    pub query_after: Vec<Duration>,
    pub close_after: Duration,
}

impl ChannelConfig {
    /// The acquirer's fee for `amount`, in minor units (rounded half up).
    pub fn fee(&self, amount: u64) -> f64 {
        amount as f64 * self.fee_percent / 100.0 + self.fee_fixed as f64
    }

    /// Whether the channel speaks epay (a gateway), not JSON pass-through.
    pub fn is_epay(&self) -> bool {
        self.epay.is_some()
    }

    /// Whether the sweeper and an ambiguous attempt can ask the channel
    /// about a payment: a `query`, or epay's `api.php?act=order`.
    pub fn can_query(&self) -> bool {
        self.query.is_some() || self.epay.is_some()
    }

    /// Static eligibility: can this channel take this currency and amount at all?
    /// (`enabled` is not part of it: a disabled channel is eligible but unavailable.)
    pub fn accepts(&self, currency: &str, amount: u64) -> bool {
        (self.currencies.is_empty() || self.currencies.iter().any(|c| c == currency))
            && amount >= self.min_amount
            && self.max_amount.is_none_or(|max| amount <= max)
    }
}

/// A method plus a path template with `{order_id}`, for queries and reversals.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub method: Method,
    pub path: String,
}

/// One merchant as validated. A config can hold a million of these, so the
/// struct is kept small (72 bytes, tested): the rare API key hash is boxed,
/// "none" limits are niches of `NonZeroU64`, and an empty allow-list
/// allocates nothing.
#[derive(Debug, Clone)]
pub(crate) struct MerchantConfig {
    pub id: Arc<str>,
    /// What few merchants have (a key hash, a notification target), boxed.
    pub extras: Option<Box<MerchantExtras>>,
    pub rate_per_sec: u32,
    pub burst: u32,
    pub max_amount: Option<NonZeroU64>,
    pub daily_limit: Option<NonZeroU64>,
    pub day_cut: DayCut,
    /// Allow-list of channel ids; empty: all.
    pub channels: Box<[Arc<str>]>,
}

/// The rarer parts of a merchant, kept out of line.
#[derive(Debug, Clone, Default)]
pub(crate) struct MerchantExtras {
    pub api_key_sha256: Option<[u8; 32]>,
    pub notify: Option<MerchantNotify>,
    /// The merchant's epay MD5 key: set, it may use the epay endpoints.
    pub epay_key: Option<Secret>,
}

/// Where a JSON merchant hears about state changes, and the key it checks them with.
#[derive(Debug, Clone)]
pub(crate) struct MerchantNotify {
    pub url: http::Uri,
    pub secret: Secret,
}

impl MerchantConfig {
    pub fn api_key_sha256(&self) -> Option<&[u8; 32]> {
        self.extras.as_ref()?.api_key_sha256.as_ref()
    }

    pub fn notify(&self) -> Option<&MerchantNotify> {
        self.extras.as_ref()?.notify.as_ref()
    }

    pub fn epay_key(&self) -> Option<&Secret> {
        self.extras.as_ref()?.epay_key.as_ref()
    }
}

/// A path with one `{order_id}` segment, e.g. `/v1/payments/{order_id}/refund`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathTemplate {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    OrderId,
}

impl PathTemplate {
    fn parse(template: &str) -> Result<PathTemplate, String> {
        let rest = template
            .strip_prefix('/')
            .ok_or_else(|| format!("path template {} must start with '/'", shown(template)))?;
        let segments: Vec<Segment> = rest
            .split('/')
            .map(|s| match s {
                "{order_id}" => Segment::OrderId,
                s => Segment::Literal(s.to_owned()),
            })
            .collect();
        let holes = segments.iter().filter(|s| **s == Segment::OrderId).count();
        if holes != 1 {
            return Err(format!(
                "path template {} must contain exactly one {{order_id}} segment",
                shown(template)
            ));
        }
        Ok(PathTemplate { segments })
    }

    /// Matches `path` and returns the order id segment.
    pub fn matches<'p>(&self, path: &'p str) -> Option<&'p str> {
        let mut order_id = None;
        let mut parts = path.strip_prefix('/')?.split('/');
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(lit) if lit == part => {}
                Segment::Literal(_) => return None,
                Segment::OrderId if part.is_empty() => return None,
                Segment::OrderId => order_id = Some(part),
            }
        }
        if parts.next().is_some() {
            return None;
        }
        order_id
    }
}

/// A value from the file as an error message shows it: quoted and escaped
/// like `{:?}`, cut after 64 characters with its length in bytes. Messages
/// go to a terminal and to the reload's 400 answer: a 1 MB merchant id
/// must not come back whole.
pub(crate) fn shown(value: &str) -> String {
    const SHOWN_CHARS: usize = 64;
    match value.char_indices().nth(SHOWN_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigIssue {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", render_issues(path, issues))]
    Invalid { path: PathBuf, issues: Vec<ConfigIssue> },
}

impl ConfigError {
    /// Each problem as `FILE:LINE:COL: message`.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } => vec![self.to_string()],
            ConfigError::Invalid { path, issues } => issues
                .iter()
                .map(|i| format!("{}:{}:{}: {}", path.display(), i.line, i.column, i.message))
                .collect(),
        }
    }
}

fn render_issues(path: &Path, issues: &[ConfigIssue]) -> String {
    let n = issues.len();
    let first = issues
        .first()
        .map(|i| format!("{}:{}:{}: {}", path.display(), i.line, i.column, i.message))
        .unwrap_or_default();
    if n > 1 {
        format!("{first} (and {} more)", n - 1)
    } else {
        first
    }
}

/// The directory relative paths in a config at `origin` are relative to.
pub(crate) fn base_of(origin: &Path) -> &Path {
    match origin.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Validates config text; `origin` names it in errors, and relative
    /// paths in it (certificates, `file:` secrets) are relative to its directory.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        validate::parse(text, base_of(origin)).map_err(|issues| ConfigError::Invalid {
            path: origin.to_owned(),
            issues,
        })
    }

    /// Validates a `payroute simulate` scenario: routes.toml text that may
    /// also hold a `[simulation]` table (which [`Config::parse`] refuses);
    /// the simulator reads that table itself.
    pub fn parse_scenario(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        validate::parse_scenario(text, base_of(origin)).map_err(|issues| ConfigError::Invalid {
            path: origin.to_owned(),
            issues,
        })
    }

    /// [`Config::parse`], reading files of `min_len` bytes and more in
    /// pieces ([`chunked`]): the fuzz target takes that path with small
    /// files (`min_len` 0), as a large file takes it for real.
    #[cfg(feature = "fuzz-api")]
    pub(crate) fn parse_split_from(text: &str, origin: &Path, min_len: usize) -> Result<Config, ConfigError> {
        validate::parse_split_from(text, base_of(origin), min_len).map_err(|issues| ConfigError::Invalid {
            path: origin.to_owned(),
            issues,
        })
    }

    /// Valid but risky settings, one line each: `check` prints them and
    /// `serve` logs them at start and on reload.
    pub fn warnings(&self) -> Vec<String> {
        let on = self.routing.failover_on;
        let mut warnings: Vec<String> = self
            .channels
            .iter()
            .filter(|c| !c.can_query() && c.reversal.is_none() && (on.timeout || on.status_5xx))
            .map(|c| {
                format!(
                    "channel {:?} has neither `query` nor `reversal`: an ambiguous attempt there (timeout, 5xx) \
                     cannot be proven harmless, so it is never failed over and stays pending until a notification \
                     or close_after_ms settles it (see README, \"Never twice\")",
                    c.id
                )
            })
            .collect();
        warnings.extend(
            self.channels
                .iter()
                .filter(|c| {
                    c.outcome.as_ref().is_some_and(|o| !o.pending.is_empty()) && c.notify.is_none() && c.query.is_none()
                })
                .map(|c| {
                    format!(
                        "channel {:?} can answer \"pending\" but has neither [channel.notify] nor `query`: \
                         its pending payments can only be closed, never learnt paid",
                        c.id
                    )
                }),
        );
        let epay_channels = self.channels.iter().any(ChannelConfig::is_epay);
        if !epay_channels {
            if let Some(m) = self.merchants.iter().find(|m| m.epay_key().is_some()) {
                warnings.push(format!(
                    "merchant {:?} has an epay_key but no channel has protocol = \"epay\": its epay payments \
                     are refused no_eligible_channel",
                    m.id
                ));
            }
        }
        warnings
    }

    /// One-line summary for `payroute check` and reload logs.
    pub fn summary(&self) -> String {
        let tls = match &self.server.tls {
            None => String::new(),
            Some(t) => format!(
                " (TLS{}, certificate sha256 {})",
                if t.client_auth {
                    ", client certificates required"
                } else {
                    ""
                },
                &t.fingerprint[..16]
            ),
        };
        format!(
            "{} channels, {} merchants, payments on {}{tls}, admin on {}",
            self.channels.len(),
            self.merchants.len(),
            self.server.listen,
            self.server.admin_listen
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merchant_stays_small() {
        // 100,000 merchants: every 8 bytes here is 0.8 MB of resident memory.
        assert!(std::mem::size_of::<MerchantConfig>() <= 72);
        assert_eq!(std::mem::size_of::<DayCut>(), 4);
    }

    #[test]
    fn warns_about_channels_that_cannot_resolve_ambiguity() {
        let text = "[[channel]]\nid = \"bare\"\nurl = \"http://127.0.0.1:1\"\n\
                    [[channel]]\nid = \"safe\"\nurl = \"http://127.0.0.1:2\"\n\
                    query = { method = \"GET\", path = \"/p/{order_id}\" }\n";
        let warnings = Config::parse(text, "t.toml".as_ref()).unwrap().warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("\"bare\""));
        let connect_only = format!("[routing]\nfailover_on = [\"connect\"]\n{text}");
        assert!(Config::parse(&connect_only, "t.toml".as_ref())
            .unwrap()
            .warnings()
            .is_empty());
    }

    #[test]
    fn templates_match_one_order_id_segment() {
        let t = PathTemplate::parse("/v1/payments/{order_id}/refund").unwrap();
        assert_eq!(t.matches("/v1/payments/o-1/refund"), Some("o-1"));
        assert_eq!(t.matches("/v1/payments/o-1"), None);
        assert_eq!(t.matches("/v1/payments//refund"), None);
        assert_eq!(t.matches("/v1/payments/o-1/refund/x"), None);
        assert!(PathTemplate::parse("/v1/payments").is_err());
        assert!(PathTemplate::parse("v1/{order_id}").is_err());
    }
}
