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

mod events;

use crate::backoff::{Backoff, Jitter};
use crate::config::EventOrder;
use crate::gate::Gate;
use crate::sink::{Record, Refusal, Sink, SinkError};
use protocol::downstream_id::{batch_id_with, record_id, IdScope};
use std::time::Duration;

/// A record to send to dead letters, named as the commit names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Poisoned {
    /// Its place in the lease (unique; offsets repeat in a re-drive).
    pub position: u32,
    pub offset: u64,
    pub reason: String,
}

impl Poisoned {
    pub fn of(record: &Record, reason: String) -> Poisoned {
        Poisoned { position: record.position, offset: record.offset, reason }
    }
}

/// How a lease's delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything delivered except these poison records, in lease order.
    Delivered { poison: Vec<Poisoned> },
    /// Give the lease back as a retryable failure; `overload`: the sink
    /// said it is at capacity (see [`crate::concurrency`]).
    Retry { message: String, retry_after: Option<Duration>, overload: bool },
    /// The sink answered 410 Gone: release the lease (nothing
    /// dead-lettered, not counted by the breaker).
    Gone { message: String },
}

pub struct Deliverer<'a> {
    pub sink: &'a dyn Sink,
    pub backoff: Backoff,
    pub max_retries: u32,
    /// Whose batches these are: downstream ids cover the broker's id, the
    /// destination and the lease's lane (`protocol::downstream_id`).
    pub broker_id: String,
    pub destination: String,
    pub lane: String,
    /// The lease's binary body, which the records' payloads are slices of
    /// (empty for a v1 lease): a batch's payloads are hashed from it in
    /// one piece.
    pub body: bytes::Bytes,
    /// The longest sink `Retry-After` honoured (see `--max-retry-after-ms`).
    pub max_retry_after: Duration,
    /// Event mode: which records wait for which (`--event-order`).
    pub event_order: EventOrder,
    /// Event mode: the limit every request passes, across leases (None:
    /// no limit beyond [`events::RUNNERS`] per lease; tests).
    pub gate: Option<&'a Gate>,
}

impl Deliverer<'_> {
    /// The downstream id of one batch (`protocol::downstream_id`): the same for
    /// the same records, another for any other, across brokers. Computed
    /// only for a sink that sends one; the others get an empty key.
    fn key(&self, records: &[Record]) -> String {
        if !self.sink.sends_id() {
            return String::new();
        }
        let scope = IdScope { broker_id: &self.broker_id, destination: &self.destination, lane: &self.lane };
        batch_id_with(scope, records.iter().map(Record::id_fields), contiguous(&self.body, records))
    }

    /// The downstream id of one record (event mode): the same in its lane
    /// and in a re-drive, and whatever batch it was leased in.
    fn record_key(&self, record: &Record) -> String {
        record_id(&self.broker_id, &self.destination, record.id_fields())
    }

    /// One request of `records` under `key`, with local retries for quick
    /// retryable failures. An endpoint fault is never retried here: it does
    /// not pass with a short wait, and the breaker must see it at once.
    async fn attempt(&self, records: &[Record], key: &str, jitter: &mut Jitter) -> Result<(), SinkError> {
        let mut tries = 0;
        loop {
            match self.sink.deliver(records, key).await {
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
        if self.sink.one_per_request() {
            return self.deliver_events(records).await;
        }
        // Records the sink can never take as one record go straight to dead
        // letters: sending them would only fail (or worse, split them).
        let (mut poison, screened) = self.screen(records);
        let records = screened.as_deref().unwrap_or(records);
        let streak = self.sink.streak();
        let mut leaves = Leaves::default();
        let mut jitter = Jitter::seeded();
        // Each part on its own (see `Sink::parts`); usually one, as it is.
        let parts = self.sink.parts(records);
        let parts: Vec<&[Record]> = match &parts {
            Some(parts) => parts.iter().map(Vec::as_slice).collect(),
            None => vec![records],
        };
        for part in parts {
            if let Err(gave_back) = self.bisect(part, &mut poison, &mut leaves, &mut jitter).await {
                return gave_back;
            }
        }
        if let (Some(s), Some(refusal)) = (streak, leaves.only_refusal()) {
            if let Some(message) = s.judge(fingerprint(records), refusal) {
                return Outcome::Retry { message, retry_after: None, overload: false };
            }
        }
        poison.sort();
        Outcome::Delivered { poison }
    }

    /// Deliver `records`, bisecting rejected batches down to single poison
    /// records (added to `poison`); `Err` with the outcome when the sink's
    /// fault gives the lease back.
    async fn bisect(
        &self,
        records: &[Record],
        poison: &mut Vec<Poisoned>,
        leaves: &mut Leaves,
        jitter: &mut Jitter,
    ) -> Result<(), Outcome> {
        let streak = self.sink.streak();
        // Work list instead of recursion: (start, end) ranges still to deliver.
        let mut pending = vec![(0usize, records.len())];
        while let Some((start, end)) = pending.pop() {
            if start >= end {
                continue;
            }
            let batch = &records[start..end];
            match self.attempt(batch, &self.key(batch), jitter).await {
                Ok(()) => {
                    leaves.delivered = true;
                    if let Some(s) = streak {
                        s.delivered();
                    }
                }
                Err(SinkError::Poison { message, refusal }) if end - start == 1 => {
                    let record = &records[start];
                    if let (Some(s), Some(r)) = (streak, refusal) {
                        s.refused(&record.tenant, r);
                    }
                    leaves.refused(refusal);
                    poison.push(Poisoned::of(record, message));
                }
                Err(SinkError::Poison { .. }) => {
                    let mid = start + (end - start) / 2;
                    // Pushed in reverse so the left half goes first (order kept).
                    pending.push((mid, end));
                    pending.push((start, mid));
                }
                // The sink's fault: the lease goes back whole, nothing dead-lettered.
                Err(e @ SinkError::Endpoint { .. }) => return Err(self.failed(e)),
                Err(e @ (SinkError::Retryable { .. } | SinkError::Gone { .. })) => return Err(self.failed(e)),
            }
        }
        Ok(())
    }

    /// The outcome of a failure that gives the lease back (not a content
    /// refusal), its `Retry-After` capped.
    fn failed(&self, e: SinkError) -> Outcome {
        match e {
            SinkError::Endpoint { message, retry_after } => Outcome::Retry {
                message,
                retry_after: retry_after.map(|ra| ra.min(self.max_retry_after)),
                overload: false,
            },
            SinkError::Retryable { message, retry_after, overload, .. } => {
                Outcome::Retry { message, retry_after: retry_after.map(|ra| ra.min(self.max_retry_after)), overload }
            }
            SinkError::Gone { message } => Outcome::Gone { message },
            SinkError::Poison { message, .. } => Outcome::Retry { message, retry_after: None, overload: false },
        }
    }

    /// Split off the records the sink refuses unsent: their dead letters,
    /// and the records to send when any were refused (None: all of them).
    fn screen(&self, records: &[Record]) -> (Vec<Poisoned>, Option<Vec<Record>>) {
        let mut poison = Vec::new();
        if !records.iter().any(|r| self.sink.refuse(r).is_some()) {
            return (poison, None);
        }
        let mut kept = Vec::with_capacity(records.len());
        for r in records {
            match self.sink.refuse(r) {
                Some(reason) => poison.push(Poisoned::of(r, reason)),
                None => kept.push(r.clone()),
            }
        }
        (poison, Some(kept))
    }
}

/// The payloads of `records`, each followed by its `\n`, as one slice of
/// `body` — when they lie there back to back (records cut from a binary
/// lease in order); `None` otherwise. Checked, never assumed: every
/// payload's place is computed from its address and must follow the last.
fn contiguous<'b>(body: &'b bytes::Bytes, records: &[Record]) -> Option<&'b [u8]> {
    let base = body.as_ptr() as usize;
    let first = records.first()?;
    let start = (first.payload.as_ptr() as usize).checked_sub(base)?;
    let mut at = start;
    for r in records {
        // (An empty payload is not a slice of the body: no match, the slow path.)
        if (r.payload.as_ptr() as usize).checked_sub(base)? != at {
            return None;
        }
        at = at.checked_add(r.payload.len())?;
        if body.get(at) != Some(&b'\n') {
            return None;
        }
        at += 1;
    }
    body.get(start..at)
}

/// What a lease's single-record requests came to, for [`crate::streak`].
#[derive(Debug, Default)]
struct Leaves {
    /// Some request of the lease was accepted.
    delivered: bool,
    /// The one refusal every refused single record got so far; `mixed`
    /// once they differ or one had no sink answer behind it.
    refusal: Option<Refusal>,
    mixed: bool,
}

impl Leaves {
    fn refused(&mut self, refusal: Option<Refusal>) {
        match (self.refusal, refusal) {
            (_, None) => self.mixed = true,
            (None, Some(r)) => self.refusal = Some(r),
            (Some(a), Some(b)) => self.mixed |= a != b,
        }
    }

    /// The one refusal of a lease that delivered nothing.
    fn only_refusal(&self) -> Option<Refusal> {
        if self.delivered || self.mixed {
            return None;
        }
        self.refusal
    }
}

/// Names a lease's records for [`crate::streak`]: a lease given back is
/// offered again with exactly the same records, so the same value. Not an
/// id sent anywhere; a collision only makes a kept lease's count shared.
fn fingerprint(records: &[Record]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for r in records {
        r.offset.hash(&mut h);
        r.tenant.hash(&mut h);
        r.payload.hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod class_tests;

#[cfg(test)]
impl<'a> Deliverer<'a> {
    /// The tests' deliverer of `sink` for lane `lane` of broker `b1`,
    /// destination `d`: no local retries, a 1-2 ms backoff, batch order.
    pub(crate) fn for_test(sink: &'a dyn Sink, lane: String) -> Deliverer<'a> {
        Deliverer {
            sink,
            backoff: Backoff { base_ms: 1, max_ms: 2 },
            max_retries: 0,
            broker_id: "b1".into(),
            destination: "d".into(),
            lane,
            body: bytes::Bytes::new(),
            max_retry_after: Duration::from_secs(60),
            event_order: EventOrder::None,
            gate: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Delivery;
    use std::sync::Mutex;

    /// A deliverer of `sink` for lane `lane` of broker `b1`, destination
    /// `d`: no local retries, a 1-2 ms backoff.
    fn deliverer<'a>(sink: &'a dyn Sink, lane: String) -> Deliverer<'a> {
        Deliverer::for_test(sink, lane)
    }

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
                position: i as u32,
                offset: i,
                payload: if i == 37 { bytes::Bytes::from_static(b"bad") } else { bytes::Bytes::from_static(b"{}") },
                ..Record::default()
            })
            .collect();
        let d = deliverer(&sink, "normal/0".into());
        let out = d.deliver(&records).await;
        let bad = Poisoned { position: 37, offset: 37, reason: "400 bad record".into() };
        assert_eq!(out, Outcome::Delivered { poison: vec![bad] });
        let delivered = sink.delivered.lock().unwrap().clone();
        assert_eq!(delivered, (0..100).filter(|&i| i != 37).collect::<Vec<_>>());
        assert!(*sink.calls.lock().unwrap() <= 2 * 7 + 1, "bisection takes O(log n) calls per bad record");
    }

    /// ClickHouse `format=otel` in small: a batch is inserted table by table
    /// (`a…` rows, then `b…` rows); a `bad` row fails its table's insert,
    /// which inserts nothing of that table. Keeps every row inserted.
    struct TwoTables {
        parts: bool,
        inserted: Mutex<Vec<u64>>,
    }

    impl Sink for TwoTables {
        fn deliver<'a>(&'a self, records: &'a [Record], _key: &'a str) -> Delivery<'a> {
            Box::pin(async move {
                for table in [b"a", b"b"] {
                    let rows: Vec<&Record> = records
                        .iter()
                        .filter(|r| r.payload.starts_with(table) || (r.payload.starts_with(b"bad") && table == b"b"))
                        .collect();
                    if rows.iter().any(|r| r.payload.starts_with(b"bad")) {
                        return Err(SinkError::poison("Code: 27. DB::Exception: cannot parse"));
                    }
                    self.inserted.lock().unwrap().extend(rows.iter().map(|r| r.offset));
                }
                Ok(())
            })
        }
        fn parts(&self, records: &[Record]) -> Option<Vec<Vec<Record>>> {
            let (a, b): (Vec<Record>, Vec<Record>) = records.iter().cloned().partition(|r| r.payload.starts_with(b"a"));
            self.parts.then_some(vec![a, b])
        }
        fn describe(&self) -> String {
            "two tables".into()
        }
    }

    #[tokio::test]
    async fn a_refused_row_of_one_table_sends_no_row_of_another_twice() {
        let records: Vec<Record> = (0..16)
            .map(|i| Record {
                position: i as u32,
                offset: i,
                payload: bytes::Bytes::from(match i {
                    5 => "bad".to_string(),
                    i if i % 2 == 0 => format!("a{i}"),
                    i => format!("b{i}"),
                }),
                ..Record::default()
            })
            .collect();
        let sink = TwoTables { parts: true, inserted: Mutex::default() };
        let out = deliverer(&sink, "normal/0".into()).deliver(&records).await;
        let bad = Poisoned { position: 5, offset: 5, reason: "Code: 27. DB::Exception: cannot parse".into() };
        assert_eq!(out, Outcome::Delivered { poison: vec![bad] });
        let mut inserted = sink.inserted.lock().unwrap().clone();
        inserted.sort_unstable();
        assert_eq!(inserted, (0..16).filter(|&i| i != 5).collect::<Vec<_>>(), "every row once, none twice");
        // Without parts, the bisection sends table a's rows again.
        let whole = TwoTables { parts: false, inserted: Mutex::default() };
        deliverer(&whole, "normal/0".into()).deliver(&records).await;
        assert!(whole.inserted.lock().unwrap().len() > 15, "the test sees the duplicates it guards against");
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
                position: i as u32,
                offset: i,
                payload: if i % 4 == 1 { bytes::Bytes::from_static(b"a\nb") } else { bytes::Bytes::from_static(b"{}") },
                ..Record::default()
            })
            .collect();
        let d = deliverer(&sink, "normal/0".into());
        let out = d.deliver(&records).await;
        let why = "holds a newline".to_string();
        let at = |i: u32| Poisoned { position: i, offset: u64::from(i), reason: why.clone() };
        assert_eq!(out, Outcome::Delivered { poison: vec![at(1), at(5), at(9)] });
        assert_eq!(*sink.0.lock().unwrap(), vec![0, 2, 3, 4, 6, 7, 8]);
    }

    /// A sink that sends an id with each batch, and keeps them.
    struct Keyed(Mutex<Vec<String>>);

    impl Sink for Keyed {
        fn deliver<'a>(&'a self, _records: &'a [Record], key: &'a str) -> Delivery<'a> {
            self.0.lock().unwrap().push(key.to_string());
            Box::pin(async move { Ok(()) })
        }
        fn sends_id(&self) -> bool {
            true
        }
        fn describe(&self) -> String {
            "keyed".into()
        }
    }

    fn rec(lane: &str, offset: u64, p: &str) -> Record {
        Record {
            offset,
            lane: lane.into(),
            tenant: "acme".into(),
            topic: "events".into(),
            ts_ms: 7,
            payload: bytes::Bytes::copy_from_slice(p.as_bytes()),
            ..Record::default()
        }
    }

    /// Defect 1 of issue 19: two brokers delivered different records under
    /// the same key `d1/normal/2/0-0`.
    #[test]
    fn downstream_ids_differ_across_brokers_and_records_and_repeat_for_the_same_records() {
        let sink = Keyed(Mutex::new(Vec::new()));
        let d = Deliverer { destination: "d1".into(), ..deliverer(&sink, "normal/2".into()) };
        let a = [rec("normal/2", 0, "{\"a\":1}")];
        let first = d.key(&a);
        let other = Deliverer { broker_id: "b2".into(), ..d };
        assert_ne!(other.key(&a), first, "same offsets, two brokers");
        let d = Deliverer { broker_id: "b1".into(), ..other };
        assert_eq!(d.key(&a.clone()), first, "stable on redelivery");
        assert_ne!(d.key(&a), d.key(&[rec("normal/2", 0, "{\"b\":1}")]), "other record, same offset");
        // A re-drive mixes lanes whose offsets collide: the records' own lanes tell them apart.
        let redrive = Deliverer { lane: "dead_letters".into(), ..d };
        let x = [rec("normal/0", 3, "{}"), rec("low/1", 3, "{}")];
        let y = [rec("low/1", 3, "{}"), rec("normal/0", 3, "{}")];
        assert_ne!(redrive.key(&x), redrive.key(&y));
        assert_eq!(redrive.key(&x).len(), 32, "128 bits in hex");
    }

    /// The fast path (payloads hashed as one slice of the lease's body)
    /// and the slow one (one by one) give one id.
    #[test]
    fn a_batch_cut_from_a_binary_lease_has_the_id_its_records_give_one_by_one() {
        let body = bytes::Bytes::from_static(b"HEAD{\"a\":1}\nx\ny\n{}\n");
        let at = |from: usize, to: usize, offset: u64| Record {
            payload: body.slice(from..to),
            offset,
            lane: "normal/2".into(),
            tenant: "acme".into(),
            topic: "events".into(),
            ..Record::default()
        };
        let records = [at(4, 11, 0), at(12, 15, 1), at(16, 18, 2)];
        assert_eq!(contiguous(&body, &records), Some(&body[4..19]));
        assert_eq!(contiguous(&body, &[at(4, 11, 0), at(16, 18, 2)]), None, "a gap");
        let sink = Keyed(Mutex::new(Vec::new()));
        let d = Deliverer { destination: "d1".into(), body: body.clone(), ..deliverer(&sink, "normal/2".into()) };
        let fast = d.key(&records);
        let slow = Deliverer { body: bytes::Bytes::new(), ..d }.key(&records);
        assert_eq!(fast, slow);
    }

    #[tokio::test]
    async fn no_id_is_computed_for_a_sink_that_sends_none() {
        let sink = Rows(Mutex::new(Vec::new()));
        let d = Deliverer { destination: "d1".into(), ..deliverer(&sink, "normal/0".into()) };
        assert_eq!(d.key(&[rec("normal/0", 0, "{}")]), "");
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
            backoff: Backoff { base_ms: 1, max_ms: 2_000 },
            max_retries: 5,
            ..deliverer(&sink, "normal/0".into())
        };
        let started = std::time::Instant::now();
        let out = d.deliver(&[Record { payload: bytes::Bytes::from_static(b"{}"), ..Record::default() }]).await;
        assert!(started.elapsed() < Duration::from_secs(1), "slept on the sink's Retry-After");
        assert_eq!(*sink.0.lock().unwrap(), 1, "no local retry for a wait beyond the backoff ceiling");
        assert_eq!(
            out,
            Outcome::Retry { message: "503".into(), retry_after: Some(Duration::from_secs(60)), overload: true }
        );
    }
}
