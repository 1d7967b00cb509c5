//! epay (易支付) V1: the protocol shops and card stores already speak.
//!
//! [`money`] converts yuan strings to fen exactly; [`sign`] is the MD5
//! signature both sides use.

pub(crate) mod form;
pub(crate) mod gateway;
pub(crate) mod money;
pub(crate) mod order;
pub(crate) mod sign;
