//! A webhook receiver for event mode that deduplicates on `webhook-id`, as
//! Standard Webhooks asks receivers to, and checks that each request holds
//! exactly one record: one JSON value, `application/json`, unframed to the
//! record's bytes (`{"payload_b64":…}` stands for the decoded bytes). It
//! can answer 503 to every Nth request (before deduplicating), and keeps
//! the headers that tests look for.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Events {
    /// Answer 503 to every Nth request (0: never).
    pub fail_every: AtomicU64,
    /// Answer this status to the first `refuse_first` requests (0: none).
    pub refuse_first: AtomicU64,
    pub refuse_status: AtomicU64,
    pub requests: AtomicU64,
    pub failed_503: AtomicU64,
    pub duplicates: AtomicU64,
    /// webhook-id → the record's bytes, first delivery kept.
    pub kept: Mutex<HashMap<String, Vec<u8>>>,
    /// Why a request was not one record (answered 400).
    pub malformed: Mutex<Vec<String>>,
    /// Every header value seen, by name.
    pub headers: Mutex<HashMap<String, Vec<String>>>,
    /// Each record's first delivery, in the order they arrived.
    pub arrivals: Mutex<Vec<Vec<u8>>>,
}

impl Events {
    pub fn kept_records(&self) -> Vec<Vec<u8>> {
        self.kept.lock().unwrap().values().cloned().collect()
    }
}

/// The record a body stands for, or why it is not one record.
fn one_record(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, String> {
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct != "application/json" {
        return Err(format!("content-type {ct:?}"));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not one JSON value: {e}"))?;
    if let serde_json::Value::Object(m) = &value {
        if m.len() == 1 {
            if let Some(serde_json::Value::String(b64)) = m.get("payload_b64") {
                return protocol::b64_decode(b64).map_err(|e| format!("bad base64: {e}"));
            }
        }
    }
    Ok(body.to_vec())
}

async fn receive(State(s): State<Arc<Events>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = s.requests.fetch_add(1, Ordering::SeqCst) + 1;
    {
        let mut seen = s.headers.lock().unwrap();
        for (k, v) in &headers {
            seen.entry(k.as_str().to_string()).or_default().push(String::from_utf8_lossy(v.as_bytes()).to_string());
        }
    }
    if n <= s.refuse_first.load(Ordering::SeqCst) {
        return StatusCode::from_u16(s.refuse_status.load(Ordering::SeqCst) as u16).unwrap_or(StatusCode::UNAUTHORIZED);
    }
    let every = s.fail_every.load(Ordering::SeqCst);
    if every > 0 && n % every == 0 {
        s.failed_503.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()).map(str::to_string) else {
        s.malformed.lock().unwrap().push("no webhook-id".into());
        return StatusCode::BAD_REQUEST;
    };
    let record = match one_record(&headers, &body) {
        Ok(r) => r,
        Err(why) => {
            s.malformed.lock().unwrap().push(why);
            return StatusCode::BAD_REQUEST;
        }
    };
    let mut kept = s.kept.lock().unwrap();
    match kept.entry(id) {
        std::collections::hash_map::Entry::Occupied(first) => {
            // A downstream id is a promise: the same id, the same record.
            if *first.get() != record {
                s.malformed.lock().unwrap().push(format!("webhook-id {} reused for other bytes", first.key()));
            }
            s.duplicates.fetch_add(1, Ordering::SeqCst);
        }
        std::collections::hash_map::Entry::Vacant(slot) => {
            s.arrivals.lock().unwrap().push(record.clone());
            slot.insert(record);
        }
    }
    StatusCode::OK
}

/// Serve a receiver on loopback: its address (`127.0.0.1:PORT`) and state.
pub async fn start() -> (String, Arc<Events>) {
    let state = Arc::new(Events::default());
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr.to_string(), state)
}
