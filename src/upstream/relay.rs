//! Stream relay: reads the upstream SSE body and yields client-ready bytes event by event, never
//! holding more than the current unfinished event. Same-protocol streams are forwarded with only the
//! chunk `id` rewritten to the request id; the idle timeout bounds the gap between upstream reads.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use crate::protocol::json_patch;
use crate::protocol::sse::{SseDecoder, SseEvent};
use crate::protocol::stream::{StreamConverter, StreamTap};
use crate::protocol::{FinishReason, ResponseSummary, Usage};

use super::call::{Fault, describe};

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// How each upstream event becomes client bytes.
pub enum Transform {
    /// OpenAI in, OpenAI out: rewrite the chunk `id` to the request id, keep everything else.
    OpenAiPassThrough { id_json: String },
    /// Anthropic in, Anthropic out: forward verbatim.
    AnthropicPassThrough,
    /// Different protocols: an incremental converter, bytes in, bytes out.
    Convert(Box<StreamConverter>),
}

/// What the relay learned about the stream, for logs and token accounting.
#[derive(Debug, Default, Clone)]
pub struct StreamFacts {
    pub events: u64,
    pub bytes: u64,
    pub text: String,
    pub usage: Option<Usage>,
    pub finish_reason: Option<FinishReason>,
}

pub struct Relay {
    upstream: ByteStream,
    decoder: SseDecoder,
    transform: Transform,
    idle: Duration,
    ended: bool,
    saw_terminator: bool,
    /// The upstream closed without finishing after some output was delivered.
    pending_fault: bool,
    /// Full decode of pass-through events, only when the request log needs the assembled reply.
    tap: Option<StreamTap>,
    pub facts: StreamFacts,
}

impl Relay {
    pub fn new(
        response: reqwest::Response,
        transform: Transform,
        idle: Duration,
        tap: Option<StreamTap>,
    ) -> Relay {
        Relay {
            upstream: Box::pin(response.bytes_stream()),
            decoder: SseDecoder::default(),
            transform,
            idle,
            ended: false,
            saw_terminator: false,
            pending_fault: false,
            tap,
            facts: StreamFacts::default(),
        }
    }

    /// The next client-ready bytes; `Ok(None)` at a clean end. After a fault the relay is ended.
    pub async fn next_output(&mut self) -> Result<Option<Bytes>, Fault> {
        if std::mem::take(&mut self.pending_fault) {
            return Err(cut());
        }
        let mut out = BytesMut::new();
        loop {
            if self.ended {
                return Ok(None);
            }
            match tokio::time::timeout(self.idle, self.upstream.next()).await {
                Err(_) => {
                    self.ended = true;
                    return Err(Fault::Timeout(self.idle));
                }
                Ok(Some(Err(error))) => {
                    self.ended = true;
                    return Err(Fault::Broken(format!(
                        "upstream stream failed: {}",
                        describe(error)
                    )));
                }
                Ok(Some(Ok(chunk))) => {
                    if let Transform::Convert(converter) = &mut self.transform {
                        self.facts.bytes += chunk.len() as u64;
                        if let Err(error) = converter.push(&chunk, &mut out) {
                            self.ended = true;
                            return Err(Fault::Broken(error.to_string()));
                        }
                        if converter.upstream_finished() {
                            self.ended = true;
                            let _ = converter.finish(&mut out);
                            self.take_summary();
                            return Ok((!out.is_empty()).then(|| out.freeze()));
                        }
                        if !out.is_empty() {
                            return Ok(Some(out.freeze()));
                        }
                        continue;
                    }
                    self.decoder.feed(&chunk);
                    self.drain(&mut out)?;
                    if !out.is_empty() {
                        return Ok(Some(out.freeze()));
                    }
                }
                Ok(None) => {
                    self.ended = true;
                    if let Transform::Convert(converter) = &mut self.transform {
                        // EOF without the upstream's own end: a cut, unless nothing more was due.
                        if converter.upstream_finished() {
                            let _ = converter.finish(&mut out);
                            self.take_summary();
                            return Ok((!out.is_empty()).then(|| out.freeze()));
                        }
                        self.take_summary();
                        return Err(cut());
                    }
                    if let Some(event) = self.decoder.finish() {
                        self.forward(&event, &mut out);
                    }
                    if !self.saw_terminator {
                        if matches!(self.transform, Transform::OpenAiPassThrough { .. })
                            && self.facts.finish_reason.is_some()
                        {
                            out.extend_from_slice(b"data: [DONE]\n\n");
                        } else if out.is_empty() {
                            return Err(cut());
                        } else {
                            // Deliver what arrived; the fault surfaces on the next call.
                            self.pending_fault = true;
                        }
                    }
                    return Ok((!out.is_empty()).then(|| out.freeze()));
                }
            }
        }
    }

    fn drain(&mut self, out: &mut BytesMut) -> Result<(), Fault> {
        loop {
            match self.decoder.next_event() {
                Ok(Some(event)) => self.forward(&event, out),
                Ok(None) => return Ok(()),
                Err(error) => {
                    self.ended = true;
                    return Err(Fault::Broken(error.to_string()));
                }
            }
        }
    }

    fn forward(&mut self, event: &SseEvent, out: &mut BytesMut) {
        self.facts.events += 1;
        if let Some(tap) = &mut self.tap {
            tap.observe(event);
        }
        match &self.transform {
            Transform::OpenAiPassThrough { id_json } => {
                if event.is_done() {
                    self.saw_terminator = true;
                    out.extend_from_slice(&event.raw);
                } else if event.data.first() == Some(&b'{') {
                    observe_openai_chunk(&event.data, &mut self.facts);
                    match json_patch::set_fields(&event.data, &[("id", id_json)]) {
                        Ok(patched) => {
                            crate::protocol::sse::encode(event.event.as_deref(), &patched, out)
                        }
                        Err(_) => out.extend_from_slice(&event.raw),
                    }
                } else {
                    out.extend_from_slice(&event.raw);
                }
            }
            Transform::Convert(_) => {}
            Transform::AnthropicPassThrough => {
                if event.event.as_deref() == Some("message_stop") {
                    self.saw_terminator = true;
                    self.facts.finish_reason.get_or_insert(FinishReason::Stop);
                }
                out.extend_from_slice(&event.raw);
            }
        }
        self.facts.bytes += event.raw.len() as u64;
    }

    /// The assembled reply (text, reasoning, tool calls, usage) as far as the stream went.
    pub fn summary(&self) -> ResponseSummary {
        if let Transform::Convert(converter) = &self.transform {
            return converter.summary().clone();
        }
        if let Some(tap) = &self.tap {
            return tap.summary().clone();
        }
        ResponseSummary {
            text: self.facts.text.clone(),
            usage: self.facts.usage,
            finish_reason: self.facts.finish_reason,
            ..ResponseSummary::default()
        }
    }

    /// Copy what the converter learned into the stream facts.
    fn take_summary(&mut self) {
        if let Transform::Convert(converter) = &self.transform {
            let summary = converter.summary();
            self.facts.text.clone_from(&summary.text);
            self.facts.usage = summary.usage.or(self.facts.usage);
            self.facts.finish_reason = summary.finish_reason.or(self.facts.finish_reason);
        }
    }

    /// The protocol-correct event that ends a stream after an upstream fault.
    pub fn error_event(&mut self, message: &str) -> Bytes {
        let mut out = BytesMut::new();
        match &mut self.transform {
            Transform::Convert(converter) => {
                self.facts.events += 1;
                converter.abort(message, &mut out);
            }
            Transform::OpenAiPassThrough { .. } => {
                let body = crate::protocol::openai::error_body(
                    message,
                    "server_error",
                    None,
                    Some("upstream_error"),
                );
                crate::protocol::sse::encode(None, body.to_string().as_bytes(), &mut out);
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            Transform::AnthropicPassThrough => {
                let body = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}});
                crate::protocol::sse::encode(Some("error"), body.to_string().as_bytes(), &mut out);
            }
        }
        out.freeze()
    }
}

fn cut() -> Fault {
    Fault::Broken("upstream closed the stream before it finished".into())
}

/// Pick text, finish reason and usage out of an OpenAI chunk without a full typed parse.
fn observe_openai_chunk(data: &[u8], facts: &mut StreamFacts) {
    #[derive(serde::Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow, default)]
        choices: Vec<Choice<'a>>,
        usage: Option<UsageWire>,
    }
    #[derive(serde::Deserialize)]
    struct Choice<'a> {
        #[serde(borrow)]
        delta: Option<Delta<'a>>,
        #[serde(borrow)]
        text: Option<std::borrow::Cow<'a, str>>,
        finish_reason: Option<&'a str>,
    }
    #[derive(serde::Deserialize)]
    struct Delta<'a> {
        #[serde(borrow)]
        content: Option<std::borrow::Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct UsageWire {
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
    }
    let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
        return;
    };
    for choice in chunk.choices {
        if let Some(text) = choice.delta.and_then(|d| d.content).or(choice.text) {
            facts.text.push_str(&text);
        }
        if let Some(reason) = choice.finish_reason {
            facts.finish_reason = Some(match reason {
                "length" => FinishReason::Length,
                "tool_calls" | "function_call" => FinishReason::ToolCalls,
                "content_filter" => FinishReason::ContentFilter,
                _ => FinishReason::Stop,
            });
        }
    }
    if let Some(usage) = chunk.usage {
        facts.usage = Some(Usage {
            input_tokens: usage.prompt_tokens.unwrap_or(0),
            output_tokens: usage.completion_tokens.unwrap_or(0),
            ..Usage::default()
        });
    }
}
