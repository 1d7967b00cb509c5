//! The mock as an epay (易支付 V1) gateway (`Protocol::Epay`): which page a
//! request is for, and how epay answers.
//!
//! Pages, by the path's last segment, so the gateway can sit under any base
//! path (`{base}/mapi.php`): `mapi.php` creates an order ([`create`]),
//! `api.php` answers `act=order` ([`query`]), `pay/{trade_no}` is the
//! cashier a `payurl` points to (a small HTML page, so a browser following
//! a pay link lands somewhere; [`page`], with the shapes every answer
//! shares). Buyers pay, or not, in their own tasks ([`buyer`]), which send
//! the notifications.
//!
//! Why it is built so: epay states every outcome in a JSON body answered
//! with HTTP 200 (`code` 1 or a refusal with a `msg`), which is exactly
//! what payroute must learn not to take at face value, so the gateway
//! never lets the HTTP status speak. The API pieces epay defines
//! (signature, forms, money, the order book) are [`crate::epay`]'s; this
//! folder is only the gateway's behaviour on top of them.

mod buyer;
mod create;
mod page;
mod query;

use std::sync::Arc;

use http::request::Parts;

use crate::answer::{Behavior, Dice, EpayGateway};
use crate::state::{Answered, State};

/// The gateway's answer to one request.
pub(crate) async fn answer(
    state: &Arc<State>,
    b: &Behavior,
    account: &EpayGateway,
    dice: &Dice,
    parts: &Parts,
    body: &[u8],
) -> Answered {
    let mut segments = parts.uri.path().rsplit('/');
    match (segments.next(), segments.next()) {
        (Some("mapi.php"), _) => create::create(state, b, account, dice, body).await,
        (Some("api.php"), _) => Ok(query::api(state, account, parts, body)),
        (Some(trade_no), Some("pay")) if !trade_no.is_empty() => Ok(page::cashier(state, account, trade_no)),
        _ => Ok(page::not_found()),
    }
}
