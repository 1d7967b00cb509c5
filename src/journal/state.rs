//! A payment's states and the one table of moves between them.
//!
//! The contract's rule "a state never moves back" lives here and nowhere
//! else: the journal applies a move only if [`State::may_move`] allows it,
//! as a compare-and-set on the state it read, so a late "processing" answer,
//! a repeated notification or two instances racing can never undo a final
//! state. Kept free of I/O so the table is tested on its own.

use std::fmt;

/// Where a payment stands (contract: "Payment states and the journal").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    /// Accepted by a channel (or being sent); the outcome is not known yet.
    Pending,
    Paid,
    /// The channel said no: nothing was charged.
    Declined,
    /// No channel took it.
    Failed,
    /// Pending for longer than `close_after_ms`.
    Closed,
    /// A reversal of the attempt that holds the money was accepted.
    Reversed,
    /// Paid, then refunded in full.
    Refunded,
}

/// Why a move is refused or taken, for [`State::may_move`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    Allowed,
    /// Already in the target state: nothing to do (a repeat).
    Same,
    /// Backwards or sideways: refused.
    Refused,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Pending,
        State::Paid,
        State::Declined,
        State::Failed,
        State::Closed,
        State::Reversed,
        State::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Paid => "paid",
            State::Declined => "declined",
            State::Failed => "failed",
            State::Closed => "closed",
            State::Reversed => "reversed",
            State::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True for the states the sweeper no longer asks about.
    pub fn is_final(self) -> bool {
        self != State::Pending
    }

    /// The contract's moves:
    ///
    /// - `pending` → `paid`, `declined`, `failed`, `closed`, `reversed`;
    /// - `paid` → `refunded`; `paid` → `reversed` only when the reversal
    ///   concerns the channel that holds the payment (`same_channel`): a
    ///   reversal of an earlier, ambiguous attempt elsewhere does not undo a
    ///   payment another channel took;
    /// - `closed` and `failed` → `reversed` (an attempt of theirs whose fate
    ///   was unknown was reversed);
    /// - `declined`, `reversed`, `refunded` are final.
    pub fn may_move(self, to: State, same_channel: bool) -> Rule {
        use State::*;
        if self == to {
            return Rule::Same;
        }
        let allowed = match (self, to) {
            (Pending, Paid | Declined | Failed | Closed | Reversed) => true,
            (Paid, Refunded) => true,
            (Paid, Reversed) => same_channel,
            (Closed | Failed, Reversed) => true,
            _ => false,
        };
        if allowed {
            Rule::Allowed
        } else {
            Rule::Refused
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a payment was asked for: payroute's JSON pass-through or epay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Protocol {
    Http,
    Epay,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Epay => "epay",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "http" => Some(Protocol::Http),
            "epay" => Some(Protocol::Epay),
            _ => None,
        }
    }
}

/// A trade number as the contract allows it: 1-32 of `[A-Za-z0-9]`.
pub(crate) fn valid_trade_no(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("processing"), None);
        assert_eq!(Protocol::parse("epay"), Some(Protocol::Epay));
    }

    #[test]
    fn no_state_moves_back() {
        use State::*;
        // Every allowed move, and only those.
        let allowed = [
            (Pending, Paid),
            (Pending, Declined),
            (Pending, Failed),
            (Pending, Closed),
            (Pending, Reversed),
            (Paid, Refunded),
            (Paid, Reversed),
            (Closed, Reversed),
            (Failed, Reversed),
        ];
        for from in State::ALL {
            for to in State::ALL {
                let rule = from.may_move(to, true);
                let expected = if from == to {
                    Rule::Same
                } else if allowed.contains(&(from, to)) {
                    Rule::Allowed
                } else {
                    Rule::Refused
                };
                assert_eq!(rule, expected, "{from} -> {to}");
            }
        }
        // Nothing ever returns to pending, and a final state stays final.
        assert!(State::ALL
            .iter()
            .all(|s| *s == Pending || s.may_move(Pending, true) == Rule::Refused));
        // A reversal elsewhere does not undo a paid payment.
        assert_eq!(Paid.may_move(Reversed, false), Rule::Refused);
        assert_eq!(Pending.may_move(Reversed, false), Rule::Allowed);
    }

    #[test]
    fn trade_numbers() {
        assert!(valid_trade_no("P20260101abcXYZ09"));
        assert!(valid_trade_no(&"a".repeat(32)));
        assert!(!valid_trade_no(&"a".repeat(33)));
        assert!(!valid_trade_no(""));
        assert!(!valid_trade_no("a-b"));
    }
}
