//! `otlp+http(s)://HOST:PORT`: forward OTLP records to any OTLP/HTTP
//! receiver, as protobuf.
//!
//! A lease's records (each a one-item OTLP/JSON export request, the broker's
//! `api::otlp::records`) are merged back into one export request per signal:
//! items under the same resource (and schema URL) share one resource entry,
//! and under it items of the same scope share one scope entry, in record
//! order. Each request is POSTed to `/v1/logs`, `/v1/traces` or
//! `/v1/metrics` with `Content-Type: application/x-protobuf`.
//!
//! Answers follow the OTLP retry rules through the HTTP sink's classes
//! (429, 502, 503, 504 retryable, `Retry-After` honoured; 400 the content's
//! fault). A 200 whose `partial_success` rejects items is the content's
//! fault too: the range is bisected down to single records, and a record
//! the receiver rejects alone goes to dead letters with the receiver's
//! message. OTLP has no idempotency key, so the items a receiver accepted
//! in a batch it partly rejected arrive again in the halves (docs/otlp.md).
//!
//! A record that is not a one-item OTLP request is refused to dead letters
//! before anything is sent.

use super::{Record, Refusal, SinkError};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;

/// One export request of a delivery.
pub struct Export {
    /// `/v1/logs`, `/v1/traces` or `/v1/metrics`.
    pub path: &'static str,
    /// The protobuf body.
    pub body: Vec<u8>,
}

/// One decoded record.
enum Item {
    Logs(ExportLogsServiceRequest),
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

fn decode(payload: &[u8]) -> Result<Item, String> {
    let v: serde_json::Value = serde_json::from_slice(payload).map_err(|e| format!("not an OTLP/JSON record: {e}"))?;
    let bad = |e: serde_json::Error| format!("not an OTLP/JSON export request: {e}");
    if v.get("resourceLogs").is_some() {
        return serde_json::from_value(v).map(Item::Logs).map_err(bad);
    }
    if v.get("resourceSpans").is_some() {
        return serde_json::from_value(v).map(Item::Traces).map_err(bad);
    }
    if v.get("resourceMetrics").is_some() {
        return serde_json::from_value(v).map(Item::Metrics).map_err(bad);
    }
    Err("not an OTLP/JSON export request (no resourceLogs, resourceSpans or resourceMetrics): an otlp sink forwards only the OTLP topics".into())
}

/// Why `record` cannot be forwarded, if it cannot.
pub fn refuse(record: &Record) -> Option<String> {
    decode(&record.payload).err().map(|why| format!("not sent: {why}"))
}

/// Merge `into`'s entry for `key` (found by `same`), or append `fresh`.
fn entry<T>(list: &mut Vec<T>, same: impl Fn(&T) -> bool, fresh: impl FnOnce() -> T) -> &mut T {
    match list.iter().position(same) {
        Some(at) => &mut list[at],
        None => {
            list.push(fresh());
            let last = list.len() - 1;
            &mut list[last]
        }
    }
}

/// The export requests of one delivery, one per signal, being merged.
#[derive(Default)]
struct Merged {
    logs: ExportLogsServiceRequest,
    traces: ExportTraceServiceRequest,
    metrics: ExportMetricsServiceRequest,
}

impl Merged {
    fn logs(&mut self, req: ExportLogsServiceRequest) {
        use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
        for rl in req.resource_logs {
            let same = |x: &ResourceLogs| x.resource == rl.resource && x.schema_url == rl.schema_url;
            let into =
                entry(&mut self.logs.resource_logs, same, || ResourceLogs { scope_logs: Vec::new(), ..rl.clone() });
            for sl in rl.scope_logs {
                let same = |x: &ScopeLogs| x.scope == sl.scope && x.schema_url == sl.schema_url;
                let scope = entry(&mut into.scope_logs, same, || ScopeLogs { log_records: Vec::new(), ..sl.clone() });
                scope.log_records.extend(sl.log_records);
            }
        }
    }

    fn traces(&mut self, req: ExportTraceServiceRequest) {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
        for rs in req.resource_spans {
            let same = |x: &ResourceSpans| x.resource == rs.resource && x.schema_url == rs.schema_url;
            let into = entry(&mut self.traces.resource_spans, same, || ResourceSpans {
                scope_spans: Vec::new(),
                ..rs.clone()
            });
            for ss in rs.scope_spans {
                let same = |x: &ScopeSpans| x.scope == ss.scope && x.schema_url == ss.schema_url;
                let scope = entry(&mut into.scope_spans, same, || ScopeSpans { spans: Vec::new(), ..ss.clone() });
                scope.spans.extend(ss.spans);
            }
        }
    }

    fn metrics(&mut self, req: ExportMetricsServiceRequest) {
        use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
        for rm in req.resource_metrics {
            let same = |x: &ResourceMetrics| x.resource == rm.resource && x.schema_url == rm.schema_url;
            let fresh = || ResourceMetrics { scope_metrics: Vec::new(), ..rm.clone() };
            let into = entry(&mut self.metrics.resource_metrics, same, fresh);
            for sm in rm.scope_metrics {
                let same = |x: &ScopeMetrics| x.scope == sm.scope && x.schema_url == sm.schema_url;
                let scope = entry(&mut into.scope_metrics, same, || ScopeMetrics { metrics: Vec::new(), ..sm.clone() });
                scope.metrics.extend(sm.metrics);
            }
        }
    }

    /// The protobuf body of the signal at `path`.
    fn body(&self, path: &str) -> Vec<u8> {
        match path {
            "/v1/logs" => self.logs.encode_to_vec(),
            "/v1/traces" => self.traces.encode_to_vec(),
            _ => self.metrics.encode_to_vec(),
        }
    }
}

/// Merge the one-item requests `records` into one export request per
/// signal, in the order each signal first comes.
pub fn exports(records: &[Record]) -> Result<Vec<Export>, SinkError> {
    let mut merged = Merged::default();
    let mut order: Vec<&'static str> = Vec::new();
    for r in records {
        let item = decode(&r.payload).map_err(|why| SinkError::poison(format!("not sent: {why}")))?;
        let path = match item {
            Item::Logs(req) => {
                merged.logs(req);
                "/v1/logs"
            }
            Item::Traces(req) => {
                merged.traces(req);
                "/v1/traces"
            }
            Item::Metrics(req) => {
                merged.metrics(req);
                "/v1/metrics"
            }
        };
        if !order.contains(&path) {
            order.push(path);
        }
    }
    Ok(order.into_iter().map(|path| Export { path, body: merged.body(path) }).collect())
}

/// A 200's `partial_success`: the items the receiver rejected, as the
/// content's fault with its message (None: all accepted, or a body that
/// says nothing).
pub fn rejected(path: &str, answer: &[u8]) -> Option<SinkError> {
    let (count, message) = match path {
        "/v1/logs" => {
            let p = ExportLogsServiceResponse::decode(answer).ok()?.partial_success?;
            (p.rejected_log_records, p.error_message)
        }
        "/v1/traces" => {
            let p = ExportTraceServiceResponse::decode(answer).ok()?.partial_success?;
            (p.rejected_spans, p.error_message)
        }
        _ => {
            let p = ExportMetricsServiceResponse::decode(answer).ok()?.partial_success?;
            (p.rejected_data_points, p.error_message)
        }
    };
    (count > 0).then(|| SinkError::Poison {
        message: format!("the OTLP receiver rejected {count} item(s): {message}"),
        refusal: Some(Refusal::Status(200)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(payload: &str) -> Record {
        Record {
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
            tenant: "acme".into(),
            ..Record::default()
        }
    }

    fn log(resource: &str, scope: &str, body: &str) -> Record {
        rec(&format!(
            r#"{{"resourceLogs":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"{resource}"}}}}]}},"scopeLogs":[{{"scope":{{"name":"{scope}"}},"logRecords":[{{"body":{{"stringValue":"{body}"}}}}]}}]}}]}}"#
        ))
    }

    #[test]
    fn records_merge_back_by_resource_and_scope_in_order() {
        let records = [log("a", "s", "1"), log("b", "s", "2"), log("a", "s", "3"), log("a", "t", "4")];
        let out = exports(&records).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].path, "/v1/logs");
        let req = ExportLogsServiceRequest::decode(out[0].body.as_slice()).unwrap();
        assert_eq!(req.resource_logs.len(), 2, "two resources");
        let a = &req.resource_logs[0];
        assert_eq!(a.scope_logs.len(), 2, "two scopes under a");
        let bodies: Vec<String> =
            a.scope_logs[0].log_records.iter().map(|l| crate::sink::otel_rows::text(l.body.as_ref())).collect();
        assert_eq!(bodies, ["1", "3"]);
    }

    #[test]
    fn what_is_not_an_otlp_record_is_refused_and_a_partial_success_is_the_contents_fault() {
        assert!(refuse(&rec("{\"event\":1}")).is_some());
        assert!(refuse(&log("a", "s", "1")).is_none());
        let answer = ExportLogsServiceResponse {
            partial_success: Some(opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess {
                rejected_log_records: 1,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        match rejected("/v1/logs", &answer) {
            Some(SinkError::Poison { message, .. }) => assert!(message.contains("too old"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(rejected("/v1/logs", &[]).is_none());
    }
}
