//! Shared state through a real `redis-server`: three in-process gateways act as one for per-key
//! request and token limits and for the response cache; an outage follows `state.on_unavailable`
//! and the gateways recover by themselves. Skipped (with a note) when redis-server is missing and
//! `REQUIRE_REDIS` is unset.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::mock::Mock;
use crate::support::redis::TestRedis;
use crate::support::{Gateway, client};

fn config(mock: &Mock, redis: &TestRedis, prefix: &str, extra: &str) -> String {
    format!(
        "default_backend: vllm\nbackends:\n  vllm: {{ type: openai, url: '{}' }}\nstate: {{ redis_url: '{}', key_prefix: {prefix} }}\n{extra}",
        mock.base(),
        redis.url()
    )
}

async fn replicas(yaml: &str) -> Vec<Gateway> {
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(Gateway::start(yaml).await);
    }
    gateways
}

async fn chat(gateway: &Gateway, text: &str, key: Option<&str>) -> (u16, http::HeaderMap, Value) {
    let mut request = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": text}]}));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    crate::support::respond(request).await
}

/// 300 concurrent requests spread over the replicas: status counts.
async fn burst(gateways: &[Gateway], text: &str, key: &str) -> (usize, usize, Vec<u16>) {
    let responses = futures_util::future::join_all(
        (0..300).map(|i| chat(&gateways[i % gateways.len()], text, Some(key))),
    )
    .await;
    let statuses: Vec<u16> = responses.iter().map(|(s, _, _)| *s).collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    (ok, limited, statuses)
}

#[tokio::test]
async fn three_replicas_share_a_per_key_request_limit() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let mock = Mock::start().await;
    let keys = "keys:\n  - { name: shared, key: sk-shared, rate_limit: { requests: 100, window_s: 60 } }\n";
    let gateways = replicas(&config(&mock, &redis, "itreq", keys)).await;
    let (ok, limited, statuses) = burst(&gateways, "hi", "sk-shared").await;
    assert_eq!(ok, 100, "admitted across replicas; statuses {statuses:?}");
    assert_eq!(limited, 200, "statuses {statuses:?}");
    assert_eq!(mock.requests().len(), 100);
    let (status, headers, body) = chat(&gateways[0], "hi", Some("sk-shared")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
}

#[tokio::test]
async fn three_replicas_share_a_per_key_token_limit() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    // A prompt estimated at exactly 7 tokens: the mock reports 3 + 4 = 7, so reconciliation
    // changes nothing and the count is exact while requests are in flight.
    let mut text = String::from("alpha");
    for word in [
        "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota",
    ] {
        if ai_gateway::tokens::count(&text) >= 7 {
            break;
        }
        text.push(' ');
        text.push_str(word);
    }
    assert_eq!(ai_gateway::tokens::count(&text), 7, "{text}");
    let mock = Mock::start().await;
    let keys =
        "keys:\n  - { name: shared, key: sk-shared, rate_limit: { tokens: 700, window_s: 60 } }\n";
    let gateways = replicas(&config(&mock, &redis, "ittok", keys)).await;
    let (ok, limited, statuses) = burst(&gateways, &text, "sk-shared").await;
    assert_eq!(ok, 100, "statuses {statuses:?}");
    assert_eq!(limited, 200, "statuses {statuses:?}");
    assert_eq!(mock.requests().len(), 100);
}

#[tokio::test]
async fn a_cache_entry_written_through_one_replica_is_a_hit_on_another() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let mock = Mock::start().await;
    let gateways = replicas(&config(
        &mock,
        &redis,
        "itcache",
        "cache: { enabled: true, ttl_s: 60 }\n",
    ))
    .await;
    let (status, headers, first) = chat(&gateways[0], "shared answer", None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(headers["x-cache"], "MISS");
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.keys("itcache").is_empty() {
        assert!(Instant::now() < deadline, "no cache entry reached redis");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for gateway in &gateways[1..] {
        let (status, headers, body) = chat(gateway, "shared answer", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-cache"], "HIT");
        assert_eq!(body["cached"], true, "{body}");
        assert_eq!(body["choices"], first["choices"]);
    }
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn stats_on_one_gateway_counts_the_cache_entries_another_stored_in_redis() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let mock = Mock::start().await;
    let cache = "cache: { enabled: true, ttl_s: 60 }\n";
    let writer = Gateway::start(&config(&mock, &redis, "itsize", cache)).await;
    let reader = Gateway::start(&config(&mock, &redis, "itsize", cache)).await;
    // Same Redis, another prefix: its entry is not this gateway's.
    let neighbour = Gateway::start(&config(&mock, &redis, "itsizeother", cache)).await;
    let before = reader.get_json("/stats").await;
    assert_eq!(before["cache_size"], 0, "{before}");

    const N: usize = 7;
    for i in 0..N {
        let (status, headers, body) = chat(&writer, &format!("entry {i}"), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-cache"], "MISS");
    }
    let (status, _, body) = chat(&neighbour, "entry 0", None).await;
    assert_eq!(status, 200, "{body}");
    // Entries are written in the background: wait until all of them reached Redis.
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.keys("itsize:cache:").len() < N || redis.keys("itsizeother:cache:").is_empty() {
        assert!(
            Instant::now() < deadline,
            "cache entries never reached redis: {:?}",
            redis.keys("itsize")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let stats = reader.get_json("/stats").await;
    assert_eq!(stats["cache_size"], N, "{stats:#}");
    assert_eq!(stats["cache"]["size"], N, "{stats:#}");
    assert_eq!(stats["cache"]["size_source"], "redis", "{stats:#}");
    assert_eq!(stats["cache"]["shared"], true, "{stats:#}");
    // The reader served nothing itself: the number can only have come from Redis.
    assert_eq!(
        (stats["hits"].clone(), stats["misses"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(mock.requests().len(), N + 1);
}

#[tokio::test]
async fn redis_outage_follows_the_fail_mode_and_recovers() {
    let Some(mut redis) = TestRedis::start() else {
        return;
    };
    let mock = Mock::start().await;
    let limit = "rate_limit:\n  per_ip: { requests: 1000, window_s: 60 }\n";
    let open = Gateway::start(&config(&mock, &redis, "itopen", limit)).await;
    let closed_yaml = config(&mock, &redis, "itclosed", limit).replace(
        "key_prefix: itclosed }",
        "key_prefix: itclosed, on_unavailable: fail_closed }",
    );
    let closed = Gateway::start(&closed_yaml).await;
    for gateway in [&open, &closed] {
        let (status, _, body) = chat(gateway, "hi", None).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(!redis.keys("itclosed").is_empty(), "limits live in redis");

    redis.kill();
    let (status, _, body) = chat(&open, "hi", None).await;
    assert_eq!(status, 200, "fail_open admits while redis is down: {body}");
    let (status, _, body) = chat(&closed, "hi", None).await;
    assert_eq!(
        status, 503,
        "fail_closed refuses while redis is down: {body}"
    );
    assert_eq!(body["error"]["type"], "server_error", "{body}");

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body) = chat(&closed, "hi", None).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "fail_closed never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _, body) = chat(&open, "hi", None).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while redis.keys("itopen").is_empty() {
        let (status, _, body) = chat(&open, "hi", None).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "fail_open gateway never went back to redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!redis.keys("itclosed").is_empty());
}

#[tokio::test]
async fn three_gateway_processes_share_a_per_key_request_limit() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    // A long `header_timeout_s`: see `limits::concurrent_requests_on_one_key_admit_exactly_the_limit`.
    let keys = "keys:\n  - { name: shared, key: sk-shared, rate_limit: { requests: 100, window_s: 60 } }\nlogging: { access_log: false }\nserver: { header_timeout_s: 600 }\n";
    std::fs::write(&path, config(&mock, &redis, "itproc", keys)).unwrap();
    // Three OS processes, each with its own memory and its own Redis connection.
    let mut children = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..3 {
        let (child, base) = crate::support::process::spawn(&path);
        children.push(child);
        bases.push(base);
    }
    let responses = futures_util::future::join_all((0..300).map(|i| {
        let url = format!("{}/v1/chat/completions", bases[i % bases.len()]);
        async move {
            client()
                .post(url)
                .header("x-api-key", "sk-shared")
                .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    }))
    .await;
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let ok = responses.iter().filter(|s| **s == 200).count();
    let limited = responses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (100, 200), "statuses {responses:?}");
    assert_eq!(mock.requests().len(), 100);
}

/// Issue 23 item 4 across replicas: two gateways sharing Redis, limit 2 per window, sliding window:
/// 200, 200, 429 spread over both, and after a full window's wait the whole limit is back.
#[tokio::test]
async fn sliding_window_is_exact_across_replicas() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let mock = Mock::start().await;
    let yaml = config(
        &mock,
        &redis,
        "sw",
        "keys:\n  - { name: a, key: ka, rate_limit: { requests: 2, window_s: 2 } }\n",
    );
    let gateways = [Gateway::start(&yaml).await, Gateway::start(&yaml).await];
    crate::limits::align_to_window_start(Duration::from_secs(2)).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(chat(&gateways[i % 2], "hi", Some("ka")).await.0);
    }
    assert_eq!(statuses, [200, 200, 429]);
    // Redis' clock decides the window: this wait (a window and a bit after the burst) is the
    // behaviour under test.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(chat(&gateways[(i + 1) % 2], "hi", Some("ka")).await.0);
    }
    assert_eq!(
        statuses,
        [200, 200, 429],
        "a full window later the whole limit is back"
    );
}

/// A conversation started on one replica continues on another, and any replica reads it: answers live
/// in Redis under `<key_prefix>:response:<id>`.
#[tokio::test]
async fn responses_continue_on_any_replica() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let mock = Mock::start().await;
    let gateways = replicas(&config(&mock, &redis, "itresp", "")).await;
    let first = crate::responses::create(
        &gateways[0],
        &json!({"model": "m", "input": "first turn"}),
        &[("x-request-id", "shared-1")],
    )
    .await;
    assert_eq!(first["id"], "resp_shared-1");
    assert_eq!(
        redis.keys("itresp:response:"),
        ["itresp:response:resp_shared-1"]
    );
    let (status, _, text) = crate::responses::post(
        &gateways[1],
        &json!({"model": "m", "previous_response_id": "resp_shared-1", "input": "second turn", "stream": true}),
        &[("x-request-id", "shared-2")],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let sent = &mock.requests()[1].body["messages"];
    assert_eq!(sent[0]["content"], "first turn", "{sent}");
    assert_eq!(sent[1]["content"], "hello from mock");
    assert_eq!(sent[2]["content"], "second turn");
    // The streamed answer was stored before its last event reached the client: the third replica
    // finds it at once.
    let stored: Value = client()
        .get(gateways[2].url("/v1/responses/resp_shared-2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["id"], "resp_shared-2", "{stored}");
    assert_eq!(stored["status"], "completed");
    let deleted = client()
        .delete(gateways[2].url("/v1/responses/resp_shared-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let (status, _, _) = crate::responses::post(
        &gateways[0],
        &json!({"previous_response_id": "resp_shared-1", "input": "gone"}),
        &[],
    )
    .await;
    assert_eq!(status, 404);
}

/// Issue 25: an agent's history is tokenized once for the whole fleet. A turn through one replica counts
/// its texts; the same history resent through another replica (token limits on both) is estimated from
/// the counts in Redis, and the next turn counts only its new text.
#[tokio::test]
async fn a_resent_history_is_not_counted_again_on_another_replica() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let mock = Mock::start().await;
    let yaml = config(
        &mock,
        &redis,
        "tok",
        "keys:\n  - { name: a, key: ka, rate_limit: { tokens: 100000000, window_s: 60 } }\n",
    );
    let (one, two) = (Gateway::start(&yaml).await, Gateway::start(&yaml).await);
    let history: Vec<Value> = (0..20)
        .map(|i| {
            json!({"role": if i % 2 == 0 { "user" } else { "assistant" },
                   "content": format!("turn {i}: {}", "the quick brown fox jumps over the lazy dog ".repeat(10))})
        })
        .collect();
    let turn = |messages: &[Value]| json!({"model": "m", "messages": messages});
    let (status, _, _) = one
        .send(
            "/v1/chat/completions",
            &turn(&history),
            &[("x-api-key", "ka")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(one.state.tokens().counted(), 20);
    // Counts are published in the background: the second replica may race them, so wait for Redis.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let keys: Vec<String> = redis_keys(&redis, "tok:tok:*");
        if keys.len() >= 20 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut next = history.clone();
    next.push(
        json!({"role": "user", "content": format!("and now: {}", "a new question ".repeat(10))}),
    );
    let (status, _, _) = two
        .send("/v1/chat/completions", &turn(&next), &[("x-api-key", "ka")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        two.state.tokens().counted(),
        1,
        "only the new message was counted"
    );
}

/// Keys in the test's Redis matching `pattern`.
fn redis_keys(redis: &TestRedis, pattern: &str) -> Vec<String> {
    let output = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--raw", "keys", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}
