//! One OTLP export request → one record per item.
//!
//! Each log record, span and metric data point becomes one record that is
//! itself a valid OTLP/JSON export request holding exactly that item under
//! its resource and scope (the OTLP/JSON mapping of `opentelemetry-proto`'s
//! serde: lowerCamelCase names, hex trace and span ids, 64-bit integers as
//! strings, enums as integers). Nothing of the item is dropped; a metric
//! data point keeps its metric's name, description, unit, metadata and, for
//! sums and histograms, the aggregation temporality and monotonicity.
//!
//! The resource and scope are serialised once per scope ([`Envelope`]) and
//! each item once, so a request costs one JSON serialisation of each part.
//! Resources, scopes and log records are written by [`super::json`], which
//! leaves defaults out; spans and data points by the crate's serde.
//!
//! Limits: an item whose record would be over `max_record_bytes`, or that
//! holds a double JSON cannot (NaN, infinity: [`super::finite`]), is
//! rejected alone (the answer's `partial_success`); all records together
//! over `max_inflated_bytes` refuse the request (413), since the resource
//! repeated in every record can multiply a small request.

use crate::error::AcceptError;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, Metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::Serialize;

/// The records of one request, and the items refused alone. The records
/// lie end to end in one buffer (one allocation per request, not per item).
#[derive(Debug, Default)]
pub struct Items {
    /// Every record's bytes, in the request's order.
    buf: Vec<u8>,
    /// Where each record ends in `buf`.
    ends: Vec<usize>,
    /// Items refused because their record is over `max_record_bytes`.
    pub rejected: u64,
    /// Bytes of all records.
    pub bytes: u64,
}

impl Items {
    /// How many records (accepted items) there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether no item was accepted.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The record at `index` (< [`Items::len`]): one OTLP/JSON one-item
    /// export request.
    pub fn record(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.buf[start..self.ends[index]]
    }

    /// Every record, in order.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.record(i))
    }
}

/// The limits a split works within.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `max_record_bytes`: a larger item is rejected alone.
    pub max_record_bytes: u64,
    /// `max_inflated_bytes`: all records together, or the request is refused.
    pub max_total_bytes: u64,
}

/// The JSON of one item's record before and after the item itself.
struct Envelope {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

/// The three names a signal's nesting uses in OTLP/JSON.
struct Nesting {
    root: &'static str,
    scopes: &'static str,
    items: &'static str,
}

const LOGS: Nesting = Nesting { root: "resourceLogs", scopes: "scopeLogs", items: "logRecords" };
const TRACES: Nesting = Nesting { root: "resourceSpans", scopes: "scopeSpans", items: "spans" };
const METRICS: Nesting = Nesting { root: "resourceMetrics", scopes: "scopeMetrics", items: "metrics" };

/// Where an item sits: its resource and scope, with their schema URLs.
struct Placement<'a> {
    resource: Option<&'a Resource>,
    resource_schema: &'a str,
    scope: Option<&'a InstrumentationScope>,
    scope_schema: &'a str,
}

impl Placement<'_> {
    /// Whether the resource's and scope's attributes are JSON-safe.
    fn is_finite(&self) -> bool {
        self.resource.is_none_or(|r| super::finite::attributes(&r.attributes))
            && self.scope.is_none_or(|s| super::finite::attributes(&s.attributes))
    }
}

fn json_error(source: serde_json::Error) -> AcceptError {
    AcceptError::OtlpUnencodable { source }
}

impl Envelope {
    fn new(nesting: &Nesting, at: &Placement<'_>) -> Result<Envelope, AcceptError> {
        let mut prefix = Vec::with_capacity(256);
        prefix.extend_from_slice(b"{\"");
        prefix.extend_from_slice(nesting.root.as_bytes());
        prefix.extend_from_slice(b"\":[{");
        if let Some(resource) = at.resource {
            prefix.extend_from_slice(b"\"resource\":");
            super::json::resource(&mut prefix, resource).map_err(json_error)?;
            prefix.push(b',');
        }
        prefix.push(b'"');
        prefix.extend_from_slice(nesting.scopes.as_bytes());
        prefix.extend_from_slice(b"\":[{");
        if let Some(scope) = at.scope {
            prefix.extend_from_slice(b"\"scope\":");
            super::json::scope(&mut prefix, scope).map_err(json_error)?;
            prefix.push(b',');
        }
        prefix.push(b'"');
        prefix.extend_from_slice(nesting.items.as_bytes());
        prefix.extend_from_slice(b"\":[");
        let mut suffix = Vec::with_capacity(64);
        suffix.push(b']');
        // Empty schema URLs are left out, as every default is.
        if !at.scope_schema.is_empty() {
            suffix.extend_from_slice(b",\"schemaUrl\":");
            serde_json::to_writer(&mut suffix, at.scope_schema).map_err(json_error)?;
        }
        suffix.extend_from_slice(b"}]");
        if !at.resource_schema.is_empty() {
            suffix.extend_from_slice(b",\"schemaUrl\":");
            serde_json::to_writer(&mut suffix, at.resource_schema).map_err(json_error)?;
        }
        suffix.extend_from_slice(b"}]}");
        Ok(Envelope { prefix, suffix })
    }
}

/// Collects records within the limits.
struct Collector {
    limits: Limits,
    items: Items,
}

impl Collector {
    fn new(limits: Limits) -> Self {
        Collector { limits, items: Items { buf: Vec::with_capacity(4096), ..Items::default() } }
    }

    /// Count an item rejected without writing it.
    fn reject(&mut self) {
        self.items.rejected += 1;
    }

    /// Add `item` in `envelope`, or count it rejected when its record would
    /// be over `max_record_bytes`. The item is written in place, after the
    /// prefix; a rejected one is cut off again.
    fn push(&mut self, envelope: &Envelope, item: &impl Serialize) -> Result<(), AcceptError> {
        self.push_with(envelope, |buf| serde_json::to_writer(buf, item))
    }

    /// [`Collector::push`] with the item written by `write`.
    fn push_with(
        &mut self,
        envelope: &Envelope,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), serde_json::Error>,
    ) -> Result<(), AcceptError> {
        let buf = &mut self.items.buf;
        let start = buf.len();
        buf.extend_from_slice(&envelope.prefix);
        write(&mut *buf).map_err(json_error)?;
        buf.extend_from_slice(&envelope.suffix);
        let len = (buf.len() - start) as u64;
        if len > self.limits.max_record_bytes {
            buf.truncate(start);
            self.items.rejected += 1;
            return Ok(());
        }
        self.items.bytes += len;
        if self.items.bytes > self.limits.max_total_bytes {
            return Err(AcceptError::OtlpRecordsTooLarge { cap: self.limits.max_total_bytes });
        }
        self.items.ends.push(buf.len());
        Ok(())
    }
}

/// The records of a logs export: one per log record.
pub fn logs(request: &ExportLogsServiceRequest, limits: Limits) -> Result<Items, AcceptError> {
    let mut out = Collector::new(limits);
    for rl in &request.resource_logs {
        for sl in &rl.scope_logs {
            let at = Placement {
                resource: rl.resource.as_ref(),
                resource_schema: &rl.schema_url,
                scope: sl.scope.as_ref(),
                scope_schema: &sl.schema_url,
            };
            let envelope = Envelope::new(&LOGS, &at)?;
            let placed = at.is_finite();
            for record in &sl.log_records {
                match placed && super::finite::log(record) {
                    true => out.push_with(&envelope, |buf| super::json::log(buf, record))?,
                    false => out.reject(),
                }
            }
        }
    }
    Ok(out.items)
}

/// The records of a trace export: one per span.
pub fn traces(request: &ExportTraceServiceRequest, limits: Limits) -> Result<Items, AcceptError> {
    let mut out = Collector::new(limits);
    for rs in &request.resource_spans {
        for ss in &rs.scope_spans {
            let at = Placement {
                resource: rs.resource.as_ref(),
                resource_schema: &rs.schema_url,
                scope: ss.scope.as_ref(),
                scope_schema: &ss.schema_url,
            };
            let envelope = Envelope::new(&TRACES, &at)?;
            let placed = at.is_finite();
            for span in &ss.spans {
                match placed && super::finite::span(span) {
                    true => out.push(&envelope, span)?,
                    false => out.reject(),
                }
            }
        }
    }
    Ok(out.items)
}

/// The records of a metrics export: one per data point, each under a copy
/// of its metric that holds only that point.
pub fn metrics(request: &ExportMetricsServiceRequest, limits: Limits) -> Result<Items, AcceptError> {
    let mut out = Collector::new(limits);
    for rm in &request.resource_metrics {
        for sm in &rm.scope_metrics {
            let at = Placement {
                resource: rm.resource.as_ref(),
                resource_schema: &rm.schema_url,
                scope: sm.scope.as_ref(),
                scope_schema: &sm.schema_url,
            };
            let envelope = Envelope::new(&METRICS, &at)?;
            let placed = at.is_finite();
            for metric in &sm.metrics {
                for point in 0..points_of(metric) {
                    let one = one_point(metric, point);
                    match placed && super::finite::metric(&one) {
                        true => out.push(&envelope, &one)?,
                        false => out.reject(),
                    }
                }
            }
        }
    }
    Ok(out.items)
}

/// How many data points a metric holds (0 when it has no data).
pub fn points_of(metric: &Metric) -> usize {
    match &metric.data {
        None => 0,
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(e)) => e.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
    }
}

/// `metric` holding only its data point at `index` (< [`points_of`]).
fn one_point(metric: &Metric, index: usize) -> Metric {
    fn pick<T: Clone>(points: &[T], index: usize) -> Vec<T> {
        points.get(index).cloned().into_iter().collect()
    }
    let data = metric.data.as_ref().map(|data| match data {
        Data::Gauge(g) => {
            Data::Gauge(opentelemetry_proto::tonic::metrics::v1::Gauge { data_points: pick(&g.data_points, index) })
        }
        Data::Sum(s) => Data::Sum(opentelemetry_proto::tonic::metrics::v1::Sum {
            data_points: pick(&s.data_points, index),
            aggregation_temporality: s.aggregation_temporality,
            is_monotonic: s.is_monotonic,
        }),
        Data::Histogram(h) => Data::Histogram(opentelemetry_proto::tonic::metrics::v1::Histogram {
            data_points: pick(&h.data_points, index),
            aggregation_temporality: h.aggregation_temporality,
        }),
        Data::ExponentialHistogram(e) => {
            Data::ExponentialHistogram(opentelemetry_proto::tonic::metrics::v1::ExponentialHistogram {
                data_points: pick(&e.data_points, index),
                aggregation_temporality: e.aggregation_temporality,
            })
        }
        Data::Summary(s) => {
            Data::Summary(opentelemetry_proto::tonic::metrics::v1::Summary { data_points: pick(&s.data_points, index) })
        }
    });
    Metric {
        name: metric.name.clone(),
        description: metric.description.clone(),
        unit: metric.unit.clone(),
        metadata: metric.metadata.clone(),
        data,
    }
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
