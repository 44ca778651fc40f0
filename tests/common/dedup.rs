//! A webhook receiver as Svix and Stripe document them: a request whose
//! `Idempotency-Key` was seen is answered 200 and dropped. What it keeps
//! shows whether a downstream id ever made it drop a record
//! (docs/sinks.md, "Downstream ids").

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Dedup {
    seen: Mutex<HashSet<String>>,
    /// The lines of every request kept, in arrival order.
    pub lines: Mutex<Vec<String>>,
    /// Requests that came without a key (answered 400).
    pub missing_key: Mutex<u64>,
    /// Requests dropped as seen before.
    pub dropped: Mutex<u64>,
}

impl Dedup {
    /// The distinct lines kept.
    pub fn kept(&self) -> HashSet<String> {
        self.lines.lock().unwrap().iter().cloned().collect()
    }
}

async fn receive(State(s): State<Arc<Dedup>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string) else {
        *s.missing_key.lock().unwrap() += 1;
        return StatusCode::BAD_REQUEST;
    };
    if !s.seen.lock().unwrap().insert(key) {
        *s.dropped.lock().unwrap() += 1;
        return StatusCode::OK;
    }
    let text = String::from_utf8_lossy(&body).to_string();
    s.lines.lock().unwrap().extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
    StatusCode::OK
}

/// Serve a receiver on loopback: its URL and what it keeps.
pub async fn start_receiver() -> (String, Arc<Dedup>) {
    let state = Arc::new(Dedup::default());
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), state)
}

/// Copy a (stopped broker's) data directory, as a backup would.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
