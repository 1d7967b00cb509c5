//! The two parties around payroute's notifications, for the lifecycle
//! tests and load tests (`tests/it/lifecycle_crash.rs`,
//! `loadtest/outbox.sh`, `loadtest/crash.sh` through the `payroute-rig`
//! binary):
//!
//! - [`MerchantSink`]: a JSON merchant's `notify_url`. It checks
//!   `X-Payroute-Signature` (`t=..,v1=..`, HMAC-SHA256 of `"{t}.{body}"`),
//!   answers 2xx and remembers every event by `event_id` with how often it
//!   came, so a test can say "every event arrived, this many twice". It can
//!   be taken down (its port refuses connections, open ones are cut) and
//!   brought up again on the same port, or answer an error status.
//! - [`NotifyTap`]: sits between an acquirer and payroute's
//!   `/notify/{channel}`, forwards each notification unchanged and keeps
//!   payroute's answer. The fake acquirer only counts what was
//!   acknowledged; the tap says *which* notification was, so a test can
//!   check each acknowledged one against the journal. With several targets
//!   (a fleet) it sends them in turn and passes to the next one when a
//!   target does not answer.
//!
//! Why here and not in the tests: the load-test scripts need the same two
//! parties as processes, at thousands of requests a second, which a shell
//! or Python stand-in would not keep up with on a 2-core box; one
//! implementation serves both.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Width of one bucket of [`SinkStats::timeline`].
pub const BUCKET: Duration = Duration::from_millis(100);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// Serves `handler` on `listener` while `generation` holds `mine`; when it
/// moves on (a stop, or a restart on a new listener), the listener is closed
/// and every open connection cut. A counter, not a flag: a stop followed at
/// once by a restart can never be missed.
async fn serve<F, Fut>(listener: TcpListener, mut generation: watch::Receiver<u64>, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let mine = *generation.borrow();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = generation.wait_for(|g| *g != mine) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let mut generation = generation.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = generation.wait_for(|g| *g != mine) => {}
            }
        });
    }
}

/// One event as the merchant saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub trade_no: String,
    pub order_id: String,
    pub state: String,
    /// Deliveries answered 2xx (more than one: a repeat).
    pub deliveries: u32,
}

/// What a [`MerchantSink`] saw so far.
#[derive(Debug, Clone, Default)]
pub struct SinkStats {
    /// Requests received (any answer).
    pub posts: u64,
    /// Requests refused for a missing or wrong signature, or a body without `event_id`.
    pub bad: u64,
    /// Deliveries answered 2xx.
    pub delivered: u64,
    /// Distinct events delivered.
    pub events: u64,
    /// Deliveries of an event already delivered.
    pub repeats: u64,
    /// Deliveries answered 2xx per [`BUCKET`] since the sink started.
    pub timeline: Vec<u64>,
}

impl SinkStats {
    /// Deliveries per second from the first busy bucket to the last, and
    /// the lowest and highest one-second window in between.
    pub fn rate(&self) -> Option<(f64, f64, f64)> {
        let first = self.timeline.iter().position(|&n| n > 0)?;
        let last = self.timeline.iter().rposition(|&n| n > 0)?;
        let busy = &self.timeline[first..=last];
        let total: u64 = busy.iter().sum();
        let secs = busy.len() as f64 * BUCKET.as_secs_f64();
        let per_sec = (1.0 / BUCKET.as_secs_f64()) as usize;
        let windows: Vec<u64> = busy.windows(per_sec.min(busy.len())).map(|w| w.iter().sum()).collect();
        let lo = windows.iter().min().copied().unwrap_or(0) as f64;
        let hi = windows.iter().max().copied().unwrap_or(0) as f64;
        Some((total as f64 / secs, lo, hi))
    }

    pub fn to_json(&self) -> Value {
        let rate = self.rate();
        json!({
            "posts": self.posts, "bad": self.bad, "delivered": self.delivered,
            "events": self.events, "repeats": self.repeats,
            "rate_per_s": rate.map(|r| r.0), "min_1s": rate.map(|r| r.1), "max_1s": rate.map(|r| r.2),
        })
    }
}

struct SinkInner {
    secret: Vec<u8>,
    /// epay shops' MD5 key (one for every shop the sink stands for); `None`:
    /// epay notifications are refused like a bad signature.
    epay_key: Option<String>,
    started: Instant,
    /// The status answered to a well-signed delivery (200 unless set).
    status: AtomicU16,
    /// While set, deliveries wait unanswered (a merchant that hangs); when
    /// it is cleared, the waiting ones are answered 503 and not taken.
    hold: watch::Sender<bool>,
    /// Deliveries waiting now.
    held: AtomicU64,
    posts: AtomicU64,
    bad: AtomicU64,
    seen: Mutex<HashMap<String, Seen>>,
    timeline: Mutex<Vec<u64>>,
}

impl SinkInner {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.posts.fetch_add(1, Ordering::Relaxed);
        if req.method() == http::Method::GET {
            return self.epay(req.uri().query().unwrap_or_default());
        }
        let (parts, body) = req.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return answer(StatusCode::BAD_REQUEST, "unreadable body");
        };
        let signature = parts
            .headers
            .get("x-payroute-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let event: Option<Value> = serde_json::from_slice(&body).ok();
        let event = event.filter(|_| verify(&self.secret, signature, &body));
        let Some(event) = event.filter(|e| e["event_id"].is_string()) else {
            self.bad.fetch_add(1, Ordering::Relaxed);
            return answer(StatusCode::UNAUTHORIZED, "bad signature or event");
        };
        if *self.hold.borrow() {
            self.held.fetch_add(1, Ordering::Relaxed);
            let mut hold = self.hold.subscribe();
            let _ = hold.wait_for(|on| !*on).await;
            self.held.fetch_sub(1, Ordering::Relaxed);
            return answer(StatusCode::SERVICE_UNAVAILABLE, "held");
        }
        let status = StatusCode::from_u16(self.status.load(Ordering::Relaxed)).unwrap_or(StatusCode::OK);
        if !status.is_success() {
            return answer(status, "not now");
        }
        let text = |k: &str| event[k].as_str().unwrap_or_default().to_owned();
        self.take(text("event_id"), text("trade_no"), text("order_id"), text("state"));
        answer(StatusCode::OK, "ok")
    }

    /// An epay shop's notification (`GET ?pid&trade_no&out_trade_no&...
    /// &trade_status&sign&sign_type`): verified with the shop's key, kept
    /// by `trade_no` (epay's event id: the contract's "`event_id` (epay:
    /// `trade_no`)"), answered `success`.
    fn epay(&self, query: &str) -> Response<Full<Bytes>> {
        let params = payroute_mock::epay::parse(query.as_bytes());
        let pairs = params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let verified = self
            .epay_key
            .as_deref()
            .is_some_and(|key| payroute_mock::epay::verify(pairs, key));
        let get = |k: &str| params.get(k).cloned().unwrap_or_default();
        if !verified || get("trade_no").is_empty() {
            self.bad.fetch_add(1, Ordering::Relaxed);
            return answer(StatusCode::OK, "fail: bad signature");
        }
        let state = if get("trade_status") == "TRADE_SUCCESS" {
            "paid".to_owned()
        } else {
            get("trade_status")
        };
        let trade_no = get("trade_no");
        self.take(format!("epay:{trade_no}"), trade_no, get("out_trade_no"), state);
        answer(StatusCode::OK, "success")
    }

    /// Counts one delivery of an event.
    fn take(&self, event_id: String, trade_no: String, order_id: String, state: String) {
        lock(&self.seen)
            .entry(event_id)
            .or_insert_with(|| Seen {
                trade_no,
                order_id,
                state,
                deliveries: 0,
            })
            .deliveries += 1;
        let bucket = (self.started.elapsed().as_nanos() / BUCKET.as_nanos()) as usize;
        let mut timeline = lock(&self.timeline);
        if timeline.len() <= bucket {
            timeline.resize(bucket + 1, 0);
        }
        timeline[bucket] += 1;
    }
}

/// Whether `header` (`t=UNIX,v1=HEX`) signs `body` with `secret`.
pub fn verify(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", x)) => t = Some(x),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let (Some(t), Some(Ok(v1))) = (t, v1.map(hex::decode)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

/// A merchant's notify endpoint on loopback; stops when dropped.
pub struct MerchantSink {
    addr: SocketAddr,
    inner: Arc<SinkInner>,
    generation: watch::Sender<u64>,
}

impl MerchantSink {
    /// A sink on `127.0.0.1:0`, up.
    ///
    /// # Panics
    /// If it cannot listen: a test cannot go on without its merchant.
    pub async fn start(secret: &str) -> MerchantSink {
        Self::start_on("127.0.0.1:0".parse().expect("an address"), secret).await
    }

    /// A sink on `addr`, up.
    ///
    /// # Panics
    /// If it cannot listen there.
    pub async fn start_on(addr: SocketAddr, secret: &str) -> MerchantSink {
        Self::start_with(addr, secret, None).await
    }

    /// A sink on `addr` that also takes epay shops' notifications (`GET`),
    /// verified with `epay_key`.
    ///
    /// # Panics
    /// If it cannot listen there.
    pub async fn start_with(addr: SocketAddr, secret: &str, epay_key: Option<&str>) -> MerchantSink {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("merchant sink cannot listen on {addr}: {e}"));
        let addr = listener.local_addr().expect("bound address");
        let inner = Arc::new(SinkInner {
            secret: secret.as_bytes().to_vec(),
            epay_key: epay_key.map(str::to_owned),
            started: Instant::now(),
            status: AtomicU16::new(200),
            hold: watch::channel(false).0,
            held: AtomicU64::new(0),
            posts: AtomicU64::new(0),
            bad: AtomicU64::new(0),
            seen: Mutex::new(HashMap::new()),
            timeline: Mutex::new(Vec::new()),
        });
        let (generation, _) = watch::channel(0);
        let sink = MerchantSink {
            addr,
            inner,
            generation,
        };
        sink.spawn(listener);
        sink
    }

    fn spawn(&self, listener: TcpListener) {
        let inner = self.inner.clone();
        tokio::spawn(serve(listener, self.generation.subscribe(), move |req| {
            inner.clone().handle(req)
        }));
    }

    /// Where payroute should send: `notify_url`.
    pub fn url(&self) -> String {
        format!("http://{}/payroute/notify", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An outage: the port refuses connections and open ones are cut.
    pub fn down(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Back on the same port.
    ///
    /// # Panics
    /// If the port was taken meanwhile.
    pub async fn up(&self) {
        self.down();
        // The old listener closes when its task sees the stop; retry briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() > deadline => {
                    panic!("merchant sink cannot listen on {} again: {e}", self.addr)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.spawn(listener);
    }

    /// Answers well-signed deliveries with `status` from now on (e.g. 503:
    /// up but refusing).
    pub fn answer_with(&self, status: u16) {
        self.inner.status.store(status, Ordering::Relaxed);
    }

    /// Hangs (`true`): deliveries wait unanswered until `hold(false)`,
    /// then get 503 — never taken.
    pub fn hold(&self, on: bool) {
        self.inner.hold.send_replace(on);
    }

    /// Deliveries waiting on [`MerchantSink::hold`] now.
    pub fn held(&self) -> u64 {
        self.inner.held.load(Ordering::Relaxed)
    }

    /// Every event delivered, by `event_id`.
    pub fn events(&self) -> HashMap<String, Seen> {
        lock(&self.inner.seen).clone()
    }

    pub fn stats(&self) -> SinkStats {
        let seen = lock(&self.inner.seen);
        SinkStats {
            posts: self.inner.posts.load(Ordering::Relaxed),
            bad: self.inner.bad.load(Ordering::Relaxed),
            delivered: seen.values().map(|s| u64::from(s.deliveries)).sum(),
            events: seen.len() as u64,
            repeats: seen.values().map(|s| u64::from(s.deliveries.saturating_sub(1))).sum(),
            timeline: lock(&self.inner.timeline).clone(),
        }
    }
}

impl Drop for MerchantSink {
    fn drop(&mut self) {
        self.down();
    }
}

/// One notification through the tap.
#[derive(Debug, Clone)]
pub struct Tapped {
    /// payroute's trade number, from the notification's `trade_no`.
    pub trade_no: String,
    pub order_id: String,
    /// The outcome the notification states (`status`).
    pub status: String,
    /// payroute's answer; 0: no target answered.
    pub answer: u16,
    /// Whether payroute took it: a 2xx, and for epay (a `GET`) an answer
    /// saying `success`.
    pub acked: bool,
    /// `"json"` or `"epay"`.
    pub protocol: &'static str,
    /// Which target answered (index into the targets).
    pub target: usize,
}

struct TapInner {
    targets: Vec<String>,
    next: AtomicUsize,
    client: Client<HttpConnector, Full<Bytes>>,
    log: Mutex<Vec<Tapped>>,
}

/// A notification is forwarded within this, or counts as unanswered.
const TAP_TIMEOUT: Duration = Duration::from_secs(10);

impl TapInner {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return answer(StatusCode::BAD_REQUEST, "unreadable body");
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let epay = parts.method == http::Method::GET;
        // JSON: the body; epay: the query, payroute's trade number in
        // `out_trade_no` and `TRADE_SUCCESS` meaning paid.
        let stated: Value = if epay {
            let p = payroute_mock::epay::parse(parts.uri.query().unwrap_or_default().as_bytes());
            let get = |k: &str| p.get(k).cloned().unwrap_or_default();
            let status = if get("trade_status") == "TRADE_SUCCESS" {
                "paid".to_owned()
            } else {
                get("trade_status")
            };
            json!({"trade_no": get("out_trade_no"), "order_id": get("out_trade_no"), "status": status})
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        let text = |k: &str| stated[k].as_str().unwrap_or_default().to_owned();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut out = (0u16, Bytes::from_static(b"no target answered"), 0usize);
        for i in 0..self.targets.len() {
            let target = (first + i) % self.targets.len();
            let mut b = Request::builder()
                .method(parts.method.clone())
                .uri(format!("{}{path}", self.targets[target]));
            for (k, v) in &parts.headers {
                if k != http::header::HOST {
                    b = b.header(k, v);
                }
            }
            let Ok(forward) = b.body(Full::new(body.clone())) else {
                break;
            };
            let exchange = async {
                let resp = self.client.request(forward).await.ok()?;
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.ok()?.to_bytes();
                Some((status, body))
            };
            if let Ok(Some((status, body))) = tokio::time::timeout(TAP_TIMEOUT, exchange).await {
                out = (status, body, target);
                break;
            }
        }
        let ok = (200..300).contains(&out.0);
        let acked = ok && (!epay || String::from_utf8_lossy(&out.1).to_ascii_lowercase().contains("success"));
        lock(&self.log).push(Tapped {
            trade_no: text("trade_no"),
            order_id: text("order_id"),
            status: text("status"),
            answer: out.0,
            acked,
            protocol: if epay { "epay" } else { "json" },
            target: out.2,
        });
        let status = StatusCode::from_u16(out.0).unwrap_or(StatusCode::BAD_GATEWAY);
        answer(status, out.1)
    }
}

/// A notification relay on loopback; stops when dropped.
pub struct NotifyTap {
    addr: SocketAddr,
    inner: Arc<TapInner>,
    generation: watch::Sender<u64>,
}

impl NotifyTap {
    /// A tap on `127.0.0.1:0` forwarding to `targets` (base URLs such as
    /// `http://127.0.0.1:8080`; the request's path is appended).
    ///
    /// # Panics
    /// If it cannot listen, or `targets` is empty.
    pub async fn start(targets: &[String]) -> NotifyTap {
        Self::start_on("127.0.0.1:0".parse().expect("an address"), targets).await
    }

    /// The same on `addr`.
    ///
    /// # Panics
    /// If it cannot listen there, or `targets` is empty.
    pub async fn start_on(addr: SocketAddr, targets: &[String]) -> NotifyTap {
        assert!(!targets.is_empty(), "a tap needs a target");
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("notify tap cannot listen on {addr}: {e}"));
        let addr = listener.local_addr().expect("bound address");
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        let inner = Arc::new(TapInner {
            targets: targets.iter().map(|t| t.trim_end_matches('/').to_owned()).collect(),
            next: AtomicUsize::new(0),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(5))
                .build(connector),
            log: Mutex::new(Vec::new()),
        });
        let (generation, _) = watch::channel(0);
        let handler = inner.clone();
        tokio::spawn(serve(listener, generation.subscribe(), move |req| {
            handler.clone().handle(req)
        }));
        NotifyTap {
            addr,
            inner,
            generation,
        }
    }

    /// The acquirer's notify URL for `channel`.
    pub fn url(&self, channel: &str) -> String {
        format!("http://{}/notify/{channel}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every notification forwarded so far, in order.
    pub fn log(&self) -> Vec<Tapped> {
        lock(&self.inner.log).clone()
    }

    /// How many were acknowledged (2xx; epay: `success`) so far.
    pub fn acknowledged(&self) -> usize {
        lock(&self.inner.log).iter().filter(|t| t.acked).count()
    }
}

impl Drop for NotifyTap {
    fn drop(&mut self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(url: &str) -> (u16, String) {
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let req = Request::get(url).body(Full::default()).expect("request");
        let resp = client.request(req).await.expect("an answer");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// A shop notification as payroute sends it, signed with `key`.
    fn shop_query(key: &str) -> String {
        let mut params = vec![
            ("pid", "m-01"),
            ("trade_no", "T1"),
            ("out_trade_no", "shop-1"),
            ("type", "alipay"),
            ("name", "a b"),
            ("money", "12.50"),
            ("trade_status", "TRADE_SUCCESS"),
        ];
        let sign = payroute_mock::epay::sign(params.iter().copied(), key);
        params.push(("sign", &sign));
        params.push(("sign_type", "MD5"));
        let mut out = String::new();
        for (i, (k, v)) in params.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(&v.replace(' ', "+"));
        }
        out
    }

    #[tokio::test]
    async fn the_sink_takes_signed_epay_notifications_once_each() {
        let sink = MerchantSink::start_with("127.0.0.1:0".parse().expect("addr"), "msec", Some("shop-key")).await;
        let url = format!("http://{}/epay/notify?{}", sink.addr(), shop_query("shop-key"));
        assert_eq!(get(&url).await, (200, "success".to_owned()));
        assert_eq!(get(&url).await, (200, "success".to_owned()));
        let events = sink.events();
        let seen = &events["epay:T1"];
        assert_eq!(
            (seen.trade_no.as_str(), seen.order_id.as_str(), seen.state.as_str()),
            ("T1", "shop-1", "paid")
        );
        assert_eq!(seen.deliveries, 2);
        let forged = format!("http://{}/epay/notify?{}", sink.addr(), shop_query("another-key"));
        assert_eq!(get(&forged).await.1, "fail: bad signature");
        assert_eq!((sink.stats().bad, sink.stats().repeats), (1, 1));
    }

    #[tokio::test]
    async fn the_tap_reads_epay_notifications_and_their_success() {
        let target = MerchantSink::start_with("127.0.0.1:0".parse().expect("addr"), "msec", Some("shop-key")).await;
        let tap = NotifyTap::start(&[format!("http://{}", target.addr())]).await;
        let good = format!("http://{}/notify/ep-1?{}", tap.addr(), shop_query("shop-key"));
        assert_eq!(get(&good).await, (200, "success".to_owned()));
        let bad = format!("http://{}/notify/ep-1?{}", tap.addr(), shop_query("another-key"));
        assert_eq!(get(&bad).await.0, 200);
        let log = tap.log();
        assert_eq!(log.len(), 2);
        assert_eq!(
            (
                log[0].trade_no.as_str(),
                log[0].status.as_str(),
                log[0].protocol,
                log[0].acked
            ),
            ("shop-1", "paid", "epay", true)
        );
        assert!(!log[1].acked, "answered 200 but not `success`: not taken");
        assert_eq!(tap.acknowledged(), 1);
    }
}
