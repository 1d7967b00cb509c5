//! Upstream: talking to acquirers.
//!
//! [`client`] owns one pooled keep-alive HTTP client per channel and turns one
//! attempt into an [`client::AttemptResult`] that says precisely what is known
//! about the request's fate (never sent, answered, timed out, broken after
//! sending) — the fact every failover decision rests on. [`forward`] builds
//! the request an acquirer sees and the response a merchant sees.
//! [`ambiguity`] asks a channel about an attempt whose fate is unknown, and
//! [`reversal`] voids such attempts in the background.

pub(crate) mod ambiguity;
pub(crate) mod client;
pub(crate) mod forward;
pub(crate) mod reversal;
pub(crate) mod stated;
