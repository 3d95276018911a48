//! Stored Responses answers, for `previous_response_id` and `GET`/`DELETE /v1/responses/{id}`: in
//! memory, bounded by entries and bytes with a TTL, or in Redis when `state.redis_url` is set (then any
//! replica continues any conversation).
//!
//! The store keeps each answer (`protocol::responses::StoredResponse`: owner, the conversation's input
//! items and the `response` object) under the response id: in memory as its parts (nothing copied), in
//! Redis as one JSON entry. Like the response cache, it is built once at
//! startup and kept across reloads; its settings (`responses:`) apply from startup.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::config_error::Invalid;
use crate::protocol::responses::StoredResponse;
use crate::store::{RedisStore, StateStore, StoreUnavailable};

/// The `responses:` config section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsesConfig {
    /// Keep answers (unless a request says `store: false`); off, `previous_response_id` finds nothing.
    pub enabled: bool,
    /// Seconds an answer stays retrievable and continuable.
    pub ttl_s: f64,
    /// Most answers held in memory.
    pub max_entries: u64,
    /// Most bytes held in memory (a conversation's stored answer holds its whole history).
    pub max_bytes: u64,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        ResponsesConfig {
            enabled: true,
            ttl_s: 86_400.0,
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl ResponsesConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if !(self.ttl_s.is_finite() && self.ttl_s > 0.0) {
            return Err(Invalid::new(
                "responses",
                format!(
                    "responses.ttl_s must be a positive number of seconds, got {}",
                    self.ttl_s
                ),
            ));
        }
        if self.max_entries == 0 || self.max_bytes == 0 {
            return Err(Invalid::new(
                "responses",
                format!(
                    "responses.max_entries ({}) and responses.max_bytes ({}) must be at least 1",
                    self.max_entries, self.max_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// Where answers are kept.
pub struct ResponseStore {
    enabled: bool,
    backend: Backend,
}

enum Backend {
    Memory(Memory),
    Redis { store: RedisStore, ttl_ms: u64 },
}

impl fmt::Debug for ResponseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseStore")
            .field("enabled", &self.enabled)
            .field("shared", &matches!(self.backend, Backend::Redis { .. }))
            .finish()
    }
}

/// Rough per-entry overhead (key, entry struct) added to the bytes when weighing.
const ENTRY_OVERHEAD: u64 = 96;

/// The in-memory store: an LRU bounded by `max_entries` and `max_bytes` (least recently stored or read
/// leaves first), behind one lock; touched once or twice per Responses request.
struct Memory {
    inner: std::sync::Mutex<MemoryInner>,
    ttl: Duration,
    max_entries: u64,
    max_bytes: u64,
}

struct MemoryInner {
    entries: lru::LruCache<Arc<str>, Entry>,
    /// Sum of the entries' weights.
    bytes: u64,
}

#[derive(Clone)]
struct Entry {
    stored: StoredResponse,
    until: tokio::time::Instant,
}

/// An entry's weight against `max_bytes`.
fn weight(id: &str, entry: &Entry) -> u64 {
    entry.stored.len() as u64 + id.len() as u64 + ENTRY_OVERHEAD
}

impl Memory {
    fn new(cfg: &ResponsesConfig, ttl: Duration) -> Memory {
        Memory {
            inner: std::sync::Mutex::new(MemoryInner {
                entries: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            ttl,
            max_entries: cfg.max_entries.max(1),
            max_bytes: cfg.max_bytes.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, id: &str) -> Option<StoredResponse> {
        let mut inner = self.lock();
        let entry = inner.entries.get(id)?;
        if entry.until <= tokio::time::Instant::now() {
            inner.remove(id);
            return None;
        }
        Some(entry.stored.clone())
    }

    fn insert(&self, id: &str, stored: StoredResponse) {
        let entry = Entry {
            stored,
            until: tokio::time::Instant::now() + self.ttl,
        };
        let mut inner = self.lock();
        inner.remove(id);
        inner.bytes += weight(id, &entry);
        inner.entries.put(Arc::from(id), entry);
        while inner.entries.len() as u64 > self.max_entries || inner.bytes > self.max_bytes {
            let Some((id, evicted)) = inner.entries.pop_lru() else {
                break;
            };
            inner.bytes -= weight(&id, &evicted);
        }
    }

    /// True when a live entry was there.
    fn remove(&self, id: &str) -> bool {
        self.lock()
            .remove(id)
            .is_some_and(|entry| entry.until > tokio::time::Instant::now())
    }
}

impl MemoryInner {
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.entries.pop(id)?;
        self.bytes -= weight(id, &entry);
        Some(entry)
    }
}

fn redis_key(store: &RedisStore, id: &str) -> String {
    format!("{}:response:{id}", store.prefix())
}

impl ResponseStore {
    pub fn new(cfg: &ResponsesConfig, store: StateStore) -> ResponseStore {
        let ttl = Duration::from_secs_f64(if cfg.ttl_s.is_finite() && cfg.ttl_s > 0.0 {
            cfg.ttl_s
        } else {
            86_400.0
        });
        let backend = match store {
            StateStore::Redis(store) => Backend::Redis {
                store,
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            },
            StateStore::Memory(_) => Backend::Memory(Memory::new(cfg, ttl)),
        };
        ResponseStore {
            enabled: cfg.enabled,
            backend,
        }
    }

    /// Answers are kept (`responses.enabled`).
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The answer stored under `id`; `Ok(None)` when there is none (or it expired, or a Redis
    /// entry under it cannot be read).
    pub(crate) async fn get(&self, id: &str) -> Result<Option<StoredResponse>, StoreUnavailable> {
        if !self.enabled {
            return Ok(None);
        }
        match &self.backend {
            Backend::Memory(memory) => Ok(memory.get(id)),
            Backend::Redis { store, .. } => store
                .query::<Option<Vec<u8>>>(&redis::Cmd::get(redis_key(store, id)))
                .await
                .map(|found| {
                    found.and_then(|entry| StoredResponse::from_json(&Bytes::from(entry)))
                }),
        }
    }

    /// Keep `stored` under `id` for the TTL (replacing an entry with the same id).
    pub(crate) async fn put(
        &self,
        id: &str,
        stored: StoredResponse,
    ) -> Result<(), StoreUnavailable> {
        if !self.enabled {
            return Ok(());
        }
        match &self.backend {
            Backend::Memory(memory) => {
                memory.insert(id, stored);
                Ok(())
            }
            Backend::Redis { store, ttl_ms } => {
                let cmd = redis::Cmd::pset_ex(redis_key(store, id), stored.to_json(), *ttl_ms);
                store.query::<()>(&cmd).await
            }
        }
    }

    /// Remove the entry under `id`; true when there was one.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreUnavailable> {
        if !self.enabled {
            return Ok(false);
        }
        match &self.backend {
            Backend::Memory(memory) => Ok(memory.remove(id)),
            Backend::Redis { store, .. } => store
                .query::<u64>(&redis::Cmd::del(redis_key(store, id)))
                .await
                .map(|removed| removed > 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::responses::StoredInput;

    fn memory(cfg: ResponsesConfig) -> ResponseStore {
        ResponseStore::new(&cfg, StateStore::memory())
    }

    /// An answer of about `len` bytes whose response says `text`.
    fn answer(text: &'static str, len: usize) -> StoredResponse {
        StoredResponse {
            owner: None,
            input: StoredInput::Items(Bytes::from(vec![b' '; len])),
            response: Bytes::from_static(text.as_bytes()),
        }
    }

    fn text(found: Option<StoredResponse>) -> Option<Bytes> {
        found.map(|stored| stored.response)
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_and_delete() {
        let store = memory(ResponsesConfig {
            ttl_s: 10.0,
            ..ResponsesConfig::default()
        });
        store.put("resp_a", answer("a", 0)).await.unwrap();
        assert_eq!(
            text(store.get("resp_a").await.unwrap()).as_deref(),
            Some(&b"a"[..])
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(store.get("resp_a").await.unwrap(), None);
        store.put("resp_b", answer("b", 0)).await.unwrap();
        assert!(store.delete("resp_b").await.unwrap());
        assert!(!store.delete("resp_b").await.unwrap());
        assert_eq!(store.get("resp_b").await.unwrap(), None);
    }

    /// Stores `count` answers of `len` bytes and counts how many are still there.
    async fn kept_of(store: &ResponseStore, count: usize, len: usize) -> usize {
        for i in 0..count {
            store
                .put(&format!("resp_{i}"), answer("x", len))
                .await
                .unwrap();
        }
        let mut kept = 0;
        for i in 0..count {
            if store.get(&format!("resp_{i}")).await.unwrap().is_some() {
                kept += 1;
            }
        }
        kept
    }

    #[tokio::test]
    async fn the_bounds_hold() {
        let store = memory(ResponsesConfig {
            max_entries: 10,
            max_bytes: 100_000,
            ..ResponsesConfig::default()
        });
        let kept = kept_of(&store, 100, 100).await;
        assert!((1..=10).contains(&kept), "{kept}");
        // The newest answer is the one a client continues: it is there.
        assert!(store.get("resp_99").await.unwrap().is_some());
        // Weighed by what an answer holds: two of 40 KB fit in 100 KB, a third does not.
        let by_bytes = memory(ResponsesConfig {
            max_bytes: 100_000,
            ..ResponsesConfig::default()
        });
        assert_eq!(kept_of(&by_bytes, 5, 40_000).await, 2);
        let off = memory(ResponsesConfig {
            enabled: false,
            ..ResponsesConfig::default()
        });
        off.put("resp_x", answer("x", 0)).await.unwrap();
        assert_eq!(off.get("resp_x").await.unwrap(), None);
    }

    #[test]
    fn config_validation_names_the_field() {
        let bad = ResponsesConfig {
            ttl_s: 0.0,
            ..ResponsesConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("responses.ttl_s")
        );
        assert!(
            serde_json::from_str::<ResponsesConfig>(r#"{"ttl":1}"#).is_err(),
            "unknown fields are refused"
        );
    }
}
