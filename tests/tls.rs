//! Native TLS and mTLS (issue 23), with real TLS clients: reqwest
//! (rustls), curl, Python's `ssl`, the exporter and `broker-admin`.
//! Certificates are made here (rcgen): a CA, the broker's certificate for
//! 127.0.0.1, a client certificate; a second CA for the renewal.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A CA: its certificate (PEM, written at `dir/name.pem`) and what signs.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: PathBuf,
}

fn ca(dir: &Path, name: &str) -> Ca {
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, format!("Weir test {name}"));
    let cert = params.self_signed(&key).expect("a CA");
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, cert.pem()).expect("write the CA");
    Ca { cert, key, pem }
}

/// A leaf signed by `ca`, written as `dir/name.pem` and `dir/name.key`.
fn leaf(dir: &Path, ca: &Ca, name: &str, purpose: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![purpose];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("a leaf");
    let (pem, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&pem, cert.pem()).expect("write the certificate");
    std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
    (pem, key_path)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A client trusting `cas` only, presenting `identity` (cert, key) if given.
fn tls_client(cas: &[&Path], identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().tls_built_in_root_certs(false).timeout(Duration::from_secs(10));
    for ca in cas {
        let pem = std::fs::read(ca).expect("read a CA");
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a CA certificate"));
    }
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).expect("cert");
        pem.extend_from_slice(&std::fs::read(key).expect("key"));
        builder = builder.identity(reqwest::Identity::from_pem(&pem).expect("an identity"));
    }
    builder.build().expect("a client")
}

async fn ingest_with(client: &reqwest::Client, url: &str) -> Result<u16, String> {
    let resp = client
        .post(format!("{url}/v1/topics/events/records"))
        .bearer_auth("acme-t")
        .header("content-type", "application/x-ndjson")
        .body("{\"tls\":true}")
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(resp.status().as_u16())
}

const DEST: &str = "[[destination]]\nname = \"d\"\ntopics = [\"events\"]\ntoken = \"d-t\"\n";

#[tokio::test]
async fn ingest_lease_commit_and_admin_over_tls_with_curl_python_exporter_and_broker_admin() {
    let dir = tempfile::tempdir().unwrap();
    let authority = ca(dir.path(), "ca");
    let (cert, key) = leaf(dir.path(), &authority, "broker", ExtendedKeyUsagePurpose::ServerAuth);
    let admin_port = free_port();
    let b = BrokerProc::start(&format!(
        "tls_cert_file = {cert:?}\ntls_key_file = {key:?}\nadmin_listen = \"127.0.0.1:{admin_port}\"\n{DEST}"
    ));
    assert!(b.url.starts_with("https://"), "the broker announces https: {}", b.url);
    let admin = format!("https://127.0.0.1:{admin_port}");
    let client = tls_client(&[&authority.pem], None);
    assert_eq!(ingest_with(&client, &b.url).await, Ok(200));
    // A client that does not trust the CA is refused at the handshake.
    assert!(ingest_with(&tls_client(&[], None), &b.url).await.is_err());

    // curl, with the CA.
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(&authority.pem)
        .args(["-H", "Authorization: Bearer acme-t", "-H", "Content-Type: application/x-ndjson"])
        .args(["--data-binary", "{\"from\":\"curl\"}", &format!("{}/v1/topics/events/records", b.url)])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"accepted\":1"));

    // Python's ssl (the standard library's client), with the CA.
    let port = b.url.rsplit(':').next().unwrap();
    let script = "import http.client, ssl, sys\nctx = ssl.create_default_context(cafile=sys.argv[1])\n\
                  c = http.client.HTTPSConnection('127.0.0.1', int(sys.argv[2]), context=ctx)\n\
                  c.request('POST', '/v1/topics/events/records', body=b'{\"from\":\"python\"}',\n\
                  headers={'Authorization': 'Bearer acme-t', 'Content-Type': 'application/x-ndjson'})\n\
                  print(c.getresponse().status)";
    let out = Command::new("python3").args(["-c", script]).arg(&authority.pem).arg(port).output().expect("python3");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200", "{}", String::from_utf8_lossy(&out.stderr));

    // Plain HTTP to the TLS port: a clear 400, at once.
    let plain = format!("http://127.0.0.1:{port}/healthz");
    let resp = reqwest::Client::new().get(&plain).timeout(Duration::from_secs(5)).send().await.expect("an answer");
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("speaks TLS"));

    // The exporter leases and commits over TLS; broker-admin reads the admin listener.
    let out_file = dir.path().join("out.ndjson");
    let sink = format!("file://{}", out_file.display());
    let ca_arg = authority.pem.to_str().unwrap();
    let _exporter = ExporterProc::start(&b.url, "d", "d-t", &sink, &["--ca-file", ca_arg]);
    wait_until("the exporter delivers the 3 records over TLS", Duration::from_secs(30), || async {
        file_lines(&out_file).len() >= 3
    })
    .await;
    let (code, text, err) = run_admin(&["destinations", "--broker", &admin, "--token", "admin-t", "--ca-file", ca_arg]);
    assert_eq!(code, 0, "{text}{err}");
    assert!(text.contains('d'), "{text}");
    let (code, _, err) = run_admin(&["destinations", "--broker", &admin, "--token", "admin-t"]);
    assert_ne!(code, 0, "without --ca-file the broker's CA is not trusted: {err}");
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate_at_the_handshake_but_never_on_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let authority = ca(dir.path(), "ca");
    let (cert, key) = leaf(dir.path(), &authority, "broker", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf(dir.path(), &authority, "client", ExtendedKeyUsagePurpose::ClientAuth);
    let admin_port = free_port();
    let ca_pem = &authority.pem;
    let b = BrokerProc::start(&format!(
        "tls_cert_file = {cert:?}\ntls_key_file = {key:?}\ntls_client_ca_file = {ca_pem:?}\nadmin_listen = \"127.0.0.1:{admin_port}\"\n{DEST}"
    ));
    let anonymous = tls_client(&[ca_pem], None);
    let refused = ingest_with(&anonymous, &b.url).await;
    assert!(refused.is_err(), "no client certificate: refused at the handshake, got {refused:?}");
    let known = tls_client(&[ca_pem], Some((&client_cert, &client_key)));
    assert_eq!(ingest_with(&known, &b.url).await, Ok(200));
    // The token still counts on top of the certificate.
    let resp = known.post(format!("{}/v1/topics/events/records", b.url)).body("{}").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // Probes on the admin listener need no client certificate.
    let probe = anonymous.get(format!("https://127.0.0.1:{admin_port}/readyz")).send().await.expect("admin listener");
    assert_eq!(probe.status().as_u16(), 200);
    // The exporter with its client certificate leases and delivers.
    let out_file = dir.path().join("out.ndjson");
    let sink = format!("file://{}", out_file.display());
    let (ca_arg, cert_arg, key_arg) =
        (ca_pem.to_str().unwrap(), client_cert.to_str().unwrap(), client_key.to_str().unwrap());
    let extra = ["--ca-file", ca_arg, "--client-cert", cert_arg, "--client-key", key_arg];
    let _exporter = ExporterProc::start(&b.url, "d", "d-t", &sink, &extra);
    wait_until("the exporter delivers over mTLS", Duration::from_secs(30), || async {
        !file_lines(&out_file).is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_renewed_certificate_is_reloaded_on_sighup_under_load_with_no_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (ca(dir.path(), "old-ca"), ca(dir.path(), "new-ca"));
    let (cert, key) = leaf(dir.path(), &old_ca, "broker", ExtendedKeyUsagePurpose::ServerAuth);
    let mut b = BrokerProc::start(&format!("tls_cert_file = {cert:?}\ntls_key_file = {key:?}\n"));
    let url = b.url.clone();
    let only_new = tls_client(&[&new_ca.pem], None);
    assert!(ingest_with(&only_new, &url).await.is_err(), "before the renewal the certificate is the old CA's");

    // Load: 4 producers trusting both CAs, each on fresh connections now and then.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, sent, failed, url) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed), url.clone());
        let cas = [old_ca.pem.clone(), new_ca.pem.clone()];
        load.push(tokio::spawn(async move {
            for round in 0..100_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let client = tls_client(&[&cas[0], &cas[1]], None);
                for _ in 0..(round % 5 + 1) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if ingest_with(&client, &url).await != Ok(200) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    wait_until("load is running", Duration::from_secs(30), || async { sent.load(Ordering::Relaxed) >= 50 }).await;
    // Renew: the new CA's certificate in the same files, then SIGHUP.
    leaf(dir.path(), &new_ca, "broker", ExtendedKeyUsagePurpose::ServerAuth);
    unsafe { libc::kill(b.child.id() as i32, libc::SIGHUP) };
    wait_until("the renewed certificate is served", Duration::from_secs(30), || async {
        ingest_with(&only_new, &url).await == Ok(200)
    })
    .await;
    let at_renewal = sent.load(Ordering::Relaxed);
    wait_until("more load after the renewal", Duration::from_secs(30), || async {
        sent.load(Ordering::Relaxed) >= at_renewal + 50
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "of {} requests", sent.load(Ordering::Relaxed));
    assert!(metric_tls(&url, &new_ca.pem, "weir_config_reloads_total{result=\"ok\"}").await >= 1.0);
    assert_eq!(b.stop_signal(libc::SIGTERM), Some(0), "SIGHUP did not stop the broker; SIGTERM does, cleanly");
}

/// A metric read over TLS.
async fn metric_tls(url: &str, ca: &Path, prefix: &str) -> f64 {
    let text = tls_client(&[ca], None).get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// The webhook sink over mTLS against Python's `ssl` server (OpenSSL), which
/// requires a client certificate: with `--sink-client-cert` the records
/// arrive and the receiver sees the exporter's certificate; without it the
/// handshake fails and nothing is delivered (a fault of the sink: retried).
#[tokio::test]
async fn the_webhook_sink_presents_its_client_certificate_to_an_https_receiver_that_requires_one() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let authority = ca(dir.path(), "ca");
    let (server_cert, server_key) = leaf(dir.path(), &authority, "receiver", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf(dir.path(), &authority, "exporter", ExtendedKeyUsagePurpose::ClientAuth);
    let received = dir.path().join("received.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/mtls_receiver.py");
    let mut receiver = Command::new("python3")
        .arg(&script)
        .args([&server_cert, &server_key, &authority.pem, &received])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut port = String::new();
    std::io::BufReader::new(receiver.stdout.take().unwrap()).read_line(&mut port).expect("the receiver's port");
    let _receiver = ExporterProc { child: receiver };
    let hook = format!("https://127.0.0.1:{}/hook", port.trim());

    let b = BrokerProc::start(DEST);
    for i in 0..3 {
        assert_eq!(ingest(&b.url, "acme-t", "events", format!("{{\"i\":{i}}}")).await.status, 200);
    }
    let ca_arg = authority.pem.to_str().unwrap();
    let (cert_arg, key_arg) = (client_cert.to_str().unwrap(), client_key.to_str().unwrap());
    // Without a client certificate: refused at the handshake, nothing arrives.
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let anonymous =
        ExporterProc::start(&b.url, "d", "d-t", &hook, &["--sink-ca-file", ca_arg, "--metrics-listen", &listen]);
    let metrics_url = format!("http://127.0.0.1:{metrics_port}");
    let failures = "weir_exporter_deliveries_total{destination=\"d\",outcome=\"retryable\"}";
    wait_until("the anonymous exporter's sink calls fail", Duration::from_secs(30), || async {
        // Its metrics listener may not be up yet: no answer is not a failure.
        let Ok(resp) = reqwest::get(format!("{metrics_url}/metrics")).await else { return false };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(failures))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            >= 1.0
    })
    .await;
    // SIGTERM: its leases are released, not left to expire.
    let mut anonymous = anonymous;
    assert_eq!(anonymous.sigterm(), Some(0));
    assert!(file_lines(&received).is_empty(), "nothing arrives without a client certificate");
    // With it: every record arrives, and the receiver saw the exporter's certificate.
    let extra = ["--sink-ca-file", ca_arg, "--sink-client-cert", cert_arg, "--sink-client-key", key_arg];
    let _exporter = ExporterProc::start(&b.url, "d", "d-t", &hook, &extra);
    wait_until("the records arrive over mTLS", Duration::from_secs(60), || async {
        file_lines(&received).iter().map(|l| l.matches("\\\"i\\\"").count()).sum::<usize>() >= 3
    })
    .await;
    assert!(file_lines(&received).iter().all(|l| l.contains("\"cn\": \"exporter\"")), "{:?}", file_lines(&received));
}
