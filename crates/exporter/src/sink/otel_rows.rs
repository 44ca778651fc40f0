//! OTLP records → rows of the OpenTelemetry Collector ClickHouse exporter's
//! tables (`ops/clickhouse/otel.sql`, docs/otlp.md has the mapping table).
//!
//! A record of an OTLP topic is one OTLP/JSON export request holding one
//! item (the broker's `api::otlp::records`); it becomes one `JSONEachRow`
//! row of the table its item belongs in. `ResourceAttributes['weir.tenant']`
//! is the record's tenant, overwriting any the client sent, so rows of a
//! shared table can be attributed. Attribute values become strings as the
//! collector's exporter writes them: strings as they are, numbers and
//! booleans in their text form, bytes in base64, arrays and maps as JSON.
//! Times are `DateTime64(9)` text in UTC, `2023-11-14T22:13:20.000000001Z`
//! (inserted with `date_time_input_format=best_effort`, which reads the
//! zone: a server in another time zone stores the same instant).
//!
//! A record that is not such a request (another topic's record, or bytes
//! that do not decode) is refused to dead letters with the reason: never a
//! row of defaults.

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value as Any, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{exemplar, metric::Data, number_data_point, Exemplar, Metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::{json, Map, Value};

/// The tables, as the collector's exporter names them by default.
pub const TABLES: [&str; 7] = [
    "otel_logs",
    "otel_traces",
    "otel_metrics_gauge",
    "otel_metrics_sum",
    "otel_metrics_histogram",
    "otel_metrics_exponential_histogram",
    "otel_metrics_summary",
];

/// One row: its table and its `JSONEachRow` object.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub table: &'static str,
    pub json: Value,
}

/// The row of one OTLP record of `tenant`, or why it has none.
pub fn row(payload: &[u8], tenant: &str) -> Result<Row, String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("not an OTLP/JSON record: {e}"))?;
    let bad = |e: serde_json::Error| format!("not an OTLP/JSON export request: {e}");
    if v.get("resourceLogs").is_some() {
        let r: ExportLogsServiceRequest = serde_json::from_value(v).map_err(bad)?;
        let rl = one(&r.resource_logs)?;
        let sl = one(&rl.scope_logs)?;
        let at = Place::new(rl.resource.as_ref(), &rl.schema_url, sl.scope.as_ref(), &sl.schema_url, tenant);
        return Ok(Row { table: TABLES[0], json: log_row(&at, one(&sl.log_records)?) });
    }
    if v.get("resourceSpans").is_some() {
        let r: ExportTraceServiceRequest = serde_json::from_value(v).map_err(bad)?;
        let rs = one(&r.resource_spans)?;
        let ss = one(&rs.scope_spans)?;
        let at = Place::new(rs.resource.as_ref(), &rs.schema_url, ss.scope.as_ref(), &ss.schema_url, tenant);
        return Ok(Row { table: TABLES[1], json: span_row(&at, one(&ss.spans)?) });
    }
    if v.get("resourceMetrics").is_some() {
        let r: ExportMetricsServiceRequest = serde_json::from_value(v).map_err(bad)?;
        let rm = one(&r.resource_metrics)?;
        let sm = one(&rm.scope_metrics)?;
        let at = Place::new(rm.resource.as_ref(), &rm.schema_url, sm.scope.as_ref(), &sm.schema_url, tenant);
        return metric_row(&at, one(&sm.metrics)?);
    }
    Err("not an OTLP/JSON export request (no resourceLogs, resourceSpans or resourceMetrics)".into())
}

/// The table a record's row goes to, read without mapping the row (each
/// field skipped, nothing of it kept); `None` when it is not an OTLP record
/// [`row`] would map. For grouping a lease by table: [`row`] is the check.
pub fn table_of(payload: &[u8]) -> Option<&'static str> {
    use serde::de::IgnoredAny;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        resource_logs: Option<IgnoredAny>,
        resource_spans: Option<IgnoredAny>,
        resource_metrics: Option<Vec<ProbeResource>>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ProbeResource {
        #[serde(default)]
        scope_metrics: Vec<ProbeScope>,
    }
    #[derive(serde::Deserialize)]
    struct ProbeScope {
        #[serde(default)]
        metrics: Vec<ProbeMetric>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ProbeMetric {
        gauge: Option<IgnoredAny>,
        sum: Option<IgnoredAny>,
        histogram: Option<IgnoredAny>,
        exponential_histogram: Option<IgnoredAny>,
        summary: Option<IgnoredAny>,
    }
    let probe: Probe = serde_json::from_slice(payload).ok()?;
    if probe.resource_logs.is_some() {
        return Some(TABLES[0]);
    }
    if probe.resource_spans.is_some() {
        return Some(TABLES[1]);
    }
    let resources = probe.resource_metrics?;
    let metric = resources.first()?.scope_metrics.first()?.metrics.first()?;
    [&metric.gauge, &metric.sum, &metric.histogram, &metric.exponential_histogram, &metric.summary]
        .iter()
        .position(|kind| kind.is_some())
        .map(|at| TABLES[2 + at])
}

/// The only element of a one-item record's list.
fn one<T>(list: &[T]) -> Result<&T, String> {
    match list {
        [only] => Ok(only),
        _ => Err(format!("an OTLP record holds exactly one item under one resource and scope, not {}", list.len())),
    }
}

/// The resource and scope columns every table shares.
struct Place {
    resource: Map<String, Value>,
    service: String,
    resource_schema: String,
    scope_name: String,
    scope_version: String,
    scope_attributes: Value,
    scope_dropped: u32,
    scope_schema: String,
}

impl Place {
    fn new(
        resource: Option<&Resource>,
        resource_schema: &str,
        scope: Option<&InstrumentationScope>,
        scope_schema: &str,
        tenant: &str,
    ) -> Place {
        let mut attrs = attributes(resource.map_or(&[][..], |r| &r.attributes));
        attrs.insert("weir.tenant".into(), Value::from(tenant));
        let service = attrs.get("service.name").and_then(Value::as_str).unwrap_or("").to_string();
        Place {
            resource: attrs,
            service,
            resource_schema: resource_schema.to_string(),
            scope_name: scope.map_or("", |s| &s.name).to_string(),
            scope_version: scope.map_or("", |s| &s.version).to_string(),
            scope_attributes: Value::Object(attributes(scope.map_or(&[][..], |s| &s.attributes))),
            scope_dropped: scope.map_or(0, |s| s.dropped_attributes_count),
            scope_schema: scope_schema.to_string(),
        }
    }

    /// The shared columns, in a fresh row.
    fn columns(&self) -> Map<String, Value> {
        let mut row = Map::new();
        row.insert("ServiceName".into(), Value::from(self.service.as_str()));
        row.insert("ResourceAttributes".into(), Value::Object(self.resource.clone()));
        row.insert("ResourceSchemaUrl".into(), Value::from(self.resource_schema.as_str()));
        row.insert("ScopeName".into(), Value::from(self.scope_name.as_str()));
        row.insert("ScopeVersion".into(), Value::from(self.scope_version.as_str()));
        row.insert("ScopeAttributes".into(), self.scope_attributes.clone());
        row.insert("ScopeSchemaUrl".into(), Value::from(self.scope_schema.as_str()));
        row
    }
}

/// Attributes as a `Map(String, String)` column's JSON object.
fn attributes(list: &[KeyValue]) -> Map<String, Value> {
    list.iter().map(|kv| (kv.key.clone(), Value::from(text(kv.value.as_ref())))).collect()
}

/// An attribute value or a body as the collector's exporter writes it.
pub fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(Any::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        Some(other) => plain_json(other).to_string(),
    }
}

/// Arrays and maps as plain JSON (values without their OTLP type wrappers).
fn plain_json(value: &Any) -> Value {
    match value {
        Any::StringValue(s) => Value::from(s.as_str()),
        Any::BoolValue(b) => Value::from(*b),
        Any::IntValue(i) => Value::from(*i),
        Any::DoubleValue(d) => Value::from(*d),
        Any::BytesValue(b) => Value::from(base64::engine::general_purpose::STANDARD.encode(b)),
        Any::ArrayValue(a) => {
            Value::Array(a.values.iter().map(|v| v.value.as_ref().map_or(Value::Null, plain_json)).collect())
        }
        // A string-table index (profiles' dictionary): no table here.
        Any::StringValueStrindex(i) => Value::from(*i),
        Any::KvlistValue(kv) => Value::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (kv.key.clone(), kv.value.as_ref().and_then(|v| v.value.as_ref()).map_or(Value::Null, plain_json))
                })
                .collect(),
        ),
    }
}

/// `DateTime64(9)` text of `nanos` since the epoch: RFC 3339 in UTC.
pub fn time(nanos: u64) -> String {
    let secs = nanos / 1_000_000_000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:09}Z", nanos % 1_000_000_000)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn log_row(at: &Place, log: &opentelemetry_proto::tonic::logs::v1::LogRecord) -> Value {
    let mut row = at.columns();
    // As the collector: the observed time when the event time is unset.
    let ts = if log.time_unix_nano != 0 { log.time_unix_nano } else { log.observed_time_unix_nano };
    row.insert("Timestamp".into(), Value::from(time(ts)));
    row.insert("TraceId".into(), Value::from(hex(&log.trace_id)));
    row.insert("SpanId".into(), Value::from(hex(&log.span_id)));
    row.insert("TraceFlags".into(), Value::from(log.flags & 0xff));
    row.insert("SeverityText".into(), Value::from(log.severity_text.as_str()));
    row.insert("SeverityNumber".into(), Value::from(log.severity_number.clamp(0, 255)));
    row.insert("Body".into(), Value::from(text(log.body.as_ref())));
    row.insert("LogAttributes".into(), Value::Object(attributes(&log.attributes)));
    row.insert("EventName".into(), Value::from(log.event_name.as_str()));
    Value::Object(row)
}

/// The collector's names for span kinds and status codes.
fn span_kind(kind: i32) -> &'static str {
    ["Unspecified", "Internal", "Server", "Client", "Producer", "Consumer"]
        .get(kind as usize)
        .copied()
        .unwrap_or("Unspecified")
}

fn status_code(code: i32) -> &'static str {
    ["Unset", "Ok", "Error"].get(code as usize).copied().unwrap_or("Unset")
}

fn span_row(at: &Place, span: &opentelemetry_proto::tonic::trace::v1::Span) -> Value {
    let mut row = at.columns();
    row.insert("Timestamp".into(), Value::from(time(span.start_time_unix_nano)));
    row.insert("TraceId".into(), Value::from(hex(&span.trace_id)));
    row.insert("SpanId".into(), Value::from(hex(&span.span_id)));
    row.insert("ParentSpanId".into(), Value::from(hex(&span.parent_span_id)));
    row.insert("TraceState".into(), Value::from(span.trace_state.as_str()));
    row.insert("SpanName".into(), Value::from(span.name.as_str()));
    row.insert("SpanKind".into(), Value::from(span_kind(span.kind)));
    row.insert("SpanAttributes".into(), Value::Object(attributes(&span.attributes)));
    row.insert("Duration".into(), Value::from(span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano)));
    let status = span.status.as_ref();
    row.insert("StatusCode".into(), Value::from(status_code(status.map_or(0, |s| s.code))));
    row.insert("StatusMessage".into(), Value::from(status.map_or("", |s| s.message.as_str())));
    let events = &span.events;
    row.insert("Events.Timestamp".into(), events.iter().map(|e| Value::from(time(e.time_unix_nano))).collect());
    row.insert("Events.Name".into(), events.iter().map(|e| Value::from(e.name.as_str())).collect());
    row.insert("Events.Attributes".into(), events.iter().map(|e| Value::Object(attributes(&e.attributes))).collect());
    let links = &span.links;
    row.insert("Links.TraceId".into(), links.iter().map(|l| Value::from(hex(&l.trace_id))).collect());
    row.insert("Links.SpanId".into(), links.iter().map(|l| Value::from(hex(&l.span_id))).collect());
    row.insert("Links.TraceState".into(), links.iter().map(|l| Value::from(l.trace_state.as_str())).collect());
    row.insert("Links.Attributes".into(), links.iter().map(|l| Value::Object(attributes(&l.attributes))).collect());
    Value::Object(row)
}

/// The columns of one data point every metric table has.
fn point_columns(
    at: &Place,
    metric: &Metric,
    attrs: &[KeyValue],
    start: u64,
    t: u64,
    flags: u32,
) -> Map<String, Value> {
    let mut row = at.columns();
    row.insert("ScopeDroppedAttrCount".into(), Value::from(at.scope_dropped));
    row.insert("MetricName".into(), Value::from(metric.name.as_str()));
    row.insert("MetricDescription".into(), Value::from(metric.description.as_str()));
    row.insert("MetricUnit".into(), Value::from(metric.unit.as_str()));
    row.insert("Attributes".into(), Value::Object(attributes(attrs)));
    row.insert("StartTimeUnix".into(), Value::from(time(start)));
    row.insert("TimeUnix".into(), Value::from(time(t)));
    row.insert("Flags".into(), Value::from(flags));
    row
}

fn exemplars(row: &mut Map<String, Value>, list: &[Exemplar]) {
    let value = |e: &Exemplar| match e.value {
        Some(exemplar::Value::AsDouble(d)) => d,
        Some(exemplar::Value::AsInt(i)) => i as f64,
        None => 0.0,
    };
    row.insert(
        "Exemplars.FilteredAttributes".into(),
        list.iter().map(|e| Value::Object(attributes(&e.filtered_attributes))).collect(),
    );
    row.insert("Exemplars.TimeUnix".into(), list.iter().map(|e| Value::from(time(e.time_unix_nano))).collect());
    row.insert("Exemplars.Value".into(), list.iter().map(|e| json!(value(e))).collect());
    row.insert("Exemplars.SpanId".into(), list.iter().map(|e| Value::from(hex(&e.span_id))).collect());
    row.insert("Exemplars.TraceId".into(), list.iter().map(|e| Value::from(hex(&e.trace_id))).collect());
}

fn number(value: Option<number_data_point::Value>) -> f64 {
    match value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

/// The row of a one-point metric.
fn metric_row(at: &Place, metric: &Metric) -> Result<Row, String> {
    let (table, row) = match metric.data.as_ref().ok_or("a metric record holds no data point")? {
        Data::Gauge(g) => {
            let p = one(&g.data_points)?;
            let mut row = point_columns(at, metric, &p.attributes, p.start_time_unix_nano, p.time_unix_nano, p.flags);
            row.insert("Value".into(), json!(number(p.value)));
            exemplars(&mut row, &p.exemplars);
            (TABLES[2], row)
        }
        Data::Sum(s) => {
            let p = one(&s.data_points)?;
            let mut row = point_columns(at, metric, &p.attributes, p.start_time_unix_nano, p.time_unix_nano, p.flags);
            row.insert("Value".into(), json!(number(p.value)));
            exemplars(&mut row, &p.exemplars);
            row.insert("AggregationTemporality".into(), Value::from(s.aggregation_temporality));
            row.insert("IsMonotonic".into(), Value::from(s.is_monotonic));
            (TABLES[3], row)
        }
        Data::Histogram(h) => {
            let p = one(&h.data_points)?;
            let mut row = point_columns(at, metric, &p.attributes, p.start_time_unix_nano, p.time_unix_nano, p.flags);
            row.insert("Count".into(), Value::from(p.count));
            row.insert("Sum".into(), json!(p.sum.unwrap_or(0.0)));
            row.insert("BucketCounts".into(), json!(p.bucket_counts));
            row.insert("ExplicitBounds".into(), json!(p.explicit_bounds));
            exemplars(&mut row, &p.exemplars);
            row.insert("Min".into(), json!(p.min.unwrap_or(0.0)));
            row.insert("Max".into(), json!(p.max.unwrap_or(0.0)));
            row.insert("AggregationTemporality".into(), Value::from(h.aggregation_temporality));
            (TABLES[4], row)
        }
        Data::ExponentialHistogram(e) => {
            let p = one(&e.data_points)?;
            let mut row = point_columns(at, metric, &p.attributes, p.start_time_unix_nano, p.time_unix_nano, p.flags);
            row.insert("Count".into(), Value::from(p.count));
            row.insert("Sum".into(), json!(p.sum.unwrap_or(0.0)));
            row.insert("Scale".into(), Value::from(p.scale));
            row.insert("ZeroCount".into(), Value::from(p.zero_count));
            let (pos, neg) = (p.positive.as_ref(), p.negative.as_ref());
            row.insert("PositiveOffset".into(), Value::from(pos.map_or(0, |b| b.offset)));
            row.insert("PositiveBucketCounts".into(), json!(pos.map_or(&[][..], |b| &b.bucket_counts)));
            row.insert("NegativeOffset".into(), Value::from(neg.map_or(0, |b| b.offset)));
            row.insert("NegativeBucketCounts".into(), json!(neg.map_or(&[][..], |b| &b.bucket_counts)));
            exemplars(&mut row, &p.exemplars);
            row.insert("Min".into(), json!(p.min.unwrap_or(0.0)));
            row.insert("Max".into(), json!(p.max.unwrap_or(0.0)));
            row.insert("AggregationTemporality".into(), Value::from(e.aggregation_temporality));
            (TABLES[5], row)
        }
        Data::Summary(s) => {
            let p = one(&s.data_points)?;
            let mut row = point_columns(at, metric, &p.attributes, p.start_time_unix_nano, p.time_unix_nano, p.flags);
            row.insert("Count".into(), Value::from(p.count));
            row.insert("Sum".into(), json!(p.sum));
            row.insert(
                "ValueAtQuantiles.Quantile".into(),
                p.quantile_values.iter().map(|q| json!(q.quantile)).collect(),
            );
            row.insert("ValueAtQuantiles.Value".into(), p.quantile_values.iter().map(|q| json!(q.value)).collect());
            (TABLES[6], row)
        }
    };
    Ok(Row { table, json: Value::Object(row) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}},{"key":"weir.tenant","value":{"stringValue":"forged"}},{"key":"n","value":{"intValue":"7"}}]},"scopeLogs":[{"scope":{"name":"lib","version":"1"},"logRecords":[{"timeUnixNano":"1700000000000000001","severityNumber":9,"severityText":"INFO","body":{"kvlistValue":{"values":[{"key":"a","value":{"arrayValue":{"values":[{"intValue":"1"},{"boolValue":true}]}}}]}},"traceId":"5b8efff798038103d269b633813fc60c","attributes":[{"key":"b","value":{"bytesValue":"AAEC"}},{"key":"d","value":{"doubleValue":2.5}}]}]}]}]}"#;

    #[test]
    fn a_log_record_becomes_an_otel_logs_row_with_the_tenant_in_its_resource() {
        let r = row(LOG.as_bytes(), "acme").unwrap();
        assert_eq!(r.table, "otel_logs");
        let j = &r.json;
        assert_eq!(j["ResourceAttributes"]["weir.tenant"], "acme", "the record's tenant, not the client's");
        assert_eq!(j["ResourceAttributes"]["n"], "7");
        assert_eq!(j["ServiceName"], "svc");
        assert_eq!(j["Timestamp"], "2023-11-14T22:13:20.000000001Z");
        assert_eq!(j["Body"], r#"{"a":[1,true]}"#);
        assert_eq!(j["LogAttributes"]["b"], "AAEC");
        assert_eq!(j["LogAttributes"]["d"], "2.5");
        assert_eq!(j["TraceId"], "5b8efff798038103d269b633813fc60c");
    }

    #[test]
    fn times_are_utc_rfc3339_with_nanoseconds() {
        assert_eq!(time(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(time(951_782_400_000_000_007), "2000-02-29T00:00:00.000000007Z");
        assert_eq!(time(u64::MAX), "2554-07-21T23:34:33.709551615Z");
    }

    #[test]
    fn table_of_names_the_table_row_maps_to_without_mapping() {
        let metric = |kind: &str, body: &str| {
            format!(r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m","{kind}":{body}}}]}}]}}]}}"#)
        };
        let points = r#"{"dataPoints":[{"timeUnixNano":"1","asDouble":1.5}]}"#;
        let hist = r#"{"dataPoints":[{"timeUnixNano":"1","count":"1","bucketCounts":["1"],"explicitBounds":[]}]}"#;
        let exp = r#"{"dataPoints":[{"timeUnixNano":"1","count":"1","scale":1,"positive":{"offset":0,"bucketCounts":["1"]}}]}"#;
        let summary = r#"{"dataPoints":[{"timeUnixNano":"1","count":"1","sum":2.0}]}"#;
        let span = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"s"}]}]}]}"#;
        let records = [
            LOG.to_string(),
            span.to_string(),
            metric("gauge", points),
            metric("sum", points),
            metric("histogram", hist),
            metric("exponentialHistogram", exp),
            metric("summary", summary),
        ];
        for (record, table) in records.iter().zip(TABLES) {
            assert_eq!(table_of(record.as_bytes()), Some(table), "{record}");
            assert_eq!(row(record.as_bytes(), "t").map(|r| r.table), Ok(table), "{record}");
        }
        assert_eq!(table_of(b"{\"event\":1}"), None);
        assert_eq!(table_of(b"not json"), None);
    }

    #[test]
    fn what_is_not_a_one_item_otlp_record_has_no_row() {
        assert!(row(b"{\"event\":1}", "t").is_err());
        assert!(row(b"not json", "t").is_err());
        let two = LOG.replace(r#""logRecords":[{"#, r#""logRecords":[{},{"#);
        assert!(row(two.as_bytes(), "t").unwrap_err().contains("exactly one item"));
    }
}
