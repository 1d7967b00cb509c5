//! Protocol abuse end to end (issue 18, part 3): framing attacks on the
//! payment listener, and acquirers whose answers are not HTTP, never end, or
//! announce a gigabyte. Each gets the contract's answer, and payroute's
//! memory stays bounded. (Oversized heads, dribbled heads and bodies, idle
//! connections and the connection cap are in `probe`.)

use std::net::SocketAddr;
use std::time::Duration;

use payroute_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::PAYROUTE;

async fn proxy_to(url: &str) -> Proxy {
    PAYROUTE.serve(Config::single("acq", url)).await
}

/// A payment as raw bytes, with `framing` (headers) and `body` as given.
fn raw_payment(framing: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /v1/payments HTTP/1.1\r\nHost: payroute\r\nX-Merchant-Id: m-1\r\nContent-Type: application/json\r\n{framing}\r\n{body}"
    )
    .into_bytes()
}

/// The status codes of the answers in `raw` (a connection's whole output).
fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

#[tokio::test]
async fn smuggling_attempts_reach_no_acquirer() {
    let acq = acquirer("acq").await;
    let p = proxy_to(&acq.url()).await;
    let body = payment_body(100, "CNY").to_string();
    let invalid = r#""code":"invalid_request""#;

    // Content-Length and Transfer-Encoding together: the chunked framing
    // wins (RFC 9112), the Content-Length is never used, the connection is
    // closed after the answer, and what followed the empty chunked body is
    // never taken for a second request.
    let smuggled = format!(
        "0\r\n\r\nPOST /v1/payments HTTP/1.1\r\nHost: x\r\nX-Merchant-Id: m-1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let framing = format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", smuggled.len());
    let out = raw_http(p.api.listen, &raw_payment(&framing, &smuggled)).await;
    assert_eq!(statuses(&out), [400], "{out}");
    assert!(out.contains(invalid) && out.contains("connection: close"), "{out}");

    // Two Content-Lengths that disagree: hyper's own bare 400 (RELIABILITY.md).
    let framing = format!("Content-Length: {}\r\nContent-Length: 3\r\n", body.len());
    let out = raw_http(p.api.listen, &raw_payment(&framing, &body)).await;
    assert_eq!(statuses(&out), [400], "{out}");

    // Chunked framing that is not: a size that is not hex, a chunk longer
    // than its size. Refused, and the connection ends with it.
    for chunked in ["zz\r\n{}\r\n0\r\n\r\n".to_owned(), format!("2\r\n{body}\r\n0\r\n\r\n")] {
        let out = raw_http(p.api.listen, &raw_payment("Transfer-Encoding: chunked\r\n", &chunked)).await;
        assert_eq!(statuses(&out), [400], "{out}");
        assert!(out.contains(invalid), "{out}");
    }

    // A coding payroute does not decode: a proxy in front would read this
    // body as gzip, payroute as plain bytes. Refused before it is read.
    let framing = "Transfer-Encoding: gzip, chunked\r\n";
    let out = raw_http(
        p.api.listen,
        &raw_payment(framing, &format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())),
    )
    .await;
    assert_eq!(statuses(&out), [400], "{out}");
    assert!(
        out.contains("Transfer-Encoding may only be chunked") && out.contains("connection: close"),
        "{out}"
    );

    // A gigabyte announced: 413 at once, nothing of it read.
    let started = std::time::Instant::now();
    let out = raw_http(p.api.listen, &raw_payment("Content-Length: 1073741824\r\n", &body)).await;
    assert_eq!(statuses(&out), [413], "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered when the connection closed, not at once"
    );

    assert_eq!(acq.hits(), 0, "no acquirer saw any of it");
    // The listener still serves.
    p.pay("m-1", 100).await.assert_ok();
}

/// An "acquirer" on a raw socket: reads each request's head, writes
/// `head`, then (if `endless`) 64 KiB chunks until payroute hangs up.
async fn raw_acquirer(head: &'static [u8], endless: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                if s.write_all(head).await.is_err() || !endless {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 << 10, "x".repeat(64 << 10));
                while s.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquirers_that_answer_garbage_or_without_end_are_bounded() {
    let garbage = raw_acquirer(b"SSH-2.0-OpenSSH\r\n\x00\xff\xfe not http at all\r\n\r\n", false).await;
    let endless = raw_acquirer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true).await;
    let gigabyte = raw_acquirer(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n", true).await;
    for (what, addr) in [
        ("garbage", garbage),
        ("an endless body", endless),
        ("a 1 GB body", gigabyte),
    ] {
        // No ejection: every payment meets the acquirer.
        let config = Config::single("acq", &format!("http://{addr}")).routing("eject_consecutive_failures = 1000");
        let p = PAYROUTE.serve(config).await;
        let rss_before = p.rss_kib().unwrap();
        for _ in 0..20 {
            let r = p.pay("m-1", 100).await;
            // Sent, then no answer payroute can read: the payment's fate is
            // unknown, the channel has no query to ask, so it stays pending
            // with the channel named — never a success, never a retry elsewhere.
            assert_eq!(r.status, 502, "{what}: {}", r.text());
            assert_eq!(r.ambiguous().as_deref(), Some("acq"), "{what}");
        }
        let grown = p.rss_kib().unwrap().saturating_sub(rss_before);
        // At most 1 MiB of an answer is read (upstream::client); 20 of them
        // come and go.
        assert!(grown < 64 << 10, "{what}: RSS grew {grown} KiB over 20 payments");
    }
}
