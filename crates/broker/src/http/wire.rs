//! Domain answers in their wire form: leases in the binary v2 format
//! (`protocol::lease_binary`) when the exporter asks for it, else — and dead
//! letters always — as the contract's JSON shapes, payloads base64-encoded
//! (records are bytes, not necessarily UTF-8). The only place the broker
//! encodes a payload.

use crate::leased::{Acquired, Lease, LeasedRecord};
use axum::http::{header, HeaderMap};
use protocol::lease::LeaseHead;
use protocol::lease_binary::{Encoder, Version};

/// Which lease format an acquire answers in, negotiated per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseFormat {
    /// v3 or v2: `Accept` names its media type (with a q above 0; the
    /// newest named wins).
    Binary(Version),
    /// v1, JSON: what an exporter from before v2 gets (it sends no such `Accept`).
    Json,
}

impl LeaseFormat {
    pub fn accepted(headers: &HeaderMap) -> LeaseFormat {
        let newest = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(protocol::lease_binary::accepted_version)
            .max();
        newest.map_or(LeaseFormat::Json, LeaseFormat::Binary)
    }
}

/// An acquire's answer as a binary body of `version`.
pub fn acquired_binary(a: Acquired, version: Version, broker_id: &str) -> Vec<u8> {
    let Some(l) = a.lease else {
        return protocol::lease_binary::encode_idle_as(version, a.idle, a.retry_after_ms);
    };
    let (head, records) = split(l);
    let bytes = records.iter().map(|r| r.payload.len()).sum();
    let mut enc = Encoder::new(version, broker_id, records.len(), bytes);
    for r in &records {
        enc.push_from(r.lane.as_deref(), r.offset, r.ts_ms, &r.tenant, &r.topic, &r.payload);
    }
    enc.finish(head)
}

pub fn acquired(a: Acquired, broker_id: &str) -> protocol::lease::AcquireResponse {
    let lease = a.lease.map(|l| {
        let (head, records) = split(l);
        let records = records.into_iter().map(record).collect();
        protocol::lease::Lease { head, broker_id: broker_id.to_string(), records }
    });
    protocol::lease::AcquireResponse { lease, idle: a.idle, retry_after_ms: a.retry_after_ms }
}

/// A domain lease as its wire fields (the same in both formats) and its records.
fn split(l: Lease) -> (LeaseHead, Vec<LeasedRecord>) {
    let head = LeaseHead {
        lane: l.lane.to_string(),
        id: l.id,
        destination: l.destination,
        from_offset: l.from_offset,
        to_offset: l.to_offset,
        lease_ms: l.lease_ms,
        probe: l.probe,
        redeliveries: l.redeliveries,
    };
    (head, l.records)
}

fn record(r: LeasedRecord) -> protocol::lease::LeasedRecord {
    protocol::lease::LeasedRecord {
        payload_b64: protocol::b64_encode(&r.payload),
        lane: r.lane,
        offset: r.offset,
        tenant: r.tenant.to_string(),
        topic: r.topic.to_string(),
        ts_ms: r.ts_ms,
    }
}

/// A stored dead letter as the admin API lists it.
pub fn dead_letter((id, r): (u64, crate::store::DeadLetterRecord)) -> protocol::DeadLetter {
    protocol::DeadLetter {
        id,
        payload_b64: protocol::b64_encode(&r.payload),
        lane: r.lane,
        offset: r.offset,
        tenant: r.tenant,
        topic: r.topic,
        ts_ms: r.ts_ms,
        error: r.error,
        failed_at_ms: r.failed_at_ms,
    }
}
