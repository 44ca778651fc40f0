//! Secrets outside the file (issue 23): `${VAR}` in string values,
//! expanded after parsing; `admin_token_file`, `token_file`, `tokens_file`;
//! several tokens per principal, all valid at once. Real broker and
//! exporter processes; the variables are given to the child only.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// A broker config whose secrets are all outside it.
fn config(dir: &Path) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
data_dir = "{data}"
admin_token = "${{WEIR_TEST_ADMIN}}"
maintenance_interval_ms = 50
segment_bytes = 65536
disk_high_watermark = 1.0
[[tenant]]
name = "acme"
tokens_file = "{dir}/acme.tokens"
rate_per_sec = 1000.0
burst = 1000
[[tenant]]
name = "globex"
tokens = ["globex-old", "${{WEIR_TEST_GLOBEX}}"]
rate_per_sec = 1000.0
burst = 1000
[[topic]]
name = "events"
[[destination]]
name = "main"
topics = ["events"]
token_file = "{dir}/main.token"
"#,
        data = dir.join("data").display(),
        dir = dir.display()
    )
}

fn write_secrets(dir: &Path) {
    std::fs::write(dir.join("acme.tokens"), "acme-old\n\n  acme-new  \n").unwrap();
    std::fs::write(dir.join("main.token"), "exporter-from-file\n").unwrap();
}

const ENV: [(&str, &str); 2] = [("WEIR_TEST_ADMIN", "admin-from-env"), ("WEIR_TEST_GLOBEX", "globex-new")];

#[tokio::test]
async fn tokens_from_variables_and_files_all_authenticate_and_no_other_does() {
    let dir = tempfile::tempdir().unwrap();
    write_secrets(dir.path());
    let cfg = dir.path().join("broker.toml");
    std::fs::write(&cfg, config(dir.path())).unwrap();
    let (child, url) = spawn_broker_env(&cfg, Stdio::inherit(), &ENV);
    let _broker = ExporterProc { child };
    for token in ["acme-old", "acme-new", "globex-old", "globex-new"] {
        assert_eq!(ingest(&url, token, "events", "{}").await.status, 200, "{token}");
    }
    for token in ["${WEIR_TEST_GLOBEX}", "acme-oldacme-new", "acme", "admin-from-env"] {
        assert_ne!(ingest(&url, token, "events", "{}").await.status, 200, "{token:?} must not ingest");
    }
    let admin = client().get(format!("{url}/v1/admin/destinations")).bearer_auth("admin-from-env").send().await;
    assert_eq!(admin.unwrap().status().as_u16(), 200);

    // The exporter's token from its own `${VAR}` config: it delivers.
    let out = dir.path().join("out.ndjson");
    let ecfg = dir.path().join("exporter.toml");
    std::fs::write(
        &ecfg,
        format!(
            "broker = \"{url}\"\ndestination = \"main\"\ntoken = \"${{WEIR_TEST_EXPORTER}}\"\nsink = \"file://{}\"\n",
            out.display()
        ),
    )
    .unwrap();
    let exporter = Command::new(&EXPORTER)
        .arg("--config")
        .arg(&ecfg)
        .env("WEIR_TEST_EXPORTER", "exporter-from-file")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _exporter = ExporterProc { child: exporter };
    let what = "the exporter with its token from ${WEIR_TEST_EXPORTER} delivers the 4 records";
    wait_until(what, std::time::Duration::from_secs(30), || async { file_lines(&out).len() >= 4 }).await;
    assert_eq!(file_lines(&out).len(), 4);
}

#[test]
fn an_unset_variable_is_exit_2_naming_it_and_check_config_shows_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    write_secrets(dir.path());
    let cfg = dir.path().join("broker.toml");
    std::fs::write(&cfg, config(dir.path())).unwrap();
    let check = |env: &[(&str, &str)]| {
        let out = Command::new(&BROKER)
            .arg("--check-config")
            .arg(&cfg)
            .env_remove("WEIR_TEST_ADMIN")
            .env_remove("WEIR_TEST_GLOBEX")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, text) = check(&ENV[1..]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("WEIR_TEST_ADMIN") && text.contains("admin_token") && text.contains("not set"), "{text}");
    let (code, text) = check(&ENV);
    assert_eq!(code, Some(0), "{text}");
    for secret in ["admin-from-env", "globex-new", "globex-old", "acme-old", "exporter-from-file"] {
        assert!(!text.contains(secret), "--check-config printed {secret}: {text}");
    }
    assert!(text.contains("tokens_file") && text.contains("acme.tokens"), "the file keys are shown: {text}");

    // A start fails the same way (exit 2, one line naming the variable).
    let out = Command::new(&BROKER).arg("--config").arg(&cfg).env_remove("WEIR_TEST_ADMIN").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WEIR_TEST_ADMIN"));

    // The exporter too.
    let ecfg = dir.path().join("exporter.toml");
    std::fs::write(&ecfg, "broker = \"http://127.0.0.1:1\"\ndestination = \"d\"\ntoken = \"${WEIR_TEST_NOPE}\"\nsink = \"file:///dev/null\"\n")
        .unwrap();
    let out = Command::new(&EXPORTER).arg("--config").arg(&ecfg).env_remove("WEIR_TEST_NOPE").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WEIR_TEST_NOPE") && stderr.contains("token"), "{stderr}");
}
