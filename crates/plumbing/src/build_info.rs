//! What a process is: `weir_build_info{version,commit}` (always 1) and the
//! `process_*` series (CPU seconds, resident and virtual memory, open and
//! maximum descriptors, threads, start time) that dashboards and alerts
//! expect of every service, registered in the process's own registry.
//!
//! The commit comes from the binary (its `build.rs` sets `WEIR_GIT_COMMIT`,
//! so only the thin binary packages rebuild when HEAD moves); the binary's
//! `main` hands it over with [`set_commit`] before any registry is built.

use prometheus::{IntGaugeVec, Opts, Registry};
use std::sync::OnceLock;

static COMMIT: OnceLock<&'static str> = OnceLock::new();

/// Record the commit this binary was built from (first call wins).
pub fn set_commit(commit: &'static str) {
    let _ = COMMIT.set(commit);
}

/// The commit [`set_commit`] recorded, else `unknown` (a library test).
pub fn commit() -> &'static str {
    COMMIT.get().copied().unwrap_or("unknown")
}

/// Register `weir_build_info` (`version`, [`commit`]) and, on Linux, the
/// `process_*` collector in `registry`.
pub fn register(registry: &Registry, version: &str) -> Result<(), prometheus::Error> {
    let info = IntGaugeVec::new(
        Opts::new("weir_build_info", "Always 1: the version and commit of this process's build."),
        &["version", "commit"],
    )?;
    info.with_label_values(&[version, commit()]).set(1);
    registry.register(Box::new(info))?;
    #[cfg(target_os = "linux")]
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_and_process_series_are_exposed() {
        let registry = Registry::new();
        register(&registry, "9.9.9").unwrap();
        let names: Vec<String> = registry.gather().iter().map(|f| f.name().to_string()).collect();
        assert!(names.contains(&"weir_build_info".to_string()), "{names:?}");
        for series in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(names.iter().any(|n| n == series), "{series} missing: {names:?}");
        }
    }
}
