//! The other binaries and subcommands: `mock-acquirer` behind the proxy, and
//! `payroute demo`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use payroute_testkit::{free_port, Config};

use crate::PAYROUTE;

const MOCK: &str = env!("CARGO_BIN_EXE_mock-acquirer");

/// A `mock-acquirer` process, killed on drop.
struct Mock {
    child: Child,
    url: String,
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn mock(args: &[&str]) -> Mock {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(MOCK)
        .arg("--listen")
        .arg(&listen)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mock-acquirer");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&listen).await.is_err() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("mock-acquirer exited early: {st}");
        }
        assert!(std::time::Instant::now() < deadline, "mock-acquirer not listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Mock {
        child,
        url: format!("http://{listen}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_acquirer_behind_the_proxy() {
    let good = mock(&["--success-rate", "1.0"]).await;
    let declining = mock(&["--success-rate", "0", "--status", "402"]).await;
    let slow = mock(&["--latency-ms", "300"]).await;
    let mut config = Config::new();
    for (id, mock) in [("good", &good), ("declining", &declining), ("slow", &slow)] {
        config = config
            .channel(id, &mock.url, "")
            .merchant(&format!("m-{id}"), &format!("channels = [\"{id}\"]"));
    }
    let p = PAYROUTE.serve(config).await;
    for _ in 0..3 {
        let r = p.pay("m-good", 100).await;
        r.assert_ok();
        assert_eq!(r.channel().as_deref(), Some("good"));
        let r = p.pay("m-declining", 100).await;
        assert_eq!(r.status, 402, "{}", r.text());
    }
    let r = p.pay("m-slow", 100).await;
    r.assert_ok();
    assert!(
        r.elapsed >= Duration::from_millis(280),
        "--latency-ms 300 answered in {:?}",
        r.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_acquirer_rejects_bad_arguments() {
    let out = Command::new(MOCK)
        .args(["--listen", "127.0.0.1:0", "--success-rate", "1.5"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let out = Command::new(MOCK).output().unwrap();
    assert_ne!(out.status.code(), Some(0), "--listen is required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_stops_by_itself_and_prints_a_summary() {
    let out = PAYROUTE
        .run_within(&["demo", "--seconds", "6"], Duration::from_secs(60))
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "demo failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !stdout.trim().is_empty(),
        "demo printed no summary on stdout; stderr:\n{stderr}"
    );
}
