//! Tenants' metric series are bounded (issue 24): past
//! `metrics_max_tenant_series`, tenants are counted under
//! `tenant="_other"`; the tenants with series of their own are the first the
//! broker saw and stay so across reloads; and
//! `weir_tenant_oldest_pending_age_seconds{destination,tenant}` shows how
//! long a tenant's oldest record waits for a destination, back to 0 once
//! it is delivered.

mod common;

use common::*;
use std::time::Duration;

fn tenants(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("[[tenant]]\nname = \"{n}\"\ntoken = \"{n}-token\"\nrate_per_sec = 1000.0\nburst = 1000\n"))
        .collect()
}

fn config(data: &std::path::Path, names: &[&str]) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nadmin_token = \"admin-t\"\nmetrics_max_tenant_series = 2\nmaintenance_interval_ms = 100\n{}[[topic]]\nname = \"events\"\n[[destination]]\nname = \"d\"\ntopics = [\"events\"]\ntoken = \"d-t\"\n",
        data.display(),
        tenants(names)
    )
}

async fn scrape(url: &str) -> String {
    let resp = client().get(format!("{url}/metrics")).bearer_auth("admin-t").send().await.expect("scrape");
    resp.text().await.expect("metrics text")
}

fn tenant_labels(text: &str) -> Vec<String> {
    let mut labels: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split("tenant=\"").nth(1).and_then(|rest| rest.split('"').next()))
        .map(String::from)
        .collect();
    labels.sort();
    labels.dedup();
    labels
}

async fn reload(b: &BrokerProc, oks: f64) {
    unsafe { libc::kill(b.child.id() as i32, libc::SIGHUP) };
    wait_until("the reload is counted", Duration::from_secs(30), || async {
        metric(&b.url, "weir_config_reloads_total{result=\"ok\"}").await >= oks
    })
    .await;
}

#[tokio::test]
async fn tenants_past_the_cap_share_other_and_the_oldest_pending_age_is_shown_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = BrokerProc::start_with(&data, &config(&data, &["t0", "t1", "t2", "t3"]));
    assert_eq!(
        tenant_labels(&scrape(&b.url).await),
        ["_other", "t0", "t1"],
        "two tenants with series, the rest _other"
    );
    for (token, n) in [("t0-token", 2), ("t3-token", 3), ("t2-token", 4)] {
        let body: String = (0..n).map(|i| format!("{{\"i\":{i}}}\n")).collect();
        assert_eq!(ingest(&b.url, token, "events", body).await.status, 200);
    }
    let text = scrape(&b.url).await;
    assert!(
        text.contains("weir_ingest_records_total{priority=\"normal\",tenant=\"_other\",topic=\"events\"} 7"),
        "t2 and t3 counted together"
    );
    assert!(text.contains("weir_ingest_records_total{priority=\"normal\",tenant=\"t0\",topic=\"events\"} 2"));

    // No exporter: the records wait, and their age shows per tenant.
    let age = "weir_tenant_oldest_pending_age_seconds{destination=\"d\",tenant=\"t0\"}";
    wait_until("t0's oldest pending age rises", Duration::from_secs(30), || async { metric(&b.url, age).await > 0.0 })
        .await;
    wait_until("_other's too", Duration::from_secs(30), || async {
        metric(&b.url, "weir_tenant_oldest_pending_age_seconds{destination=\"d\",tenant=\"_other\"}").await > 0.0
    })
    .await;
    assert_eq!(metric(&b.url, "weir_tenant_oldest_pending_age_seconds{destination=\"d\",tenant=\"t1\"}").await, 0.0);

    // Delivered: back to 0 at the next pass.
    for _ in 0..10 {
        let acquired = answer(
            client()
                .post(format!("{}/v1/destinations/d/leases", b.url))
                .bearer_auth("d-t")
                .json(&serde_json::json!({"max_records": 100, "wait_ms": 0}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let Some(id) = acquired.json["lease"]["id"].as_str() else { break };
        let commit = client()
            .post(format!("{}/v1/destinations/d/leases/{id}/commit", b.url))
            .bearer_auth("d-t")
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(commit.status().as_u16(), 200);
    }
    wait_until("t0's age is 0 once delivered", Duration::from_secs(30), || async { metric(&b.url, age).await == 0.0 })
        .await;

    // A reload that removes t0 and adds t4: t1 keeps its series, t4 (past
    // the cap) is _other, and t0's series stays what it was.
    std::fs::write(&b.config, config(&data, &["t1", "t2", "t3", "t4"])).unwrap();
    reload(&b, 1.0).await;
    assert_eq!(ingest(&b.url, "t4-token", "events", "{}\n").await.status, 200);
    let text = scrape(&b.url).await;
    assert_eq!(tenant_labels(&text), ["_other", "t0", "t1"], "no series for t4");
    assert!(text.contains("weir_ingest_records_total{priority=\"normal\",tenant=\"_other\",topic=\"events\"} 8"));
}
