//! The token-role matrix: every endpoint of the broker × {no token, unknown
//! token, tenant, exporter of this destination, exporter of another,
//! admin} → the status and code it answers. Where the contract names the
//! answer (401 `unauthorized` for a missing or unknown token, 403
//! `forbidden` for a token outside its role) it is asserted; where it is
//! silent (admin on lease routes, tokens on /metrics and the probes) the
//! table asserts what the broker does today, marked `open`. All mismatches
//! are reported at once.

mod common;

use common::*;

const EXTRA: &str = "[[destination]]
name = \"main\"
topics = [\"events\"]
token = \"main-t\"

[[destination]]
name = \"other\"
topics = [\"events\"]
token = \"other-t\"
";

/// The roles, in the order each endpoint is tried: the one that succeeds
/// on a lease (the owner) goes last, so the others meet a lease still held.
const ROLES: [(&str, Option<&str>); 6] = [
    ("no token", None),
    ("unknown token", Some("Bearer who-knows")),
    ("tenant", Some("Bearer acme-t")),
    ("exporter of another destination", Some("Bearer other-t")),
    ("admin", Some("Bearer admin-t")),
    ("exporter of this destination", Some("Bearer main-t")),
];

/// Expected answer per role, in `ROLES` order: (status, error code; "" for a success).
type Row = [(u16, &'static str); 6];

const OK: (u16, &str) = (200, "");
const UNAUTH: (u16, &str) = (401, "unauthorized");
const FORBID: (u16, &str) = (403, "forbidden");

/// Ingest: tenants only.
const INGEST: Row = [UNAUTH, UNAUTH, OK, FORBID, FORBID, FORBID];
/// Lease protocol: the destination's exporter only (admin refused: open in the contract, 403 today).
const LEASE: Row = [UNAUTH, UNAUTH, FORBID, FORBID, FORBID, OK];
/// Admin routes: the admin token only.
const ADMIN: Row = [UNAUTH, UNAUTH, FORBID, FORBID, OK, FORBID];
/// /metrics and the probes: open in the contract; no token needed today, and any token is ignored.
const PUBLIC: Row = [OK, OK, OK, OK, OK, OK];

struct Matrix {
    url: String,
    c: reqwest::Client,
    mismatches: Vec<String>,
    cells: usize,
}

impl Matrix {
    async fn call(&self, method: &str, path: &str, auth: Option<&str>, body: &str) -> Answer {
        let url = format!("{}{path}", self.url);
        let ct = if path.starts_with("/v1/topics/") { "application/x-ndjson" } else { "application/json" };
        let mut req = match method {
            "GET" => self.c.get(url),
            _ => self.c.post(url).header("content-type", ct).body(body.to_string()),
        };
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        answer(req.send().await.expect("request")).await
    }

    /// One endpoint across every role; `body` for each try (a lease route
    /// gets the same lease for every role).
    async fn row(&mut self, method: &str, path: &str, body: &str, want: Row, note: &str) {
        for ((role, auth), (status, code)) in ROLES.iter().zip(want) {
            let a = self.call(method, path, *auth, body).await;
            self.cells += 1;
            let ok = a.status == status
                && if code.is_empty() {
                    a.json.get("error").is_none()
                } else {
                    a.code() == code && !a.message().is_empty() && a.retry_after.is_none()
                };
            if !ok {
                self.mismatches.push(format!(
                    "{method} {path} as {role}: want {status} {code:?} ({note}), got {} {}",
                    a.status, a.json
                ));
            }
        }
    }

    async fn lease(&self) -> String {
        let a = self
            .call("POST", "/v1/destinations/main/leases", Some("Bearer main-t"), r#"{"max_records":1,"wait_ms":2000}"#)
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        a.json["lease"]["id"].as_str().unwrap_or_else(|| panic!("a lease: {a:?}")).to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_every_role_as_the_contract_says() {
    let b = BrokerProc::start(EXTRA);
    // One batch per record: a lease holds at least one whole batch.
    for i in 0..6 {
        assert_eq!(ingest(&b.url, "acme-t", "events", format!("{{\"id\":\"m{i}\"}}\n")).await.status, 200);
    }
    let mut m = Matrix { url: b.url.clone(), c: client(), mismatches: Vec::new(), cells: 0 };

    m.row("POST", "/v1/topics/events/records", "{\"id\":\"x\"}\n", INGEST, "contract: ingest table").await;
    m.row(
        "POST",
        "/v1/destinations/main/leases",
        r#"{"max_records":1,"wait_ms":0}"#,
        LEASE,
        "contract: exporter token",
    )
    .await;
    m.row("GET", "/v1/destinations/main/topics", "", LEASE, "lease protocol").await;
    // Each lease action on a lease the owner holds; the owner acts last.
    let l = m.lease().await;
    m.row("POST", &format!("/v1/destinations/main/leases/{l}/heartbeat"), "", LEASE, "lease protocol").await;
    m.row("POST", &format!("/v1/destinations/main/leases/{l}/commit"), "{}", LEASE, "lease protocol").await;
    let l = m.lease().await;
    let fail = r#"{"class":"released","message":"role matrix"}"#;
    m.row("POST", &format!("/v1/destinations/main/leases/{l}/fail"), fail, LEASE, "lease protocol").await;
    let l = m.lease().await;
    m.row("POST", &format!("/v1/destinations/main/leases/{l}/release"), "", LEASE, "lease protocol").await;

    m.row("GET", "/v1/admin/destinations", "", ADMIN, "contract: admin token").await;
    m.row("GET", "/v1/admin/destinations/main", "", ADMIN, "contract: admin token").await;
    m.row("GET", "/v1/admin/destinations/main/dead-letters", "", ADMIN, "contract: admin token").await;
    for action in ["pause", "resume", "reset-breaker", "redrive"] {
        m.row("POST", &format!("/v1/admin/destinations/main/{action}"), "{}", ADMIN, "contract: admin token").await;
    }
    m.row("POST", "/v1/admin/destinations/main/rewind", r#"{"to":"earliest"}"#, ADMIN, "contract: admin token").await;

    m.row("GET", "/metrics", "", PUBLIC, "open: no token needed today").await;
    m.row("GET", "/healthz", "", PUBLIC, "open: no token needed today").await;
    m.row("GET", "/readyz", "", PUBLIC, "open: no token needed today").await;

    // Authentication comes before the resource: a stranger learns nothing
    // about which topics or destinations exist.
    const ON_UNKNOWN_TOPIC: Row = [UNAUTH, UNAUTH, (404, "unknown_topic"), FORBID, FORBID, FORBID];
    m.row("POST", "/v1/topics/nope/records", "{}\n", ON_UNKNOWN_TOPIC, "contract: 401 before 404").await;
    const ON_UNKNOWN_DEST_ADMIN: Row = [UNAUTH, UNAUTH, FORBID, FORBID, (404, "unknown_destination"), FORBID];
    m.row("GET", "/v1/admin/destinations/nope", "", ON_UNKNOWN_DEST_ADMIN, "401/403 before 404").await;
    // No exporter token belongs to `nope`: 403 for all (open: today's answer).
    const ON_UNKNOWN_DEST_LEASE: Row = [UNAUTH, UNAUTH, FORBID, FORBID, FORBID, FORBID];
    m.row("POST", "/v1/destinations/nope/leases", "{}", ON_UNKNOWN_DEST_LEASE, "open: 403 today").await;

    // Malformed Authorization headers are a missing token.
    for bad in ["Basic YWNtZTphY21lLXQ=", "Bearer", "Bearer ", "acme-t", "bearer acme-t x"] {
        let a = m.call("POST", "/v1/topics/events/records", Some(bad), "{}\n").await;
        m.cells += 1;
        if a.status != 401 || a.code() != "unauthorized" {
            m.mismatches
                .push(format!("ingest with Authorization {bad:?}: want 401 unauthorized, got {} {}", a.status, a.json));
        }
    }
    assert!(
        m.mismatches.is_empty(),
        "{} of {} cells differ:\n{}",
        m.mismatches.len(),
        m.cells,
        m.mismatches.join("\n")
    );
    eprintln!("role matrix: {} cells as expected", m.cells);
}

/// v1.1: no such endpoint is 404 `not_found`, a wrong method 405
/// `method_not_allowed`, both in the contract's JSON, whatever the token.
#[tokio::test]
async fn unknown_endpoint_is_404_not_found_and_wrong_method_is_405_method_not_allowed_for_every_role() {
    let b = BrokerProc::start(EXTRA);
    let m = Matrix { url: b.url.clone(), c: client(), mismatches: Vec::new(), cells: 0 };
    let mut bad = Vec::new();
    for (role, auth) in ROLES {
        for (method, path, status, code) in [
            ("GET", "/v1/nowhere", 404, "not_found"),
            ("POST", "/v1/admin/nowhere/at/all", 404, "not_found"),
            ("GET", "/v1/topics/events/records", 405, "method_not_allowed"),
            ("POST", "/metrics", 405, "method_not_allowed"),
        ] {
            let a = m.call(method, path, auth, "").await;
            if a.status != status || a.code() != code || a.message().is_empty() {
                bad.push(format!("{method} {path} as {role}: want {status} {code}, got {} {}", a.status, a.json));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
