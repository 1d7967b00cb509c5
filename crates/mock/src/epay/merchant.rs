//! A shop that speaks epay: builds and signs its orders, creates them with
//! `mapi.php`, sends a browser to `submit.php`, asks `api.php?act=order` —
//! toward payroute or toward the mock gateway alike, for tests and the demo.
//!
//! Why it is built so: a test of payroute's merchant side should send what
//! a real shop sends, so the form is signed by the same rule the gateway
//! checks ([`super::sign`]), encoded as a form, and the answer is read as
//! a shop reads it: HTTP 200 whatever happened, the outcome in `code`. The
//! raw JSON is kept beside the fields, so a test can check what is not
//! modelled here.

use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::form::{self, Params};
use super::sign::{sign, verify};

/// How long a shop waits for an answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Answers are read up to this size.
const MAX_ANSWER: usize = 1 << 20;

/// One order as a shop submits it. `Order::new` fills what a shop usually
/// sends (`alipay`, `pc`, a client IP, a name); change fields directly or
/// with the `with_*` methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub out_trade_no: String,
    /// Yuan, as text: `"1.00"`.
    pub money: String,
    /// epay's `type`: `alipay`, `wxpay`, `qqpay`, …
    pub pay_type: String,
    pub name: String,
    pub notify_url: String,
    pub return_url: String,
    /// Echoed in the notification; not sent when `None`.
    pub param: Option<String>,
    pub clientip: String,
    /// `pc`, `mobile`, `qq`, `wechat`, `alipay`, `jump`.
    pub device: String,
}

impl Order {
    pub fn new(out_trade_no: &str, money: &str) -> Order {
        Order {
            out_trade_no: out_trade_no.to_owned(),
            money: money.to_owned(),
            pay_type: "alipay".to_owned(),
            name: "payroute test".to_owned(),
            notify_url: String::new(),
            return_url: String::new(),
            param: None,
            clientip: "127.0.0.1".to_owned(),
            device: "pc".to_owned(),
        }
    }

    pub fn with_type(self, pay_type: &str) -> Order {
        Order {
            pay_type: pay_type.to_owned(),
            ..self
        }
    }

    pub fn with_name(self, name: &str) -> Order {
        Order {
            name: name.to_owned(),
            ..self
        }
    }

    pub fn with_notify_url(self, url: &str) -> Order {
        Order {
            notify_url: url.to_owned(),
            ..self
        }
    }

    pub fn with_return_url(self, url: &str) -> Order {
        Order {
            return_url: url.to_owned(),
            ..self
        }
    }

    pub fn with_param(self, param: &str) -> Order {
        Order {
            param: Some(param.to_owned()),
            ..self
        }
    }
}

/// `mapi.php`'s answer, as a shop reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Created {
    /// HTTP status (epay answers 200 to everything; payroute too).
    pub status: u16,
    /// 1 created; anything else refused, `msg` says why.
    pub code: i64,
    pub msg: String,
    /// The gateway's (or payroute's) number for the order.
    pub trade_no: Option<String>,
    pub payurl: Option<String>,
    pub qrcode: Option<String>,
    pub urlscheme: Option<String>,
    /// The whole answer.
    pub json: Value,
}

impl Created {
    pub fn ok(&self) -> bool {
        self.code == 1
    }
}

/// A shop could not get an epay answer.
#[derive(Debug, thiserror::Error)]
pub enum MerchantError {
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    #[error("{0}")]
    Client(#[from] hyper_util::client::legacy::Error),
    #[error("reading the answer: {0}")]
    Body(String),
    #[error("no answer within {TIMEOUT:?}")]
    Timeout,
    #[error("HTTP {status}, not epay JSON: {body}")]
    NotJson { status: u16, body: String },
}

/// An epay merchant account: its `pid` and MD5 key.
#[derive(Clone)]
pub struct Merchant {
    pid: String,
    key: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Merchant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merchant")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Merchant {
    pub fn new(pid: &str, key: &str) -> Merchant {
        Merchant {
            pid: pid.to_owned(),
            key: key.to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn pid(&self) -> &str {
        &self.pid
    }

    /// The order's parameters in the order a shop sends them, `sign` and
    /// `sign_type` last.
    pub fn form(&self, order: &Order) -> Vec<(&'static str, String)> {
        let mut pairs: Vec<(&'static str, String)> = vec![
            ("pid", self.pid.clone()),
            ("type", order.pay_type.clone()),
            ("out_trade_no", order.out_trade_no.clone()),
            ("notify_url", order.notify_url.clone()),
            ("return_url", order.return_url.clone()),
            ("name", order.name.clone()),
            ("money", order.money.clone()),
            ("clientip", order.clientip.clone()),
            ("device", order.device.clone()),
        ];
        if let Some(param) = &order.param {
            pairs.push(("param", param.clone()));
        }
        let signature = sign(pairs.iter().map(|(k, v)| (*k, v.as_str())), &self.key);
        pairs.push(("sign", signature));
        pairs.push(("sign_type", "MD5".to_owned()));
        pairs
    }

    /// The signed form, encoded (`application/x-www-form-urlencoded`).
    pub fn encoded(&self, order: &Order) -> String {
        form::encode(self.form(order).iter().map(|(k, v)| (*k, v.as_str())))
    }

    /// Where a browser is sent to pay: `{base}submit.php?{signed form}`.
    pub fn submit_url(&self, base: &str, order: &Order) -> String {
        format!("{}?{}", endpoint(base, "submit.php"), self.encoded(order))
    }

    /// Creates the order with `POST {base}mapi.php` (`base` may end in `/`
    /// or not). A refusal is an `Ok` with `code` ≠ 1; an `Err` is no epay
    /// answer at all.
    pub async fn mapi(&self, base: &str, order: &Order) -> Result<Created, MerchantError> {
        self.mapi_raw(base, self.encoded(order)).await
    }

    /// Sends `body` as the form to `{base}mapi.php`, as it is: for tests of
    /// what a gateway makes of a broken form.
    pub async fn mapi_raw(&self, base: &str, body: String) -> Result<Created, MerchantError> {
        let req = Request::post(endpoint(base, "mapi.php"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))?;
        let (status, json) = self.exchange(req).await?;
        let text = |name: &str| match &json[name] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        Ok(Created {
            status: status.as_u16(),
            code: code(&json),
            msg: text("msg").unwrap_or_default(),
            trade_no: text("trade_no"),
            payurl: text("payurl"),
            qrcode: text("qrcode"),
            urlscheme: text("urlscheme"),
            json,
        })
    }

    /// `GET {base}api.php?act=order&pid&key&out_trade_no`: the order's JSON
    /// as answered (`code` 1 with `status` 0 or 1, -1 unknown, -3 wrong
    /// pid or key).
    pub async fn query(&self, base: &str, out_trade_no: &str) -> Result<Value, MerchantError> {
        self.query_by(base, "out_trade_no", out_trade_no).await
    }

    /// The same, by the gateway's `trade_no`.
    pub async fn query_trade_no(&self, base: &str, trade_no: &str) -> Result<Value, MerchantError> {
        self.query_by(base, "trade_no", trade_no).await
    }

    async fn query_by(&self, base: &str, name: &str, value: &str) -> Result<Value, MerchantError> {
        let query = form::encode([
            ("act", "order"),
            ("pid", self.pid.as_str()),
            ("key", self.key.as_str()),
            (name, value),
        ]);
        let req = Request::get(format!("{}?{query}", endpoint(base, "api.php"))).body(Full::default())?;
        Ok(self.exchange(req).await?.1)
    }

    /// Whether parameters received from a gateway (a notification, a
    /// return) are signed with this merchant's key.
    pub fn verify(&self, params: &Params) -> bool {
        verify(form::pairs(params), &self.key)
    }

    async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Value), MerchantError> {
        let exchange = async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| MerchantError::Body(e.to_string()))?
                .to_bytes();
            match serde_json::from_slice(&body) {
                Ok(json) => Ok((status, json)),
                Err(_) => Err(MerchantError::NotJson {
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                }),
            }
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .unwrap_or(Err(MerchantError::Timeout))
    }
}

/// `code` as a number, whether the answer wrote it as one or as text (PHP
/// gateways do both); 0 when absent.
fn code(json: &Value) -> i64 {
    match &json["code"] {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// `{base}{file}`, with one `/` between them.
fn endpoint(base: &str, file: &str) -> String {
    if base.ends_with('/') {
        format!("{base}{file}")
    } else {
        format!("{base}/{file}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_its_form_and_verifies_with_its_key() {
        let m = Merchant::new("1001", "KEY");
        let order = Order::new("T1", "1.50").with_param("p 1");
        let form = m.form(&order);
        let names: Vec<&str> = form.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "pid",
                "type",
                "out_trade_no",
                "notify_url",
                "return_url",
                "name",
                "money",
                "clientip",
                "device",
                "param",
                "sign",
                "sign_type"
            ]
        );
        let params = form::parse(m.encoded(&order).as_bytes());
        assert_eq!(params["param"], "p 1");
        assert!(m.verify(&params));
        assert!(!Merchant::new("1001", "OTHER").verify(&params));
        assert!(m
            .submit_url("http://gw/", &order)
            .starts_with("http://gw/submit.php?pid=1001&type=alipay&out_trade_no=T1&"));
        assert_eq!(endpoint("http://gw", "api.php"), "http://gw/api.php");
    }

    #[test]
    fn reads_code_either_way() {
        assert_eq!(code(&serde_json::json!({"code": 1})), 1);
        assert_eq!(code(&serde_json::json!({"code": "-3"})), -3);
        assert_eq!(code(&serde_json::json!({})), 0);
    }
}
