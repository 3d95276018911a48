//! The response cache shared through Redis: entries under `<key_prefix>:cache:<hex key>` with Redis
//! TTLs, their value layout, and the bounded SCAN that counts them for `/stats`.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{COUNT_TIMEOUT, CacheKey, CachedResponse, SizeSource, WireProtocol};
use crate::store::{RedisStore, StoreUnavailable};

/// Keys Redis examines per SCAN call: large enough for few round trips, small enough that one call
/// never blocks Redis noticeably.
const SCAN_COUNT: u64 = 1000;

/// Entries in Redis, shared by every gateway with the same key prefix.
pub(super) struct RedisCache {
    store: RedisStore,
    ttl_ms: u64,
    /// Entry counts: one at a time, and the last one kept for when Redis does not answer.
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    /// Held while a SCAN runs, so concurrent `/stats` calls share one count instead of each
    /// scanning Redis.
    running: tokio::sync::Mutex<()>,
    /// The last successful count and when it finished. A std mutex: never held across an `.await`.
    last: Mutex<Option<(u64, Instant)>>,
}

impl RedisCache {
    pub(super) fn new(store: RedisStore, ttl: Duration) -> RedisCache {
        RedisCache {
            store,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            counts: Counts::default(),
        }
    }

    /// The entry under `key`, if Redis has it and answers; trouble is a miss.
    pub(super) async fn get(&self, key: &CacheKey) -> Option<CachedResponse> {
        let cmd = redis::Cmd::get(redis_key(&self.store, key));
        match self.store.query::<Option<Vec<u8>>>(&cmd).await {
            Ok(Some(raw)) => decode(Bytes::from(raw)),
            _ => None,
        }
    }

    /// Stores `value` under `key` with the TTL.
    pub(super) async fn put(&self, key: &CacheKey, value: &CachedResponse) {
        let cmd = redis::Cmd::pset_ex(redis_key(&self.store, key), encode(value), self.ttl_ms);
        // A failed put just means a later miss; outages are logged by the store.
        let _ = self.store.query::<()>(&cmd).await;
    }

    /// The number of entries under this prefix, bounded by [`COUNT_TIMEOUT`] (see
    /// [`ResponseCache::stats`](super::ResponseCache::stats)).
    pub(super) async fn size(&self) -> (Option<u64>, SizeSource, Option<u64>) {
        let store = &self.store;
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
    use crate::cache::tests::{enabled, response};
    use crate::cache::{CacheConfig, ResponseCache};
    use crate::store::{FailMode, StateStore, test_redis::TestRedis};

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
