//! The Anthropic encoder: canonical [`StreamEvent`]s → Messages API stream events in their order
//! (`message_start`, per-block start/delta/stop, `message_delta`, `message_stop`).

use bytes::BytesMut;
use serde::Serialize;
use serde_json::{Value, json};

use super::{StreamEvent, StreamOptions, write_event};
use crate::protocol::{FinishReason, Usage, anthropic};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A thinking block that got its signature: later thinking starts a new block.
    SignedThinking,
    Tool(usize),
}

#[derive(Debug)]
pub(super) struct AnthropicEncoder {
    started: bool,
    pub(super) ended: bool,
    /// The open content block and its index.
    open: Option<(Block, u64)>,
    next_index: u64,
    tools_started: Vec<usize>,
    finish: Option<(FinishReason, Option<String>)>,
    usage: Option<Usage>,
}

fn anthropic_event<T: Serialize + ?Sized>(out: &mut BytesMut, name: &'static str, data: &T) {
    write_event(out, Some(name), data);
}

// Typed wire shapes for the per-token events: they keep the documented field order (`type` first) and
// skip building a `Value` tree for every delta.

#[derive(Serialize)]
struct BlockEventWire<'a, B: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_block: Option<&'a B>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<DeltaWire<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum DeltaWire<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

fn block_start(out: &mut BytesMut, index: u64, content_block: &Value) {
    anthropic_event(
        out,
        "content_block_start",
        &BlockEventWire {
            kind: "content_block_start",
            index,
            content_block: Some(content_block),
            delta: None,
        },
    );
}

fn block_stop(out: &mut BytesMut, index: u64) {
    anthropic_event(
        out,
        "content_block_stop",
        &BlockEventWire::<()> {
            kind: "content_block_stop",
            index,
            content_block: None,
            delta: None,
        },
    );
}

impl AnthropicEncoder {
    pub(super) fn new() -> Self {
        AnthropicEncoder {
            started: false,
            ended: false,
            open: None,
            next_index: 0,
            tools_started: Vec::new(),
            finish: None,
            usage: None,
        }
    }

    fn ensure_started(&mut self, opts: &StreamOptions, usage: Option<Usage>, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let usage = usage.unwrap_or(Usage {
            input_tokens: opts.input_tokens,
            ..Usage::default()
        });
        anthropic_event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": opts.id,
                "type": "message",
                "role": "assistant",
                "model": opts.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": anthropic::usage_json(&usage),
            }}),
        );
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if let Some((_, index)) = self.open.take() {
            block_stop(out, index);
        }
    }

    /// Open a block of `kind` unless it is the open one; returns its index.
    fn ensure_block(&mut self, kind: Block, content_block: Value, out: &mut BytesMut) -> u64 {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        block_start(out, index, &content_block);
        index
    }

    fn delta(out: &mut BytesMut, index: u64, delta: DeltaWire<'_>) {
        anthropic_event(
            out,
            "content_block_delta",
            &BlockEventWire::<()> {
                kind: "content_block_delta",
                index,
                content_block: None,
                delta: Some(delta),
            },
        );
    }

    fn start_tool(&mut self, index: usize, id: &str, name: &str, out: &mut BytesMut) {
        self.tools_started.push(index);
        self.close_block(out);
        self.ensure_block(
            Block::Tool(index),
            json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
            out,
        );
    }

    pub(super) fn emit(&mut self, event: &StreamEvent, opts: &StreamOptions, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        if let StreamEvent::Start { usage } = event {
            // Anthropic backends report the real prompt count; otherwise the estimate stands in.
            self.ensure_started(opts, *usage, out);
            return;
        }
        if !matches!(event, StreamEvent::Error { .. }) {
            self.ensure_started(opts, None, out);
        }
        match event {
            StreamEvent::Start { .. } => {}
            StreamEvent::Text(text) => {
                let index =
                    self.ensure_block(Block::Text, json!({"type": "text", "text": ""}), out);
                Self::delta(out, index, DeltaWire::Text { text });
            }
            StreamEvent::Thinking(text) => {
                let index = self.ensure_block(
                    Block::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                    out,
                );
                Self::delta(out, index, DeltaWire::Thinking { thinking: text });
            }
            StreamEvent::Signature(signature) => {
                let index = self.ensure_block(
                    Block::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                    out,
                );
                Self::delta(out, index, DeltaWire::Signature { signature });
                self.open = Some((Block::SignedThinking, index));
            }
            StreamEvent::RedactedThinking(data) => {
                self.close_block(out);
                let index = self.next_index;
                self.next_index += 1;
                block_start(
                    out,
                    index,
                    &json!({"type": "redacted_thinking", "data": data}),
                );
                block_stop(out, index);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                if !self.tools_started.contains(index) {
                    self.start_tool(*index, id, name, out);
                }
            }
            StreamEvent::ToolCallArgs { index, arguments } => {
                if !self.tools_started.contains(index) {
                    self.start_tool(*index, &format!("call_{index}"), "", out);
                }
                // Fragments for a tool call whose block already closed cannot be sent (Anthropic
                // blocks do not interleave); OpenAI backends send calls one after another.
                if let Some((Block::Tool(open), block)) = self.open
                    && open == *index
                {
                    Self::delta(
                        out,
                        block,
                        DeltaWire::InputJson {
                            partial_json: arguments,
                        },
                    );
                }
            }
            StreamEvent::Finish {
                reason,
                stop_sequence,
            } => self.finish = Some((*reason, stop_sequence.clone())),
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
            StreamEvent::Error { kind, message } => {
                anthropic_event(out, "error", &anthropic::error_body(kind, message));
                self.ended = true;
            }
            StreamEvent::Done => self.end(opts, out),
        }
    }

    fn end(&mut self, opts: &StreamOptions, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.ensure_started(opts, None, out);
        self.close_block(out);
        let (reason, stop_sequence) = self.finish.take().unwrap_or((FinishReason::Stop, None));
        // Some OpenAI-compatible servers say `stop` after tool calls; Anthropic clients run tools only
        // on `tool_use`.
        let reason = if reason == FinishReason::Stop && !self.tools_started.is_empty() {
            FinishReason::ToolCalls
        } else {
            reason
        };
        let usage = self.usage.unwrap_or(Usage {
            input_tokens: opts.input_tokens,
            ..Usage::default()
        });
        anthropic_event(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": anthropic::stop_reason_str(reason), "stop_sequence": stop_sequence},
                "usage": anthropic::usage_json(&usage),
            }),
        );
        anthropic_event(out, "message_stop", &json!({"type": "message_stop"}));
        self.ended = true;
    }
}
