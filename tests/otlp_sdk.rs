//! OTLP from a real OpenTelemetry client (issue 21): the OpenTelemetry
//! Python SDK with `opentelemetry-exporter-otlp-proto-http` and
//! `-proto-grpc` (`tests/support/otel_send.py`) sends logs, spans and
//! metrics of five kinds, with resource and item attributes of every value
//! type, to a real broker; a real exporter writes them to a file sink. Every
//! item arrives exactly once, as a one-item OTLP/JSON export request with
//! its fields and their types.
//!
//! Needs the SDK (`WEIR_PYTHON` or `.venv-ci`, see `tests/common/python.rs`):
//! without it each test fails in CI and is reported skipped elsewhere.

mod common;

use common::python::{python_with_or_skip, OTEL_PACKAGES};
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const DEST: &str = r#"
[[destination]]
name = "otel"
topics = ["otel_logs", "otel_traces", "otel_metrics"]
token = "otel-t"
[[destination]]
name = "ch"
topics = ["otel_logs", "otel_traces", "otel_metrics"]
token = "ch-t"
"#;

/// A child process killed when dropped (a failed assertion must not leave
/// a broker holding the test's output open).
pub struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A broker with OTLP/gRPC on a free port: its process, HTTP URL and gRPC URL.
pub fn spawn_with_grpc(config: &Path) -> (Killed, String, String) {
    let mut child = Command::new(&BROKER)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn broker");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(url);
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(60)).expect("broker printed its address");
    let grpc = rx.recv_timeout(Duration::from_secs(10)).expect("broker printed its OTLP/gRPC address");
    (Killed(child), url, grpc)
}

/// The SDK sender, started.
fn sender(python: &Path, protocol: &str, endpoint: &str, run: &str, logs: u32, spans: u32) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/otel_send.py");
    Command::new(python)
        .arg(script)
        .args([protocol, endpoint, "acme-t", run, &logs.to_string(), &spans.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the OpenTelemetry sender")
}

/// A broker of `common::config` plus `extra`, with OTLP/gRPC on a free
/// port: its directory (kept while it runs), process, HTTP and gRPC URLs.
fn grpc_broker(extra: &str) -> (tempfile::TempDir, Killed, String, String) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let config = tmp.path().join("broker.toml");
    let text = common::config(&data, &format!("otlp_grpc_listen = \"127.0.0.1:0\"\n{extra}"));
    std::fs::write(&config, text).expect("config");
    let (broker, url, grpc) = spawn_with_grpc(&config);
    (tmp, broker, url, grpc)
}

/// Run the SDK sender; its manifest of what it sent.
fn send(python: &Path, protocol: &str, endpoint: &str, run: &str, logs: u32, spans: u32) -> Value {
    manifest_of(sender(python, protocol, endpoint, run, logs, spans), protocol)
}

/// Wait for a sender (at most 120 s); its manifest.
fn manifest_of(mut child: Child, protocol: &str) -> Value {
    assert!(wait_exit(&mut child, Duration::from_secs(120)).is_some(), "the {protocol} sender did not finish");
    let out = child.wait_with_output().expect("sender output");
    assert!(out.status.success(), "sender failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let manifest: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("manifest");
    for signal in ["logs", "traces", "metrics"] {
        assert_eq!(manifest["ok"][signal], true, "{protocol}: the SDK's {signal} export failed: {manifest}");
    }
    manifest
}

/// `attributes` (an OTLP/JSON key-value list) as key → typed value.
fn attrs(list: &Value) -> BTreeMap<String, Value> {
    let items = list.as_array().cloned().unwrap_or_default();
    items.into_iter().map(|kv| (kv["key"].as_str().unwrap_or("").to_string(), kv["value"].clone())).collect()
}

/// Every attribute of `otel_send.py`'s ATTRS, each with its OTLP/JSON type.
fn assert_every_type(what: &str, a: &BTreeMap<String, Value>) {
    let want = [
        ("s", r#"{"stringValue":"café ✓ \"quoted\""}"#),
        ("b", r#"{"boolValue":true}"#),
        ("i", r#"{"intValue":"-9007199254740993"}"#),
        ("d", r#"{"doubleValue":2.5}"#),
        ("sa", r#"{"arrayValue":{"values":[{"stringValue":"x"},{"stringValue":"y"}]}}"#),
        ("ba", r#"{"arrayValue":{"values":[{"boolValue":true},{"boolValue":false}]}}"#),
        ("ia", r#"{"arrayValue":{"values":[{"intValue":"1"},{"intValue":"-2"}]}}"#),
        ("da", r#"{"arrayValue":{"values":[{"doubleValue":0.5},{"doubleValue":1.5}]}}"#),
    ];
    for (key, json) in want {
        let expected: Value = serde_json::from_str(json).expect("expected value");
        assert_eq!(a.get(key), Some(&expected), "{what}: attribute {key}");
    }
}

/// One record: its resource's run, its signal, and its one item's key.
fn item_key(line: &str) -> (String, String) {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let (root, scopes, items) = if v.get("resourceLogs").is_some() {
        ("resourceLogs", "scopeLogs", "logRecords")
    } else if v.get("resourceSpans").is_some() {
        ("resourceSpans", "scopeSpans", "spans")
    } else {
        ("resourceMetrics", "scopeMetrics", "metrics")
    };
    let resources = v[root].as_array().expect("resources");
    assert_eq!(resources.len(), 1, "one resource: {line}");
    let scope_list = resources[0][scopes].as_array().expect("scopes");
    assert_eq!(scope_list.len(), 1, "one scope: {line}");
    let list = scope_list[0][items].as_array().expect("items");
    assert_eq!(list.len(), 1, "one item: {line}");
    let resource = attrs(&resources[0]["resource"]["attributes"]);
    assert_every_type("resource", &resource);
    let run = resource["weir.test.run"]["stringValue"].as_str().expect("run").to_string();
    let item = &list[0];
    let key = match items {
        "logRecords" => {
            let a = attrs(&item["attributes"]);
            assert_every_type("log record", &a);
            assert_eq!(item["severityNumber"], 13, "WARN as an integer: {line}");
            format!("log {}", a["n"]["intValue"].as_str().expect("n as a string"))
        }
        "spans" => {
            assert_every_type("span", &attrs(&item["attributes"]));
            let name = item["name"].as_str().expect("name");
            format!("span {name} {} {}", item["traceId"].as_str().unwrap_or(""), item["spanId"].as_str().unwrap_or(""))
        }
        _ => metric_key(item, line),
    };
    (run, key)
}

/// A metric record: its name, kind and the point's attribute set.
fn metric_key(metric: &Value, line: &str) -> String {
    let name = metric["name"].as_str().expect("name");
    let (kind, data) = ["sum", "gauge", "histogram", "exponentialHistogram", "summary"]
        .into_iter()
        .find_map(|k| metric.get(k).filter(|d| !d.is_null()).map(|d| (k, d)))
        .unwrap_or_else(|| panic!("no data: {line}"));
    let points = data["dataPoints"].as_array().expect("points");
    assert_eq!(points.len(), 1, "one data point: {line}");
    let a = attrs(&points[0]["attributes"]);
    assert_every_type("data point", &a);
    let want_kind = match name {
        "weir.test.counter" | "weir.test.updown" => "sum",
        "weir.test.gauge" => "gauge",
        "weir.test.histogram" => "histogram",
        _ => "exponentialHistogram",
    };
    assert_eq!(kind, want_kind, "{line}");
    if kind == "sum" {
        assert_eq!(data["isMonotonic"].as_bool().unwrap_or(false), name == "weir.test.counter", "{line}");
    }
    format!("metric {name} {}", a["k"]["stringValue"].as_str().expect("k"))
}

/// What a run's manifest says must arrive, each once.
fn expected(run: &str, manifest: &Value) -> Vec<(String, String)> {
    let mut want = Vec::new();
    for n in manifest["logs"].as_array().expect("logs") {
        want.push((run.to_string(), format!("log {n}")));
    }
    for s in manifest["spans"].as_array().expect("spans") {
        let (name, trace, span) = (&s["name"], &s["trace_id"], &s["span_id"]);
        let key = format!(
            "span {} {} {}",
            name.as_str().unwrap_or(""),
            trace.as_str().unwrap_or(""),
            span.as_str().unwrap_or("")
        );
        want.push((run.to_string(), key));
    }
    for (name, points) in manifest["metrics"].as_object().expect("metrics") {
        assert_eq!(points, 2);
        for k in ["a", "b"] {
            want.push((run.to_string(), format!("metric {name} {k}")));
        }
    }
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_over_http_and_grpc_delivers_every_item_exactly_once_with_its_fields_and_types() {
    let test = "the_python_sdk_over_http_and_grpc_delivers_every_item_exactly_once_with_its_fields_and_types";
    let Some(python) = python_with_or_skip(test, OTEL_PACKAGES) else { return };
    let (tmp, broker, url, grpc) = grpc_broker(DEST);
    let out = tmp.path().join("otel.ndjson");
    let mut exporter = ExporterProc::start(&url, "otel", "otel-t", &format!("file://{}", out.display()), &[]);
    // The same items as rows of the shipped OpenTelemetry tables (chdb).
    let ch = common::chdb::Chdb::start(&python, 0);
    let rows_sink = format!("clickhouse+{}/?format=otel", ch.url);
    let mut rows_exporter = ExporterProc::start(&url, "ch", "ch-t", &rows_sink, &[]);
    let over_http = send(&python, "http", &url, "h", 30, 10);
    let over_grpc = send(&python, "grpc", &grpc, "g", 30, 10);
    let mut want = expected("h", &over_http);
    want.extend(expected("g", &over_grpc));
    want.sort();
    // Everything committed: nothing more will be written.
    let what = format!("{} records at the sink, all committed", want.len());
    wait_until(&what, Duration::from_secs(60), || async {
        file_lines(&out).len() >= want.len() && destination(&url, "otel").await["lag_records"] == 0
    })
    .await;
    let mut got: Vec<(String, String)> = file_lines(&out).iter().map(|l| item_key(l)).collect();
    got.sort();
    assert_eq!(got, want, "every item exactly once");
    exporter.kill9();
    assert_rows(&ch, &url).await;
    rows_exporter.kill9();
    drop(broker);
}

/// The two runs' items as rows: 60 logs, 20 spans, and 4 points of each
/// metric instrument (2 attribute sets × 2 runs), each once, of tenant acme.
async fn assert_rows(ch: &common::chdb::Chdb, url: &str) {
    let tables = [
        ("otel_logs", "uniqExact(LogAttributes['n'], ResourceAttributes['weir.test.run'])", 60),
        ("otel_traces", "uniqExact(SpanName)", 20),
        ("otel_metrics_sum", "uniqExact(MetricName, Attributes['k'], ResourceAttributes['weir.test.run'])", 8),
        ("otel_metrics_gauge", "uniqExact(Attributes['k'], ResourceAttributes['weir.test.run'])", 4),
        ("otel_metrics_histogram", "uniqExact(Attributes['k'], ResourceAttributes['weir.test.run'])", 4),
        ("otel_metrics_exponential_histogram", "uniqExact(Attributes['k'], ResourceAttributes['weir.test.run'])", 4),
    ];
    let total: u64 = tables.iter().map(|t| t.2).sum();
    let count_all = tables.iter().map(|t| format!("(SELECT count() FROM {})", t.0)).collect::<Vec<_>>().join(" + ");
    wait_until("every item a row, all committed", Duration::from_secs(60), || async {
        ch.query(&format!("SELECT {count_all}")).await.parse::<u64>().unwrap_or(0) >= total
            && destination(url, "ch").await["lag_records"] == 0
    })
    .await;
    for (table, distinct, rows) in tables {
        let got = ch
            .query(&format!(
                "SELECT count(), {distinct}, groupUniqArray(ResourceAttributes['weir.tenant']) FROM {table}"
            ))
            .await;
        assert_eq!(got, format!("{rows}\t{rows}\t['acme']"), "{table}: each item once, of tenant acme");
    }
    let attrs =
        ch.query("SELECT LogAttributes['i'], LogAttributes['d'], LogAttributes['ia'] FROM otel_logs LIMIT 1").await;
    assert_eq!(attrs, "-9007199254740993\t2.5\t[1,-2]", "attribute values as the collector writes them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_retries_through_backpressure_and_nothing_is_lost() {
    let test = "the_sdk_retries_through_backpressure_and_nothing_is_lost";
    let Some(python) = python_with_or_skip(test, OTEL_PACKAGES) else { return };
    // 35: the first 30 log records or the 10 points alone stay within it,
    // so both exports of the first send are taken whatever their order and
    // whenever the maintenance pass measures the lag; together they are over.
    let dest = DEST.replace("token = \"otel-t\"", "token = \"otel-t\"\nmax_lag_records = 35");
    let broker = BrokerProc::start(&dest);
    let url = broker.url.clone();
    // 30 log records and 10 points with no exporter: over the lag limit.
    let first = send(&python, "http", &url, "pre", 30, 0);
    let over = "the destination's lag over its limit";
    wait_until(over, Duration::from_secs(30), || async {
        destination(&url, "otel").await["lag_records"].as_u64().unwrap_or(0) >= 40
    })
    .await;
    let shed = "weir_backpressure_shed_total{reason=\"destination_lag\",tenant=\"acme\"}";
    let child = sender(&python, "http", &url, "bp", 20, 5);
    wait_until("the SDK refused for backpressure", Duration::from_secs(60), || async {
        metric(&url, shed).await >= 1.0
    })
    .await;
    // The sink comes back: the SDK's retries get through.
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("otel.ndjson");
    let mut exporter = ExporterProc::start(&url, "otel", "otel-t", &format!("file://{}", out.display()), &[]);
    let second = manifest_of(child, "http");
    let mut want = expected("pre", &first);
    want.extend(expected("bp", &second));
    want.sort();
    wait_until("every record at the sink, committed", Duration::from_secs(60), || async {
        file_lines(&out).len() >= want.len() && destination(&url, "otel").await["lag_records"] == 0
    })
    .await;
    let mut got: Vec<(String, String)> = file_lines(&out).iter().map(|l| item_key(l)).collect();
    got.sort();
    assert_eq!(got, want, "every item exactly once");
    exporter.kill9();
}

/// The Python OTLP receiver (`tests/support/otlp_receiver.py`); killed on drop.
struct Receiver {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start(python: &Path) -> Receiver {
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/otlp_receiver.py");
        let child = Command::new(python).arg(script).arg(&port_file).spawn().expect("spawn the OTLP receiver");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p;
            }
            assert!(std::time::Instant::now() < deadline, "the OTLP receiver wrote no port");
            std::thread::sleep(Duration::from_millis(20));
        };
        Receiver { child, url: format!("http://127.0.0.1:{}", port.trim()), _dir: dir }
    }

    async fn items(&self) -> Vec<(String, String)> {
        let v: Value =
            client().get(format!("{}/stats", self.url)).send().await.expect("stats").json().await.expect("json");
        let list = v["items"].as_array().cloned().unwrap_or_default();
        list.iter()
            .map(|p| (p[0].as_str().unwrap_or("").to_string(), p[1].as_str().unwrap_or("").to_string()))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_http_sink_forwards_every_item_once_to_a_receiver_that_decodes_it() {
    let test = "an_otlp_http_sink_forwards_every_item_once_to_a_receiver_that_decodes_it";
    let Some(python) = python_with_or_skip(test, OTEL_PACKAGES) else { return };
    let receiver = Receiver::start(&python);
    let broker = BrokerProc::start(DEST);
    let url = broker.url.clone();
    let sink = format!("otlp+{}", receiver.url);
    let mut exporter = ExporterProc::start(&url, "otel", "otel-t", &sink, &[]);
    let manifest = send(&python, "http", &url, "f", 20, 5);
    let mut want: Vec<(String, String)> = Vec::new();
    for n in manifest["logs"].as_array().expect("logs") {
        want.push(("logs".into(), n.to_string()));
    }
    for s in manifest["spans"].as_array().expect("spans") {
        want.push(("traces".into(), s["name"].as_str().unwrap_or("").to_string()));
    }
    for name in manifest["metrics"].as_object().expect("metrics").keys() {
        for k in ["a", "b"] {
            want.push(("metrics".into(), format!("{name} {k}")));
        }
    }
    want.sort();
    wait_until("every item at the receiver, all committed", Duration::from_secs(60), || async {
        receiver.items().await.len() >= want.len() && destination(&url, "otel").await["lag_records"] == 0
    })
    .await;
    let mut got = receiver.items().await;
    got.sort();
    assert_eq!(got, want, "every item exactly once");
    // A log the receiver rejects with partial_success: a dead letter with
    // the receiver's message, and nothing else sent.
    let reject = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"reject-me"}}]}]}]}"#;
    let resp = client()
        .post(format!("{url}/v1/logs"))
        .bearer_auth("acme-t")
        .header("content-type", "application/json")
        .body(reject)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    wait_until("the rejected log dead-lettered", Duration::from_secs(60), || async {
        destination(&url, "otel").await["dead_letter_records"] == 1
    })
    .await;
    let letters = admin_get(&url, "/v1/admin/destinations/otel/dead-letters").await.to_string();
    assert!(letters.contains("reject-me is refused here"), "{letters}");
    assert_eq!(receiver.items().await.len(), want.len(), "nothing else sent");
    exporter.kill9();
}

/// One gRPC call by `tests/support/otlp_grpc_probe.py` (grpcio).
fn grpc_call(python: &Path, target: &str, token: &str, records: u32) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/otlp_grpc_probe.py");
    let out =
        Command::new(python).arg(script).args([target, token, &records.to_string()]).output().expect("run the probe");
    assert!(out.status.success(), "probe failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("probe JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_carry_the_codes_otlp_clients_act_on() {
    let test = "grpc_answers_carry_the_codes_otlp_clients_act_on";
    let Some(python) = python_with_or_skip(test, OTEL_PACKAGES) else { return };
    let slow = "[[tenant]]\nname = \"slow\"\ntoken = \"slow-t\"\nrate_per_sec = 1.0\nburst = 1\nhard_rate_per_sec = 1.0\nhard_burst = 5\n";
    let (_tmp, broker, url, grpc) = grpc_broker(&format!("{DEST}{slow}"));
    let target = grpc.trim_start_matches("http://");
    let ok = grpc_call(&python, target, "acme-t", 3);
    assert_eq!(ok["code"], "OK", "{ok}");
    let none = grpc_call(&python, target, "-", 1);
    assert_eq!((none["code"].as_str(), none["retry_info"].as_bool()), (Some("UNAUTHENTICATED"), Some(false)), "{none}");
    let exporter = grpc_call(&python, target, "otel-t", 1);
    assert_eq!(exporter["code"], "PERMISSION_DENIED", "{exporter}");
    assert!(exporter["message"].as_str().unwrap_or("").starts_with("forbidden: "), "{exporter}");
    // Over the hard rate: RESOURCE_EXHAUSTED with RetryInfo (the first
    // batch larger than the bucket passes on the empty bucket).
    assert_eq!(grpc_call(&python, target, "slow-t", 10)["code"], "OK");
    let limited = grpc_call(&python, target, "slow-t", 10);
    assert_eq!(
        (limited["code"].as_str(), limited["retry_info"].as_bool()),
        (Some("RESOURCE_EXHAUSTED"), Some(true)),
        "{limited}"
    );
    assert!(limited["message"].as_str().unwrap_or("").starts_with("rate_limited: "), "{limited}");
    assert_eq!(metric(&url, "weir_ingest_records_total{").await, 13.0, "3 + 10 stored, nothing of the refusals");
    drop(broker);
}
