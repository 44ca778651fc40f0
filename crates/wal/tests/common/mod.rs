//! Helpers shared by the WAL's integration tests.
#![allow(dead_code)]

use proptest::test_runner::TestCaseError;
use std::path::Path;
use std::sync::Arc;
use wal::fs::{FileBytes, RealFs, WalFile};
use wal::sim::SimFs;
use wal::{BatchMeta, EncodedBatch, FileSystem, LaneId, Priority, Wal, WalOptions};

pub const NORMAL0: LaneId = LaneId { priority: Priority::Normal, shard: 0 };

/// Records of batch `id`: recognisable, so a reader can tell whole from torn.
pub fn records_of(id: u64, count: u32, size: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut r = format!("{{\"batch\":{id},\"i\":{i},\"pad\":\"").into_bytes();
            while r.len() + 2 < size {
                r.push(b'a' + ((id as usize + r.len()) % 26) as u8);
            }
            r.extend_from_slice(b"\"}");
            r
        })
        .collect()
}

pub fn batch(id: u64, count: u32, size: usize) -> EncodedBatch {
    let meta = BatchMeta { tenant: "acme".into(), topic: "events".into(), idempotency_key: Some(format!("k{id}")) };
    EncodedBatch::new(&meta, &records_of(id, count, size)).expect("valid batch")
}

pub fn small_opts() -> WalOptions {
    WalOptions { shards: 2, segment_bytes: 4096, max_frame_bytes: 1 << 20, preallocate: true, ..WalOptions::default() }
}

pub fn open(fs: Arc<dyn FileSystem>, dir: &Path, opts: WalOptions) -> Wal {
    Wal::open(fs, dir, opts, None).expect("open wal")
}

/// Every batch of a lane as (base offset, batch id, records).
pub fn read_lane(wal: &Wal, lane: LaneId) -> Vec<(u64, u64, Vec<Vec<u8>>)> {
    let l = wal.lane(lane).expect("lane");
    let batches = l.read(l.earliest_offset(), usize::MAX, usize::MAX).expect("read lane");
    batches
        .into_iter()
        .map(|b| {
            let id = b.meta.idempotency_key.as_deref().and_then(|k| k[1..].parse().ok()).expect("batch key");
            (b.base_offset, id, b.records)
        })
        .collect()
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// The log under test and the disk it runs on.
pub struct Rig {
    pub sim: SimFs,
    pub wal: Option<Wal>,
    opts: WalOptions,
    cuts_seen: u64,
}

pub const DIR: &str = "/data/wal";

impl Rig {
    pub fn new(sim: SimFs, opts: WalOptions) -> Rig {
        Rig { sim, wal: None, opts, cuts_seen: 0 }
    }

    pub fn wal(&self) -> &Wal {
        self.wal.as_ref().expect("the log is open between actions")
    }

    /// Open the log on the disk as it is; with `cut_after`, the power is
    /// cut during this recovery, and the next one must still succeed. A
    /// cut that an earlier `PowerCut` armed may fire here too (with the
    /// writer's threads, after the action that armed it ended): reboot and
    /// open again, a bounded number of times.
    pub fn open(&mut self, cut_after: Option<u64>) -> Result<(), TestCaseError> {
        if let Some(n) = cut_after {
            self.remount_after_cut();
            self.sim.crash_after_ops(n);
        }
        for _ in 0..4 {
            self.remount_after_cut();
            let fs: Arc<dyn FileSystem> = Arc::new(self.sim.clone());
            let cuts = self.cuts_seen;
            match Wal::open(fs, Path::new(DIR), self.opts.clone(), None) {
                Ok(wal) if self.sim.power_cuts() == cuts => {
                    self.wal = Some(wal);
                    return Ok(());
                }
                Err(e) if self.sim.power_cuts() == cuts => {
                    return Err(TestCaseError::fail(format!("recovery after a crash failed: {e}")));
                }
                // The power went during this recovery: boot again.
                _ => {}
            }
        }
        Err(TestCaseError::fail("recovery kept losing power"))
    }

    /// After a power cut, later work sees the disk through a new mount.
    fn remount_after_cut(&mut self) {
        if self.sim.power_cuts() != self.cuts_seen {
            self.cuts_seen = self.sim.power_cuts();
            self.sim = self.sim.remount();
        }
    }

    /// Power loss now: every unsynced byte and name may go.
    pub fn crash(&mut self, cut_during_recovery: Option<u64>) -> Result<(), TestCaseError> {
        drop(self.wal.take());
        self.sim = self.sim.crash();
        self.open(cut_during_recovery)
    }

    /// If an armed power cut fired during the last action, reboot.
    pub fn after_cut(&mut self) -> Result<bool, TestCaseError> {
        if self.sim.power_cuts() == self.cuts_seen {
            return Ok(false);
        }
        drop(self.wal.take());
        self.open(None)?;
        Ok(true)
    }
}

/// How a whole file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WholeRead {
    /// `read_all`: mapped (the log's own reads).
    Mapped,
    /// `read_copy`: copied (read-only tools).
    Copied,
}

/// The real filesystem, with a hook called before each whole-file read:
/// the tests' way to count reads, or to race one.
pub struct Hooked<H: Fn(WholeRead, &Path) + Send + Sync + 'static>(pub H);

impl<H: Fn(WholeRead, &Path) + Send + Sync + 'static> FileSystem for Hooked<H> {
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        RealFs.create_dir_all(path)
    }
    fn create_new(&self, path: &Path) -> std::io::Result<Arc<dyn WalFile>> {
        RealFs.create_new(path)
    }
    fn open_rw(&self, path: &Path) -> std::io::Result<Arc<dyn WalFile>> {
        RealFs.open_rw(path)
    }
    fn read_all(&self, path: &Path) -> std::io::Result<FileBytes> {
        (self.0)(WholeRead::Mapped, path);
        RealFs.read_all(path)
    }
    fn read_copy(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        (self.0)(WholeRead::Copied, path);
        RealFs.read_copy(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        RealFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        RealFs.remove_file(path)
    }
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
        RealFs.list_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        RealFs.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        RealFs.exists(path)
    }
    fn file_len(&self, path: &Path) -> std::io::Result<u64> {
        RealFs.file_len(path)
    }
}
