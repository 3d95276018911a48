//! Golden fixtures and property tests for the Responses API conversions (test-only).
//!
//! Inputs: every file in `fixtures_responses/` (Responses requests, response objects and streams, and a
//! few others) and the chat/Anthropic inputs of `fixtures/`. A Responses input is converted to OpenAI
//! chat completions and to Anthropic messages, any other input to Responses; the result is compared
//! with `fixtures_responses/<stem>.<target>.expected.<ext>` (`UPDATE_EXPECT=1` rewrites them; review
//! the diff). Names: `req_<from>_*`, `resp_<from>_*`, `stream_<from>_*.sse`, `err_<from>_<status>_*`.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::Value;

use crate::protocol::convert::{self, RequestOptions, ResponseOptions};
use crate::protocol::responses::stream::{ResponsesPassThrough, final_response_of};
use crate::protocol::responses::{self, ResponseEcho};
use crate::protocol::sse::SseDecoder;
use crate::protocol::stream::{StreamConverter, StreamOptions, StreamTap};
use crate::protocol::{ChatRequest, Protocol, anthropic, openai};

use super::harness::{
    CREATED, arbitrary_json, chunks, classify, compare, content_lines, convert_in_pieces,
    expected_name, fixtures_dir, inputs_in, mutated, pretty,
};

fn responses_dir() -> PathBuf {
    fixtures_dir("fixtures_responses")
}

fn shared_dir() -> PathBuf {
    fixtures_dir("fixtures")
}

fn name_of(protocol: Protocol) -> &'static str {
    protocol.as_str()
}

/// What each input is converted to: Responses inputs to both other protocols, the others to Responses.
fn targets(from: Protocol) -> &'static [Protocol] {
    match from {
        Protocol::Responses => &[Protocol::OpenAi, Protocol::Anthropic],
        _ => &[Protocol::Responses],
    }
}

fn stream_options() -> StreamOptions {
    StreamOptions {
        id: "resp_gw-req-1".into(),
        model: "client-model".into(),
        include_usage: true,
        input_tokens: 11,
        echo: ResponseEcho::default(),
    }
}

fn decode_request(from: Protocol, input: &[u8]) -> ChatRequest {
    match from {
        Protocol::OpenAi => openai::decode_chat(input).unwrap(),
        Protocol::Anthropic => anthropic::decode_request(input).unwrap(),
        Protocol::Responses => responses::decode_request(input).unwrap().chat,
    }
}

fn encode_request(to: Protocol, request: &ChatRequest) -> Vec<u8> {
    let opts = RequestOptions {
        model: None,
        default_max_tokens: 1024,
    };
    match to {
        Protocol::OpenAi => convert::encode_openai_request(request, &opts),
        Protocol::Anthropic => convert::encode_anthropic_request(request, &opts),
        Protocol::Responses => convert::encode_responses_request(request, &opts),
    }
    .unwrap()
}

fn convert_stream(
    from: Protocol,
    to: Protocol,
    input: &[u8],
    pieces: &[usize],
) -> (Vec<u8>, StreamConverter) {
    let converter = StreamConverter::new(from, to, stream_options()).with_created(CREATED);
    convert_in_pieces(converter, input, pieces)
}

fn convert_fixture(name: &str, to: Protocol, input: &[u8]) -> Vec<u8> {
    let (kind, from) = classify(name);
    match kind {
        "req" => pretty(&encode_request(to, &decode_request(from, input))),
        "resp" => {
            let opts = ResponseOptions {
                id: "resp_gw-req-1",
                model: None,
                echo: None,
            };
            pretty(&convert::convert_response_at(from, to, input, &opts, CREATED).unwrap())
        }
        "stream" => convert_stream(from, to, input, &[]).0,
        "err" => {
            let status: u16 = name.split('_').nth(2).unwrap().parse().unwrap();
            pretty(&convert::convert_error(from, to, status, input))
        }
        other => panic!("fixture {name}: unknown kind {other}"),
    }
}

/// Every input: this module's own, and the chat/Anthropic inputs of the shared fixtures.
fn inputs() -> Vec<PathBuf> {
    inputs_in(&[responses_dir(), shared_dir()])
}

fn expected_path(input: &Path, to: Protocol) -> PathBuf {
    responses_dir().join(expected_name(input, Some(name_of(to))))
}

#[test]
fn golden_fixtures() {
    let files = inputs();
    assert!(files.len() >= 30, "fixtures missing: {files:?}");
    let mut failures = Vec::new();
    let mut checked = 0;
    for input_file in &files {
        let name = input_file.file_name().unwrap().to_str().unwrap();
        let input = std::fs::read(input_file).unwrap();
        for &to in targets(classify(name).1) {
            let expected_file = expected_path(input_file, to);
            let actual = convert_fixture(name, to, &input);
            checked += 1;
            if let Err(failure) = compare(&format!("{name} → {to:?}"), &expected_file, &actual) {
                failures.push(failure);
            }
        }
    }
    assert!(checked >= 30, "{checked}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn stream_inputs() -> Vec<(String, Protocol, Vec<u8>)> {
    inputs()
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            let from = classify(&name).1;
            name.starts_with("stream_")
                .then(|| (name, from, std::fs::read(&path).unwrap()))
        })
        .collect()
}

/// The SSE events of `bytes` as `(event name, data)`.
fn sse_events(bytes: &[u8]) -> Vec<(Option<String>, Vec<u8>)> {
    let mut decoder = SseDecoder::default();
    decoder.feed(bytes);
    let mut events = Vec::new();
    while let Ok(Some(event)) = decoder.next_event() {
        events.push((event.event, event.data.to_vec()));
    }
    if let Some(event) = decoder.finish() {
        events.push((event.event, event.data.to_vec()));
    }
    events
}

/// Checks a Responses event stream the way the official SDK's stream state does, and more: every event
/// is named by its `type`, `sequence_number`s count from 0, `response.created` comes first, content
/// events follow their item's `response.output_item.added`, every item is done before
/// `response.completed`, whose output matches the items streamed, and nothing follows the end. A
/// stream that failed ends with `error` and (once created) `response.failed`, without
/// `response.completed`. Returns the event types.
fn check_grammar(bytes: &[u8]) -> Result<Vec<String>, String> {
    #[derive(Debug)]
    struct Item {
        id: String,
        kind: String,
        text: String,
        done: bool,
    }
    let mut types = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    let mut ended = false;
    let mut created = false;
    for (index, (name, data)) in sse_events(bytes).into_iter().enumerate() {
        if ended {
            return Err(format!("event after the end: {name:?}"));
        }
        let value: Value = serde_json::from_slice(&data).map_err(|e| {
            format!(
                "event {index} is not JSON ({e}): {}",
                String::from_utf8_lossy(&data)
            )
        })?;
        let kind = value["type"]
            .as_str()
            .ok_or("event without type")?
            .to_owned();
        if name.as_deref() != Some(kind.as_str()) {
            return Err(format!("event name {name:?} is not its type {kind}"));
        }
        if value["sequence_number"].as_u64() != Some(index as u64) {
            return Err(format!(
                "{kind}: sequence_number {} at {index}",
                value["sequence_number"]
            ));
        }
        if index == 0 && kind != "response.created" && kind != "error" {
            return Err(format!("first event is {kind}"));
        }
        let item_at = |value: &Value| -> Result<usize, String> {
            let at = value["output_index"].as_u64().ok_or("no output_index")? as usize;
            if at >= items.len() {
                return Err(format!("{kind}: output_index {at} before its item"));
            }
            Ok(at)
        };
        match kind.as_str() {
            "response.created" => {
                created = true;
                if value["response"]["status"] != "in_progress" {
                    return Err("created but not in_progress".into());
                }
            }
            "response.in_progress" => {}
            "response.output_item.added" => {
                let at = value["output_index"].as_u64().ok_or("no output_index")? as usize;
                if at != items.len() {
                    return Err(format!("item added at {at}, expected {}", items.len()));
                }
                let id = value["item"]["id"]
                    .as_str()
                    .ok_or("item without id")?
                    .to_owned();
                if items.iter().any(|item| item.id == id) {
                    return Err(format!("duplicate item id {id}"));
                }
                items.push(Item {
                    id,
                    kind: value["item"]["type"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    text: String::new(),
                    done: false,
                });
            }
            "response.content_part.added"
            | "response.content_part.done"
            | "response.output_text.delta"
            | "response.output_text.done"
            | "response.reasoning_text.delta"
            | "response.reasoning_text.done"
            | "response.function_call_arguments.delta"
            | "response.function_call_arguments.done" => {
                let at = item_at(&value)?;
                let item = &mut items[at];
                if item.done || value["item_id"] != item.id.as_str() {
                    return Err(format!("{kind} for item {} (done: {})", item.id, item.done));
                }
                let wanted = match kind.as_str() {
                    "response.output_text.delta" | "response.output_text.done" => "message",
                    "response.reasoning_text.delta" | "response.reasoning_text.done" => "reasoning",
                    "response.function_call_arguments.delta"
                    | "response.function_call_arguments.done" => "function_call",
                    _ => item.kind.as_str(),
                };
                if item.kind != wanted {
                    return Err(format!("{kind} on a {} item", item.kind));
                }
                if kind.ends_with(".delta") {
                    item.text
                        .push_str(value["delta"].as_str().ok_or("delta not a string")?);
                }
                let done_text = match kind.as_str() {
                    "response.output_text.done" | "response.reasoning_text.done" => {
                        value["text"].as_str()
                    }
                    "response.function_call_arguments.done" => value["arguments"].as_str(),
                    _ => None,
                };
                if let Some(done) = done_text
                    && done != item.text
                {
                    return Err(format!(
                        "{kind}: '{done}' is not the deltas' '{}'",
                        item.text
                    ));
                }
            }
            "response.output_item.done" => {
                let at = item_at(&value)?;
                let item = &mut items[at];
                if item.done || value["item"]["id"] != item.id.as_str() {
                    return Err(format!("item {} done twice or renamed", item.id));
                }
                item.done = true;
            }
            "response.completed" | "response.incomplete" => {
                if items.iter().any(|item| !item.done) {
                    return Err(format!("{kind} with items not done: {items:?}"));
                }
                let output = value["response"]["output"].as_array().ok_or("no output")?;
                let ids: Vec<&str> = output.iter().filter_map(|o| o["id"].as_str()).collect();
                let streamed: Vec<&str> = items.iter().map(|item| item.id.as_str()).collect();
                if ids != streamed {
                    return Err(format!(
                        "final output {ids:?} is not the streamed {streamed:?}"
                    ));
                }
                let status = if kind == "response.completed" {
                    "completed"
                } else {
                    "incomplete"
                };
                if value["response"]["status"] != status {
                    return Err(format!(
                        "{kind} with status {}",
                        value["response"]["status"]
                    ));
                }
                ended = true;
            }
            "error" => {
                if !created {
                    ended = true;
                }
            }
            "response.failed" => {
                if types.last().map(String::as_str) != Some("error") {
                    return Err("response.failed without an error event before it".into());
                }
                ended = true;
            }
            other => return Err(format!("unexpected event {other}")),
        }
        types.push(kind);
    }
    if !ended {
        return Err(format!("the stream did not end: {types:?}"));
    }
    Ok(types)
}

#[test]
fn converted_streams_follow_the_responses_grammar() {
    let mut checked = 0;
    for (name, from, input) in stream_inputs() {
        if from == Protocol::Responses {
            continue;
        }
        let (out, converter) = convert_stream(from, Protocol::Responses, &input, &[]);
        let types = check_grammar(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        let last = types.last().unwrap().as_str();
        assert_eq!(
            last == "response.failed",
            converter.completed_response().is_none(),
            "{name}"
        );
        if last != "response.failed" {
            // The final `response` object is what the conversation store keeps.
            let kept: Value =
                serde_json::from_slice(converter.completed_response().unwrap()).unwrap();
            let (_, data) = sse_events(&out).pop().unwrap();
            let event: Value = serde_json::from_slice(&data).unwrap();
            assert_eq!(kept, event["response"], "{name}");
            assert_eq!(
                final_response_of(&out).map(|r| serde_json::from_slice::<Value>(&r).unwrap()),
                Some(kept)
            );
        }
        checked += 1;
    }
    assert!(checked >= 6, "{checked}");
}

#[test]
fn responses_streams_convert_to_both_protocols_and_back() {
    for (name, from, input) in stream_inputs() {
        if from != Protocol::Responses {
            continue;
        }
        let mut tap = StreamTap::new(Protocol::Responses);
        let mut decoder = SseDecoder::default();
        decoder.feed(&input);
        while let Ok(Some(event)) = decoder.next_event() {
            tap.observe(&event);
        }
        for &to in targets(from) {
            let (out, converter) = convert_stream(from, to, &input, &[]);
            assert_eq!(tap.summary(), converter.summary(), "{name} → {to:?}");
            // And back: text, reasoning and tool calls survive.
            let (again, back) = convert_stream(to, Protocol::Responses, &out, &[]);
            check_grammar(&again).unwrap_or_else(|e| panic!("{name} → {to:?} → Responses: {e}"));
            assert_eq!(back.summary().text, converter.summary().text, "{name}");
            assert_eq!(
                back.summary().tool_calls,
                converter.summary().tool_calls,
                "{name}"
            );
            if to == Protocol::OpenAi {
                assert_eq!(
                    back.summary().reasoning,
                    converter.summary().reasoning,
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn chat_streams_keep_their_answer_through_responses() {
    for (name, from, input) in stream_inputs() {
        if from == Protocol::Responses {
            continue;
        }
        let (out, converter) = convert_stream(from, Protocol::Responses, &input, &[]);
        if !converter.upstream_finished() || converter.summary().finish_reason.is_none() {
            continue;
        }
        let (_, back) = convert_stream(Protocol::Responses, from, &out, &[]);
        let (original, again) = (converter.summary(), back.summary());
        assert_eq!(again.text, original.text, "{name}");
        assert_eq!(again.reasoning, original.reasoning, "{name}");
        assert_eq!(again.tool_calls, original.tool_calls, "{name}");
        // Responses has no field for cache writes; the other counts survive.
        let counts = |usage: Option<crate::protocol::Usage>| {
            usage.map(|u| (u.input_tokens, u.output_tokens, u.cache_read_tokens))
        };
        assert_eq!(counts(again.usage), counts(original.usage), "{name}");
    }
}

/// A Responses request's content survives its trip to chat completions or Anthropic and back.
#[test]
fn responses_requests_round_trip_their_content() {
    fn content(request: &ChatRequest) -> Vec<String> {
        // Responses has one `instructions` string: system parts are compared joined.
        let system = (!request.system.is_empty())
            .then(|| request.system.join("\n"))
            .into_iter()
            .collect();
        content_lines(system, request)
    }
    for path in inputs() {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.starts_with("req_") {
            continue;
        }
        let from = classify(&name).1;
        let input = std::fs::read(&path).unwrap();
        let original = decode_request(from, &input);
        for &to in targets(from) {
            let back = decode_request(to, &encode_request(to, &original));
            assert_eq!(content(&back), content(&original), "{name} → {to:?}");
            assert_eq!(back.tools, original.tools, "{name} → {to:?}");
            if to != Protocol::Anthropic {
                assert_eq!(back.params.max_tokens, original.params.max_tokens, "{name}");
            }
            if from == Protocol::Responses || to == Protocol::Responses {
                let responses = if to == Protocol::Responses {
                    &back
                } else {
                    &original
                };
                assert_eq!(responses.user, original.user, "{name}");
            }
        }
        // Through Responses and back to where it came from, for chat and Anthropic requests.
        if from != Protocol::Responses {
            let through = decode_request(
                Protocol::Responses,
                &encode_request(Protocol::Responses, &original),
            );
            let back = decode_request(from, &encode_request(from, &through));
            assert_eq!(content(&back), content(&original), "{name} via Responses");
        }
    }
}

/// Anthropic thinking keeps its signature (and redacted thinking its data) through a Responses client
/// and back, as Anthropic requires in later turns that use tools.
#[test]
fn thinking_signatures_survive_a_responses_round_trip() {
    let input = std::fs::read(shared_dir().join("resp_anthropic_tool_use.json")).unwrap();
    let opts = ResponseOptions {
        id: "resp_1",
        model: None,
        echo: None,
    };
    let body =
        convert::convert_response_at(Protocol::Anthropic, Protocol::Responses, &input, &opts, 1)
            .unwrap();
    let value: Value = serde_json::from_slice(&body).unwrap();
    let output = serde_json::to_string(&value["output"]).unwrap();
    let next = format!(r#"{{"model":"claude","input":{output}}}"#);
    let request = responses::decode_request(next.as_bytes()).unwrap();
    let anthropic: Value =
        serde_json::from_slice(&encode_request(Protocol::Anthropic, &request.chat)).unwrap();
    let blocks = &anthropic["messages"][0]["content"];
    assert_eq!(blocks[0]["type"], "thinking");
    assert_eq!(
        blocks[0]["signature"],
        "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
    );
    assert_eq!(blocks[2]["type"], "tool_use");
}

#[test]
fn an_upstream_error_first_is_reported_and_a_cut_ends_failed() {
    let failed = b"event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":0,\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"rate_limit_exceeded\",\"message\":\"slow down\"}}}\n\n";
    let (out, converter) = convert_stream(Protocol::Responses, Protocol::OpenAi, failed, &[]);
    assert_eq!(converter.first_event_error(), Some("slow down"));
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#""type":"rate_limit_error""#), "{text}");
    // A chat stream cut mid-answer ends the Responses stream failed, not completed.
    let chunk = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"half\"}}]}\n\n";
    let mut converter =
        StreamConverter::new(Protocol::OpenAi, Protocol::Responses, stream_options());
    let mut out = BytesMut::new();
    converter.push(chunk.as_bytes(), &mut out).unwrap();
    assert!(!converter.upstream_finished());
    converter.abort("upstream closed the stream before it finished", &mut out);
    let types = check_grammar(&out).unwrap();
    assert_eq!(types[types.len() - 2..], ["error", "response.failed"]);
    assert!(converter.completed_response().is_none());
}

#[test]
fn a_length_stop_ends_incomplete() {
    let input = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Once upon\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n";
    let (out, _) = convert_stream(Protocol::OpenAi, Protocol::Responses, input, &[]);
    let types = check_grammar(&out).unwrap();
    assert_eq!(types.last().unwrap(), "response.incomplete");
    let (_, data) = sse_events(&out).pop().unwrap();
    let last: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(last["response"]["output"][0]["status"], "incomplete");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any chunking of the upstream bytes (inside UTF-8 characters, inside JSON) gives the same output,
    /// in every direction involving Responses.
    #[test]
    fn rechunking_does_not_change_output(
        fixture in 0usize..64,
        target in 0usize..2,
        pieces in proptest::collection::vec(0usize..40, 0..200),
    ) {
        let fixtures = stream_inputs();
        let (_, from, input) = &fixtures[fixture % fixtures.len()];
        let to = targets(*from)[target % targets(*from).len()];
        let (whole, _) = convert_stream(*from, to, input, &[]);
        let (chunked, _) = convert_stream(*from, to, input, &pieces);
        prop_assert_eq!(whole, chunked);
    }

    /// The pass-through observer forwards the same bytes and finds the same final answer for any
    /// chunking of the upstream's bytes.
    #[test]
    fn pass_through_is_chunking_independent(
        fixture in 0usize..8,
        pieces in proptest::collection::vec(0usize..40, 0..200),
    ) {
        let fixtures: Vec<_> = stream_inputs().into_iter().filter(|(_, from, _)| *from == Protocol::Responses).collect();
        let (_, _, input) = &fixtures[fixture % fixtures.len()];
        let run = |pieces: &[usize]| {
            let mut decoder = SseDecoder::default();
            let mut pass = ResponsesPassThrough::new("resp_gw");
            let mut out = BytesMut::new();
            for chunk in chunks(input, pieces) {
                decoder.feed(chunk);
                while let Ok(Some(event)) = decoder.next_event() {
                    pass.forward(&event, &mut out);
                }
            }
            (out, pass.completed_response().map(<[u8]>::to_vec), pass.terminal())
        };
        prop_assert_eq!(run(&[]), run(&pieces));
    }

    /// Arbitrary bytes into every Responses decoder, encoder and converter: errors are fine, panics
    /// are not, and whatever a converter writes for a Responses client follows the event grammar.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz_responses(&bytes);
    }

    /// Fixture inputs with random bytes spliced in (near-valid JSON and SSE).
    #[test]
    fn mutated_fixtures_never_panic(
        fixture in 0usize..64,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let files = inputs();
        fuzz_responses(&mutated(&files[fixture % files.len()], edits));
    }

    /// Arbitrary JSON in the places the Responses decoders look.
    #[test]
    fn arbitrary_json_never_panics(value in arbitrary_json()) {
        let v = value;
        for wrapped in [
            v.clone(),
            serde_json::json!({"input": v.clone(), "tools": v.clone(), "tool_choice": v.clone()}),
            serde_json::json!({"input": [v.clone(), {"type": "function_call", "call_id": "c", "name": "f", "arguments": v.clone()}]}),
            serde_json::json!({"input": [{"role": "user", "content": v.clone()}, {"type": "reasoning", "summary": v.clone(), "encrypted_content": v.clone()}], "text": v.clone(), "reasoning": v.clone()}),
            serde_json::json!({"input": "x", "instructions": v.clone(), "metadata": v.clone()}),
            serde_json::json!({"type": "response.output_item.added", "output_index": v.clone(), "item": v.clone()}),
            serde_json::json!({"type": "response.function_call_arguments.delta", "item_id": v.clone(), "delta": v.clone()}),
            serde_json::json!({"type": "response.completed", "response": v.clone()}),
            serde_json::json!({"type": "response.completed", "response": {"output": v.clone(), "usage": v.clone(), "status": v.clone()}}),
            serde_json::json!({"type": "response.failed", "response": {"error": v.clone()}}),
            serde_json::json!({"type": "error", "error": v.clone(), "message": v.clone()}),
            serde_json::json!({"output": [v.clone()], "usage": v.clone(), "created_at": v.clone()}),
        ] {
            let bytes = serde_json::to_vec(&wrapped).unwrap();
            fuzz_responses(&bytes);
            let mut sse = b"data: ".to_vec();
            sse.extend_from_slice(&bytes);
            sse.extend_from_slice(b"\n\n");
            fuzz_responses(&sse);
        }
    }
}

fn fuzz_responses(bytes: &[u8]) {
    if let Ok(mut request) = responses::decode_request(bytes) {
        for to in [Protocol::OpenAi, Protocol::Anthropic, Protocol::Responses] {
            let _ = encode_request_checked(to, &request.chat);
        }
        let items = request
            .input_items
            .bytes(&bytes::Bytes::copy_from_slice(bytes));
        let items = String::from_utf8_lossy(&items).into_owned();
        let _ = request.continue_from(&String::from_utf8_lossy(bytes), &items);
        let _ = request.continue_from(r#"[{"role":"user","content":"x"}]"#, &items);
    }
    for from in [Protocol::OpenAi, Protocol::Anthropic] {
        for request in [
            openai::decode_chat(bytes).ok(),
            anthropic::decode_request(bytes).ok(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = encode_request_checked(Protocol::Responses, &request);
        }
        let _ = from;
    }
    let _ = responses::decode_response(bytes);
    let _ = responses::StoredResponse::from_json(&bytes::Bytes::copy_from_slice(bytes))
        .map(|stored| stored.conversation());
    let _ = responses::join_items(&[&String::from_utf8_lossy(bytes), "[1]"]);
    let _ = final_response_of(bytes);
    let response_opts = ResponseOptions {
        id: "resp_x",
        model: None,
        echo: Some(r#""user":null"#),
    };
    for from in [Protocol::OpenAi, Protocol::Anthropic, Protocol::Responses] {
        for to in [Protocol::OpenAi, Protocol::Anthropic, Protocol::Responses] {
            if from != Protocol::Responses && to != Protocol::Responses {
                continue;
            }
            let _ = convert::convert_response(from, to, bytes, &response_opts);
            let _ = convert::convert_error(from, to, 500, bytes);
            let mut converter = StreamConverter::new(from, to, stream_options());
            let mut out = BytesMut::new();
            match converter.push(bytes, &mut out) {
                Ok(()) => {
                    let _ = converter.flush(&mut out);
                    if converter.upstream_finished() {
                        let _ = converter.finish(&mut out);
                    } else {
                        converter.abort("cut", &mut out);
                    }
                }
                Err(_) => converter.abort("invalid", &mut out),
            }
            if to == Protocol::Responses
                && let Err(error) = check_grammar(&out)
            {
                panic!(
                    "{from:?} → Responses broke the grammar: {error}\n{}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }
    let mut pass = ResponsesPassThrough::new("resp_gw");
    let mut decoder = SseDecoder::default();
    decoder.feed(bytes);
    let mut out = BytesMut::new();
    while let Ok(Some(event)) = decoder.next_event() {
        pass.forward(&event, &mut out);
    }
    pass.error_events("x", &mut out);
    let mut tap = StreamTap::new(Protocol::Responses);
    let mut decoder = SseDecoder::default();
    decoder.feed(bytes);
    while let Ok(Some(event)) = decoder.next_event() {
        tap.observe(&event);
    }
}

fn encode_request_checked(
    to: Protocol,
    request: &ChatRequest,
) -> Result<Vec<u8>, crate::protocol::DecodeError> {
    let opts = RequestOptions {
        model: Some("m"),
        default_max_tokens: 16,
    };
    match to {
        Protocol::OpenAi => convert::encode_openai_request(request, &opts),
        Protocol::Anthropic => convert::encode_anthropic_request(request, &opts),
        Protocol::Responses => convert::encode_responses_request(request, &opts),
    }
}
