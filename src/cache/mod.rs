//! Exact-match response cache for complete non-stream responses: TTL plus entry and byte bounds,
//! in memory (`memory.rs`: an exact LRU, the `lru` crate behind one lock, the expiry kept in the entry)
//! or shared through Redis with Redis TTLs (`redis.rs`).
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
//! sampling params; no per-request ids: `pipeline/cache_key.rs`). Only complete, successful JSON bodies
//! are stored: `put` itself refuses error bodies and truncated JSON, so a caller mistake cannot poison
//! the cache.

mod memory;
mod redis;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config_error::Invalid;
use crate::store::StateStore;
use memory::Memory;
use redis::RedisCache;

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

/// The response cache of one config snapshot.
pub struct ResponseCache {
    enabled: bool,
    backend: Backend,
    max_entries: u64,
    max_entry_bytes: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

enum Backend {
    Memory(Memory),
    Redis(RedisCache),
}

impl fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache")
            .field("enabled", &self.enabled)
            .field("shared", &matches!(self.backend, Backend::Redis(_)))
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
            StateStore::Redis(store) => Backend::Redis(RedisCache::new(store, ttl)),
            StateStore::Memory(_) => Backend::Memory(Memory::new(max_entries, max_bytes, ttl)),
        };
        ResponseCache {
            enabled: cfg.enabled,
            backend,
            max_entries,
            max_entry_bytes: max_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
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
            Backend::Redis(redis) => redis.get(key).await,
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
            Backend::Redis(_) => Some((key, value)),
        }
    }

    /// Writes an entry [`put_answer_in_memory`](Self::put_answer_in_memory) handed back.
    pub(crate) async fn put_answer_shared(&self, key: &CacheKey, value: CachedResponse) {
        match &self.backend {
            Backend::Memory(memory) => memory.insert(*key, value),
            Backend::Redis(redis) => redis.put(key, &value).await,
        }
    }

    /// Counters and the number of live entries. With Redis this runs a SCAN over this gateway's cache
    /// keys, bounded by [`COUNT_TIMEOUT`]: `/stats` never waits longer, even while Redis hangs or is
    /// down (then the last count is reported as `last_known`, or `null` if there was none).
    pub async fn stats(&self) -> CacheStats {
        let (size, size_source, size_age_s) = match &self.backend {
            _ if !self.enabled => (Some(0), SizeSource::Disabled, None),
            Backend::Memory(memory) => (Some(memory.live()), SizeSource::Memory, None),
            Backend::Redis(redis) => redis.size().await,
        };
        CacheStats {
            size,
            size_source,
            size_age_s,
            capacity: self.max_entries,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            shared: matches!(self.backend, Backend::Redis(_)),
        }
    }
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
