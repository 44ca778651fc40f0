//! The document against the code: routes (http.rs, front.rs), the actions
//! the handlers accept, and the error table (`protocol::ErrorCode`).

use super::DOCUMENT;
use crate::core::Broker;
use crate::http::{router, AppState};
use crate::metrics::Metrics;
use axum::body::Body;
use axum::http::{Method, Request};
use config::Config;
use protocol::ErrorCode;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use tower_service::Service as _;

fn doc() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
}

/// `(METHOD, path, operation)` of every operation in the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    out
}

/// `(METHOD, pattern)` of every `.route(…, get(…))` in http/mod.rs: the
/// router's own table, read from its source (axum cannot list it). A route
/// names its pattern as a literal or as one of `protocol::routes::pattern`'s.
fn router_routes() -> BTreeSet<(String, String)> {
    use protocol::routes::pattern;
    let named = [
        ("INGEST", pattern::INGEST),
        ("LEASES", pattern::LEASES),
        ("LEASE_ACTION", pattern::LEASE_ACTION),
        ("TOPICS", pattern::TOPICS),
        ("DESTINATIONS", pattern::DESTINATIONS),
        ("DESTINATION", pattern::DESTINATION),
        ("DEAD_LETTERS", pattern::DEAD_LETTERS),
        ("ADMIN_ACTION", pattern::ADMIN_ACTION),
    ];
    let src = include_str!("../mod.rs");
    let mut out = BTreeSet::new();
    for chunk in src.split(".route(").skip(1) {
        let (path, rest) = if let Some(lit) = chunk.strip_prefix('"') {
            lit.split_once('"').expect("a path literal")
        } else {
            let name = chunk.strip_prefix("pattern::").expect("a literal or pattern::NAME");
            let end = name.find(|c: char| !(c.is_ascii_uppercase() || c == '_')).unwrap_or(name.len());
            let path = named.iter().find(|(n, _)| *n == &name[..end]).expect("a known pattern").1;
            (path, &name[end..])
        };
        let call = rest.split(".fallback(").next().unwrap_or(rest);
        for m in ["get", "post", "put", "delete", "patch"] {
            if call.contains(&format!(" {m}(")) || call.contains(&format!(".{m}(")) {
                out.insert((m.to_uppercase(), path.to_string()));
            }
        }
    }
    assert!(out.len() >= 10, "parsed too few routes from http/mod.rs: {out:?}");
    out
}

/// Whether the router pattern `pattern` serves the document's `path`.
fn serves(pattern: &str, path: &str) -> bool {
    let (p, d): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == d.len()
        && p.iter().zip(&d).all(|(p, d)| if p.starts_with('{') { !d.is_empty() } else { !d.starts_with('{') && p == d })
}

#[test]
fn every_operation_is_a_route_and_every_route_is_documented() {
    let doc = doc();
    let routes = router_routes();
    let ops = operations(&doc);
    for (method, path, _) in &ops {
        let matching: Vec<_> = routes.iter().filter(|(m, p)| m == method && serves(p, path)).collect();
        assert_eq!(matching.len(), 1, "{method} {path} is served by {matching:?} (routes: {routes:?})");
    }
    for (method, pattern) in &routes {
        assert!(
            ops.iter().any(|(m, p, _)| m == method && serves(pattern, p)),
            "route {method} {pattern} is not in openapi.json"
        );
    }
    // The front's short way for ingest serves the same documented path.
    assert!(ops.iter().any(|(m, p, _)| m == "POST" && p == "/v1/topics/{topic}/records"));
    assert_eq!(crate::http::ingest_topic("/v1/topics/events/records"), Some("events"));
}

/// Every code of the table, once. The `match` has no wildcard on purpose:
/// a new code fails to compile here until it is added — and documented.
fn error_table() -> Vec<ErrorCode> {
    ErrorCode::ALL.to_vec()
}

#[test]
fn every_error_code_is_documented_under_its_own_status() {
    let doc = doc();
    let table: BTreeSet<&str> = error_table().into_iter().map(ErrorCode::as_str).collect();
    let mut documented = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        for (status, resp) in op["responses"].as_object().expect("responses") {
            for code in resp["x-error-codes"].as_array().into_iter().flatten() {
                let code = code.as_str().expect("a code is a string");
                let c: ErrorCode = serde_json::from_value(Value::from(code))
                    .unwrap_or_else(|_| panic!("{method} {path}: {code} is not in protocol::ErrorCode"));
                assert_eq!(c.status().to_string(), *status, "{method} {path}: {code} documented under {status}");
                assert_eq!(resp["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody");
                documented.insert(c.as_str());
            }
        }
    }
    assert_eq!(documented, table, "codes in openapi.json vs protocol::ErrorCode");
    let schema_enum: BTreeSet<&str> = doc["components"]["schemas"]["ErrorBody"]["properties"]["error"]["properties"]
        ["code"]["enum"]
        .as_array()
        .expect("ErrorBody code enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(schema_enum, table);
}

async fn ready_router() -> (axum::Router, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::development();
    cfg.data_dir = tmp.path().to_path_buf();
    let metrics = Metrics::new();
    let m = Arc::clone(&metrics);
    let broker = tokio::task::spawn_blocking(move || {
        Broker::open(cfg.validate().expect("valid config"), Arc::new(wal::RealFs), m)
    })
    .await
    .expect("open task")
    .expect("broker opens");
    let state = AppState { broker: Arc::new(OnceLock::new()), metrics, broker_id: Arc::from("test") };
    let _ = state.broker.set(Arc::new(broker));
    (router(state), tmp)
}

fn token_for(op: &Value) -> Option<&'static str> {
    let scheme = op["security"].as_array()?.first()?.as_object()?.keys().next()?.clone();
    Some(match scheme.as_str() {
        "tenantToken" => config::DEV_TENANT_TOKEN,
        "exporterToken" => config::DEV_EXPORTER_TOKEN,
        _ => config::DEV_ADMIN_TOKEN,
    })
}

async fn call(router: &mut axum::Router, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut req = Request::builder().method(Method::from_bytes(method.as_bytes()).expect("method")).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if path.ends_with("/records") {
        req = req.header("content-type", "application/x-ndjson");
    }
    let resp = router.call(req.body(Body::from(body.to_string())).expect("request")).await.expect("infallible");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn every_operation_is_answered_by_its_handler_with_a_documented_status() {
    let (mut router, _tmp) = ready_router().await;
    for (method, path, op) in operations(&doc()) {
        let concrete = path.replace("{topic}", "events").replace("{dest}", "dev").replace("{id}", "no-such-lease");
        let body = match op["operationId"].as_str() {
            Some("ingest") => "{\"a\":1}\n",
            Some("admin_rewind") => "{\"to\":\"earliest\"}",
            _ => "",
        };
        let (status, text) = call(&mut router, &method, &concrete, token_for(&op), body).await;
        for not_served in ["no such endpoint", "unknown action", "unknown lease action"] {
            assert!(!text.contains(not_served), "{method} {concrete}: {status} {text}");
        }
        assert!(
            op["responses"].get(status.to_string()).is_some(),
            "{method} {concrete} answered {status}, which openapi.json does not document: {text}"
        );
    }
}

#[tokio::test]
async fn every_action_a_handler_accepts_is_documented() {
    let (mut router, _tmp) = ready_router().await;
    let doc = doc();
    let ops = operations(&doc);
    for (method, pattern) in router_routes().into_iter().filter(|(_, p)| p.ends_with("/{action}")) {
        let token = if pattern.starts_with("/v1/admin") { config::DEV_ADMIN_TOKEN } else { config::DEV_EXPORTER_TOKEN };
        let probe = pattern.replace("{dest}", "dev").replace("{id}", "x").replace("{action}", "not-an-action");
        let (status, text) = call(&mut router, &method, &probe, Some(token), "").await;
        assert_eq!(status, 400, "{probe}: {text}");
        // The handler's own message lists what it accepts: "… use a, b or c".
        let list = text.split("use ").nth(1).expect("the message lists the actions");
        let list = list.split('"').next().unwrap_or(list).replace(" or ", ", ");
        for action in list.split(", ").map(str::trim).filter(|a| !a.is_empty()) {
            let path = pattern.replace("{action}", action);
            assert!(ops.iter().any(|(m, p, _)| *m == method && *p == path), "{method} {path} is not documented");
        }
    }
}

#[tokio::test]
async fn the_document_is_served_at_openapi_json() {
    let (mut router, _tmp) = ready_router().await;
    let (status, text) = call(&mut router, "GET", "/openapi.json", None, "").await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&text).expect("JSON"), doc());
}
