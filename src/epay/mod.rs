//! epay (易支付) V1: the protocol shops and card stores already speak.
//!
//! The protocol's pieces, free of serving and of payroute's state: [`form`]
//! keeps parameters as received; [`money`] converts yuan strings to fen
//! exactly; [`sign`] is the MD5 signature both sides use; [`order`] checks
//! a merchant's payment request; [`gateway`] is payroute as a merchant of
//! an epay channel (the form it sends, the answers it reads); [`merchant`]
//! is payroute as a gateway to its epay merchants (the answers and signed
//! parameters they expect). The endpoints that use them are
//! `proxy::epay` (merchants), `proxy::attempt` and `upstream::ambiguity`
//! (channels), and `proxy::notification` (a channel's notify).

pub(crate) mod form;
pub(crate) mod gateway;
pub(crate) mod merchant;
pub(crate) mod money;
pub(crate) mod order;
pub(crate) mod sign;
