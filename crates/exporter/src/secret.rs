//! Secret values and redaction: what must never reach a log line, a metric
//! label, an error sent to the broker, or `--check-config` output.
//!
//! A [`Secret`] prints as `<redacted>` whichever way it is formatted
//! (`Debug` and `Display`), so a struct holding one may derive `Debug`
//! without leaking it; the value is read only through [`Secret::expose`],
//! which names every place that needs it. A URL's credentials
//! (`user:password@`) are cut by [`redact_url`] before the URL is shown.

use std::fmt;

/// What every secret and URL credential shows as.
pub const REDACTED: &str = "<redacted>";

/// A value that is never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself: only for where it is used (a header sent, a key
    /// decoded), never for where it is shown.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The exporter token in force. A SIGHUP that re-reads `--token-file` (or
/// the config's `token`) swaps it (`crate::reload`); each broker request
/// reads it once, so a request carries one token, old or new, whole.
#[derive(Debug, Default)]
pub struct LiveToken(std::sync::RwLock<Secret>);

impl LiveToken {
    pub fn new(token: Secret) -> std::sync::Arc<LiveToken> {
        std::sync::Arc::new(LiveToken(std::sync::RwLock::new(token)))
    }

    /// The token now (a poisoned lock still holds a whole token: a writer
    /// only ever replaces it).
    pub fn get(&self) -> Secret {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Put `token` in force; whether it differs from the one before.
    pub fn set(&self, token: Secret) -> bool {
        let mut held = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = *held != token;
        *held = token;
        changed
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// `url` with its user and password (if any) replaced by `<redacted>`;
/// a text that does not parse as a URL is redacted whole when it holds an
/// `@` (it may be a URL with credentials that merely failed to parse).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) if u.username().is_empty() && u.password().is_none() => url.to_string(),
        Ok(u) => {
            // The crate's setters would percent-encode `<` and `>`: the
            // authority is rebuilt by hand instead.
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let query = u.query().map(|q| format!("?{q}")).unwrap_or_default();
            let rest = format!("{}{query}", u.path());
            format!("{}://{REDACTED}@{host}{port}{rest}", u.scheme())
        }
        Err(_) if url.contains('@') => REDACTED.to_string(),
        Err(_) => url.to_string(),
    }
}

/// A `--sink` spec with its URL's credentials redacted (`clickhouse+`
/// prefixes kept; `file:` paths hold none).
pub fn redact_sink(spec: &str) -> String {
    for scheme in ["clickhouse+", "otlp+"] {
        if let Some(rest) = spec.strip_prefix(scheme) {
            return format!("{scheme}{}", redact_url(rest));
        }
    }
    match spec.starts_with("file:") {
        true => spec.to_string(),
        false => redact_url(spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_and_url_credentials_are_cut() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(redact_url("https://user:pw@h.example:8443/p?q=1"), "https://<redacted>@h.example:8443/p?q=1");
        assert_eq!(redact_url("http://user@h/"), "http://<redacted>@h/");
        assert_eq!(redact_url("http://h:1/x"), "http://h:1/x");
        assert_eq!(redact_url("not a url with user:pw@"), "<redacted>");
        assert_eq!(
            redact_sink("clickhouse+http://u:p@h:8123/?table=t"),
            "clickhouse+http://<redacted>@h:8123/?table=t"
        );
        assert_eq!(redact_sink("file:/tmp/a@b"), "file:/tmp/a@b");
    }
}
