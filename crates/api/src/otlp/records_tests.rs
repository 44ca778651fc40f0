//! Each item becomes one record that decodes back to exactly that item
//! under its resource and scope.

use super::*;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue as Array, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point, number_data_point, summary_data_point, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};

const WIDE: Limits = Limits { max_record_bytes: 1 << 20, max_total_bytes: 1 << 24 };

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

/// One attribute of every value type, nested ones included.
fn every_type() -> Vec<KeyValue> {
    use any_value::Value::*;
    vec![
        kv("s", StringValue("café ✓ \"quoted\"".into())),
        kv("b", BoolValue(true)),
        kv("i", IntValue(i64::MIN)),
        kv("big", IntValue(9_007_199_254_740_993)),
        kv("d", DoubleValue(-1.5e-300)),
        kv("bytes", BytesValue(vec![0, 255, 1, 2])),
        kv("arr", ArrayValue(Array { values: vec![AnyValue { value: Some(IntValue(7)) }] })),
        kv("kv", KvlistValue(KeyValueList { values: vec![kv("inner", StringValue("x".into()))] })),
    ]
}

fn resource() -> Option<Resource> {
    Some(Resource { attributes: every_type(), dropped_attributes_count: 2, entity_refs: vec![] })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "lib".into(),
        version: "1.2".into(),
        attributes: every_type(),
        dropped_attributes_count: 0,
    })
}

fn log(n: u64) -> LogRecord {
    LogRecord {
        time_unix_nano: u64::MAX - n,
        observed_time_unix_nano: n,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(format!("line {n}"))) }),
        attributes: every_type(),
        dropped_attributes_count: 1,
        flags: 1,
        trace_id: vec![0xab; 16],
        span_id: vec![0xcd; 8],
        event_name: "ev".into(),
    }
}

fn logs_request(items: u64) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: (0..items).map(log).collect(),
                schema_url: "s1".into(),
            }],
            schema_url: "r1".into(),
        }],
    }
}

#[test]
fn each_log_record_is_a_one_item_request_that_decodes_back_to_it() {
    let request = logs_request(3);
    let items = logs(&request, WIDE).unwrap();
    assert_eq!((items.len(), items.rejected), (3, 0));
    for (n, record) in items.records().enumerate() {
        let back: ExportLogsServiceRequest = serde_json::from_slice(record).unwrap();
        let mut want = request.clone();
        want.resource_logs[0].scope_logs[0].log_records = vec![log(n as u64)];
        assert_eq!(back, want);
        let text = std::str::from_utf8(record).unwrap();
        // The OTLP/JSON mapping: hex ids, 64-bit integers as strings.
        assert!(text.contains(&"ab".repeat(16)) && text.contains("\"intValue\":\"-9223372036854775808\""), "{text}");
        assert!(text.contains(&format!("\"timeUnixNano\":\"{}\"", u64::MAX - n as u64)), "{text}");
    }
}

#[test]
fn each_span_is_a_one_item_request_that_decodes_back_to_it() {
    let one = |n: u8| Span {
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        name: format!("op{n}"),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: every_type(),
        events: vec![span::Event {
            time_unix_nano: 3,
            name: "e".into(),
            attributes: every_type(),
            dropped_attributes_count: 0,
        }],
        links: vec![span::Link { trace_id: vec![9; 16], span_id: vec![8; 8], ..Default::default() }],
        status: Some(Status { message: "bad".into(), code: 2 }),
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans { scope: scope(), spans: vec![one(1), one(2)], schema_url: String::new() }],
            schema_url: String::new(),
        }],
    };
    let items = traces(&request, WIDE).unwrap();
    assert_eq!(items.len(), 2);
    for (i, record) in items.records().enumerate() {
        let back: ExportTraceServiceRequest = serde_json::from_slice(record).unwrap();
        let mut want = request.clone();
        want.resource_spans[0].scope_spans[0].spans = vec![one(i as u8 + 1)];
        assert_eq!(back, want);
    }
}

fn metric(name: &str, data: Data) -> Metric {
    Metric { name: name.into(), description: "d".into(), unit: "ms".into(), metadata: every_type(), data: Some(data) }
}

/// A metric of every kind, two points each (one for the summary).
fn every_kind() -> Vec<Metric> {
    let number = |v: i64| NumberDataPoint {
        attributes: every_type(),
        time_unix_nano: 5,
        value: Some(if v % 2 == 0 {
            number_data_point::Value::AsInt(v)
        } else {
            number_data_point::Value::AsDouble(v as f64 + 0.5)
        }),
        ..Default::default()
    };
    let hist = |c: u64| HistogramDataPoint {
        count: c,
        sum: Some(1.5),
        bucket_counts: vec![c, 0],
        explicit_bounds: vec![10.0],
        min: Some(0.5),
        max: Some(9.0),
        ..Default::default()
    };
    let exp = |c: u64| ExponentialHistogramDataPoint {
        count: c,
        scale: -3,
        zero_count: 1,
        positive: Some(exponential_histogram_data_point::Buckets { offset: -2, bucket_counts: vec![c] }),
        ..Default::default()
    };
    let summary = SummaryDataPoint {
        count: 4,
        sum: 10.0,
        quantile_values: vec![summary_data_point::ValueAtQuantile { quantile: 0.99, value: 3.0 }],
        ..Default::default()
    };
    vec![
        metric("g", Data::Gauge(Gauge { data_points: vec![number(2), number(3)] })),
        metric(
            "s",
            Data::Sum(Sum { data_points: vec![number(4), number(-5)], aggregation_temporality: 2, is_monotonic: true }),
        ),
        metric(
            "h",
            Data::Histogram(Histogram { data_points: vec![hist(1), hist(u64::MAX)], aggregation_temporality: 1 }),
        ),
        metric(
            "e",
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![exp(1), exp(2)],
                aggregation_temporality: 2,
            }),
        ),
        metric("q", Data::Summary(Summary { data_points: vec![summary] })),
        Metric { name: "empty".into(), ..Default::default() },
    ]
}

#[test]
fn each_data_point_of_every_kind_is_a_one_point_metric_that_decodes_back() {
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics { scope: None, metrics: every_kind(), schema_url: "m".into() }],
            schema_url: String::new(),
        }],
    };
    let items = metrics(&request, WIDE).unwrap();
    assert_eq!(items.len(), 9, "2 + 2 + 2 + 2 + 1 points; the metric without data has none");
    let mut seen = 0;
    for metric in every_kind() {
        for point in 0..points_of(&metric) {
            let back: ExportMetricsServiceRequest = serde_json::from_slice(items.record(seen)).unwrap();
            let mut want = request.clone();
            want.resource_metrics[0].scope_metrics[0].metrics = vec![one_point(&metric, point)];
            assert_eq!(back, want, "record {seen}");
            seen += 1;
        }
    }
    assert_eq!(seen, 9);
}

#[test]
fn an_item_over_the_record_limit_is_rejected_alone_and_the_total_is_capped() {
    let mut request = logs_request(3);
    let big = any_value::Value::StringValue("x".repeat(5000));
    request.resource_logs[0].scope_logs[0].log_records[1].body = Some(AnyValue { value: Some(big) });
    let items = logs(&request, Limits { max_record_bytes: 4000, max_total_bytes: 1 << 20 }).unwrap();
    assert_eq!((items.len(), items.rejected), (2, 1));
    assert_eq!(items.bytes, items.records().map(|r| r.len() as u64).sum::<u64>());
    assert!(items.records().all(|r| serde_json::from_slice::<ExportLogsServiceRequest>(r).is_ok()));
    let capped = logs(&logs_request(100), Limits { max_record_bytes: 1 << 20, max_total_bytes: 10_000 });
    assert!(matches!(capped, Err(AcceptError::OtlpRecordsTooLarge { cap: 10_000 })), "{capped:?}");
}

#[test]
fn an_item_with_a_double_json_cannot_hold_is_rejected_alone() {
    let mut request = logs_request(3);
    let nan = any_value::Value::DoubleValue(f64::NAN);
    request.resource_logs[0].scope_logs[0].log_records[2].attributes.push(kv("nan", nan));
    let items = logs(&request, WIDE).unwrap();
    assert_eq!((items.len(), items.rejected), (2, 1));
    let inf = any_value::Value::DoubleValue(f64::INFINITY);
    request.resource_logs[0].resource.as_mut().unwrap().attributes.push(kv("inf", inf));
    assert_eq!(logs(&request, WIDE).map(|i| (i.len(), i.rejected)).unwrap(), (0, 3), "a resource's own: every item");
}

#[test]
fn an_export_without_items_has_no_records() {
    let items = logs(&ExportLogsServiceRequest::default(), WIDE).unwrap();
    assert_eq!((items.len(), items.rejected, items.bytes), (0, 0, 0));
}

#[test]
fn defaults_are_left_out_and_read_back_as_defaults() {
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource::default()),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope::default()),
                log_records: vec![LogRecord::default()],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let items = logs(&request, WIDE).unwrap();
    let record = items.record(0);
    assert_eq!(record, br#"{"resourceLogs":[{"resource":{},"scopeLogs":[{"scope":{},"logRecords":[{}]}]}]}"#);
    let back: ExportLogsServiceRequest = serde_json::from_slice(record).unwrap();
    assert_eq!(back, request);
}
