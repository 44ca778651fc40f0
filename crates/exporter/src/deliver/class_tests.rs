//! One test per class of sink failure (issue 19, defect 9): whose fault it
//! is decides whether records are bisected to dead letters or kept.

use super::*;
use crate::sink::Delivery;
use crate::streak::{RefusalStreak, MIN_ROW};
use std::sync::{Arc, Mutex};

/// A sink answering every request with what `answer` says of its records,
/// counting requests by size; it keeps a row of refusals like an HTTP sink.
struct Scripted {
    answer: fn(&[Record]) -> Result<(), SinkError>,
    calls: Mutex<Vec<usize>>,
    streak: RefusalStreak,
}

impl Scripted {
    fn new(answer: fn(&[Record]) -> Result<(), SinkError>) -> Scripted {
        Scripted { answer, calls: Mutex::new(Vec::new()), streak: RefusalStreak::new() }
    }
    fn calls(&self) -> Vec<usize> {
        self.calls.lock().unwrap().clone()
    }
}

impl Sink for Scripted {
    fn deliver<'a>(&'a self, records: &'a [Record], _key: &'a str) -> Delivery<'a> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(records.len());
            (self.answer)(records)
        })
    }
    fn streak(&self) -> Option<&RefusalStreak> {
        Some(&self.streak)
    }
    fn describe(&self) -> String {
        "scripted".into()
    }
}

fn records(tenants: &[&str], n: usize, bad: fn(usize) -> bool) -> Vec<Record> {
    let names: Vec<Arc<str>> = tenants.iter().map(|t| Arc::from(*t)).collect();
    (0..n)
        .map(|i| Record {
            position: i as u32,
            offset: i as u64,
            ts_ms: 0,
            lane: Arc::from("normal/0"),
            tenant: Arc::clone(&names[i % names.len()]),
            topic: Arc::from("events"),
            payload: bytes::Bytes::from(if bad(i) { "bad".to_string() } else { format!("{{\"i\":{i}}}") }),
        })
        .collect()
}

fn deliverer(sink: &dyn Sink) -> Deliverer<'_> {
    Deliverer {
        sink,
        backoff: Backoff { base_ms: 1, max_ms: 2 },
        max_retries: 3,
        broker_id: "b".into(),
        destination: "d".into(),
        lane: "normal/0".into(),
        body: bytes::Bytes::new(),
        max_retry_after: Duration::from_secs(60),
        event_order: crate::config::EventOrder::None,
        gate: None,
    }
}

fn content_400(records: &[Record]) -> Result<(), SinkError> {
    if records.iter().any(|r| r.payload.starts_with(b"bad")) {
        return Err(SinkError::Poison { message: "HTTP 400: bad".into(), refusal: Some(Refusal::Status(400)) });
    }
    Ok(())
}

#[tokio::test]
async fn an_endpoint_fault_goes_back_whole_at_once_never_bisected_nor_dead_lettered() {
    let sink = Scripted::new(|_| {
        Err(SinkError::Endpoint { message: "HTTP 307: redirect".into(), retry_after: Some(Duration::from_secs(600)) })
    });
    let out = deliverer(&sink).deliver(&records(&["a", "b"], 40, |_| false)).await;
    assert_eq!(
        out,
        Outcome::Retry {
            message: "HTTP 307: redirect".into(),
            retry_after: Some(Duration::from_secs(60)),
            overload: false
        }
    );
    assert_eq!(sink.calls(), vec![40], "one request: no bisection, no local retry");
}

#[tokio::test]
async fn a_retryable_failure_goes_back_whole_after_its_local_retries() {
    let sink = Scripted::new(|_| {
        Err(SinkError::Retryable { message: "HTTP 503".into(), retry_after: None, timed_out: false, overload: true })
    });
    let out = deliverer(&sink).deliver(&records(&["a"], 10, |_| false)).await;
    assert_eq!(out, Outcome::Retry { message: "HTTP 503".into(), retry_after: None, overload: true });
    assert_eq!(sink.calls(), vec![10; 4], "the whole batch, retried locally, never bisected");
}

#[tokio::test]
async fn content_refusals_of_one_tenant_bisect_to_dead_letters_however_many() {
    // Every record of one tenant is bad: a row of one tenant is never the sink's fault.
    let sink = Scripted::new(content_400);
    let out = deliverer(&sink).deliver(&records(&["acme"], 32, |_| true)).await;
    let Outcome::Delivered { poison } = out else { panic!("{out:?}") };
    assert_eq!(poison.len(), 32);
    assert!(poison.iter().all(|p| p.reason == "HTTP 400: bad"));
    assert_eq!(sink.calls().iter().filter(|&&n| n == 1).count(), 32, "bisected down to single records");
}

#[tokio::test]
async fn one_content_status_for_every_record_of_several_tenants_is_a_fault_of_the_sink() {
    let sink = Scripted::new(content_400);
    let lease = records(&["acme", "globex"], MIN_ROW as usize * 2, |_| true);
    let out = deliverer(&sink).deliver(&lease).await;
    let Outcome::Retry { message, overload: false, .. } = out else { panic!("{out:?}") };
    assert!(message.contains("HTTP 400") && message.contains("fault of the sink"), "{message}");
}

#[tokio::test]
async fn a_lease_that_delivered_anything_dead_letters_its_refused_records_whatever_the_row() {
    // Bad records of two tenants, many in a row, beside one good record:
    // the sink works, so the good one is delivered and the rest dead-lettered.
    let sink = Scripted::new(content_400);
    let lease = records(&["acme", "globex"], MIN_ROW as usize * 4, |i| i != 0);
    let out = deliverer(&sink).deliver(&lease).await;
    let Outcome::Delivered { poison } = out else { panic!("{out:?}") };
    assert_eq!(poison.len(), MIN_ROW as usize * 4 - 1);
    assert!(poison.iter().all(|p| p.position != 0));
}

#[tokio::test]
async fn different_content_statuses_are_the_records_fault() {
    let sink = Scripted::new(|records| match records.first().map(|r| r.position % 2) {
        Some(0) if records.len() == 1 => {
            Err(SinkError::Poison { message: "400".into(), refusal: Some(Refusal::Status(400)) })
        }
        _ => Err(SinkError::Poison { message: "422".into(), refusal: Some(Refusal::Status(422)) }),
    });
    let lease = records(&["acme", "globex"], MIN_ROW as usize * 2, |_| true);
    let out = deliverer(&sink).deliver(&lease).await;
    let Outcome::Delivered { poison } = out else { panic!("{out:?}") };
    assert_eq!(poison.len(), MIN_ROW as usize * 2);
}
