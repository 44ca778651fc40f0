//! Sinks that cannot be mistaken for delivery: record framing (one record is
//! one record downstream, whatever its bytes), redirects that are not
//! deliveries, and a file sink that is crash-safe at each step. Real broker
//! and exporter processes; sinks are a loopback HTTP server, files and a
//! real ClickHouse server.

mod common;

use common::clickhouse::{start_clickhouse, KillOnDrop};
use common::sink::TestSink;
use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What a consumer does with one line, per docs/sinks.md: an object whose
/// only key is `payload_b64` stands for the decoded bytes; any other line is
/// the record itself. Written here from the documentation, not borrowed from
/// the exporter, so that the test checks the documented rule.
fn unframe(line: &[u8]) -> Vec<u8> {
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(line) {
        if m.len() == 1 {
            if let Some(serde_json::Value::String(b64)) = m.get("payload_b64") {
                return protocol::b64_decode(b64).expect("a framed line holds valid base64");
            }
        }
    }
    line.to_vec()
}

/// Records of a line-oriented output: split on `\n` only, as NDJSON readers do.
fn records_of(bytes: &[u8]) -> Vec<Vec<u8>> {
    assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "output does not end with a newline");
    match bytes.strip_suffix(b"\n") {
        Some(body) => body.split(|&b| b == b'\n').map(unframe).collect(),
        None => Vec::new(),
    }
}

fn multiset(records: impl IntoIterator<Item = Vec<u8>>) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r).or_default() += 1;
    }
    m
}

/// Records whose bytes would read as several records, or none, downstream.
fn hostile() -> Vec<Vec<u8>> {
    vec![
        b"first\nsecond".to_vec(),
        b"{\"id\":\"crlf-1\"}\r\n{\"id\":\"crlf-2\"}".to_vec(),
        b"{\"id\":\"lines-1\"}\n{\"id\":\"lines-2\"}\n{\"id\":\"lines-3\"}\n".to_vec(),
        b"{\"id\":\"same-line-1\"} {\"id\":\"same-line-2\"}".to_vec(),
        vec![0xff, 0xfe, b'\n', 0x00, 0x80],
        b"\n".to_vec(),
        b"\r\n".to_vec(),
        b" ".to_vec(),
        "{\"id\":\"sep\",\"t\":\"a\u{2028}b\"}".as_bytes().to_vec(),
        // Looks like a framed record: framed again, so it unframes to itself.
        b"{\"payload_b64\":\"aGk=\"}".to_vec(),
    ]
}

/// Wait until a destination's cursors have reached the end of every lane
/// that holds records (the live cursors, not the lag gauges, which the
/// maintenance pass refreshes later) and no lease is in flight.
async fn drained(url: &str, dest: &str) {
    wait_until(&format!("{dest} has delivered everything"), Duration::from_secs(60), || async {
        let st = destination(url, dest).await;
        let cursors = st["cursors"].as_array().cloned().unwrap_or_default();
        let end: u64 = cursors.iter().filter_map(|c| c["end"].as_u64()).sum();
        st["leases_in_flight"] == 0 && end > 0 && cursors.iter().all(|c| c["committed"] == c["end"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_line_breaks_stays_one_record_at_the_file_and_webhook_sinks() {
    let b = BrokerProc::start(
        "[[destination]]\nname = \"f\"\ntopics = [\"events\"]\ntoken = \"f-t\"\n\n[[destination]]\nname = \"w\"\ntopics = [\"events\"]\ntoken = \"w-t\"\n",
    );
    let plain: Vec<Vec<u8>> = (0..5).map(|i| format!("{{\"id\":\"plain-{i}\"}}").into_bytes()).collect();
    let body: Vec<u8> = plain.iter().flat_map(|p| [p.as_slice(), b"\n"].concat()).collect();
    assert_eq!(ingest(&b.url, "acme-t", "events", body).await.status, 200);
    for p in hostile() {
        ingest_bytes(&b.url, &p).await;
    }
    let sent: Vec<Vec<u8>> = plain.iter().cloned().chain(hostile()).collect();

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.ndjson");
    let web = TestSink::start().await;
    let _ef = ExporterProc::start(&b.url, "f", "f-t", &format!("file:{}", out.display()), &["--wait-ms", "200"]);
    let _ew = ExporterProc::start(&b.url, "w", "w-t", &web.url, &["--wait-ms", "200"]);
    drained(&b.url, "f").await;
    drained(&b.url, "w").await;

    let file = std::fs::read(&out).unwrap();
    let webhook: Vec<u8> = web.state.bodies.lock().unwrap().concat();
    for (name, bytes) in [("file", &file), ("webhook", &webhook)] {
        let got = records_of(bytes);
        assert_eq!(
            got.len(),
            sent.len(),
            "{name}: {} records downstream for {} sent:\n{}",
            got.len(),
            sent.len(),
            String::from_utf8_lossy(bytes)
        );
        assert_eq!(multiset(got), multiset(sent.clone()), "{name}: records differ from what was sent");
        // Records that are one JSON line are written as is.
        let text = String::from_utf8(bytes.clone()).expect("every line is UTF-8");
        for p in &plain {
            assert!(text.lines().any(|l| l.as_bytes() == p.as_slice()), "{name}: {p:?} not written as is");
        }
        assert!(!text.contains("\"crlf-1\""), "{name}: a multi-line record was written raw");
    }
    assert_eq!(destination(&b.url, "w").await["dead_letter_records"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_a_delivery_and_keeps_the_records_until_the_url_is_fixed() {
    let b = BrokerProc::start(
        "[[destination]]\nname = \"w\"\ntopics = [\"events\"]\ntoken = \"w-t\"\nfailure_threshold = 2\nbreaker_open_ms = 500\n",
    );
    let sink = TestSink::start().await;
    let elsewhere = sink.url.replace("/ingest", "/elsewhere");
    *sink.state.redirect_to.lock().unwrap() = Some(elsewhere.clone());
    let body: String = (0..3).map(|i| format!("{{\"id\":\"r{i}\"}}\n")).collect();
    assert_eq!(ingest(&b.url, "acme-t", "events", body).await.status, 200);
    let _e = ExporterProc::start(&b.url, "w", "w-t", &sink.url, &["--wait-ms", "200", "--max-retries", "0"]);
    // Either outcome is an event: the breaker counts the redirect (a fault of
    // the endpoint), or the redirect was followed (what the old client did,
    // and then "delivered"), or the records were dead-lettered (39baa17).
    wait_until("the breaker counts the redirect, or a followed redirect", Duration::from_secs(30), || async {
        let st = destination(&b.url, "w").await;
        sink.state.gets.load(Ordering::Relaxed) > 0
            || st["breaker"]["consecutive_failures"].as_u64() >= Some(2)
            || st["dead_letter_records"] != 0
    })
    .await;
    assert_eq!(sink.state.gets.load(Ordering::Relaxed), 0, "the exporter followed the redirect");
    assert!(sink.state.requests.load(Ordering::Relaxed) >= 2);
    assert!(sink.lines().is_empty());
    assert_eq!(destination(&b.url, "w").await["dead_letter_records"], 0, "a redirect is the endpoint's fault");
    // The endpoint fixed, the kept records are delivered, no re-drive needed.
    *sink.state.redirect_to.lock().unwrap() = None;
    wait_until("kept records delivered", Duration::from_secs(30), || async { sink.lines().len() == 3 }).await;
    assert_eq!(sink.state.gets.load(Ordering::Relaxed), 0);
}

/// Start an exporter whose files may not grow past `limit` bytes
/// (RLIMIT_FSIZE, SIGXFSZ ignored): a write crossing it stops part-way and
/// the next one fails with EFBIG, a real partial write on a real file.
fn exporter_with_file_limit(broker: &str, sink: &str, limit: u64, extra: &[&str]) -> ExporterProc {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(&EXPORTER);
    cmd.args(["--broker", broker, "--destination", "f", "--token", "f-t", "--sink", sink]).args(extra);
    // The log goes through a pipe, never an inherited file: the limit applies
    // to every regular file the exporter writes, and a test log past it
    // would turn each log line into EFBIG.
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    // SAFETY: between fork and exec only async-signal-safe calls (signal, setrlimit).
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: limit, rlim_max: libc::RLIM_INFINITY };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn exporter");
    let mut log = child.stderr.take().expect("stderr");
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::stderr()));
    ExporterProc { child }
}

fn lift_file_limit(pid: u32) {
    let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: prlimit on our own child with valid pointers.
    let rc = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_write_that_failed_part_way_is_cut_back_before_the_retry() {
    let b = BrokerProc::start(
        "[[destination]]\nname = \"f\"\ntopics = [\"events\"]\ntoken = \"f-t\"\nfailure_threshold = 1000\nbreaker_open_ms = 100\n",
    );
    // 60 records of 50 bytes: one batch of 3000 bytes against a 2048-byte
    // limit (above the 1024-byte .committed file).
    let ids: Vec<String> = (0..60).map(|i| format!("rec-{i:04}")).collect();
    let body: String = ids.iter().map(|id| format!("{{\"id\":\"{id}\",\"pad\":\"{}\"}}\n", "p".repeat(23))).collect();
    assert_eq!(body.len(), 3000);
    assert_eq!(ingest(&b.url, "acme-t", "events", body).await.status, 200);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.ndjson");
    let sink = format!("file:{}", out.display());
    let e = exporter_with_file_limit(&b.url, &sink, 2048, &["--wait-ms", "200", "--batch-records", "60"]);
    // The size limit's failure, not another (a slow disk under a loaded
    // machine can time a delivery out before it writes anything).
    wait_until("a delivery failed on the size limit", Duration::from_secs(30), || async {
        destination(&b.url, "f").await["breaker"]["consecutive_failures"].as_u64().unwrap_or(0) >= 1
            && std::fs::metadata(&out).map_or(0, |m| m.len()) > 0
    })
    .await;
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 2048, "the write stopped part-way");
    lift_file_limit(e.child.id());
    drained(&b.url, "f").await;
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines {
        assert!(serde_json::from_str::<serde_json::Value>(l).is_ok(), "a torn or glued line: {l:?}");
    }
    let got: Vec<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ids, "each record exactly once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_are_not_one_json_object_never_become_clickhouse_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let (ch, pid) = start_clickhouse(&tmp.path().join("ch"));
    let _guard = KillOnDrop(pid);
    let q = |sql: &str| {
        let (ch, sql) = (ch.clone(), sql.to_string());
        async move { client().post(format!("{ch}/")).body(sql).send().await.unwrap().text().await.unwrap() }
    };
    q("CREATE TABLE weir_rows (id String) ENGINE = Memory").await;
    let b = BrokerProc::start("[[destination]]\nname = \"ch\"\ntopics = [\"events\"]\ntoken = \"ch-t\"\n");
    let good: String = (0..20).map(|i| format!("{{\"id\":\"good-{i}\"}}\n")).collect();
    assert_eq!(ingest(&b.url, "acme-t", "events", good).await.status, 200);
    let refused: Vec<&[u8]> = vec![
        b"{\"id\":\"two-1\"}\n{\"id\":\"two-2\"}",
        b"{\"id\":\"crlf-1\"}\r\n{\"id\":\"crlf-2\"}\r\n",
        b"[{\"id\":\"arr-1\"},{\"id\":\"arr-2\"}]",
        b"{\"id\":\"same-1\"} {\"id\":\"same-2\"}",
        b"\n",
        &[0xff, b'\n', 0xfe],
    ];
    for p in &refused {
        ingest_bytes(&b.url, p).await;
    }
    let sink = format!("clickhouse+{ch}/?table=weir_rows");
    let _e = ExporterProc::start(&b.url, "ch", "ch-t", &sink, &["--wait-ms", "200"]);
    drained(&b.url, "ch").await;
    let ids = q("SELECT id FROM weir_rows ORDER BY id").await;
    let mut want: Vec<String> = (0..20).map(|i| format!("good-{i}")).collect();
    want.sort();
    assert_eq!(ids.lines().collect::<Vec<_>>(), want, "rows in ClickHouse");
    assert_eq!(destination(&b.url, "ch").await["dead_letter_records"], refused.len() as u64);
    let (code, listed, err) =
        run_admin(&["dead-letters", "--broker", &b.url, "--token", "admin-t", "--destination", "ch", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), refused.len());
    for d in &listed {
        let e = d["error"].as_str().unwrap();
        assert!(e.contains("JSONEachRow takes one JSON object per record"), "dead letter error: {e}");
    }
}
