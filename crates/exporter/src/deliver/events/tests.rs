//! Event mode against a sink that records each request.

use super::*;
use crate::concurrency::{Aimd, Mode};
use crate::metrics::ExporterMetrics;
use crate::sink::{Delivery, Refusal, Sink};
use std::sync::Arc;
use std::time::Duration;

/// Answers by payload: `bad` → 400, `gone` → 410, `down` → 404 (the
/// endpoint's fault), anything else 2xx after a short, varying wait.
#[derive(Default)]
struct Events {
    /// (key, offset, tenant) of every request, in arrival order.
    seen: std::sync::Mutex<Vec<(String, u64, String)>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl Sink for Events {
    fn deliver<'a>(&'a self, records: &'a [Record], key: &'a str) -> Delivery<'a> {
        Box::pin(async move {
            assert_eq!(records.len(), 1, "one record per request");
            let r = &records[0];
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1 + r.offset % 3)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.seen.lock().unwrap().push((key.to_string(), r.offset, r.tenant.to_string()));
            match &r.payload[..] {
                b"bad" => Err(SinkError::Poison { message: "HTTP 400".into(), refusal: Some(Refusal::Status(400)) }),
                b"gone" => Err(SinkError::Gone { message: "HTTP 410".into() }),
                b"down" => Err(SinkError::Endpoint { message: "HTTP 404".into(), retry_after: None }),
                _ => Ok(()),
            }
        })
    }
    fn sends_id(&self) -> bool {
        true
    }
    fn one_per_request(&self) -> bool {
        true
    }
    fn describe(&self) -> String {
        "events".into()
    }
}

fn records(payloads: &[&str]) -> Vec<Record> {
    let tenants = ["acme", "globex", "initech"];
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| Record {
            position: i as u32,
            offset: i as u64,
            lane: "normal/0".into(),
            tenant: tenants[i % 3].into(),
            topic: "events".into(),
            payload: bytes::Bytes::copy_from_slice(p.as_bytes()),
            ..Record::default()
        })
        .collect()
}

fn deliverer<'a>(sink: &'a dyn Sink, order: EventOrder, gate: Option<&'a crate::gate::Gate>) -> Deliverer<'a> {
    Deliverer { event_order: order, gate, ..Deliverer::for_test(sink, "normal/0".into()) }
}

#[tokio::test]
async fn each_record_goes_alone_under_its_own_id_and_a_refused_one_is_dead_lettered_alone() {
    let sink = Events::default();
    let mut payloads = vec!["{}"; 40];
    payloads[7] = "bad";
    let recs = records(&payloads);
    let d = deliverer(&sink, EventOrder::None, None);
    let out = d.deliver(&recs).await;
    assert_eq!(
        out,
        Outcome::Delivered { poison: vec![Poisoned { position: 7, offset: 7, reason: "HTTP 400".into() }] }
    );
    let seen = sink.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 40, "one request per record, none sent twice");
    for (key, offset, _) in &seen {
        let r = &recs[*offset as usize];
        assert_eq!(key, &protocol::downstream_id::record_id("b1", "d", r.id_fields()), "offset {offset}");
    }
    assert!(sink.most_in_flight.load(Ordering::SeqCst) > 1, "requests ran one at a time");
}

#[tokio::test]
async fn a_sink_fault_gives_the_lease_back_whole_and_a_410_releases_it_with_nothing_dead_lettered() {
    for (fault, expect_gone) in [("down", false), ("gone", true)] {
        let sink = Events::default();
        let mut payloads = vec!["{}"; 200];
        payloads[3] = "bad";
        payloads[5] = fault;
        let out = deliverer(&sink, EventOrder::None, None).deliver(&records(&payloads)).await;
        match out {
            Outcome::Gone { .. } => assert!(expect_gone, "{fault}"),
            Outcome::Retry { overload: false, .. } => assert!(!expect_gone, "{fault}"),
            other => panic!("{fault}: {other:?}"),
        }
        assert!(sink.seen.lock().unwrap().len() < 200, "{fault}: requests went on after the lease failed");
    }
}

#[tokio::test]
async fn tenant_order_keeps_each_tenants_offsets_in_order_within_the_gates_limit() {
    let metrics = ExporterMetrics::new();
    let gate = crate::gate::Gate::new(Aimd::new(Mode::Pinned(3), 8), &metrics, "d");
    let sink = Arc::new(Events::default());
    let recs = records(&vec!["{}"; 90]);
    let out = deliverer(&*sink, EventOrder::Tenant, Some(&gate)).deliver(&recs).await;
    assert_eq!(out, Outcome::Delivered { poison: vec![] });
    let seen = sink.seen.lock().unwrap().clone();
    for tenant in ["acme", "globex", "initech"] {
        let offsets: Vec<u64> = seen.iter().filter(|(_, _, t)| t == tenant).map(|(_, o, _)| *o).collect();
        assert_eq!(offsets.len(), 30, "{tenant}");
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{tenant} out of order: {offsets:?}");
    }
    let most = sink.most_in_flight.load(Ordering::SeqCst);
    assert!((2..=3).contains(&most), "{most} requests at once: tenants overlap, within the limit of 3");
}
