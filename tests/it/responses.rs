//! Issue 28 end to end: the OpenAI Responses API front door (`POST /v1/responses`, `GET`/`DELETE
//! /v1/responses/{id}`) against the real gateway over the echo backend, an OpenAI-compatible chat
//! upstream, an Anthropic upstream and an upstream that serves Responses natively: JSON and streams,
//! tools and `function_call_output` round trips, `previous_response_id` (memory; Redis in `redis.rs`),
//! keys, limits, cache, fail-over, request logs and metrics.

use serde_json::{Value, json};

use crate::support::mock::{self, Mock};
use crate::support::mock_anthropic::{self, Answer, MockAnthropic};
use crate::support::mock_responses::{self, MockResponses};
use crate::support::{Gateway, client};

/// POST `body` to `/v1/responses` with extra headers: status, headers, body text.
pub async fn post(
    gateway: &Gateway,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let mut request = client().post(gateway.url("/v1/responses")).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// POST a non-stream request that must succeed: the `response` object.
pub async fn create(gateway: &Gateway, body: &Value, headers: &[(&str, &str)]) -> Value {
    let (status, _, text) = post(gateway, body, headers).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

async fn get(gateway: &Gateway, id: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = client().get(gateway.url(&format!("/v1/responses/{id}")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn delete(gateway: &Gateway, id: &str) -> (u16, Value) {
    let response = client()
        .delete(gateway.url(&format!("/v1/responses/{id}")))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The events of a Responses stream, checked: each `event:` name is its data's `type`, sequence numbers
/// count from 0, `response.created` comes first. Returns the data of each event.
pub fn events(body: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for frame in body.split("\n\n").filter(|frame| !frame.trim().is_empty()) {
        let mut name = None;
        let mut data = None;
        for line in frame.lines() {
            if let Some(value) = line.strip_prefix("event: ") {
                name = Some(value.to_owned());
            } else if let Some(value) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str::<Value>(value).unwrap());
            }
        }
        let data = data.unwrap_or_else(|| panic!("frame without data: {frame}"));
        assert_eq!(name.as_deref(), data["type"].as_str(), "{frame}");
        assert_eq!(data["sequence_number"], out.len(), "{frame}");
        out.push(data);
    }
    assert_eq!(out[0]["type"], "response.created", "{body}");
    out
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// The text of a `response` object's message items.
pub fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "message")
        .flat_map(|item| item["content"].as_array().unwrap().iter())
        .filter_map(|part| part["text"].as_str())
        .collect()
}

/// The final `response` of a completed stream.
fn completed(events: &[Value]) -> &Value {
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed", "{last}");
    &last["response"]
}

const ECHO: &str = "backends:\n  local: { type: echo }\n";

#[tokio::test]
async fn echo_answers_in_the_responses_format() {
    let gateway = Gateway::start(ECHO).await;
    let (status, headers, text) = post(
        &gateway,
        &json!({"model": "local", "input": "Hello world", "metadata": {"k": "v"}}),
        &[("x-request-id", "echo-1")],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["x-request-id"], "echo-1");
    assert_eq!(headers["x-gateway-backend"], "local");
    let response: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(response["id"], "resp_echo-1");
    assert_eq!(response["object"], "response");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["model"], "local");
    assert_eq!(response["metadata"], json!({"k": "v"}));
    assert_eq!(response["backend"], "local");
    assert_eq!(response["output"][0]["type"], "message");
    assert_eq!(response["output"][0]["role"], "assistant");
    assert_eq!(output_text(&response), "Echo: Hello world");
    assert_eq!(
        (
            &response["usage"]["input_tokens"],
            &response["usage"]["output_tokens"],
            &response["usage"]["total_tokens"]
        ),
        (&json!(2), &json!(3), &json!(5))
    );

    let (status, headers, text) = post(
        &gateway,
        &json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "Hello stream"}]}], "stream": true}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    let events = events(&text);
    assert_eq!(
        types(&events)[..5],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta"
        ]
    );
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "Echo: Hello stream");
    let last = completed(&events);
    assert_eq!(output_text(last), "Echo: Hello stream");
    assert!(last["id"].as_str().unwrap().starts_with("resp_"));
}

#[tokio::test]
async fn previous_response_id_continues_a_stored_conversation() {
    let upstream = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "backends:\n  up: {{ type: openai, url: '{}' }}\n",
        upstream.base()
    ))
    .await;
    let first = create(
        &gateway,
        &json!({"model": "m", "instructions": "Be brief.", "input": "What is 2+2?"}),
        &[("x-request-id", "turn-1")],
    )
    .await;
    assert_eq!(first["id"], "resp_turn-1");
    assert_eq!(output_text(&first), "hello from mock");
    // The second turn: the stored conversation, then the new input; instructions are not carried over.
    let second = create(
        &gateway,
        &json!({"model": "m", "previous_response_id": "resp_turn-1", "input": "And 3+3?"}),
        &[("x-request-id", "turn-2")],
    )
    .await;
    assert_eq!(second["previous_response_id"], "resp_turn-1");
    let sent = &upstream.requests()[1].body;
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "hello from mock"},
            {"role": "user", "content": "And 3+3?"}
        ]),
        "{sent}"
    );
    // A streamed third turn continues the second and is stored too.
    let (status, _, text) = post(
        &gateway,
        &json!({"model": "m", "previous_response_id": "resp_turn-2", "input": "And 4+4?", "stream": true}),
        &[("x-request-id", "turn-3")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(output_text(completed(&events(&text))), "hello from mock");
    assert_eq!(
        upstream.requests()[2].body["messages"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let (status, stored) = get(&gateway, "resp_turn-3", &[]).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["status"], "completed");
    assert_eq!(output_text(&stored), "hello from mock");

    let (status, stored) = get(&gateway, "resp_turn-1", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(stored["id"], "resp_turn-1");
    assert_eq!(output_text(&stored), "hello from mock");
    let (status, deleted) = delete(&gateway, "resp_turn-1").await;
    assert_eq!(status, 200);
    assert_eq!(
        deleted,
        json!({"id": "resp_turn-1", "object": "response.deleted", "deleted": true})
    );
    let (status, error) = get(&gateway, "resp_turn-1", &[]).await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["type"], "not_found_error", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resp_turn-1")
    );
    let (status, _, text) = post(
        &gateway,
        &json!({"previous_response_id": "resp_turn-1", "input": "again"}),
        &[],
    )
    .await;
    assert_eq!(status, 404, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["param"], "previous_response_id");
    let (status, _) = delete(&gateway, "resp_turn-1").await;
    assert_eq!(status, 404);
    // `store: false` answers are not kept.
    create(
        &gateway,
        &json!({"input": "secret", "store": false}),
        &[("x-request-id", "not-kept")],
    )
    .await;
    assert_eq!(get(&gateway, "resp_not-kept", &[]).await.0, 404);
    assert_eq!(
        upstream.requests().len(),
        4,
        "the unknown id never went upstream"
    );
}

#[tokio::test]
async fn chat_backends_serve_tools_and_a_function_call_output_round_trip() {
    let upstream = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "backends:\n  up: {{ type: openai, url: '{}' }}\n",
        upstream.base()
    ))
    .await;
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    upstream.script([mock::Behavior::ToolCalls]);
    let first = create(
        &gateway,
        &json!({"model": "m", "input": "Weather in Paris, and the time?", "tools": tools, "tool_choice": "auto", "max_output_tokens": 300, "text": {"format": {"type": "json_object"}}}),
        &[("x-request-id", "tools-1")],
    )
    .await;
    let sent = &upstream.requests()[0].body;
    assert_eq!(
        sent["tools"][0]["function"]["name"], "get_weather",
        "{sent}"
    );
    assert_eq!(sent["tool_choice"], "auto");
    assert_eq!(sent["max_tokens"], 300);
    assert_eq!(sent["response_format"], json!({"type": "json_object"}));
    let calls: Vec<(&str, &str, &str)> = first["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            assert_eq!(item["type"], "function_call", "{first}");
            (
                item["call_id"].as_str().unwrap(),
                item["name"].as_str().unwrap(),
                item["arguments"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("call_1", "get_weather", "{\"city\": \"Paris\"}"),
            ("call_2", "get_time", "{\"tz\": \"CET\"}")
        ]
    );
    assert_eq!(first["usage"]["input_tokens"], 30);
    // The tools ran; their outputs continue the conversation.
    let second = create(
        &gateway,
        &json!({"model": "m", "previous_response_id": first["id"], "tools": tools, "input": [
            {"type": "function_call_output", "call_id": "call_1", "output": "18°C"},
            {"type": "function_call_output", "call_id": "call_2", "output": "09:00"}
        ]}),
        &[],
    )
    .await;
    assert_eq!(output_text(&second), "hello from mock");
    let messages = &upstream.requests()[1].body["messages"];
    assert_eq!(messages[1]["role"], "assistant", "{messages}");
    assert_eq!(messages[1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(messages[1]["tool_calls"][1]["function"]["name"], "get_time");
    assert_eq!(
        messages[2],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "18°C"})
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "tool_call_id": "call_2", "content": "09:00"})
    );

    // Streamed: each call is an item, its arguments arrive as deltas in order.
    upstream.script([mock::Behavior::ToolCalls]);
    let (status, _, text) = post(
        &gateway,
        &json!({"model": "m", "input": "again", "tools": tools, "stream": true}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let events = events(&text);
    let args: String = events
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta" && e["output_index"] == 0)
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(args, "{\"city\": \"Paris\"}");
    let done: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.output_item.done")
        .collect();
    assert_eq!(done.len(), 2);
    assert_eq!(done[1]["item"]["call_id"], "call_2");
    assert_eq!(done[1]["item"]["arguments"], "{\"tz\": \"CET\"}");
    let last = completed(&events);
    assert_eq!(last["output"].as_array().unwrap().len(), 2);
    assert_eq!(last["usage"]["output_tokens"], 20);
    // The chat upstream was asked for usage in its stream.
    assert_eq!(
        upstream.requests()[2].body["stream_options"],
        json!({"include_usage": true})
    );
}

#[tokio::test]
async fn anthropic_backends_serve_reasoning_tools_and_signed_history() {
    let upstream = MockAnthropic::start().await;
    let gateway = Gateway::start(&format!(
        "backends:\n  claude: {{ type: anthropic, url: '{}', api_key: sk-ant, max_tokens: 777 }}\n",
        upstream.base()
    ))
    .await;
    upstream.script([mock_anthropic::Behavior::Reply(Answer::Thinking)]);
    let first = create(
        &gateway,
        &json!({"model": "claude-x", "instructions": "Think.", "input": "Meaning of life?", "reasoning": {"effort": "low"}, "temperature": 0.3}),
        &[("x-request-id", "think-1")],
    )
    .await;
    let sent = &upstream.requests()[0].body;
    assert_eq!(sent["system"], "Think.", "{sent}");
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(sent["max_tokens"], 777 + 1024);
    assert!(sent.get("temperature").is_none(), "{sent}");
    assert_eq!(first["output"][0]["type"], "reasoning");
    assert_eq!(first["output"][0]["content"][0]["text"], "Let me think.");
    assert_eq!(first["output"][0]["encrypted_content"], "sig-abc123");
    assert_eq!(output_text(&first), "42");
    assert_eq!(first["usage"]["input_tokens"], mock_anthropic::INPUT_TOKENS);
    // The next turn sends the signed thinking back, as Anthropic requires.
    upstream.script([mock_anthropic::Behavior::Reply(Answer::Tools)]);
    let (status, _, text) = post(
        &gateway,
        &json!({"model": "claude-x", "previous_response_id": "resp_think-1", "input": "Weather?", "stream": true}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let assistant = &upstream.requests()[1].body["messages"][1];
    assert_eq!(
        assistant["content"][0],
        json!({"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc123"}),
        "{assistant}"
    );
    let events = events(&text);
    let last = completed(&events);
    let kinds: Vec<&str> = last["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["message", "function_call", "function_call"]);
    assert_eq!(last["output"][1]["call_id"], "toolu_01");
    let arguments: Value =
        serde_json::from_str(last["output"][1]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    assert_eq!(output_text(last), "Let me check.");
}

#[tokio::test]
async fn native_responses_backends_get_the_body_as_received() {
    let upstream = MockResponses::start().await;
    let gateway = Gateway::start(&format!(
        "default_backend: native\nbackends:\n  native: {{ type: openai, url: '{}', native_responses: true }}\nmodels:\n  fast: {{ backend: native, model: gpt-up }}\n",
        upstream.base()
    ))
    .await;
    let body = json!({"model": "fast", "input": [{"role": "user", "content": "Hi"}],
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k1",
        "tools": [{"type": "web_search"}], "service_tier": "flex"});
    let (status, headers, text) = post(&gateway, &body, &[("x-request-id", "nat-1")]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["x-gateway-backend"], "native");
    let sent = &upstream.requests()[0];
    assert_eq!(sent.path, "/v1/responses");
    let mut expected = body.clone();
    expected["model"] = json!("gpt-up");
    assert_eq!(sent.body, expected, "only the model is rewritten");
    let response: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(response["id"], "resp_nat-1");
    assert_eq!(response["backend"], "native");
    assert_eq!(
        response["service_tier"], "default",
        "upstream fields survive"
    );
    assert_eq!(response["output"][0]["id"], "msg_up1");
    assert_eq!(output_text(&response), "Hello from responses");

    // Streamed: the upstream's events go through; only the response id is the gateway's.
    let (status, _, text) = post(
        &gateway,
        &json!({"model": "fast", "input": "Hi", "stream": true}),
        &[("x-request-id", "nat-2")],
    )
    .await;
    assert_eq!(status, 200);
    let streamed = events(&text);
    let upstream_events = mock_responses::events("gpt-up", false);
    assert_eq!(streamed.len(), upstream_events.len());
    for (ours, theirs) in streamed.iter().zip(&upstream_events) {
        let mut theirs = theirs.1.clone();
        if theirs.get("response").is_some() {
            theirs["response"]["id"] = json!("resp_nat-2");
        }
        assert_eq!(ours, &theirs);
    }
    assert!(!text.contains("resp_upstream_1"));

    // Continued: the gateway sends the whole conversation and no previous_response_id.
    let third = create(
        &gateway,
        &json!({"model": "fast", "previous_response_id": "resp_nat-1", "input": "More"}),
        &[],
    )
    .await;
    assert_eq!(output_text(&third), "Hello from responses");
    let sent = &upstream.requests()[2].body;
    assert_eq!(sent["previous_response_id"], Value::Null);
    let input = sent["input"].as_array().unwrap();
    assert_eq!(input.len(), 3, "{sent}");
    assert_eq!(input[0], json!({"role": "user", "content": "Hi"}));
    assert_eq!(input[1]["id"], "msg_up1");
    assert_eq!(
        input[2],
        json!({"type": "message", "role": "user", "content": "More"})
    );
    // The streamed answer was stored from its final event.
    assert_eq!(get(&gateway, "resp_nat-2", &[]).await.0, 200);

    // A streamed function call, then its output continues the conversation.
    upstream.script([mock_responses::Behavior::ToolCall]);
    let (status, _, text) = post(
        &gateway,
        &json!({"model": "fast", "input": "Weather?", "stream": true, "tools": [{"type": "function", "name": "get_weather"}]}),
        &[("x-request-id", "nat-4")],
    )
    .await;
    assert_eq!(status, 200);
    let streamed = events(&text);
    assert_eq!(completed(&streamed)["output"][0]["call_id"], "call_up1");
    create(
        &gateway,
        &json!({"model": "fast", "previous_response_id": "resp_nat-4", "input": [{"type": "function_call_output", "call_id": "call_up1", "output": "sunny"}]}),
        &[],
    )
    .await;
    let input = upstream.requests()[4].body["input"].clone();
    assert_eq!(input[1]["type"], "function_call", "{input}");
    assert_eq!(input[1]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(
        input[2],
        json!({"type": "function_call_output", "call_id": "call_up1", "output": "sunny"})
    );
}

#[tokio::test]
async fn fail_over_before_the_first_byte_and_a_failed_stream_after_it() {
    let native = MockResponses::start().await;
    let chat = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "default_backend: native\nbackends:\n  native: {{ type: openai, url: '{}', native_responses: true, retries: 0, fallback: [chat] }}\n  chat: {{ type: openai, url: '{}', retries: 0 }}\n",
        native.base(),
        chat.base()
    ))
    .await;
    native.script([mock_responses::Behavior::Status(500)]);
    let (status, headers, text) =
        post(&gateway, &json!({"input": "hi", "stream": true}), &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["x-gateway-backend"], "chat");
    assert_eq!(output_text(completed(&events(&text))), "hello from mock");

    // Pass-through stream cut after its first events: it ends failed, never completed, not stored.
    native.script([mock_responses::Behavior::StreamCut(5)]);
    let (status, _, text) = post(
        &gateway,
        &json!({"input": "hi", "stream": true}),
        &[("x-request-id", "cut-1")],
    )
    .await;
    assert_eq!(status, 200);
    let events_seen = events(&text);
    assert_eq!(
        types(&events_seen)[events_seen.len() - 2..],
        ["error", "response.failed"],
        "{text}"
    );
    assert!(!text.contains("response.completed"));
    assert_eq!(events_seen.last().unwrap()["response"]["id"], "resp_cut-1");
    assert_eq!(get(&gateway, "resp_cut-1", &[]).await.0, 404);

    // A converted stream cut the same way.
    native.script([mock_responses::Behavior::Status(500)]);
    chat.script([mock::Behavior::StreamCut(2)]);
    let (status, _, text) = post(&gateway, &json!({"input": "hi", "stream": true}), &[]).await;
    assert_eq!(status, 200);
    let events_seen = events(&text);
    assert_eq!(
        types(&events_seen)[events_seen.len() - 2..],
        ["error", "response.failed"]
    );
    assert_eq!(events_seen.last().unwrap()["response"]["status"], "failed");
}

#[tokio::test]
async fn keys_own_their_conversations_and_limits_count_tokens() {
    let upstream = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "backends:\n  up: {{ type: openai, url: '{}' }}\nkeys:\n  - {{ name: a, key: sk-a, quota: {{ tokens: 1000, window_s: 3600 }} }}\n  - {{ name: b, key: sk-b }}\n",
        upstream.base()
    ))
    .await;
    let (status, _, text) = post(&gateway, &json!({"input": "hi"}), &[]).await;
    assert_eq!(status, 401, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["type"], "authentication_error");
    let a = [("x-api-key", "sk-a")];
    let b = [("authorization", "Bearer sk-b")];
    let first = create(&gateway, &json!({"input": "hi"}), &a).await;
    let id = first["id"].as_str().unwrap();
    assert_eq!(get(&gateway, id, &a).await.0, 200);
    assert_eq!(get(&gateway, id, &b).await.0, 404);
    assert_eq!(get(&gateway, id, &[]).await.0, 401);
    let (status, _, _) = post(
        &gateway,
        &json!({"previous_response_id": id, "input": "mine now"}),
        &b,
    )
    .await;
    assert_eq!(status, 404);
    create(
        &gateway,
        &json!({"previous_response_id": id, "input": "more"}),
        &a,
    )
    .await;
    // The mock reports 3 + 4 tokens per answer: both answers are charged to key a.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let usage: Value = client()
            .get(gateway.url("/v1/usage"))
            .header("x-api-key", "sk-a")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if usage["tokens"]["used"] == 14 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{usage}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn request_logs_and_metrics_cover_responses() {
    let upstream = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&format!(
        "backends:\n  up: {{ type: openai, url: '{}' }}\nrequest_log: {{ enabled: true, dir: '{}', format: sharegpt }}\n",
        upstream.base(),
        dir.path().display()
    ))
    .await;
    create(
        &gateway,
        &json!({"model": "up", "instructions": "Be kind.", "input": "Hello"}),
        &[("x-request-id", "log-1")],
    )
    .await;
    let (status, _, _) = post(
        &gateway,
        &json!({"model": "up", "previous_response_id": "resp_log-1", "input": "Again", "stream": true}),
        &[("x-request-id", "log-2")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(get(&gateway, "resp_log-1", &[]).await.0, 200);
    gateway.state.flush().await;
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let lines: Vec<Value> = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["id"], "resp_log-2");
    let turns: Vec<(&str, &str)> = lines[1]["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["from"].as_str().unwrap(), t["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        turns,
        [
            ("human", "Hello"),
            ("gpt", "hello from mock"),
            ("human", "Again"),
            ("gpt", "hello from mock")
        ]
    );
    let metrics = gateway.metrics().await;
    let post_label = [
        ("method", "POST"),
        ("path", "/v1/responses"),
        ("status", "200"),
    ];
    assert_eq!(metrics.value("http_requests_total", &post_label), 2.0);
    let get_label = [
        ("method", "GET"),
        ("path", "/v1/responses/{id}"),
        ("status", "200"),
    ];
    assert_eq!(metrics.value("http_requests_total", &get_label), 1.0);
}

#[tokio::test]
async fn the_cache_answers_again_under_a_new_id_that_is_stored() {
    let upstream = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "backends:\n  up: {{ type: openai, url: '{}' }}\ncache: {{ enabled: true }}\n",
        upstream.base()
    ))
    .await;
    let body = json!({"model": "up", "input": "cache me"});
    let (status, headers, first) = post(&gateway, &body, &[("x-request-id", "c-1")]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-cache"], "MISS");
    let (status, headers, second) = post(&gateway, &body, &[("x-request-id", "c-2")]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-cache"], "HIT");
    let (first, second): (Value, Value) = (
        serde_json::from_str(&first).unwrap(),
        serde_json::from_str(&second).unwrap(),
    );
    assert_eq!(second["id"], "resp_c-2");
    assert_eq!(second["cached"], true);
    assert_eq!(output_text(&second), output_text(&first));
    assert_eq!(upstream.requests().len(), 1);
    assert_eq!(get(&gateway, "resp_c-2", &[]).await.0, 200);
    // A stream request for the same thing is replayed as Responses events.
    let (status, headers, text) = post(
        &gateway,
        &json!({"model": "up", "input": "cache me", "stream": true}),
        &[("x-request-id", "c-3")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-cache"], "HIT");
    let events = events(&text);
    assert_eq!(output_text(completed(&events)), "hello from mock");
    assert_eq!(upstream.requests().len(), 1);
    assert_eq!(get(&gateway, "resp_c-3", &[]).await.0, 200);
}

#[tokio::test]
async fn bad_input_is_answered_in_the_responses_error_shape() {
    let gateway = Gateway::start(ECHO).await;
    for (body, message, param) in [
        (
            json!({"input": 5}),
            "input: invalid type: integer `5`, expected a string or an array of input items at line 1 column 10",
            json!("input"),
        ),
        (
            json!({"model": "m"}),
            "missing required field 'input'",
            json!("input"),
        ),
        (
            json!({"input": [{"role": "robot", "content": "x"}]}),
            "input[0].role: unknown role 'robot'; expected user, assistant, system or developer",
            json!("input[0].role"),
        ),
        (
            json!({"input": "x", "background": true}),
            "background: background responses are not supported by this gateway; send the request without it",
            json!("background"),
        ),
    ] {
        let (status, _, text) = post(&gateway, &body, &[]).await;
        assert_eq!(status, 400, "{text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"]["message"], message, "{error}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["param"], param);
    }
    let (status, _, text) = post(
        &gateway,
        &json!({"previous_response_id": "resp_nope", "input": "x"}),
        &[],
    )
    .await;
    assert_eq!(status, 404, "{text}");
    let (status, error) = get(&gateway, "resp_nope", &[]).await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["type"], "not_found_error");
    // /v1/models is unchanged by the new route.
    let models: Value = client()
        .get(gateway.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
}

#[tokio::test]
async fn policies_see_the_continued_conversation() {
    let upstream = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "backends:\n  up: {{ type: openai, url: '{}' }}\npolicies: {{ max_input_tokens: 20, block_patterns: ['(?i)forbidden'] }}\n",
        upstream.base()
    ))
    .await;
    let (status, _, text) = post(&gateway, &json!({"input": "this is forbidden"}), &[]).await;
    assert_eq!(status, 400, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], "policy_violation", "{error}");
    // Fifteen tokens pass; the same again on top of them is over the limit of 20.
    let words = "a b c d e f g h i j k l m n o";
    let first = create(&gateway, &json!({"input": words}), &[]).await;
    let (status, _, text) = post(
        &gateway,
        &json!({"previous_response_id": first["id"], "input": "p q r s"}),
        &[],
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("max_input_tokens"), "{text}");
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn the_openai_log_layout_keeps_parameters_and_logs_the_conversation_once() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&format!(
        "backends:\n  local: {{ type: echo }}\nrequest_log: {{ enabled: true, dir: '{}', format: openai }}\n",
        dir.path().display()
    ))
    .await;
    create(
        &gateway,
        &json!({"instructions": "Be kind.", "input": "Hello", "temperature": 0.5, "metadata": {"k": "v"}}),
        &[],
    )
    .await;
    gateway.state.flush().await;
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let line: Value = serde_json::from_str(std::fs::read_to_string(file).unwrap().trim()).unwrap();
    assert_eq!(line["temperature"], 0.5, "{line}");
    assert_eq!(line["metadata"], json!({"k": "v"}));
    assert!(
        line.get("input").is_none() && line.get("instructions").is_none(),
        "{line}"
    );
    let roles: Vec<&str> = line["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant"], "{line}");
}
