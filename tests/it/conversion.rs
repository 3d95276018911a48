//! Issue 4 end to end: the Anthropic front door (`/v1/messages`) and OpenAI ⇄ Anthropic conversion,
//! against the real gateway and real mock upstreams, for all four client/backend pairs, JSON and SSE,
//! errors and mid-stream faults.

use serde_json::{Value, json};

use crate::support::mock::{Behavior, Mock};
use crate::support::mock_anthropic::{
    self, Answer, Behavior as ABehavior, INPUT_TOKENS, MockAnthropic, OUTPUT_TOKENS,
};
use crate::support::{Gateway, client, sse_data};

/// A gateway with one Anthropic backend `claude` (key, `max_tokens: 777`), one OpenAI backend `gpt`,
/// and aliases `sonnet` → claude/claude-sonnet-4 and `local` → gpt/qwen.
async fn gateway(anthropic: &MockAnthropic, openai: &Mock) -> Gateway {
    Gateway::start(&format!(
        "default_backend: claude
backends:
  claude:
    type: anthropic
    url: {}
    api_key: sk-ant-backend
    max_tokens: 777
    retries: 0
  gpt:
    type: openai
    url: {}
    retries: 0
models:
  sonnet: {{ backend: claude, model: claude-sonnet-4 }}
  local: {{ backend: gpt, model: qwen }}
",
        anthropic.base(),
        openai.base()
    ))
    .await
}

async fn post(gateway: &Gateway, path: &str, body: &Value) -> (u16, http::HeaderMap, String) {
    let response = client()
        .post(gateway.url(path))
        .header("x-request-id", "conv-1")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// An SSE body as `(event name, data)` pairs; data parsed as JSON, `[DONE]` kept as a string.
fn events(body: &str) -> Vec<(Option<String>, Value)> {
    body.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let mut name = None;
            let mut data = Vec::new();
            for line in frame.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            let data = data.join("\n");
            let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
            (name, value)
        })
        .collect()
}

fn names(events: &[(Option<String>, Value)]) -> Vec<String> {
    events
        .iter()
        .map(|(name, _)| name.clone().unwrap_or_default())
        .collect()
}

/// The OpenAI chunks of a stream that failed: it ends with the error chunk and has no `[DONE]`, the
/// success sentinel (issue 23).
fn failed_chunks(body: &str) -> Vec<Value> {
    let data = sse_data(body);
    assert!(!data.iter().any(|d| d == "[DONE]"), "{body}");
    let chunks: Vec<Value> = data
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks.last().is_some_and(|c| c.get("error").is_some()),
        "{body}"
    );
    chunks
}

/// The OpenAI chunks of an SSE body, `[DONE]` excluded (asserted to be last and alone).
fn chunks(body: &str) -> Vec<Value> {
    let data = sse_data(body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1, "{body}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Anthropic client → Anthropic backend: pass-through.

#[tokio::test]
async fn anthropic_to_anthropic_json_passes_through_untouched() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    let sent = json!({
        "model": "sonnet",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "x_vendor_extra": {"nested": [1, {"model": "untouched"}]},
        "service_tier": "auto"
    });
    let (status, headers, body) = gateway
        .send(
            "/v1/messages",
            &sent,
            &[
                ("x-request-id", "pass-1"),
                ("anthropic-version", "2024-10-22"),
                ("anthropic-beta", "prompt-caching-2024-07-31"),
                ("x-api-key", "sk-client-should-not-win"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-gateway-backend"], "claude");
    assert_eq!(body["id"], "pass-1");
    assert_eq!(body["backend"], "claude");
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"], mock_anthropic::content(Answer::Text));
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], INPUT_TOKENS);

    let received = &anthropic.requests()[0];
    assert_eq!(received.path, "/v1/messages");
    let mut expected = sent.clone();
    expected["model"] = json!("claude-sonnet-4");
    assert_eq!(received.body, expected, "only the model is rewritten");
    assert_eq!(received.headers["x-api-key"], "sk-ant-backend");
    assert!(received.headers.get("authorization").is_none());
    assert_eq!(received.headers["anthropic-version"], "2024-10-22");
    assert_eq!(
        received.headers["anthropic-beta"],
        "prompt-caching-2024-07-31"
    );
}

#[tokio::test]
async fn anthropic_to_anthropic_stream_is_relayed_event_for_event() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    anthropic.script([ABehavior::Reply(Answer::Tools)]);
    let (status, headers, body) = post(
        &gateway,
        "/v1/messages",
        &json!({"model": "claude-opus-4", "max_tokens": 64, "stream": true,
                "messages": [{"role": "user", "content": "weather?"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let expected: String = mock_anthropic::events(Answer::Tools, "claude-opus-4")
        .iter()
        .map(|(name, data)| mock_anthropic::frame(name, data))
        .collect();
    assert_eq!(body, expected, "Anthropic events are forwarded verbatim");
    let received = &anthropic.requests()[0];
    assert_eq!(received.body["model"], "claude-opus-4");
    assert_eq!(
        received.headers["anthropic-version"], "2023-06-01",
        "the backend's default version when the client sends none"
    );
    assert!(received.headers.get("anthropic-beta").is_none());
}

#[tokio::test]
async fn anthropic_client_key_is_forwarded_as_x_api_key_when_the_backend_has_none() {
    let anthropic = MockAnthropic::start().await;
    let gateway = Gateway::start(&format!(
        "backends:\n  claude: {{ type: anthropic, url: '{}' }}\n",
        anthropic.base()
    ))
    .await;
    let body =
        json!({"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]});
    let headers = [
        ("x-api-key", "sk-ant-client"),
        ("anthropic-version", "2023-06-01"),
    ];
    let (status, _, _) = gateway.send("/v1/messages", &body, &headers).await;
    assert_eq!(status, 200);
    let received = &anthropic.requests()[0];
    assert_eq!(received.headers["x-api-key"], "sk-ant-client");
    assert!(
        received.headers.get("authorization").is_none(),
        "an Anthropic key is not an Authorization header"
    );
}

// ---------------------------------------------------------------------------------------------
// OpenAI client → Anthropic backend: request, response and stream converted.

fn openai_tool_request(stream: bool) -> Value {
    json!({
        "model": "sonnet",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather and time in Paris?"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "get_time",
             "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
        ],
        "tool_choice": "required",
        "stop": ["END"],
        "temperature": 0.5,
        "user": "u-42"
    })
}

#[tokio::test]
async fn openai_to_anthropic_request_is_converted() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    anthropic.script([ABehavior::Reply(Answer::Tools)]);
    let (status, _, _) = gateway
        .send(
            "/v1/chat/completions",
            &openai_tool_request(false),
            &[("x-request-id", "conv-1")],
        )
        .await;
    assert_eq!(status, 200);
    let received = &anthropic.requests()[0];
    assert_eq!(received.path, "/v1/messages");
    assert_eq!(received.headers["x-api-key"], "sk-ant-backend");
    assert_eq!(received.headers["anthropic-version"], "2023-06-01");
    assert!(received.headers.get("authorization").is_none());
    let body = &received.body;
    assert_eq!(body["model"], "claude-sonnet-4");
    assert_eq!(
        body["max_tokens"], 777,
        "backends.claude.max_tokens fills in"
    );
    assert_eq!(body["system"], "You are terse.");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "Weather and time in Paris?"}])
    );
    assert_eq!(
        body["tools"],
        json!([
            {"name": "get_weather", "description": "Weather by city",
             "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
            {"name": "get_time",
             "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}}
        ])
    );
    assert_eq!(body["tool_choice"], json!({"type": "any"}));
    assert_eq!(body["stop_sequences"], json!(["END"]));
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["metadata"], json!({"user_id": "u-42"}));
    assert!(body.get("stream").is_none() || body["stream"] == false);

    // An explicit max_tokens and a named tool choice are carried over.
    let mut request = openai_tool_request(false);
    request["max_tokens"] = json!(33);
    request["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    let (status, _, _) = post(&gateway, "/v1/chat/completions", &request).await;
    assert_eq!(status, 200);
    let body = &anthropic.requests()[1].body;
    assert_eq!(body["max_tokens"], 33);
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "get_time"})
    );
}

#[tokio::test]
async fn openai_to_anthropic_json_response_is_converted() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    anthropic.script([
        ABehavior::Reply(Answer::Text),
        ABehavior::Reply(Answer::Tools),
        ABehavior::Reply(Answer::Thinking),
    ]);
    let ask = json!({"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]});

    let (status, headers, text) = post(&gateway, "/v1/chat/completions", &ask).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["x-gateway-backend"], "claude");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["id"], "conv-1");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "sonnet");
    assert_eq!(body["backend"], "claude");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from claude"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], INPUT_TOKENS);
    assert_eq!(body["usage"]["completion_tokens"], OUTPUT_TOKENS);
    assert_eq!(body["usage"]["total_tokens"], INPUT_TOKENS + OUTPUT_TOKENS);

    let (_, _, text) = post(&gateway, "/v1/chat/completions", &ask).await;
    let body: Value = serde_json::from_str(&text).unwrap();
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], "Let me check.");
    assert_eq!(
        message["tool_calls"],
        json!([
            {"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "toolu_02", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}}
        ])
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");

    let (_, _, text) = post(&gateway, "/v1/chat/completions", &ask).await;
    let body: Value = serde_json::from_str(&text).unwrap();
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], "42");
    assert_eq!(message["reasoning_content"], "Let me think.");
    assert_eq!(
        message["thinking_blocks"],
        json!([{"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc123"}])
    );
}

#[tokio::test]
async fn openai_to_anthropic_text_stream_follows_openai_chunk_rules() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    let (status, headers, body) = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "sonnet", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(anthropic.requests()[0].body["stream"], true);
    let chunks = chunks(&body);
    assert!(chunks.len() >= 3, "{body}");
    for chunk in &chunks {
        assert_eq!(chunk["id"], "conv-1");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "sonnet");
        assert!(
            chunk.get("usage").is_none(),
            "no usage unless asked: {chunk}"
        );
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from claude");
    let finishes: Vec<(usize, &Value)> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| (i, &c["choices"][0]["finish_reason"]))
        .filter(|(_, f)| !f.is_null())
        .collect();
    assert_eq!(finishes, vec![(chunks.len() - 1, &json!("stop"))]);
}

#[tokio::test]
async fn openai_to_anthropic_tool_stream_assembles_parallel_calls_and_usage() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    anthropic.script([ABehavior::Reply(Answer::Tools)]);
    let mut request = openai_tool_request(true);
    request["stream_options"] = json!({"include_usage": true});
    let (status, _, body) = post(&gateway, "/v1/chat/completions", &request).await;
    assert_eq!(status, 200);
    assert!(anthropic.requests()[0].body.get("stream_options").is_none());
    let chunks = chunks(&body);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");

    // Usage: every chunk carries `usage: null` except the final usage chunk with `choices: []`.
    let (last, rest) = chunks.split_last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], INPUT_TOKENS);
    assert_eq!(last["usage"]["completion_tokens"], OUTPUT_TOKENS);
    assert_eq!(last["usage"]["total_tokens"], INPUT_TOKENS + OUTPUT_TOKENS);
    for chunk in rest {
        assert_eq!(chunk["usage"], Value::Null, "{chunk}");
        assert!(chunk.as_object().unwrap().contains_key("usage"));
    }
    let (finish, deltas) = rest.split_last().unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    assert!(
        deltas
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );

    // Tool calls: ids and names on the first fragment of each index, arguments assembled.
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for chunk in deltas {
        for call in chunk["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = usize::try_from(call["index"].as_u64().unwrap()).unwrap();
            if let Some(id) = call["id"].as_str() {
                assert_eq!(index, calls.len(), "a new call takes the next index");
                assert_eq!(call["type"], "function");
                calls.push((
                    id.to_owned(),
                    call["function"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            }
            calls[index]
                .2
                .push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(calls.len(), 2, "{body}");
    assert_eq!(
        (calls[0].0.as_str(), calls[0].1.as_str()),
        ("toolu_01", "get_weather")
    );
    assert_eq!(
        (calls[1].0.as_str(), calls[1].1.as_str()),
        ("toolu_02", "get_time")
    );
    let args: Vec<Value> = calls
        .iter()
        .map(|c| serde_json::from_str(&c.2).unwrap())
        .collect();
    assert_eq!(args, vec![json!({"city": "Paris"}), json!({"tz": "CET"})]);
    let text: String = deltas
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Let me check.");
}

// ---------------------------------------------------------------------------------------------
// Anthropic client → OpenAI backend.

fn anthropic_tool_request(stream: bool) -> Value {
    json!({
        "model": "local",
        "max_tokens": 300,
        "stream": stream,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}],
        "tools": [{"name": "get_weather", "description": "Weather by city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "any"},
        "stop_sequences": ["END"]
    })
}

#[tokio::test]
async fn anthropic_to_openai_request_and_json_response_are_converted() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    openai.script([Behavior::Reply, Behavior::ToolCalls]);
    let (status, headers, text) =
        post(&gateway, "/v1/messages", &anthropic_tool_request(false)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["x-gateway-backend"], "gpt");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["id"], "conv-1");
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "local");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "hello from mock"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], 3);
    assert_eq!(body["usage"]["output_tokens"], 4);

    let received = &openai.requests()[0];
    assert_eq!(received.path, "/v1/chat/completions");
    let sent = &received.body;
    assert_eq!(sent["model"], "qwen");
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Paris?"}
        ])
    );
    assert_eq!(
        sent["tools"],
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    );
    assert_eq!(sent["tool_choice"], "required");
    assert_eq!(sent["stop"], json!(["END"]));
    assert!(
        sent["max_tokens"] == 300 || sent["max_completion_tokens"] == 300,
        "{sent}"
    );

    let (status, _, text) = post(&gateway, "/v1/messages", &anthropic_tool_request(false)).await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body["content"],
        json!([
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {"tz": "CET"}}
        ])
    );
    assert_eq!(body["stop_reason"], "tool_use");
    assert_eq!(body["usage"]["input_tokens"], 30);
    assert_eq!(body["usage"]["output_tokens"], 20);
}

/// Assert the Anthropic stream grammar: one message_start first, blocks opened/closed in order with
/// consecutive indexes, message_delta then message_stop last. Returns the blocks (start, deltas).
fn assert_anthropic_grammar(events: &[(Option<String>, Value)]) -> Vec<(Value, Vec<Value>)> {
    let names = names(events);
    assert_eq!(names[0], "message_start", "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "message_start").count(), 1);
    assert_eq!(names[names.len() - 1], "message_stop", "{names:?}");
    assert_eq!(names[names.len() - 2], "message_delta", "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "message_delta").count(), 1);
    for (name, data) in events {
        assert_eq!(
            data["type"],
            name.as_deref().unwrap(),
            "event name = data.type"
        );
    }
    let mut blocks: Vec<(Value, Vec<Value>)> = Vec::new();
    let mut open: Option<u64> = None;
    for (name, data) in &events[1..events.len() - 2] {
        match name.as_deref().unwrap() {
            "content_block_start" => {
                assert_eq!(open, None, "a block starts only after the previous stopped");
                assert_eq!(data["index"], blocks.len(), "block indexes count from 0");
                open = data["index"].as_u64();
                blocks.push((data["content_block"].clone(), Vec::new()));
            }
            "content_block_delta" => {
                assert_eq!(data["index"].as_u64(), open, "delta for the open block");
                blocks.last_mut().unwrap().1.push(data["delta"].clone());
            }
            "content_block_stop" => {
                assert_eq!(data["index"].as_u64(), open);
                open = None;
            }
            "ping" => {}
            other => panic!("unexpected event {other} inside the message"),
        }
    }
    assert_eq!(open, None, "every block is stopped before message_delta");
    blocks
}

#[tokio::test]
async fn anthropic_to_openai_text_stream_is_an_exact_anthropic_event_sequence() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    let (status, headers, body) = post(
        &gateway,
        "/v1/messages",
        &json!({"model": "local", "max_tokens": 50, "stream": true,
                "messages": [{"role": "user", "content": "Say hello from the mock, please"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(openai.requests()[0].body["stream"], true);
    let events = events(&body);
    let blocks = assert_anthropic_grammar(&events);
    assert_eq!(blocks.len(), 1, "{body}");
    assert_eq!(blocks[0].0, json!({"type": "text", "text": ""}));
    let text: String = blocks[0]
        .1
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "text_delta");
            d["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, "hello from mock");

    let start = &events[0].1["message"];
    assert_eq!(start["id"], "conv-1");
    assert_eq!(start["type"], "message");
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["model"], "local");
    assert_eq!(start["content"], json!([]));
    assert!(
        start["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "message_start carries the (estimated) input tokens: {start}"
    );
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn anthropic_to_openai_tool_stream_gives_tool_use_blocks_with_input_json_deltas() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    openai.script([Behavior::ToolCalls]);
    let (status, _, body) = post(&gateway, "/v1/messages", &anthropic_tool_request(true)).await;
    assert_eq!(status, 200);
    assert_eq!(
        openai.requests()[0].body["stream_options"]["include_usage"],
        true,
        "the gateway asks OpenAI backends for usage"
    );
    let events = events(&body);
    let blocks = assert_anthropic_grammar(&events);
    assert_eq!(blocks.len(), 2, "{body}");
    let expected = [
        ("call_1", "get_weather", json!({"city": "Paris"})),
        ("call_2", "get_time", json!({"tz": "CET"})),
    ];
    for ((start, deltas), (id, name, input)) in blocks.iter().zip(expected) {
        assert_eq!(
            *start,
            json!({"type": "tool_use", "id": id, "name": name, "input": {}})
        );
        assert!(
            deltas.len() >= 2,
            "arguments arrive in fragments: {deltas:?}"
        );
        let json_text: String = deltas
            .iter()
            .map(|d| {
                assert_eq!(d["type"], "input_json_delta");
                d["partial_json"].as_str().unwrap()
            })
            .collect();
        assert_eq!(serde_json::from_str::<Value>(&json_text).unwrap(), input);
    }
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        delta["usage"]["output_tokens"], 20,
        "real usage from the usage chunk"
    );
}

// ---------------------------------------------------------------------------------------------
// Anthropic client → the embedded default's echo backend.

#[tokio::test]
async fn anthropic_client_on_the_echo_backend_json_and_stream() {
    let gateway = Gateway::start(ai_gateway::config::EMBEDDED_DEFAULT).await;
    let request = json!({"model": "anything", "max_tokens": 64,
                         "messages": [{"role": "user", "content": "Hello, world!"}]});
    let (status, headers, text) = post(&gateway, "/v1/messages", &request).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["id"], "conv-1");
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "Echo: Hello, world!"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(body["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let mut request = request;
    request["stream"] = json!(true);
    let (status, headers, text) = post(&gateway, "/v1/messages", &request).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = events(&text);
    let blocks = assert_anthropic_grammar(&events);
    assert_eq!(blocks.len(), 1);
    let streamed: String = blocks[0]
        .1
        .iter()
        .map(|d| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, "Echo: Hello, world!");
    assert_eq!(events[0].1["message"]["id"], "conv-1");
    assert!(
        events[0].1["message"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "end_turn"
    );
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[tokio::test]
async fn anthropic_backend_errors_reach_openai_clients_in_openai_shape() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    let ask = json!({"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]});
    let cases = [
        (400, "invalid_request_error", 400, "invalid_request_error"),
        (401, "authentication_error", 401, "authentication_error"),
        (429, "rate_limit_error", 429, "rate_limit_error"),
        (500, "api_error", 502, "server_error"),
    ];
    for (upstream, kind, status, client_kind) in cases {
        anthropic.script([ABehavior::Error(upstream, kind, Some(7))]);
        let (got, headers, text) = post(&gateway, "/v1/chat/completions", &ask).await;
        assert_eq!(got, status, "upstream {upstream}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert!(body.get("type").is_none(), "OpenAI shape: {body}");
        let error = &body["error"];
        assert_eq!(error["type"], client_kind, "upstream {upstream}: {body}");
        assert!(
            error["message"].as_str().unwrap().contains("mock"),
            "{body}"
        );
        if upstream == 429 {
            assert_eq!(headers["retry-after"], "7");
        }
    }
}

#[tokio::test]
async fn openai_backend_errors_reach_anthropic_clients_in_anthropic_shape() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    let ask = json!({"model": "local", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let cases = [
        (
            400,
            r#"{"error":{"message":"mock bad","type":"invalid_request_error","param":"messages","code":null}}"#,
            400,
            "invalid_request_error",
        ),
        (
            401,
            r#"{"error":{"message":"mock key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
            401,
            "authentication_error",
        ),
        (
            429,
            r#"{"error":{"message":"mock slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
            429,
            "rate_limit_error",
        ),
        (
            500,
            r#"{"error":{"message":"mock boom","type":"server_error","param":null,"code":null}}"#,
            502,
            "api_error",
        ),
    ];
    for (upstream, text, status, kind) in cases {
        openai.script([Behavior::Status(upstream, text, Some(3))]);
        let (got, headers, text) = post(&gateway, "/v1/messages", &ask).await;
        assert_eq!(got, status, "upstream {upstream}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["type"], "error", "Anthropic shape: {body}");
        assert_eq!(body["error"]["type"], kind, "upstream {upstream}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("mock"),
            "{body}"
        );
        if upstream == 429 {
            assert_eq!(headers["retry-after"], "3");
        }
    }
}

#[tokio::test]
async fn gateway_errors_on_v1_messages_are_in_anthropic_shape() {
    let gateway = Gateway::start(ai_gateway::config::EMBEDDED_DEFAULT).await;
    let cases = [
        ("{not json", "max_tokens"),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens",
        ),
        (r#"{"model":"m","max_tokens":5}"#, "messages"),
        (
            r#"{"model":"m","max_tokens":"many","messages":[]}"#,
            "max_tokens",
        ),
    ];
    for (sent, mentions) in cases {
        let response = gateway.post("/v1/messages", sent).await;
        assert_eq!(response.status(), 400, "{sent}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "error", "{sent}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty());
        if sent != "{not json" {
            assert!(message.contains(mentions), "{sent}: {message}");
        }
        assert!(body.get("param").is_none() && body["error"].get("param").is_none());
    }
}

// ---------------------------------------------------------------------------------------------
// Mid-stream faults on converted streams.

#[tokio::test]
async fn anthropic_stream_cut_ends_the_openai_stream_with_an_error_chunk() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    // message_start, content_block_start, ping, one text delta; then the connection breaks.
    anthropic.script([
        ABehavior::StreamCut(Answer::Text, 4),
        ABehavior::StreamError(Answer::Text, 4),
    ]);
    let ask =
        json!({"model": "sonnet", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    for case in ["cut", "error event"] {
        let (status, _, body) = post(&gateway, "/v1/chat/completions", &ask).await;
        assert_eq!(status, 200, "{case}");
        let chunks = failed_chunks(&body);
        assert_eq!(
            chunks[0]["choices"][0]["delta"]["role"], "assistant",
            "{case}"
        );
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hello", "{case}: what arrived is delivered");
        let last = chunks.last().unwrap();
        assert!(last["error"]["message"].is_string(), "{case}: {body}");
        assert!(last.get("choices").is_none(), "{case}: {last}");
        assert!(
            chunks
                .iter()
                .all(|c| c["choices"][0]["finish_reason"].is_null()),
            "{case}: a broken stream does not claim a normal finish: {body}"
        );
    }
}

#[tokio::test]
async fn openai_stream_cut_ends_the_anthropic_stream_with_an_error_event() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    openai.script([Behavior::StreamCut(2)]);
    let (status, _, body) = post(
        &gateway,
        "/v1/messages",
        &json!({"model": "local", "max_tokens": 10, "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let events = events(&body);
    let names = names(&events);
    assert_eq!(names[0], "message_start", "{body}");
    assert_eq!(names.last().unwrap(), "error", "{body}");
    assert!(!names.contains(&"message_stop".to_owned()), "{body}");
    let error = &events.last().unwrap().1;
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "api_error");
    assert!(error["error"]["message"].is_string());
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "hello", "what arrived is delivered");
}

// ---------------------------------------------------------------------------------------------
// More conversion paths: thinking streams, tool-call history, fail-over across protocols.

#[tokio::test]
async fn openai_to_anthropic_thinking_stream_carries_reasoning_and_signature() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    anthropic.script([ABehavior::Reply(Answer::Thinking)]);
    let (status, _, body) = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "sonnet", "stream": true, "messages": [{"role": "user", "content": "6*7?"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let chunks = chunks(&body);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(reasoning, "Let me think.");
    let blocks: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("thinking_blocks"))
        .collect();
    let signatures: Vec<&str> = blocks
        .iter()
        .flat_map(|b| b.as_array().unwrap())
        .filter_map(|b| b["signature"].as_str())
        .collect();
    assert_eq!(signatures, vec!["sig-abc123"], "{body}");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "42");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn tool_call_history_is_converted_both_ways() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;

    // OpenAI history → Anthropic: tool_calls become tool_use, tool messages one user turn of results.
    let (status, _, text) = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "sonnet", "messages": [
            {"role": "user", "content": "Weather and time?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_b", "content": "12:00"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let messages = &anthropic.requests()[0].body["messages"];
    assert_eq!(
        messages[0],
        json!({"role": "user", "content": "Weather and time?"})
    );
    assert_eq!(
        messages[1],
        json!({"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}}
        ]})
    );
    assert_eq!(messages[2]["role"], "user");
    let results = messages[2]["content"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{messages}");
    assert_eq!(results[0]["type"], "tool_result");
    assert_eq!(results[0]["tool_use_id"], "call_a");
    assert_eq!(results[1]["tool_use_id"], "call_b");
    assert_eq!(messages.as_array().unwrap().len(), 3);

    // Anthropic history → OpenAI: tool_use becomes tool_calls, tool_result a tool message.
    let (status, _, text) = post(
        &gateway,
        "/v1/messages",
        &json!({"model": "local", "max_tokens": 20, "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny"},
                {"type": "text", "text": "And tomorrow?"}
            ]}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let messages = openai.requests()[0].body["messages"].clone();
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(messages[0], json!({"role": "user", "content": "Weather?"}));
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"], "Checking.");
    let call = &messages[1]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_a");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    assert_eq!(
        messages[2],
        json!({"role": "tool", "tool_call_id": "toolu_a", "content": "sunny"})
    );
    assert_eq!(
        messages[3],
        json!({"role": "user", "content": "And tomorrow?"})
    );
}

#[tokio::test]
async fn fail_over_across_protocols_converts_per_backend() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "backends:
  claude: {{ type: anthropic, url: '{}', api_key: sk-ant-backend, retries: 0, fallback: [gpt] }}
  gpt: {{ type: openai, url: '{}', retries: 0, fallback: [claude] }}
",
        anthropic.base(),
        openai.base()
    ))
    .await;
    // OpenAI client: Anthropic primary fails (overloaded), the OpenAI fallback gets the body as sent.
    anthropic.script([ABehavior::Error(529, "overloaded_error", None)]);
    let sent = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}],
                      "x_vendor_extra": 1});
    let (status, headers, text) = post(&gateway, "/v1/chat/completions", &sent).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["x-gateway-backend"], "gpt");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "hello from mock");
    assert_eq!(
        openai.requests()[0].body,
        sent,
        "same protocol: forwarded as received"
    );
    assert_eq!(anthropic.requests()[0].body["max_tokens"], 4096);

    // Anthropic client: OpenAI primary fails, the Anthropic fallback gets the body as sent.
    openai.script([Behavior::Status(
        503,
        r#"{"error":{"message":"down"}}"#,
        None,
    )]);
    let sent = json!({"model": "gpt", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}],
                      "x_vendor_extra": 2});
    let (status, headers, text) = post(&gateway, "/v1/messages", &sent).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["x-gateway-backend"], "claude");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["content"], mock_anthropic::content(Answer::Text));
    assert_eq!(anthropic.requests()[1].body, sent);
    assert_eq!(openai.requests()[1].body["max_tokens"], 9);
}

#[tokio::test]
async fn anthropic_pass_through_stream_faults_end_with_an_error_event() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    anthropic.script([
        ABehavior::StreamCut(Answer::Text, 4),
        ABehavior::StreamError(Answer::Text, 4),
    ]);
    let ask = json!({"model": "sonnet", "max_tokens": 10, "stream": true,
                     "messages": [{"role": "user", "content": "hi"}]});
    for (case, kind) in [("cut", "api_error"), ("error event", "overloaded_error")] {
        let (status, _, body) = post(&gateway, "/v1/messages", &ask).await;
        assert_eq!(status, 200, "{case}");
        let events = events(&body);
        let names = names(&events);
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "error"
            ],
            "{case}: {body}"
        );
        assert_eq!(events[4].1["type"], "error");
        assert_eq!(events[4].1["error"]["type"], kind, "{case}");
    }
}

#[tokio::test]
async fn stream_requests_refused_before_the_first_byte_get_a_json_error_in_the_client_shape() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    anthropic.script([ABehavior::Error(400, "invalid_request_error", None)]);
    let (status, headers, text) = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "sonnet", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["message"], "mock invalid_request_error");

    openai.script([Behavior::Status(
        404,
        r#"{"error":{"message":"The model `qwen` does not exist","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
        None,
    )]);
    let (status, _, text) = post(
        &gateway,
        "/v1/messages",
        &json!({"model": "local", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 404);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "not_found_error", "message": "The model `qwen` does not exist"}})
    );
}

#[tokio::test]
async fn an_openai_upstream_error_chunk_ends_the_stream_once_in_the_client_protocol() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    openai.script([Behavior::StreamErrorChunk(2), Behavior::StreamErrorChunk(2)]);

    // OpenAI client (pass-through): the upstream's error chunk ends it, no `[DONE]` after it.
    let (status, _, body) = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "local", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let chunks = failed_chunks(&body);
    assert_eq!(chunks.len(), 3, "{body}");
    assert_eq!(chunks[2]["error"]["message"], "mock overloaded");

    // Anthropic client (converted): one `event: error`, no message_stop.
    let (status, _, body) = post(
        &gateway,
        "/v1/messages",
        &json!({"model": "local", "max_tokens": 10, "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let events = events(&body);
    let names = names(&events);
    assert_eq!(names[0], "message_start", "{body}");
    assert_eq!(names.iter().filter(|n| *n == "error").count(), 1, "{body}");
    assert_eq!(names.last().unwrap(), "error", "{body}");
    assert!(!names.contains(&"message_stop".to_owned()), "{body}");
    let error = &events.last().unwrap().1;
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["message"], "mock overloaded");
    assert_eq!(
        error["error"]["type"], "api_error",
        "OpenAI server_error → api_error"
    );
}

#[tokio::test]
async fn a_final_event_without_its_blank_line_still_ends_the_stream_normally() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    anthropic.script([
        ABehavior::NoFinalBlankLine(Answer::Text),
        ABehavior::NoFinalBlankLine(Answer::Text),
    ]);
    // Converted for an OpenAI client.
    let (status, _, body) = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "sonnet", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let chunks = chunks(&body);
    assert!(chunks.iter().all(|c| c.get("error").is_none()), "{body}");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );

    // Passed through to an Anthropic client.
    let (status, _, body) = post(
        &gateway,
        "/v1/messages",
        &json!({"model": "sonnet", "max_tokens": 5, "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let names = names(&events(&body));
    assert_eq!(names.last().unwrap(), "message_stop", "{body}");
    assert!(!names.contains(&"error".to_owned()), "{body}");
}

// ---------------------------------------------------------------------------------------------
// Converted streams are incremental, bounded by the idle timeout, and cancelled with the client.

async fn gated_anthropic_stream(gateway: &Gateway) -> reqwest::Response {
    let response = client()
        .post(gateway.url("/v1/messages"))
        .json(&json!({"model": "local", "max_tokens": 10, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

#[tokio::test]
async fn converted_events_reach_the_client_before_the_upstream_finishes() {
    use futures_util::StreamExt;
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    openai.script([Behavior::Gate]);
    let mut body = gated_anthropic_stream(&gateway).await.bytes_stream();
    // The upstream holds every chunk after the role chunk until released.
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
        .await
        .expect("the converted first event was buffered by the gateway")
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first).into_owned();
    assert!(first.starts_with("event: message_start\n"), "{first}");
    openai.release();
    let mut text = first;
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let events = events(&text);
    let blocks = assert_anthropic_grammar(&events);
    let streamed: String = blocks[0]
        .1
        .iter()
        .map(|d| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, "hello from mock");
}

#[tokio::test]
async fn a_converted_stream_that_goes_idle_ends_with_an_anthropic_error_event() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "backends:\n  gpt: {{ type: openai, url: '{}', stream_idle_timeout_s: 0.3 }}\n",
        openai.base()
    ))
    .await;
    drop(anthropic);
    openai.script([Behavior::Gate]);
    let response = client()
        .post(gateway.url("/v1/messages"))
        .json(&json!({"model": "gpt", "max_tokens": 10, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), response.text())
        .await
        .expect("the idle timeout did not end the stream")
        .unwrap();
    let events = events(&body);
    let names = names(&events);
    assert_eq!(names.first().unwrap(), "message_start", "{body}");
    assert_eq!(names.last().unwrap(), "error", "{body}");
    assert!(!names.contains(&"message_stop".to_owned()));
    let message = events.last().unwrap().1["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("timed out"), "{message}");
}

#[tokio::test]
async fn a_client_leaving_a_converted_stream_cancels_the_upstream() {
    use futures_util::StreamExt;
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    openai.script([Behavior::Gate]);
    let mut body = gated_anthropic_stream(&gateway).await.bytes_stream();
    body.next().await.unwrap().unwrap();
    let cancelled = openai.state.cancel_seen.notified();
    drop(body);
    tokio::time::timeout(std::time::Duration::from_secs(10), cancelled)
        .await
        .expect("upstream stream was not cancelled after the client left");
    assert_eq!(
        openai
            .state
            .cancelled
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn images_and_parallel_tool_use_settings_are_converted() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    let png = "iVBORw0KGgo=";
    let (status, _, text) = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "sonnet", "parallel_tool_calls": false,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
                ]}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let body = &anthropic.requests()[0].body;
    assert_eq!(
        body["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
        ])
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );

    let (status, _, text) = post(
        &gateway,
        "/v1/messages",
        &json!({"model": "local", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
            {"type": "text", "text": "What is this?"}
        ]}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let content = &openai.requests()[0].body["messages"][0]["content"];
    assert_eq!(
        content[0],
        json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}})
    );
    assert_eq!(content[1], json!({"type": "text", "text": "What is this?"}));
}

#[tokio::test]
async fn stream_metrics_count_the_events_and_bytes_the_client_got() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = gateway(&anthropic, &openai).await;
    let (status, _, body) = post(
        &gateway,
        "/v1/messages",
        &json!({"model": "local", "max_tokens": 10, "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let sent_events = events(&body).len() as u64;
    let metrics = gateway.metrics().await;
    let value = |name: &str| metrics.value(name, &[("provider", "openai")]) as u64;
    assert_eq!(value("streaming_events_total"), sent_events);
    assert_eq!(value("streaming_bytes_total"), body.len() as u64);
}

#[tokio::test]
async fn front_door_errors_on_v1_messages_are_in_anthropic_shape() {
    let gateway =
        Gateway::start("server: { max_body_bytes: 200 }\nbackends:\n  local: { type: echo }\n")
            .await;
    let small =
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let big = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x".repeat(500)}]});
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            client()
                .post(gateway.url("/v1/messages"))
                .header("content-type", "text/plain")
                .body(small.to_string()),
            415,
            "invalid_request_error",
        ),
        (
            client().post(gateway.url("/v1/messages")).json(&big),
            413,
            "request_too_large",
        ),
        (
            client().get(gateway.url("/v1/messages")),
            405,
            "invalid_request_error",
        ),
        (
            client()
                .post(gateway.url("/v1/messages/batches"))
                .json(&small),
            404,
            "not_found_error",
        ),
    ];
    for (request, status, kind) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "error", "{status}: {body}");
        assert_eq!(body["error"]["type"], kind, "{status}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

#[tokio::test]
async fn a_stream_that_begins_with_an_error_event_fails_over_or_is_an_http_error() {
    let anthropic = MockAnthropic::start().await;
    let openai = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "backends:
  claude: {{ type: anthropic, url: '{0}', api_key: k, retries: 0, fallback: [gpt] }}
  solo: {{ type: anthropic, url: '{0}', api_key: k, retries: 0 }}
  gpt: {{ type: openai, url: '{1}', retries: 0 }}
",
        anthropic.base(),
        openai.base()
    ))
    .await;
    // 200, then `event: error` before anything else: nothing reached the client, so fail over.
    anthropic.script([ABehavior::StreamError(Answer::Text, 0)]);
    let (status, headers, body) = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-gateway-backend"], "gpt");
    let text: String = chunks(&body)
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "hello from mock");

    // No fallback: an HTTP error in the client's protocol naming the upstream's message.
    anthropic.script([ABehavior::StreamError(Answer::Text, 0)]);
    let (status, headers, body) = post(
        &gateway,
        "/v1/messages",
        &json!({"model": "solo", "max_tokens": 5, "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "api_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Overloaded"),
        "{body}"
    );

    // Same for an OpenAI upstream whose first chunk is an error.
    openai.script([Behavior::StreamErrorChunk(0)]);
    let (status, _, body) = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "gpt", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mock overloaded"),
        "{body}"
    );
}

#[tokio::test]
async fn an_anthropic_client_key_reaches_a_keyless_openai_backend_as_a_bearer_token() {
    let openai = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "backends:\n  gpt: {{ type: openai, url: '{}' }}\n",
        openai.base()
    ))
    .await;
    // The Anthropic SDK sends its key as `x-api-key`.
    let body =
        json!({"model": "gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let (status, _, _) = gateway
        .send("/v1/messages", &body, &[("x-api-key", "sk-vllm-client")])
        .await;
    assert_eq!(status, 200);
    let received = &openai.requests()[0];
    assert_eq!(
        received
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap()),
        Some("Bearer sk-vllm-client")
    );
    assert!(received.headers.get("x-api-key").is_none());
}
