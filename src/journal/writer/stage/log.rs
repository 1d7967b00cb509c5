//! The stage's log: what a record says, how it is written to a segment
//! and read back. One JSON line a record (`serde_json`: a reader of the
//! file needs nothing but a text editor), in segments numbered in the order
//! they were started; a projection starts the next one.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{unavailable, Rows, Staged};
use crate::journal::model::*;
use crate::journal::state::{Protocol, State};
use crate::journal::JournalError;

/// One line of the log.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Record<'a> {
    Open {
        #[serde(borrow)]
        trade_no: Cow<'a, str>,
        #[serde(borrow)]
        merchant_id: Cow<'a, str>,
        #[serde(borrow)]
        order_id: Cow<'a, str>,
        amount: i64,
        #[serde(borrow)]
        currency: Cow<'a, str>,
        #[serde(borrow)]
        pay_type: Option<Cow<'a, str>>,
        #[serde(borrow)]
        protocol: Cow<'a, str>,
        #[serde(borrow)]
        channel_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        channel_trade_no: Option<Cow<'a, str>>,
        #[serde(borrow)]
        state: Cow<'a, str>,
        expected_fee: i64,
        #[serde(borrow)]
        merchant_data: Cow<'a, str>,
        created_at_ms: i64,
        next_query_at_ms: Option<i64>,
    },
    Channel {
        #[serde(borrow)]
        trade_no: Cow<'a, str>,
        #[serde(borrow)]
        channel: Cow<'a, str>,
        at_ms: i64,
    },
    Move {
        #[serde(borrow)]
        trade_no: Cow<'a, str>,
        #[serde(borrow)]
        to: Cow<'a, str>,
        at_ms: i64,
        #[serde(borrow)]
        channel: Option<Cow<'a, str>>,
        #[serde(borrow)]
        channel_trade_no: Option<Cow<'a, str>>,
        expected_fee: Option<i64>,
    },
}

pub(super) fn open_record(p: &NewPayment) -> Record<'_> {
    Record::Open {
        trade_no: Cow::Borrowed(&p.trade_no),
        merchant_id: Cow::Borrowed(&p.merchant_id),
        order_id: Cow::Borrowed(&p.order_id),
        amount: p.amount,
        currency: Cow::Borrowed(&p.currency),
        pay_type: p.pay_type.as_deref().map(Cow::Borrowed),
        protocol: Cow::Borrowed(p.protocol.as_str()),
        channel_id: p.channel_id.as_deref().map(Cow::Borrowed),
        channel_trade_no: p.channel_trade_no.as_deref().map(Cow::Borrowed),
        state: Cow::Borrowed(p.state.as_str()),
        expected_fee: p.expected_fee,
        merchant_data: Cow::Borrowed(&p.merchant_data),
        created_at_ms: p.created_at_ms,
        next_query_at_ms: p.next_query_at_ms,
    }
}

/// A failover's record.
pub(super) fn channel_record<'a>(trade_no: &'a str, channel: &'a str, at_ms: i64) -> Record<'a> {
    Record::Channel {
        trade_no: Cow::Borrowed(trade_no),
        channel: Cow::Borrowed(channel),
        at_ms,
    }
}

/// A move's record.
pub(super) fn move_record<'a>(trade_no: &'a str, to: State, facts: &'a TransitionFacts) -> Record<'a> {
    Record::Move {
        trade_no: Cow::Borrowed(trade_no),
        to: Cow::Borrowed(to.as_str()),
        at_ms: facts.at_ms,
        channel: facts.channel.as_deref().map(Cow::Borrowed),
        channel_trade_no: facts.channel_trade_no.as_deref().map(Cow::Borrowed),
        expected_fee: facts.expected_fee,
    }
}

impl Rows {
    /// Applies one record of a log being replayed, by the rules the stage
    /// served it with (a record was only written for an op it applied).
    pub(super) fn replay(&mut self, record: Record<'_>) -> Result<(), String> {
        match record {
            Record::Open {
                trade_no,
                merchant_id,
                order_id,
                amount,
                currency,
                pay_type,
                protocol,
                channel_id,
                channel_trade_no,
                state,
                expected_fee,
                merchant_data,
                created_at_ms,
                next_query_at_ms,
            } => {
                let p = NewPayment {
                    trade_no: trade_no.into_owned(),
                    merchant_id: Arc::from(&*merchant_id),
                    order_id: order_id.into_owned(),
                    amount,
                    currency: currency.into_owned(),
                    pay_type: pay_type.map(Cow::into_owned),
                    protocol: Protocol::parse(&protocol).ok_or("unknown protocol")?,
                    channel_id: channel_id.map(|c| Arc::from(&*c)),
                    channel_trade_no: channel_trade_no.map(Cow::into_owned),
                    state: State::parse(&state).ok_or("unknown state")?,
                    expected_fee,
                    merchant_data: merchant_data.into_owned(),
                    created_at_ms,
                    next_query_at_ms,
                };
                self.insert(Staged::new(p));
            }
            Record::Channel {
                trade_no,
                channel,
                at_ms,
            } => {
                if let Some(row) = self.get_mut(&trade_no).filter(|r| r.p.state == State::Pending) {
                    row.set_channel(&Arc::from(&*channel), at_ms);
                }
            }
            Record::Move {
                trade_no,
                to,
                at_ms,
                channel,
                channel_trade_no,
                expected_fee,
            } => {
                let to = State::parse(&to).ok_or("unknown state")?;
                let facts = TransitionFacts {
                    at_ms,
                    channel: channel.map(|c| Arc::from(&*c)),
                    channel_trade_no: channel_trade_no.map(Cow::into_owned),
                    expected_fee,
                };
                if let Some(row) = self.get_mut(&trade_no).filter(|r| r.p.state == State::Pending) {
                    row.moved(to, &facts);
                }
            }
        }
        Ok(())
    }
}

/// The stage's directory of the journal at `db`: `payroute.db-stage/`.
/// A directory of its own, not files beside the database: the database
/// sits in the config's directory by default, which the reloader watches
/// (not recursively), and each projection creates, closes and removes a
/// segment — three events that woke the reloader's thread for nothing.
pub(super) fn stage_dir(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-stage", db.display()))
}

/// Segment `n`: a file named by its number in the stage's directory.
pub(super) fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(n.to_string())
}

pub(super) fn create_segment(dir: &Path, n: u64) -> Result<File, JournalError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, n))
        .map_err(|e| unavailable(&e))
}

/// Removing a projected segment is tidying: one left behind is skipped at
/// the next open (its number is recorded) and removed then.
pub(super) fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(error = %e, path = %path.display(), "journal: cannot remove a projected stage segment");
        }
    }
}

/// The segments in the stage's directory, oldest first.
pub(super) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let entries = std::fs::read_dir(dir).map_err(|e| JournalError::Open(format!("{}: {e}", dir.display())))?;
    let mut found: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path())))
        .collect();
    found.sort_unstable_by_key(|(n, _)| *n);
    Ok(found)
}

/// Replays segment `n` into `rows`. A line that does not parse is skipped
/// and logged: the last one may be a write a crash cut short (never
/// acknowledged); one in the middle is damage an operator must hear of. A
/// segment gone meanwhile was projected by its owner (a guest reads beside it).
pub(super) fn replay(n: u64, path: &Path, rows: &mut Rows) -> Result<(), JournalError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(JournalError::Open(format!("{}: {e}", path.display()))),
    };
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        let applied = serde_json::from_slice::<Record<'_>>(line)
            .map_err(|e| e.to_string())
            .and_then(|record| rows.replay(record));
        if let Err(e) = applied {
            let last = i + 1 == lines.len();
            if last {
                tracing::warn!(
                    segment = n,
                    "journal: the stage log ends in a record cut short (never acknowledged)"
                );
            } else {
                tracing::error!(segment = n, line = i + 1, error = %e, "journal: an unreadable stage record was skipped");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::journal::writer::stage) fn payment(trade_no: &str) -> NewPayment {
        NewPayment {
            trade_no: trade_no.into(),
            merchant_id: Arc::from("m1"),
            order_id: "o\"1\n".into(),
            amount: 500,
            currency: "CNY".into(),
            pay_type: None,
            protocol: Protocol::Http,
            channel_id: Some(Arc::from("acq-a")),
            channel_trade_no: None,
            state: State::Pending,
            expected_fee: 3,
            merchant_data: "{\"k\":\"v\"}".into(),
            created_at_ms: 10,
            next_query_at_ms: Some(1_000),
        }
    }

    /// What is replayed is what was served: an open, a failover and a
    /// close, with text that needs escaping, come back as the same row.
    #[test]
    fn a_replayed_log_gives_the_rows_it_was_written_from() {
        let p = payment("T1");
        let mut lines = Vec::new();
        let facts = TransitionFacts {
            at_ms: 30,
            channel: None,
            channel_trade_no: Some("CT-9".into()),
            expected_fee: Some(4),
        };
        for record in [
            open_record(&p),
            Record::Channel {
                trade_no: "T1".into(),
                channel: "acq-b".into(),
                at_ms: 20,
            },
            Record::Move {
                trade_no: "T1".into(),
                to: "paid".into(),
                at_ms: 30,
                channel: None,
                channel_trade_no: Some("CT-9".into()),
                expected_fee: Some(4),
            },
        ] {
            lines.extend(serde_json::to_vec(&record).unwrap());
            lines.push(b'\n');
        }
        let mut served = Staged::new(p);
        served.set_channel(&Arc::from("acq-b"), 20);
        served.moved(State::Paid, &facts);

        let mut rows = Rows::default();
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            rows.replay(serde_json::from_slice(line).unwrap()).unwrap();
        }
        let row = rows.get_mut("T1").unwrap();
        assert_eq!(format!("{:?}", row), format!("{served:?}"));
        assert_eq!(row.p.order_id, "o\"1\n");
        assert_eq!(
            (row.p.state, row.paid_at_ms, row.p.next_query_at_ms),
            (State::Paid, Some(30), None)
        );
        assert_eq!(row.p.channel_id.as_deref(), Some("acq-b"));
    }

    /// Replay keeps the stage's rules: a second open of a trade number, a
    /// failover or move of a payment that is not pending change nothing.
    #[test]
    fn replay_applies_only_what_the_stage_would_have() {
        let mut rows = Rows::default();
        rows.replay(open_record(&payment("T2"))).unwrap();
        let mut again = payment("T2");
        again.amount = 1;
        rows.replay(open_record(&again)).unwrap();
        let declined = Record::Move {
            trade_no: "T2".into(),
            to: "declined".into(),
            at_ms: 11,
            channel: None,
            channel_trade_no: None,
            expected_fee: None,
        };
        rows.replay(declined).unwrap();
        let paid = Record::Move {
            trade_no: "T2".into(),
            to: "paid".into(),
            at_ms: 12,
            channel: None,
            channel_trade_no: None,
            expected_fee: None,
        };
        rows.replay(paid).unwrap();
        rows.replay(Record::Channel {
            trade_no: "T2".into(),
            channel: "acq-z".into(),
            at_ms: 13,
        })
        .unwrap();
        let row = rows.get_mut("T2").unwrap();
        assert_eq!(
            (row.p.amount, row.p.state, row.updated_at_ms),
            (500, State::Declined, 11)
        );
        assert_eq!(row.p.channel_id.as_deref(), Some("acq-a"));
        assert!(rows
            .replay(Record::Move {
                trade_no: "T2".into(),
                to: "sideways".into(),
                at_ms: 14,
                channel: None,
                channel_trade_no: None,
                expected_fee: None,
            })
            .is_err());
    }
}
