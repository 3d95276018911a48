//! Canonical request/response types and the wire formats that convert to and from them.
//!
//! This module is pure: no I/O, no axum, no config. Wire types for OpenAI and Anthropic live in the
//! submodules; everything outside `protocol/` sees only the canonical types defined here
//! (hub-and-spoke: each wire format converts to and from the canonical model, never pairwise).

pub mod anthropic;
pub(crate) mod blank_strings;
/// Public for the fuzz target that holds it to serde_json.
pub use blank_strings::blank_long_strings;
pub mod convert;
pub(crate) mod exact_request;
#[cfg(test)]
mod golden;
pub mod json_patch;
pub(crate) mod json_text;
/// Public for the fuzz target that holds it to serde_json.
pub use json_text::member_range;
pub mod openai;
pub mod responses;
// `stream.rs` names the Responses stream encoder and decoder by this path.
pub(crate) mod sliced;
pub mod sse;
pub mod stream;
pub mod text;
pub use text::Text;

use std::fmt;

use serde::Deserialize;

/// The wire protocols a client or a backend can speak: OpenAI chat completions (and the other
/// OpenAI endpoints), Anthropic messages, and OpenAI's Responses API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    OpenAi,
    Anthropic,
    Responses,
}

impl Protocol {
    /// Short stable name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OpenAi => "openai",
            Protocol::Anthropic => "anthropic",
            Protocol::Responses => "responses",
        }
    }
}

/// Which API a request was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Messages,
    Responses,
}

impl Endpoint {
    /// The route template, also the `path` metrics label.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Messages => "/v1/messages",
            Endpoint::Responses => "/v1/responses",
        }
    }

    /// The wire protocol spoken on this endpoint.
    pub fn protocol(self) -> Protocol {
        match self {
            Endpoint::Messages => Protocol::Anthropic,
            Endpoint::Responses => Protocol::Responses,
            _ => Protocol::OpenAi,
        }
    }
}

/// A decoded inbound request, in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRequest {
    Chat(ChatRequest),
    Completion(CompletionRequest),
    Embeddings(EmbeddingsRequest),
    /// A Responses API request: a chat request plus what only that API has.
    Responses(Box<responses::ResponsesRequest>),
}

impl ApiRequest {
    /// The chat request of a chat or a Responses request.
    pub fn chat(&self) -> Option<&ChatRequest> {
        match self {
            ApiRequest::Chat(r) => Some(r),
            ApiRequest::Responses(r) => Some(&r.chat),
            _ => None,
        }
    }

    /// The Responses-only part of a Responses request.
    pub fn responses(&self) -> Option<&responses::ResponsesRequest> {
        match self {
            ApiRequest::Responses(r) => Some(r),
            _ => None,
        }
    }

    pub fn model(&self) -> Option<&str> {
        match self {
            ApiRequest::Chat(r) => r.model.as_deref(),
            ApiRequest::Responses(r) => r.chat.model.as_deref(),
            ApiRequest::Completion(r) => r.model.as_deref(),
            ApiRequest::Embeddings(r) => r.model.as_deref(),
        }
    }

    pub fn stream(&self) -> bool {
        match self {
            ApiRequest::Chat(r) => r.stream,
            ApiRequest::Completion(r) => r.stream,
            ApiRequest::Embeddings(_) => false,
            ApiRequest::Responses(r) => r.chat.stream,
        }
    }

    /// The text the echo backend answers to and the word counts are taken from.
    pub(crate) fn prompt_text(&self) -> String {
        match self {
            ApiRequest::Chat(r) => r.last_user_text().unwrap_or_default(),
            ApiRequest::Responses(r) => r.chat.last_user_text().unwrap_or_default(),
            ApiRequest::Completion(r) => r.prompt.join("\n"),
            ApiRequest::Embeddings(r) => r.input.join("\n"),
        }
    }

    /// All input text, for token estimates and prompt policies.
    /// The texts an input-token estimate counts, in the order [`ApiRequest::all_input_text`] joins
    /// them: each one counted (and its count cached) on its own, so a resent history costs no recount.
    pub(crate) fn input_pieces(&self) -> Vec<Piece<'_>> {
        match self {
            ApiRequest::Chat(r) => r.input_pieces(),
            ApiRequest::Responses(r) => r.chat.input_pieces(),
            ApiRequest::Completion(r) => r.prompt.iter().map(|p| Piece::Str(p)).collect(),
            ApiRequest::Embeddings(r) => r.input.iter().map(|p| Piece::Str(p)).collect(),
        }
    }

    pub(crate) fn all_input_text(&self) -> String {
        match self {
            ApiRequest::Chat(r) => r.all_text(),
            ApiRequest::Responses(r) => r.chat.all_text(),
            ApiRequest::Completion(r) => r.prompt.join("\n"),
            ApiRequest::Embeddings(r) => r.input.join("\n"),
        }
    }
}

/// A chat request (OpenAI chat completions or Anthropic messages).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    pub model: Option<String>,
    /// System prompt parts, in order. OpenAI `system`/`developer` messages land here only when they lead
    /// the conversation; later ones stay in `messages` with `Role::System`.
    pub system: Vec<Text>,
    pub messages: Vec<Message>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    pub params: SamplingParams,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// OpenAI `user` / Anthropic `metadata.user_id`.
    pub user: Option<String>,
    /// OpenAI `parallel_tool_calls` / the negation of Anthropic `tool_choice.disable_parallel_tool_use`.
    pub parallel_tool_calls: Option<bool>,
    /// Reasoning effort (`low`, `medium`, `high`, …): Responses `reasoning.effort`, sent to OpenAI
    /// chat backends as `reasoning_effort` and to Anthropic as a thinking budget.
    pub reasoning_effort: Option<String>,
    /// Structured output: Responses `text.format`, sent to OpenAI chat backends as `response_format`.
    pub response_format: Option<Box<ResponseFormat>>,
    /// The body's messages, system prompt and tools were checked but not kept
    /// ([`openai::decode_chat_unread`]): the request goes upstream as received, and nothing on its
    /// route reads them. Whatever needs them decodes the body again.
    pub messages_unread: bool,
}

/// What shape the answer's text must have.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON following `schema`.
    JsonSchema {
        name: String,
        description: Option<String>,
        schema: serde_json::Value,
        strict: Option<bool>,
    },
}

impl ChatRequest {
    /// Text of the last user message, its text parts joined by a newline.
    pub(crate) fn last_user_text(&self) -> Option<String> {
        self.messages
            .iter()
            .rev()
            .find(|message| message.role == Role::User)
            .map(Message::text)
    }

    /// Every piece of text in the request (system, messages, tool arguments and results).
    /// System parts, then each message's texts, tool results and tool-call arguments.
    pub(crate) fn input_pieces(&self) -> Vec<Piece<'_>> {
        let mut pieces: Vec<Piece<'_>> = self.system.iter().map(Piece::Text).collect();
        for message in &self.messages {
            for part in &message.parts {
                match part {
                    Part::Text(text) => pieces.push(Piece::Text(text)),
                    Part::ToolResult(result) => pieces.push(Piece::Text(&result.content)),
                    Part::ToolCall(call) => pieces.push(Piece::Text(&call.arguments)),
                    _ => {}
                }
            }
        }
        pieces
    }

    /// Room for this request written as a JSON body in any protocol: its texts, tool calls and
    /// schemas, plus an eighth for escapes (an agent's texts are source code and logs: newlines and
    /// quotes), so a large body is written without growing — each growth copies all of it.
    pub(crate) fn encoded_len_hint(&self) -> usize {
        let text_len: usize = self.system.iter().map(Text::written_len).sum::<usize>()
            + self
                .messages
                .iter()
                .flat_map(|message| &message.parts)
                .map(|part| match part {
                    Part::Text(text) => text.written_len(),
                    Part::ToolCall(call) => call.arguments.written_len() + 64,
                    Part::ToolResult(result) => result.content.written_len() + 64,
                    _ => 64,
                })
                .sum::<usize>()
            + self
                .tools
                .iter()
                .map(|tool| {
                    tool.parameters.get().len()
                        + tool.description.as_ref().map_or(0, String::len)
                        + 128
                })
                .sum::<usize>();
        256 + text_len + text_len / 8 + 48 * self.messages.len()
    }

    pub(crate) fn all_text(&self) -> String {
        let mut out = self.system.join("\n");
        for message in &self.messages {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&message.text());
            for part in &message.parts {
                if let Part::ToolCall(call) = part {
                    out.push_str(&call.arguments);
                }
            }
        }
        out
    }
}

/// One text of a request's input ([`ApiRequest::input_pieces`]): a string, or a conversation
/// [`Text`], which is hashed and measured without being read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Piece<'a> {
    Str(&'a str),
    Text(&'a Text),
}

impl Piece<'_> {
    /// About the text's length in bytes (a body's text as written, escapes included).
    pub(crate) fn written_len(&self) -> usize {
        match self {
            Piece::Str(text) => text.len(),
            Piece::Text(text) => text.written_len(),
        }
    }

    /// Appends the text as a JSON string ([`Text::write_json`]).
    pub(crate) fn write_json<S: json_text::Sink + ?Sized>(&self, out: &mut S) {
        match self {
            Piece::Str(text) => json_text::write_str(out, text),
            Piece::Text(text) => text.write_json(out),
        }
    }

    /// [`Text::hash128`]: a plain string hashes as a plain text.
    pub(crate) fn hash128(&self) -> u128 {
        match self {
            Piece::Str(text) => twox_hash::XxHash3_128::oneshot(text.as_bytes()),
            Piece::Text(text) => text.hash128(),
        }
    }
}

impl serde::Serialize for Piece<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self)
    }
}

impl std::ops::Deref for Piece<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Piece::Str(text) => text,
            Piece::Text(text) => text.as_str(),
        }
    }
}

/// Sampling parameters shared by both protocols.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SamplingParams {
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub n: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
    pub name: Option<String>,
}

impl Message {
    /// [`Message::text`] as a [`Text`]: a lone text moves as it is (a body's text stays a slice).
    pub(crate) fn into_text(self) -> Text {
        let mut texts = self.parts.into_iter().filter_map(|part| match part {
            Part::Text(text) => Some(text),
            Part::ToolResult(result) => Some(result.content),
            _ => None,
        });
        let Some(first) = texts.next() else {
            return Text::default();
        };
        let Some(second) = texts.next() else {
            return first;
        };
        let mut joined = first.into_string();
        for text in std::iter::once(second).chain(texts) {
            joined.push('\n');
            joined.push_str(&text);
        }
        joined.into()
    }

    /// The message's text parts joined by a newline (tool results included as text).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            let text = match part {
                Part::Text(text) => text.as_str(),
                Part::ToolResult(result) => result.content.as_str(),
                _ => continue,
            };
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(text);
        }
        out
    }
}

/// One piece of message content.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(Text),
    Image(Image),
    ToolCall(ToolCall),
    ToolResult(ToolResult),
    Thinking {
        text: String,
        signature: Option<String>,
    },
    RedactedThinking {
        data: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    Url(String),
    Base64 { media_type: String, data: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text of the arguments, exactly as the model produced it.
    pub arguments: Text,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    pub tool_call_id: String,
    pub content: Text,
    pub is_error: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON schema of the parameters, as the client wrote it.
    pub parameters: RawJson,
}

/// A JSON value kept as its text: checked when read, written out as it came, made a tree only where a
/// conversion puts it into one. A tool's parameter schema is most of a tool definition, and an agent
/// sends dozens of them every turn that a pass-through never looks into.
#[derive(Debug, Clone)]
pub struct RawJson(Box<serde_json::value::RawValue>);

impl RawJson {
    /// The schema of a function that takes no arguments, for a tool that names none.
    pub(crate) fn empty_object_schema() -> RawJson {
        RawJson::from_value(&serde_json::json!({"type": "object", "properties": {}}))
    }

    pub(crate) fn from_raw(raw: Box<serde_json::value::RawValue>) -> RawJson {
        RawJson(raw)
    }

    pub(crate) fn from_value(value: &serde_json::Value) -> RawJson {
        // A `Value` always serializes; the fallback only keeps this total.
        RawJson(
            serde_json::value::to_raw_value(value)
                .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned()),
        )
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The value as a tree.
    pub(crate) fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

/// Equal when the values are, whatever the spelling.
impl PartialEq for RawJson {
    fn eq(&self, other: &RawJson) -> bool {
        self.get() == other.get() || self.to_value() == other.to_value()
    }
}

impl serde::Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RawJson, D::Error> {
        Box::<serde_json::value::RawValue>::deserialize(deserializer).map(RawJson)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

/// A legacy completions request (`/v1/completions`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Vec<String>,
    pub stream: bool,
    pub params: SamplingParams,
}

/// An embeddings request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmbeddingsRequest {
    pub model: Option<String>,
    pub input: Vec<String>,
}

/// Token usage of one exchange.
///
/// `input_tokens` is the whole prompt, cached parts included (OpenAI `prompt_tokens` meaning); Anthropic's
/// `input_tokens` excludes cache reads and writes, so its wire value is `input_tokens - cache_read_tokens -
/// cache_creation_tokens`. One meaning here keeps accounting identical whichever backend answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_creation_tokens: u64,
    /// Output tokens spent on reasoning (part of `output_tokens`), when the backend reports them.
    pub reasoning_tokens: u64,
}

/// A complete (non-streamed) chat answer in canonical form; usage counts follow [`Usage`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatResponse {
    pub id: String,
    pub model: String,
    /// Unix seconds, when the wire format carried it (OpenAI only).
    pub created: Option<i64>,
    /// Content in order: text, thinking, redacted thinking and tool calls.
    pub parts: Vec<Part>,
    pub finish_reason: Option<FinishReason>,
    /// The stop sequence that ended generation, when the backend said which one (Anthropic only).
    pub stop_sequence: Option<String>,
    pub usage: Option<Usage>,
}

/// What a finished exchange produced, for logs, usage accounting and the cache.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResponseSummary {
    pub text: String,
    pub reasoning: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Option<Usage>,
    pub finish_reason: Option<FinishReason>,
}

impl ResponseSummary {
    /// Summary of a complete response.
    pub fn from_response(response: &ChatResponse) -> Self {
        let mut summary = ResponseSummary {
            usage: response.usage,
            finish_reason: response.finish_reason,
            ..ResponseSummary::default()
        };
        for part in &response.parts {
            match part {
                Part::Text(text) => summary.text.push_str(text),
                Part::Thinking { text, .. } => summary.reasoning.push_str(text),
                Part::ToolCall(call) => summary.tool_calls.push(call.clone()),
                _ => {}
            }
        }
        summary
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    StopSequence,
    Length,
    ToolCalls,
    ContentFilter,
}

/// A request body that could not be decoded; the message names what was wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub message: String,
    /// The offending field path, e.g. `messages[0].content`, when known.
    pub param: Option<String>,
}

impl DecodeError {
    pub fn new(message: impl Into<String>, param: Option<String>) -> Self {
        DecodeError {
            message: message.into(),
            param,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

/// Count whitespace-separated words: the echo backend's token measure (seed 003: "Hello world" → 2).
pub(crate) fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

// === Borrowed fast-path decoding ===

/// The borrowed view of a JSON object (an event or a body), or `None` to take the `Value` path.
///
/// This middle tier is kept because it wins clearly: with it returning `None` everywhere, converted
/// requests cost 15–51% more instructions (Anthropic answers and events, tool calls; the table is in
/// docs/performance.md); pass-through never reaches it.
///
/// Invalid UTF-8 anywhere takes the `Value` path (which rejects it): the borrowed structs skip fields
/// they do not read without checking their text.
pub(crate) fn fast_decode<'a, T: Deserialize<'a>>(data: &'a [u8]) -> Option<T> {
    std::str::from_utf8(data).ok()?;
    serde_json::from_slice::<Obj<T>>(data)
        .ok()
        .map(|Obj(value)| value)
}

/// A struct read from a JSON object only: serde's derived impls would also fill a struct from an array
/// (by position), which the `Value` path reads differently, so an array here fails the fast path.
pub(crate) struct Obj<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(ObjectOnly(std::marker::PhantomData))
            .map(Obj)
    }
}

impl<T> std::ops::Deref for Obj<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
