//! A real HTTP sink on loopback whose behaviour tests can change: answer
//! late (a black hole), reject batches holding a poison record, redirect,
//! or accept.

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
    /// Every accepted body, raw.
    pub bodies: Mutex<Vec<Vec<u8>>>,
    /// When set, a POST is answered `302 Found` with this `Location`.
    pub redirect_to: Mutex<Option<String>>,
    /// GETs received (what a client that follows a 302 sends).
    pub gets: AtomicU64,
}

pub struct TestSink {
    pub url: String,
    pub state: Arc<SinkState>,
    task: tokio::task::JoinHandle<()>,
}

type Reply = (StatusCode, [(axum::http::HeaderName, String); 1], String);

fn reply(status: StatusCode, text: &str) -> Reply {
    (status, [(axum::http::header::CACHE_CONTROL, "no-store".into())], text.into())
}

async fn receive(State(s): State<Arc<SinkState>>, headers: HeaderMap, body: Bytes) -> Reply {
    s.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(to) = s.redirect_to.lock().unwrap().clone() {
        return (StatusCode::FOUND, [(axum::http::header::LOCATION, to)], String::new());
    }
    let delay = s.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let text = String::from_utf8_lossy(&body).to_string();
    if s.reject_poison.load(Ordering::Relaxed) && text.contains("poison") {
        return reply(StatusCode::BAD_REQUEST, "batch holds a record we refuse");
    }
    if let Some(k) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        s.keys.lock().unwrap().push(k.to_string());
    }
    s.bodies.lock().unwrap().push(body.to_vec());
    let now = Instant::now();
    s.lines.lock().unwrap().extend(text.lines().filter(|l| !l.is_empty()).map(|l| (l.to_string(), now)));
    reply(StatusCode::OK, "ok")
}

async fn followed(State(s): State<Arc<SinkState>>) -> StatusCode {
    s.gets.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

impl TestSink {
    pub async fn start() -> TestSink {
        let state = Arc::new(SinkState::default());
        let app = axum::Router::new()
            .route("/ingest", axum::routing::post(receive).get(followed))
            .route("/elsewhere", axum::routing::get(followed))
            .with_state(Arc::clone(&state));
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
