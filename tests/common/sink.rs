//! A real HTTP sink on loopback whose behaviour tests can change: answer
//! late (a black hole), reject batches holding a poison record, or accept.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct SinkState {
    pub lines: Mutex<Vec<(String, Instant)>>,
    pub keys: Mutex<Vec<String>>,
    pub delay_ms: AtomicU64,
    pub reject_poison: AtomicBool,
    pub requests: AtomicU64,
}

pub struct TestSink {
    pub url: String,
    pub state: Arc<SinkState>,
    task: tokio::task::JoinHandle<()>,
}

async fn receive(State(s): State<Arc<SinkState>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    s.requests.fetch_add(1, Ordering::Relaxed);
    let delay = s.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let text = String::from_utf8_lossy(&body).to_string();
    if s.reject_poison.load(Ordering::Relaxed) && text.contains("poison") {
        return (StatusCode::BAD_REQUEST, "batch holds a record we refuse".into());
    }
    if let Some(k) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        s.keys.lock().unwrap().push(k.to_string());
    }
    let now = Instant::now();
    s.lines.lock().unwrap().extend(text.lines().filter(|l| !l.is_empty()).map(|l| (l.to_string(), now)));
    (StatusCode::OK, "ok".into())
}

impl TestSink {
    pub async fn start() -> TestSink {
        let state = Arc::new(SinkState::default());
        let app = axum::Router::new().route("/ingest", axum::routing::post(receive)).with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestSink { url: format!("http://{addr}/ingest"), state, task }
    }

    pub fn lines(&self) -> Vec<String> {
        self.state.lines.lock().unwrap().iter().map(|(l, _)| l.clone()).collect()
    }

    pub fn arrivals(&self) -> Vec<(String, Instant)> {
        self.state.lines.lock().unwrap().clone()
    }
}

impl Drop for TestSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}
