//! Whether an item survives OTLP/JSON unchanged. JSON has no NaN or
//! infinity: `serde_json` writes them as `null`, which would store a record
//! that no longer holds its item (or does not decode). And the profiles
//! signal's string-table indexes (`string_value_strindex`, `key_strindex`)
//! mean nothing in logs, traces or metrics, and the OTLP/JSON reader of
//! `opentelemetry-proto` drops the first (found by the `otlp_proto` fuzz
//! target). Such an item is refused alone (`partial_success`), never stored
//! changed.

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{exemplar, metric::Data, number_data_point, Exemplar, Metric};
use opentelemetry_proto::tonic::trace::v1::Span;

fn value(v: &AnyValue) -> bool {
    match &v.value {
        Some(Value::DoubleValue(d)) => d.is_finite(),
        Some(Value::ArrayValue(a)) => a.values.iter().all(value),
        Some(Value::KvlistValue(kv)) => attributes(&kv.values),
        Some(Value::StringValueStrindex(_)) => false,
        _ => true,
    }
}

/// Every double among `list`'s values is finite.
pub fn attributes(list: &[KeyValue]) -> bool {
    list.iter().all(|kv| kv.key_strindex == 0 && kv.value.as_ref().is_none_or(value))
}

/// A log record's body and attributes.
pub fn log(log: &LogRecord) -> bool {
    log.body.as_ref().is_none_or(value) && attributes(&log.attributes)
}

/// A span's attributes, its events' and its links'.
pub fn span(span: &Span) -> bool {
    attributes(&span.attributes)
        && span.events.iter().all(|e| attributes(&e.attributes))
        && span.links.iter().all(|l| attributes(&l.attributes))
}

fn exemplars(list: &[Exemplar]) -> bool {
    list.iter().all(|e| {
        let v = !matches!(e.value, Some(exemplar::Value::AsDouble(d)) if !d.is_finite());
        v && attributes(&e.filtered_attributes)
    })
}

fn all(values: &[f64]) -> bool {
    values.iter().all(|d| d.is_finite())
}

fn some(value: Option<f64>) -> bool {
    value.is_none_or(f64::is_finite)
}

/// A one-point metric: its metadata, its point's values, attributes and
/// exemplars.
pub fn metric(metric: &Metric) -> bool {
    let number = |v: &Option<number_data_point::Value>| !matches!(v, Some(number_data_point::Value::AsDouble(d)) if !d.is_finite());
    let points = match &metric.data {
        None => true,
        Some(Data::Gauge(g)) => {
            g.data_points.iter().all(|p| number(&p.value) && attributes(&p.attributes) && exemplars(&p.exemplars))
        }
        Some(Data::Sum(s)) => {
            s.data_points.iter().all(|p| number(&p.value) && attributes(&p.attributes) && exemplars(&p.exemplars))
        }
        Some(Data::Histogram(h)) => h.data_points.iter().all(|p| {
            some(p.sum)
                && some(p.min)
                && some(p.max)
                && all(&p.explicit_bounds)
                && attributes(&p.attributes)
                && exemplars(&p.exemplars)
        }),
        Some(Data::ExponentialHistogram(e)) => e.data_points.iter().all(|p| {
            some(p.sum)
                && some(p.min)
                && some(p.max)
                && p.zero_threshold.is_finite()
                && attributes(&p.attributes)
                && exemplars(&p.exemplars)
        }),
        Some(Data::Summary(s)) => s.data_points.iter().all(|p| {
            p.sum.is_finite()
                && p.quantile_values.iter().all(|q| q.quantile.is_finite() && q.value.is_finite())
                && attributes(&p.attributes)
        }),
    };
    points && attributes(&metric.metadata)
}
