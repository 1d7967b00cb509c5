//! The request an acquirer sees and the response a merchant sees.
//!
//! Same method, path, query and body; hop-by-hop headers dropped (they
//! describe one connection, not the message) — the standard ones and any the
//! sender names in its `Connection` header (RFC 9110 §7.6.1), both ways;
//! the merchant's `Authorization`
//! is never forwarded (it is the merchant's key to payroute, not to the
//! acquirer); the channel's configured headers are added; the request id goes
//! along for correlation in the acquirer's logs.
//!
//! `X-Payroute-*` headers are payroute's own word: none crosses from one side
//! to the other, so a merchant cannot hand an acquirer a trade number and an
//! acquirer cannot tell a merchant which channel served it or that a
//! response was replayed.

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::Full;

use crate::config::ChannelConfig;
use crate::error::Body;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-payroute-request-id");
/// payroute's trade number, on every request about a payment.
pub(crate) const TRADE_NO: HeaderName = HeaderName::from_static("x-payroute-trade-no");

/// Headers that belong to one hop (RFC 9110 §7.6.1), those we recompute,
/// and payroute's own.
fn skip(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-payroute-")
        || matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "host"
                | "content-length"
        )
}

/// Does `headers`' `Connection` name `name` (a hop-by-hop header of the
/// sender's own)? Rare, so looked up only when a `Connection` is present.
fn named_by_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()))
        })
    })
}

/// The headers of `from` that may cross to the other side.
fn crossing(from: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    let connection = from.contains_key(header::CONNECTION);
    let hop = move |name: &HeaderName| skip(name) || (connection && named_by_connection(from, name));
    from.iter().filter(move |(name, _)| !hop(name))
}

/// Builds the upstream request for `path_and_query` on `channel`; it names
/// the payment by `trade_no` when it is about one.
pub(crate) fn request(
    channel: &ChannelConfig,
    method: Method,
    path_and_query: &str,
    incoming: &HeaderMap,
    body: Bytes,
    request_id: &HeaderValue,
    trade_no: Option<&str>,
) -> Result<Request<Body>, http::Error> {
    let uri = Uri::builder()
        .scheme(channel.scheme.clone())
        .authority(channel.origin.clone())
        .path_and_query(format!("{}{}", channel.base_path, path_and_query))
        .build()?;
    let mut req = Request::builder().method(method).uri(uri).body(Full::new(body))?;
    let headers = req.headers_mut();
    headers.reserve(incoming.len() + channel.headers.len() + 1);
    for (name, value) in crossing(incoming) {
        if name != header::AUTHORIZATION {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in &channel.headers {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(REQUEST_ID, request_id.clone());
    if let Some(t) = trade_no {
        headers.insert(TRADE_NO, HeaderValue::from_str(t)?);
    }
    Ok(req)
}

/// Copies an acquirer's response headers that may travel to the merchant.
pub(crate) fn response_headers(upstream: &HeaderMap, into: &mut HeaderMap) {
    for (name, value) in crossing(upstream) {
        into.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn strips_merchant_auth_and_adds_channel_headers() {
        let cfg = Config::parse(
            "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:9/base\"\nheaders = { authorization = \"Bearer acq\", x-acq = \"1\" }\n",
            "t.toml".as_ref(),
        )
        .unwrap();
        let mut incoming = HeaderMap::new();
        incoming.insert(header::AUTHORIZATION, "Bearer merchant-key".parse().unwrap());
        incoming.insert(header::CONNECTION, "keep-alive".parse().unwrap());
        incoming.insert("x-custom", "kept".parse().unwrap());
        incoming.insert("x-payroute-trade-no", "forged".parse().unwrap());
        let req = request(
            &cfg.channels[0],
            Method::POST,
            "/v1/payments?x=1",
            &incoming,
            Bytes::from_static(b"{}"),
            &HeaderValue::from_static("rid"),
            Some("T1"),
        )
        .unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:9/base/v1/payments?x=1");
        assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer acq");
        assert_eq!(req.headers().get_all(header::AUTHORIZATION).iter().count(), 1);
        assert_eq!(req.headers()["x-custom"], "kept");
        assert_eq!(req.headers()["x-acq"], "1");
        assert_eq!(req.headers()[REQUEST_ID], "rid");
        assert!(req.headers().get(header::CONNECTION).is_none());
        assert_eq!(req.headers()[TRADE_NO], "T1", "payroute's own, not the merchant's");
    }

    /// Finding 11 of issue 18: headers a `Connection` header names are the
    /// sender's hop-by-hop ones, dropped both ways.
    #[test]
    fn headers_named_in_connection_stay_on_their_hop() {
        let cfg = Config::parse(
            "[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:9\"\nheaders = { x-acq = \"1\" }\n",
            "t.toml".as_ref(),
        )
        .unwrap();
        let mut incoming = HeaderMap::new();
        incoming.append(header::CONNECTION, "keep-alive, X-Hop-One".parse().unwrap());
        incoming.append(header::CONNECTION, "x-hop-two ,x-acq".parse().unwrap());
        incoming.insert("x-hop-one", "1".parse().unwrap());
        incoming.insert("x-hop-two", "2".parse().unwrap());
        incoming.insert("x-end-to-end", "kept".parse().unwrap());
        let req = request(
            &cfg.channels[0],
            Method::POST,
            "/p",
            &incoming,
            Bytes::new(),
            &HeaderValue::from_static("rid"),
            None,
        )
        .unwrap();
        let h = req.headers();
        assert!(h.get("x-hop-one").is_none() && h.get("x-hop-two").is_none(), "{h:?}");
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h["x-end-to-end"], "kept");
        // The channel's own headers are payroute's, not the merchant's hop.
        assert_eq!(h["x-acq"], "1");

        let mut upstream = HeaderMap::new();
        upstream.insert(header::CONNECTION, "x-acq-hop".parse().unwrap());
        upstream.insert("x-acq-hop", "1".parse().unwrap());
        upstream.insert("x-acq-note", "kept".parse().unwrap());
        let mut out = HeaderMap::new();
        response_headers(&upstream, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out["x-acq-note"], "kept");
    }

    #[test]
    fn an_acquirers_payroute_headers_never_reach_the_merchant() {
        let mut upstream = HeaderMap::new();
        upstream.insert("x-payroute-channel", "evil".parse().unwrap());
        upstream.insert("x-payroute-replayed", "true".parse().unwrap());
        upstream.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let mut out = HeaderMap::new();
        response_headers(&upstream, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[header::CONTENT_TYPE], "application/json");
    }
}
