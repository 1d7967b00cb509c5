//! Notifications: what a channel tells payroute after the fact, and what
//! payroute tells a merchant.
//!
//! [`signature`] signs and verifies the JSON side's HMAC-SHA256 webhooks;
//! [`inbound`] verifies and reads a channel's notification; [`courier`] makes
//! one delivery to a merchant.

pub(crate) mod courier;
pub(crate) mod event;
pub(crate) mod inbound;
pub(crate) mod signature;
