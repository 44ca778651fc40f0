//! Delivering one lease: local retries with backoff for quick failures,
//! no local retry for timeouts (the breaker must see a slow sink fast), and
//! bisection of batches the sink rejects to isolate the poison records.
//!
//! Whose fault a failure is decides what happens to the records
//! (docs/sinks.md, "Whose fault a refusal is"):
//! - [`SinkError::Retryable`] (busy, down, slow) and [`SinkError::Endpoint`]
//!   (the endpoint refuses whatever it is sent: 3xx, 401, 403, 404, ...):
//!   the sink's fault. The lease goes back at once as a retryable failure —
//!   no bisection, so nothing is dead-lettered — and the broker's breaker
//!   counts it. Only quick `Retryable` failures are retried locally.
//! - [`SinkError::Poison`] (the content: 400, 413, 415, 422, ClickHouse data
//!   errors): bisected down to single records, which go to dead letters —
//!   unless the sink refuses every single record of several tenants with one
//!   answer and delivers nothing, which [`crate::streak`] judges a fault of
//!   the sink too (the lease goes back, bounded).

use crate::backoff::{Backoff, Jitter};
use crate::sink::{Record, Sink, SinkError};
use std::time::Duration;

/// How a lease's delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything delivered except these (offset, reason) poison records.
    Delivered { poison: Vec<(u64, String)> },
    /// Give the lease back as a retryable failure; `overload`: the sink
    /// said it is at capacity (see [`crate::concurrency`]).
    Retry { message: String, retry_after: Option<Duration>, overload: bool },
}

pub struct Deliverer<'a> {
    pub sink: &'a dyn Sink,
    pub backoff: Backoff,
    pub max_retries: u32,
    /// Prefix of the idempotency key: destination and lane.
    pub key_prefix: String,
    /// The lease holds records of several lanes (a re-drive of dead letters).
    pub mixed_lanes: bool,
    /// The longest sink `Retry-After` honoured (see `--max-retry-after-ms`).
    pub max_retry_after: Duration,
}

/// SHA-256 over each record's offset, length and bytes, in order; 128 bits
/// in hex. A tenant cannot make two different sets share a key (and so have
/// a deduplicating sink drop one) without a SHA-256 collision.
fn records_digest(records: &[Record]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((records.len() as u64).to_le_bytes());
    for r in records {
        h.update(r.offset.to_le_bytes());
        h.update((r.payload.len() as u64).to_le_bytes());
        h.update(&r.payload);
    }
    h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl Deliverer<'_> {
    /// The idempotency key of one batch: unique per set of records and
    /// stable when the same set is delivered again. Within a lane, offsets
    /// name records, so the range does. A re-drive lease mixes lanes whose
    /// offsets collide, so its key is a digest of the records themselves.
    fn key(&self, records: &[Record]) -> String {
        if self.mixed_lanes {
            return format!("{}/{}", self.key_prefix, records_digest(records));
        }
        let first = records.first().map_or(0, |r| r.offset);
        let last = records.last().map_or(0, |r| r.offset);
        format!("{}/{first}-{last}", self.key_prefix)
    }

    /// One sub-batch, with local retries for quick retryable failures. An
    /// endpoint fault is never retried here: it does not pass with a short
    /// wait, and the breaker must see it at once.
    async fn attempt(&self, records: &[Record], jitter: &mut Jitter) -> Result<(), SinkError> {
        let key = self.key(records);
        let mut tries = 0;
        loop {
            match self.sink.deliver(records, &key).await {
                // A wait longer than the backoff ceiling is not slept holding the
                // lease: the lease goes back with it (capped), for the broker to honour.
                Err(SinkError::Retryable { timed_out: false, retry_after, message, .. })
                    if tries < self.max_retries && retry_after.is_none_or(|ra| ra <= self.backoff.ceiling()) =>
                {
                    let delay = self.backoff.delay(tries, jitter.draw(), retry_after);
                    tracing::debug!(%message, ?delay, "retryable sink failure; retrying");
                    tokio::time::sleep(delay).await;
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Deliver `records`, bisecting rejected batches down to single poison records.
    pub async fn deliver(&self, records: &[Record]) -> Outcome {
        // Records the sink can never take as one record go straight to dead
        // letters: sending them would only fail (or worse, split them).
        let mut poison = Vec::new();
        let screened: Vec<Record>;
        let mut records = records;
        if records.iter().any(|r| self.sink.refuse(r).is_some()) {
            let mut kept = Vec::with_capacity(records.len());
            for r in records {
                match self.sink.refuse(r) {
                    Some(reason) => poison.push((r.offset, reason)),
                    None => kept.push(r.clone()),
                }
            }
            screened = kept;
            records = &screened;
        }
        let mut jitter = Jitter::seeded();
        // Work list instead of recursion: (start, end) ranges still to deliver.
        let mut pending = vec![(0usize, records.len())];
        while let Some((start, end)) = pending.pop() {
            if start >= end {
                continue;
            }
            match self.attempt(&records[start..end], &mut jitter).await {
                Ok(()) => {}
                Err(SinkError::Poison { message, .. }) if end - start == 1 => {
                    poison.push((records[start].offset, message));
                }
                Err(SinkError::Poison { .. }) => {
                    let mid = start + (end - start) / 2;
                    // Pushed in reverse so the left half goes first (order kept).
                    pending.push((mid, end));
                    pending.push((start, mid));
                }
                // The sink's fault: the lease goes back whole, nothing dead-lettered.
                Err(SinkError::Endpoint { message, retry_after }) => {
                    let retry_after = retry_after.map(|ra| ra.min(self.max_retry_after));
                    return Outcome::Retry { message, retry_after, overload: false };
                }
                Err(SinkError::Retryable { message, retry_after, overload, .. }) => {
                    let retry_after = retry_after.map(|ra| ra.min(self.max_retry_after));
                    return Outcome::Retry { message, retry_after, overload };
                }
            }
        }
        poison.sort();
        Outcome::Delivered { poison }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Delivery;
    use std::sync::Mutex;

    /// A sink that rejects any batch holding a record starting with "bad".
    struct Picky {
        delivered: Mutex<Vec<u64>>,
        calls: Mutex<u32>,
    }

    impl Sink for Picky {
        fn deliver<'a>(&'a self, records: &'a [Record], _key: &'a str) -> Delivery<'a> {
            Box::pin(async move {
                *self.calls.lock().unwrap() += 1;
                if records.iter().any(|r| r.payload.starts_with(b"bad")) {
                    return Err(SinkError::poison("400 bad record"));
                }
                self.delivered.lock().unwrap().extend(records.iter().map(|r| r.offset));
                Ok(())
            })
        }
        fn describe(&self) -> String {
            "picky".into()
        }
    }

    #[tokio::test]
    async fn one_bad_record_in_a_hundred_is_isolated_and_the_rest_delivered_in_order() {
        let sink = Picky { delivered: Mutex::new(Vec::new()), calls: Mutex::new(0) };
        let records: Vec<Record> = (0..100)
            .map(|i| Record {
                offset: i,
                payload: if i == 37 { bytes::Bytes::from_static(b"bad") } else { bytes::Bytes::from_static(b"{}") },
            })
            .collect();
        let d = Deliverer {
            mixed_lanes: false,
            max_retry_after: Duration::from_secs(60),
            sink: &sink,
            backoff: Backoff { base_ms: 1, max_ms: 2 },
            max_retries: 0,
            key_prefix: "t".into(),
        };
        let out = d.deliver(&records).await;
        assert_eq!(out, Outcome::Delivered { poison: vec![(37, "400 bad record".into())] });
        let delivered = sink.delivered.lock().unwrap().clone();
        assert_eq!(delivered, (0..100).filter(|&i| i != 37).collect::<Vec<_>>());
        assert!(*sink.calls.lock().unwrap() <= 2 * 7 + 1, "bisection takes O(log n) calls per bad record");
    }

    /// A sink that can never take records holding a newline as one record.
    struct Rows(Mutex<Vec<u64>>);

    impl Sink for Rows {
        fn deliver<'a>(&'a self, records: &'a [Record], _key: &'a str) -> Delivery<'a> {
            Box::pin(async move {
                assert!(records.iter().all(|r| !r.payload.contains(&b'\n')), "a refused record was sent");
                self.0.lock().unwrap().extend(records.iter().map(|r| r.offset));
                Ok(())
            })
        }
        fn refuse(&self, record: &Record) -> Option<String> {
            record.payload.contains(&b'\n').then(|| "holds a newline".to_string())
        }
        fn describe(&self) -> String {
            "rows".into()
        }
    }

    #[tokio::test]
    async fn records_the_sink_refuses_go_to_dead_letters_unsent_and_the_rest_in_one_call() {
        let sink = Rows(Mutex::new(Vec::new()));
        let records: Vec<Record> = (0..10)
            .map(|i| Record {
                offset: i,
                payload: if i % 4 == 1 { bytes::Bytes::from_static(b"a\nb") } else { bytes::Bytes::from_static(b"{}") },
            })
            .collect();
        let d = Deliverer {
            mixed_lanes: false,
            max_retry_after: Duration::from_secs(60),
            sink: &sink,
            backoff: Backoff { base_ms: 1, max_ms: 2 },
            max_retries: 0,
            key_prefix: "t".into(),
        };
        let out = d.deliver(&records).await;
        let why = "holds a newline".to_string();
        assert_eq!(out, Outcome::Delivered { poison: vec![(1, why.clone()), (5, why.clone()), (9, why)] });
        assert_eq!(*sink.0.lock().unwrap(), vec![0, 2, 3, 4, 6, 7, 8]);
    }

    #[test]
    fn redrive_keys_are_unique_per_set_and_stable_for_the_same_set() {
        let sink = Rows(Mutex::new(Vec::new()));
        let rec = |offset, p: &str| Record { offset, payload: bytes::Bytes::copy_from_slice(p.as_bytes()) };
        let d = Deliverer {
            sink: &sink,
            backoff: Backoff { base_ms: 1, max_ms: 2 },
            max_retries: 0,
            key_prefix: "d/dead_letters".into(),
            mixed_lanes: true,
            max_retry_after: Duration::from_secs(60),
        };
        // Offsets 3 and 9 of two lanes, then 3 and 9 of two others: same range, other records.
        let a = [rec(3, "{\"a\":1}"), rec(9, "{\"b\":1}")];
        let b = [rec(3, "{\"c\":1}"), rec(9, "{\"d\":1}")];
        assert_ne!(d.key(&a), d.key(&b));
        assert_eq!(d.key(&a), d.key(&a.clone()), "stable on redelivery");
        let lane = Deliverer { mixed_lanes: false, key_prefix: "d/normal/0".into(), ..d };
        assert_eq!(lane.key(&a), "d/normal/0/3-9");
    }

    /// A sink that answers 503 with a long Retry-After, counting calls.
    struct Busy(Mutex<u32>);

    impl Sink for Busy {
        fn deliver<'a>(&'a self, _records: &'a [Record], _key: &'a str) -> Delivery<'a> {
            Box::pin(async move {
                *self.0.lock().unwrap() += 1;
                Err(SinkError::Retryable {
                    message: "503".into(),
                    retry_after: Some(Duration::from_secs(100_000)),
                    timed_out: false,
                    overload: true,
                })
            })
        }
        fn describe(&self) -> String {
            "busy".into()
        }
    }

    #[tokio::test]
    async fn a_long_retry_after_is_never_slept_holding_the_lease_and_is_capped() {
        let sink = Busy(Mutex::new(0));
        let d = Deliverer {
            sink: &sink,
            backoff: Backoff { base_ms: 1, max_ms: 2_000 },
            max_retries: 5,
            key_prefix: "d/normal/0".into(),
            mixed_lanes: false,
            max_retry_after: Duration::from_secs(60),
        };
        let started = std::time::Instant::now();
        let out = d.deliver(&[Record { offset: 0, payload: bytes::Bytes::from_static(b"{}") }]).await;
        assert!(started.elapsed() < Duration::from_secs(1), "slept on the sink's Retry-After");
        assert_eq!(*sink.0.lock().unwrap(), 1, "no local retry for a wait beyond the backoff ceiling");
        assert_eq!(
            out,
            Outcome::Retry { message: "503".into(), retry_after: Some(Duration::from_secs(60)), overload: true }
        );
    }
}
