//! Request logs written by the real gateway (`request_log: {enabled: true, dir, format}`): one JSON
//! line per request, non-stream and streamed replies assembled, non-ASCII text raw, tool calls kept,
//! and neither the upstream key nor the client's Authorization anywhere in the file.

use serde_json::{Value, json};

use crate::support::canned::Canned;
use crate::support::{Gateway, client};

const UPSTREAM_KEY: &str = "sk-upstream-secret-4f5e6d";
const CLIENT_AUTH: &str = "Bearer sk-client-secret-9a8b7c";

/// An upstream that answers with non-ASCII text and a tool call, as JSON and as SSE chunks.
async fn upstream() -> Canned {
    let tool_call = json!({"id": "call_w1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\":\"Zürich\"}"}});
    let message =
        json!({"role": "assistant", "content": "Grüße, 世界 🌍", "tool_calls": [tool_call]});
    let reply = json!({
        "id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    });
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let chunks = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Grüße, "}), Value::Null),
        chunk(json!({"content": "世界 🌍"}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_w1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Zürich\"}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
    ];
    Canned::start(reply, chunks).await
}

/// A conversation with a system prompt, non-ASCII user text, an assistant tool call and its result.
fn request(stream: bool) -> Value {
    json!({
        "model": "up",
        "stream": stream,
        "temperature": 0.3,
        "messages": [
            {"role": "system", "content": "Antworte kurz."},
            {"role": "user", "content": "Привет, 你好: weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_prev", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Kyiv\"}"}}]},
            {"role": "tool", "tool_call_id": "call_prev", "content": "−3 °C"},
            {"role": "user", "content": "und Zürich?"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    })
}

/// Send one plain and one streamed request with a client Authorization; return the log file's text.
async fn traffic(format: &str) -> String {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start_with_env(
        &format!(
            "backends:\n  up: {{ type: openai, url: '{}', api_key: '${{UP_KEY}}' }}\nrequest_log: {{ enabled: true, dir: '{}', format: {format} }}\n",
            up.base(),
            dir.path().display()
        ),
        &[("UP_KEY", UPSTREAM_KEY)],
    )
    .await;
    let plain = client()
        .post(gateway.url("/v1/chat/completions"))
        .header("authorization", CLIENT_AUTH)
        .header("x-request-id", "log-plain")
        .json(&request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    let plain: Value = plain.json().await.unwrap();
    assert_eq!(plain["choices"][0]["message"]["content"], "Grüße, 世界 🌍");
    let streamed = client()
        .post(gateway.url("/v1/chat/completions"))
        .header("authorization", CLIENT_AUTH)
        .header("x-request-id", "log-stream")
        .json(&request(true))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let streamed = streamed.text().await.unwrap();
    assert!(streamed.ends_with("data: [DONE]\n\n"), "{streamed}");
    // The upstream got the backend's key, not the client's.
    assert_eq!(
        up.headers()[0]["authorization"],
        format!("Bearer {UPSTREAM_KEY}").as_str()
    );

    gateway.state.flush().await;
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.len() == "YYYYMMDD_HH.jsonl".len()
            && name.ends_with(".jsonl")
            && name.as_bytes()[8] == b'_',
        "{name}"
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        !text.contains(UPSTREAM_KEY),
        "upstream key in the log:\n{text}"
    );
    assert!(
        !text.contains("sk-client-secret"),
        "client key in the log:\n{text}"
    );
    assert!(
        !text.to_ascii_lowercase().contains("authorization"),
        "{text}"
    );
    // Non-ASCII text is written as UTF-8, not as \u escapes.
    for raw in ["Grüße, 世界 🌍", "Привет, 你好", "−3 °C", "Zürich"] {
        assert!(text.contains(raw), "{raw} not raw in:\n{text}");
    }
    assert!(!text.contains("\\u"), "{text}");
    text
}

fn lines(text: &str) -> Vec<Value> {
    assert!(text.ends_with('\n'));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn sharegpt_log_has_one_line_per_request_with_assembled_replies_and_tool_calls() {
    let text = traffic("sharegpt").await;
    let lines = lines(&text);
    assert_eq!(lines.len(), 2, "{text}");
    for (line, id) in lines.iter().zip(["log-plain", "log-stream"]) {
        assert_eq!(line["id"], id, "{line}");
        assert_eq!(line["model"], "up");
        assert_eq!(line["backend"], "up");
        assert_eq!(line["status"], 200);
        let turns: Vec<(&str, &str)> = line["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["from"].as_str().unwrap(), t["value"].as_str().unwrap()))
            .collect();
        assert_eq!(
            turns,
            [
                ("system", "Antworte kurz."),
                ("human", "Привет, 你好: weather?"),
                ("gpt", ""),
                ("tool", "−3 °C"),
                ("human", "und Zürich?"),
                ("gpt", "Grüße, 世界 🌍"),
            ],
            "{line}"
        );
        // The request's tool call and tool result stay attached to their turns.
        let previous = &line["conversations"][2];
        assert_eq!(previous["tool_calls"][0]["name"], "get_weather", "{line}");
        assert_eq!(previous["tool_calls"][0]["id"], "call_prev");
        assert_eq!(
            previous["tool_calls"][0]["arguments"],
            "{\"city\":\"Kyiv\"}"
        );
        assert_eq!(line["conversations"][3]["tool_call_id"], "call_prev");
        // The reply's tool call, assembled from its stream fragments when streamed.
        assert_eq!(
            line["tool_calls"],
            json!([{"id": "call_w1", "name": "get_weather", "arguments": "{\"city\":\"Zürich\"}"}]),
            "{line}"
        );
    }
    assert_eq!(lines[0]["usage"]["prompt_tokens"], 11);
    assert_eq!(lines[0]["usage"]["completion_tokens"], 7);
}

#[tokio::test]
async fn openai_log_has_request_fields_and_the_reply_appended() {
    let text = traffic("openai").await;
    let lines = lines(&text);
    assert_eq!(lines.len(), 2, "{text}");
    for (line, stream) in lines.iter().zip([false, true]) {
        assert_eq!(line["model"], "up", "{line}");
        assert_eq!(line["stream"], stream);
        assert_eq!(line["temperature"], 0.3);
        assert_eq!(line["tools"][0]["function"]["name"], "get_weather");
        let messages = line["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 6, "{line}");
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            ["system", "user", "assistant", "tool", "user", "assistant"]
        );
        assert_eq!(messages[1]["content"], "Привет, 你好: weather?");
        assert_eq!(
            messages[2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Kyiv\"}"
        );
        assert_eq!(messages[3]["tool_call_id"], "call_prev");
        assert_eq!(
            messages[5],
            json!({"role": "assistant", "content": "Grüße, 世界 🌍", "tool_calls": [{"id": "call_w1",
                "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Zürich\"}"}}]}),
            "{line}"
        );
    }
}

/// `request_log` applies on reload: off → on writes the next request, a new `dir` takes the following
/// ones (the replaced writer finishes what it held), and off stops writing; `metrics.enabled` likewise.
#[tokio::test]
async fn a_reload_turns_the_request_log_and_metrics_on_moves_and_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let config = |extra: &str| format!("backends:\n  local: {{ type: echo }}\n{extra}");
    let log_in = |at: &std::path::Path| {
        format!(
            "request_log: {{ enabled: true, dir: '{}' }}\n",
            at.display()
        )
    };
    std::fs::write(&path, config("metrics: { enabled: false }\n")).unwrap();
    let (gateway, _none) = Gateway::start_from_file(&path, false).await;
    let chat = |text: &'static str| {
        let gateway = &gateway;
        async move {
            let (status, _) = gateway
                .chat(json!({"model": "local", "messages": [{"role": "user", "content": text}]}))
                .await;
            assert_eq!(status, 200);
        }
    };
    let reload = || async {
        let response = client()
            .post(gateway.url("/admin/reload"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    };
    let metrics_status = || async {
        client()
            .get(gateway.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    chat("before").await;
    assert!(!first.exists());
    assert_eq!(metrics_status().await, 404);

    std::fs::write(&path, config(&log_in(&first))).unwrap();
    reload().await;
    chat("into first").await;
    assert_eq!(metrics_status().await, 200);

    std::fs::write(&path, config(&log_in(&second))).unwrap();
    reload().await;
    chat("into second").await;

    std::fs::write(&path, config("")).unwrap();
    reload().await;
    chat("after").await;
    gateway.state.flush().await;

    let texts = |at: &std::path::Path| -> String {
        std::fs::read_dir(at)
            .map(|entries| {
                entries
                    .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (first_text, second_text) = (texts(&first), texts(&second));
    assert_eq!(first_text.lines().count(), 1, "{first_text}");
    assert!(first_text.contains("into first"), "{first_text}");
    assert_eq!(second_text.lines().count(), 1, "{second_text}");
    assert!(second_text.contains("into second"), "{second_text}");
    for text in [&first_text, &second_text] {
        assert!(
            !text.contains("before") && !text.contains("after"),
            "{text}"
        );
    }
}
