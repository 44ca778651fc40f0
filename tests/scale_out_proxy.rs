//! The scale-out proxy (issue 19, defect 5; docs/scale-out.md): two brokers
//! behind the shipped nginx template (ops/nginx/weir-proxy.conf.template,
//! rendered by ops/nginx/render.sh as run.sh renders it), real nginx.
//!
//! - every spelling of the `Authorization` header the broker accepts
//!   (`Bearer`, `bearer`, `BEARER`, extra spaces, a tab) reaches the
//!   tenant's one broker, and a record sent again with the same
//!   `Idempotency-Key` under another spelling is stored once;
//! - tokens sharing a routing key (`<key>.<secret>`) reach the same broker;
//! - only ingest routes are forwarded; everything else is the contract's
//!   JSON 404 from nginx;
//! - nginx's own refusals (413 at the brokers' body limit, 400, 431) and a
//!   dead or silent broker (503 `wal_unavailable` with `Retry-After`; after
//!   a timeout the outcome is unknown) carry the contract's JSON body;
//! - through all that, a webhook receiver that deduplicates on
//!   `Idempotency-Key` keeps every record of both brokers, each once — and
//!   then through a rewind of one broker and a data directory of the other
//!   restored from a copy that takes new records at reused offsets, it
//!   still keeps every record (issue 19, defect 1: ids cover the broker id
//!   and the records, not offsets).
//!
//! On 39baa17 the proxy hashed the raw header (`hash $http_authorization`):
//! with 17 tenants and 5 spellings each, some tenant's spellings split
//! across the two brokers and the per-tenant check below fails (run by
//! hand with that hash line put back in the template: "k0-b: 4 records on
//! b1, 3 on b2" — the retried record stored on both). There was no
//! template then, so this file as a whole cannot run on 39baa17.
//!
//! Needs nginx (Debian's package; .ci/run installs it). Without it each
//! test prints `SKIPPED: <name>: nginx not found` and returns.

mod common;

use common::dedup::{copy_dir, start_receiver};
use common::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn nginx_bin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin")]).map(|d| d.join("nginx")).find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// `ops/nginx/render.sh` with these values: the configuration that ships.
fn render(brokers: &[String], listen: &str, temp_dir: &Path, read_timeout: Option<&str>) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(repo("ops/nginx/render.sh"))
        .env("WEIR_PROXY_BROKERS", brokers.join(" "))
        .env("WEIR_PROXY_LISTEN", listen)
        .env("WEIR_PROXY_TEMP_DIR", temp_dir);
    match read_timeout {
        Some(t) => cmd.env("WEIR_PROXY_READ_TIMEOUT", t),
        None => cmd.env_remove("WEIR_PROXY_READ_TIMEOUT"),
    };
    let out = cmd.output().expect("run ops/nginx/render.sh");
    assert!(out.status.success(), "render.sh: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// nginx as a non-daemon child on a loopback port, with its own prefix,
/// temp dirs and log; stopped (SIGTERM, which also ends its workers) on drop.
struct Nginx {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(bin: &Path, brokers: &[String], read_timeout: Option<&str>) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("mkdir");
        // Run as root, nginx's workers are `nobody`: they must reach the
        // temp dirs (request bodies over 16 KiB are buffered there).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, render(brokers, &format!("127.0.0.1:{port}"), &tmp, read_timeout)).expect("write");
        let log = dir.path().join("error.log");
        let child = Command::new(bin)
            .args(["-e", "stderr", "-p"])
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn nginx");
        let mut n = Nginx { child, url: format!("http://127.0.0.1:{port}"), log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        for _ in 0..1000 {
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!("nginx exited ({status}): {}", n.errors());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return n;
            }
            assert!(Instant::now() < deadline, "nginx not listening after 10 s: {}", n.errors());
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("nginx not listening: {}", n.errors());
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tenants `k0-a`, `k0-b`, … `k7-b`: a tenant `-a` and `-b` share a routing
/// key (`kN.` before their secrets), standing in for two tokens of one
/// tenant during a rotation (one token per tenant is all the config takes
/// today). `plain` has a token without a dot: its whole token is its key.
fn tenants() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for k in 0..8 {
        out.push((format!("k{k}-a"), format!("k{k}.first-secret-{k}")));
        out.push((format!("k{k}-b"), format!("k{k}.second-secret-{k}")));
    }
    out.push(("plain".into(), "plain-token-without-a-dot".into()));
    out
}

/// The same configuration on both brokers (ownership is by routing), on a
/// fixed port so a restarted broker is the same upstream to nginx.
fn broker_config(port: u16, data: &Path) -> String {
    let mut text = format!(
        r#"listen = "127.0.0.1:{port}"
data_dir = "{}"
admin_token = "admin-t"
maintenance_interval_ms = 50
# Tests share the machine's disk: a full disk must not turn into 429s here.
disk_high_watermark = 1.0
"#,
        data.display()
    );
    for (name, token) in tenants() {
        text.push_str(&format!(
            "\n[[tenant]]\nname = \"{name}\"\ntoken = \"{token}\"\nrate_per_sec = 100000.0\nburst = 200000\n"
        ));
    }
    text.push_str("\n[[topic]]\nname = \"events\"\n\n[[topic]]\nname = \"other\"\n");
    text.push_str("\n[[destination]]\nname = \"d1\"\ntopics = [\"events\"]\ntoken = \"d1-t\"\n");
    text
}

/// One ingest request through the proxy, the header written as given.
async fn post(url: &str, authorization: &str, key: &str, topic: &str, body: Vec<u8>) -> Answer {
    let resp = client()
        .post(format!("{url}/v1/topics/{topic}/records"))
        .header("authorization", authorization)
        .header("idempotency-key", key)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("request through nginx");
    answer(resp).await
}

/// Records of `tenant` to `events` this broker process acknowledged.
async fn records_of(url: &str, tenant: &str) -> u64 {
    let text = client().get(format!("{url}/metrics")).send().await.expect("metrics").text().await.expect("text");
    let label = format!("tenant=\"{tenant}\"");
    text.lines()
        .filter(|l| l.starts_with("weir_ingest_records_total{") && l.contains(&label))
        .filter(|l| l.contains("topic=\"events\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A raw request (what reqwest will not send), answered and closed by
/// nginx: (status, JSON body).
fn raw(url: &str, request: &[u8]) -> (u16, serde_json::Value) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect to nginx");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(request).expect("send");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // nginx closes after these answers; the cap bounds a misbehaving one.
    while buf.len() < 1 << 20 {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

fn assert_proxy_error(what: &str, status: u16, json: &serde_json::Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{what}: {json}");
    assert_eq!(json["error"]["code"], code, "{what}: {json}");
    let msg = json["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("ingest proxy"), "{what}: the answer is nginx's own: {json}");
}

/// Every spelling of the header the broker accepts (`auth::bearer`).
fn spellings(token: &str) -> Vec<String> {
    vec![
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER {token}"),
        format!("Bearer    {token}"),
        format!("bEaReR \t{token}"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_one_broker_behind_the_shipped_proxy_and_a_deduplicating_receiver_keeps_every_record() {
    let name = "one_tenant_one_broker_behind_the_shipped_proxy_and_a_deduplicating_receiver_keeps_every_record";
    let Some(bin) = nginx_bin() else {
        println!("SKIPPED: {name}: nginx not found");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (p1, p2) = (free_port(), free_port());
    let (d1, d2) = (tmp.path().join("b1"), tmp.path().join("b2"));
    let b1 = BrokerProc::start_with(&d1, &broker_config(p1, &d1));
    // (b1's exporter runs throughout; b2's reconnects to its fixed port across restarts.)
    let mut b2 = BrokerProc::start_with(&d2, &broker_config(p2, &d2));
    let nginx = Nginx::start(&bin, &[format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}")], None);
    let proxy = nginx.url.clone();
    // The exporters talk to their own broker, never through the proxy.
    let (hook, rx) = start_receiver().await;
    let _e1 = ExporterProc::start(&b1.url, "d1", "d1-t", &hook, &["--wait-ms", "200"]);
    let _e2 = ExporterProc::start(&b2.url, "d1", "d1-t", &hook, &["--wait-ms", "200"]);
    let mut want: Vec<String> = Vec::new();

    // Every spelling, a new record each; then one record sent under every
    // spelling with the same key (what a producer's retries look like).
    for (tenant, token) in tenants() {
        for (i, auth) in spellings(&token).iter().enumerate() {
            let line = format!("{{\"tenant\":\"{tenant}\",\"spelling\":{i}}}");
            let a = post(&proxy, auth, &format!("{tenant}-{i}"), "events", format!("{line}\n").into_bytes()).await;
            assert_eq!(a.status, 200, "{tenant} with {auth:?}: {a:?}");
            want.push(line);
        }
        let line = format!("{{\"tenant\":\"{tenant}\",\"retried\":true}}");
        for auth in spellings(&token) {
            let a = post(&proxy, &auth, &format!("{tenant}-retried"), "events", format!("{line}\n").into_bytes()).await;
            assert_eq!(a.status, 200, "{tenant} retried with {auth:?}: {a:?}");
        }
        want.push(line);
    }
    let per_tenant = spellings("x").len() as u64 + 1;
    let mut owner: BTreeMap<String, u16> = BTreeMap::new();
    for (tenant, _) in tenants() {
        let (n1, n2) = (records_of(&b1.url, &tenant).await, records_of(&b2.url, &tenant).await);
        assert!(
            (n1, n2) == (per_tenant, 0) || (n1, n2) == (0, per_tenant),
            "{tenant}: {n1} records on b1, {n2} on b2; every spelling belongs on one broker, the retried record once"
        );
        owner.insert(tenant, if n1 > 0 { 1 } else { 2 });
    }
    let on_b1 = owner.values().filter(|b| **b == 1).count();
    assert!(on_b1 > 0 && on_b1 < owner.len(), "both brokers own tenants (a hash that splits nothing): {owner:?}");
    for k in 0..8 {
        let (a, b) = (owner[&format!("k{k}-a")], owner[&format!("k{k}-b")]);
        assert_eq!(a, b, "tokens k{k}.first-… and k{k}.second-… share routing key k{k} but not a broker");
    }

    // Only ingest is forwarded: the rest is nginx's JSON 404.
    let admin = |path: &str| client().get(format!("{proxy}{path}")).bearer_auth("admin-t").send();
    for path in ["/metrics", "/healthz", "/readyz", "/v1/admin/destinations", "/openapi.json"] {
        let a = answer(admin(path).await.expect("get")).await;
        assert_proxy_error(path, a.status, &a.json, 404, "not_found");
    }
    let lease = client().post(format!("{proxy}/v1/destinations/d1/leases")).bearer_auth("d1-t").send();
    let a = answer(lease.await.expect("post")).await;
    assert_proxy_error("a lease through the proxy", a.status, &a.json, 404, "not_found");
    let resp = client().get(format!("{proxy}/nope")).send().await.expect("get");
    assert_eq!(resp.headers()["content-type"], "application/json");
    // OTLP/HTTP is forwarded: a broker answers an empty export with the
    // OTLP 200 (`{}` in JSON), not nginx.
    for path in ["/v1/logs", "/v1/traces", "/v1/metrics"] {
        let resp = client()
            .post(format!("{proxy}{path}"))
            .bearer_auth("k0.first-secret-0")
            .header("content-type", "application/json")
            .body("{}")
            .send();
        let resp = resp.await.expect("post");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        assert!(!text.contains("ingest proxy"), "{path} was not forwarded: {text}");
        assert_eq!((status, text.as_str()), (200, "{}"), "{path}: the broker's OTLP answer");
    }

    // The body limit is the brokers': 8 MiB passes (to a topic no
    // destination exports), one byte more is nginx's JSON 413.
    let limit = config::Config::from_toml("admin_token = \"x\"\n").expect("defaults").max_body_bytes as usize;
    let mut body = Vec::with_capacity(limit + 1);
    let mut n = 0;
    while body.len() + 1100 < limit {
        body.extend_from_slice(format!("{{\"n\":{n},\"pad\":\"{}\"}}\n", "x".repeat(1000)).as_bytes());
        n += 1;
    }
    let last = limit - body.len() - "{\"pad\":\"\"}\n".len();
    body.extend_from_slice(format!("{{\"pad\":\"{}\"}}\n", "y".repeat(last)).as_bytes());
    assert_eq!(body.len(), limit);
    let a = post(&proxy, "Bearer k1.first-secret-1", "at-limit", "other", body.clone()).await;
    assert_eq!(a.status, 200, "a body of exactly max_body_bytes passes nginx: {a:?}");
    body.push(b'\n');
    let a = post(&proxy, "Bearer k1.first-secret-1", "over-limit", "other", body).await;
    assert_proxy_error("a body one byte over", a.status, &a.json, 413, "payload_too_large");

    // nginx's own 400 and 431.
    let (status, json) = raw(&proxy, b"POST /v1/topics/events/records HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_proxy_error("HTTP/1.1 without Host", status, &json, 400, "invalid_request");
    let big = format!(
        "POST /v1/topics/events/records HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let (status, json) = raw(&proxy, big.as_bytes());
    assert_proxy_error("a 64 KiB header", status, &json, 431, "headers_too_large");

    // A dead broker: its tenants get the retryable JSON 503, the others
    // notice nothing; once it is back, a retry with the same key stores
    // the batch once.
    let (down, down_token) = tenants().into_iter().find(|(t, _)| owner[t] == 2).expect("a tenant of b2");
    let (up, up_token) = tenants().into_iter().find(|(t, _)| owner[t] == 1).expect("a tenant of b1");
    b2.kill9();
    let line = format!("{{\"tenant\":\"{down}\",\"while\":\"down\"}}");
    let a = post(&proxy, &format!("Bearer {down_token}"), "while-down", "events", format!("{line}\n").into()).await;
    a.assert_error(503, "wal_unavailable", true);
    assert!(a.message().contains("unreachable") && a.message().contains("same Idempotency-Key"), "{a:?}");
    let other = format!("{{\"tenant\":\"{up}\",\"while\":\"b2 down\"}}");
    let a =
        post(&proxy, &format!("bearer {up_token}"), "other-while-down", "events", format!("{other}\n").into()).await;
    assert_eq!(a.status, 200, "{up} is b1's: {a:?}");
    want.push(other);
    b2.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    for attempt in 0.. {
        let a = post(&proxy, &format!("BEARER {down_token}"), "while-down", "events", format!("{line}\n").into()).await;
        if a.status == 200 {
            break;
        }
        // Until b2 listens, nginx's 503; while it recovers, its own.
        a.assert_error(503, "wal_unavailable", true);
        assert!(Instant::now() < deadline && attempt < 1000, "{down} not accepted 30 s after b2 restarted: {a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    want.push(line);

    // The receiver keeps every record of both brokers, each once: a record
    // stored on two brokers, or two batches under one key, would show.
    let kept = || rx.lines.lock().unwrap().clone();
    wait_until("the receiver holds every record of both brokers", Duration::from_secs(30), || async {
        let have: HashSet<String> = kept().into_iter().collect();
        want.iter().all(|l| have.contains(l))
    })
    .await;
    assert_eq!(*rx.missing_key.lock().unwrap(), 0, "every webhook request carries a key");
    let mut count: HashMap<String, usize> = HashMap::new();
    for l in kept() {
        *count.entry(l).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "records kept more than once: {twice:?}");

    // Through a rewind (issue 19, defect 1): records come again, maybe in
    // other batches under other ids — the receiver may keep them twice,
    // but loses none, and new records after it are kept.
    let (code, _, err) =
        run_admin(&["rewind", "--broker", &b1.url, "--token", "admin-t", "--destination", "d1", "--earliest"]);
    assert_eq!(code, 0, "{err}");
    let auth = format!("Bearer {up_token}");
    for i in 0..3 {
        let line = format!("{{\"tenant\":\"{up}\",\"after_rewind\":{i}}}");
        let a = post(&proxy, &auth, &format!("after-rewind-{i}"), "events", format!("{line}\n").into()).await;
        assert_eq!(a.status, 200, "{a:?}");
        want.push(line);
    }
    // Through a data directory restored from a copy, which then takes new
    // records at offsets that held others: their ids differ, none dropped.
    assert_eq!(b2.stop_signal(libc::SIGTERM), Some(0));
    let copy = d2.with_extension("copy");
    copy_dir(&d2, &copy);
    b2.start_again();
    let auth = format!("Bearer {down_token}");
    let send_b2 = |tag: &'static str| {
        let (proxy, auth, down) = (proxy.clone(), auth.clone(), down.clone());
        async move {
            let mut lines = Vec::new();
            for i in 0..4 {
                let line = format!("{{\"tenant\":\"{down}\",\"{tag}\":{i}}}");
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let a = post(&proxy, &auth, &format!("{tag}-{i}"), "events", format!("{line}\n").into()).await;
                    if a.status == 200 {
                        break;
                    }
                    a.assert_error(503, "wal_unavailable", true); // b2 restarting
                    assert!(Instant::now() < deadline, "{tag}-{i} not taken: {a:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                lines.push(line);
            }
            lines
        }
    };
    want.extend(send_b2("before_restore").await);
    // Bounded past the lease timeout (30 s): a lease b2's exporter held when
    // b2 stopped is restored with b2 and holds its place until it expires.
    wait_until("records sent before the restore are delivered", Duration::from_secs(75), || async {
        let have: HashSet<String> = kept().into_iter().collect();
        want.iter().all(|l| have.contains(l))
    })
    .await;
    assert_eq!(b2.stop_signal(libc::SIGTERM), Some(0));
    std::fs::remove_dir_all(&d2).expect("remove b2's directory");
    std::fs::rename(&copy, &d2).expect("restore the copy");
    b2.start_again();
    want.extend(send_b2("after_restore").await);
    wait_until("every record, through a rewind and a restore, is kept", Duration::from_secs(75), || async {
        let have: HashSet<String> = kept().into_iter().collect();
        want.iter().all(|l| have.contains(l))
    })
    .await;
    drop(nginx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_answers_too_late_is_a_json_503_saying_the_outcome_is_unknown() {
    let name = "a_broker_that_answers_too_late_is_a_json_503_saying_the_outcome_is_unknown";
    let Some(bin) = nginx_bin() else {
        println!("SKIPPED: {name}: nginx not found");
        return;
    };
    // An upstream that reads the request and never answers (a broker stuck
    // in a long fsync, say): it may have stored the batch.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    tokio::spawn(async move {
        while let Ok((conn, _)) = silent.accept().await {
            keep.lock().unwrap().push(conn);
        }
    });
    let nginx = Nginx::start(&bin, &[addr.to_string()], Some("1s"));
    let started = Instant::now();
    let a = post(&nginx.url, "Bearer k0.first-secret-0", "slow-1", "events", b"{}\n".to_vec()).await;
    a.assert_error(503, "wal_unavailable", true);
    let msg = a.message();
    assert!(msg.contains("outcome is unknown") && msg.contains("same Idempotency-Key"), "{a:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "answered after {:?}", started.elapsed());
    assert!(!held.lock().unwrap().is_empty(), "the request reached the upstream");
}

#[test]
fn the_k8s_proxy_config_is_the_rendered_template_with_the_brokers_body_limit() {
    let name = "the_k8s_proxy_config_is_the_rendered_template_with_the_brokers_body_limit";
    // The Kubernetes example: one upstream per StatefulSet replica.
    let sts = std::fs::read_to_string(repo("ops/k8s/broker.yaml")).expect("broker.yaml");
    let replicas: usize = sts
        .lines()
        .find_map(|l| l.trim().strip_prefix("replicas: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the StatefulSet's replicas");
    assert!(sts.contains("serviceName: weir-broker"), "the headless service the names below use");
    let brokers: Vec<String> = (0..replicas).map(|i| format!("weir-broker-{i}.weir-broker:7070")).collect();
    let shipped = std::fs::read_to_string(repo("ops/k8s/nginx.conf")).expect("ops/k8s/nginx.conf");
    let rendered = render(&brokers, "8080", Path::new("/tmp"), None);
    assert!(
        shipped == rendered,
        "ops/k8s/nginx.conf is not the rendering of ops/nginx/weir-proxy.conf.template; run:\n  \
         WEIR_PROXY_BROKERS=\"{}\" WEIR_PROXY_LISTEN=8080 WEIR_PROXY_TEMP_DIR=/tmp ops/nginx/render.sh >ops/k8s/nginx.conf",
        brokers.join(" ")
    );
    // The ConfigMap is that file, mounted where the Deployment reads it.
    let kustomization = std::fs::read_to_string(repo("ops/k8s/kustomization.yaml")).expect("kustomization");
    let generator = kustomization.split("configMapGenerator:").nth(1).expect("a configMapGenerator");
    assert!(generator.contains("name: weir-proxy") && generator.contains("- nginx.conf"), "{generator}");
    let proxy = std::fs::read_to_string(repo("ops/k8s/proxy.yaml")).expect("proxy.yaml");
    assert!(proxy.contains("\"/etc/weir-proxy/nginx.conf\"") && proxy.contains("mountPath: /etc/weir-proxy"));
    assert!(proxy.contains("configMap: {name: weir-proxy}"), "{proxy}");

    // nginx's body limit is the broker's default max_body_bytes.
    let template = std::fs::read_to_string(repo("ops/nginx/weir-proxy.conf.template")).expect("template");
    let size = template
        .lines()
        .find_map(|l| l.trim().strip_prefix("client_max_body_size "))
        .map(|v| v.trim_end_matches(';'))
        .expect("client_max_body_size");
    let bytes = match size.strip_suffix('m') {
        Some(mib) => mib.parse::<u64>().expect("a number") << 20,
        None => size.parse::<u64>().expect("bytes"),
    };
    let default = config::Config::from_toml("admin_token = \"x\"\n").expect("defaults").max_body_bytes;
    assert_eq!(bytes, default, "client_max_body_size {size} vs the broker's max_body_bytes {default}");

    // And nginx accepts the rendering (names resolved only by a loopback one).
    let Some(bin) = nginx_bin() else {
        println!("SKIPPED: {name}: nginx -t: nginx not found");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, render(&["127.0.0.1:1".into()], &format!("127.0.0.1:{}", free_port()), dir.path(), None))
        .expect("write");
    let out = Command::new(bin)
        .args(["-t", "-e", "stderr", "-p"])
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("nginx -t");
    assert!(out.status.success(), "nginx -t: {}", String::from_utf8_lossy(&out.stderr));
}
