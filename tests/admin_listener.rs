//! `admin_listen` (issue 23): the operator's routes — `/v1/admin/*`,
//! `/metrics`, `/openapi.json` — are served there and nowhere else (404 on
//! `listen`); `/healthz` and `/readyz` on both; ingest, OTLP and leases
//! stay on `listen` (404 on the admin listener). `broker-admin` and an
//! exporter work against their own listener. Real broker on loopback.

mod common;

use common::*;

/// A loopback port free a moment ago (the broker binds it next).
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("its address").port()
}

async fn status(method: reqwest::Method, url: String, token: Option<&str>) -> (u16, String) {
    let mut req = client().request(method, url).header("content-type", "application/x-ndjson").body("{}");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn operator_routes_move_to_admin_listen_and_client_routes_stay_on_listen() {
    let port = free_port();
    let b = BrokerProc::start(&format!(
        "admin_listen = \"127.0.0.1:{port}\"\n[[destination]]\nname = \"d\"\ntopics = [\"events\"]\ntoken = \"d-t\"\n"
    ));
    let (main, admin) = (b.url.clone(), format!("http://127.0.0.1:{port}"));
    use reqwest::Method as M;
    let operator_paths = ["/metrics", "/openapi.json", "/v1/admin/destinations", "/v1/admin/destinations/d"];
    for path in operator_paths {
        let (code, body) = status(M::GET, format!("{main}{path}"), Some("admin-t")).await;
        assert_eq!(code, 404, "{path} on listen: {body}");
        assert!(body.contains("not_found"), "{path}: the contract's 404 body: {body}");
        let (code, body) = status(M::GET, format!("{admin}{path}"), Some("admin-t")).await;
        assert_eq!(code, 200, "{path} on admin_listen: {body}");
    }
    let (code, _) = status(M::GET, format!("{admin}/v1/admin/destinations"), None).await;
    assert_eq!(code, 401, "the admin listener still asks for the admin token");
    let (code, metrics) = status(M::GET, format!("{admin}/metrics"), None).await;
    assert!(code == 200 && metrics.contains("weir_ingest_records_total"), "{metrics}");
    for base in [&main, &admin] {
        for probe in ["/healthz", "/readyz"] {
            assert_eq!(status(M::GET, format!("{base}{probe}"), None).await.0, 200, "{base}{probe}");
        }
    }
    // Clients' routes: on listen, and 404 on the admin listener.
    let ingest = "/v1/topics/events/records";
    assert_eq!(status(M::POST, format!("{main}{ingest}"), Some("acme-t")).await.0, 200);
    for path in [ingest, "/v1/logs", "/v1/destinations/d/leases"] {
        let token = if path.contains("leases") { "d-t" } else { "acme-t" };
        let (code, body) = status(M::POST, format!("{admin}{path}"), Some(token)).await;
        assert_eq!(code, 404, "{path} on admin_listen: {body}");
    }
    let (code, body) = status(M::POST, format!("{main}/v1/destinations/d/leases"), Some("d-t")).await;
    assert!(code == 200 || code == 204, "a lease on listen: {code} {body}");

    // broker-admin talks to the admin listener.
    let (code, out, err) = run_admin(&["destinations", "--broker", &admin, "--token", "admin-t"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains('d'), "{out}");
}

#[test]
fn admin_listen_on_the_listen_address_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let text = config(&data, &format!("admin_listen = \"127.0.0.1:{port}\"\n"))
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""));
    let path = dir.path().join("broker.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(&BROKER).arg("--check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("admin_listen"), "{stderr}");
}
