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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::path::path_matches;

/// A simulated acquirer: how it answers payments, read once per payment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Behavior {
    /// Share of (non-hanging) payments answered 200, in `0..=1`.
    pub success_rate: f64,
    /// Delay added before answering, in milliseconds.
    pub latency_ms: u64,
    /// Uniform extra delay in `[0, jitter_ms]` milliseconds.
    pub jitter_ms: u64,
    /// Share of payments that never get an answer (held open until shutdown),
    /// in `0..=1`. Decided before `success_rate`.
    pub hang_rate: f64,
    /// Status of a non-success answer. 4xx answers say `"declined"` (the
    /// acquirer refused the payment), anything else `"failed"`. A value that
    /// is not a valid HTTP status falls back to 503.
    pub fail_status: u16,
}

impl Default for Behavior {
    /// A perfect acquirer: always pays, instantly.
    fn default() -> Self {
        Behavior {
            success_rate: 1.0,
            latency_ms: 0,
            jitter_ms: 0,
            hang_rate: 0.0,
            fail_status: 503,
        }
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
    Simulated(Behavior),
    /// The reply and which of its requests this is (from 0).
    Scripted(Reply, usize),
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
}

impl Rule {
    fn new(method: &str, pattern: &str, answer: Answer) -> Rule {
        Rule {
            method: method.into(),
            pattern: pattern.into(),
            answer,
            answered: Arc::default(),
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
            Answer::Simulated(b) => Picked::Simulated(*b),
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
            Picked::Simulated(_) => 0,
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
