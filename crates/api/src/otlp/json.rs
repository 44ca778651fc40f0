//! A compact OTLP/JSON writer for the hot path: log records, their
//! attribute values, resources and scopes. The OTLP/JSON mapping as
//! `opentelemetry-proto`'s serde writes it (lowerCamelCase names, 64-bit
//! integers as strings, hex ids, enums as integers, base64 bytes), but a
//! field at its default value is left out, as the protobuf JSON mapping
//! does by default: a record is a fifth smaller, and every OTLP/JSON reader
//! reads an absent field as its default. What is rare (profiles' string
//! indexes, entity references) goes through serde unchanged.
//!
//! The round trip (this JSON decoded by the crate's serde equals the item)
//! is tested in `records_tests.rs` and fuzzed (`otlp_proto`, `otlp_json`).

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;

type Out = Vec<u8>;

/// A JSON string. Most OTLP strings (names, routes, ids, messages) hold
/// nothing JSON escapes: those are copied whole, which is what serde's
/// writer would produce for them; the rest go through it.
fn string(out: &mut Out, s: &str) -> Result<(), serde_json::Error> {
    // A fold, not `all`: no early exit, so the check is vectorised.
    let plain = !s.bytes().fold(false, |escape, b| escape | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return Ok(());
    }
    serde_json::to_writer(&mut *out, s)
}

/// `,"name":` (or without the comma for the first field).
fn name(out: &mut Out, first: &mut bool, field: &str) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":");
}

fn quoted_number(out: &mut Out, n: impl itoa::Integer) {
    out.push(b'"');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.push(b'"');
}

fn hex(out: &mut Out, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(2 * bytes.len() + 2);
    out.push(b'"');
    out.extend(bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]));
    out.push(b'"');
}

/// An `AnyValue` object.
pub fn any(out: &mut Out, v: &AnyValue) -> Result<(), serde_json::Error> {
    match &v.value {
        None => out.extend_from_slice(b"{}"),
        Some(Value::StringValue(s)) => {
            out.extend_from_slice(b"{\"stringValue\":");
            string(out, s)?;
            out.push(b'}');
        }
        Some(Value::BoolValue(b)) => {
            out.extend_from_slice(if *b { b"{\"boolValue\":true}" } else { b"{\"boolValue\":false}" })
        }
        Some(Value::IntValue(i)) => {
            out.extend_from_slice(b"{\"intValue\":");
            quoted_number(out, *i);
            out.push(b'}');
        }
        Some(Value::DoubleValue(d)) => {
            out.extend_from_slice(b"{\"doubleValue\":");
            serde_json::to_writer(&mut *out, d)?;
            out.push(b'}');
        }
        Some(Value::BytesValue(b)) => {
            out.extend_from_slice(b"{\"bytesValue\":\"");
            out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(b).as_bytes());
            out.extend_from_slice(b"\"}");
        }
        Some(Value::ArrayValue(a)) => {
            out.extend_from_slice(b"{\"arrayValue\":{\"values\":[");
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                any(out, v)?;
            }
            out.extend_from_slice(b"]}}");
        }
        Some(Value::KvlistValue(kv)) => {
            out.extend_from_slice(b"{\"kvlistValue\":{\"values\":");
            key_values(out, &kv.values)?;
            out.extend_from_slice(b"}}");
        }
        Some(Value::StringValueStrindex(_)) => serde_json::to_writer(&mut *out, v)?,
    }
    Ok(())
}

/// A key-value list as a JSON array.
pub fn key_values(out: &mut Out, list: &[KeyValue]) -> Result<(), serde_json::Error> {
    out.push(b'[');
    for (i, kv) in list.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if kv.key_strindex != 0 {
            serde_json::to_writer(&mut *out, kv)?;
            continue;
        }
        out.extend_from_slice(b"{\"key\":");
        string(out, &kv.key)?;
        if let Some(v) = &kv.value {
            out.extend_from_slice(b",\"value\":");
            any(out, v)?;
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

fn attributes(out: &mut Out, first: &mut bool, list: &[KeyValue]) -> Result<(), serde_json::Error> {
    if !list.is_empty() {
        name(out, first, "attributes");
        key_values(out, list)?;
    }
    Ok(())
}

fn dropped(out: &mut Out, first: &mut bool, count: u32) {
    if count != 0 {
        name(out, first, "droppedAttributesCount");
        out.extend_from_slice(itoa::Buffer::new().format(count).as_bytes());
    }
}

/// A `Resource` object.
pub fn resource(out: &mut Out, r: &Resource) -> Result<(), serde_json::Error> {
    if !r.entity_refs.is_empty() {
        return serde_json::to_writer(&mut *out, r);
    }
    let first = &mut true;
    out.push(b'{');
    attributes(out, first, &r.attributes)?;
    dropped(out, first, r.dropped_attributes_count);
    out.push(b'}');
    Ok(())
}

/// An `InstrumentationScope` object.
pub fn scope(out: &mut Out, s: &InstrumentationScope) -> Result<(), serde_json::Error> {
    let first = &mut true;
    out.push(b'{');
    if !s.name.is_empty() {
        name(out, first, "name");
        string(out, &s.name)?;
    }
    if !s.version.is_empty() {
        name(out, first, "version");
        string(out, &s.version)?;
    }
    attributes(out, first, &s.attributes)?;
    dropped(out, first, s.dropped_attributes_count);
    out.push(b'}');
    Ok(())
}

/// A `LogRecord` object.
pub fn log(out: &mut Out, l: &LogRecord) -> Result<(), serde_json::Error> {
    let first = &mut true;
    out.push(b'{');
    if l.time_unix_nano != 0 {
        name(out, first, "timeUnixNano");
        quoted_number(out, l.time_unix_nano);
    }
    if l.observed_time_unix_nano != 0 {
        name(out, first, "observedTimeUnixNano");
        quoted_number(out, l.observed_time_unix_nano);
    }
    if l.severity_number != 0 {
        name(out, first, "severityNumber");
        out.extend_from_slice(itoa::Buffer::new().format(l.severity_number).as_bytes());
    }
    if !l.severity_text.is_empty() {
        name(out, first, "severityText");
        string(out, &l.severity_text)?;
    }
    if let Some(body) = &l.body {
        name(out, first, "body");
        any(out, body)?;
    }
    attributes(out, first, &l.attributes)?;
    dropped(out, first, l.dropped_attributes_count);
    if l.flags != 0 {
        name(out, first, "flags");
        out.extend_from_slice(itoa::Buffer::new().format(l.flags).as_bytes());
    }
    if !l.trace_id.is_empty() {
        name(out, first, "traceId");
        hex(out, &l.trace_id);
    }
    if !l.span_id.is_empty() {
        name(out, first, "spanId");
        hex(out, &l.span_id);
    }
    if !l.event_name.is_empty() {
        name(out, first, "eventName");
        string(out, &l.event_name)?;
    }
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_lowercase_hex_in_quotes() {
        let mut out = Vec::new();
        super::hex(&mut out, &[0x00, 0x0f, 0xa5, 0xff]);
        assert_eq!(out, b"\"000fa5ff\"");
        out.clear();
        super::hex(&mut out, &[]);
        assert_eq!(out, b"\"\"");
    }

    /// The copy-whole path writes what serde would: for plain strings,
    /// non-ASCII and DEL included, and for every byte serde escapes.
    #[test]
    fn strings_are_written_as_serde_writes_them() {
        let mut cases: Vec<String> =
            ["", "GET /products/{id}", "héllo ✓", "del\u{7f}", "q\"uote", "back\\slash", "tab\there"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        cases.extend((0u8..0x20).map(|b| format!("a{}b", char::from(b))));
        for s in cases {
            let mut ours = Vec::new();
            super::string(&mut ours, &s).unwrap();
            assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
    }
}
