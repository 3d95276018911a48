//! Encoding a canonical response as an OpenAI `chat.completion` (as a tree or straight to bytes), and
//! canonical usage as OpenAI's `usage` object.

use serde::Serialize;
use serde_json::Value;

use super::finish_reason_str;
use crate::protocol::{ChatResponse, FinishReason, Part, Usage};

/// OpenAI `usage` object; `prompt_tokens_details.cached_tokens` only when some were read from cache
/// (cache writes have no OpenAI field and are only part of `prompt_tokens`).
pub(crate) fn usage_json(usage: &Usage) -> Value {
    serde_json::to_value(UsageOut::new(usage)).unwrap_or_default()
}

/// Render a canonical response as a `chat.completion`; `created` is used when the response has none.
pub fn encode_response(response: &ChatResponse, created: i64) -> Value {
    serde_json::to_value(ResponseOut::new(response, created)).unwrap_or_default()
}

/// [`encode_response`] straight to bytes (no JSON tree on the way).
pub(crate) fn encode_response_bytes(
    response: &ChatResponse,
    created: i64,
) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&ResponseOut::new(response, created))
}

/// A `chat.completion` as written: field order is the wire order.
#[derive(Serialize)]
struct ResponseOut<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: [ChoiceOut<'a>; 1],
    usage: UsageOut,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: MessageOut<'a>,
    logprobs: (),
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    /// `null` for an answer that only calls tools.
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    /// Kept only when a block carries a signature or is redacted (plain reasoning says it all otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_blocks: Option<Vec<ThinkingBlockOut<'a>>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ThinkingBlockOut<'a> {
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// OpenAI's `usage` object, as [`usage_json`] writes it.
#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<CachedTokensOut>,
}

#[derive(Serialize)]
struct CachedTokensOut {
    cached_tokens: u64,
}

impl UsageOut {
    fn new(usage: &Usage) -> UsageOut {
        UsageOut {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: usage.input_tokens.saturating_add(usage.output_tokens),
            prompt_tokens_details: (usage.cache_read_tokens > 0).then_some(CachedTokensOut {
                cached_tokens: usage.cache_read_tokens,
            }),
        }
    }
}

impl<'a> ResponseOut<'a> {
    fn new(response: &'a ChatResponse, created: i64) -> ResponseOut<'a> {
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut thinking_blocks = Vec::new();
        let mut keep_blocks = false;
        let mut tool_calls = Vec::new();
        for part in &response.parts {
            match part {
                Part::Text(piece) => text.push_str(piece),
                Part::Thinking { text, signature } => {
                    reasoning.push_str(text);
                    keep_blocks |= signature.is_some();
                    thinking_blocks.push(ThinkingBlockOut::Thinking {
                        thinking: text,
                        signature: signature.as_deref().unwrap_or_default(),
                    });
                }
                Part::RedactedThinking { data } => {
                    keep_blocks = true;
                    thinking_blocks.push(ThinkingBlockOut::RedactedThinking { data });
                }
                Part::ToolCall(call) => tool_calls.push(ToolCallOut {
                    id: &call.id,
                    kind: "function",
                    function: FunctionOut {
                        name: &call.name,
                        arguments: &call.arguments,
                    },
                }),
                Part::Image(_) | Part::ToolResult(_) => {}
            }
        }
        let content = (!text.is_empty() || tool_calls.is_empty()).then_some(text);
        ResponseOut {
            id: &response.id,
            object: "chat.completion",
            created: response.created.unwrap_or(created),
            model: &response.model,
            choices: [ChoiceOut {
                index: 0,
                message: MessageOut {
                    role: "assistant",
                    content,
                    reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                    thinking_blocks: keep_blocks.then_some(thinking_blocks),
                    tool_calls,
                },
                logprobs: (),
                finish_reason: finish_reason_str(
                    response.finish_reason.unwrap_or(FinishReason::Stop),
                ),
            }],
            usage: UsageOut::new(&response.usage.unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache stores streamed answers through the direct writer: the same bytes as the tree.
    #[test]
    fn response_bytes_match_the_json_tree() {
        let response = ChatResponse {
            id: "chatcmpl-1".into(),
            model: "m".into(),
            parts: vec![Part::Text("say \"hi\"\n".into())],
            finish_reason: Some(FinishReason::Length),
            usage: Some(Usage {
                input_tokens: 3,
                output_tokens: 4,
                ..Default::default()
            }),
            ..Default::default()
        };
        let tree = serde_json::to_vec(&encode_response(&response, 7)).unwrap();
        assert_eq!(encode_response_bytes(&response, 7).unwrap(), tree);
    }
}
