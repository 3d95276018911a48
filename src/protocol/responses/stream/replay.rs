//! A complete answer replayed as a Responses event stream (echo backend, cache replays).

use bytes::BytesMut;

use crate::protocol::stream::{StreamEvent, StreamOptions};
use crate::protocol::{ChatResponse, Part};

use super::ResponsesEncoder;

/// A complete answer as a Responses event stream (echo backend, cache replays): text in word-sized
/// pieces, then reasoning, tool calls, usage and the end. Returns the stream and the final `response`.
pub fn replay(
    response: &ChatResponse,
    opts: &StreamOptions,
    created_at: i64,
) -> (BytesMut, Vec<u8>) {
    let mut encoder = ResponsesEncoder::new(created_at);
    let mut out = BytesMut::new();
    encoder.emit(&StreamEvent::Start { usage: None }, opts, &mut out);
    let mut tools = 0;
    for part in &response.parts {
        match part {
            Part::Text(text) => {
                for piece in text.split_inclusive(' ') {
                    encoder.emit(&StreamEvent::Text(piece.to_owned()), opts, &mut out);
                }
            }
            Part::Thinking { text, signature } => {
                encoder.emit(&StreamEvent::Thinking(text.clone()), opts, &mut out);
                if let Some(signature) = signature {
                    encoder.emit(&StreamEvent::Signature(signature.clone()), opts, &mut out);
                }
            }
            Part::RedactedThinking { data } => {
                encoder.emit(&StreamEvent::RedactedThinking(data.clone()), opts, &mut out);
            }
            Part::ToolCall(call) => {
                let index = tools;
                tools += 1;
                encoder.emit(
                    &StreamEvent::ToolCallStart {
                        index,
                        id: call.id.clone(),
                        name: call.name.clone(),
                    },
                    opts,
                    &mut out,
                );
                encoder.emit(
                    &StreamEvent::ToolCallArgs {
                        index,
                        arguments: call.arguments.to_string(),
                    },
                    opts,
                    &mut out,
                );
            }
            Part::Image(_) | Part::ToolResult(_) => {}
        }
    }
    if let Some(reason) = response.finish_reason {
        encoder.emit(
            &StreamEvent::Finish {
                reason,
                stop_sequence: None,
            },
            opts,
            &mut out,
        );
    }
    encoder.emit(
        &StreamEvent::Usage(response.usage.unwrap_or_default()),
        opts,
        &mut out,
    );
    encoder.emit(&StreamEvent::Done, opts, &mut out);
    (out, encoder.final_response.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{events, opts};
    use super::*;
    use crate::protocol::{FinishReason, Usage};
    use serde_json::Value;

    #[test]
    fn events_are_numbered_in_the_official_order() {
        let response = ChatResponse {
            id: "resp_t".into(),
            model: "m".into(),
            parts: vec![
                Part::Thinking {
                    text: "why".into(),
                    signature: Some("sig".into()),
                },
                Part::Text("Hello world".into()),
                Part::ToolCall(crate::protocol::ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments: "{}".into(),
                }),
            ],
            finish_reason: Some(FinishReason::ToolCalls),
            usage: Some(Usage {
                input_tokens: 3,
                output_tokens: 4,
                ..Usage::default()
            }),
            ..ChatResponse::default()
        };
        let (out, last) = replay(&response, &opts(), 7);
        let events = events(&out);
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.reasoning_text.delta",
                "response.reasoning_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (seq, event) in events.iter().enumerate() {
            assert_eq!(event["sequence_number"], seq as u64);
        }
        let completed = &events.last().unwrap()["response"];
        assert_eq!(completed["status"], "completed");
        assert_eq!(completed["output"][0]["encrypted_content"], "sig");
        assert_eq!(completed["output"][1]["content"][0]["text"], "Hello world");
        assert_eq!(completed["usage"]["output_tokens"], 4);
        let kept: Value = serde_json::from_slice(&last).unwrap();
        assert_eq!(&kept, completed);
    }
}
