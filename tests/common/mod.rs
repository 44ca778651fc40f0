//! Harness for multi-process tests: real `broker`, `exporter` and
//! `broker-admin` binaries, real files, and real HTTP sinks on loopback.
#![allow(dead_code)]

pub mod chdb;
pub mod clickhouse;
pub mod dedup;
pub mod event_receiver;
pub mod format1;
pub mod ledger;
pub mod python;
pub mod raw_sink;
pub mod sim_broker;
pub mod sink;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod bins;
pub use bins::{ADMIN, BROKER, EXPORTER};

/// Poll `cond` until it holds; bounded in time and count. Panics with `what`.
pub async fn wait_until<F: FnMut() -> Fut, Fut: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut cond: F,
) {
    let deadline = Instant::now() + timeout;
    for _ in 0..10_000 {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for: {what}");
}

/// A broker process on an ephemeral loopback port.
pub struct BrokerProc {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// A config with tenants `acme` and `globex`, topic `events` and `other`,
/// admin token `admin-t`, and the given extra TOML (destinations, knobs).
pub fn config(data_dir: &Path, extra: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
data_dir = "{}"
admin_token = "admin-t"
maintenance_interval_ms = 50
segment_bytes = 65536
# Tests share the machine's disk: a full disk must not turn into 429s here.
disk_high_watermark = 1.0
{extra}
[[tenant]]
name = "acme"
token = "acme-t"
rate_per_sec = 100000.0
burst = 200000

[[tenant]]
name = "globex"
token = "globex-t"
rate_per_sec = 100000.0
burst = 200000

[[topic]]
name = "events"

[[topic]]
name = "other"
"#,
        data_dir.display()
    )
}

impl BrokerProc {
    /// Start with `config(..)` plus `extra` (top-level keys must come first in `extra`).
    pub fn start(extra: &str) -> BrokerProc {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let mut b = BrokerProc::start_with(&data, &config(&data, extra));
        b._tmp = Some(tmp);
        b
    }

    pub fn start_with(data_dir: &Path, config_text: &str) -> BrokerProc {
        let config = data_dir.with_extension("toml");
        std::fs::create_dir_all(data_dir.parent().expect("parent")).expect("mkdir");
        std::fs::write(&config, config_text).expect("write config");
        let (child, url) = spawn_broker(&config);
        BrokerProc { child, url, data_dir: data_dir.to_path_buf(), config, _tmp: None }
    }

    /// [`BrokerProc::start_with`], its log (at `rust_log`) written to `log`.
    pub fn start_logging(data_dir: &Path, config_text: &str, log: &Path, rust_log: &str) -> BrokerProc {
        let config = data_dir.with_extension("toml");
        std::fs::create_dir_all(data_dir.parent().expect("parent")).expect("mkdir");
        std::fs::write(&config, config_text).expect("write config");
        let stderr = Stdio::from(std::fs::File::create(log).expect("create the broker's log"));
        let (child, url) = spawn_broker_logging(&config, stderr, rust_log);
        BrokerProc { child, url, data_dir: data_dir.to_path_buf(), config, _tmp: None }
    }

    /// Restart on the same data dir and config (a new port).
    pub fn restart(&mut self) {
        assert_eq!(self.stop_signal(libc::SIGTERM), Some(0));
        (self.child, self.url) = spawn_broker(&self.config);
    }

    /// Start again after a kill -9.
    pub fn start_again(&mut self) {
        (self.child, self.url) = spawn_broker(&self.config);
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send a signal and wait for the exit status code.
    pub fn stop_signal(&mut self, sig: i32) -> Option<i32> {
        unsafe { libc::kill(self.child.id() as i32, sig) };
        wait_exit(&mut self.child, Duration::from_secs(30))
    }
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_broker(config: &Path) -> (Child, String) {
    spawn_broker_logging(config, Stdio::inherit(), "warn")
}

/// Start a broker whose log (stderr, at level `rust_log`) goes to `stderr`;
/// stdout is read for its address.
pub fn spawn_broker_logging(config: &Path, stderr: Stdio, rust_log: &str) -> (Child, String) {
    spawn_broker_env(config, stderr, &[("RUST_LOG", rust_log)])
}

/// Start a broker with `env` added to its environment.
pub fn spawn_broker_env(config: &Path, stderr: Stdio, env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(&BROKER)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .spawn()
        .expect("spawn broker");
    let url = read_listen_url(&mut child);
    (child, url)
}

fn read_listen_url(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut sent = false;
        for line in lines.by_ref().map_while(Result::ok) {
            if !sent {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(url);
                    sent = true;
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("broker printed its address")
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process (an exporter, or any other) killed and reaped on drop.
pub struct ExporterProc {
    pub child: Child,
}

impl ExporterProc {
    pub fn start(broker: &str, dest: &str, token: &str, sink: &str, extra: &[&str]) -> ExporterProc {
        let child = Command::new(&EXPORTER)
            .args(["--broker", broker, "--destination", dest, "--token", token, "--sink", sink])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn exporter");
        ExporterProc { child }
    }

    /// [`ExporterProc::start`], its log (stderr) written to `log`.
    pub fn start_logging(
        broker: &str,
        dest: &str,
        token: &str,
        sink: &str,
        extra: &[&str],
        log: &Path,
    ) -> ExporterProc {
        let stderr = Stdio::from(std::fs::File::create(log).expect("create the exporter's log"));
        let child = Command::new(&EXPORTER)
            .args(["--broker", broker, "--destination", dest, "--token", token, "--sink", sink])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn exporter");
        ExporterProc { child }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&mut self) -> Option<i32> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_exit(&mut self.child, Duration::from_secs(30))
    }
}

impl Drop for ExporterProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub json: serde_json::Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
    pub fn message(&self) -> &str {
        self.json["error"]["message"].as_str().unwrap_or("")
    }
    /// Assert an error answer per the contract.
    pub fn assert_error(&self, status: u16, code: &str, retry_after: bool) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert!(!self.message().is_empty() && !self.message().to_lowercase().contains("unknown error"), "{self:?}");
        assert_eq!(self.retry_after.is_some(), retry_after, "Retry-After presence: {self:?}");
        if let Some(ra) = &self.retry_after {
            assert!(ra.parse::<u64>().is_ok_and(|s| s >= 1), "Retry-After is whole seconds: {ra}");
        }
    }
}

pub async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = resp.bytes().await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Answer { status, retry_after, json }
}

pub async fn ingest(url: &str, token: &str, topic: &str, body: impl Into<reqwest::Body>) -> Answer {
    let resp = client()
        .post(format!("{url}/v1/topics/{topic}/records"))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("ingest request");
    answer(resp).await
}

/// Ingest one record of tenant `acme` to `events`, taken as is
/// (`application/octet-stream`), and expect 200.
pub async fn ingest_bytes(url: &str, payload: &[u8]) {
    let resp = client()
        .post(format!("{url}/v1/topics/events/records"))
        .bearer_auth("acme-t")
        .header("content-type", "application/octet-stream")
        .body(payload.to_vec())
        .send()
        .await
        .expect("ingest request");
    let a = answer(resp).await;
    assert_eq!(a.status, 200, "ingest of {payload:?}: {a:?}");
}

pub async fn admin_get(url: &str, path: &str) -> serde_json::Value {
    let resp = client().get(format!("{url}{path}")).bearer_auth("admin-t").send().await.expect("admin get");
    let a = answer(resp).await;
    assert_eq!(a.status, 200, "{a:?}");
    a.json
}

pub async fn admin_post(url: &str, path: &str, body: serde_json::Value) -> Answer {
    answer(client().post(format!("{url}{path}")).bearer_auth("admin-t").json(&body).send().await.expect("admin post"))
        .await
}

pub async fn destination(url: &str, name: &str) -> serde_json::Value {
    admin_get(url, &format!("/v1/admin/destinations/{name}")).await
}

pub async fn metric(url: &str, line_prefix: &str) -> f64 {
    let text = client().get(format!("{url}/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines().filter(|l| l.starts_with(line_prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Lines of a file sink (empty if not there yet).
pub fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|s| s.lines().map(str::to_string).collect()).unwrap_or_default()
}

pub fn run_admin(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(&ADMIN).args(args).output().expect("run broker-admin");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}
