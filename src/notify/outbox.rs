//! The outbox's delivery loop: every merchant event the journal holds is
//! sent until the merchant takes it or its retries run out (contract part
//! two, "Notifications out").
//!
//! **Durable, and once across a fleet.** Events are only ever in the
//! journal; this loop claims the due ones with a lease
//! (`Journal::claim_due_events_skipping`: `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL), so two instances never send the same event, and the events
//! of an instance that dies are claimed by another once its leases run out.
//! The lease covers the longest an event can wait here and be sent
//! ([`QUEUE_ROUNDS`] + 2 timeouts, plus [`LEASE_MARGIN`] for the write of
//! its result), and an event whose lease is too short to be sent safely is
//! given back instead, so a live owner never loses an event it is still
//! sending. The one repeat the contract allows is a crash (or a journal
//! outage) between a delivery and its record: the merchant drops it by
//! `event_id`. While the journal does not answer, claims are retried every
//! [`ERROR_PAUSE`] and counted in `payroute_journal_errors_total`.
//!
//! **Bounded.** At most [`MAX_IN_FLIGHT`] deliveries at once and
//! [`MAX_HELD`] events in memory (in flight or waiting for their merchant's
//! turn), whatever the backlog: it is paged out of the journal, oldest due
//! first, [`PAGE`] at a time. Each delivery is bounded by the courier's
//! timeout.
//!
//! **Fair.** Each merchant has a queue of its own here, served in turn, with
//! at most [`PER_MERCHANT`] deliveries in flight — [`PER_SICK_MERCHANT`]
//! while one of its deliveries recently failed slowly (a timeout: it hangs
//! or its address is a black hole) — and at most [`QUEUE_ROUNDS`] times that
//! waiting. A claim skips merchants whose queue is not empty or who are at
//! their cap, and what a page brings beyond a merchant's queue is given back
//! uncounted (`Journal::release_events`). So a merchant that hangs, answers
//! 500 or is unreachable, whatever its backlog, delays nobody else: other
//! merchants' events are claimed past its own, and at most half the slots
//! (its first timeouts), then 4, are ever waiting on it.
//!
//! **Schedule.** `[notify] retry_ms[k]` is when try `k` is due, counted from
//! the state change (the event's `created_at_ms`); after the last, the event
//! is `failed` (listed and re-sendable on the admin API). A try whose time
//! has already passed when the previous one is refused (a backlog sent late
//! after an outage, an event re-sent by hand) is due the schedule's own gap
//! after it instead, so such an event is not tried through its whole
//! schedule at once.
//!
//! **Signed when sent.** The event's body is fixed when it is made; the
//! signature, which carries the time, is made here with the merchant's
//! `notify_secret` as configured *now*, and a JSON merchant is sent to its
//! `notify_url` as configured now (the event's `target` records where it
//! was addressed when queued): fixing a merchant's URL or key and re-sending
//! reaches it. A merchant missing from the config, or without `notify_url`,
//! is a refused try like an unreachable one.
//!
//! **Kinds.** [`letter`] matches the event's `kind`: `json` today, epay's
//! next to it. A kind this version does not know (a newer fleet member's) is
//! a refused try, retried on the schedule, so an instance that knows it can
//! still deliver it.
//!
//! **Prompt.** Producers ring the [`Doorbell`] after committing an event;
//! without a ring the loop still looks every [`POLL`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::courier::{Courier, Letter, Receipt};
use super::{event, signature};
use crate::epay::form::Params;
use crate::epay::merchant;
use crate::journal::{self, Event, Journal};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// Deliveries in flight at most (one instance).
pub(crate) const MAX_IN_FLIGHT: usize = 256;
/// Events held at most: in flight, or claimed and waiting for a slot.
pub(crate) const MAX_HELD: usize = 1_024;
/// Events claimed at most at once.
pub(crate) const PAGE: usize = 256;
/// A claim is made once this many events fit (or nothing is held).
const MIN_CLAIM: usize = 32;
/// Deliveries in flight at most to one merchant: half the slots, so a
/// merchant that starts to hang leaves the other half to everyone else.
pub(crate) const PER_MERCHANT: usize = MAX_IN_FLIGHT / 2;
/// ... and to one whose delivery failed slowly in the last [`SICK_FOR`].
pub(crate) const PER_SICK_MERCHANT: usize = 4;
/// How long a slow failure makes a merchant count as sick.
const SICK_FOR: Duration = Duration::from_secs(30);
/// A merchant's queue holds at most this many rounds of its cap.
pub(crate) const QUEUE_ROUNDS: usize = 4;
/// How often the journal is asked for due events without a ring.
pub(crate) const POLL: Duration = Duration::from_millis(200);
/// A claim that did not fill its page is not repeated sooner than this
/// (unless rung): deliveries ending one by one must not each cost a claim.
const CLAIM_GAP: Duration = Duration::from_millis(20);
/// Added to the lease for the write of the result and clock skew between
/// instances.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// A waiting event is sent only with this much lease left beyond a timeout.
const LEASE_SAFETY: Duration = Duration::from_secs(5);
/// `payroute_notification_backlog` is refreshed this often.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);
/// After a failed claim (journal down), the next one waits this long.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Deliveries in flight at shutdown get the timeout plus this to finish.
const DRAIN_MARGIN: Duration = Duration::from_secs(1);

/// Wakes the outbox at once: rung by whoever commits an event (notifications
/// in, the sweeper, a re-send by hand). A ring while it is busy is kept: it
/// looks again as soon as it is done.
#[derive(Clone, Default)]
pub(crate) struct Doorbell(Arc<Notify>);

impl Doorbell {
    pub fn ring(&self) {
        self.0.notify_one();
    }
}

/// The config in force, read at every claim and delivery (`App::snapshot`
/// in the proxy; a fixed snapshot in tests).
pub(crate) type ConfigSource = Arc<dyn Fn() -> Arc<Snapshot> + Send + Sync>;

/// The outbox's metric handles, resolved once.
pub(crate) struct OutboxMetrics {
    delivered: IntCounter,
    retry: IntCounter,
    failed: IntCounter,
    backlog: IntGauge,
    journal_errors: IntCounter,
}

impl OutboxMetrics {
    pub fn new(m: &Metrics) -> OutboxMetrics {
        OutboxMetrics {
            delivered: m.notifications_out.with_label_values(&["delivered"]),
            retry: m.notifications_out.with_label_values(&["retry"]),
            failed: m.notifications_out.with_label_values(&["failed"]),
            backlog: m.notification_backlog.clone(),
            journal_errors: m.journal_errors.clone(),
        }
    }
}

/// One instance's delivery loop, before it runs.
pub(crate) struct Outbox {
    shared: Arc<Shared>,
    doorbell: Doorbell,
}

/// What the loop and its deliveries share.
struct Shared {
    journal: Journal,
    config: ConfigSource,
    metrics: OutboxMetrics,
    /// This instance's name on its leases.
    owner: String,
}

/// The running loop; [`OutboxTask::stop`] ends it.
pub(crate) struct OutboxTask {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl OutboxTask {
    /// Stops claiming, gives back the events waiting, lets the deliveries in
    /// flight finish (each within the timeout), and returns. An event whose
    /// result is not recorded by then keeps its lease and is sent again when
    /// the lease runs out.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// `[notify]` as the loop uses it, refreshed at each claim.
struct Settings {
    timeout: Duration,
    retry: Arc<[Duration]>,
    courier: Courier,
}

impl Settings {
    fn lease(&self) -> Duration {
        self.timeout * (QUEUE_ROUNDS as u32 + 2) + LEASE_MARGIN
    }
}

/// A delivery ended (sent by its task to the loop).
struct Done {
    merchant: Arc<str>,
    /// Refused after at least half the timeout: the merchant hangs or
    /// cannot be reached.
    slow_failure: bool,
}

impl Outbox {
    pub fn new(journal: Journal, config: ConfigSource, metrics: OutboxMetrics, doorbell: Doorbell) -> Outbox {
        Outbox {
            shared: Arc::new(Shared {
                journal,
                config,
                metrics,
                owner: instance_id(),
            }),
            doorbell,
        }
    }

    /// This instance's lease owner name.
    #[cfg(test)]
    pub fn owner(&self) -> &str {
        &self.shared.owner
    }

    /// Starts the loop on the current runtime.
    pub fn spawn(self) -> OutboxTask {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(self.run(stopped));
        OutboxTask { stop, task }
    }

    async fn run(self, mut stop: oneshot::Receiver<()>) {
        let shared = self.shared;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut queues = Queues::default();
        let mut settings: Option<Settings> = None;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut want_claim = true;
        let mut claim_at = Instant::now();
        let mut backlog_at = Instant::now();
        let mut backlog: Option<JoinHandle<()>> = None;
        let mut journal_down = false;
        tracing::info!(owner = %shared.owner, "outbox delivering merchant notifications");
        loop {
            let now = Instant::now();
            let limit = queues.claim_limit();
            if want_claim && now >= claim_at && limit > 0 {
                settings = refresh(&shared, settings);
                match &settings {
                    None => claim_at = now + ERROR_PAUSE,
                    Some(s) => {
                        let skip = queues.skip(now);
                        let skip: Vec<&str> = skip.iter().map(|m| &**m).collect();
                        let claimed = shared
                            .journal
                            .claim_due_events_skipping(
                                &shared.owner,
                                journal::now_ms(),
                                millis(s.lease()),
                                limit as i64,
                                &skip,
                            )
                            .await;
                        match claimed {
                            Ok(events) => {
                                if std::mem::take(&mut journal_down) {
                                    tracing::info!("outbox: the journal answers again");
                                }
                                want_claim = events.len() >= limit;
                                if !want_claim {
                                    claim_at = now + CLAIM_GAP;
                                }
                                let back = queues.admit(events, Instant::now());
                                give_back(&shared, back).await;
                            }
                            Err(e) => {
                                shared.metrics.journal_errors.inc();
                                if !std::mem::replace(&mut journal_down, true) {
                                    tracing::warn!(error = %e, "outbox: cannot claim due events; retrying every second");
                                }
                                claim_at = now + ERROR_PAUSE;
                            }
                        }
                    }
                }
            }
            if let Some(s) = &settings {
                let safe_until = journal::now_ms() + millis(s.timeout + LEASE_SAFETY);
                let (send, expired) = queues.next(Instant::now(), safe_until);
                for event in send {
                    let ticket = Ticket {
                        merchant: Arc::from(event.merchant_id.as_str()),
                        slow_failure: false,
                        done: done_tx.clone(),
                    };
                    tokio::spawn(deliver(
                        shared.clone(),
                        s.courier.clone(),
                        s.retry.clone(),
                        event,
                        ticket,
                    ));
                }
                give_back(&shared, expired).await;
            }
            // Counted beside the loop: a journal slow to answer must not
            // hold up deliveries.
            if backlog_at.elapsed() >= BACKLOG_EVERY && backlog.as_ref().is_none_or(JoinHandle::is_finished) {
                backlog_at = Instant::now();
                let shared = shared.clone();
                backlog = Some(tokio::spawn(async move {
                    match shared.journal.backlog().await {
                        Ok(n) => shared.metrics.backlog.set(n),
                        Err(_) => shared.metrics.journal_errors.inc(),
                    }
                }));
            }
            let now = Instant::now();
            let may_claim = want_claim && queues.claim_limit() > 0;
            if may_claim && now >= claim_at {
                continue;
            }
            tokio::select! {
                biased;
                _ = &mut stop => break,
                Some(done) = done_rx.recv() => {
                    want_claim |= queues.done(&done, now);
                    while let Ok(done) = done_rx.try_recv() {
                        want_claim |= queues.done(&done, now);
                    }
                }
                _ = self.doorbell.0.notified() => {
                    want_claim = true;
                    claim_at = now;
                }
                _ = tick.tick() => {
                    want_claim = true;
                    queues.tidy(now);
                }
                _ = tokio::time::sleep_until(claim_at), if may_claim => {}
            }
        }
        give_back(&shared, queues.drain()).await;
        let timeout = settings.as_ref().map_or(Duration::ZERO, |s| s.timeout);
        let deadline = Instant::now() + timeout + DRAIN_MARGIN;
        while queues.in_flight > 0 {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(done)) => {
                    queues.done(&done, Instant::now());
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        in_flight = queues.in_flight,
                        "outbox stopped with deliveries unrecorded; they are sent again when their lease runs out"
                    );
                    break;
                }
            }
        }
    }
}

/// The settings in force; the courier is rebuilt only when the timeout
/// changed. `None` only if no HTTP client can be built at all.
fn refresh(shared: &Shared, previous: Option<Settings>) -> Option<Settings> {
    let snapshot = (shared.config)();
    let timeout = snapshot.notify.timeout;
    let retry: Arc<[Duration]> = snapshot.notify.retry.as_slice().into();
    drop(snapshot);
    let courier = match previous {
        Some(p) if p.timeout == timeout => p.courier,
        previous => match Courier::new(timeout) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "outbox: cannot build the HTTP client for merchants");
                return previous;
            }
        },
    };
    Some(Settings {
        timeout,
        retry,
        courier,
    })
}

/// Gives claimed events back uncounted; if that fails their leases run out
/// by themselves.
async fn give_back(shared: &Shared, ids: Vec<String>) {
    if ids.is_empty() {
        return;
    }
    if let Err(e) = shared.journal.release_events(&shared.owner, ids).await {
        shared.metrics.journal_errors.inc();
        tracing::warn!(error = %e, "outbox: cannot give back claimed events; their leases will run out");
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The events this instance holds, by merchant, and whose turn it is.
/// Owned by the loop alone: no lock.
#[derive(Default)]
struct Queues {
    merchants: HashMap<Arc<str>, Queue>,
    /// Merchants with events waiting, in turn order (each once).
    turn: VecDeque<Arc<str>>,
    in_flight: usize,
    waiting: usize,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Event>,
    in_flight: usize,
    sick_until: Option<Instant>,
}

impl Queue {
    fn cap(&self, now: Instant) -> usize {
        match self.sick_until {
            Some(until) if until > now => PER_SICK_MERCHANT,
            _ => PER_MERCHANT,
        }
    }
}

impl Queues {
    /// How many events the next claim may bring (0: wait for deliveries to end).
    fn claim_limit(&self) -> usize {
        let held = self.in_flight + self.waiting;
        let room = MAX_HELD.saturating_sub(held).min(PAGE);
        if room >= MIN_CLAIM || held == 0 {
            room
        } else {
            0
        }
    }

    /// Merchants a claim leaves alone: events waiting here already, or at their cap.
    fn skip(&self, now: Instant) -> Vec<Arc<str>> {
        self.merchants
            .iter()
            .filter(|(_, q)| !q.waiting.is_empty() || q.in_flight >= q.cap(now))
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// Takes claimed events in, each at the end of its merchant's queue;
    /// returns the ids of those beyond a queue's size, to give back.
    fn admit(&mut self, events: Vec<Event>, now: Instant) -> Vec<String> {
        let mut back = Vec::new();
        for event in events {
            let q = match self.merchants.get_mut(event.merchant_id.as_str()) {
                Some(q) => q,
                None => self.merchants.entry(Arc::from(event.merchant_id.as_str())).or_default(),
            };
            if q.waiting.len() >= q.cap(now) * QUEUE_ROUNDS {
                back.push(event.event_id);
                continue;
            }
            if q.waiting.is_empty() {
                self.turn.push_back(Arc::from(event.merchant_id.as_str()));
            }
            q.waiting.push_back(event);
            self.waiting += 1;
        }
        back
    }

    /// The events to send now, merchants in turn, within the caps; and the
    /// ids of waiting events whose lease ends before `safe_until_ms` (to
    /// give back rather than risk a second sender).
    fn next(&mut self, now: Instant, safe_until_ms: i64) -> (Vec<Event>, Vec<String>) {
        let (mut send, mut expired) = (Vec::new(), Vec::new());
        let mut blocked = 0;
        while self.in_flight < MAX_IN_FLIGHT && blocked < self.turn.len() {
            let Some(m) = self.turn.pop_front() else { break };
            let Some(q) = self.merchants.get_mut(&m) else { continue };
            if q.in_flight >= q.cap(now) {
                self.turn.push_back(m);
                blocked += 1;
                continue;
            }
            let Some(event) = q.waiting.pop_front() else { continue };
            self.waiting -= 1;
            blocked = 0;
            if event.lease_until_ms.unwrap_or(0) < safe_until_ms {
                expired.push(event.event_id);
            } else {
                q.in_flight += 1;
                self.in_flight += 1;
                send.push(event);
            }
            if !q.waiting.is_empty() {
                self.turn.push_back(m);
            }
        }
        (send, expired)
    }

    /// A delivery ended; `true` when its merchant has nothing waiting here
    /// (a claim may find more of its events).
    fn done(&mut self, done: &Done, now: Instant) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(q) = self.merchants.get_mut(&done.merchant) else {
            return true;
        };
        q.in_flight = q.in_flight.saturating_sub(1);
        if done.slow_failure {
            q.sick_until = Some(now + SICK_FOR);
        }
        q.waiting.is_empty()
    }

    /// Forgets merchants with nothing here and no recent slow failure.
    fn tidy(&mut self, now: Instant) {
        self.merchants
            .retain(|_, q| !q.waiting.is_empty() || q.in_flight > 0 || q.sick_until.is_some_and(|until| until > now));
    }

    /// Everything waiting (at shutdown), to give back.
    fn drain(&mut self) -> Vec<String> {
        self.turn.clear();
        self.waiting = 0;
        self.merchants
            .values_mut()
            .flat_map(|q| q.waiting.drain(..))
            .map(|e| e.event_id)
            .collect()
    }
}

/// Tells the loop a delivery ended, however its task ends.
struct Ticket {
    merchant: Arc<str>,
    slow_failure: bool,
    done: mpsc::UnboundedSender<Done>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let _ = self.done.send(Done {
            merchant: self.merchant.clone(),
            slow_failure: self.slow_failure,
        });
    }
}

/// Sends one claimed event and records what came of it.
async fn deliver(shared: Arc<Shared>, courier: Courier, retry: Arc<[Duration]>, mut event: Event, mut ticket: Ticket) {
    let started = Instant::now();
    let receipt = match letter(&(shared.config)(), &mut event) {
        Ok(letter) => courier.deliver(&letter).await,
        Err(why) => Receipt::Refused(why),
    };
    let now = journal::now_ms();
    let m = &shared.metrics;
    match receipt {
        // Counted once recorded (or not recordable): whoever reads the
        // counter finds the journal already saying so.
        Receipt::Taken => {
            if let Err(e) = shared.journal.event_delivered(&event.event_id, now).await {
                m.journal_errors.inc();
                tracing::warn!(
                    event_id = %event.event_id, error = %e,
                    "notification delivered but not recorded: it will be sent again"
                );
            }
            m.delivered.inc();
        }
        Receipt::Refused(why) => {
            ticket.slow_failure = started.elapsed() >= courier.timeout() / 2;
            let (recorded, counter) = match next_try(&retry, event.attempts, event.created_at_ms, now) {
                Some(at) => {
                    tracing::debug!(event_id = %event.event_id, merchant = %event.merchant_id, error = %why, "notification refused; retrying");
                    (
                        shared
                            .journal
                            .event_retry(&event.event_id, &shared.owner, at, &why)
                            .await,
                        &m.retry,
                    )
                }
                None => {
                    tracing::warn!(
                        event_id = %event.event_id, merchant = %event.merchant_id, tries = event.attempts, error = %why,
                        "notification failed after its last try; re-send it with POST /-/notifications/{{event_id}}/resend"
                    );
                    (
                        shared.journal.event_failed(&event.event_id, &shared.owner, &why).await,
                        &m.failed,
                    )
                }
            };
            match recorded {
                Ok(true) => {}
                // The lease ran out: its new holder decides.
                Ok(false) => {
                    tracing::debug!(event_id = %event.event_id, "outbox lease lost before recording a refusal")
                }
                Err(e) => {
                    m.journal_errors.inc();
                    tracing::warn!(event_id = %event.event_id, error = %e, "outbox: cannot record a refused delivery");
                }
            }
            counter.inc();
        }
    }
    drop(ticket);
}

/// The request for `event`, built and signed now. Takes the body out of
/// `event`. `Err`: why it cannot be sent (a refused try).
fn letter(snapshot: &Snapshot, event: &mut Event) -> Result<Letter, String> {
    match event.kind.as_str() {
        event::JSON => {
            let merchant = snapshot
                .merchant(&event.merchant_id)
                .ok_or_else(|| format!("merchant {:?} is not in the config", event.merchant_id))?;
            let notify = merchant
                .config
                .notify()
                .ok_or_else(|| format!("merchant {:?} has no notify_url", event.merchant_id))?;
            let body = Bytes::from(std::mem::take(&mut event.body));
            let unix = journal::now_ms().max(0) as u64 / 1000;
            let signature = signature::merchant_header(notify.secret.expose().as_bytes(), unix, &body);
            Ok(Letter::Json {
                url: notify.url.clone(),
                body,
                signature,
            })
        }
        event::EPAY => {
            // The parameters were fixed with the move; the signature is made
            // now, with the merchant's epay_key as configured now.
            let merchant = snapshot
                .merchant(&event.merchant_id)
                .ok_or_else(|| format!("merchant {:?} is not in the config", event.merchant_id))?;
            let key = merchant
                .config
                .epay_key()
                .ok_or_else(|| format!("merchant {:?} has no epay_key", event.merchant_id))?;
            let params = Params::parse(event.body.as_bytes())
                .map_err(|e| format!("the event's parameters are unreadable: {e}"))?
                .signed(key.expose());
            let url = merchant::with_query(&event.target, &params)
                .parse()
                .map_err(|e| format!("notify_url is not a URL: {e}"))?;
            Ok(Letter::Epay { url })
        }
        other => Err(format!("unknown event kind {other:?}: this payroute cannot send it")),
    }
}

/// When the next try is due after `tried` tries (this one included) of an
/// event made at `created_ms`, refused at `now_ms`; `None`: that was the last.
fn next_try(retry: &[Duration], tried: i64, created_ms: i64, now_ms: i64) -> Option<i64> {
    let k = usize::try_from(tried).ok()?;
    let due = *retry.get(k)?;
    let previous = k.checked_sub(1).and_then(|p| retry.get(p)).copied().unwrap_or_default();
    let gap = due.saturating_sub(previous);
    let on_schedule = created_ms.saturating_add(millis(due));
    Some(if on_schedule > now_ms {
        on_schedule
    } else {
        now_ms.saturating_add(millis(gap))
    })
}

/// `obx-{pid}-{10 random [0-9a-z]}`: unique across a fleet and restarts,
/// and an operator can tell which process holds a lease.
fn instance_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut id = format!("obx-{}-", std::process::id());
    for _ in 0..10 {
        id.push(ALPHABET[fastrand::usize(..ALPHABET.len())] as char);
    }
    id
}

#[cfg(test)]
mod tests;
