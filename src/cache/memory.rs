//! The in-memory response cache: an exact LRU within `max_entries` and `max_bytes`, bodies kept in
//! shared blocks, expiry on tokio's clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::{CacheKey, CachedResponse, ENTRY_OVERHEAD, WireProtocol};

/// The in-memory cache: an exact LRU within both bounds (`max_entries`, `max_bytes`) — a read moves an
/// entry to the front, an insert that exceeds a bound evicts from the back until both hold. One lock
/// guards the list and the blocks the bodies are kept in; every operation under it is O(1) (but the
/// periodic sweep of expired entries).
pub(super) struct Memory {
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
    pub(super) fn new(max_entries: u64, max_bytes: u64, ttl: Duration) -> Memory {
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

    pub(super) fn get(&self, key: &CacheKey) -> Option<CachedResponse> {
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

    pub(super) fn insert(&self, key: CacheKey, response: CachedResponse) {
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
    pub(super) fn live(&self) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::{enabled, response, with_ttl};
    use crate::cache::{Backend, ResponseCache};
    use crate::store::StateStore;

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
}
