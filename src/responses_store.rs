//! Stored Responses answers, for `previous_response_id` and `GET`/`DELETE /v1/responses/{id}`: in
//! memory, bounded by entries and bytes with a TTL, or in Redis when `state.redis_url` is set (then any
//! replica continues any conversation).
//!
//! The store keeps opaque entries (`protocol::responses::stored_entry`: owner, the conversation's input
//! items and the `response` object) under the response id. Like the response cache, it is built once at
//! startup and kept across reloads; its settings (`responses:`) apply from startup.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::shared_state::{RedisStore, StateStore, StoreUnavailable};

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
    pub fn validate(&self) -> Result<(), String> {
        if !(self.ttl_s.is_finite() && self.ttl_s > 0.0) {
            return Err(format!(
                "responses.ttl_s must be a positive number of seconds, got {}",
                self.ttl_s
            ));
        }
        if self.max_entries == 0 || self.max_bytes == 0 {
            return Err(format!(
                "responses.max_entries ({}) and responses.max_bytes ({}) must be at least 1",
                self.max_entries, self.max_bytes
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

/// quick_cache's share of the capacity for entries read again: a conversation's newest answer is read
/// once (to continue it) and then superseded, so most entries are never read again; as in the response
/// cache, a small hot share keeps eviction close to least-recently-stored.
const HOT_SHARE: f64 = 0.2;

/// Rough per-entry overhead (key, entry struct) added to the bytes when weighing.
const ENTRY_OVERHEAD: u64 = 96;

struct Memory {
    entries: quick_cache::sync::Cache<Arc<str>, Entry, Weigh>,
    ttl: Duration,
}

#[derive(Clone)]
struct Entry {
    bytes: Bytes,
    until: tokio::time::Instant,
}

/// An entry's weight: its bytes, and at least its share of the byte budget, so the one weight bound
/// (`max_bytes`) also bounds the entry count at `max_entries`.
#[derive(Clone)]
struct Weigh {
    min_weight: u64,
}

impl quick_cache::Weighter<Arc<str>, Entry> for Weigh {
    fn weight(&self, key: &Arc<str>, value: &Entry) -> u64 {
        (value.bytes.len() as u64 + key.len() as u64 + ENTRY_OVERHEAD).max(self.min_weight)
    }
}

impl Memory {
    fn new(cfg: &ResponsesConfig, ttl: Duration) -> Memory {
        let max_entries = cfg.max_entries.max(1);
        let max_bytes = cfg.max_bytes.max(1);
        let weigh = Weigh {
            min_weight: (max_bytes / max_entries).max(1),
        };
        // One shard: a shard's byte share bounds the largest entry, and a long conversation's answer
        // may be large; the store is touched once or twice per Responses request, not per token.
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(usize::try_from(max_entries.min(1 << 16)).unwrap_or(1024))
            .weight_capacity(max_bytes)
            .shards(1)
            .hot_allocation(HOT_SHARE)
            .build();
        let entries = match options {
            Ok(options) => quick_cache::sync::Cache::with_options(
                options,
                weigh,
                Default::default(),
                Default::default(),
            ),
            Err(_) => quick_cache::sync::Cache::with_weighter(1, max_bytes, weigh),
        };
        Memory { entries, ttl }
    }

    fn get(&self, id: &str) -> Option<Bytes> {
        let entry = self.entries.get(id)?;
        if entry.until <= tokio::time::Instant::now() {
            self.entries.remove(id);
            return None;
        }
        Some(entry.bytes)
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
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The entry stored under `id`; `Ok(None)` when there is none (or it expired).
    pub async fn get(&self, id: &str) -> Result<Option<Bytes>, StoreUnavailable> {
        if !self.enabled {
            return Ok(None);
        }
        match &self.backend {
            Backend::Memory(memory) => Ok(memory.get(id)),
            Backend::Redis { store, .. } => store
                .query::<Option<Vec<u8>>>(&redis::Cmd::get(redis_key(store, id)))
                .await
                .map(|found| found.map(Bytes::from)),
        }
    }

    /// Keep `entry` under `id` for the TTL (replacing an entry with the same id).
    pub async fn put(&self, id: &str, entry: Bytes) -> Result<(), StoreUnavailable> {
        if !self.enabled {
            return Ok(());
        }
        match &self.backend {
            Backend::Memory(memory) => {
                let until = tokio::time::Instant::now() + memory.ttl;
                memory.entries.insert(
                    Arc::from(id),
                    Entry {
                        bytes: entry,
                        until,
                    },
                );
                Ok(())
            }
            Backend::Redis { store, ttl_ms } => {
                let cmd = redis::Cmd::pset_ex(redis_key(store, id), entry.as_ref(), *ttl_ms);
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
            Backend::Memory(memory) => Ok(memory
                .entries
                .remove(id)
                .is_some_and(|(_, entry)| entry.until > tokio::time::Instant::now())),
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

    fn memory(cfg: ResponsesConfig) -> ResponseStore {
        ResponseStore::new(&cfg, StateStore::memory())
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_and_delete() {
        let store = memory(ResponsesConfig {
            ttl_s: 10.0,
            ..ResponsesConfig::default()
        });
        store.put("resp_a", Bytes::from_static(b"a")).await.unwrap();
        assert_eq!(
            store.get("resp_a").await.unwrap().as_deref(),
            Some(&b"a"[..])
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(store.get("resp_a").await.unwrap(), None);
        store.put("resp_b", Bytes::from_static(b"b")).await.unwrap();
        assert!(store.delete("resp_b").await.unwrap());
        assert!(!store.delete("resp_b").await.unwrap());
        assert_eq!(store.get("resp_b").await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_bounds_hold() {
        let store = memory(ResponsesConfig {
            max_entries: 10,
            max_bytes: 100_000,
            ..ResponsesConfig::default()
        });
        for i in 0..100 {
            store
                .put(&format!("resp_{i}"), Bytes::from(vec![b'x'; 100]))
                .await
                .unwrap();
        }
        let mut kept = 0;
        for i in 0..100 {
            if store.get(&format!("resp_{i}")).await.unwrap().is_some() {
                kept += 1;
            }
        }
        assert!((1..=10).contains(&kept), "{kept}");
        // The newest answer is the one a client continues: it is there.
        assert!(store.get("resp_99").await.unwrap().is_some());
        let off = memory(ResponsesConfig {
            enabled: false,
            ..ResponsesConfig::default()
        });
        off.put("resp_x", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(off.get("resp_x").await.unwrap(), None);
    }

    #[test]
    fn config_validation_names_the_field() {
        let bad = ResponsesConfig {
            ttl_s: 0.0,
            ..ResponsesConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("responses.ttl_s"));
        assert!(
            serde_json::from_str::<ResponsesConfig>(r#"{"ttl":1}"#).is_err(),
            "unknown fields are refused"
        );
    }
}
