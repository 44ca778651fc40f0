//! The broker's metadata in sled: destination cursors, leases, breakers,
//! operator flags and dead letters. Opened by the broker process only.
//!
//! sled flushes on a timer; every change that must survive a crash is
//! followed by [`Store::flush`] before the caller answers (commits, acquires,
//! breaker transitions, admin actions).
//!
//! The lease protocol writes through [`Store::apply`]: one operation's
//! cursors, lease records, breaker and dead letters go in one sled
//! transaction, so a crash or an I/O error never leaves half of an
//! operation on disk (sled recovers a prefix of whole transactions).

use crate::breaker::Breaker;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::Path;

/// Why a metadata operation failed. Every variant ends the operation with
/// nothing of it applied (sled transactions are all or nothing); the caller
/// answers `internal` (500) and the client retries the operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled could not read, write or flush (an I/O error, a corrupt tree).
    /// The broker stays up; the operation may be retried once the disk is back.
    #[error("metadata store: sled failed")]
    Sled(#[from] sled::Error),
    /// A value could not be encoded (a bug: every stored type encodes).
    #[error("metadata store: cannot encode a {kind} record")]
    Encode {
        /// Which record (`lease`, `breaker`, …).
        kind: &'static str,
        #[source]
        source: bincode::error::EncodeError,
    },
    /// A stored value does not decode as its type: the tree holds bytes of
    /// another version or was damaged. The operator restores the store.
    #[error("metadata store: an undecodable {kind} record")]
    Decode {
        /// Which record (`lease`, `breaker`, …).
        kind: &'static str,
        #[source]
        source: bincode::error::DecodeError,
    },
    /// A dead letter's key is not `destination NUL id(8 bytes)`: damage.
    #[error("metadata store: a dead-letter key of {len} bytes after the destination prefix, not 8")]
    BadDeadLetterKey {
        /// Bytes after the prefix.
        len: usize,
    },
    /// Tests: a write failure injected as sled would report one.
    #[cfg(test)]
    #[error("metadata store: injected write failure")]
    Injected,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything one lease-protocol operation changes in sled, applied
/// atomically by [`Store::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// (lane, committed cursor) pairs.
    pub cursors: Vec<(String, u64)>,
    pub put_leases: Vec<LeaseRecord>,
    pub remove_leases: Vec<String>,
    pub breaker: Option<Breaker>,
    pub add_dead_letters: Vec<DeadLetterRecord>,
    pub remove_dead_letters: Vec<u64>,
    /// Lane frontiers to write (`Some`) or remove (`None`).
    pub frontiers: Vec<(Frontier, Option<u64>)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// What a frontier offset marks (see `destination::LaneLeases`): a lane's
/// floor — every offset below it was handed out by a floor lease or
/// skipped — or one tenant's records of the lane handed out ahead of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontier {
    pub lane: String,
    /// `None`: the lane's floor.
    pub tenant: Option<String>,
}

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
    /// A tenant lease's tenant (`fair::Cover::Tenant`); `None` for a floor lease.
    pub tenant: Option<String>,
    /// A floor lease's skips: each tenant's records below the offset are
    /// not the lease's (`fair::Cover::Floor`).
    pub skips: Vec<(String, u64)>,
    /// The joint lease it is (or was) a part of (`deliveries::joint`).
    pub joint: Option<JointPart>,
}

/// A lease's place in the joint lease it is a part of: the joint lease's
/// id (its first part's own), and where its records sat in what the
/// exporter was sent (a commit names poison records by that place).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JointPart {
    pub id: String,
    /// The place of its first record in the joint lease as sent.
    pub first: u32,
    /// The records the joint lease was sent with, all parts together.
    pub sent: u32,
}

/// A lease record as brokers before joint leases wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseRecordV2 {
    id: String,
    lane: String,
    from: u64,
    to: u64,
    expires_at_ms: u64,
    expired: bool,
    probe: bool,
    redeliveries: u32,
    tenant: Option<String>,
    skips: Vec<(String, u64)>,
}

impl From<LeaseRecordV2> for LeaseRecord {
    fn from(o: LeaseRecordV2) -> LeaseRecord {
        LeaseRecord {
            id: o.id,
            lane: o.lane,
            from: o.from,
            to: o.to,
            expires_at_ms: o.expires_at_ms,
            expired: o.expired,
            probe: o.probe,
            redeliveries: o.redeliveries,
            tenant: o.tenant,
            skips: o.skips,
            joint: None,
        }
    }
}

/// A lease record as brokers before tenant fairness wrote it: a floor
/// lease with no skips.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseRecordV1 {
    id: String,
    lane: String,
    from: u64,
    to: u64,
    expires_at_ms: u64,
    expired: bool,
    probe: bool,
    redeliveries: u32,
}

impl From<LeaseRecordV1> for LeaseRecord {
    fn from(o: LeaseRecordV1) -> LeaseRecord {
        LeaseRecord {
            id: o.id,
            lane: o.lane,
            from: o.from,
            to: o.to,
            expires_at_ms: o.expires_at_ms,
            expired: o.expired,
            probe: o.probe,
            redeliveries: o.redeliveries,
            tenant: None,
            skips: Vec::new(),
            joint: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DestFlags {
    /// No leases are handed out.
    pub paused: bool,
    /// Why (an operator, a sink's 410 Gone); none while running.
    pub reason: Option<String>,
}

/// The flags as brokers before v1.2 stored them (no reason): read when a
/// record does not decode as [`DestFlags`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct DestFlagsV1 {
    paused: bool,
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
    /// Per (destination, lane): its floor, and per tenant the offset below
    /// which its records were handed out ahead of the floor ([`Frontier`]).
    frontiers: sled::Tree,
    /// Per destination, what it received at its last start (its topics and
    /// tenants, `deliveries::routes_of`): ahead entries hold only under it.
    routes: sled::Tree,
    /// Flush requests so far, and the newest request a finished flush covered:
    /// concurrent flushes share one (see [`Store::flush`]).
    flush_requested: std::sync::atomic::AtomicU64,
    flush_covered: std::sync::atomic::AtomicU64,
    flush_turn: tokio::sync::Mutex<()>,
    /// Tests: make the next writes fail as a sled I/O error would.
    #[cfg(test)]
    pub(crate) fail_writes: std::sync::atomic::AtomicBool,
}

fn enc<T: Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .map_err(|source| StoreError::Encode { kind: record_kind::<T>(), source })
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> StoreResult<T> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|source| StoreError::Decode { kind: record_kind::<T>(), source })
}

/// The record's type name without its path, for error messages.
fn record_kind<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

fn key(dest: &str, sub: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(dest.len() + 1 + sub.len());
    k.extend_from_slice(dest.as_bytes());
    k.push(0);
    k.extend_from_slice(sub);
    k
}

/// `dest NUL lane` (a floor) or `dest NUL lane NUL tenant`: a lane's name
/// holds no NUL, so the first NUL after the prefix ends it (a tenant name
/// may hold one).
fn frontier_key(dest: &str, f: &Frontier) -> Vec<u8> {
    let mut sub = f.lane.as_bytes().to_vec();
    if let Some(t) = &f.tenant {
        sub.push(0);
        sub.extend_from_slice(t.as_bytes());
    }
    key(dest, &sub)
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
            frontiers: db.open_tree("frontiers")?,
            routes: db.open_tree("routes")?,
            db,
            flush_requested: std::sync::atomic::AtomicU64::new(0),
            flush_covered: std::sync::atomic::AtomicU64::new(0),
            flush_turn: tokio::sync::Mutex::new(()),
            #[cfg(test)]
            fail_writes: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Tests inject a sled failure here.
    fn check_fault(&self) -> StoreResult<()> {
        #[cfg(test)]
        if self.fail_writes.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Injected);
        }
        Ok(())
    }

    /// Make every change so far durable now, on this thread: for the rare
    /// writes outside the lease protocol (a new destination's first
    /// cursors), never on an async worker.
    pub fn flush_now(&self) -> StoreResult<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Make every change so far durable. Group commit, as the WAL's: a
    /// caller whose changes a flush already in progress may not cover waits
    /// for the next one, and one flush answers every request made before it
    /// started — so commits and acquires at a thousand a second cost a few
    /// hundred fsyncs, not two thousand.
    pub async fn flush(&self) -> StoreResult<()> {
        use std::sync::atomic::Ordering;
        let mine = self.flush_requested.fetch_add(1, Ordering::AcqRel) + 1;
        let _turn = self.flush_turn.lock().await;
        if self.flush_covered.load(Ordering::Acquire) >= mine {
            // A flush that began after this request (so after its changes) finished.
            return Ok(());
        }
        let covers = self.flush_requested.load(Ordering::Acquire);
        debug_assert!(covers >= mine, "a flush covers at least its own request");
        self.db.flush_async().await?;
        self.flush_covered.fetch_max(covers, Ordering::AcqRel);
        Ok(())
    }

    /// Apply one operation's changes in a single transaction; returns the
    /// ids given to the added dead letters, in order.
    pub fn apply(&self, dest: &str, ch: &Changes) -> StoreResult<Vec<u64>> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        use sled::Transactional;
        self.check_fault()?;
        // Encode outside the transaction: its closure may run more than once.
        let leases: Vec<(Vec<u8>, Vec<u8>)> =
            ch.put_leases.iter().map(|l| Ok((key(dest, l.id.as_bytes()), enc(l)?))).collect::<StoreResult<_>>()?;
        let dead: Vec<Vec<u8>> = ch.add_dead_letters.iter().map(enc).collect::<StoreResult<_>>()?;
        let breaker = ch.breaker.as_ref().map(enc).transpose()?;
        let trees = (&self.cursors, &self.leases, &self.breakers, &self.dead_letters, &self.frontiers);
        let res = trees.transaction(|(c, l, b, d, a)| {
            for (lane, off) in &ch.cursors {
                c.insert(key(dest, lane.as_bytes()), &off.to_be_bytes())?;
            }
            for (frontier, off) in &ch.frontiers {
                let k = frontier_key(dest, frontier);
                match off {
                    Some(off) => a.insert(k, &off.to_be_bytes())?,
                    None => a.remove(k)?,
                };
            }
            for id in &ch.remove_leases {
                l.remove(key(dest, id.as_bytes()))?;
            }
            for (k, v) in &leases {
                l.insert(k.as_slice(), v.as_slice())?;
            }
            if let Some(v) = &breaker {
                b.insert(dest.as_bytes(), v.as_slice())?;
            }
            for id in &ch.remove_dead_letters {
                d.remove(key(dest, &id.to_be_bytes()))?;
            }
            let mut ids = Vec::with_capacity(dead.len());
            for v in &dead {
                let id = d.generate_id()?;
                d.insert(key(dest, &id.to_be_bytes()), v.as_slice())?;
                ids.push(id);
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(ids)
        });
        res.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::from(e),
        })
    }

    pub fn cursor(&self, dest: &str, lane: &str) -> StoreResult<Option<u64>> {
        Ok(self
            .cursors
            .get(key(dest, lane.as_bytes()))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    /// The destination's lease records; one written before tenant
    /// fairness reads as a floor lease with no skips, one written before
    /// joint leases as a lease of its own. (Each version extends the one
    /// before it, so an older record is too short for a newer layout.)
    pub fn leases(&self, dest: &str) -> StoreResult<Vec<LeaseRecord>> {
        self.leases
            .scan_prefix(prefix(dest))
            .map(|kv| {
                let v = kv?.1;
                match dec::<LeaseRecord>(&v) {
                    Ok(r) => Ok(r),
                    Err(e) => dec::<LeaseRecordV2>(&v)
                        .map(LeaseRecord::from)
                        .or_else(|_| dec::<LeaseRecordV1>(&v).map(LeaseRecord::from))
                        .map_err(|_| e),
                }
            })
            .collect()
    }

    /// What the destination received at its last start, if known.
    pub fn routes(&self, dest: &str) -> StoreResult<Option<String>> {
        Ok(self.routes.get(dest.as_bytes())?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Record what the destination receives (flushed with the next flush).
    pub fn set_routes(&self, dest: &str, routes: &str) -> StoreResult<()> {
        self.check_fault()?;
        self.routes.insert(dest.as_bytes(), routes.as_bytes())?;
        Ok(())
    }

    /// The destination's stored frontiers.
    pub fn frontiers(&self, dest: &str) -> StoreResult<Vec<(Frontier, u64)>> {
        let p = prefix(dest);
        let mut out = Vec::new();
        for kv in self.frontiers.scan_prefix(&p) {
            let (k, v) = kv?;
            let rest = String::from_utf8_lossy(&k[p.len()..]).into_owned();
            let Ok(off) = <[u8; 8]>::try_from(v.as_ref()) else {
                continue;
            };
            let frontier = match rest.split_once('\0') {
                Some((lane, tenant)) => Frontier { lane: lane.into(), tenant: Some(tenant.into()) },
                None => Frontier { lane: rest, tenant: None },
            };
            out.push((frontier, u64::from_be_bytes(off)));
        }
        Ok(out)
    }

    pub fn breaker(&self, dest: &str) -> StoreResult<Breaker> {
        self.breakers.get(dest.as_bytes())?.map_or(Ok(Breaker::default()), |v| dec(&v))
    }

    pub fn set_breaker(&self, dest: &str, b: &Breaker) -> StoreResult<()> {
        self.check_fault()?;
        self.breakers.insert(dest.as_bytes(), enc(b)?)?;
        Ok(())
    }

    pub fn flags(&self, dest: &str) -> StoreResult<DestFlags> {
        let Some(v) = self.flags.get(dest.as_bytes())? else {
            return Ok(DestFlags::default());
        };
        match dec::<DestFlags>(&v) {
            Ok(f) => Ok(f),
            Err(_) => dec::<DestFlagsV1>(&v).map(|old| DestFlags { paused: old.paused, reason: None }),
        }
    }

    pub fn set_flags(&self, dest: &str, f: &DestFlags) -> StoreResult<()> {
        self.check_fault()?;
        self.flags.insert(dest.as_bytes(), enc(f)?)?;
        Ok(())
    }

    /// Dead letters of a destination, oldest first, up to `limit`.
    pub fn dead_letters(&self, dest: &str, limit: usize) -> StoreResult<Vec<(u64, DeadLetterRecord)>> {
        let p = prefix(dest);
        self.dead_letters
            .scan_prefix(&p)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                let id = k[p.len()..]
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::BadDeadLetterKey { len: k.len() - p.len() })?;
                Ok((id, dec(&v)?))
            })
            .collect()
    }

    pub fn dead_letter(&self, dest: &str, id: u64) -> StoreResult<Option<DeadLetterRecord>> {
        self.dead_letters.get(key(dest, &id.to_be_bytes()))?.map(|v| dec(&v)).transpose()
    }

    pub fn count_dead_letters(&self, dest: &str) -> u64 {
        self.dead_letters.scan_prefix(prefix(dest)).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22: flags stored by a broker before v1.2 (no reason) still
    /// read, as paused with no reason; the new form keeps its reason.
    #[test]
    fn flags_from_before_the_reason_still_read_and_the_reason_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = enc(&DestFlagsV1 { paused: true }).unwrap();
        store.flags.insert(b"d".as_slice(), old).unwrap();
        assert_eq!(store.flags("d").unwrap(), DestFlags { paused: true, reason: None });
        let gone = DestFlags { paused: true, reason: Some("sink answered 410 Gone: bye".into()) };
        store.set_flags("d", &gone).unwrap();
        assert_eq!(store.flags("d").unwrap(), gone);
        assert_eq!(store.flags("other").unwrap(), DestFlags::default());
    }

    /// Lease records of each earlier layout still read: v1 as a floor
    /// lease with no skips, v2 (before joint leases) as a lease of its own;
    /// the current layout keeps its joint lease.
    #[test]
    fn lease_records_of_every_layout_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let v1 = LeaseRecordV1 {
            id: "0-1-a".into(),
            lane: "normal/0".into(),
            from: 1,
            to: 5,
            expires_at_ms: 9,
            expired: true,
            probe: false,
            redeliveries: 2,
        };
        let v2 = LeaseRecordV2 {
            id: "0-2-b".into(),
            lane: "normal/1".into(),
            from: 3,
            to: 7,
            expires_at_ms: 9,
            expired: false,
            probe: false,
            redeliveries: 0,
            tenant: Some("acme".into()),
            skips: Vec::new(),
        };
        let part = JointPart { id: "0-3-c".into(), first: 0, sent: 4 };
        let v3 = LeaseRecord { id: "0-3-c".into(), joint: Some(part), ..LeaseRecord::from(v2.clone()) };
        store.leases.insert(key("d", b"0-1-a"), enc(&v1).unwrap()).unwrap();
        store.leases.insert(key("d", b"0-2-b"), enc(&v2).unwrap()).unwrap();
        store.leases.insert(key("d", b"0-3-c"), enc(&v3).unwrap()).unwrap();
        let mut got = store.leases("d").unwrap();
        got.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(got, [LeaseRecord::from(v1), LeaseRecord::from(v2), v3]);
        assert_eq!(got[1].joint, None, "a v2 record is a lease of its own");
    }
}
