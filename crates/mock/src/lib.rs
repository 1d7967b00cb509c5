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
//! `[{"id","order_id","trade_no","amount","currency","status":"paid"}]`.
//! `GET /-/health` answers `{"status":"ok"}`. Neither is counted or recorded.
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
//! # `mock-acquirer` flags
//!
//! One per [`Behavior`] field: `--success-rate F`, `--latency-ms N`,
//! `--jitter-ms N`, `--hang-rate F`, `--status N` (`fail_status`),
//! `--outcome-in-body`, `--pending-rate F`, `--notify-delay-ms N` (default
//! 1000), `--notify-url URL` (`http://` only), `--notify-secret S` (or
//! `env:NAME`), `--notify-loss F`, `--notify-repeat F`, `--notify-forge F`,
//! `--notify-wrong-amount F`, `--notify-attempts N` (default 5),
//! `--notify-backoff-ms N` (default 100), `--seed N`; `--protocol json|epay`
//! (default `json`) and, with `epay`, one per [`EpayGateway`] field: `--pid
//! ID` and `--key K` (or `env:NAME`), both required, `--refuse-rate F`,
//! `--money-as-float`. With epay, `--notify-url`, `--notify-secret`,
//! `--pending-rate`, `--outcome-in-body` and `--status` have no effect.
//! Rates are in `0..=1`.
//!
//! Why a crate of its own: payroute ships without its fake acquirer, and the
//! demo, the `mock-acquirer` binary and the tests share this one.

mod answer;
mod delivery;
pub mod epay;
mod fate;
mod gateway;
mod notify;
mod orders;
mod path;
mod record;
mod respond;
mod server;
mod state;

pub use answer::{Answer, Behavior, EpayGateway, Protocol, Reply, Secret};
pub use orders::StatementLine;
pub use record::{Handshake, Recorded};
pub use server::{Builder, Counters, MockAcquirer};

#[cfg(test)]
mod tests;
