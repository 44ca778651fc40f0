//! Downstream ids: the one id Weir sends a sink for a batch or a record (a
//! webhook's `Idempotency-Key`, a re-drive's key, and what later sinks add).
//!
//! # The rule (contract v1.2)
//! An id is a SHA-256 (truncated to [`ID_BYTES`], 128 bits, in hex) of the
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
//! Every variable-length field is preceded by its length and the record
//! count leads the list, so no two different inputs share an encoding (a
//! tenant cannot shift bytes between its payload and a neighbour's, or
//! between topic and payload, to forge another batch's id). A domain tag
//! keeps these digests apart from any other SHA-256 use.

use sha2::{Digest, Sha256};

/// Bytes of the digest kept: 128 bits, hex-encoded to 32 characters.
pub const ID_BYTES: usize = 16;

/// Separates these digests from every other use of SHA-256.
const DOMAIN: &[u8] = b"weir.downstream-id.v1";

/// One record as an id covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRecord<'a> {
    /// The lane the record was acknowledged in (`normal/2`), also in a
    /// re-drive of dead letters.
    pub lane: &'a str,
    pub offset: u64,
    pub ts_ms: u64,
    pub tenant: &'a str,
    pub topic: &'a str,
    pub payload: &'a [u8],
}

/// Who the id is for: the broker (its data directory's id), the
/// destination and the lease's lane (`dead_letters` for a re-drive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdScope<'a> {
    pub broker_id: &'a str,
    pub destination: &'a str,
    pub lane: &'a str,
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The id of a batch: `records` in the order they are sent.
pub fn batch_id<'a>(scope: IdScope<'_>, records: impl ExactSizeIterator<Item = IdRecord<'a>>) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    field(&mut h, scope.broker_id.as_bytes());
    field(&mut h, scope.destination.as_bytes());
    field(&mut h, scope.lane.as_bytes());
    h.update((records.len() as u64).to_le_bytes());
    for r in records {
        field(&mut h, r.lane.as_bytes());
        h.update(r.offset.to_le_bytes());
        h.update(r.ts_ms.to_le_bytes());
        field(&mut h, r.tenant.as_bytes());
        field(&mut h, r.topic.as_bytes());
        field(&mut h, r.payload);
    }
    hex(&h.finalize()[..ID_BYTES])
}

/// The id of one record: a batch of it alone, in its own lane.
pub fn record_id(broker_id: &str, destination: &str, record: IdRecord<'_>) -> String {
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

    #[test]
    fn a_record_id_is_the_same_from_its_lane_and_from_a_redrive() {
        let r = rec(5, "acme", b"{\"a\":1}");
        let from_lane = batch_id(SCOPE, std::iter::once(r));
        assert_eq!(record_id("b1", "d1", r), from_lane);
        let redrive = IdScope { lane: crate::lease::DEAD_LETTERS_LANE, ..SCOPE };
        assert_ne!(batch_id(redrive, std::iter::once(r)), from_lane, "a re-drive batch is another batch");
    }
}
