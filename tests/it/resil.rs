//! Issue 3 end to end: balancing strategies over several real upstreams, fail-over to fallback backends,
//! 429 Retry-After, breaker ejection and recovery, alerts (webhook and error log), hot reload (file edit,
//! `POST /admin/reload`, SIGHUP) and seed 001's config serving through mock instances.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::mock::{Behavior, Mock, refused_base};
use crate::support::resil::{Delayed, eventually, webhook};
use crate::support::{Gateway, client, sse_data};

fn v1(mock: &Mock) -> String {
    format!("{}/v1", mock.base())
}

fn hi(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// A backend `pool` with the given instances (url, weight) and extra backend-level YAML lines.
fn pool(strategy: &str, instances: &[(String, u32)], extra: &str) -> String {
    let mut yaml =
        format!("backends:\n  pool:\n    type: openai\n    load_balancing: {strategy}\n");
    yaml.push_str(extra);
    yaml.push_str("    instances:\n");
    for (url, weight) in instances {
        yaml.push_str(&format!("      - {{ url: '{url}', weight: {weight} }}\n"));
    }
    yaml
}

async fn mocks(n: usize) -> Vec<Mock> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Mock::start().await);
    }
    out
}

fn counts(mocks: &[Mock]) -> Vec<usize> {
    mocks.iter().map(|m| m.requests().len()).collect()
}

/// The value of an unlabelled metric.
async fn metric(gateway: &Gateway, name: &str) -> f64 {
    gateway.metrics().await.value(name, &[])
}

async fn chat_ok(gateway: &Gateway, model: &str) -> Value {
    let (status, body) = gateway.chat(hi(model)).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn round_robin_spreads_30_requests_10_10_10() {
    let m = mocks(3).await;
    let gateway = Gateway::start(&pool(
        "round_robin",
        &m.iter().map(|m| (v1(m), 1)).collect::<Vec<_>>(),
        "",
    ))
    .await;
    for _ in 0..30 {
        let body = chat_ok(&gateway, "pool").await;
        assert_eq!(body["backend"], "pool");
        assert_eq!(body["choices"][0]["message"]["content"], "hello from mock");
    }
    assert_eq!(counts(&m), [10, 10, 10]);
}

#[tokio::test]
async fn weighted_2_to_1_gives_20_and_10_over_30() {
    let m = mocks(2).await;
    let gateway = Gateway::start(&pool("weighted", &[(v1(&m[0]), 2), (v1(&m[1]), 1)], "")).await;
    for _ in 0..30 {
        chat_ok(&gateway, "pool").await;
    }
    assert_eq!(counts(&m), [20, 10]);
}

#[tokio::test]
async fn least_connections_sends_new_requests_away_from_an_instance_holding_a_stream() {
    let m = mocks(2).await;
    // Whichever instance gets the stream holds it open (gated after its first chunk).
    for mock in &m {
        mock.script([Behavior::Gate]);
    }
    let gateway = Gateway::start(&pool(
        "least_connections",
        &[(v1(&m[0]), 1), (v1(&m[1]), 1)],
        "",
    ))
    .await;
    let response = gateway
        .open("/v1/chat/completions", &json!({"model": "pool", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));
    let busy = counts(&m).iter().position(|&c| c == 1).unwrap();
    let idle = 1 - busy;
    for _ in 0..10 {
        chat_ok(&gateway, "pool").await;
    }
    assert_eq!(counts(&m)[busy], 1, "a request went to the busy instance");
    assert_eq!(counts(&m)[idle], 10);
    m[busy].release();
    let mut rest = first.to_vec();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        sse_data(&String::from_utf8_lossy(&rest)).last().unwrap(),
        "[DONE]"
    );
}

#[tokio::test]
async fn latency_strategy_moves_traffic_away_from_a_slow_instance() {
    let slow = Delayed::start(Duration::from_millis(300)).await;
    let fast = Delayed::start(Duration::ZERO).await;
    let gateway = Gateway::start(&pool("latency", &[(slow.base(), 1), (fast.base(), 1)], "")).await;
    // Until both have a latency sample the choice is random; warm up until the fast one has one.
    let mut warmup = 0;
    while fast.count() == 0 || slow.count() == 0 {
        chat_ok(&gateway, "pool").await;
        warmup += 1;
        assert!(warmup < 60, "the balancer never tried both instances");
    }
    let slow_before = slow.count();
    for _ in 0..20 {
        chat_ok(&gateway, "pool").await;
    }
    assert_eq!(
        slow.count(),
        slow_before,
        "the slow instance still got traffic once its latency was known"
    );
}

#[tokio::test]
async fn fallback_backend_serves_when_primaries_fail_500_refused_and_hang() {
    let failing = Mock::start().await;
    let hanging = Mock::start().await;
    let backup = Mock::start().await;
    failing.script(std::iter::repeat_n(
        Behavior::Status(500, "{\"error\":\"boom\"}", None),
        3,
    ));
    hanging.script(std::iter::repeat_n(Behavior::Hang, 3));
    let refused = refused_base().await;
    let gateway = Gateway::start(&format!(
        "backends:\n  primary:\n    type: openai\n    timeout_s: 0.3\n    retries: 2\n    fallback: [backup]\n    instances:\n      - url: '{}'\n      - url: '{refused}/v1'\n      - url: '{}'\n  backup: {{ type: openai, url: '{}' }}\n",
        v1(&failing),
        v1(&hanging),
        v1(&backup)
    ))
    .await;
    for _ in 0..3 {
        let body = chat_ok(&gateway, "primary").await;
        assert_eq!(body["backend"], "backup");
        assert_eq!(body["choices"][0]["message"]["content"], "hello from mock");
    }
    assert_eq!(failing.requests().len(), 3);
    assert_eq!(hanging.requests().len(), 3);
    assert_eq!(backup.requests().len(), 3);
    assert_eq!(metric(&gateway, "fallbacks_total").await, 3.0);
}

#[tokio::test]
async fn when_everything_fails_the_error_names_each_backend_and_instance() {
    let failing = Mock::start().await;
    let backup = Mock::start().await;
    failing.script([Behavior::Status(500, "{}", None)]);
    backup.script([Behavior::Status(503, "{}", None)]);
    let refused = refused_base().await;
    let gateway = Gateway::start(&format!(
        "backends:\n  primary:\n    type: openai\n    fallback: [backup]\n    instances:\n      - url: '{}'\n      - url: '{refused}/v1'\n  backup: {{ type: openai, url: '{}' }}\n",
        v1(&failing),
        v1(&backup)
    ))
    .await;
    let (status, body) = gateway.chat(hi("primary")).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for needle in [
        "primary",
        "backup",
        &failing.addr.to_string(),
        refused.trim_start_matches("http://"),
        &backup.addr.to_string(),
    ] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from {message}"
        );
    }
    // "Requests served by a fallback backend": the fallback failed too, so none was.
    assert_eq!(metric(&gateway, "fallbacks_total").await, 0.0);
}

#[tokio::test]
async fn a_stream_fails_over_when_the_first_instance_cuts_before_any_chunk() {
    let m = mocks(2).await;
    m[0].script([Behavior::StreamCut(0)]);
    let gateway = Gateway::start(&pool("round_robin", &[(v1(&m[0]), 1), (v1(&m[1]), 1)], "")).await;
    let response = gateway
        .open("/v1/chat/completions", &json!({"model": "pool", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let text = response.text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]", "{text}");
    let content: String = data[..data.len() - 1]
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_str(d).unwrap();
            assert!(v.get("error").is_none(), "{d}");
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(content, "hello from mock");
    assert_eq!(counts(&m), [1, 1]);
}

#[tokio::test]
async fn an_instance_answering_429_with_retry_after_is_skipped_until_then() {
    let m = mocks(2).await;
    m[0].script([Behavior::Status(429, "{\"error\":\"slow down\"}", Some(60))]);
    let gateway = Gateway::start(&pool("round_robin", &[(v1(&m[0]), 1), (v1(&m[1]), 1)], "")).await;
    for _ in 0..7 {
        chat_ok(&gateway, "pool").await;
    }
    assert_eq!(counts(&m), [1, 7]);
    let health = gateway.get_json("/health").await;
    let first = &health["backends"]["pool"]["instances"][0];
    assert_eq!(first["healthy"], false, "{health}");
    let retry_in = first["retry_in_s"].as_f64().unwrap();
    assert!(retry_in > 50.0 && retry_in <= 60.0, "{retry_in}");
    assert_eq!(health["backends"]["pool"]["healthy_instances"], 1);
}

fn instance_state(health: &Value, i: usize) -> String {
    health["backends"]["pool"]["instances"][i]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn breaker_ejects_after_threshold_recovers_after_cooldown_and_alerts_each_change() {
    let (hook, mut alerts) = webhook().await;
    let dir = tempfile::tempdir().unwrap();
    let m = mocks(2).await;
    m[0].script([
        Behavior::Status(500, "{}", None),
        Behavior::Status(502, "{}", None),
    ]);
    let mut yaml = pool(
        "round_robin",
        &[(v1(&m[0]), 1), (v1(&m[1]), 1)],
        "    health: { error_threshold: 2, error_window_s: 30, cooldown_s: 1, max_cooldown_s: 1 }\n",
    );
    yaml.push_str(&format!(
        "alerts: {{ webhook_url: '{hook}', dir: '{}', cooldown_s: 0.05 }}\n",
        dir.path().display()
    ));
    let gateway = Gateway::start(&yaml).await;
    // RR: a (500 → b), b, a (502 → b): the second fault within the window opens a's breaker.
    for _ in 0..3 {
        chat_ok(&gateway, "pool").await;
    }
    assert_eq!(counts(&m), [2, 3]);
    // While open, traffic goes elsewhere.
    for _ in 0..4 {
        chat_ok(&gateway, "pool").await;
    }
    assert_eq!(counts(&m), [2, 7]);
    let health = gateway.get_json("/health").await;
    assert_eq!(instance_state(&health, 0), "open", "{health}");
    assert_eq!(instance_state(&health, 1), "closed");
    assert_eq!(health["backends"]["pool"]["instances"][0]["healthy"], false);
    let down = tokio::time::timeout(Duration::from_secs(5), alerts.recv())
        .await
        .expect("no alert for the opened breaker")
        .unwrap();
    assert_eq!(down["kind"], "instance_down", "{down}");
    assert_eq!(down["backend"], "pool");
    assert!(
        down["instance"]
            .as_str()
            .unwrap()
            .contains(&m[0].addr.to_string())
    );
    // After the cooldown the breaker lets a probe through; /health shows it.
    eventually(
        "breaker half-open after cooldown",
        Duration::from_secs(5),
        || async { instance_state(&gateway.get_json("/health").await, 0) == "half_open" },
    )
    .await;
    for _ in 0..4 {
        chat_ok(&gateway, "pool").await;
    }
    assert!(counts(&m)[0] >= 3, "{:?}", counts(&m));
    let health = gateway.get_json("/health").await;
    assert_eq!(instance_state(&health, 0), "closed", "{health}");
    let up = tokio::time::timeout(Duration::from_secs(5), alerts.recv())
        .await
        .expect("no alert for the closed breaker")
        .unwrap();
    assert_eq!(up["kind"], "instance_up", "{up}");
    // Flush: nothing else is pending, so exactly one message per state change was sent.
    gateway.state.flush().await;
    assert!(alerts.try_recv().is_err(), "an extra alert was sent");
    let mut files: Vec<_> = std::fs::read_dir(dir.path().join("errors"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    // One hourly file (two if the test straddled the hour).
    assert!(!files.is_empty() && files.len() <= 2, "{files:?}");
    let mut log = String::new();
    for name in &files {
        let stem = name.strip_suffix(".log").unwrap();
        assert!(
            stem.len() == 11
                && stem.as_bytes()[8] == b'_'
                && stem.chars().filter(char::is_ascii_digit).count() == 10,
            "{name}"
        );
        log.push_str(&std::fs::read_to_string(dir.path().join("errors").join(name)).unwrap());
    }
    let kinds: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["instance_down", "instance_up"], "{log}");
}

// ---------- hot reload ----------

fn routed_to(backend: &str, a: &Mock, b: &Mock) -> String {
    format!(
        "models:\n  m: {{ backend: {backend} }}\nbackends:\n  a: {{ type: openai, url: '{}' }}\n  b: {{ type: openai, url: '{}' }}\n",
        v1(a),
        v1(b)
    )
}

#[tokio::test]
async fn file_edit_under_load_switches_the_route_with_zero_failed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let (a, b) = (Mock::start().await, Mock::start().await);
    std::fs::write(&path, routed_to("a", &a, &b)).unwrap();
    let (gateway, _reloader) = Gateway::start_from_file(&path, true).await;
    let gateway = Arc::new(gateway);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (gateway, stop, failed) = (gateway.clone(), stop.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut done = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let response = client()
                    .post(gateway.url("/v1/chat/completions"))
                    .json(&hi("m"))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == 200 => {
                        let body: Value = r.json().await.unwrap();
                        assert_eq!(body["choices"][0]["message"]["content"], "hello from mock");
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done += 1;
            }
            done
        }));
    }
    eventually("load running on a", Duration::from_secs(10), || async {
        a.requests().len() >= 20
    })
    .await;
    std::fs::write(&path, routed_to("b", &a, &b)).unwrap();
    eventually(
        "the edited route takes effect",
        Duration::from_secs(10),
        || async { b.requests().len() >= 20 },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for worker in workers {
        total += worker.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "of {total} requests");
    let a_after = a.requests().len();
    let body = chat_ok(&gateway, "m").await;
    assert_eq!(body["backend"], "b");
    assert_eq!(a.requests().len(), a_after);
}

#[tokio::test]
async fn a_stream_started_before_a_reload_finishes_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.script([Behavior::Gate]);
    std::fs::write(&path, routed_to("a", &a, &b)).unwrap();
    let (gateway, _reloader) = Gateway::start_from_file(&path, true).await;
    let response = gateway
        .open(
            "/v1/chat/completions",
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    let mut stream = response.bytes_stream();
    let mut body = stream.next().await.unwrap().unwrap().to_vec();
    std::fs::write(&path, routed_to("b", &a, &b)).unwrap();
    eventually(
        "the reload takes effect",
        Duration::from_secs(10),
        || async { gateway.chat(hi("m")).await.1["backend"] == "b" },
    )
    .await;
    a.release();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    let data = sse_data(&String::from_utf8_lossy(&body));
    assert_eq!(data.last().unwrap(), "[DONE]");
    let content: String = data[..data.len() - 1]
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_str(d).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(content, "hello from mock");
}

#[tokio::test]
async fn an_invalid_edit_leaves_the_old_config_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let (a, b) = (Mock::start().await, Mock::start().await);
    std::fs::write(&path, routed_to("a", &a, &b)).unwrap();
    let (gateway, _reloader) = Gateway::start_from_file(&path, true).await;
    std::fs::write(
        &path,
        "models:\n  m: { backend: b }\nbackends:\n  a: { type: openai, url: 5 }\n  b: { type: nope }\n",
    )
    .unwrap();
    eventually(
        "the rejected reload is counted",
        Duration::from_secs(10),
        || async {
            gateway
                .metrics()
                .await
                .get("config_reloads_total", &[("result", "failure")])
                .is_some_and(|count| count > 0.0)
        },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(chat_ok(&gateway, "m").await["backend"], "a");
    }
    assert_eq!(b.requests().len(), 0);
    // The admin endpoint reports the same rejection, naming where the file is wrong.
    let response = gateway.admin_reload().await;
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(text.contains("gateway.yaml"), "{text}");
    assert_eq!(chat_ok(&gateway, "m").await["backend"], "a");
}

#[tokio::test]
async fn admin_reload_applies_an_edited_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let (a, b) = (Mock::start().await, Mock::start().await);
    std::fs::write(&path, routed_to("a", &a, &b)).unwrap();
    // No watcher: only the admin call reloads.
    let (gateway, _none) = Gateway::start_from_file(&path, false).await;
    std::fs::write(&path, routed_to("b", &a, &b)).unwrap();
    assert_eq!(chat_ok(&gateway, "m").await["backend"], "a");
    let response = gateway.admin_reload().await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "reloaded");
    assert_eq!(chat_ok(&gateway, "m").await["backend"], "b");
    assert_eq!(counts(&[a, b]), [1, 1]);
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    use std::process::Command;
    let (a, b) = (Mock::start().await, Mock::start().await);
    // The binary watches its config's directory; point it at a symlink in another directory so a change
    // of the real file is seen only through SIGHUP.
    let real_dir = tempfile::tempdir().unwrap();
    let link_dir = tempfile::tempdir().unwrap();
    let real = real_dir.path().join("real.yaml");
    let link = link_dir.path().join("gateway.yaml");
    std::fs::write(&real, routed_to("a", &a, &b)).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (mut child, base) = crate::support::process::spawn(&link);
    let ask = || async {
        let body: Value = client()
            .post(format!("{base}/v1/chat/completions"))
            .json(&hi("m"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["backend"].as_str().unwrap_or_default().to_owned()
    };
    // A served request means the reloader (started before serving) has its SIGHUP handler installed.
    assert_eq!(ask().await, "a");
    let hup = || {
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // An invalid file on SIGHUP: rejected, the old config keeps serving.
    std::fs::write(&real, "backends: [ nope\n").unwrap();
    hup();
    eventually(
        "the rejected reload is counted",
        Duration::from_secs(10),
        || async {
            let text = client()
                .get(format!("{base}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines().any(|l| {
                l.contains("config_reloads")
                    && l.contains("result=\"failure\"")
                    && !l.trim_end().ends_with(" 0")
            })
        },
    )
    .await;
    assert_eq!(ask().await, "a");
    std::fs::write(&real, routed_to("b", &a, &b)).unwrap();
    hup();
    eventually(
        "SIGHUP reload takes effect",
        Duration::from_secs(10),
        || async { ask().await == "b" },
    )
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP killed the gateway"
    );
    let _ = child.kill();
    let _ = child.wait();
}

// ---------- seed 001 ----------

#[tokio::test]
async fn seed_001_config_round_robins_two_instances_and_uses_the_fallback_when_both_fail() {
    let dir = tempfile::tempdir().unwrap();
    let m = mocks(3).await;
    let config = format!(
        r#"{{
   "instances": [ // private instances for inference
     {{ "url": "{}", "api_key": "empty", "model_name": "deepseek-r1", "weight": 1 }},
     {{ "url": "{}", "api_key": "empty", "model_name": "deepseek-r1", "weight": 1 }}
   ],
   "fallback_instances": [
     {{ "url": "{}", "api_key": "your_api_key", "model_name": "deepseek-r1", "weight": 1 }}
   ],
   "data_dir": "{}",
   "load_balancing_strategy": "round_robin", // options: round_robin, least_connections
   "error_threshold": 10,
   "error_window": 300,
   "alert_cooldown": 300
}}"#,
        v1(&m[0]),
        v1(&m[1]),
        v1(&m[2]),
        dir.path().join("data").display()
    );
    let path = dir.path().join("config.json5");
    std::fs::write(&path, config).unwrap();
    let (gateway, _none) = Gateway::start_from_file(&path, false).await;
    for _ in 0..10 {
        let body = chat_ok(&gateway, "deepseek-r1").await;
        assert_eq!(body["backend"], "primary");
    }
    assert_eq!(counts(&m), [5, 5, 0]);
    assert_eq!(m[0].requests()[0].headers["authorization"], "Bearer empty");
    m[0].script([Behavior::Status(500, "{}", None)]);
    m[1].script([Behavior::Status(500, "{}", None)]);
    let body = chat_ok(&gateway, "deepseek-r1").await;
    assert_eq!(body["backend"], "fallback");
    assert_eq!(body["choices"][0]["message"]["content"], "hello from mock");
    assert_eq!(counts(&m), [6, 6, 1]);
    let fallback = &m[2].requests()[0];
    assert_eq!(fallback.headers["authorization"], "Bearer your_api_key");
    assert_eq!(fallback.body["model"], "deepseek-r1");
}

// ---------- more edges ----------

#[tokio::test]
async fn kubernetes_configmap_update_is_picked_up() {
    // A mounted ConfigMap: `gateway.yaml -> ..data/gateway.yaml`, `..data -> ..<timestamp>`. An update
    // writes a new timestamped directory and renames a new `..data` symlink over the old one: nothing
    // named `gateway.yaml` changes in the directory.
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Mock::start().await, Mock::start().await);
    let first = dir.path().join("..2026_11_22_21_00_00.1");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(first.join("gateway.yaml"), routed_to("a", &a, &b)).unwrap();
    symlink("..2026_11_22_21_00_00.1", dir.path().join("..data")).unwrap();
    let path = dir.path().join("gateway.yaml");
    symlink("..data/gateway.yaml", &path).unwrap();
    let (gateway, _reloader) = Gateway::start_from_file(&path, true).await;
    assert_eq!(chat_ok(&gateway, "m").await["backend"], "a");

    let second = dir.path().join("..2026_11_22_21_05_00.2");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(second.join("gateway.yaml"), routed_to("b", &a, &b)).unwrap();
    symlink("..2026_11_22_21_05_00.2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();
    eventually(
        "the ConfigMap update takes effect",
        Duration::from_secs(10),
        || async { chat_ok(&gateway, "m").await["backend"] == "b" },
    )
    .await;
}

#[tokio::test]
async fn when_every_instance_is_rate_limited_the_client_gets_429_with_the_shortest_retry_after() {
    let m = mocks(2).await;
    m[0].script([Behavior::Status(429, "{}", Some(7))]);
    m[1].script([Behavior::Status(429, "{}", Some(3))]);
    let gateway = Gateway::start(&pool("round_robin", &[(v1(&m[0]), 1), (v1(&m[1]), 1)], "")).await;
    let response = gateway
        .post("/v1/chat/completions", &hi("pool").to_string())
        .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("rate limited"), "{message}");
}

#[tokio::test]
async fn a_pool_whose_every_breaker_is_open_is_still_tried() {
    let m = mocks(2).await;
    m[0].script([Behavior::Status(500, "{}", None)]);
    m[1].script([Behavior::Status(500, "{}", None)]);
    let gateway = Gateway::start(&pool(
        "round_robin",
        &[(v1(&m[0]), 1), (v1(&m[1]), 1)],
        "    health: { error_threshold: 1, cooldown_s: 60 }\n",
    ))
    .await;
    let (status, _) = gateway.chat(hi("pool")).await;
    assert_eq!(status, 502);
    let health = gateway.get_json("/health").await;
    assert_eq!(instance_state(&health, 0), "open");
    assert_eq!(instance_state(&health, 1), "open");
    let ready = client()
        .get(gateway.url("/health/ready"))
        .send()
        .await
        .unwrap();
    // Readiness is this replica's, not the upstreams' (issue 26): a dead pool stays in /health.
    assert_eq!(
        ready.status(),
        200,
        "/health/ready must not follow upstream health"
    );
    // Both ejected: the gateway still tries them rather than refusing outright, and they answer now.
    chat_ok(&gateway, "pool").await;
    assert_eq!(counts(&m).iter().sum::<usize>(), 3);
}

#[tokio::test]
async fn a_reload_keeps_breaker_state_and_applies_new_health_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let m = mocks(2).await;
    let config = |threshold: u32| {
        format!(
            "models:\n  m: {{ backend: pool }}\n{}",
            pool(
                "round_robin",
                &[(v1(&m[0]), 1), (v1(&m[1]), 1)],
                &format!("    health: {{ error_threshold: {threshold}, cooldown_s: 60 }}\n"),
            )
        )
    };
    std::fs::write(&path, config(1)).unwrap();
    let (gateway, _none) = Gateway::start_from_file(&path, false).await;
    m[0].script([Behavior::Status(500, "{}", None)]);
    chat_ok(&gateway, "m").await;
    assert_eq!(
        instance_state(&gateway.get_json("/health").await, 0),
        "open"
    );
    std::fs::write(&path, config(3)).unwrap();
    let response = gateway.admin_reload().await;
    assert_eq!(response.status(), 200);
    // The breaker stays open across the reload: a still gets nothing.
    for _ in 0..4 {
        chat_ok(&gateway, "m").await;
    }
    assert_eq!(counts(&m), [1, 5]);
    assert_eq!(
        instance_state(&gateway.get_json("/health").await, 0),
        "open"
    );
    // The new threshold (3) applies to b: two faults leave it closed.
    m[1].script(std::iter::repeat_n(Behavior::Status(500, "{}", None), 2));
    for _ in 0..2 {
        let _ = gateway.chat(hi("m")).await;
    }
    let health = gateway.get_json("/health").await;
    assert_eq!(instance_state(&health, 1), "closed", "{health}");
    assert_eq!(
        health["backends"]["pool"]["instances"][1]["recent_errors"],
        2
    );
}

#[tokio::test]
async fn an_exhausted_backend_raises_one_alert_per_backend() {
    let (hook, mut alerts) = webhook().await;
    let dir = tempfile::tempdir().unwrap();
    let failing = Mock::start().await;
    let backup = Mock::start().await;
    failing.script(std::iter::repeat_n(Behavior::Status(500, "{}", None), 3));
    backup.script(std::iter::repeat_n(Behavior::Status(500, "{}", None), 3));
    let gateway = Gateway::start(&format!(
        "backends:\n  primary: {{ type: openai, url: '{}', fallback: [backup] }}\n  backup: {{ type: openai, url: '{}' }}\nalerts: {{ webhook_url: '{hook}', dir: '{}' }}\n",
        v1(&failing),
        v1(&backup),
        dir.path().display()
    ))
    .await;
    for _ in 0..3 {
        let (status, _) = gateway.chat(hi("primary")).await;
        assert_eq!(status, 502);
    }
    gateway.state.flush().await;
    let mut received = Vec::new();
    while let Ok(alert) = alerts.try_recv() {
        received.push((
            alert["kind"].as_str().unwrap().to_owned(),
            alert["backend"].as_str().unwrap().to_owned(),
        ));
    }
    received.sort();
    // Three failed requests within the alert cooldown: one message per backend, not one per request.
    assert_eq!(
        received,
        [
            ("backend_exhausted".to_owned(), "backup".to_owned()),
            ("backend_exhausted".to_owned(), "primary".to_owned()),
        ]
    );
}

#[tokio::test]
async fn retries_bound_the_instances_tried_before_the_fallback() {
    let m = mocks(3).await;
    let backup = Mock::start().await;
    for mock in &m {
        mock.script([Behavior::Status(500, "{}", None)]);
    }
    let mut yaml = pool(
        "round_robin",
        &m.iter().map(|m| (v1(m), 1)).collect::<Vec<_>>(),
        "    retries: 0\n    fallback: [backup]\n",
    );
    yaml.push_str(&format!(
        "  backup: {{ type: openai, url: '{}' }}\n",
        v1(&backup)
    ));
    let gateway = Gateway::start(&yaml).await;
    let body = chat_ok(&gateway, "pool").await;
    assert_eq!(body["backend"], "backup");
    // retries: 0 → one instance of the pool, then the fallback.
    assert_eq!(counts(&m).iter().sum::<usize>(), 1, "{:?}", counts(&m));
    assert_eq!(backup.requests().len(), 1);
}

#[tokio::test]
async fn a_client_leaving_mid_stream_releases_the_in_flight_slot() {
    let m = mocks(2).await;
    for mock in &m {
        mock.script([Behavior::Gate]);
    }
    let gateway = Gateway::start(&pool(
        "least_connections",
        &[(v1(&m[0]), 1), (v1(&m[1]), 1)],
        "",
    ))
    .await;
    let response = gateway
        .open("/v1/chat/completions", &json!({"model": "pool", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    let in_flight = |health: &Value| {
        health["backends"]["pool"]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["in_flight"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(in_flight(&gateway.get_json("/health").await), 1);
    drop(stream);
    eventually(
        "the in-flight slot is released",
        Duration::from_secs(5),
        || async { in_flight(&gateway.get_json("/health").await) == 0 },
    )
    .await;
    // Both instances are equal again: the next two requests go one to each.
    let before = counts(&m);
    chat_ok(&gateway, "pool").await;
    chat_ok(&gateway, "pool").await;
    let after = counts(&m);
    assert_eq!((after[0] - before[0], after[1] - before[1]), (1, 1));
}

#[tokio::test]
async fn the_served_by_header_names_the_fallback_for_json_and_streams() {
    let failing = Mock::start().await;
    let backup = Mock::start().await;
    failing.script([
        Behavior::Status(500, "{}", None),
        Behavior::Status(500, "{}", None),
    ]);
    let gateway = Gateway::start(&format!(
        "backends:\n  primary: {{ type: openai, url: '{}', fallback: [backup], retries: 0 }}\n  backup: {{ type: openai, url: '{}' }}\n",
        v1(&failing),
        v1(&backup)
    ))
    .await;
    for stream in [false, true] {
        let response = gateway
            .open("/v1/chat/completions", &json!({"model": "primary", "stream": stream, "messages": [{"role": "user", "content": "x"}]}))
            .await;
        assert_eq!(
            response
                .headers()
                .get("x-gateway-backend")
                .map(|v| v.to_str().unwrap()),
            Some("backup"),
            "stream: {stream}"
        );
        let text = response.text().await.unwrap();
        assert!(text.contains("mock"), "{text}");
    }
    assert_eq!(backup.requests().len(), 2);
}

#[tokio::test]
async fn a_long_healthy_stream_outlives_timeout_s() {
    let mock = Mock::start().await;
    // Five chunks 150 ms apart: about 0.6 s in all, twice timeout_s.
    mock.script([Behavior::Slow(Duration::from_millis(150))]);
    let gateway = Gateway::start(&format!(
        "backends:\n  slow: {{ type: openai, url: '{}', timeout_s: 0.3 }}\n",
        v1(&mock)
    ))
    .await;
    let started = std::time::Instant::now();
    let response = gateway
        .open("/v1/chat/completions", &json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let text = response.text().await.unwrap();
    assert!(started.elapsed() > Duration::from_millis(300));
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]", "{text}");
    assert!(!text.contains("\"error\""), "{text}");
    assert_eq!(mock.requests().len(), 1, "a healthy stream was retried");
}

#[tokio::test]
async fn a_hanging_upstream_gives_504_after_timeout_s_naming_it() {
    let mock = Mock::start().await;
    mock.script([Behavior::Hang]);
    let gateway = Gateway::start(&format!(
        "backends:\n  stuck: {{ type: openai, url: '{}', timeout_s: 0.3, retries: 0 }}\n",
        v1(&mock)
    ))
    .await;
    let started = std::time::Instant::now();
    let (status, body) = gateway.chat(hi("stuck")).await;
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("stuck") && message.contains(&mock.addr.to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn latency_strategy_avoids_an_instance_that_timed_out() {
    let hanging = Mock::start().await;
    hanging.script(std::iter::repeat_n(Behavior::Hang, 20));
    let fast = Delayed::start(Duration::ZERO).await;
    // A high threshold keeps the breaker out of it: only the latency strategy may steer traffic away.
    let gateway = Gateway::start(&pool(
        "latency",
        &[(v1(&hanging), 1), (fast.base(), 1)],
        "    timeout_s: 0.3\n    health: { error_threshold: 100 }\n",
    ))
    .await;
    for _ in 0..12 {
        chat_ok(&gateway, "pool").await;
    }
    // The first timeout is unavoidable; after it the instance that took 0.3 s and answered nothing must
    // not look as fast as the one answering in a millisecond.
    assert!(
        hanging.requests().len() <= 2,
        "the timed-out instance was tried {} times in 12 requests",
        hanging.requests().len()
    );
}

#[tokio::test]
async fn a_request_arriving_while_the_half_open_probe_is_in_flight_is_still_served() {
    let mock = Mock::start().await;
    mock.script([Behavior::Status(500, "{}", None), Behavior::Hang]);
    let gateway = Gateway::start(&pool(
        "round_robin",
        &[(v1(&mock), 1)],
        "    retries: 0\n    timeout_s: 2\n    health: { error_threshold: 1, cooldown_s: 0.3, max_cooldown_s: 0.3 }\n",
    ))
    .await;
    let (status, _) = gateway.chat(hi("pool")).await;
    assert_eq!(status, 502);
    eventually("breaker half-open", Duration::from_secs(5), || async {
        instance_state(&gateway.get_json("/health").await, 0) == "half_open"
    })
    .await;
    // The probe: the instance hangs on it.
    let gateway = Arc::new(gateway);
    let probe = {
        let gateway = gateway.clone();
        tokio::spawn(async move { gateway.chat(hi("pool")).await.0 })
    };
    eventually(
        "the probe reached the instance",
        Duration::from_secs(5),
        || async { mock.requests().len() == 2 },
    )
    .await;
    // Another request meanwhile: the pool's only instance is the one being probed. Ejection never empties
    // a pool, and "no instance is configured" would be false either way.
    let (status, body) = gateway.chat(hi("pool")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mock.requests().len(), 3);
    let _ = probe.await;
}

#[tokio::test]
async fn a_reload_that_changes_a_pool_moves_traffic_to_the_new_instance_list() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let m = mocks(3).await;
    let config = |members: &[usize]| {
        format!(
            "models:\n  m: {{ backend: pool }}\n{}",
            pool(
                "round_robin",
                &members.iter().map(|&i| (v1(&m[i]), 1)).collect::<Vec<_>>(),
                "",
            )
        )
    };
    std::fs::write(&path, config(&[0, 1])).unwrap();
    let (gateway, _none) = Gateway::start_from_file(&path, false).await;
    for _ in 0..4 {
        chat_ok(&gateway, "m").await;
    }
    assert_eq!(counts(&m), [2, 2, 0]);
    std::fs::write(&path, config(&[1, 2])).unwrap();
    let response = gateway.admin_reload().await;
    assert_eq!(response.status(), 200);
    for _ in 0..6 {
        chat_ok(&gateway, "m").await;
    }
    assert_eq!(counts(&m), [2, 5, 3]);
    let health = gateway.get_json("/health").await;
    let urls: Vec<&str> = health["backends"]["pool"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls, [v1(&m[1]), v1(&m[2])]);
}

#[tokio::test]
async fn a_stream_fails_over_past_500_and_a_hang_to_the_fallback() {
    let failing = Mock::start().await;
    let hanging = Mock::start().await;
    let backup = Mock::start().await;
    failing.script([Behavior::Status(500, "{}", None)]);
    hanging.script([Behavior::Hang]);
    let gateway = Gateway::start(&format!(
        "backends:\n  primary:\n    type: openai\n    timeout_s: 0.3\n    fallback: [backup]\n    instances:\n      - url: '{}'\n      - url: '{}'\n  backup: {{ type: openai, url: '{}' }}\n",
        v1(&failing),
        v1(&hanging),
        v1(&backup)
    ))
    .await;
    let response = gateway
        .open("/v1/chat/completions", &json!({"model": "primary", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let text = response.text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]", "{text}");
    assert!(!text.contains("\"error\""), "{text}");
    assert_eq!(
        (
            failing.requests().len(),
            hanging.requests().len(),
            backup.requests().len()
        ),
        (1, 1, 1)
    );
}
