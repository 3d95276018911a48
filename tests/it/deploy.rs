//! What the container image and the orchestrators rely on (issue 26): seed 004's `LLM_URL` +
//! `GATEWAY_PORT` with no config file, start-up without system CA certificates, and a readiness that
//! is this replica's own, not the upstreams'.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::mock::{Mock, refused_base};
use crate::support::process::{Running, binary, free_port};
use crate::support::redis::TestRedis;
use crate::support::{Gateway, client};

/// Seed 004's run line and curl sequence, against the built binary with no config file anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_url_and_gateway_port_configure_a_gateway_without_a_file() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = binary();
    command
        .current_dir(dir.path())
        .env("LLM_URL", format!("{}/v1/completions", mock.base()))
        .env("GATEWAY_PORT", port.to_string())
        .env("HOST", "127.0.0.1");
    let gateway = Running::start(command, port);
    let started = gateway.log_until("ai-gateway listening");
    assert!(started.contains("LLM_URL"), "{started}");

    let health = client()
        .get(format!("{}/health", gateway.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let completion = |prompt: &str, max_tokens: u64| {
        client()
            .post(format!("{}/v1/completions", gateway.base))
            .header("content-type", "application/json")
            .body(json!({"prompt": prompt, "max_tokens": max_tokens}).to_string())
            .send()
    };
    let first = completion("Hello!", 20).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-cache"], "MISS");
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["choices"][0]["text"], "hello from mock");
    assert_eq!(first["cached"], false);
    let again = completion("Hello!", 20).await.unwrap();
    assert_eq!(again.headers()["x-cache"], "HIT");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["cached"], true);
    assert_eq!(again["choices"][0]["text"], "hello from mock");
    let forwarded = mock.requests();
    assert_eq!(
        forwarded.len(),
        1,
        "the second call is served from the cache"
    );
    assert_eq!(forwarded[0].path, "/v1/completions");
    assert_eq!(forwarded[0].body["prompt"], "Hello!");

    // "15 rapid calls": the token bucket (5/s, burst 10) already paid for the two calls above.
    let calls = (0..15).map(|_| completion("test", 5));
    let statuses: Vec<u16> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|response| response.unwrap().status().as_u16())
        .collect();
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(admitted + limited, 15, "{statuses:?}");
    assert!((8..=10).contains(&admitted), "{statuses:?}");
}

/// `LLM_URL` only stands in for a missing config file; a file, when found, wins.
#[test]
fn llm_url_is_the_config_only_when_no_file_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let check = || {
        let out = binary()
            .current_dir(dir.path())
            .arg("check")
            .env("LLM_URL", "http://127.0.0.1:9/v1/chat/completions")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(check().contains("<LLM_URL, seed 004 setup>"));
    std::fs::write(
        dir.path().join("config.yaml"),
        "backends:\n  local: { type: echo }\n",
    )
    .unwrap();
    assert!(check().contains("ai-gateway: config.yaml:"));
}

/// With no system CA certificates (`SSL_CERT_FILE`/`SSL_CERT_DIR`, which the platform verifier honours,
/// pointed at empty places) the gateway starts, with or without `https://` upstreams, and says which
/// roots `https://` upstreams are verified against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_without_system_ca_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let empty_file = dir.path().join("empty.pem");
    std::fs::write(&empty_file, "").unwrap();
    let empty_dir = dir.path().join("certs");
    std::fs::create_dir(&empty_dir).unwrap();
    let https = refused_base().await.replace("http://", "https://");
    for (name, config) in [
        (
            "echo.yaml",
            "backends:\n  local: { type: echo }\n".to_owned(),
        ),
        (
            "https.yaml",
            format!("backends:\n  cloud: {{ type: openai, url: '{https}' }}\n"),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, config).unwrap();
        let port = free_port();
        let mut command = binary();
        command
            .arg("--config")
            .arg(&path)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("SSL_CERT_FILE", &empty_file)
            .env("SSL_CERT_DIR", &empty_dir);
        let gateway = Running::start(command, port);
        let log = gateway.log_until("ai-gateway listening");
        assert!(log.contains("bundled Mozilla roots"), "{name}: {log}");
        assert!(log.contains("No CA certificates"), "{name}: {log}");
        let (status, body) = chat(&gateway.base).await;
        if name == "echo.yaml" {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["choices"][0]["message"]["content"], "Echo: hi");
        } else {
            // The https upstream is tried (nothing listens there): the gateway serves, it did not
            // give up at start for want of certificates.
            assert!(log.contains("install ca-certificates"), "{log}");
            assert_eq!(status, 502, "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("cloud"), "{message}");
        }
    }
}

async fn chat(base: &str) -> (u16, Value) {
    let response = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn ready(gateway: &Gateway) -> (u16, Value) {
    let response = client()
        .get(gateway.url("/health/ready"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// A dead upstream shows in `/health` but leaves the replica ready: its fallback still serves, and a
/// probe that followed upstream health would take every replica out of the Service at once.
#[tokio::test]
async fn readiness_does_not_follow_upstream_health() {
    let dead = refused_base().await;
    let gateway = Gateway::start(&format!(
        "default_backend: primary\nbackends:\n  primary:\n    type: openai\n    url: '{dead}'\n    \
         health: {{ error_threshold: 1, cooldown_s: 60 }}\n    fallback: [spare]\n  spare: {{ type: echo }}\n"
    ))
    .await;
    let (status, body) = gateway
        .chat(json!({"messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend"], "spare");
    let health = gateway.get_json("/health").await;
    assert_eq!(health["backends"]["primary"]["healthy_instances"], 0);
    assert_eq!(
        health["backends"]["primary"]["instances"][0]["state"],
        "open"
    );
    assert_eq!(ready(&gateway).await, (200, json!({"status": "ready"})));
}

/// With `on_unavailable: fail_closed` an unreachable Redis means every limited request gets 503: the
/// replica is not ready until Redis answers again. With `fail_open` it serves regardless.
#[tokio::test]
async fn readiness_follows_redis_only_when_limits_fail_closed() {
    let Some(mut redis) = TestRedis::start() else {
        return;
    };
    let config = |mode: &str| {
        format!(
            "backends:\n  local: {{ type: echo }}\nrate_limit:\n  global: {{ requests: 1000, window_s: 60 }}\n\
             state: {{ redis_url: '{}', on_unavailable: {mode} }}\n",
            redis.url()
        )
    };
    let closed = Gateway::start(&config("fail_closed")).await;
    let open = Gateway::start(&config("fail_open")).await;
    assert_eq!(ready(&closed).await.0, 200);
    assert_eq!(ready(&open).await.0, 200);

    redis.kill();
    let (status, body) = ready(&closed).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains(&redis.url()) && reason.contains("fail_closed"),
        "{reason}"
    );
    assert_eq!(ready(&open).await.0, 200);

    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while ready(&closed).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "still not ready 15 s after redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `ai-gateway health` (the image's HEALTHCHECK: no shell or curl there) asks the gateway its config
/// describes: 0 while it is ready, 1 once nothing answers.
#[test]
fn the_health_subcommand_reports_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.yaml");
    std::fs::write(&config, "backends:\n  local: { type: echo }\n").unwrap();
    let port = free_port();
    let health = || {
        binary()
            .args(["health", "--config"])
            .arg(&config)
            .env("PORT", port.to_string())
            .output()
            .unwrap()
    };
    let mut command = binary();
    command
        .arg("--config")
        .arg(&config)
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1");
    let gateway = Running::start(command, port);
    let out = health();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is ready"));
    drop(gateway);
    let out = health();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot ask"));
}
