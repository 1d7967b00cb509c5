//! History written behind: attempts and rejected notifications
//! ([`HistoryRow`]) are not money, so callers hand them over without waiting
//! ([`History::push`]) and a flusher task sends them to the writer every
//! [`FLUSH_EVERY`] or [`FLUSH_ROWS`] rows. The longest a crash can lose is
//! therefore what arrived in the last [`FLUSH_EVERY`] plus the batch being
//! committed. The flusher is woken by the first row of a window, not by
//! each: a wake-up per row was a cross-thread wake (a write to the other
//! runtime's eventfd, a context switch) per payment (BENCHMARKS.md,
//! "Session 11"). While the database is down, history that cannot be
//! written is dropped and counted (`Journal::history_dropped`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};

use super::Lanes;
use crate::journal::model::*;
use crate::journal::JournalError;

/// History is flushed this often...
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// ...or as soon as this many rows wait.
const FLUSH_ROWS: usize = 1_000;
/// History waiting to be flushed; beyond it new rows are dropped (counted).
const HISTORY_DEPTH: usize = 65_536;

/// The write-behind side: a bounded queue and the task that flushes it.
pub(in crate::journal) struct History {
    tx: mpsc::Sender<HistoryMsg>,
    /// Ends the flusher's window early: the window is full, or a caller
    /// waits for a flush.
    due: Arc<Notify>,
    /// Rows dropped: the queue was full, or the database stayed down.
    pub dropped: Arc<AtomicU64>,
}

enum HistoryMsg {
    Row(HistoryRow),
    /// Answered once everything queued before it is committed.
    Flush(oneshot::Sender<Result<(), JournalError>>),
}

impl History {
    pub fn start(lanes: Arc<Lanes>) -> History {
        let (tx, rx) = mpsc::channel(HISTORY_DEPTH);
        let due = Arc::new(Notify::new());
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(flusher(rx, due.clone(), lanes, dropped.clone()));
        History { tx, due, dropped }
    }

    /// Never waits: a full queue drops the row (and counts it).
    pub fn push(&self, row: HistoryRow) {
        if self.tx.try_send(HistoryMsg::Row(row)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else if self.tx.max_capacity() - self.tx.capacity() >= FLUSH_ROWS {
            // A full window: no need to wait for its end.
            self.due.notify_one();
        }
    }

    /// Waits until everything pushed before is committed.
    pub async fn flush(&self) -> Result<(), JournalError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(HistoryMsg::Flush(tx))
            .await
            .map_err(|_| JournalError::Closed)?;
        self.due.notify_one();
        rx.await.map_err(|_| JournalError::Closed)?
    }
}

/// Flushes history a window at a time: the first row (or flush request)
/// wakes it and opens a window of [`FLUSH_EVERY`]; rows arriving meanwhile
/// only queue — the flusher is not waiting on the queue then, so sending
/// wakes nobody — until the window ends, fills ([`FLUSH_ROWS`]) or a
/// caller asks for a flush. An idle journal has no timer running.
async fn flusher(mut rx: mpsc::Receiver<HistoryMsg>, due: Arc<Notify>, lanes: Arc<Lanes>, dropped: Arc<AtomicU64>) {
    let mut msgs = Vec::with_capacity(FLUSH_ROWS);
    loop {
        let mut closed = rx.recv_many(&mut msgs, FLUSH_ROWS).await == 0;
        let asked = msgs.iter().any(|m| matches!(m, HistoryMsg::Flush(_)));
        if !closed && !asked && msgs.len() < FLUSH_ROWS {
            tokio::select! {
                () = tokio::time::sleep(FLUSH_EVERY) => {}
                () = due.notified() => {}
            }
        }
        // The window's rows, without waiting (some may come in after this:
        // they open the next window).
        while !closed && msgs.len() < HISTORY_DEPTH {
            match rx.try_recv() {
                Ok(msg) => msgs.push(msg),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
            }
        }
        let mut rows = Vec::with_capacity(msgs.len());
        let mut waiters = Vec::new();
        for msg in msgs.drain(..) {
            match msg {
                HistoryMsg::Row(row) => rows.push(row),
                HistoryMsg::Flush(tx) => waiters.push(tx),
            }
        }
        let result = if rows.is_empty() {
            Ok(())
        } else {
            let count = rows.len();
            match lanes.submit(Op::History(rows)).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    tracing::warn!(rows = count, error = %e, "journal: history not written");
                    dropped.fetch_add(count as u64, Ordering::Relaxed);
                    Err(e)
                }
            }
        };
        for w in waiters {
            let _ = w.send(result.clone());
        }
        if closed {
            return;
        }
    }
}
