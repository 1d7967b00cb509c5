//! What goes into the journal and what comes out of it: plain data.
//!
//! Inputs own their data (they cross to the writer task); ids that the
//! proxy already holds as `Arc<str>` (merchants, channels) are taken as such
//! so handing one over is a reference-count increment, not a copy. Outputs
//! are `Serialize`, so the admin API and `journal export --format jsonl` show
//! them as they are.
//!
//! The writer's vocabulary lives here too: a write as data ([`Op`]), its
//! answer ([`Reply`]) and history written behind ([`HistoryRow`]). The writer
//! queues and batches them, the SQL runs them; both read them from here, so
//! neither imports the other's types back.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;

use super::state::{Protocol, State};

/// A payment as it is first recorded (`Journal::open_payment`).
#[derive(Debug, Clone)]
pub(crate) struct NewPayment {
    /// payroute's trade number: 1-32 of `[A-Za-z0-9]`, unique across a fleet.
    pub trade_no: String,
    pub merchant_id: Arc<str>,
    pub order_id: String,
    /// Minor units (fen, cents).
    pub amount: i64,
    pub currency: String,
    pub pay_type: Option<String>,
    pub protocol: Protocol,
    pub channel_id: Option<Arc<str>>,
    pub channel_trade_no: Option<String>,
    pub state: State,
    pub expected_fee: i64,
    /// A JSON object of the protocol's merchant fields (epay `notify_url`,
    /// `return_url`, `name`, `money`, `param`; a JSON merchant's notify
    /// target). Stored as given; the journal does not read it.
    pub merchant_data: String,
    pub created_at_ms: i64,
    /// When the sweeper first asks about it (`None`: never, e.g. already final).
    pub next_query_at_ms: Option<i64>,
}

/// What is learnt together with a move of state.
#[derive(Debug, Clone, Default)]
pub(crate) struct TransitionFacts {
    pub at_ms: i64,
    /// The channel the move is about: recorded as the payment's channel, and
    /// compared with it for `paid` → `reversed`.
    pub channel: Option<Arc<str>>,
    pub channel_trade_no: Option<String>,
    pub expected_fee: Option<i64>,
}

/// The result of a compare-and-set on a payment's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "moved", rename_all = "snake_case")]
pub(crate) enum Moved {
    /// Moved from `from`; the event, if any, is in the outbox.
    Applied { from: State },
    /// Already in that state: nothing changed, no event.
    AlreadyThere,
    /// The move would go back (or sideways): nothing changed, no event.
    Refused { current: State },
    /// No payment with that trade number.
    Unknown,
}

/// A notification to a merchant, put in the outbox with the move that caused it.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    /// Unique; the merchant drops repeats by it ([`new_event_id`](super::new_event_id)).
    pub event_id: String,
    pub merchant_id: Arc<str>,
    /// How the sender signs and judges it, e.g. `"json"` or `"epay"`.
    pub kind: String,
    /// The merchant's URL.
    pub target: String,
    /// `POST` or `GET`.
    pub method: String,
    /// The unsigned payload (JSON body, or epay parameters): the signature
    /// carries a time, so it is made when sending.
    pub body: String,
    /// First delivery time (`now + retry_ms[0]`).
    pub next_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventState {
    Pending,
    Delivered,
    Failed,
}

impl EventState {
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Delivered => "delivered",
            EventState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<EventState> {
        match s {
            "pending" => Some(EventState::Pending),
            "delivered" => Some(EventState::Delivered),
            "failed" => Some(EventState::Failed),
            _ => None,
        }
    }
}

/// An outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Event {
    pub event_id: String,
    pub trade_no: String,
    pub merchant_id: String,
    pub kind: String,
    pub target: String,
    pub method: String,
    pub body: String,
    pub state: EventState,
    /// Deliveries tried, counted when claimed (a crash mid-delivery counts).
    pub attempts: i64,
    pub next_at_ms: i64,
    pub lease_owner: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
}

/// A channel's notification, as far as the journal needs it.
#[derive(Debug, Clone)]
pub(crate) struct NotificationIn {
    pub channel: Arc<str>,
    /// What makes two copies the same event (the channel's notification id,
    /// or its trade number and status). Required to accept; optional for a
    /// rejected one.
    pub dedupe_key: Option<String>,
    pub trade_no: Option<String>,
    pub at_ms: i64,
}

/// How a notification in was judged (the metric's `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NotifyResult {
    Accepted,
    Duplicate,
    BadSignature,
    AmountMismatch,
    UnknownPayment,
}

impl NotifyResult {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyResult::Accepted => "accepted",
            NotifyResult::Duplicate => "duplicate",
            NotifyResult::BadSignature => "bad_signature",
            NotifyResult::AmountMismatch => "amount_mismatch",
            NotifyResult::UnknownPayment => "unknown_payment",
        }
    }
}

/// The answer to `Journal::accept_notification`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accept {
    /// First copy: recorded, and the move tried (it may be `Refused`:
    /// the notification is history all the same).
    Accepted(Moved),
    /// Seen before: nothing changed.
    Duplicate,
    /// No such payment: recorded as `unknown_payment`, nothing changed.
    UnknownPayment,
}

/// One attempt at a channel (history, written behind).
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub trade_no: String,
    pub channel: Arc<str>,
    /// The attempt's outcome label (`success`, `declined`, `timeout`, ...).
    pub result: Cow<'static, str>,
    pub latency_ms: i64,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AdjustmentKind {
    Reversal,
    Refund,
}

impl AdjustmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AdjustmentKind::Reversal => "reversal",
            AdjustmentKind::Refund => "refund",
        }
    }
}

/// A reversal or a refund, as the channel answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Adjustment {
    pub trade_no: String,
    pub kind: AdjustmentKind,
    pub channel_id: Option<String>,
    pub amount: Option<i64>,
    /// `accepted`, `refused`, `given_up`, ...
    pub result: String,
    pub detail: String,
    pub at_ms: i64,
}

/// The answer to `Journal::hold_refund`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefundHold {
    /// Held: no other refund can take it until `settle_refund`.
    Held,
    /// More than the payment still has (`422 amount_limit_exceeded`).
    Exceeds {
        available: i64,
    },
    /// Not paid (or already refunded): nothing to refund.
    NotRefundable {
        current: State,
    },
    Unknown,
}

/// A payment row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Payment {
    pub trade_no: String,
    pub merchant_id: String,
    pub order_id: String,
    pub amount: i64,
    pub currency: String,
    pub pay_type: Option<String>,
    pub protocol: Protocol,
    pub channel_id: Option<String>,
    pub channel_trade_no: Option<String>,
    pub state: State,
    pub expected_fee: i64,
    pub refunded_amount: i64,
    pub refund_held: i64,
    pub merchant_data: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub next_query_at_ms: Option<i64>,
    pub query_count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct AttemptRow {
    pub channel_id: String,
    pub result: String,
    pub latency_ms: i64,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct NotificationRow {
    pub channel_id: String,
    pub dedupe_key: Option<String>,
    pub result: String,
    pub at_ms: i64,
}

/// Everything the journal knows about one payment (`GET /-/payments/{trade_no}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PaymentRecord {
    #[serde(flatten)]
    pub payment: Payment,
    pub attempts: Vec<AttemptRow>,
    pub notifications_in: Vec<NotificationRow>,
    pub notifications_out: Vec<Event>,
    pub adjustments: Vec<Adjustment>,
}

/// `payroute journal export --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportFormat {
    Csv,
    Jsonl,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Option<ExportFormat> {
        match s {
            "csv" => Some(ExportFormat::Csv),
            "jsonl" => Some(ExportFormat::Jsonl),
            _ => None,
        }
    }
}

/// A payment as reconciliation compares it with a channel's statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReconRow {
    pub trade_no: String,
    pub amount: i64,
    pub expected_fee: i64,
    pub state: State,
    pub refunded_amount: i64,
    pub created_at_ms: i64,
}

/// One channel's business day, as `reconcile` selects it from the journal:
/// the payments of `channel` paid in `[paid_from_ms, paid_until_ms)`. They
/// are looked for among those created from `created_from_ms` on (a payment
/// is paid within its channel's `close_after_ms` of being created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReconDay {
    pub channel: String,
    pub created_from_ms: i64,
    pub paid_from_ms: i64,
    pub paid_until_ms: i64,
}

/// What one reconciliation found, kept in the journal (`reconciliations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reconciled {
    pub channel_id: String,
    pub business_day: String,
    pub statement_lines: i64,
    pub matched: i64,
    pub differences: i64,
    /// Sum of the amounts of paid rows that state a fee, and of those fees.
    pub fee_base: i64,
    pub fees_charged: i64,
    pub at_ms: i64,
}

/// One write, as the writer runs it.
#[derive(Debug)]
pub(super) enum Op {
    /// A new payment, its trade number minted for it just now: new by
    /// construction, so SQLite's stage records it without asking the table.
    Open(NewPayment),
    SetChannel {
        trade_no: String,
        channel: Arc<str>,
        at_ms: i64,
    },
    Transition {
        trade_no: String,
        to: State,
        facts: TransitionFacts,
        event: Option<NewEvent>,
    },
    Accept {
        note: NotificationIn,
        to: State,
        facts: TransitionFacts,
        event: Option<NewEvent>,
    },
    History(Vec<HistoryRow>),
    Adjustment(Adjustment),
    HoldRefund {
        trade_no: String,
        amount: i64,
    },
    SettleRefund {
        trade_no: String,
        amount: i64,
        accepted: bool,
        facts: TransitionFacts,
        detail: String,
        event: Option<NewEvent>,
    },
    ClaimQueries {
        now_ms: i64,
        hold_ms: i64,
        limit: i64,
    },
    Reschedule {
        trade_no: String,
        next_at_ms: Option<i64>,
    },
    ClaimEvents {
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
        /// Merchants whose events are left alone, as a JSON array of ids.
        skip: String,
    },
    ReleaseEvents {
        owner: String,
        event_ids: Vec<String>,
    },
    EventDelivered {
        event_id: String,
        at_ms: i64,
    },
    EventRetry {
        event_id: String,
        owner: String,
        next_at_ms: i64,
        error: String,
    },
    EventFailed {
        event_id: String,
        owner: String,
        error: String,
    },
    Resend {
        event_id: String,
        now_ms: i64,
    },
    Reconciled(Reconciled),
    /// Moves every staged payment into `payments` (SQLite; see
    /// `writer::stage`): what a read waits for, so it sees every payment
    /// committed before it. Nothing to do where nothing is staged.
    Project,
}

impl Op {
    /// The one payment whose row in `payments` `op` reads or writes, where
    /// it is about one payment named by its trade number (an open inserts a
    /// row no one else has yet; an adjustment writes its own table).
    pub(super) fn one_payment(&self) -> Option<&str> {
        match self {
            Op::SetChannel { trade_no, .. }
            | Op::Transition { trade_no, .. }
            | Op::HoldRefund { trade_no, .. }
            | Op::SettleRefund { trade_no, .. }
            | Op::Reschedule { trade_no, .. } => Some(trade_no),
            Op::Accept { note, .. } => note.trade_no.as_deref(),
            _ => None,
        }
    }
}

/// What an [`Op`] answers.
#[derive(Debug)]
pub(super) enum Reply {
    Inserted(bool),
    Moved(Moved),
    Accept(Accept),
    Hold(RefundHold),
    Payments(Vec<Payment>),
    Events(Vec<Event>),
    Changed(bool),
    Done,
}

/// History written behind.
#[derive(Debug)]
pub(super) enum HistoryRow {
    Attempt(Attempt),
    Notification(NotificationIn, NotifyResult),
}
