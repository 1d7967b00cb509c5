//! The words for how a payment and each of its attempts ended.
//!
//! Two facts, each spelled once: [`Outcome`], a request's final outcome
//! (the contract's error codes, plus `success` and `decline`), and
//! [`Verdict`], what one attempt's result means for its payment. Everything
//! else that speaks of results derives from these by a method — the
//! `outcome`, `result` and `reason` metric labels, the channel statistics,
//! the breaker, [`crate::error::PaymentError`]'s code — so a new kind of
//! ending (a `pending` payment, say) is one new variant here and a compile
//! error at every place that must decide about it, not a string to find.
//!
//! The module is a leaf: the proxy decides verdicts (`proxy::attempt`), and
//! metrics, routing statistics and errors, which sit below the proxy, only
//! read them.

/// An enum whose variants are metric labels, with `ALL` (every variant, in
/// discriminant order) and the label of each, written once: a variant then
/// indexes an array of `ALL.len()` counters, and no variant can be missing
/// from `ALL` or lack a label.
macro_rules! labelled {
    (
        $(#[$meta:meta])*
        enum $name:ident, label $label_fn:ident {
            $($(#[$vmeta:meta])* $variant:ident = $label:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every variant, in discriminant order.
            pub const ALL: [$name; [$($label),*].len()] = [$($name::$variant),*];

            pub fn $label_fn(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }
    };
}

labelled! {
    /// A request's final outcome: the contract's error code, or `success` /
    /// `decline` for an acquirer's answer (`as_str`). The label of
    /// `payroute_requests_total{outcome}`.
    enum Outcome, label as_str {
        Success = "success",
        Decline = "decline",
        /// The acquirer took the payment and will tell its outcome later.
        Pending = "pending",
        InvalidRequest = "invalid_request",
        Unauthorized = "unauthorized",
        UnknownMerchant = "unknown_merchant",
        UnknownRoute = "unknown_route",
        UnknownOrder = "unknown_order",
        DuplicateInFlight = "duplicate_in_flight",
        PayloadTooLarge = "payload_too_large",
        AmountLimitExceeded = "amount_limit_exceeded",
        DailyLimitExceeded = "daily_limit_exceeded",
        NoEligibleChannel = "no_eligible_channel",
        IdempotencyKeyReused = "idempotency_key_reused",
        RateLimited = "rate_limited",
        UpstreamFailed = "upstream_failed",
        NoChannelAvailable = "no_channel_available",
        StateUnavailable = "state_unavailable",
        UpstreamTimeout = "upstream_timeout",
        Internal = "internal_error",
    }
}

impl Outcome {
    /// The outcome a stored answer was recorded with (the state store keeps
    /// it as text, so a fleet's instances and restarts share it).
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

labelled! {
    /// A channel failure, by what is known about the request's fate. Its
    /// label (`reason`) is that of `payroute_failovers_total{reason}`.
    enum Failure, label reason {
        /// Nothing was sent: always safe to try elsewhere.
        Connect = "connect",
        /// No answer in time: the acquirer may have the payment.
        Timeout = "timeout",
        /// A 5xx, or the exchange broke after sending: the acquirer may have it.
        Upstream5xx = "5xx",
        /// A 2xx whose body states no outcome its `[channel.outcome]` lists:
        /// the acquirer answered, but what it did is unknown.
        Unstated = "unstated",
        /// The channel stated that it made nothing (an epay gateway's
        /// `code` ≠ 1): safe to try elsewhere.
        Refused = "refused",
    }
}

impl Failure {
    /// Whether the acquirer may have acted on the request.
    pub fn ambiguous(self) -> bool {
        !matches!(self, Failure::Connect | Failure::Refused)
    }

    /// Whether the channel is known to hold nothing of the request: nothing
    /// was sent, or the channel said it made nothing.
    pub fn nothing_held(self) -> bool {
        !self.ambiguous()
    }
}

/// What an attempt's result means for the payment; decided by
/// `proxy::attempt::verdict` and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx (or a body that says paid): done, commit the limits.
    Success,
    /// The body says the acquirer took the payment and will decide later:
    /// returned as-is, never failed over; notification or sweeper settle it.
    Pending,
    /// Any other answer but a 5xx (4xx declines, odd 1xx/3xx): returned
    /// as-is, never failed over — the acquirer decided.
    Decline,
    /// A 5xx when `failover_on` has no "5xx": returned as-is.
    PassFailure,
    /// A channel failure; `fail_over` when `failover_on` lists its kind.
    Failed { failure: Failure, fail_over: bool },
}

impl Verdict {
    /// Every `result` label of `payroute_attempts_total`, indexed by
    /// [`Verdict::result`].
    pub const RESULTS: [&'static str; 8] = [
        "success",
        "decline",
        "connect_error",
        "timeout",
        "upstream_5xx",
        "unstated",
        "refused",
        "pending",
    ];

    /// This attempt's `result` label, as an index into [`Verdict::RESULTS`]
    /// (metrics keep one counter per label, resolved once per channel).
    pub fn result(self) -> usize {
        match self {
            Verdict::Success => 0,
            Verdict::Decline => 1,
            // A 5xx is one label whether or not it is failed over.
            Verdict::PassFailure => 2 + Failure::Upstream5xx as usize,
            Verdict::Failed { failure, .. } => 2 + failure as usize,
            Verdict::Pending => 2 + Failure::ALL.len(),
        }
    }

    /// Whether the channel failed: a failure for its statistics and breaker.
    pub fn is_failure(self) -> bool {
        matches!(self, Verdict::PassFailure | Verdict::Failed { .. })
    }

    /// The payment's outcome if this attempt ends it.
    pub fn outcome(self) -> Outcome {
        match self {
            Verdict::Success => Outcome::Success,
            Verdict::Decline => Outcome::Decline,
            Verdict::Pending => Outcome::Pending,
            Verdict::Failed {
                failure: Failure::Timeout,
                ..
            } => Outcome::UpstreamTimeout,
            Verdict::PassFailure | Verdict::Failed { .. } => Outcome::UpstreamFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_index_their_counters_and_read_back() {
        for (i, o) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(o as usize, i, "{o:?} out of order in ALL");
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("not-a-code"), None);
    }

    #[test]
    fn verdicts_name_their_attempt_labels() {
        for (i, f) in Failure::ALL.into_iter().enumerate() {
            assert_eq!(f as usize, i, "{f:?} out of order in ALL");
        }
        let label = |v: Verdict| Verdict::RESULTS[v.result()];
        let failed = |failure| Verdict::Failed {
            failure,
            fail_over: true,
        };
        assert_eq!(label(Verdict::Success), "success");
        assert_eq!(label(Verdict::Decline), "decline");
        assert_eq!(label(Verdict::PassFailure), "upstream_5xx");
        assert_eq!(label(failed(Failure::Connect)), "connect_error");
        assert_eq!(label(failed(Failure::Timeout)), "timeout");
        assert_eq!(label(failed(Failure::Upstream5xx)), "upstream_5xx");
        assert_eq!(label(failed(Failure::Unstated)), "unstated");
        assert_eq!(label(failed(Failure::Refused)), "refused");
        assert!(!Failure::Refused.ambiguous() && Failure::Refused.nothing_held());
        assert_eq!(label(Verdict::Pending), "pending");
        assert_eq!(Verdict::Pending.outcome(), Outcome::Pending);
        assert!(!Verdict::Pending.is_failure() && failed(Failure::Unstated).is_failure());
        assert!(!Verdict::Decline.is_failure() && Verdict::PassFailure.is_failure());
        assert_eq!(failed(Failure::Timeout).outcome(), Outcome::UpstreamTimeout);
        assert_eq!(failed(Failure::Connect).outcome(), Outcome::UpstreamFailed);
    }
}
