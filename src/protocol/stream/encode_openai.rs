//! The OpenAI encoder: canonical [`StreamEvent`]s → `chat.completion.chunk` events (role first,
//! `finish_reason` last, the optional usage chunk, `data: [DONE]`).

use bytes::BytesMut;
use serde::Serialize;
use serde_json::json;

use super::{StreamEvent, StreamOptions, write_event};
use crate::protocol::{FinishReason, Usage, openai, sse};

#[derive(Debug)]
pub(super) struct OpenAiEncoder {
    pub(super) created: i64,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[{"index":0,"delta":`, the same for
    /// every chunk of the stream, rendered once.
    prefix: Vec<u8>,
    role_sent: bool,
    finish_sent: bool,
    pub(super) ended: bool,
    tools_started: Vec<usize>,
    usage: Option<Usage>,
}

/// The fields every chunk of a stream shares, in [`ChunkWire`]'s order.
#[derive(Serialize)]
struct ChunkHeadWire<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
}

/// A whole chunk; [`OpenAiEncoder::chunk`] writes the same bytes piecewise.
#[cfg_attr(not(test), expect(dead_code))]
#[derive(Serialize)]
struct ChunkWire<'a, D: Serialize> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: [ChoiceWire<D>; 1],
    /// `Some(())` renders `"usage": null`, which OpenAI sends on every chunk when usage was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<()>,
}

#[derive(Serialize)]
struct ChoiceWire<D: Serialize> {
    index: u32,
    delta: D,
    logprobs: (),
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct ContentDeltaWire<'a> {
    content: &'a str,
}

#[derive(Serialize)]
struct ReasoningDeltaWire<'a> {
    reasoning_content: &'a str,
}

#[derive(Serialize)]
struct RoleDeltaWire {
    role: &'static str,
    content: &'static str,
}

#[derive(Serialize)]
struct EmptyDeltaWire {}

impl OpenAiEncoder {
    pub(super) fn new(created: i64) -> Self {
        OpenAiEncoder {
            created,
            prefix: Vec::new(),
            role_sent: false,
            finish_sent: false,
            ended: false,
            tools_started: Vec::new(),
            usage: None,
        }
    }

    /// One `chat.completion.chunk`, byte for byte what serializing [`ChunkWire`] gives (a unit test
    /// checks), with the part shared by every chunk rendered once per stream.
    fn chunk<D: Serialize>(
        &mut self,
        opts: &StreamOptions,
        delta: D,
        finish: Option<&'static str>,
        out: &mut BytesMut,
    ) {
        if self.prefix.is_empty() {
            let mut prefix = b"data: ".to_vec();
            let head = ChunkHeadWire {
                id: &opts.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &opts.model,
            };
            if serde_json::to_writer(&mut prefix, &head).is_err() {
                return;
            }
            // Reopen the object: `…"model":"m"}` becomes `…"model":"m","choices":[{"index":0,"delta":`.
            prefix.pop();
            prefix.extend_from_slice(br#","choices":[{"index":0,"delta":"#);
            self.prefix = prefix;
        }
        // One reservation for the whole chunk (a delta is usually a few dozen bytes).
        out.reserve(self.prefix.len() + 128);
        out.extend_from_slice(&self.prefix);
        if serde_json::to_writer(bytes::BufMut::writer(&mut *out), &delta).is_err() {
            out.extend_from_slice(b"{}");
        }
        out.extend_from_slice(br#","logprobs":null,"finish_reason":"#);
        match finish {
            None => out.extend_from_slice(b"null"),
            Some(reason) => {
                out.extend_from_slice(b"\"");
                out.extend_from_slice(reason.as_bytes());
                out.extend_from_slice(b"\"");
            }
        }
        out.extend_from_slice(b"}]");
        if opts.include_usage {
            out.extend_from_slice(br#","usage":null"#);
        }
        out.extend_from_slice(b"}\n\n");
    }

    fn ensure_role(&mut self, opts: &StreamOptions, out: &mut BytesMut) {
        if !self.role_sent {
            self.role_sent = true;
            self.chunk(
                opts,
                RoleDeltaWire {
                    role: "assistant",
                    content: "",
                },
                None,
                out,
            );
        }
    }

    fn start_tool(
        &mut self,
        index: usize,
        id: &str,
        name: &str,
        opts: &StreamOptions,
        out: &mut BytesMut,
    ) {
        self.tools_started.push(index);
        self.chunk(
            opts,
            json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            None,
            out,
        );
    }

    pub(super) fn emit(&mut self, event: &StreamEvent, opts: &StreamOptions, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        if !matches!(event, StreamEvent::Error { .. } | StreamEvent::Usage(_)) {
            self.ensure_role(opts, out);
        }
        match event {
            StreamEvent::Start { .. } => {}
            StreamEvent::Text(text) => {
                self.chunk(opts, ContentDeltaWire { content: text }, None, out);
            }
            StreamEvent::Thinking(text) => {
                self.chunk(
                    opts,
                    ReasoningDeltaWire {
                        reasoning_content: text,
                    },
                    None,
                    out,
                );
            }
            StreamEvent::Signature(signature) => self.chunk(
                opts,
                json!({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": signature}]}),
                None,
                out,
            ),
            StreamEvent::RedactedThinking(data) => self.chunk(
                opts,
                json!({"thinking_blocks": [{"type": "redacted_thinking", "data": data}]}),
                None,
                out,
            ),
            StreamEvent::ToolCallStart { index, id, name } => {
                if !self.tools_started.contains(index) {
                    self.start_tool(*index, id, name, opts, out);
                }
            }
            StreamEvent::ToolCallArgs { index, arguments } => {
                if !self.tools_started.contains(index) {
                    self.start_tool(*index, &format!("call_{index}"), "", opts, out);
                }
                self.chunk(
                    opts,
                    json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
                    None,
                    out,
                );
            }
            StreamEvent::Finish { reason, .. } => self.send_finish(*reason, opts, out),
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
            StreamEvent::Error { kind, message } => {
                // No `[DONE]` after it: that is the success sentinel, and this answer was cut short.
                write_event(out, None, &openai::error_body(message, kind, None, None));
                self.ended = true;
            }
            StreamEvent::Done => self.end(opts, out),
        }
    }

    fn send_finish(&mut self, reason: FinishReason, opts: &StreamOptions, out: &mut BytesMut) {
        if !self.finish_sent {
            self.finish_sent = true;
            self.chunk(
                opts,
                EmptyDeltaWire {},
                Some(openai::finish_reason_str(reason)),
                out,
            );
        }
    }

    fn end(&mut self, opts: &StreamOptions, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.ensure_role(opts, out);
        let reason = if self.tools_started.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        };
        self.send_finish(reason, opts, out);
        if opts.include_usage {
            let usage = self.usage.unwrap_or(Usage {
                input_tokens: opts.input_tokens,
                ..Usage::default()
            });
            write_event(
                out,
                None,
                &json!({
                    "id": opts.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": opts.model,
                    "choices": [],
                    "usage": openai::usage_json(&usage),
                }),
            );
        }
        sse::encode(None, b"[DONE]", out);
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The piecewise chunk writer gives exactly the bytes of serializing a whole `ChunkWire`.
    #[test]
    fn chunk_writer_matches_the_serialized_chunk() {
        for include_usage in [false, true] {
            let opts = StreamOptions {
                id: "req-\"ü\"\n".into(),
                model: "m\\odel".into(),
                include_usage,
                input_tokens: 0,
                ..Default::default()
            };
            let mut encoder = OpenAiEncoder::new(1_700_000_000);
            for (text, finish) in [("a", None), ("é \"q\" \n", None), ("", Some("stop"))] {
                let mut out = BytesMut::new();
                encoder.chunk(&opts, ContentDeltaWire { content: text }, finish, &mut out);
                let whole = ChunkWire {
                    id: &opts.id,
                    object: "chat.completion.chunk",
                    created: 1_700_000_000,
                    model: &opts.model,
                    choices: [ChoiceWire {
                        index: 0,
                        delta: ContentDeltaWire { content: text },
                        logprobs: (),
                        finish_reason: finish,
                    }],
                    usage: include_usage.then_some(()),
                };
                let mut expected = BytesMut::new();
                sse::encode(None, &serde_json::to_vec(&whole).unwrap(), &mut expected);
                assert_eq!(out, expected);
            }
        }
    }
}
