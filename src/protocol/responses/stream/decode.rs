//! The Responses stream decoder: a Responses upstream's events → canonical [`StreamEvent`]s, and the
//! final `response` object of a complete stream.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::protocol::Part;
use crate::protocol::responses::response::{finish_reason_of, item_parts, usage_from};
use crate::protocol::sse::SseEvent;
use crate::protocol::stream::{StreamError, StreamEvent, error_event, parse_event};

/// A function call item of the upstream's answer.
#[derive(Debug)]
struct Call {
    item_id: String,
    output_index: Option<u64>,
    index: usize,
    /// Its arguments came as deltas (so `.done` adds nothing).
    streamed: bool,
}

/// Reads a Responses upstream's events into canonical events.
#[derive(Debug, Default)]
pub(crate) struct ResponsesDecoder {
    started: bool,
    calls: Vec<Call>,
    /// Reasoning text came as deltas for the current reasoning item.
    reasoning_streamed: bool,
    ended: bool,
}

impl ResponsesDecoder {
    pub(crate) fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), StreamError> {
        if event.data.is_empty() {
            return Ok(());
        }
        if event.is_done() {
            if !self.ended {
                self.ended = true;
                out.push(StreamEvent::Done);
            }
            return Ok(());
        }
        let value = parse_event(event)?;
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default();
        if kind != "error" && kind != "response.failed" && !self.started {
            self.started = true;
            out.push(StreamEvent::Start { usage: None });
        }
        match kind {
            "response.output_item.added" => {
                let item = value.get("item").unwrap_or(&Value::Null);
                match item.get("type").and_then(Value::as_str) {
                    Some("function_call") => {
                        let call = self.call(item, value.get("output_index"), out);
                        let arguments = item
                            .get("arguments")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if !arguments.is_empty() {
                            self.calls[call].streamed = true;
                            out.push(StreamEvent::ToolCallArgs {
                                index: self.calls[call].index,
                                arguments: arguments.to_owned(),
                            });
                        }
                    }
                    Some("reasoning") => self.reasoning_streamed = false,
                    _ => {}
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                push_text(out, StreamEvent::Text, text("delta"));
            }
            "response.reasoning_text.delta" | "response.reasoning_summary_text.delta" => {
                self.reasoning_streamed |= !text("delta").is_empty();
                push_text(out, StreamEvent::Thinking, text("delta"));
            }
            "response.function_call_arguments.delta" => {
                let delta = text("delta");
                if let Some(call) = self.find(text("item_id"), value.get("output_index"))
                    && !delta.is_empty()
                {
                    self.calls[call].streamed = true;
                    out.push(StreamEvent::ToolCallArgs {
                        index: self.calls[call].index,
                        arguments: delta.to_owned(),
                    });
                }
            }
            "response.output_item.done" => {
                let item = value.get("item").unwrap_or(&Value::Null);
                match item.get("type").and_then(Value::as_str) {
                    Some("function_call") => {
                        let call = self.call(item, value.get("output_index"), out);
                        let arguments = item
                            .get("arguments")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if !self.calls[call].streamed && !arguments.is_empty() {
                            self.calls[call].streamed = true;
                            out.push(StreamEvent::ToolCallArgs {
                                index: self.calls[call].index,
                                arguments: arguments.to_owned(),
                            });
                        }
                    }
                    Some("reasoning") => {
                        for part in item_parts(item) {
                            match part {
                                Part::Thinking { text, signature } => {
                                    if !self.reasoning_streamed {
                                        push_text(out, StreamEvent::Thinking, &text);
                                    }
                                    if let Some(signature) = signature {
                                        out.push(StreamEvent::Signature(signature));
                                    }
                                }
                                Part::RedactedThinking { data } => {
                                    out.push(StreamEvent::RedactedThinking(data));
                                }
                                _ => {}
                            }
                        }
                        self.reasoning_streamed = false;
                    }
                    _ => {}
                }
            }
            "response.completed" | "response.incomplete" => {
                let response = value.get("response").unwrap_or(&Value::Null);
                if let Some(usage) = response.get("usage").filter(|usage| usage.is_object()) {
                    out.push(StreamEvent::Usage(usage_from(usage)));
                }
                let reason = finish_reason_of(response, !self.calls.is_empty());
                out.push(StreamEvent::Finish {
                    reason,
                    stop_sequence: None,
                });
                self.ended = true;
                out.push(StreamEvent::Done);
            }
            "response.failed" => {
                let error = value
                    .pointer("/response/error")
                    .filter(|error| error.is_object())
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"message": "upstream response failed"}));
                out.push(error_event(&error));
            }
            "error" => {
                let error = match value.get("error") {
                    Some(inner) if inner.is_object() => inner,
                    _ => &value,
                };
                out.push(error_event(error));
            }
            _ => {}
        }
        Ok(())
    }

    /// The call an item names (by item id or output index), registered (and started) when new.
    fn call(
        &mut self,
        item: &Value,
        output_index: Option<&Value>,
        out: &mut Vec<StreamEvent>,
    ) -> usize {
        let field = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default();
        if let Some(at) = self.find(field("id"), output_index) {
            return at;
        }
        let index = self.calls.len();
        self.calls.push(Call {
            item_id: field("id").to_owned(),
            output_index: output_index.and_then(Value::as_u64),
            index,
            streamed: false,
        });
        let call_id = match field("call_id") {
            "" => format!("call_{index}"),
            id => id.to_owned(),
        };
        out.push(StreamEvent::ToolCallStart {
            index,
            id: call_id,
            name: field("name").to_owned(),
        });
        index
    }

    fn find(&self, item_id: &str, output_index: Option<&Value>) -> Option<usize> {
        let output_index = output_index.and_then(Value::as_u64);
        self.calls.iter().position(|call| {
            (!item_id.is_empty() && call.item_id == item_id)
                || (item_id.is_empty()
                    && output_index.is_some()
                    && call.output_index == output_index)
        })
    }
}

fn push_text(out: &mut Vec<StreamEvent>, make: fn(String) -> StreamEvent, text: &str) {
    if !text.is_empty() {
        out.push(make(text.to_owned()));
    }
}

#[derive(Deserialize)]
pub(super) struct LifecycleIn<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) response: Option<&'a RawValue>,
}

/// The `response` object of a complete Responses stream's terminal event (`response.completed` or
/// `response.incomplete`), when it has one.
pub(crate) fn final_response_of(stream: &[u8]) -> Option<Vec<u8>> {
    let trimmed = stream.strip_suffix(b"\n\n")?;
    let start = memchr::memmem::rfind(trimmed, b"\n\n").map_or(0, |at| at + 2);
    let event = &trimmed[start..];
    let data = &event[memchr::memmem::find(event, b"data: ")? + 6..];
    let lifecycle: LifecycleIn<'_> = serde_json::from_slice(data).ok()?;
    matches!(
        lifecycle.kind.as_deref(),
        Some("response.completed" | "response.incomplete")
    )
    .then(|| lifecycle.response.map(|r| r.get().as_bytes().to_vec()))
    .flatten()
}
