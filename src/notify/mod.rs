//! Notifications: what a channel tells payroute after the fact, and what
//! payroute tells a merchant.
//!
//! [`signature`] signs and verifies the JSON side's HMAC-SHA256 webhooks;
//! [`inbound`] verifies and reads a channel's notification; [`event`] is what
//! a merchant is told; [`courier`] makes one delivery to a merchant;
//! [`outbox`] sends every queued event until it is taken or given up.

pub(crate) mod courier;
pub(crate) mod event;
pub(crate) mod inbound;
pub(crate) mod outbox;
pub(crate) mod signature;
