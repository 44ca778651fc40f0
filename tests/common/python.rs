//! The Python receiver of tests/webhooks.rs (`tests/support/webhook_receiver.py`),
//! which verifies requests with the receivers' own libraries
//! (`standardwebhooks`, `svix`, `cryptography`), and the OpenTelemetry
//! Python SDK of tests/otlp_sdk.rs.
//!
//! Its interpreter is `WEIR_PYTHON`, else `.venv-ci/bin/python` (which
//! `.ci/run` creates). Without the packages a test fails with a clear
//! message when `CI=true`, and elsewhere prints `SKIPPED: <test>: <why>`
//! on stderr and returns.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What the webhook receiver imports.
pub const WEBHOOK_PACKAGES: &str = "standardwebhooks, svix, cryptography";

/// What the OpenTelemetry sender imports.
pub const OTEL_PACKAGES: &str =
    "opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, opentelemetry.exporter.otlp.proto.grpc";

/// The interpreter with `packages` (a Python import list), or why there is none.
fn python(packages: &str) -> Result<PathBuf, String> {
    let py = match std::env::var_os("WEIR_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => repo().join(".venv-ci/bin/python"),
    };
    let out = Command::new(&py)
        .args(["-c", &format!("import {packages}")])
        .output()
        .map_err(|e| format!("{}: {e} (set WEIR_PYTHON, or run .ci/run to create .venv-ci)", py.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} cannot import {packages}: {}",
            py.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        ));
    }
    Ok(py)
}

/// The interpreter with the webhook packages, or None after reporting the
/// test skipped (panics in CI).
pub fn python_or_skip(test: &str) -> Option<PathBuf> {
    python_with_or_skip(test, WEBHOOK_PACKAGES)
}

/// The interpreter with `packages`, or None after reporting the test
/// skipped (panics in CI).
pub fn python_with_or_skip(test: &str, packages: &str) -> Option<PathBuf> {
    match python(packages) {
        Ok(p) => Some(p),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: the Python packages are missing in CI: {why}")
        }
        Err(why) => {
            // Past the test harness's capture, so a passing run shows it.
            use std::io::Write;
            let line = format!("SKIPPED: {test}: {why}");
            println!("{line}");
            let _ = writeln!(std::io::stderr(), "{line}");
            None
        }
    }
}

/// The receiver process; killed on drop.
pub struct PyReceiver {
    child: Child,
    pub url: String,
    base: String,
    _dir: tempfile::TempDir,
}

impl PyReceiver {
    /// Start it verifying with `secret` (and `public_key`, `whpk_…`).
    pub fn start(python: &Path, secret: &str, public_key: Option<&str>) -> PyReceiver {
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let mut cmd = Command::new(python);
        cmd.arg(repo().join("tests/support/webhook_receiver.py")).arg(&port_file).arg(secret);
        if let Some(pk) = public_key {
            cmd.arg(pk);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("spawn the Python receiver");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p;
            }
            assert!(Instant::now() < deadline, "the Python receiver wrote no port");
            std::thread::sleep(Duration::from_millis(20));
        };
        let base = format!("http://127.0.0.1:{}", port.trim());
        PyReceiver { child, url: format!("{base}/hook"), base, _dir: dir }
    }

    /// Its state (tests/support/webhook_receiver.py, `STATE`).
    pub async fn stats(&self) -> serde_json::Value {
        let resp = super::client().get(format!("{}/stats", self.base)).send().await.expect("receiver stats");
        resp.json().await.expect("stats JSON")
    }

    pub async fn configure(&self, change: serde_json::Value) {
        let resp = super::client().post(format!("{}/config", self.base)).json(&change).send().await.expect("config");
        assert_eq!(resp.status().as_u16(), 200);
    }

    /// The records kept, as bytes.
    pub async fn records(&self) -> Vec<Vec<u8>> {
        let stats = self.stats().await;
        let list = stats["records"].as_array().cloned().unwrap_or_default();
        list.iter().map(|v| protocol::b64_decode(v.as_str().unwrap_or("")).expect("base64")).collect()
    }
}

impl Drop for PyReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
