//! The broker's metadata in sled: destination cursors, leases, breakers,
//! operator flags and dead letters. Opened by the broker process only.
//!
//! sled flushes on a timer; every change that must survive a crash is
//! followed by [`Store::flush`] before the caller answers (commits, acquires,
//! breaker transitions, admin actions).

use crate::breaker::Breaker;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("metadata store: {0}")]
pub struct StoreError(String);

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A lease as persisted: in flight until it expires, or expired (to be
/// offered again). Committed leases are removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: String,
    pub lane: String,
    pub from: u64,
    pub to: u64,
    pub expires_at_ms: u64,
    pub expired: bool,
    pub probe: bool,
    pub redeliveries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DestFlags {
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    pub lane: String,
    pub offset: u64,
    pub tenant: String,
    pub topic: String,
    pub ts_ms: u64,
    pub payload: Vec<u8>,
    pub error: String,
    pub failed_at_ms: u64,
}

pub struct Store {
    db: sled::Db,
    cursors: sled::Tree,
    leases: sled::Tree,
    breakers: sled::Tree,
    flags: sled::Tree,
    dead_letters: sled::Tree,
}

fn enc<T: Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).map_err(|e| StoreError(e.to_string()))
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> StoreResult<T> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| StoreError(format!("undecodable record: {e}")))
}

fn key(dest: &str, sub: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(dest.len() + 1 + sub.len());
    k.extend_from_slice(dest.as_bytes());
    k.push(0);
    k.extend_from_slice(sub);
    k
}

fn prefix(dest: &str) -> Vec<u8> {
    key(dest, &[])
}

impl Store {
    pub fn open(path: &Path) -> StoreResult<Store> {
        let db = sled::Config::new().path(path).mode(sled::Mode::LowSpace).open()?;
        Ok(Store {
            cursors: db.open_tree("cursors")?,
            leases: db.open_tree("leases")?,
            breakers: db.open_tree("breakers")?,
            flags: db.open_tree("flags")?,
            dead_letters: db.open_tree("dead_letters")?,
            db,
        })
    }

    /// Make every change so far durable.
    pub async fn flush(&self) -> StoreResult<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    pub fn cursor(&self, dest: &str, lane: &str) -> StoreResult<Option<u64>> {
        Ok(self
            .cursors
            .get(key(dest, lane.as_bytes()))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    pub fn set_cursor(&self, dest: &str, lane: &str, offset: u64) -> StoreResult<()> {
        self.cursors.insert(key(dest, lane.as_bytes()), &offset.to_be_bytes())?;
        Ok(())
    }

    pub fn put_lease(&self, dest: &str, l: &LeaseRecord) -> StoreResult<()> {
        self.leases.insert(key(dest, l.id.as_bytes()), enc(l)?)?;
        Ok(())
    }

    pub fn remove_lease(&self, dest: &str, id: &str) -> StoreResult<()> {
        self.leases.remove(key(dest, id.as_bytes()))?;
        Ok(())
    }

    pub fn leases(&self, dest: &str) -> StoreResult<Vec<LeaseRecord>> {
        self.leases.scan_prefix(prefix(dest)).map(|kv| dec(&kv?.1)).collect()
    }

    pub fn clear_leases(&self, dest: &str) -> StoreResult<()> {
        for kv in self.leases.scan_prefix(prefix(dest)) {
            self.leases.remove(kv?.0)?;
        }
        Ok(())
    }

    pub fn breaker(&self, dest: &str) -> StoreResult<Breaker> {
        self.breakers.get(dest.as_bytes())?.map_or(Ok(Breaker::default()), |v| dec(&v))
    }

    pub fn set_breaker(&self, dest: &str, b: &Breaker) -> StoreResult<()> {
        self.breakers.insert(dest.as_bytes(), enc(b)?)?;
        Ok(())
    }

    pub fn flags(&self, dest: &str) -> StoreResult<DestFlags> {
        self.flags.get(dest.as_bytes())?.map_or(Ok(DestFlags::default()), |v| dec(&v))
    }

    pub fn set_flags(&self, dest: &str, f: &DestFlags) -> StoreResult<()> {
        self.flags.insert(dest.as_bytes(), enc(f)?)?;
        Ok(())
    }

    /// Store dead letters; returns their ids.
    pub fn add_dead_letters(&self, dest: &str, records: &[DeadLetterRecord]) -> StoreResult<Vec<u64>> {
        let mut ids = Vec::with_capacity(records.len());
        for r in records {
            let id = self.db.generate_id()?;
            self.dead_letters.insert(key(dest, &id.to_be_bytes()), enc(r)?)?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Dead letters of a destination, oldest first, up to `limit`.
    pub fn dead_letters(&self, dest: &str, limit: usize) -> StoreResult<Vec<(u64, DeadLetterRecord)>> {
        let p = prefix(dest);
        self.dead_letters
            .scan_prefix(&p)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                let id = k[p.len()..].try_into().map(u64::from_be_bytes).map_err(|_| StoreError("bad key".into()))?;
                Ok((id, dec(&v)?))
            })
            .collect()
    }

    pub fn dead_letter(&self, dest: &str, id: u64) -> StoreResult<Option<DeadLetterRecord>> {
        self.dead_letters.get(key(dest, &id.to_be_bytes()))?.map(|v| dec(&v)).transpose()
    }

    pub fn remove_dead_letters(&self, dest: &str, ids: &[u64]) -> StoreResult<()> {
        for id in ids {
            self.dead_letters.remove(key(dest, &id.to_be_bytes()))?;
        }
        Ok(())
    }

    pub fn count_dead_letters(&self, dest: &str) -> u64 {
        self.dead_letters.scan_prefix(prefix(dest)).count() as u64
    }
}
