//! The journal's behaviour suite, run against both backends: SQLite in a
//! temporary directory, and PostgreSQL at 127.0.0.1:5432 in a throwaway
//! database created for the run and dropped after it (`.ci/run` starts a
//! server; without one these tests fail, unless `PAYROUTE_SKIP_POSTGRES=1`).
//!
//! Subtests share one database per backend, so each keeps to its own ids
//! and its own stretch of the journal's clock: outbox events of the subtests
//! that are not about the outbox are due only at [`FAR`], and each outbox or
//! sweeper subtest claims at times no other subtest uses.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::config::Config;

/// Never reached by a claim in these tests.
const FAR: i64 = 4_000_000_000_000_000;

fn config(journal: &str, dir: &Path) -> JournalConfig {
    let text = format!("{journal}\n[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n");
    Config::parse(&text, &dir.join("routes.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .journal
}

/// A run-unique prefix: subtests on a shared database never meet.
fn tag() -> String {
    format!("T{:012x}", fastrand::u64(..) >> 16)
}

fn payment(trade_no: &str, merchant: &str, order: &str, at_ms: i64) -> NewPayment {
    NewPayment {
        trade_no: trade_no.into(),
        merchant_id: Arc::from(merchant),
        order_id: order.into(),
        amount: 1_000,
        currency: "CNY".into(),
        pay_type: Some("alipay".into()),
        protocol: Protocol::Http,
        channel_id: Some(Arc::from("acq-a")),
        channel_trade_no: None,
        state: State::Pending,
        expected_fee: 4,
        merchant_data: r#"{"notify_url":"https://shop.example/n"}"#.into(),
        created_at_ms: at_ms,
        next_query_at_ms: None,
    }
}

fn facts(at_ms: i64, channel: &str) -> TransitionFacts {
    TransitionFacts {
        at_ms,
        channel: Some(Arc::from(channel)),
        channel_trade_no: Some("ch-1".into()),
        expected_fee: None,
    }
}

fn event(merchant: &str, next_at_ms: i64) -> NewEvent {
    NewEvent {
        event_id: new_event_id(),
        merchant_id: Arc::from(merchant),
        kind: "json".into(),
        target: "https://shop.example/n".into(),
        method: "POST".into(),
        body: r#"{"state":"paid"}"#.into(),
        next_at_ms,
    }
}

fn note(channel: &str, key: &str, trade_no: &str) -> NotificationIn {
    NotificationIn {
        channel: Arc::from(channel),
        dedupe_key: Some(key.into()),
        trade_no: Some(trade_no.into()),
        at_ms: 50,
    }
}

async fn record(j: &Journal, trade_no: &str) -> PaymentRecord {
    j.payment(trade_no).await.unwrap().expect("payment recorded")
}

/// The behaviour every backend must show, on one handle.
pub(super) async fn run(j: &Journal) {
    j.ping().await.unwrap();
    payments_are_recorded_and_found(j).await;
    states_never_move_back(j).await;
    a_move_records_the_deciding_channel(j).await;
    concurrent_moves_one_wins(&[j.clone(), j.clone()]).await;
    notifications_are_deduplicated(j).await;
    refunds_never_exceed_the_payment(j).await;
    history_is_written_behind(j).await;
    outbox_leases(j, j, 1_000_000).await;
    outbox_skips_and_releases(j, 2_000_000).await;
    sweeper_claims(j, 10_000_000).await;
    export_formats(j, 20_000_000).await;
    reconciliation_reads(j, 30_000_000).await;
}

async fn payments_are_recorded_and_found(j: &Journal) {
    let t = tag();
    let p = payment(&format!("{t}a"), "m1", &format!("{t}-o"), 10);
    assert!(j.open_payment(p.clone()).await.unwrap());
    // A second open with the same trade number changes nothing. It is
    // refused by PostgreSQL's table and by SQLite's stage while the first
    // is staged; a stage that projected the first meanwhile takes the
    // number as new (minted numbers are), and its projection keeps the first.
    let mut again = p.clone();
    again.amount = 5;
    let refused = !j.open_payment(again).await.unwrap();
    assert!(refused || j.inner.lanes.stages());
    let r = record(j, &p.trade_no).await;
    assert_eq!(r.payment.amount, 1_000);
    assert_eq!(r.payment.state, State::Pending);
    assert_eq!(r.payment.protocol, Protocol::Http);
    assert_eq!(r.payment.merchant_data, p.merchant_data);
    assert_eq!(r.payment.pay_type.as_deref(), Some("alipay"));
    assert_eq!(r.payment.created_at_ms, 10);

    // Same order id, two merchants, one channel: both found, newest first.
    let q = payment(&format!("{t}b"), "m2", &format!("{t}-o"), 20);
    assert!(j.open_payment(q).await.unwrap());
    let found = j.find_for_channel("acq-a", &format!("{t}-o")).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|p| p.trade_no.as_str()).collect();
    assert_eq!(ids, [format!("{t}b"), format!("{t}a")]);
    let mine = j.find_for_merchant("m1", &format!("{t}-o")).await.unwrap().unwrap();
    assert_eq!(mine.trade_no, format!("{t}a"));
    assert!(j.find_for_merchant("m3", &format!("{t}-o")).await.unwrap().is_none());
    assert!(j.payment("Tnone").await.unwrap().is_none());

    let bad = payment("not-alnum", "m1", "o", 1);
    assert!(matches!(j.open_payment(bad).await, Err(JournalError::Invalid(_))));
}

async fn states_never_move_back(j: &Journal) {
    let t = tag();
    let mut p = payment(&t, "m1", &t, 100);
    p.next_query_at_ms = Some(FAR);
    j.open_payment(p).await.unwrap();

    let paid = j
        .transition(&t, State::Paid, facts(110, "acq-a"), Some(event("m1", FAR)))
        .await
        .unwrap();
    assert_eq!(paid, Moved::Applied { from: State::Pending });
    // A late "processing", a decline, a repeat: nothing moves, no event.
    for (to, expected) in [
        (State::Pending, Moved::Refused { current: State::Paid }),
        (State::Declined, Moved::Refused { current: State::Paid }),
        (State::Closed, Moved::Refused { current: State::Paid }),
        (State::Paid, Moved::AlreadyThere),
    ] {
        let moved = j
            .transition(&t, to, facts(120, "acq-a"), Some(event("m1", FAR)))
            .await
            .unwrap();
        assert_eq!(moved, expected, "{to}");
    }
    // A reversal of another channel's attempt does not undo the payment.
    let elsewhere = j
        .transition(&t, State::Reversed, facts(130, "acq-b"), None)
        .await
        .unwrap();
    assert_eq!(elsewhere, Moved::Refused { current: State::Paid });

    let r = record(j, &t).await;
    assert_eq!(r.payment.state, State::Paid);
    assert_eq!(r.payment.updated_at_ms, 110);
    assert_eq!(r.payment.channel_trade_no.as_deref(), Some("ch-1"));
    assert_eq!(
        r.payment.next_query_at_ms, None,
        "a final state leaves the sweeper's schedule"
    );
    assert_eq!(r.notifications_out.len(), 1, "one event, from the one move");
    assert_eq!(r.notifications_out[0].state, EventState::Pending);

    // Its own channel's reversal does.
    let reversed = j
        .transition(&t, State::Reversed, facts(140, "acq-a"), None)
        .await
        .unwrap();
    assert_eq!(reversed, Moved::Applied { from: State::Paid });
    let back = j.transition(&t, State::Paid, facts(150, "acq-a"), None).await.unwrap();
    assert_eq!(
        back,
        Moved::Refused {
            current: State::Reversed
        }
    );

    let unknown = j
        .transition("Tnone", State::Paid, facts(1, "acq-a"), None)
        .await
        .unwrap();
    assert_eq!(unknown, Moved::Unknown);
}

/// A move names the channel that decided it: kept when it is the one the
/// payment is on (the `UPDATE` that leaves `channel_id` alone), set when
/// another decided, left as it is when the move names none; the channel's
/// index follows.
async fn a_move_records_the_deciding_channel(j: &Journal) {
    async fn channel_of(j: &Journal, t: &str) -> Option<String> {
        record(j, t).await.payment.channel_id
    }
    async fn on(j: &Journal, channel: &str, order: &str) -> Vec<String> {
        let mut found: Vec<_> = j
            .find_for_channel(channel, order)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.trade_no)
            .collect();
        found.sort();
        found
    }
    let order = tag();
    let (same, other, none) = (tag(), tag(), tag());
    for t in [&same, &other, &none] {
        j.open_payment(payment(t, "m1", &order, 100)).await.unwrap();
    }
    let unnamed = TransitionFacts {
        channel: None,
        ..facts(110, "")
    };
    for (t, f) in [
        (&same, facts(110, "acq-a")),
        (&other, facts(110, "acq-b")),
        (&none, unnamed),
    ] {
        let moved = j.transition(t, State::Paid, f, None).await.unwrap();
        assert_eq!(moved, Moved::Applied { from: State::Pending });
    }
    assert_eq!(channel_of(j, &same).await.as_deref(), Some("acq-a"));
    assert_eq!(channel_of(j, &other).await.as_deref(), Some("acq-b"));
    assert_eq!(
        channel_of(j, &none).await.as_deref(),
        Some("acq-a"),
        "a move naming no channel keeps it"
    );
    let mut want = vec![same.clone(), none.clone()];
    want.sort();
    assert_eq!(on(j, "acq-a", &order).await, want);
    assert_eq!(on(j, "acq-b", &order).await, vec![other.clone()]);
    // A move that finds the state gone elsewhere changes nothing, whichever SQL it tried.
    let late = j
        .transition(&other, State::Declined, facts(120, "acq-c"), None)
        .await
        .unwrap();
    assert_eq!(late, Moved::Refused { current: State::Paid });
    assert_eq!(channel_of(j, &other).await.as_deref(), Some("acq-b"));
}

/// Many moves of one payment at once, through `handles` (two instances on
/// PostgreSQL): exactly one is applied and queues its event.
async fn concurrent_moves_one_wins(handles: &[Journal]) {
    for round in 0..5 {
        let t = tag();
        handles[0].open_payment(payment(&t, "m1", &t, 200)).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..24 {
            let j = handles[i % handles.len()].clone();
            let t = t.clone();
            let to = [State::Paid, State::Declined, State::Closed][i % 3];
            tasks.push(tokio::spawn(async move {
                j.transition(&t, to, facts(210 + i as i64, "acq-a"), Some(event("m1", FAR)))
                    .await
                    .unwrap()
            }));
        }
        let mut applied = 0;
        for task in tasks {
            match task.await.unwrap() {
                Moved::Applied { from } => {
                    assert_eq!(from, State::Pending);
                    applied += 1;
                }
                Moved::AlreadyThere | Moved::Refused { .. } => {}
                Moved::Unknown => panic!("the payment exists"),
            }
        }
        assert_eq!(applied, 1, "round {round}");
        let r = record(&handles[0], &t).await;
        assert_eq!(r.notifications_out.len(), 1, "round {round}");
        assert_ne!(r.payment.state, State::Pending);
    }
}

async fn notifications_are_deduplicated(j: &Journal) {
    let t = tag();
    j.open_payment(payment(&t, "m1", &t, 300)).await.unwrap();

    // A forged copy first (history only), then the genuine one with the same key.
    let forged = NotificationIn {
        dedupe_key: Some(format!("{t}-n1")),
        ..note("acq-a", "", &t)
    };
    j.record_notification(forged, NotifyResult::BadSignature);

    let first = j
        .accept_notification(
            note("acq-a", &format!("{t}-n1"), &t),
            State::Paid,
            facts(310, "acq-a"),
            Some(event("m1", FAR)),
        )
        .await
        .unwrap();
    assert_eq!(first, Accept::Accepted(Moved::Applied { from: State::Pending }));
    let again = j
        .accept_notification(
            note("acq-a", &format!("{t}-n1"), &t),
            State::Paid,
            facts(320, "acq-a"),
            Some(event("m1", FAR)),
        )
        .await
        .unwrap();
    assert_eq!(again, Accept::Duplicate);
    // The same key from another channel is another event.
    let other = j
        .accept_notification(
            note("acq-b", &format!("{t}-n1"), &t),
            State::Paid,
            facts(330, "acq-b"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(other, Accept::Accepted(Moved::AlreadyThere));
    // A later "declined" notification is history; the payment stays paid.
    let late = j
        .accept_notification(
            note("acq-a", &format!("{t}-n2"), &t),
            State::Declined,
            facts(340, "acq-a"),
            Some(event("m1", FAR)),
        )
        .await
        .unwrap();
    assert_eq!(late, Accept::Accepted(Moved::Refused { current: State::Paid }));

    let unknown = j
        .accept_notification(
            note("acq-a", &format!("{t}-n3"), "Tnone"),
            State::Paid,
            facts(350, "acq-a"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(unknown, Accept::UnknownPayment);
    // The unknown one's key is not burnt: a retry once the payment exists is accepted.
    j.open_payment(payment(&format!("{t}x"), "m1", &t, 360)).await.unwrap();
    let retried = j
        .accept_notification(
            note("acq-a", &format!("{t}-n3"), &format!("{t}x")),
            State::Paid,
            facts(370, "acq-a"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(retried, Accept::Accepted(Moved::Applied { from: State::Pending }));

    // Many copies at once: one accepted.
    let u = tag();
    j.open_payment(payment(&u, "m1", &u, 400)).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (j, u) = (j.clone(), u.clone());
            tokio::spawn(async move {
                j.accept_notification(
                    note("acq-a", &format!("{u}-k"), &u),
                    State::Paid,
                    facts(410, "acq-a"),
                    Some(event("m1", FAR)),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Accept::Accepted(_) => accepted += 1,
            Accept::Duplicate => {}
            Accept::UnknownPayment => panic!("the payment exists"),
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(record(j, &u).await.notifications_out.len(), 1);

    j.flush_history().await.unwrap();
    let r = record(j, &t).await;
    assert_eq!(r.payment.state, State::Paid);
    assert_eq!(r.notifications_out.len(), 1);
    let results: Vec<(&str, &str)> = r
        .notifications_in
        .iter()
        .map(|n| (n.channel_id.as_str(), n.result.as_str()))
        .collect();
    for expected in [
        ("acq-a", "bad_signature"),
        ("acq-a", "accepted"),
        ("acq-a", "duplicate"),
        ("acq-b", "accepted"),
    ] {
        assert!(results.contains(&expected), "{expected:?} in {results:?}");
    }
    assert_eq!(results.iter().filter(|r| r.1 == "accepted").count(), 3, "{results:?}");
}

async fn refunds_never_exceed_the_payment(j: &Journal) {
    let t = tag();
    j.open_payment(payment(&t, "m1", &t, 500)).await.unwrap();
    assert_eq!(
        j.hold_refund(&t, 100).await.unwrap(),
        RefundHold::NotRefundable {
            current: State::Pending
        }
    );
    j.transition(&t, State::Paid, facts(510, "acq-a"), None).await.unwrap();
    assert_eq!(j.hold_refund(&t, 600).await.unwrap(), RefundHold::Held);
    // Held but not answered yet: only 400 is left.
    assert_eq!(
        j.hold_refund(&t, 500).await.unwrap(),
        RefundHold::Exceeds { available: 400 }
    );
    assert_eq!(j.hold_refund(&t, 400).await.unwrap(), RefundHold::Held);
    // The channel refuses the 400: released.
    let refused = j
        .settle_refund(&t, 400, false, facts(520, "acq-a"), "declined".into(), None)
        .await
        .unwrap();
    assert_eq!(refused, Moved::AlreadyThere);
    assert_eq!(
        j.hold_refund(&t, 401).await.unwrap(),
        RefundHold::Exceeds { available: 400 }
    );
    // The 600 is accepted: partial, still paid.
    let partial = j
        .settle_refund(
            &t,
            600,
            true,
            facts(530, "acq-a"),
            String::new(),
            Some(event("m1", FAR)),
        )
        .await
        .unwrap();
    assert_eq!(partial, Moved::AlreadyThere);
    assert_eq!(j.hold_refund(&t, 400).await.unwrap(), RefundHold::Held);
    let full = j
        .settle_refund(
            &t,
            400,
            true,
            facts(540, "acq-a"),
            String::new(),
            Some(event("m1", FAR)),
        )
        .await
        .unwrap();
    assert_eq!(full, Moved::Applied { from: State::Paid });
    assert_eq!(
        j.hold_refund(&t, 1).await.unwrap(),
        RefundHold::NotRefundable {
            current: State::Refunded
        }
    );
    let r = record(j, &t).await;
    assert_eq!((r.payment.refunded_amount, r.payment.refund_held), (1_000, 0));
    assert_eq!(r.adjustments.len(), 3);
    assert_eq!(r.notifications_out.len(), 2, "the partial and the full refund");
    assert!(matches!(
        j.settle_refund(&t, 5, true, facts(550, "acq-a"), String::new(), None)
            .await,
        Err(JournalError::Database(_))
    ));

    j.record_adjustment(Adjustment {
        trade_no: t.clone(),
        kind: AdjustmentKind::Reversal,
        channel_id: Some("acq-b".into()),
        amount: None,
        result: "given_up".into(),
        detail: "5 tries".into(),
        at_ms: 560,
    })
    .await
    .unwrap();
    assert_eq!(record(j, &t).await.adjustments[3].kind, AdjustmentKind::Reversal);
}

async fn history_is_written_behind(j: &Journal) {
    let t = tag();
    j.open_payment(payment(&t, "m1", &t, 600)).await.unwrap();
    for i in 0..2_500 {
        j.record_attempt(Attempt {
            trade_no: t.clone(),
            channel: Arc::from(if i % 2 == 0 { "acq-a" } else { "acq-b" }),
            result: "timeout".into(),
            latency_ms: i,
            at_ms: 600 + i,
        });
    }
    j.flush_history().await.unwrap();
    let r = record(j, &t).await;
    assert_eq!(r.attempts.len(), 2_500);
    assert_eq!(r.attempts[7].latency_ms, 7);
    assert_eq!(r.attempts[7].channel_id, "acq-b");

    // Without a flush: written within the flush interval by itself.
    j.record_attempt(Attempt {
        trade_no: t.clone(),
        channel: Arc::from("acq-a"),
        result: "success".into(),
        latency_ms: 1,
        at_ms: 10_000,
    });
    let deadline = tokio::time::Instant::now() + writer::FLUSH_EVERY * 20;
    loop {
        if record(j, &t).await.attempts.len() == 2_501 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history not flushed by the timer"
        );
        tokio::time::sleep(writer::FLUSH_EVERY / 4).await;
    }
    assert_eq!(j.history_dropped(), 0);
}

/// Claims, leases and their expiry, retries, failure and resend, with
/// events due from `base` on. `a` and `b` are two instances (or one).
async fn outbox_leases(a: &Journal, b: &Journal, base: i64) {
    let t = tag();
    j_insert_with_events(a, &t, 4, base).await;
    let backlog = a.backlog().await.unwrap();
    assert!(backlog >= 4, "{backlog}");

    // Not due yet.
    assert!(a.claim_due_events("A", base - 1, 1_000, 100).await.unwrap().is_empty());
    let mine = a.claim_due_events("A", base, 1_000, 100).await.unwrap();
    assert_eq!(mine.len(), 4);
    assert!(mine
        .iter()
        .all(|e| e.attempts == 1 && e.lease_owner.as_deref() == Some("A")));
    // Leased: nobody else gets them while the lease lasts.
    assert!(b
        .claim_due_events("B", base + 999, 1_000, 100)
        .await
        .unwrap()
        .is_empty());
    // A delivers one, retries one, fails one, and dies holding the last.
    assert!(a.event_delivered(&mine[0].event_id, base + 10).await.unwrap());
    assert!(!a.event_delivered(&mine[0].event_id, base + 11).await.unwrap());
    assert!(a
        .event_retry(&mine[1].event_id, "A", base + 5_000, "HTTP 500")
        .await
        .unwrap());
    assert!(a.event_failed(&mine[2].event_id, "A", "HTTP 410").await.unwrap());
    assert!(!b
        .event_retry(&mine[3].event_id, "B", base + 1, "not mine")
        .await
        .unwrap());

    // The lease runs out: B picks the dead one's event up.
    let taken = b.claim_due_events("B", base + 1_000, 1_000, 100).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].event_id, mine[3].event_id);
    assert_eq!(taken[0].attempts, 2);
    // A, back too late, can no longer reschedule it.
    assert!(!a
        .event_retry(&mine[3].event_id, "A", base + 2_000, "late")
        .await
        .unwrap());
    assert!(b.event_delivered(&taken[0].event_id, base + 1_010).await.unwrap());

    // The retried one is due again at its time.
    let retry = b.claim_due_events("B", base + 5_000, 1_000, 100).await.unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].last_error.as_deref(), Some("HTTP 500"));
    assert!(b.event_delivered(&retry[0].event_id, base + 5_010).await.unwrap());

    // The failed one is listed and can be sent again by hand.
    let failed = a.events(EventState::Failed, 1_000).await.unwrap();
    assert!(failed.iter().any(|e| e.event_id == mine[2].event_id));
    assert!(a.resend(&mine[2].event_id, base + 6_000).await.unwrap());
    assert!(!a.resend("evtnone", base).await.unwrap());
    let again = a.claim_due_events("A", base + 6_000, 1_000, 100).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1, "a resend starts its retries again");
    assert!(a.event_delivered(&again[0].event_id, base + 6_010).await.unwrap());
    let delivered = a.events(EventState::Delivered, 1_000).await.unwrap();
    let ids: HashSet<&str> = delivered.iter().map(|e| e.event_id.as_str()).collect();
    assert!(mine.iter().all(|e| ids.contains(e.event_id.as_str())));
    assert_eq!(a.backlog().await.unwrap(), backlog - 4);
}

/// A claim can leave some merchants' events alone, and give claimed events
/// back without counting a try.
async fn outbox_skips_and_releases(j: &Journal, base: i64) {
    let t = tag();
    j_insert_with_events(j, &format!("{t}a"), 3, base).await;
    let other = format!("{t}b");
    j.open_payment(payment(&other, "m2", &other, base)).await.unwrap();
    j.transition(&other, State::Paid, facts(base, "acq-a"), Some(event("m2", base)))
        .await
        .unwrap();

    let theirs = j
        .claim_due_events_skipping("A", base, 1_000, 100, &["m1", "m9"])
        .await
        .unwrap();
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0].merchant_id, "m2");
    let mine = j.claim_due_events("A", base, 1_000, 100).await.unwrap();
    assert_eq!(mine.len(), 3);
    assert!(mine.iter().all(|e| e.merchant_id == "m1" && e.attempts == 1));

    // Two given back: due at once for anyone, their try not counted. Only
    // the lease holder can give an event back.
    j.release_events("A", vec![mine[0].event_id.clone(), mine[1].event_id.clone()])
        .await
        .unwrap();
    j.release_events("B", vec![mine[2].event_id.clone()]).await.unwrap();
    j.release_events("A", Vec::new()).await.unwrap();
    let again = j.claim_due_events("B", base, 1_000, 100).await.unwrap();
    let ids: HashSet<&str> = again.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        HashSet::from([mine[0].event_id.as_str(), mine[1].event_id.as_str()])
    );
    assert!(again.iter().all(|e| e.attempts == 1), "{again:?}");
    let kept = j.event(&mine[2].event_id).await.unwrap().expect("event");
    assert_eq!((kept.lease_owner.as_deref(), kept.attempts), (Some("A"), 1));
    assert!(j.event("evtnone").await.unwrap().is_none());

    for e in mine.iter().chain(&theirs) {
        j.event_delivered(&e.event_id, base + 1).await.unwrap();
    }
}

/// A paid payment with `n` events due at `due`.
async fn j_insert_with_events(j: &Journal, t: &str, n: usize, due: i64) {
    j.open_payment(payment(t, "m1", t, due)).await.unwrap();
    j.transition(t, State::Paid, facts(due, "acq-a"), Some(event("m1", due)))
        .await
        .unwrap();
    for i in 1..n {
        // Partial refunds of 1 each bring one event apiece.
        assert_eq!(j.hold_refund(t, 1).await.unwrap(), RefundHold::Held, "{i}");
        j.settle_refund(t, 1, true, facts(due, "acq-a"), String::new(), Some(event("m1", due)))
            .await
            .unwrap();
    }
}

async fn sweeper_claims(j: &Journal, base: i64) {
    let t = tag();
    for i in 0..3 {
        let mut p = payment(&format!("{t}{i}"), "m1", &t, base);
        p.next_query_at_ms = Some(base + i);
        j.open_payment(p).await.unwrap();
    }
    // A final payment is never due, whatever it was given.
    let mut done = payment(&format!("{t}p"), "m1", &t, base);
    done.state = State::Paid;
    done.next_query_at_ms = Some(base);
    j.open_payment(done).await.unwrap();

    let due = j.claim_due_queries(base + 1, 60_000, 10).await.unwrap();
    let ids: Vec<&str> = due.iter().map(|p| p.trade_no.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(due
        .iter()
        .all(|p| p.query_count == 1 && p.next_query_at_ms == Some(base + 60_001)));
    // Claimed: not due again until the hold ends.
    let next = j.claim_due_queries(base + 2, 60_000, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].trade_no, format!("{t}2"));
    assert!(j.claim_due_queries(base + 3, 60_000, 10).await.unwrap().is_empty());

    assert!(j.reschedule(&format!("{t}0"), Some(base + 100)).await.unwrap());
    assert_eq!(j.claim_due_queries(base + 100, 60_000, 10).await.unwrap().len(), 1);
    j.transition(&format!("{t}1"), State::Closed, facts(base, "acq-a"), None)
        .await
        .unwrap();
    assert!(
        !j.reschedule(&format!("{t}1"), Some(base)).await.unwrap(),
        "closed: never asked again"
    );
    assert!(j.claim_due_queries(base + 200_000, 60_000, 10).await.unwrap().len() == 2);
}

async fn export_formats(j: &Journal, base: i64) {
    let t = tag();
    // 2,100 payments: more than two export pages, some sharing a millisecond.
    let n = 2_100;
    let mut tasks = Vec::new();
    for i in 0..n {
        let j = j.clone();
        let mut p = payment(&format!("{t}{i:05}"), "m1", &format!("o,\"{i}\""), base + i / 3);
        p.merchant_data = format!(r#"{{"param":"a,b\n{i}"}}"#);
        tasks.push(tokio::spawn(async move { j.open_payment(p).await.unwrap() }));
    }
    for task in tasks {
        assert!(task.await.unwrap());
    }
    let until = base + n / 3;

    let mut csv_out = Vec::new();
    let count = j
        .export(Some(base), Some(until), ExportFormat::Csv, &mut csv_out)
        .await
        .unwrap();
    assert_eq!(count, n as u64);
    let mut reader = csv::Reader::from_reader(csv_out.as_slice());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "trade_no");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), n as usize);
    let trade_nos: HashSet<&str> = rows.iter().map(|r| &r[0]).collect();
    assert_eq!(trade_nos.len(), n as usize, "each payment exactly once");
    let order = headers.iter().position(|h| h == "order_id").unwrap();
    let data = headers.iter().position(|h| h == "merchant_data").unwrap();
    let first = rows.iter().find(|r| r[0] == *format!("{t}00007")).unwrap();
    assert_eq!(&first[order], "o,\"7\"");
    assert_eq!(&first[data], r#"{"param":"a,b\n7"}"#);

    let mut jsonl = Vec::new();
    let count = j
        .export(Some(base + 1), Some(base + 2), ExportFormat::Jsonl, &mut jsonl)
        .await
        .unwrap();
    assert_eq!(count, 3, "one millisecond: three payments");
    let lines: Vec<serde_json::Value> = String::from_utf8(jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["trade_no"], format!("{t}00003"));
    assert_eq!(lines[0]["state"], "pending");
    assert_eq!(lines[0]["amount"], 1_000);

    let mut empty = Vec::new();
    let count = j.export(Some(FAR), None, ExportFormat::Csv, &mut empty).await.unwrap();
    assert_eq!(count, 0);
    assert!(String::from_utf8(empty).unwrap().starts_with("trade_no,merchant_id,"));
}

/// What `payroute reconcile` reads: a channel's business day by the time
/// each payment was paid, trade numbers by lookup, and its own records.
async fn reconciliation_reads(j: &Journal, base: i64) {
    let t = tag();
    let channel = format!("{t}ch");
    let on = |trade: &str, created: i64| {
        let mut p = payment(&format!("{t}{trade}"), "m1", trade, created);
        p.channel_id = Some(Arc::from(channel.as_str()));
        p
    };
    let paid = |at: i64| facts(at, &channel);
    // Created and paid in the day; created the day before, paid in it;
    // created in it, paid after it; declined; inserted paid at once.
    for (trade, created, to, at) in [
        ("p1", base, State::Paid, base + 100),
        ("p3", base - 500, State::Paid, base + 200),
        ("p2", base + 10, State::Paid, base + 5_000),
        ("p4", base + 20, State::Declined, base + 30),
    ] {
        assert!(j.open_payment(on(trade, created)).await.unwrap());
        let moved = j.transition(&format!("{t}{trade}"), to, paid(at), None).await.unwrap();
        assert!(matches!(moved, Moved::Applied { .. }), "{trade}: {moved:?}");
    }
    let mut p5 = on("p5", base + 300);
    p5.state = State::Paid;
    assert!(j.open_payment(p5).await.unwrap());
    // Another channel's payment in the same day.
    let mut other = payment(&format!("{t}x"), "m1", "x", base + 1);
    other.state = State::Paid;
    assert!(j.open_payment(other).await.unwrap());

    let day = ReconDay {
        channel: channel.clone(),
        created_from_ms: base - 1_000,
        paid_from_ms: base,
        paid_until_ms: base + 1_000,
    };
    let seen = j
        .recon_day(&day, Vec::new(), |seen, r| seen.push((r.trade_no, r.state)))
        .await
        .unwrap();
    let want: Vec<(String, State)> = ["p3", "p1", "p5"]
        .iter()
        .map(|p| (format!("{t}{p}"), State::Paid))
        .collect();
    assert_eq!(seen, want, "paid in the day, in creation order");

    let asked = [format!("{t}p2"), format!("{t}p4"), format!("{t}none")];
    let asked: Vec<&str> = asked.iter().map(String::as_str).collect();
    let mut found: Vec<(String, State)> = j
        .recon_lookup(&asked)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.trade_no, r.state))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        found,
        [(format!("{t}p2"), State::Paid), (format!("{t}p4"), State::Declined)]
    );

    assert!(j.any_created(base, base + 1_000).await.unwrap());
    assert!(!j.any_created(FAR, FAR + 1_000).await.unwrap());

    for (fees, at) in [(8, base), (30, base + 1)] {
        let r = Reconciled {
            channel_id: channel.clone(),
            business_day: "2026-12-01".into(),
            statement_lines: 3,
            matched: 3,
            differences: 0,
            fee_base: 3_000,
            fees_charged: fees,
            at_ms: at,
        };
        j.record_reconciliation(r).await.unwrap();
    }
    let fees = j.latest_fees().await.unwrap();
    let mine: Vec<_> = fees.iter().filter(|(c, _, _)| *c == channel).collect();
    assert_eq!(mine, [&(channel.clone(), 3_000, 30)], "the newest reconciliation");
}

// ---- SQLite ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backend() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("", dir.path());
    let JournalConfig::Sqlite { path, .. } = &cfg else {
        panic!("the default journal is SQLite")
    };
    assert_eq!(path, &dir.path().join("payroute.db"));
    let j = Journal::open(&cfg).await.unwrap();
    assert!(j.describe().starts_with("sqlite "));
    run(&j).await;

    // Re-opened (a restart): migrations are not run twice, nothing is lost.
    let t = tag();
    j.open_payment(payment(&t, "m1", &t, 1)).await.unwrap();
    drop(j);
    let j = Journal::open(&cfg).await.unwrap();
    assert_eq!(record(&j, &t).await.payment.state, State::Pending);
}

#[tokio::test]
async fn sqlite_path_is_relative_to_the_config_and_checkpoints_run_behind() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let cfg = config("[journal]\npath = \"data/j.db\"\nsynchronous = \"full\"", dir.path());
    let JournalConfig::Sqlite { path, synchronous } = &cfg else {
        panic!("sqlite")
    };
    assert_eq!(*synchronous, Synchronous::Full);
    let j = Journal::open(&cfg).await.unwrap();
    // Every commit syncs: one writer shares each sync among many payments.
    assert!(!j.inner.lanes.stages(), "nothing stages under synchronous = full");
    let opened = std::fs::metadata(path).unwrap().len();
    for i in 0..300 {
        j.open_payment(payment(&format!("Tfull{i}"), "m1", "o", 1))
            .await
            .unwrap();
    }
    assert!(dir.path().join("data/j.db-wal").exists(), "WAL mode");
    // Commits stay in the WAL until the background checkpoint moves them.
    let deadline = tokio::time::Instant::now() + CHECKPOINT_EVERY * 5;
    while std::fs::metadata(path).unwrap().len() <= opened {
        assert!(tokio::time::Instant::now() < deadline, "no checkpoint ran");
        tokio::time::sleep(CHECKPOINT_EVERY / 4).await;
    }
}

/// A new journal has small pages; a WAL past its limit after the PASSIVE
/// pass is started over by a RESTART, even while the writer keeps writing,
/// and nothing is lost.
#[tokio::test]
async fn a_wal_past_its_limit_starts_over_while_payments_keep_coming() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("", dir.path());
    let j = Journal::open(&cfg).await.unwrap();
    let JournalConfig::Sqlite { path, .. } = &cfg else {
        panic!("sqlite")
    };
    let pool = sqlx::SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .unwrap();
    let page: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(&pool).await.unwrap();
    assert_eq!(page, i64::from(PAGE_SIZE));
    for i in 0..200 {
        j.open_payment(payment(&format!("Twal{i}"), "m1", "o", 1))
            .await
            .unwrap();
    }
    // A read through the journal projects the stage: the rows are in the WAL.
    assert!(j.payment_row("Twal199").await.unwrap().is_some());
    // Under the limit: PASSIVE only.
    let passive = checkpoint(&pool, i64::MAX).await.unwrap();
    assert!(!passive.restarted && passive.frames > 0, "{passive:?}");
    // Past it, with a writer busy all along.
    let writer = {
        let j = j.clone();
        tokio::spawn(async move {
            for i in 0..2_000 {
                let t = format!("Tbusy{i}");
                j.open_payment(payment(&t, "m1", "o", 1)).await.unwrap();
                // Each read projects: a commit a payment, as a busy writer.
                assert!(j.payment_row(&t).await.unwrap().is_some());
            }
        })
    };
    let mut restarts = 0;
    while !writer.is_finished() {
        if checkpoint(&pool, 16).await.unwrap().restarted {
            restarts += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.await.unwrap();
    assert!(restarts > 0, "no RESTART completed under writes");
    // The journal's own checkpointer may hold the WAL at this instant (the
    // PASSIVE pass then reports -1 frames, a RESTART stays busy): ask until
    // one pass has done its work.
    let mut after = checkpoint(&pool, 16).await.unwrap();
    for _ in 0..100 {
        if after.frames >= 0 && (after.restarted || after.frames <= 16) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        after = checkpoint(&pool, 16).await.unwrap();
    }
    j.open_payment(payment("Twalafter", "m1", "o", 1)).await.unwrap();
    assert!(j.payment_row("Twalafter").await.unwrap().is_some());
    let next = checkpoint(&pool, i64::MAX).await.unwrap();
    assert!(
        next.frames < after.frames.max(17),
        "the WAL started over: {after:?} then {next:?}"
    );
    // `payments_all`, as an operator's SQL reads (everything was projected).
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments_all")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 200 + 2_000 + 1, "nothing lost");
    pool.close().await;
}

#[tokio::test]
async fn a_changed_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("", dir.path());
    drop(Journal::open(&cfg).await.unwrap());
    let JournalConfig::Sqlite { path, .. } = &cfg else {
        panic!("sqlite")
    };
    let pool = sqlx::SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 1")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(matches!(Journal::open(&cfg).await, Err(JournalError::Migrate(_))));
}

// ---- SQLite's stage (writer::stage) ----

/// A fresh SQLite journal's config, in a directory kept while the first is.
fn sqlite_journal() -> (tempfile::TempDir, JournalConfig, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("", dir.path());
    let JournalConfig::Sqlite { path, .. } = &cfg else {
        panic!("the default journal is SQLite")
    };
    let path = path.clone();
    (dir, cfg, path)
}

/// A raw connection beside the journal's own, as an operator's SQL would be.
async fn raw(path: &Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap()
}

async fn count(pool: &sqlx::SqlitePool, sql: &str, trade_no: &str) -> i64 {
    sqlx::query_scalar(sql).bind(trade_no).fetch_one(pool).await.unwrap()
}

const IN_TABLE: &str = "SELECT COUNT(*) FROM payments WHERE trade_no = ?1";

/// The stage's log segments beside `db`, by number.
fn segments(db: &Path) -> Vec<u64> {
    let dir = std::path::PathBuf::from(format!("{}-stage", db.display()));
    let mut found: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    found.sort_unstable();
    found
}

/// Waits (up to 2 s) until `trade_no` is in the table: the stage's deadline.
async fn projected(pool: &sqlx::SqlitePool, trade_no: &str) {
    for _ in 0..200 {
        if count(pool, IN_TABLE, trade_no).await == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{trade_no} not projected within 2 s");
}

/// The journal's working path: a payment opens, fails over and closes on
/// the stage, enters `payments` once, closed, when the stage is projected;
/// every read through the journal sees it at once all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_opens_and_closes_on_the_stage_and_enters_the_table_once() {
    let (_dir, cfg, path) = sqlite_journal();
    let j = Journal::open(&cfg).await.unwrap();
    assert!(j.inner.lanes.stages(), "the default (synchronous = normal) stages");
    let pool = raw(&path).await;
    let t = tag();
    let mut p = payment(&t, "m1", &format!("{t}o"), 10);
    p.next_query_at_ms = Some(5_000);
    assert!(j.open_payment(p.clone()).await.unwrap());
    assert!(j.set_channel(&t, Arc::from("acq-b"), 11).await.unwrap());
    let moved = j.transition(&t, State::Paid, facts(12, "acq-b"), None).await.unwrap();
    assert_eq!(moved, Moved::Applied { from: State::Pending });
    assert!(!segments(&path).is_empty(), "in the log");
    // Every read through the journal sees it, and projects first.
    let row = j.payment_row(&t).await.unwrap().expect("read through the journal");
    assert_eq!(row.state, State::Paid);
    assert_eq!(row.channel_id.as_deref(), Some("acq-b"));
    assert_eq!(row.channel_trade_no.as_deref(), Some("ch-1"));
    assert_eq!((row.updated_at_ms, row.amount), (12, 1_000));
    assert_eq!(row.next_query_at_ms, None, "a closed payment is not due");
    assert_eq!(count(&pool, IN_TABLE, &t).await, 1);
    let paid_at: Option<i64> = sqlx::query_scalar("SELECT paid_at_ms FROM payments WHERE trade_no = ?1")
        .bind(&t)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(paid_at, Some(12));

    // A second payment left alone is projected by the writer's deadline,
    // and its segment goes once its rows are in the table.
    let t2 = tag();
    let mut p2 = payment(&t2, "m1", "o", 20);
    p2.next_query_at_ms = Some(7_000);
    j.open_payment(p2).await.unwrap();
    projected(&pool, &t2).await;
    let row = j.payment_row(&t2).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.next_query_at_ms),
        (State::Pending, Some(7_000)),
        "still due"
    );
    let projected_through: i64 = sqlx::query_scalar("SELECT through FROM stage_projected")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        segments(&path).iter().all(|n| *n as i64 > projected_through),
        "projected segments are removed: {:?} through {projected_through}",
        segments(&path)
    );
    pool.close().await;
}

/// What the stage serves never waits for SQLite: while another connection
/// holds the write lock, a payment opens, fails over and closes at once
/// (a write to SQLite would wait for the lock, then fail); it is not in
/// the table, and enters it once the lock is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_on_the_stage_never_waits_for_sqlite() {
    let (_dir, cfg, path) = sqlite_journal();
    let j = Journal::open(&cfg).await.unwrap();
    let pool = raw(&path).await;
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let t = tag();
    let started = std::time::Instant::now();
    assert!(j.open_payment(payment(&t, "m1", "o", 1)).await.unwrap());
    assert!(j.set_channel(&t, Arc::from("acq-b"), 2).await.unwrap());
    assert_eq!(
        j.transition(&t, State::Declined, facts(3, "acq-b"), None)
            .await
            .unwrap(),
        Moved::Applied { from: State::Pending }
    );
    assert!(started.elapsed() < BUSY_TIMEOUT, "served without SQLite's lock");
    assert_eq!(count(&pool, IN_TABLE, &t).await, 0, "not in the table under the lock");
    other.execute_batch("COMMIT").unwrap();
    assert_eq!(j.payment_row(&t).await.unwrap().unwrap().state, State::Declined);
    pool.close().await;
}

/// Many payments' opens and closes from many threads at once, with the
/// stage projected under them: every caller hears of its own write, and
/// every payment is in the table once, paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_concurrent_commit_is_answered() {
    let (_dir, cfg, path) = sqlite_journal();
    let j = Journal::open(&cfg).await.unwrap();
    let base = tag();
    let tasks: Vec<_> = (0..2_000)
        .map(|i| {
            let j = j.clone();
            let t = format!("{base}x{i}");
            tokio::spawn(async move {
                assert!(j.open_payment(payment(&t, "m1", &format!("o{i}"), i)).await?);
                j.transition(&t, State::Paid, facts(i + 1, "acq-a"), None).await
            })
        })
        .collect();
    let all = tokio::time::timeout(Duration::from_secs(60), futures_join(tasks)).await;
    let moved = all.expect("every commit answered");
    assert!(moved.iter().all(|m| *m == Moved::Applied { from: State::Pending }));
    let last = j.payment_row(&format!("{base}x1998")).await.unwrap().unwrap();
    assert_eq!(last.state, State::Paid);
    let pool = raw(&path).await;
    let (n, paid): (i64, i64) = sqlx::query_as("SELECT COUNT(*), SUM(state = 'paid') FROM payments")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((n, paid), (2_000, 2_000));
    pool.close().await;
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<Result<Moved, JournalError>>>) -> Vec<Moved> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap().unwrap());
    }
    out
}

/// A move of a staged payment that has moved once already is judged on
/// the table, after a projection, by the same rules as ever.
#[tokio::test]
async fn a_second_move_of_a_staged_payment_is_judged_on_the_table() {
    let (_dir, cfg, path) = sqlite_journal();
    let j = Journal::open(&cfg).await.unwrap();
    let pool = raw(&path).await;
    let t = tag();
    j.open_payment(payment(&t, "m1", "o", 10)).await.unwrap();
    assert_eq!(
        j.transition(&t, State::Paid, facts(11, "acq-a"), None).await.unwrap(),
        Moved::Applied { from: State::Pending }
    );
    assert_eq!(
        j.transition(&t, State::Paid, facts(12, "acq-a"), None).await.unwrap(),
        Moved::AlreadyThere
    );
    assert_eq!(
        j.transition(&t, State::Declined, facts(12, "acq-a"), None)
            .await
            .unwrap(),
        Moved::Refused { current: State::Paid }
    );
    assert!(!j.set_channel(&t, Arc::from("acq-b"), 13).await.unwrap(), "not pending");
    assert_eq!(count(&pool, IN_TABLE, &t).await, 1, "the judged move projected it");
    assert_eq!(
        j.payment_row(&t).await.unwrap().unwrap().channel_id.as_deref(),
        Some("acq-a")
    );
    pool.close().await;
}

/// What a `kill -9` leaves: segments of the stage's log whose rows never
/// reached the table. The next open replays them before anything reads
/// the table — skipping a segment already projected (its number is
/// recorded) and a last record cut short — and removes them.
#[tokio::test]
async fn a_log_a_crash_left_is_replayed_at_the_next_open() {
    let (_dir, cfg, path) = sqlite_journal();
    drop(Journal::open(&cfg).await.unwrap());
    let pool = raw(&path).await;
    sqlx::query("UPDATE stage_projected SET through = 5")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let open = |t: &str, state: &str| open_line(t, state);
    let segment = |n: u64| segment_file(&path, n);
    // Projected before the crash, not yet removed: not replayed.
    std::fs::write(segment(5), open("Tgone", "pending") + "\n").unwrap();
    std::fs::write(
        segment(6),
        open("Tcrash", "pending")
            + "\n"
            + &open("Tpaid", "pending")
            + "\n"
            + r#"{"op":"move","trade_no":"Tpaid","to":"paid","at_ms":9,"channel":null,"channel_trade_no":"C9","expected_fee":null}"#
            + "\n",
    )
    .unwrap();
    std::fs::write(segment(7), open("Tcut", "pending").split_at(40).0).unwrap();

    let j = Journal::open(&cfg).await.unwrap();
    assert_eq!(segments(&path), [8], "replayed and removed; a new segment started");
    // The sweeper first: a writer op, which finds nothing staged by this
    // run, so only the replay at open can have put it in the table.
    let due = j.claim_due_queries(3, 1_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|p| p.trade_no.as_str()).collect::<Vec<_>>(), ["Tcrash"]);
    let row = j.payment_row("Tcrash").await.unwrap().expect("replayed at open");
    assert_eq!((row.state, row.amount), (State::Pending, 500));
    assert_eq!(
        row.next_query_at_ms,
        Some(1_003),
        "claimed: due again when the hold ends"
    );
    let paid = j.payment_row("Tpaid").await.unwrap().unwrap();
    assert_eq!(
        (paid.state, paid.channel_trade_no.as_deref()),
        (State::Paid, Some("C9"))
    );
    assert!(
        j.payment_row("Tgone").await.unwrap().is_none(),
        "an old segment is not replayed"
    );
    assert!(
        j.payment_row("Tcut").await.unwrap().is_none(),
        "a record cut short is no record"
    );
    let pool = raw(&path).await;
    let through: i64 = sqlx::query_scalar("SELECT through FROM stage_projected")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(through, 7);
    pool.close().await;
}

/// A staged payment whose trade number the table already holds for
/// another payment (2^-83 a pair for minted numbers) leaves the table's
/// row alone: never merged, never overwritten.
#[tokio::test]
async fn a_projection_never_writes_over_another_payment() {
    let (_dir, cfg, path) = sqlite_journal();
    let j = Journal::open(&cfg).await.unwrap();
    let pool = raw(&path).await;
    let t = tag();
    sqlx::query(
        "INSERT INTO payments (trade_no, merchant_id, order_id, amount, currency, protocol, channel_id, \
         state, merchant_data, created_at_ms, updated_at_ms) \
         VALUES (?1, 'other', 'theirs', 700, 'CNY', 'http', 'acq-a', 'paid', '{}', 1, 1)",
    )
    .bind(&t)
    .execute(&pool)
    .await
    .unwrap();
    // Beside it, rows of a projection that go in as ever.
    let others: Vec<String> = (0..5).map(|i| format!("{t}n{i}")).collect();
    for o in &others {
        assert!(j.open_payment(payment(o, "m1", "o", 2)).await.unwrap());
    }
    assert!(
        j.open_payment(payment(&t, "m1", "mine", 2)).await.unwrap(),
        "staged: not asked"
    );
    j.transition(&t, State::Declined, facts(3, "acq-a"), None)
        .await
        .unwrap();
    let row = j.payment_row(&t).await.unwrap().unwrap();
    assert_eq!(
        (&*row.merchant_id, row.order_id.as_str(), row.amount, row.state),
        ("other", "theirs", 700, State::Paid)
    );
    for o in &others {
        assert_eq!(count(&pool, IN_TABLE, o).await, 1);
    }
    pool.close().await;
}

/// The stage's segments live in a directory of their own: the database's
/// directory (the config's, by default, which the reloader watches, not
/// recursively) sees no segment created, closed or removed — three events a
/// projection, had they sat beside the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stage_keeps_its_segments_out_of_the_database_directory() {
    let (dir, cfg, path) = sqlite_journal();
    let j = Journal::open(&cfg).await.unwrap();
    let names = || -> HashSet<String> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()
    };
    let t = tag();
    let mut seen = HashSet::new();
    for i in 0..200 {
        let trade_no = format!("{t}w{i}");
        j.open_payment(payment(&trade_no, "m1", "o", i)).await.unwrap();
        j.transition(&trade_no, State::Paid, facts(i + 1, "acq-a"), None)
            .await
            .unwrap();
        if i % 20 == 0 {
            // A read projects: segments come and go.
            j.payment_row(&trade_no).await.unwrap();
        }
        seen.extend(names());
    }
    let db = path.file_name().unwrap().to_str().unwrap();
    let allowed: HashSet<String> = ["", "-wal", "-shm", "-stage"]
        .iter()
        .map(|s| format!("{db}{s}"))
        .collect();
    assert!(seen.is_subset(&allowed), "{seen:?}");
    assert!(segments(&path).len() <= 2, "projected segments are removed");
}

/// The sweeper's claim projects only when a staged payment may be due by
/// its time, and then claims it like any other.
#[tokio::test]
async fn a_claim_sees_a_staged_payment_once_it_is_due() {
    let (_dir, cfg, _path) = sqlite_journal();
    let j = Journal::open(&cfg).await.unwrap();
    let t = tag();
    let mut p = payment(&t, "m1", "o", 10);
    p.next_query_at_ms = Some(5_000);
    j.open_payment(p).await.unwrap();
    assert!(j.claim_due_queries(4_999, 1_000, 10).await.unwrap().is_empty());
    let due = j.claim_due_queries(5_000, 1_000, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|p| p.trade_no.as_str()).collect::<Vec<_>>(),
        [t.as_str()]
    );
    assert_eq!(j.payment_row(&t).await.unwrap().unwrap().next_query_at_ms, Some(6_000));
}

/// Under `synchronous = "full"` nothing stages: an open is the writer
/// thread's like any write, and no log is kept.
#[tokio::test]
async fn nothing_stages_under_synchronous_full() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("[journal]\nsynchronous = \"full\"", dir.path());
    let JournalConfig::Sqlite { path, .. } = &cfg else {
        panic!("sqlite")
    };
    let j = Journal::open(&cfg).await.unwrap();
    assert!(!j.inner.lanes.stages());
    let t = tag();
    assert!(j.open_payment(payment(&t, "m1", "o", 1)).await.unwrap());
    assert!(
        !j.open_payment(payment(&t, "m1", "o", 1)).await.unwrap(),
        "the table's key"
    );
    let pool = raw(path).await;
    assert_eq!(count(&pool, IN_TABLE, &t).await, 1, "in the table on return");
    assert!(segments(path).is_empty());
    pool.close().await;
}

/// One line of the stage's log: a payment opened (as `stage.rs` writes it).
fn open_line(trade_no: &str, state: &str) -> String {
    format!(
        r#"{{"op":"open","trade_no":"{trade_no}","merchant_id":"m1","order_id":"o1","amount":500,"currency":"CNY","pay_type":null,"protocol":"http","channel_id":"acq-a","channel_trade_no":null,"state":"{state}","expected_fee":2,"merchant_data":"{{}}","created_at_ms":1,"next_query_at_ms":2}}"#
    )
}

fn segment_file(db: &Path, n: u64) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}-stage/{n}", db.display()))
}

/// Another process that opens the file while payroute serves (`payroute
/// journal export`) copies what the serving one's log holds into the table
/// — so it reads every payment answered so far — and leaves the log alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_copies_the_log_and_leaves_it_to_its_owner() {
    let (_dir, cfg, path) = sqlite_journal();
    drop(Journal::open(&cfg).await.unwrap());
    // The serving payroute: it holds the log's lock (taken here once the
    // dropped journal's writer has let go) and has written a segment.
    let owner = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("{}-stage/lock", path.display()))
        .unwrap();
    let mut waited = 0;
    while owner.try_lock().is_err() {
        assert!(waited < 200, "the dropped journal kept the log");
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let move_line = r#"{"op":"move","trade_no":"Tlive","to":"paid","at_ms":9,"channel":null,"channel_trade_no":null,"expected_fee":null}"#;
    let log = format!(
        "{}\n{move_line}\n{}\n",
        open_line("Tlive", "pending"),
        open_line("Tmid", "pending")
    );
    std::fs::write(segment_file(&path, 3), &log).unwrap();

    let other = Journal::open(&cfg).await.unwrap();
    assert!(!other.inner.lanes.stages(), "the log has an owner");
    let live = other.payment_row("Tlive").await.unwrap().expect("copied from the log");
    assert_eq!((live.state, live.amount), (State::Paid, 500));
    assert_eq!(other.payment_row("Tmid").await.unwrap().unwrap().state, State::Pending);
    assert_eq!(segments(&path), [3], "the log is left to its owner");
    assert_eq!(std::fs::read_to_string(segment_file(&path, 3)).unwrap(), log);
    drop(owner);
}

/// The owner's projection writes a payment's final row over a guest's
/// earlier copy of it (same merchant, order and time), never the other way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_projection_writes_over_a_guests_copy() {
    let (_dir, cfg, path) = sqlite_journal();
    let j = Journal::open(&cfg).await.unwrap();
    let pool = raw(&path).await;
    let t = tag();
    assert!(j.open_payment(payment(&t, "m1", "o", 10)).await.unwrap());
    // What a guest copied while the payment was pending on the stage.
    sqlx::query(
        "INSERT INTO payments (trade_no, merchant_id, order_id, amount, currency, protocol, channel_id, \
         state, merchant_data, created_at_ms, updated_at_ms, next_query_at_ms) \
         VALUES (?1, 'm1', 'o', 1000, 'CNY', 'http', 'acq-a', 'pending', '{}', 10, 10, 99)",
    )
    .bind(&t)
    .execute(&pool)
    .await
    .unwrap();
    assert!(j.set_channel(&t, Arc::from("acq-c"), 12).await.unwrap());
    let moved = j.transition(&t, State::Paid, facts(13, "acq-c"), None).await.unwrap();
    assert_eq!(moved, Moved::Applied { from: State::Pending });
    let row = j.payment_row(&t).await.unwrap().unwrap();
    assert_eq!((row.state, row.channel_id.as_deref()), (State::Paid, Some("acq-c")));
    assert_eq!((row.updated_at_ms, row.next_query_at_ms), (13, None));
    assert_eq!(count(&pool, IN_TABLE, &t).await, 1);
    pool.close().await;
}

/// A version 4 journal's staged rows move into `payments` at migration 5,
/// and `payments_all` still answers, over the table.
#[tokio::test]
async fn a_version_4_stage_moves_into_the_table_at_migration_5() {
    let (_dir, cfg, path) = sqlite_journal();
    let pool = sqlx::SqlitePool::connect_with(SqliteConnectOptions::new().filename(&path).create_if_missing(true))
        .await
        .unwrap();
    migrator(&MIGRATIONS_SQLITE[..4])
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO payments_staged (trade_no, merchant_id, order_id, amount, currency, protocol, channel_id, \
         state, merchant_data, created_at_ms, updated_at_ms, next_query_at_ms) \
         VALUES ('Tv4', 'm1', 'o1', 500, 'CNY', 'http', 'acq-a', 'paid', '{}', 1, 1, NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let j = Journal::open(&cfg).await.unwrap();
    let row = j.payment_row("Tv4").await.unwrap().expect("kept through the migration");
    assert_eq!((row.state, row.amount), (State::Paid, 500));
    let pool = raw(&path).await;
    assert_eq!(count(&pool, IN_TABLE, "Tv4").await, 1);
    let all: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments_all WHERE trade_no = 'Tv4'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(all, 1);
    let gone: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'payments_staged'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(gone, 0);
    pool.close().await;
}

// ---- PostgreSQL ----

pub(crate) use payroute_testkit::PgDatabase;

/// The journal config of a test database.
pub(crate) fn pg_config(db: &PgDatabase) -> JournalConfig {
    let dir = tempfile::tempdir().unwrap();
    config(&format!("[journal]\n{}", db.journal()), dir.path())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend() {
    let Some(db) = PgDatabase::create().await else { return };
    let cfg = pg_config(&db);
    let j = Journal::open(&cfg).await.unwrap();
    assert_eq!(j.describe(), format!("postgres 127.0.0.1:5432/{}", db.name()));
    run(&j).await;

    // A second instance on the same database: migrations already there.
    let k = Journal::open(&cfg).await.unwrap();
    concurrent_moves_one_wins(&[j.clone(), k.clone()]).await;
    outbox_leases(&j, &k, 30_000_000).await;
    claims_are_exclusive_across_instances(&j, &k, 40_000_000).await;
}

/// Two instances claiming the same due events as fast as they can: every
/// event is claimed by exactly one.
async fn claims_are_exclusive_across_instances(a: &Journal, b: &Journal, base: i64) {
    let n = 300;
    let t = tag();
    a.open_payment(NewPayment {
        amount: n as i64 * 10,
        ..payment(&t, "m1", &t, base)
    })
    .await
    .unwrap();
    a.transition(&t, State::Paid, facts(base, "acq-a"), None).await.unwrap();
    for _ in 0..n {
        assert_eq!(a.hold_refund(&t, 1).await.unwrap(), RefundHold::Held);
        a.settle_refund(
            &t,
            1,
            true,
            facts(base, "acq-a"),
            String::new(),
            Some(event("m1", base)),
        )
        .await
        .unwrap();
    }
    let claim = |j: Journal, owner: &'static str| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = j.claim_due_events(owner, base, 60_000, 7).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|e| e.event_id));
            }
        })
    };
    let (x, y) = (claim(a.clone(), "A"), claim(b.clone(), "B"));
    let (x, y) = (x.await.unwrap(), y.await.unwrap());
    let all: HashSet<&String> = x.iter().chain(&y).collect();
    assert_eq!(x.len() + y.len(), n, "claimed {} + {}", x.len(), y.len());
    assert_eq!(all.len(), n, "an event claimed twice");
    assert!(
        !x.is_empty() && !y.is_empty(),
        "both instances took part: {} / {}",
        x.len(),
        y.len()
    );
}

/// The database cut every connection while the journal was idle (a
/// restart, an idle timeout, an operator): the next write succeeds — the
/// writer lane pings a connection that was idle and opens another — and so
/// does the next read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_outlive_a_restart_while_idle() {
    let Some(db) = PgDatabase::create().await else { return };
    let j = Journal::open(&pg_config(&db)).await.unwrap();
    let t = tag();
    assert!(j.open_payment(payment(&t, "m1", &t, 1)).await.unwrap());
    db.cut_connections().await;
    tokio::time::sleep(super::writer::PG_IDLE_PING).await;
    let moved = j.transition(&t, State::Paid, facts(2, "acq-a"), None).await.unwrap();
    assert_eq!(moved, Moved::Applied { from: State::Pending });
    assert_eq!(j.payment(&t).await.unwrap().map(|p| p.payment.state), Some(State::Paid));
}

/// A writer lane runs on the runtime that first wrote through it. When that
/// runtime is gone, the next write from another starts a lane there.
#[test]
fn postgres_lane_starts_again_on_another_runtime() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    let Some((db, j, t)) = first.block_on(async {
        let db = PgDatabase::create().await?;
        let j = Journal::open(&pg_config(&db)).await.unwrap();
        let t = tag();
        assert!(j.open_payment(payment(&t, "m1", &t, 1)).await.unwrap());
        Some((db, j, t))
    }) else {
        return;
    };
    drop(first);
    let moved = runtime().block_on(j.transition(&t, State::Paid, facts(2, "acq-a"), None));
    assert_eq!(moved.unwrap(), Moved::Applied { from: State::Pending });
    drop(db);
}

/// The database goes away under a running journal: every call answers an
/// error promptly (the proxy answers 503), none hangs, history is dropped
/// and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_an_error_not_a_hang() {
    let Some(db) = PgDatabase::create().await else { return };
    let j = Journal::open(&pg_config(&db)).await.unwrap();
    let t = tag();
    j.open_payment(payment(&t, "m1", &t, 1)).await.unwrap();
    db.drop_now().await;

    let limit = std::time::Duration::from_secs(8);
    let started = std::time::Instant::now();
    let moves: Vec<_> = (0..8)
        .map(|i| {
            let (j, t) = (j.clone(), t.clone());
            tokio::spawn(async move { j.transition(&t, State::Paid, facts(i, "acq-a"), None).await })
        })
        .collect();
    for m in moves {
        assert!(m.await.unwrap().is_err());
    }
    assert!(j.ping().await.is_err());
    assert!(j.payment(&t).await.is_err());
    j.record_attempt(Attempt {
        trade_no: t.clone(),
        channel: Arc::from("acq-a"),
        result: "success".into(),
        latency_ms: 1,
        at_ms: 1,
    });
    assert!(j.flush_history().await.is_err());
    assert_eq!(j.history_dropped(), 1);
    assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn postgres_url_never_shows_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[journal]\nbackend = \"postgres\"\nurl = \"postgres://u:hunter2@127.0.0.1:1/x\"\n\
                [[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n";
    let cfg = Config::parse(text, &dir.path().join("r.toml")).unwrap();
    assert!(!format!("{:?}", cfg.journal).contains("hunter2"));
    let err = match Journal::open(&cfg.journal).await {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("127.0.0.1:1/x"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

// ---- throughput (by hand: cargo test --lib journal::tests::throughput -- --ignored --nocapture) ----

/// Payments a second through `insert_payment` + `transition` (two commits
/// each), one caller at a time against many at once: what group commit buys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing, by hand"]
async fn throughput() {
    let dir = tempfile::tempdir().unwrap();
    for (name, journal) in [
        ("sqlite normal", ""),
        ("sqlite full", "[journal]\nsynchronous = \"full\""),
    ] {
        let j = Journal::open(&config(journal, dir.path())).await.unwrap();
        measure(name, &j).await;
        drop(j);
        std::fs::remove_file(dir.path().join("payroute.db")).ok();
    }
    if let Some(db) = PgDatabase::create().await {
        let j = Journal::open(&pg_config(&db)).await.unwrap();
        measure("postgres", &j).await;
    }
}

async fn measure(name: &str, j: &Journal) {
    for (callers, per_caller) in [(1usize, 300usize), (64, 150), (512, 40)] {
        let start = std::time::Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let j = j.clone();
                tokio::spawn(async move {
                    let mut worst = std::time::Duration::ZERO;
                    for i in 0..per_caller {
                        let t = format!("{}c{c}i{i}", tag());
                        let begun = std::time::Instant::now();
                        j.open_payment(payment(&t, "m1", &t, 1)).await.unwrap();
                        j.transition(&t, State::Paid, facts(2, "acq-a"), Some(event("m1", FAR)))
                            .await
                            .unwrap();
                        worst = worst.max(begun.elapsed());
                    }
                    worst
                })
            })
            .collect();
        let mut worst = std::time::Duration::ZERO;
        for task in tasks {
            worst = worst.max(task.await.unwrap());
        }
        let took = start.elapsed();
        let payments = callers * per_caller;
        println!(
            "{name:>14}: {callers:>3} callers: {payments:>6} payments in {took:>9.2?} = {:>7.0} payments/s ({:>7.0} commits/s), worst payment {worst:.2?}",
            payments as f64 / took.as_secs_f64(),
            2.0 * payments as f64 / took.as_secs_f64(),
        );
    }
}
