//! In-crate tests of the lease protocol over a real broker state: the WAL
//! on the crash-simulating filesystem, sled in a temporary directory, and
//! restarts that reopen both from what is on disk.

mod config_bounds;
mod fair;
mod joint;
mod lease_model;
mod pending;
mod priority;
mod regressions;

use crate::core::Broker;
use crate::metrics::Metrics;
use config::Config;
use std::sync::Arc;
use wal::sim::SimFs;
use wal::{EncodedBatch, FileSystem, LaneId, Priority};

/// The one lane the harness's tenants write to (`shards = 1`).
pub(crate) fn normal0() -> LaneId {
    LaneId::new(Priority::Normal, 0)
}

/// A broker that can be restarted on the same WAL and sled directory.
pub(crate) struct Harness {
    pub sim: SimFs,
    /// Holds sled and the config's data dir for the harness's lifetime.
    pub _dir: tempfile::TempDir,
    pub config: String,
    pub broker: Option<Arc<Broker>>,
    pub rt: tokio::runtime::Runtime,
}

/// A config with tenants `acme` and `globex`, topics `events` and `other`,
/// and the given destinations and top-level knobs.
pub(crate) fn config_text(data_dir: &std::path::Path, top: &str, dests: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
data_dir = "{}"
admin_token = "admin-t"
shards = 1
segment_bytes = 65536
preallocate = false
{top}
[[tenant]]
name = "acme"
token = "acme-t"
rate_per_sec = 100000.0
burst = 200000

[[tenant]]
name = "globex"
token = "globex-t"
rate_per_sec = 100000.0
burst = 200000

[[topic]]
name = "events"

[[topic]]
name = "other"
{dests}
"#,
        data_dir.display()
    )
}

impl Harness {
    pub fn new(top: &str, dests: &str) -> Harness {
        Harness::new_edited(top, dests, |c| c)
    }

    /// [`Harness::new`] with the config text passed through `edit` first.
    pub fn new_edited(top: &str, dests: &str, edit: impl FnOnce(String) -> String) -> Harness {
        // tmpfs where there is one: sled flushes on every acknowledged call.
        let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
        let dir = tempfile::Builder::new().prefix("weir-lease-test").tempdir_in(base).expect("tempdir");
        let config = edit(config_text(dir.path(), top, dests));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let mut h = Harness { sim: SimFs::new(7), _dir: dir, config, broker: None, rt };
        h.open();
        h
    }

    fn open(&mut self) {
        // sled lets go of its file lock from its background flusher thread,
        // a moment after the last handle drops, and offers nothing to wait
        // on: retry the open a bounded number of times.
        let mut last = None;
        for _ in 0..400 {
            let cfg = Config::from_toml(&self.config).expect("config");
            let fs: Arc<dyn FileSystem> = Arc::new(self.sim.clone());
            match Broker::open(cfg.validate().expect("valid config"), fs, Metrics::new()) {
                Ok(b) => {
                    self.broker = Some(Arc::new(b));
                    return;
                }
                Err(crate::core::OpenError::Store(e)) if chain(&e).contains("lock") => last = Some(e),
                Err(e) => panic!("broker opens: {e}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("sled stayed locked after the broker stopped: {last:?}");
    }

    pub fn b(&self) -> &Arc<Broker> {
        self.broker.as_ref().expect("broker is open")
    }

    /// Stop the broker (WAL writers joined, sled closed) and open it again
    /// from what is on disk.
    pub fn restart(&mut self) {
        if let Some(b) = self.broker.take() {
            // As the SIGTERM path does: writers stopped, sled flushed.
            b.wal().shutdown();
            self.rt.block_on(b.deliveries().store().flush()).expect("flush");
            drop(b);
        }
        self.open();
    }

    /// Append one batch for (tenant, topic) to normal/0; its first offset.
    pub fn append(&self, tenant: &str, topic: &str, records: &[String]) -> u64 {
        self.append_full(tenant, topic, records).base_offset
    }

    /// Append one batch to normal/0, durably; where and when it landed.
    pub fn append_full(&self, tenant: &str, topic: &str, records: &[String]) -> wal::Appended {
        self.append_to(normal0(), tenant, topic, records)
    }

    /// Append one batch to `lane`, durably; where and when it landed.
    pub fn append_to(&self, lane: LaneId, tenant: &str, topic: &str, records: &[String]) -> wal::Appended {
        let batch = EncodedBatch::encode(tenant, topic, None, records).expect("batch");
        let fut = self.b().wal().append(lane, batch);
        self.rt.block_on(fut).expect("append")
    }

    pub fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

/// An error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
