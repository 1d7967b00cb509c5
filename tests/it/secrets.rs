//! Secrets and card data: `env:`/`file:` secrets resolve (and a missing one
//! is a located config error naming the key, never the value), rotate with
//! their files, and neither secrets nor card numbers ever reach the logs,
//! `/-/channels` or `/metrics`, even at `RUST_LOG=debug`.

use std::path::PathBuf;
use std::time::Duration;

use http::Method;
use payroute_mock::Reply;
use payroute_testkit::tls::{server_config, tls_acquirer, Ca, TLS13};
use payroute_testkit::*;
use serde_json::json;

use crate::PAYROUTE;

/// A tempdir holding `routes.toml` with `config` and the given files.
fn config_dir(config: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_come_from_env_and_files() {
    let acq = acquirer("a").await;
    let config = Config::new()
        .server("admin_token = \"file:admin.token\"")
        .channel(
            "a",
            &acq.url(),
            "headers = { authorization = \"file:secrets/acq.token\", x-acq-key = \"env:PR_TEST_ACQ_KEY\" }",
        )
        .merchant("m-1", "api_key_sha256 = \"env:PR_TEST_M1_HASH\"");
    let (dir, path) = config_dir(&config.to_string(), &[("admin.token", "admin-from-file\n")]);
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/acq.token"), "Bearer acq-from-file\n").unwrap();
    let hash = sha256_hex("merchant-key-from-env");
    let env = [("PR_TEST_ACQ_KEY", "acq-key-from-env"), ("PR_TEST_M1_HASH", &hash)];
    let p = PAYROUTE.serve_in(dir, path, &env).await;

    let body = payment_body(1250, "CNY");
    p.post_payment("m-1", &body, &[])
        .await
        .assert_error(401, "unauthorized");
    let r = p
        .post_payment("m-1", &body, &[("authorization", "Bearer merchant-key-from-env")])
        .await;
    r.assert_ok();
    let seen = acq.last_received().unwrap();
    assert_eq!(seen.header("authorization").as_deref(), Some("Bearer acq-from-file"));
    assert_eq!(seen.header("x-acq-key").as_deref(), Some("acq-key-from-env"));
    assert!(
        seen.headers
            .iter()
            .all(|(_, v)| !v.to_str().unwrap_or_default().contains("merchant-key-from-env")),
        "the merchant's key is never forwarded: {:?}",
        seen.headers
    );

    // The admin token came from its file (one trailing newline trimmed).
    assert_eq!(p.reload().await.status, 401);
    let r = p
        .admin_post("/-/reload", &[("authorization", "Bearer admin-from-file")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Rotating a secret file is a reload, like a config change.
    std::fs::write(p.dir().join("secrets/acq.token"), "Bearer rotated\n").unwrap();
    eventually("the rotated secret to be used", Duration::from_secs(10), || async {
        p.post_payment(
            "m-1",
            &payment_body(100, "CNY"),
            &[("authorization", "Bearer merchant-key-from-env")],
        )
        .await
        .assert_ok();
        acq.last_received().unwrap().header("authorization").as_deref() == Some("Bearer rotated")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secrets_are_check_errors_naming_key_and_source() {
    let text = Config::new()
        .server("admin_token = \"env:PR_TEST_UNSET_ADMIN_7Q\"")
        .channel(
            "a",
            "http://127.0.0.1:9",
            "headers = { authorization = \"env:PR_TEST_UNSET_ACQ_7Q\", x-literal = \"hunter2\\u0007\" }",
        )
        .merchant("m-1", "api_key_sha256 = \"file:no/such.hash\"")
        .to_string();
    let (dir, path) = config_dir(&text, &[]);
    let out = PAYROUTE.run(&["check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    let admin = line_of(&text, "admin_token", 1);
    let headers = line_of(&text, "headers", 1);
    let key = line_of(&text, "api_key_sha256", 1);
    assert!(
        lines[0].ends_with(&format!(
            "routes.toml:{admin}:15: admin_token: environment variable PR_TEST_UNSET_ADMIN_7Q is not set"
        )),
        "{stderr}"
    );
    assert!(
        lines[1].ends_with(&format!(
            "routes.toml:{headers}:29: headers.authorization: environment variable PR_TEST_UNSET_ACQ_7Q is not set"
        )),
        "{stderr}"
    );
    assert!(
        lines[2].contains("the value of x-literal is not a valid header value"),
        "{stderr}"
    );
    let missing = dir.path().join("no/such.hash");
    assert!(
        lines[3].contains(&format!(
            "routes.toml:{key}:18: api_key_sha256: cannot read secret file {}",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "a literal secret is never echoed: {stderr}"
    );

    // serve refuses to start, with the cause on one line.
    let out = PAYROUTE
        .run_within(&["serve", "--config", path.to_str().unwrap()], Duration::from_secs(10))
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PR_TEST_UNSET_ADMIN_7Q is not set"), "{stderr}");
}

/// The log scan: payments whose order ids are card numbers, API keys and
/// channel secrets, through timeouts, queries, reversals, failover, an
/// https acquirer over h2, refusals and a reload, all at `RUST_LOG=debug`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_carry_secrets_or_card_numbers() {
    const API_KEY: &str = "sk_live_MERCHANT_SECRET_7731";
    const ACQ_TOKEN: &str = "ACQ_SECRET_TOKEN_5521";
    const FILE_SECRET: &str = "FILE_SECRET_9981";
    const ADMIN_TOKEN: &str = "ADMIN_SECRET_4410";
    const TLS_SECRET: &str = "TLS_CHANNEL_SECRET_6620";
    let secrets = [API_KEY, ACQ_TOKEN, FILE_SECRET, ADMIN_TOKEN, TLS_SECRET];
    const PANS: [&str; 2] = ["4111111111111111", "5555-5555-5555-4444"];

    // "slow" times out; its query cannot tell; its reversal succeeds. Then
    // "secure" (https, h2) takes the payment.
    let slow = acquirer_with("slow", Reply::hang()).await;
    slow.on("GET", "/v1/payments/*", Reply::status(500));
    slow.on("POST", "/v1/payments/*/reverse", Reply::status(200));
    let ca = Ca::new("acquirer CA");
    let secure = tls_acquirer("secure", server_config(&ca.server("acquirer"), None, &[&TLS13])).await;
    let dir = tempfile::tempdir().unwrap();
    ca.write(dir.path(), "acq-ca.pem");
    std::fs::write(dir.path().join("acq.secret"), format!("{FILE_SECRET}\n")).unwrap();
    // Priors that make fees decide: "slow" stays first for both payments.
    let config = Config::new()
        .server("admin_token = \"env:PR_TEST_ADMIN\"")
        .routing("prior_success_rate = 1.0\nprior_weight = 1000000\nlatency_penalty_per_s = 0.0")
        .channel(
            "slow",
            &slow.url(),
            "fee_percent = 0.0\ntimeout_ms = 300\nconnect_timeout_ms = 200\n\
             headers = { authorization = \"env:PR_TEST_ACQ\", x-file = \"file:acq.secret\" }\n\
             query = { method = \"GET\", path = \"/v1/payments/{order_id}\" }\n\
             reversal = { method = \"POST\", path = \"/v1/payments/{order_id}/reverse\" }",
        )
        .channel(
            "secure",
            &secure.https_url(),
            &format!("fee_percent = 1.0\ntls = {{ ca = \"acq-ca.pem\" }}\nheaders = {{ x-key = \"{TLS_SECRET}\" }}"),
        )
        .merchant("m-1", "api_key_sha256 = \"env:PR_TEST_KEY_HASH\"");
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, config.to_string()).unwrap();
    let hash = sha256_hex(API_KEY);
    let env = [
        ("RUST_LOG", "debug"),
        ("PR_TEST_ADMIN", ADMIN_TOKEN),
        ("PR_TEST_ACQ", ACQ_TOKEN),
        ("PR_TEST_KEY_HASH", &hash),
    ];
    let p = PAYROUTE.serve_in(dir, path, &env).await;
    let auth = format!("Bearer {API_KEY}");

    for pan in PANS {
        let body = json!({"amount": 1250, "currency": "CNY", "order_id": pan, "card": {"number": pan}});
        let r = p.post_payment("m-1", &body, &[("authorization", &auth)]).await;
        r.assert_ok();
        assert_eq!(r.channel().as_deref(), Some("secure"));
        assert_eq!(r.header("x-payroute-ambiguous").as_deref(), Some("slow"));
        // A follow-up naming the card number in its path, and a repeat.
        let status = p
            .request(
                Method::GET,
                &format!("/v1/payments/{pan}"),
                &[("x-merchant-id", "m-1"), ("authorization", &auth)],
                "",
            )
            .await;
        assert_eq!(status.status, 200, "{}", status.text());
        let again = p.post_payment("m-1", &body, &[("authorization", &auth)]).await;
        assert_eq!(again.header("x-payroute-replayed").as_deref(), Some("true"));
        // Refusals logged at debug: a wrong key, a malformed body.
        let wrong = p
            .post_payment("m-1", &body, &[("authorization", "Bearer not-the-key")])
            .await;
        wrong.assert_error(401, "unauthorized");
        let bad = json!({"amount": "x", "currency": "CNY", "order_id": pan});
        p.post_payment("m-1", &bad, &[("authorization", &auth)])
            .await
            .assert_error(400, "invalid_request");
    }
    assert!(
        slow.wait_count("POST", "/v1/payments/*/reverse", 2, Duration::from_secs(10))
            .await,
        "the two reversals did not reach slow"
    );
    let r = p
        .admin_post("/-/reload", &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))])
        .await;
    assert_eq!(r.status, 200);
    let r = p.admin_post("/-/reload", &[("authorization", "Bearer wrong")]).await;
    assert_eq!(r.status, 401);
    // The acquirers did get the secrets (so they were really in play).
    assert_eq!(
        slow.last_received().unwrap().header("authorization").as_deref(),
        Some(ACQ_TOKEN)
    );
    assert_eq!(
        secure.last_received().unwrap().header("x-key").as_deref(),
        Some(TLS_SECRET)
    );

    let channels = p.admin_get("/-/channels").await.text();
    let metrics = p.metrics().await.0;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = p.logs().join("\n");
    assert!(logs.lines().count() > 50, "debug logging is on: {logs}");
    for (what, text) in [("stderr", &logs), ("/-/channels", &channels), ("/metrics", &metrics)] {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} contains the secret {secret}:\n{text}");
        }
        for pan in PANS {
            assert!(!text.contains(pan), "{what} contains the card number {pan}:\n{text}");
            assert!(
                !text.contains(&pan.replace('-', "")),
                "{what} contains {pan} unformatted"
            );
        }
    }
    assert!(logs.contains("411111******1111"), "the masked form is logged: {logs}");
    assert!(
        logs.contains("5555-55**-****-4444"),
        "the masked form is logged: {logs}"
    );
}
