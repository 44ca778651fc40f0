//! HTTP sinks: a webhook (NDJSON POST with `Idempotency-Key`) and
//! ClickHouse's HTTP interface (`INSERT INTO T FORMAT JSONEachRow`).
//!
//! ## Whose fault an answer is (docs/sinks.md)
//!
//! The status decides, because the records' fate does: a failure of the
//! sink must never dead-letter records, and a refusal of a record must never
//! stop the destination for the others.
//! - 2xx: delivered (see "Reading answers" for when it counts).
//! - About the **endpoint** — 3xx, 401, 403, 404, 405, 407, and every
//!   other status not listed here — [`SinkError::Endpoint`]: the sink is
//!   misconfigured or gone and would refuse any request. No bisection, the
//!   lease goes back as a retryable failure, the breaker counts it, the
//!   records stay. An unlisted 4xx lands here because keeping records is
//!   the failure that loses nothing.
//! - 410 Gone: the receiver asks to stop — [`SinkError::Gone`]: nothing is
//!   dead-lettered, the lease is released (not counted by the breaker).
//! - Busy or down — 408, 429, 5xx, timeouts, connection errors —
//!   [`SinkError::Retryable`] (`Retry-After` honoured, as seconds or as an
//!   HTTP date; a date in the past is 0).
//! - About the **content** — 400, 413, 415, 422, and ClickHouse's data error
//!   codes, which it answers with a 500 too — [`SinkError::Poison`] with the
//!   [`Refusal`]: bisected down to single records, which go to dead letters,
//!   unless every single record of several tenants gets the same refusal
//!   ([`crate::streak`]).
//!
//! Redirects are never followed: a client that follows a 302 turns the POST
//! into a bodiless GET, whose 200 would count as a delivery of nothing. A
//! 3xx is an endpoint fault, and its message (in the exporter's log and the
//! broker's breaker log) names the `Location` so the operator can fix the URL.
//!
//! ## Reading answers
//!
//! A sink's answer body is never read whole: at most [`ANSWER_CAP`] bytes,
//! chunk by chunk, enough for an error message and a ClickHouse code. The
//! rest is never read: the response is dropped, which closes the connection
//! instead of draining it (a 2 GiB answer costs 4 KiB and one connection).
//! A 2xx counts as a delivery once its head arrived and either its body
//! ended or the first [`ANSWER_CAP`] bytes of it were read; a body cut short
//! before that (the sink died while answering) is a retryable failure, not a
//! delivery. Time is bounded by the client's timeout (`--sink-timeout-ms`),
//! which covers the whole exchange, body included: an answer trickling in
//! slower than that is a timeout (retryable), never a wait without end.
//!
//! ## Framing (docs/sinks.md)
//!
//! The webhook's bodies, headers and signatures are [`super::webhook`]'s;
//! ClickHouse's rows, tables and deduplication tokens are
//! [`super::clickhouse`]'s. ClickHouse takes only records that are one JSON
//! object and refuses the others to dead letters, because a framed object
//! inserted into an arbitrary table is either rejected or, where unknown
//! fields are skipped (`input_format_skip_unknown_fields`), becomes a row of
//! defaults that holds none of the record.

use super::clickhouse::ClickHouse;
use super::webhook::Webhook;
use super::{Delivery, OpenError, Record, Refusal, Sink, SinkError};
use crate::config::{SinkTls, WebhookMode};
use crate::secret::redact_url;
use crate::streak::RefusalStreak;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub enum HttpStyle {
    Webhook(Webhook),
    ClickHouse(std::sync::Arc<ClickHouse>),
    /// `otlp+http(s)://HOST:PORT` ([`super::otlp`]): the base URL.
    Otlp,
}

pub struct HttpSink {
    url: String,
    style: HttpStyle,
    client: reqwest::Client,
    streak: RefusalStreak,
}

/// The most of a sink's answer body ever read.
pub const ANSWER_CAP: usize = 4096;

/// ClickHouse error codes that mean "these rows are bad", not "try later".
const CLICKHOUSE_POISON: [u32; 12] = [6, 16, 26, 27, 38, 41, 53, 69, 70, 72, 117, 130];

fn clickhouse_code(body: &str) -> Option<u32> {
    let rest = &body[body.find("Code: ")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// What a status says, before the body is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusClass {
    Delivered,
    /// The endpoint refuses whatever it is sent.
    Endpoint,
    Retryable {
        overload: bool,
    },
    /// The content is refused.
    Content,
    /// 410: the receiver asks to stop sending.
    Gone,
}

fn status_class(code: u16) -> StatusClass {
    match code {
        200..=299 => StatusClass::Delivered,
        408 => StatusClass::Retryable { overload: false },
        // 429 and 503 say "at capacity", which lowers the concurrency.
        429 | 503 => StatusClass::Retryable { overload: true },
        500..=599 => StatusClass::Retryable { overload: false },
        400 | 413 | 415 | 422 => StatusClass::Content,
        410 => StatusClass::Gone,
        // 3xx, 401, 403, 404, 405, 407, any other status.
        _ => StatusClass::Endpoint,
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP date (all
/// three forms `httpdate` reads: IMF-fixdate, RFC 850, asctime); a date in
/// the past is 0. `now` is a parameter so the date form is tested.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    parse_retry_after(h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?, SystemTime::now())
}

/// The first `cap` bytes of an answer's body, and the error that cut it
/// short before the cap or its end (None: it ended, or the cap was reached).
/// The rest is left unread: dropping the response closes the connection.
async fn read_head(resp: &mut reqwest::Response, cap: usize) -> (Vec<u8>, Option<reqwest::Error>) {
    let mut head = Vec::new();
    while head.len() < cap {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(cap - head.len());
                head.extend_from_slice(&chunk[..take]);
            }
            Ok(None) => break,
            Err(e) => return (head, Some(e)),
        }
    }
    (head, None)
}

/// A request that got no answer: the sink is down, slow or unreachable.
/// The message never holds the URL (it may hold credentials).
fn send_failed(e: reqwest::Error) -> SinkError {
    let e = e.without_url();
    SinkError::Retryable {
        message: format!("{}: {e}", if e.is_timeout() { "timed out" } else { "request failed" }),
        retry_after: None,
        timed_out: e.is_timeout(),
        // A timeout or a refused/reset connection: the sink is at capacity.
        overload: e.is_timeout() || e.is_connect(),
    }
}

/// A header's value for a message: lossy, bounded.
fn header_text(h: &reqwest::header::HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    h.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).chars().take(300).collect())
}

impl HttpSink {
    pub fn new(url: &str, style: HttpStyle, timeout: Duration, tls: &SinkTls) -> Result<HttpSink, OpenError> {
        let client = super::client::build(timeout, tls)?;
        reqwest::Url::parse(url).map_err(|e| OpenError::Spec(format!("sink URL {:?}: {e}", redact_url(url))))?;
        Ok(HttpSink { url: url.to_string(), style, client, streak: RefusalStreak::new() })
    }

    /// `http://HOST:PORT/?table=T[&database=D]` or `?format=otel` (after the
    /// `clickhouse+` prefix): see [`super::clickhouse`].
    pub fn clickhouse(spec: &str, timeout: Duration, tls: &SinkTls) -> Result<HttpSink, OpenError> {
        let ch = ClickHouse::parse(spec)?;
        let url = ch.insert_url("_", None);
        HttpSink::new(&url, HttpStyle::ClickHouse(std::sync::Arc::new(ch)), timeout, tls)
    }

    async fn post(&self, records: &[Record], key: &str) -> Result<(), SinkError> {
        match &self.style {
            HttpStyle::Webhook(hook) => {
                let body = hook.body(records)?;
                let req = hook.dress(self.client.post(&self.url), key, &body);
                self.send(req.body(body), false).await.map(drop)
            }
            HttpStyle::Otlp => {
                for export in super::otlp::exports(records)? {
                    let url = format!("{}{}", self.url.trim_end_matches('/'), export.path);
                    let req = self.client.post(url).header("content-type", "application/x-protobuf");
                    let answer = self.send(req.body(export.body), false).await?;
                    if let Some(rejected) = super::otlp::rejected(export.path, &answer) {
                        return Err(rejected);
                    }
                }
                Ok(())
            }
            HttpStyle::ClickHouse(ch) => {
                let tokens = ch.probe(&self.client).await?;
                // Table by table; a failure sends the lease back whole, and
                // the inserts already made repeat their tokens: dropped.
                for insert in ch.inserts(records)? {
                    let token = (tokens && !key.is_empty()).then(|| ch.token(key, &insert.table));
                    let url = ch.insert_url(&insert.table, token.as_deref());
                    let req = self.client.post(url).header("content-type", "application/x-ndjson");
                    self.send(req.body(insert.body), true).await?;
                }
                Ok(())
            }
        }
    }

    /// Send one request and class its answer (see the module doc);
    /// `clickhouse`: its data error codes are the content's fault. A
    /// delivery answers the first [`ANSWER_CAP`] bytes of its body.
    async fn send(&self, req: reqwest::RequestBuilder, clickhouse: bool) -> Result<Vec<u8>, SinkError> {
        let mut resp = req.send().await.map_err(send_failed)?;
        let status = resp.status();
        let ra = retry_after(resp.headers());
        let location = header_text(resp.headers(), reqwest::header::LOCATION);
        let (head, cut) = read_head(&mut resp, ANSWER_CAP).await;
        let cut = cut.map(reqwest::Error::without_url);
        drop(resp);
        let class = status_class(status.as_u16());
        if class == StatusClass::Delivered {
            return match cut {
                None => Ok(head),
                Some(e) => Err(SinkError::Retryable {
                    message: format!("HTTP {status}, but the answer was cut short: {e}"),
                    retry_after: None,
                    timed_out: e.is_timeout(),
                    overload: e.is_timeout(),
                }),
            };
        }
        let text = String::from_utf8_lossy(&head);
        let snippet: String = text.chars().take(300).collect();
        let message = format!("HTTP {status}: {}", snippet.trim());
        if clickhouse {
            if let Some(code) = clickhouse_code(&text).filter(|c| CLICKHOUSE_POISON.contains(c)) {
                return Err(SinkError::Poison { message, refusal: Some(Refusal::ClickHouse(code)) });
            }
        }
        Err(match class {
            StatusClass::Delivered | StatusClass::Content => {
                SinkError::Poison { message, refusal: Some(Refusal::Status(status.as_u16())) }
            }
            StatusClass::Retryable { overload } => {
                SinkError::Retryable { message, retry_after: ra, timed_out: false, overload }
            }
            StatusClass::Endpoint => {
                SinkError::Endpoint { message: endpoint_message(status, location, &snippet), retry_after: ra }
            }
            StatusClass::Gone => SinkError::Gone { message },
        })
    }
}

/// Why an endpoint fault keeps the records, and what to fix.
fn endpoint_message(status: reqwest::StatusCode, location: Option<String>, snippet: &str) -> String {
    let what = if status.is_redirection() {
        format!(
            "redirect to {} not followed; a redirect is not a delivery (point the sink at the final URL)",
            location.map_or_else(|| "(no Location)".to_string(), |l| format!("Location: {l}"))
        )
    } else {
        snippet.trim().to_string()
    };
    format!("HTTP {status}: {what} [the endpoint refuses whatever it is sent: a fault of the sink, records kept]")
}

impl Sink for HttpSink {
    fn deliver<'a>(&'a self, records: &'a [Record], key: &'a str) -> Delivery<'a> {
        Box::pin(self.post(records, key))
    }

    fn streak(&self) -> Option<&RefusalStreak> {
        Some(&self.streak)
    }

    fn otlp_only(&self) -> bool {
        matches!(self.style, HttpStyle::Otlp)
    }

    /// ClickHouse `format=otel`: one part per table (see [`Sink::parts`]).
    fn parts(&self, records: &[Record]) -> Option<Vec<Vec<Record>>> {
        match &self.style {
            HttpStyle::ClickHouse(ch) => ch.parts(records),
            HttpStyle::Otlp | HttpStyle::Webhook(_) => None,
        }
    }

    fn refuse(&self, record: &Record) -> Option<String> {
        match &self.style {
            HttpStyle::ClickHouse(ch) => ch.refuse(record),
            HttpStyle::Otlp => super::otlp::refuse(record),
            HttpStyle::Webhook(_) => None,
        }
    }

    /// Webhooks send it as `webhook-id`, ClickHouse as
    /// `insert_deduplication_token`; OTLP has no place for it.
    fn sends_id(&self) -> bool {
        !matches!(self.style, HttpStyle::Otlp)
    }

    fn prepare(&self) -> Delivery<'_> {
        Box::pin(async move {
            match &self.style {
                HttpStyle::ClickHouse(ch) => ch.probe(&self.client).await.map(|_| ()),
                HttpStyle::Webhook(_) | HttpStyle::Otlp => Ok(()),
            }
        })
    }

    fn one_per_request(&self) -> bool {
        matches!(&self.style, HttpStyle::Webhook(h) if h.mode == WebhookMode::Event)
    }

    /// The URL's credentials are never shown (logs, the broker's breaker).
    fn describe(&self) -> String {
        match &self.style {
            HttpStyle::ClickHouse(ch) => match &ch.target {
                super::clickhouse::Target::Otel => format!("clickhouse {} (otel tables)", redact_url(&self.url)),
                super::clickhouse::Target::Table(t) => format!("clickhouse {} (table {t})", redact_url(&self.url)),
            },
            HttpStyle::Webhook(h) => format!("webhook {} ({} mode)", redact_url(&self.url), h.mode.as_str()),
            HttpStyle::Otlp => format!("otlp {}", redact_url(&self.url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clickhouse_error_codes_are_read_from_the_body() {
        assert_eq!(clickhouse_code("Code: 26, e.displayText() = DB::Exception: Cannot parse"), Some(26));
        assert_eq!(clickhouse_code("Code: 241. DB::Exception: Memory limit"), Some(241));
        assert_eq!(clickhouse_code("oops"), None);
    }

    fn webhook(url: &str, timeout: Duration) -> HttpSink {
        let style = HttpStyle::Webhook(Webhook::plain(false, WebhookMode::Batch));
        HttpSink::new(url, style, timeout, &SinkTls::default()).unwrap()
    }

    fn rec(payload: &[u8]) -> Record {
        Record {
            position: 0,
            offset: 0,
            ts_ms: 0,
            lane: "normal/0".into(),
            tenant: "acme".into(),
            topic: "events".into(),
            payload: bytes::Bytes::copy_from_slice(payload),
        }
    }

    /// Issue 19, defect 15: an HTTP date was ignored.
    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date_and_a_past_date_is_zero() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        // IMF-fixdate, and the two obsolete forms RFC 9110 still asks recipients to read.
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:51:37 GMT", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:47 1994", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now), Some(Duration::ZERO), "past");
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    /// Issue 19, defect 9: whose fault each status is.
    #[test]
    fn statuses_are_classed_by_whose_fault_they_are() {
        assert_eq!(status_class(410), StatusClass::Gone);
        for code in [301, 302, 303, 307, 308, 401, 403, 404, 405, 407, 409, 418, 451] {
            assert_eq!(status_class(code), StatusClass::Endpoint, "{code}");
        }
        for code in [400, 413, 415, 422] {
            assert_eq!(status_class(code), StatusClass::Content, "{code}");
        }
        assert_eq!(status_class(408), StatusClass::Retryable { overload: false });
        assert_eq!(status_class(429), StatusClass::Retryable { overload: true });
        assert_eq!(status_class(500), StatusClass::Retryable { overload: false });
        assert_eq!(status_class(503), StatusClass::Retryable { overload: true });
        assert_eq!(status_class(204), StatusClass::Delivered);
    }

    /// A sink on loopback answering one request with `head`, then writing
    /// body bytes until the client goes away; returns how many it wrote.
    async fn huge_answer(head: &'static str) -> (String, tokio::task::JoinHandle<u64>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // The head, then the body: one 8-byte line.
            let whole = |req: &[u8]| req.windows(4).position(|w| w == b"\r\n\r\n").is_some_and(|i| req.len() >= i + 12);
            while !whole(&req) {
                let n = sock.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            let mut written = 0u64;
            if sock.write_all(head.as_bytes()).await.is_err() {
                return written;
            }
            let chunk = vec![b'x'; 64 * 1024];
            // Up to 1 GiB: far more than socket buffers hold.
            while written < 1 << 30 {
                if sock.write_all(&chunk).await.is_err() {
                    break;
                }
                written += chunk.len() as u64;
            }
            written
        });
        (url, task)
    }

    /// Issue 19, defect 8: a 200 with a 2 GiB body was read whole.
    #[tokio::test]
    async fn a_huge_answer_is_read_only_to_its_cap_and_a_2xx_counts_once_the_cap_is_read() {
        for (head, ok) in [
            ("HTTP/1.1 200 OK\r\ncontent-length: 2147483648\r\n\r\n", true),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10000\r\n", true),
            ("HTTP/1.1 400 Bad Request\r\ncontent-length: 2147483648\r\n\r\n", false),
        ] {
            let (url, server) = huge_answer(head).await;
            let sink = webhook(&url, Duration::from_secs(10));
            let started = std::time::Instant::now();
            let out = sink.post(&[rec(b"{\"a\":1}")], "k").await;
            assert!(started.elapsed() < Duration::from_secs(5), "{head:?}: took {:?}", started.elapsed());
            match out {
                Ok(()) => assert!(ok, "{head:?}"),
                Err(SinkError::Poison { message, refusal: Some(Refusal::Status(400)) }) => {
                    assert!(!ok && message.len() < 400, "{head:?}: {} bytes", message.len());
                }
                Err(e) => panic!("{head:?}: {e}"),
            }
            let written = tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
            assert!(written < 64 << 20, "{head:?}: the exporter kept reading: {written} bytes sent");
        }
    }

    #[test]
    fn webhook_bodies_frame_what_is_not_one_json_line_and_clickhouse_bodies_never_frame() {
        let web = webhook("http://127.0.0.1:1/", Duration::from_secs(1));
        let HttpStyle::Webhook(hook) = &web.style else { panic!("a webhook") };
        let body = hook.body(&[rec(b"{\"a\":1}"), rec(b"x\ny")]).unwrap();
        assert_eq!(body, b"{\"a\":1}\n{\"payload_b64\":\"eAp5\"}\n");
        let ch = ClickHouse::parse("http://127.0.0.1:1/?table=t").unwrap();
        // A tenant's own object with the key payload_b64 is an ordinary row.
        let row = b"{\"payload_b64\":\"eAp5\"}";
        let inserts = ch.inserts(&[rec(row)]).unwrap();
        assert_eq!((inserts.len(), inserts[0].body.clone()), (1, [&row[..], b"\n"].concat()));
        assert!(ch.refuse(&rec(row)).is_none());
        assert!(ch.refuse(&rec(b"{\"a\":1}\n{\"a\":2}")).is_some());
        assert!(matches!(ch.inserts(&[rec(b"[{\"a\":1}]")]), Err(SinkError::Poison { refusal: None, .. })));
    }
}
