//! The HTTP floor: the cheapest axum server that reads the ingest request
//! and answers a fixed JSON body, no validation, no WAL. What it reaches
//! under `benches/http_load.sh`'s load bounds what the broker can reach on
//! the same machine.
//!
//!   cargo run --release --example http_floor -- 127.0.0.1:7172
use axum::body::Bytes;
use axum::routing::post;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7172".into());
    let app = axum::Router::new().route(
        "/v1/topics/{topic}/records",
        post(|body: Bytes| async move {
            let n = body.iter().filter(|&&b| b == b'\n').count();
            axum::Json(serde_json::json!({"accepted": n, "priority": "normal", "lane": "normal/0", "first_offset": 0}))
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
