//! Encoding a canonical response as an Anthropic `message`.

use serde_json::{Value, json};

use super::stop_reason_str;
use super::usage::usage_json;
use crate::protocol::{ChatResponse, FinishReason, Part};

/// Render a canonical response as an Anthropic `message`.
pub fn encode_response(response: &ChatResponse) -> Value {
    let mut content = Vec::with_capacity(response.parts.len());
    for part in &response.parts {
        content.push(match part {
            Part::Text(text) => json!({"type": "text", "text": text}),
            Part::Thinking { text, signature } => json!({
                "type": "thinking",
                "thinking": text,
                "signature": signature.as_deref().unwrap_or_default(),
            }),
            Part::RedactedThinking { data } => json!({"type": "redacted_thinking", "data": data}),
            Part::ToolCall(call) => json!({
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": tool_input(&call.arguments),
            }),
            Part::Image(_) | Part::ToolResult(_) => continue,
        });
    }
    let has_tool_calls = response
        .parts
        .iter()
        .any(|part| matches!(part, Part::ToolCall(_)));
    // Some OpenAI-compatible servers say `stop` after tool calls; Anthropic clients run tools only on
    // `tool_use`.
    let reason = match response.finish_reason.unwrap_or(FinishReason::Stop) {
        FinishReason::Stop if has_tool_calls => FinishReason::ToolCalls,
        reason => reason,
    };
    json!({
        "id": response.id,
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": stop_reason_str(reason),
        "stop_sequence": response.stop_sequence,
        "usage": usage_json(&response.usage.unwrap_or_default()),
    })
}

/// Tool arguments as an `input` object: invalid or non-object JSON (a truncated answer) is kept as a
/// string under `_raw` rather than lost.
pub(crate) fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => input,
        _ => json!({"_raw": arguments}),
    }
}
