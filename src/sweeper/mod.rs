//! The sweeper: nothing stays pending unseen (contract: "The sweeper").
//!
//! A background loop on the main runtime. Every tick it claims the pending
//! payments whose query is due (`Journal::claim_due_queries`: a claim pushes
//! the payment's next query past the time a visit can take, so a fleet asks
//! about each payment once, and a claim left by a dead instance runs out and
//! is taken by another), and visits each ([`schedule`] says what a visit
//! does and when the next one is):
//!
//! - its channel — found by id in the config in force — is asked by its
//!   `query`, under the channel's `[channel.outcome]` rule:
//!   - `paid` → `paid` (with the channel's trade number where the rule has
//!     a `trade_no_pointer`);
//!   - `declined` → `declined`: the channel has the payment and refused it;
//!   - 404 → `failed`: the channel never had it, and a pending payment is
//!     never sent anywhere else, so no acquirer took it. (Both are "never
//!     charged" to a payment in flight; afterwards they are different
//!     facts, and the journal keeps them apart.)
//!   - `pending`, or anything unclear → asked again at the next step;
//! - past `close_after_ms` (asked one last time first, where it can be):
//!   `closed`, and reversed in the background where the channel has a
//!   `reversal` — the reversal names the payment by its path template
//!   (`{trade_no}`, `{order_id}`) and carries no body, since the merchant's
//!   request is not kept;
//! - an epay channel is asked with its gateway's `api.php?act=order`
//!   (`upstream::ambiguity`): `status` 1 → `paid`, `code` -1 (no such
//!   order) → `failed`, `status` 0 → still pending;
//! - a channel without `query`, or no longer configured, cannot be asked:
//!   the payment is only closed, at `close_after_ms`.
//!
//! Every move goes through [`crate::lifecycle::move_payment`], so the
//! merchant is told exactly as a notification would tell it, and the
//! journal's compare-and-set lets a notification and the sweeper race
//! safely: whichever comes second changes nothing.
//!
//! # Bounded: it can never flood a channel
//!
//! - **At once:** at most [`CONCURRENCY`] queries in flight per channel (or
//!   the channel's `max_in_flight`, if lower), each bounded by the channel's
//!   `timeout`.
//! - **Per second:** at most [`RATE`] queries per channel (a token bucket,
//!   bursting to the concurrency).
//! - **Failing channels:** a query that leaves the fate unknown (a timeout,
//!   a 5xx, an unreadable answer) pauses that channel's queries for 1 s,
//!   doubling with each failure in a row up to 5 min; any clear answer ends
//!   the pause.
//! - **Per tick:** at most [`PAGE`] × [`MAX_PAGES`] payments are claimed.
//!
//! The loop never waits on a busy channel: a payment its channel's
//! [`gate`] does not let through now is put off to a time the gate hands
//! out, spaced at the channel's rate, so a backlog of thousands on one
//! channel drains at that rate and delays no other channel. While a gate
//! has put-off payments to come, the loop wakes when the next one is due,
//! not only on its tick. The bounds are constants, not `[sweeper]` keys:
//! they protect acquirers whose query limits payroute does not know, and
//! the contract gives no key for them.

mod gate;
mod schedule;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::app::App;
use crate::journal::{self, Moved, Payment, State, TransitionFacts};
use crate::lifecycle;
use crate::snapshot::{Channel, Snapshot};
use crate::upstream::ambiguity::{self, Resolution, Subject};
use gate::{Admission, Gate};
use schedule::{Plan, Schedule};

/// Queries in flight per channel, at most.
pub(crate) const CONCURRENCY: usize = 4;
/// Queries per second per channel, at most.
pub(crate) const RATE: f64 = 20.0;
/// Payments claimed per journal round trip.
const PAGE: i64 = 100;
/// Pages claimed per tick, at most.
const MAX_PAGES: usize = 10;
/// A claim lasts the longest channel timeout plus this: time for the
/// visit's journal writes, so a claim never runs out under a live visit.
const HOLD_MARGIN: Duration = Duration::from_secs(30);
/// At shutdown, how long visits under way may finish (the rest are
/// dropped; their claims run out and they are visited again).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The running sweeper; [`Sweeper::stop`] ends it.
pub(crate) struct Sweeper {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Sweeper {
    /// Starts the loop on the current runtime.
    pub fn start(app: Arc<App>) -> Sweeper {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(app, stopped));
        Sweeper { stop, task }
    }

    /// Stops claiming, and gives visits under way a short grace.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn run(app: Arc<App>, mut stopped: oneshot::Receiver<()>) {
    let mut gates = Gates::default();
    let mut visits = JoinSet::new();
    loop {
        let now = Instant::now();
        let tick = now + Schedule::of(&app.snapshot()).tick();
        let wake = gates.next_put_off(now).map_or(tick, |at| at.min(tick));
        tokio::select! {
            _ = &mut stopped => break,
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        while visits.try_join_next().is_some() {}
        sweep(&app, &mut gates, &mut visits).await;
    }
    let _ = tokio::time::timeout(STOP_GRACE, async { while visits.join_next().await.is_some() {} }).await;
    visits.abort_all();
}

/// One gate per configured channel with a query, rebuilt when its bound changes.
#[derive(Default)]
struct Gates(HashMap<Arc<str>, Arc<Gate>>);

impl Gates {
    fn get(&mut self, channel: &Channel, now: Instant) -> Arc<Gate> {
        let bound = bound(channel);
        let gate = self
            .0
            .entry(channel.config.id.clone())
            .or_insert_with(|| Arc::new(Gate::new(bound, RATE, now)));
        if gate.concurrency() != bound {
            *gate = Arc::new(Gate::new(bound, RATE, now));
        }
        gate.clone()
    }

    /// The next time a payment some gate put off comes due.
    fn next_put_off(&self, now: Instant) -> Option<Instant> {
        self.0.values().filter_map(|g| g.next_put_off(now)).min()
    }

    /// Forgets channels that left the config.
    fn keep(&mut self, snap: &Snapshot) {
        self.0.retain(|id, _| snap.channels.iter().any(|c| c.config.id == *id));
    }
}

/// Queries at once for `channel`.
fn bound(channel: &Channel) -> usize {
    channel
        .config
        .max_in_flight
        .map_or(CONCURRENCY, |m| CONCURRENCY.min(m as usize))
}

/// How long a claim lasts in this config version.
fn hold_ms(snap: &Snapshot) -> i64 {
    let longest = snap.channels.iter().map(|c| c.config.timeout).max().unwrap_or_default();
    (longest + HOLD_MARGIN).as_millis() as i64
}

/// One tick: claim what is due, page by page, and visit it.
async fn sweep(app: &Arc<App>, gates: &mut Gates, visits: &mut JoinSet<()>) {
    let snap = app.snapshot();
    let schedule = Arc::new(Schedule::of(&snap));
    gates.keep(&snap);
    let hold = hold_ms(&snap);
    let now = journal::now_ms();
    for _ in 0..MAX_PAGES {
        let page = match app.journal.claim_due_queries(now, hold, PAGE).await {
            Ok(page) => page,
            Err(e) => {
                app.metrics.journal_errors.inc();
                tracing::warn!(error = %e, "sweeper: cannot claim due payments; trying again next tick");
                return;
            }
        };
        let full = page.len() as i64 >= PAGE;
        for payment in page {
            visit(app, &snap, &schedule, gates, visits, payment, now).await;
        }
        if !full {
            break;
        }
    }
}

/// One claimed payment: put off, closed, or asked about (in a task of its own).
async fn visit(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    schedule: &Arc<Schedule>,
    gates: &mut Gates,
    visits: &mut JoinSet<()>,
    payment: Payment,
    now: i64,
) {
    let channel = payment
        .channel_id
        .as_deref()
        .and_then(|id| snap.channels.iter().position(|c| *c.config.id == *id));
    let can_ask = channel.is_some_and(|i| snap.channels[i].config.can_query());
    let close_later = |visits: &mut JoinSet<()>, payment: Payment| {
        let (app, snap) = (app.clone(), snap.clone());
        visits.spawn(async move { close(&app, &snap, channel, &payment).await });
    };
    match (schedule.plan(payment.created_at_ms, now, can_ask), channel) {
        (Plan::Later(at), _) => reschedule(app, &payment, at).await,
        (Plan::Close, _) => close_later(visits, payment),
        (Plan::Ask { closing }, Some(idx)) => {
            let instant = Instant::now();
            let gate = gates.get(&snap.channels[idx], instant);
            match gate.admit(instant) {
                Admission::Go(permit) => {
                    let (app, snap, schedule) = (app.clone(), snap.clone(), schedule.clone());
                    visits.spawn(async move {
                        ask(&app, &snap, idx, &schedule, &payment, closing, permit, &gate).await;
                    });
                }
                // A failing channel is not asked; at the close, the payment is closed unasked.
                Admission::Paused(_) if closing => close_later(visits, payment),
                Admission::Paused(at) | Admission::Later(at) => {
                    let put_off = now + at.saturating_duration_since(instant).as_millis() as i64;
                    let at = if closing {
                        put_off
                    } else {
                        put_off.min(schedule.close_at(payment.created_at_ms))
                    };
                    reschedule(app, &payment, at).await;
                }
            }
        }
        // `can_ask` implies a channel; kept total without a panic.
        (Plan::Ask { .. }, None) => close_later(visits, payment),
    }
}

/// Asks the payment's channel, then moves, reschedules or closes it.
#[allow(clippy::too_many_arguments)]
async fn ask(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    idx: usize,
    schedule: &Schedule,
    payment: &Payment,
    closing: bool,
    permit: tokio::sync::OwnedSemaphorePermit,
    gate: &Gate,
) {
    let channel = &snap.channels[idx];
    let config = &channel.config;
    let subject = Subject {
        order_id: &payment.order_id,
        trade_no: &payment.trade_no,
        amount: u64::try_from(payment.amount).ok(),
    };
    let shared = config.query.as_ref().is_some_and(ambiguity::by_order_only)
        && crate::lifecycle::order_shared(app, config, &payment.order_id, &payment.trade_no).await;
    let resolution = if shared {
        // Its answer could be about another payment under the same order id.
        tracing::warn!(channel = %config.id, trade_no = %payment.trade_no, "sweeper: query not sent: another payment uses this order id on the channel, and the query names the order id alone");
        Resolution::Unknown
    } else {
        ambiguity::query(config, &channel.upstream, subject, &request_id(payment), config.timeout).await
    };
    drop(permit);
    gate.report(!matches!(resolution, Resolution::Unknown), Instant::now());
    let count = |result: &str| {
        app.metrics
            .sweeper_queries
            .with_label_values(&[&config.id, result])
            .inc()
    };
    let facts = |channel_trade_no| TransitionFacts {
        at_ms: journal::now_ms(),
        channel: Some(config.id.clone()),
        channel_trade_no,
        expected_fee: None,
    };
    let (to, facts) = match resolution {
        Resolution::Paid { body, .. } => {
            count("paid");
            let trade_no = ambiguity::channel_trade_no(config, &body);
            (State::Paid, facts(trade_no))
        }
        Resolution::Declined => {
            count("declined");
            (State::Declined, facts(None))
        }
        Resolution::NeverArrived => {
            count("failed");
            (State::Failed, facts(None))
        }
        still @ (Resolution::Pending | Resolution::Unknown) => {
            count(if matches!(still, Resolution::Pending) {
                "pending"
            } else {
                "unknown"
            });
            if closing || schedule.closing(payment.created_at_ms, journal::now_ms()) {
                close(app, snap, Some(idx), payment).await;
            } else {
                let at = schedule.next_at(payment.created_at_ms, journal::now_ms());
                reschedule(app, payment, at).await;
            }
            return;
        }
    };
    match lifecycle::move_payment(app, payment, to, facts).await {
        Ok(Moved::Applied { .. }) => {
            tracing::info!(trade_no = %payment.trade_no, channel = %config.id, state = %to, "sweeper: pending payment settled by query");
        }
        // A notification (or another instance) settled it first.
        Ok(moved) => tracing::debug!(trade_no = %payment.trade_no, ?moved, "sweeper: nothing to move"),
        Err(e) => {
            app.metrics.journal_errors.inc();
            tracing::warn!(error = %e, trade_no = %payment.trade_no, "sweeper: cannot record the query's answer; asking again when the claim runs out");
        }
    }
}

/// Closes a payment pending too long and, where its channel has a
/// `reversal`, reverses it in the background.
async fn close(app: &Arc<App>, snap: &Snapshot, channel: Option<usize>, payment: &Payment) {
    let facts = TransitionFacts {
        at_ms: journal::now_ms(),
        ..TransitionFacts::default()
    };
    let label = payment.channel_id.as_deref().unwrap_or("");
    match lifecycle::move_payment(app, payment, State::Closed, facts).await {
        Ok(Moved::Applied { .. }) => {
            app.metrics.sweeper_queries.with_label_values(&[label, "closed"]).inc();
            tracing::info!(trade_no = %payment.trade_no, channel = label, "sweeper: pending too long; closed");
        }
        Ok(moved) => {
            tracing::debug!(trade_no = %payment.trade_no, ?moved, "sweeper: nothing to close");
            return;
        }
        Err(e) => {
            app.metrics.journal_errors.inc();
            tracing::warn!(error = %e, trade_no = %payment.trade_no, "sweeper: cannot close; trying again when the claim runs out");
            return;
        }
    }
    let Some(channel) = channel
        .map(|i| &snap.channels[i])
        .filter(|c| c.config.reversal.is_some())
    else {
        return;
    };
    app.reversals.start(
        channel.config.clone(),
        channel.upstream.clone(),
        (payment.order_id.clone(), payment.trade_no.clone()),
        Bytes::new(),
        request_id(payment),
        app.metrics.reversals.clone(),
        lifecycle::may_name(app, &channel.config, &payment.order_id, &payment.trade_no),
        lifecycle::on_reversal_end(app, Duration::ZERO),
    );
}

/// Sets when the payment is visited next.
async fn reschedule(app: &App, payment: &Payment, at_ms: i64) {
    if let Err(e) = app.journal.reschedule(&payment.trade_no, Some(at_ms)).await {
        app.metrics.journal_errors.inc();
        tracing::warn!(error = %e, trade_no = %payment.trade_no, "sweeper: cannot reschedule; visited again when the claim runs out");
    }
}

/// The `X-Request-Id` of the sweeper's requests about a payment.
fn request_id(payment: &Payment) -> HeaderValue {
    HeaderValue::from_str(&format!("sweep-{}", payment.trade_no)).unwrap_or(HeaderValue::from_static("sweep"))
}
