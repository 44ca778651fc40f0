//! The fuzz targets' bodies, one plain function per target.
//!
//! Compiled twice: by `fuzz/` into the AFL++ binaries (`src/bin/*.rs`), and
//! by the root package's `tests/fuzz_corpus.rs` (through `#[path]`), which
//! replays every file of `fuzz/corpus/<target>/` and `fuzz/crashes-fixed/`
//! through the same function in `cargo test`. So it uses only crates both
//! have: wal, api, broker, exporter, serde_json, siphasher.
//!
//! No panic is the baseline; each target also asserts the invariants that
//! are cheap to check.

use siphasher::sip::{SipHasher13, SipHasher24};
use std::hash::Hasher;
use wal::frame::FrameFormat;
use wal::frame::{check_frame, FrameHeader, FrameView, HEADER_LEN, MAGIC, VERSION};
use wal::segment::{scan as scan_segment, SegmentHeader, Tail, SEGMENT_HEADER_LEN};
use wal::{EncodedBatch, FrameError, FrameKey, LaneId, Priority};

/// A fuzz target: its name and the function that takes one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: &[Target] = &[
    ("frame", frame),
    ("scan", scan),
    ("ingest_body", ingest_body),
    ("config", config),
    ("api_json", api_json),
    ("otlp_proto", otlp_proto),
    ("otlp_json", otlp_json),
    ("otel_rows", otel_rows),
];

/// The fixed frame key the frame target (and the structured scan input)
/// authenticates under: body key, then header key.
pub const KEY_BYTES: [u8; FrameKey::LEN] = *b"weir fuzz: body key|header key!!";

pub fn fixed_key() -> FrameKey {
    FrameKey::from_bytes(&KEY_BYTES)
}

/// The fixed key in the format a frame's version byte names: the corpora
/// hold format-2 frames (before format 3) and format-3 ones, and each is
/// checked as the file of its format would check it.
pub fn fixed_key_for(frame: &[u8]) -> FrameKey {
    let format = frame.get(4).and_then(|&v| FrameFormat::from_version(u16::from(v)));
    FrameKey::with_format(&KEY_BYTES, format.unwrap_or(FrameFormat::CURRENT))
}

/// The header a scan uses when the input's own does not decode.
pub fn fixed_header(recycled: bool, base_offset: u64) -> SegmentHeader {
    SegmentHeader { lane: LaneId::new(Priority::Normal, 0), base_offset, key: fixed_key(), recycled }
}

/// SipHash of `data` under a 16-byte `key`: 2-4 rounds (the header MAC,
/// and a format-2 body), or 1-3 (a format-3 body).
fn sip(key: &[u8], data: &[u8], fewer_rounds: bool) -> u64 {
    let mut k = [0u8; 16];
    k.copy_from_slice(key);
    fn digest(mut h: impl Hasher, data: &[u8]) -> u64 {
        h.write(data);
        h.finish()
    }
    if fewer_rounds {
        digest(SipHasher13::new_with_key(&k), data)
    } else {
        digest(SipHasher24::new_with_key(&k), data)
    }
}

/// Make `buf` (a frame, possibly followed by more bytes) authentic under
/// `key`, as the writer's seal does: magic, body MAC (when the body is all
/// there: SipHash-2-4 under the body key for a version-2 frame, SipHash-1-3
/// otherwise), header MAC. Version, flags and lengths are left as they are.
/// `tests/fuzz_corpus.rs` checks this against frames the WAL wrote.
pub fn seal(buf: &mut [u8], key: &[u8; FrameKey::LEN]) {
    if buf.len() < HEADER_LEN {
        return;
    }
    buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    let body_len = u32::from_le_bytes([buf[12], buf[13], buf[14], buf[15]]) as usize;
    if let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + body_len) {
        let mac = sip(&key[..16], body, buf[4] != 2);
        buf[32..40].copy_from_slice(&mac.to_le_bytes());
    }
    let mac = sip(&key[16..], &buf[0..40], false);
    buf[40..48].copy_from_slice(&mac.to_le_bytes());
}

/// A frame laid out as `EncodedBatch::encode` lays it out, sealed under `key`.
pub fn make_frame(
    key: &[u8; FrameKey::LEN],
    tenant: &str,
    topic: &str,
    idempotency_key: Option<&str>,
    records: &[&[u8]],
    base_offset: u64,
    ts_ms: u64,
) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    for f in [tenant, topic, idempotency_key.unwrap_or("")] {
        b.push(f.len() as u8);
        b.extend_from_slice(f.as_bytes());
    }
    let meta_len = (b.len() - HEADER_LEN) as u16;
    for r in records {
        b.extend_from_slice(&(r.len() as u32).to_le_bytes());
        b.extend_from_slice(r);
    }
    let body_len = (b.len() - HEADER_LEN) as u32;
    b[4] = VERSION;
    b[6..8].copy_from_slice(&meta_len.to_le_bytes());
    b[8..12].copy_from_slice(&(records.len() as u32).to_le_bytes());
    b[12..16].copy_from_slice(&body_len.to_le_bytes());
    b[16..24].copy_from_slice(&base_offset.to_le_bytes());
    b[24..32].copy_from_slice(&ts_ms.to_le_bytes());
    seal(&mut b, key);
    b
}

// ---------------------------------------------------------------- frame

/// Frame decoder: `check_frame`, `FrameView::decode` and the record
/// iterator over arbitrary bytes under a fixed key — first as given (which
/// essentially never authenticates), then with magic and MACs made right,
/// so that everything behind the MAC is reached.
pub fn frame(data: &[u8]) {
    let key = fixed_key_for(data);
    if let Ok(h) = check_frame(data, &key) {
        check_decoded(data, h, &key);
    }
    if data.len() >= HEADER_LEN {
        let mut buf = data.to_vec();
        seal(&mut buf, &KEY_BYTES);
        match check_frame(&buf, &key) {
            Ok(h) => check_decoded(&buf, h, &key),
            // An authentic header can only be refused on what the MAC does
            // not cover: version and flags, lengths, a body not all there.
            Err(e) => assert!(
                matches!(e, FrameError::BadVersion(_) | FrameError::BadLength | FrameError::Incomplete),
                "a sealed frame refused with {e:?}"
            ),
        }
    }
}

fn check_decoded(buf: &[u8], h: FrameHeader, key: &FrameKey) {
    assert!(h.records >= 1, "a frame holds a record");
    assert!(u32::from(h.meta_len) <= h.body_len);
    assert!(h.frame_len() <= buf.len(), "an accepted frame lies inside the buffer");
    assert!(h.next_offset() > h.base_offset);
    // The bytes past the frame play no part.
    assert_eq!(check_frame(&buf[..h.frame_len()], key), Ok(h));
    let Ok(v) = FrameView::decode(buf, h) else { return };
    let key_len = v.idempotency_key.map_or(0, str::len);
    assert_eq!(3 + v.tenant.len() + v.topic.len() + key_len, usize::from(h.meta_len));
    assert_ne!(v.idempotency_key, Some(""), "an empty key is no key");
    let recs: Vec<(u64, &[u8])> = v.records().collect();
    assert!(recs.len() as u64 <= u64::from(h.records));
    for (i, (off, _)) in recs.iter().enumerate() {
        assert_eq!(*off, h.base_offset.wrapping_add(i as u64), "offsets follow each other");
    }
    let used: usize = recs.iter().map(|(_, r)| 4 + r.len()).sum();
    assert!(usize::from(h.meta_len) + used <= h.body_len as usize, "records stay inside the body");
    // A frame whose records tile its body is what the writer makes: the
    // encoder gives it back, byte for byte.
    if recs.len() == h.records as usize && usize::from(h.meta_len) + used == h.body_len as usize {
        let rs: Vec<&[u8]> = recs.iter().map(|r| r.1).collect();
        let e = EncodedBatch::encode(v.tenant, v.topic, v.idempotency_key, &rs).expect("a decoded frame re-encodes");
        assert_eq!((e.len(), e.records()), (h.frame_len(), h.records));
        let again = make_frame(&KEY_BYTES, v.tenant, v.topic, v.idempotency_key, &rs, h.base_offset, h.ts_ms);
        if key == &fixed_key() && buf[4..6] == [VERSION, 0] {
            // (A format-2 frame re-encodes the same but seals differently.)
            assert_eq!(&again[..], &buf[..h.frame_len()]);
        }
    }
}

// ---------------------------------------------------------------- scan

/// Recovery scanner. First byte: bit 0 picks the input's shape, bit 1
/// `recycled`, the rest the base offset of a fixed header.
/// - raw (bit 0 clear): the rest is a whole segment file; its header is
///   decoded, and when it does not decode the bytes are scanned under the
///   fixed header anyway;
/// - structured (bit 0 set): the rest is a list of (tag, n, bytes) pieces
///   assembled after the fixed header into raw bytes, zeros, frames sealed
///   under the segment's key (offsets forward, backward, with gaps) and torn
///   frames, so that the scanner's every rule is reached past the MACs.
pub fn scan(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let recycled = mode & 2 != 0;
    if mode & 1 == 0 {
        let header = match SegmentHeader::decode(rest) {
            Ok(h) => {
                assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h), "a header re-encodes");
                h
            }
            Err(_) => fixed_header(recycled, u64::from(mode >> 2)),
        };
        check_scan(rest, &header);
    } else {
        let header = fixed_header(recycled, u64::from(mode >> 2));
        let seg = build_segment(&header, rest);
        check_scan(&seg, &header);
    }
}

fn build_segment(header: &SegmentHeader, ops: &[u8]) -> Vec<u8> {
    let key = header.key.to_bytes();
    let mut out = header.encode().to_vec();
    let mut expected = header.base_offset;
    let mut i = 0;
    while i + 1 < ops.len() && out.len() < 1 << 20 {
        let (tag, n) = (ops[i], usize::from(ops[i + 1]));
        i += 2;
        let end = (i + n).min(ops.len());
        let bytes = &ops[i..end];
        match tag & 3 {
            0 => {
                out.extend_from_slice(bytes);
                i = end;
            }
            1 => out.resize(out.len() + n * 16, 0),
            _ => {
                i = end;
                let step = u64::from((tag >> 2) & 0x0f);
                let base = if tag & 0x40 != 0 { expected.saturating_sub(step) } else { expected.saturating_add(step) };
                let parts = 1 + n % 3;
                let chunk = bytes.len().div_ceil(parts).max(1);
                let mut recs: Vec<&[u8]> = bytes.chunks(chunk).collect();
                while recs.len() < parts {
                    recs.push(b"");
                }
                let f = make_frame(&key, "acme", "events", None, &recs, base, 1_700_000_000_000);
                if tag & 3 == 3 && tag & 0x80 != 0 {
                    out.extend_from_slice(&f[..f.len() / 2]); // torn
                } else {
                    out.extend_from_slice(&f);
                    expected = base.saturating_add(recs.len() as u64);
                }
            }
        }
    }
    out
}

fn check_scan(seg: &[u8], header: &SegmentHeader) {
    let s = scan_segment(seg, header);
    let len = seg.len() as u64;
    let start = SEGMENT_HEADER_LEN.min(seg.len()) as u64;
    let (mut end, mut expected) = (start, header.base_offset);
    for f in &s.frames {
        assert!(f.pos >= end && f.end() <= len, "frames in order and inside the buffer: {f:?} after {end}");
        assert!(f.records >= 1 && f.base_offset >= expected, "offsets never go back: {f:?} after {expected}");
        let h = check_frame(&seg[f.pos as usize..], &header.key).expect("a scanned frame authenticates");
        assert_eq!(
            (h.base_offset, h.records, h.frame_len() as u64, h.ts_ms),
            (f.base_offset, f.records, u64::from(f.len), f.ts_ms)
        );
        end = f.end();
        expected = f.next_offset();
    }
    assert_eq!(s.valid_end, end, "valid_end is where the last frame ends");
    assert_eq!(s.records(), s.frames.iter().map(|f| u64::from(f.records)).sum::<u64>());
    let mut after = start;
    for c in &s.corruptions {
        assert!(after <= c.at && c.at < c.resumes_at && c.resumes_at <= len, "{c:?}");
        assert!(s.frames.iter().any(|f| f.pos == c.resumes_at), "a corruption resumes at a frame: {c:?}");
        assert!(c.lost_offsets.0 <= c.lost_offsets.1, "{c:?}");
        after = c.resumes_at;
    }
    match s.tail {
        Tail::Clean => assert_eq!(s.valid_end, len),
        Tail::Zeros { at } => {
            assert_eq!(at, s.valid_end);
            assert!(seg[at as usize..].iter().all(|&b| b == 0));
        }
        Tail::Torn { at, .. } | Tail::Stale { at } => assert!(at == s.valid_end && at < len, "{:?}", s.tail),
    }
    assert!(!matches!(s.tail, Tail::Stale { .. }) || header.recycled, "only a recycled file has a stale tail");
    // Recovery cuts the file at valid_end: scanning what is left finds the
    // same frames and damage, and a clean end.
    let cut = scan_segment(&seg[..s.valid_end as usize], header);
    assert_eq!(cut.frames, s.frames);
    assert_eq!(cut.tail, Tail::Clean);
    let spans =
        |v: &[wal::segment::Corruption]| v.iter().map(|c| (c.at, c.resumes_at, c.lost_offsets)).collect::<Vec<_>>();
    assert_eq!(spans(&cut.corruptions), spans(&s.corruptions));
}

// ---------------------------------------------------------------- ingest body

const CONTENT_TYPES: [Option<&str>; 6] = [
    Some("application/x-ndjson"),
    Some("application/octet-stream"),
    Some("application/x-ndjson; charset=utf-8"),
    Some("APPLICATION/X-NDJSON"),
    Some("text/plain"),
    None,
];
const ENCODINGS: [Option<&str>; 6] = [None, Some("gzip"), Some("identity"), Some(" X-Gzip "), Some("br"), Some("")];

/// NDJSON/gzip body parser: the accept path's media type, Content-Encoding
/// and record splitting. First byte: content type (bits 0..2), encoding
/// (bits 3..5), the small record limit (bit 6); the rest is the body.
pub fn ingest_body(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else { return };
    let ct = CONTENT_TYPES[usize::from(sel & 7) % CONTENT_TYPES.len()];
    let ce = ENCODINGS[usize::from((sel >> 3) & 7) % ENCODINGS.len()];
    let max_record = if sel & 0x40 != 0 { 16 } else { 4096 };
    let max_inflated = 1 << 16;
    match api::http::headers::fuzz_ingest_body(ct, ce, body, max_inflated, max_record) {
        Ok(records) => {
            assert!(!records.is_empty(), "an accepted body holds a record");
            let ndjson = ct.is_some_and(|c| c.to_ascii_lowercase().starts_with("application/x-ndjson"));
            let identity = ce.is_none_or(|e| e.is_empty() || e == "identity");
            for r in &records {
                assert!(r.len() as u64 <= max_record, "a record over the limit was accepted");
                if ndjson {
                    // The line as sent, less its line end: other whitespace
                    // (a second `\r`, say) is JSON's and stays.
                    assert!(!r.contains(&b'\n'), "a record holds its line only");
                    // JSON text, checked by another reader than the
                    // broker's. What RFC 8259's grammar allows but a
                    // `Value` cannot hold is let through: numbers beyond
                    // f64 (`1e999`, §6) and unpaired surrogate escapes
                    // (`"\udddd"`, §8.2; I-JSON, RFC 7493, forbids them).
                    if let Err(e) = serde_json::from_slice::<serde_json::Value>(r) {
                        let m = e.to_string();
                        let grammatical =
                            ["number out of range", "lone leading surrogate", "unexpected end of hex escape"];
                        assert!(grammatical.iter().any(|g| m.starts_with(g)), "an accepted line is not JSON: {m}");
                    }
                }
            }
            if !ndjson {
                assert_eq!(records.len(), 1, "a binary body is one record");
                if identity {
                    assert_eq!(records[0], body);
                }
            }
            if ndjson && identity {
                let total: usize = records.iter().map(Vec::len).sum();
                assert!(total <= body.len());
            }
        }
        Err(e) => {
            // Every refusal is one of the contract's codes, with a message.
            let _ = e.code();
            assert!(!e.to_string().is_empty());
        }
    }
}

// ---------------------------------------------------------------- config

/// Config parser: `Config::from_toml` then `validate` over arbitrary UTF-8.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = config::Config::from_toml(text) else { return };
    if let Ok(valid) = cfg.validate() {
        assert_eq!(valid.listen.to_string().parse::<std::net::SocketAddr>().ok(), Some(valid.listen));
        assert_eq!(valid.tokens.tenants.len(), cfg.tenants.len(), "every tenant's token is parsed");
        assert_eq!(valid.priorities.len(), cfg.tenants.len(), "every tenant's priority is parsed");
    }
}

// ---------------------------------------------------------------- api json

macro_rules! round_trip {
    ($data:expr; $($t:ty),* $(,)?) => {$(
        if let Ok(v) = serde_json::from_slice::<$t>($data) {
            let back = serde_json::to_vec(&v).expect("a parsed value serialises");
            let again = serde_json::from_slice::<$t>(&back)
                .unwrap_or_else(|e| panic!("{} does not read back what it wrote: {e}", stringify!($t)));
            assert_eq!(again, v, "{} round trip", stringify!($t));
        }
    )*};
}

/// Lease and admin JSON: every request (and answer) type of `api`, parsed
/// from arbitrary bytes; what parses must serialise and read back equal.
pub fn api_json(data: &[u8]) {
    use protocol::lease::*;
    round_trip!(data;
        AcquireRequest, AcquireResponse, Lease, LeasedRecord, HeartbeatResponse, PoisonRecord,
        CommitRequest, CommitResponse, FailureClass, FailRequest, IdleReason,
        protocol::RewindTarget, protocol::ActionResult, protocol::ErrorCode, protocol::ErrorDetail, protocol::ErrorBody,
        protocol::IngestResponse, protocol::BreakerView, protocol::LaneCursor, protocol::DestinationStatus, protocol::DeadLetter,
    );
    // The exporter decodes each leased payload.
    if let Ok(l) = serde_json::from_slice::<Lease>(data) {
        for r in &l.records {
            let _ = protocol::b64_decode(&r.payload_b64);
        }
    }
    if let Ok(d) = serde_json::from_slice::<protocol::DeadLetter>(data) {
        let _ = protocol::b64_decode(&d.payload_b64);
    }
}

/// OTLP/HTTP protobuf bodies: `api::otlp::ExportRequest::decode` as each
/// signal, then the split into records.
pub fn otlp_proto(data: &[u8]) {
    otlp(data, api::otlp::OtlpEncoding::Protobuf);
}

/// OTLP/JSON bodies, the same way.
pub fn otlp_json(data: &[u8]) {
    otlp(data, api::otlp::OtlpEncoding::Json);
}

/// A request that decodes splits into records within the limits, each of
/// them one OTLP/JSON request of the same signal holding exactly one item;
/// items refused alone are counted, never dropped silently.
fn otlp(data: &[u8], encoding: api::otlp::OtlpEncoding) {
    use api::otlp::records::Limits;
    use api::otlp::{ExportRequest, OtlpEncoding, Signal};
    let limits = Limits { max_record_bytes: 1 << 14, max_total_bytes: 1 << 20 };
    let wide = Limits { max_record_bytes: u64::MAX, max_total_bytes: u64::MAX };
    for signal in [Signal::Logs, Signal::Traces, Signal::Metrics] {
        let Ok(request) = ExportRequest::decode(signal, encoding, data) else { continue };
        let Ok(items) = request.split(limits) else { continue };
        assert!(items.bytes <= limits.max_total_bytes, "records over the total cap");
        let all = request.split(wide).expect("a request that splits within limits splits without them");
        assert_eq!(all.len() as u64 + all.rejected, items.len() as u64 + items.rejected, "every item counted once");
        for record in items.records() {
            assert!(record.len() as u64 <= limits.max_record_bytes, "a record over the limit");
            let back = ExportRequest::decode(signal, OtlpEncoding::Json, record)
                .expect("a record is its signal's OTLP/JSON request");
            let again = back.split(wide).expect("a record splits");
            assert_eq!((again.len(), again.rejected), (1, 0), "a record holds exactly one item");
            assert_eq!(again.record(0), record, "a record splits into itself");
        }
    }
}

/// The exporter's OTLP record → ClickHouse row mapping over any payload.
pub fn otel_rows(data: &[u8]) {
    if let Ok((table, json)) = exporter::fuzz_otel_row(data, "fuzz-tenant") {
        assert!(exporter::FUZZ_OTEL_TABLES.contains(&table), "a row of a known table");
        assert!(json.is_object(), "a row is a JSON object");
        assert_eq!(json["ResourceAttributes"]["weir.tenant"], "fuzz-tenant", "the record's tenant, always");
    }
}
