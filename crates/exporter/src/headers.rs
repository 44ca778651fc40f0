//! Extra webhook headers (`--header 'Name: value'`, `--header-file`):
//! what carries a receiver's credential (`Authorization: Bearer …`) or
//! routing header. Values are secrets: they are marked sensitive for the
//! HTTP stack and never shown (`--check-config` prints the names only).
//!
//! Names Weir sets itself are refused, because a header given twice is
//! read differently by different receivers: `webhook-*` (the signature
//! would no longer be ours), `idempotency-key`, `content-type`,
//! `content-length`, `host`, `transfer-encoding`, `user-agent`.

use crate::secret::Secret;
use reqwest::header::{HeaderName, HeaderValue};

/// Names refused exactly (case-insensitive); any `webhook-` name is too.
const RESERVED: [&str; 6] =
    ["idempotency-key", "content-type", "content-length", "host", "transfer-encoding", "user-agent"];

/// Why a header cannot be sent. Its value is never in the message.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("header {0:?} is not of the form 'Name: value'")]
    Form(String),
    #[error("header name {0:?} is not a valid HTTP header name")]
    Name(String),
    #[error("header {0}: its value holds a character HTTP does not allow in a header")]
    Value(String),
    #[error("header {0} is set by Weir itself and may not be given (refused: webhook-*, idempotency-key, content-type, content-length, host, transfer-encoding, user-agent)")]
    Reserved(String),
}

/// One extra header, its value kept secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Secret,
}

impl Header {
    /// `Name: value`, checked: a name Weir does not set, a valid value.
    pub fn parse(line: &str) -> Result<Header, HeaderError> {
        let Some((name, value)) = line.split_once(':') else {
            // The line may be a bare secret pasted by mistake: never echo it.
            return Err(HeaderError::Form(line.split_whitespace().next().unwrap_or("").chars().take(40).collect()));
        };
        let name = name.trim();
        let lower = name.to_ascii_lowercase();
        let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| HeaderError::Name(name.to_string()))?;
        if lower.starts_with("webhook-") || RESERVED.contains(&lower.as_str()) {
            return Err(HeaderError::Reserved(name.to_string()));
        }
        HeaderValue::from_str(value.trim()).map_err(|_| HeaderError::Value(name.to_string()))?;
        Ok(Header { name: parsed.as_str().to_string(), value: Secret::new(value.trim()) })
    }

    /// The header as the HTTP client sends it, marked sensitive (never in
    /// the client's debug output, and not indexed by HTTP/2 compression).
    pub fn to_pair(&self) -> Result<(HeaderName, HeaderValue), HeaderError> {
        let name = HeaderName::from_bytes(self.name.as_bytes()).map_err(|_| HeaderError::Name(self.name.clone()))?;
        let mut value =
            HeaderValue::from_str(self.value.expose()).map_err(|_| HeaderError::Value(self.name.clone()))?;
        value.set_sensitive(true);
        Ok((name, value))
    }
}

/// The lines of a header file: one `Name: value` a line; blank lines and
/// lines starting with `#` are skipped.
pub fn parse_lines(text: &str) -> Result<Vec<Header>, HeaderError> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(Header::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_weir_sets_are_refused_and_others_kept_secret() {
        let h = Header::parse("Authorization: Bearer abc").unwrap();
        assert_eq!((h.name.as_str(), h.value.expose()), ("authorization", "Bearer abc"));
        assert!(!format!("{h:?}").contains("abc"));
        for name in [
            "Webhook-Signature",
            "webhook-id",
            "Idempotency-Key",
            "Content-Type",
            "content-length",
            "Host",
            "Transfer-Encoding",
            "User-Agent",
        ] {
            let e = Header::parse(&format!("{name}: x")).unwrap_err();
            assert!(matches!(e, HeaderError::Reserved(_)), "{name}: {e}");
        }
        assert!(matches!(Header::parse("no colon secret"), Err(HeaderError::Form(f)) if f == "no"));
        assert!(matches!(Header::parse("bad name: x"), Err(HeaderError::Name(_))));
        assert!(matches!(Header::parse("X-A: a\u{1}b"), Err(HeaderError::Value(_))));
        let file = parse_lines("# comment\n\nX-A: 1\nX-B:2\n").unwrap();
        assert_eq!(file.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["x-a", "x-b"]);
        assert!(file[0].to_pair().unwrap().1.is_sensitive());
    }
}
