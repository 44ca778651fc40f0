//! The data directory: its layout and the lock that makes one broker its
//! only writer.
//!
//! ```text
//! <data_dir>/LOCK     OFD lock held by the broker for its life
//! <data_dir>/wal/     the write-ahead log (layout: the `wal` crate)
//! <data_dir>/meta/    sled: cursors, leases, breakers, flags, dead letters
//! ```

use std::path::{Path, PathBuf};

/// The WAL's directory under a data directory.
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

/// The metadata store's directory under a data directory.
pub fn meta_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("meta")
}

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The directory could not be created.
    #[error("cannot create data dir {}: {source}", dir.display())]
    Create { dir: PathBuf, source: std::io::Error },
    /// The lock file could not be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: std::io::Error },
    /// Another process holds the lock: a broker runs on this directory.
    #[error("data dir {} is in use by another broker (lock {} is held)", dir.display(), path.display())]
    Held { dir: PathBuf, path: PathBuf },
}

/// An exclusive lock on the data directory, held for the process's life.
/// An open-file-description `fcntl` lock, so `broker-admin` can test for a
/// running broker ([`DirLock::is_held`]) without taking any lock itself.
pub struct DirLock {
    _file: std::fs::File,
}

pub const LOCK_FILE: &str = "LOCK";

fn whole_file_lock(kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is plain data; zeroed is a valid value (l_pid must be 0 for OFD locks).
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(dir).map_err(|e| LockError::Create { dir: dir.to_path_buf(), source: e })?;
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LockError::Open { path: path.clone(), source: e })?;
        let mut l = whole_file_lock(libc::F_WRLCK);
        // SAFETY: fcntl on a descriptor we own with a valid flock struct.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut l) } != 0 {
            return Err(LockError::Held { dir: dir.to_path_buf(), path });
        }
        Ok(DirLock { _file: file })
    }

    /// Whether a broker holds `dir`, asked without taking a lock.
    pub fn is_held(dir: &Path) -> bool {
        use std::os::fd::AsRawFd;
        let Ok(file) = std::fs::File::open(dir.join(LOCK_FILE)) else { return false };
        let mut l = whole_file_lock(libc::F_WRLCK);
        // SAFETY: F_OFD_GETLK only reports; it takes no lock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut l) };
        rc == 0 && l.l_type != libc::F_UNLCK as libc::c_short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_test_takes_no_lock() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!DirLock::is_held(dir.path()));
        let held = DirLock::acquire(dir.path()).unwrap();
        assert!(DirLock::is_held(dir.path()));
        assert!(matches!(DirLock::acquire(dir.path()), Err(LockError::Held { .. })));
        drop(held);
        assert!(!DirLock::is_held(dir.path()));
    }
}
