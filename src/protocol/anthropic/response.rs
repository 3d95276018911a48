//! Decoding a complete Anthropic `message` answer into a canonical response: the borrowed fast path and
//! the `Value` path that defines the semantics.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::finish_reason_from;
use super::request::decode_block;
use super::usage::{UsageIn, WireUsage};
use super::wire::BlockItem;
use crate::protocol::openai::{response_object, str_member};
use crate::protocol::{ChatResponse, DecodeError, Part, ToolCall};

/// Decode a complete Anthropic `message` response.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, DecodeError> {
    if let Some(response) =
        crate::protocol::fast_decode::<MessageIn<'_>>(body).and_then(MessageIn::decode)
    {
        return Ok(response);
    }
    decode_response_value(body)
}

// --- Borrowed fast path for `decode_response` ---
//
// Text, thinking and `tool_use` answers read without a JSON tree for the whole body (a `tool_use`
// block's `input` alone goes through one, to be re-rendered as compact JSON exactly as the `Value` path
// renders it); images, tool results, and any unexpected type take the `Value` path, which defines the
// semantics. A unit test compares both on fixtures and arbitrary JSON. This tier is kept because it
// wins clearly: without it (every body through the `Value` path) an OpenAI client's request to an
// Anthropic upstream costs 21% more instructions for a text answer (docs/performance.md).

#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<Vec<crate::protocol::Obj<BlockIn<'a>>>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop_sequence: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<crate::protocol::Obj<UsageIn>>,
}

/// A content block as the fast paths read it (responses here, `content_block_start` in streams).
#[derive(Deserialize)]
pub(crate) struct BlockIn<'a> {
    #[serde(rename = "type", default, borrow)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub data: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub input: Option<&'a RawValue>,
}

impl MessageIn<'_> {
    fn decode(self) -> Option<ChatResponse> {
        let owned = |text: &Option<Cow<'_, str>>| text.as_deref().map(str::to_owned);
        let mut parts = Vec::new();
        for block in self.content.iter().flatten() {
            // A block the `Value` path would refuse (a required field missing) is skipped there too.
            let part = match block.kind.as_deref() {
                None => continue,
                Some("text") => owned(&block.text).map(|text| Part::Text(text.into())),
                Some("thinking") => owned(&block.thinking).map(|text| Part::Thinking {
                    text,
                    signature: block
                        .signature
                        .as_deref()
                        .filter(|signature| !signature.is_empty())
                        .map(str::to_owned),
                }),
                Some("redacted_thinking") => {
                    owned(&block.data).map(|data| Part::RedactedThinking { data })
                }
                // Without an `id` and a `name` the `Value` path skips the block too.
                Some("tool_use") => match (&block.id, &block.name) {
                    (Some(id), Some(name)) => Some(Part::ToolCall(ToolCall {
                        id: id.clone().into_owned(),
                        name: name.clone().into_owned(),
                        arguments: match block.input {
                            None => "{}".into(),
                            Some(input) => serde_json::from_str::<Value>(input.get())
                                .ok()?
                                .to_string()
                                .into(),
                        },
                    })),
                    _ => None,
                },
                Some("image" | "tool_result") => return None,
                Some(_) => None,
            };
            parts.extend(part);
        }
        let usage = self.usage.as_ref().map(|usage| {
            let mut wire = WireUsage::default();
            usage.merge_into(&mut wire);
            wire.canonical()
        });
        Some(ChatResponse {
            id: self.id.map(Cow::into_owned).unwrap_or_default(),
            model: self.model.map(Cow::into_owned).unwrap_or_default(),
            created: None,
            parts,
            finish_reason: self.stop_reason.as_deref().map(finish_reason_from),
            stop_sequence: owned(&self.stop_sequence),
            usage,
        })
    }
}

/// The general path of [`decode_response`], through a JSON tree; it defines the semantics.
pub(crate) fn decode_response_value(body: &[u8]) -> Result<ChatResponse, DecodeError> {
    let mut value = response_object(body)?;
    let content = value.get_mut("content").map(Value::take);
    let text = |key: &str| str_member(&value, key);
    let mut parts = Vec::new();
    if let Some(Value::Array(blocks)) = content {
        for block in blocks {
            // A block tree reads as any JSON does (`BlockItem` takes every shape).
            let Ok(block) = serde_json::from_value::<BlockItem>(block) else {
                continue;
            };
            if let Ok(Some(part)) = decode_block(block, &|| "content".to_owned()) {
                parts.push(part);
            }
        }
    }
    let usage = value
        .get("usage")
        .filter(|usage| usage.is_object())
        .map(|usage| {
            let mut wire = WireUsage::default();
            wire.merge(usage);
            wire.canonical()
        });
    Ok(ChatResponse {
        id: text("id"),
        model: text("model"),
        created: None,
        parts,
        finish_reason: value
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(finish_reason_from),
        stop_sequence: value
            .get("stop_sequence")
            .and_then(Value::as_str)
            .map(str::to_owned),
        usage,
    })
}
