//! TLS both ways, with real handshakes and certificates made in the test:
//! merchants over TLS 1.2 and 1.3, HTTP/1.1 and HTTP/2 (and curl when the
//! machine has it); merchant client certificates; https acquirers with
//! mutual TLS, and failover when one cannot be verified; certificate
//! renewal without a restart, and a broken renewal refused.

use std::path::Path;
use std::time::Duration;

use http::Method;
use payroute_mock::MockAcquirer;
use payroute_testkit::tls::{client_config, request, server_config, tls_acquirer, Ca, Identity, TLS12, TLS13};
use payroute_testkit::*;
use rustls::ProtocolVersion;
use serde_json::json;

use crate::PAYROUTE;

const RELOAD_WAIT: Duration = Duration::from_secs(10);

/// A proxy whose payment listener uses `server.pem`/`server.key` from its
/// config directory (plus `tls_extra` lines), one plain acquirer channel and
/// merchant m-1.
async fn tls_proxy(server_id: &Identity, ca: &Ca, tls_extra: &str, acq: &MockAcquirer) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    server_id.write(dir.path(), "server");
    ca.write(dir.path(), "ca.pem");
    serve_tls_listener(dir, tls_extra, Config::single("a", &acq.url())).await
}

/// `config` with TLS on the payment listener (`server.pem`/`server.key`
/// plus `tls_extra` lines), served from `dir`.
async fn serve_tls_listener(dir: tempfile::TempDir, tls_extra: &str, config: Config) -> Proxy {
    let config = config
        .server_tls("cert = \"server.pem\"\nkey = \"server.key\"")
        .server_tls(tls_extra);
    serve_from(dir, config).await
}

/// `config` written to `dir`/routes.toml, beside the files it names.
async fn serve_from(dir: tempfile::TempDir, config: Config) -> Proxy {
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, config.to_string()).unwrap();
    PAYROUTE.serve_in(dir, path, &[]).await
}

fn payment() -> String {
    payment_body(1250, "CNY").to_string()
}

const PAY_HEADERS: &[(&str, &str)] = &[("x-merchant-id", "m-1"), ("content-type", "application/json")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchants_pay_over_tls_12_and_13_with_http1_and_h2() {
    let acq = acquirer("a").await;
    let ca = Ca::new("payroute test CA");
    let id = ca.server("payroute");
    let p = tls_proxy(&id, &ca, "", &acq).await;

    for (version, expected) in [(&TLS12, ProtocolVersion::TLSv1_2), (&TLS13, ProtocolVersion::TLSv1_3)] {
        for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
            let config = client_config(&ca, None, version, &[alpn]);
            let (r, session) = request(p.listen, config, Method::POST, "/v1/payments", PAY_HEADERS, payment())
                .await
                .unwrap_or_else(|e| panic!("{expected:?} {}: {e}", String::from_utf8_lossy(alpn)));
            r.assert_ok();
            assert_eq!(r.channel().as_deref(), Some("a"));
            assert_eq!(session.version, Some(expected));
            assert_eq!(session.alpn.as_deref(), Some(alpn), "ALPN");
            assert_eq!(session.server_cert, id.fingerprint());
        }
    }
    assert_eq!(acq.hits(), 4);

    // The summary in the ready line says TLS is on, with the certificate's fingerprint.
    let logs = p.logs().join("\n");
    assert!(
        logs.contains(&format!("certificate sha256 {}", &id.fingerprint()[..16])),
        "{logs}"
    );
    // Plain HTTP on the TLS port gets no HTTP answer; admin stays plain HTTP.
    let plain = try_send(&p.client, Method::GET, &p.url("/v1/payments"), &[], "").await;
    assert!(plain.is_err(), "plain HTTP on the TLS listener: {plain:?}");
    assert_eq!(p.admin_get("/-/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_certificate_sends_nothing() {
    let acq = acquirer("a").await;
    let ca = Ca::new("payroute test CA");
    let p = tls_proxy(&ca.server("payroute"), &ca, "", &acq).await;
    // A client trusting another CA refuses the proxy's certificate.
    let other = Ca::new("other CA");
    let config = client_config(&other, None, &TLS13, &[b"http/1.1"]);
    let err = request(p.listen, config, Method::POST, "/v1/payments", PAY_HEADERS, payment())
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // (TLS 1.0/1.1 do not exist in rustls; curl_speaks_tls_to_payroute checks
    // that a TLS 1.1 client is refused, where its TLS library still has 1.1.)
    assert_eq!(acq.hits(), 0);
}

/// curl, when the machine has it: TLS 1.2, TLS 1.3, HTTP/2, and no TLS 1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_tls_to_payroute() {
    let Ok(version) = std::process::Command::new("curl").arg("--version").output() else {
        eprintln!("curl not installed: skipping the curl part of the TLS tests");
        return;
    };
    let features = String::from_utf8_lossy(&version.stdout).to_lowercase();
    let acq = acquirer("a").await;
    let ca = Ca::new("payroute test CA");
    let p = tls_proxy(&ca.server("payroute"), &ca, "", &acq).await;
    let ca_file = p.dir().join("ca.pem");
    let url = format!("https://localhost:{}/v1/payments", p.listen.port());
    let curl = |extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .arg("--cacert")
            .arg(&ca_file)
            .args(["--resolve", &format!("localhost:{}:127.0.0.1", p.listen.port())])
            .args(["-H", "x-merchant-id: m-1", "-H", "content-type: application/json"])
            .args(["-d", &payment()])
            .args(extra)
            .arg(&url)
            .output()
            .expect("run curl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = curl(&["--tlsv1.2", "--tls-max", "1.2", "--http1.1"]);
    assert!(ok && out == "200 1.1", "TLS 1.2: {out} {err}");
    let (ok, out, err) = curl(&["--tlsv1.3", "--http1.1"]);
    assert!(ok && out == "200 1.1", "TLS 1.3: {out} {err}");
    if features.contains("http2") {
        let (ok, out, err) = curl(&["--tlsv1.3", "--http2"]);
        assert!(ok && out == "200 2", "HTTP/2 over TLS: {out} {err}");
    } else {
        eprintln!("curl without HTTP/2: skipping its h2 check");
    }
    // TLS 1.1 at most: refused (if this curl's TLS library still offers it at all).
    let (ok, out, _) = curl(&["--tlsv1.1", "--tls-max", "1.1"]);
    assert!(!ok, "TLS 1.1 must be refused: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ca_requires_merchant_certificates() {
    let acq = acquirer("a").await;
    let ca = Ca::new("payroute test CA");
    let merchants = Ca::new("merchant CA");
    let dir = tempfile::tempdir().unwrap();
    merchants.write(dir.path(), "merchants.pem");
    ca.server("payroute").write(dir.path(), "server");
    let config = Config::single("a", &acq.url());
    let p = serve_tls_listener(dir, "client_ca = \"merchants.pem\"", config).await;
    assert!(p.logs().join("\n").contains("client certificates required"));

    for version in [&TLS12, &TLS13] {
        // No certificate: refused (TLS 1.2 in the handshake, TLS 1.3 right after it).
        let anonymous = client_config(&ca, None, version, &[b"http/1.1"]);
        let r = request(
            p.listen,
            anonymous,
            Method::POST,
            "/v1/payments",
            PAY_HEADERS,
            payment(),
        )
        .await;
        assert!(r.is_err(), "{version:?} without a client certificate: {r:?}");
        // A certificate from another CA: refused.
        let stranger = Ca::new("stranger CA").client("m-1");
        let config = client_config(&ca, Some(&stranger), version, &[b"http/1.1"]);
        let r = request(p.listen, config, Method::POST, "/v1/payments", PAY_HEADERS, payment()).await;
        assert!(r.is_err(), "{version:?} with a stranger's certificate: {r:?}");
        // A certificate signed by client_ca: served.
        let good = merchants.client("m-1");
        let config = client_config(&ca, Some(&good), version, &[b"h2"]);
        let (r, _) = request(p.listen, config, Method::POST, "/v1/payments", PAY_HEADERS, payment())
            .await
            .unwrap_or_else(|e| panic!("{version:?} with a merchant certificate: {e}"));
        r.assert_ok();
    }
    assert_eq!(acq.hits(), 2, "refused connections never reach an acquirer");
}

/// Files for an https channel: the acquirer's CA, our client certificate.
fn channel_tls_files(dir: &Path, acq_ca: &Ca, client: &Identity) {
    acq_ca.write(dir, "acq-ca.pem");
    client.write(dir, "client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_to_an_acquirer() {
    let acq_ca = Ca::new("acquirer CA");
    let issued_by_acquirer = Ca::new("acquirer's client CA");
    let client = issued_by_acquirer.client("payroute");
    let acq = tls_acquirer(
        "secure",
        server_config(&acq_ca.server("acquirer"), Some(&issued_by_acquirer), &[&TLS13, &TLS12]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    channel_tls_files(dir.path(), &acq_ca, &client);
    let config = Config::single("secure", &format!("{}/gw", acq.https_url())).amend(
        "secure",
        "tls = { ca = \"acq-ca.pem\", cert = \"client.pem\", key = \"client.key\" }\nheaders = { authorization = \"Bearer acq-token\" }",
    );
    let p = serve_from(dir, config).await;

    for _ in 0..3 {
        let r = p.pay("m-1", 1250).await;
        r.assert_ok();
        assert_eq!(r.channel().as_deref(), Some("secure"));
        assert_eq!(r.attempts(), Some(1));
    }
    assert_eq!(acq.hits(), 3);
    let seen = acq.handshakes();
    assert!(!seen.is_empty());
    for h in &seen {
        assert_eq!(h.sni.as_deref(), Some("localhost"), "SNI from the url host");
        assert!(h.client_cert, "client certificate presented");
        assert_eq!(h.version, Some(ProtocolVersion::TLSv1_3));
    }
    assert!(seen.len() < 3, "connections are pooled: {} handshakes", seen.len());
    let forwarded = acq.last_received().unwrap();
    assert!(forwarded.path.starts_with("/gw/v1/payments"), "{}", forwarded.path);
    assert_eq!(forwarded.header("authorization").as_deref(), Some("Bearer acq-token"));
}

/// A channel that cannot verify its acquirer (wrong `ca`), or that the
/// acquirer refuses (no client certificate, TLS 1.2 and 1.3), fails to
/// *connect*: the payment fails over to the next channel, and nothing is
/// ambiguous because nothing was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverifiable_or_refused_tls_fails_over_as_connect_failure() {
    let acq_ca = Ca::new("acquirer CA");
    let wrong_ca = Ca::new("some other CA");
    let issued_by_acquirer = Ca::new("acquirer's client CA");
    let client = issued_by_acquirer.client("payroute");
    let server_id = acq_ca.server("acquirer");
    let acq13 = tls_acquirer("tls13", server_config(&server_id, Some(&issued_by_acquirer), &[&TLS13])).await;
    let acq12 = tls_acquirer("tls12", server_config(&server_id, Some(&issued_by_acquirer), &[&TLS12])).await;
    let plain = acquirer("plain").await;
    let dir = tempfile::tempdir().unwrap();
    channel_tls_files(dir.path(), &acq_ca, &client);
    wrong_ca.write(dir.path(), "wrong-ca.pem");
    let mtls = "cert = \"client.pem\", key = \"client.key\"";
    let cases = [
        (
            "wrong-ca",
            acq13.https_url(),
            format!("tls = {{ ca = \"wrong-ca.pem\", {mtls} }}"),
            "invalid peer certificate: UnknownIssuer",
        ),
        (
            "no-cert-13",
            acq13.https_url(),
            "tls = { ca = \"acq-ca.pem\" }".to_string(),
            "localhost refused the TLS handshake (our client certificate): received fatal alert: CertificateRequired",
        ),
        (
            "no-cert-12",
            acq12.https_url(),
            "tls = { ca = \"acq-ca.pem\" }".to_string(),
            "TLS handshake with localhost failed: received fatal alert: CertificateRequired",
        ),
    ];
    // Priors that make fees decide, whatever failed before.
    let mut config = Config::new().routing(
        "eject_consecutive_failures = 1000\nprior_success_rate = 1.0\nprior_weight = 1000000\nlatency_penalty_per_s = 0.0",
    );
    for (id, url, tls, _) in &cases {
        config = config.channel(id, url, &format!("fee_percent = 0.0\n{tls}"));
    }
    // The plain channel is the most expensive: tried last.
    let config = config
        .channel("plain", &plain.url(), "fee_percent = 5.0")
        .merchant("m-1", "channels = [\"wrong-ca\", \"plain\"]")
        .merchant("m-13", "channels = [\"no-cert-13\", \"plain\"]")
        .merchant("m-12", "channels = [\"no-cert-12\", \"plain\"]");
    let p = serve_from(dir, config).await;

    for ((id, _, _, reason), merchant) in cases.iter().zip(["m-1", "m-13", "m-12"]) {
        let r = p.pay(merchant, 1250).await;
        r.assert_ok();
        assert_eq!(r.channel().as_deref(), Some("plain"), "{id}");
        assert_eq!(r.attempts(), Some(2), "{id}");
        assert_eq!(
            r.header("x-payroute-ambiguous"),
            None,
            "{id}: a connect failure is never ambiguous"
        );
        let m = p.metrics().await;
        assert_eq!(
            m.get(
                "payroute_attempts_total",
                &[("channel", id), ("result", "connect_error")]
            ),
            1.0,
            "{id}: {}",
            m.0
        );
        assert_eq!(m.get("payroute_ambiguous_total", &[("channel", id)]), 0.0, "{id}");
        let logs = p.logs().join("\n");
        let line = logs
            .lines()
            .find(|l| l.contains("attempt failed") && l.contains(&format!("channel={id}")))
            .unwrap_or_else(|| panic!("no log line for {id}:\n{logs}"));
        assert!(
            line.contains(reason),
            "{id}: the log names the reason {reason:?}: {line}"
        );
    }
    assert_eq!(acq13.hits() + acq12.hits(), 0, "nothing reached the TLS acquirers");
    assert_eq!(plain.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_restart() {
    let acq = acquirer("a").await;
    let ca = Ca::new("payroute test CA");
    let first = ca.server("payroute v1");
    let p = tls_proxy(&first, &ca, "", &acq).await;
    let handshake = || async {
        let config = client_config(&ca, None, &TLS13, &[b"http/1.1"]);
        let (r, session) = request(p.listen, config, Method::POST, "/v1/payments", PAY_HEADERS, payment())
            .await
            .expect("TLS payment");
        r.assert_ok();
        session.server_cert
    };
    assert_eq!(handshake().await, first.fingerprint());
    let version = p.config_version().await;

    // Renewal: new key and certificate from the same CA, replaced by rename.
    let second = ca.server("payroute v2");
    second.replace(p.dir(), "server");
    eventually("the renewed certificate to be served", RELOAD_WAIT, || async {
        handshake().await == second.fingerprint()
    })
    .await;
    assert!(p.config_version().await > version, "a renewal is a reload");
    assert!(p.logs().join("\n").contains(&second.fingerprint()[..16]));

    // A broken renewal is refused; the last good certificate keeps serving.
    let (_, failed_before) = p.metrics().await.reloads();
    std::fs::write(p.dir().join("server.pem"), "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    eventually("the broken certificate to be refused", RELOAD_WAIT, || async {
        p.metrics().await.reloads().1 > failed_before
    })
    .await;
    assert_eq!(handshake().await, second.fingerprint());
    let logs = p.logs().join("\n");
    assert!(
        logs.lines().any(|l| l.contains("reload refused") && l.contains("cert")),
        "{logs}"
    );

    // Fixed again: the third certificate is picked up.
    let third = ca.server("payroute v3");
    third.replace(p.dir(), "server");
    eventually("the third certificate to be served", RELOAD_WAIT, || async {
        handshake().await == third.fingerprint()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_tls_problems_with_their_location() {
    let ca = Ca::new("payroute test CA");
    let dir = tempfile::tempdir().unwrap();
    ca.server("one").write(dir.path(), "one");
    ca.server("two").write(dir.path(), "two");
    let text = Config::new()
        .server_tls("cert = \"one.pem\"\nkey = \"two.key\"")
        .channel("a", "https://acq.example", "tls = { ca = \"missing.pem\" }")
        .channel("b", "http://127.0.0.1:9", "tls = { ca = \"one.pem\" }")
        .merchant("m-1", "")
        .to_string();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, &text).unwrap();
    let out = PAYROUTE.run(&["check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let at = error_locations(&stderr, "routes.toml");
    assert_eq!(
        at,
        vec![
            (line_of(&text, "key = \"two.key\"", 1), 7),
            (line_of(&text, "missing.pem", 1), 14),
            (line_of(&text, "tls = { ca = \"one.pem\" }", 1), 7),
        ],
        "{stderr}"
    );
    assert!(stderr.contains("key does not fit cert"), "{stderr}");
    assert!(stderr.contains("missing.pem"), "{stderr}");
    assert!(stderr.contains("https urls only"), "{stderr}");

    // Fixed, it passes.
    let fixed = text
        .replace("two.key", "one.key")
        .replace("missing.pem", "one.pem")
        .replace("tls = { ca = \"one.pem\" }\n", "\n");
    std::fs::write(&path, fixed).unwrap();
    let out = PAYROUTE.run(&["check", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("TLS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_payment_over_h2_is_forwarded_unchanged() {
    // HTTP/2 from the merchant, HTTP/1.1 to a plain acquirer: the body and
    // the merchant's headers cross, its Authorization never does.
    let acq = acquirer("a").await;
    let ca = Ca::new("payroute test CA");
    let p = tls_proxy(&ca.server("payroute"), &ca, "", &acq).await;
    let body = json!({"amount": 500, "currency": "CNY", "order_id": order_id(), "note": "h2"}).to_string();
    let config = client_config(&ca, None, &TLS13, &[b"h2"]);
    let mut headers = PAY_HEADERS.to_vec();
    headers.push(("authorization", "Bearer merchant-secret"));
    headers.push(("x-custom", "kept"));
    let (r, session) = request(p.listen, config, Method::POST, "/v1/payments", &headers, body.clone())
        .await
        .unwrap();
    assert_eq!(session.alpn.as_deref(), Some(&b"h2"[..]));
    r.assert_ok();
    let seen = acq.last_received().unwrap();
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.header("x-custom").as_deref(), Some("kept"));
    assert_eq!(seen.header("authorization"), None);
}

/// An acquirer that accepts TCP but never answers the TLS handshake is a
/// connect failure within `connect_timeout_ms` (nothing was sent), not an
/// ambiguous timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_acquirer_handshake_is_a_connect_failure() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let plain = acquirer("plain").await;
    let config = Config::new()
        .routing("prior_success_rate = 1.0\nprior_weight = 1000000")
        .channel(
            "stall",
            &format!("https://localhost:{port}"),
            "fee_percent = 0.0\ntimeout_ms = 2000\nconnect_timeout_ms = 200",
        )
        .channel("plain", &plain.url(), "fee_percent = 5.0")
        .merchant("m-1", "");
    let p = PAYROUTE.serve(config).await;
    let r = p.pay("m-1", 1250).await;
    r.assert_ok();
    assert_eq!(r.channel().as_deref(), Some("plain"));
    assert_eq!(r.attempts(), Some(2));
    assert_eq!(r.header("x-payroute-ambiguous"), None);
    assert!(r.elapsed < Duration::from_millis(1500), "{:?}", r.elapsed);
    let m = p.metrics().await;
    assert_eq!(
        m.get(
            "payroute_attempts_total",
            &[("channel", "stall"), ("result", "connect_error")]
        ),
        1.0
    );
    let logs = p.logs().join("\n");
    assert!(logs.contains("not set up within 200ms"), "{logs}");
    held.abort();
}

/// A merchant that opens a connection and never starts its handshake does
/// not hold up anyone else: handshakes run off the accept loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_merchant_connection_does_not_block_others() {
    let acq = acquirer("a").await;
    let ca = Ca::new("payroute test CA");
    let p = tls_proxy(&ca.server("payroute"), &ca, "", &acq).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(p.listen).await.unwrap());
    }
    let config = client_config(&ca, None, &TLS13, &[b"h2"]);
    let (r, _) = request(p.listen, config, Method::POST, "/v1/payments", PAY_HEADERS, payment())
        .await
        .unwrap();
    r.assert_ok();
    assert!(r.elapsed < Duration::from_secs(2), "{:?}", r.elapsed);
    drop(silent);
}
