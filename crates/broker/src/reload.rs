//! SIGHUP (`systemctl reload weir-broker`): read the configuration again,
//! validated whole — the file, its secret files, its TLS files — and put it
//! in force when a running broker can take all of it:
//!
//! - tenants added, removed or changed (rate, burst, hard limits,
//!   priority), with their tokens: a new tenant is accepted at once, a
//!   removed one (or a removed token) refused at once; a token rotates
//!   with no failed request (add the new, move clients, remove the old);
//! - topics added or removed;
//! - destinations added (their cursor starts at `start_at` when the data
//!   directory has none for them) and removed when nothing is pending for
//!   them and no lease is out; every destination's tokens;
//! - the admin's tokens;
//! - the TLS certificate and key (and client CA) of every listener, re-read
//!   from the same files: a renewed certificate needs no restart;
//!   handshakes in progress finish on the old one.
//!
//! Anything else that differs — a listener, `data_dir`, the WAL's
//! geometry, a limit, a kept destination's settings, a removed destination
//! with records pending, other TLS files — needs a restart: the reload is
//! refused with one log line naming every such key, and nothing changes.
//! So is a file that does not validate. Requests in flight finish under
//! the configuration they started with (each holds the tenant and
//! destination it resolved). `weir_config_reloads_total{result}` counts
//! reloads; `weir_config_last_reload_success_timestamp_seconds` is set by a
//! good one.
//!
//! Never: log a token or a key's bytes (only key names).

use crate::core::{ApplyError, Broker};
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
    /// These keys differ and a running broker cannot take them: restart
    /// it to apply the file, or put the running values back.
    #[error("these keys need a restart: {}", keys.join(", "))]
    NeedsRestart {
        /// Each key, named as in the file (`destination "d": topics`).
        keys: Vec<String>,
    },
    /// A listener's TLS files changed between validation and use.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The new configuration could not be put in force (a new
    /// destination's state did not load).
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// What a reload put in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reloaded {
    /// Tenants now configured.
    pub(crate) tenants: usize,
    /// Destinations now configured.
    pub(crate) destinations: usize,
    /// Listeners whose certificate was re-read.
    pub(crate) tls_listeners: usize,
}

/// Top-level keys a reload applies, compared apart (or not at all: the
/// TLS files' contents are re-read whatever they are).
const RELOADED_TOP: [&str; 9] = [
    "admin_token",
    "admin_tokens",
    "admin_token_file",
    "tls_cert_file",
    "tls_key_file",
    "tls_client_ca_file",
    "tenant",
    "topic",
    "destination",
];
/// A destination's keys a reload applies (its tokens), and `start_at`,
/// which only says where a destination new to the data directory starts.
const RELOADED_IN_DESTINATION: [&str; 5] = ["token", "tokens", "token_file", "tokens_file", "start_at"];

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
            tracing::info!(
                tenants = r.tenants,
                destinations = r.destinations,
                tls_listeners = r.tls_listeners,
                "SIGHUP: configuration reloaded"
            );
        }
        Err(e) => {
            metrics.config_reloads.with_label_values(&["error"]).inc();
            tracing::error!(error = %e, "SIGHUP: configuration not reloaded; the running one stays in force");
        }
    }
}

/// Validate the configuration `args` name, then put all of it in force,
/// or none of it.
fn reload(args: &Args, broker: &Broker, tls: &[Arc<LiveTls>]) -> Result<Reloaded, ReloadError> {
    let (fresh, _) = load_config(args)?;
    let running = broker.cfg();
    let mut keys = changed_keys(running.file(), fresh.file());
    keys.extend(changed_destinations(broker, &running, &fresh));
    // The files' contents are reloaded; other paths, or TLS turned on or
    // off, need a restart (the listeners were built for these).
    let running_files = tls.first().map(|l| l.files());
    if fresh.tls.as_ref() != running_files {
        keys.push("tls_cert_file, tls_key_file, tls_client_ca_file (other files, or TLS on or off)".to_string());
    }
    if !keys.is_empty() {
        return Err(ReloadError::NeedsRestart { keys });
    }
    // Every fallible step before any certificate is installed: nothing
    // changes unless all can.
    let prepared = tls.iter().map(|listener| listener.prepare()).collect::<Result<Vec<_>, _>>()?;
    let reloaded =
        Reloaded { tenants: fresh.tenants.len(), destinations: fresh.destinations.len(), tls_listeners: tls.len() };
    broker.apply(fresh)?;
    for (listener, config) in tls.iter().zip(prepared) {
        listener.install(config);
    }
    Ok(reloaded)
}

/// The destinations a reload cannot take: a kept one whose settings
/// changed (each key named), a removed one with records pending or leases
/// out.
fn changed_destinations(broker: &Broker, running: &ValidConfig, fresh: &ValidConfig) -> Vec<String> {
    let mut keys = Vec::new();
    for old in &running.destinations {
        let Some(new) = fresh.destinations.iter().find(|d| d.name == old.name) else {
            let pending = broker.deliveries().dest_by_name(&old.name).map(|d| broker.deliveries().removable(&d));
            if let Some(Err((records, bytes))) = pending {
                keys.push(format!(
                    "destination {:?} (removed with {records} records, {bytes} bytes pending or leased)",
                    old.name
                ));
            }
            continue;
        };
        let (Ok(serde_json::Value::Object(before)), Ok(serde_json::Value::Object(after))) =
            (serde_json::to_value(old), serde_json::to_value(new))
        else {
            keys.push(format!("destination {:?} (cannot be compared)", old.name));
            continue;
        };
        let differ = |k: &&String| !RELOADED_IN_DESTINATION.contains(&k.as_str()) && before.get(*k) != after.get(*k);
        let mut changed: Vec<&String> = before.keys().chain(after.keys()).filter(differ).collect();
        changed.sort();
        changed.dedup();
        keys.extend(changed.into_iter().map(|k| format!("destination {:?}: {k}", old.name)));
    }
    keys
}

/// The top-level keys of the files as written that differ, except those a
/// reload applies; compared as JSON so no key is forgotten when one is
/// added.
fn changed_keys(running: &Config, fresh: &Config) -> Vec<String> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(running), serde_json::to_value(fresh))
    else {
        return vec!["(the configurations cannot be compared)".to_string()];
    };
    let differ = |k: &&String| !RELOADED_TOP.contains(&k.as_str()) && old.get(*k) != new.get(*k);
    let mut keys: Vec<String> = old.keys().chain(new.keys()).filter(differ).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_a_reload_cannot_apply_are_named() {
        let old = Config::development();
        let mut new = old.clone();
        new.tenants[0].tokens = vec!["another-token".into()];
        new.tenants[0].rate_per_sec = 1.0;
        new.admin_token = "another-admin".into();
        new.tls_cert_file = Some("/etc/weir/cert.pem".into());
        assert!(changed_keys(&old, &new).is_empty(), "{:?}", changed_keys(&old, &new));
        new.shards = 8;
        new.max_body_bytes += 1;
        assert_eq!(changed_keys(&old, &new), ["max_body_bytes", "shards"]);
    }
}
