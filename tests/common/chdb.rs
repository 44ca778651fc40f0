//! The chdb-backed ClickHouse of the OTLP tests: chdb's engine (PyPI) behind
//! `tests/support/chdb_server.py`, a minimal handler of ClickHouse's HTTP
//! interface, its tables made from `ops/clickhouse/otel.sql`.

use super::client;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The chdb-backed ClickHouse handler; killed on drop.
pub struct Chdb {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Chdb {
    /// `insert_answer_delay_ms`: how long an INSERT's answer waits after the
    /// engine ran it (the handler's `CHDB_INSERT_ANSWER_DELAY_MS`).
    pub fn start(python: &Path, insert_answer_delay_ms: u64) -> Chdb {
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let child = Command::new(python)
            .arg(repo.join("tests/support/chdb_server.py"))
            .arg(&port_file)
            .arg(repo.join("ops/clickhouse/otel.sql"))
            .env("CHDB_INSERT_ANSWER_DELAY_MS", insert_answer_delay_ms.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the chdb handler");
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p;
            }
            assert!(Instant::now() < deadline, "the chdb handler wrote no port");
            std::thread::sleep(Duration::from_millis(50));
        };
        Chdb { child, url: format!("http://127.0.0.1:{}", port.trim()), _dir: dir }
    }

    pub async fn query(&self, sql: &str) -> String {
        let resp = client().post(format!("{}/", self.url)).body(sql.to_string()).send().await.expect("query");
        let (status, text) = (resp.status(), resp.text().await.expect("text"));
        assert!(status.is_success(), "{sql}: {text}");
        text.trim().to_string()
    }
}

impl Drop for Chdb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
