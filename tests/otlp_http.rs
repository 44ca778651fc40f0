//! OTLP/HTTP answers as the specification says (issue 21): the
//! specification-shaped OTLP/JSON fixtures (`tests/fixtures/otlp/`, sent by
//! curl) are stored item by item; the error matrix answers with a
//! `google.rpc.Status` in the request's encoding, whose message starts with
//! the contract's code, and 429/503 with `Retry-After` only where a retry
//! helps. Real broker, exporter and file sink on loopback.

mod common;

use common::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const DEST: &str = r#"max_record_bytes = 4096
max_body_bytes = 524288
max_inflated_bytes = 1048576
[[destination]]
name = "otel"
topics = ["otel_logs", "otel_traces", "otel_metrics"]
token = "otel-t"
[[tenant]]
name = "slow"
token = "slow-t"
rate_per_sec = 1.0
burst = 1
hard_rate_per_sec = 1.0
hard_burst = 5
"#;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/otlp").join(name)
}

/// POST `file` with curl: its status and body.
fn curl(url: &str, path: &str, file: &Path, extra: &[&str]) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", "-H", "Authorization: Bearer acme-t"])
        .args(["-H", "Content-Type: application/json"])
        .args(extra)
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("{url}{path}"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("curl's status line");
    (code.trim().parse().expect("status"), body.to_string())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// One record's only item (its signal's item list holds one).
fn only_item(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).expect("record is JSON");
    let (root, scopes, items) = if v.get("resourceLogs").is_some() {
        ("resourceLogs", "scopeLogs", "logRecords")
    } else if v.get("resourceSpans").is_some() {
        ("resourceSpans", "scopeSpans", "spans")
    } else {
        ("resourceMetrics", "scopeMetrics", "metrics")
    };
    let list = &v[root][0][scopes][0][items];
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{line}");
    assert_eq!(v[root][0]["resource"]["attributes"][0]["value"]["stringValue"], "fixture.service", "{line}");
    list[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_fixtures_sent_by_curl_are_stored_item_by_item() {
    let broker = BrokerProc::start(DEST);
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("otel.ndjson");
    let mut exporter = ExporterProc::start(&broker.url, "otel", "otel-t", &format!("file://{}", out.display()), &[]);
    for (path, file) in [("/v1/logs", "logs.json"), ("/v1/traces", "traces.json"), ("/v1/metrics", "metrics.json")] {
        let (status, body) = curl(&broker.url, path, &fixture(file), &[]);
        assert_eq!(status, 200, "{file}: {body}");
        let answer: Value = serde_json::from_str(&body).expect("an Export…ServiceResponse in JSON");
        assert!(answer.get("partialSuccess").is_none_or(Value::is_null), "{file}: {answer}");
    }
    // The metrics again, gzip-compressed: the same items once more.
    let zipped = tmp.path().join("metrics.json.gz");
    std::fs::write(&zipped, gzip(&std::fs::read(fixture("metrics.json")).expect("fixture"))).expect("write");
    let (status, body) = curl(&broker.url, "/v1/metrics", &zipped, &["-H", "Content-Encoding: gzip"]);
    assert_eq!(status, 200, "{body}");
    // 2 logs, 2 spans, 6 data points (2 sum, gauge, histogram, exponential
    // histogram, summary), then the 6 again: 16.
    wait_until("16 records at the sink", Duration::from_secs(30), || async { file_lines(&out).len() >= 16 }).await;
    wait_until("all committed", Duration::from_secs(30), || async {
        destination(&broker.url, "otel").await["lag_records"] == 0
    })
    .await;
    let lines = file_lines(&out);
    assert_eq!(lines.len(), 16);
    let items: Vec<Value> = lines.iter().map(|l| only_item(l)).collect();
    let names: Vec<&str> = items.iter().filter_map(|i| i["name"].as_str()).collect();
    for want in ["fixture-span-one", "fixture-span-two", "fixture.summary", "fixture.exponential_histogram"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let log = items.iter().find(|i| i["body"]["stringValue"] == "fixture log one").expect("the first log");
    assert_eq!(log["traceId"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(log["observedTimeUnixNano"], "1700000000000000002", "a number in, a string out");
    let bytes = log["attributes"].as_array().and_then(|a| a.iter().find(|kv| kv["key"] == "bytes.attribute"));
    assert_eq!(bytes.map(|kv| kv["value"]["bytesValue"].clone()), Some(Value::from("AAEC/w==")));
    let summary = items.iter().find(|i| i["name"] == "fixture.summary").expect("summary");
    let q = &summary["summary"]["dataPoints"][0]["quantileValues"];
    assert_eq!((q[1]["quantile"].as_f64(), q[1]["value"].as_f64()), (Some(0.99), Some(4.5)), "{summary}");
    let exp = items.iter().find(|i| i["name"] == "fixture.exponential_histogram").expect("exponential histogram");
    assert_eq!(exp["exponentialHistogram"]["dataPoints"][0]["positive"]["bucketCounts"], serde_json::json!(["1", "2"]));
    exporter.kill9();
}

/// POST `body` to an OTLP route: status, `Retry-After`, content type, body.
async fn post(url: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let mut req = client().post(format!("{url}{path}")).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("OTLP request");
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (retry_after, content_type) = (header("retry-after"), header("content-type").unwrap_or_default());
    let body = resp.bytes().await.expect("body").to_vec();
    Reply { status, retry_after, content_type, body }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<String>,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    /// A JSON `google.rpc.Status` with `grpc_code`, its message starting with `code`.
    fn assert_json_status(&self, status: u16, grpc_code: i64, code: &str) {
        assert_eq!((self.status, self.content_type.as_str()), (status, "application/json"), "{self:?}");
        let v: Value = serde_json::from_slice(&self.body).expect("a JSON google.rpc.Status");
        assert_eq!(v["code"], grpc_code, "{v}");
        let message = v["message"].as_str().unwrap_or("");
        assert!(message.starts_with(&format!("{code}: ")), "{message}");
        let retryable = matches!(status, 429 | 503);
        assert_eq!(self.retry_after.is_some(), retryable, "Retry-After only where a retry helps: {self:?}");
    }
}

const JSON: (&str, &str) = ("content-type", "application/json");
const PROTO: (&str, &str) = ("content-type", "application/x-protobuf");

fn logs_json(bodies: &[String]) -> Vec<u8> {
    let records: Vec<Value> = bodies.iter().map(|b| serde_json::json!({"body": {"stringValue": b}})).collect();
    serde_json::json!({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_error_matrix_answers_as_the_specification_says() {
    let broker = BrokerProc::start(DEST);
    let url = broker.url.as_str();
    let acme = Some("acme-t");
    // Garbage protobuf: 400, a protobuf google.rpc.Status (its message is
    // a UTF-8 string field, readable in the bytes).
    let r = post(url, "/v1/logs", acme, &[PROTO], vec![0xff, 0xff, 0xff, 0x0f]).await;
    assert_eq!((r.status, r.content_type.as_str(), r.retry_after.as_deref()), (400, "application/x-protobuf", None));
    assert!(String::from_utf8_lossy(&r.body).contains("invalid_body: "), "{r:?}");
    // Garbage JSON, and JSON of the wrong shape.
    post(url, "/v1/traces", acme, &[JSON], b"{\"resourceSpans\": [".to_vec()).await.assert_json_status(
        400,
        3,
        "invalid_body",
    );
    post(url, "/v1/traces", acme, &[JSON], b"{\"resourceSpans\": 7}".to_vec()).await.assert_json_status(
        400,
        3,
        "invalid_body",
    );
    // A content type OTLP does not take: 415, answered in JSON.
    post(url, "/v1/metrics", acme, &[("content-type", "text/plain")], b"x".to_vec()).await.assert_json_status(
        415,
        3,
        "unsupported_media_type",
    );
    // A gzip bomb over max_inflated_bytes (1 MiB): 413.
    let bomb = gzip(&vec![b' '; 8 << 20]);
    post(url, "/v1/logs", acme, &[JSON, ("content-encoding", "gzip")], bomb).await.assert_json_status(
        413,
        3,
        "payload_too_large",
    );
    // No token, an unknown one, an exporter's and the admin's.
    post(url, "/v1/logs", None, &[JSON], b"{}".to_vec()).await.assert_json_status(401, 16, "unauthorized");
    post(url, "/v1/logs", Some("nope-t"), &[JSON], b"{}".to_vec()).await.assert_json_status(401, 16, "unauthorized");
    post(url, "/v1/logs", Some("otel-t"), &[JSON], b"{}".to_vec()).await.assert_json_status(403, 7, "forbidden");
    post(url, "/v1/logs", Some("admin-t"), &[JSON], b"{}".to_vec()).await.assert_json_status(403, 7, "forbidden");
    // None of the refusals stored anything; an export with no items is 200
    // and appends nothing.
    let empty = post(url, "/v1/logs", acme, &[JSON], b"{}".to_vec()).await;
    assert_eq!(empty.status, 200, "{empty:?}");
    let no_records = post(url, "/v1/logs", acme, &[JSON], logs_json(&[])).await;
    assert_eq!(no_records.status, 200, "{no_records:?}");
    assert_eq!(metric(url, "weir_ingest_records_total{").await, 0.0, "nothing stored yet");
    // An item over max_record_bytes (4 KiB) is refused alone: partial success.
    let mixed = logs_json(&["small".into(), "x".repeat(5000), "also small".into()]);
    let r = post(url, "/v1/logs", acme, &[JSON], mixed).await;
    assert_eq!(r.status, 200, "{r:?}");
    let v: Value = serde_json::from_slice(&r.body).expect("JSON response");
    let partial = &v["partialSuccess"];
    assert_eq!(partial["rejectedLogRecords"].to_string().trim_matches('"'), "1", "{v}");
    assert!(partial["errorMessage"].as_str().unwrap_or("").starts_with("payload_too_large: 1 of 3 log records"), "{v}");
    assert_eq!(metric(url, "weir_ingest_records_total{").await, 2.0, "the two small ones");
    // Idempotency-Key: the same request twice is stored once.
    let keyed = logs_json(&["keyed".into()]);
    for _ in 0..2 {
        let r = post(url, "/v1/logs", acme, &[JSON, ("idempotency-key", "k-1")], keyed.clone()).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(metric(url, "weir_ingest_records_total{").await, 3.0, "a replay appends nothing");
    // Over the hard rate (1/s, burst 5): a first batch larger than the
    // bucket passes on the empty bucket (demoted to low: the soft rate),
    // the next gets 429 with Retry-After and stores nothing.
    let ten: Vec<String> = (0..10).map(|i| format!("slow {i}")).collect();
    let r = post(url, "/v1/logs", Some("slow-t"), &[JSON], logs_json(&ten)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = post(url, "/v1/logs", Some("slow-t"), &[JSON], logs_json(&ten)).await;
    r.assert_json_status(429, 8, "rate_limited");
    let r = post(url, "/v1/logs", Some("slow-t"), &[PROTO], Vec::new()).await;
    assert_eq!(r.status, 200, "an empty protobuf request has no items: {r:?}");
    assert_eq!(metric(url, "weir_ingest_records_total{").await, 13.0, "a refusal stores nothing");
}

/// Issue 21: an exporter whose sink forwards OTLP (`otlp+http`) refuses to
/// start (exit 2, naming the topic) for a destination that receives a topic
/// other than the OTLP signals'; for one that receives only those it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_sink_refuses_a_destination_with_other_topics_at_start() {
    let mixed = "[[destination]]\nname = \"mixed\"\ntopics = [\"otel_logs\", \"events\"]\ntoken = \"mixed-t\"\n";
    let b = BrokerProc::start(&format!("{DEST}{mixed}"));
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let run = |dest: &str, token: &str| {
        std::process::Command::new(&EXPORTER)
            .args(["--broker", &b.url, "--destination", dest, "--token", token, "--sink", "otlp+http://127.0.0.1:9/"])
            .args(["--metrics-listen", &listen])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn exporter")
    };
    let refused = run("mixed", "mixed-t").wait_with_output().expect("the exporter exits");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("\"events\"") && stderr.contains("not an OTLP topic"), "{stderr}");
    // An OTLP-only destination: the exporter starts and stays (ready once
    // the broker answered its first acquire).
    let mut fine = run("otel", "otel-t");
    let readyz = format!("http://{listen}/readyz");
    wait_until("the OTLP-only destination's exporter is ready", Duration::from_secs(30), || async {
        client().get(&readyz).send().await.is_ok_and(|r| r.status().as_u16() == 200)
    })
    .await;
    assert!(fine.try_wait().expect("status").is_none(), "the exporter of an OTLP-only destination runs");
    let _ = fine.kill();
    let _ = fine.wait();
}
