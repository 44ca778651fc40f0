//! SIGHUP: the exporter re-reads its `--config` file and the files its
//! secrets come from (`--sign-secret-file`, `--header-file`), so a signing
//! secret rotates and a receiver's credential changes with no restart and
//! no request in flight lost.
//!
//! What takes effect: the signing secrets and key, and the extra headers —
//! the webhook's `Dressing` (`sink::webhook`), swapped whole, so each request is signed and
//! dressed by one generation — and the exporter token (`token`, or the
//! content of `token_file`), swapped whole for the next broker request (a
//! rotation: the broker holds old and new, the exporter moves, the old is
//! removed). Every other key that changed (the sink, the broker, batch
//! sizes, …) is named in one log line saying it needs a restart; its old value stays in force. A reload that fails (a
//! file unreadable, a key or header refused) changes nothing and logs why.
//! Each reload counts in `weir_config_reloads_total{result}`; a good one
//! sets `weir_config_last_reload_success_timestamp_seconds`.
//!
//! Values are never logged: only key names.

use crate::config::{Args, ConfigError, Options, Settings};
use crate::metrics::ExporterMetrics;
use crate::secret::LiveToken;
use crate::sink::webhook::{Dressing, Live as LiveDressing};
use std::sync::Arc;
use tokio::sync::watch;

/// Keys that a reload applies.
const RELOADED: [&str; 7] =
    ["sign_secret", "sign_secret_file", "sign_key", "header", "header_file", "token", "token_file"];

/// What a reload swaps in a running exporter.
pub(crate) struct Live {
    /// The webhook's signing secrets and headers.
    pub(crate) dressing: Arc<LiveDressing>,
    /// The token the broker client sends.
    pub(crate) token: Arc<LiveToken>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What a reload applied, and the keys it could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reloaded {
    pub(crate) secrets: usize,
    pub(crate) headers: usize,
    /// Whether the token in force changed.
    pub(crate) token_changed: bool,
    pub(crate) need_restart: Vec<String>,
}

/// What is in force: the settings read at start (flags over the file).
#[derive(Debug, Clone)]
pub struct Running {
    /// The settings merged at start (`Args::merged`): flags over the file.
    pub settings: Settings,
}

/// Re-read `args`' files, apply what can be applied to `live`, and say
/// which other keys differ from what is `running`.
pub(crate) fn reload(args: &Args, running: &Running, live: &Live) -> Result<Reloaded, ReloadError> {
    let settings = args.merged()?;
    let new = Options::from_settings(settings.clone())?;
    let dressing = Dressing::new(&new.webhook)?;
    live.dressing.set(dressing);
    let token_changed = live.token.set(new.token);
    let need_restart = changed_keys(&running.settings, &settings);
    Ok(Reloaded { secrets: new.webhook.secrets.len(), headers: new.webhook.headers.len(), token_changed, need_restart })
}

/// The keys whose values differ, except those a reload applies: compared
/// as the keys of the settings' JSON form, so no key is forgotten here
/// when one is added to [`Settings`].
fn changed_keys(old: &Settings, new: &Settings) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return vec!["(settings not comparable)".to_string()];
    };
    a.iter()
        .filter(|(k, v)| b.get(k.as_str()) != Some(*v) && !RELOADED.contains(&k.as_str()))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Reload at each SIGHUP until `stop`.
pub(crate) fn spawn(
    args: Args,
    running: Running,
    live: Live,
    metrics: Arc<ExporterMetrics>,
    stop: watch::Receiver<bool>,
) {
    let Some(hangups) = plumbing::signals::hangups() else { return };
    plumbing::signals::spawn_on_hangup(hangups, stop, move || match reload(&args, &running, &live) {
        Ok(r) => {
            metrics.reloads.with_label_values(&["ok"]).inc();
            metrics.reloaded_now();
            tracing::info!(
                signing_secrets = r.secrets,
                headers = r.headers,
                token_changed = r.token_changed,
                "SIGHUP: signing secrets, headers and the token reloaded"
            );
            if !r.need_restart.is_empty() {
                tracing::warn!(keys = %r.need_restart.join(", "), "SIGHUP: these keys changed and take effect only at a restart; their old values stay in force");
            }
        }
        Err(e) => {
            metrics.reloads.with_label_values(&["error"]).inc();
            tracing::error!(error = %e, "SIGHUP: configuration not reloaded; the running one stays");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn a_reload_applies_secrets_headers_and_the_token_and_names_the_keys_that_need_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (config, secrets) = (dir.path().join("e.toml"), dir.path().join("secrets"));
        let s1 = format!("whsec_{}", protocol::b64_encode(&[1; 32]));
        let s2 = format!("whsec_{}", protocol::b64_encode(&[2; 32]));
        let base = "broker = \"http://h:1\"\ndestination = \"d\"\ntoken = \"t\"\nsink = \"http://h:2/\"\n";
        std::fs::write(&config, format!("{base}sign_secret_file = {:?}\n", secrets.display().to_string())).unwrap();
        std::fs::write(&secrets, format!("{s1}\n")).unwrap();
        let args = Args::parse_from(["exporter", "--config", config.to_str().unwrap()]);
        let opts = Options::resolve(args.clone()).unwrap();
        let running = Running { settings: args.merged().unwrap() };
        let live = Live {
            dressing: LiveDressing::new(Dressing::new(&opts.webhook).unwrap()),
            token: LiveToken::new(opts.token),
        };
        let base = base.replace("token = \"t\"", "token = \"t2\"");
        std::fs::write(&secrets, format!("# rotation\n{s1}\n{s2}\n")).unwrap();
        std::fs::write(
            &config,
            format!(
                "{base}wait_ms = 5\nheader = [\"Authorization: Bearer x\"]\nsign_secret_file = {:?}\n",
                secrets.display().to_string()
            ),
        )
        .unwrap();
        let r = reload(&args, &running, &live).unwrap();
        assert_eq!(
            r,
            Reloaded { secrets: 2, headers: 1, token_changed: true, need_restart: vec!["wait_ms".to_string()] }
        );
        assert_eq!(live.token.get().expose(), "t2", "the new token is in force");
        assert_eq!(live.dressing.get().signer().signature("i", 1, b"").split(' ').count(), 2);
        // A bad secret changes nothing.
        std::fs::write(&secrets, "whsec_short\n").unwrap();
        assert!(reload(&args, &running, &live).is_err());
        assert_eq!(live.dressing.get().signer().signature("i", 1, b"").split(' ').count(), 2);
    }
}
