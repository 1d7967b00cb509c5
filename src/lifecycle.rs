//! A payment's moves after the merchant had its answer, and what goes with
//! each: the merchant's event, committed in the same transaction as the move
//! (`notify::event`), and `payroute_payments_total{state}` when it applies.
//!
//! [`move_payment`] is the one way such a move is made — by the sweeper, by
//! a reversal's end, and by anything else that learns a payment's fate
//! later — so every cause tells the merchant the same way, and the rules of
//! `State::may_move` (never backwards) are the journal's to enforce.
//!
//! [`paid_on`] and [`count_unpaid`] judge an epay channel by whether its
//! orders get paid, not by whether it created them (`routing::unpaid`): a
//! move to paid counts a success on the channel that holds the payment,
//! and a loop counts orders still unpaid `unpaid_after_ms` after creation
//! as failures.
//!
//! [`on_reversal_end`] is the journal's side of background reversals
//! (`upstream::reversal` calls it through its hook): every end is recorded
//! as an adjustment (`accepted`, `refused`, `given_up`); an accepted one
//! moves the payment to `reversed` where that is the truth:
//!
//! - `failed` or `closed`: nothing else holds its money, so `reversed`;
//! - `paid`: only on the channel that holds the payment (the journal
//!   refuses it otherwise: a reversal of an earlier ambiguous attempt does
//!   not undo a payment another channel took);
//! - `pending`: only on the channel it is pending on. A payment whose
//!   ambiguous attempt is being reversed fails over and may be pending
//!   elsewhere, or still running — so while it is pending the move waits,
//!   reading it again, until it ends or its deadline has passed (no attempt
//!   of it can still be under way). A payment pending on another channel
//!   stays pending: that channel may yet charge it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::config::ChannelConfig;
use crate::journal::{self, Adjustment, AdjustmentKind, JournalError, Moved, Payment, State, TransitionFacts};
use crate::notify::event;
use crate::snapshot::Snapshot;
use crate::upstream::ambiguity::by_order_only;
use crate::upstream::reversal::{Ended, Ending, MayName, OnEnd};

/// After a payment's deadline, time for its last journal write (the close).
const SETTLE_MARGIN: Duration = Duration::from_millis(500);
/// How often a reversal's end reads a running payment again.
const RUNNING_POLL: Duration = Duration::from_millis(200);
/// Tries of a journal write from a reversal's task before it is left to a human.
const RECORD_TRIES: u32 = 6;
/// First wait between those tries; doubles.
const RECORD_BACKOFF: Duration = Duration::from_millis(250);

/// Moves `payment` to `to` with `facts`, queuing the merchant's event with
/// the move (only if it applies), and counts the new state. The event names
/// the channel the move is about, when `facts` says one.
pub(crate) async fn move_payment(
    app: &App,
    payment: &Payment,
    to: State,
    facts: TransitionFacts,
) -> Result<Moved, JournalError> {
    let snap = app.snapshot();
    let event = match &facts.channel {
        Some(channel) if payment.channel_id.as_deref() != Some(&**channel) => {
            let mut told = payment.clone();
            told.channel_id = Some(channel.to_string());
            event::for_payment(&snap, &told, to, facts.at_ms)
        }
        _ => event::for_payment(&snap, payment, to, facts.at_ms),
    };
    let channel = facts.channel.clone();
    let moved = app.journal.transition(&payment.trade_no, to, facts, event).await?;
    if matches!(moved, Moved::Applied { .. }) {
        app.metrics.payment_state(to);
        // The merchant's event is committed: deliver it now, not at the next poll.
        app.outbox.ring();
        if to == State::Paid {
            paid_on(
                &snap,
                channel.as_deref().or(payment.channel_id.as_deref()),
                &payment.trade_no,
            );
        }
    }
    Ok(moved)
}

/// A payment became paid on `channel`: for an epay channel, that is the
/// success its routing waits for (see `routing::unpaid`). JSON channels
/// counted theirs when they answered.
pub(crate) fn paid_on(snap: &Snapshot, channel: Option<&str>, trade_no: &str) {
    let Some(ch) = channel.and_then(|id| snap.channels.iter().find(|c| &*c.config.id == id)) else {
        return;
    };
    if ch.config.is_epay() {
        ch.live.record_paid(trade_no);
    }
}

/// Counts, every second, the epay orders still unpaid `unpaid_after_ms`
/// after they were made as failures of their channels (see
/// `routing::unpaid`). Runs for the life of the app.
pub(crate) async fn count_unpaid(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = journal::now_ms();
        for ch in app.snapshot().channels.iter().filter(|c| c.config.is_epay()) {
            let unpaid = ch.live.record_unpaid(now);
            if unpaid > 0 {
                tracing::debug!(channel = %ch.config.id, unpaid, "epay orders unpaid after unpaid_after_ms: counted as failures");
            }
        }
    }
}

/// Does another payment share `order_id` on `channel`, so that the
/// channel's `query` or `reversal` naming the order id alone could be about
/// that one? (Two merchants' order ids are their own business, and one
/// merchant's may repeat under two `Idempotency-Key`s.) Another payment is
/// one the journal holds on this channel under this order id, or one whose
/// reversal is running here (it moved on, but this channel may still hold
/// its attempt). Only asked where an endpoint names the order id alone; an
/// unreadable journal counts as shared: a false "paid" or someone else's
/// payment voided is worse than a payment left pending for a human.
pub(crate) async fn order_shared(app: &App, channel: &ChannelConfig, order_id: &str, trade_no: &str) -> bool {
    let order_keyed = [&channel.query, &channel.reversal]
        .into_iter()
        .flatten()
        .any(by_order_only);
    if !order_keyed || channel.is_epay() {
        return false;
    }
    if app.reversals.running_for_other(&channel.id, order_id, trade_no) {
        return true;
    }
    match app.journal.find_for_channel(&channel.id, order_id).await {
        Ok(found) => found.iter().any(|p| p.trade_no != trade_no),
        Err(e) => {
            app.metrics.journal_errors.inc();
            tracing::warn!(error = %e, channel = %channel.id, trade_no, "journal unavailable: the order id is treated as shared, so it is not named upstream");
            true
        }
    }
}

/// The [`MayName`] hook of a reversal of the payment `trade_no`.
pub(crate) fn may_name(app: &App, channel: &ChannelConfig, order_id: &str, trade_no: &str) -> MayName {
    let Some(app) = app.handle() else {
        return Box::new(|| Box::pin(async { false }));
    };
    let (channel, order_id, trade_no) = (channel.clone(), order_id.to_owned(), trade_no.to_owned());
    let app = Arc::downgrade(&app);
    Box::new(move || {
        let (app, channel, order_id, trade_no) = (app.clone(), channel.clone(), order_id.clone(), trade_no.clone());
        Box::pin(async move {
            match app.upgrade() {
                Some(app) => !order_shared(&app, &channel, &order_id, &trade_no).await,
                None => false,
            }
        })
    })
}

/// The hook for a reversal started now about a payment whose own attempts
/// may go on for up to `in_flight_for` (its remaining deadline; zero for a
/// payment that already ended).
pub(crate) fn on_reversal_end(app: &App, in_flight_for: Duration) -> OnEnd {
    let not_before_ms = journal::now_ms() + (in_flight_for + SETTLE_MARGIN).as_millis() as i64;
    match app.handle() {
        Some(app) => Box::new(move |ended| Box::pin(record_reversal(app, ended, not_before_ms))),
        // The app is being dropped: nothing is left to record into.
        None => Box::new(|_| Box::pin(async {})),
    }
}

async fn record_reversal(app: Arc<App>, ended: Ended, not_before_ms: i64) {
    let adjustment = Adjustment {
        trade_no: ended.trade_no.clone(),
        kind: AdjustmentKind::Reversal,
        channel_id: Some(ended.channel.to_string()),
        amount: None,
        result: ended.ending.as_str().into(),
        detail: ended.detail.clone(),
        at_ms: ended.at_ms,
    };
    let recorded = retrying(&app, &ended.trade_no, "the reversal", || {
        app.journal.record_adjustment(adjustment.clone())
    })
    .await;
    if recorded.is_none() || ended.ending != Ending::Accepted {
        return;
    }
    // Until the payment's deadline, a pending payment may still be running:
    // wait for it to end (it rarely takes long), reading it again.
    let record = loop {
        let Some(record) = retrying(&app, &ended.trade_no, "the payment", || {
            app.journal.payment(&ended.trade_no)
        })
        .await
        .flatten() else {
            // Not journaled (served while the journal was down): the adjustment is all there is.
            return;
        };
        let wait = not_before_ms - journal::now_ms();
        if record.payment.state != State::Pending || wait <= 0 {
            break record;
        }
        tokio::time::sleep(Duration::from_millis(wait as u64).min(RUNNING_POLL)).await;
    };
    let payment = record.payment;
    let channel = match payment.state {
        State::Pending if payment.channel_id.as_deref() != Some(&*ended.channel) => {
            tracing::info!(trade_no = %payment.trade_no, channel = %ended.channel, pending_on = ?payment.channel_id, "reversal accepted; the payment stays pending on the channel it moved to");
            return;
        }
        State::Pending | State::Paid => Some(ended.channel.clone()),
        State::Failed | State::Closed => None,
        State::Declined | State::Reversed | State::Refunded => return,
    };
    let facts = TransitionFacts {
        at_ms: journal::now_ms(),
        channel,
        ..TransitionFacts::default()
    };
    let moved = retrying(&app, &payment.trade_no, "the move to reversed", || {
        move_payment(&app, &payment, State::Reversed, facts.clone())
    })
    .await;
    tracing::info!(trade_no = %payment.trade_no, channel = %ended.channel, ?moved, "reversal recorded");
}

/// Runs a journal operation until it succeeds or [`RECORD_TRIES`] are
/// spent, counting each failure; `None` when it never succeeded (logged for
/// a human: money state the journal does not have).
async fn retrying<T, F, Fut>(app: &App, trade_no: &str, what: &str, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, JournalError>>,
{
    let mut delay = RECORD_BACKOFF;
    for attempt in 1..=RECORD_TRIES {
        match op().await {
            Ok(value) => return Some(value),
            Err(e) => {
                app.metrics.journal_errors.inc();
                let retry = matches!(e, JournalError::Unavailable(_)) && attempt < RECORD_TRIES;
                if !retry {
                    tracing::error!(error = %e, trade_no, "journal: cannot record {what}; record it by hand");
                    return None;
                }
                tracing::warn!(error = %e, trade_no, "journal: cannot record {what} yet; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::journal::{EventState, NewPayment, Protocol};
    use crate::metrics::Metrics;
    use crate::state::Store;

    fn app() -> (Arc<App>, tempfile::TempDir, tokio::runtime::Runtime) {
        let text = "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
                    [[channel]]\nid = \"b\"\nurl = \"http://127.0.0.1:1\"\n\
                    [[merchant]]\nid = \"m-1\"\nnotify_url = \"http://127.0.0.1:7/hook\"\nnotify_secret = \"s\"\n";
        let config = Config::parse(text, "t.toml".as_ref()).unwrap();
        let (journal, dir, rt) = journal::scratch();
        let app = rt.block_on(async { App::new(config, Metrics::new(), Store::memory(10), journal, 1) });
        (app, dir, rt)
    }

    async fn pending(app: &App, trade_no: &str, channel: &str, state: State) -> Payment {
        let p = NewPayment {
            trade_no: trade_no.into(),
            merchant_id: Arc::from("m-1"),
            order_id: format!("o-{trade_no}"),
            amount: 500,
            currency: "CNY".into(),
            pay_type: None,
            protocol: Protocol::Http,
            channel_id: Some(Arc::from(channel)),
            channel_trade_no: None,
            state,
            expected_fee: 0,
            merchant_data: "{}".into(),
            created_at_ms: 1,
            next_query_at_ms: Some(1),
        };
        assert!(app.journal.open_payment(p).await.unwrap());
        app.journal.payment(trade_no).await.unwrap().unwrap().payment
    }

    fn ended(trade_no: &str, channel: &str, ending: Ending) -> Ended {
        Ended {
            channel: Arc::from(channel),
            trade_no: trade_no.into(),
            ending,
            detail: "acquirer answered 200 OK".into(),
            at_ms: 5,
        }
    }

    async fn state(app: &App, trade_no: &str) -> State {
        app.journal.payment(trade_no).await.unwrap().unwrap().payment.state
    }

    #[test]
    fn a_move_queues_the_merchants_event_with_it_and_only_once() {
        let (app, _dir, rt) = app();
        rt.block_on(async {
            let p = pending(&app, "L1", "a", State::Pending).await;
            let facts = TransitionFacts {
                at_ms: 10,
                channel: Some(Arc::from("a")),
                ..TransitionFacts::default()
            };
            let moved = move_payment(&app, &p, State::Paid, facts.clone()).await.unwrap();
            assert_eq!(moved, Moved::Applied { from: State::Pending });
            let again = move_payment(&app, &p, State::Paid, facts).await.unwrap();
            assert_eq!(again, Moved::AlreadyThere);
            let events = app.journal.events(EventState::Pending, 10).await.unwrap();
            let ours: Vec<_> = events.iter().filter(|e| e.trade_no == "L1").collect();
            assert_eq!(ours.len(), 1, "one event for one move");
            let body: serde_json::Value = serde_json::from_str(&ours[0].body).unwrap();
            assert_eq!(
                (body["state"].as_str(), body["channel"].as_str()),
                (Some("paid"), Some("a"))
            );
            assert_eq!(ours[0].target, "http://127.0.0.1:7/hook");
        });
    }

    #[test]
    fn an_accepted_reversal_reverses_failed_and_closed_payments_and_is_recorded() {
        let (app, _dir, rt) = app();
        rt.block_on(async {
            pending(&app, "R1", "a", State::Failed).await;
            record_reversal(app.clone(), ended("R1", "b", Ending::Accepted), 0).await;
            assert_eq!(state(&app, "R1").await, State::Reversed);
            let record = app.journal.payment("R1").await.unwrap().unwrap();
            assert_eq!(record.adjustments.len(), 1);
            assert_eq!(record.adjustments[0].result, "accepted");
            assert_eq!(record.adjustments[0].channel_id.as_deref(), Some("b"));
            assert_eq!(
                record.payment.channel_id.as_deref(),
                Some("a"),
                "a failed payment keeps its channel"
            );

            let closed = pending(&app, "R2", "a", State::Pending).await;
            move_payment(&app, &closed, State::Closed, TransitionFacts::default())
                .await
                .unwrap();
            record_reversal(app.clone(), ended("R2", "a", Ending::Accepted), 0).await;
            assert_eq!(state(&app, "R2").await, State::Reversed);
        });
    }

    #[test]
    fn a_reversal_never_undoes_money_another_channel_holds_or_may_yet_take() {
        let (app, _dir, rt) = app();
        rt.block_on(async {
            // Paid on b; a's ambiguous attempt reversed: still paid.
            let p = pending(&app, "S1", "b", State::Pending).await;
            let facts = TransitionFacts {
                at_ms: 2,
                channel: Some(Arc::from("b")),
                ..TransitionFacts::default()
            };
            move_payment(&app, &p, State::Paid, facts).await.unwrap();
            record_reversal(app.clone(), ended("S1", "a", Ending::Accepted), 0).await;
            assert_eq!(state(&app, "S1").await, State::Paid);
            // Pending on b (failed over there): b may still charge it.
            pending(&app, "S2", "b", State::Pending).await;
            record_reversal(app.clone(), ended("S2", "a", Ending::Accepted), 0).await;
            assert_eq!(state(&app, "S2").await, State::Pending);
            // Pending on the channel that reversed it: reversed.
            pending(&app, "S3", "a", State::Pending).await;
            record_reversal(app.clone(), ended("S3", "a", Ending::Accepted), 0).await;
            assert_eq!(state(&app, "S3").await, State::Reversed);
            // Refused and given-up reversals are recorded and move nothing.
            pending(&app, "S4", "a", State::Failed).await;
            record_reversal(app.clone(), ended("S4", "a", Ending::Refused), 0).await;
            record_reversal(app.clone(), ended("S4", "a", Ending::GaveUp), 0).await;
            assert_eq!(state(&app, "S4").await, State::Failed);
            let results: Vec<_> = app.journal.payment("S4").await.unwrap().unwrap().adjustments;
            let results: Vec<_> = results.iter().map(|a| a.result.as_str()).collect();
            assert_eq!(results, ["refused", "given_up"]);
        });
    }

    #[test]
    fn a_reversal_of_a_running_payment_waits_for_it_to_end() {
        let (app, _dir, rt) = app();
        rt.block_on(async {
            pending(&app, "W1", "a", State::Pending).await;
            let hook = on_reversal_end(&app, Duration::from_secs(5));
            let started = std::time::Instant::now();
            // The payment fails meanwhile (its last channel refused it).
            let journal = app.journal.clone();
            let fail = async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let facts = TransitionFacts::default();
                journal.transition("W1", State::Failed, facts, None).await.unwrap()
            };
            let (_, moved) = tokio::join!(hook(ended("W1", "a", Ending::Accepted)), fail);
            assert_eq!(moved, Moved::Applied { from: State::Pending }, "the hook waited");
            assert_eq!(state(&app, "W1").await, State::Reversed, "failed, then reversed");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "no longer than the payment ran"
            );

            // Still pending at its deadline, on the reversed channel: reversed then.
            pending(&app, "W2", "a", State::Pending).await;
            let started = std::time::Instant::now();
            on_reversal_end(&app, Duration::from_millis(300))(ended("W2", "a", Ending::Accepted)).await;
            assert!(started.elapsed() >= Duration::from_millis(800), "deadline + margin");
            assert_eq!(state(&app, "W2").await, State::Reversed);
        });
    }
}
