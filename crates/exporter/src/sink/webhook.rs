//! What a webhook request holds and carries (docs/sinks.md, "Webhooks").
//!
//! ## Bodies
//! - `batch`: NDJSON, one line per record, records that are not one JSON
//!   line framed (`super::framing`); `Content-Type: application/x-ndjson`.
//! - `event`: one record, the record itself when it is one JSON value in
//!   UTF-8, else `{"payload_b64":…}` ([`framing::event_body`]);
//!   `Content-Type: application/json`.
//!
//! With `--gzip` the body is compressed and sent with
//! `Content-Encoding: gzip`; the signature covers the compressed bytes,
//! which are the bytes sent.
//!
//! ## Headers
//! `Idempotency-Key` and `webhook-id`, one value: the downstream id of the
//! batch or the record (`protocol::downstream_id`); `webhook-timestamp`, unix
//! seconds at this attempt; `webhook-signature` when a secret or key is set
//! ([`crate::sign`]); then the operator's extra headers.
//!
//! ## Reload
//! The signer and the extra headers ([`Dressing`]) are behind a [`Live`]
//! cell that SIGHUP replaces whole ([`crate::reload`]): a request reads the
//! cell once, so it is signed and dressed by one generation, never half of
//! each.

use super::framing::{self, push_ndjson_line, Shape};
use super::{Record, SinkError};
use crate::config::{ConfigError, WebhookMode, WebhookOptions};
use crate::sign::Signer;
use reqwest::header::{HeaderName, HeaderValue};
use std::sync::{Arc, RwLock};

/// The reloadable part of a webhook request: its signer and extra headers.
#[derive(Debug, Default)]
pub struct Dressing {
    signer: Signer,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Dressing {
    pub fn new(opts: &WebhookOptions) -> Result<Dressing, ConfigError> {
        let headers = opts.headers.iter().map(|h| h.to_pair()).collect::<Result<_, _>>()?;
        Ok(Dressing { signer: opts.signer()?, headers })
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }
}

/// A [`Dressing`] that a reload replaces whole.
#[derive(Debug, Default)]
pub struct Live(RwLock<Arc<Dressing>>);

impl Live {
    pub fn new(d: Dressing) -> Arc<Live> {
        Arc::new(Live(RwLock::new(Arc::new(d))))
    }

    /// The current generation.
    pub fn get(&self) -> Arc<Dressing> {
        // A panic while swapping an Arc leaves a valid Arc behind.
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set(&self, d: Dressing) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(d);
    }
}

/// A webhook sink's settings.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub gzip: bool,
    pub mode: WebhookMode,
    pub dressing: Arc<Live>,
}

impl Webhook {
    /// A webhook with no signature and no extra header (the tests' sink).
    #[cfg(test)]
    pub fn plain(gzip: bool, mode: WebhookMode) -> Webhook {
        Webhook { gzip, mode, dressing: Arc::new(Live::default()) }
    }

    /// The bytes sent for `records`: one record in event mode.
    pub fn body(&self, records: &[Record]) -> Result<Vec<u8>, SinkError> {
        let raw = match (self.mode, records) {
            (WebhookMode::Event, [one]) => framing::event_body(&one.payload).into_owned(),
            (WebhookMode::Event, _) => {
                // The deliverer sends one record a request in event mode; a
                // caller that does not is a bug, and must not lose records.
                return Err(SinkError::Retryable {
                    message: format!("internal: an event request of {} records", records.len()),
                    retry_after: None,
                    timed_out: false,
                    overload: false,
                });
            }
            (WebhookMode::Batch, _) => {
                let mut buf = Vec::with_capacity(records.iter().map(|r| r.payload.len() + 1).sum());
                for r in records {
                    push_ndjson_line(&mut buf, &r.payload, &Shape::of(&r.payload));
                }
                buf
            }
        };
        if !self.gzip {
            return Ok(raw);
        }
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&raw).map_err(|e| SinkError::poison(format!("gzip: {e}")))?;
        enc.finish().map_err(|e| SinkError::poison(format!("gzip: {e}")))
    }

    /// `req` with every header of a webhook request; `body` is what is sent.
    pub fn dress(&self, mut req: reqwest::RequestBuilder, id: &str, body: &[u8]) -> reqwest::RequestBuilder {
        let content_type = match self.mode {
            WebhookMode::Batch => "application/x-ndjson",
            WebhookMode::Event => "application/json",
        };
        // Taken at each attempt: a retry carries a fresh timestamp.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        req = req
            .header("content-type", content_type)
            .header("idempotency-key", id)
            .header("webhook-id", id)
            .header("webhook-timestamp", now);
        if self.gzip {
            req = req.header("content-encoding", "gzip");
        }
        let dressing = self.dressing.get();
        if dressing.signer.signs() {
            req = req.header("webhook-signature", dressing.signer.signature(id, now, body));
        }
        for (name, value) in &dressing.headers {
            req = req.header(name.clone(), value.clone());
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn a_reload_replaces_the_signer_and_headers_whole() {
        let secret = |b: u8| Secret::new(format!("whsec_{}", protocol::b64_encode(&[b; 32])));
        let opts = |secrets: Vec<Secret>| WebhookOptions { secrets, ..WebhookOptions::default() };
        let live = Live::new(Dressing::new(&opts(vec![secret(1), secret(2)])).unwrap());
        let two = live.get().signer().signature("id", 1, b"x");
        assert_eq!(two.split(' ').count(), 2);
        live.set(Dressing::new(&opts(vec![secret(2)])).unwrap());
        let one = live.get().signer().signature("id", 1, b"x");
        assert_eq!(one, two.split(' ').nth(1).unwrap(), "the new secret's signature alone");
    }
}
