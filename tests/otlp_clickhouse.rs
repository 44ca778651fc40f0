//! OTLP in, ClickHouse rows out, exactly once (issue 21). The engine is
//! chdb's (PyPI `chdb`: a current ClickHouse embedded), behind a minimal
//! handler of ClickHouse's HTTP interface (`tests/support/chdb_server.py`);
//! its tables are the shipped DDL (`ops/clickhouse/otel.sql`). Real broker,
//! exporter and OpenTelemetry fixtures on loopback.
//!
//! Needs chdb (`WEIR_PYTHON` or `.venv-ci`, see `tests/common/python.rs`):
//! without it each test fails in CI and is reported skipped elsewhere.

mod common;

use common::chdb::Chdb;
use common::python::python_with_or_skip;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEST: &str = r#"lease_timeout_ms = 1000
[[destination]]
name = "ch"
topics = ["otel_logs", "otel_traces", "otel_metrics"]
token = "ch-t"
"#;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/otlp").join(name)
}

async fn post_json(url: &str, path: &str, body: Vec<u8>) {
    let resp = client()
        .post(format!("{url}{path}"))
        .bearer_auth("acme-t")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("OTLP request");
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await.unwrap_or_default());
}

/// A logs export of `n` records with bodies `{prefix}-{i}`.
fn logs(prefix: &str, n: usize) -> Vec<u8> {
    let records: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"timeUnixNano": "1700000000000000000", "body": {"stringValue": format!("{prefix}-{i}")}}))
        .collect();
    let resource = serde_json::json!({"attributes": [{"key": "service.name", "value": {"stringValue": "kill"}}]});
    serde_json::json!({"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": records}]}]})
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_items_become_rows_of_the_collector_tables_with_their_tenant() {
    let test = "otlp_items_become_rows_of_the_collector_tables_with_their_tenant";
    let Some(python) = python_with_or_skip(test, "chdb") else { return };
    let ch = Chdb::start(&python, 0);
    let broker = BrokerProc::start(DEST);
    for (path, file) in [("/v1/logs", "logs.json"), ("/v1/traces", "traces.json"), ("/v1/metrics", "metrics.json")] {
        post_json(&broker.url, path, std::fs::read(fixture(file)).expect("fixture")).await;
    }
    // One table that does not deduplicate: the exporter says so at start.
    ch.query("ALTER TABLE otel_traces MODIFY SETTING non_replicated_deduplication_window = 0").await;
    let sink = format!("clickhouse+{}/?format=otel", ch.url);
    let dir = tempfile::tempdir().expect("tempdir");
    let exporter_log = dir.path().join("exporter.log");
    let mut exporter = ExporterProc::start_logging(&broker.url, "ch", "ch-t", &sink, &[], &exporter_log);
    let all_rows = "SELECT (SELECT count() FROM otel_logs) + (SELECT count() FROM otel_traces) + (SELECT count() FROM otel_metrics_gauge) + (SELECT count() FROM otel_metrics_sum) + (SELECT count() FROM otel_metrics_histogram) + (SELECT count() FROM otel_metrics_exponential_histogram) + (SELECT count() FROM otel_metrics_summary)";
    wait_until("10 rows, every record committed", Duration::from_secs(60), || async {
        ch.query(all_rows).await.parse::<u64>().unwrap_or(0) >= 10
            && destination(&broker.url, "ch").await["lag_records"] == 0
    })
    .await;
    let want = [
        ("otel_logs", 2),
        ("otel_traces", 2),
        ("otel_metrics_gauge", 1),
        ("otel_metrics_sum", 2),
        ("otel_metrics_histogram", 1),
        ("otel_metrics_exponential_histogram", 1),
        ("otel_metrics_summary", 1),
    ];
    for (table, rows) in want {
        assert_eq!(ch.query(&format!("SELECT count() FROM {table}")).await, rows.to_string(), "{table}");
        let tenants = ch.query(&format!("SELECT groupUniqArray(ResourceAttributes['weir.tenant']) FROM {table}")).await;
        assert_eq!(tenants, "['acme']", "{table}");
    }
    let log = ch
        .query("SELECT toString(Timestamp), TraceId, SeverityNumber, LogAttributes['int.attribute'], LogAttributes['bytes.attribute'] FROM otel_logs WHERE Body = 'fixture log one'")
        .await;
    assert_eq!(log, "2023-11-14 22:13:20.000000001\t5b8efff798038103d269b633813fc60c\t9\t10\tAAEC/w==");
    let span = ch
        .query(
            "SELECT SpanKind, Duration, Events.Name, StatusCode FROM otel_traces WHERE SpanName = 'fixture-span-one'",
        )
        .await;
    assert_eq!(span, "Server\t1000000000\t['checkpoint']\tOk");
    let summary = ch
        .query("SELECT Count, Sum, ValueAtQuantiles.Quantile, ValueAtQuantiles.Value FROM otel_metrics_summary")
        .await;
    assert_eq!(summary, "5\t12.5\t[0.5,0.99]\t[2,4.5]");
    let exp = ch
        .query("SELECT Scale, ZeroCount, PositiveOffset, PositiveBucketCounts FROM otel_metrics_exponential_histogram")
        .await;
    assert_eq!(exp, "2\t1\t-1\t[1,2]");
    let sums = ch.query("SELECT arraySort(groupArray(Value)), groupUniqArray(IsMonotonic) FROM otel_metrics_sum").await;
    assert_eq!(sums, "[5,7]\t[true]");
    // Read while it runs: its log lines reach the file from a writer thread.
    let read_log = || std::fs::read_to_string(&exporter_log).unwrap_or_default();
    let warned = || read_log().contains("non_replicated_deduplication_window");
    wait_until("the exporter's warning", Duration::from_secs(30), || async { warned() }).await;
    exporter.kill9();
    let text = read_log();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("non_replicated_deduplication_window")).collect();
    assert_eq!(warnings.len(), 1, "one warning, for the one table:\n{text}");
    assert!(warnings[0].contains("otel_traces"), "{}", warnings[0]);
}

/// Issue 21: an exporter killed between its insert and its commit leaves
/// its lease to expire; the redelivery repeats the insert with the same
/// token and bytes, and ClickHouse drops it. `WEIR_CH_KILLS` sets the count
/// (the soak: 200, docs/testing.md); CI runs 20.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_kill9s_between_insert_and_commit_leave_every_row_exactly_once() {
    let test = "exporter_kill9s_between_insert_and_commit_leave_every_row_exactly_once";
    let Some(python) = python_with_or_skip(test, "chdb") else { return };
    let kills: usize = std::env::var("WEIR_CH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    // Each insert's answer waits 300 ms after the rows are in: a kill in
    // that window lands between the insert and the commit.
    let ch = Chdb::start(&python, 300);
    let broker = BrokerProc::start(DEST);
    let sink = format!("clickhouse+{}/?format=otel", ch.url);
    let per_round = 50;
    // A pseudo-random kill point per round (xorshift; reproducible).
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..kills {
        post_json(&broker.url, "/v1/logs", logs(&format!("r{round}"), per_round)).await;
        let mut exporter = ExporterProc::start(&broker.url, "ch", "ch-t", &sink, &["--wait-ms", "100"]);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Past the exporter's start and probe, into its inserts and commits.
        tokio::time::sleep(Duration::from_millis(150 + seed % 400)).await;
        exporter.kill9();
    }
    let total = kills * per_round;
    let _last = ExporterProc::start(&broker.url, "ch", "ch-t", &sink, &[]);
    wait_until("every row in, every record committed", Duration::from_secs(120), || async {
        ch.query("SELECT uniqExact(Body) FROM otel_logs").await == total.to_string()
            && destination(&broker.url, "ch").await["lag_records"] == 0
    })
    .await;
    // The kills cut leases short: their records came again.
    assert!(metric(&broker.url, "weir_lease_expired_total").await >= 1.0, "no kill interrupted a lease");
    let rows = ch.query("SELECT count(), uniqExact(Body) FROM otel_logs").await;
    assert_eq!(rows, format!("{total}\t{total}"), "none missing, none twice, after {kills} kill -9s");
}
