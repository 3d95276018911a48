//! The echo backend and routing, driven the way seed 000 and seed 003's READMEs drive them.

use serde_json::{Value, json};

use crate::support::mock::Mock;
use crate::support::{Gateway, client, sse_data};

const DEFAULT: &str = ai_gateway::config::EMBEDDED_DEFAULT;

#[tokio::test]
async fn seed000_method1_echo_keeps_the_custom_request_id() {
    let gateway = Gateway::start(DEFAULT).await;
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .header("Content-Type", "application/json")
        .header("X-Request-ID", "my-custom-id-123")
        .body(r#"{"messages": [{"role": "user", "content": "Hello, world!"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "my-custom-id-123");
    assert_eq!(response.headers()["x-gateway-backend"], "local");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "my-custom-id-123");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Echo: Hello, world!"
    );
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["backend"], "local");
}

#[tokio::test]
async fn seed000_method2_generates_a_uuid_when_no_id_is_given() {
    let gateway = Gateway::start(DEFAULT).await;
    let response = gateway
        .post(
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "Hi, baby!"}]}"#,
        )
        .await;
    let header = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    assert_eq!(id, header);
}

#[tokio::test]
async fn request_id_header_alias_is_honoured() {
    let gateway = Gateway::start(DEFAULT).await;
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .header("request-id", "alias-7")
        .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "alias-7");
    assert_eq!(response.json::<Value>().await.unwrap()["id"], "alias-7");
}

#[tokio::test]
async fn seed000_method3_streams_several_chunks() {
    let gateway = Gateway::start(DEFAULT).await;
    let response = gateway
        .post(
            "/v1/chat/completions",
            r#"{"stream": true, "messages": [{"role": "user", "content": "This is a streaming test."}]}"#,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(response.headers()["x-gateway-backend"], "local");
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let data = sse_data(&response.text().await.unwrap());
    assert!(data.len() >= 4, "several chunks expected, got {data:?}");
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], json!({}));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Echo: This is a streaming test.");
    assert!(
        chunks
            .iter()
            .all(|c| c["id"] == id.as_str() && c["object"] == "chat.completion.chunk")
    );
}

#[tokio::test]
async fn stream_usage_chunk_when_asked() {
    let gateway = Gateway::start(DEFAULT).await;
    let response = gateway
        .post(
            "/v1/chat/completions",
            r#"{"stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Hello world"}]}"#,
        )
        .await;
    let data = sse_data(&response.text().await.unwrap());
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5})
    );
}

/// HTTP/2 by prior knowledge (h2c) on the same port: API routes, a stream, and a router route.
#[tokio::test]
async fn http2_clients_are_served_on_the_same_port() {
    let gateway = Gateway::start(DEFAULT).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(gateway.url("/v1/chat/completions"))
        .header("x-request-id", "h2-1")
        .json(&json!({"messages": [{"role": "user", "content": "over h2"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "h2-1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Echo: over h2");

    let response = h2
        .post(gateway.url("/v1/messages"))
        .json(&json!({"model": "m", "max_tokens": 16, "stream": true,
            "messages": [{"role": "user", "content": "streamed over h2"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let text = response.text().await.unwrap();
    assert!(text.contains("event: message_stop"), "{text}");
    let deltas: String = sse_data(&text)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|e| e["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(deltas, "Echo: streamed over h2");

    let response = h2.get(gateway.url("/v1/models")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
}

fn seed_000_config(remote: &str) -> String {
    format!(
        "default_backend: local\nbackends:\n  local:\n    type: local\n    url: http://127.0.0.1:8081\n  modal:\n    type: modal\n    url: {remote}\n  modal_vllm:\n    type: vllm\n    url: {remote}\n"
    )
}

#[tokio::test]
async fn seed000_routing_local_remote_and_unknown_model() {
    let mock = Mock::start().await;
    let gateway = Gateway::start(&seed_000_config(&mock.base())).await;

    let (status, local) = gateway
        .chat(json!({"model": "local", "messages": [{"role": "user", "content": "Hello local"}]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        local["choices"][0]["message"]["content"],
        "Echo: Hello local"
    );
    assert!(local["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let (status, remote) = gateway
        .chat(json!({"model": "modal", "stream": false, "messages": [{"role": "user", "content": "What is the capital city in US"}]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        remote["choices"][0]["message"]["content"],
        "hello from mock"
    );
    assert_eq!(remote["backend"], "modal");
    assert!(uuid::Uuid::parse_str(remote["id"].as_str().unwrap()).is_ok());
    assert_eq!(remote["usage"]["completion_tokens"], 4);
    assert_eq!(mock.requests()[0].body["model"], "modal");

    let response = gateway
        .post(
            "/v1/chat/completions",
            r#"{"model":"modal","stream":true,"messages":[{"role":"user","content":"What is the capital city in US"}]}"#,
        )
        .await;
    assert_eq!(response.headers()["x-gateway-backend"], "modal");
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["id"] == id.as_str()));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "hello from mock");

    let (status, unknown) = gateway
        .chat(json!({"model": "unknown-model", "messages": [{"role": "user", "content": "Where am I?"}]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        unknown["choices"][0]["message"]["content"],
        "Echo: Where am I?"
    );
    assert_eq!(unknown["backend"], "local");
}

#[tokio::test]
async fn seed003_requests_and_response_shape() {
    let mock = Mock::start().await;
    let config = format!(
        "default_backend: local\nbackends:\n- name: local\n  type: echo\n- name: remote\n  type: http\n  url: {}\n  timeout: 60.0\n",
        mock.base()
    );
    let gateway = Gateway::start(&config).await;
    let (status, body) = gateway
        .chat(json!({"model": "local", "messages": [{"role": "user", "content": "Hello world"}]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["backend"], "local");
    assert_eq!(body["choices"][0]["index"], 0);
    assert_eq!(
        body["choices"][0]["message"],
        json!({"role": "assistant", "content": "Echo: Hello world"})
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5})
    );

    let (_, remote) = gateway
        .chat(json!({"model": "remote", "messages": [{"role": "user", "content": "Hello"}]}))
        .await;
    assert_eq!(remote["backend"], "remote");
    assert_eq!(
        remote["choices"][0]["message"]["content"],
        "hello from mock"
    );

    let (_, fallback) = gateway
        .chat(json!({"messages": [{"role": "user", "content": "Hello"}]}))
        .await;
    assert_eq!(fallback["backend"], "local");
    assert_eq!(fallback["choices"][0]["message"]["content"], "Echo: Hello");
}

#[tokio::test]
async fn echo_answers_completions_and_embeddings() {
    let gateway = Gateway::start(DEFAULT).await;
    let body: Value = gateway
        .post("/v1/completions", r#"{"prompt":"Hello!","max_tokens":20}"#)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "Echo: Hello!");

    let streamed = gateway
        .post("/v1/completions", r#"{"prompt":"a b","stream":true}"#)
        .await
        .text()
        .await
        .unwrap();
    let data = sse_data(&streamed);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, "Echo: a b");

    let body: Value = gateway
        .post(
            "/v1/embeddings",
            r#"{"input":["one","two"],"model":"local"}"#,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["index"], 1);
    assert!(body["data"][0]["embedding"].as_array().unwrap().len() >= 8);
}

#[tokio::test]
async fn models_health_and_ready() {
    let gateway = Gateway::start(
        "default_backend: local\nbackends:\n  local: { type: echo }\n  vllm: { type: openai, instances: [{url: 'http://127.0.0.1:9/v1'}, {url: 'http://127.0.0.1:10', weight: 2}] }\nmodels:\n  deepseek-r1: vllm\n",
    )
    .await;
    let models: Value = client()
        .get(gateway.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["deepseek-r1", "local", "vllm"]);
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["object"] == "model")
    );

    let health: Value = client()
        .get(gateway.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["uptime_seconds"].is_u64());
    assert_eq!(
        health["backends"]["vllm"]["instances"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        health["backends"]["vllm"]["instances"][1]["url"],
        "http://127.0.0.1:10/v1"
    );

    let ready = client()
        .get(gateway.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn browsers_get_cors_headers_and_preflights_are_answered() {
    let gateway = Gateway::start(DEFAULT).await;
    let body = r#"{"messages": [{"role": "user", "content": "hi"}]}"#;
    let from_browser = client()
        .post(gateway.url("/v1/chat/completions"))
        .header("origin", "https://app.example")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(from_browser.status(), 200);
    assert_eq!(from_browser.headers()["access-control-allow-origin"], "*");
    assert!(from_browser.headers()["x-request-id"].len() > 10);
    // Clients that are not browsers send no Origin and get no CORS headers.
    let from_server = client()
        .post(gateway.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(from_server.status(), 200);
    assert!(
        from_server
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let preflight = client()
        .request(reqwest::Method::OPTIONS, gateway.url("/v1/messages"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-api-key, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    // Answered by the CORS layer, still with a request id like every other response.
    assert!(preflight.headers().contains_key("x-request-id"));
    assert!(
        preflight
            .headers()
            .contains_key("access-control-allow-methods")
    );
}

#[tokio::test]
async fn a_configured_cors_origin_is_the_only_one_allowed() {
    let gateway = Gateway::start(
        "server: { cors_allow_origin: 'https://app.example' }\ndefault_backend: local\nbackends:\n  local: { type: echo }\n",
    )
    .await;
    // The allowed origin is always the one named: a browser on any other origin sees a mismatch
    // and keeps the response from the page.
    for origin in ["https://app.example", "https://evil.example"] {
        let response = client()
            .get(gateway.url("/v1/models"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "https://app.example",
            "{origin}"
        );
    }
}

/// The allowed origin a browser sees in a preflight and in an API POST's answer.
async fn allowed_origin(gateway: &Gateway, origin: &str) -> (String, String) {
    let preflight = client()
        .request(
            reqwest::Method::OPTIONS,
            gateway.url("/v1/chat/completions"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    let post = client()
        .post(gateway.url("/v1/chat/completions"))
        .header("origin", origin)
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    let header = |response: &reqwest::Response| {
        response.headers()["access-control-allow-origin"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    (header(&preflight), header(&post))
}

#[tokio::test]
async fn a_reload_applies_a_new_cors_origin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let config = |origin: &str| {
        format!(
            "server: {{ cors_allow_origin: '{origin}' }}\ndefault_backend: local\nbackends:\n  local: {{ type: echo }}\n"
        )
    };
    std::fs::write(&path, config("https://old.example")).unwrap();
    let (gateway, _) = Gateway::start_from_file(&path, false).await;
    let old = "https://old.example".to_owned();
    assert_eq!(
        allowed_origin(&gateway, "https://new.example").await,
        (old.clone(), old)
    );

    std::fs::write(&path, config("https://new.example")).unwrap();
    assert_eq!(gateway.admin_reload().await.status(), 200);
    let new = "https://new.example".to_owned();
    assert_eq!(
        allowed_origin(&gateway, "https://new.example").await,
        (new.clone(), new)
    );

    std::fs::write(&path, config("*")).unwrap();
    assert_eq!(gateway.admin_reload().await.status(), 200);
    let any = "*".to_owned();
    assert_eq!(
        allowed_origin(&gateway, "https://new.example").await,
        (any.clone(), any)
    );
    // Clients that send no Origin still get no CORS headers.
    let (status, headers, _) = gateway
        .send(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert!(headers.get("access-control-allow-origin").is_none());
}

/// A request runs on the config that was live when its head came in: a reload while its body is
/// still on the way (here: after the server's `100 Continue`) does not move it to the new routes;
/// the next request takes them.
#[tokio::test]
async fn a_request_keeps_the_config_its_head_came_in_under() {
    a_request_keeps_its_config("").await;
    // A browser's request (with `Origin`) goes through the router and CORS: the same holds.
    a_request_keeps_its_config("origin: https://app.example\r\n").await;
}

async fn a_request_keeps_its_config(extra_header: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let config =
        |name: &str| format!("default_backend: {name}\nbackends:\n  {name}: {{ type: echo }}\n");
    std::fs::write(&path, config("before")).unwrap();
    let (gateway, _) = Gateway::start_from_file(&path, false).await;

    let body = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
    let mut client = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n{extra_header}\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while !received.ends_with(b"\r\n\r\n") {
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before 100 Continue");
        received.extend_from_slice(&chunk[..n]);
    }
    assert!(
        received.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&received)
    );

    std::fs::write(&path, config("after")).unwrap();
    assert_eq!(gateway.admin_reload().await.status(), 200);
    client.write_all(body.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).contains("\"backend\"") {
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the answer");
        answer.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""backend":"before""#), "{answer}");

    let (status, _, next) = gateway
        .send(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(next["backend"], "after");
}
