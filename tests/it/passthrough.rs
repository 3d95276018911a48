//! OpenAI-compatible backends: body fidelity, model rewrite, keys, ids, streaming relay, fault mapping.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::mock::{Behavior, Mock, refused_base};
use crate::support::{Gateway, client, sse_data};

fn one_backend(url: &str, extra: &str) -> String {
    format!("default_backend: vllm\nbackends:\n  vllm:\n    type: openai\n    url: {url}\n{extra}")
}

#[tokio::test]
async fn body_is_forwarded_as_received_with_only_the_model_rewritten() {
    let mock = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "{}models:\n  r1: {{ backend: vllm, model: deepseek-r1 }}\n",
        one_backend(&format!("{}/v1", mock.base()), "")
    ))
    .await;
    let sent = json!({
        "model": "r1",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "response_format": {"type": "json_object"},
        "x_vendor_extra": {"nested": [1, 2, {"model": "untouched"}]},
        "temperature": 0.25
    });
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .header("x-request-id", "fwd-1")
        .json(&sent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "fwd-1");
    assert_eq!(body["backend"], "vllm");
    assert_eq!(body["system_fingerprint"], "fp_mock");
    let received = &mock.requests()[0];
    assert_eq!(received.path, "/v1/chat/completions");
    let mut expected = sent.clone();
    expected["model"] = json!("deepseek-r1");
    assert_eq!(received.body, expected);
    assert_eq!(received.headers["x-request-id"], "fwd-1");
}

#[tokio::test]
async fn backend_key_is_injected_and_client_auth_passes_through_otherwise() {
    let mock = Mock::start().await;
    let gateway = Gateway::start_with_env(
        &format!(
            "backends:\n  keyed: {{ type: openai, url: '{0}', api_key: '${{VLLM_KEY}}' }}\n  open: {{ type: openai, url: '{0}' }}\n",
            mock.base()
        ),
        &[("VLLM_KEY", "sk-upstream")],
    )
    .await;
    for model in ["keyed", "open"] {
        let response = client()
            .post(gateway.url("/v1/chat/completions"))
            .header("authorization", "Bearer sk-client")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let requests = mock.requests();
    assert_eq!(requests[0].headers["authorization"], "Bearer sk-upstream");
    assert_eq!(requests[1].headers["authorization"], "Bearer sk-client");
    let debug = format!("{:?}", gateway.state.snapshot().config);
    assert!(
        !debug.contains("sk-upstream"),
        "secrets must not reach Debug output"
    );
}

#[tokio::test]
async fn credentials_in_the_backend_url_are_sent_as_basic_auth_and_never_shown() {
    let mock = Mock::start().await;
    let url = format!("http://proxy%2Duser:s3cr%40t@{}/v1", mock.addr);
    let gateway = Gateway::start(&one_backend(&url, "")).await;
    let (status, _) = gateway
        .chat(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(status, 200);
    let requests = mock.requests();
    // base64("proxy-user:s3cr@t")
    assert_eq!(
        requests[0].headers["authorization"],
        "Basic cHJveHktdXNlcjpzM2NyQHQ="
    );
    assert_eq!(requests[0].path, "/v1/chat/completions");
    let debug = format!("{:?}", gateway.state.snapshot().config);
    assert!(!debug.contains("s3cr"), "{debug}");
    let health = client().get(gateway.url("/health")).send().await.unwrap();
    let health = health.text().await.unwrap();
    assert!(!health.contains("s3cr"), "{health}");
}

#[tokio::test]
async fn completions_and_embeddings_pass_through() {
    let mock = Mock::start().await;
    let gateway = Gateway::start(&one_backend(&mock.base(), "")).await;
    let body: Value = gateway
        .post(
            "/v1/completions",
            r#"{"model":"m","prompt":"Hello!","max_tokens":20}"#,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["text"], "hello from mock");
    let body: Value = gateway
        .post("/v1/embeddings", r#"{"model":"m","input":"hello"}"#)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"][0]["embedding"], json!([0.1, 0.2, 0.3]));
    let paths: Vec<String> = mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/v1/completions", "/v1/embeddings"]);
}

#[tokio::test]
async fn upstream_faults_are_classified() {
    let mock = Mock::start().await;
    let gateway = Gateway::start(&one_backend(
        &mock.base(),
        "    timeout_s: 0.3\n    retries: 0\n",
    ))
    .await;
    let chat = json!({"model": "vllm", "messages": [{"role": "user", "content": "x"}]});

    mock.script([Behavior::Status(
        500,
        r#"{"error":{"message":"boom"}}"#,
        None,
    )]);
    let (status, body) = gateway.chat(chat.clone()).await;
    assert_eq!(status, 502);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("vllm") && message.contains("HTTP 500") && message.contains("boom"),
        "{message}"
    );

    mock.script([Behavior::Status(
        429,
        r#"{"error":{"message":"slow down"}}"#,
        Some(7),
    )]);
    let response = gateway
        .post("/v1/chat/completions", &chat.to_string())
        .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");

    mock.script([Behavior::Hang]);
    let (status, body) = gateway.chat(chat.clone()).await;
    assert_eq!(status, 504);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );

    mock.script([Behavior::Status(
        400,
        r#"{"error":{"message":"bad model","type":"invalid_request_error"}}"#,
        None,
    )]);
    let (status, body) = gateway.chat(chat.clone()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "bad model");

    let refused = Gateway::start(&one_backend(&refused_base().await, "")).await;
    let (status, body) = refused.chat(chat.clone()).await;
    assert_eq!(status, 502);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connection failed")
    );

    let (status, _) = gateway.chat(chat).await;
    assert_eq!(status, 200, "the gateway keeps serving after faults");
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_an_error_event() {
    let mock = Mock::start().await;
    mock.script([Behavior::StreamCut(2)]);
    let gateway = Gateway::start(&one_backend(&mock.base(), "")).await;
    let response = gateway
        .post(
            "/v1/chat/completions",
            r#"{"stream":true,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
    assert_eq!(response.status(), 200);
    let data = sse_data(&response.text().await.unwrap());
    // Issue 23: the error chunk ends the stream; no `[DONE]` (the success sentinel) follows it.
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    let error: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream"),
        "{error}"
    );
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_chunk_is_an_http_error() {
    let mock = Mock::start().await;
    mock.script([Behavior::StreamCut(0)]);
    let gateway = Gateway::start(&one_backend(&mock.base(), "    retries: 0\n")).await;
    let response = gateway
        .post(
            "/v1/chat/completions",
            r#"{"stream":true,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
    assert_eq!(response.status(), 502);
}

#[tokio::test]
async fn chunks_reach_the_client_before_the_upstream_finishes() {
    let mock = Mock::start().await;
    mock.script([Behavior::Gate]);
    let gateway = Gateway::start(&one_backend(&mock.base(), "")).await;
    let response = gateway
        .post(
            "/v1/chat/completions",
            r#"{"stream":true,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
    let mut body = response.bytes_stream();
    // The upstream holds every chunk after the first until released: the first must arrive anyway.
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("first chunk was buffered by the gateway")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
    mock.release();
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn slow_chunks_arrive_one_by_one_within_the_idle_timeout() {
    let mock = Mock::start().await;
    mock.script([Behavior::Slow(Duration::from_millis(50))]);
    let gateway =
        Gateway::start(&one_backend(&mock.base(), "    stream_idle_timeout_s: 5\n")).await;
    let response = gateway
        .post(
            "/v1/chat/completions",
            r#"{"stream":true,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
    let mut body = response.bytes_stream();
    let mut reads = 0;
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        reads += 1;
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(reads >= 5, "chunks were coalesced: {reads} reads");
    let data = sse_data(&text);
    assert_eq!(data.len(), 6);
}

/// The idle timeout bounds each gap between chunks, not the whole stream: a stream whose chunks come
/// every 100 ms runs well past a 250 ms idle timeout and still ends cleanly.
#[tokio::test]
async fn the_idle_timeout_applies_per_gap_not_to_the_whole_stream() {
    let mock = Mock::start().await;
    mock.script([Behavior::Slow(Duration::from_millis(100))]);
    let gateway = Gateway::start(&one_backend(
        &mock.base(),
        "    stream_idle_timeout_s: 0.25\n",
    ))
    .await;
    let started = std::time::Instant::now();
    let response = gateway
        .post(
            "/v1/chat/completions",
            r#"{"stream":true,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        started.elapsed() > Duration::from_millis(250),
        "the stream was shorter than the idle timeout, so it proves nothing"
    );
    assert!(!text.contains("error"), "{text}");
    assert_eq!(sse_data(&text).len(), 6);
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let mock = Mock::start().await;
    mock.script([Behavior::Gate]);
    let gateway = Gateway::start(&one_backend(&mock.base(), "")).await;
    let response = gateway
        .post(
            "/v1/chat/completions",
            r#"{"stream":true,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    let cancelled = mock.state.cancel_seen.notified();
    drop(body);
    tokio::time::timeout(Duration::from_secs(10), cancelled)
        .await
        .expect("upstream stream was not cancelled after the client left");
    assert_eq!(
        mock.state
            .cancelled
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}
