//! Tests of the limiter: algorithms, scopes, quotas and reconciliation in memory (with an injected
//! clock) and shared through a real Redis (3 limiters standing in for 3 replicas).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use super::headers::{Tightest, go_duration};
use super::limiter::{ip_text, truncate};
use super::*;
use crate::auth::{KeyConfig, KeyStore};
use crate::limit_rules::{Algorithm, LimitRule, RateLimitConfig};
use crate::store::test_redis::TestRedis;
use crate::store::{FailMode, RedisStore, StateStore};

/// 2026-11-22T00:00:00Z, a window boundary for every window that divides a day.
const T0: u64 = 1_795_305_600_000_000;
const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

fn rate(yaml: &str) -> RateLimitConfig {
    serde_json::from_str(yaml).unwrap()
}

fn keys(json: &str) -> Vec<KeyConfig> {
    serde_json::from_str(json).unwrap()
}

struct Fixture {
    limiter: Limiter,
    clock: Arc<ManualClock>,
    keys: KeyStore,
}

fn fixture(cfg: &str, key_json: &str) -> Fixture {
    let key_cfg = keys(key_json);
    let clock = Arc::new(ManualClock::new(T0));
    let rules = LimitRules::new(&rate(cfg), &key_cfg).unwrap();
    let limiter = Limiter::with_clock(rules, StateStore::memory(), clock.clone());
    Fixture {
        limiter,
        clock,
        keys: KeyStore::new(&key_cfg).unwrap(),
    }
}

fn request<'a>(principal: Option<&'a Principal>, tokens: u64) -> LimitRequest<'a> {
    LimitRequest {
        ip: IP,
        key: principal,
        model: "m",
        estimated_tokens: tokens,
    }
}

fn header<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.to_str().ok())
}

#[tokio::test]
async fn sliding_window_per_ip_5_per_minute() {
    let f = fixture(r#"{"per_ip": {"requests": 5, "window_s": 60}}"#, "[]");
    for i in 0..5u64 {
        let adm = f.limiter.admit(&request(None, 0)).await.unwrap();
        assert_eq!(
            header(&adm.headers.to_vec(), "x-ratelimit-limit-requests"),
            Some("5")
        );
        assert_eq!(
            header(&adm.headers.to_vec(), "x-ratelimit-remaining-requests"),
            Some(&*(4 - i).to_string())
        );
        assert_eq!(
            header(&adm.headers.to_vec(), "x-ratelimit-reset-requests"),
            Some("1m0s")
        );
    }
    let rej = f.limiter.admit(&request(None, 0)).await.unwrap_err();
    assert_eq!((rej.kind, rej.scope), (RejectKind::RateLimited, "ip"));
    assert_eq!(rej.kind.status(), http::StatusCode::TOO_MANY_REQUESTS);
    // 5 admitted now: the next fits once they have left the trailing minute (exact window, issue 23).
    assert_eq!(rej.retry_after, Duration::from_secs(60));
    assert_eq!(header(&rej.headers(), "retry-after"), Some("60"));
    assert_eq!(
        header(&rej.headers(), "x-ratelimit-remaining-requests"),
        Some("0")
    );
    assert!(
        rej.message.contains("ip 10.0.0.1") && rej.message.contains("5 requests per 60s"),
        "{}",
        rej.message
    );
    // Another IP is not affected.
    let other = LimitRequest {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..request(None, 0)
    };
    assert!(f.limiter.admit(&other).await.is_ok());
    f.clock.advance(Duration::from_secs(59));
    assert!(f.limiter.admit(&request(None, 0)).await.is_err());
    // A minute after the burst the whole limit is back (seed 000: request 7 after a minute's wait).
    f.clock.advance(Duration::from_secs(1));
    for _ in 0..5 {
        assert!(f.limiter.admit(&request(None, 0)).await.is_ok());
    }
    assert!(f.limiter.admit(&request(None, 0)).await.is_err());
}

#[tokio::test]
async fn token_bucket_rate_5_per_s_burst_10() {
    let f = fixture(
        r#"{"global": {"requests": 5, "window_s": 1, "burst": 10, "algorithm": "token_bucket"}}"#,
        "[]",
    );
    for _ in 0..10 {
        f.limiter.admit(&request(None, 0)).await.unwrap();
    }
    let rej = f.limiter.admit(&request(None, 0)).await.unwrap_err();
    assert_eq!(rej.scope, "global");
    assert_eq!(rej.retry_after, Duration::from_millis(200));
    assert_eq!(header(&rej.headers(), "retry-after"), Some("1"));
    f.clock.advance(Duration::from_millis(400));
    assert!(f.limiter.admit(&request(None, 0)).await.is_ok());
    let adm = f.limiter.admit(&request(None, 0)).await.unwrap();
    assert_eq!(
        header(&adm.headers.to_vec(), "x-ratelimit-limit-requests"),
        Some("10")
    );
    assert_eq!(
        header(&adm.headers.to_vec(), "x-ratelimit-remaining-requests"),
        Some("0")
    );
    assert_eq!(
        header(&adm.headers.to_vec(), "x-ratelimit-reset-requests"),
        Some("2s")
    );
    assert!(f.limiter.admit(&request(None, 0)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_admits_never_exceed_the_limit() {
    let f = fixture(
        r#"{"per_key": {"requests": 100, "window_s": 60}}"#,
        r#"[{"name": "a", "key": "ka"}]"#,
    );
    let limiter = Arc::new(f.limiter);
    let principal = f.keys.by_name("a").unwrap();
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let limiter = Arc::clone(&limiter);
            let principal = Arc::clone(&principal);
            tokio::spawn(async move { limiter.admit(&request(Some(&principal), 0)).await.is_ok() })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 100);
}

#[tokio::test]
async fn rejected_request_consumes_no_other_bucket() {
    let f = fixture(
        r#"{"global": {"requests": 3}, "per_key": {"requests": 1}}"#,
        r#"[{"name": "a", "key": "ka"}, {"name": "b", "key": "kb"}]"#,
    );
    let a = f.keys.by_name("a").unwrap();
    let b = f.keys.by_name("b").unwrap();
    f.limiter.admit(&request(Some(&a), 0)).await.unwrap();
    for _ in 0..5 {
        let rej = f.limiter.admit(&request(Some(&a), 0)).await.unwrap_err();
        assert_eq!(rej.scope, "key");
        assert_eq!(rej.key_name.as_deref(), Some("a"));
    }
    // The 5 rejections did not touch the global bucket: 2 more fit.
    f.limiter.admit(&request(Some(&b), 0)).await.unwrap();
    f.limiter.admit(&request(None, 0)).await.unwrap();
    assert_eq!(
        f.limiter.admit(&request(None, 0)).await.unwrap_err().scope,
        "global"
    );
}

#[tokio::test]
async fn key_override_and_per_key_model() {
    let f = fixture(
        r#"{"per_key": {"requests": 1}, "per_key_model": {"requests": 2}}"#,
        r#"[{"name": "a", "key": "ka", "rate_limit": {"requests": 10}}, {"name": "b", "key": "kb"}]"#,
    );
    let a = f.keys.by_name("a").unwrap();
    let b = f.keys.by_name("b").unwrap();
    let on = |p, model| LimitRequest {
        model,
        ..request(Some(p), 0)
    };
    f.limiter.admit(&on(&a, "x")).await.unwrap();
    f.limiter.admit(&on(&a, "x")).await.unwrap();
    let rej = f.limiter.admit(&on(&a, "x")).await.unwrap_err();
    assert_eq!(rej.scope, "key_model");
    assert!(rej.message.contains("model 'x'"), "{}", rej.message);
    f.limiter.admit(&on(&a, "y")).await.unwrap();
    f.limiter.admit(&on(&b, "x")).await.unwrap();
    assert_eq!(
        f.limiter.admit(&on(&b, "y")).await.unwrap_err().scope,
        "key"
    );
}

#[tokio::test]
async fn token_limit_charges_estimate_and_reconciles() {
    let f = fixture(
        r#"{"per_key": {"tokens": 1000, "window_s": 60}}"#,
        r#"[{"name": "a", "key": "ka"}]"#,
    );
    let a = f.keys.by_name("a").unwrap();
    let adm = f.limiter.admit(&request(Some(&a), 600)).await.unwrap();
    assert_eq!(
        header(&adm.headers.to_vec(), "x-ratelimit-remaining-tokens"),
        Some("400")
    );
    assert_eq!(
        header(&adm.headers.to_vec(), "x-ratelimit-limit-tokens"),
        Some("1000")
    );
    assert!(header(&adm.headers.to_vec(), "x-ratelimit-limit-requests").is_none());
    assert!(f.limiter.admit(&request(Some(&a), 500)).await.is_err());
    // Actual usage was 100: 500 refunded.
    f.limiter.reconcile(&adm, 100).await;
    let adm2 = f.limiter.admit(&request(Some(&a), 500)).await.unwrap();
    assert_eq!(
        header(&adm2.headers.to_vec(), "x-ratelimit-remaining-tokens"),
        Some("400")
    );
    // Actual usage above the estimate is charged afterwards.
    f.limiter.reconcile(&adm2, 900).await;
    let rej = f.limiter.admit(&request(Some(&a), 1)).await.unwrap_err();
    assert_eq!(
        header(&rej.headers(), "x-ratelimit-remaining-tokens"),
        Some("0")
    );
    assert!(
        rej.message.contains("1000 tokens per 60s"),
        "{}",
        rej.message
    );
}

#[tokio::test]
async fn too_large_request_names_the_limit() {
    let f = fixture(r#"{"per_ip": {"tokens": 100}}"#, "[]");
    let rej = f.limiter.admit(&request(None, 101)).await.unwrap_err();
    assert_eq!(rej.kind, RejectKind::RateLimited);
    assert!(
        rej.message.contains("101 tokens") && rej.message.contains("ip 10.0.0.1"),
        "{}",
        rej.message
    );
    // The rejection still carries the limit's headers, and probing them charged nothing.
    assert_eq!(
        header(&rej.headers(), "x-ratelimit-limit-tokens"),
        Some("100")
    );
    assert_eq!(
        header(&rej.headers(), "x-ratelimit-remaining-tokens"),
        Some("100")
    );
    assert!(f.limiter.admit(&request(None, 100)).await.is_ok());
}

#[tokio::test]
async fn calendar_quota_until_next_day_and_usage() {
    let f = fixture(
        "{}",
        r#"[{"name": "a", "key": "ka", "quota": {"requests": 3, "tokens": 100, "period": "day"}}]"#,
    );
    let a = f.keys.by_name("a").unwrap();
    f.clock.advance(Duration::from_secs(23 * 3600));
    for _ in 0..3 {
        f.limiter.admit(&request(Some(&a), 10)).await.unwrap();
    }
    let rej = f.limiter.admit(&request(Some(&a), 10)).await.unwrap_err();
    assert_eq!((rej.kind, rej.scope), (RejectKind::QuotaExceeded, "quota"));
    assert_eq!(rej.kind.code(), "quota_exceeded");
    assert_eq!(rej.retry_after, Duration::from_secs(3600));
    assert!(
        rej.message.contains("3 requests per day"),
        "{}",
        rej.message
    );
    let usage = f.limiter.usage("a").await;
    assert_eq!(usage.period, Some("day"));
    assert_eq!(
        usage.requests,
        Some(UsageCounter {
            used: 3,
            limit: 3,
            remaining: 0,
            resets_in_s: 3600.0
        })
    );
    assert_eq!(usage.tokens.map(|t| t.used), Some(30));
    f.clock.advance(Duration::from_secs(3600));
    f.limiter.admit(&request(Some(&a), 10)).await.unwrap();
    assert_eq!(f.limiter.usage("a").await.requests.map(|r| r.used), Some(1));
    let json = serde_json::to_value(f.limiter.usage("a").await).unwrap();
    assert_eq!(json["requests"]["remaining"], 2);
    assert_eq!(f.limiter.usage("nobody").await.requests, None);
}

#[tokio::test]
async fn rolling_quota() {
    let f = fixture(
        "{}",
        r#"[{"name": "a", "key": "ka", "quota": {"requests": 2, "window_s": 3600}}]"#,
    );
    let a = f.keys.by_name("a").unwrap();
    f.limiter.admit(&request(Some(&a), 0)).await.unwrap();
    f.limiter.admit(&request(Some(&a), 0)).await.unwrap();
    let rej = f.limiter.admit(&request(Some(&a), 0)).await.unwrap_err();
    assert_eq!(rej.kind, RejectKind::QuotaExceeded);
    assert_eq!(f.limiter.usage("a").await.period, Some("rolling"));
    f.clock.advance(rej.retry_after);
    f.limiter.admit(&request(Some(&a), 0)).await.unwrap();
}

#[tokio::test]
async fn state_survives_a_new_limiter_on_the_same_store() {
    let store = StateStore::memory();
    let clock = Arc::new(ManualClock::new(T0));
    let cfg = rate(r#"{"per_ip": {"requests": 1}}"#);
    let first = Limiter::with_clock(
        LimitRules::new(&cfg, &[]).unwrap(),
        store.clone(),
        clock.clone(),
    );
    first.admit(&request(None, 0)).await.unwrap();
    let reloaded = Limiter::with_clock(LimitRules::new(&cfg, &[]).unwrap(), store, clock);
    assert!(reloaded.admit(&request(None, 0)).await.is_err());
}

#[test]
fn invalid_rules_name_their_path() {
    let err = rate(r#"{"global": {"window_s": 1}}"#)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("rate_limit.global"), "{err}");
    assert!(rate(r#"{"per_ip": {"requests": 5}}"#).validate().is_ok());
    assert_eq!(truncate("héllo", 2), "h");
    let cases = [
        (
            r#"{"per_ip": {"window_s": 60}}"#,
            "rate_limit.per_ip: set requests",
        ),
        (
            r#"{"global": {"requests": 1, "window_s": 0}}"#,
            "rate_limit.global.window_s",
        ),
        (
            r#"{"per_key": {"requests": 1, "burst": 5}}"#,
            "rate_limit.per_key.burst applies only",
        ),
        (
            r#"{"per_key_model": {"requests": 0}}"#,
            "rate_limit.per_key_model",
        ),
    ];
    for (json, expected) in cases {
        let err = LimitRules::new(&rate(json), &[]).unwrap_err().to_string();
        assert!(err.contains(expected), "{json}: {err}");
    }
    let k = keys(r#"[{"name": "a", "key": "k", "quota": {"requests": 1}}]"#);
    let err = LimitRules::new(&RateLimitConfig::default(), &k)
        .unwrap_err()
        .to_string();
    assert!(err.contains("keys[0] 'a'.quota"), "{err}");
    let k = keys(
        r#"[{"name": "a", "key": "k", "quota": {"requests": 1, "period": "day", "window_s": 5}}]"#,
    );
    assert!(LimitRules::new(&RateLimitConfig::default(), &k).is_err());
    assert!(serde_json::from_str::<RateLimitConfig>(r#"{"per_user": {}}"#).is_err());
    assert!(serde_json::from_str::<LimitRule>(r#"{"requests": 1, "algorithm": "leaky"}"#).is_err());
    let rule: LimitRule = serde_json::from_str(r#"{"requests": 1}"#).unwrap();
    assert_eq!(
        (rule.window_s, rule.algorithm, rule.burst),
        (60.0, Algorithm::SlidingWindow, None)
    );
    assert!(
        Limiter::new(
            LimitRules::new(&RateLimitConfig::default(), &[]).unwrap(),
            StateStore::memory()
        )
        .is_noop()
    );
}

/// The header lines the HTTP/1.1 server writes are the header map's pairs, in order, and nothing for a
/// unit without a limit.
#[test]
fn rate_header_lines_are_the_pairs() {
    let both = RateHeaders {
        units: [
            Some(Tightest {
                limit: 100,
                remaining: 0,
                reset_us: 1_500_000,
            }),
            Some(Tightest {
                limit: u64::MAX,
                remaining: 12_345,
                reset_us: 3_723_000_000,
            }),
        ],
    };
    let tokens_only = RateHeaders {
        units: [None, both.units[1]],
    };
    for headers in [both, tokens_only, RateHeaders::default()] {
        let mut lines = Vec::new();
        headers.write_fields(&mut lines);
        let expected: String = headers
            .pairs()
            .map(|(name, value)| format!("{name}: {}\r\n", value.to_str().unwrap()))
            .collect();
        assert_eq!(String::from_utf8(lines).unwrap(), expected);
        assert_eq!(headers.is_empty(), expected.is_empty());
    }
    let mut lines = Vec::new();
    both.write_fields(&mut lines);
    assert!(
        String::from_utf8(lines)
            .unwrap()
            .starts_with("x-ratelimit-limit-requests: 100\r\nx-ratelimit-remaining-requests: 0\r\nx-ratelimit-reset-requests: 1.5s\r\n")
    );
}

#[test]
fn reset_durations_look_like_openai() {
    assert_eq!(go_duration(0), "0ms");
    assert_eq!(go_duration(19_500), "20ms");
    assert_eq!(go_duration(1_000_000), "1s");
    assert_eq!(go_duration(1_500_000), "1.5s");
    assert_eq!(go_duration(360_000_000), "6m0s");
    assert_eq!(go_duration(3_723_000_000), "1h2m3s");
    assert_eq!(go_duration(60_250_000), "1m0.25s");
    assert_eq!(go_duration(3_600_007_000), "1h0m0.007s");
    assert_eq!(go_duration(999_999), "1s");
    assert_eq!(go_duration(61_010_000), "1m1.01s");
}

#[test]
fn state_keys_spell_addresses_as_display_does() {
    for ip in [
        "0.0.0.0",
        "127.0.0.1",
        "10.20.255.9",
        "255.255.255.255",
        "::1",
        "2001:db8::ff00:42:8329",
        "::ffff:1.2.3.4",
    ] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        assert_eq!(ip_text(ip), ip.to_string());
    }
}

// ---- shared through Redis ----

fn redis_limiter(
    server: &TestRedis,
    prefix: &str,
    cfg: &str,
    key_cfg: &[KeyConfig],
    fail: FailMode,
) -> Limiter {
    let store = StateStore::Redis(RedisStore::new(
        &server.url(),
        prefix,
        fail,
        Duration::from_millis(50),
    ));
    Limiter::new(LimitRules::new(&rate(cfg), key_cfg).unwrap(), store)
}

/// 300 concurrent requests spread over 3 limiters (3 replicas) sharing one Redis.
async fn admitted_across_replicas(
    limiters: Vec<Limiter>,
    principal: Arc<Principal>,
    tokens: u64,
) -> usize {
    let limiters: Vec<Arc<Limiter>> = limiters.into_iter().map(Arc::new).collect();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let limiter = Arc::clone(&limiters[i % 3]);
            let principal = Arc::clone(&principal);
            tokio::spawn(async move {
                limiter
                    .admit(&request(Some(&principal), tokens))
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_shared_request_limit_across_three_replicas() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let key_cfg =
        keys(r#"[{"name": "a", "key": "ka", "rate_limit": {"requests": 100, "window_s": 60}}]"#);
    let principal = KeyStore::new(&key_cfg).unwrap().by_name("a").unwrap();
    let limiters = (0..3)
        .map(|_| redis_limiter(&server, "r1", "{}", &key_cfg, FailMode::FailClosed))
        .collect();
    assert_eq!(admitted_across_replicas(limiters, principal, 0).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_shared_token_limit_across_three_replicas() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let key_cfg =
        keys(r#"[{"name": "a", "key": "ka", "rate_limit": {"tokens": 1000, "window_s": 60}}]"#);
    let principal = KeyStore::new(&key_cfg).unwrap().by_name("a").unwrap();
    let limiters = (0..3)
        .map(|_| redis_limiter(&server, "r2", "{}", &key_cfg, FailMode::FailClosed))
        .collect();
    assert_eq!(admitted_across_replicas(limiters, principal, 10).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_token_bucket_across_replicas() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let key_cfg = keys(r#"[{"name": "a", "key": "ka"}]"#);
    let principal = KeyStore::new(&key_cfg).unwrap().by_name("a").unwrap();
    let cfg = r#"{"per_key": {"requests": 100, "window_s": 3600, "algorithm": "token_bucket"}}"#;
    let limiters = (0..3)
        .map(|_| redis_limiter(&server, "r3", cfg, &key_cfg, FailMode::FailClosed))
        .collect();
    assert_eq!(admitted_across_replicas(limiters, principal, 0).await, 100);
}

#[tokio::test]
async fn redis_all_or_nothing_reconcile_quota_and_usage() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let key_cfg = keys(
        r#"[{"name": "a", "key": "ka", "rate_limit": {"tokens": 1000, "window_s": 60},
             "quota": {"requests": 3, "period": "month"}}]"#,
    );
    let principal = KeyStore::new(&key_cfg).unwrap().by_name("a").unwrap();
    let limiter = redis_limiter(
        &server,
        "r4",
        r#"{"global": {"requests": 1000}}"#,
        &key_cfg,
        FailMode::FailClosed,
    );
    let adm = limiter
        .admit(&request(Some(&principal), 900))
        .await
        .unwrap();
    assert_eq!(
        header(&adm.headers.to_vec(), "x-ratelimit-remaining-tokens"),
        Some("100")
    );
    assert_eq!(
        header(&adm.headers.to_vec(), "x-ratelimit-remaining-requests"),
        Some("999")
    );
    let rej = limiter
        .admit(&request(Some(&principal), 200))
        .await
        .unwrap_err();
    assert_eq!(rej.scope, "key");
    // 900 of 1000 used in the current window: room for 200 comes 1/9 into the next window.
    let wait = rej.retry_after.as_secs_f64();
    assert!((6.6..=66.7).contains(&wait), "{wait}");
    let header_s: f64 = header(&rej.headers(), "retry-after")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(header_s, wait.ceil());
    // The rejected request charged neither the global bucket nor the quota.
    assert_eq!(limiter.usage("a").await.requests.map(|r| r.used), Some(1));
    limiter.reconcile(&adm, 100).await;
    let adm2 = limiter
        .admit(&request(Some(&principal), 200))
        .await
        .unwrap();
    assert_eq!(
        header(&adm2.headers.to_vec(), "x-ratelimit-remaining-tokens"),
        Some("700")
    );
    assert_eq!(
        header(&adm2.headers.to_vec(), "x-ratelimit-remaining-requests"),
        Some("998")
    );
    limiter.admit(&request(Some(&principal), 0)).await.unwrap();
    let rej = limiter
        .admit(&request(Some(&principal), 0))
        .await
        .unwrap_err();
    assert_eq!(rej.kind, RejectKind::QuotaExceeded);
    let usage = limiter.usage("a").await;
    assert_eq!(usage.period, Some("month"));
    assert_eq!(usage.requests.map(|r| (r.used, r.remaining)), Some((3, 0)));
    assert!(!usage.unavailable);
}

#[tokio::test]
async fn redis_outage_follows_fail_mode_and_recovers() {
    let Some(mut server) = TestRedis::start() else {
        return;
    };
    let key_cfg = keys(
        r#"[{"name": "a", "key": "ka", "rate_limit": {"requests": 2, "window_s": 60},
             "quota": {"requests": 1000, "period": "day"}}]"#,
    );
    let principal = KeyStore::new(&key_cfg).unwrap().by_name("a").unwrap();
    let open = redis_limiter(&server, "r5", "{}", &key_cfg, FailMode::FailOpen);
    let closed = redis_limiter(&server, "r5", "{}", &key_cfg, FailMode::FailClosed);
    open.admit(&request(Some(&principal), 0)).await.unwrap();
    closed.admit(&request(Some(&principal), 0)).await.unwrap();
    assert!(open.admit(&request(Some(&principal), 0)).await.is_err());

    server.kill();
    for _ in 0..5 {
        assert!(
            open.admit(&request(Some(&principal), 0)).await.is_ok(),
            "fail_open admits during an outage"
        );
        let rej = closed
            .admit(&request(Some(&principal), 0))
            .await
            .unwrap_err();
        assert_eq!((rej.kind, rej.scope), (RejectKind::Unavailable, "state"));
        assert_eq!(rej.kind.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(open.usage("a").await.unavailable);

    server.restart();
    // Fresh server, empty state: once reconnected, both enforce the shared limit of 2 again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while closed.admit(&request(Some(&principal), 0)).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "limiter did not recover after redis restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut open_results = Vec::new();
    for _ in 0..3 {
        open_results.push(open.admit(&request(Some(&principal), 0)).await.is_ok());
    }
    assert_eq!(
        open_results,
        [true, false, false],
        "fail_open limiter enforces limits again"
    );
}

#[tokio::test]
async fn only_limits_that_count_tokens_need_an_estimate() {
    let requests_only = fixture(
        r#"{"per_ip": {"requests": 5, "window_s": 60}}"#,
        r#"[{"name": "a", "key": "ka", "quota": {"requests": 3, "period": "day"}}]"#,
    );
    assert!(!requests_only.limiter.counts_tokens());
    let admission = requests_only
        .limiter
        .admit(&request(None, 0))
        .await
        .unwrap();
    assert!(!admission.counts_tokens());
    for (cfg, key_json) in [
        (r#"{"global": {"tokens": 1000, "window_s": 60}}"#, "[]"),
        (
            "{}",
            r#"[{"name": "a", "key": "ka", "quota": {"tokens": 100, "period": "day"}}]"#,
        ),
        (
            "{}",
            r#"[{"name": "a", "key": "ka", "rate_limit": {"tokens": 100, "window_s": 60}}]"#,
        ),
    ] {
        assert!(
            fixture(cfg, key_json).limiter.counts_tokens(),
            "{cfg} {key_json}"
        );
    }
    let tokens = fixture(r#"{"global": {"tokens": 1000, "window_s": 60}}"#, "[]");
    let admission = tokens.limiter.admit(&request(None, 10)).await.unwrap();
    assert!(admission.counts_tokens());
}
