//! Thin entry points into the parsers of hostile input, for the cargo-fuzz
//! targets in `fuzz/` only.
//!
//! **Not a stable API.** Compiled only with the `fuzz-api` feature, hidden
//! from the docs, exempt from semver, as [`crate::bench_api`] is for the
//! benches: the targets are a separate crate and payroute's internals are
//! `pub(crate)`. Every function here calls the code the proxy (or `check`,
//! or `reconcile`) calls on the same input — never a copy of it — and turns
//! its answer into plain values a target can compare. Fixtures (the
//! configs whose pointers, keys and columns the parsers read with) are built
//! through [`Config::parse`], as a running proxy's are.

use std::io::Cursor;
use std::path::Path;

use http::{HeaderMap, HeaderValue};

use crate::config::{ChannelConfig, ChannelNotify, Config, OutcomeRule, RequestConfig, StatementColumns};
use crate::epay::form::Params;
use crate::epay::gateway::{self, BadNotice};
use crate::epay::order::PayOrder;
use crate::notify::{inbound, signature};
use crate::payment::facts;
use crate::reconcile::statement::{RowKind, Statement};
use crate::upstream::stated;

/// Where fixture configs say they come from: a directory that does not
/// exist, so a relative `file:` or certificate path in fuzzed config text
/// fails to open instead of reading whatever is beside the fuzzer.
const ORIGIN: &str = "/nonexistent-payroute-fuzz/routes.toml";

fn fixture(text: &str) -> Config {
    match Config::parse(text, Path::new(ORIGIN)) {
        Ok(c) => c,
        Err(e) => panic!("fuzz fixture config is invalid: {e}"),
    }
}

fn channel<'c>(config: &'c Config, id: &str) -> &'c ChannelConfig {
    match config.channels.iter().find(|c| &*c.id == id) {
        Some(c) => c,
        None => panic!("fuzz fixture has no channel {id:?}"),
    }
}

// ---------------------------------------------------------------- config

/// `payroute check` and a reload on config text: [`Config::parse`] (the
/// TOML schema, then validation of the whole file), then on success the
/// summary and warnings `check` prints; on failure the located issues,
/// each `FILE:LINE:COL: message`.
pub fn check_config(text: &str) -> Result<Vec<String>, Vec<String>> {
    checked(Config::parse(text, Path::new(ORIGIN)))
}

/// [`check_config`] on the path a config of a megabyte and more takes
/// (the head parsed alone, then `[[merchant]]` tables in chunks), taken
/// here whatever the size. It must answer as the whole-file parse does.
pub fn check_config_chunked(text: &str) -> Result<Vec<String>, Vec<String>> {
    checked(Config::parse_split_from(text, Path::new(ORIGIN), 0))
}

fn checked(parsed: Result<Config, crate::config::ConfigError>) -> Result<Vec<String>, Vec<String>> {
    match parsed {
        Ok(config) => {
            let mut out = config.warnings();
            out.push(config.summary());
            Ok(out)
        }
        Err(e) => Err(e.lines()),
    }
}

// ----------------------------------------------------------------- facts

/// A payment's facts as [`facts::extract`] reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFacts {
    pub amount: u64,
    pub currency: String,
    pub order_id: String,
}

/// The JSON facts extractor with one `[request]` section's pointers.
pub struct Facts {
    request: RequestConfig,
}

impl Facts {
    /// `[request]` with these pointers, validated as a config file's.
    pub fn new(amount_pointer: &str, currency_pointer: &str, order_id_pointer: &str) -> Facts {
        let text = format!(
            "[request]\namount_pointer = {amount_pointer:?}\ncurrency_pointer = {currency_pointer:?}\n\
             order_id_pointer = {order_id_pointer:?}\n\
             [[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n"
        );
        Facts {
            request: fixture(&text).request,
        }
    }

    pub fn pointers(&self) -> [&str; 3] {
        [
            &self.request.amount_pointer,
            &self.request.currency_pointer,
            &self.request.order_id_pointer,
        ]
    }

    /// A new payment's body (`intake`): the facts, or why it is refused
    /// (the message the merchant's 400 carries).
    pub fn extract(&self, body: &[u8]) -> Result<PaymentFacts, String> {
        facts::extract(body, &self.request)
            .map(|f| PaymentFacts {
                amount: f.amount,
                currency: f.currency,
                order_id: f.order_id,
            })
            .map_err(|e| e.0)
    }
}

/// A follow-up's body (`followup`): the amount it states at `pointer`.
pub fn stated_amount(body: &[u8], pointer: &str) -> Result<Option<u64>, String> {
    facts::stated_amount(body, pointer).map_err(|e| e.0)
}

// ------------------------------------------------------------------ epay

/// epay parameters as received (`epay::form::Params`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpayParams(Params);

impl EpayParams {
    /// A form body or query string, as `proxy::epay` and a channel's
    /// notification read it.
    pub fn parse(raw: &[u8]) -> Result<EpayParams, String> {
        Params::parse(raw).map(EpayParams).map_err(|e| e.to_string())
    }

    pub fn pairs(&self) -> Vec<(String, String)> {
        self.0.pairs().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }

    /// Adds or replaces `name` (before signing, as payroute builds forms).
    pub fn set(&mut self, name: &str, value: &str) {
        self.0.set(name, value);
    }

    /// The MD5 signature check (`epay::sign::verify`) with `key`.
    pub fn verify(&self, key: &str) -> bool {
        self.0.verify(key)
    }

    /// Signed with `key` as payroute signs what it sends.
    pub fn signed(self, key: &str) -> EpayParams {
        EpayParams(self.0.signed(key))
    }

    pub fn encode(&self) -> String {
        self.0.encode()
    }

    /// A merchant's payment request read as `mapi.php` (`browser: false`)
    /// or `submit.php` reads it ([`PayOrder::from_params`]): the amount in
    /// fen and the out_trade_no, or the refusal's message.
    pub fn order(&self, browser: bool) -> Result<(u64, String), String> {
        PayOrder::from_params(&self.0, browser)
            .map(|o| (o.amount_fen, o.out_trade_no))
            .map_err(|e| e.0)
    }
}

/// epay's canonical signature (`epay::sign::sign`) of `pairs` with `key`.
pub fn epay_sign(pairs: &[(&str, &str)], key: &str) -> String {
    crate::epay::sign::sign(pairs.iter().copied(), key)
}

// ---------------------------------------------------------- notifications

/// A JSON channel's notification as read (`notify::inbound::Reading`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonNotice {
    pub order_id: String,
    pub amount: Option<u64>,
    /// `Paid`, `Pending`, `Declined` or `Unstated`.
    pub stated: String,
    pub dedupe_key: String,
}

/// Why a notification was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unread {
    /// Wrong or missing signature, with the unverified hint.
    BadSignature {
        hint: Option<String>,
    },
    Malformed(String),
    /// epay: signed, but not `TRADE_SUCCESS`.
    NotSuccess,
}

/// An epay gateway's notification as read (`epay::gateway::Paid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpayNotice {
    pub trade_no: String,
    pub gateway_trade_no: Option<String>,
    pub amount_fen: u64,
    pub dedupe_key: String,
}

/// The channels of a fixed config whose notifications and answers are
/// read: JSON channel `acq` (`[channel.outcome]`, `[channel.notify]` with
/// an amount) and epay channel `gw` (pid and key).
pub struct Notify {
    notify: ChannelNotify,
    outcome: OutcomeRule,
    epay_pid: String,
    epay_key: String,
}

impl Default for Notify {
    fn default() -> Self {
        let config = fixture(
            "[server]\npublic_url = \"http://127.0.0.1:8080\"\n\
             [[channel]]\nid = \"acq\"\nurl = \"http://127.0.0.1:1\"\n\
             outcome = { pointer = \"/status\", paid = [\"paid\", 1], pending = [\"processing\"], \
             declined = [\"failed\", false], trade_no_pointer = \"/id\" }\n\
             notify = { signature_header = \"x-signature\", secret = \"fuzz-notify-secret\", \
             order_id_pointer = \"/order_id\", amount_pointer = \"/amount\" }\n\
             [[channel]]\nid = \"gw\"\nprotocol = \"epay\"\nurl = \"http://127.0.0.1:2/\"\n\
             pid = \"2001\"\nkey = \"fuzz-epay-key\"\n",
        );
        let acq = channel(&config, "acq");
        let gw = channel(&config, "gw");
        let (Some(notify), Some(outcome), Some(epay)) = (&acq.notify, &acq.outcome, &gw.epay) else {
            panic!("fuzz fixture channels lack notify, outcome or epay");
        };
        Notify {
            notify: (**notify).clone(),
            outcome: (**outcome).clone(),
            epay_pid: epay.pid.clone(),
            epay_key: epay.key.expose().to_owned(),
        }
    }
}

impl Notify {
    /// The header value channel `acq` would sign `body` with.
    pub fn json_signature(&self, body: &[u8]) -> String {
        signature::sign_hex(self.notify.secret.expose().as_bytes(), body)
    }

    /// `POST /notify/acq` ([`inbound::read`]): verified with the channel's
    /// secret over the raw bytes, then read with its pointers and outcome
    /// rule. `signature`: the header's value, if sent (a value that cannot
    /// be a header is not sent).
    pub fn read_json(&self, signature: Option<&[u8]>, body: &[u8]) -> Result<JsonNotice, Unread> {
        let mut headers = HeaderMap::new();
        if let Some(v) = signature.and_then(|s| HeaderValue::from_bytes(s).ok()) {
            headers.insert(self.notify.signature_header.clone(), v);
        }
        match inbound::read(&self.notify, Some(&self.outcome), &headers, body) {
            Ok(r) => Ok(JsonNotice {
                order_id: r.order_id,
                amount: r.amount,
                stated: format!("{:?}", r.stated),
                dedupe_key: r.dedupe_key,
            }),
            Err(inbound::Unread::BadSignature { order_hint }) => Err(Unread::BadSignature { hint: order_hint }),
            Err(inbound::Unread::Malformed(why)) => Err(Unread::Malformed(why)),
        }
    }

    pub fn epay_key(&self) -> &str {
        &self.epay_key
    }

    pub fn epay_pid(&self) -> &str {
        &self.epay_pid
    }

    /// `GET /notify/gw` as `proxy::notification` reads it: the query
    /// string parsed ([`Params::parse`]), then [`gateway::read_notice`]
    /// (signature with the channel's key, its pid, the status, the money).
    pub fn read_epay(&self, raw: &[u8]) -> Result<EpayNotice, Unread> {
        let params = Params::parse(raw).map_err(|e| Unread::Malformed(e.to_string()))?;
        self.read_epay_params(&EpayParams(params))
    }

    /// [`gateway::read_notice`] on parameters already parsed.
    pub fn read_epay_params(&self, params: &EpayParams) -> Result<EpayNotice, Unread> {
        match gateway::read_notice(&params.0, &self.epay_pid, &self.epay_key) {
            Ok(paid) => Ok(EpayNotice {
                trade_no: paid.trade_no,
                gateway_trade_no: paid.gateway_trade_no,
                amount_fen: paid.amount_fen,
                dedupe_key: paid.dedupe_key,
            }),
            Err(BadNotice::BadSignature { trade_hint }) => Err(Unread::BadSignature { hint: trade_hint }),
            Err(BadNotice::Malformed(why)) => Err(Unread::Malformed(why)),
            Err(BadNotice::NotSuccess) => Err(Unread::NotSuccess),
        }
    }

    /// A JSON channel's answer (to a payment or a query) as the attempt and
    /// the sweeper read it: the outcome it states ([`stated::judge`]) and
    /// its own trade number ([`stated::channel_trade_no`]).
    pub fn read_answer(&self, body: &[u8]) -> (String, Option<String>) {
        (
            format!("{:?}", stated::judge(&self.outcome, body)),
            stated::channel_trade_no(&self.outcome, body),
        )
    }

    /// An epay gateway's answers: to `mapi.php` ([`gateway::read_creation`])
    /// and to `api.php?act=order` ([`gateway::read_order`]), as `Debug` text.
    pub fn read_epay_answers(&self, body: &[u8]) -> (String, String) {
        (
            format!("{:?}", gateway::read_creation(body)),
            format!("{:?}", gateway::read_order(body)),
        )
    }
}

// ------------------------------------------------------------- statement

/// A statement row as [`Statement::next_row`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRow {
    pub line: u64,
    pub trade_no: String,
    pub amount: i64,
    pub fee: Option<i64>,
    /// `Paid`, `Refund` or `Other(status)`.
    pub kind: String,
}

/// One `[channel.statement]`'s columns.
pub struct StatementReader {
    columns: StatementColumns,
}

impl StatementReader {
    /// A channel whose statement is described by `table`, the inline TOML
    /// of `statement = { ... }` (validated as in a config file).
    pub fn new(table: &str) -> StatementReader {
        let config = fixture(&format!(
            "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\nstatement = {table}\n"
        ));
        match &channel(&config, "a").statement {
            Some(columns) => StatementReader {
                columns: (**columns).clone(),
            },
            None => panic!("fuzz fixture has no [channel.statement]"),
        }
    }

    /// Every row of the statement in `bytes` (as `reconcile` reads a file:
    /// encoding, header, rows), or the first error (its `file:line: reason`).
    pub fn read_all(&self, bytes: &[u8]) -> Result<Vec<StatementRow>, String> {
        let mut statement =
            Statement::from_reader("fuzz.csv".into(), Cursor::new(bytes), &self.columns).map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        while let Some(row) = statement.next_row().map_err(|e| e.to_string())? {
            rows.push(StatementRow {
                line: row.line,
                trade_no: row.trade_no,
                amount: row.amount,
                fee: row.fee,
                kind: match row.kind {
                    RowKind::Paid => "Paid".into(),
                    RowKind::Refund => "Refund".into(),
                    RowKind::Other(s) => format!("Other({s})"),
                },
            });
        }
        Ok(rows)
    }
}
