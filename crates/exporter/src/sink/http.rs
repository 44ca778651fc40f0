//! HTTP sinks: a webhook (NDJSON POST with `Idempotency-Key`) and
//! ClickHouse's HTTP interface (`INSERT INTO T FORMAT JSONEachRow`).
//!
//! Classification: 2xx delivered; 408, 429, 5xx, timeouts and connection
//! errors retryable (Retry-After honoured); other 4xx poison. ClickHouse
//! answers 500 for bad rows too, so its error code decides there.
//!
//! Redirects are never followed: a client that follows a 302 turns the POST
//! into a bodiless GET, whose 200 would count as a delivery of nothing. A
//! 3xx is poison (the endpoint is misconfigured, not busy), and the dead
//! letter names the `Location` so the operator can fix the URL and re-drive.
//!
//! Framing (docs/sinks.md): the webhook sends one NDJSON line per record,
//! framing records that are not one JSON line (see [`super::framing`]);
//! ClickHouse takes only records that are one JSON object and refuses the
//! others to dead letters, because a framed object inserted into an
//! arbitrary table is either rejected or, where unknown fields are skipped
//! (`input_format_skip_unknown_fields`), becomes a row of defaults that
//! holds none of the record.

use super::framing::{push_ndjson_line, Shape};
use super::{Delivery, OpenError, Record, Sink, SinkError};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpStyle {
    Webhook { gzip: bool },
    ClickHouse,
}

pub struct HttpSink {
    url: String,
    style: HttpStyle,
    client: reqwest::Client,
}

/// ClickHouse error codes that mean "these rows are bad", not "try later".
const CLICKHOUSE_POISON: [u32; 12] = [6, 16, 26, 27, 38, 41, 53, 69, 70, 72, 117, 130];

fn clickhouse_code(body: &str) -> Option<u32> {
    let rest = &body[body.find("Code: ")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl HttpSink {
    pub fn new(url: &str, style: HttpStyle, timeout: Duration) -> Result<HttpSink, OpenError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OpenError::Spec(format!("http client: {e}")))?;
        reqwest::Url::parse(url).map_err(|e| OpenError::Spec(format!("sink URL {url:?}: {e}")))?;
        Ok(HttpSink { url: url.to_string(), style, client })
    }

    /// `http://HOST:PORT/?table=T[&database=D]` (after the `clickhouse+` prefix).
    pub fn clickhouse(spec: &str, timeout: Duration) -> Result<HttpSink, OpenError> {
        let mut url =
            reqwest::Url::parse(spec).map_err(|e| OpenError::Spec(format!("clickhouse sink {spec:?}: {e}")))?;
        let table = url
            .query_pairs()
            .find(|(k, _)| k == "table")
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| OpenError::Spec(format!("clickhouse sink {spec:?} needs ?table=NAME")))?;
        if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            return Err(OpenError::Spec(format!(
                "clickhouse table name {table:?} may hold only letters, digits, _ and ."
            )));
        }
        let others: Vec<(String, String)> =
            url.query_pairs().filter(|(k, _)| k != "table").map(|(k, v)| (k.to_string(), v.to_string())).collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(others)
            .append_pair("query", &format!("INSERT INTO {table} FORMAT JSONEachRow"));
        HttpSink::new(url.as_str(), HttpStyle::ClickHouse, timeout)
    }

    fn body(&self, records: &[Record]) -> Result<Vec<u8>, SinkError> {
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.payload.len() + 1).sum());
        for r in records {
            let shape = Shape::of(&r.payload);
            if self.style == HttpStyle::ClickHouse {
                // `refuse` screens these out before delivery; never send one
                // that slipped through, whatever the caller did. Rows are
                // never framed, so an accepted row goes as is.
                shape.as_row().map_err(|why| SinkError::Poison(not_a_row(&why)))?;
                buf.extend_from_slice(&r.payload);
                buf.push(b'\n');
            } else {
                push_ndjson_line(&mut buf, &r.payload, &shape);
            }
        }
        if let HttpStyle::Webhook { gzip: true } = self.style {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&buf).map_err(|e| SinkError::Poison(format!("gzip: {e}")))?;
            return enc.finish().map_err(|e| SinkError::Poison(format!("gzip: {e}")));
        }
        Ok(buf)
    }

    async fn post(&self, records: &[Record], key: &str) -> Result<(), SinkError> {
        let body = self.body(records)?;
        let mut req = self.client.post(&self.url).header("content-type", "application/x-ndjson").body(body);
        match self.style {
            HttpStyle::Webhook { gzip } => {
                req = req.header("idempotency-key", key);
                if gzip {
                    req = req.header("content-encoding", "gzip");
                }
            }
            HttpStyle::ClickHouse => {}
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(SinkError::Retryable {
                    message: format!("{}: {e}", if e.is_timeout() { "timed out" } else { "request failed" }),
                    retry_after: None,
                    timed_out: e.is_timeout(),
                    // A timeout or a refused/reset connection: the sink is at capacity.
                    overload: e.is_timeout() || e.is_connect(),
                });
            }
        };
        let status = resp.status();
        if status.is_success() {
            // A 2xx counts once its whole answer arrived: a response cut short
            // mid-body (the sink died while answering) is not a delivery.
            return match resp.bytes().await {
                Ok(_) => Ok(()),
                Err(e) => Err(SinkError::Retryable {
                    message: format!("HTTP {status}, but the answer was cut short: {e}"),
                    retry_after: None,
                    timed_out: e.is_timeout(),
                    overload: e.is_timeout(),
                }),
            };
        }
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).chars().take(300).collect::<String>());
            return Err(SinkError::Poison(format!(
                "HTTP {status}: redirect to {} not followed; a redirect is not a delivery (point the sink at the final URL)",
                location.as_deref().map_or_else(|| "(no Location)".to_string(), |l| format!("Location: {l}"))
            )));
        }
        let ra = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        let snippet: String = text.chars().take(300).collect();
        let message = format!("HTTP {status}: {}", snippet.trim());
        if self.style == HttpStyle::ClickHouse {
            if let Some(code) = clickhouse_code(&text) {
                if CLICKHOUSE_POISON.contains(&code) {
                    return Err(SinkError::Poison(message));
                }
            }
        }
        let code = status.as_u16();
        if code == 408 || code == 429 || status.is_server_error() {
            let overload = code == 429 || code == 503;
            Err(SinkError::Retryable { message, retry_after: ra, timed_out: false, overload })
        } else {
            Err(SinkError::Poison(message))
        }
    }
}

fn not_a_row(why: &super::framing::NotARow) -> String {
    format!("not sent: ClickHouse JSONEachRow takes one JSON object per record, and {why}")
}

impl Sink for HttpSink {
    fn deliver<'a>(&'a self, records: &'a [Record], key: &'a str) -> Delivery<'a> {
        Box::pin(self.post(records, key))
    }

    fn refuse(&self, record: &Record) -> Option<String> {
        match self.style {
            HttpStyle::ClickHouse => Shape::of(&record.payload).as_row().err().map(|why| not_a_row(&why)),
            HttpStyle::Webhook { .. } => None,
        }
    }

    fn describe(&self) -> String {
        match self.style {
            HttpStyle::ClickHouse => format!("clickhouse {}", self.url),
            HttpStyle::Webhook { .. } => format!("webhook {}", self.url),
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

    fn rec(payload: &[u8]) -> Record {
        Record { offset: 0, payload: bytes::Bytes::copy_from_slice(payload) }
    }

    #[test]
    fn webhook_bodies_frame_what_is_not_one_json_line_and_clickhouse_bodies_never_frame() {
        let web =
            HttpSink::new("http://127.0.0.1:1/", HttpStyle::Webhook { gzip: false }, Duration::from_secs(1)).unwrap();
        let body = web.body(&[rec(b"{\"a\":1}"), rec(b"x\ny")]).unwrap();
        assert_eq!(body, b"{\"a\":1}\n{\"payload_b64\":\"eAp5\"}\n");
        let ch = HttpSink::clickhouse("http://127.0.0.1:1/?table=t", Duration::from_secs(1)).unwrap();
        // A tenant's own object with the key payload_b64 is an ordinary row.
        let row = b"{\"payload_b64\":\"eAp5\"}";
        assert_eq!(ch.body(&[rec(row)]).unwrap(), [&row[..], b"\n"].concat());
        assert!(ch.refuse(&rec(row)).is_none());
        assert!(ch.refuse(&rec(b"{\"a\":1}\n{\"a\":2}")).is_some());
        assert!(matches!(ch.body(&[rec(b"[{\"a\":1}]")]), Err(SinkError::Poison(_))));
    }

    #[test]
    fn clickhouse_spec_becomes_an_insert_query() {
        let s =
            HttpSink::clickhouse("http://127.0.0.1:8123/?table=events&database=weir", Duration::from_secs(1)).unwrap();
        assert!(s.url.contains("database=weir"), "{}", s.url);
        assert!(s.url.contains("query=INSERT+INTO+events+FORMAT+JSONEachRow"), "{}", s.url);
        assert!(HttpSink::clickhouse("http://h:1/?table=x;drop", Duration::from_secs(1)).is_err());
    }
}
