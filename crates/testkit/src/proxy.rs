//! The `payroute` binary under test: `serve` as a child process whose
//! output is kept (and printed when a test fails), other subcommands run to
//! completion; and [`Api`], a handle on a running proxy's two listeners.

use std::fmt::Display;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::Value;

use crate::http::{http_client, send, HttpClient, Resp};
use crate::metrics::Metrics;
use crate::payment_body;

/// How long the proxy may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The binary under test: `Payroute::at(env!("CARGO_BIN_EXE_payroute"))`
/// (only a test or bench target is told where cargo built it).
#[derive(Clone, Copy, Debug)]
pub struct Payroute {
    bin: &'static str,
}

impl Payroute {
    pub const fn at(bin: &'static str) -> Payroute {
        Payroute { bin }
    }

    /// A command for the binary, nothing set.
    pub fn command(&self) -> Command {
        Command::new(self.bin)
    }

    /// `payroute serve` on `config`, written to `routes.toml` in a fresh
    /// temp dir; returns once it is ready.
    pub async fn serve(&self, config: impl Display) -> Proxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("routes.toml");
        std::fs::write(&config_path, config.to_string()).expect("write routes.toml");
        self.serve_in(dir, config_path, &[]).await
    }

    /// `payroute serve` on a config file the caller prepared inside `dir`
    /// (beside certificates, behind symlinks), with `env` on top of the
    /// defaults (`RUST_LOG=info`, `NO_COLOR=1`).
    ///
    /// # Panics
    /// If it exits or is not ready within 10 s; the panic shows the config
    /// and everything it printed.
    pub async fn serve_in(&self, dir: tempfile::TempDir, config_path: PathBuf, env: &[(&str, &str)]) -> Proxy {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut child = self.spawn_serve(&config_path, &logs, env);
        let (listen, admin) = wait_ready(&mut child, &logs, 0, &config_path).await;
        Proxy {
            api: Api {
                client: http_client(),
                listen,
                admin,
            },
            child,
            reaped: None,
            logs,
            dir,
            config_path,
            payroute: *self,
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    /// Spawns `payroute serve --config PATH` and drains its output into `logs`.
    fn spawn_serve(&self, config_path: &Path, logs: &Arc<Mutex<Vec<String>>>, env: &[(&str, &str)]) -> Child {
        let mut child = self
            .command()
            .arg("serve")
            .arg("--config")
            .arg(config_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn payroute serve");
        let streams: [(Option<Box<dyn std::io::Read + Send>>, &str); 2] = [
            (child.stderr.take().map(|s| Box::new(s) as _), ""),
            (child.stdout.take().map(|s| Box::new(s) as _), "[stdout] "),
        ];
        for (stream, tag) in streams {
            let Some(stream) = stream else { continue };
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    logs.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(format!("{tag}{line}"));
                }
            });
        }
        child
    }

    /// Runs `payroute ARGS...` to completion (`RUST_LOG=warn`).
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run payroute")
    }

    /// Runs `payroute ARGS...` (`RUST_LOG=info`) to completion, for commands
    /// that might not exit by themselves when they misbehave.
    ///
    /// Both pipes are read while the child runs: a child that logs more than
    /// a pipe holds (64 KiB on Linux) would otherwise block on its next write
    /// and never exit.
    ///
    /// # Panics
    /// If it has not exited within `timeout`; it is killed and the panic
    /// shows everything it printed until then.
    pub async fn run_within(&self, args: &[&str], timeout: Duration) -> Output {
        let mut child = tokio::process::Command::from(self.command())
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn payroute");
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let status = tokio::time::timeout(timeout, child.wait()).await;
        if status.is_err() {
            let _ = child.kill().await;
        }
        let (stdout, stderr) = (stdout.await.unwrap_or_default(), stderr.await.unwrap_or_default());
        match status {
            Ok(status) => Output {
                status: status.expect("wait for payroute"),
                stdout,
                stderr,
            },
            Err(_) => panic!(
                "payroute {} did not exit within {timeout:?}; it printed\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr),
            ),
        }
    }
}

/// Reads a child's pipe to its end in a task of its own.
fn drain(pipe: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut bytes).await;
        }
        bytes
    })
}

/// Waits for the ready line printed after `logs[from..]`.
///
/// # Panics
/// If the process exits or is not ready within 10 s; the panic shows the
/// config and everything it printed.
async fn wait_ready(
    child: &mut Child,
    logs: &Mutex<Vec<String>>,
    from: usize,
    config_path: &Path,
) -> (SocketAddr, SocketAddr) {
    let config = std::fs::read_to_string(config_path).unwrap_or_default();
    let lines = |logs: &Mutex<Vec<String>>| logs.lock().unwrap_or_else(PoisonError::into_inner).join("\n");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let found = logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .skip(from)
            .find_map(|l| parse_ready(l));
        if let Some(addrs) = found {
            return addrs;
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Give the reader threads a moment to collect the last lines.
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!(
                "payroute serve exited ({status}) before ready; config:\n{config}\noutput:\n{}",
                lines(logs)
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "payroute serve not ready within {READY_TIMEOUT:?}; config:\n{config}\noutput:\n{}",
                lines(logs)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Extracts the `listen=` and `admin=` addresses from the ready line.
pub fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if !line.contains("payroute ready") {
        return None;
    }
    let mut listen = None;
    let mut admin = None;
    for tok in line.split_whitespace() {
        let clean = |v: &str| -> Option<SocketAddr> {
            v.trim_matches(|c: char| c == '"' || c == ',' || c == '\'').parse().ok()
        };
        if let Some(v) = tok.strip_prefix("listen=") {
            listen = clean(v);
        } else if let Some(v) = tok.strip_prefix("admin=") {
            admin = clean(v);
        }
    }
    Some((listen?, admin?))
}

/// A running `payroute serve`; killed on drop. Derefs to its [`Api`].
pub struct Proxy {
    pub api: Api,
    child: Child,
    /// How the child ended, once [`Proxy::wait_exit`] reaped it: its pid
    /// may then be another process's, and is never signalled again.
    reaped: Option<ExitStatus>,
    logs: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    payroute: Payroute,
    env: Vec<(String, String)>,
}

impl std::ops::Deref for Proxy {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Proxy {
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The directory of its config.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its resident memory in KiB (`VmRSS`), on Linux; `None` elsewhere.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Everything the proxy printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Overwrites the config file in place (truncate + write).
    pub fn write_config(&self, config: impl Display) {
        std::fs::write(&self.config_path, config.to_string()).expect("write routes.toml");
    }

    /// Replaces the config file atomically by writing a sibling and renaming
    /// it over the original (what config managers do).
    pub fn replace_config(&self, config: impl Display) {
        let tmp = self.dir.path().join(format!(".routes.toml.{}.tmp", fastrand::u32(..)));
        std::fs::write(&tmp, config.to_string()).expect("write the new routes.toml");
        std::fs::rename(&tmp, &self.config_path).expect("rename it over routes.toml");
    }

    pub fn sighup(&self) {
        self.signal(libc::SIGHUP);
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// `kill -9`: no shutdown, no flush; what survives is what was committed.
    pub fn kill(&self) {
        self.signal(libc::SIGKILL);
    }

    fn signal(&self, sig: i32) {
        if let Some(status) = self.reaped {
            panic!(
                "payroute (pid {}) exited already ({status}): not signalling a pid another process may have now",
                self.child.id()
            );
        }
        let pid = i32::try_from(self.child.id()).expect("pid fits in pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Starts the proxy again on the same directory, config and environment
    /// (after [`Proxy::kill`], or whatever ended it; a live one is killed
    /// first) and returns once it is ready. Its output goes on in the same
    /// log. Listeners on port 0 get new ports: a test that needs the same
    /// address configures a fixed one.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let from = {
            let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
            logs.push("----- restart -----".to_owned());
            logs.len()
        };
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.child = self.payroute.spawn_serve(&self.config_path, &self.logs, &env);
        self.reaped = None;
        let (listen, admin) = wait_ready(&mut self.child, &self.logs, from, &self.config_path).await;
        self.api.listen = listen;
        self.api.admin = admin;
    }

    /// Waits for the process to exit; None on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait for payroute") {
                self.reaped = Some(st);
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Current `payroute_config_version` metric.
    pub async fn config_version(&self) -> f64 {
        self.metrics()
            .await
            .sum("payroute_config_version", &[])
            .expect("payroute_config_version missing from /metrics")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- payroute output (pid {}) -----\n{}\n----- end -----",
                self.child.id(),
                self.logs().join("\n")
            );
        }
    }
}

/// Cheap, clonable handle to a running proxy's two listeners.
#[derive(Clone)]
pub struct Api {
    pub client: HttpClient,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listen, path)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Any request to the payment listener.
    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
        send(&self.client, method, &self.url(path), headers, body).await
    }

    /// POST /v1/payments for `merchant` with a JSON body and extra headers.
    pub async fn post_payment(&self, merchant: &str, body: &Value, headers: &[(&str, &str)]) -> Resp {
        self.post_payment_to("/v1/payments", merchant, body, headers).await
    }

    /// POST to `path` for `merchant` with a JSON body and extra headers.
    pub async fn post_payment_to(&self, path: &str, merchant: &str, body: &Value, headers: &[(&str, &str)]) -> Resp {
        let mut h = vec![("x-merchant-id", merchant), ("content-type", "application/json")];
        h.extend_from_slice(headers);
        self.request(Method::POST, path, &h, body.to_string()).await
    }

    /// A fresh CNY payment of `amount`.
    pub async fn pay(&self, merchant: &str, amount: i64) -> Resp {
        self.post_payment(merchant, &payment_body(amount, "CNY"), &[]).await
    }

    /// A fresh payment of `amount` in `currency`.
    pub async fn pay_ccy(&self, merchant: &str, amount: i64, currency: &str) -> Resp {
        self.post_payment(merchant, &payment_body(amount, currency), &[]).await
    }

    pub async fn admin_get(&self, path: &str) -> Resp {
        send(&self.client, Method::GET, &self.admin_url(path), &[], Bytes::new()).await
    }

    pub async fn admin_post(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        send(&self.client, Method::POST, &self.admin_url(path), headers, Bytes::new()).await
    }

    /// POST /-/reload (no token).
    pub async fn reload(&self) -> Resp {
        self.admin_post("/-/reload", &[]).await
    }

    /// GET /-/channels, parsed.
    pub async fn channels(&self) -> Vec<Value> {
        let r = self.admin_get("/-/channels").await;
        assert_eq!(r.status, 200, "/-/channels: {}", r.text());
        match r.json() {
            Value::Array(a) => a,
            other => panic!("/-/channels is not a JSON array: {other}"),
        }
    }

    pub async fn channel_opt(&self, id: &str) -> Option<Value> {
        self.channels()
            .await
            .into_iter()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
    }

    pub async fn channel(&self, id: &str) -> Value {
        self.channel_opt(id)
            .await
            .unwrap_or_else(|| panic!("channel {id} not in /-/channels"))
    }

    /// The channel ids in /-/channels, sorted.
    pub async fn channel_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .channels()
            .await
            .iter()
            .map(|c| c["id"].as_str().expect("channel id").to_string())
            .collect();
        ids.sort();
        ids
    }

    pub async fn channel_state(&self, id: &str) -> String {
        self.channel(id).await["state"]
            .as_str()
            .expect("state is a string")
            .to_string()
    }

    pub async fn metrics(&self) -> Metrics {
        let r = self.admin_get("/metrics").await;
        assert_eq!(r.status, 200, "/metrics: {}", r.text());
        Metrics(r.text())
    }
}
