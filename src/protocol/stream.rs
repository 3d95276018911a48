//! Incremental stream conversion between OpenAI chunks and Anthropic events, bytes in → bytes out.
//!
//! Upstream SSE bytes are cut into events by [`SseDecoder`] (only the current event is buffered), each
//! event is decoded into canonical [`StreamEvent`]s, and an encoder state machine renders them in the
//! client's protocol: the Anthropic event order (`message_start`, per-block start/delta/stop,
//! `message_delta`, `message_stop`) or the OpenAI chunk rules (role first, `finish_reason` last, optional
//! usage chunk, `data: [DONE]`). A summary of the answer is kept on the side for logs and accounting.

use std::borrow::Cow;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

pub use super::ResponseSummary;
use super::anthropic::{self, WireUsage};
use super::convert::{self, unix_now};
use super::json_text::flat_field;
use super::responses_stream::{ResponsesDecoder, ResponsesEncoder};
use super::sse::{self, SseDecoder, SseError, SseEvent};
use super::{FinishReason, Obj, Protocol, ToolCall, Usage, fast_decode, openai};

/// How to present the converted stream.
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// The gateway's request id, used as the message/chunk id.
    pub id: String,
    /// Model name shown to the client.
    pub model: String,
    /// OpenAI clients' `stream_options.include_usage`.
    pub include_usage: bool,
    /// Prompt token estimate, used while (or when) the backend has not reported the real count.
    pub input_tokens: u64,
    /// Responses clients: what the `response` object repeats from the request.
    pub echo: super::responses::ResponseEcho,
}

/// The upstream stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Sse(#[from] SseError),
    #[error("upstream sent an invalid stream event: {0}")]
    InvalidEvent(String),
}

/// One step of a streamed answer, in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StreamEvent {
    /// The answer begins; Anthropic backends report the prompt usage here.
    Start {
        usage: Option<Usage>,
    },
    Text(String),
    Thinking(String),
    /// The signature of the current thinking block.
    Signature(String),
    RedactedThinking(String),
    /// A tool call begins; `index` counts tool calls from 0 (OpenAI's `tool_calls[].index`).
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// A fragment of a tool call's JSON arguments.
    ToolCallArgs {
        index: usize,
        arguments: String,
    },
    Finish {
        reason: FinishReason,
        stop_sequence: Option<String>,
    },
    /// Usage so far (a full snapshot, later ones replace earlier ones).
    Usage(Usage),
    Error {
        kind: String,
        message: String,
    },
    Done,
}

// === Upstream decoders ===

#[derive(Debug, Default)]
struct OpenAiDecoder {
    started: bool,
    tools: Vec<usize>,
    /// [`exact_chunk`]'s cache of the fields before `"choices"`.
    prefix: Vec<u8>,
    /// Tests only: skip the borrowed fast path, to compare both paths.
    value_only: bool,
}

impl OpenAiDecoder {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
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
            if !self.started {
                self.started = true;
                out.push(StreamEvent::Start { usage: None });
            }
            push_text(out, StreamEvent::Text, chunk.text.into_owned());
            if let Some(reason) = chunk.finish {
                out.push(StreamEvent::Finish {
                    reason,
                    stop_sequence: None,
                });
            }
            return Ok(());
        }
        if !self.value_only
            && let Some(chunk) = exact_tool_args(&event.data, &mut self.prefix)
        {
            if !self.started {
                self.started = true;
                out.push(StreamEvent::Start { usage: None });
            }
            self.tool_call(chunk.index, None, None, Some(&chunk.arguments), out);
            if let Some(reason) = chunk.finish {
                out.push(StreamEvent::Finish {
                    reason,
                    stop_sequence: None,
                });
            }
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
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start { usage: None });
        }
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
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                out.push(StreamEvent::Finish {
                    reason: openai::finish_reason_from(reason),
                    stop_sequence: None,
                });
            }
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
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start { usage: None });
        }
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
            if let Some(reason) = &choice.finish_reason {
                out.push(StreamEvent::Finish {
                    reason: openai::finish_reason_from(reason),
                    stop_sequence: None,
                });
            }
        }
        if let Some(usage) = chunk.usage
            && let Ok(usage) = serde_json::from_str::<Value>(usage.get())
            && usage.is_object()
        {
            out.push(StreamEvent::Usage(openai::usage_from(&usage)));
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

/// What [`exact_chunk`] read from one OpenAI chunk: its text (content; may be empty) and finish reason.
#[derive(Debug, PartialEq)]
pub(crate) struct ExactChunk<'a> {
    pub(crate) text: Cow<'a, str>,
    pub(crate) finish: Option<FinishReason>,
}

/// An OpenAI chunk in the layout OpenAI and vLLM send, read without a parser:
/// `{<flat fields>,"choices":[{"index":0,"delta":{<delta>},"logprobs":null,"finish_reason":<"…"|null>}]
/// <,flat fields>}`, where the delta is empty or `<"role":"assistant",>"content":"…"<,"refusal":null>`,
/// a flat field is `"key":value` with a plain string (no escapes), an integer, `true`, `false` or `null`,
/// and no field is `choices`, `error`, or a non-null `usage`. Most events of a stream are this one;
/// anything else — whitespace, nesting, other delta fields — returns `None` for the parsers.
///
/// `prefix` caches the flat fields before `"choices"` of the last chunk read (every chunk of a stream
/// repeats the same id, model and timestamps): a chunk starting with the same bytes skips reading them
/// again, since equal bytes read the same.
pub(crate) fn exact_chunk<'a>(data: &'a [u8], prefix: &mut Vec<u8>) -> Option<ExactChunk<'a>> {
    const ROLE: &[u8] = br#""role":"assistant","#;
    const CONTENT: &[u8] = br#""content":"#;
    const REFUSAL: &[u8] = br#","refusal":null"#;
    // One pass, no search: flat fields up to the choice (or the cached ones), the delta, the finish
    // reason, flat fields after it.
    let mut rest = exact_delta_start(data, prefix)?;
    let mut text = Cow::Borrowed("");
    if !rest.starts_with(b"}") {
        rest = rest.strip_prefix(ROLE).unwrap_or(rest);
        rest = rest.strip_prefix(CONTENT)?;
        let (content, len) = super::json_text::read_str_bytes(rest)?;
        text = content;
        let after = &rest[len..];
        rest = after.strip_prefix(REFUSAL).unwrap_or(after);
    }
    let finish = exact_choice_end(rest)?;
    Some(ExactChunk { text, finish })
}

/// What [`exact_tool_args`] read from one OpenAI chunk: a piece of one tool call's arguments.
#[derive(Debug, PartialEq)]
pub(crate) struct ExactToolArgs<'a> {
    /// The call's `index` in the delta's `tool_calls`.
    pub(crate) index: usize,
    pub(crate) arguments: Cow<'a, str>,
    pub(crate) finish: Option<FinishReason>,
}

/// A tool call's later chunks in the layout OpenAI and vLLM send (an agent's usual answer): the layout
/// of [`exact_chunk`] with the delta `"tool_calls":[{"index":<n>,"function":{"arguments":"…"}}]` — no id
/// and no name, which only a call's first chunk carries. Anything else returns `None` for the parsers.
pub(crate) fn exact_tool_args<'a>(
    data: &'a [u8],
    prefix: &mut Vec<u8>,
) -> Option<ExactToolArgs<'a>> {
    const CALL_START: &[u8] = br#""tool_calls":[{"index":"#;
    const ARGUMENTS: &[u8] = br#","function":{"arguments":"#;
    const CALL_END: &[u8] = b"}}]";
    let rest = exact_delta_start(data, prefix)?.strip_prefix(CALL_START)?;
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    // JSON allows no leading zero; a number beyond `usize` is left to the parser too.
    if digits == 0 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let index: usize = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(ARGUMENTS)?;
    let (arguments, len) = super::json_text::read_str_bytes(rest)?;
    let finish = exact_choice_end(rest[len..].strip_prefix(CALL_END)?)?;
    Some(ExactToolArgs {
        index,
        arguments,
        finish,
    })
}

/// The start of an exact chunk up to its delta's first field: `{<flat fields>,"choices":[{"index":0,
/// "delta":{` (the fields checked for UTF-8 and cached in `prefix`, see [`exact_chunk`]); the rest
/// after it, without the chunk's closing brace.
fn exact_delta_start<'a>(data: &'a [u8], prefix: &mut Vec<u8>) -> Option<&'a [u8]> {
    const CHOICE_START: &[u8] = br#""choices":[{"index":0,"delta":{"#;
    let inner = data.strip_prefix(b"{")?.strip_suffix(b"}")?;
    // UTF-8 is checked piecewise: the prefix when it is read, the text, the finish reason and the
    // fields after the choice; everything else is ASCII the reader matched itself.
    let rest = match inner.strip_prefix(prefix.as_slice()) {
        Some(rest) if !prefix.is_empty() && rest.starts_with(CHOICE_START) => rest,
        _ => {
            let mut rest = inner;
            while !rest.starts_with(CHOICE_START) {
                rest = rest[flat_field_len(rest)?..].strip_prefix(b",")?;
            }
            let read = &inner[..inner.len() - rest.len()];
            std::str::from_utf8(read).ok()?;
            prefix.clear();
            prefix.extend_from_slice(read);
            rest
        }
    };
    Some(&rest[CHOICE_START.len()..])
}

/// The end of an exact chunk after its delta's fields: `},"logprobs":null,"finish_reason":<"…"|null>}]
/// <,flat fields>` (the chunk's closing brace already taken off); the finish reason.
fn exact_choice_end(rest: &[u8]) -> Option<Option<FinishReason>> {
    const CHOICE_END: &[u8] = br#"},"logprobs":null,"finish_reason":"#;
    let mut rest = rest.strip_prefix(CHOICE_END)?;
    let finish = if let Some(after) = rest.strip_prefix(b"null") {
        rest = after;
        None
    } else {
        let len = super::json_text::plain_string_len(rest)?;
        let reason = super::json_text::plain_str(&rest[..len])?;
        rest = &rest[len..];
        Some(openai::finish_reason_from(reason))
    };
    let fields = rest.strip_prefix(b"}]")?;
    let mut after = fields;
    while !after.is_empty() {
        after = after.strip_prefix(b",")?;
        after = &after[flat_field_len(after)?..];
    }
    std::str::from_utf8(fields).ok()?;
    Some(finish)
}

/// The length of one flat field `"key":value` at the start of `bytes`, for [`exact_chunk`]: a
/// plain string (no escapes), an integer, `true`, `false` or `null` as the value, and no key that would
/// change what the chunk means (`choices`, `error`, a non-null `usage`).
fn flat_field_len(bytes: &[u8]) -> Option<usize> {
    let (key, value) = flat_field(bytes)?;
    if key == b"choices" || key == b"error" || (key == b"usage" && value != b"null") {
        return None;
    }
    Some(key.len() + 3 + value.len())
}

/// The text of a `content_block_delta` event in exactly the layout Anthropic sends,
/// `{"type":"content_block_delta","index":N,"delta":{"type":"text_delta","text":"…"}}`, read without a
/// parser: most events of a stream are this one. Any other layout returns `None`.
fn exact_text_delta(data: &[u8]) -> Option<String> {
    let rest = data.strip_prefix(br#"{"type":"content_block_delta","index":"#)?;
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    // JSON numbers have no leading zeros; leave odd ones to the parser.
    if digits == 0 || digits > 15 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let text = rest[digits..]
        .strip_prefix(br#","delta":{"type":"text_delta","text":"#)?
        .strip_suffix(b"}}")?;
    let inner = text.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner
        .iter()
        .any(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
    {
        // Escapes (or a stray quote): exactly one JSON string, decoded by the parser.
        return serde_json::from_slice::<String>(text).ok();
    }
    String::from_utf8(inner.to_vec()).ok()
}

fn non_empty<'s>(text: &'s Option<Cow<'_, str>>) -> Option<&'s str> {
    text.as_deref().filter(|text| !text.is_empty())
}

// --- Borrowed views of the common event shapes (the fast path) ---
//
// Each stream event is first decoded into these borrowed structs: no JSON tree, strings borrowed from
// the event unless they contain escapes. Anything unusual (a field of an unexpected type, a duplicate
// key, invalid JSON) fails this decode and the event takes the general `Value` path, which defines the
// semantics; both paths emit the same events, and the golden and re-chunking tests run through both.

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

#[derive(Debug, Default)]
struct AnthropicDecoder {
    usage: WireUsage,
    /// `(content block index, tool call ordinal)` for every tool_use block so far.
    tool_blocks: Vec<(u64, usize)>,
    /// Tests only: skip the borrowed fast path, to compare both paths.
    value_only: bool,
}

impl AnthropicDecoder {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
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
                                arguments: input.to_string(),
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
                let text =
                    |text: &Option<Cow<'_, str>>| text.as_deref().unwrap_or_default().to_owned();
                match delta.kind.as_deref() {
                    Some("text_delta") => push_text(out, StreamEvent::Text, text(&delta.text)),
                    Some("thinking_delta") => {
                        push_text(out, StreamEvent::Thinking, text(&delta.thinking));
                    }
                    Some("signature_delta") => {
                        push_text(out, StreamEvent::Signature, text(&delta.signature));
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
                let text =
                    |text: &Option<Cow<'_, str>>| text.as_deref().unwrap_or_default().to_owned();
                match block.kind.as_deref() {
                    Some("text") => push_text(out, StreamEvent::Text, text(&block.text)),
                    Some("thinking") => {
                        push_text(out, StreamEvent::Thinking, text(&block.thinking));
                        push_text(out, StreamEvent::Signature, text(&block.signature));
                    }
                    Some("redacted_thinking") => {
                        out.push(StreamEvent::RedactedThinking(text(&block.data)));
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

fn push_text(out: &mut Vec<StreamEvent>, make: fn(String) -> StreamEvent, text: String) {
    if !text.is_empty() {
        out.push(make(text));
    }
}

pub(crate) fn parse_event(event: &SseEvent) -> Result<Value, StreamError> {
    serde_json::from_slice(&event.data).map_err(|error| {
        let data = String::from_utf8_lossy(&event.data);
        let mut cut = data.len().min(200);
        while !data.is_char_boundary(cut) {
            cut -= 1;
        }
        StreamError::InvalidEvent(format!("{error} in '{}'", &data[..cut]))
    })
}

pub(crate) fn error_event(error: &Value) -> StreamEvent {
    let body = json!({ "error": error });
    let info = convert::error_info(Protocol::OpenAi, 500, body.to_string().as_bytes());
    StreamEvent::Error {
        kind: info.kind.to_owned(),
        message: info.message,
    }
}

#[derive(Debug)]
enum Decoder {
    OpenAi(OpenAiDecoder),
    Anthropic(AnthropicDecoder),
    Responses(ResponsesDecoder),
}

impl Decoder {
    fn new(protocol: Protocol) -> Self {
        match protocol {
            Protocol::OpenAi => Decoder::OpenAi(OpenAiDecoder::default()),
            Protocol::Anthropic => Decoder::Anthropic(AnthropicDecoder::default()),
            Protocol::Responses => Decoder::Responses(ResponsesDecoder::default()),
        }
    }

    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        match self {
            Decoder::OpenAi(decoder) => decoder.decode(event, out),
            Decoder::Anthropic(decoder) => decoder.decode(event, out),
            Decoder::Responses(decoder) => decoder.decode(event, out),
        }
    }
}

/// Per upstream event: the canonical events decoded, or the error.
#[cfg(test)]
pub(crate) type DecodedEvents = Vec<Result<Vec<StreamEvent>, String>>;

/// Tests only: decodes `events` twice, with the borrowed fast path and with the `Value` path alone, so
/// tests can check both give the same canonical events (and the same errors).
#[cfg(test)]
pub(crate) fn decode_both_ways(
    protocol: Protocol,
    events: &[SseEvent],
) -> (DecodedEvents, DecodedEvents) {
    let mut fast = Decoder::new(protocol);
    let mut slow = match protocol {
        Protocol::OpenAi => Decoder::OpenAi(OpenAiDecoder {
            value_only: true,
            ..OpenAiDecoder::default()
        }),
        Protocol::Anthropic => Decoder::Anthropic(AnthropicDecoder {
            value_only: true,
            ..AnthropicDecoder::default()
        }),
        // One path only: the Responses decoder reads every event through the parser.
        Protocol::Responses => Decoder::Responses(ResponsesDecoder::default()),
    };
    let run = |decoder: &mut Decoder| {
        events
            .iter()
            .map(|event| {
                let mut out = Vec::new();
                decoder
                    .decode(event, &mut out)
                    .map(|()| out)
                    .map_err(|error| error.to_string())
            })
            .collect::<Vec<_>>()
    };
    (run(&mut fast), run(&mut slow))
}

// === Summary ===

#[derive(Debug, Default)]
struct SummaryBuilder {
    summary: ResponseSummary,
    /// `(tool call index, position in summary.tool_calls)`.
    tools: Vec<(usize, usize)>,
}

/// Room a streamed answer's text starts with: a short answer's pieces then never grow it, where
/// starting empty took five reallocations for a 20-chunk answer of ≈ 100 bytes.
const TEXT_START: usize = 256;

/// Appends one streamed piece of text to the text collected so far.
pub(crate) fn push_piece(text: &mut String, piece: &str) {
    if text.capacity() == 0 {
        text.reserve(piece.len().max(TEXT_START));
    }
    text.push_str(piece);
}

impl SummaryBuilder {
    /// What an exactly read chunk adds: its text and finish reason.
    fn apply_exact(&mut self, chunk: &ExactChunk<'_>) {
        push_piece(&mut self.summary.text, &chunk.text);
        if chunk.finish.is_some() {
            self.summary.finish_reason = chunk.finish;
        }
    }

    fn apply(&mut self, event: &StreamEvent) {
        let summary = &mut self.summary;
        match event {
            StreamEvent::Start { usage: Some(usage) } => summary.usage = Some(*usage),
            StreamEvent::Text(text) => push_piece(&mut summary.text, text),
            StreamEvent::Thinking(text) => summary.reasoning.push_str(text),
            StreamEvent::ToolCallStart { index, id, name } => {
                self.tools.push((*index, summary.tool_calls.len()));
                summary.tool_calls.push(ToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                });
            }
            StreamEvent::ToolCallArgs { index, arguments } => {
                if let Some((_, position)) = self.tools.iter().find(|(i, _)| i == index)
                    && let Some(call) = summary.tool_calls.get_mut(*position)
                {
                    call.arguments.push_str(arguments);
                }
            }
            StreamEvent::Finish { reason, .. } => summary.finish_reason = Some(*reason),
            StreamEvent::Usage(usage) => summary.usage = Some(*usage),
            _ => {}
        }
    }
}

// === Client encoders ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A thinking block that got its signature: later thinking starts a new block.
    SignedThinking,
    Tool(usize),
}

#[derive(Debug)]
struct AnthropicEncoder {
    started: bool,
    ended: bool,
    /// The open content block and its index.
    open: Option<(Block, u64)>,
    next_index: u64,
    tools_started: Vec<usize>,
    finish: Option<(FinishReason, Option<String>)>,
    usage: Option<Usage>,
}

#[derive(Debug)]
struct OpenAiEncoder {
    created: i64,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[{"index":0,"delta":`, the same for
    /// every chunk of the stream, rendered once.
    prefix: Vec<u8>,
    role_sent: bool,
    finish_sent: bool,
    ended: bool,
    tools_started: Vec<usize>,
    usage: Option<Usage>,
}

#[derive(Debug)]
enum Encoder {
    OpenAi(OpenAiEncoder),
    Anthropic(AnthropicEncoder),
    Responses(ResponsesEncoder),
}

/// One SSE event whose data is `data` as compact JSON, serialized straight into `out` (compact JSON has
/// no raw newline, so it is one `data:` line, exactly what [`sse::encode`] would write).
pub(crate) fn write_event<T: Serialize + ?Sized>(out: &mut BytesMut, name: Option<&str>, data: &T) {
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"data: ");
    let start = out.len();
    if serde_json::to_writer(bytes::BufMut::writer(&mut *out), data).is_err() {
        // Our wire types always serialize; keep the frame well-formed if one ever did not.
        out.truncate(start);
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(b"\n\n");
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
    fn new() -> Self {
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

    fn emit(&mut self, event: &StreamEvent, opts: &StreamOptions, out: &mut BytesMut) {
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

impl OpenAiEncoder {
    fn new(created: i64) -> Self {
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

    fn emit(&mut self, event: &StreamEvent, opts: &StreamOptions, out: &mut BytesMut) {
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

impl Encoder {
    fn emit(&mut self, event: &StreamEvent, opts: &StreamOptions, out: &mut BytesMut) {
        match self {
            Encoder::OpenAi(encoder) => encoder.emit(event, opts, out),
            Encoder::Anthropic(encoder) => encoder.emit(event, opts, out),
            Encoder::Responses(encoder) => encoder.emit(event, opts, out),
        }
    }

    fn ended(&self) -> bool {
        match self {
            Encoder::OpenAi(encoder) => encoder.ended,
            Encoder::Anthropic(encoder) => encoder.ended,
            Encoder::Responses(encoder) => encoder.ended,
        }
    }
}

/// Converts one upstream stream to the client's protocol, event by event.
#[derive(Debug)]
pub struct StreamConverter {
    opts: StreamOptions,
    sse: SseDecoder,
    decoder: Decoder,
    encoder: Encoder,
    events: Vec<StreamEvent>,
    summary: SummaryBuilder,
    /// The upstream sent its own end (`[DONE]`, `message_stop`) or an error event.
    upstream_ended: bool,
    /// The upstream reported usage; otherwise the end of the stream carries an estimate.
    usage_seen: bool,
    /// Canonical events decoded so far.
    decoded: u64,
    /// The upstream's very first event was an error: its message.
    first_error: Option<String>,
    /// The message of the error event the upstream ended its stream with, if it did.
    upstream_error: Option<String>,
}

impl StreamConverter {
    pub fn new(from: Protocol, to: Protocol, opts: StreamOptions) -> Self {
        StreamConverter {
            opts,
            sse: SseDecoder::default(),
            decoder: Decoder::new(from),
            encoder: match to {
                Protocol::OpenAi => Encoder::OpenAi(OpenAiEncoder::new(unix_now())),
                Protocol::Anthropic => Encoder::Anthropic(AnthropicEncoder::new()),
                Protocol::Responses => Encoder::Responses(ResponsesEncoder::new(unix_now())),
            },
            events: Vec::new(),
            summary: SummaryBuilder::default(),
            upstream_ended: false,
            usage_seen: false,
            decoded: 0,
            first_error: None,
            upstream_error: None,
        }
    }

    /// Pin OpenAI chunks' `created` (deterministic tests, cache replays).
    pub fn with_created(mut self, created: i64) -> Self {
        match &mut self.encoder {
            Encoder::OpenAi(encoder) => encoder.created = created,
            Encoder::Responses(encoder) => encoder.created_at = created,
            Encoder::Anthropic(_) => {}
        }
        self
    }

    /// A Responses client's final `response` object, once the stream ended with it (the
    /// conversation store keeps it).
    pub(crate) fn completed_response(&self) -> Option<&[u8]> {
        match &self.encoder {
            Encoder::Responses(encoder) => encoder.final_response.as_deref(),
            _ => None,
        }
    }

    /// Feed upstream bytes (any split); converted bytes for every completed event go to `out`.
    pub fn push(&mut self, upstream_bytes: &[u8], out: &mut BytesMut) -> Result<(), StreamError> {
        self.sse.feed(upstream_bytes);
        while let Some(event) = self.sse.next_event()? {
            self.process(&event, out)?;
        }
        Ok(())
    }

    fn process(&mut self, event: &SseEvent, out: &mut BytesMut) -> Result<(), StreamError> {
        let mut events = std::mem::take(&mut self.events);
        let result = self.decoder.decode(event, &mut events);
        for event in events.drain(..) {
            if let (0, StreamEvent::Error { message, .. }) = (self.decoded, &event) {
                self.first_error = Some(message.clone());
            }
            self.decoded += 1;
            if let (false, StreamEvent::Error { message, .. }) = (self.upstream_ended, &event) {
                self.upstream_error = Some(message.clone());
            }
            self.upstream_ended |= matches!(event, StreamEvent::Done | StreamEvent::Error { .. });
            self.usage_seen |= matches!(event, StreamEvent::Usage(_));
            if matches!(event, StreamEvent::Done) {
                self.estimate_usage(out);
            }
            self.summary.apply(&event);
            self.encoder.emit(&event, &self.opts, out);
        }
        self.events = events;
        result
    }

    /// True once the upstream ended its stream itself (`[DONE]`, `message_stop` or an error event). At
    /// EOF without it the upstream was cut off: call [`StreamConverter::abort`] instead of `finish` to
    /// tell the client, or `finish` to end it as if complete.
    pub(crate) fn upstream_finished(&self) -> bool {
        self.upstream_ended
    }

    /// The message of the upstream's error event when that is how it ended its stream.
    pub(crate) fn upstream_error(&self) -> Option<&str> {
        self.upstream_error.as_deref()
    }

    /// The message of an error event that was the upstream's very first event (nothing was answered):
    /// the caller may still fail over if nothing reached the client.
    pub(crate) fn first_event_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// Upstream EOF, before deciding between [`StreamConverter::finish`] and
    /// [`StreamConverter::abort`]: decode a last event that lacks its blank line (accepted only when
    /// its `data:` line is complete), so an upstream that ends with `data: [DONE]` and no blank line is
    /// still seen as finished.
    pub fn flush(&mut self, out: &mut BytesMut) -> Result<(), StreamError> {
        match self.sse.finish() {
            Some(event) => self.process(&event, out),
            None => Ok(()),
        }
    }

    /// Upstream EOF: handle a last unterminated event, close open blocks and end the stream.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), StreamError> {
        let last = self.sse.finish();
        let result = match last {
            Some(event) => self.process(&event, out),
            None => Ok(()),
        };
        if !self.encoder.ended() {
            self.estimate_usage(out);
            self.encoder.emit(&StreamEvent::Done, &self.opts, out);
        }
        result
    }

    /// Before the end of a stream whose upstream reported no usage (an OpenAI-compatible server that
    /// ignores `stream_options`), give the client encoder an estimate: `StreamOptions::input_tokens`
    /// and the o200k token count of the streamed text, reasoning and tool calls. The summary keeps
    /// `usage: None` (accounting sees only real counts).
    fn estimate_usage(&mut self, out: &mut BytesMut) {
        if self.usage_seen {
            return;
        }
        self.usage_seen = true;
        let summary = &self.summary.summary;
        let tools: u64 = summary
            .tool_calls
            .iter()
            .map(|call| crate::tokens::count(&call.name) + crate::tokens::count(&call.arguments))
            .sum();
        let usage = Usage {
            input_tokens: self.opts.input_tokens,
            output_tokens: crate::tokens::count(&summary.text)
                + crate::tokens::count(&summary.reasoning)
                + tools,
            ..Usage::default()
        };
        self.encoder
            .emit(&StreamEvent::Usage(usage), &self.opts, out);
    }

    /// Upstream fault mid-stream: a protocol-correct error event, then the end of the stream.
    pub(crate) fn abort(&mut self, message: &str, out: &mut BytesMut) {
        self.encoder.emit(
            &StreamEvent::Error {
                kind: "api_error".into(),
                message: message.to_owned(),
            },
            &self.opts,
            out,
        );
    }

    /// True once the client stream has ended (normally, by error or abort).
    pub fn is_finished(&self) -> bool {
        self.encoder.ended()
    }

    pub fn summary(&self) -> &ResponseSummary {
        &self.summary.summary
    }
}

/// Same-protocol pass-through observer: sees every upstream event and keeps the summary (text, reasoning,
/// tool calls, usage, finish) without changing bytes.
#[derive(Debug)]
pub(crate) struct StreamTap {
    decoder: Decoder,
    events: Vec<StreamEvent>,
    summary: SummaryBuilder,
}

impl StreamTap {
    pub fn new(protocol: Protocol) -> Self {
        StreamTap {
            decoder: Decoder::new(protocol),
            events: Vec::new(),
            summary: SummaryBuilder::default(),
        }
    }

    /// Record one upstream event; events that do not parse are ignored (the bytes pass through anyway).
    pub fn observe(&mut self, event: &SseEvent) {
        // Most chunks of an OpenAI stream: text (and finish) straight into the summary, no events.
        if let Decoder::OpenAi(decoder) = &mut self.decoder
            && !decoder.value_only
            && !event.is_done()
            && let Some(chunk) = exact_chunk(&event.data, &mut decoder.prefix)
        {
            decoder.started = true;
            self.summary.apply_exact(&chunk);
            return;
        }
        self.events.clear();
        if self.decoder.decode(event, &mut self.events).is_ok() {
            for event in &self.events {
                self.summary.apply(event);
            }
        }
    }

    pub fn summary(&self) -> &ResponseSummary {
        &self.summary.summary
    }

    /// Record an OpenAI chunk the caller already read with [`exact_chunk`] (the same as observing it).
    pub(crate) fn observe_exact(&mut self, chunk: &ExactChunk<'_>) {
        if let Decoder::OpenAi(decoder) = &mut self.decoder {
            decoder.started = true;
        }
        self.summary.apply_exact(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data-only SSE event carrying `data`.
    fn data_event(data: impl Into<Vec<u8>>) -> SseEvent {
        let data = bytes::Bytes::from(data.into());
        SseEvent {
            event: None,
            data: data.clone(),
            raw: data,
        }
    }

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

    /// The layout-specific text reader agrees with the parser, and declines anything else.
    #[test]
    fn exact_text_delta_reads_only_the_exact_layout() {
        let event = |text: &str| {
            format!(
                r#"{{"type":"content_block_delta","index":3,"delta":{{"type":"text_delta","text":{}}}}}"#,
                serde_json::to_string(text).unwrap()
            )
        };
        for text in ["hello ", "", "é ü 😀", "quote \" and \\ and \n", "\u{1}"] {
            let data = event(text);
            assert_eq!(
                exact_text_delta(data.as_bytes()).as_deref(),
                Some(text),
                "{data}"
            );
        }
        for data in [
            r#"{"type":"content_block_delta","index":01,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a"}} "#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a" }}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a","b":"c"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a"b"}}"#,
            r#"{"type":"content_block_delta","index":-1,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"thinking_delta","thinking":"a"}}"#,
        ] {
            assert_eq!(exact_text_delta(data.as_bytes()), None, "{data}");
        }
    }

    /// The text [`exact_chunk`] reads from one chunk, without a cached prefix.
    fn exact_content_chunk(data: &[u8]) -> Option<String> {
        exact_chunk(data, &mut Vec::new()).map(|chunk| chunk.text.into_owned())
    }

    /// The OpenAI content-chunk reader agrees with the parser on the layouts it accepts and declines the
    /// rest (which the typed and `Value` paths then read).
    #[test]
    fn exact_content_chunk_reads_only_the_exact_layout() {
        let chunk = |before: &str, text: &str, after: &str| {
            format!(
                r#"{{{before}"choices":[{{"index":0,"delta":{{"content":{}}},"logprobs":null,"finish_reason":null}}]{after}}}"#,
                serde_json::to_string(text).unwrap()
            )
        };
        let vllm = r#""id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","#;
        let openai = r#""id":"chatcmpl-2","object":"chat.completion.chunk","created":1,"model":"gpt","service_tier":"default","system_fingerprint":"fp_1","#;
        for text in [
            "tok1 ",
            "",
            "é ü 😀",
            "quote \" and \\ and \n",
            "\u{1}tab\t",
        ] {
            for (before, after) in [
                ("", ""),
                (vllm, ""),
                (openai, r#","obfuscation":"abc""#),
                (vllm, r#","usage":null"#),
                (r#""n":-12,"flag":true,"other":false,"none":null,"#, ""),
            ] {
                let data = chunk(before, text, after);
                assert_eq!(
                    exact_content_chunk(data.as_bytes()).as_deref(),
                    Some(text),
                    "{data}"
                );
            }
        }
        for (before, after) in [
            (r#""id": "x","#, ""),
            (r#""id":"x" ,"#, ""),
            (r#""x":{"a":1},"#, ""),
            (r#""x":[1],"#, ""),
            (r#""error":null,"#, ""),
            (r#""error":{"message":"m"},"#, ""),
            (r#""usage":{"prompt_tokens":1},"#, ""),
            ("", r#","usage":{"prompt_tokens":1}"#),
            ("", r#","choices":[]"#),
            (r#""id":"a\"b","#, ""),
            (r#""created":1.5,"#, ""),
            (r#""created":01,"#, ""),
            (r#""created":1e3,"#, ""),
            ("", ","),
            ("", r#","x""#),
            (r#""x":nul,"#, ""),
        ] {
            let data = chunk(before, "a", after);
            assert_eq!(exact_content_chunk(data.as_bytes()), None, "{data}");
        }
        for data in [
            r#"{"choices":[{"index":0,"delta":{"role":"user","content":"a"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a","refusal":"no"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"role":"assistant"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":null,"finish_reason":1}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":null,"finish_reason":null}]} "#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":null,"finish_reason":null}],}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a\x"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":null,"finish_reason":null},{"index":1}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"}},"logprobs":null,"finish_reason":null}]}"#,
        ] {
            assert_eq!(exact_content_chunk(data.as_bytes()), None, "{data}");
        }
    }

    /// The first and the last chunk of a stream are read exactly too: role, refusal, empty delta,
    /// finish reason.
    #[test]
    fn exact_chunk_reads_the_first_and_the_finish_chunk() {
        let prefix = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":"#;
        for (delta, finish, text, reason) in [
            (
                r#"{"role":"assistant","content":"","refusal":null}"#,
                "null",
                "",
                None,
            ),
            (r#"{"role":"assistant","content":"hi"}"#, "null", "hi", None),
            (r#"{"content":"x","refusal":null}"#, "null", "x", None),
            ("{}", r#""stop""#, "", Some(FinishReason::Stop)),
            ("{}", r#""length""#, "", Some(FinishReason::Length)),
            (
                r#"{"content":"y"}"#,
                r#""tool_calls""#,
                "y",
                Some(FinishReason::ToolCalls),
            ),
        ] {
            let data = format!(r#"{prefix}{delta},"logprobs":null,"finish_reason":{finish}}}]}}"#);
            let chunk = exact_chunk(data.as_bytes(), &mut Vec::new());
            assert_eq!(
                chunk,
                Some(ExactChunk {
                    text: Cow::Borrowed(text),
                    finish: reason
                }),
                "{data}"
            );
            let event = data_event(data);
            let (fast, slow) = decode_both_ways(Protocol::OpenAi, &[event]);
            assert_eq!(fast, slow);
        }
    }

    /// The cached prefix only skips bytes equal to ones already read: a chunk that repeats it but
    /// breaks later, or changes it, is read as if there were no cache.
    #[test]
    fn exact_chunk_prefix_cache_reads_like_no_cache() {
        let chunk = |id: &str, tail: &str| {
            format!(
                r#"{{"id":{id},"created":1,"choices":[{{"index":0,"delta":{{"content":"a"}},"logprobs":null,"finish_reason":null}}]{tail}}}"#
            )
        };
        let mut bad_utf8 = chunk(r#""x""#, r#","z":"~""#).into_bytes();
        let at = bad_utf8.iter().position(|&b| b == b'~').unwrap();
        bad_utf8[at] = 0xA1;
        let sequence = [
            chunk(r#""x""#, "").into_bytes(),
            chunk(r#""x""#, ",").into_bytes(),
            bad_utf8,
            chunk(r#""y""#, "").into_bytes(),
            chunk(r#""x""#, r#","usage":null"#).into_bytes(),
            chunk("1.5", "").into_bytes(),
        ];
        let mut prefix = Vec::new();
        for data in &sequence {
            let cached = exact_chunk(data, &mut prefix).map(|c| c.text.into_owned());
            let fresh = exact_chunk(data, &mut Vec::new()).map(|c| c.text.into_owned());
            assert_eq!(cached, fresh, "{}", String::from_utf8_lossy(data));
        }
        assert_eq!(
            sequence
                .iter()
                .map(|data| exact_chunk(data, &mut Vec::new()).is_some())
                .collect::<Vec<_>>(),
            [true, false, false, true, true, false]
        );
    }

    /// The tap reads exact chunks straight into its summary: the same summary as through the `Value`
    /// path's events, for a whole stream (role chunk, text with escapes, finish, usage chunk, `[DONE]`).
    #[test]
    fn tap_summary_is_the_value_path_summary() {
        let head = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":"#;
        let tail = r#","logprobs":null}]}"#;
        let stream = [
            format!(r#"{head}{{"role":"assistant","content":"","refusal":null}},"finish_reason":null{tail}"#),
            format!(r#"{head}{{"content":"Hel"}},"finish_reason":null{tail}"#),
            format!(r#"{head}{{"content":"lo \"q\" ü"}},"finish_reason":null{tail}"#),
            format!(r#"{head}{{}},"finish_reason":"length"{tail}"#),
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#.to_owned(),
            "[DONE]".to_owned(),
        ];
        let mut tap = StreamTap::new(Protocol::OpenAi);
        let mut slow = StreamTap::new(Protocol::OpenAi);
        slow.decoder = Decoder::OpenAi(OpenAiDecoder {
            value_only: true,
            ..OpenAiDecoder::default()
        });
        for data in &stream {
            let event = data_event(data.as_str());
            tap.observe(&event);
            slow.observe(&event);
        }
        assert_eq!(tap.summary().text, "Hello \"q\" ü");
        assert_eq!(tap.summary().finish_reason, Some(FinishReason::Length));
        assert_eq!(tap.summary().usage.map(|u| u.output_tokens), Some(4));
        assert_eq!(tap.summary(), slow.summary());
    }

    /// Chunks in the exact layout decode to the same events on the fast and the `Value` path.
    #[test]
    fn exact_content_chunks_decode_like_the_value_path() {
        let texts = ["", "a", "é😀", "q\"\\\n", "\u{7}"];
        let mut events = Vec::new();
        for (index, text) in texts.iter().enumerate() {
            let data = format!(
                r#"{{"id":"c","object":"chat.completion.chunk","created":{index},"model":"m","choices":[{{"index":0,"delta":{{"content":{}}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#,
                serde_json::to_string(text).unwrap()
            );
            assert!(exact_content_chunk(data.as_bytes()).is_some(), "{data}");
            events.push(data_event(data));
        }
        let (fast, slow) = decode_both_ways(Protocol::OpenAi, &events);
        assert_eq!(fast, slow);
    }

    /// A tool call's later pieces are read exactly (OpenAI's and vLLM's layout), its first chunk (id and
    /// name) and anything unusual are not, and a stream of them decodes the same on both paths.
    #[test]
    fn exact_tool_args_reads_a_calls_later_pieces() {
        let chunk = |delta: &str| {
            format!(
                r#"{{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":null}}]}}"#
            )
        };
        let first = chunk(
            r#"{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"grep","arguments":""}}]}"#,
        );
        let pieces = [r#"{\"pat"#, r#"h\":\"é\n"#, r#"\"}"#];
        let mut events = vec![data_event(first.clone())];
        assert_eq!(exact_tool_args(first.as_bytes(), &mut Vec::new()), None);
        for piece in pieces {
            let data = chunk(&format!(
                r#"{{"tool_calls":[{{"index":0,"function":{{"arguments":"{piece}"}}}}]}}"#
            ));
            let read = exact_tool_args(data.as_bytes(), &mut Vec::new());
            let expected: String = serde_json::from_str(&format!("\"{piece}\"")).unwrap();
            assert_eq!(
                read.map(|read| (read.index, read.arguments.into_owned())),
                Some((0, expected))
            );
            events.push(data_event(data));
        }
        for odd in [
            r#"{"tool_calls":[{"index":01,"function":{"arguments":"x"}}]}"#,
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"x"}},{"index":1,"function":{"arguments":"y"}}]}"#,
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"x","name":"f"}}]}"#,
            r#"{"tool_calls":[{"index":99999999999999999999999,"function":{"arguments":"x"}}]}"#,
        ] {
            let data = chunk(odd);
            assert_eq!(
                exact_tool_args(data.as_bytes(), &mut Vec::new()),
                None,
                "{odd}"
            );
            events.push(data_event(data));
        }
        let (fast, slow) = decode_both_ways(Protocol::OpenAi, &events);
        assert_eq!(fast, slow);
    }

    /// Cases the property below found: a content value that is not a string, and invalid UTF-8 in a
    /// field the borrowed decoder skips (the `Value` path rejects the event; so must the fast path).
    #[test]
    fn chunks_the_property_test_found() {
        let not_a_string = br#"{"choices":[{"index":0,"delta":{"content":#x"},"logprobs":null,"finish_reason":null}]}"#;
        assert_eq!(exact_content_chunk(not_a_string), None);
        let mut bad_utf8 =
            br#"{"x": "~","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#
                .to_vec();
        let at = bad_utf8.iter().position(|&b| b == b'~').unwrap();
        bad_utf8[at] = 0xA1;
        for data in [not_a_string.to_vec(), bad_utf8] {
            let event = data_event(data);
            let (fast, slow) = decode_both_ways(Protocol::OpenAi, &[event]);
            assert_eq!(fast, slow);
            assert!(fast[0].is_err());
        }
    }

    fn chunk_field() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![
            3 => Just("id"),
            3 => Just("created"),
            3 => Just("model"),
            1 => Just("choices"),
            1 => Just("error"),
            1 => Just("usage"),
            2 => Just("obfuscation"),
            1 => Just("x\\\"y"),
        ];
        let value = crate::protocol::json_text::near_flat_value();
        (key, value, proptest::bool::weighted(0.1)).prop_map(|(key, value, spaced)| {
            format!("\"{key}\":{}{value}", if spaced { " " } else { "" })
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// Chunks near the exact layout (random flat and non-flat fields around it, any content text,
        /// stray bytes): the exact reader agrees with the parser whenever it answers, and valid chunks
        /// decode the same on the fast and the `Value` path.
        #[test]
        fn near_layout_chunks_decode_like_the_value_path(
            before in proptest::collection::vec(chunk_field(), 0..4),
            after in proptest::collection::vec(chunk_field(), 0..3),
            text in ".{0,12}",
            delta in 0usize..8,
            finish in proptest::option::of("stop|length|tool_calls|x\\\\y|"),
            cut in proptest::option::weighted(0.3, (0usize..200, proptest::prelude::any::<u8>())),
        ) {
            let content = serde_json::to_string(&text).unwrap();
            let delta = match delta {
                0 => format!(r#"{{"content":{content}}}"#),
                1 => format!(r#"{{"role":"assistant","content":{content},"refusal":null}}"#),
                2 => format!(r#"{{"role":"assistant","content":{content}}}"#),
                3 => format!(r#"{{"content":{content},"refusal":null}}"#),
                5 => format!(r#"{{"tool_calls":[{{"index":0,"function":{{"arguments":{content}}}}}]}}"#),
                6 => format!(r#"{{"tool_calls":[{{"index":12,"function":{{"arguments":{content}}}}}]}}"#),
                7 => format!(
                    r#"{{"tool_calls":[{{"index":1,"id":"call_1","type":"function","function":{{"name":"f","arguments":{content}}}}}]}}"#
                ),
                _ => "{}".to_owned(),
            };
            let finish = finish.map_or("null".to_owned(), |f| serde_json::to_string(&f).unwrap());
            let mut fields: Vec<String> = before;
            fields.push(format!(
                r#""choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]"#
            ));
            fields.extend(after);
            let whole = format!("{{{}}}", fields.join(",")).into_bytes();
            let mut data = whole.clone();
            if let Some((at, byte)) = cut {
                let at = at % data.len();
                data[at] = byte;
            }
            let parsed = serde_json::from_slice::<serde_json::Value>(&data);
            // Read after the uncut chunk, as the next chunk of a stream: the cached prefix applies.
            let mut prefix = Vec::new();
            let _ = exact_chunk(&whole, &mut prefix);
            let cached = exact_chunk(&data, &mut prefix);
            proptest::prop_assert_eq!(&cached, &exact_chunk(&data, &mut Vec::new()));
            if let Some(read) = cached {
                // The exact reader never accepts what the parser rejects, and reads the same text.
                let value = parsed.as_ref().unwrap();
                let delta = &value["choices"][0]["delta"];
                proptest::prop_assert_eq!(delta["content"].as_str().unwrap_or(""), read.text);
                proptest::prop_assert_eq!(
                    value["choices"][0]["finish_reason"].as_str().map(openai::finish_reason_from),
                    read.finish
                );
            }
            // The same for the tool-call reader: it answers only for a later piece of one call.
            let mut prefix = Vec::new();
            let _ = exact_tool_args(&whole, &mut prefix);
            let cached = exact_tool_args(&data, &mut prefix);
            proptest::prop_assert_eq!(&cached, &exact_tool_args(&data, &mut Vec::new()));
            if let Some(read) = cached {
                let value = parsed.as_ref().unwrap();
                let calls = value["choices"][0]["delta"]["tool_calls"].as_array().unwrap();
                proptest::prop_assert_eq!(calls.len(), 1);
                proptest::prop_assert!(calls[0].get("id").is_none());
                proptest::prop_assert!(calls[0]["function"].get("name").is_none());
                proptest::prop_assert_eq!(calls[0]["index"].as_u64(), Some(read.index as u64));
                proptest::prop_assert_eq!(
                    calls[0]["function"]["arguments"].as_str(),
                    Some(read.arguments.as_ref())
                );
                proptest::prop_assert_eq!(
                    value["choices"][0]["finish_reason"].as_str().map(openai::finish_reason_from),
                    read.finish
                );
            }
            // On valid JSON the fast and the `Value` path agree, over the two-chunk stream too. On
            // invalid JSON only the exact reader is held to the parser: the typed fast path skips fields
            // it does not read without checking them (a number out of range there passes), which is its
            // one known leniency.
            if parsed.is_ok() && serde_json::from_slice::<serde_json::Value>(&whole).is_ok() {
                let events: Vec<SseEvent> = [whole, data]
                    .into_iter()
                    .map(data_event)
                    .collect();
                let (fast, slow) = decode_both_ways(Protocol::OpenAi, &events);
                proptest::prop_assert_eq!(fast, slow);
            }
        }
    }

    /// `write_event` frames exactly like `sse::encode` over the serialized value.
    #[test]
    fn write_event_matches_sse_encode() {
        let value = json!({"type": "content_block_delta", "delta": {"text": "a\nb"}});
        for name in [None, Some("content_block_delta")] {
            let mut out = BytesMut::new();
            write_event(&mut out, name, &value);
            let mut expected = BytesMut::new();
            sse::encode(name, &serde_json::to_vec(&value).unwrap(), &mut expected);
            assert_eq!(out, expected);
        }
    }
}
