//! What `ops/` and `docs/config.md` say, held to the code: every config key
//! documented at its default, every shipped example accepted by
//! `--check-config`, the alert rules accepted by `promtool`, the systemd
//! units by `systemd-analyze verify`. A check whose tool is missing prints
//! `SKIPPED: …` (docs/testing.md); CI installs the tools (.ci/run).

mod common;

use config::Config;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The fields serde expects where `probe` is: its own list, from the
/// "unknown field, expected one of …" answer (so a new key is seen here
/// the day it is added to the struct).
fn expected_fields(error: &str) -> BTreeSet<String> {
    // "expected one of `a`, `b`" or, for a single field, "expected `a`".
    let list = error.split(", expected ").nth(1).unwrap_or_else(|| panic!("no field list in: {error}"));
    list.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// Keys still accepted but deprecated and ignored: documented as such, never
/// shipped in an example (which would warn at every start).
const DEPRECATED_KEYS: [&str; 1] = ["low_priority_every"];

fn broker_fields() -> [(&'static str, BTreeSet<String>); 4] {
    let probe = |toml: &str| Config::from_toml(toml).expect_err("unknown key").to_string();
    let base = "admin_token = \"x\"\n";
    let live = |mut keys: BTreeSet<String>| {
        keys.retain(|k| !DEPRECATED_KEYS.contains(&k.as_str()));
        keys
    };
    [
        ("top", live(expected_fields(&probe(&format!("{base}probe_key = 1\n"))))),
        ("tenant", expected_fields(&probe(&format!("{base}[[tenant]]\nprobe_key = 1\n")))),
        ("topic", expected_fields(&probe(&format!("{base}[[topic]]\nprobe_key = 1\n")))),
        ("destination", expected_fields(&probe(&format!("{base}[[destination]]\nprobe_key = 1\n")))),
    ]
}

/// Keys a deployment changes on purpose (their comment gives the default).
const DEPLOYMENT_KEYS: [&str; 2] = ["listen", "data_dir"];
/// Optional keys without a default value (absent = off); shown as examples.
const OPTIONAL_KEYS: [&str; 9] = [
    "admin_listen",
    "hard_rate_per_sec",
    "hard_burst",
    "tenants",
    "lease_timeout_ms@destination",
    "otlp_grpc_listen",
    "admin_token_file",
    "token_file",
    "tokens_file",
];
/// Keys that would hold a token: shown only commented out (`# key = …`), so
/// no shipped file holds one.
const TOKEN_KEYS: [&str; 4] = ["admin_token", "admin_tokens", "token", "tokens"];
const REQUIRED: [&str; 6] = [
    "name",
    "rate_per_sec",
    "burst",
    "topics",
    "tenant",
    "topic", // the arrays themselves, kept; "destination" likewise below
];

fn is_required(section: &str, key: &str) -> bool {
    REQUIRED.contains(&key) || (section == "top" && key == "destination")
}

fn is_optional(section: &str, key: &str) -> bool {
    OPTIONAL_KEYS.iter().any(|k| *k == key || *k == format!("{key}@{section}"))
}

/// The secret files a shipped config names live under this directory.
const SECRETS_DIR: &str = "/etc/weir/secrets/";

/// `text` with its secrets directory moved to `dir`, and every secret file
/// it names there written with a fresh token of 32 bytes (what an operator
/// does before a start); those tokens.
fn with_own_secrets(text: &str, dir: &Path) -> (String, Vec<String>) {
    let moved = text.replace(SECRETS_DIR, &format!("{}/", dir.display()));
    let mut secrets = Vec::new();
    let names: BTreeSet<&str> = text
        .split(SECRETS_DIR)
        .skip(1)
        .filter_map(|rest| rest.split(['"', ' ', '\n']).next())
        .filter(|name| !name.is_empty() && !name.contains('*'))
        .collect();
    for (i, name) in names.into_iter().enumerate() {
        let secret = format!("operator-secret-{i:02}-{}", "x".repeat(16));
        std::fs::write(dir.join(name), format!("{secret}\n")).expect("write a secret file");
        secrets.push(secret);
    }
    (moved, secrets)
}

/// Every `key = …` line of `text` has a comment line right above it, or
/// belongs to a table whose first entry documented that key already.
fn assert_each_key_has_a_sentence(name: &str, text: &str) {
    let mut documented = BTreeSet::new();
    let mut prev = "";
    for line in text.lines().map(str::trim) {
        if let Some((key, _)) = line.split_once(" = ").filter(|_| !line.starts_with('#')) {
            assert!(
                prev.starts_with('#') || documented.contains(key),
                "{name}: `{key}` has no comment saying what it does"
            );
            documented.insert(key.to_string());
        }
        if !line.is_empty() {
            prev = line;
        }
    }
}

/// The defaults: the file with everything optional taken out, parsed again.
fn strip_to_required(table: &toml::Table, section: &str) -> toml::Table {
    let mut out = toml::Table::new();
    for (k, v) in table {
        if !is_required(section, k) {
            continue;
        }
        let v = match (k.as_str(), v) {
            ("tenant" | "topic" | "destination", toml::Value::Array(items)) => toml::Value::Array(
                items
                    .iter()
                    .map(|t| toml::Value::Table(strip_to_required(t.as_table().expect("a table"), k)))
                    .collect(),
            ),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    out
}

fn compare_with_defaults(section: &str, file: &toml::Table, defaults: &toml::Table, text: &str) {
    for (k, v) in file {
        if is_required(section, k) || is_optional(section, k) {
            continue;
        }
        let d = defaults.get(k).unwrap_or_else(|| panic!("[{section}] {k}: no default"));
        if DEPLOYMENT_KEYS.contains(&k.as_str()) && section == "top" {
            let note = format!("(default: {d})");
            assert!(text.contains(&note), "ops/broker.toml: `{k}` must say {note}");
        } else {
            assert_eq!(v, d, "ops/broker.toml [{section}] `{k}` = {v}, but its default is {d}");
        }
    }
}

#[test]
fn broker_toml_documents_every_key_at_its_default() {
    let text = read("ops/broker.toml");
    let cfg = Config::from_toml(&text).expect("ops/broker.toml parses");
    // As shipped it holds no token (they are files it names), so it is
    // refused; with the operator's secret files it is valid.
    cfg.validate().expect_err("ops/broker.toml without its secret files");
    let secrets = tempfile::tempdir().expect("tempdir");
    let (own, _) = with_own_secrets(&text, secrets.path());
    let mut cfg = Config::from_toml(&own).expect("parses");
    cfg.load_secret_files().expect("the secret files it names");
    cfg.validate().expect("ops/broker.toml is valid with its secret files");
    let raw: toml::Table = text.parse().expect("TOML");
    let defaults = Config::from_toml(&toml::to_string(&strip_to_required(&raw, "top")).expect("toml"))
        .expect("the required keys alone parse");
    let effective = toml::Table::try_from(&cfg).expect("serialize");
    let defaults = toml::Table::try_from(&defaults).expect("serialize");
    let entries = |t: &toml::Table, k: &str| -> Vec<toml::Table> {
        t.get(k).and_then(|v| v.as_array()).into_iter().flatten().filter_map(|v| v.as_table().cloned()).collect()
    };
    for (section, fields) in broker_fields() {
        let (file_tables, default_tables) = if section == "top" {
            (vec![raw.clone()], vec![defaults.clone()])
        } else {
            (entries(&raw, section), entries(&defaults, section))
        };
        let present: BTreeSet<String> = file_tables.iter().flat_map(|t| t.keys().cloned()).collect();
        let commented = |k: &str| text.lines().any(|l| l.trim().starts_with(&format!("# {k} = ")));
        let missing: Vec<_> = fields.difference(&present).filter(|k| !commented(k)).collect();
        for key in TOKEN_KEYS {
            assert!(!present.contains(key), "ops/broker.toml [{section}] sets {key}: a shipped file holds no token");
        }
        assert!(missing.is_empty(), "ops/broker.toml [{section}] lacks {missing:?}");
        // The first entry of each table is the reference (every key at its
        // default); later entries are examples of other values.
        if let (Some(f), Some(d)) = (file_tables.first(), default_tables.first()) {
            compare_with_defaults(section, f, d, &text);
        }
    }
    assert_eq!(entries(&effective, "destination").len(), 2);
    assert_each_key_has_a_sentence("ops/broker.toml", &text);
}

fn exporter_options(args: &[&str]) -> Result<String, String> {
    use clap::Parser;
    let args = exporter::config::Args::try_parse_from(args).map_err(|e| e.to_string())?;
    exporter::config::Options::resolve(args).map(|o| format!("{o:?}")).map_err(|e| e.to_string())
}

#[test]
fn exporter_toml_documents_every_key_at_its_default() {
    let text = read("ops/exporter.toml");
    let secrets = tempfile::tempdir().expect("tempdir");
    let (own, _) = with_own_secrets(&text, secrets.path());
    let path = secrets.path().join("exporter.toml");
    std::fs::write(&path, &own).expect("write");
    let raw: toml::Table = own.parse().expect("TOML");
    assert!(!raw.contains_key("token"), "ops/exporter.toml holds a token; it names its file");
    let from_file = exporter_options(&["exporter", "--config", path.to_str().expect("utf-8")]).expect("resolves");
    // The same required values and metrics address as flags, nothing else.
    let s = |k: &str| raw[k].as_str().expect("a string").to_string();
    let (b, d, t, sink, m) = (s("broker"), s("destination"), s("token_file"), s("sink"), s("metrics_listen"));
    let flags = ["exporter", "--broker", &b, "--destination", &d, "--token-file", &t, "--sink", &sink];
    let defaults = exporter_options(&[&flags[..], &["--metrics-listen", &m]].concat()).expect("resolves");
    assert_eq!(from_file, defaults, "ops/exporter.toml sets a key away from its default");
    let probe = std::env::temp_dir().join(format!("weir-probe-{}.toml", std::process::id()));
    std::fs::write(&probe, "probe_key = 1\n").expect("write");
    let err = exporter_options(&["exporter", "--config", probe.to_str().expect("utf-8")]).expect_err("unknown key");
    let _ = std::fs::remove_file(&probe);
    let present: BTreeSet<String> = raw.keys().cloned().collect();
    // A key with no default (a path, a key) is shown commented out, `# key = …`:
    // setting it would move the file away from the defaults.
    let commented = |k: &str| text.lines().any(|l| l.trim().starts_with(&format!("# {k} = ")));
    let missing: Vec<_> = expected_fields(&err).into_iter().filter(|k| !present.contains(k) && !commented(k)).collect();
    assert!(missing.is_empty(), "ops/exporter.toml lacks {missing:?}");
    assert_each_key_has_a_sentence("ops/exporter.toml", &text);
}

/// `16 MiB` → 16777216, `0 (off)` → 0, `` `normal` `` → "normal"; `None`
/// for what has no value (required, none, all, …).
fn doc_default(cell: &str) -> Option<toml::Value> {
    let cell = cell.trim().replace('`', "");
    let first = cell.split(" (").next().unwrap_or("").trim();
    if first.is_empty() || first.starts_with('(') {
        return None;
    }
    let mut words = first.split_whitespace();
    let n = words.next()?;
    let unit = match words.next() {
        Some("KiB") => 1 << 10,
        Some("MiB") => 1 << 20,
        Some("GiB") => 1 << 30,
        Some(_) => return None,
        None => 1,
    };
    if let Ok(i) = n.parse::<i64>() {
        return Some(toml::Value::Integer(i * unit));
    }
    if let Ok(f) = n.parse::<f64>() {
        return Some(toml::Value::Float(f));
    }
    match n {
        "true" | "false" => Some(toml::Value::Boolean(n == "true")),
        "none" | "all" | "top-level" => None,
        s => Some(toml::Value::String(s.to_string())),
    }
}

/// `section heading → key → default cell` of docs/config.md's tables.
fn config_md_rows() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in read("docs/config.md").lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h.replace('`', "");
        } else if let Some(row) = line.strip_prefix("| `") {
            let cells: Vec<&str> = row.split(" | ").collect();
            let key = cells[0].trim_end_matches('`').split_whitespace().next().unwrap_or("").to_string();
            out.entry(section.clone()).or_default().insert(key, cells.get(1).copied().unwrap_or("").to_string());
        }
    }
    out
}

#[test]
fn config_md_lists_every_key_at_its_default() {
    let rows = config_md_rows();
    let text = read("ops/broker.toml");
    let raw: toml::Table = text.parse().expect("TOML");
    let stripped = toml::to_string(&strip_to_required(&raw, "top")).expect("toml");
    let defaults = toml::Table::try_from(Config::from_toml(&stripped).expect("parses")).expect("serialize");
    let headings =
        [("top", "Top level"), ("tenant", "[[tenant]]"), ("topic", "[[topic]]"), ("destination", "[[destination]]")];
    for ((section, fields), (_, heading)) in broker_fields().into_iter().zip(headings) {
        let table = rows.get(heading).unwrap_or_else(|| panic!("docs/config.md has no table under ## {heading}"));
        let default_table = if section == "top" {
            defaults.clone()
        } else {
            defaults[section].as_array().and_then(|a| a.first()).and_then(|t| t.as_table()).cloned().unwrap_or_default()
        };
        for f in
            fields.iter().filter(|f| !(section == "top" && ["tenant", "topic", "destination"].contains(&f.as_str())))
        {
            let cell = table.get(f).unwrap_or_else(|| panic!("docs/config.md ## {heading}: no row for `{f}`"));
            if let (Some(doc), Some(real)) = (doc_default(cell), default_table.get(f)) {
                let same = match (&doc, real) {
                    (toml::Value::Integer(a), toml::Value::Float(b)) => (*a as f64 - b).abs() < 1e-9,
                    _ => doc == *real,
                };
                assert!(same, "docs/config.md ## {heading}: `{f}` default {cell:?}, the code's is {real}");
            }
        }
    }
    // The exporter's flags: one row each, at the default ops/exporter.toml proves.
    let exporter: toml::Table = read("ops/exporter.toml").parse().expect("TOML");
    let table = &rows["Exporter"];
    for (k, v) in &exporter {
        let flag = format!("--{}", k.replace('_', "-"));
        let cell = table.get(&flag).unwrap_or_else(|| panic!("docs/config.md ## Exporter: no row for `{flag}`"));
        if let Some(doc) = doc_default(cell) {
            assert_eq!(&doc, v, "docs/config.md ## Exporter: `{flag}` default {cell:?}, ops/exporter.toml has {v}");
        }
    }
}

/// Every broker configuration the repository ships.
fn shipped_broker_configs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![repo("ops")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read ops/").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "toml")
                && std::fs::read_to_string(&p).is_ok_and(|t| t.contains("admin_token"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 2, "found {out:?}");
    out
}

#[test]
fn check_config_refuses_shipped_examples_until_their_tokens_are_replaced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for path in shipped_broker_configs() {
        let text = std::fs::read_to_string(&path).expect("read");
        // As shipped: exit 2, one line naming the token file it cannot read
        // (no shipped file holds a token: it names the operator's files).
        let out = Command::new(&common::BROKER).arg("--check-config").arg(&path).output().expect("run broker");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(stderr.contains("token_file") && stderr.contains(SECRETS_DIR), "{}: {stderr}", path.display());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        // With the operator's own secret files: accepted, and none is printed.
        let dir = tmp.path().join(path.file_stem().expect("a file name"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (own, secrets) = with_own_secrets(&text, &dir);
        let replaced = dir.join(path.file_name().expect("a file name"));
        std::fs::write(&replaced, &own).expect("write");
        let out = Command::new(&common::BROKER).arg("--check-config").arg(&replaced).output().expect("run broker");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        for secret in &secrets {
            assert!(!stdout.contains(secret.as_str()), "{}: a token is printed", path.display());
        }
        // Every default is filled in: the printed text names every top-level
        // key (the token keys it does not use are left out, being empty, and
        // the TLS files, off by default).
        let unset = |k: &str| TOKEN_KEYS.contains(&k) || k.starts_with("tls_");
        for key in broker_fields()[0].1.iter().filter(|k| !unset(k.as_str())) {
            let named = [format!("{key} = "), format!("[[{key}]]"), format!("[{key}]")];
            assert!(named.iter().any(|n| stdout.contains(n.as_str())), "{key} missing");
        }
    }
    // Every shipped exporter configuration resolves, with its token file
    // or its token's variable, and prints neither.
    for rel in ["ops/exporter.toml", "ops/k8s/exporter-acme-ch.toml", "ops/k8s/exporter-audit-webhook.toml"] {
        let (own, secrets) = with_own_secrets(&read(rel), tmp.path());
        let path = tmp.path().join("exporter.toml");
        std::fs::write(&path, own).expect("write");
        let out = Command::new(&common::EXPORTER)
            .arg("--check-config")
            .arg(&path)
            .env("WEIR_EXPORTER_TOKEN", "operator-secret-from-the-environment")
            .output()
            .expect("run exporter");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{rel}: {}", String::from_utf8_lossy(&out.stderr));
        for secret in secrets.iter().map(String::as_str).chain(["operator-secret-from-the-environment"]) {
            assert!(!stdout.contains(secret), "{rel}: --check-config printed a token");
        }
    }
}

#[test]
fn check_config_refuses_a_bad_file_with_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "admin_token = \"a-long-secret\"\nshardz = 3\n").expect("write");
    let out = Command::new(&common::BROKER).arg("--check-config").arg(&bad).output().expect("run broker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("shardz") && stderr.contains("line 2") && !stderr.contains("a-long-secret"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn version_on_all_three_binaries() {
    for (bin, name) in [(&common::BROKER, "broker"), (&common::EXPORTER, "exporter"), (&common::ADMIN, "broker-admin")]
    {
        let out = Command::new(bin).arg("--version").output().expect("run");
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{name} {}", env!("CARGO_PKG_VERSION")));
    }
}

fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

#[test]
fn alert_rules_pass_promtool_check_rules_or_print_skipped() {
    let Some(promtool) = tool("promtool") else {
        println!("SKIPPED: promtool not installed (Debian package `prometheus`; .ci/run installs it)");
        return;
    };
    let out = Command::new(promtool).arg("check").arg("rules").arg(repo("ops/prometheus/weir-alerts.yml")).output();
    let out = out.expect("run promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn systemd_units_pass_systemd_analyze_verify_or_print_skipped() {
    let Some(analyze) = tool("systemd-analyze") else {
        println!("SKIPPED: systemd-analyze not installed (Debian package `systemd`)");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    // Copies whose ExecStart is the binaries this build made.
    let units = [
        ("weir-broker.service", "weir-broker.service", "/usr/local/bin/broker", &common::BROKER),
        ("weir-exporter@.service", "weir-exporter@acme-ch.service", "/usr/local/bin/exporter", &common::EXPORTER),
    ];
    let mut paths = Vec::new();
    for (src, dst, installed, built) in units {
        let text = read(&format!("ops/systemd/{src}"));
        assert!(text.contains(&format!("ExecStart={installed} ")), "{src}");
        let p = tmp.path().join(dst);
        std::fs::write(&p, text.replace(installed, &built.path().display().to_string())).expect("write unit");
        paths.push(p);
    }
    let broker_unit = read("ops/systemd/weir-broker.service");
    for must in
        ["Type=notify", "RestartPreventExitStatus=2", "Restart=on-failure", "StateDirectory=weir", "LimitNOFILE="]
    {
        assert!(broker_unit.lines().any(|l| l.starts_with(must)), "weir-broker.service lacks {must}");
    }
    let out = Command::new(analyze).arg("verify").args(&paths).output().expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // An unknown key or a bad value is only a warning to systemd: fail on any.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| paths.iter().any(|p| l.contains(p.file_name().and_then(|n| n.to_str()).unwrap_or("?"))))
        .collect();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(complaints.is_empty(), "systemd-analyze verify: {complaints:?}");
}

/// Every token value shipped in `ops/` (config files, scripts, manifests):
/// `token = "…"`, `admin_token = "…"`, `--token VALUE`; a templated value
/// (`tok-%s` in run.sh) is expanded with the script's `TENANTS`.
fn shipped_token_values() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![repo("ops")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read ops/").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else { continue };
            let tenants: Vec<String> = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("TENANTS=("))
                .map(|l| l.trim_end_matches(')').split_whitespace().map(str::to_string).collect())
                .unwrap_or_default();
            for line in text.lines().flat_map(|l| l.split("\\n")) {
                let line = line.trim();
                let value = if let Some((key, v)) = line.split_once('=') {
                    let key = key.trim().trim_start_matches('#').trim();
                    (key == "token" || key.ends_with("_token")).then(|| v.trim().trim_matches('"').to_string())
                } else {
                    None
                };
                let flag =
                    line.split_once("--token ").map(|(_, v)| v.split_whitespace().next().unwrap_or("").to_string());
                for v in value.into_iter().chain(flag) {
                    if v.contains("%s") {
                        out.extend(tenants.iter().map(|t| (p.clone(), v.replace("%s", t))));
                    } else if !v.is_empty() && !v.starts_with('$') && !v.starts_with('<') {
                        out.push((p.clone(), v));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn ops_tokens_are_all_in_the_shipped_token_list() {
    let found = shipped_token_values();
    // The scan sees the files it must: the examples and the scale-out demo.
    // The scan sees the loopback demo's tokens; the production examples
    // hold none (they name secret files or variables).
    assert!(found.iter().any(|(p, _)| p.ends_with("ops/scale-out/run.sh")), "no token found in run.sh");
    for clean in ["ops/broker.toml", "ops/k8s/broker.toml", "ops/exporter.toml", "ops/k8s/exporter-acme-ch.toml"] {
        let held: Vec<_> = found.iter().filter(|(p, _)| p.ends_with(clean)).collect();
        assert!(held.is_empty(), "{clean} holds a token: {held:?}");
    }
    for (path, token) in &found {
        assert!(
            config::is_shipped_token(token),
            "{}: token {token:?} is shipped but not listed in config::SHIPPED_TOKEN_DIGESTS (crates/broker/src/config/weak.rs); add its sha256 so a public broker refuses it",
            path.display()
        );
    }
}
