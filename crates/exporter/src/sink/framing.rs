//! How a record becomes exactly one record downstream, whatever its bytes.
//!
//! Every sink here is line- or row-oriented: the file sink and the webhook
//! write NDJSON, ClickHouse reads `JSONEachRow`. A record that holds a line
//! break (an `application/octet-stream` record may hold anything) would read
//! back as several records, so tenant bytes would pose as other records.
//!
//! The rule (docs/sinks.md):
//! - a record that is **one JSON line** — valid UTF-8, exactly one JSON value,
//!   no `\r`, `\n`, U+0085, U+2028 or U+2029 — is sent as is;
//! - any other record is sent as `{"payload_b64":"<standard base64>"}`
//!   (file and webhook), or refused (ClickHouse, see [`Shape::as_row`]).
//!
//! So that the framing can always be undone, a record that is itself a JSON
//! object whose keys are all `payload_b64` (one, or the same key repeated,
//! however escaped) is framed too: downstream, a line that is an object
//! whose keys are all `payload_b64` always stands for the decoded bytes, and
//! any other line is the record itself. Repeats count because JSON parsers
//! disagree on them: most keep the last value and so see an object with the
//! single key `payload_b64`; a repeated-key record sent as is would decode,
//! by the consumer's rule, to bytes the record does not hold.
//!
//! U+0085, U+2028 and U+2029 may appear raw inside JSON strings, but some
//! line readers (Python's `str.splitlines`, several log shippers) break lines
//! there; framing those rare records costs little and keeps them whole.

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// The key of a framed record.
pub const FRAMED_KEY: &str = "payload_b64";

/// Why a record cannot be sent as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotOneLine {
    #[error("the record is empty")]
    Empty,
    #[error("the record holds a line break (byte {at})")]
    LineBreak { at: usize },
    #[error("the record is not UTF-8 text")]
    NotUtf8,
    #[error("the record is not one JSON value: {0}")]
    NotJson(String),
    #[error(
        "the record is a JSON object whose keys are all \"payload_b64\", which downstream reads as a framed record"
    )]
    LooksFramed,
}

/// What a record is, as far as line-oriented sinks care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// One JSON line that is an object.
    Object,
    /// One JSON line that is not an object (array, string, number, ...).
    OtherJson,
    /// Must be framed (or refused).
    NotOneLine(NotOneLine),
}

/// Why a record cannot be a ClickHouse `JSONEachRow` row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotARow {
    #[error("{0}")]
    NotOneLine(NotOneLine),
    /// ClickHouse reads a top-level array as several rows, and scalars not at all.
    #[error("the record is JSON but not an object")]
    NotAnObject,
}

impl Shape {
    pub fn of(payload: &[u8]) -> Shape {
        match classify(payload) {
            Ok(true) => Shape::Object,
            Ok(false) => Shape::OtherJson,
            Err(why) => Shape::NotOneLine(why),
        }
    }

    /// Whether this record may be one `JSONEachRow` row sent as is.
    /// ClickHouse rows are never framed, so an object whose keys are all
    /// `payload_b64` is an ordinary row there.
    pub fn as_row(&self) -> Result<(), NotARow> {
        match self {
            Shape::Object | Shape::NotOneLine(NotOneLine::LooksFramed) => Ok(()),
            Shape::OtherJson => Err(NotARow::NotAnObject),
            Shape::NotOneLine(why) => Err(NotARow::NotOneLine(why.clone())),
        }
    }
}

/// Ok(is_object) for one JSON line that may be sent as is.
fn classify(payload: &[u8]) -> Result<bool, NotOneLine> {
    if payload.is_empty() {
        return Err(NotOneLine::Empty);
    }
    // This runs for every record delivered: byte scans with memchr (SIMD),
    // and the Unicode breaks looked for only in text that is not ASCII.
    if let Some(at) = memchr::memchr2(b'\n', b'\r', payload) {
        return Err(NotOneLine::LineBreak { at });
    }
    let text = std::str::from_utf8(payload).map_err(|_| NotOneLine::NotUtf8)?;
    if !payload.is_ascii() {
        if let Some(at) = unicode_line_break(payload) {
            return Err(NotOneLine::LineBreak { at });
        }
    }
    json_kind(text)
}

/// Ok(is_object) for text that is exactly one JSON value and not an object
/// whose keys are all [`FRAMED_KEY`].
fn json_kind(text: &str) -> Result<bool, NotOneLine> {
    let mut de = serde_json::Deserializer::from_str(text);
    let kind = de.deserialize_any(KindVisitor).map_err(|e| NotOneLine::NotJson(e.to_string()))?;
    // Trailing characters (a second value on the same line) are refused here.
    de.end().map_err(|e| NotOneLine::NotJson(e.to_string()))?;
    match kind {
        Kind::Object { only_framed_keys: true } => Err(NotOneLine::LooksFramed),
        Kind::Object { .. } => Ok(true),
        Kind::Other => Ok(false),
    }
}

/// The body of an event-mode webhook request (one record): the record as
/// is when it is one JSON value in UTF-8 — line breaks allowed, the body
/// is not a line — else framed, `{"payload_b64":"…"}` with no newline. A
/// record that is itself an object whose keys are all `payload_b64` is
/// framed too, so the receiver's rule (such an object stands for the
/// decoded bytes, anything else is the record) is exact.
pub fn event_body(payload: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let as_is = !payload.is_empty() && std::str::from_utf8(payload).is_ok_and(|text| json_kind(text).is_ok());
    if as_is {
        return std::borrow::Cow::Borrowed(payload);
    }
    let mut out = Vec::with_capacity(payload.len() * 4 / 3 + 20);
    push_ndjson_line(&mut out, payload, &Shape::NotOneLine(NotOneLine::Empty));
    out.pop();
    std::borrow::Cow::Owned(out)
}

/// Where valid UTF-8 `text` holds U+0085 (`C2 85`), U+2028 (`E2 80 A8`) or
/// U+2029 (`E2 80 A9`): the byte index of the first.
fn unicode_line_break(text: &[u8]) -> Option<usize> {
    memchr::memchr2_iter(0xC2, 0xE2, text).find(|&at| match text[at] {
        0xC2 => text.get(at + 1) == Some(&0x85),
        _ => text.get(at + 1) == Some(&0x80) && matches!(text.get(at + 2), Some(0xA8 | 0xA9)),
    })
}

/// Append `payload` as one NDJSON line: as is when it is one JSON line,
/// framed otherwise. Returns whether it was framed.
pub fn push_ndjson_line(out: &mut Vec<u8>, payload: &[u8], shape: &Shape) -> bool {
    let framed = matches!(shape, Shape::NotOneLine(_));
    if framed {
        // Base64's alphabet needs no JSON escaping.
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(FRAMED_KEY.as_bytes());
        out.extend_from_slice(b"\":\"");
        out.extend_from_slice(protocol::b64_encode(payload).as_bytes());
        out.extend_from_slice(b"\"}");
    } else {
        out.extend_from_slice(payload);
    }
    out.push(b'\n');
    framed
}

/// A JSON value's top-level kind, read without building it.
/// A map key, read only as whether it is [`FRAMED_KEY`].
struct IsFramedKey;

impl<'de> serde::de::DeserializeSeed<'de> for IsFramedKey {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for IsFramedKey {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == FRAMED_KEY)
    }
}

enum Kind {
    /// `only_framed_keys`: at least one key, and every key is [`FRAMED_KEY`].
    Object {
        only_framed_keys: bool,
    },
    Other,
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut any_key = false;
        let mut all_framed = true;
        // Keys are unescaped by serde_json, so "payload\u005fb64" counts too.
        // Read as a comparison, never an allocation: this runs for every key
        // of every record delivered. Every key is looked at, not only the
        // first: `{"payload_b64":..,"payload_b64":..}` reads downstream as a
        // framed record (a parser keeping the last value sees one key).
        while let Some(is_framed) = map.next_key_seed(IsFramedKey)? {
            any_key = true;
            all_framed &= is_framed;
            map.next_value::<IgnoredAny>()?;
        }
        Ok(Kind::Object { only_framed_keys: any_key && all_framed })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Kind::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
}

/// Undo [`push_ndjson_line`] for one line (without its `\n`): what a
/// consumer following docs/sinks.md does, with a parser that keeps the last
/// of repeated keys (serde_json's `Value`, like most). None for a framed line
/// whose base64 does not decode. Used by the tests; kept here beside the rule
/// it inverts.
#[cfg(test)]
pub fn unframe(line: &[u8]) -> Option<Vec<u8>> {
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(line) {
        if m.len() == 1 {
            if let Some(serde_json::Value::String(b64)) = m.get(FRAMED_KEY) {
                return protocol::b64_decode(b64).ok();
            }
        }
    }
    Some(line.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_ndjson_line(&mut out, payload, &Shape::of(payload));
        out
    }

    /// Event mode: each body is one record, byte for byte after unframing.
    #[test]
    fn an_event_body_is_the_record_when_it_is_one_json_value_else_framed() {
        let as_is: [&[u8]; 4] = [b"{\"a\":\n1}", "[\"x\u{2028}y\"]".as_bytes(), b" 5 ", b"{\"payload_b64\":1,\"b\":2}"];
        for p in as_is {
            assert_eq!(&*event_body(p), p, "{:?}", String::from_utf8_lossy(p));
        }
        let framed: [&[u8]; 6] = [
            b"",
            b"a\nb",
            &[0xff, 0],
            b"{} {}",
            b"{\"payload_b64\":\"AAEC\"}",
            b"{\"payload_b64\":\"\",\"payload_b64\":\"\"}",
        ];
        for p in framed {
            let body = event_body(p);
            assert!(body.starts_with(b"{\"payload_b64\":\"") && !body.contains(&b'\n'), "{body:?}");
            assert_eq!(unframe(&body).as_deref(), Some(p));
        }
    }

    #[test]
    fn one_json_line_is_sent_as_is() {
        for p in [&b"{\"a\":1}"[..], b"[1,2]", b"\"text\"", b"5", b"  {\"a\":\"\\n\"}  ", "{\"é\":\"ü\"}".as_bytes()]
        {
            assert_eq!(line(p), [p, b"\n"].concat(), "{:?}", String::from_utf8_lossy(p));
        }
        assert_eq!(Shape::of(b"{\"a\":1}"), Shape::Object);
        assert_eq!(Shape::of(b"[{\"a\":1},{\"a\":2}]"), Shape::OtherJson);
    }

    #[test]
    fn every_hostile_record_becomes_exactly_one_line_that_unframes_to_its_bytes() {
        let hostile: Vec<Vec<u8>> = vec![
            b"a\nb".to_vec(),
            b"{\"a\":1}\r\n{\"a\":2}".to_vec(),
            b"{\"a\":1}\n{\"a\":2}\n".to_vec(),
            b"{\"a\":1} {\"a\":2}".to_vec(),
            vec![0xff, 0xfe, b'\n', 0x00],
            b"\n".to_vec(),
            b" ".to_vec(),
            b"\r".to_vec(),
            Vec::new(),
            b"plain text".to_vec(),
            "{\"a\":\"x\u{2028}y\"}".as_bytes().to_vec(),
            b"{\"payload_b64\":\"aGk=\"}".to_vec(),
            b"{\"payload\\u005fb64\":\"aGk=\"}".to_vec(),
            b"{\"payload_b64\":\"AAEC\",\"payload_b64\":\"AAEC\"}".to_vec(),
        ];
        for p in &hostile {
            let out = line(p);
            assert_eq!(out.iter().filter(|&&b| b == b'\n' || b == b'\r').count(), 1, "{p:?} -> {out:?}");
            assert_eq!(out.last(), Some(&b'\n'));
            let text = std::str::from_utf8(&out).expect("framed lines are ASCII");
            assert!(serde_json::from_str::<serde_json::Value>(text.trim_end()).is_ok());
            assert_eq!(&unframe(&out[..out.len() - 1]).unwrap(), p, "round trip of {p:?}");
        }
    }

    /// Issue 19, defect 14: an object repeating `payload_b64` was sent as
    /// is, and a consumer decoded it to bytes (00 01 02) the record does not
    /// hold.
    #[test]
    fn an_object_whose_keys_are_all_payload_b64_is_framed_however_many() {
        for p in [
            &b"{\"payload_b64\":\"AAEC\",\"payload_b64\":\"AAEC\"}"[..],
            b"{\"payload_b64\":\"AAEC\",\"payload_b64\":\"aGk=\",\"payload\\u005fb64\":1}",
            b" { \"payload_b64\" : null , \"payload_b64\" : \"AAEC\" } ",
        ] {
            assert_eq!(Shape::of(p), Shape::NotOneLine(NotOneLine::LooksFramed), "{}", String::from_utf8_lossy(p));
            let out = line(p);
            assert!(out.starts_with(b"{\"payload_b64\":\""), "{}", String::from_utf8_lossy(&out));
            assert_eq!(unframe(&out[..out.len() - 1]).as_deref(), Some(p), "round trip");
        }
        // Another key beside them, or no key at all: the record itself.
        for p in [&b"{\"payload_b64\":\"AAEC\",\"a\":1}"[..], b"{\"a\":1,\"payload_b64\":\"AAEC\"}", b"{}"] {
            assert_eq!(Shape::of(p), Shape::Object, "{}", String::from_utf8_lossy(p));
            assert_eq!(line(p), [p, b"\n"].concat());
        }
        // Still an ordinary row at ClickHouse, which never frames.
        assert!(Shape::of(b"{\"payload_b64\":\"AAEC\",\"payload_b64\":\"AAEC\"}").as_row().is_ok());
    }

    #[test]
    fn clickhouse_rows_are_json_objects_only() {
        assert!(Shape::of(b"{\"id\":\"x\"}").as_row().is_ok());
        assert_eq!(Shape::of(b"[{\"id\":\"x\"},{\"id\":\"y\"}]").as_row(), Err(NotARow::NotAnObject));
        assert!(matches!(
            Shape::of(b"{\"id\":\"x\"}\n{\"id\":\"y\"}").as_row(),
            Err(NotARow::NotOneLine(NotOneLine::LineBreak { at: 10 }))
        ));
        // A tenant's own object with the key payload_b64 is an ordinary row there.
        assert!(Shape::of(b"{\"payload_b64\":\"x\"}").as_row().is_ok());
        assert!(Shape::of(b"{\"payload_b64\":\"x\"} ").as_row().is_ok());
    }

    /// The byte scan finds exactly what a scan of the decoded characters
    /// finds, in every string of these pieces up to three long (near
    /// misses: other characters sharing a lead or continuation byte).
    #[test]
    fn the_byte_scan_for_unicode_breaks_agrees_with_the_characters() {
        let pieces = [
            "a", "\u{85}", "\u{2028}", "\u{2029}", "\u{2027}", "\u{202a}", "\u{84}", "\u{a9}", "\u{2080}", "é",
            "\u{e000}",
        ];
        let mut checked = 0;
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let text = format!("{a}{b}{c}");
                    let by_chars = text
                        .char_indices()
                        .find(|(_, ch)| matches!(ch, '\u{85}' | '\u{2028}' | '\u{2029}'))
                        .map(|(at, _)| at);
                    assert_eq!(unicode_line_break(text.as_bytes()), by_chars, "{text:?}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, pieces.len().pow(3));
    }
}
