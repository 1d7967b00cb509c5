//! Merchant limits: request rate ([`rate`]) and money per day ([`daily`]).
//!
//! Both sit before routing, so a refused payment never reaches an acquirer.
//! The per-payment `max_amount` is a pure comparison and lives in the proxy's
//! phase list; what needs state lives here.

pub(crate) mod daily;
pub(crate) mod rate;
