//! Domain answers in their wire form: leases and dead letters as the
//! contract's JSON shapes, payloads base64-encoded (records are bytes, not
//! necessarily UTF-8). The only place the broker encodes a payload.

use crate::leased::{Acquired, Lease, LeasedRecord};

pub fn acquired(a: Acquired) -> api::lease::AcquireResponse {
    api::lease::AcquireResponse { lease: a.lease.map(lease), idle: a.idle, retry_after_ms: a.retry_after_ms }
}

fn lease(l: Lease) -> api::lease::Lease {
    api::lease::Lease {
        lane: l.lane.to_string(),
        id: l.id,
        destination: l.destination,
        from_offset: l.from_offset,
        to_offset: l.to_offset,
        lease_ms: l.lease_ms,
        probe: l.probe,
        redeliveries: l.redeliveries,
        records: l.records.into_iter().map(record).collect(),
    }
}

fn record(r: LeasedRecord) -> api::lease::LeasedRecord {
    api::lease::LeasedRecord {
        payload_b64: api::b64_encode(&r.payload),
        offset: r.offset,
        tenant: r.tenant,
        topic: r.topic,
        ts_ms: r.ts_ms,
    }
}

/// A stored dead letter as the admin API lists it.
pub fn dead_letter((id, r): (u64, crate::store::DeadLetterRecord)) -> api::DeadLetter {
    api::DeadLetter {
        id,
        payload_b64: api::b64_encode(&r.payload),
        lane: r.lane,
        offset: r.offset,
        tenant: r.tenant,
        topic: r.topic,
        ts_ms: r.ts_ms,
        error: r.error,
        failed_at_ms: r.failed_at_ms,
    }
}
