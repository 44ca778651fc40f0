//! SIGHUP (`systemctl reload weir-broker`): read the configuration again,
//! validated whole — the file, its secret files, its TLS files — and put in
//! force what a running broker can take without a restart:
//!
//! - the tokens of every principal (`token`, `tokens`, the `*_file` keys),
//!   when the principals are those the broker started with (the admin, the
//!   same tenants and destinations in the same order): a token rotates
//!   with no failed request, a removed token is refused at once;
//! - the TLS certificate and key (and client CA) of every listener: a
//!   renewed certificate needs no restart; handshakes in progress finish on
//!   the old one.
//!
//! Every other key that differs (tenants added or removed, rates, topics,
//! destinations, listeners, WAL geometry, …) is named in one log line as
//! needing a restart, and the running value stays. A file that does not
//! validate changes nothing: one line names the key, and the old
//! configuration stays in force. Requests in flight are unaffected.
//! `weir_config_reloads_total{result}` counts reloads;
//! `weir_config_last_reload_success_timestamp_seconds` is set by a good one.
//!
//! Never: log a token or a key's bytes (only key names).

use crate::core::Broker;
use crate::server::{load_config, Args};
use config::{Config, ConfigError, ValidConfig};
use plumbing::tls::{LiveTls, TlsError};
use std::sync::Arc;
use tokio::sync::watch;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    /// The file (or a secret or TLS file it names) does not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener's TLS files changed between validation and use.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What a reload put in force, and the keys it could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reloaded {
    /// The token table was replaced.
    pub(crate) tokens: bool,
    /// Listeners whose certificate was re-read.
    pub(crate) tls_listeners: usize,
    /// Keys that differ and take effect only at a restart.
    pub(crate) need_restart: Vec<String>,
}

/// Keys a reload applies: compared apart, never named as needing a restart.
const RELOADED_TOP: [&str; 6] =
    ["admin_token", "admin_tokens", "admin_token_file", "tls_cert_file", "tls_key_file", "tls_client_ca_file"];
const RELOADED_IN_SECTIONS: [&str; 4] = ["token", "tokens", "token_file", "tokens_file"];

/// Reload at each SIGHUP of `hangups` until `stopped`.
pub(crate) fn spawn(
    hangups: tokio::signal::unix::Signal,
    args: Args,
    broker: Arc<Broker>,
    tls: Vec<Arc<LiveTls>>,
    stopped: watch::Receiver<bool>,
) {
    plumbing::signals::spawn_on_hangup(hangups, stopped, move || report(&broker, reload(&args, &broker, &tls)));
}

fn report(broker: &Broker, outcome: Result<Reloaded, ReloadError>) {
    let metrics = broker.metrics();
    match outcome {
        Ok(r) => {
            metrics.config_reloads.with_label_values(&["ok"]).inc();
            metrics.config_loaded_now();
            tracing::info!(tokens = r.tokens, tls_listeners = r.tls_listeners, "SIGHUP: configuration reloaded");
            if !r.need_restart.is_empty() {
                tracing::warn!(keys = %r.need_restart.join(", "), "SIGHUP: these keys changed and take effect only at a restart; their running values stay in force");
            }
        }
        Err(e) => {
            metrics.config_reloads.with_label_values(&["error"]).inc();
            tracing::error!(error = %e, "SIGHUP: configuration not reloaded; the running one stays in force");
        }
    }
}

/// Validate the configuration `args` name, then apply what can be applied.
fn reload(args: &Args, broker: &Broker, tls: &[Arc<LiveTls>]) -> Result<Reloaded, ReloadError> {
    let (fresh, _) = load_config(args)?;
    let running = broker.cfg();
    let mut need_restart = changed_keys(running.file(), fresh.file());
    let tokens = same_principals(running, &fresh);
    if !tokens {
        need_restart.push("the principals (admin, tenants, destinations) — their tokens too".to_string());
    }
    // The files' contents are reloaded; other paths, or TLS turned on or
    // off, need a restart (the listeners were built for these).
    let running_files = tls.first().map(|l| l.files());
    if fresh.tls.as_ref() != running_files {
        need_restart
            .push("tls_cert_file, tls_key_file, tls_client_ca_file (other files, or TLS on or off)".to_string());
    }
    // Every listener's certificate prepared first — the fallible step —
    // then all installed, then the tokens: nothing changes unless all can.
    let prepared = tls.iter().map(|listener| listener.prepare()).collect::<Result<Vec<_>, _>>()?;
    for (listener, config) in tls.iter().zip(prepared) {
        listener.install(config);
    }
    if tokens {
        broker.set_tokens(&fresh.tokens);
    }
    let tls_listeners = tls.len();
    Ok(Reloaded { tokens, tls_listeners, need_restart })
}

/// The admin, and the same tenants and destinations in the same order.
fn same_principals(running: &ValidConfig, fresh: &ValidConfig) -> bool {
    let names = |c: &ValidConfig| -> (Vec<String>, Vec<String>) {
        (c.tenants.iter().map(|t| t.name.clone()).collect(), c.destinations.iter().map(|d| d.name.clone()).collect())
    };
    names(running) == names(fresh)
}

/// The keys of the files as written that differ, except those a reload
/// applies; compared as JSON so no key is forgotten when one is added.
fn changed_keys(running: &Config, fresh: &Config) -> Vec<String> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(without_reloaded(running)), serde_json::to_value(without_reloaded(fresh)))
    else {
        return vec!["(the configurations cannot be compared)".to_string()];
    };
    let mut keys: Vec<String> =
        old.keys().chain(new.keys()).filter(|k| old.get(*k) != new.get(*k)).cloned().collect::<Vec<_>>();
    keys.sort();
    keys.dedup();
    keys
}

/// `config` with the keys a reload applies blanked.
fn without_reloaded(config: &Config) -> serde_json::Value {
    let mut tree = serde_json::to_value(config).unwrap_or_default();
    if let Some(top) = tree.as_object_mut() {
        for key in RELOADED_TOP {
            top.remove(key);
        }
        for section in ["tenant", "destination"] {
            for entry in top.get_mut(section).and_then(|v| v.as_array_mut()).into_iter().flatten() {
                for key in RELOADED_IN_SECTIONS {
                    entry.as_object_mut().map(|fields| fields.remove(key));
                }
            }
        }
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_a_reload_cannot_apply_are_named() {
        let old = Config::development();
        let mut new = old.clone();
        new.tenants[0].tokens = vec!["another-token".into()];
        new.admin_token = "another-admin".into();
        new.tls_cert_file = Some("/etc/weir/cert.pem".into());
        assert!(changed_keys(&old, &new).is_empty(), "{:?}", changed_keys(&old, &new));
        new.tenants[0].rate_per_sec = 1.0;
        new.shards = 8;
        assert_eq!(changed_keys(&old, &new), ["shards", "tenant"]);
    }
}
