//! Notifications: what a channel tells payroute after the fact, and what
//! payroute tells a merchant.
//!
//! [`signature`] signs and verifies the JSON side's HMAC-SHA256 webhooks.

pub(crate) mod signature;
