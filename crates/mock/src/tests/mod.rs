//! The mock over real sockets: the simulation's API and counters, scripted
//! replies and recording, shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;

use crate::{Answer, Behavior, MockAcquirer, Reply};

mod epay;
mod fault;
mod lifecycle;
mod statement;

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn mock(behavior: Behavior) -> MockAcquirer {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    MockAcquirer::bind(addr, behavior).await.expect("bind mock")
}

fn url(mock: &MockAcquirer, path: &str) -> String {
    format!("{}{}", mock.url(), path)
}

fn post(url: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request")
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).expect("request")
}

/// Sends a request and returns status and raw body; every answer is JSON.
async fn exchange(client: &TestClient, req: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
    let resp = client.request(req).await.expect("response");
    let status = resp.status();
    assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
    (status, resp.into_body().collect().await.expect("body").to_bytes())
}

/// Sends a request and returns status and parsed JSON body.
async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> (StatusCode, serde_json::Value) {
    let (status, body) = exchange(client, req).await;
    (status, serde_json::from_slice(&body).expect("json body"))
}

#[tokio::test]
async fn pays_and_counts() {
    let mock = mock(Behavior::default()).await;
    let (status, body) = send(
        &client(),
        post(&url(&mock, "/pay"), r#"{"order_id":"o-1","amount":100}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "paid");
    assert_eq!(body["order_id"], "o-1");
    assert_eq!(body["acquirer"], mock.local_addr().to_string());
    let c = mock.counters();
    assert_eq!((c.requests, c.successes, c.failures, c.hangs), (1, 1, 0, 0));
}

#[tokio::test]
async fn numeric_and_missing_order_ids() {
    let mock = mock(Behavior::default()).await;
    let client = client();
    let (_, body) = send(&client, post(&url(&mock, "/pay"), r#"{"order_id":42}"#)).await;
    assert_eq!(body["order_id"], 42);
    // A number is remembered as its text, as a query path carries it.
    assert_eq!(send(&client, get(&url(&mock, "/pay/42"))).await.0, StatusCode::OK);
    // A bad body is still a payment, just without an order id.
    let (status, body) = send(&client, post(&url(&mock, "/pay"), "not json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["order_id"].is_null());
    assert_eq!(mock.counters().requests, 2);
}

#[tokio::test]
async fn declines_with_configured_status() {
    let mock = mock(Behavior {
        success_rate: 0.0,
        fail_status: 402,
        ..Behavior::default()
    })
    .await;
    let (status, body) = send(&client(), post(&url(&mock, "/pay"), r#"{"order_id":"o-2"}"#)).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(body["status"], "declined");
    assert_eq!(body["order_id"], "o-2");
    let c = mock.counters();
    assert_eq!((c.requests, c.successes, c.failures), (1, 0, 1));
    // A declined order is not paid.
    assert_eq!(
        send(&client(), get(&url(&mock, "/pay/o-2"))).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn queries_paid_and_unknown_orders() {
    let mock = mock(Behavior::default()).await;
    let client = client();
    send(&client, post(&url(&mock, "/v1/payments"), r#"{"order_id":"o-3"}"#)).await;
    let (status, body) = send(&client, get(&url(&mock, "/v1/payments/o-3"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "paid");
    assert_eq!(body["order_id"], "o-3");
    let (status, body) = send(&client, get(&url(&mock, "/v1/payments/nope"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], "unknown");
    assert_eq!(mock.counters().queries, 2);
    assert_eq!(mock.counters().requests, 1);
}

#[tokio::test]
async fn percent_encoded_query_matches() {
    let mock = mock(Behavior::default()).await;
    let client = client();
    send(&client, post(&url(&mock, "/pay"), r#"{"order_id":"a/b c"}"#)).await;
    assert_eq!(
        send(&client, get(&url(&mock, "/pay/a%2Fb%20c"))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn reversal_forgets_order() {
    let mock = mock(Behavior::default()).await;
    let client = client();
    send(&client, post(&url(&mock, "/pay"), r#"{"order_id":"o-4"}"#)).await;
    let (status, body) = send(&client, post(&url(&mock, "/pay/o-4/reverse"), "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "reversed");
    let c = mock.counters();
    // A reversal is not a payment attempt.
    assert_eq!((c.reversals, c.requests), (1, 1));
    assert_eq!(
        send(&client, get(&url(&mock, "/pay/o-4"))).await.0,
        StatusCode::NOT_FOUND
    );
    // Reversing again is still fine (idempotent).
    assert_eq!(
        send(&client, post(&url(&mock, "/pay/o-4/reverse"), "")).await.0,
        StatusCode::OK
    );
    assert_eq!(mock.counters().reversals, 2);
}

#[tokio::test]
async fn set_behavior_takes_effect() {
    let mock = mock(Behavior::default()).await;
    let client = client();
    assert_eq!(send(&client, post(&url(&mock, "/pay"), "{}")).await.0, StatusCode::OK);
    let failing = Behavior {
        success_rate: 0.0,
        ..Behavior::default()
    };
    mock.set_behavior(failing.clone());
    assert_eq!(mock.behavior(), Answer::Simulated(failing));
    let (status, body) = send(&client, post(&url(&mock, "/pay"), "{}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "failed");
    let c = mock.counters();
    assert_eq!((c.requests, c.successes, c.failures), (2, 1, 1));
}

#[tokio::test]
async fn latency_delays_answer() {
    let mock = mock(Behavior {
        latency_ms: 100,
        jitter_ms: 20,
        ..Behavior::default()
    })
    .await;
    let start = tokio::time::Instant::now();
    assert_eq!(send(&client(), post(&url(&mock, "/pay"), "{}")).await.0, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn hang_gets_no_answer_until_shutdown() {
    let mock = mock(Behavior {
        hang_rate: 1.0,
        ..Behavior::default()
    })
    .await;
    let client = client();
    let pending = client.request(post(&url(&mock, "/pay"), r#"{"order_id":"h"}"#));
    tokio::pin!(pending);
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut pending).await;
    assert!(waited.is_err(), "a hanging request must not be answered");
    let c = mock.counters();
    assert_eq!((c.requests, c.hangs, c.successes, c.failures), (1, 1, 0, 0));

    // Shutdown releases it: the client sees the connection close, no answer.
    mock.shutdown();
    let released = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("hanging request released by shutdown");
    assert!(released.is_err(), "released request must not get an answer");
}

#[tokio::test]
async fn h2c_prior_knowledge_and_health() {
    let mock = mock(Behavior::default()).await;
    let client: TestClient = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let resp = client.request(get(&url(&mock, "/-/health"))).await.expect("health");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let (status, _) = send(&client, post(&url(&mock, "/pay"), r#"{"order_id":1}"#)).await;
    assert_eq!(status, StatusCode::OK);
    // Health checks are not counted.
    assert_eq!(mock.counters().requests, 1);
    assert_eq!(mock.counters().connections, 1, "one h2 connection carries both");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let mock = mock(Behavior::default()).await;
    let addr = mock.local_addr();
    mock.shutdown();
    // The accept loop notices the signal asynchronously; give it a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn dropping_last_handle_shuts_down() {
    let mock = mock(Behavior::default()).await;
    let addr = mock.local_addr();
    let clone = mock.clone();
    drop(mock);
    // A clone keeps it alive.
    assert_eq!(
        send(&client(), get(&format!("http://{addr}/x"))).await.0,
        StatusCode::NOT_FOUND
    );
    drop(clone);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Scripted replies in turn, each from a fresh count, over one recording mock.
#[tokio::test]
async fn fake_acquirer_behaviours() {
    let a = MockAcquirer::builder().name("a").record().start().await.expect("start");
    let c = client();
    let url = url(&a, "/v1/x?q=1");
    let req = Request::post(&url)
        .header("x-h", "v")
        .body(Full::new(Bytes::from_static(b"hello")))
        .expect("request");
    let (status, body) = send(&c, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["acquirer"], "a");
    let rec = a.last_received().expect("recorded");
    assert_eq!((rec.method.as_str(), rec.path.as_str()), ("POST", "/v1/x?q=1"));
    assert_eq!(rec.header("x-h").as_deref(), Some("v"));
    assert_eq!(&rec.body[..], b"hello");

    let statuses = |n: usize| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let mut v = Vec::new();
            for _ in 0..n {
                v.push(exchange(&c, post(&url, "")).await.0.as_u16());
            }
            v
        }
    };
    a.set_behavior(Reply::ok().failing_first(2, 502));
    assert_eq!(statuses(3).await, [502, 502, 200]);

    a.set_behavior(Reply::ok().failing(0.5, 503));
    assert_eq!(statuses(6).await, [200, 503, 200, 503, 200, 503]);

    a.set_behavior(Reply::status(402).with_body("{\"declined\":true}"));
    let (status, body) = exchange(&c, post(&url, "")).await;
    assert_eq!((status.as_u16(), &body[..]), (402, &b"{\"declined\":true}"[..]));

    a.set_behavior(Reply::ok().with_delay(Duration::from_millis(200)));
    let start = tokio::time::Instant::now();
    exchange(&c, post(&url, "")).await;
    assert!(start.elapsed() >= Duration::from_millis(190));

    a.set_behavior(Reply::hang());
    let hung = tokio::time::timeout(Duration::from_millis(300), exchange(&c, post(&url, ""))).await;
    assert!(hung.is_err(), "a hanging acquirer answered");
    assert_eq!(a.hits(), 13);
}

#[tokio::test]
async fn rules_recording_and_waiting() {
    let a = MockAcquirer::builder()
        .name("a")
        .behavior(Reply::status(503))
        .record()
        .start()
        .await
        .expect("start");
    a.on("GET", "/v1/payments/*", Reply::status(404));
    a.on(
        "POST",
        "/v1/payments",
        Reply::ok().with_delay(Duration::from_millis(300)),
    );
    let c = client();
    let paying = {
        let (c, url) = (c.clone(), url(&a, "/v1/payments"));
        tokio::spawn(async move { send(&c, post(&url, r#"{"order_id":"o-9"}"#)).await })
    };
    assert!(a.wait_count("POST", "/v1/payments", 1, Duration::from_secs(5)).await);
    assert_eq!(a.in_flight(), 1, "the payment is being answered");
    assert_eq!(
        send(&c, get(&url(&a, "/v1/payments/o-9"))).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = send(&c, post(&url(&a, "/v1/payments/o-9/refund"), "{}")).await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::SERVICE_UNAVAILABLE, &"failed".into())
    );
    let (status, body) = paying.await.expect("payment task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!((&body["status"], &body["order_id"]), (&"paid".into(), &"o-9".into()));

    assert_eq!(a.hits(), 3);
    assert_eq!(a.count("GET", "/v1/payments/*"), 1);
    assert_eq!(a.received_to("POST", "/v1/payments/*/refund").len(), 1);
    assert_eq!(a.received()[0].json()["order_id"], "o-9");
    assert_eq!((a.in_flight(), a.max_in_flight()), (0, 2));
    assert!(
        !a.wait_hits(4, Duration::from_millis(100)).await,
        "a fourth request arrived"
    );
    // Scripted answers leave the simulation's counters alone.
    assert_eq!(a.counters().requests, 0);
}
