//! What the mock answers: a simulated acquirer ([`Behavior`]) or a scripted
//! [`Reply`], as the default for every request or by a rule for one method
//! and path.
//!
//! The rules and the default are one immutable plan behind an `ArcSwap`:
//! a request reads it with one atomic load and no lock (the mock is the load
//! tests' baseline), and a change from a test or the demo applies from the
//! next request on. A scripted answer counts the requests it has answered
//! since it was set (one atomic per rule), which is what its "the first n
//! fail" and "every other one fails" plans are counted against.
//!
//! The [`Dice`] live here too, beside the rule that owns them: a rule's seed
//! is part of its answer, and setting the rule again must re-seed them, so
//! the plan is what creates and replaces them. [`crate::fate`] only rolls
//! the dice a rule hands it, which is why imports run from `fate` to here
//! and never back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::path::path_matches;

/// A simulated acquirer: how it answers payments, read once per payment.
///
/// Build one with struct-update syntax (`..Behavior::default()`) or the
/// `with_*`/`notify_to` methods; every knob has a `mock-acquirer` flag of
/// the same name (see the crate documentation for the flags and the JSON).
#[derive(Clone, Debug, PartialEq)]
pub struct Behavior {
    /// Share of (non-hanging, non-pending) payments paid, in `0..=1`; for a
    /// pending payment, the chance it is later decided paid.
    pub success_rate: f64,
    /// Delay added before answering, in milliseconds.
    pub latency_ms: u64,
    /// Uniform extra delay in `[0, jitter_ms]` milliseconds.
    pub jitter_ms: u64,
    /// Share of payments that never get an answer (held open until shutdown),
    /// in `0..=1`. Decided before everything else.
    pub hang_rate: f64,
    /// Status of a non-success answer. 4xx answers say `"declined"` (the
    /// acquirer refused the payment), anything else `"failed"`. A value that
    /// is not a valid HTTP status falls back to 503.
    pub fail_status: u16,
    /// Answer every payment and every query of a known order with HTTP 200,
    /// the outcome only in the body's `status`, as many acquirers do.
    /// Otherwise the HTTP status tells the same story as the body.
    pub outcome_in_body: bool,
    /// Share of (non-hanging) payments answered `"processing"`, in `0..=1`:
    /// decided `notify_delay_ms` later, then announced by a notification.
    pub pending_rate: f64,
    /// How long a pending payment stays `"processing"`, in milliseconds.
    pub notify_delay_ms: u64,
    /// Where decided pending payments are announced (`http://` only), e.g.
    /// `http://127.0.0.1:8080/notify/acq-a`. `None`: decided silently, only
    /// a query finds out.
    pub notify_url: Option<Arc<str>>,
    /// Key of the `x-signature` HMAC-SHA256 of each notification; `None`
    /// sends notifications unsigned.
    pub notify_secret: Option<Secret>,
    /// Share of decided payments never announced (only a query finds them).
    pub notify_loss: f64,
    /// Share of announced payments whose notification is sent twice.
    pub notify_repeat: f64,
    /// Share of announced payments preceded by a forged copy: wrong
    /// signature, status `"paid"`, sent once.
    pub notify_forge: f64,
    /// Share of announced payments preceded by a correctly signed copy whose
    /// amount is one more than the payment's.
    pub notify_wrong_amount: f64,
    /// Tries per notification until the receiver answers 2xx (at least 1).
    pub notify_attempts: u32,
    /// Wait before the second try, doubled before each further one (at most
    /// 5 s), in milliseconds.
    pub notify_backoff_ms: u64,
    /// Seeds the mock's random choices, so a run is reproducible: every
    /// payment draws all its dice at once, in arrival order, so payments sent
    /// one after the other get the same fates on every run. `None`: a
    /// thread-local generator, no lock.
    pub seed: Option<u64>,
    /// Which API the mock speaks: the JSON API above, or an epay gateway's.
    pub protocol: Protocol,
}

impl Default for Behavior {
    /// A perfect acquirer: always pays, instantly, by HTTP status; if told to
    /// be pending, decides after a second and notifies nobody.
    fn default() -> Self {
        Behavior {
            success_rate: 1.0,
            latency_ms: 0,
            jitter_ms: 0,
            hang_rate: 0.0,
            fail_status: 503,
            outcome_in_body: false,
            pending_rate: 0.0,
            notify_delay_ms: 1000,
            notify_url: None,
            notify_secret: None,
            notify_loss: 0.0,
            notify_repeat: 0.0,
            notify_forge: 0.0,
            notify_wrong_amount: 0.0,
            notify_attempts: 5,
            notify_backoff_ms: 100,
            seed: None,
            protocol: Protocol::Json,
        }
    }
}

impl Behavior {
    /// States every outcome in the body and answers HTTP 200.
    pub fn with_outcome_in_body(self) -> Behavior {
        Behavior {
            outcome_in_body: true,
            ..self
        }
    }

    /// Answers this share of payments `"processing"`, deciding them `delay_ms` later.
    pub fn with_pending(self, rate: f64, delay_ms: u64) -> Behavior {
        Behavior {
            pending_rate: rate,
            notify_delay_ms: delay_ms,
            ..self
        }
    }

    /// Announces decided payments to `url`, signed with `secret`.
    pub fn notify_to(self, url: &str, secret: &str) -> Behavior {
        Behavior {
            notify_url: Some(url.into()),
            notify_secret: Some(secret.into()),
            ..self
        }
    }

    /// Makes the random choices reproducible.
    pub fn with_seed(self, seed: u64) -> Behavior {
        Behavior {
            seed: Some(seed),
            ..self
        }
    }

    /// A perfect epay gateway for the account `pid` with MD5 key `key`:
    /// every valid order created, every buyer paying after a second.
    pub fn epay(pid: &str, key: &str) -> Behavior {
        Behavior {
            protocol: Protocol::Epay(EpayGateway::new(pid, key)),
            ..Behavior::default()
        }
    }
}

/// The API a simulated mock speaks.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Protocol {
    /// The JSON API of the crate documentation: payments, queries,
    /// reversals, `x-signature` notifications.
    #[default]
    Json,
    /// An epay (易支付) V1 gateway: `mapi.php`, `api.php?act=order`, buyers
    /// who pay (or not) after `notify_delay_ms`, `GET` notifications signed
    /// with MD5. See the crate documentation.
    Epay(EpayGateway),
}

/// What an epay gateway knows of the one merchant account it serves
/// (payroute's account there), and the knobs only epay has. The
/// [`Behavior`] around it keeps its meaning where epay has the same idea:
/// `success_rate` is the share of buyers who pay, `notify_delay_ms` how
/// long they take, the `notify_*` faults and retries apply to the gateway's
/// notifications, `hang_rate`, `latency_ms` and `jitter_ms` to `mapi.php`.
#[derive(Clone, Debug, PartialEq)]
pub struct EpayGateway {
    /// The merchant id (`pid`) the gateway accepts.
    pub pid: Box<str>,
    /// The merchant's MD5 signing key.
    pub key: Secret,
    /// Share of valid `mapi.php` creations refused with `code` -1 (the
    /// gateway's upstream down, risk control), in `0..=1`.
    pub refuse_rate: f64,
    /// Notifications state `money` as the gateway's PHP float formatting
    /// does (`"1"` for 1.00, `"1.5"` for 1.50), not as two decimals, so a
    /// receiver must compare amounts as numbers.
    pub money_as_float: bool,
}

impl EpayGateway {
    /// An account that refuses nothing and states money with two decimals.
    pub fn new(pid: &str, key: &str) -> EpayGateway {
        EpayGateway {
            pid: pid.into(),
            key: key.into(),
            refuse_rate: 0.0,
            money_as_float: false,
        }
    }
}

/// A signing key (the JSON API's notifications, an epay account's MD5
/// key). Its `Debug` never shows it, so a [`Behavior`] can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub(crate) fn text(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.into())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s.into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A scripted answer: the same status and body for every request it
/// answers, except those its failure plan picks, which get `fail_status`
/// and the mock's own body. Built with the constructors and the `with`
/// methods, so that new kinds of answer can be added without breaking
/// existing scripts.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    status: u16,
    body: Option<Bytes>,
    delay: Duration,
    hang: bool,
    fail_first: usize,
    fail_ratio: f64,
    fail_status: u16,
}

impl Reply {
    /// 200 at once, with the mock's own body (`"status": "paid"`).
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    /// `status` at once. A value that is not an HTTP status answers 503.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            body: None,
            delay: Duration::ZERO,
            hang: false,
            fail_first: 0,
            fail_ratio: 0.0,
            fail_status: 503,
        }
    }

    /// Never answers: the request is held until the mock shuts down.
    pub fn hang() -> Reply {
        Reply {
            hang: true,
            ..Reply::ok()
        }
    }

    /// Answers with `body` instead of the mock's own.
    pub fn with_body(self, body: impl Into<Bytes>) -> Reply {
        Reply {
            body: Some(body.into()),
            ..self
        }
    }

    /// Answers `delay` late.
    pub fn with_delay(self, delay: Duration) -> Reply {
        Reply { delay, ..self }
    }

    /// The first `n` requests (counted from when the reply was set) get
    /// `status` instead.
    pub fn failing_first(self, n: usize, status: u16) -> Reply {
        Reply {
            fail_first: n,
            fail_status: status,
            ..self
        }
    }

    /// This share of the requests, spread evenly and deterministically (0.5:
    /// every second one), get `status` instead.
    pub fn failing(self, ratio: f64, status: u16) -> Reply {
        Reply {
            fail_ratio: ratio,
            fail_status: status,
            ..self
        }
    }

    pub(crate) fn hangs(&self) -> bool {
        self.hang
    }

    pub(crate) fn delay(&self) -> Duration {
        self.delay
    }

    /// Status and body (`None`: the mock's own) of the `k`-th request
    /// (from 0) this reply answers.
    pub(crate) fn nth(&self, k: usize) -> (StatusCode, Option<&Bytes>) {
        let by_ratio =
            self.fail_ratio > 0.0 && ((k + 1) as f64 * self.fail_ratio).floor() > (k as f64 * self.fail_ratio).floor();
        if k < self.fail_first || by_ratio {
            (status_or_503(self.fail_status), None)
        } else {
            (status_or_503(self.status), self.body.as_ref())
        }
    }
}

pub(crate) fn status_or_503(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// How the mock answers a request: simulated or scripted.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// An acquirer's API with random outcomes; see [`Behavior`].
    Simulated(Behavior),
    /// A fixed answer; see [`Reply`].
    Scripted(Reply),
}

impl From<Behavior> for Answer {
    fn from(b: Behavior) -> Answer {
        Answer::Simulated(b)
    }
}

impl From<Reply> for Answer {
    fn from(r: Reply) -> Answer {
        Answer::Scripted(r)
    }
}

/// The answer chosen for one request, owned (the plan is not held while
/// the request is answered).
pub(crate) enum Picked {
    /// The behaviour and the dice its rule rolls.
    Simulated(Behavior, Dice),
    /// The reply and which of its requests this is (from 0).
    Scripted(Reply, usize),
}

/// Where a rule's randomness comes from.
#[derive(Clone)]
pub(crate) enum Dice {
    /// fastrand's thread-local generator: no lock, not reproducible.
    Thread,
    /// One generator per rule, seeded, shared by its requests.
    Seeded(Arc<Mutex<fastrand::Rng>>),
}

impl Dice {
    pub fn seeded(seed: u64) -> Dice {
        Dice::Seeded(Arc::new(Mutex::new(fastrand::Rng::with_seed(seed))))
    }

    /// Runs `draw` with the dice's generator. Unseeded, a fresh generator is
    /// forked from fastrand's thread-local one, so the load tests' path takes
    /// no lock; seeded, `draw` runs under the rule's one lock, so a payment's
    /// draws are never interleaved with another's.
    pub fn roll<T>(&self, draw: impl FnOnce(&mut fastrand::Rng) -> T) -> T {
        match self {
            Dice::Thread => draw(&mut fastrand::Rng::new()),
            Dice::Seeded(rng) => {
                // A poisoned lock only means a thread panicked mid-draw; the
                // generator is still usable.
                let mut rng = rng.lock().unwrap_or_else(PoisonError::into_inner);
                draw(&mut rng)
            }
        }
    }
}

/// The default answer and the rules, swapped whole on every change.
pub(crate) struct Rules(ArcSwap<Plan>);

#[derive(Clone)]
struct Plan {
    /// Checked in the order they were first set.
    rules: Vec<Rule>,
    default: Rule,
}

#[derive(Clone)]
struct Rule {
    method: Box<str>,
    pattern: Box<str>,
    answer: Answer,
    /// Requests answered since the answer was set; shared by the clones of
    /// the plan, fresh for a replaced rule.
    answered: Arc<AtomicUsize>,
    /// A seeded simulation's generator, fresh (re-seeded) for a replaced
    /// rule, so setting a seeded behaviour again replays the same fates.
    dice: Dice,
}

impl Rule {
    fn new(method: &str, pattern: &str, answer: Answer) -> Rule {
        let dice = match &answer {
            Answer::Simulated(Behavior { seed: Some(seed), .. }) => Dice::seeded(*seed),
            _ => Dice::Thread,
        };
        Rule {
            method: method.into(),
            pattern: pattern.into(),
            answer,
            answered: Arc::default(),
            dice,
        }
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.eq_ignore_ascii_case(method.as_str()) && path_matches(&self.pattern, path)
    }
}

impl Rules {
    pub fn new(default: Answer) -> Rules {
        Rules(ArcSwap::from_pointee(Plan {
            rules: Vec::new(),
            default: Rule::new("", "", default),
        }))
    }

    pub fn default_answer(&self) -> Answer {
        self.0.load().default.answer.clone()
    }

    /// Replaces the answer for requests no rule matches.
    pub fn set_default(&self, answer: Answer) {
        self.0.rcu(|plan| Plan {
            rules: plan.rules.clone(),
            default: Rule::new("", "", answer.clone()),
        });
    }

    /// Gives `method` + `pattern` its own answer, replacing an earlier rule
    /// for the same method and pattern.
    pub fn set(&self, method: &str, pattern: &str, answer: Answer) {
        self.0.rcu(|plan| {
            let mut plan = Plan::clone(plan);
            let rule = Rule::new(method, pattern, answer.clone());
            match plan
                .rules
                .iter_mut()
                .find(|r| r.method.eq_ignore_ascii_case(method) && *r.pattern == *pattern)
            {
                Some(slot) => *slot = rule,
                None => plan.rules.push(rule),
            }
            plan
        });
    }

    /// The answer for one request. Only a scripted answer is counted: the
    /// simulation, which load tests run, touches no shared counter here.
    pub fn pick(&self, method: &Method, path: &str) -> Picked {
        let plan = self.0.load();
        let rule = plan
            .rules
            .iter()
            .find(|r| r.matches(method, path))
            .unwrap_or(&plan.default);
        match &rule.answer {
            Answer::Simulated(b) => Picked::Simulated(b.clone(), rule.dice.clone()),
            Answer::Scripted(r) => Picked::Scripted(r.clone(), rule.answered.fetch_add(1, Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses(reply: &Reply, n: usize) -> Vec<u16> {
        (0..n).map(|k| reply.nth(k).0.as_u16()).collect()
    }

    #[test]
    fn failure_plans() {
        let first = Reply::ok().failing_first(2, 502);
        assert_eq!(statuses(&first, 4), [502, 502, 200, 200]);
        let half = Reply::ok().failing(0.5, 503);
        assert_eq!(statuses(&half, 6), [200, 503, 200, 503, 200, 503]);
        // A failure never carries the scripted body; a success does.
        let declined = Reply::status(402)
            .with_body("{\"declined\":true}")
            .failing_first(1, 503);
        assert_eq!(declined.nth(0).1, None);
        assert_eq!(
            declined.nth(1),
            (StatusCode::PAYMENT_REQUIRED, Some(&Bytes::from("{\"declined\":true}")))
        );
        assert_eq!(Reply::status(1000).nth(0).0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn rules_match_in_order_and_count_their_own_requests() {
        let rules = Rules::new(Reply::ok().into());
        rules.set("GET", "/v1/payments/*", Reply::status(404).into());
        rules.set(
            "post",
            "/v1/payments/*/reverse",
            Reply::ok().failing_first(1, 503).into(),
        );
        let pick = |method: Method, path: &str| match rules.pick(&method, path) {
            Picked::Scripted(r, k) => r.nth(k).0.as_u16(),
            Picked::Simulated(..) => 0,
        };
        assert_eq!(pick(Method::GET, "/v1/payments/o-1"), 404);
        assert_eq!(pick(Method::POST, "/v1/payments/o-1/reverse"), 503);
        assert_eq!(pick(Method::POST, "/v1/payments/o-1/reverse"), 200);
        assert_eq!(pick(Method::POST, "/v1/payments"), 200);
        // Replacing a rule starts its count afresh; the default stays.
        rules.set(
            "POST",
            "/v1/payments/*/reverse",
            Reply::ok().failing_first(1, 503).into(),
        );
        assert_eq!(pick(Method::POST, "/v1/payments/o-1/reverse"), 503);
        rules.set_default(Behavior::default().into());
        assert_eq!(pick(Method::POST, "/v1/payments"), 0);
        assert_eq!(rules.default_answer(), Answer::Simulated(Behavior::default()));
    }
}
