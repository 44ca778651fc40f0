//! The ingest accept path: body → records → admission → one durable WAL frame.
//!
//! Records are validated in place and referenced as slices of the request
//! body; the only copy is into the frame buffer. The commit runs in its own
//! task so a client that disconnects cannot cancel a batch half-way between
//! "durable" and "remembered for idempotency".

use super::{Intake, Tenant, TopicSlot};
use crate::error::AcceptError;
use crate::idempotency::{Claim, Fingerprint, RequestKey, Ticket};
use crate::limiter::Verdict;
use bytes::Bytes;
use plumbing::clock::now_ms;
use plumbing::reasons::Reason;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use wal::{EncodedBatch, LaneId, Priority};

use crate::accepted::Accepted;

/// The request parts the accept path needs.
pub struct IngestInput<'a> {
    pub tenant: Arc<super::Tenant>,
    pub topic: &'a str,
    /// The topic's slot in the tenant's snapshot.
    pub topic_slot: super::TopicSlot,
    pub format: Format,
    pub encoding: Encoding,
    pub idempotency_key: Option<&'a str>,
    pub body: Bytes,
    /// What this request holds of the memory budget (an inflated body adds to it).
    pub charge: crate::memory::Charge,
    /// Announced to the WAL when the request was accepted for reading;
    /// released once the batch is queued (or refused).
    pub arrival: wal::Arrival,
}

/// How a body holds its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON record per line.
    Ndjson,
    /// The body is one record.
    Binary,
    /// One JSON value: an array holds one record per element, any other
    /// value is one record (the contract's rule for `application/json`).
    Json,
}

impl Format {
    /// The canonical media type: what an idempotency fingerprint takes as
    /// the request's content type (parameters and case of the header as
    /// sent do not make another request).
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Binary => "application/octet-stream",
            Format::Json => "application/json",
        }
    }
}

/// How a body was compressed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

/// Inflate a gzip body, refusing to grow past `cap` bytes.
fn inflate(body: &[u8], cap: u64) -> Result<Vec<u8>, AcceptError> {
    inflate_charged(body, cap, &mut |_| Ok(()))
}

/// Inflate a gzip body chunk by chunk, refusing to grow past `cap` bytes,
/// and calling `charge` with each chunk's size before keeping it — so the
/// memory budget is spent as bytes inflate, not after.
fn inflate_charged(
    body: &[u8],
    cap: u64,
    charge: &mut dyn FnMut(u64) -> Result<(), AcceptError>,
) -> Result<Vec<u8>, AcceptError> {
    const CHUNK: usize = 64 << 10;
    let bad = |source: std::io::Error| AcceptError::GzipInvalid { source };
    let mut out: Vec<u8> = Vec::new();
    let mut dec = flate2::read::MultiGzDecoder::new(body);
    let mut chunk = vec![0u8; CHUNK];
    // Bounded: every turn adds at least one byte, and past `cap` it stops.
    loop {
        let n = dec.read(&mut chunk).map_err(bad)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() as u64 + n as u64 > cap {
            return Err(AcceptError::InflatedTooLarge { cap });
        }
        charge(n as u64)?;
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Inflate a gzip `body` on the blocking pool (never on an async worker: a
/// large body takes milliseconds), charged to `tenant`'s share of the
/// memory budget as it inflates (twice: the inflated body and the frame
/// built from it), into `charge`.
pub(crate) async fn inflate_off_worker(
    intake: &Arc<Intake>,
    tenant: &Tenant,
    body: Bytes,
    charge: &mut crate::memory::Charge,
) -> Result<Vec<u8>, AcceptError> {
    let bk = Arc::clone(intake);
    let held_by = Arc::clone(&tenant.memory_held);
    let mut held = std::mem::take(charge);
    let cap = intake.cfg.max_inflated_bytes;
    let job = tokio::task::spawn_blocking(move || {
        let budget = bk.memory();
        let out = inflate_charged(&body, cap, &mut |n| budget.charge_for(Some(&held_by), &mut held, 2 * n));
        (out, held)
    });
    let (out, held) = job.await.map_err(|source| AcceptError::TaskFailed { what: "inflating", source })?;
    *charge = held;
    out
}

/// Apply the encoding: `None` when the body is used as sent, `Some(inflated)`
/// for gzip.
fn decode_encoding(encoding: Encoding, body: &[u8], cap: u64) -> Result<Option<Vec<u8>>, AcceptError> {
    match encoding {
        Encoding::Identity => Ok(None),
        Encoding::Gzip => inflate(body, cap).map(Some),
    }
}

/// The pure part of the accept path, exactly as [`ingest`] runs it: the body
/// decoded (gzip inflated up to `max_inflated_bytes`), then its records split
/// and validated.
pub fn parse_body(
    format: Format,
    encoding: Encoding,
    body: &[u8],
    max_inflated_bytes: u64,
    max_record_bytes: u64,
) -> Result<Vec<Vec<u8>>, AcceptError> {
    let inflated = decode_encoding(encoding, body, max_inflated_bytes)?;
    let body = inflated.as_deref().unwrap_or(body);
    Ok(split_records(body, format, max_record_bytes)?.into_iter().map(<[u8]>::to_vec).collect())
}

/// Split and validate records. Each returned slice is one record.
fn split_records(body: &[u8], format: Format, max_record: u64) -> Result<Vec<&[u8]>, AcceptError> {
    let empty = || AcceptError::EmptyBody;
    let too_large = |record: usize, len: usize| AcceptError::RecordTooLarge { record, len, max: max_record };
    if format == Format::Binary {
        if body.is_empty() {
            return Err(empty());
        }
        if body.len() as u64 > max_record {
            return Err(too_large(1, body.len()));
        }
        return Ok(vec![body]);
    }
    if format == Format::Json {
        return split_json(body, max_record);
    }
    let mut out = Vec::with_capacity(16);
    let mut rest = body;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if line.len() as u64 > max_record {
            return Err(too_large(line_no, line.len()));
        }
        // JSON text is UTF-8 (RFC 8259 §8.1), and serde_json does not check
        // the bytes inside strings it skips: check them first.
        let text = std::str::from_utf8(line)
            .map_err(|e| AcceptError::LineNotUtf8 { line: line_no, column: e.valid_up_to() + 1 })?;
        if let Err(source) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
            return Err(AcceptError::LineNotJson { line: line_no, source });
        }
        out.push(line);
    }
    if out.is_empty() {
        return Err(empty());
    }
    Ok(out)
}

/// An `application/json` body: the elements of an array (each its own
/// record, as sent, without the array's separators), or the whole value.
/// An empty array holds no record and is refused as an empty body.
fn split_json(body: &[u8], max_record: u64) -> Result<Vec<&[u8]>, AcceptError> {
    use serde_json::value::RawValue;
    let text = std::str::from_utf8(body).map_err(|e| AcceptError::LineNotUtf8 {
        line: 1 + memchr::memchr_iter(b'\n', &body[..e.valid_up_to()]).count(),
        column: e.valid_up_to() + 1,
    })?;
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.is_empty() {
        return Err(AcceptError::EmptyBody);
    }
    let too_large = |record: usize, len: usize| AcceptError::RecordTooLarge { record, len, max: max_record };
    if !trimmed.starts_with('[') {
        serde_json::from_str::<serde::de::IgnoredAny>(trimmed).map_err(|source| AcceptError::BodyNotJson { source })?;
        if trimmed.len() as u64 > max_record {
            return Err(too_large(1, trimmed.len()));
        }
        return Ok(vec![trimmed.as_bytes()]);
    }
    let elements: Vec<&RawValue> =
        serde_json::from_str(trimmed).map_err(|source| AcceptError::BodyNotJson { source })?;
    if elements.is_empty() {
        return Err(AcceptError::EmptyBody);
    }
    let mut out = Vec::with_capacity(elements.len());
    for (i, element) in elements.iter().enumerate() {
        let record = element.get().as_bytes();
        if record.len() as u64 > max_record {
            return Err(too_large(i + 1, record.len()));
        }
        out.push(record);
    }
    Ok(out)
}

/// Refuse with 429/507 if records stored at `priority` would be behind a
/// lagging destination, or the disk is too full. Only the tenants whose
/// data routes to a lagging destination are refused, and a destination's
/// lag counts against a priority only through the lanes at or above it: a
/// `low` backlog sheds what goes to `low`, not the in-rate tenants.
fn check_backpressure(b: &Intake, tenant: &Tenant, topic: TopicSlot, priority: Priority) -> Result<(), AcceptError> {
    let retry_after_secs = b.cfg.retry_after_secs;
    let shed = |reason: Reason| b.metrics.backpressure_shed.with_label_values(&[&*tenant.label, reason.as_str()]).inc();
    if b.disk.over_quota.load(Ordering::Relaxed) {
        shed(Reason::DiskQuota);
        return Err(AcceptError::DiskQuota { quota_bytes: b.cfg.disk_quota_bytes });
    }
    if b.disk.over_watermark.load(Ordering::Relaxed) {
        shed(Reason::DiskWatermark);
        return Err(AcceptError::DiskWatermark { watermark: b.cfg.disk_high_watermark, retry_after_secs });
    }
    for &d in tenant.routes(topic) {
        if let Some(lag) = b.lag.sheds(d, priority) {
            shed(Reason::DestinationLag);
            return Err(AcceptError::DestinationLag {
                destination: lag.name,
                records: lag.records,
                bytes: lag.bytes,
                retry_after_secs,
            });
        }
    }
    Ok(())
}

/// Pick the lane: the tenant's own priority while in rate, `low` otherwise.
fn admit(b: &Intake, t: &Tenant, records: u64, now: u64) -> Result<LaneId, AcceptError> {
    let priority = match t.limiter.decide(now, records) {
        Verdict::InRate => t.priority,
        Verdict::Demote(reason) => {
            if t.priority != Priority::Low {
                b.metrics.demoted_records.with_label_values(&[&*t.label, reason.as_str()]).inc_by(records);
            }
            Priority::Low
        }
        Verdict::Reject { retry_after_secs } => {
            b.metrics.backpressure_shed.with_label_values(&[&*t.label, Reason::HardRateLimit.as_str()]).inc();
            return Err(AcceptError::RateLimited { tenant: t.name.clone(), retry_after_secs });
        }
    };
    Ok(LaneId::new(priority, t.shard))
}

/// Accept one request: parse, admit, append; answers once the frame is durable.
pub async fn ingest(intake: &Arc<Intake>, mut input: IngestInput<'_>) -> Result<Accepted, AcceptError> {
    let format = input.format;
    let inflated = match input.encoding {
        Encoding::Identity => None,
        // Boxed: its state stays out of every identity request's future.
        Encoding::Gzip => {
            let body = input.body.clone();
            Some(Box::pin(inflate_off_worker(intake, &input.tenant, body, &mut input.charge)).await?)
        }
    };
    let body: &[u8] = inflated.as_deref().unwrap_or(&input.body);
    let records = split_records(body, format, intake.cfg.max_record_bytes)?;
    let batch = Batch {
        tenant: &input.tenant,
        topic: input.topic,
        topic_slot: input.topic_slot,
        media_type: format.media_type(),
        inflated_body: body,
        idempotency_key: input.idempotency_key,
        arrival: input.arrival,
    };
    append_records(intake, batch, records).await
}

/// A parsed request on its way to the WAL: who sent it, where it goes, and
/// what its idempotency fingerprint is made of.
pub(crate) struct Batch<'a> {
    pub tenant: &'a Tenant,
    pub topic: &'a str,
    pub topic_slot: TopicSlot,
    /// The request's canonical media type (part of its fingerprint).
    pub media_type: &'static str,
    /// The request's body after its content encoding: a retry compressed
    /// differently is the same request.
    pub inflated_body: &'a [u8],
    pub idempotency_key: Option<&'a str>,
    /// Released once the batch is queued (or refused).
    pub arrival: wal::Arrival,
}

/// Admit `records` (at least one) as one batch: claim the idempotency key,
/// check backpressure, pick the lane, frame and append; answers once the
/// frame is durable. Shared by every ingest format (NDJSON, octet-stream,
/// OTLP).
pub(crate) async fn append_records(
    intake: &Arc<Intake>,
    input: Batch<'_>,
    records: Vec<&[u8]>,
) -> Result<Accepted, AcceptError> {
    debug_assert!(!records.is_empty(), "a batch holds at least one record");
    let b: &Intake = intake;
    let topic_slot = input.topic_slot;
    let tenant = input.tenant;
    let key = input.idempotency_key.filter(|k| !k.is_empty());
    if key.is_some_and(|k| k.len() > 255) {
        return Err(AcceptError::IdempotencyKeyTooLong { len: key.map_or(0, str::len) });
    }
    let now = now_ms();
    let request_key =
        key.map(|k| RequestKey::new(k, Fingerprint::of(input.topic, input.media_type, input.inflated_body)));
    let ticket = match claim_key(b, tenant, request_key.as_ref(), now).await? {
        KeyClaim::Replay(resp) => return Ok(resp),
        KeyClaim::Go(ticket) => ticket,
    };
    // The tenant's own priority first (no rate tokens spent on a refusal),
    // then the lane the limiter picks: a demoted batch meets low's backlog.
    let prepared = check_backpressure(b, tenant, topic_slot, tenant.priority)
        .and_then(|()| admit(b, tenant, records.len() as u64, now))
        .and_then(|lane| {
            if lane.priority != tenant.priority {
                check_backpressure(b, tenant, topic_slot, lane.priority)?;
            }
            let frame_key = request_key.as_ref().map(RequestKey::frame_field);
            let batch = EncodedBatch::encode(&tenant.name, input.topic, frame_key.as_deref(), &records)
                .map_err(|source| AcceptError::Unframeable { source })?;
            Ok((lane, batch))
        });
    let (lane, batch) = match prepared {
        Ok(p) => p,
        Err(e) => {
            if let Some(t) = ticket {
                b.idempotency.abandon(t);
            }
            return Err(e);
        }
    };
    let n = records.len() as u64;
    drop(records);
    let stored = tenant.records_counter(&b.metrics, (topic_slot, input.topic), lane.priority);
    let append = b.wal.append(lane, batch);
    drop(input.arrival);
    let commit =
        settle_append(Arc::clone(intake), append, ticket, Accepted { records: n, lane, first_offset: 0 }, stored);
    if key.is_none() {
        // Nothing to keep consistent if the client goes away: the WAL
        // commits the queued frame regardless.
        return commit.await;
    }
    // Detached: a keyed batch is remembered for idempotency even if the
    // client disconnects between "durable" and the answer.
    tokio::spawn(commit).await.map_err(|source| AcceptError::TaskFailed { what: "commit", source })?
}

/// What the idempotency window says about a request.
enum KeyClaim {
    /// Answer the earlier request's 200 again; append nothing.
    Replay(Accepted),
    /// Go on, holding the key's ticket (none without a key).
    Go(Option<Ticket>),
}

/// Claim the request's key in the window, or refuse it.
async fn claim_key(b: &Intake, tenant: &Tenant, key: Option<&RequestKey>, now: u64) -> Result<KeyClaim, AcceptError> {
    let Some(rk) = key else {
        return Ok(KeyClaim::Go(None));
    };
    match b.idempotency.claim(&tenant.name, rk, now).await {
        Claim::Replay(resp) => {
            b.metrics.idempotent_replays.with_label_values(&[&*tenant.label]).inc();
            Ok(KeyClaim::Replay(resp))
        }
        Claim::Reused => {
            b.metrics.idempotency_key_reused.with_label_values(&[&*tenant.label]).inc();
            Err(AcceptError::IdempotencyKeyReused)
        }
        Claim::Fresh(t) => Ok(KeyClaim::Go(Some(t))),
        Claim::Full { max } => Err(AcceptError::IdempotencyKeysFull { tenant: tenant.name.clone(), max }),
    }
}

/// Wait for the append to be durable, then answer (`answer` with its first
/// offset filled in) and settle the key's ticket: remembered on success,
/// given up on failure so that a retry appends.
async fn settle_append(
    intake: Arc<Intake>,
    append: impl std::future::Future<Output = Result<wal::Appended, wal::WalError>> + Send,
    ticket: Option<Ticket>,
    answer: Accepted,
    stored: prometheus::IntCounter,
) -> Result<Accepted, AcceptError> {
    match append.await {
        Ok(ack) => {
            let resp = Accepted { first_offset: ack.base_offset, ..answer };
            stored.inc_by(resp.records);
            if let Some(t) = ticket {
                intake.idempotency.settle(t, resp, now_ms());
            }
            Ok(resp)
        }
        Err(e) => {
            if let Some(t) = ticket {
                intake.idempotency.abandon(t);
            }
            Err(AcceptError::from_wal(e, intake.cfg.retry_after_secs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_array_is_one_record_per_element_and_any_other_value_one_record() {
        let body = b" [ {\"a\": 1}, 2 ,\n \"x\", [3, 4] ] \n";
        let records = split_records(body, Format::Json, 100).unwrap();
        assert_eq!(records, vec![&b"{\"a\": 1}"[..], b"2", b"\"x\"", b"[3, 4]"]);
        assert_eq!(split_records(b"\n{\"b\": [1]}\n", Format::Json, 100).unwrap(), vec![&b"{\"b\": [1]}"[..]]);
        assert_eq!(split_records(b"\"s\"", Format::Json, 100).unwrap(), vec![&b"\"s\""[..]]);
        assert!(matches!(split_records(b" [ ] ", Format::Json, 100), Err(AcceptError::EmptyBody)));
        assert!(matches!(split_records(b" \n ", Format::Json, 100), Err(AcceptError::EmptyBody)));
        assert!(matches!(split_records(b"[1, 2", Format::Json, 100), Err(AcceptError::BodyNotJson { .. })));
        assert!(matches!(split_records(b"{} {}", Format::Json, 100), Err(AcceptError::BodyNotJson { .. })));
        assert!(matches!(split_records(b"[1]\xff", Format::Json, 100), Err(AcceptError::LineNotUtf8 { .. })));
        match split_records(b"[1, \"0123456789\"]", Format::Json, 8) {
            Err(AcceptError::RecordTooLarge { record: 2, len: 12, max: 8 }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ndjson_lines_are_validated_and_the_bad_line_is_named() {
        let body = b"{\"a\":1}\n\n{\"b\":2}\r\n{oops}\n";
        let e = split_records(body, Format::Ndjson, 1024).err().unwrap();
        assert!(e.to_string().contains("line 4"), "{e}");
        let ok = split_records(b"{\"a\":1}\n\n[1,2]\r\n", Format::Ndjson, 1024).unwrap();
        assert_eq!(ok, vec![&b"{\"a\":1}"[..], b"[1,2]"]);
    }

    #[test]
    fn accepted_serialises_as_the_contracts_ingest_response() {
        let cases = [
            (10, LaneId::new(Priority::Low, 7), u64::MAX, "low", "low/7"),
            (0, LaneId::new(Priority::Normal, 0), 0, "normal", "normal/0"),
            (u64::MAX, LaneId::new(Priority::High, u16::MAX), 123_456_789, "high", "high/65535"),
        ];
        for (records, lane, first_offset, priority, lane_text) in cases {
            let a = Accepted { records, lane, first_offset };
            let back: protocol::IngestResponse = serde_json::from_slice(&a.to_json()).unwrap();
            let want = protocol::IngestResponse {
                accepted: records,
                priority: priority.into(),
                lane: lane_text.into(),
                first_offset,
            };
            assert_eq!(back, want);
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_is_refused_and_named() {
        let body = b"{\"a\":1}\n{\"a\":\"caf\xe9\"}\n";
        match split_records(body, Format::Ndjson, 1024) {
            Err(e @ AcceptError::LineNotUtf8 { line: 2, .. }) => assert!(e.to_string().contains("UTF-8"), "{e}"),
            other => panic!("expected InvalidBody, got {:?}", other.map(|r| r.len())),
        }
        let ok = "{\"a\":\"café ✓\"}\n".as_bytes();
        assert_eq!(split_records(ok, Format::Ndjson, 1024).map(|r| r.len()).ok(), Some(1));
    }

    #[test]
    fn empty_bodies_and_oversized_records_are_refused() {
        assert!(matches!(split_records(b" \n\n", Format::Ndjson, 10), Err(AcceptError::EmptyBody)));
        assert!(matches!(split_records(b"", Format::Binary, 10), Err(AcceptError::EmptyBody)));
        assert!(matches!(split_records(b"[1,2,3,4,5,6]", Format::Ndjson, 5), Err(AcceptError::RecordTooLarge { .. })));
    }

    #[test]
    fn gzip_bomb_is_cut_at_the_cap() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vec![b'x'; 1 << 20]).unwrap();
        let gz = enc.finish().unwrap();
        assert!(matches!(inflate(&gz, 1000), Err(AcceptError::InflatedTooLarge { cap: 1000 })));
        assert_eq!(inflate(&gz, 2 << 20).unwrap().len(), 1 << 20);
    }
}
