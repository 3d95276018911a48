//! Bodies the gateway writes itself in Anthropic's shapes: error bodies and the echo backend's and the
//! cache's text answers (a `message` and its stream events).

use serde_json::{Value, json};

use super::stop_reason_str;
use super::usage::usage_json;
use crate::protocol::Usage;
use crate::protocol::openai::TextAnswer;

/// Render an Anthropic error body.
pub fn error_body(error_type: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type, "message": message}})
}

/// Render the echo backend's answer as an Anthropic `message`.
pub(crate) fn message_response(answer: &TextAnswer<'_>) -> Value {
    json!({
        "id": answer.id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": [{"type": "text", "text": answer.text}],
        "stop_reason": stop_reason_str(answer.finish_reason),
        "stop_sequence": null,
        "usage": usage_json(&answer.usage),
    })
}

/// Render the echo backend's answer as Anthropic stream events `(event name, data)`, one text delta per
/// piece, in the exact order the Messages API uses.
pub(crate) fn message_stream(
    answer: &TextAnswer<'_>,
    pieces: &[&str],
    input_tokens: u64,
) -> Vec<(&'static str, Value)> {
    let mut out = Vec::with_capacity(pieces.len() + 6);
    out.push((
        "message_start",
        json!({"type": "message_start", "message": {
            "id": answer.id,
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage_json(&Usage { input_tokens, output_tokens: 0, ..answer.usage }),
        }}),
    ));
    out.push((
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    out.push(("ping", json!({"type": "ping"})));
    for piece in pieces {
        out.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    out.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push((
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason_str(answer.finish_reason), "stop_sequence": null},
            "usage": usage_json(&answer.usage),
        }),
    ));
    out.push(("message_stop", json!({"type": "message_stop"})));
    out
}
