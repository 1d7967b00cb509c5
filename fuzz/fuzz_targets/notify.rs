//! Notifications from channels, and channels' answers, on arbitrary bytes.
//!
//! - A JSON channel's `POST /notify/{channel}` (`notify::inbound::read`):
//!   the body signed as the channel would sign it (so the reader gets past
//!   the HMAC and parses), unsigned, and signed with the input's first
//!   bytes as the header value (never a valid signature).
//! - An epay gateway's `GET /notify/{channel}` (`Params::parse` then
//!   `epay::gateway::read_notice`): as received, then with payroute's pid
//!   set and signed with the channel's key, so the reading goes past the
//!   signature.
//! - The same bytes as a JSON channel's answer (`upstream::stated`) and an
//!   epay gateway's `mapi.php` / `api.php` answers (`epay::gateway`).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use payroute::fuzz_api::{EpayParams, Notify, Unread};

static NOTIFY: LazyLock<Notify> = LazyLock::new(Notify::default);

fuzz_target!(|body: &[u8]| {
    let n = &*NOTIFY;

    // JSON channel.
    let signature = n.json_signature(body);
    let read = n.read_json(Some(signature.as_bytes()), body);
    if let Ok(r) = &read {
        assert!(!r.order_id.is_empty() && r.order_id.len() <= 255);
        assert!(r.dedupe_key.starts_with(&r.order_id));
    }
    let hint = read.as_ref().ok().map(|r| r.order_id.clone());
    for forged in [None, Some(&body[..body.len().min(80)])] {
        match n.read_json(forged, body) {
            Err(Unread::BadSignature { hint: h }) => {
                if hint.is_some() {
                    assert_eq!(h, hint, "the unverified hint is the order id a signed read finds");
                }
            }
            other => panic!("an unsigned or forged notification was read: {other:?}"),
        }
    }

    // epay gateway, as received: no forged signature gets through.
    if let Ok(paid) = n.read_epay(body) {
        assert!(!paid.trade_no.is_empty());
        assert!(paid.dedupe_key.starts_with(&paid.trade_no));
    }
    // ... and as the gateway would sign it.
    if let Ok(mut params) = EpayParams::parse(body) {
        params.set("pid", n.epay_pid());
        let signed = params.signed(n.epay_key());
        match n.read_epay_params(&signed) {
            Ok(paid) => {
                assert!(paid.amount_fen <= 10_000_000_000_000);
                assert_eq!(Some(paid.trade_no.as_str()), signed.get("out_trade_no"));
            }
            Err(Unread::BadSignature { .. }) => panic!("a notice signed with the channel's key was refused"),
            Err(Unread::Malformed(_) | Unread::NotSuccess) => {}
        }
    }

    // Answers.
    let (_stated, trade_no) = n.read_answer(body);
    if let Some(t) = trade_no {
        assert!(!t.is_empty() && t.len() <= 128);
    }
    let _ = n.read_epay_answers(body);
});
