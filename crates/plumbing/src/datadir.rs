//! The data directory: its layout and the lock that makes one broker its
//! only writer.
//!
//! ```text
//! <data_dir>/LOCK     OFD lock held by the broker for its life
//! <data_dir>/BROKER_ID  this directory's random id (32 hex digits), made
//!                     at its first start and kept (see [`BrokerId`])
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

/// The file under a data directory that holds its [`BrokerId`].
pub(crate) const BROKER_ID_FILE: &str = "BROKER_ID";

/// A data directory's identity: 128 random bits in hex, made the first
/// time a broker starts on it (also a directory from before ids existed)
/// and never changed. Downstream ids cover it, so two brokers — or two
/// fresh directories — never send a receiver the same id for different
/// records at the same offsets. A copy of a directory keeps its id; its
/// new records differ from the old ones in what downstream ids also cover.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerId(String);

/// Why a data directory's id could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum BrokerIdError {
    /// The id file could not be read, written or made durable.
    /// Check the directory's permissions and its disk.
    #[error("broker id file {}: {source}", path.display())]
    Io {
        /// The id file (or its temporary, or the directory being synced).
        path: PathBuf,
        /// What the operating system answered.
        source: std::io::Error,
    },
    /// The file holds something other than an id (damage, or not ours).
    #[error("broker id file {} does not hold 32 hex digits; restore it from a backup of this data directory, or remove it to give the directory a new id (downstream ids then change)", path.display())]
    Malformed {
        /// The id file.
        path: PathBuf,
    },
    /// No randomness from the operating system (a kernel without
    /// `getrandom` or `/dev/urandom`): the broker cannot start.
    #[error("cannot draw a broker id: {0}")]
    Random(#[source] getrandom::Error),
}

const BROKER_ID_HEX: usize = 32;

impl BrokerId {
    /// The id, 32 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of `dir`, if it has one.
    pub fn read(dir: &Path) -> Result<Option<BrokerId>, BrokerIdError> {
        let path = dir.join(BROKER_ID_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BrokerIdError::Io { path, source: e }),
        };
        let id = std::str::from_utf8(&text).map(str::trim).unwrap_or("");
        if id.len() != BROKER_ID_HEX || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(BrokerIdError::Malformed { path });
        }
        Ok(Some(BrokerId(id.to_string())))
    }

    /// The id of `dir`, made durably first if it has none: written to a
    /// temporary file, fsync'd, renamed into place and the directory
    /// fsync'd, so a crash leaves either no id or the whole one. The
    /// caller holds the directory's [`DirLock`], so no two make one.
    pub fn load_or_create(dir: &Path) -> Result<BrokerId, BrokerIdError> {
        if let Some(id) = BrokerId::read(dir)? {
            return Ok(id);
        }
        let mut raw = [0u8; BROKER_ID_HEX / 2];
        getrandom::fill(&mut raw).map_err(BrokerIdError::Random)?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(BROKER_ID_FILE);
        let io = |source| BrokerIdError::Io { path: path.clone(), source };
        let tmp = dir.join(format!("{BROKER_ID_FILE}.tmp"));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(format!("{id}\n").as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        debug_assert_eq!(id.len(), BROKER_ID_HEX);
        Ok(BrokerId(id))
    }
}

impl std::fmt::Display for BrokerId {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.write_str(&self.0)
    }
}

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The directory could not be created: check the path and permissions.
    #[error("cannot create data dir {}: {source}", dir.display())]
    Create {
        /// The data directory.
        dir: PathBuf,
        /// What the operating system answered.
        source: std::io::Error,
    },
    /// The lock file could not be opened: check permissions.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The lock file.
        path: PathBuf,
        /// What the operating system answered.
        source: std::io::Error,
    },
    /// Another process holds the lock: a broker runs on this directory.
    /// Stop it first, or use another directory.
    #[error("data dir {} is in use by another broker (lock {} is held)", dir.display(), path.display())]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// Its lock file.
        path: PathBuf,
    },
}

/// An exclusive lock on the data directory, held for the process's life.
/// An open-file-description `fcntl` lock, so `broker-admin` can test for a
/// running broker ([`DirLock::is_held`]) without taking any lock itself.
pub struct DirLock {
    _file: std::fs::File,
}

/// The lock file under a data directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

fn whole_file_lock(kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is plain data; zeroed is a valid value (l_pid must be 0 for OFD locks).
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l
}

impl DirLock {
    /// Take `dir`'s lock (creating the directory and its lock file if
    /// needed), or fail at once if another process holds it.
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
        // SAFETY: `file` owns the descriptor for the whole call, and `l` is
        // an initialised flock that outlives it; F_OFD_SETLK only reads it.
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
        // SAFETY: `file` owns the descriptor for the whole call, and `l` is
        // an initialised flock that outlives it, which F_OFD_GETLK writes
        // its report into; it takes no lock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut l) };
        rc == 0 && l.l_type != libc::F_UNLCK as libc::c_short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_id_is_made_once_kept_and_differs_between_directories() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        assert_eq!(BrokerId::read(a.path()).unwrap(), None);
        let id = BrokerId::load_or_create(a.path()).unwrap();
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(BrokerId::load_or_create(a.path()).unwrap(), id, "kept across starts");
        assert_eq!(BrokerId::read(a.path()).unwrap(), Some(id.clone()));
        assert_ne!(BrokerId::load_or_create(b.path()).unwrap(), id, "another directory, another id");
        std::fs::write(a.path().join(BROKER_ID_FILE), "not an id").unwrap();
        assert!(matches!(BrokerId::load_or_create(a.path()), Err(BrokerIdError::Malformed { .. })));
    }

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
