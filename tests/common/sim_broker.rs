//! A broker served on an ephemeral loopback port over the crash-simulating
//! filesystem ([`wal::sim::SimFs`]), that can be stopped and opened again on
//! the disk a power cut left: the broker-level power-loss and fault suites.
//! The WAL lives in the simulated filesystem; the lease store (sled) in a
//! real directory.

use broker::core::Broker;
use broker::http::{router, AppState};
use broker::metrics::Metrics;
use config::Config;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wal::sim::SimFs;
use wal::FileSystem;

pub struct SimBroker {
    pub url: String,
    pub broker: Arc<Broker>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimBroker {
    /// Open (running recovery on `mount`) and serve.
    pub async fn start(mount: &SimFs, data_dir: &Path, extra: &str) -> SimBroker {
        let cfg = Config::from_toml(&super::config(data_dir, extra)).expect("config");
        let metrics = Metrics::new();
        let fs: Arc<dyn FileSystem> = Arc::new(mount.clone());
        let broker = Arc::new(
            Broker::open(cfg.validate().expect("valid config"), fs, Arc::clone(&metrics))
                .expect("broker opens after the crash"),
        );
        let state = AppState { broker: Arc::new(OnceLock::new()), metrics, broker_id: Arc::from("sim") };
        let _ = state.broker.set(Arc::clone(&broker));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router(state))
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        SimBroker { url, broker, stop: Some(tx), task: Some(task) }
    }

    /// Stop serving, wait for every connection to end and every other
    /// holder of the broker to let go, and close it (its sled store too),
    /// so that the next [`SimBroker::start`] can open the same directory.
    /// Clients must not keep idle connections (use [`no_pool_client`]).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the server stopped within 30 s (a request hangs?)")
                .expect("server task");
        }
        let b = &self.broker;
        super::wait_until("every holder of the broker let go", Duration::from_secs(30), || async {
            Arc::strong_count(b) == 1
        })
        .await;
        let broker = self.broker;
        tokio::task::spawn_blocking(move || {
            broker.wal().shutdown();
            drop(broker);
        })
        .await
        .expect("close the broker");
    }
}

/// A client that keeps no idle connection (a graceful stop waits for them).
pub fn no_pool_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).pool_max_idle_per_host(0).build().expect("client")
}

/// Every record of the WAL on `mount`, as (lane, offset, payload), read by
/// opening the WAL directly (recovery included).
pub fn wal_records(mount: &SimFs, data_dir: &Path) -> Vec<(String, u64, Vec<u8>)> {
    let opts = wal::WalOptions { shards: 4, segment_bytes: 65536, ..wal::WalOptions::default() };
    let w = wal::Wal::open(Arc::new(mount.clone()), &data_dir.join("wal"), opts, None).expect("WAL opens");
    let mut out = Vec::new();
    for lane in w.lanes() {
        let id = lane.id().to_string();
        for b in lane.read(lane.earliest_offset(), usize::MAX, usize::MAX).expect("read lane") {
            for (i, r) in b.records.into_iter().enumerate() {
                out.push((id.clone(), b.base_offset + i as u64, r));
            }
        }
    }
    w.shutdown();
    out
}
