//! A fake payment acquirer on real sockets, for payroute's demo, load tests
//! and tests.
//!
//! Every request gets an [`Answer`], one of two kinds:
//!
//! * **Simulated** ([`Behavior`]): the mock plays an acquirer's API —
//!   payments paid at a success rate, with latency, jitter and hangs;
//!   outcomes stated by HTTP status or only in the body; payments left
//!   `"processing"` and announced later by a signed notification, with lost,
//!   repeated, forged and wrong-amount ones; status queries answered from
//!   its order book; reversals. `payroute demo` and the `mock-acquirer`
//!   binary (the load tests' acquirer) run it.
//! * **Scripted** ([`Reply`]): a fixed answer (status, body, delay, hang, the
//!   first few or an even share failing), for every request or, by a rule,
//!   for one method and path ([`MockAcquirer::on`]). Tests script it, usually
//!   with recording on: every request is kept ([`Recorded`]), with in-flight
//!   counts and TLS handshakes ([`Handshake`]), so a test can say exactly what
//!   reached the acquirer.
//!
//! Both kinds state the outcome the same way (a JSON body whose `status` is
//! `paid`, `declined`, `failed` or `processing`), so an answer's meaning has
//! one vocabulary, whichever kind produced it.
//!
//! A simulated mock may instead speak **epay** (易支付 V1, [`Protocol::Epay`],
//! [`Behavior::epay`]): it is then an epay gateway for one merchant account,
//! with buyers who pay or not (see "# The epay gateway" below). The
//! [`epay`] module holds the protocol's pieces and a shop to drive payroute
//! or the gateway with: [`epay::Merchant`] (signed `mapi.php` / `submit.php`
//! / `api.php` requests) and [`epay::Receiver`] (a notify endpoint that
//! verifies, records and answers `success`).
//!
//! # The simulated API
//!
//! A payment is a `POST` with a JSON body holding `order_id` (string or
//! number), `amount` (number or string) and `currency` at the top level;
//! payroute's trade number comes in the `x-payroute-trade-no` header and is
//! kept with the payment. Every answer has the shape
//!
//! ```json
//! {"status": "paid", "id": "m9001t17", "order_id": "o-1", "trade_no": "T1",
//!  "amount": 1234, "currency": "CNY", "acquirer": "127.0.0.1:9001"}
//! ```
//!
//! where `id` is the acquirer's own id for the payment, the request's facts
//! are echoed with their JSON types (`null` when absent), and `trade_no` is
//! there only when the request carried one. `status` and the HTTP status:
//!
//! | outcome | `status` | HTTP | `outcome_in_body` |
//! |---|---|---|---|
//! | paid | `paid` | 200 | 200 |
//! | refused, `fail_status` 4xx | `declined` | `fail_status` | 200 |
//! | refused, otherwise | `failed` | `fail_status` | 200 |
//! | pending | `processing` | 202 | 200 |
//!
//! `GET .../{id}` — `id` a trade number or an order id (percent-decoded) —
//! answers the payment's current state in the same shape: `processing`
//! until decided, then `paid` or `failed` (HTTP 200, 202, and 404 for a
//! decided failure, "never charged"; all 200 with `outcome_in_body`).
//! Unknown payments, and refused ones (never remembered), answer 404
//! `{"status":"unknown"}`. `POST .../{id}/reverse` forgets the payment
//! (200 `{"status":"reversed","order_id":..}`, idempotent); a pending
//! payment reversed before its decision is never decided nor announced.
//! `GET /-/statement` lists the paid payments, oldest first
//! ([`MockAcquirer::statement`], [`StatementLine`]):
//! `[{"id","order_id","trade_no","amount","currency","status":"paid",
//! "charged_ms"}]` (`charged_ms`: Unix milliseconds of the charge).
//! `GET /-/health` answers `{"status":"ok"}`. Neither is counted or recorded,
//! nor is `POST /-/statement/write` (see "# Statements").
//!
//! # Notifications
//!
//! A pending payment (`pending_rate`) is decided `notify_delay_ms` after its
//! answer — paid at `success_rate`, else failed — and then `POST`ed to
//! `notify_url` as
//!
//! ```json
//! {"status": "paid", "id": "m9001t17", "order_id": "o-1", "trade_no": "T1",
//!  "amount": 1234, "currency": "CNY"}
//! ```
//!
//! with header `x-signature`: the lowercase hex HMAC-SHA256 of the raw body
//! keyed by `notify_secret` (no header without a secret). A copy from the
//! acquirer is retried while the receiver does not answer 2xx, up to
//! `notify_attempts` tries, waiting `notify_backoff_ms` then doubling (at
//! most 5 s); each try times out after 5 s. Faults, each a share of pending
//! payments: `notify_loss` (decided, never announced: only a query finds
//! it), `notify_forge` (first, a copy saying `paid` with a wrong signature,
//! sent once), `notify_wrong_amount` (then a correctly signed copy with the
//! amount plus one), `notify_repeat` (after the genuine copy, the same
//! again). Loss suppresses all of a payment's copies. [`Counters`] count
//! what was decided and sent; [`MockAcquirer::wait_settled`] waits for it.
//!
//! With `seed`, every payment draws all its random choices at once from a
//! generator seeded per behaviour (setting it again re-seeds it): payments
//! sent one after the other get the same outcomes, delays and faults on
//! every run, so tests can rely on exact counts.
//!
//! # The epay gateway
//!
//! **Signing**, both ways: every parameter but `sign` and `sign_type`, and
//! none with an empty value, sorted by name (byte order), joined as `k=v`
//! with `&` (values as received, not URL-encoded), the key appended
//! directly, MD5, lowercase hex ([`epay::sign`]); `sign_type=MD5`.
//!
//! `POST {base}/mapi.php`, a form of `pid, type, out_trade_no, notify_url,
//! return_url, name, money, clientip, device, param, sign, sign_type`
//! (`{base}` is any path: only the last segment is read). Always HTTP 200:
//!
//! ```json
//! {"code": 1, "msg": "succ", "trade_no": "2024050112000000017",
//!  "payurl": "http://127.0.0.1:9101/pay/2024050112000000017"}
//! ```
//!
//! (`"qrcode": "weixin://wxpay/bizpayurl?pr=…"` instead of `payurl` for
//! type `wxpay`), or `{"code": -1, "msg": "…"}`: `pid` missing or not the
//! account's, a bad signature (or `sign_type` not `MD5`), a required field
//! empty (`out_trade_no`, `notify_url`, `name`, `money`, `type`,
//! `clientip`), money not yuan with at most two decimals above 0,
//! `out_trade_no` outside `^[a-zA-Z0-9._\-|]+$`, a type not among
//! `alipay wxpay qqpay bank jdpay`, an `out_trade_no` already created —
//! each answered at once, drawing no dice — or, for a valid order, the
//! `refuse_rate`. `hang_rate`, `latency_ms` and `jitter_ms` apply to valid
//! orders. `name` is kept to its first 127 bytes. The gateway's
//! `trade_no` is Beijing time `YYYYMMDDHHMMSS` and a sequence number.
//!
//! `GET {base}/api.php?act=order&pid=&key=&out_trade_no=` (or `trade_no=`;
//! also as a POSTed form):
//!
//! ```json
//! {"code": 1, "msg": "succ", "trade_no": "…", "out_trade_no": "T1",
//!  "type": "alipay", "pid": "2001", "addtime": "2024-05-01 12:00:00",
//!  "endtime": null, "name": "…", "money": "1.50", "param": null, "status": 0}
//! ```
//!
//! `status` 1 and `endtime` set once paid; `{"code": -1, "msg": "订单号不存在"}`
//! for an unknown order, `-3` wrong `pid` or `key`, `-4` no order number,
//! `-5` an `act` other than `order`. `GET {base}/pay/{trade_no}` is the
//! cashier page a `payurl` opens (HTML; once paid, a link back to
//! `return_url` with the signed parameters).
//!
//! **Buyers**: `notify_delay_ms` after creation, a created order is paid at
//! `success_rate` (else it stays `status` 0 for ever: a gateway whose buyers
//! never pay still creates orders). A payment is announced by
//! `GET {notify_url}?pid&trade_no&out_trade_no&type&name&money
//! &trade_status=TRADE_SUCCESS&param(if set)&sign&sign_type=MD5`, encoded
//! as PHP's `http_build_query` (space as `+`); `money` is `"1.00"`, or with
//! `money_as_float` PHP's float text (`"1"`, `"1.5"`). Delivered when the
//! answer's body contains `success` (any case, any HTTP status), retried
//! as above otherwise. Faults: `notify_loss`, `notify_repeat` and
//! `notify_wrong_amount` (money + 0.01, correctly signed) of paid orders;
//! `notify_forge` of every created order, paid or not (a `TRADE_SUCCESS`
//! signed with another key, sent once). `seed` makes it all reproducible.
//! `GET /-/statement` lists paid orders as [`StatementLine`]s: `id` the
//! gateway's `trade_no`, `order_id` and `trade_no` the `out_trade_no`
//! (payroute's trade number), `amount` the money in yuan (`"1.50"`),
//! currency `CNY`. [`Counters`] says how the words map.
//!
//! # Statements
//!
//! The mock writes what it charged as a Chinese acquirer's daily bill (对账单),
//! for `payroute reconcile` to be tested against:
//! [`MockAcquirer::write_statements`] with a [`StatementSpec`], or
//! `POST /-/statement/write` when built with [`Builder::statement_dir`]
//! (answered 200 with a JSON list of the paths written; 404 without a
//! directory, 500 if writing failed).
//!
//! **What is charged, and when** (Unix ms, from the system clock or
//! [`Builder::clock`]): a JSON payment when it becomes paid — at its answer,
//! or at its decision when pending — if it carried `x-payroute-trade-no` and
//! an amount in fen (a JSON integer or a string of digits; `"12.50"` or
//! `10.5` are skipped); an epay order when its buyer paid (`endtime`), its
//! `out_trade_no` as the trade number, its money exactly in fen. A reversed
//! JSON payment is forgotten, so it is on no statement (a channel that voided
//! it the same day lists nothing). epay orders are never reversed.
//!
//! **Days.** `day_starts` (`HH:MM+HH:MM`, `HH:MM-HH:MM`, `HH:MMZ`, as
//! payroute's config writes a day cut; default `00:00+08:00`): a charge
//! belongs to the business day `floor((time + offset − cut) / 1 day)`, named
//! by that shifted calendar date, so with `23:00+08:00` a charge at 23:30
//! Beijing time is in the next date's file. One file per business day that
//! has charges, `<dir>/<name>-<YYYY-MM-DD>.csv`; files are replaced whole
//! (written beside, renamed), other files are left alone.
//!
//! **Format**, CRLF line ends, written by the `csv` crate (quoting only
//! what needs it), encoded as `encoding` asks (UTF-8, UTF-8 with a BOM,
//! GBK); here with `fee_percent` 0.6:
//!
//! ```text
//! #模拟收单机构 交易明细
//! #起始日期：[2026-12-01 00:00:00]  终止日期：[2026-12-02 00:00:00]
//! 交易时间,商户订单号,渠道流水号,金额,手续费,状态
//! 2026-12-01 08:00:01,T1,m9001t1,"1,234.56",7.41,成功
//! 合计,1,,"1,234.56",7.41,
//! ```
//!
//! The two `#` lines give the business day's start and end at the cut's
//! local time; times are local at the cut's offset; rows are oldest first
//! (same millisecond: order of arrival); 商户订单号 is payroute's trade
//! number, 渠道流水号 the acquirer's id (a JSON answer's `id`, the epay
//! gateway's `trade_no`). 金额 and 手续费 are in `unit`: yuan with two
//! decimals and thousands separators from 1,000.00 (`"1,234.56"`), or fen
//! (`123456`). The fee is `round_half_up(fen × fee_percent / 100) +
//! fee_fixed` (`fee_percent` to six decimals, integer arithmetic). 合计
//! counts the rows and sums their amounts and fees, every row written
//! included.
//!
//! **Faults**, each a share of charges (`drop`, `wrong_amount`,
//! `wrong_status`, `wrong_fee`, `phantom`, adding up to at most 1): one
//! draw per charge from SHA-256 of `seed` and its trade number, at most one
//! fault picked by cumulative share in that order — so the same trade
//! numbers get the same faults on every run, whatever else was paid. A
//! dropped charge is left out; a wrong amount is 1.00 more (its fee stays
//! the true amount's); a wrong status is `失败`; a wrong fee is 0.50 more; a
//! phantom is the charge as it is followed by a paid 1.00 row (same time,
//! the fee of 1.00) for `PHANTOM` and 19 digits, with 渠道流水号 `P` and the
//! same digits. Beside each statement, `<statement>.faults.csv`
//! ([`faults_path`]; UTF-8, LF, always written) lists them as `kind,trade_no`
//! in row order, kinds as payroute names its differences:
//! `missing_at_channel`, `amount_mismatch`, `status_mismatch`,
//! `fee_mismatch`, `missing_in_journal` (the phantom's trade number). A fee
//! above payroute's configured one on every row (`fee_percent` above the
//! channel's `fee_percent`) is the hidden mark-up a reconciler reports as
//! an effective rate, not a listed fault.
//!
//! # Faults at run time, and the ledger
//!
//! For fault soaks, a running mock can be switched into a fault and back
//! ([`MockAcquirer::set_fault`], or `POST /-/fault` with a [`Fault`] as
//! JSON: `{"kind": "hang"|"storm"|"reset"|"late"|"none", "rate": 0..1,
//! "late_ms", "hold_ms", "queries": bool}`, answered with the fault now in
//! force; `GET /-/fault` says which is on, how many requests met each kind
//! and the notification faults' counters). A fault meets payments (a
//! `POST` that is no reversal; epay's `mapi.php`), and status queries too
//! with `queries`; reversals never. `hang` holds the request unanswered
//! for `hold_ms` (then drops the connection) and `storm` answers `503
//! {"status":"failed"}`, both before the simulation sees the payment, so
//! nothing is charged; `reset` and `late` let the simulation answer (and
//! charge) first, then cut the answer half-way (the headers promise the
//! whole body, the connection is dropped) or send it `late_ms` late.
//!
//! With [`Builder::ledger`] (`--ledger`) the mock keeps every charge it
//! made, reversed ones marked and never forgotten or capped
//! ([`MockAcquirer::charges`], `GET /-/charges`: `[{"seq", "id",
//! "order_id", "trade_no", "amount", "currency", "charged_ms",
//! "reversed_ms"}]`): what a checker needs to say "charged twice" — the
//! order book and the statement forget a reversed payment and keep one
//! entry per trade number. Neither endpoint is counted or recorded.
//!
//! # `mock-acquirer` flags
//!
//! One per [`Behavior`] field: `--success-rate F`, `--latency-ms N`,
//! `--jitter-ms N`, `--hang-rate F`, `--status N` (`fail_status`),
//! `--outcome-in-body`, `--pending-rate F`, `--notify-delay-ms N` (default
//! 1000), `--notify-url URL` (`http://` only), `--notify-secret S` (or
//! `env:NAME`), `--notify-loss F`, `--notify-repeat F`, `--notify-forge F`,
//! `--notify-wrong-amount F`, `--notify-attempts N` (default 5),
//! `--notify-backoff-ms N` (default 100), `--seed N`, `--ledger`; `--protocol json|epay`
//! (default `json`) and, with `epay`, one per [`EpayGateway`] field: `--pid
//! ID` and `--key K` (or `env:NAME`), both required, `--refuse-rate F`,
//! `--money-as-float`. With epay, `--notify-url`, `--notify-secret`,
//! `--pending-rate`, `--outcome-in-body` and `--status` have no effect.
//! Statements, one per [`StatementSpec`] field: `--statement-dir DIR`
//! (without it none are written; with it, at shutdown and on
//! `POST /-/statement/write`), `--statement-name` (default `statement`),
//! `--statement-day-starts` (default `00:00+08:00`),
//! `--statement-fee-percent F`, `--statement-fee-fixed N` (fen),
//! `--statement-encoding utf8|utf8-bom|gbk`, `--statement-unit yuan|fen`,
//! `--statement-drop F`, `--statement-wrong-amount F`,
//! `--statement-wrong-status F`, `--statement-wrong-fee F`,
//! `--statement-phantom F`; the faults' seed is `--seed` (0 without it).
//! Rates are in `0..=1`.
//!
//! Why a crate of its own: payroute ships without its fake acquirer, and the
//! demo, the `mock-acquirer` binary and the tests share this one.

mod answer;
mod delivery;
pub mod epay;
mod fate;
mod fault;
mod gateway;
mod notify;
mod orders;
mod path;
mod record;
mod respond;
mod server;
mod state;
mod statement;

pub use answer::{Answer, Behavior, EpayGateway, Protocol, Reply, Secret};
pub use fault::{ChargeRow, Fault, FaultKind};
pub use orders::StatementLine;
pub use record::{Handshake, Recorded};
pub use server::{Builder, Counters, MockAcquirer};
pub use statement::{faults_path, AmountUnit, SpecError, StatementEncoding, StatementSpec};

#[cfg(test)]
mod tests;
