//! Whole-file validation: [`RawConfig`] in, [`Config`] or every issue out.
//!
//! Validation never stops at the first problem: an operator fixing a broken
//! file wants the full list, each with line and column. Defaults live here,
//! next to the checks, so the schema in [`super::raw`] stays a plain mirror of
//! the file.
//!
//! Files the config names (certificates, keys, CAs, `file:` secrets) are read
//! here, relative to the config's directory, through [`Inputs`], and turned
//! into what the proxy uses (rustls configs, [`Secret`]s); a problem with one
//! is reported at the key that names it, never echoing a secret's value.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU64;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::{HeaderName, HeaderValue, Method, Uri};
use toml::Spanned;

use super::issues::{checked_list, currency_list, Issues, DAY_MS, HOUR_MS, MINUTE_MS};
use super::raw::{
    Opt, RawChannel, RawChannelNotify, RawChannelTls, RawConfig, RawEndpoint, RawMerchant, RawOutcome, RawServerTls,
    RawStatement,
};
use super::*;
use crate::tls::client::UpstreamTlsError;
use crate::tls::server::IngressTlsError;

/// A `day_starts` key (`prefix` names its table in messages).
fn day_cut(v: &Opt<String>, default: DayCut, prefix: &str, issues: &mut Issues<'_>) -> DayCut {
    match v {
        Some(d) => DayCut::parse(d.get_ref()).unwrap_or_else(|e| {
            issues.at(d.span(), format!("{prefix}{e}"));
            default
        }),
        None => default,
    }
}

fn value<T: Clone>(v: &Opt<T>, default: T) -> T {
    v.as_ref().map_or(default, |s| s.get_ref().clone())
}

/// Zero means "none" for the optional upper bounds of the contract.
fn nonzero(v: &Opt<u64>) -> Option<NonZeroU64> {
    v.as_ref().and_then(|s| NonZeroU64::new(*s.get_ref()))
}

pub(super) fn parse(text: &str, base: &Path) -> Result<Config, Vec<ConfigIssue>> {
    parse_split_from(text, base, super::chunked::MIN_LEN)
}

/// [`parse`], taking the chunked path for files of `min_len` bytes and
/// more (the fuzz target reaches it with small files).
pub(super) fn parse_split_from(text: &str, base: &Path, min_len: usize) -> Result<Config, Vec<ConfigIssue>> {
    // Large files: parsed in pieces (see `chunked`); used only if it validates
    // cleanly, since its merchant spans are not the file's.
    if let Some(split) = super::chunked::split(text, min_len) {
        if split.head.simulation.is_none() {
            if let Some(config) = build_split(text, split, base) {
                return Ok(config);
            }
        }
    }
    parse_whole(text, base, false)
}

/// A scenario of `payroute simulate`: a routes.toml with a `[simulation]`
/// table, validated like any config except that the table is let through
/// (the simulator reads and checks it).
pub(super) fn parse_scenario(text: &str, base: &Path) -> Result<Config, Vec<ConfigIssue>> {
    parse_whole(text, base, true)
}

/// The whole file in one parse; `[simulation]` refused unless `scenario`.
fn parse_whole(text: &str, base: &Path, scenario: bool) -> Result<Config, Vec<ConfigIssue>> {
    let mut issues = Issues::new(text, base);
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            issues.at(e.span().unwrap_or(0..0), e.message().trim_end());
            return Err(issues.list);
        }
    };
    if let (false, Some(table)) = (scenario, &raw.simulation) {
        issues.at(
            table.span(),
            "unknown table `simulation`: only a scenario for `payroute simulate` has one",
        );
    }
    let config = build(&raw, &mut issues);
    super::policy::check_rule_merchants(&raw.rules, &config.merchants, &mut issues);
    if issues.list.is_empty() {
        Ok(config)
    } else {
        issues.list.sort_by_key(|i| (i.line, i.column));
        Err(issues.list)
    }
}

/// The fast path: the head as usual, then each merchant chunk parsed and
/// validated in turn. `None` on any problem (the caller then reports it
/// from a whole-file parse).
fn build_split(text: &str, split: super::chunked::Split, base: &Path) -> Option<Config> {
    let mut issues = Issues::new(text, base);
    let mut config = build(&split.head, &mut issues);
    // Files merchants read (`file:` secrets) join those the head read.
    issues.inputs = std::mem::take(&mut config.inputs);
    let channel_ids = channel_ids(&split.head);
    let mut seen = HashSet::with_capacity(split.merchants);
    config.merchants.reserve_exact(split.merchants);
    for range in split.chunks {
        let chunk = &text[range];
        let raw = super::chunked::merchants(chunk)?;
        // A chunk's spans index the chunk, so its issues are located in the
        // chunk's text (never shown: any issue sends the caller to the
        // whole-file parse). Located in the file's text, a span could fall
        // inside a multi-byte character of the head and panic `check` or a
        // reload (issue 18, found writing the `config` fuzz target; tests
        // `a_bad_merchant_in_a_*_with_non_ascii_text_is_reported`).
        issues.text = chunk;
        add_merchants(&raw, &channel_ids, &mut seen, &mut config.merchants, &mut issues);
        if !issues.list.is_empty() {
            return None;
        }
    }
    issues.text = text;
    super::policy::check_rule_merchants(&split.head.rules, &config.merchants, &mut issues);
    config.inputs = std::mem::take(&mut issues.inputs);
    issues.list.is_empty().then_some(config)
}

fn channel_ids(raw: &RawConfig) -> HashSet<&str> {
    raw.channels.iter().map(|c| c.get_ref().id.get_ref().as_str()).collect()
}

/// Validates `raw` merchants onto `out`; `seen` holds the ids so far, so a
/// duplicate is found across calls (the chunks of a large file).
fn add_merchants(
    raw: &[Spanned<RawMerchant>],
    channel_ids: &HashSet<&str>,
    seen: &mut HashSet<Arc<str>>,
    out: &mut Vec<MerchantConfig>,
    issues: &mut Issues<'_>,
) {
    for m in raw {
        let m = m.get_ref();
        let config = merchant(m, channel_ids, issues);
        if !seen.insert(config.id.clone()) {
            issues.at(m.id.span(), format!("duplicate merchant id {}", shown(m.id.get_ref())));
        }
        out.push(config);
    }
}

fn build(raw: &RawConfig, issues: &mut Issues<'_>) -> Config {
    let server = server(raw, issues);
    let request = request(raw, issues);
    let routing = routing(raw, issues);
    let state = state(raw, issues);
    let notify = notify(raw, issues);
    let sweeper = sweeper(raw, issues);
    let journal = journal(raw, issues);

    let mut seen = HashSet::new();
    let channels: Vec<ChannelConfig> = raw
        .channels
        .iter()
        .filter_map(|c| {
            let c = c.get_ref();
            if !seen.insert(c.id.get_ref().as_str()) {
                issues.at(c.id.span(), format!("duplicate channel id {}", shown(c.id.get_ref())));
            }
            channel(c, issues)
        })
        .collect();
    if raw.channels.is_empty() {
        issues.at(0..0, "at least one [[channel]] is required");
    }
    if server.public_url.is_none() {
        // Its notify_url and return_url are {public_url}/notify|return/{channel}.
        for c in raw.channels.iter().map(Spanned::get_ref) {
            if let Some(p) = c.protocol.as_ref().filter(|p| p.get_ref() == "epay") {
                issues.at(
                    p.span(),
                    format!(
                        "channel {} is an epay channel: [server] public_url is required (its notify_url and return_url start with it)",
                        shown(c.id.get_ref())
                    ),
                );
            }
        }
    }

    let mut merchants = Vec::with_capacity(raw.merchants.len());
    add_merchants(
        &raw.merchants,
        &channel_ids(raw),
        &mut HashSet::new(),
        &mut merchants,
        issues,
    );
    let channel_index: HashMap<&str, usize> = raw
        .channels
        .iter()
        .enumerate()
        .map(|(i, c)| (c.get_ref().id.get_ref().as_str(), i))
        .collect();
    let rules = super::policy::rules(&raw.rules, &channel_index, issues);

    Config {
        server,
        request,
        routing,
        state,
        notify,
        sweeper,
        journal,
        channels,
        merchants,
        rules,
        inputs: std::mem::take(&mut issues.inputs),
    }
}

fn server(raw: &RawConfig, issues: &mut Issues<'_>) -> ServerConfig {
    let s = &raw.server;
    let listen = issues.addr(&s.listen, "127.0.0.1:8080", "listen");
    let admin_listen = issues.addr(&s.admin_listen, "127.0.0.1:9090", "admin_listen");
    if listen == admin_listen && listen.port() != 0 {
        let span = s.admin_listen.as_ref().or(s.listen.as_ref()).map_or(0..0, |v| v.span());
        issues.at(span, "admin_listen must differ from listen");
    }
    let written_token = s.admin_token.as_ref().filter(|t| !t.get_ref().is_empty());
    let admin_token = written_token.and_then(|t| issues.secret(t, "admin_token"));
    if written_token.is_none() && !admin_listen.ip().is_loopback() {
        let span = s.admin_listen.as_ref().map_or(0..0, |v| v.span());
        issues.at(span, "a non-loopback admin_listen needs an admin_token");
    }
    let tls = s.tls.as_ref().and_then(|t| ingress_tls(t.get_ref(), issues));
    let max_body = issues.count(&s.max_body_bytes, 65_536, "max_body_bytes", 1, 64 << 20);
    let deadline = issues.millis(&s.deadline_ms, 10_000, "deadline_ms", 10 * MINUTE_MS);
    let drain = issues.millis(&s.drain_ms, deadline.as_millis() as u64 + 5_000, "drain_ms", HOUR_MS);
    let header_timeout = issues.millis(&s.header_timeout_ms, 10_000, "header_timeout_ms", 10 * MINUTE_MS);
    let idle_timeout = issues.millis(&s.idle_timeout_ms, 60_000, "idle_timeout_ms", 10 * MINUTE_MS);
    let body_timeout = issues.millis(&s.body_timeout_ms, 10_000, "body_timeout_ms", 10 * MINUTE_MS);
    let max_connections = issues.count(&s.max_connections, 0, "max_connections", 0, 10_000_000) as usize;
    let workers = issues.count(&s.workers, 0, "workers", 0, 1024) as usize;
    let public_url = s.public_url.as_ref().and_then(|u| public_url(u, issues));
    ServerConfig {
        listen,
        admin_listen,
        admin_token,
        max_body_bytes: max_body as usize,
        deadline,
        drain,
        header_timeout,
        idle_timeout,
        body_timeout,
        max_connections,
        workers,
        public_url,
        tls,
    }
}

/// `[server] public_url`: an http(s) origin, optionally with a path, without
/// query or fragment; kept without its trailing slash, so
/// `{public_url}/notify/{channel}` never has two.
fn public_url(u: &Spanned<String>, issues: &mut Issues<'_>) -> Option<String> {
    let text = u.get_ref().trim_end_matches('/');
    let ok = Uri::from_str(text).ok().is_some_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.authority().is_some()
            && uri.query().is_none()
            && !text.contains('#')
    });
    if ok {
        Some(text.to_owned())
    } else {
        issues.at(
            u.span(),
            format!(
                "public_url {} must be an http(s) URL without query, e.g. \"https://pay.example.com\"",
                shown(u.get_ref())
            ),
        );
        None
    }
}

/// `[server.tls]`: reads cert, key and client_ca; errors at the key at fault.
fn ingress_tls(t: &RawServerTls, issues: &mut Issues<'_>) -> Option<IngressTls> {
    let cert = issues.file(&t.cert, "[server.tls] cert");
    let key = issues.file(&t.key, "[server.tls] key");
    let client_ca = t.client_ca.as_ref().filter(|c| !c.get_ref().is_empty());
    let ca = match client_ca {
        Some(c) => Some(issues.file(c, "[server.tls] client_ca")?),
        None => None,
    };
    IngressTls::build(&cert?, &key?, ca.as_deref())
        .map_err(|e| {
            let span = match &e {
                IngressTlsError::Cert(_) | IngressTlsError::Versions(_) => t.cert.span(),
                IngressTlsError::Key(_) | IngressTlsError::KeyMismatch(_) => t.key.span(),
                IngressTlsError::ClientCa(_) | IngressTlsError::ClientVerifier(_) => {
                    client_ca.map_or(t.cert.span(), |c| c.span())
                }
            };
            issues.at(span, format!("[server.tls] {e}"));
        })
        .ok()
}

fn request(raw: &RawConfig, issues: &mut Issues<'_>) -> RequestConfig {
    let r = &raw.request;
    let merchant_header = match &r.merchant_header {
        Some(h) => match HeaderName::from_str(&h.get_ref().to_ascii_lowercase()) {
            Ok(name) if not_a_merchant_header(&name) => {
                issues.at(
                    h.span(),
                    format!(
                        "merchant_header {name:?} has a meaning of its own in HTTP or to payroute \
                         (credentials, framing, hop-by-hop, idempotency, payroute's own): use a header of its own such as x-merchant-id"
                    ),
                );
                HeaderName::from_static("x-merchant-id")
            }
            Ok(name) => name,
            Err(_) => {
                issues.at(
                    h.span(),
                    format!("merchant_header {} is not a valid header name", shown(h.get_ref())),
                );
                HeaderName::from_static("x-merchant-id")
            }
        },
        None => HeaderName::from_static("x-merchant-id"),
    };
    let payment_paths: Vec<String> = match &r.payment_paths {
        Some(list) => {
            if list.get_ref().is_empty() {
                issues.at(list.span(), "payment_paths must not be empty");
            }
            list.get_ref()
                .iter()
                .filter_map(|p| {
                    if p.get_ref().starts_with('/') && !p.get_ref().contains('{') {
                        Some(p.get_ref().clone())
                    } else {
                        issues.at(
                            p.span(),
                            format!(
                                "payment path {} must be a literal path starting with '/'",
                                shown(p.get_ref())
                            ),
                        );
                        None
                    }
                })
                .collect()
        }
        None => vec!["/v1/payments".to_owned()],
    };
    let followup_paths = match &r.followup_paths {
        Some(list) => list
            .get_ref()
            .iter()
            .filter_map(|p| {
                PathTemplate::parse(p.get_ref())
                    .map_err(|e| issues.at(p.span(), e))
                    .ok()
            })
            .collect(),
        None => ["/v1/payments/{order_id}", "/v1/payments/{order_id}/refund"]
            .iter()
            .filter_map(|t| PathTemplate::parse(t).ok())
            .collect(),
    };
    RequestConfig {
        merchant_header,
        amount_pointer: issues.pointer(&r.amount_pointer, "/amount", "amount_pointer"),
        currency_pointer: issues.pointer(&r.currency_pointer, "/currency", "currency_pointer"),
        order_id_pointer: issues.pointer(&r.order_id_pointer, "/order_id", "order_id_pointer"),
        payment_paths,
        followup_paths,
        idempotency_ttl: issues.millis(&r.idempotency_ttl_ms, 86_400_000, "idempotency_ttl_ms", 30 * DAY_MS),
        pay_type_pointer: r
            .pay_type_pointer
            .is_some()
            .then(|| issues.pointer(&r.pay_type_pointer, "", "pay_type_pointer"))
            .filter(|p| !p.is_empty()),
    }
}

fn routing(raw: &RawConfig, issues: &mut Issues<'_>) -> RoutingConfig {
    let r = &raw.routing;
    let failover_on = match &r.failover_on {
        Some(list) => {
            let mut on = FailoverOn {
                connect: false,
                timeout: false,
                status_5xx: false,
            };
            for kind in list.get_ref() {
                match kind.get_ref().as_str() {
                    "connect" => on.connect = true,
                    "timeout" => on.timeout = true,
                    "5xx" => on.status_5xx = true,
                    other => issues.at(
                        kind.span(),
                        format!(
                            "failover_on: unknown failure kind {} (expected \"connect\", \"timeout\" or \"5xx\")",
                            shown(other)
                        ),
                    ),
                }
            }
            on
        }
        None => FailoverOn {
            connect: true,
            timeout: true,
            status_5xx: true,
        },
    };
    let eject_base = issues.millis(&r.eject_base_ms, 10_000, "eject_base_ms", DAY_MS);
    let eject_max = issues.millis(&r.eject_max_ms, 300_000, "eject_max_ms", DAY_MS);
    if eject_max < eject_base {
        let span = r
            .eject_max_ms
            .as_ref()
            .or(r.eject_base_ms.as_ref())
            .map_or(0..0, |v| v.span());
        issues.at(span, "eject_max_ms must be at least eject_base_ms");
    }
    // The defaults of window_ms, explore_share and share_margin were tuned
    // by `payroute simulate` on loadtest/scenarios (BENCHMARKS.md, "Session
    // 8"): a 5-minute window measures a channel from enough payments that
    // close channels share traffic smoothly instead of flipping on noise.
    RoutingConfig {
        window: issues.millis(&r.window_ms, 300_000, "window_ms", DAY_MS),
        max_attempts: issues.count(&r.max_attempts, 3, "max_attempts", 1, 16) as usize,
        failover_on,
        explore_share: issues.number(&r.explore_share, 0.005, "explore_share", 0.0, 1.0),
        latency_penalty_per_s: issues.number(&r.latency_penalty_per_s, 0.02, "latency_penalty_per_s", 0.0, 1e6),
        prior_success_rate: r
            .prior_success_rate
            .is_some()
            .then(|| issues.number(&r.prior_success_rate, 1.0, "prior_success_rate", 0.0, 1.0)),
        prior_weight: issues.number(&r.prior_weight, 20.0, "prior_weight", 0.0, 1e9),
        latency_decay: issues.millis(&r.latency_decay_ms, 10_000, "latency_decay_ms", DAY_MS),
        eject_consecutive_failures: issues.count(
            &r.eject_consecutive_failures,
            5,
            "eject_consecutive_failures",
            1,
            1_000,
        ) as u32,
        eject_base,
        eject_max,
        unpaid_after: issues.millis(&r.unpaid_after_ms, 180_000, "unpaid_after_ms", DAY_MS),
        share_margin: issues.number(&r.share_margin, 0.015, "share_margin", 0.0, 1.0),
    }
}

fn journal(raw: &RawConfig, issues: &mut Issues<'_>) -> JournalConfig {
    let j = &raw.journal;
    let postgres = match &j.backend {
        None => false,
        Some(b) => match b.get_ref().as_str() {
            "sqlite" => false,
            "postgres" => true,
            other => {
                issues.at(
                    b.span(),
                    format!("[journal] backend {} must be \"sqlite\" or \"postgres\"", shown(other)),
                );
                false
            }
        },
    };
    if postgres {
        for (v, key) in [(&j.path, "path"), (&j.synchronous, "synchronous")] {
            if let Some(v) = v {
                issues.at(v.span(), format!("[journal] {key} applies to backend \"sqlite\" only"));
            }
        }
        let url = match &j.url {
            Some(u) => issues.secret(u, "[journal] url").map(|s| (s, u.span())),
            None => {
                let span = j.backend.as_ref().map_or(0..0, |b| b.span());
                issues.at(span, "[journal] backend \"postgres\" needs a url");
                None
            }
        };
        if let Some((url, span)) = &url {
            let scheme_ok = url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://");
            if !scheme_ok || sqlx::postgres::PgConnectOptions::from_str(url.expose()).is_err() {
                // Never the value nor the parser's words about it: it may hold a password.
                issues.at(span.clone(), "[journal] url is not a valid postgres:// URL");
            }
        }
        return JournalConfig::Postgres {
            url: url.map_or_else(|| Secret(String::new()), |(s, _)| s),
        };
    }
    if let Some(u) = &j.url {
        issues.at(u.span(), "[journal] url applies to backend \"postgres\" only");
    }
    let path = match &j.path {
        Some(p) if p.get_ref().is_empty() => {
            issues.at(p.span(), "[journal] path must name a file");
            issues.base.join("payroute.db")
        }
        Some(p) => issues.base.join(p.get_ref()),
        None => issues.base.join("payroute.db"),
    };
    let synchronous = match &j.synchronous {
        None => Synchronous::Normal,
        Some(v) => match v.get_ref().as_str() {
            "normal" => Synchronous::Normal,
            "full" => Synchronous::Full,
            other => {
                issues.at(
                    v.span(),
                    format!("[journal] synchronous {} must be \"normal\" or \"full\"", shown(other)),
                );
                Synchronous::Normal
            }
        },
    };
    JournalConfig::Sqlite { path, synchronous }
}

fn state(raw: &RawConfig, issues: &mut Issues<'_>) -> StateConfig {
    let s = &raw.state;
    let backend = match &s.backend {
        None => Backend::Memory,
        Some(b) => match b.get_ref().as_str() {
            "memory" => Backend::Memory,
            "redis" => Backend::Redis,
            other => {
                issues.at(
                    b.span(),
                    format!("backend {} must be \"memory\" or \"redis\"", shown(other)),
                );
                Backend::Memory
            }
        },
    };
    let redis_url = value(&s.redis_url, "redis://127.0.0.1:6379/0".to_owned());
    if let Err(e) = ::redis::Client::open(redis_url.as_str()) {
        // The category only: the URL may carry a password.
        let span = s.redis_url.as_ref().map_or(0..0, |u| u.span());
        issues.at(span, format!("redis_url is not a valid Redis URL ({})", e.category()));
    }
    let on_unavailable = match &s.on_unavailable {
        None => OnUnavailable::FailClosed,
        Some(v) => match v.get_ref().as_str() {
            "fail_closed" => OnUnavailable::FailClosed,
            "fail_open" => OnUnavailable::FailOpen,
            other => {
                issues.at(
                    v.span(),
                    format!(
                        "on_unavailable {} must be \"fail_closed\" or \"fail_open\"",
                        shown(other)
                    ),
                );
                OnUnavailable::FailClosed
            }
        },
    };
    StateConfig {
        backend,
        redis_url: Secret(redis_url),
        redis_timeout: issues.millis(&s.redis_timeout_ms, 250, "redis_timeout_ms", MINUTE_MS),
        key_prefix: value(&s.key_prefix, "payroute:".to_owned()),
        on_unavailable,
        memory_max_records: issues.count(&s.memory_max_records, 100_000, "memory_max_records", 1, 100_000_000) as usize,
        memory_max_bytes: issues.count(&s.memory_max_bytes, 64 << 20, "memory_max_bytes", 1 << 20, 1 << 40) as usize,
        // An acquirer's answer is read up to 1 MiB (`upstream::client`).
        max_answer_bytes: issues.count(&s.max_answer_bytes, 64 << 10, "max_answer_bytes", 0, 1 << 20) as usize,
    }
}

/// Ids become metric label values and response headers: keep them tame.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

fn channel(c: &RawChannel, issues: &mut Issues<'_>) -> Option<ChannelConfig> {
    let id = c.id.get_ref();
    if !valid_id(id) {
        issues.at(
            c.id.span(),
            format!(
                "channel id {} must be 1-64 characters of A-Z a-z 0-9 - _ . :",
                shown(id)
            ),
        );
    }
    let (scheme, origin, base_path) = channel_url(&c.url, issues)?;
    let timeout = issues.millis(&c.timeout_ms, 2_000, "timeout_ms", 10 * MINUTE_MS);
    let connect_timeout = issues.millis(&c.connect_timeout_ms, 300, "connect_timeout_ms", 10 * MINUTE_MS);
    if connect_timeout > timeout {
        let span = c.connect_timeout_ms.as_ref().map_or(c.id.span(), |v| v.span());
        issues.at(span, "connect_timeout_ms must not exceed timeout_ms");
    }
    let min_amount = value(&c.min_amount, 0);
    let max_amount = nonzero(&c.max_amount).map(NonZeroU64::get);
    if let (Some(max), Some(span)) = (max_amount, c.max_amount.as_ref()) {
        if max < min_amount {
            issues.at(span.span(), "max_amount must be at least min_amount");
        }
    }
    let currencies = c
        .currencies
        .as_ref()
        .map_or_else(Vec::new, |list| currency_list(list.get_ref(), issues));
    let headers = c
        .headers
        .as_ref()
        .map_or_else(Vec::new, |h| channel_headers(h.get_ref(), h.span(), issues));
    let tls = match (scheme == Scheme::HTTPS, &c.tls) {
        (true, tls) => channel_tls(tls.as_ref(), c.url.span(), issues),
        (false, Some(tls)) => {
            issues.at(
                tls.span(),
                "tls applies to https urls only; this channel's url is http://",
            );
            None
        }
        (false, None) => None,
    };
    let epay = channel_epay(c, issues);
    let currencies = if epay.is_some() {
        vec!["CNY".to_owned()]
    } else {
        currencies
    };
    let h2c = value(&c.h2c, false);
    let day_cut = day_cut(&c.day_starts, DayCut::default(), "", issues);
    let policy = super::policy::channel_policy(c, issues);
    if let (true, Some(span), true) = (h2c, c.h2c.as_ref(), scheme == Scheme::HTTPS) {
        issues.at(
            span.span(),
            "h2c applies to http urls only; https channels negotiate HTTP/2 by ALPN",
        );
    }
    Some(ChannelConfig {
        id: Arc::from(id.as_str()),
        scheme,
        origin,
        base_path,
        fee_percent: issues.number(&c.fee_percent, 0.0, "fee_percent", 0.0, 100.0),
        fee_fixed: value(&c.fee_fixed, 0),
        timeout,
        connect_timeout,
        currencies,
        min_amount,
        max_amount,
        max_in_flight: nonzero(&c.max_in_flight).map(|n| n.get().min(u32::MAX as u64) as u32),
        enabled: value(&c.enabled, true),
        headers,
        query: c.query.as_ref().and_then(|e| endpoint(e, "query", issues)),
        reversal: c.reversal.as_ref().and_then(|e| endpoint(e, "reversal", issues)),
        tls,
        h2c,
        outcome: c
            .outcome
            .as_ref()
            .and_then(|o| outcome_rule(o.get_ref(), issues))
            .map(Arc::new),
        notify: c
            .notify
            .as_ref()
            .and_then(|n| channel_notify(n.get_ref(), issues))
            .map(Arc::new),
        epay,
        statement: c
            .statement
            .as_ref()
            .and_then(|st| statement_columns(st.get_ref(), st.span(), day_cut, issues))
            .map(Arc::new),
        day_cut,
        policy,
    })
}

/// `[channel.statement]`. Column names are checked against a statement's
/// header only when one is read (`reconcile`); here, that what is named
/// makes sense together.
fn statement_columns(
    s: &RawStatement,
    span: Range<usize>,
    channel_day: DayCut,
    issues: &mut Issues<'_>,
) -> Option<StatementColumns> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut column = |written: Option<&Spanned<String>>, key: &'static str, issues: &mut Issues<'_>| {
        let w = written?;
        let name = w.get_ref().trim();
        if name.is_empty() {
            issues.at(w.span(), format!("statement.{key} must name a column"));
            return None;
        }
        if let Some(other) = seen.insert(name.to_owned(), key) {
            issues.at(
                w.span(),
                format!("statement.{key} names the column {name:?}, as statement.{other} does"),
            );
        }
        Some(name.to_owned())
    };
    let trade_no = column(Some(&s.trade_no), "trade_no", issues);
    let amount = column(Some(&s.amount), "amount", issues);
    let fee = column(s.fee.as_ref(), "fee", issues);
    let status = column(s.status.as_ref(), "status", issues);
    let amount_unit = match s.amount_unit.as_ref().map(|u| (u.get_ref().as_str(), u.span())) {
        None | Some(("yuan", _)) => AmountUnit::Yuan,
        Some(("fen", _)) => AmountUnit::Fen,
        Some((other, at)) => {
            issues.at(
                at,
                format!("statement.amount_unit {other:?} is not \"yuan\" or \"fen\""),
            );
            AmountUnit::Yuan
        }
    };
    let encoding = match s
        .encoding
        .as_ref()
        .map(|e| (e.get_ref().to_ascii_lowercase(), e.span()))
    {
        None => StatementEncoding::Auto,
        Some((e, at)) => match e.as_str() {
            "auto" => StatementEncoding::Auto,
            "utf-8" | "utf8" => StatementEncoding::Utf8,
            "gbk" | "gb18030" | "gb2312" => StatementEncoding::Gbk,
            _ => {
                issues.at(
                    at,
                    format!("statement.encoding {e:?} is not \"auto\", \"utf-8\" or \"gbk\""),
                );
                StatementEncoding::Auto
            }
        },
    };
    let values = |list: &Opt<Vec<Spanned<String>>>, key: &str, issues: &mut Issues<'_>| -> Vec<String> {
        let Some(list) = list else {
            return Vec::new();
        };
        if status.is_none() {
            issues.at(
                list.span(),
                format!("statement.{key} needs statement.status (the column they are values of)"),
            );
        }
        list.get_ref().iter().map(|v| v.get_ref().trim().to_owned()).collect()
    };
    let paid_values = values(&s.paid_values, "paid_values", issues);
    let refund_values = values(&s.refund_values, "refund_values", issues);
    if status.is_some() && paid_values.is_empty() {
        issues.at(
            span.clone(),
            "statement.status needs paid_values: the statuses that mean paid",
        );
    }
    if let Some(both) = paid_values.iter().find(|v| refund_values.contains(v)) {
        issues.at(
            span,
            format!("statement status {both:?} is both a paid and a refund value"),
        );
    }
    let day_cut = day_cut(&s.day_starts, channel_day, "statement.", issues);
    Some(StatementColumns {
        trade_no: trade_no?,
        amount: amount?,
        amount_unit,
        fee,
        status,
        paid_values,
        refund_values,
        day_cut,
        encoding,
    })
}

/// `protocol`, and for epay channels `pid`, `key`, `pay_types`; what does
/// not apply to the channel's protocol is an error, not ignored.
fn channel_epay(c: &RawChannel, issues: &mut Issues<'_>) -> Option<Arc<EpayChannel>> {
    let epay = match c.protocol.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
        None | Some(("http", _)) => false,
        Some(("epay", _)) => true,
        Some((other, span)) => {
            issues.at(span, format!("protocol {} is not \"http\" or \"epay\"", shown(other)));
            false
        }
    };
    if !epay {
        for (key, span) in [
            ("pid", c.pid.as_ref().map(Spanned::span)),
            ("key", c.key.as_ref().map(Spanned::span)),
            ("pay_types", c.pay_types.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = span {
                issues.at(
                    span,
                    format!("{key} applies to epay channels only (protocol = \"epay\")"),
                );
            }
        }
        return None;
    }
    // An epay gateway is asked with api.php, signs with its key and states
    // outcomes its own way: the JSON channel's settings would be ignored.
    for (key, span) in [
        ("query", c.query.as_ref().map(Spanned::span)),
        ("reversal", c.reversal.as_ref().map(Spanned::span)),
        ("outcome", c.outcome.as_ref().map(Spanned::span)),
        ("notify", c.notify.as_ref().map(Spanned::span)),
    ] {
        if let Some(span) = span {
            issues.at(
                span,
                format!("{key} does not apply to epay channels (payroute uses the gateway's api.php and signatures)"),
            );
        }
    }
    if let Some(list) = &c.currencies {
        if list
            .get_ref()
            .iter()
            .any(|cur| !cur.get_ref().eq_ignore_ascii_case("CNY"))
        {
            issues.at(list.span(), "epay channels take CNY only");
        }
    }
    let pid = match &c.pid {
        Some(p) if valid_pid(p.get_ref()) => Some(p.get_ref().clone()),
        Some(p) => {
            issues.at(p.span(), "pid must be 1-64 characters of A-Z a-z 0-9 - _");
            None
        }
        None => {
            issues.at(
                c.id.span(),
                "an epay channel needs pid (payroute's merchant id at the gateway)",
            );
            None
        }
    };
    let key = match &c.key {
        Some(k) => {
            let key = issues.secret(k, "key");
            if key.as_ref().is_some_and(|k| k.expose().is_empty()) {
                issues.at(k.span(), "key must not be empty");
                return None;
            }
            key
        }
        None => {
            issues.at(c.id.span(), "an epay channel needs key (payroute's key at the gateway)");
            None
        }
    };
    let pay_types = c.pay_types.as_ref().map_or_else(Vec::new, |list| {
        checked_list(
            list.get_ref(),
            issues,
            |t| crate::epay::order::valid_type(t).then(|| t.to_owned()),
            |shown| format!("pay type {shown} must be 1-32 of A-Z a-z 0-9 _"),
        )
    });
    Some(Arc::new(EpayChannel {
        pid: pid?,
        key: key?,
        pay_types,
    }))
}

fn valid_pid(pid: &str) -> bool {
    (1..=64).contains(&pid.len()) && pid.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

/// `[channel.outcome]`. Values are compared as text, so `paid = [1]` and
/// `paid = ["1"]` both match epay's `"code": 1`.
fn outcome_rule(o: &RawOutcome, issues: &mut Issues<'_>) -> Option<OutcomeRule> {
    let pointer = issues.pointer(&Some(o.pointer.clone()), "", "outcome.pointer");
    if pointer.is_empty() {
        issues.at(
            o.pointer.span(),
            "outcome.pointer must be a JSON pointer starting with '/'",
        );
        return None;
    }
    let mut seen = HashSet::new();
    let mut list = |values: &[Spanned<toml::Value>], key: &str, issues: &mut Issues<'_>| -> Vec<String> {
        values
            .iter()
            .filter_map(|v| {
                let text = match v.get_ref() {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => {
                        issues.at(
                            v.span(),
                            format!("outcome.{key} values must be strings, integers or booleans"),
                        );
                        return None;
                    }
                };
                if !seen.insert(text.clone()) {
                    issues.at(v.span(), format!("outcome value {} is listed twice", shown(&text)));
                }
                Some(text)
            })
            .collect()
    };
    let paid = list(&o.paid, "paid", issues);
    let pending = list(&o.pending, "pending", issues);
    let declined = list(&o.declined, "declined", issues);
    if paid.is_empty() {
        issues.at(o.pointer.span(), "outcome.paid must list at least one value");
    }
    let trade_no_pointer = o
        .trade_no_pointer
        .as_ref()
        .map(|_| issues.pointer(&o.trade_no_pointer, "", "outcome.trade_no_pointer"));
    Some(OutcomeRule {
        pointer,
        paid,
        pending,
        declined,
        trade_no_pointer,
    })
}

fn channel_notify(n: &RawChannelNotify, issues: &mut Issues<'_>) -> Option<ChannelNotify> {
    let signature_header = HeaderName::from_str(&n.signature_header.get_ref().to_ascii_lowercase())
        .map_err(|_| {
            issues.at(
                n.signature_header.span(),
                format!(
                    "notify.signature_header {} is not a header name",
                    shown(n.signature_header.get_ref())
                ),
            )
        })
        .ok();
    let secret = issues.secret(&n.secret, "notify.secret");
    let order_id_pointer = issues.pointer(&n.order_id_pointer, "/order_id", "notify.order_id_pointer");
    let amount_pointer = n
        .amount_pointer
        .as_ref()
        .map(|_| issues.pointer(&n.amount_pointer, "/amount", "notify.amount_pointer"));
    Some(ChannelNotify {
        signature_header: signature_header?,
        secret: secret?,
        order_id_pointer,
        amount_pointer,
    })
}

/// A list of delays in milliseconds: non-empty, each at most a week.
fn schedule(v: &Opt<Vec<Spanned<u64>>>, default: &[u64], key: &str, issues: &mut Issues<'_>) -> Vec<Duration> {
    const WEEK_MS: u64 = 7 * 24 * 3_600_000;
    let Some(list) = v else {
        return default.iter().map(|&ms| Duration::from_millis(ms)).collect();
    };
    if list.get_ref().is_empty() {
        issues.at(list.span(), format!("{key} must list at least one delay"));
    }
    list.get_ref()
        .iter()
        .map(|ms| {
            if *ms.get_ref() > WEEK_MS {
                issues.at(
                    ms.span(),
                    format!("{key}: a delay may not exceed a week ({WEEK_MS} ms)"),
                );
            }
            Duration::from_millis(*ms.get_ref())
        })
        .collect()
}

/// epay's schedule: at once, then about +1, +3, +20 min, +1 h, +2 h.
const NOTIFY_RETRY_MS: &[u64] = &[0, 60_000, 180_000, 1_200_000, 3_600_000, 7_200_000];
const SWEEP_QUERY_MS: &[u64] = &[60_000, 300_000, 900_000, 3_600_000];

fn notify(raw: &RawConfig, issues: &mut Issues<'_>) -> NotifyConfig {
    let n = &raw.notify;
    NotifyConfig {
        retry: schedule(&n.retry_ms, NOTIFY_RETRY_MS, "[notify] retry_ms", issues),
        timeout: issues.millis(&n.timeout_ms, 5_000, "[notify] timeout_ms", 10 * MINUTE_MS),
    }
}

fn sweeper(raw: &RawConfig, issues: &mut Issues<'_>) -> SweeperConfig {
    let s = &raw.sweeper;
    let query_after = schedule(&s.query_after_ms, SWEEP_QUERY_MS, "[sweeper] query_after_ms", issues);
    if let Some(list) = &s.query_after_ms {
        if list.get_ref().iter().any(|ms| *ms.get_ref() == 0) {
            issues.at(list.span(), "[sweeper] query_after_ms: a query needs a delay above 0");
        }
    }
    let close_after = issues.millis(&s.close_after_ms, 7_200_000, "[sweeper] close_after_ms", 30 * DAY_MS);
    SweeperConfig {
        query_after,
        close_after,
    }
}

/// The TLS client of an https channel: public roots plus `ca`, and `cert` +
/// `key` for mutual TLS (both or neither). `url` locates errors of a channel
/// without a `tls` table.
fn channel_tls(
    tls: Option<&Spanned<RawChannelTls>>,
    url: Range<usize>,
    issues: &mut Issues<'_>,
) -> Option<UpstreamTls> {
    let Some(tls) = tls else {
        return UpstreamTls::build(None, None)
            .map_err(|e| issues.at(url, format!("tls: {e}")))
            .ok();
    };
    let RawChannelTls { ca, cert, key } = tls.get_ref();
    let ca_written = ca.as_ref().filter(|c| !c.get_ref().is_empty());
    let ca_pem = match ca_written {
        Some(c) => Some(issues.file(c, "tls.ca")?),
        None => None,
    };
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => {
            let (cert_pem, key_pem) = (issues.file(cert, "tls.cert"), issues.file(key, "tls.key"));
            Some((cert_pem?, key_pem?))
        }
        (Some(only), None) => {
            issues.at(
                only.span(),
                "tls.cert needs tls.key (a client certificate needs its private key)",
            );
            return None;
        }
        (None, Some(only)) => {
            issues.at(only.span(), "tls.key needs tls.cert");
            return None;
        }
        (None, None) => None,
    };
    let identity_ref = identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice()));
    UpstreamTls::build(ca_pem.as_deref(), identity_ref)
        .map_err(|e| {
            let span_of = |v: &Opt<String>| v.as_ref().map_or(tls.span(), |s| s.span());
            let span = match &e {
                UpstreamTlsError::Ca(_) => span_of(ca),
                UpstreamTlsError::Cert(_) => span_of(cert),
                UpstreamTlsError::Key(_) | UpstreamTlsError::KeyMismatch(_) => span_of(key),
                UpstreamTlsError::Versions(_) => tls.span(),
            };
            issues.at(span, format!("tls.{e}"));
        })
        .ok()
}

fn channel_url(url: &Spanned<String>, issues: &mut Issues<'_>) -> Option<(Scheme, http::uri::Authority, String)> {
    let parsed = match Uri::from_str(url.get_ref()) {
        Ok(u) => u,
        Err(e) => {
            issues.at(
                url.span(),
                format!("url {} is not a valid URL: {e}", shown(url.get_ref())),
            );
            return None;
        }
    };
    let scheme = match parsed.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => {
            issues.at(
                url.span(),
                format!("url {} must start with http:// or https://", shown(url.get_ref())),
            );
            return None;
        }
    };
    let authority = parsed.authority()?.clone();
    if authority.as_str().contains('@') {
        issues.at(url.span(), "url must not carry credentials; use the channel's headers");
        return None;
    }
    if parsed.query().is_some() {
        issues.at(url.span(), "url must not have a query string");
        return None;
    }
    Some((scheme, authority, parsed.path().trim_end_matches('/').to_owned()))
}

/// Headers that cannot carry a merchant's id: the merchant's API key
/// (`authorization` is never forwarded, and a key is no id), what frames the
/// message or belongs to one hop (hyper and every proxy on the way read or
/// drop them), the idempotency key, and payroute's own `x-payroute-*`.
fn not_a_merchant_header(name: &HeaderName) -> bool {
    RESERVED_HEADERS.contains(&name.as_str())
        || name.as_str().starts_with("x-payroute-")
        || matches!(
            name.as_str(),
            "authorization"
                | "proxy-authorization"
                | "proxy-authenticate"
                | "proxy-connection"
                | "keep-alive"
                | "content-type"
                | "content-encoding"
                | "expect"
                | "idempotency-key"
                | "cookie"
        )
}

/// Headers the proxy itself owns; a channel may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
];

fn channel_headers(
    headers: &std::collections::BTreeMap<String, Spanned<String>>,
    table: Range<usize>,
    issues: &mut Issues<'_>,
) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let Ok(name) = HeaderName::from_str(&name.to_ascii_lowercase()) else {
                issues.at(
                    table.clone(),
                    format!("headers: {} is not a valid header name", shown(name)),
                );
                return None;
            };
            if RESERVED_HEADERS.contains(&name.as_str()) {
                issues.at(
                    table.clone(),
                    format!("headers: {name} is set by the proxy and cannot be configured"),
                );
                return None;
            }
            // Never echo the value: it is usually a credential.
            let secret = issues.secret(value, &format!("headers.{name}"))?;
            let Ok(mut value) = HeaderValue::from_str(secret.expose()) else {
                issues.at(
                    value.span(),
                    format!("headers: the value of {name} is not a valid header value"),
                );
                return None;
            };
            value.set_sensitive(true);
            Some((name, value))
        })
        .collect()
}

fn endpoint(e: &Spanned<RawEndpoint>, key: &str, issues: &mut Issues<'_>) -> Option<Endpoint> {
    let RawEndpoint { method, path } = e.get_ref();
    let m = Method::from_str(&method.get_ref().to_ascii_uppercase()).ok();
    if m.is_none() {
        issues.at(
            method.span(),
            format!("{key}.method {} is not an HTTP method", shown(method.get_ref())),
        );
    }
    let p = path.get_ref();
    if !p.starts_with('/') || !(p.contains("{order_id}") || p.contains("{trade_no}")) {
        issues.at(
            path.span(),
            format!("{key}.path must start with '/' and contain {{order_id}} or {{trade_no}}"),
        );
        return None;
    }
    // What is sent is the path with the names filled in: it must be a
    // path (and query) as it stands. A '#' would start a fragment, which
    // is never sent: the acquirer would get a shorter path than configured.
    let filled = p.replace("{order_id}", "o").replace("{trade_no}", "t");
    if p.contains('#') || http::uri::PathAndQuery::from_str(&filled).is_err() {
        issues.at(
            path.span(),
            format!(
                "{key}.path {} is not a valid request path ('#' and characters outside a URI are refused)",
                shown(p)
            ),
        );
        return None;
    }
    Some(Endpoint {
        method: m?,
        path: p.clone(),
    })
}

fn merchant(m: &RawMerchant, channel_ids: &HashSet<&str>, issues: &mut Issues<'_>) -> MerchantConfig {
    let id = m.id.get_ref();
    if !valid_id(id) {
        issues.at(
            m.id.span(),
            format!(
                "merchant id {} must be 1-64 characters of A-Z a-z 0-9 - _ . :",
                shown(id)
            ),
        );
    }
    let api_key_sha256 = m.api_key_sha256.as_ref().and_then(|h| {
        let hash = issues.secret(h, "api_key_sha256")?;
        let mut out = [0u8; 32];
        match hex::decode_to_slice(hash.expose().trim(), &mut out) {
            Ok(()) => Some(out),
            Err(_) => {
                issues.at(h.span(), "api_key_sha256 must be 64 hex characters (sha256 of the key)");
                None
            }
        }
    });
    let day_cut = day_cut(&m.day_starts, DayCut::default(), "", issues);
    let channels = m.channels.as_ref().map_or_else(Box::default, |list| {
        list.get_ref()
            .iter()
            .filter(|c| {
                let known = channel_ids.contains(c.get_ref().as_str());
                if !known {
                    issues.at(
                        c.span(),
                        format!("unknown channel id {} in merchant {}", shown(c.get_ref()), shown(id)),
                    );
                }
                known
            })
            .map(|c| Arc::from(c.get_ref().as_str()))
            .collect()
    });
    let notify = merchant_notify(m, issues);
    let epay_key = m.epay_key.as_ref().and_then(|k| {
        let key = issues.secret(k, "epay_key")?;
        if key.expose().is_empty() {
            issues.at(k.span(), "epay_key must not be empty");
            return None;
        }
        Some(key)
    });
    let extras = (api_key_sha256.is_some() || notify.is_some() || epay_key.is_some()).then(|| {
        Box::new(MerchantExtras {
            api_key_sha256,
            notify,
            epay_key,
        })
    });
    MerchantConfig {
        id: Arc::from(id.as_str()),
        extras,
        rate_per_sec: issues.count(&m.rate_per_sec, 100, "rate_per_sec", 1, 1_000_000) as u32,
        burst: issues.count(&m.burst, 20, "burst", 1, 1_000_000) as u32,
        max_amount: nonzero(&m.max_amount),
        daily_limit: nonzero(&m.daily_limit),
        day_cut,
        channels,
    }
}

/// `notify_url` + `notify_secret`: both or neither, and an http(s) URL.
fn merchant_notify(m: &RawMerchant, issues: &mut Issues<'_>) -> Option<MerchantNotify> {
    match (&m.notify_url, &m.notify_secret) {
        (None, None) => None,
        (Some(url), None) => {
            issues.at(
                url.span(),
                "notify_url needs a notify_secret to sign notifications with",
            );
            None
        }
        (None, Some(secret)) => {
            issues.at(secret.span(), "notify_secret without notify_url");
            None
        }
        (Some(url), Some(secret)) => {
            let parsed = http::Uri::from_str(url.get_ref())
                .ok()
                .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some());
            if parsed.is_none() {
                issues.at(
                    url.span(),
                    format!("notify_url {} must be an http(s) URL", shown(url.get_ref())),
                );
            }
            let secret = issues.secret(secret, "notify_secret");
            Some(MerchantNotify {
                url: parsed?,
                secret: secret?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9090"

[[channel]]
id = "acq-a"
url = "http://127.0.0.1:9001/api"
fee_percent = 0.38
currencies = ["cny"]
headers = { authorization = "Bearer s3cret" }
query = { method = "get", path = "/v1/payments/{order_id}" }

[[merchant]]
id = "m-001"
channels = ["acq-a"]
"#;

    fn issues(text: &str) -> Vec<ConfigIssue> {
        parse(text, Path::new(".")).expect_err("config should be refused")
    }

    #[test]
    fn good_config_gets_defaults() {
        let c = parse(GOOD, Path::new(".")).unwrap();
        assert_eq!(c.server.deadline, Duration::from_secs(10));
        assert_eq!(c.routing.max_attempts, 3);
        let ch = &c.channels[0];
        assert_eq!(ch.base_path, "/api");
        assert_eq!(ch.currencies, ["CNY"]);
        assert!(ch.headers[0].1.is_sensitive());
        assert_eq!(ch.query.as_ref().unwrap().method, Method::GET);
        assert_eq!(c.merchants[0].rate_per_sec, 100);
        assert_eq!(c.merchants[0].max_amount, None);
    }

    #[test]
    fn unknown_key_is_located() {
        let text = GOOD.replace("fee_percent = 0.38", "fee_percnt = 0.38");
        let list = issues(&text);
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].line, list[0].column), (9, 1));
        assert!(list[0].message.contains("fee_percnt"), "{}", list[0].message);
    }

    #[test]
    fn every_semantic_error_is_reported_with_position() {
        let text = r#"[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:8080"

[[channel]]
id = "a"
url = "http://127.0.0.1:1"
timeout_ms = 0

[[channel]]
id = "a"
url = "http://127.0.0.1:2"

[[merchant]]
id = "m"
channels = ["a", "nope"]
"#;
        let list = issues(text);
        let at: Vec<(usize, usize)> = list.iter().map(|i| (i.line, i.column)).collect();
        assert_eq!(at, vec![(3, 16), (8, 14), (11, 6), (16, 18)], "{list:?}");
        assert!(list[3].message.contains("nope"));
    }

    /// Finding 10 of issue 18: every duration has a ceiling, reported at
    /// the value like any other error.
    #[test]
    fn durations_are_bounded() {
        let huge = 9_223_372_036_854_775_807u64;
        let text = format!(
            "[server]\ndeadline_ms = {huge}\ndrain_ms = {huge}\n\
             [request]\nidempotency_ttl_ms = {huge}\n\
             [routing]\neject_base_ms = {huge}\neject_max_ms = {huge}\nwindow_ms = {huge}\n\
             latency_decay_ms = {huge}\nunpaid_after_ms = {huge}\n\
             [state]\nredis_timeout_ms = {huge}\n\
             [notify]\ntimeout_ms = {huge}\n\
             [sweeper]\nclose_after_ms = {huge}\n\
             [[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\ntimeout_ms = {huge}\nconnect_timeout_ms = {huge}\n"
        );
        let list = issues(&text);
        let keys = [
            "deadline_ms",
            "drain_ms",
            "idempotency_ttl_ms",
            "eject_base_ms",
            "eject_max_ms",
            "window_ms",
            "latency_decay_ms",
            "unpaid_after_ms",
            "redis_timeout_ms",
            "[notify] timeout_ms",
            "[sweeper] close_after_ms",
            "timeout_ms",
            "connect_timeout_ms",
        ];
        assert_eq!(list.len(), keys.len(), "{list:#?}");
        for (issue, key) in list.iter().zip(keys) {
            assert!(
                issue.message.starts_with(&format!("{key} must be at most")),
                "{issue:?}"
            );
            let line = text.lines().nth(issue.line - 1).unwrap_or_default();
            assert!(line.contains(&huge.to_string()), "{issue:?} points at {line:?}");
        }
        assert!(list[4].message.contains("(1 days)"), "{}", list[4].message);
        // The ceilings themselves are allowed.
        let ok = "[routing]\neject_base_ms = 86400000\neject_max_ms = 86400000\n\
                  [[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\ntimeout_ms = 600000\n";
        assert!(parse(ok, Path::new(".")).is_ok());
    }

    /// Finding 11 of issue 18: values are echoed cut, whatever their size.
    #[test]
    fn echoed_values_are_cut() {
        let huge = "m".repeat(1 << 20);
        let text = format!(
            "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n[[merchant]]\nid = \"{huge}\"\n\
             [[merchant]]\nid = \"ok\"\nchannels = [\"{huge}\"]\n"
        );
        let list = issues(&text);
        assert_eq!(list.len(), 2, "{}", list.len());
        for i in &list {
            assert!(i.message.len() < 300, "{} bytes", i.message.len());
            assert!(i.message.contains("(1048576 bytes)"), "{}", &i.message[..200]);
        }
        let key = "k".repeat(100_000);
        let list = issues(&format!("[server]\n{key} = 1\n"));
        assert!(
            list.iter().all(|i| i.message.len() <= 1100),
            "{}",
            list[0].message.len()
        );
        assert_eq!(shown("short"), "\"short\"");
        assert_eq!(shown(&"é".repeat(65)), format!("{:?}… (130 bytes)", "é".repeat(64)));
    }

    #[test]
    fn a_merchant_header_with_a_meaning_of_its_own_is_refused() {
        for name in [
            "authorization",
            "Authorization",
            "content-length",
            "transfer-encoding",
            "connection",
            "keep-alive",
            "host",
            "te",
            "upgrade",
            "proxy-authorization",
            "idempotency-key",
            "x-payroute-merchant",
        ] {
            let list = issues(&format!("[request]\nmerchant_header = \"{name}\"\n{GOOD}"));
            assert!(
                list.iter()
                    .any(|i| i.message.contains("merchant_header") && i.line == 2),
                "{name}: {list:?}"
            );
        }
        let text = format!("[request]\nmerchant_header = \"X-Shop-Id\"\n{GOOD}");
        let c = parse(&text, Path::new(".")).unwrap();
        assert_eq!(c.request.merchant_header, "x-shop-id");
    }

    #[test]
    fn a_fragment_in_a_query_or_reversal_path_is_refused() {
        for path in [
            "/v1/payments/{order_id}/reverse#x",
            "/v1/payments/{order_id}#",
            "/v1/pay ments/{order_id}",
            "/v1/payments/{trade_no}\\u007f",
        ] {
            let text = format!(
                "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\nreversal = {{ method = \"POST\", path = \"{path}\" }}\n"
            );
            let list = issues(&text);
            assert!(
                list.iter().any(|i| i.message.contains("reversal.path") && i.line == 4),
                "{path}: {list:?}"
            );
        }
        let ok = "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
                  reversal = { method = \"POST\", path = \"/v1/p/{order_id}/reverse?why=timeout&t={trade_no}\" }\n";
        assert!(parse(ok, Path::new(".")).is_ok());
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let text = GOOD.replace("Bearer s3cret", "Bearer s3cret\u{7}");
        let list = issues(&text);
        assert!(list.iter().all(|i| !i.message.contains("s3cret")), "{list:?}");
    }

    #[test]
    fn public_admin_needs_token() {
        let text = GOOD.replace("admin_listen = \"127.0.0.1:9090\"", "admin_listen = \"0.0.0.0:9090\"");
        assert!(issues(&text)[0].message.contains("admin_token"));
        let text = text.replace("[server]", "[server]\nadmin_token = \"t\"");
        assert!(parse(&text, Path::new(".")).is_ok());
    }

    #[test]
    fn zero_means_none_for_bounds() {
        let text = GOOD.replace("id = \"m-001\"", "id = \"m-001\"\nmax_amount = 0\ndaily_limit = 500");
        let c = parse(&text, Path::new(".")).unwrap();
        assert_eq!(c.merchants[0].max_amount, None);
        assert_eq!(c.merchants[0].daily_limit.map(NonZeroU64::get), Some(500));
    }

    /// A tempdir with `server.pem`/`server.key` (matching) and `other.key`.
    fn tls_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = crate::tls::testing::self_signed();
        let (_, other) = crate::tls::testing::self_signed();
        std::fs::write(dir.path().join("server.pem"), cert).unwrap();
        std::fs::write(dir.path().join("server.key"), key).unwrap();
        std::fs::write(dir.path().join("other.key"), other).unwrap();
        dir
    }

    #[test]
    fn server_tls_reads_files_relative_to_the_config() {
        let dir = tls_dir();
        let text = GOOD.replace(
            "[[channel]]",
            "[server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"server.pem\"\n\n[[channel]]",
        );
        let c = parse(&text, dir.path()).unwrap();
        let tls = c.server.tls.as_ref().expect("tls");
        assert!(tls.client_auth);
        assert_eq!(c.inputs.dirs(), [dir.path().to_owned()]);
        assert!(c.inputs.unchanged());

        let bad = text.replace("key = \"server.key\"", "key = \"other.key\"");
        let list = parse(&bad, dir.path()).unwrap_err();
        assert_eq!((list[0].line, list[0].column), (8, 7), "{list:?}");
        assert!(list[0].message.contains("key does not fit cert"), "{list:?}");

        let missing = text.replace("cert = \"server.pem\"", "cert = \"gone.pem\"");
        let list = parse(&missing, dir.path()).unwrap_err();
        assert_eq!((list[0].line, list[0].column), (7, 8), "{list:?}");
        assert!(list[0].message.contains("gone.pem"), "{list:?}");
    }

    #[test]
    fn https_channels_get_tls_and_tls_needs_https() {
        let dir = tls_dir();
        let text = GOOD.replace("http://127.0.0.1:9001/api", "https://acq.example:8443/api");
        let c = parse(&text, dir.path()).unwrap();
        assert_eq!(c.channels[0].scheme, Scheme::HTTPS);
        assert!(c.channels[0]
            .tls
            .as_ref()
            .is_some_and(|t| !t.private_ca && !t.client_cert));

        let mtls = text.replace(
            "fee_percent = 0.38",
            "fee_percent = 0.38\ntls = { ca = \"server.pem\", cert = \"server.pem\", key = \"server.key\" }",
        );
        let c = parse(&mtls, dir.path()).unwrap();
        assert!(c.channels[0]
            .tls
            .as_ref()
            .is_some_and(|t| t.private_ca && t.client_cert));

        let half = text.replace(
            "fee_percent = 0.38",
            "fee_percent = 0.38\ntls = { cert = \"server.pem\" }",
        );
        assert!(parse(&half, dir.path()).unwrap_err()[0]
            .message
            .contains("needs tls.key"));

        let plain = GOOD.replace(
            "fee_percent = 0.38",
            "fee_percent = 0.38\ntls = { ca = \"server.pem\" }",
        );
        let list = parse(&plain, dir.path()).unwrap_err();
        assert!(list[0].message.contains("https urls only"), "{list:?}");
        assert_eq!(parse(GOOD, dir.path()).unwrap().channels[0].scheme, Scheme::HTTP);
    }

    #[test]
    fn a_large_file_is_parsed_in_pieces_and_its_errors_keep_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:9001\"\n\n");
        while text.len() < super::super::chunked::MIN_LEN + 1000 {
            let n = text.len();
            text.push_str(&format!("[[merchant]]\nid = \"m-{n}\"\nchannels = [\"a\"]\n\n"));
        }
        // A `file:` secret in the last merchant is an input of the config.
        std::fs::write(dir.path().join("key.sha256"), "ab".repeat(32)).unwrap();
        text.push_str("[[merchant]]\nid = \"m-last\"\napi_key_sha256 = \"file:key.sha256\"\n");
        let count = text.matches("[[merchant]]").count();
        assert!(super::super::chunked::split(&text, super::super::chunked::MIN_LEN).is_some());
        let config = parse(&text, dir.path()).unwrap();
        assert_eq!(config.merchants.len(), count);
        // In file order, across chunks.
        let in_file: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id = \"")?.strip_suffix('"'))
            .skip(1) // the channel's
            .collect();
        let in_config: Vec<&str> = config.merchants.iter().map(|m| &*m.id).collect();
        assert_eq!(in_config, in_file);
        assert!(config.merchants[..count - 1].iter().all(|m| m.channels.len() == 1));
        assert_eq!(config.merchants[count - 1].api_key_sha256(), Some(&[0xab; 32]));
        assert_eq!(config.inputs.files(), [dir.path().join("key.sha256")]);

        // A duplicate id across chunks: found, and located by the whole parse.
        let first = format!("id = \"{}\"", config.merchants[0].id);
        let dup = text.replace("id = \"m-last\"", &first);
        let Err(list) = parse(&dup, dir.path()) else {
            panic!("a duplicate id is refused")
        };
        assert_eq!(list.len(), 1, "{list:?}");
        assert!(list[0].message.starts_with("duplicate merchant id"), "{list:?}");
        let last_line = dup.lines().enumerate().filter(|(_, l)| *l == first).last().unwrap().0 + 1;
        assert_eq!((list[0].line, list[0].column), (last_line, 6), "{list:?}");

        // An error deep in the file: reported at the file's own line and column.
        let last = text.rfind("channels = [\"a\"]").unwrap();
        let mut bad = text.clone();
        bad.replace_range(last..last + "channels = [\"a\"]".len(), "channels = [\"zz\"]");
        let Err(list) = parse(&bad, dir.path()) else {
            panic!("an unknown channel is refused")
        };
        assert_eq!(list.len(), 1, "{list:?}");
        let line = bad[..last].matches('\n').count() + 1;
        assert_eq!((list[0].line, list[0].column), (line, 13), "{list:?}");
        assert!(list[0].message.contains("unknown channel id \"zz\""), "{list:?}");
    }

    /// Issue 18 (found writing the `config` fuzz target, whose oracle
    /// runs the chunked path on every input): a merchant chunk's issue was
    /// located with the chunk's span in the whole file's text, and a head
    /// with multi-byte text (a Chinese comment) put that offset inside a
    /// character: `check` and a reload panicked. Each padding shifts the
    /// offset by a byte, so one of the three lands inside a 3-byte
    /// character.
    #[test]
    fn a_bad_merchant_in_a_large_file_with_non_ascii_text_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        for pad in ["", "x", "xx"] {
            let mut text = format!(
                "# 支付路由 {}\n[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:9001\"\n\n",
                "中".repeat(5000)
            );
            while text.len() < super::super::chunked::MIN_LEN + 1000 {
                let n = text.len();
                text.push_str(&format!("[[merchant]]\nid = \"m-{n}\"\nchannels = [\"a\"]\n\n"));
            }
            text.push_str(&format!("[[merchant]]\nid = \"bad{pad}\"\nchannels = [\"nope\"]\n"));
            let list = parse(&text, dir.path()).unwrap_err();
            assert_eq!(list.len(), 1, "{list:?}");
            assert!(list[0].message.contains("unknown channel id \"nope\""), "{list:?}");
            assert_eq!(list[0].line, text.lines().count(), "{list:?}");
        }
    }

    /// The same on the chunked path taken from 0 bytes (as the `config`
    /// fuzz target takes it): an issue in the first chunk at an offset
    /// inside the head's Chinese comment.
    #[test]
    fn a_bad_merchant_in_a_small_chunked_file_with_non_ascii_text_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let small = "# 支付路由配置：几个商户的例子\n[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:9001\"\n\n\
                     [[merchant]] # 第一个\nid = \"\"\nchannels = [\"a\"]\n";
        assert!(
            !small.is_char_boundary(30),
            "the issue's offset in the chunk is inside a character of the head"
        );
        for min_len in [0, usize::MAX] {
            let list = parse_split_from(small, dir.path(), min_len).unwrap_err();
            assert_eq!(list.len(), 1, "{list:?}");
            assert_eq!((list[0].line, list[0].column), (7, 6), "{list:?}");
        }
    }

    const EPAY: &str = r#"
[server]
public_url = "https://pay.example.com/"

[[channel]]
id = "epay-a"
protocol = "epay"
url = "https://gw.example.com/"
pid = "2001"
key = "chan-key"
pay_types = ["alipay", "wxpay"]

[[channel]]
id = "json"
url = "http://127.0.0.1:9001"

[[merchant]]
id = "1001"
epay_key = "merchant-key"
"#;

    #[test]
    fn epay_channels_and_merchants_parse() {
        let c = parse(EPAY, Path::new(".")).unwrap();
        assert_eq!(c.server.public_url.as_deref(), Some("https://pay.example.com"));
        let a = c.channels[0].epay.as_deref().unwrap();
        assert_eq!((a.pid.as_str(), a.key.expose()), ("2001", "chan-key"));
        assert_eq!(a.pay_types, ["alipay", "wxpay"]);
        assert_eq!(c.channels[0].currencies, ["CNY"]);
        assert!(c.channels[0].can_query() && !c.channels[1].can_query());
        assert!(c.channels[1].epay.is_none());
        assert_eq!(c.merchants[0].epay_key().unwrap().expose(), "merchant-key");
        assert_eq!(c.routing.unpaid_after, Duration::from_secs(180));
        assert!(!format!("{c:?}").contains("chan-key") && !format!("{c:?}").contains("merchant-key"));
        assert!(c.warnings().iter().all(|w| !w.contains("epay-a")), "{:?}", c.warnings());
    }

    #[test]
    fn epay_mistakes_are_located() {
        let at = |text: &str, needle: &str| {
            let line = text.lines().position(|l| l.contains(needle)).unwrap() + 1;
            let list = issues(text);
            assert!(list.iter().any(|i| i.line == line), "{needle}: {list:?}");
            list
        };
        let no_url = EPAY.replace("public_url = \"https://pay.example.com/\"", "");
        let list = at(&no_url, "protocol = \"epay\"");
        assert!(list[0].message.contains("public_url is required"), "{list:?}");
        at(&EPAY.replace("pid = \"2001\"\n", "pid = \"20 01\"\n"), "pid = ");
        at(
            &EPAY.replace("protocol = \"epay\"", "protocol = \"ftp\""),
            "protocol = ",
        );
        // Each bad item at its own column, the good ones kept quiet.
        let text = EPAY.replace("\"wxpay\"]", "\"wx pay\", \"ali-pay\"]");
        let list = at(&text, "pay_types");
        let line = text.lines().find(|l| l.contains("pay_types")).unwrap();
        let bad: Vec<_> = list.iter().filter(|i| i.message.starts_with("pay type ")).collect();
        assert_eq!(bad.len(), 2, "{list:?}");
        assert!(
            bad[0].message.contains(r#""wx pay" must be 1-32 of A-Z a-z 0-9 _"#),
            "{list:?}"
        );
        assert_eq!(bad[0].column, line.find("\"wx pay\"").unwrap() + 1, "{list:?}");
        assert_eq!(bad[1].column, line.find("\"ali-pay\"").unwrap() + 1, "{list:?}");
        at(
            &EPAY.replace(
                "pay_types = ",
                "query = { method = \"GET\", path = \"/q/{order_id}\" }\npay_types = ",
            ),
            "query = ",
        );
        at(
            &EPAY.replace("pay_types = ", "currencies = [\"USD\"]\npay_types = "),
            "currencies",
        );
        at(
            &EPAY.replace(
                "url = \"http://127.0.0.1:9001\"",
                "url = \"http://127.0.0.1:9001\"\npid = \"1\"",
            ),
            "pid = \"1\"",
        );
        at(
            &EPAY.replace("public_url = \"https://pay.example.com/\"", "public_url = \"ftp://x\""),
            "public_url",
        );
        at(
            &EPAY.replace("epay_key = \"merchant-key\"", "epay_key = \"\""),
            "epay_key",
        );
        let no_key = EPAY.replace("key = \"chan-key\"\n", "");
        let list = issues(&no_key);
        assert!(list.iter().any(|i| i.message.contains("needs key")), "{list:?}");
    }

    #[test]
    fn h2c_is_off_by_default_and_for_http_urls_only() {
        let dir = tls_dir();
        assert!(!parse(GOOD, dir.path()).unwrap().channels[0].h2c);
        let on = GOOD.replace("fee_percent = 0.38", "fee_percent = 0.38\nh2c = true");
        assert!(parse(&on, dir.path()).unwrap().channels[0].h2c);

        let https = on.replace("http://127.0.0.1:9001/api", "https://acq.example:8443/api");
        let list = parse(&https, dir.path()).unwrap_err();
        assert_eq!(list.len(), 1, "{list:?}");
        assert!(list[0].message.contains("h2c applies to http urls only"), "{list:?}");
        let line = https.lines().position(|l| l.starts_with("h2c")).unwrap() + 1;
        assert_eq!((list[0].line, list[0].column), (line, 7), "{list:?}");
    }

    #[test]
    fn journal_defaults_to_sqlite_beside_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse(GOOD, dir.path()).unwrap();
        let JournalConfig::Sqlite { path, synchronous } = &c.journal else {
            panic!("{:?}", c.journal)
        };
        assert_eq!(path, &dir.path().join("payroute.db"));
        assert_eq!(*synchronous, Synchronous::Normal);
        let text = GOOD.replace("[[channel]]", "[journal]\npath = \"db/j.db\"\n\n[[channel]]");
        let c = parse(&text, dir.path()).unwrap();
        assert!(matches!(&c.journal, JournalConfig::Sqlite { path, .. } if *path == dir.path().join("db/j.db")));
    }

    #[test]
    fn journal_postgres_url_resolves_and_never_prints() {
        let text = GOOD.replace(
            "[[channel]]",
            "[journal]\nbackend = \"postgres\"\nurl = \"postgres://u:pw-s3cret@db:5432/p\"\n\n[[channel]]",
        );
        let c = parse(&text, Path::new(".")).unwrap();
        let JournalConfig::Postgres { url } = &c.journal else {
            panic!("postgres")
        };
        assert_eq!(url.expose(), "postgres://u:pw-s3cret@db:5432/p");
        assert!(!format!("{c:?}").contains("pw-s3cret"));
        let env = text.replace("postgres://u:pw-s3cret@db:5432/p", "env:PAYROUTE_UNSET_JOURNAL_URL_7Q");
        assert_eq!(
            issues(&env)[0].message,
            "[journal] url: environment variable PAYROUTE_UNSET_JOURNAL_URL_7Q is not set"
        );
    }

    /// `[simulation]` belongs to `payroute simulate` scenarios: a config
    /// refuses it at its header, a scenario lets it through.
    #[test]
    fn only_a_scenario_may_have_a_simulation_table() {
        let text = format!("{GOOD}\n[simulation]\npayments = 10\n");
        let list = issues(&text);
        assert_eq!(list.len(), 1, "{list:?}");
        assert!(list[0].message.contains("unknown table `simulation`"), "{list:?}");
        assert_eq!(
            list[0].line,
            text.lines().position(|l| l == "[simulation]").unwrap() + 1
        );
        assert!(parse_scenario(&text, Path::new(".")).is_ok());
    }

    #[test]
    fn journal_errors_are_located() {
        let journal = |body: &str| GOOD.replace("[[channel]]", &format!("[journal]\n{body}\n\n[[channel]]"));
        // Line 7 is the first line of [journal]'s body.
        let cases: &[(&str, (usize, usize), &str)] = &[
            ("bakend = \"sqlite\"", (7, 1), "unknown field `bakend`"),
            ("backend = \"mysql\"", (7, 11), "must be \"sqlite\" or \"postgres\""),
            ("backend = \"postgres\"", (7, 11), "needs a url"),
            (
                "backend = \"postgres\"\nurl = \"postgres://x\"\npath = \"j.db\"",
                (9, 8),
                "path applies to backend \"sqlite\" only",
            ),
            (
                "url = \"postgres://x\"",
                (7, 7),
                "url applies to backend \"postgres\" only",
            ),
            ("synchronous = \"off\"", (7, 15), "must be \"normal\" or \"full\""),
            ("path = \"\"", (7, 8), "must name a file"),
        ];
        for (body, at, message) in cases {
            let list = issues(&journal(body));
            assert_eq!(list.len(), 1, "{body}: {list:?}");
            assert_eq!((list[0].line, list[0].column), *at, "{body}: {list:?}");
            assert!(list[0].message.contains(message), "{body}: {list:?}");
        }
        // A bad URL is refused without repeating it: it may hold a password.
        let list = issues(&journal("backend = \"postgres\"\nurl = \"mysql://u:pw-s3cret@db/x\""));
        assert_eq!((list[0].line, list[0].column), (8, 7), "{list:?}");
        assert_eq!(list[0].message, "[journal] url is not a valid postgres:// URL");
        let list = issues(&journal(
            "backend = \"postgres\"\nurl = \"postgres://u:pw-s3cret@db:notaport/x\"",
        ));
        assert_eq!(list[0].message, "[journal] url is not a valid postgres:// URL");
    }

    #[test]
    fn secrets_resolve_from_env_and_file_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("acq.secret"), "Bearer from-file\n").unwrap();
        std::fs::write(dir.path().join("key.sha256"), format!("{}\n", "ab".repeat(32))).unwrap();
        let text = GOOD
            .replace("\"Bearer s3cret\"", "\"file:acq.secret\", x-env = \"env:PATH\"")
            .replace("[server]", "[server]\nadmin_token = \"file:acq.secret\"")
            .replace("id = \"m-001\"", "id = \"m-001\"\napi_key_sha256 = \"file:key.sha256\"");
        let c = parse(&text, dir.path()).unwrap();
        let headers = &c.channels[0].headers;
        assert_eq!(headers[0].1, "Bearer from-file");
        assert!(headers.iter().all(|(_, v)| v.is_sensitive()));
        assert_eq!(headers[1].1.to_str().unwrap(), std::env::var("PATH").unwrap());
        assert_eq!(
            c.server.admin_token.as_ref().map(Secret::expose),
            Some("Bearer from-file")
        );
        assert_eq!(c.merchants[0].api_key_sha256(), Some(&[0xab; 32]));
        assert_eq!(c.inputs.dirs(), [dir.path().to_owned()]);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("from-file") && !shown.contains(&"ab".repeat(32)),
            "{shown}"
        );

        let missing = text.replace("env:PATH", "env:PAYROUTE_UNSET_TEST_VAR_1F");
        let list = parse(&missing, dir.path()).unwrap_err();
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(
            list[0].message,
            "headers.x-env: environment variable PAYROUTE_UNSET_TEST_VAR_1F is not set"
        );
        let gone = text.replace("file:key.sha256", "file:nope.sha256");
        let list = parse(&gone, dir.path()).unwrap_err();
        assert!(
            list[0].message.starts_with("api_key_sha256: cannot read secret file"),
            "{list:?}"
        );
        assert!(list.iter().all(|i| !i.message.contains("from-file")), "{list:?}");
    }

    #[test]
    fn lifecycle_sections_get_defaults() {
        let c = Config::parse(GOOD, "t.toml".as_ref()).unwrap();
        assert_eq!(c.notify.retry.len(), 6);
        assert_eq!(c.notify.retry[1], Duration::from_secs(60));
        assert_eq!(c.notify.timeout, Duration::from_secs(5));
        assert_eq!(c.sweeper.query_after[0], Duration::from_secs(60));
        assert_eq!(c.sweeper.close_after, Duration::from_secs(7_200));
        assert!(c.channels[0].outcome.is_none() && c.channels[0].notify.is_none());
        assert!(c.merchants[0].notify().is_none());
    }

    #[test]
    fn outcome_notify_and_merchant_notify_parse() {
        let text = GOOD.replace(
            "[[merchant]]\nid = \"m-001\"",
            "outcome = { pointer = \"/status\", paid = [\"succeeded\", 1], pending = [\"processing\"], declined = [\"failed\"], trade_no_pointer = \"/id\" }\n\
             notify = { signature_header = \"X-Signature\", secret = \"whsec\", amount_pointer = \"/amount\" }\n\
             [notify]\nretry_ms = [0, 1000]\n[sweeper]\nquery_after_ms = [500]\nclose_after_ms = 9000\n\
             [[merchant]]\nid = \"m-001\"\nnotify_url = \"http://127.0.0.1:7000/hook\"\nnotify_secret = \"msec\"",
        );
        let c = Config::parse(&text, "t.toml".as_ref()).unwrap();
        let o = c.channels[0].outcome.as_ref().unwrap();
        assert_eq!(o.paid, ["succeeded", "1"]);
        assert_eq!(o.trade_no_pointer.as_deref(), Some("/id"));
        let n = c.channels[0].notify.as_ref().unwrap();
        assert_eq!(n.signature_header.as_str(), "x-signature");
        assert_eq!(n.order_id_pointer, "/order_id");
        assert_eq!(n.secret.expose(), "whsec");
        assert_eq!(c.notify.retry, [Duration::ZERO, Duration::from_secs(1)]);
        assert_eq!(c.sweeper.query_after, [Duration::from_millis(500)]);
        let m = c.merchants[0].notify().unwrap();
        assert_eq!(m.url.to_string(), "http://127.0.0.1:7000/hook");
        assert_eq!(m.secret.expose(), "msec");
    }

    #[test]
    fn lifecycle_mistakes_are_located() {
        let bad = GOOD.replace(
            "[[merchant]]\nid = \"m-001\"",
            "outcome = { pointer = \"status\", paid = [] }\n\
             [sweeper]\nquery_after_ms = []\n\
             [[merchant]]\nid = \"m-001\"\nnotify_url = \"ftp://x\"\nnotify_secret = \"s\"\n\
             [[merchant]]\nid = \"m-002\"\nnotify_url = \"http://x/\"",
        );
        let list = issues(&bad);
        let has = |needle: &str| list.iter().any(|i| i.message.contains(needle));
        assert!(has("outcome.pointer"), "{list:?}");
        assert!(has("query_after_ms must list"), "{list:?}");
        assert!(has("must be an http(s) URL"), "{list:?}");
        assert!(has("needs a notify_secret"), "{list:?}");
        assert!(list.iter().all(|i| !i.message.contains("msec") && i.line > 1));
    }

    #[test]
    fn a_statement_mapping_parses_with_its_defaults() {
        let text = GOOD.replace(
            "[[merchant]]\nid = \"m-001\"",
            "statement = { trade_no = \"商户订单号\", amount = \"金额\", fee = \"手续费\", status = \"状态\", \
             paid_values = [\"成功\"], refund_values = [\"退款\"], day_starts = \"00:00+08:00\" }\n\
             [[merchant]]\nid = \"m-001\"",
        );
        let c = Config::parse(&text, "t.toml".as_ref()).unwrap();
        let st = c.channels[0].statement.as_ref().unwrap();
        assert_eq!((st.trade_no.as_str(), st.amount.as_str()), ("商户订单号", "金额"));
        assert_eq!(
            (st.amount_unit, st.encoding),
            (AmountUnit::Yuan, StatementEncoding::Auto)
        );
        assert_eq!(st.paid_values, ["成功"]);
        assert_eq!(st.day_cut, DayCut::default());
    }

    #[test]
    fn a_statement_mapping_that_cannot_work_is_refused_where_it_is_written() {
        let bad = GOOD.replace(
            "[[merchant]]\nid = \"m-001\"",
            "statement = { trade_no = \"单号\", amount = \"单号\", amount_unit = \"cents\", status = \"状态\", \
             encoding = \"latin1\", day_starts = \"midnight\" }\n\
             [[merchant]]\nid = \"m-001\"",
        );
        let list = issues(&bad);
        let has = |needle: &str| list.iter().any(|i| i.message.contains(needle));
        assert!(has("as statement.trade_no does"), "{list:?}");
        assert!(has("amount_unit \"cents\""), "{list:?}");
        assert!(has("needs paid_values"), "{list:?}");
        assert!(has("encoding \"latin1\""), "{list:?}");
        assert!(has("statement.day_starts"), "{list:?}");
        assert!(list.iter().all(|i| i.line > 1 && i.column > 0), "{list:?}");
        let orphan = GOOD.replace(
            "[[merchant]]\nid = \"m-001\"",
            "statement = { trade_no = \"a\", amount = \"b\", paid_values = [\"ok\"] }\n[[merchant]]\nid = \"m-001\"",
        );
        assert!(issues(&orphan)
            .iter()
            .any(|i| i.message.contains("needs statement.status")));
    }
}
