//! epay (易支付, 彩虹易支付 V1) in the mock's hands: its signature, forms
//! and money ([`sign`], [`verify`], [`fen`], [`Params`]), the gateway's
//! order book, and a shop — [`Merchant`] to create and query orders,
//! [`Receiver`] to receive notifications — for payroute's tests and demo.
//!
//! Why a folder of its own: everything here speaks epay and nothing else,
//! and none of it depends on how the mock serves requests. The mock as an
//! epay gateway (`Protocol::Epay`, the crate documentation says what it
//! answers) is built on top of these pieces, in `crate::gateway`; the shop
//! uses them without the mock at all, so it can stand in front of payroute
//! as easily as in front of the mock.

pub(crate) mod book;
pub(crate) mod clock;
pub(crate) mod form;
mod merchant;
pub(crate) mod money;
mod receiver;
mod sign;

pub use form::{parse, Params};
pub use merchant::{Created, Merchant, MerchantError, Order};
pub use money::fen;
pub use receiver::{Notified, Receiver};
pub use sign::{sign, verify};
