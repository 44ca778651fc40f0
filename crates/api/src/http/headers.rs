//! The ingest request's headers, parsed into the accept path's types:
//! `Content-Type` → `Format`, `Content-Encoding` → `Encoding`,
//! `Idempotency-Key` → visible ASCII or a refusal.

use crate::error::AcceptError;
use crate::intake::ingest::{Encoding, Format};
use axum::http::HeaderMap;

/// The media type, matched without its parameters and case-insensitively.
pub(crate) fn format_of(content_type: Option<&str>) -> Result<Format, AcceptError> {
    let ct = content_type.unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    match media {
        m if m.eq_ignore_ascii_case("application/x-ndjson") => Ok(Format::Ndjson),
        m if m.eq_ignore_ascii_case("application/octet-stream") => Ok(Format::Binary),
        m if m.eq_ignore_ascii_case("application/json") => Ok(Format::Json),
        _ => Err(AcceptError::UnsupportedContentType { content_type: ct.to_string() }),
    }
}

/// `identity` (or none) and `gzip` (`x-gzip`) are accepted.
pub(crate) fn encoding_of(encoding: Option<&str>) -> Result<Encoding, AcceptError> {
    match encoding.map(str::trim).unwrap_or("") {
        "" => Ok(Encoding::Identity),
        e if e.eq_ignore_ascii_case("identity") => Ok(Encoding::Identity),
        e if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => Ok(Encoding::Gzip),
        other => Err(AcceptError::UnsupportedEncoding { encoding: other.to_string() }),
    }
}

/// A header's value, if it is visible ASCII.
pub fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The `Idempotency-Key`, refused (never ignored) when it is not visible
/// ASCII: a key silently dropped would let a retry append twice.
pub(crate) fn idempotency_key(h: &HeaderMap) -> Result<Option<&str>, AcceptError> {
    match h.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| AcceptError::IdempotencyKeyNotAscii),
    }
}

/// The ingest body as the accept path reads it, from the header values:
/// media type, Content-Encoding, then `intake::ingest::parse_body`. For the
/// fuzz target and its corpus replay (`fuzz/`, `tests/fuzz_corpus.rs`); not
/// an API.
#[doc(hidden)]
pub fn fuzz_ingest_body(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    max_inflated_bytes: u64,
    max_record_bytes: u64,
) -> Result<Vec<Vec<u8>>, AcceptError> {
    let format = format_of(content_type)?;
    let encoding = encoding_of(content_encoding)?;
    crate::intake::ingest::parse_body(format, encoding, body, max_inflated_bytes, max_record_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_matched_on_the_media_type() {
        assert!(format_of(Some("application/x-ndjson; charset=utf-8")).is_ok());
        assert!(format_of(Some("Application/Octet-Stream")).is_ok());
        assert!(matches!(format_of(Some("text/plain")), Err(AcceptError::UnsupportedContentType { .. })));
        assert!(matches!(format_of(None), Err(AcceptError::UnsupportedContentType { .. })));
    }
}
