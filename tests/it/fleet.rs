//! Issue 27: balancing for inference fleets — `prefix_affinity` (sessions and prompt prefixes stay on one
//! instance within a load bound), engine load scraped from the instances' own metrics, per-instance
//! `max_in_flight` with a bounded wait queue, and the moved-session table shared through Redis.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::engine::Engine;
use crate::support::redis::TestRedis;
use crate::support::resil::eventually;
use crate::support::{Gateway, client};

async fn engines(n: usize) -> Vec<Engine> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(Engine::start(&format!("e{i}")).await);
    }
    out
}

/// A gateway with one `fleet` backend over `engines`, `prefix_affinity` unless `backend` says otherwise.
fn config(engines: &[Engine], backend: &str, top: &str) -> String {
    let instances: Vec<String> = engines
        .iter()
        .map(|e| format!("{{ url: '{}' }}", e.base()))
        .collect();
    let health = if backend.contains("health:") {
        ""
    } else {
        "    health: { error_threshold: 1, cooldown_s: 60 }\n"
    };
    format!(
        "default_backend: fleet\nlogging: {{ level: warn }}\nbackends:\n  fleet:\n    type: openai\n    instances: [{}]\n    load_balancing: prefix_affinity\n    retries: 3\n{health}{backend}\n{top}",
        instances.join(", ")
    )
}

/// One chat request: `messages` as (role, text) pairs, an optional session header.
async fn chat(
    gateway: &Gateway,
    session: Option<&str>,
    messages: &[(&str, &str)],
    extra: Value,
) -> (u16, http::HeaderMap, Value) {
    let mut body = json!({
        "model": "m",
        "messages": messages.iter().map(|(role, text)| json!({"role": role, "content": text})).collect::<Vec<_>>(),
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            body.insert(k.clone(), v.clone());
        }
    }
    let mut request = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(&body);
    if let Some(session) = session {
        request = request.header("x-session-id", session);
    }
    crate::support::respond(request).await
}

/// Which engine served `marker` (a conversation's first user message), asserting it was exactly one.
fn home_of(engines: &[Engine], marker: &str) -> usize {
    let holders: Vec<usize> = (0..engines.len())
        .filter(|&i| engines[i].served().iter().any(|m| m == marker))
        .collect();
    assert_eq!(holders.len(), 1, "'{marker}' was served by {holders:?}");
    holders[0]
}

fn served_count(engine: &Engine, marker: &str) -> usize {
    engine.served().iter().filter(|m| *m == marker).count()
}

/// A conversation of `turns` turns: the history grows as an agent's does.
async fn conversation(gateway: &Gateway, session: Option<&str>, marker: &str, turns: usize) {
    let mut history: Vec<(String, String)> = vec![
        ("system".into(), "You are a coding agent.".into()),
        ("user".into(), marker.into()),
    ];
    for turn in 0..turns {
        let messages: Vec<(&str, &str)> = history
            .iter()
            .map(|(r, t)| (r.as_str(), t.as_str()))
            .collect();
        let (status, _, body) = chat(gateway, session, &messages, json!({})).await;
        assert_eq!(status, 200, "{body}");
        let reply = body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        history.push(("assistant".into(), reply));
        history.push(("user".into(), format!("turn {turn} of {marker}")));
    }
}

#[tokio::test]
async fn sessions_stay_on_one_instance_and_spread_over_all() {
    let engines = engines(3).await;
    let gateway = Gateway::start(&config(&engines, "", "")).await;
    // With a session header, and without one: then the key is the prompt's start.
    for i in 0..30 {
        conversation(
            &gateway,
            Some(&format!("s-{i}")),
            &format!("header session {i}"),
            3,
        )
        .await;
        conversation(&gateway, None, &format!("anonymous session {i}"), 3).await;
    }
    for kind in ["header", "anonymous"] {
        let mut per_engine = [0usize; 3];
        for i in 0..30 {
            let marker = format!("{kind} session {i}");
            let home = home_of(&engines, &marker);
            assert_eq!(served_count(&engines[home], &marker), 3, "{marker}");
            per_engine[home] += 1;
        }
        assert!(per_engine.iter().all(|&n| n >= 3), "{kind}: {per_engine:?}");
    }
    // Idle instances: every first and second turn went home, every third followed the table there.
    let text = gateway.get_text("/metrics").await;
    for series in [
        r#"upstream_affinity_routed_total{backend="fleet",decision="home"} 120"#,
        r#"upstream_affinity_routed_total{backend="fleet",decision="sticky"} 60"#,
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    let health = gateway.get_json("/health").await;
    assert_eq!(
        health["backends"]["fleet"]["load_balancing"],
        "prefix_affinity"
    );
    assert_eq!(health["backends"]["fleet"]["affinity"]["sessions"], 60);
}

#[tokio::test]
async fn the_user_field_and_anthropic_metadata_key_a_session() {
    let engines = engines(3).await;
    let gateway = Gateway::start(&config(&engines, "", "")).await;
    // Different first messages, one user: one instance.
    for i in 0..6 {
        let marker = format!("alice question {i}");
        let (status, _, body) = chat(
            &gateway,
            None,
            &[("user", &marker)],
            json!({"user": "alice"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let alice: Vec<usize> = (0..6)
        .map(|i| home_of(&engines, &format!("alice question {i}")))
        .collect();
    assert!(alice.iter().all(|&h| h == alice[0]), "{alice:?}");
    // Claude Code puts its session in metadata.user_id; the Anthropic front door reads it.
    for i in 0..6 {
        let marker = format!("claude turn {i}");
        let response = client()
            .post(gateway.url("/v1/messages"))
            .json(&json!({"model": "m", "max_tokens": 16,
                "metadata": {"user_id": "user_ab12_account_cd34_session_ef56"},
                "messages": [{"role": "user", "content": marker}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let claude: Vec<usize> = (0..6)
        .map(|i| home_of(&engines, &format!("claude turn {i}")))
        .collect();
    assert!(claude.iter().all(|&h| h == claude[0]), "{claude:?}");
}

/// The first session id (`prefix-N`) whose home is engine `target`, found by asking the gateway; the
/// probe requests are served at home and leave no state behind.
async fn session_homed_on(
    gateway: &Gateway,
    engines: &[Engine],
    target: usize,
    prefix: &str,
) -> String {
    for k in 0..200 {
        let session = format!("{prefix}-{k}");
        let marker = format!("probe {session}");
        let (status, _, _) = chat(gateway, Some(&session), &[("user", &marker)], json!({})).await;
        assert_eq!(status, 200);
        if home_of(engines, &marker) == target {
            return session;
        }
    }
    panic!("no session homed on engine {target}");
}

#[tokio::test]
async fn engine_metrics_move_a_session_off_a_queueing_instance_and_show_in_health() {
    let engines = engines(3).await;
    let gateway = Gateway::start(&config(
        &engines,
        "    engine_load: { interval_s: 0.05 }",
        "",
    ))
    .await;
    let session = session_homed_on(&gateway, &engines, 0, "s").await;
    let turn = |text: &'static str| {
        let (gateway, session) = (&gateway, session.as_str());
        async move {
            let messages = [("user", "first"), ("assistant", "ok"), ("user", text)];
            let (status, _, body) = chat(gateway, Some(session), &messages, json!({})).await;
            assert_eq!(status, 200, "{body}");
        }
    };
    // The session's instance reports a long queue (load from other clients); the others are idle.
    engines[0].report(20, 10);
    eventually(
        "the gateway read engine 0's queue",
        Duration::from_secs(5),
        || async {
            gateway.get_json("/health").await["backends"]["fleet"]["instances"][0]["engine"]["waiting"] == 10
        },
    )
    .await;
    turn("while queued").await;
    let moved_to = home_of(&engines, "first");
    assert_ne!(moved_to, 0, "moved off the queueing instance");
    // Its queue gone, engine 0 would do — but the session's cache is where it moved, and it stays there.
    engines[0].report(1, 0);
    eventually(
        "the gateway read engine 0's empty queue",
        Duration::from_secs(5),
        || async {
            gateway.get_json("/health").await["backends"]["fleet"]["instances"][0]["engine"]["waiting"] == 0
        },
    )
    .await;
    turn("queue gone").await;
    assert_eq!(
        served_count(&engines[moved_to], "first"),
        2,
        "the moved session follows its cache"
    );

    let health = gateway.get_json("/health").await;
    let engine = &health["backends"]["fleet"]["instances"][0]["engine"];
    assert_eq!(engine["running"], 1, "{health}");
    assert_eq!(
        engine["slots"], 20,
        "learned from the reading with a queue: {health}"
    );
    assert_eq!(engine["kv_cache_usage"], 0.25, "{health}");
    assert_eq!(engine["fresh"], true, "{health}");
    let text = gateway.get_text("/metrics").await;
    let instance = format!("instance=\"{}/v1\"", engines[0].base());
    for series in [
        format!("upstream_engine_requests_running{{backend=\"fleet\",{instance}}} 1"),
        format!("upstream_engine_requests_waiting{{backend=\"fleet\",{instance}}} 0"),
        format!("upstream_engine_kv_cache_usage{{backend=\"fleet\",{instance}}} 0.25"),
        r#"upstream_affinity_routed_total{backend="fleet",decision="overflow"} 1"#.to_owned(),
        r#"upstream_affinity_routed_total{backend="fleet",decision="sticky"} 1"#.to_owned(),
    ] {
        assert!(text.contains(&series), "{series} missing:\n{text}");
    }
}

#[tokio::test]
async fn llama_cpp_slots_are_read_without_metrics() {
    let engines = engines(1).await;
    *engines[0].state.slots.lock().unwrap() = (4, 3);
    let gateway = Gateway::start(&config(
        &engines,
        "    engine_load: { interval_s: 0.05, metrics_path: '', slots: true }",
        "",
    ))
    .await;
    eventually(
        "the gateway read the slots",
        Duration::from_secs(5),
        || async {
            gateway.get_json("/health").await["backends"]["fleet"]["instances"][0]["engine"]["slots"] == 4
        },
    )
    .await;
    let health = gateway.get_json("/health").await;
    let engine = &health["backends"]["fleet"]["instances"][0]["engine"];
    assert_eq!(
        (engine["running"].clone(), engine["waiting"].clone()),
        (json!(3), json!(0))
    );
    assert_eq!(
        engines[0].state.scrapes.load(Ordering::Relaxed),
        0,
        "no /metrics asked"
    );
}

#[tokio::test]
async fn a_killed_instance_moves_its_sessions_without_failures_and_few_move_back() {
    let engines = engines(3).await;
    let gateway = Gateway::start(&config(
        &engines,
        "    health: { error_threshold: 1, cooldown_s: 0.3 }",
        "",
    ))
    .await;
    let markers: Vec<String> = (0..24).map(|i| format!("agent run {i}")).collect();
    let send = |i: usize, turn: usize| {
        let session = format!("run-{i}");
        let marker = markers[i].clone();
        let gateway = &gateway;
        async move {
            let text = format!("turn {turn}");
            let (status, _, body) = chat(
                gateway,
                Some(&session),
                &[("user", &marker), ("assistant", "ok"), ("user", &text)],
                json!({}),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    for i in 0..24 {
        send(i, 0).await;
    }
    let homes: Vec<usize> = markers.iter().map(|m| home_of(&engines, m)).collect();
    let victim = homes[0];
    let on_victim: Vec<usize> = (0..24).filter(|&i| homes[i] == victim).collect();
    // Turn 1 of two of the victim's sessions is in flight there when it dies (two: more at once would
    // be spread by the load bound).
    assert!(on_victim.len() >= 2, "{homes:?}");
    engines[victim].gate();
    let in_flight = futures_util::future::join_all(on_victim[..2].iter().map(|&i| send(i, 1)));
    let killer = async {
        eventually(
            "the victim holds two requests",
            Duration::from_secs(5),
            || async { engines[victim].state.at_gate.load(Ordering::Relaxed) == 2 },
        )
        .await;
        engines[victim].kill();
    };
    tokio::join!(in_flight, killer);
    engines[victim].release();
    for i in 0..24 {
        if !on_victim[..2].contains(&i) {
            send(i, 1).await;
        }
    }
    // Every session still lives on one instance: the victim's moved, the others did not.
    let moved_to = |i: usize| -> Vec<usize> {
        (0..3)
            .filter(|&e| e != victim && served_count(&engines[e], &markers[i]) > 0)
            .collect()
    };
    for (i, &home) in homes.iter().enumerate() {
        let now = moved_to(i);
        if home == victim {
            assert_eq!(now.len(), 1, "session {i} split over {now:?}");
        } else {
            assert_eq!(now, vec![home], "session {i} moved though its home lived");
        }
    }
    // The victim comes back: its old sessions stay where their cache now is.
    engines[victim].restart().await;
    let before = engines[victim].count();
    eventually(
        "the victim's breaker lets a probe through",
        Duration::from_secs(5),
        || async {
            gateway.get_json("/health").await["backends"]["fleet"]["instances"][victim]["retry_in_s"].is_null()
        },
    )
    .await;
    for &i in &on_victim {
        send(i, 2).await;
    }
    assert_eq!(engines[victim].count(), before, "moved sessions went back");
    // New sessions do reach it.
    for i in 0..30 {
        conversation(
            &gateway,
            Some(&format!("late-{i}")),
            &format!("late session {i}"),
            1,
        )
        .await;
    }
    assert!(
        engines[victim].count() > before,
        "no new session reached the returned instance"
    );
}

#[tokio::test]
async fn a_full_queue_is_refused_with_retry_after_and_waiters_are_served_in_order() {
    let engines = engines(1).await;
    let gateway = Gateway::start(&config(
        &engines,
        "    max_in_flight: 1\n    queue: { max_waiting: 2, max_wait_s: 10 }",
        "",
    ))
    .await;
    engines[0].gate();
    let ask = |marker: &'static str| {
        let gateway = &gateway;
        async move { chat(gateway, None, &[("user", marker)], json!({})).await }
    };
    let first = ask("first");
    let queued = async {
        eventually(
            "the first request reached the engine",
            Duration::from_secs(5),
            || async { engines[0].state.at_gate.load(Ordering::Relaxed) == 1 },
        )
        .await;
        let second = ask("second");
        let third = async {
            eventually(
                "the second request waits",
                Duration::from_secs(5),
                || async {
                    gateway.get_json("/health").await["backends"]["fleet"]["queue"]["waiting"] == 1
                },
            )
            .await;
            ask("third").await
        };
        let refused = async {
            eventually("two requests wait", Duration::from_secs(5), || async {
                gateway.get_json("/health").await["backends"]["fleet"]["queue"]["waiting"] == 2
            })
            .await;
            // The queue is full: refused at once, in each front door's error shape.
            let started = Instant::now();
            let (status, headers, body) = ask("fourth").await;
            assert!(started.elapsed() < Duration::from_secs(2));
            assert_eq!(status, 503, "{body}");
            assert_eq!(headers["retry-after"], "1");
            assert_eq!(body["error"]["code"], "overloaded", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("queue.max_waiting"),
                "{body}"
            );
            let response = client()
                .post(gateway.url("/v1/messages"))
                .json(&json!({"model": "m", "max_tokens": 8,
                    "messages": [{"role": "user", "content": "fifth"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()["retry-after"], "1");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
            engines[0].release();
        };
        let (second, third, ()) = tokio::join!(second, third, refused);
        (second, third)
    };
    let (first, (second, third)) = tokio::join!(first, queued);
    for (status, _, body) in [first, second, third] {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(engines[0].served(), ["first", "second", "third"]);
    let text = gateway.get_text("/metrics").await;
    assert!(
        text.contains(r#"upstream_queue_refused_total{backend="fleet",reason="queue_full"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"upstream_queue_waiting{backend="fleet"} 0"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_wait_that_runs_out_is_a_503_not_a_hang() {
    let engines = engines(1).await;
    let gateway = Gateway::start(&config(
        &engines,
        "    max_in_flight: 1\n    queue: { max_wait_s: 0.2, retry_after_s: 3 }",
        "",
    ))
    .await;
    engines[0].gate();
    let held = chat(&gateway, None, &[("user", "held")], json!({"stream": true}));
    let late = async {
        eventually(
            "the first request holds the slot",
            Duration::from_secs(5),
            || async { engines[0].state.at_gate.load(Ordering::Relaxed) == 1 },
        )
        .await;
        let started = Instant::now();
        let (status, headers, body) = chat(&gateway, None, &[("user", "late")], json!({})).await;
        let waited = started.elapsed();
        assert_eq!(status, 503, "{body}");
        assert_eq!(headers["retry-after"], "3");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("queue.max_wait_s"),
            "{body}"
        );
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        engines[0].release();
    };
    let ((status, _, _), ()) = tokio::join!(held, late);
    assert_eq!(status, 200);
    assert_eq!(engines[0].served(), ["held"]);
}

#[tokio::test]
async fn gateway_replicas_share_moved_sessions_through_redis() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let engines = engines(3).await;
    let top = format!(
        "state: {{ redis_url: '{}', key_prefix: fleet27 }}",
        redis.url()
    );
    let yaml = config(&engines, "", &top);
    let first = Gateway::start(&yaml).await;
    let second = Gateway::start(&yaml).await;
    let session = session_homed_on(&first, &engines, 0, "shared").await;
    // Engine 0 fails one request of the first replica: its breaker opens there (only there), and the
    // session moves to its next instance.
    engines[0].state.fail_next.store(1, Ordering::Relaxed);
    let (status, _, _) = chat(&first, Some(&session), &[("user", "moved turn")], json!({})).await;
    assert_eq!(status, 200);
    let moved_to = home_of(&engines, "moved turn");
    assert_ne!(moved_to, 0);
    eventually("the move is in redis", Duration::from_secs(5), || async {
        !redis.keys("fleet27:affinity:").is_empty()
    })
    .await;
    // The second replica never saw engine 0 fail: alone it would send the session home. It follows the
    // shared table to where the session's cache is.
    let (status, _, _) = chat(&second, Some(&session), &[("user", "next turn")], json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(home_of(&engines, "next turn"), moved_to);
    assert_eq!(
        second.get_json("/health").await["backends"]["fleet"]["instances"][0]["healthy"],
        true
    );
    // A session that never moved has no entry anywhere and both replicas send it home.
    let other = session_homed_on(&second, &engines, moved_to, "other").await;
    let (status, _, _) = chat(&first, Some(&other), &[("user", "other turn")], json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(home_of(&engines, "other turn"), moved_to);
    assert_eq!(redis.keys("fleet27:affinity:").len(), 1);
}

#[test]
fn affinity_and_queue_settings_are_checked() {
    let parse = |yaml: &str| {
        ai_gateway::config::parse_str(
            yaml,
            ai_gateway::config::Format::Yaml,
            &ai_gateway::config::Env::from_pairs(std::iter::empty::<(&str, &str)>()),
        )
    };
    let base = "backends:\n  v:\n    type: openai\n    url: http://127.0.0.1:1\n";
    let (path, message) =
        parse(&format!("{base}    affinity: {{ load_factor: 1.5 }}\n")).unwrap_err();
    assert_eq!(path.as_deref(), Some("backends.v.affinity"), "{message}");
    assert!(message.contains("prefix_affinity"), "{message}");
    let (path, message) = parse(&format!(
        "{base}    load_balancing: prefix_affinity\n    affinity: {{ load_factor: 0.5 }}\n"
    ))
    .unwrap_err();
    assert_eq!(path.as_deref(), Some("backends.v.affinity"));
    assert!(message.contains("load_factor is 0.5"), "{message}");
    let (path, message) = parse(&format!("{base}    queue: {{ max_waiting: 3 }}\n")).unwrap_err();
    assert_eq!(path.as_deref(), Some("backends.v.queue"));
    assert!(message.contains("max_in_flight"), "{message}");
    let (path, _) = parse(&format!("{base}    max_in_flight: 0\n")).unwrap_err();
    assert_eq!(path.as_deref(), Some("backends.v.max_in_flight"));
    let (path, message) =
        parse(&format!("{base}    engine_load: {{ interval_s: -1 }}\n")).unwrap_err();
    assert_eq!(path.as_deref(), Some("backends.v.engine_load"));
    assert!(message.contains("interval_s is -1"), "{message}");
    assert!(parse(&format!(
        "{base}    load_balancing: prefix_affinity\n    max_in_flight: 8\n    engine_load: {{}}\n    affinity: {{ headers: [x-conversation-id] }}\n"
    ))
    .is_ok());
}
