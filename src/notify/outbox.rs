//! The outbox's delivery loop: every merchant event the journal holds is
//! sent until the merchant takes it or its retries run out (contract part
//! two, "Notifications out").
//!
//! **Durable, and once across a fleet.** Events are only ever in the
//! journal; this loop claims the due ones with a lease
//! (`Journal::claim_due_events_skipping`: `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL), so two instances never send the same event, and the events
//! of an instance that dies are claimed by another once its leases run out.
//! The lease is twice `[notify] timeout_ms` plus [`LEASE_MARGIN`]: longer
//! than a delivery and the write of its result, so a live owner never loses
//! an event it is still sending. The one repeat the contract allows is a
//! crash (or a journal outage) between a delivery and its record: the
//! merchant drops it by `event_id`.
//!
//! **Bounded.** At most [`MAX_IN_FLIGHT`] deliveries at once, and only as
//! many events are claimed as there are free slots, so memory holds the
//! events being sent and nothing more, whatever the backlog (it is paged
//! out of the journal, oldest due first). Each delivery is bounded by the
//! courier's timeout.
//!
//! **Fair.** A merchant has at most [`PER_MERCHANT`] deliveries in flight,
//! [`PER_SICK_MERCHANT`] while its last refusal is recent (a merchant that
//! hangs then holds 4 slots for a timeout each, not all of them); claims skip
//! merchants at their cap, and what a page brings beyond a merchant's cap is
//! given back uncounted (`Journal::release_events`). So a merchant that
//! hangs, answers 500 or is unreachable, with any backlog, delays nobody
//! else: others' events are claimed past its own.
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
//! **Prompt.** Producers ring the [`Doorbell`] after committing an event;
//! without a ring the loop still looks every [`POLL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::courier::{Courier, Letter, Receipt};
use super::{event, signature};
use crate::journal::{self, Event, Journal};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// Deliveries in flight at most (one instance).
pub(crate) const MAX_IN_FLIGHT: usize = 256;
/// Deliveries in flight at most to one merchant.
pub(crate) const PER_MERCHANT: usize = 64;
/// ... and to one whose last refusal is more recent than [`SICK_FOR`].
pub(crate) const PER_SICK_MERCHANT: usize = 4;
/// How long a refusal makes a merchant count as sick.
const SICK_FOR: Duration = Duration::from_secs(30);
/// How often the journal is asked for due events without a ring.
pub(crate) const POLL: Duration = Duration::from_millis(200);
/// A claim waits this long for [`GATHER_ROOM`] free slots before taking
/// what there is: claims are journal writes, better not one per slot.
const GATHER: Duration = Duration::from_millis(5);
const GATHER_ROOM: u32 = 32;
/// Added to twice the timeout for a lease (the result's write, clock skew
/// between instances).
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// `payroute_notification_backlog` is refreshed this often.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);
/// After a failed claim (journal down), the next one waits this long.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Deliveries in flight at shutdown get the timeout plus this to finish.
const DRAIN_MARGIN: Duration = Duration::from_secs(1);

/// Wakes the outbox at once: rung by whoever commits an event (notifications
/// in, the sweeper, a re-send by hand). Rings while it is busy are kept:
/// it looks again as soon as it is done.
#[derive(Clone, Default)]
pub(crate) struct Doorbell(Arc<Notify>);

impl Doorbell {
    pub fn ring(&self) {
        self.0.notify_one();
    }
}

/// The config in force, read at every page and delivery (`App::snapshot`
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
    /// Merchants with deliveries in flight or a recent refusal.
    merchants: Mutex<HashMap<Arc<str>, Load>>,
}

#[derive(Default)]
struct Load {
    in_flight: usize,
    refused_at: Option<Instant>,
}

impl Load {
    fn cap(&self, now: Instant) -> usize {
        match self.refused_at {
            Some(at) if now.duration_since(at) < SICK_FOR => PER_SICK_MERCHANT,
            _ => PER_MERCHANT,
        }
    }
}

/// The running loop; [`OutboxTask::stop`] ends it.
pub(crate) struct OutboxTask {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl OutboxTask {
    /// Stops claiming, lets the deliveries in flight finish (each within the
    /// timeout), and returns. Events whose result is not recorded by then
    /// keep their lease and are sent again when it runs out.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

impl Outbox {
    pub fn new(journal: Journal, config: ConfigSource, metrics: OutboxMetrics, doorbell: Doorbell) -> Outbox {
        Outbox {
            shared: Arc::new(Shared {
                journal,
                config,
                metrics,
                owner: instance_id(),
                merchants: Mutex::default(),
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
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut courier: Option<(Duration, Courier)> = None;
        let mut backlog_at = Instant::now();
        let mut journal_down = false;
        let mut timeout = Duration::ZERO;
        tracing::info!(owner = %shared.owner, "outbox delivering merchant notifications");
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = room(&slots) => {}
            }
            let snapshot = (shared.config)();
            timeout = snapshot.notify.timeout;
            let retry: Arc<[Duration]> = snapshot.notify.retry.as_slice().into();
            drop(snapshot);
            let courier = match &courier {
                Some((t, c)) if *t == timeout => c.clone(),
                _ => match Courier::new(timeout) {
                    Ok(c) => courier.insert((timeout, c)).1.clone(),
                    Err(e) => {
                        tracing::error!(error = %e, "outbox: cannot build the HTTP client for merchants");
                        if pause(&mut stop, ERROR_PAUSE).await {
                            break;
                        }
                        continue;
                    }
                },
            };
            let lease = timeout * 2 + LEASE_MARGIN;
            let limit = slots.available_permits();
            let skip = shared.saturated();
            let skip: Vec<&str> = skip.iter().map(|m| &**m).collect();
            let claimed = shared
                .journal
                .claim_due_events_skipping(
                    &shared.owner,
                    journal::now_ms(),
                    lease.as_millis() as i64,
                    limit as i64,
                    &skip,
                )
                .await;
            let more = match claimed {
                Ok(events) => {
                    if journal_down {
                        journal_down = false;
                        tracing::info!("outbox: the journal answers again");
                    }
                    let full = events.len() >= limit;
                    let mut back = Vec::new();
                    for event in events {
                        match shared.slot(&slots, &event.merchant_id) {
                            Some(slot) => {
                                tokio::spawn(deliver(shared.clone(), courier.clone(), retry.clone(), event, slot));
                            }
                            None => back.push(event.event_id),
                        }
                    }
                    if let Err(e) = shared.journal.release_events(&shared.owner, back).await {
                        // Their leases run out by themselves.
                        shared.metrics.journal_errors.inc();
                        tracing::warn!(error = %e, "outbox: cannot give back events over a merchant's cap");
                    }
                    full
                }
                Err(e) => {
                    shared.metrics.journal_errors.inc();
                    if !journal_down {
                        journal_down = true;
                        tracing::warn!(error = %e, "outbox: cannot claim due events; retrying every second");
                    }
                    if pause(&mut stop, ERROR_PAUSE).await {
                        break;
                    }
                    false
                }
            };
            if backlog_at.elapsed() >= BACKLOG_EVERY {
                backlog_at = Instant::now();
                match shared.journal.backlog().await {
                    Ok(n) => shared.metrics.backlog.set(n),
                    Err(_) => shared.metrics.journal_errors.inc(),
                }
            }
            if more {
                continue;
            }
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = self.doorbell.0.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        let all = MAX_IN_FLIGHT as u32;
        if tokio::time::timeout(timeout + DRAIN_MARGIN, slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = MAX_IN_FLIGHT - slots.available_permits(),
                "outbox stopped with deliveries unrecorded; they are sent again when their lease runs out"
            );
        }
    }
}

/// Waits until a claim is worth making: a few slots free, or any after a
/// short gather.
async fn room(slots: &Semaphore) {
    if tokio::time::timeout(GATHER, slots.acquire_many(GATHER_ROOM))
        .await
        .is_err()
    {
        let _ = slots.acquire().await;
    }
}

/// Sleeps `d`; `true` if told to stop meanwhile.
async fn pause(stop: &mut oneshot::Receiver<()>, d: Duration) -> bool {
    tokio::select! {
        biased;
        _ = stop => true,
        _ = tokio::time::sleep(d) => false,
    }
}

impl Shared {
    fn load(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Load>> {
        self.merchants.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Merchants at their cap, for the claim to skip; forgets merchants
    /// with nothing in flight and no recent refusal.
    fn saturated(&self) -> Vec<Arc<str>> {
        let now = Instant::now();
        let mut load = self.load();
        load.retain(|_, l| l.in_flight > 0 || l.refused_at.is_some_and(|at| now.duration_since(at) < SICK_FOR));
        load.iter()
            .filter(|(_, l)| l.in_flight >= l.cap(now))
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// A delivery slot for `merchant`: `None` at its cap. Only the loop
    /// takes slots, after waiting for room, so a free one is there.
    fn slot(self: &Arc<Self>, slots: &Arc<Semaphore>, merchant: &str) -> Option<Slot> {
        let permit = slots.clone().try_acquire_owned().ok()?;
        let mut load = self.load();
        let now = Instant::now();
        let entry = match load.get_mut(merchant) {
            Some(l) => l,
            None => load.entry(Arc::from(merchant)).or_default(),
        };
        if entry.in_flight >= entry.cap(now) {
            return None;
        }
        entry.in_flight += 1;
        Some(Slot {
            shared: self.clone(),
            merchant: Arc::from(merchant),
            refused: false,
            _permit: permit,
        })
    }
}

/// One delivery's place: returned (and the merchant's count lowered) when
/// the delivery's task ends, however it ends.
struct Slot {
    shared: Arc<Shared>,
    merchant: Arc<str>,
    refused: bool,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut load = self.shared.load();
        if let Some(l) = load.get_mut(&self.merchant) {
            l.in_flight = l.in_flight.saturating_sub(1);
            if self.refused {
                l.refused_at = Some(Instant::now());
            } else {
                l.refused_at = None;
            }
        }
    }
}

/// Sends one claimed event and records what came of it.
async fn deliver(shared: Arc<Shared>, courier: Courier, retry: Arc<[Duration]>, mut event: Event, mut slot: Slot) {
    let receipt = match letter(&(shared.config)(), &mut event) {
        Ok(letter) => courier.deliver(&letter).await,
        Err(why) => Receipt::Refused(why),
    };
    let now = journal::now_ms();
    let m = &shared.metrics;
    match receipt {
        Receipt::Taken => {
            m.delivered.inc();
            if let Err(e) = shared.journal.event_delivered(&event.event_id, now).await {
                m.journal_errors.inc();
                tracing::warn!(
                    event_id = %event.event_id, error = %e,
                    "notification delivered but not recorded: it will be sent again"
                );
            }
        }
        Receipt::Refused(why) => {
            slot.refused = true;
            let recorded = match next_try(&retry, event.attempts, event.created_at_ms, now) {
                Some(at) => {
                    m.retry.inc();
                    tracing::debug!(event_id = %event.event_id, merchant = %event.merchant_id, error = %why, "notification refused; retrying");
                    shared
                        .journal
                        .event_retry(&event.event_id, &shared.owner, at, &why)
                        .await
                }
                None => {
                    m.failed.inc();
                    tracing::warn!(
                        event_id = %event.event_id, merchant = %event.merchant_id, tries = event.attempts, error = %why,
                        "notification failed after its last try; re-send it with POST /-/notifications/{{event_id}}/resend"
                    );
                    shared.journal.event_failed(&event.event_id, &shared.owner, &why).await
                }
            };
            match recorded {
                Ok(true) => {}
                // Lost the lease (it ran out): the new holder decides.
                Ok(false) => {
                    tracing::debug!(event_id = %event.event_id, "outbox lease lost before recording a refusal")
                }
                Err(e) => {
                    m.journal_errors.inc();
                    tracing::warn!(event_id = %event.event_id, error = %e, "outbox: cannot record a refused delivery");
                }
            }
        }
    }
    drop(slot);
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
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let on_schedule = created_ms.saturating_add(ms(due));
    Some(if on_schedule > now_ms {
        on_schedule
    } else {
        now_ms.saturating_add(ms(gap))
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
