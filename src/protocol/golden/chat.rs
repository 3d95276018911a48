//! Golden fixtures and property tests for the chat-completions ⇄ Anthropic conversions (test-only).
//!
//! Each input in `fixtures/` is converted according to its name and compared with the file next to it
//! named `<stem>.expected.<ext>`; `UPDATE_EXPECT=1` rewrites the expected files (review the diff).
//! Names: `req_<from>_*.json` (request → other protocol), `resp_<from>_*.json` (response → other),
//! `stream_<from>_*.sse` (stream → other), `err_<from>_<status>_*` (error body → other).

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::Value;

use crate::protocol::convert::{self, RequestOptions, ResponseOptions};
use crate::protocol::sse::SseDecoder;
use crate::protocol::stream::{StreamConverter, StreamOptions, StreamTap};
use crate::protocol::{Protocol, anthropic, openai};

use super::harness::{
    CREATED, arbitrary_json, classify, compare, content_lines, convert_in_pieces, expected_name,
    inputs_in, mutated, pretty,
};

fn fixtures_dir() -> PathBuf {
    super::harness::fixtures_dir("fixtures")
}

fn other(protocol: Protocol) -> Protocol {
    match protocol {
        Protocol::OpenAi => Protocol::Anthropic,
        Protocol::Anthropic | Protocol::Responses => Protocol::OpenAi,
    }
}

fn stream_options() -> StreamOptions {
    StreamOptions {
        id: "gw-req-1".into(),
        model: "client-model".into(),
        include_usage: true,
        input_tokens: 11,
        ..Default::default()
    }
}

fn convert_stream(from: Protocol, input: &[u8], pieces: &[usize]) -> (Vec<u8>, StreamConverter) {
    let converter = StreamConverter::new(from, other(from), stream_options()).with_created(CREATED);
    convert_in_pieces(converter, input, pieces)
}

/// Convert one fixture input as its name says.
fn convert_fixture(name: &str, input: &[u8]) -> Vec<u8> {
    let (kind, from) = classify(name);
    let to = other(from);
    match kind {
        "req" => {
            let request = match from {
                Protocol::OpenAi => openai::decode_chat(input).unwrap(),
                Protocol::Anthropic => anthropic::decode_request(input).unwrap(),
                Protocol::Responses => {
                    unreachable!("Responses fixtures are in responses_golden.rs")
                }
            };
            let opts = RequestOptions {
                model: None,
                default_max_tokens: 1024,
            };
            let body = match to {
                Protocol::OpenAi => convert::encode_openai_request(&request, &opts),
                Protocol::Anthropic => convert::encode_anthropic_request(&request, &opts),
                Protocol::Responses => {
                    unreachable!("Responses fixtures are in responses_golden.rs")
                }
            };
            pretty(&body.unwrap())
        }
        "resp" => {
            let opts = ResponseOptions {
                id: "gw-req-1",
                model: None,
                echo: None,
            };
            pretty(&convert::convert_response_at(from, to, input, &opts, CREATED).unwrap())
        }
        "stream" => convert_stream(from, input, &[]).0,
        "err" => {
            let status: u16 = name.split('_').nth(2).unwrap().parse().unwrap();
            pretty(&convert::convert_error(from, to, status, input))
        }
        other => panic!("fixture {name}: unknown kind {other}"),
    }
}

/// Compare the conversion of `input_file` with `expected_file` (or rewrite it with `UPDATE_EXPECT=1`).
fn check(input_file: &Path, expected_file: &Path) -> Result<(), String> {
    let name = input_file.file_name().unwrap().to_str().unwrap();
    let input = std::fs::read(input_file).unwrap();
    let actual = convert_fixture(name, &input);
    compare(name, expected_file, &actual)
}

fn inputs() -> Vec<PathBuf> {
    inputs_in(&[fixtures_dir()])
}

fn expected_path(input: &Path) -> PathBuf {
    input.with_file_name(expected_name(input, None))
}

#[test]
fn golden_fixtures() {
    let files = inputs();
    assert!(files.len() >= 20, "fixtures missing: {files:?}");
    let failures: Vec<String> = files
        .iter()
        .filter_map(|input| check(input, &expected_path(input)).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn stream_fixtures() -> Vec<(Protocol, Vec<u8>)> {
    inputs()
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            name.starts_with("stream_")
                .then(|| (classify(&name).1, std::fs::read(&path).unwrap()))
        })
        .collect()
}

/// Tool calls, tool results, images and text survive a request's trip to the other protocol and back.
#[test]
fn requests_round_trip_their_content() {
    let content = |request: &crate::protocol::ChatRequest| {
        content_lines(
            request.system.iter().map(ToString::to_string).collect(),
            request,
        )
    };
    let opts = RequestOptions {
        model: None,
        default_max_tokens: 1024,
    };
    for path in inputs() {
        let name = path.file_name().unwrap().to_str().unwrap();
        let input = std::fs::read(&path).unwrap();
        let (original, back) = match classify(name) {
            ("req", Protocol::OpenAi) => {
                let original = openai::decode_chat(&input).unwrap();
                let wire = convert::encode_anthropic_request(&original, &opts).unwrap();
                (original, anthropic::decode_request(&wire).unwrap())
            }
            ("req", Protocol::Anthropic) => {
                let original = anthropic::decode_request(&input).unwrap();
                let wire = convert::encode_openai_request(&original, &opts).unwrap();
                (original, openai::decode_chat(&wire).unwrap())
            }
            _ => continue,
        };
        assert_eq!(content(&back), content(&original), "{name}");
        assert_eq!(back.tools, original.tools, "{name}");
        assert_eq!(back.params.stop, original.params.stop, "{name}");
        assert_eq!(back.user, original.user, "{name}");
    }
}

#[test]
fn converted_streams_follow_the_event_grammar() {
    for (from, input) in stream_fixtures() {
        let (out, _) = convert_stream(from, &input, &[]);
        let mut decoder = SseDecoder::default();
        decoder.feed(&out);
        let mut names = Vec::new();
        while let Some(event) = decoder.next_event().unwrap() {
            match other(from) {
                Protocol::Anthropic => names.push(event.event.unwrap()),
                Protocol::OpenAi => names.push(String::from_utf8(event.data.to_vec()).unwrap()),
                Protocol::Responses => unreachable!("no Responses fixtures here"),
            }
        }
        match other(from) {
            Protocol::Anthropic => {
                assert_eq!(names.iter().filter(|n| *n == "message_start").count(), 1);
                assert_eq!(names[0], "message_start");
                let last = names.last().unwrap();
                assert!(last == "message_stop" || last == "error", "{names:?}");
                let starts = names.iter().filter(|n| *n == "content_block_start").count();
                let stops = names.iter().filter(|n| *n == "content_block_stop").count();
                if last == "message_stop" {
                    assert_eq!(starts, stops, "{names:?}");
                }
            }
            Protocol::OpenAi => {
                // A stream ends with `[DONE]`, or with an error chunk and no `[DONE]` (issue 23).
                let last = names.last().unwrap();
                let failed = last.starts_with("{\"error\"");
                assert!(last == "[DONE]" || failed, "{names:?}");
                let first: Value = serde_json::from_str(&names[0]).unwrap();
                assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
                let dones = names.iter().filter(|n| *n == "[DONE]").count();
                assert_eq!(dones, usize::from(!failed), "{names:?}");
            }
            Protocol::Responses => unreachable!("no Responses fixtures here"),
        }
    }
}

#[test]
fn tap_summary_matches_converter_summary_and_round_trips() {
    for (from, input) in stream_fixtures() {
        let (out, converter) = convert_stream(from, &input, &[]);
        let mut tap = StreamTap::new(from);
        let mut decoder = SseDecoder::default();
        decoder.feed(&input);
        while let Some(event) = decoder.next_event().unwrap() {
            tap.observe(&event);
        }
        if let Some(event) = decoder.finish() {
            tap.observe(&event);
        }
        assert_eq!(tap.summary(), converter.summary());
        // Converting back keeps text, reasoning and tool calls.
        let (_, back) = convert_stream(other(from), &out, &[]);
        assert_eq!(back.summary().text, converter.summary().text);
        assert_eq!(back.summary().reasoning, converter.summary().reasoning);
        assert_eq!(back.summary().tool_calls, converter.summary().tool_calls);
    }
}

#[test]
fn same_protocol_conversion_keeps_the_answer() {
    for (from, input) in stream_fixtures() {
        let (_, crossed) = convert_stream(from, &input, &[]);
        let mut same = StreamConverter::new(from, from, stream_options()).with_created(CREATED);
        let mut out = BytesMut::new();
        same.push(&input, &mut out).unwrap();
        same.finish(&mut out).unwrap();
        assert_eq!(same.summary(), crossed.summary());
        let (_, again) = convert_stream(from, &out, &[]);
        assert_eq!(again.summary().text, crossed.summary().text);
        assert_eq!(again.summary().tool_calls, crossed.summary().tool_calls);
    }
}

#[test]
fn stop_after_tool_calls_becomes_tool_use_for_anthropic() {
    let stream = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let (out, _) = convert_stream(Protocol::OpenAi, stream, &[]);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\"stop_reason\":\"tool_use\""), "{text}");
    let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}]}"#;
    let opts = ResponseOptions {
        id: "x",
        model: None,
        echo: None,
    };
    let out: Value = serde_json::from_slice(
        &convert::convert_response(Protocol::OpenAi, Protocol::Anthropic, body, &opts).unwrap(),
    )
    .unwrap();
    assert_eq!(out["stop_reason"], "tool_use");
}

#[test]
fn thinking_after_a_signature_opens_a_new_block() {
    let delta =
        |delta: &str| format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{delta}}}]}}\n\n");
    let stream = [
        delta(r#"{"reasoning_content":"a"}"#),
        delta(r#"{"thinking_blocks":[{"type":"thinking","thinking":"","signature":"S1"}]}"#),
        delta(r#"{"reasoning_content":"b"}"#),
        delta(r#"{"thinking_blocks":[{"type":"thinking","thinking":"","signature":"S2"}]}"#),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    let (out, _) = convert_stream(Protocol::OpenAi, stream.as_bytes(), &[]);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text.matches("event: content_block_start").count(),
        2,
        "{text}"
    );
    assert!(
        text.contains(r#""index":1,"delta":{"type":"signature_delta","signature":"S2"}"#),
        "{text}"
    );
}

#[test]
fn stream_summary_of_tool_use() {
    let input = std::fs::read(fixtures_dir().join("stream_anthropic_tool_use.sse")).unwrap();
    let (_, converter) = convert_stream(Protocol::Anthropic, &input, &[]);
    let summary = converter.summary();
    assert_eq!(
        summary.text,
        "Okay, let's check the weather for San Francisco, CA:"
    );
    assert_eq!(
        summary.reasoning,
        "I need the weather in two cities — 東京 too."
    );
    assert_eq!(summary.tool_calls.len(), 2);
    assert_eq!(
        summary.tool_calls[0].arguments,
        r#"{"location": "San Francisco, CA"}"#
    );
    let usage = summary.usage.unwrap();
    assert_eq!(
        (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens
        ),
        (2482, 89, 2000)
    );
    assert_eq!(
        summary.finish_reason,
        Some(crate::protocol::FinishReason::ToolCalls)
    );
}

#[test]
fn knows_whether_the_upstream_ended_its_stream() {
    for (name, ended) in [
        ("stream_openai_truncated.sse", false),
        ("stream_openai_tool_calls.sse", true),
        ("stream_anthropic_error.sse", true),
        ("stream_anthropic_tool_use.sse", true),
    ] {
        let input = std::fs::read(fixtures_dir().join(name)).unwrap();
        let (_, converter) = convert_stream(classify(name).1, &input, &[]);
        assert_eq!(converter.upstream_finished(), ended, "{name}");
    }
}

#[test]
fn tap_reads_legacy_completion_chunks() {
    let mut tap = StreamTap::new(Protocol::OpenAi);
    let mut decoder = SseDecoder::default();
    decoder.feed(b"data: {\"choices\":[{\"index\":0,\"text\":\"Hi\",\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"index\":0,\"text\":\" there\",\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n");
    while let Some(event) = decoder.next_event().unwrap() {
        tap.observe(&event);
    }
    assert_eq!(tap.summary().text, "Hi there");
    assert_eq!(
        tap.summary().finish_reason,
        Some(crate::protocol::FinishReason::Length)
    );
}

#[test]
fn abort_ends_each_protocol_correctly() {
    for (from, to) in [
        (Protocol::OpenAi, Protocol::Anthropic),
        (Protocol::Anthropic, Protocol::OpenAi),
    ] {
        let mut converter = StreamConverter::new(from, to, stream_options()).with_created(CREATED);
        let mut out = BytesMut::new();
        let first: &[u8] = match from {
            Protocol::OpenAi => {
                b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"a\"}}]}\n\n"
            }
            Protocol::Anthropic => {
                b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n"
            }
            Protocol::Responses => unreachable!("not in this list"),
        };
        converter.push(first, &mut out).unwrap();
        converter.abort("upstream reset the connection", &mut out);
        assert!(converter.is_finished());
        converter.finish(&mut out).unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        match to {
            Protocol::Anthropic => assert!(
                text.ends_with("event: error\ndata: {\"error\":{\"message\":\"upstream reset the connection\",\"type\":\"api_error\"},\"type\":\"error\"}\n\n")
                    || text.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"upstream reset the connection\"}}\n\n"),
                "{text}"
            ),
            Protocol::OpenAi => {
                // The error chunk ends it; `[DONE]` would tell the client the answer is complete.
                assert!(text.ends_with("\"code\":null}}\n\n"), "{text}");
                assert!(text.contains("\"message\":\"upstream reset the connection\""));
                assert_eq!(text.matches("[DONE]").count(), 0, "{text}");
            }
            Protocol::Responses => unreachable!("not in this list"),
        }
    }
}

#[test]
fn omitted_include_usage_sends_no_usage_chunk() {
    let input = std::fs::read(fixtures_dir().join("stream_anthropic_tool_use.sse")).unwrap();
    let opts = StreamOptions {
        include_usage: false,
        ..stream_options()
    };
    let mut converter =
        StreamConverter::new(Protocol::Anthropic, Protocol::OpenAi, opts).with_created(CREATED);
    let mut out = BytesMut::new();
    converter.push(&input, &mut out).unwrap();
    converter.finish(&mut out).unwrap();
    let text = String::from_utf8(out.to_vec()).unwrap();
    assert!(!text.contains("usage"), "{text}");
    assert!(text.contains("\"finish_reason\":\"tool_calls\""));
}

#[test]
fn echo_stream_events_are_in_order() {
    let answer = openai::TextAnswer {
        id: "id",
        model: "echo",
        created: 0,
        text: "Echo: hi",
        finish_reason: crate::protocol::FinishReason::Stop,
        usage: crate::protocol::Usage {
            input_tokens: 1,
            output_tokens: 2,
            ..crate::protocol::Usage::default()
        },
    };
    let names: Vec<&str> = anthropic::message_stream(&answer, &["Echo:", " hi"], 1)
        .iter()
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let body = anthropic::message_response(&answer);
    assert_eq!(body["content"][0]["text"], "Echo: hi");
    assert_eq!(body["stop_reason"], "end_turn");
}

fn sse_events(bytes: &[u8]) -> Vec<crate::protocol::sse::SseEvent> {
    let mut decoder = SseDecoder::default();
    decoder.feed(bytes);
    let mut events = Vec::new();
    while let Ok(Some(event)) = decoder.next_event() {
        events.push(event);
    }
    events
}

/// The borrowed fast path and the `Value` path decode every fixture event identically.
#[test]
fn fast_and_value_stream_decoders_agree_on_fixtures() {
    let fixtures = stream_fixtures();
    assert!(fixtures.len() >= 6);
    for (from, input) in fixtures {
        let events = sse_events(&input);
        assert!(!events.is_empty());
        let (fast, slow) = crate::protocol::stream::decode_both_ways(from, &events);
        assert_eq!(fast, slow, "{from:?} fixture decoded differently");
    }
}

/// The borrowed fast paths of `openai::decode_response` and `anthropic::decode_response` agree with
/// their `Value` paths on the fixtures.
#[test]
fn fast_and_value_response_decoders_agree_on_fixtures() {
    let mut checked = 0;
    for file in inputs() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let body = std::fs::read(&file).unwrap();
        let (fast, value) = if name.starts_with("resp_openai") {
            (
                openai::decode_response(&body),
                openai::decode_response_value(&body),
            )
        } else if name.starts_with("resp_anthropic") {
            (
                anthropic::decode_response(&body),
                anthropic::decode_response_value(&body),
            )
        } else {
            continue;
        };
        assert!(fast.is_ok(), "{name}");
        assert_eq!(fast, value, "{name}");
        checked += 1;
    }
    assert!(checked >= 5);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Arbitrary JSON in every field `openai::decode_response` reads: both paths give the same result.
    #[test]
    fn fast_and_value_response_decoders_agree_on_arbitrary_json(value in arbitrary_json()) {
        let v = value;
        for body in [
            v.clone(),
            serde_json::json!({"id": v.clone(), "model": v.clone(), "created": v.clone(), "choices": v.clone(), "usage": v.clone()}),
            serde_json::json!({"id": "x", "choices": [v.clone()], "created": 5}),
            serde_json::json!({"choices": [{"message": v.clone(), "text": v.clone(), "finish_reason": v.clone()}]}),
            serde_json::json!({"choices": [{"message": {"content": v.clone(), "refusal": v.clone(), "reasoning": v.clone()}, "text": "t"}]}),
            serde_json::json!({"choices": [{"message": {"content": "c", "reasoning_content": v.clone(), "reasoning": "r", "tool_calls": v.clone()}}]}),
            serde_json::json!({"choices": [{"message": {"tool_calls": [{"id": v.clone(), "function": v.clone()}, v.clone()]}}]}),
            serde_json::json!({"choices": [{"message": {"content": null, "thinking_blocks": v.clone()}}], "usage": {"prompt_tokens": v.clone()}}),
        ] {
            let bytes = serde_json::to_vec(&body).unwrap();
            prop_assert_eq!(openai::decode_response(&bytes), openai::decode_response_value(&bytes));
        }
        for body in [
            serde_json::json!({"id": v.clone(), "model": v.clone(), "content": v.clone(), "stop_reason": v.clone(), "stop_sequence": v.clone(), "usage": v.clone()}),
            serde_json::json!({"id": "m", "content": [v.clone(), {"type": "text", "text": "a"}], "usage": {"input_tokens": v.clone(), "output_tokens": 2}}),
            serde_json::json!({"content": [{"type": "text", "text": v.clone()}, {"type": "thinking", "thinking": v.clone(), "signature": v.clone()}]}),
            serde_json::json!({"content": [{"type": v.clone(), "data": v.clone(), "text": "t"}, {"type": "redacted_thinking", "data": v.clone()}]}),
            serde_json::json!({"content": [{"type": "tool_use", "id": "t", "name": "f", "input": v.clone()}], "stop_reason": "tool_use"}),
            serde_json::json!({"content": [{"type": "tool_use", "id": v.clone(), "name": v.clone(), "input": {"q": v.clone(), "n": [1.5, -0.0, 12]}}, {"type": "text", "text": "after"}]}),
            serde_json::json!({"content": [{"type": "tool_use", "id": "t", "name": "f"}, {"type": "tool_use", "id": "u", "name": "g", "input": null}]}),
        ] {
            let bytes = serde_json::to_vec(&body).unwrap();
            prop_assert_eq!(anthropic::decode_response(&bytes), anthropic::decode_response_value(&bytes));
        }
    }

    /// Arbitrary JSON in every place the stream decoders read: both decoding paths agree, event for
    /// event (including which events are errors), with state carried across a sequence.
    #[test]
    fn fast_and_value_stream_decoders_agree_on_arbitrary_events(value in arbitrary_json()) {
        let v = value;
        let openai = [
            serde_json::json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "a"}}]}),
            serde_json::json!({"choices": [{"index": 0, "delta": v.clone()}]}),
            serde_json::json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c", "function": v.clone()}]}}]}),
            serde_json::json!({"choices": [{"index": 0, "delta": {"tool_calls": v.clone()}}], "usage": v.clone()}),
            serde_json::json!({"choices": [{"index": v.clone(), "text": v.clone(), "finish_reason": v.clone()}]}),
            serde_json::json!({"choices": v.clone(), "error": v.clone()}),
            serde_json::json!({"choices": [{"delta": {"reasoning_content": v.clone(), "reasoning": "r", "thinking_blocks": v.clone(), "refusal": v.clone()}}]}),
            v.clone(),
        ];
        let anthropic = [
            serde_json::json!({"type": "message_start", "message": {"usage": {"input_tokens": 3}}}),
            serde_json::json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
            serde_json::json!({"type": "content_block_delta", "index": 1, "delta": v.clone()}),
            serde_json::json!({"type": "content_block_delta", "index": v.clone(), "delta": {"type": "input_json_delta", "partial_json": v.clone()}}),
            serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": v.clone(), "text": v.clone(), "thinking": "t"}}),
            serde_json::json!({"type": v.clone(), "delta": {"type": "text_delta", "text": "x"}}),
            serde_json::json!({"type": "message_delta", "delta": v.clone(), "usage": v.clone()}),
            serde_json::json!({"type": "message_delta", "delta": {"stop_reason": v.clone(), "stop_sequence": v.clone()}, "usage": {"output_tokens": v.clone(), "input_tokens": 4}}),
            serde_json::json!({"type": "message_start", "message": v.clone()}),
            serde_json::json!({"type": "message_start", "message": {"usage": v.clone(), "content": v.clone()}}),
            serde_json::json!({"type": "content_block_start", "index": 2, "content_block": v.clone()}),
            serde_json::json!({"type": "content_block_start", "index": 3, "content_block": {"type": "thinking", "thinking": v.clone(), "signature": v.clone()}}),
            serde_json::json!({"type": "content_block_start", "index": 4, "content_block": {"type": "redacted_thinking", "data": v.clone()}}),
            serde_json::json!({"type": "content_block_stop", "index": v.clone()}),
            v.clone(),
        ];
        for (protocol, values) in [(Protocol::OpenAi, &openai[..]), (Protocol::Anthropic, &anthropic[..])] {
            let mut sse = Vec::new();
            for value in values.iter() {
                sse.extend_from_slice(b"data: ");
                sse.extend_from_slice(&serde_json::to_vec(value).unwrap());
                sse.extend_from_slice(b"\n\n");
            }
            // The same events again under an `event:` name, as Anthropic sends them.
            for value in values.iter() {
                sse.extend_from_slice(b"event: content_block_delta\ndata: ");
                sse.extend_from_slice(&serde_json::to_vec(value).unwrap());
                sse.extend_from_slice(b"\n\n");
            }
            let events = sse_events(&sse);
            let (fast, slow) = crate::protocol::stream::decode_both_ways(protocol, &events);
            prop_assert_eq!(fast, slow);
        }
    }

    /// Any chunking of the upstream bytes (inside UTF-8 characters, inside JSON) gives the same output.
    #[test]
    fn rechunking_does_not_change_output(
        fixture in 0usize..64,
        pieces in proptest::collection::vec(0usize..40, 0..200),
    ) {
        let fixtures = stream_fixtures();
        let (from, input) = &fixtures[fixture % fixtures.len()];
        let (whole, _) = convert_stream(*from, input, &[]);
        let (chunked, _) = convert_stream(*from, input, &pieces);
        prop_assert_eq!(whole, chunked);
    }

    /// Arbitrary bytes into every decoder and converter: errors are fine, panics are not.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz_everything(&bytes);
    }

    /// Fixture inputs with random bytes spliced in (near-valid JSON and SSE) never panic either.
    #[test]
    fn mutated_fixtures_never_panic(
        fixture in 0usize..64,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let files = inputs();
        fuzz_everything(&mutated(&files[fixture % files.len()], edits));
    }

    /// Arbitrary JSON values in the places the decoders look.
    #[test]
    fn arbitrary_json_never_panics(value in arbitrary_json()) {
        for wrapped in [
            value.clone(),
            serde_json::json!({"max_tokens": 5, "messages": [{"role": "user", "content": value.clone()}]}),
            serde_json::json!({"messages": [{"role": "assistant", "content": value.clone(), "tool_calls": value.clone()}]}),
            serde_json::json!({"choices": [{"index": 0, "delta": value.clone(), "message": value.clone()}], "usage": value.clone()}),
            serde_json::json!({"type": "content_block_delta", "index": 0, "delta": value.clone(), "content": value.clone()}),
            serde_json::json!({"type": "message_start", "message": value.clone(), "error": value.clone()}),
        ] {
            let bytes = serde_json::to_vec(&wrapped).unwrap();
            fuzz_everything(&bytes);
            let mut sse = b"data: ".to_vec();
            sse.extend_from_slice(&bytes);
            sse.extend_from_slice(b"\n\n");
            fuzz_everything(&sse);
        }
    }
}

fn fuzz_everything(bytes: &[u8]) {
    let opts = RequestOptions {
        model: Some("m"),
        default_max_tokens: 16,
    };
    for request in [
        openai::decode_chat(bytes).ok(),
        anthropic::decode_request(bytes).ok(),
    ]
    .into_iter()
    .flatten()
    {
        let _ = convert::encode_anthropic_request(&request, &opts);
        let _ = convert::encode_openai_request(&request, &opts);
        let _ = anthropic::count_tokens_input(&request);
    }
    let _ = openai::decode_completion(bytes);
    let _ = openai::decode_embeddings(bytes);
    let _ = crate::protocol::json_patch::set_fields(bytes, &[("model", "\"m\""), ("extra", "1")]);
    for from in [Protocol::OpenAi, Protocol::Anthropic] {
        for to in [Protocol::OpenAi, Protocol::Anthropic] {
            let response_opts = ResponseOptions {
                id: "x",
                model: None,
                echo: None,
            };
            let _ = convert::convert_response(from, to, bytes, &response_opts);
            let _ = convert::convert_error(from, to, 500, bytes);
            let mut converter = StreamConverter::new(from, to, stream_options());
            let mut out = BytesMut::new();
            let _ = converter.push(bytes, &mut out);
            let _ = converter.finish(&mut out);
            converter.abort("x", &mut out);
        }
        let _ = convert::summarize_response(from, bytes);
        let mut tap = StreamTap::new(from);
        let mut decoder = SseDecoder::default();
        decoder.feed(bytes);
        while let Ok(Some(event)) = decoder.next_event() {
            tap.observe(&event);
        }
    }
}

#[test]
fn flush_sees_a_final_done_without_its_blank_line() {
    let mut converter =
        StreamConverter::new(Protocol::OpenAi, Protocol::Anthropic, stream_options());
    let mut out = BytesMut::new();
    converter
        .push(
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n",
            &mut out,
        )
        .unwrap();
    assert!(!converter.upstream_finished());
    converter.flush(&mut out).unwrap();
    assert!(converter.upstream_finished());
    let text = String::from_utf8(out.to_vec()).unwrap();
    assert!(
        text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{text}"
    );
    // Without usage from the upstream, message_delta carries the estimate: input from the options,
    // output counted from the streamed text; the summary keeps only real usage.
    assert!(text.contains(r#""usage":{"input_tokens":11,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}"#), "{text}");
    assert_eq!(converter.summary().usage, None);
}

#[test]
fn an_error_as_the_first_upstream_event_is_reported() {
    let anthropic_error = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let (_, converter) = convert_stream(Protocol::Anthropic, anthropic_error, &[]);
    assert_eq!(converter.first_event_error(), Some("Overloaded"));
    let input = std::fs::read(fixtures_dir().join("stream_anthropic_tool_use.sse")).unwrap();
    let (_, converter) = convert_stream(Protocol::Anthropic, &input, &[]);
    assert_eq!(converter.first_event_error(), None);
    let openai_error = b"data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n";
    let (_, converter) = convert_stream(Protocol::OpenAi, openai_error, &[]);
    assert_eq!(converter.first_event_error(), Some("boom"));
}
