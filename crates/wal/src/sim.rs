//! A simulated, crashable filesystem for deterministic fault tests.
//!
//! Model (what a crash may do, and nothing more):
//! - File contents: bytes are durable once `sync_data` returned on that file.
//!   Unsynced writes are kept in order; at a crash a prefix of them survives,
//!   and the first write past that prefix may be *torn*: an arbitrary subset
//!   of its 512-byte sectors reaches the disk.
//! - Directory entries (create, rename, remove, and new subdirectories) are
//!   durable once `sync_dir` ran on the directory; unsynced ones are rolled
//!   back at a crash, with everything below a subdirectory that goes.
//! - Faults: a failing `sync_data`, `ENOSPC` once a byte budget is spent,
//!   `ENOSPC` once the disk's size ([`SimFs::set_capacity`]) is used, a
//!   panic in the next `sync_data` ([`SimFs::panic_next_sync`], to test a
//!   writer that dies), and a power cut after the next N mutating operations
//!   ([`SimFs::crash_after_ops`]), which puts a crash point between any two
//!   file operations of recovery, roll, recycle and retention.
//!
//! A crash *fences* the instance that died: every file handle opened before
//! it, and every [`SimFs`] handle mounted before it (with all its clones),
//! fails every later operation with `EIO`, as the threads of a process that
//! lost power no longer touch the disk. Only the handle [`SimFs::crash`] (or
//! [`SimFs::remount`]) returns sees the disk afterwards.
//!
//! Space, under a capacity: a file uses the length of its bytes (a
//! preallocation counts in full, a write inside the file's length takes no
//! space) while it has a name or an open handle of the running mount, as an
//! unlinked file that is still open holds its blocks on a real disk. So a
//! deleted file gives its space back once its last handle is dropped, and a
//! renamed one keeps it.

use crate::fs::{FileBytes, FileSystem, WalFile};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const SECTOR: usize = 512;

#[derive(Default)]
struct Inode {
    /// What a reader sees now.
    data: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Unsynced operations in order: (position, bytes) or a resize.
    pending: Vec<Op>,
    /// Handles of the running mount open on it.
    open: usize,
}

enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    /// Live namespace: path -> inode.
    names: BTreeMap<PathBuf, u64>,
    /// Namespace as of the last sync of each directory.
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Directories whose entry in their parent was synced (a root always is).
    durable_dirs: BTreeSet<PathBuf>,
    next_inode: u64,
    generation: u64,
    rng: u64,
    fail_syncs: u32,
    space_left: Option<u64>,
    /// The disk's size for [`SimFs::set_capacity`] (`None`: unlimited).
    capacity: Option<u64>,
    /// The next `sync_data` panics ([`SimFs::panic_next_sync`]).
    panic_next_sync: bool,
    syncs: u64,
    /// Mutating operations left before a power cut (`None`: not armed).
    ops_left: Option<u64>,
    /// Power cuts that [`State::ops_left`] caused.
    cuts: u64,
}

/// A crashable in-memory filesystem. Cloning shares the same state and
/// the same mount: a crash fences every clone of a mount together.
#[derive(Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
    /// The crash generation this handle was mounted in.
    mount: u64,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated I/O error: {what}"))
}

impl State {
    fn next_rand(&mut self) -> u64 {
        // splitmix64: deterministic from the seed the test gives.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn inode_mut(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or_else(|| eio("stale inode"))
    }

    /// Bytes used under the capacity model (see the module doc).
    fn used(&self) -> u64 {
        let named: BTreeSet<u64> = self.names.values().copied().collect();
        self.inodes.iter().filter(|(i, n)| n.open > 0 || named.contains(i)).map(|(_, n)| n.data.len() as u64).sum()
    }

    /// How many more bytes the files may grow by now (`None`: no limit).
    fn room(&self) -> Option<u64> {
        let by_capacity = self.capacity.map(|c| c.saturating_sub(self.used()));
        match (by_capacity, self.space_left) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Gate one operation of a handle mounted (or opened) in `generation`:
    /// fenced after a crash, and counted towards an armed power cut.
    fn admit(&mut self, generation: u64, mutating: bool) -> io::Result<()> {
        if generation != self.generation {
            return Err(eio("operation of an instance that crashed"));
        }
        if mutating {
            match self.ops_left {
                Some(0) => {
                    self.ops_left = None;
                    self.cuts += 1;
                    self.power_loss();
                    return Err(eio("power cut"));
                }
                Some(n) => self.ops_left = Some(n - 1),
                None => {}
            }
        }
        Ok(())
    }

    /// Drop unsynced bytes, tear the first unsynced write of each file at
    /// sector granularity, roll back unsynced directory entries, and fence
    /// every handle of the generation that ends.
    fn power_loss(&mut self) {
        self.generation += 1;
        self.fail_syncs = 0;
        self.panic_next_sync = false;
        for inode in self.inodes.values_mut() {
            inode.open = 0;
        }
        self.space_left = None;
        self.ops_left = None;
        let durable_dirs = &self.durable_dirs;
        let kept = |d: &Path| d.ancestors().all(|a| a.parent().is_none() || durable_dirs.contains(a));
        self.dirs = self.dirs.iter().filter(|d| kept(d)).cloned().collect();
        let dirs = &self.dirs;
        self.names = self
            .durable_names
            .iter()
            .filter(|(p, _)| p.parent().is_some_and(|d| dirs.contains(d)))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        let inos: Vec<u64> = self.inodes.keys().copied().collect();
        for ino in inos {
            let keep_full = {
                let n = self.inodes[&ino].pending.len() as u64;
                if n == 0 {
                    0
                } else {
                    (self.next_rand() % (n + 1)) as usize
                }
            };
            let tear_mask = self.next_rand();
            let Some(inode) = self.inodes.get_mut(&ino) else { continue };
            let mut data = std::mem::take(&mut inode.durable);
            let pending = std::mem::take(&mut inode.pending);
            for op in &pending[..keep_full] {
                apply(&mut data, op);
            }
            if let Some(Op::Write(pos, bytes)) = pending.get(keep_full) {
                // Tear: each sector of the next write lands or not.
                for (i, chunk) in bytes.chunks(SECTOR).enumerate() {
                    if tear_mask.rotate_left(i as u32) & 1 == 1 {
                        apply(&mut data, &Op::Write(pos + (i * SECTOR) as u64, chunk.to_vec()));
                    }
                }
            }
            inode.durable = data.clone();
            inode.data = data;
        }
        let live: BTreeSet<u64> = self.names.values().copied().collect();
        self.inodes.retain(|ino, _| live.contains(ino));
    }
}

fn apply(data: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write(pos, bytes) => {
            let pos = *pos as usize;
            if data.len() < pos + bytes.len() {
                data.resize(pos + bytes.len(), 0);
            }
            data[pos..pos + bytes.len()].copy_from_slice(bytes);
        }
        Op::SetLen(len) => data.resize(*len as usize, 0),
    }
}

impl SimFs {
    /// An empty disk whose crashes tear writes as `seed` decides (the same
    /// seed, the same tears).
    pub fn new(seed: u64) -> Self {
        let fs = SimFs::default();
        fs.lock().rng = seed;
        fs
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the checker.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `n` calls to `sync_data` fail with EIO. A fault armed
    /// through a mount that has lost power since is dropped: nothing runs
    /// on that mount any more, and the fault must not carry over into the
    /// recovery of the next boot. (With the writer's threads, a power cut
    /// armed earlier can fire after the action that armed it returned and
    /// before the test arms this fault; carried over, it failed the
    /// recovery's first sync, which the model test read as a recovery bug.)
    pub fn fail_next_syncs(&self, count: u32) {
        let mut st = self.lock();
        if count == 0 || st.generation == self.mount {
            st.fail_syncs = count;
        }
    }

    /// Writes fail with ENOSPC once `bytes` more bytes were written (`None`:
    /// unlimited). Like [`SimFs::fail_next_syncs`], a limit set through a
    /// mount that lost power since is dropped; lifting one always applies.
    pub fn set_space_left(&self, bytes: Option<u64>) {
        let mut st = self.lock();
        if bytes.is_none() || st.generation == self.mount {
            st.space_left = bytes;
        }
    }

    /// The disk holds `bytes` in all (`None`: unlimited): a write, resize
    /// or preallocation that would make the files use more fails with
    /// ENOSPC (a write after writing what fits). Space comes back when a
    /// file is deleted and no handle holds it (see the module doc). Kept
    /// across crashes: it is the disk's size.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Bytes the files use now, under the capacity model.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used()
    }

    /// The next call to `sync_data` (from any thread) panics instead of
    /// syncing, as a writer with a bug would: tests of a writer that dies.
    pub fn panic_next_sync(&self) {
        self.lock().panic_next_sync = true;
    }

    /// How many `sync_data` calls succeeded so far.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Simulate power loss now: drop unsynced bytes, tear the first unsynced
    /// write of each file at sector granularity, roll back unsynced directory
    /// entries, and fence this mount and every handle opened through it.
    /// Returns the handle of the next mount (the disk after the reboot).
    #[must_use = "the old mount is fenced: use the returned one"]
    pub fn crash(&self) -> SimFs {
        let mut st = self.lock();
        st.power_loss();
        SimFs { state: Arc::clone(&self.state), mount: st.generation }
    }

    /// A handle on the disk as it is now (after a power cut that
    /// [`SimFs::crash_after_ops`] caused, say).
    #[must_use]
    pub fn remount(&self) -> SimFs {
        let st = self.lock();
        SimFs { state: Arc::clone(&self.state), mount: st.generation }
    }

    /// Cut the power when the `(n + 1)`th mutating operation from now
    /// (write, resize, sync, create, rename, remove, directory sync) is
    /// attempted: it and everything after it on this mount fail with EIO.
    pub fn crash_after_ops(&self, ops: u64) {
        self.lock().ops_left = Some(ops);
    }

    /// How many power cuts [`SimFs::crash_after_ops`] caused so far.
    pub fn power_cuts(&self) -> u64 {
        self.lock().cuts
    }

    /// Current bytes of a file (for byte-surgery in tests).
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        let ino = st.names.get(path)?;
        Some(st.inodes[ino].data.clone())
    }

    /// Overwrite a file's bytes durably (byte surgery in tests).
    pub fn set_file_bytes(&self, path: &Path, bytes: Vec<u8>) {
        let mut st = self.lock();
        if let Some(&ino) = st.names.get(path) {
            let inode = st.inodes.get_mut(&ino).expect("named inode exists");
            inode.data = bytes.clone();
            inode.durable = bytes;
            inode.pending.clear();
        }
    }
}

struct SimFile {
    fs: SimFs,
    ino: u64,
    generation: u64,
}

impl SimFile {
    fn with<R>(&self, mutating: bool, op: impl FnOnce(&mut State, u64) -> io::Result<R>) -> io::Result<R> {
        let mut st = self.fs.lock();
        st.admit(self.generation, mutating)?;
        op(&mut st, self.ino)
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut st = self.fs.lock();
        if st.generation == self.generation {
            if let Some(inode) = st.inodes.get_mut(&self.ino) {
                inode.open = inode.open.saturating_sub(1);
            }
        }
    }
}

/// How many bytes of a write of `len` at `pos` fit, in a file of `cur`
/// bytes with `room` left: all of them under the byte budget's rule (every
/// byte written counts), the part that fits under the capacity (only
/// growth counts).
fn fitting(st: &State, cur: u64, pos: u64, len: u64) -> u64 {
    let mut fit = len;
    if let Some(left) = st.space_left {
        fit = fit.min(left);
    }
    if let Some(cap) = st.capacity {
        let room = cap.saturating_sub(st.used());
        fit = fit.min((cur + room).saturating_sub(pos));
    }
    fit
}

impl WalFile for SimFile {
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.with(true, |st, ino| {
            let cur = st.inode_mut(ino)?.data.len() as u64;
            let fit = fitting(st, cur, pos, buf.len() as u64);
            if let Some(left) = st.space_left {
                st.space_left = Some(left - fit);
            }
            // On ENOSPC, a partial write before it, as a real disk may do.
            let part = &buf[..fit as usize];
            if !part.is_empty() {
                let inode = st.inode_mut(ino)?;
                let op = Op::Write(pos, part.to_vec());
                apply(&mut inode.data, &op);
                inode.pending.push(op);
            }
            if part.len() < buf.len() {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            Ok(())
        })
    }
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.with(false, |st, ino| {
            let inode = st.inode_mut(ino)?;
            let pos = pos as usize;
            if pos + buf.len() > inode.data.len() {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            buf.copy_from_slice(&inode.data[pos..pos + buf.len()]);
            Ok(())
        })
    }
    fn sync_data(&self) -> io::Result<()> {
        let panic_now = std::mem::take(&mut self.fs.lock().panic_next_sync);
        if panic_now {
            panic!("simulated panic in sync_data (SimFs::panic_next_sync)");
        }
        self.with(true, |st, ino| {
            if st.fail_syncs > 0 {
                st.fail_syncs -= 1;
                // Like Linux after a failed writeback: the dirty pages are
                // dropped, so what was unsynced may or may not be on disk.
                return Err(eio("fsync failed"));
            }
            st.syncs += 1;
            let inode = st.inode_mut(ino)?;
            inode.durable = inode.data.clone();
            inode.pending.clear();
            Ok(())
        })
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(true, |st, ino| {
            let inode = st.inode_mut(ino)?;
            let op = Op::SetLen(len);
            apply(&mut inode.data, &op);
            inode.pending.push(op);
            Ok(())
        })
    }
    fn preallocate(&self, len: u64, _zero_fill: bool) -> io::Result<()> {
        self.with(true, |st, ino| {
            let cur = st.inode_mut(ino)?.data.len() as u64;
            if len <= cur {
                return Ok(());
            }
            if st.room().is_some_and(|room| room < len - cur) {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            if let Some(left) = st.space_left {
                st.space_left = Some(left - (len - cur));
            }
            let inode = st.inode_mut(ino)?;
            let op = Op::SetLen(len);
            apply(&mut inode.data, &op);
            inode.pending.push(op);
            Ok(())
        })
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.admit(self.mount, true)?;
        for anc in path.ancestors() {
            st.dirs.insert(anc.to_path_buf());
        }
        Ok(())
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        let mut st = self.lock();
        st.admit(self.mount, true)?;
        if st.names.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let ino = st.next_inode;
        st.next_inode += 1;
        st.inodes.insert(ino, Inode { open: 1, ..Inode::default() });
        st.names.insert(path.to_path_buf(), ino);
        Ok(Arc::new(SimFile { fs: self.clone(), ino, generation: self.mount }))
    }
    fn open_rw(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        let mut st = self.lock();
        st.admit(self.mount, false)?;
        let ino = *st.names.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        st.inode_mut(ino)?.open += 1;
        Ok(Arc::new(SimFile { fs: self.clone(), ino, generation: self.mount }))
    }
    fn read_all(&self, path: &Path) -> io::Result<FileBytes> {
        self.lock().admit(self.mount, false)?;
        self.file_bytes(path).map(FileBytes::Owned).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn read_copy(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.lock().admit(self.mount, false)?;
        self.file_bytes(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        self.lock().admit(self.mount, false)?;
        self.file_bytes(path).map(|b| b.len() as u64).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.admit(self.mount, true)?;
        let ino = st.names.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        st.names.insert(to.to_path_buf(), ino);
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.admit(self.mount, true)?;
        st.names.remove(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(())
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut st = self.lock();
        st.admit(self.mount, false)?;
        let mut out: BTreeSet<PathBuf> = BTreeSet::new();
        for p in st.names.keys().chain(st.dirs.iter()) {
            if p.parent() == Some(path) {
                out.insert(p.clone());
            }
        }
        Ok(out.into_iter().collect())
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.admit(self.mount, true)?;
        let st = &mut *st;
        st.durable_names.retain(|p, _| p.parent() != Some(path));
        for (p, ino) in &st.names {
            if p.parent() == Some(path) {
                st.durable_names.insert(p.clone(), *ino);
            }
        }
        let children: Vec<PathBuf> = st.dirs.iter().filter(|d| d.parent() == Some(path)).cloned().collect();
        st.durable_dirs.extend(children);
        Ok(())
    }
    fn exists(&self, path: &Path) -> bool {
        let st = self.lock();
        st.generation == self.mount && (st.names.contains_key(path) || st.dirs.contains(path))
    }
}
