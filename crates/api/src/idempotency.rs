//! Idempotency keys: a retry with the same (tenant, key) inside the window
//! gets the first answer and appends nothing; the same key on a different
//! request is refused (422 `idempotency_key_reused`), because answering the
//! first 200 would silently drop the new records.
//!
//! A request is recognised by its [`Fingerprint`]: topic, content type and a
//! digest of the *inflated* body, so a retry compressed differently is the
//! same request. The key and its fingerprint travel inside the WAL frame's
//! key field ([`RequestKey::frame_field`]), so after a restart the window is
//! rebuilt, fingerprints included, by reading the frames written within it:
//! a retry that crosses a broker restart is still recognised, and so is a
//! reuse. Frames written before fingerprints (a plain key) match any request.
//! A retry that arrives while the first request is still committing waits
//! for its outcome instead of appending.

use crate::accepted::Accepted;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Between the key and the fingerprint in the frame's key field. A client's
/// key is visible ASCII (the header check), so it never holds this byte:
/// a field without it is a key from before fingerprints.
const SEP: char = '\u{1f}';

/// Bytes of the fingerprint kept (hex-encoded in the frame): 128 bits.
const FP_BYTES: usize = 16;

/// The frame's key field holds at most 255 bytes; a key longer than this
/// leaves no room for the separator and the fingerprint, and is stored (and
/// remembered) as its SHA-256 instead ([`canonical_key`]).
const MAX_PLAIN_KEY: usize = u8::MAX as usize - 1 - 2 * FP_BYTES;

/// What makes two requests the same request: topic, content type and the
/// inflated body, hashed (SHA-256, truncated to 128 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; FP_BYTES]);

impl Fingerprint {
    /// `content_type` is the canonical media type of the body's format (not
    /// the header as sent: parameters and case do not make another request).
    pub fn of(topic: &str, content_type: &str, inflated_body: &[u8]) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(b"weir-idempotency-v1\0");
        for field in [topic.as_bytes(), content_type.as_bytes()] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field);
        }
        h.update((inflated_body.len() as u64).to_le_bytes());
        h.update(inflated_body);
        let digest = h.finalize();
        let mut fp = [0u8; FP_BYTES];
        fp.copy_from_slice(&digest[..FP_BYTES]);
        Fingerprint(fp)
    }

    fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn from_hex(s: &str) -> Option<Fingerprint> {
        if s.len() != 2 * FP_BYTES || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let mut fp = [0u8; FP_BYTES];
        for (i, b) in fp.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Fingerprint(fp))
    }
}

/// The key as remembered and stored: itself, or its SHA-256 when it is too
/// long to sit beside a fingerprint in the frame. The long form starts with
/// [`SEP`], which no client key holds, so the two forms cannot meet.
fn canonical_key(key: &str) -> String {
    if key.len() <= MAX_PLAIN_KEY {
        return key.to_string();
    }
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{SEP}sha256:{hex}")
}

/// A keyed request: its key (canonical) and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    key: String,
    fingerprint: Fingerprint,
}

impl RequestKey {
    pub fn new(key: &str, fingerprint: Fingerprint) -> RequestKey {
        RequestKey { key: canonical_key(key), fingerprint }
    }

    /// What the frame's key field holds: `<key><SEP><fingerprint hex>`, at
    /// most 255 bytes. A broker from before fingerprints reads it as an
    /// opaque key (the frame format is unchanged).
    pub fn frame_field(&self) -> String {
        format!("{}{SEP}{}", self.key, self.fingerprint.to_hex())
    }

    /// The key and fingerprint a frame's key field holds; no fingerprint
    /// for a field written before fingerprints (a plain key).
    fn parse_frame_field(field: &str) -> (String, Option<Fingerprint>) {
        if let Some((key, fp)) = field.rsplit_once(SEP) {
            if let Some(fp) = Fingerprint::from_hex(fp) {
                return (key.to_string(), Some(fp));
            }
        }
        (canonical_key(field), None)
    }
}

enum Slot {
    /// The first request is committing; its outcome is sent here (None: failed).
    InFlight { rx: watch::Receiver<Option<Accepted>>, fingerprint: Fingerprint },
    Done {
        response: Accepted,
        expires_at_ms: u64,
        /// `None`: remembered from a frame written before fingerprints,
        /// which matches any request.
        fingerprint: Option<Fingerprint>,
    },
}

pub struct IdempotencyCache {
    window_ms: u64,
    /// Keys one tenant may hold at once (in flight or remembered): the
    /// map's memory is bounded per tenant, not only by the window.
    max_per_tenant: usize,
    slots: Mutex<Slots>,
    /// True once the window was rebuilt from the WAL ([`Self::rebuild`]):
    /// until then a claim waits, so a retry of a request acknowledged
    /// before the restart is answered as a replay, never appended again.
    rebuilt: watch::Sender<bool>,
    /// Set when the window's owner goes: a rebuild in progress stops.
    cancelled: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Slots {
    map: HashMap<(String, String), Slot>,
    per_tenant: HashMap<String, usize>,
}

impl Slots {
    fn get(&self, k: &(String, String)) -> Option<&Slot> {
        self.map.get(k)
    }

    fn insert(&mut self, k: (String, String), slot: Slot) {
        let tenant = k.0.clone();
        if self.map.insert(k, slot).is_none() {
            *self.per_tenant.entry(tenant).or_default() += 1;
        }
    }

    fn remove(&mut self, k: &(String, String)) {
        if self.map.remove(k).is_some() {
            self.forget_one(&k.0);
        }
    }

    fn forget_one(&mut self, tenant: &str) {
        if let Some(n) = self.per_tenant.get_mut(tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_tenant.remove(tenant);
            }
        }
    }

    fn held_by(&self, tenant: &str) -> usize {
        self.per_tenant.get(tenant).copied().unwrap_or(0)
    }
}

/// What the caller should do with a keyed request.
pub enum Claim {
    /// First sighting: append, then settle the ticket.
    Fresh(Ticket),
    /// Already answered: return this.
    Replay(Accepted),
    /// The tenant holds as many keys as it may: refuse (nothing appended).
    Full { max: usize },
    /// The key names another request (its fingerprint differs): refuse,
    /// append nothing.
    Reused,
}

/// Held while the first request with a key commits; settles the slot.
pub struct Ticket {
    key: (String, String),
    fingerprint: Fingerprint,
    tx: watch::Sender<Option<Accepted>>,
    settled: bool,
}

impl IdempotencyCache {
    pub fn new(window_ms: u64, max_per_tenant: usize) -> Self {
        let (rebuilt, _) = watch::channel(false);
        let cancelled = std::sync::atomic::AtomicBool::new(false);
        IdempotencyCache { window_ms, max_per_tenant, slots: Mutex::new(Slots::default()), rebuilt, cancelled }
    }

    /// A window needing no rebuild (tests, and a log with nothing in it).
    #[cfg(test)]
    fn rebuilt_empty(window_ms: u64, max_per_tenant: usize) -> Self {
        let cache = IdempotencyCache::new(window_ms, max_per_tenant);
        cache.rebuilt.send_replace(true);
        cache
    }

    /// Wait until the window was rebuilt from the WAL.
    async fn until_rebuilt(&self) {
        let mut rx = self.rebuilt.subscribe();
        // Ends: the rebuild always sets it, even when it stops early.
        let _ = rx.wait_for(|done| *done).await;
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claim (tenant, key) for this request: either we are first, or here
    /// is the first answer, or the key belongs to another request.
    pub async fn claim(&self, tenant: &str, request: &RequestKey, now_ms: u64) -> Claim {
        self.until_rebuilt().await;
        let k = (tenant.to_string(), request.key.clone());
        let fp = request.fingerprint;
        loop {
            let mut rx = {
                let mut slots = self.slots();
                match slots.get(&k) {
                    Some(Slot::Done { response, expires_at_ms, fingerprint }) if *expires_at_ms > now_ms => {
                        return match fingerprint {
                            Some(f) if *f != fp => Claim::Reused,
                            _ => Claim::Replay(*response),
                        };
                    }
                    Some(Slot::InFlight { fingerprint, .. }) if *fingerprint != fp => return Claim::Reused,
                    Some(Slot::InFlight { rx, .. }) => rx.clone(),
                    existing => {
                        if existing.is_none() && slots.held_by(tenant) >= self.max_per_tenant {
                            return Claim::Full { max: self.max_per_tenant };
                        }
                        let (tx, rx) = watch::channel(None);
                        slots.insert(k.clone(), Slot::InFlight { rx, fingerprint: fp });
                        return Claim::Fresh(Ticket { key: k, fingerprint: fp, tx, settled: false });
                    }
                }
            };
            // Wait for the first request's outcome; a failure frees the key.
            let _ = rx.changed().await;
            if let Some(resp) = *rx.borrow() {
                return Claim::Replay(resp);
            }
            let mut slots = self.slots();
            if matches!(slots.get(&k), Some(Slot::InFlight { rx: r, .. }) if r.same_channel(&rx)) {
                slots.remove(&k);
            }
        }
    }

    /// Record the durable answer for a ticket.
    pub fn settle(&self, mut ticket: Ticket, response: Accepted, now_ms: u64) {
        ticket.settled = true;
        let done = Slot::Done {
            response,
            expires_at_ms: now_ms.saturating_add(self.window_ms),
            fingerprint: Some(ticket.fingerprint),
        };
        self.slots().insert(ticket.key.clone(), done);
        let _ = ticket.tx.send(Some(response));
    }

    /// Release a ticket whose request was not acknowledged.
    pub fn abandon(&self, ticket: Ticket) {
        let mut slots = self.slots();
        if matches!(slots.get(&ticket.key), Some(Slot::InFlight { .. })) {
            slots.remove(&ticket.key);
        }
        drop(slots);
        drop(ticket);
    }

    /// Forget keys older than the window.
    pub fn expire(&self, now_ms: u64) {
        let mut slots = self.slots();
        let gone: Vec<(String, String)> = slots
            .map
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Done { expires_at_ms, .. } if *expires_at_ms <= now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            slots.remove(&k);
        }
    }

    /// Rebuild from frames written inside the window.
    pub fn rebuild(&self, wal: &wal::Wal, now_ms: u64) {
        let since = now_ms.saturating_sub(self.window_ms);
        // Read without the lock (claims wait on `rebuilt`, not on it), then
        // remembered in one step.
        let mut found = Vec::new();
        for lane in wal.lanes() {
            let from = lane.segments().iter().find(|s| s.last_ts_ms >= since).map(|s| s.base_offset);
            let Some(mut from) = from else { continue };
            // A read that fails (a segment retention released meanwhile, or
            // one damaged on disk) skips to the next segment, never the rest
            // of the lane: a key left out would let its retry append again.
            // Bounded: each retry starts past a segment it could not read.
            for _ in 0..=lane.segments().len() {
                let mut next_frame = from;
                let res = lane.visit_frames(from, |f| {
                    if self.cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                        return ControlFlow::Break(());
                    }
                    next_frame = f.header.next_offset();
                    if let (Some(field), true) = (f.idempotency_key, f.header.ts_ms >= since) {
                        let response = Accepted {
                            records: u64::from(f.header.records),
                            lane: lane.id(),
                            first_offset: f.header.base_offset,
                        };
                        let (key, fingerprint) = RequestKey::parse_frame_field(field);
                        let expires_at_ms = f.header.ts_ms.saturating_add(self.window_ms);
                        found.push(((f.tenant.to_string(), key), Slot::Done { response, expires_at_ms, fingerprint }));
                    }
                    ControlFlow::Continue(())
                });
                let Err(e) = res else { break };
                let past = lane.segments().into_iter().map(|s| s.base_offset).find(|&base| base > next_frame);
                tracing::warn!(lane = %lane.id(), error = %e, "idempotency rebuild skipped a segment it could not read");
                match past {
                    Some(base) => from = base,
                    None => break,
                }
            }
        }
        let mut slots = self.slots();
        for (key, slot) in found {
            slots.insert(key, slot);
        }
        drop(slots);
        self.rebuilt.send_replace(true);
    }

    /// [`Self::rebuild`] on a thread of its own: the broker is ready while
    /// it reads (a restart does not wait for the window's frames), and only
    /// requests with a key wait for it. Bounded by the window's frames; the
    /// window counts as rebuilt even if the thread dies.
    /// Returns the thread, for [`Self::stop_rebuild`] to join.
    pub fn rebuild_in_background(
        self: &Arc<Self>,
        wal: Arc<wal::Wal>,
        now_ms: u64,
    ) -> Option<std::thread::JoinHandle<()>> {
        struct Done(Arc<IdempotencyCache>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.rebuilt.send_replace(true);
            }
        }
        let done = Done(Arc::clone(self));
        let log = Arc::clone(&wal);
        let spawned = std::thread::Builder::new().name("weir-idempotency".into()).spawn(move || {
            let started = std::time::Instant::now();
            done.0.rebuild(&log, now_ms);
            tracing::info!(ms = started.elapsed().as_millis() as u64, "idempotency window rebuilt from the WAL");
        });
        match spawned {
            Ok(thread) => Some(thread),
            Err(e) => {
                tracing::warn!(error = %e, "no thread for the idempotency rebuild; rebuilding before serving");
                self.rebuild(&wal, now_ms);
                None
            }
        }
    }

    /// Stop a rebuild in progress and wait for its thread (which holds the
    /// WAL): once it returns, nothing of the rebuild reads the log.
    pub fn stop_rebuild(&self, thread: Option<std::thread::JoinHandle<()>>) {
        self.cancelled.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            // The request failed or was cancelled: waiters retry as fresh.
            let _ = self.tx.send(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wal::{LaneId, Priority};

    fn accepted(first_offset: u64) -> Accepted {
        Accepted { records: 1, lane: LaneId::new(Priority::Normal, 0), first_offset }
    }

    fn fp(body: &str) -> Fingerprint {
        Fingerprint::of("events", "application/x-ndjson", body.as_bytes())
    }

    #[test]
    fn the_fingerprint_tells_topic_content_type_and_body_apart() {
        let base = fp("{\"a\":1}");
        assert_eq!(base, fp("{\"a\":1}"));
        assert_ne!(base, Fingerprint::of("other", "application/x-ndjson", b"{\"a\":1}"));
        assert_ne!(base, Fingerprint::of("events", "application/octet-stream", b"{\"a\":1}"));
        assert_ne!(base, fp("{\"a\":2}"));
        // Length-prefixed fields: moving bytes between topic and type is another request.
        assert_ne!(Fingerprint::of("ab", "c", b""), Fingerprint::of("a", "bc", b""));
    }

    #[test]
    fn the_frame_field_round_trips_and_fits_the_frame_for_every_key_length() {
        for len in [1, MAX_PLAIN_KEY - 1, MAX_PLAIN_KEY, MAX_PLAIN_KEY + 1, 255] {
            let key = "k".repeat(len);
            let rk = RequestKey::new(&key, fp("x"));
            let field = rk.frame_field();
            assert!(field.len() <= u8::MAX as usize, "{len}: {} bytes", field.len());
            assert_eq!(RequestKey::parse_frame_field(&field), (canonical_key(&key), Some(fp("x"))));
        }
        // A field from before fingerprints: the key itself, no fingerprint.
        assert_eq!(RequestKey::parse_frame_field("order-42"), ("order-42".to_string(), None));
        let long = "L".repeat(240);
        assert_eq!(RequestKey::parse_frame_field(&long), (canonical_key(&long), None));
    }

    #[tokio::test]
    async fn a_reused_key_is_refused_and_a_retry_replays() {
        let c = IdempotencyCache::rebuilt_empty(60_000, 10);
        let first = RequestKey::new("k1", fp("a"));
        let Claim::Fresh(t) = c.claim("acme", &first, 0).await else { panic!("first sighting is fresh") };
        // While the first commits, a different request under the key is refused at once.
        assert!(matches!(c.claim("acme", &RequestKey::new("k1", fp("b")), 1).await, Claim::Reused));
        c.settle(t, accepted(7), 2);
        assert!(matches!(c.claim("acme", &first, 3).await, Claim::Replay(a) if a.first_offset == 7));
        assert!(matches!(c.claim("acme", &RequestKey::new("k1", fp("b")), 3).await, Claim::Reused));
        // Another tenant's key of the same name is its own.
        assert!(matches!(c.claim("globex", &RequestKey::new("k1", fp("b")), 3).await, Claim::Fresh(_)));
        // Past the window the key is free again.
        c.expire(60_003);
        assert!(matches!(c.claim("acme", &RequestKey::new("k1", fp("b")), 60_003).await, Claim::Fresh(_)));
    }

    #[tokio::test]
    async fn the_window_rebuilt_from_the_wal_keeps_fingerprints_and_old_keys_match_any_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = wal::WalOptions { shards: 1, ..wal::WalOptions::default() };
        let w = wal::Wal::open(std::sync::Arc::new(wal::RealFs), dir.path(), opts, None).expect("wal opens");
        let lane = LaneId::new(Priority::Normal, 0);
        let new_key = RequestKey::new("new", fp("a")).frame_field();
        for key in [new_key.as_str(), "old"] {
            let batch = wal::EncodedBatch::encode("acme", "events", Some(key), &[b"{}"]).expect("encodes");
            w.append(lane, batch).await.expect("appends");
        }
        let c = IdempotencyCache::rebuilt_empty(u64::MAX / 4, 10);
        c.rebuild(&w, plumbing::clock::now_ms());
        let now = plumbing::clock::now_ms();
        assert!(
            matches!(c.claim("acme", &RequestKey::new("new", fp("a")), now).await, Claim::Replay(a) if a.first_offset == 0)
        );
        assert!(matches!(c.claim("acme", &RequestKey::new("new", fp("b")), now).await, Claim::Reused));
        assert!(
            matches!(c.claim("acme", &RequestKey::new("old", fp("z")), now).await, Claim::Replay(a) if a.first_offset == 1)
        );
        w.shutdown();
    }
}
