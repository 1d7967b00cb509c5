//! Upstream: talking to acquirers.
//!
//! [`client`] owns each channel's keep-alive connections (plain HTTP/1 ones in
//! [`pool`], a worker's own; TLS and h2 through hyper-util's client) and turns
//! one attempt into an [`client::AttemptResult`] that says precisely what is
//! known about the request's fate (never sent, answered, timed out, broken
//! after sending) — the fact every failover decision rests on. [`forward`] builds
//! the request an acquirer sees and the response a merchant sees.
//! [`ambiguity`] asks a channel about an attempt whose fate is unknown, and
//! [`reversal`] voids such attempts in the background.

pub(crate) mod ambiguity;
pub(crate) mod client;
pub(crate) mod forward;
mod pool;
pub(crate) mod reversal;
pub(crate) mod stated;
