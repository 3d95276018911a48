//! Exact-match response cache for complete non-stream responses: TTL plus entry and byte bounds,
//! in memory (an exact LRU, the `lru` crate behind one lock, the expiry kept in the entry) or shared
//! through Redis with Redis TTLs.
//!
//! In memory every cache-miss request inserts (and, once the cache is full, evicts), so the insert is
//! on the hot path: a list move and a hash insert under an uncontended lock. `max_entries: N` keeps the
//! N most recently used entries (used = stored or read), within `max_bytes`.
//!
//! `/stats` asks [`ResponseCache::stats`] for the number of live entries: the in-memory count after
//! dropping expired entries; with
//! Redis, the keys under `<key_prefix>:cache:` counted by a bounded, timed-out SCAN at that moment
//! (entries expire through Redis TTLs, so only Redis knows how many are left).
//!
//! The key is the SHA-256 of normalized request bytes built by the caller (model, messages,
//! sampling params; no per-request ids). Only complete, successful JSON bodies are stored: `put`
//! itself refuses error bodies and truncated JSON, so a caller mistake cannot poison the cache.

use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config_error::Invalid;
use crate::store::{RedisStore, StateStore, StoreUnavailable};

/// The `cache:` config section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Seconds an entry stays valid.
    pub ttl_s: f64,
    /// Most entries held in memory.
    pub max_entries: u64,
    /// Most body bytes held in memory; also the largest single entry stored (memory and Redis).
    pub max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            ttl_s: 300.0,
            max_entries: 1000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl CacheConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if !(self.ttl_s.is_finite() && self.ttl_s > 0.0) {
            return Err(Invalid::new(
                "cache",
                format!(
                    "cache.ttl_s must be a positive number of seconds, got {}",
                    self.ttl_s
                ),
            ));
        }
        if self.max_entries == 0 || self.max_bytes == 0 {
            return Err(Invalid::new(
                "cache",
                format!(
                    "cache.max_entries ({}) and cache.max_bytes ({}) must be at least 1",
                    self.max_entries, self.max_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// Which wire format a cached body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WireProtocol {
    OpenAi,
    Anthropic,
    Responses,
}

/// A complete non-stream JSON response body and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    pub body: Bytes,
    /// Backend that produced the body (for `X-Gateway-Backend` on hits).
    pub backend: String,
    pub protocol: WireProtocol,
}

/// SHA-256 of the normalized request.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", hex::encode(&self.0[..8]))
    }
}

/// Cache counters for `/stats`. Body bytes are not reported: in Redis they would cost one `STRLEN`
/// per entry on top of the SCAN.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct CacheStats {
    /// Live entries: held in memory, or stored in Redis under this gateway's key prefix (every
    /// gateway sharing the prefix sees the same number). `None` when Redis has never answered a count.
    pub size: Option<u64>,
    /// How `size` was obtained.
    pub size_source: SizeSource,
    /// With `size_source: last_known`, seconds since that count was taken.
    pub size_age_s: Option<u64>,
    /// `max_entries`; it bounds the in-memory cache only (Redis entries are bounded by their TTL).
    pub capacity: u64,
    pub hits: u64,
    pub misses: u64,
    /// True when entries live in Redis.
    pub shared: bool,
}

/// Where [`CacheStats::size`] comes from.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SizeSource {
    /// The in-memory cache's own count.
    Memory,
    /// Counted in Redis for this request.
    Redis,
    /// Redis did not answer within [`COUNT_TIMEOUT`]: the last successful count, `size_age_s` old.
    LastKnown,
    /// Redis did not answer and has never answered a count: `size` is null.
    Unknown,
    /// The cache is disabled, so nothing is stored or counted: `size` is 0.
    Disabled,
}

/// Longest `/stats` waits for a Redis count (including waiting for a count already running).
pub(crate) const COUNT_TIMEOUT: Duration = Duration::from_secs(1);

/// Keys Redis examines per SCAN call: large enough for few round trips, small enough that one call
/// never blocks Redis noticeably.
const SCAN_COUNT: u64 = 1000;

/// The response cache of one config snapshot.
pub struct ResponseCache {
    enabled: bool,
    backend: Backend,
    max_entries: u64,
    max_entry_bytes: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Redis entry counts: one at a time, and the last one kept for when Redis does not answer.
    counts: Counts,
}

enum Backend {
    Memory(Memory),
    Redis { store: RedisStore, ttl_ms: u64 },
}

/// The in-memory cache: an exact LRU within both bounds (`max_entries`, `max_bytes`) — a read moves an
/// entry to the front, an insert that exceeds a bound evicts from the back until both hold. One lock
/// guards the list and the blocks the bodies are kept in; every operation under it is O(1) (but the
/// periodic sweep of expired entries).
struct Memory {
    inner: Mutex<MemoryInner>,
    ttl: Duration,
    max_entries: u64,
    max_bytes: u64,
    /// Inserts so far; every `sweep_every`-th also drops the expired entries (an entry nobody reads
    /// again would otherwise keep its place until evicted).
    inserts: AtomicU64,
    sweep_every: u64,
}

struct MemoryInner {
    entries: lru::LruCache<CacheKey, Fresh>,
    /// Sum of the entries' weights ([`weight`]).
    bytes: u64,
    /// Where the entries' bodies and backend names are kept.
    blocks: Blocks,
}

impl Memory {
    fn new(max_entries: u64, max_bytes: u64, ttl: Duration) -> Memory {
        Memory {
            inner: Mutex::new(MemoryInner {
                entries: lru::LruCache::unbounded(),
                bytes: 0,
                blocks: Blocks::default(),
            }),
            ttl,
            max_entries,
            max_bytes,
            inserts: AtomicU64::new(0),
            sweep_every: max_entries.max(64),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &CacheKey) -> Option<CachedResponse> {
        let mut inner = self.lock();
        let fresh = inner.entries.get_mut(key)?;
        if fresh.until <= tokio::time::Instant::now() {
            inner.remove(key);
            return None;
        }
        if fresh.in_block {
            // An entry read again may stay long after its neighbours are evicted: it gets a body of
            // its own, so it never holds a whole block.
            fresh.body = Bytes::copy_from_slice(&fresh.body);
            fresh.in_block = false;
        }
        Some(CachedResponse {
            body: fresh.body.clone(),
            backend: fresh.backend.as_ref().to_owned(),
            protocol: fresh.protocol,
        })
    }

    fn insert(&self, key: CacheKey, response: CachedResponse) {
        let until = tokio::time::Instant::now() + self.ttl;
        {
            let mut inner = self.lock();
            let fresh = inner.blocks.keep(response, until);
            inner.bytes += weight(&fresh);
            if let Some(old) = inner.entries.put(key, fresh) {
                inner.bytes -= weight(&old);
            }
            while inner.entries.len() as u64 > self.max_entries || inner.bytes > self.max_bytes {
                let Some((_, evicted)) = inner.entries.pop_lru() else {
                    break;
                };
                inner.bytes -= weight(&evicted);
            }
        }
        if self.inserts.fetch_add(1, Ordering::Relaxed) % self.sweep_every == self.sweep_every - 1 {
            self.drop_expired();
        }
    }

    fn drop_expired(&self) {
        let now = tokio::time::Instant::now();
        let mut inner = self.lock();
        let expired: Vec<CacheKey> = inner
            .entries
            .iter()
            .filter(|(_, fresh)| fresh.until <= now)
            .map(|(key, _)| *key)
            .collect();
        for key in &expired {
            inner.remove(key);
        }
    }

    /// Live entries (expired ones dropped first).
    fn live(&self) -> u64 {
        self.drop_expired();
        self.lock().entries.len() as u64
    }
}

#[cfg(test)]
impl Memory {
    /// An entry as stored, without counting as a use.
    fn peek(&self, key: &CacheKey) -> Option<Fresh> {
        self.lock().entries.peek(key).cloned()
    }
}

impl MemoryInner {
    fn remove(&mut self, key: &CacheKey) {
        if let Some(fresh) = self.entries.pop(key) {
            self.bytes -= weight(&fresh);
        }
    }
}

/// An in-memory entry and when it stops being served. `tokio`'s clock, so tests can move it.
#[derive(Clone)]
struct Fresh {
    body: Bytes,
    /// The body is a slice of one of [`Blocks`]' blocks (until the entry is first read again).
    in_block: bool,
    backend: Arc<str>,
    protocol: WireProtocol,
    until: tokio::time::Instant,
}

/// Where the in-memory cache keeps what its entries hold. Under a load of new requests every response
/// is inserted and, once the cache is full, an entry inserted long ago is evicted. Were each entry's
/// body its own allocation, every eviction would hand a cold block back to the allocator, which gives
/// it to the next request of that size: with a cache larger than the CPU's caches, the request path's
/// buffers would keep landing in cold memory (measured: every function ≈ 15 % slower with 100,000
/// entries than with 1,000). So bodies are copied end to end into [`BLOCK_BYTES`] blocks, which go
/// back to the allocator whole once all their entries are gone, and backend names are shared.
///
/// Entries leave a block in the order they entered it (eviction of entries never read again and TTL
/// expiry both follow insertion order), so at most a few blocks are partly dead; an entry that is read
/// again moves to a body of its own (see [`Memory::get`]) and cannot keep an old block alive.
#[derive(Default)]
struct Blocks {
    block: BytesMut,
    names: Vec<Arc<str>>,
}

/// Size of one block of cached bodies.
const BLOCK_BYTES: usize = 64 * 1024;

/// Bodies larger than this keep their own allocation (they are in the allocator's large classes,
/// away from the request path's small ones, and would waste a block's tail).
const LARGEST_IN_BLOCK: usize = BLOCK_BYTES / 8;

/// Backend names shared at most: names come from the config, so a few; past this each entry has
/// its own.
const MOST_NAMES: usize = 64;

impl Blocks {
    fn keep(&mut self, response: CachedResponse, until: tokio::time::Instant) -> Fresh {
        let backend = match self.names.iter().find(|name| ***name == *response.backend) {
            Some(name) => Arc::clone(name),
            None => {
                let name: Arc<str> = Arc::from(response.backend);
                if self.names.len() < MOST_NAMES {
                    self.names.push(Arc::clone(&name));
                }
                name
            }
        };
        let len = response.body.len();
        let (body, in_block) = if len > LARGEST_IN_BLOCK {
            (response.body, false)
        } else {
            if self.block.capacity() - self.block.len() < len {
                self.block = BytesMut::with_capacity(BLOCK_BYTES);
            }
            self.block.extend_from_slice(&response.body);
            (self.block.split().freeze(), true)
        };
        Fresh {
            body,
            in_block,
            backend,
            protocol: response.protocol,
            until,
        }
    }
}

/// An entry's weight against `max_bytes`: its body plus [`ENTRY_OVERHEAD`].
fn weight(fresh: &Fresh) -> u64 {
    fresh.body.len() as u64 + ENTRY_OVERHEAD
}

#[derive(Default)]
struct Counts {
    /// Held while a SCAN runs, so concurrent `/stats` calls share one count instead of each
    /// scanning Redis.
    running: tokio::sync::Mutex<()>,
    /// The last successful count and when it finished. A std mutex: never held across an `.await`.
    last: Mutex<Option<(u64, Instant)>>,
}

impl fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache")
            .field("enabled", &self.enabled)
            .field("shared", &matches!(self.backend, Backend::Redis { .. }))
            .field("hits", &self.hits.load(Ordering::Relaxed))
            .field("misses", &self.misses.load(Ordering::Relaxed))
            .finish()
    }
}

/// Rough per-entry overhead (key, struct, backend name) added to the body size when weighing.
const ENTRY_OVERHEAD: u64 = 128;

impl ResponseCache {
    pub fn new(cfg: &CacheConfig, store: StateStore) -> ResponseCache {
        let ttl = Duration::from_secs_f64(if cfg.ttl_s.is_finite() && cfg.ttl_s > 0.0 {
            cfg.ttl_s
        } else {
            300.0
        });
        let max_entries = cfg.max_entries.max(1);
        let max_bytes = cfg.max_bytes.max(1);
        let backend = match store {
            StateStore::Redis(store) => Backend::Redis {
                store,
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            },
            StateStore::Memory(_) => Backend::Memory(Memory::new(max_entries, max_bytes, ttl)),
        };
        ResponseCache {
            enabled: cfg.enabled,
            backend,
            max_entries,
            max_entry_bytes: max_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            counts: Counts::default(),
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The key for normalized request bytes.
    pub fn key(material: &[u8]) -> CacheKey {
        CacheKey(Sha256::digest(material).into())
    }

    /// The key of material written into `hasher` piece by piece.
    pub fn key_of(hasher: Sha256) -> CacheKey {
        CacheKey(hasher.finalize().into())
    }

    /// A cached response, if present and fresh. Redis trouble counts as a miss.
    pub async fn get(&self, key: &CacheKey) -> Option<CachedResponse> {
        if !self.enabled {
            return None;
        }
        let found = match &self.backend {
            Backend::Memory(memory) => memory.get(key),
            Backend::Redis { store, .. } => {
                let cmd = redis::Cmd::get(redis_key(store, key));
                match store.query::<Option<Vec<u8>>>(&cmd).await {
                    Ok(Some(raw)) => decode(Bytes::from(raw)),
                    _ => None,
                }
            }
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores a complete successful response. Bodies that are not complete JSON, that are error
    /// bodies (`{"error": …}` or `{"type": "error", …}`) or larger than `max_bytes` are ignored.
    pub async fn put(&self, key: &CacheKey, value: CachedResponse) {
        if is_cacheable(&value.body) {
            self.put_answer(key, value).await;
        }
    }

    /// [`put`](Self::put) for a body the caller knows to be a complete answer (it wrote it, or read it
    /// exactly): only the size bound is checked.
    pub(crate) async fn put_answer(&self, key: &CacheKey, value: CachedResponse) {
        if let Some((key, value)) = self.put_answer_in_memory(*key, value) {
            self.put_answer_shared(&key, value).await;
        }
    }

    /// [`put_answer`](Self::put_answer) done at once when the cache is in memory (or the entry is not
    /// stored); with Redis the entry comes back, to be written by an async call.
    pub(crate) fn put_answer_in_memory(
        &self,
        key: CacheKey,
        value: CachedResponse,
    ) -> Option<(CacheKey, CachedResponse)> {
        if !self.enabled || value.body.len() as u64 + ENTRY_OVERHEAD > self.max_entry_bytes {
            return None;
        }
        match &self.backend {
            Backend::Memory(memory) => {
                memory.insert(key, value);
                None
            }
            Backend::Redis { .. } => Some((key, value)),
        }
    }

    /// Writes an entry [`put_answer_in_memory`](Self::put_answer_in_memory) handed back.
    pub(crate) async fn put_answer_shared(&self, key: &CacheKey, value: CachedResponse) {
        match &self.backend {
            Backend::Memory(memory) => memory.insert(*key, value),
            Backend::Redis { store, ttl_ms } => {
                let cmd = redis::Cmd::pset_ex(redis_key(store, key), encode(&value), *ttl_ms);
                // A failed put just means a later miss; outages are logged by the store.
                let _ = store.query::<()>(&cmd).await;
            }
        }
    }

    /// Counters and the number of live entries. With Redis this runs a SCAN over this gateway's cache
    /// keys, bounded by [`COUNT_TIMEOUT`]: `/stats` never waits longer, even while Redis hangs or is
    /// down (then the last count is reported as `last_known`, or `null` if there was none).
    pub async fn stats(&self) -> CacheStats {
        let (size, size_source, size_age_s) = match &self.backend {
            _ if !self.enabled => (Some(0), SizeSource::Disabled, None),
            Backend::Memory(memory) => (Some(memory.live()), SizeSource::Memory, None),
            Backend::Redis { store, .. } => self.redis_size(store).await,
        };
        CacheStats {
            size,
            size_source,
            size_age_s,
            capacity: self.max_entries,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            shared: matches!(self.backend, Backend::Redis { .. }),
        }
    }

    async fn redis_size(&self, store: &RedisStore) -> (Option<u64>, SizeSource, Option<u64>) {
        let asked = Instant::now();
        let counted = tokio::time::timeout(COUNT_TIMEOUT, async {
            let _running = self.counts.running.lock().await;
            // A count that finished while this call waited for the lock overlaps this call: reuse it
            // rather than scanning again.
            if let Some((n, at)) = self.last_count()
                && at >= asked
            {
                return Ok(n);
            }
            let n = count_keys(store, &cache_key_pattern(store.prefix())).await?;
            *self
                .counts
                .last
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some((n, Instant::now()));
            Ok::<u64, StoreUnavailable>(n)
        })
        .await;
        match (counted, self.last_count()) {
            (Ok(Ok(n)), _) => (Some(n), SizeSource::Redis, None),
            (_, Some((n, at))) => (Some(n), SizeSource::LastKnown, Some(at.elapsed().as_secs())),
            (_, None) => (None, SizeSource::Unknown, None),
        }
    }

    fn last_count(&self) -> Option<(u64, Instant)> {
        *self
            .counts
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts the distinct keys matching `pattern` with SCAN (cursor loop, `SCAN_COUNT` per call). SCAN
/// may return a key twice while Redis resizes its table, so keys are deduplicated (by a 64-bit hash:
/// 8 bytes per entry while counting).
async fn count_keys(store: &RedisStore, pattern: &str) -> Result<u64, StoreUnavailable> {
    let mut seen = HashSet::new();
    let mut cursor = 0u64;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let (next, keys): (u64, Vec<Vec<u8>>) = store.query(&cmd).await?;
        for key in keys {
            let mut hasher = std::hash::DefaultHasher::new();
            key.hash(&mut hasher);
            seen.insert(hasher.finish());
        }
        if next == 0 {
            return Ok(seen.len() as u64);
        }
        cursor = next;
    }
}

/// The SCAN pattern for every cache key under `prefix`, with glob characters in the prefix escaped.
fn cache_key_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 8);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str(":cache:*");
    pattern
}

fn redis_key(store: &RedisStore, key: &CacheKey) -> String {
    format!("{}:cache:{}", store.prefix(), hex::encode(key.0))
}

/// True for a complete JSON object that is not an error body.
pub(crate) fn is_cacheable(body: &[u8]) -> bool {
    if crate::protocol::openai::is_exact_answer(body) {
        return true;
    }
    #[derive(Deserialize)]
    struct Probe {
        error: Option<serde::de::IgnoredAny>,
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    match serde_json::from_slice::<Probe>(body) {
        Ok(probe) => probe.error.is_none() && probe.kind.as_deref() != Some("error"),
        Err(_) => false,
    }
}

/// Redis value layout: protocol byte, backend name length (u16 BE), backend name, body.
fn encode(value: &CachedResponse) -> Vec<u8> {
    let backend = value.backend.as_bytes();
    let backend = &backend[..backend.len().min(usize::from(u16::MAX))];
    let mut out = Vec::with_capacity(3 + backend.len() + value.body.len());
    out.push(match value.protocol {
        WireProtocol::OpenAi => 0,
        WireProtocol::Anthropic => 1,
        WireProtocol::Responses => 2,
    });
    out.extend_from_slice(
        &u16::try_from(backend.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(backend);
    out.extend_from_slice(&value.body);
    out
}

fn decode(raw: Bytes) -> Option<CachedResponse> {
    let protocol = match *raw.first()? {
        0 => WireProtocol::OpenAi,
        1 => WireProtocol::Anthropic,
        2 => WireProtocol::Responses,
        _ => return None,
    };
    let len = usize::from(u16::from_be_bytes([*raw.get(1)?, *raw.get(2)?]));
    let backend = String::from_utf8(raw.get(3..3 + len)?.to_vec()).ok()?;
    Some(CachedResponse {
        body: raw.slice(3 + len..),
        backend,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_non_error_objects_are_cacheable() {
        let answer = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
        assert!(is_cacheable(answer.as_bytes()));
        assert!(is_cacheable(br#"{ "id": "x", "content": [] }"#));
        for body in [
            &answer[..answer.len() - 1],
            &answer.replace(r#""id":"c""#, r#""error":{"message":"m"}"#),
            &answer.replace(r#""id":"c""#, r#""type":"error""#),
            r#"{"type":"error","error":{"type":"api_error","message":"m"}}"#,
            r#"{"error":"boom"}"#,
            "[1]",
        ] {
            assert!(!is_cacheable(body.as_bytes()), "{body}");
        }
    }
    use crate::store::{FailMode, test_redis::TestRedis};

    fn response(body: &str) -> CachedResponse {
        CachedResponse {
            body: Bytes::from(body.to_owned()),
            backend: "local".to_owned(),
            protocol: WireProtocol::OpenAi,
        }
    }

    /// An in-memory cache with this TTL and entry bound (bytes are no constraint).
    fn with_ttl(ttl_s: f64, max_entries: u64) -> ResponseCache {
        let cfg = CacheConfig {
            ttl_s,
            ..enabled(max_entries, 1 << 24)
        };
        ResponseCache::new(&cfg, StateStore::memory())
    }

    fn enabled(max_entries: u64, max_bytes: u64) -> CacheConfig {
        CacheConfig {
            enabled: true,
            max_entries,
            max_bytes,
            ..CacheConfig::default()
        }
    }

    #[tokio::test]
    async fn hit_after_put_and_stats() {
        let cache = ResponseCache::new(&enabled(10, 1 << 20), StateStore::memory());
        let key = ResponseCache::key(b"model=x;messages=hi");
        assert_eq!(cache.get(&key).await, None);
        cache
            .put(&key, response(r#"{"id":"1","choices":[]}"#))
            .await;
        assert_eq!(
            cache.get(&key).await,
            Some(response(r#"{"id":"1","choices":[]}"#))
        );
        assert_ne!(key, ResponseCache::key(b"model=x;messages=ho"));
        let stats = cache.stats().await;
        assert_eq!(stats.size_source, SizeSource::Memory);
        assert_eq!(
            (
                stats.size,
                stats.hits,
                stats.misses,
                stats.capacity,
                stats.shared
            ),
            (Some(1), 1, 1, 10, false),
            "the entry is counted right after put"
        );
    }

    #[tokio::test]
    async fn disabled_cache_stores_nothing() {
        let cache = ResponseCache::new(&CacheConfig::default(), StateStore::memory());
        let key = ResponseCache::key(b"k");
        cache.put(&key, response("{}")).await;
        assert_eq!(cache.get(&key).await, None);
        let stats = cache.stats().await;
        assert_eq!(stats.misses, 0);
        assert_eq!(
            (stats.size, stats.size_source),
            (Some(0), SizeSource::Disabled)
        );
    }

    #[tokio::test]
    async fn errors_and_partials_are_never_stored() {
        let cache = ResponseCache::new(&enabled(10, 1 << 20), StateStore::memory());
        for (i, body) in [
            r#"{"error":{"message":"boom"}}"#,
            r#"{"type":"error","error":{"type":"overloaded_error"}}"#,
            r#"{"id":"1","choices":[{"message":"trunc"#,
            "",
        ]
        .into_iter()
        .enumerate()
        {
            let key = ResponseCache::key(&[i as u8]);
            cache.put(&key, response(body)).await;
            assert_eq!(cache.get(&key).await, None, "{body}");
        }
        let key = ResponseCache::key(b"ok");
        cache
            .put(&key, response(r#"{"type":"message","content":[]}"#))
            .await;
        assert!(cache.get(&key).await.is_some());
    }

    #[tokio::test]
    async fn entry_and_byte_bounds_hold() {
        let cache = ResponseCache::new(&enabled(5, 1 << 20), StateStore::memory());
        for i in 0..50u8 {
            cache
                .put(&ResponseCache::key(&[i]), response(r#"{"a":1}"#))
                .await;
        }
        let stats = cache.stats().await;
        assert!(stats.size.is_some_and(|n| n <= 5), "{stats:?}");

        let cache = ResponseCache::new(&enabled(1000, 4096), StateStore::memory());
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(1500));
        for i in 0..20u8 {
            cache.put(&ResponseCache::key(&[i]), response(&big)).await;
        }
        let too_big = format!(r#"{{"a":"{}"}}"#, "x".repeat(5000));
        cache
            .put(&ResponseCache::key(b"big"), response(&too_big))
            .await;
        let Backend::Memory(memory) = &cache.backend else {
            panic!("memory backend expected")
        };
        let bytes = memory.lock().bytes;
        assert!(bytes <= 4096, "{bytes}");
        assert!(cache.stats().await.size.is_some_and(|n| n <= 2));
        assert_eq!(cache.get(&ResponseCache::key(b"big")).await, None);
    }

    /// Issue 23 item 5: `max_entries: N` keeps exactly the N most recently used entries.
    #[tokio::test]
    async fn max_entries_keeps_the_most_recently_used() {
        let key = |i: u32| ResponseCache::key(&i.to_le_bytes());
        // Seed 004's case: A, B, C into a cache of 2, then C again: a hit; A was evicted.
        let cache = ResponseCache::new(&enabled(2, 1 << 24), StateStore::memory());
        for i in 0..3 {
            cache.put(&key(i), response("{}")).await;
        }
        assert!(cache.get(&key(2)).await.is_some());
        assert!(cache.get(&key(1)).await.is_some());
        assert!(cache.get(&key(0)).await.is_none());
        // A read counts as a use: B was read last, so D evicts C.
        cache.put(&key(3), response("{}")).await;
        assert!(cache.get(&key(1)).await.is_some());
        assert!(cache.get(&key(3)).await.is_some());
        assert!(cache.get(&key(2)).await.is_none());

        // A larger cache against a reference LRU over a random mix of reads and writes.
        let cache = ResponseCache::new(&enabled(50, 1 << 24), StateStore::memory());
        let mut reference: Vec<u32> = Vec::new(); // most recent last
        let mut seed: u64 = 7;
        for _ in 0..5_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = ((seed >> 33) % 120) as u32;
            if (seed >> 20).is_multiple_of(3) {
                cache.put(&key(k), response("{}")).await;
                reference.retain(|&r| r != k);
                reference.push(k);
                if reference.len() > 50 {
                    reference.remove(0);
                }
            } else {
                let hit = cache.get(&key(k)).await.is_some();
                assert_eq!(hit, reference.contains(&k), "key {k}");
                if hit {
                    reference.retain(|&r| r != k);
                    reference.push(k);
                }
            }
        }
        assert_eq!(cache.stats().await.size, Some(reference.len() as u64));
    }

    /// The byte bound evicts the least recently used too, and one entry can use all of `max_bytes`.
    #[tokio::test]
    async fn max_bytes_evicts_the_least_recently_used() {
        let body = format!(r#"{{"a":"{}"}}"#, "x".repeat(1000));
        let weight = body.len() as u64 + ENTRY_OVERHEAD;
        let cache = ResponseCache::new(&enabled(100, 3 * weight), StateStore::memory());
        let key = |i: u32| ResponseCache::key(&i.to_le_bytes());
        for i in 0..3 {
            cache.put(&key(i), response(&body)).await;
        }
        assert!(cache.get(&key(0)).await.is_some());
        cache.put(&key(3), response(&body)).await;
        assert!(cache.get(&key(1)).await.is_none(), "least recently used");
        for i in [0, 2, 3] {
            assert!(cache.get(&key(i)).await.is_some(), "{i}");
        }
        let whole = format!(r#"{{"a":"{}"}}"#, "x".repeat(3 * 1000));
        let cache = ResponseCache::new(
            &enabled(100, whole.len() as u64 + ENTRY_OVERHEAD),
            StateStore::memory(),
        );
        cache.put(&key(9), response(&whole)).await;
        assert!(cache.get(&key(9)).await.is_some());
    }

    /// Small bodies share blocks and backend names are shared; a body read again gets its own copy
    /// (so it cannot keep a block alive), large bodies keep their own allocation; every read returns
    /// exactly what was stored.
    #[tokio::test]
    async fn bodies_share_blocks_until_read_again() {
        let cache = with_ttl(300.0, 10_000);
        let Backend::Memory(memory) = &cache.backend else {
            panic!("memory backend expected")
        };
        let key = |i: usize| ResponseCache::key(&i.to_le_bytes());
        let body = |i: usize| format!(r#"{{"id":"{i}","choices":[]}}"#);
        // Enough entries to fill several blocks.
        let count = 3 * BLOCK_BYTES / body(0).len();
        for i in 0..count {
            cache.put(&key(i), response(&body(i))).await;
        }
        let large = format!(
            r#"{{"id":"{}","choices":[]}}"#,
            "x".repeat(LARGEST_IN_BLOCK)
        );
        cache.put(&key(count), response(&large)).await;

        let first = memory.peek(&key(0)).expect("stored");
        let second = memory.peek(&key(1)).expect("stored");
        assert!(first.in_block && second.in_block);
        assert!(Arc::ptr_eq(&first.backend, &second.backend));
        assert_eq!(
            first.body.as_ptr().wrapping_add(first.body.len()),
            second.body.as_ptr(),
            "consecutive entries sit end to end in one block"
        );
        assert!(!memory.peek(&key(count)).expect("stored").in_block);

        for i in (0..count).step_by(97) {
            let hit = cache.get(&key(i)).await.expect("hit");
            assert_eq!(hit.body, body(i).as_bytes());
            assert_eq!(hit.backend, "local");
            assert!(!memory.peek(&key(i)).expect("kept").in_block);
            assert_eq!(cache.get(&key(i)).await.expect("hit").body, hit.body);
        }
        assert_eq!(
            cache.get(&key(count)).await.expect("hit").body,
            large.as_bytes()
        );
    }

    /// Expired entries nobody reads again are dropped as inserts go on, not only when `/stats` counts.
    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept_by_later_inserts() {
        let cache = with_ttl(10.0, 100);
        let key = |i: u32| ResponseCache::key(&i.to_le_bytes());
        for i in 0..50 {
            cache.put(&key(i), response("{}")).await;
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        let Backend::Memory(memory) = &cache.backend else {
            panic!("memory backend expected")
        };
        assert_eq!(memory.lock().entries.len(), 50);
        // The sweep runs every `max_entries` (at least 64) inserts.
        for i in 100..150 {
            cache.put(&key(i), response("{}")).await;
        }
        assert_eq!(
            memory.lock().entries.len(),
            50,
            "only the 50 fresh ones are left"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_ttl() {
        let cache = with_ttl(300.0, 10);
        let key = ResponseCache::key(b"ttl");
        cache.put(&key, response("{}")).await;
        cache
            .put(&ResponseCache::key(b"other"), response("{}"))
            .await;
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(cache.get(&key).await.is_some());
        assert_eq!(cache.stats().await.size, Some(2));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.get(&key).await, None);
        // The expired entry nobody read is not counted either.
        assert_eq!(cache.stats().await.size, Some(0));
    }

    #[test]
    fn redis_value_roundtrip_and_config() {
        let value = CachedResponse {
            body: Bytes::from_static(b"{\"x\":1}"),
            backend: "cloud".to_owned(),
            protocol: WireProtocol::Anthropic,
        };
        assert_eq!(decode(Bytes::from(encode(&value))), Some(value));
        assert_eq!(decode(Bytes::from_static(b"\x07")), None);
        let cfg: CacheConfig = serde_json::from_str(r#"{"enabled": true}"#).unwrap();
        assert_eq!(
            (cfg.ttl_s, cfg.max_entries, cfg.max_bytes),
            (300.0, 1000, 64 * 1024 * 1024)
        );
        assert!(serde_json::from_str::<CacheConfig>(r#"{"ttl": 1}"#).is_err());
        assert!(
            CacheConfig { ttl_s: 0.0, ..cfg }
                .validate()
                .unwrap_err()
                .to_string()
                .contains("ttl_s")
        );
    }

    #[tokio::test]
    async fn shared_through_redis_between_replicas() {
        let Some(mut server) = TestRedis::start() else {
            return;
        };
        let store = |fail| {
            StateStore::Redis(RedisStore::new(
                &server.url(),
                "t",
                fail,
                Duration::from_millis(50),
            ))
        };
        let a = ResponseCache::new(&enabled(10, 1 << 20), store(FailMode::FailOpen));
        let b = ResponseCache::new(&enabled(10, 1 << 20), store(FailMode::FailOpen));
        let key = ResponseCache::key(b"shared");
        a.put(&key, response(r#"{"id":"r"}"#)).await;
        assert_eq!(b.get(&key).await, Some(response(r#"{"id":"r"}"#)));
        assert!(b.stats().await.shared);
        server.kill();
        assert_eq!(b.get(&key).await, None, "an outage is a miss, not an error");
        b.put(&key, response("{}")).await;
    }

    #[tokio::test]
    async fn redis_size_counts_this_prefix_then_reports_the_last_count_while_down() {
        let Some(mut server) = TestRedis::start() else {
            return;
        };
        let cache = |prefix: &str| {
            let store = RedisStore::new(
                &server.url(),
                prefix,
                FailMode::FailOpen,
                Duration::from_millis(50),
            );
            ResponseCache::new(&enabled(10, 1 << 20), StateStore::Redis(store))
        };
        // "t?" as a glob would also match "tx": the prefix must be matched literally.
        let (ours, theirs) = (cache("t?"), cache("tx"));
        assert_eq!(ours.stats().await.size, Some(0));
        for i in 0..3u8 {
            ours.put(&ResponseCache::key(&[i]), response("{}")).await;
        }
        for i in 0..2u8 {
            theirs.put(&ResponseCache::key(&[i]), response("{}")).await;
        }
        // Another kind of state under the same prefix is not a cache entry.
        let _: () = redis::cmd("SET")
            .arg("t?:rl:bucket")
            .arg(1)
            .query(
                &mut redis::Client::open(server.url())
                    .unwrap()
                    .get_connection()
                    .unwrap(),
            )
            .unwrap();
        let stats = ours.stats().await;
        assert_eq!(
            (stats.size, stats.size_source, stats.size_age_s),
            (Some(3), SizeSource::Redis, None)
        );
        assert_eq!(theirs.stats().await.size, Some(2));
        let never_counted = cache("t?");

        server.kill();
        let stats = ours.stats().await;
        assert_eq!(
            (stats.size, stats.size_source, stats.size_age_s),
            (Some(3), SizeSource::LastKnown, Some(0))
        );
        let stats = never_counted.stats().await;
        assert_eq!((stats.size, stats.size_source), (None, SizeSource::Unknown));
    }

    #[tokio::test]
    async fn redis_size_gives_up_after_the_timeout_when_redis_hangs() {
        // Accepts TCP connections (the kernel's backlog) but never answers a command.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", silent.local_addr().unwrap());
        let store = RedisStore::new(&url, "t", FailMode::FailOpen, Duration::from_millis(50));
        let cache = ResponseCache::new(&enabled(10, 1 << 20), StateStore::Redis(store));
        let started = Instant::now();
        let stats = cache.stats().await;
        assert_eq!((stats.size, stats.size_source), (None, SizeSource::Unknown));
        assert!(
            started.elapsed() < COUNT_TIMEOUT + Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
}
