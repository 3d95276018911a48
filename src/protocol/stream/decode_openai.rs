//! The OpenAI chunk decoder: `chat.completion.chunk` events (and legacy `/v1/completions` chunks)
//! → canonical [`StreamEvent`]s, through the exact readers, the borrowed views below, or `Value`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::exact::{exact_chunk, exact_tool_args};
use super::{StreamError, StreamEvent, error_event, non_empty, parse_event, push_text};
use crate::protocol::sse::SseEvent;
use crate::protocol::{FinishReason, Obj, fast_decode, openai};

#[derive(Debug, Default)]
pub(super) struct OpenAiDecoder {
    pub(super) started: bool,
    tools: Vec<usize>,
    /// [`exact_chunk`]'s cache of the fields before `"choices"`.
    pub(super) prefix: Vec<u8>,
    /// Tests only: skip the borrowed fast path, to compare both paths.
    pub(super) value_only: bool,
}

impl OpenAiDecoder {
    pub(super) fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), StreamError> {
        if event.data.is_empty() {
            return Ok(());
        }
        if event.is_done() {
            out.push(StreamEvent::Done);
            return Ok(());
        }
        if !self.value_only
            && let Some(chunk) = exact_chunk(&event.data, &mut self.prefix)
        {
            self.ensure_started(out);
            push_text(out, StreamEvent::Text, chunk.text.into_owned());
            push_finish(out, chunk.finish);
            return Ok(());
        }
        if !self.value_only
            && let Some(chunk) = exact_tool_args(&event.data, &mut self.prefix)
        {
            self.ensure_started(out);
            self.tool_call(chunk.index, None, None, Some(&chunk.arguments), out);
            push_finish(out, chunk.finish);
            return Ok(());
        }
        if !self.value_only
            && let Some(chunk) = fast_decode::<ChunkIn<'_>>(&event.data)
        {
            self.decode_fast(chunk, out);
            return Ok(());
        }
        let value = parse_event(event)?;
        if let Some(error) = value.get("error").filter(|error| !error.is_null()) {
            out.push(error_event(error));
            return Ok(());
        }
        self.ensure_started(out);
        let choices = value
            .get("choices")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // Only the first choice is converted (Anthropic has no `n`).
        let choice = choices
            .iter()
            .find(|choice| choice.get("index").and_then(Value::as_u64).unwrap_or(0) == 0);
        if let Some(choice) = choice {
            if let Some(delta) = choice.get("delta") {
                self.decode_delta(delta, out);
            }
            // Legacy `/v1/completions` chunks carry `text` instead of a delta (seen by `StreamTap`).
            if let Some(text) = choice
                .get("text")
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
            {
                out.push(StreamEvent::Text(text.to_owned()));
            }
            let reason = choice.get("finish_reason").and_then(Value::as_str);
            push_finish(out, reason.map(openai::finish_reason_from));
        }
        if let Some(usage) = value.get("usage").filter(|usage| usage.is_object()) {
            out.push(StreamEvent::Usage(openai::usage_from(usage)));
        }
        Ok(())
    }

    /// The typed twin of the `Value` path below for a chunk that decoded as [`ChunkIn`]: same events,
    /// same order, without building a JSON tree per chunk.
    fn decode_fast(&mut self, chunk: ChunkIn<'_>, out: &mut Vec<StreamEvent>) {
        if let Some(error) = chunk.error {
            match serde_json::from_str::<Value>(error.get()) {
                Ok(Value::Null) => {}
                Ok(error) => {
                    out.push(error_event(&error));
                    return;
                }
                Err(_) => {}
            }
        }
        self.ensure_started(out);
        let choice = chunk
            .choices
            .iter()
            .flatten()
            .find(|choice| choice.index.unwrap_or(0) == 0);
        if let Some(choice) = choice {
            if let Some(delta) = &choice.delta {
                if let Some(reasoning) =
                    non_empty(&delta.reasoning_content).or_else(|| non_empty(&delta.reasoning))
                {
                    out.push(StreamEvent::Thinking(reasoning.to_owned()));
                }
                if let Some(blocks) = delta.thinking_blocks
                    && let Ok(blocks) = serde_json::from_str::<Value>(blocks.get())
                {
                    thinking_block_events(&blocks, out);
                }
                if let Some(content) =
                    non_empty(&delta.content).or_else(|| non_empty(&delta.refusal))
                {
                    out.push(StreamEvent::Text(content.to_owned()));
                }
                for (position, call) in delta.tool_calls.iter().flatten().enumerate() {
                    let index = call
                        .index
                        .and_then(|index| usize::try_from(index).ok())
                        .unwrap_or(position);
                    let function = call.function.as_ref();
                    self.tool_call(
                        index,
                        call.id.as_deref(),
                        function.and_then(|f| f.name.as_deref()),
                        function.and_then(|f| f.arguments.as_deref()),
                        out,
                    );
                }
            }
            if let Some(text) = non_empty(&choice.text) {
                out.push(StreamEvent::Text(text.to_owned()));
            }
            let reason = choice.finish_reason.as_deref();
            push_finish(out, reason.map(openai::finish_reason_from));
        }
        if let Some(usage) = chunk.usage
            && let Ok(usage) = serde_json::from_str::<Value>(usage.get())
            && usage.is_object()
        {
            out.push(StreamEvent::Usage(openai::usage_from(&usage)));
        }
    }

    /// The `Start` event, before the first chunk's events.
    fn ensure_started(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start { usage: None });
        }
    }

    fn tool_call(
        &mut self,
        index: usize,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
        out: &mut Vec<StreamEvent>,
    ) {
        if !self.tools.contains(&index) {
            self.tools.push(index);
            out.push(StreamEvent::ToolCallStart {
                index,
                id: id.map_or_else(|| format!("call_{index}"), str::to_owned),
                name: name.unwrap_or_default().to_owned(),
            });
        }
        if let Some(arguments) = arguments.filter(|arguments| !arguments.is_empty()) {
            out.push(StreamEvent::ToolCallArgs {
                index,
                arguments: arguments.to_owned(),
            });
        }
    }

    fn decode_delta(&mut self, delta: &Value, out: &mut Vec<StreamEvent>) {
        let text = |key: &str| {
            delta
                .get(key)
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
        };
        if let Some(reasoning) = text("reasoning_content").or_else(|| text("reasoning")) {
            out.push(StreamEvent::Thinking(reasoning.to_owned()));
        }
        if let Some(blocks) = delta.get("thinking_blocks") {
            thinking_block_events(blocks, out);
        }
        if let Some(content) = text("content").or_else(|| text("refusal")) {
            out.push(StreamEvent::Text(content.to_owned()));
        }
        for (position, call) in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let index = call
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|index| usize::try_from(index).ok())
                .unwrap_or(position);
            let field = |pointer: &str| call.pointer(pointer).and_then(Value::as_str);
            self.tool_call(
                index,
                field("/id"),
                field("/function/name"),
                field("/function/arguments"),
                out,
            );
        }
    }
}

/// The `Finish` event for a chunk's finish reason, if it has one (OpenAI chunks name no stop sequence).
fn push_finish(out: &mut Vec<StreamEvent>, finish: Option<FinishReason>) {
    if let Some(reason) = finish {
        out.push(StreamEvent::Finish {
            reason,
            stop_sequence: None,
        });
    }
}

/// Events for an OpenAI delta's `thinking_blocks` extension (signatures and redacted blocks; the
/// thinking text itself arrives as `reasoning_content`).
fn thinking_block_events(blocks: &Value, out: &mut Vec<StreamEvent>) {
    for block in blocks.as_array().map(Vec::as_slice).unwrap_or_default() {
        let field = |key: &str| {
            block
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if block.get("type").and_then(Value::as_str) == Some("redacted_thinking") {
            if let Some(data) = field("data") {
                out.push(StreamEvent::RedactedThinking(data.to_owned()));
            }
        } else if let Some(signature) = field("signature") {
            out.push(StreamEvent::Signature(signature.to_owned()));
        }
    }
}

// --- Borrowed views of the common chunk shapes (the fast path; see `stream`'s module doc) ---

#[derive(Deserialize)]
struct ChunkIn<'a> {
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
    #[serde(default, borrow)]
    choices: Option<Vec<Obj<ChoiceIn<'a>>>>,
    #[serde(default, borrow)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChoiceIn<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    delta: Option<Obj<DeltaIn<'a>>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DeltaIn<'a> {
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking_blocks: Option<&'a RawValue>,
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<Obj<ToolCallIn<'a>>>>,
}

#[derive(Deserialize)]
struct ToolCallIn<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<Obj<FunctionIn<'a>>>,
}

#[derive(Deserialize)]
struct FunctionIn<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}
