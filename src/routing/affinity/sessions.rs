//! Where sessions were served last (key → instance, bounded, expiring) and the prefix-block index,
//! in process memory and mirrored in Redis.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::config::*;
use super::key::*;

/// Keys served away from their home, remembered so their next request follows their cache. Bounded
/// (least recently used forgotten first) and expiring (`session_ttl_s` after the last use). Long-lived:
/// kept across reloads for the backend of the same name.
#[derive(Debug)]
pub struct SessionTable {
    inner: Mutex<lru::LruCache<u64, (u64, Instant)>>,
    /// `prompt: index`: prefix block hash → the instances (ids, most recent first; 0: none) it was sent to.
    index: Mutex<lru::LruCache<u64, [u64; INDEX_HOLDERS]>>,
}

impl SessionTable {
    pub fn new(capacity: usize) -> SessionTable {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        SessionTable {
            inner: Mutex::new(lru::LruCache::new(capacity)),
            index: Mutex::new(lru::LruCache::new(capacity)),
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, lru::LruCache<u64, [u64; INDEX_HOLDERS]>> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The holders of the longest indexed prefix of `blocks` that reaches into the conversation.
    pub(super) fn longest_prefix(&self, blocks: &PromptBlocks) -> Option<[u64; INDEX_HOLDERS]> {
        let mut index = self.index();
        blocks.hashes[blocks.conversation_from.min(blocks.hashes.len())..]
            .iter()
            .rev()
            .find_map(|hash| index.get(hash).copied())
    }

    /// Notes that `blocks` were sent to instance `id`.
    pub(super) fn index_blocks(&self, blocks: &[u64], id: u64) {
        let mut index = self.index();
        for &hash in blocks {
            let holders = index.get_or_insert_mut(hash, || [0; INDEX_HOLDERS]);
            let at = holders
                .iter()
                .position(|&h| h == id)
                .unwrap_or(INDEX_HOLDERS - 1);
            holders.copy_within(0..at, 1);
            holders[0] = id;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<u64, (u64, Instant)>> {
        // A panic while holding this lock cannot leave the map invalid.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The instance id `key` was last served by, when it was moved off its home within `ttl`.
    pub fn get(&self, key: u64, now: Instant, ttl: Duration) -> Option<u64> {
        let mut map = self.lock();
        match map.get_mut(&key) {
            Some((id, seen)) if now.saturating_duration_since(*seen) <= ttl => {
                *seen = now;
                Some(*id)
            }
            Some(_) => {
                map.pop(&key);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, key: u64, id: u64, now: Instant) {
        self.lock().put(key, (id, now));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn resize(&self, capacity: usize) {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        self.lock().resize(capacity);
        self.index().resize(capacity);
    }
}

/// The session tables of every backend, by name; lives beside the instance registry so a reload keeps
/// them.
#[derive(Debug, Default)]
pub(crate) struct SessionTables {
    tables: Mutex<HashMap<String, Arc<SessionTable>>>,
}

impl SessionTables {
    pub(crate) fn get_or_create(&self, backend: &str, capacity: usize) -> Arc<SessionTable> {
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(table) = tables.get(backend) {
            table.resize(capacity);
            return Arc::clone(table);
        }
        let table = Arc::new(SessionTable::new(capacity));
        tables.insert(backend.to_owned(), Arc::clone(&table));
        table
    }

    /// Forgets the tables of backends no longer configured (or no longer using affinity).
    pub(crate) fn retain(&self, live: &[&str]) {
        self.tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|name, _| live.contains(&name.as_str()));
    }
}
