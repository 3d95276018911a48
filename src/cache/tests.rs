//! Tests of the response cache through its front (`ResponseCache`), and the fixtures the memory and
//! Redis tests share.

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
pub(super) fn response(body: &str) -> CachedResponse {
    CachedResponse {
        body: Bytes::from(body.to_owned()),
        backend: "local".to_owned(),
        protocol: WireProtocol::OpenAi,
    }
}

/// An in-memory cache with this TTL and entry bound (bytes are no constraint).
pub(super) fn with_ttl(ttl_s: f64, max_entries: u64) -> ResponseCache {
    let cfg = CacheConfig {
        ttl_s,
        ..enabled(max_entries, 1 << 24)
    };
    ResponseCache::new(&cfg, StateStore::memory())
}

pub(super) fn enabled(max_entries: u64, max_bytes: u64) -> CacheConfig {
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
