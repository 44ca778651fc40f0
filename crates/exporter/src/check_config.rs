//! `exporter --check-config [FILE]`: the effective settings — the flags,
//! then `--config` (or FILE), then the defaults — printed as the TOML of a
//! config file, every secret `<redacted>`, and whether the exporter would
//! start with them (exit 0, or 2 with the reason on stderr). For an
//! operator, a deploy step or `ExecStartPre=`.
//!
//! Shown redacted: the token, every signing secret and the signing key
//! (the key's public half is shown: it is what receivers hold), every
//! extra header's value (its name is shown), and the user and password of
//! the broker and sink URLs. Paths of secret files are shown; their
//! contents are not. The secret files are read, and the TLS files loaded,
//! as at start, so a file that would stop the exporter fails here.

use crate::config::{Args, ConfigError, Options};
use crate::secret::{redact_sink, redact_url, REDACTED};
use crate::sink::webhook::Dressing;
use toml::{Table, Value};

/// Why the settings would not start an exporter.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Sink(#[from] crate::sink::OpenError),
}

/// The effective settings of `args`, as TOML, secrets redacted.
pub(crate) fn effective(mut args: Args) -> Result<String, CheckError> {
    if let Some(Some(file)) = args.check_config.take() {
        args.config = Some(file);
    }
    let opts = Options::from_settings(args.merged()?)?;
    let dressing = Dressing::new(&opts.webhook)?;
    if opts.sink.starts_with("http") || opts.sink.starts_with("clickhouse+") || opts.sink.starts_with("otlp+") {
        crate::sink::client::build(opts.sink_timeout, &opts.sink_tls)?;
    }
    let mut text = format!("# exporter: valid. Effective settings (defaults filled in, secrets {REDACTED}):\n");
    if let Some(public) = dressing.signer().public_key() {
        text.push_str(&format!("# sign_key's public key, for receivers: {public}\n"));
    }
    text.push_str(&table(&opts).to_string());
    Ok(text)
}

fn ms(d: std::time::Duration) -> Value {
    Value::Integer(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn int(n: impl Into<i64>) -> Value {
    Value::Integer(n.into())
}

fn path(p: &Option<std::path::PathBuf>) -> Option<Value> {
    p.as_ref().map(|p| Value::String(p.display().to_string()))
}

/// Every key of the config file, at its effective value.
fn table(o: &Options) -> Table {
    let mut t = Table::new();
    let mut put = |k: &str, v: Value| {
        t.insert(k.to_string(), v);
    };
    put("broker", Value::String(redact_url(&o.broker)));
    put("destination", Value::String(o.destination.clone()));
    put("token", Value::String(REDACTED.into()));
    put("sink", Value::String(redact_sink(&o.sink)));
    put("sink_timeout_ms", ms(o.sink_timeout));
    put("max_retries", int(o.max_retries));
    put("backoff_base_ms", int(i64::try_from(o.backoff.base_ms).unwrap_or(i64::MAX)));
    put("backoff_max_ms", int(i64::try_from(o.backoff.max_ms).unwrap_or(i64::MAX)));
    put("batch_records", int(o.batch_records));
    put("batch_bytes", int(i64::try_from(o.batch_bytes).unwrap_or(i64::MAX)));
    put("max_in_flight", int(o.max_in_flight));
    put("concurrency", Value::String(o.concurrency.to_string()));
    put("lease_timeout_ms", ms(o.lease_timeout));
    put("wait_ms", int(i64::try_from(o.wait_ms).unwrap_or(i64::MAX)));
    put("gzip", Value::Boolean(o.gzip));
    if let Some(m) = &o.metrics_listen {
        put("metrics_listen", Value::String(m.clone()));
    }
    put("max_retry_after_ms", ms(o.max_retry_after));
    put("webhook_mode", Value::String(o.webhook.mode.as_str().into()));
    put("event_order", Value::String(o.webhook.event_order.as_str().into()));
    // Every secret, from the flags and the secret file alike.
    put("sign_secret", Value::Array(o.webhook.secrets.iter().map(|_| Value::String(REDACTED.into())).collect()));
    if o.webhook.sign_key.is_some() {
        put("sign_key", Value::String(REDACTED.into()));
    }
    let headers = o.webhook.headers.iter().map(|h| Value::String(format!("{}: {REDACTED}", h.name))).collect();
    put("header", Value::Array(headers));
    let files = [
        ("token_file", &o.token_file),
        ("sign_secret_file", &o.webhook.sign_secret_file),
        ("header_file", &o.webhook.header_file),
        ("sink_ca_file", &o.sink_tls.ca_file),
        ("sink_client_cert", &o.sink_tls.client_cert),
        ("sink_client_key", &o.sink_tls.client_key),
    ];
    for (k, p) in files {
        if let Some(v) = path(p) {
            put(k, v);
        }
    }
    t
}

/// Run `--check-config`: print, and the exit code.
pub fn run(args: Args) -> i32 {
    match effective(args) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("exporter: configuration refused: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn secrets_headers_and_url_credentials_are_redacted_and_a_bad_header_is_refused() {
        let secret = format!("whsec_{}", protocol::b64_encode(&[9; 32]));
        let key = format!("whsk_{}", protocol::b64_encode(&[3; 32]));
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "tok-3cr3t\n").unwrap();
        let args = Args::parse_from([
            "exporter",
            "--check-config",
            "--broker",
            "http://bu:bp4ss@h:1",
            "--destination",
            "d",
            "--token-file",
            token_file.to_str().unwrap(),
            "--sink",
            "https://user:p4ssw0rd@h:2/hook",
            "--sign-secret",
            &secret,
            "--sign-key",
            &key,
            "--header",
            "Authorization: Bearer h3ad3r",
            "--webhook-mode",
            "event",
        ]);
        let text = effective(args).unwrap();
        for leak in ["bp4ss", "p4ssw0rd", "tok-3cr3t", "h3ad3r", &secret[6..], &key[5..], "user"] {
            assert!(!text.contains(leak), "{leak} shown:\n{text}");
        }
        assert!(text.contains("sink = \"https://<redacted>@h:2/hook\""), "{text}");
        assert!(text.contains("header = [\"authorization: <redacted>\"]"), "{text}");
        assert!(text.contains("webhook_mode = \"event\""), "{text}");
        assert!(text.contains("whpk_"), "{text}");
        let bad = Args::parse_from([
            "exporter",
            "--check-config",
            "--broker",
            "http://h:1",
            "--destination",
            "d",
            "--token",
            "t",
            "--sink",
            "http://h:2/",
            "--header",
            "Webhook-Id: x",
        ]);
        assert!(matches!(effective(bad), Err(CheckError::Config(ConfigError::Header(_)))));
    }
}
