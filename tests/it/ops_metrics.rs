//! `/metrics` after scripted traffic through the real gateway: every series the gateway exports, with
//! its labels, read back with a strict parser of the Prometheus text format.

use serde_json::{Value, json};

use crate::support::mock::{Behavior, Mock, refused_base};
use crate::support::prom::Scrape;
use crate::support::{Gateway, client, sse_data};

async fn scrape(gateway: &Gateway) -> Scrape {
    gateway.metrics().await
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn metrics_cover_success_stream_faults_fallback_breaker_echo_and_unknown_paths() {
    let primary = Mock::start().await;
    let broken = Mock::start().await;
    let pair_a = Mock::start().await;
    let pair_b = Mock::start().await;
    let refused = refused_base().await;
    let dead = refused.replace("http://", "http://scraper:hunter2@");
    let gateway = Gateway::start(&format!(
        "default_backend: primary
models:
  known-model: {{ backend: primary }}
backends:
  primary: {{ type: openai, url: '{primary}' }}
  broken: {{ type: openai, url: '{broken}', retries: 0 }}
  pair:
    type: openai
    retries: 1
    instances: [{{ url: '{pair_a}' }}, {{ url: '{pair_b}' }}]
  flaky: {{ type: openai, url: '{broken}', retries: 0, fallback: [spare] }}
  spare: {{ type: echo }}
  dead: {{ type: openai, url: '{dead}', retries: 0, health: {{ error_threshold: 1, cooldown_s: 60 }} }}
  local: {{ type: echo }}
",
        primary = primary.base(),
        broken = broken.base(),
        pair_a = pair_a.base(),
        pair_b = pair_b.base(),
    ))
    .await;

    // Success, a configured alias and an unknown model (routed to the default backend).
    let (status, body) = gateway.chat(chat("known-model", "hello")).await;
    assert_eq!((status, body["backend"].as_str()), (200, Some("primary")));
    let (status, _) = gateway.chat(chat("client-made-up-model", "hello")).await;
    assert_eq!(status, 200);

    // A streamed success: count what the client receives.
    let streamed = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(&json!({"model": "primary", "stream": true, "messages": [{"role": "user", "content": "s"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let streamed = streamed.text().await.unwrap();
    assert!(streamed.ends_with("data: [DONE]\n\n"), "{streamed}");

    // Upstream 500 with no retry left; then both instances of `pair` failing (retry exhausted).
    broken.script([Behavior::Status(500, r#"{"error":"boom"}"#, None)]);
    let (status, _) = gateway.chat(chat("broken", "x")).await;
    assert_eq!(status, 502);
    pair_a.script([Behavior::Status(503, "{}", None)]);
    pair_b.script([Behavior::Status(503, "{}", None)]);
    let (status, body) = gateway.chat(chat("pair", "x")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(pair_a.requests().len() + pair_b.requests().len(), 2);

    // The primary of `flaky` fails; the echo fallback answers.
    broken.script([Behavior::Status(500, "{}", None)]);
    let (status, body) = gateway.chat(chat("flaky", "one")).await;
    assert_eq!((status, body["backend"].as_str()), (200, Some("spare")));

    // Connection refused opens the breaker of `dead` at the first fault.
    let (status, _) = gateway.chat(chat("dead", "x")).await;
    assert_eq!(status, 502);

    // The in-process echo backend.
    let (status, body) = gateway.chat(chat("local", "hi there")).await;
    assert_eq!((status, body["backend"].as_str()), (200, Some("local")));

    // A path nobody serves.
    let response = client()
        .get(gateway.url("/no/such/path-a1b2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let first = scrape(&gateway).await;
    let m = scrape(&gateway).await;

    // The first scrape is itself counted.
    assert_eq!(
        first.get(
            "http_requests_total",
            &[("method", "GET"), ("path", "/metrics"), ("status", "200")]
        ),
        None
    );
    assert_eq!(
        m.value(
            "http_requests_total",
            &[("method", "GET"), ("path", "/metrics"), ("status", "200")]
        ),
        1.0
    );

    // http_requests_total / http_request_duration_seconds
    let chat_path = ("path", "/v1/chat/completions");
    let post = ("method", "POST");
    assert_eq!(
        m.value("http_requests_total", &[post, chat_path, ("status", "200")]),
        5.0
    );
    assert_eq!(
        m.value("http_requests_total", &[post, chat_path, ("status", "502")]),
        3.0
    );
    assert_eq!(
        m.value(
            "http_request_duration_seconds_count",
            &[post, chat_path, ("status", "200")]
        ),
        5.0
    );
    assert_eq!(
        m.value(
            "http_request_duration_seconds_count",
            &[post, chat_path, ("status", "502")]
        ),
        3.0
    );
    assert_eq!(
        m.value(
            "http_request_duration_seconds_bucket",
            &[post, chat_path, ("status", "200"), ("le", "+Inf")]
        ),
        5.0
    );
    assert!(
        m.value(
            "http_request_duration_seconds_sum",
            &[post, chat_path, ("status", "200")]
        ) > 0.0
    );
    let not_found = m.matching(
        "http_requests_total",
        &[("method", "GET"), ("status", "404")],
    );
    assert_eq!(not_found.len(), 1, "{not_found:?}");
    assert_eq!(not_found[0].value, 1.0);
    assert!(
        !m.text.contains("a1b2"),
        "a raw request path became a label value:\n{}",
        m.text
    );
    // Nothing is in flight any more.
    for s in m.matching("http_requests_in_flight", &[]) {
        assert_eq!(s.value, 0.0, "{s:?}");
    }

    // upstream_requests_total / upstream_request_duration_seconds (time to first byte)
    let openai = ("provider", "openai");
    assert_eq!(
        m.value(
            "upstream_requests_total",
            &[("upstream", "primary"), openai, ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        m.value(
            "upstream_request_duration_seconds_count",
            &[("upstream", "primary"), openai]
        ),
        3.0
    );
    // An upstream that answered 500 did answer: its response is counted with its status.
    assert_eq!(
        m.value(
            "upstream_requests_total",
            &[("upstream", "broken"), openai, ("status", "500")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "upstream_requests_total",
            &[("upstream", "pair"), openai, ("status", "503")]
        ),
        2.0
    );

    // upstream_errors_total{upstream,error_type}
    assert_eq!(
        m.value(
            "upstream_errors_total",
            &[("upstream", "broken"), ("error_type", "status_5xx")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "upstream_errors_total",
            &[("upstream", "pair"), ("error_type", "status_5xx")]
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "upstream_errors_total",
            &[("upstream", "flaky"), ("error_type", "status_5xx")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "upstream_errors_total",
            &[("upstream", "dead"), ("error_type", "connect")]
        ),
        1.0
    );
    assert!(
        m.matching("upstream_errors_total", &[("upstream", "primary")])
            .is_empty()
    );

    // streaming_* : what the client received.
    let events = sse_data(&streamed).len() as f64;
    assert_eq!(m.value("streaming_events_total", &[openai]), events);
    assert_eq!(
        m.value("streaming_bytes_total", &[openai]),
        streamed.len() as f64
    );
    assert_eq!(m.value("streaming_duration_seconds_count", &[openai]), 1.0);

    // time_to_first_token_seconds{backend}: every answered request, streamed or not.
    assert_eq!(
        m.value(
            "time_to_first_token_seconds_count",
            &[("backend", "primary")]
        ),
        3.0
    );
    assert_eq!(
        m.value("time_to_first_token_seconds_count", &[("backend", "spare")]),
        1.0
    );
    assert_eq!(
        m.value("time_to_first_token_seconds_count", &[("backend", "local")]),
        1.0
    );
    assert!(
        m.matching(
            "time_to_first_token_seconds_count",
            &[("backend", "broken")]
        )
        .is_empty()
    );

    // tokens_total{backend,model,direction}: configured names only, anything else is `other`.
    let tokens = |backend: &str, model: &str, direction: &str| {
        m.value(
            "tokens_total",
            &[
                ("backend", backend),
                ("model", model),
                ("direction", direction),
            ],
        )
    };
    assert_eq!(tokens("primary", "known-model", "input"), 3.0);
    assert_eq!(tokens("primary", "known-model", "output"), 4.0);
    assert_eq!(tokens("primary", "other", "input"), 3.0);
    assert_eq!(tokens("primary", "other", "output"), 4.0);
    assert_eq!(tokens("local", "local", "input"), 2.0);
    assert_eq!(tokens("local", "local", "output"), 3.0);
    assert_eq!(tokens("spare", "flaky", "input"), 1.0);
    assert!(!m.text.contains("client-made-up-model"), "{}", m.text);

    // gateway_overhead_seconds: one observation per answered request.
    assert_eq!(m.value("gateway_overhead_seconds_count", &[]), 5.0);
    assert_eq!(m.types["gateway_overhead_seconds"], "histogram");

    // fallbacks_total
    assert_eq!(m.value("fallbacks_total", &[]), 1.0);

    // upstream_instance_state: the breaker of `dead` is open (2), and the label has no credentials.
    let states = m.matching("upstream_instance_state", &[("backend", "dead")]);
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].value, 2.0);
    let instance = &states[0].labels["instance"];
    assert!(
        instance.contains(refused.trim_start_matches("http://")),
        "{instance}"
    );
    assert!(!m.text.contains("hunter2"), "{}", m.text);
    let (status, body) = gateway.chat(chat("dead", "again")).await;
    assert_eq!(status, 502, "{body}");
}

#[tokio::test]
async fn converted_streams_count_the_events_and_bytes_the_client_received() {
    let mock = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "backends:\n  primary: {{ type: openai, url: '{}' }}\n",
        mock.base()
    ))
    .await;
    // An Anthropic client in front of an OpenAI upstream: the stream is converted event by event.
    let response = client()
        .post(gateway.url("/v1/messages"))
        .json(
            &json!({"model": "primary", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "s"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("event: message_stop"), "{body}");
    let events = body.split("\n\n").filter(|f| !f.trim().is_empty()).count();
    assert!(events >= 5, "{body}");
    let m = scrape(&gateway).await;
    let openai = ("provider", "openai");
    assert_eq!(
        m.value("streaming_events_total", &[openai]),
        events as f64,
        "{body}"
    );
    assert_eq!(
        m.value("streaming_bytes_total", &[openai]),
        body.len() as f64
    );
    assert_eq!(m.value("streaming_duration_seconds_count", &[openai]), 1.0);
}

#[tokio::test]
async fn metrics_need_no_client_key() {
    let gateway = Gateway::start(
        "keys:\n  - { name: team-a, key: sk-team-a }\nbackends:\n  local: { type: echo }\n",
    )
    .await;
    // Scraped without any key, although client keys are configured.
    let m = scrape(&gateway).await;
    assert!(m.get("fallbacks_total", &[]) == Some(0.0), "{}", m.text);
    assert!(
        m.get("gateway_overhead_seconds_count", &[]) == Some(0.0),
        "{}",
        m.text
    );
}

#[tokio::test]
async fn echo_streams_count_as_streams() {
    let gateway = Gateway::start(
        "backends:\n  local: { type: echo }\n  paced: { type: echo, chunk_delay_ms: 1 }\n",
    )
    .await;
    let mut received = Vec::new();
    for model in ["local", "paced"] {
        let response = client()
            .post(gateway.url("/v1/chat/completions"))
            .json(&json!({"model": model, "stream": true,
                          "messages": [{"role": "user", "content": "one two three"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.text().await.unwrap();
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
        received.push(body);
    }
    let events: usize = received.iter().map(|b| sse_data(b).len()).sum();
    let bytes: usize = received.iter().map(String::len).sum();
    let m = scrape(&gateway).await;
    let echo = ("provider", "echo");
    assert_eq!(m.value("streaming_events_total", &[echo]), events as f64);
    assert_eq!(m.value("streaming_bytes_total", &[echo]), bytes as f64);
    assert_eq!(m.value("streaming_duration_seconds_count", &[echo]), 2.0);
    assert_eq!(
        m.value("time_to_first_token_seconds_count", &[("backend", "local")]),
        1.0
    );
    assert_eq!(
        m.value("time_to_first_token_seconds_count", &[("backend", "paced")]),
        1.0
    );
}

#[tokio::test]
async fn metrics_disabled_in_config_serve_chat_and_answer_metrics_404() {
    let gateway =
        Gateway::start("metrics: { enabled: false }\nbackends:\n  local: { type: echo }\n").await;
    let (status, body) = gateway.chat(chat("local", "still served")).await;
    assert_eq!((status, body["backend"].as_str()), (200, Some("local")));

    let response = client().get(gateway.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_found_error", "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("metrics are disabled in config"),
        "{message}"
    );
}
