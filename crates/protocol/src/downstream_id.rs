//! Downstream ids: the one id Weir sends a sink for a batch or a record (a
//! webhook's `Idempotency-Key`, a re-drive's key, and what later sinks add).
//!
//! # The rule (contract v1.2)
//! An id is a BLAKE3 hash (truncated to `ID_BYTES`, 128 bits, in hex) of the
//! broker id, the destination, the lane and the ordered records it covers,
//! each as (its own lane, offset, `ts_ms`, tenant, topic, payload). So:
//! - the same records delivered again (a retry, a lease given back and
//!   offered again, an exporter restart) get the same id;
//! - any other records get another id, across brokers (each data directory
//!   has its own random broker id), destinations, lanes, and a data
//!   directory restored from a copy (a restored broker's new records differ
//!   in payload, tenant or `ts_ms` from those the copy's offsets held);
//! - a single record's id ([`record_id`]) is over its own lane, so a
//!   record re-driven from dead letters has the id it had in its lane.
//!
//! # Why this encoding
//! Every variable-length field is preceded by its length; the record
//! count leads the records' heads (offset, `ts_ms`, the index of its
//! (lane, tenant, topic) in a table of the batch's names, its payload's
//! length); the table follows with its own count; then the payloads, each
//! followed by `\n`. So no two different inputs share an encoding (a tenant
//! cannot shift bytes between its payload and a neighbour's, or between
//! topic and payload, to forge another batch's id). A domain tag keeps
//! these digests apart from any other use of the hash.
//!
//! # Why BLAKE3, payloads last
//! The exporter computes an id for every batch a webhook receives, so its
//! cost is per record exported. With the payloads last, a batch cut from a
//! binary lease hashes them as one contiguous slice of the lease's body
//! (each payload is already followed by its `\n` there,
//! `crate::lease_binary`): BLAKE3 hashes a large input on every SIMD lane
//! at once, where SHA-256 over each record cost the export path a quarter
//! of its throughput. Payloads fed one at a time give the same id.

/// Bytes of the digest kept: 128 bits, hex-encoded to 32 characters.
pub(crate) const ID_BYTES: usize = 16;

/// Separates these digests from every other use of SHA-256.
const DOMAIN: &[u8] = b"weir.downstream-id.v1";

/// One record as an id covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRecord<'a> {
    /// The lane the record was acknowledged in (`normal/2`), also in a
    /// re-drive of dead letters.
    pub lane: &'a str,
    /// Its offset in that lane.
    pub offset: u64,
    /// When it was acknowledged, ms since the Unix epoch.
    pub ts_ms: u64,
    /// The tenant that sent it.
    pub tenant: &'a str,
    /// Its topic.
    pub topic: &'a str,
    /// Its payload, as acknowledged.
    pub payload: &'a [u8],
}

/// Who the id is for: the broker (its data directory's id), the
/// destination and the lease's lane (`dead_letters` for a re-drive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdScope<'a> {
    /// The broker's data directory id (`plumbing::datadir::BrokerId`).
    pub broker_id: &'a str,
    /// The destination's name.
    pub destination: &'a str,
    /// The lease's lane (`dead_letters` for a re-drive).
    pub lane: &'a str,
}

/// Hash `bytes` preceded by their length.
fn field(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// The id of a batch: `records` in the order they are sent.
pub(crate) fn batch_id<'a>(scope: IdScope<'_>, records: impl ExactSizeIterator<Item = IdRecord<'a>> + Clone) -> String {
    batch_id_with(scope, records, None)
}

/// The id of a batch, as `batch_id` gives it, from the payloads as one slice when the caller holds
/// them contiguously, each followed by `\n` (a binary lease's body): the
/// same id, hashed at once. `stream` must be exactly that concatenation.
pub fn batch_id_with<'a>(
    scope: IdScope<'_>,
    records: impl ExactSizeIterator<Item = IdRecord<'a>> + Clone,
    stream: Option<&[u8]>,
) -> String {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    field(&mut h, scope.broker_id.as_bytes());
    field(&mut h, scope.destination.as_bytes());
    field(&mut h, scope.lane.as_bytes());
    h.update(&(records.len() as u64).to_le_bytes());
    let mut names: Vec<(&str, &str, &str)> = Vec::new();
    // Heads go through a buffer on the stack, hashed a few KiB at a time:
    // large enough for BLAKE3's SIMD, with no allocation (a heap buffer of
    // a whole lease's heads was fresh pages, and faults, every batch).
    let mut heads = [0u8; HEADS_BUF];
    let mut used = 0;
    for r in records.clone() {
        let triple = (r.lane, r.tenant, r.topic);
        let idx = match names.iter().rposition(|n| same(n, &triple)) {
            Some(i) => i,
            None => {
                names.push(triple);
                names.len() - 1
            }
        };
        if used + HEAD_BYTES > HEADS_BUF {
            h.update(&heads[..used]);
            used = 0;
        }
        let head = &mut heads[used..used + HEAD_BYTES];
        head[..8].copy_from_slice(&r.offset.to_le_bytes());
        head[8..16].copy_from_slice(&r.ts_ms.to_le_bytes());
        head[16..20].copy_from_slice(&u32::try_from(idx).unwrap_or(u32::MAX).to_le_bytes());
        head[20..].copy_from_slice(&(r.payload.len() as u64).to_le_bytes());
        used += HEAD_BYTES;
    }
    h.update(&heads[..used]);
    h.update(&(names.len() as u64).to_le_bytes());
    for (lane, tenant, topic) in names {
        field(&mut h, lane.as_bytes());
        field(&mut h, tenant.as_bytes());
        field(&mut h, topic.as_bytes());
    }
    match stream {
        Some(all) => {
            debug_assert_eq!(all.len(), records.clone().map(|r| r.payload.len() + 1).sum::<usize>());
            h.update(all);
        }
        None => {
            for r in records {
                h.update(r.payload);
                h.update(b"\n");
            }
        }
    }
    hex(&h.finalize().as_bytes()[..ID_BYTES])
}

/// Bytes of a record's head: offset, ts_ms, name index, payload length.
const HEAD_BYTES: usize = 28;

/// The stack buffer the heads are hashed from (146 heads).
const HEADS_BUF: usize = 4088;

/// The same names: by address first (a lease's records share them), then
/// by bytes.
fn same(left: &(&str, &str, &str), right: &(&str, &str, &str)) -> bool {
    let eq = |x: &str, y: &str| std::ptr::eq(x, y) || x == y;
    eq(left.0, right.0) && eq(left.1, right.1) && eq(left.2, right.2)
}

/// The id of one record: a batch of it alone, in its own lane.
pub fn record_id(broker_id: &str, destination: &str, record: IdRecord<'_>) -> String {
    // (`std::iter::once` is Clone: the batch of one.)
    batch_id(IdScope { broker_id, destination, lane: record.lane }, std::iter::once(record))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(offset: u64, tenant: &'a str, payload: &'a [u8]) -> IdRecord<'a> {
        IdRecord { lane: "normal/0", offset, ts_ms: 7, tenant, topic: "events", payload }
    }

    const SCOPE: IdScope<'static> = IdScope { broker_id: "b1", destination: "d1", lane: "normal/0" };

    #[test]
    fn same_records_same_id_and_every_field_changes_it() {
        let a = [rec(0, "acme", b"{}"), rec(1, "acme", b"x")];
        let id = batch_id(SCOPE, a.iter().copied());
        assert_eq!(id.len(), 2 * ID_BYTES);
        assert_eq!(id, batch_id(SCOPE, a.iter().copied()), "stable");
        let other_broker = IdScope { broker_id: "b2", ..SCOPE };
        assert_ne!(id, batch_id(other_broker, a.iter().copied()), "two brokers, same offsets");
        assert_ne!(id, batch_id(IdScope { destination: "d2", ..SCOPE }, a.iter().copied()));
        assert_ne!(id, batch_id(IdScope { lane: "low/0", ..SCOPE }, a.iter().copied()));
        let variants = [
            [rec(0, "acme", b"{}"), rec(1, "acme", b"y")],
            [rec(0, "acme", b"{}"), rec(2, "acme", b"x")],
            [rec(0, "beta", b"{}"), rec(1, "acme", b"x")],
            [IdRecord { ts_ms: 8, ..rec(0, "acme", b"{}") }, rec(1, "acme", b"x")],
            [IdRecord { topic: "other", ..rec(0, "acme", b"{}") }, rec(1, "acme", b"x")],
            [IdRecord { lane: "low/0", ..rec(0, "acme", b"{}") }, rec(1, "acme", b"x")],
            [rec(1, "acme", b"x"), rec(0, "acme", b"{}")],
        ];
        for v in variants {
            assert_ne!(id, batch_id(SCOPE, v.iter().copied()), "{v:?}");
        }
    }

    #[test]
    fn bytes_cannot_move_between_fields_or_records() {
        // The same concatenation, split differently.
        let a = [IdRecord { tenant: "ab", topic: "c", ..rec(0, "", b"") }];
        let b = [IdRecord { tenant: "a", topic: "bc", ..rec(0, "", b"") }];
        assert_ne!(batch_id(SCOPE, a.iter().copied()), batch_id(SCOPE, b.iter().copied()));
        let one = [rec(0, "t", b"xy")];
        let two = [rec(0, "t", b"x"), rec(0, "t", b"y")];
        assert_ne!(batch_id(SCOPE, one.iter().copied()), batch_id(SCOPE, two.iter().copied()));
    }

    /// The message of docs/sinks.md built whole, then hashed: what
    /// `batch_id` streams must be exactly this, also past its buffer.
    fn reference_id(scope: IdScope<'_>, records: &[IdRecord<'_>]) -> String {
        let mut m: Vec<u8> = DOMAIN.to_vec();
        let field = |m: &mut Vec<u8>, b: &[u8]| {
            m.extend_from_slice(&(b.len() as u64).to_le_bytes());
            m.extend_from_slice(b);
        };
        field(&mut m, scope.broker_id.as_bytes());
        field(&mut m, scope.destination.as_bytes());
        field(&mut m, scope.lane.as_bytes());
        m.extend_from_slice(&(records.len() as u64).to_le_bytes());
        let mut names: Vec<(&str, &str, &str)> = Vec::new();
        for r in records {
            let t = (r.lane, r.tenant, r.topic);
            let idx = names.iter().position(|n| *n == t).unwrap_or_else(|| {
                names.push(t);
                names.len() - 1
            });
            m.extend_from_slice(&r.offset.to_le_bytes());
            m.extend_from_slice(&r.ts_ms.to_le_bytes());
            m.extend_from_slice(&(idx as u32).to_le_bytes());
            m.extend_from_slice(&(r.payload.len() as u64).to_le_bytes());
        }
        m.extend_from_slice(&(names.len() as u64).to_le_bytes());
        for (lane, tenant, topic) in names {
            field(&mut m, lane.as_bytes());
            field(&mut m, tenant.as_bytes());
            field(&mut m, topic.as_bytes());
        }
        for r in records {
            m.extend_from_slice(r.payload);
            m.push(b'\n');
        }
        hex(&blake3::hash(&m).as_bytes()[..ID_BYTES])
    }

    #[test]
    fn the_id_is_the_documented_message_hashed_also_past_the_heads_buffer() {
        let tenants = ["acme", "beta", "gamma"];
        let many: Vec<IdRecord<'_>> = (0..1_000u64)
            .map(|i| IdRecord { ts_ms: i * 7, ..rec(i, tenants[(i % 3) as usize], b"{\"k\":1}") })
            .collect();
        assert_eq!(batch_id(SCOPE, many.iter().copied()), reference_id(SCOPE, &many));
        assert_eq!(batch_id(SCOPE, many[..1].iter().copied()), reference_id(SCOPE, &many[..1]));
    }

    #[test]
    fn payloads_given_as_one_slice_give_the_same_id() {
        let a = [rec(0, "acme", b"{}"), rec(1, "acme", b"x\ny")];
        let stream = b"{}\nx\ny\n";
        assert_eq!(batch_id_with(SCOPE, a.iter().copied(), Some(stream)), batch_id(SCOPE, a.iter().copied()));
    }

    #[test]
    fn a_record_id_is_the_same_from_its_lane_and_from_a_redrive() {
        let r = rec(5, "acme", b"{\"a\":1}");
        let from_lane = batch_id(SCOPE, std::iter::once(r));
        assert_eq!(record_id("b1", "d1", r), from_lane);
        let redrive = IdScope { lane: crate::lease::DEAD_LETTERS_LANE, ..SCOPE };
        assert_ne!(batch_id(redrive, std::iter::once(r)), from_lane, "a re-drive batch is another batch");
    }
}
