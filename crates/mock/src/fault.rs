//! Faults switched on and off while the mock runs (`POST /-/fault`), for
//! fault soaks: an acquirer that hangs, answers a 5xx storm, resets the
//! connection in the middle of its answer, or answers after the caller's
//! timeout — and the ledger of every charge it made (`GET /-/charges`).
//!
//! Why it is built so:
//!
//! * A fault sits in front of the simulation, not inside it: `hang` and
//!   `storm` answer before the simulation sees the payment (nothing is
//!   charged, as a real outage charges nothing), while `reset` and `late`
//!   let the simulation decide and charge first and then mangle or delay
//!   the answer — the cases where the acquirer charged and the caller does
//!   not know. Which case a payment met is exactly what a soak's checker
//!   has to find out from the ledger, so both sides are needed.
//! * The current fault is one immutable value behind an `ArcSwap`, like the
//!   answer plan: a request pays one atomic load, a switch applies from the
//!   next request on.
//! * Payments are faulted, and status queries only when asked
//!   (`queries: true`); reversals never, so whatever a fault left
//!   ambiguous can always be undone once the caller gets to it.
//! * A mid-answer reset is an HTTP/1 answer whose `content-length` promises
//!   the whole body while only half of it is written: hyper then ends the
//!   connection, and the client sees its answer cut off (h2: the stream is
//!   reset).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::orders::Facts;

/// What a faulted request meets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// No fault: the simulation answers.
    #[default]
    None,
    /// No answer for `hold_ms` (or until shutdown), then the connection is
    /// dropped; nothing is charged.
    Hang,
    /// `503 {"status":"failed"}` at once; nothing is charged.
    Storm,
    /// The simulation answers (and may charge), then the answer is cut off
    /// half-way and the connection dropped.
    Reset,
    /// The simulation answers (and may charge), `late_ms` late.
    Late,
}

impl FaultKind {
    /// Every kind but `None`, as the counters name them.
    pub const ALL: [FaultKind; 4] = [FaultKind::Hang, FaultKind::Storm, FaultKind::Reset, FaultKind::Late];

    fn index(self) -> Option<usize> {
        FaultKind::ALL.iter().position(|k| *k == self)
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::None => "none",
            FaultKind::Hang => "hang",
            FaultKind::Storm => "storm",
            FaultKind::Reset => "reset",
            FaultKind::Late => "late",
        }
    }
}

/// A fault as `POST /-/fault` sets it (JSON, every field optional).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fault {
    pub kind: FaultKind,
    /// Share of eligible requests faulted, `0..=1`.
    pub rate: f64,
    /// `late`: how late the answer comes.
    pub late_ms: u64,
    /// `hang`: how long a request is held before its connection is dropped.
    pub hold_ms: u64,
    /// Status queries (`GET`) are faulted too, not only payments.
    pub queries: bool,
}

impl Default for Fault {
    fn default() -> Self {
        Fault {
            kind: FaultKind::None,
            rate: 1.0,
            late_ms: 5_000,
            hold_ms: 30_000,
            queries: false,
        }
    }
}

impl Fault {
    /// Checks what a client sent.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(format!("rate {} is not within 0..=1", self.rate));
        }
        if self.late_ms > 600_000 || self.hold_ms > 600_000 {
            return Err("late_ms and hold_ms are at most 600000".into());
        }
        Ok(())
    }

    /// Whether a request of `method` to `path` is one this fault may meet:
    /// a payment (a `POST` that is no reversal and no epay query), or a
    /// query when `queries` is set. The mock's own `/-/` paths never are.
    pub fn eligible(&self, method: &Method, path: &str) -> bool {
        if self.kind == FaultKind::None || path.starts_with("/-/") {
            return false;
        }
        // epay's query is `api.php` (its payment `mapi.php` ends the same way).
        let last = path.rsplit('/').next().unwrap_or_default();
        let query = *method == Method::GET || last == "api.php";
        if *method == Method::POST && !query {
            return !path.ends_with("/reverse");
        }
        query && self.queries
    }

    /// Whether this request is faulted (a roll against `rate`).
    pub fn strikes(&self, method: &Method, path: &str) -> bool {
        self.eligible(method, path) && (self.rate >= 1.0 || fastrand::f64() < self.rate)
    }
}

/// How many requests met each kind of fault.
#[derive(Default)]
pub(crate) struct FaultCounters([AtomicU64; 4]);

impl FaultCounters {
    pub fn bump(&self, kind: FaultKind) {
        if let Some(i) = kind.index() {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `{"hang": n, "storm": n, "reset": n, "late": n}`.
    pub fn to_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        for (i, kind) in FaultKind::ALL.iter().enumerate() {
            map.insert(kind.name().into(), Value::from(self.0[i].load(Ordering::Relaxed)));
        }
        Value::Object(map)
    }
}

/// How long a hanging request is held.
pub(crate) fn hold(fault: &Fault) -> Duration {
    Duration::from_millis(fault.hold_ms)
}

/// One charge the simulation made (`GET /-/charges`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChargeRow {
    /// Order of arrival of the payment charged.
    pub seq: u64,
    /// The acquirer's id for it.
    pub id: String,
    /// The order id as text; `null` if the payment had none.
    pub order_id: Option<String>,
    /// payroute's trade number, if it sent one.
    pub trade_no: Option<String>,
    /// As the payment sent it.
    pub amount: Value,
    pub currency: Option<String>,
    /// When it was charged, Unix milliseconds.
    pub charged_ms: i64,
    /// When a reversal voided it, if one did.
    pub reversed_ms: Option<i64>,
}

/// Every charge, reversed ones kept and marked: unlike the order book it
/// is never capped and never forgets, so it is only kept when asked
/// ([`crate::Builder::ledger`]).
#[derive(Default)]
pub(crate) struct Ledger(Mutex<Vec<ChargeRow>>);

impl Ledger {
    fn rows(&self) -> std::sync::MutexGuard<'_, Vec<ChargeRow>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn charge(&self, facts: &Facts, now_ms: i64) {
        self.rows().push(ChargeRow {
            seq: facts.seq,
            id: facts.id.to_string(),
            order_id: facts.order_id_text(),
            trade_no: facts.trade_no.as_deref().map(str::to_owned),
            amount: facts.amount.clone().unwrap_or(Value::Null),
            currency: facts.currency.as_deref().map(str::to_owned),
            charged_ms: now_ms,
            reversed_ms: None,
        });
    }

    /// Marks the charge of the payment `seq` reversed (if it was charged).
    pub fn reverse(&self, seq: u64, now_ms: i64) {
        // Reversals are rare and recent: search from the newest.
        if let Some(row) = self.rows().iter_mut().rev().find(|r| r.seq == seq) {
            row.reversed_ms.get_or_insert(now_ms);
        }
    }

    pub fn all(&self) -> Vec<ChargeRow> {
        self.rows().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payments_are_faulted_reversals_never_queries_when_asked() {
        let f = Fault {
            kind: FaultKind::Storm,
            ..Fault::default()
        };
        assert!(f.eligible(&Method::POST, "/v1/payments"));
        assert!(f.eligible(&Method::POST, "/mapi.php"));
        assert!(!f.eligible(&Method::POST, "/v1/payments/T1/reverse"));
        assert!(!f.eligible(&Method::GET, "/v1/payments/T1"));
        assert!(!f.eligible(&Method::POST, "/api.php"));
        assert!(!f.eligible(&Method::POST, "/-/fault"));
        let q = Fault {
            queries: true,
            ..f.clone()
        };
        assert!(q.eligible(&Method::GET, "/v1/payments/T1"));
        assert!(q.eligible(&Method::GET, "/api.php"));
        assert!(!q.eligible(&Method::POST, "/v1/payments/T1/reverse"));
        assert!(
            !Fault::default().eligible(&Method::POST, "/v1/payments"),
            "none faults nothing"
        );
        let never = Fault { rate: 0.0, ..f };
        assert!((0..100).all(|_| !never.strikes(&Method::POST, "/pay")));
    }

    #[test]
    fn a_fault_is_checked_and_read_with_defaults() {
        let f: Fault = serde_json::from_str(r#"{"kind":"late","late_ms":2500}"#).expect("json");
        assert_eq!(
            (f.kind, f.late_ms, f.rate, f.queries),
            (FaultKind::Late, 2500, 1.0, false)
        );
        assert!(f.check().is_ok());
        assert!(Fault { rate: 1.5, ..f.clone() }.check().is_err());
        assert!(Fault { late_ms: 700_000, ..f }.check().is_err());
        assert!(serde_json::from_str::<Fault>(r#"{"kind":"flood"}"#).is_err());
        assert!(serde_json::from_str::<Fault>(r#"{"knd":"hang"}"#).is_err());
    }

    #[test]
    fn counters_name_every_kind() {
        let c = FaultCounters::default();
        c.bump(FaultKind::Reset);
        c.bump(FaultKind::Reset);
        c.bump(FaultKind::None);
        assert_eq!(
            c.to_json(),
            serde_json::json!({"hang": 0, "storm": 0, "reset": 2, "late": 0})
        );
    }
}
