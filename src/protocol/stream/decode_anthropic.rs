//! The Anthropic event decoder: Messages API stream events → canonical [`StreamEvent`]s, through
//! the exact text-delta reader, the borrowed views below, or the `Value` path.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::exact::exact_text_delta;
use super::{StreamError, StreamEvent, error_event, non_empty, parse_event, push_text};
use crate::protocol::anthropic::{self, WireUsage};
use crate::protocol::sse::SseEvent;
use crate::protocol::{Obj, fast_decode};

#[derive(Debug, Default)]
pub(super) struct AnthropicDecoder {
    usage: WireUsage,
    /// `(content block index, tool call ordinal)` for every tool_use block so far.
    tool_blocks: Vec<(u64, usize)>,
    /// Tests only: skip the borrowed fast path, to compare both paths.
    pub(super) value_only: bool,
}

impl AnthropicDecoder {
    pub(super) fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), StreamError> {
        if event.data.is_empty() {
            return Ok(());
        }
        if !self.value_only
            && let Some(text) = exact_text_delta(&event.data)
        {
            push_text(out, StreamEvent::Text, text);
            return Ok(());
        }
        if !self.value_only
            && let Some(fast) = fast_decode::<AnthropicEventIn<'_>>(&event.data)
            && self.decode_fast(&fast, event, out)
        {
            return Ok(());
        }
        let value = parse_event(event)?;
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        let text = |value: &Value, key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let block_index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => {
                if let Some(usage) = value.pointer("/message/usage") {
                    self.usage.merge(usage);
                }
                out.push(StreamEvent::Start {
                    usage: Some(self.usage.canonical()),
                });
            }
            "content_block_start" => {
                let Some(block) = value.get("content_block") else {
                    return Ok(());
                };
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => push_text(out, StreamEvent::Text, text(block, "text")),
                    Some("thinking") => {
                        push_text(out, StreamEvent::Thinking, text(block, "thinking"));
                        push_text(out, StreamEvent::Signature, text(block, "signature"));
                    }
                    Some("redacted_thinking") => {
                        out.push(StreamEvent::RedactedThinking(text(block, "data")));
                    }
                    Some("tool_use") => {
                        let index = self.tool_blocks.len();
                        self.tool_blocks.push((block_index, index));
                        out.push(StreamEvent::ToolCallStart {
                            index,
                            id: text(block, "id"),
                            name: text(block, "name"),
                        });
                        if let Some(input) = block
                            .get("input")
                            .filter(|input| input.as_object().is_some_and(|o| !o.is_empty()))
                        {
                            out.push(StreamEvent::ToolCallArgs {
                                index,
                                arguments: serde_json::to_string(&input).unwrap_or_default(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let Some(delta) = value.get("delta") else {
                    return Ok(());
                };
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => push_text(out, StreamEvent::Text, text(delta, "text")),
                    Some("thinking_delta") => {
                        push_text(out, StreamEvent::Thinking, text(delta, "thinking"));
                    }
                    Some("signature_delta") => {
                        push_text(out, StreamEvent::Signature, text(delta, "signature"));
                    }
                    Some("input_json_delta") => {
                        let arguments = text(delta, "partial_json");
                        if let Some((_, index)) = self
                            .tool_blocks
                            .iter()
                            .find(|(block, _)| *block == block_index)
                            && !arguments.is_empty()
                        {
                            out.push(StreamEvent::ToolCallArgs {
                                index: *index,
                                arguments,
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = value.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    out.push(StreamEvent::Finish {
                        reason: anthropic::finish_reason_from(reason),
                        stop_sequence: value
                            .pointer("/delta/stop_sequence")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    });
                }
                if let Some(usage) = value.get("usage").filter(|usage| usage.is_object()) {
                    self.usage.merge(usage);
                    out.push(StreamEvent::Usage(self.usage.canonical()));
                }
            }
            "message_stop" => out.push(StreamEvent::Done),
            "error" => out.push(error_event(value.get("error").unwrap_or(&Value::Null))),
            _ => {}
        }
        Ok(())
    }

    /// The typed twin of the `Value` path for the per-token events; false when the event is of another
    /// kind (the caller then takes the `Value` path).
    fn decode_fast(
        &mut self,
        fast: &AnthropicEventIn<'_>,
        event: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> bool {
        let kind = fast.kind.as_deref().or(event.event.as_deref());
        match kind {
            Some("content_block_delta") => {
                let Some(delta) = &fast.delta else {
                    return true;
                };
                match delta.kind.as_deref() {
                    Some("text_delta") => {
                        push_text(out, StreamEvent::Text, owned_text(&delta.text))
                    }
                    Some("thinking_delta") => {
                        push_text(out, StreamEvent::Thinking, owned_text(&delta.thinking));
                    }
                    Some("signature_delta") => {
                        push_text(out, StreamEvent::Signature, owned_text(&delta.signature));
                    }
                    Some("input_json_delta") => {
                        let block_index = fast.index.unwrap_or(0);
                        if let Some((_, index)) = self
                            .tool_blocks
                            .iter()
                            .find(|(block, _)| *block == block_index)
                            && let Some(arguments) = non_empty(&delta.partial_json)
                        {
                            out.push(StreamEvent::ToolCallArgs {
                                index: *index,
                                arguments: arguments.to_owned(),
                            });
                        }
                    }
                    _ => {}
                }
                true
            }
            Some("message_start") => {
                if let Some(usage) = fast.message.as_ref().and_then(|m| m.usage.as_ref()) {
                    usage.merge_into(&mut self.usage);
                }
                out.push(StreamEvent::Start {
                    usage: Some(self.usage.canonical()),
                });
                true
            }
            Some("content_block_start") => {
                let Some(block) = &fast.content_block else {
                    return true;
                };
                match block.kind.as_deref() {
                    Some("text") => push_text(out, StreamEvent::Text, owned_text(&block.text)),
                    Some("thinking") => {
                        push_text(out, StreamEvent::Thinking, owned_text(&block.thinking));
                        push_text(out, StreamEvent::Signature, owned_text(&block.signature));
                    }
                    Some("redacted_thinking") => {
                        out.push(StreamEvent::RedactedThinking(owned_text(&block.data)));
                    }
                    // A tool call's `input` is kept as raw JSON text: the `Value` path renders it.
                    Some("tool_use") => return false,
                    _ => {}
                }
                true
            }
            Some("message_delta") => {
                if let Some(reason) = fast.delta.as_ref().and_then(|d| d.stop_reason.as_deref()) {
                    out.push(StreamEvent::Finish {
                        reason: anthropic::finish_reason_from(reason),
                        stop_sequence: fast
                            .delta
                            .as_ref()
                            .and_then(|d| d.stop_sequence.as_deref())
                            .map(str::to_owned),
                    });
                }
                if let Some(usage) = &fast.usage {
                    usage.merge_into(&mut self.usage);
                    out.push(StreamEvent::Usage(self.usage.canonical()));
                }
                true
            }
            Some("ping" | "content_block_stop") => true,
            Some("message_stop") => {
                out.push(StreamEvent::Done);
                true
            }
            _ => false,
        }
    }
}

/// A borrowed view's text field as an owned string, empty when absent (the fast path's reading of what
/// the `Value` path reads with `unwrap_or_default`).
fn owned_text(text: &Option<Cow<'_, str>>) -> String {
    text.as_deref().unwrap_or_default().to_owned()
}

// --- Borrowed views of the common event shapes (the fast path; see `stream`'s module doc) ---

/// An Anthropic event, read as far as the fast path goes: every event kind except a `tool_use` block
/// start (and anything unusual) is decoded from this; the rest takes the `Value` path.
#[derive(Deserialize)]
struct AnthropicEventIn<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    delta: Option<Obj<AnthropicDeltaIn<'a>>>,
    #[serde(default, borrow)]
    content_block: Option<Obj<anthropic::BlockIn<'a>>>,
    #[serde(default)]
    message: Option<Obj<AnthropicMessageIn>>,
    #[serde(default)]
    usage: Option<Obj<anthropic::UsageIn>>,
}

#[derive(Deserialize)]
struct AnthropicDeltaIn<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop_sequence: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AnthropicMessageIn {
    #[serde(default)]
    usage: Option<Obj<anthropic::UsageIn>>,
}
