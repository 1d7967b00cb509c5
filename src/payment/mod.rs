//! What a request says about a payment, and who is asking.
//!
//! [`facts`] pulls amount, currency and order id out of the JSON body by the
//! configured pointers; [`auth`] checks the merchant's API key. Both are pure
//! functions of the request and the config, so they are cheap to test and
//! cannot touch an acquirer.

pub(crate) mod auth;
pub(crate) mod facts;
pub(crate) mod trade_no;
