//! Responses response decoding: a `response` object (or its output items and usage) into the canonical
//! answer.

use serde_json::Value;

use super::REDACTED_PREFIX;
use crate::protocol::openai::{response_object, str_member};
use crate::protocol::{ChatResponse, DecodeError, FinishReason, Part, ToolCall, Usage};

/// Decode a complete `response` object into canonical form: reasoning items become thinking (their
/// `encrypted_content` the signature), message items text, function calls tool calls; `incomplete`
/// becomes a length (or content filter) stop.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, DecodeError> {
    Ok(response_from_value(&response_object(body)?))
}

/// [`decode_response`] of a parsed `response` object (streams' final events carry one).
pub(crate) fn response_from_value(value: &Value) -> ChatResponse {
    let text = |key: &str| str_member(value, key);
    let mut parts = Vec::new();
    for item in value
        .get("output")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        parts.extend(item_parts(item));
    }
    let has_tool_calls = parts.iter().any(|part| matches!(part, Part::ToolCall(_)));
    ChatResponse {
        id: text("id"),
        model: text("model"),
        created: value.get("created_at").and_then(|created| {
            created
                .as_i64()
                .or_else(|| created.as_f64().map(|seconds| seconds as i64))
        }),
        parts,
        finish_reason: Some(finish_reason_of(value, has_tool_calls)),
        stop_sequence: None,
        usage: value
            .get("usage")
            .filter(|usage| usage.is_object())
            .map(usage_from),
    }
}

/// Why a response ended, from its `status` and `incomplete_details`.
pub(crate) fn finish_reason_of(response: &Value, has_tool_calls: bool) -> FinishReason {
    if response.get("status").and_then(Value::as_str) == Some("incomplete") {
        return match response
            .pointer("/incomplete_details/reason")
            .and_then(Value::as_str)
        {
            Some("content_filter") => FinishReason::ContentFilter,
            _ => FinishReason::Length,
        };
    }
    if has_tool_calls {
        FinishReason::ToolCalls
    } else {
        FinishReason::Stop
    }
}

/// The canonical parts of one output item (unknown item types give none).
pub(crate) fn item_parts(item: &Value) -> Vec<Part> {
    let str_of = |value: &Value, key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let texts = |key: &str, field: &str| -> String {
        item.get(key)
            .and_then(Value::as_array)
            .map(|parts| {
                parts
                    .iter()
                    .filter_map(|part| part.get(field).and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    match item.get("type").and_then(Value::as_str) {
        Some("message") => item
            .get("content")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|part| match part.get("type").and_then(Value::as_str) {
                Some("output_text") => Some(Part::Text(str_of(part, "text").into())),
                Some("refusal") => Some(Part::Text(str_of(part, "refusal").into())),
                _ => None,
            })
            .collect(),
        Some("function_call") => vec![Part::ToolCall(ToolCall {
            id: str_of(item, "call_id"),
            name: str_of(item, "name"),
            arguments: str_of(item, "arguments").into(),
        })],
        Some("reasoning") => {
            let mut text = texts("content", "text");
            if text.is_empty() {
                text = texts("summary", "text");
            }
            let encrypted = item
                .get("encrypted_content")
                .and_then(Value::as_str)
                .filter(|e| !e.is_empty());
            vec![match encrypted {
                Some(encrypted) => match encrypted.strip_prefix(REDACTED_PREFIX) {
                    Some(data) => Part::RedactedThinking {
                        data: data.to_owned(),
                    },
                    None => Part::Thinking {
                        text,
                        signature: Some(encrypted.to_owned()),
                    },
                },
                None => Part::Thinking {
                    text,
                    signature: None,
                },
            }]
        }
        _ => Vec::new(),
    }
}

/// Canonical usage from a Responses `usage` object (`input_tokens` includes cached tokens, as OpenAI's
/// `prompt_tokens` does).
pub(crate) fn usage_from(value: &Value) -> Usage {
    let field = |pointer: &str| value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: field("/input_tokens"),
        output_tokens: field("/output_tokens"),
        cache_read_tokens: field("/input_tokens_details/cached_tokens"),
        cache_creation_tokens: 0,
        reasoning_tokens: field("/output_tokens_details/reasoning_tokens"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::responses::encode_response_bytes;

    #[test]
    fn response_objects_round_trip() {
        let response = ChatResponse {
            id: "resp_x".into(),
            model: "m".into(),
            created: Some(5),
            parts: vec![
                Part::Thinking {
                    text: "hmm".into(),
                    signature: Some("sig".into()),
                },
                Part::RedactedThinking { data: "zz".into() },
                Part::Text("a".into()),
                Part::Text("b".into()),
                Part::ToolCall(ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into(),
                }),
            ],
            finish_reason: Some(FinishReason::ToolCalls),
            stop_sequence: None,
            usage: Some(Usage {
                input_tokens: 10,
                output_tokens: 5,
                cache_read_tokens: 2,
                reasoning_tokens: 3,
                ..Usage::default()
            }),
        };
        let bytes = encode_response_bytes(&response, 0, "");
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["object"], "response");
        assert_eq!(value["status"], "completed");
        assert_eq!(value["output"][2]["id"], "msg_x_2");
        assert_eq!(value["output"][2]["content"][0]["text"], "ab");
        assert_eq!(value["output"][3]["call_id"], "call_1");
        assert_eq!(value["usage"]["total_tokens"], 15);
        assert_eq!(value["tools"], serde_json::json!([]));
        let back = decode_response(&bytes).unwrap();
        assert_eq!(back.usage, response.usage);
        assert_eq!(back.parts[0], response.parts[0]);
        assert_eq!(back.parts[1], response.parts[1]);
        assert_eq!(back.parts[2], Part::Text("ab".into()));
        assert_eq!(back.finish_reason, Some(FinishReason::ToolCalls));
        let truncated = ChatResponse {
            finish_reason: Some(FinishReason::Length),
            ..response
        };
        let value: Value =
            serde_json::from_slice(&encode_response_bytes(&truncated, 0, "")).unwrap();
        assert_eq!(value["status"], "incomplete");
        assert_eq!(value["incomplete_details"]["reason"], "max_output_tokens");
    }
}
