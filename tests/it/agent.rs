//! Issue 25: coding-agent requests (hundreds of KB) through the real gateway: a first turn's tokenizing
//! and decoding run off the runtime thread, so small requests on other connections are not held up.

use serde_json::{Value, json};

use crate::support::mock::Mock;
use crate::support::mock_anthropic::MockAnthropic;
use crate::support::mock_responses::MockResponses;
use crate::support::{Gateway, client};

/// About `bytes` bytes of tool output (source files, non-ASCII text), numbered: the history of the
/// agent turns below.
fn tool_outputs(bytes: usize) -> Vec<(usize, String)> {
    let mut outputs = Vec::new();
    let mut size = 0;
    while size < bytes {
        let i = outputs.len();
        let output = format!(
            "file {i} \u{e9}: {}",
            "fn handler(request: &Request) -> Result<Response, Error> { todo() }\n".repeat(40)
        );
        size += output.len();
        outputs.push((i, output));
    }
    outputs
}

/// A chat history of about `bytes` bytes of tool output, all of it new to the tokenizer.
fn agent_turn(bytes: usize) -> Value {
    let mut messages = vec![json!({"role": "system", "content": "You are a coding agent."})];
    for (i, output) in tool_outputs(bytes) {
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{i}"),
            "type": "function", "function": {"name": "read_file", "arguments": format!("{{\"path\":\"src/f{i}.rs\"}}")}}]}));
        messages
            .push(json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": output}));
    }
    messages.push(json!({"role": "user", "content": "now fix it"}));
    json!({"model": "m", "messages": messages})
}

/// The same history as an Anthropic client sends it: tool calls and results as content blocks.
fn anthropic_turn(bytes: usize) -> Value {
    let mut messages = vec![json!({"role": "user", "content": "read the handlers"})];
    for (i, output) in tool_outputs(bytes) {
        messages.push(json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "next file", "signature": "c2ln"},
            {"type": "tool_use", "id": format!("toolu_{i}"), "name": "read_file", "input": {"path": format!("src/f{i}.rs")}}]}));
        messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("toolu_{i}"),
            "content": [{"type": "text", "text": output}]}]}));
    }
    messages.push(json!({"role": "user", "content": [{"type": "text", "text": "now fix it"}]}));
    json!({"model": "claude", "max_tokens": 1024, "system": [{"type": "text", "text": "You are a coding agent."}],
        "tools": [{"name": "read_file", "description": "Reads a file", "input_schema": {"type": "object"}}],
        "messages": messages})
}

/// The same history as a Responses client (Codex, the Agents SDK) sends it: input items.
fn responses_turn(bytes: usize) -> Value {
    let mut input = vec![json!({"role": "user", "content": "read the handlers"})];
    for (i, output) in tool_outputs(bytes) {
        input.push(
            json!({"type": "reasoning", "summary": [], "encrypted_content": format!("gAAAA{i}")}),
        );
        input.push(
            json!({"type": "function_call", "call_id": format!("call_{i}"), "name": "read_file",
            "arguments": format!("{{\"path\":\"src/f{i}.rs\"}}")}),
        );
        input.push(json!({"type": "function_call_output", "call_id": format!("call_{i}"), "output": output}));
    }
    input.push(json!({"role": "user", "content": [{"type": "input_text", "text": "now fix it"}]}));
    json!({"model": "m", "instructions": "You are a coding agent.",
        "tools": [{"type": "function", "name": "read_file", "parameters": {"type": "object"}}],
        "input": input})
}

/// Each body posted to `path` is refused with a 400 whose message starts as expected; the error bodies.
async fn refused(
    gateway: &Gateway,
    path: &str,
    cases: impl IntoIterator<Item = (String, String)>,
) -> Vec<Value> {
    let mut errors = Vec::new();
    for (body, expected) in cases {
        let response = gateway.post(path, &body).await;
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(&expected), "{message}");
        errors.push(error);
    }
    errors
}

/// The gateway runs on this test's single-threaded runtime, as it does pinned to one core. While a
/// 1 MB first turn is decoded and tokenized (token limits on), the runtime thread keeps serving: a
/// heartbeat task on it never waits long, and a small request is answered before the large one.
#[tokio::test(flavor = "current_thread")]
async fn a_large_first_turn_does_not_hold_up_the_runtime() {
    // The mock parses every body whole: on a runtime of its own, so only the gateway shares this one.
    let (mock_tx, mock_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mock = Mock::start().await;
            mock_tx.send(mock.base()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let mock_base = mock_rx.recv().unwrap();
    let gateway = Gateway::start(&format!(
        "default_backend: vllm\nserver: {{ max_body_bytes: 4000000 }}\nbackends:\n  vllm: {{ type: openai, url: '{}' }}\nkeys:\n  - {{ name: a, key: ka, rate_limit: {{ tokens: 1000000000, window_s: 60 }} }}\n",
        mock_base
    ))
    .await;
    let client = client();
    let large = client
        .post(gateway.url("/v1/chat/completions"))
        .header("x-api-key", "ka")
        .header("content-type", "application/json")
        .body(agent_turn(1_000_000).to_string())
        .send();
    // A heartbeat on the runtime thread: the longest gap between two beats is how long the thread
    // was held by something else.
    let done = std::sync::atomic::AtomicBool::new(false);
    let heartbeat = async {
        let mut longest = std::time::Duration::ZERO;
        let mut last = std::time::Instant::now();
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            longest = longest.max(last.elapsed());
            last = std::time::Instant::now();
        }
        longest
    };
    let started = std::time::Instant::now();
    let request = async {
        let response = large.await.unwrap();
        let status = response.status();
        let elapsed = started.elapsed();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (status, elapsed)
    };
    let ((status, elapsed), longest) = tokio::join!(request, heartbeat);
    assert_eq!(status, 200);
    assert!(gateway.state.tokens().counted() > 100);
    // Decoding and counting a megabyte take most of the request's time (in a debug build, much
    // longer than any scheduling hiccup); none of it may hold the runtime thread.
    assert!(
        longest < elapsed / 4,
        "the runtime thread was held for {longest:?} of a {elapsed:?} request"
    );
}

/// A large turn on a plain pass-through route (nothing on it reads the conversation, so the gateway
/// checks the body without keeping its messages): forwarded exactly as sent, and a wrong field deep
/// in its history is still refused with its precise error, before anything goes upstream.
#[tokio::test]
async fn a_large_turn_on_a_plain_route_is_forwarded_as_sent_and_checked_as_ever() {
    let mock = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "default_backend: vllm\nserver: {{ max_body_bytes: 4000000 }}\nbackends:\n  vllm: {{ type: openai, url: '{}' }}\n",
        mock.base()
    ))
    .await;
    let turn = agent_turn(200_000);
    let (status, answer) = gateway.chat(turn.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(mock.requests()[0].body, turn);

    let deep = turn["messages"].as_array().unwrap().len() - 3;
    let wrong = |field: &str, value: Value| {
        let mut turn = turn.clone();
        turn["messages"][deep][field] = value;
        turn
    };
    let surrogate = turn.to_string().replace("now fix it", "now \\ud800 fix it");
    let cases = [
        (
            wrong("role", json!("robot")).to_string(),
            format!("messages[{deep}].role: unknown role 'robot'"),
        ),
        (
            wrong("content", json!(7)).to_string(),
            format!("messages[{deep}].content: invalid type: integer `7`"),
        ),
        (
            wrong("tool_call_id", json!(["x"])).to_string(),
            format!("messages[{deep}].tool_call_id: invalid type: sequence"),
        ),
        (
            surrogate,
            "invalid JSON body: unexpected end of hex escape".to_owned(),
        ),
    ];
    refused(&gateway, "/v1/chat/completions", cases).await;
    assert_eq!(mock.requests().len(), 1, "refused turns go nowhere");
}

/// Where something does read the conversation, a large turn keeps it whole: converted for an
/// Anthropic fallback when the OpenAI primary is down, and written to the request log once a reload
/// turns the log on for the same route.
#[tokio::test]
async fn a_large_turn_keeps_its_conversation_where_something_reads_it() {
    let mock = Mock::start().await;
    let anthropic = MockAnthropic::start().await;
    let refused = crate::support::mock::refused_base().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let logs = dir.path().join("logs");
    let config = |extra: &str| {
        format!(
            "default_backend: vllm\nserver: {{ max_body_bytes: 4000000 }}\nbackends:\n  vllm: {{ type: openai, url: '{}', retries: 0 }}\n{extra}",
            mock.base()
        )
    };
    let turn = agent_turn(200_000);
    let last = "now fix it";

    // The OpenAI primary refuses connections; the Anthropic fallback gets the whole conversation.
    let fallback = format!(
        "default_backend: primary\nserver: {{ max_body_bytes: 4000000 }}\nbackends:\n  primary: {{ type: openai, url: '{refused}/v1', retries: 0, fallback: [claude] }}\n  claude: {{ type: anthropic, url: '{}' }}\n",
        anthropic.base()
    );
    let gateway = Gateway::start(&fallback).await;
    let (status, answer) = gateway.chat(turn.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let converted = &anthropic.requests()[0];
    assert_eq!(converted.path, "/v1/messages");
    let messages = converted.body["messages"].as_array().unwrap();
    assert!(converted.body.to_string().len() > 200_000);
    let final_turn = messages.last().unwrap();
    assert_eq!(final_turn["role"], "user");
    assert!(
        final_turn["content"].to_string().contains(last),
        "{final_turn}"
    );
    // Every tool output arrives whole (its newlines, quotes and accents as the client wrote them),
    // and every call's arguments.
    let outputs: Vec<String> = tool_outputs(200_000)
        .into_iter()
        .map(|(_, output)| output)
        .collect();
    let blocks: Vec<&Value> = messages
        .iter()
        .filter_map(|message| message["content"].as_array())
        .flatten()
        .collect();
    let results: Vec<&str> = blocks
        .iter()
        .filter(|block| block["type"] == "tool_result")
        .map(|block| block["content"].as_str().unwrap())
        .collect();
    assert_eq!(results, outputs);
    let inputs: Vec<&Value> = blocks
        .iter()
        .filter(|block| block["type"] == "tool_use")
        .map(|block| &block["input"])
        .collect();
    assert_eq!(inputs.len(), outputs.len());
    assert_eq!(inputs[7], &json!({"path": "src/f7.rs"}));
    drop(gateway);

    std::fs::write(&path, config("")).unwrap();
    let (gateway, _none) = Gateway::start_from_file(&path, false).await;
    let (status, _) = gateway.chat(turn.clone()).await;
    assert_eq!(status, 200);
    std::fs::write(
        &path,
        config(&format!(
            "request_log: {{ enabled: true, dir: '{}' }}\n",
            logs.display()
        )),
    )
    .unwrap();
    let response = client()
        .post(gateway.url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = gateway.chat(turn.clone()).await;
    assert_eq!(status, 200);
    gateway.state.flush().await;
    let text: String = std::fs::read_dir(&logs)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    assert_eq!(
        text.lines().count(),
        1,
        "one line: the turn after the reload"
    );
    let line: Value = serde_json::from_str(text.trim_end()).unwrap();
    let conversation = line["conversations"].as_array().unwrap();
    assert!(conversation.len() >= turn["messages"].as_array().unwrap().len() - 1);
    assert!(text.len() > 200_000);
    assert!(conversation.iter().any(|entry| entry["value"] == last));
    // The log holds the conversation as sent: each tool output, each call's arguments.
    let logged: Vec<&str> = conversation
        .iter()
        .filter(|entry| entry["from"] == "tool")
        .map(|entry| entry["value"].as_str().unwrap())
        .collect();
    assert_eq!(logged, outputs);
    let arguments: Vec<&str> = conversation
        .iter()
        .filter_map(|entry| entry["tool_calls"].as_array())
        .flatten()
        .map(|call| call["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(arguments.len(), outputs.len());
    assert_eq!(arguments[7], r#"{"path":"src/f7.rs"}"#);
}

/// The Anthropic front door to Anthropic backends: a large turn goes upstream as sent, and is still
/// checked block by block — a wrong role, content of the wrong type, a tool call without its id, a
/// lone surrogate in a tool call's input, deep in the history — each refused with its precise 400 in
/// Anthropic's error shape, nothing forwarded.
#[tokio::test]
async fn a_large_anthropic_turn_on_a_plain_route_is_forwarded_as_sent_and_checked_as_ever() {
    let anthropic = MockAnthropic::start().await;
    let gateway = Gateway::start(&format!(
        "default_backend: claude\nserver: {{ max_body_bytes: 4000000 }}\nbackends:\n  claude: {{ type: anthropic, url: '{}' }}\n",
        anthropic.base()
    ))
    .await;
    let turn = anthropic_turn(200_000);
    let response = gateway.post("/v1/messages", &turn.to_string()).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["type"], "message", "{answer}");
    assert_eq!(anthropic.requests()[0].body, turn);

    let deep = turn["messages"].as_array().unwrap().len() - 3;
    assert_eq!(turn["messages"][deep]["role"], "assistant");
    let wrong = |change: &dyn Fn(&mut Value)| {
        let mut turn = turn.clone();
        change(&mut turn["messages"][deep]);
        turn.to_string()
    };
    let surrogate = wrong(&|message| message["content"][1]["input"]["path"] = json!("SURROGATE"))
        .replace("SURROGATE", "\\ud800");
    let cases = [
        (
            wrong(&|message| message["role"] = json!("system")),
            format!("messages[{deep}].role: unknown role 'system'"),
        ),
        (
            wrong(&|message| message["content"] = json!(7)),
            format!("messages[{deep}].content: expected a string or an array of content blocks"),
        ),
        (
            wrong(&|message| {
                message["content"][1].as_object_mut().unwrap().remove("id");
            }),
            format!("missing required field 'messages[{deep}].content[1].id'"),
        ),
        (
            surrogate,
            "invalid JSON body: unexpected end of hex escape".to_owned(),
        ),
    ];
    for error in refused(&gateway, "/v1/messages", cases).await {
        assert_eq!(error["type"], "error", "Anthropic's error shape: {error}");
    }
    assert_eq!(anthropic.requests().len(), 1, "refused turns go nowhere");
}

/// An Anthropic client's large turn keeps its conversation where it is converted: the Anthropic
/// primary is down and the OpenAI fallback gets the whole history as chat messages.
#[tokio::test]
async fn a_large_anthropic_turn_is_converted_whole_for_an_openai_fallback() {
    let mock = Mock::start().await;
    let refused = crate::support::mock::refused_base().await;
    let gateway = Gateway::start(&format!(
        "default_backend: primary\nserver: {{ max_body_bytes: 4000000 }}\nbackends:\n  primary: {{ type: anthropic, url: '{refused}', retries: 0, fallback: [vllm] }}\n  vllm: {{ type: openai, url: '{}' }}\n",
        mock.base()
    ))
    .await;
    let turn = anthropic_turn(200_000);
    let response = gateway.post("/v1/messages", &turn.to_string()).await;
    assert_eq!(response.status(), 200);
    let converted = &mock.requests()[0];
    let messages = converted.body["messages"].as_array().unwrap();
    assert!(converted.body.to_string().len() > 200_000);
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(messages.last().unwrap()["content"], "now fix it");
    let results: Vec<&Value> = messages.iter().filter(|m| m["role"] == "tool").collect();
    let outputs = tool_outputs(200_000);
    assert_eq!(
        results.len(),
        outputs.len(),
        "every tool result is converted"
    );
    let calls: Vec<&Value> = messages
        .iter()
        .filter_map(|m| m["tool_calls"].get(0))
        .collect();
    for ((i, output), (result, call)) in outputs.iter().zip(results.iter().zip(&calls)) {
        // Each text arrives whole (the large body's texts are slices of it, written as it wrote them).
        assert_eq!(result["content"], output.as_str(), "tool result {i}");
        assert_eq!(result["tool_call_id"], format!("toolu_{i}"));
        assert_eq!(
            call["function"]["arguments"],
            format!("{{\"path\":\"src/f{i}.rs\"}}")
        );
    }
}

/// A Responses client's large turn converted for a chat upstream: every call and its output arrive
/// whole and in order, the answer repeats the request's tools as sent, and an item wrong deep in the
/// input is refused with the same 400 as in a small body, nothing sent upstream.
#[tokio::test]
async fn a_large_responses_turn_is_converted_whole_for_a_chat_upstream() {
    let mock = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "default_backend: vllm\nserver: {{ max_body_bytes: 4000000 }}\nbackends:\n  vllm: {{ type: openai, url: '{}' }}\n",
        mock.base()
    ))
    .await;
    let mut turn = responses_turn(200_000);
    turn["tools"][0]["description"] =
        json!("Reads a file: \"path\" is relative to the repository's root");
    let (status, _, text) = crate::responses::post(&gateway, &turn, &[]).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["tools"], turn["tools"],
        "the tools are echoed as sent"
    );
    assert_eq!(answer["instructions"], "You are a coding agent.");

    let converted = &mock.requests()[0].body;
    assert!(converted.to_string().len() > 200_000);
    let messages = converted["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(messages.last().unwrap()["content"], "now fix it");
    assert_eq!(
        converted["tools"][0]["function"]["description"],
        turn["tools"][0]["description"]
    );
    let results: Vec<&Value> = messages.iter().filter(|m| m["role"] == "tool").collect();
    let calls: Vec<&Value> = messages
        .iter()
        .filter_map(|m| m["tool_calls"].get(0))
        .collect();
    let outputs = tool_outputs(200_000);
    assert_eq!(
        results.len(),
        outputs.len(),
        "every call output is converted"
    );
    assert_eq!(calls.len(), outputs.len(), "every call is converted");
    for ((i, output), (result, call)) in outputs.iter().zip(results.iter().zip(&calls)) {
        assert_eq!(result["content"], output.as_str(), "call output {i}");
        assert_eq!(result["tool_call_id"], format!("call_{i}"));
        assert_eq!(
            call["function"]["arguments"],
            format!("{{\"path\":\"src/f{i}.rs\"}}")
        );
    }

    let sent = turn["input"].as_array().unwrap();
    let deep = sent.len() - 2;
    let wrong = |change: &dyn Fn(&mut Value)| {
        let mut turn = turn.clone();
        change(&mut turn["input"][deep]);
        turn.to_string()
    };
    let cases = [
        (
            wrong(&|item| *item = json!({"role": "robot", "content": "x"})),
            format!("input[{deep}].role: unknown role 'robot'"),
        ),
        (
            wrong(&|item| item["output"] = json!("SURROGATE")).replace("SURROGATE", "\\ud800"),
            "invalid JSON body: unexpected end of hex escape".to_owned(),
        ),
    ];
    refused(&gateway, "/v1/responses", cases).await;
    assert_eq!(mock.requests().len(), 1, "refused turns go nowhere");
}

/// A Responses client's large turn to backends that speak Responses: forwarded as sent, still checked
/// item by item (a wrong role, a call output without its id, a lone surrogate in a call's arguments,
/// deep in the input — each a 400 in the Responses error shape, nothing forwarded), and stored from
/// the body as sent, so the next turn's `previous_response_id` gives the backend the whole history.
#[tokio::test]
async fn a_large_responses_turn_to_a_native_backend_is_forwarded_as_sent_stored_and_checked() {
    let upstream = MockResponses::start().await;
    let gateway = Gateway::start(&format!(
        "default_backend: native\nserver: {{ max_body_bytes: 4000000 }}\nbackends:\n  native: {{ type: openai, url: '{}', native_responses: true }}\n",
        upstream.base()
    ))
    .await;
    let turn = responses_turn(200_000);
    let (status, _, text) =
        crate::responses::post(&gateway, &turn, &[("x-request-id", "big-1")]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(upstream.requests()[0].body, turn);

    let next = json!({"model": "m", "previous_response_id": "resp_big-1",
        "input": [{"role": "user", "content": "and now?"}]});
    let (status, _, text) = crate::responses::post(&gateway, &next, &[]).await;
    assert_eq!(status, 200, "{text}");
    let input = upstream.requests()[1].body["input"].clone();
    let input = input.as_array().unwrap();
    let sent = turn["input"].as_array().unwrap();
    assert_eq!(input[..sent.len()], sent[..], "the stored turn comes first");
    assert_eq!(input[sent.len()]["id"], "msg_up1", "then its answer");
    assert_eq!(input.last().unwrap()["content"], "and now?");

    let deep = sent.len() - 2;
    assert_eq!(sent[deep]["type"], "function_call_output");
    let wrong = |change: &dyn Fn(&mut Value)| {
        let mut turn = turn.clone();
        turn["store"] = json!(false);
        change(&mut turn["input"][deep]);
        turn.to_string()
    };
    let surrogate =
        wrong(&|item| item["output"] = json!("SURROGATE")).replace("SURROGATE", "\\ud800");
    let cases = [
        (
            wrong(&|item| *item = json!({"role": "robot", "content": "x"})),
            format!("input[{deep}].role: unknown role 'robot'"),
        ),
        (
            wrong(&|item| {
                item.as_object_mut().unwrap().remove("call_id");
            }),
            format!("missing required field 'input[{deep}].call_id'"),
        ),
        (
            surrogate,
            "invalid JSON body: unexpected end of hex escape".to_owned(),
        ),
    ];
    refused(&gateway, "/v1/responses", cases).await;
    assert_eq!(upstream.requests().len(), 2, "refused turns go nowhere");
}
