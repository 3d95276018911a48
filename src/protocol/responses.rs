//! OpenAI Responses API wire format (`POST /v1/responses`): request decoding into the canonical chat
//! request, request encoding for backends that speak it, response objects both ways, output items, usage,
//! ids, and the stored-conversation layout that `previous_response_id` continues.
//!
//! Conversion is hub and spoke like the other formats: a Responses request decodes into a
//! [`ChatRequest`] (plus the few fields only this API has, [`ResponsesRequest`]), and a canonical
//! [`ChatResponse`] encodes into a Responses `response` object. Streams are in `responses_stream.rs`.
//! What a conversion drops on purpose is listed in docs/conversion.md.

use std::borrow::Cow;
use std::sync::Arc;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::json_text::{Sink, plain_run, write_i64, write_str, write_u64};
use super::openai::{image_from_url, missing, parse};
use super::{
    ChatRequest, ChatResponse, DecodeError, FinishReason, Image, Message, Part, RawJson,
    ResponseFormat, Role, SamplingParams, Tool, ToolCall, ToolChoice, ToolResult, Usage,
};

/// Prefix of a reasoning item's `encrypted_content` that carries Anthropic redacted thinking (plain
/// `encrypted_content` carries a thinking block's signature).
pub(crate) const REDACTED_PREFIX: &str = "redacted_thinking:";

/// The response id for a request id: `resp_<request id>` (an id that already starts with `resp_` is
/// kept), so a response's id names the request that made it, as every other endpoint's `id` does.
pub(crate) fn response_id(request_id: &str) -> String {
    if request_id.starts_with("resp_") {
        request_id.to_owned()
    } else {
        let mut id = String::with_capacity(request_id.len() + 5);
        id.push_str("resp_");
        id.push_str(request_id);
        id
    }
}

/// The id of output item `index` of response `response_id`: `msg_…`, `fc_…` or `rs_…` followed by the
/// response id's own part and the index, so ids are unique and the same for the same answer.
pub(crate) fn item_id(prefix: &str, response_id: &str, index: usize) -> String {
    let own = response_id.strip_prefix("resp_").unwrap_or(response_id);
    let index = itoa::Buffer::new().format(index).to_owned();
    let mut id = String::with_capacity(prefix.len() + own.len() + index.len() + 2);
    id.push_str(prefix);
    id.push('_');
    id.push_str(own);
    id.push('_');
    id.push_str(&index);
    id
}

/// What a Responses answer repeats from its request (`instructions`, `tools`, `text`, `reasoning`,
/// `metadata`, …): JSON object members without braces, rendered once when the request is decoded.
/// Empty means the defaults (a response converted without its request).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseEcho(pub Arc<str>);

impl ResponseEcho {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The members an answer shows when the request's are unknown.
const DEFAULT_ECHO: &str = r#""instructions":null,"max_output_tokens":null,"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":null,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":null,"truncation":"disabled","user":null,"metadata":{}"#;

/// A decoded `POST /v1/responses` request.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesRequest {
    /// The conversation and parameters in canonical form (`instructions` lead `system`).
    pub chat: ChatRequest,
    pub previous_response_id: Option<String>,
    /// `store` (default true): keep the answer so a later request can continue it.
    pub store: bool,
    /// `instructions` as system parts (not carried over to a continuation, as in OpenAI's API).
    pub instructions: Vec<String>,
    /// This request's `input` as items.
    pub input_items: InputItems,
    /// What the answer repeats from the request.
    pub echo: ResponseEcho,
}

/// A request's `input` as a JSON array of items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputItems {
    /// Where the `input` array sits in the request body (read from there: no copy).
    Span(std::ops::Range<usize>),
    /// A string `input` as one user message item.
    Text(String),
}

impl InputItems {
    /// The items' JSON text, from the body the request was decoded from.
    pub fn bytes(&self, body: &bytes::Bytes) -> bytes::Bytes {
        match self {
            InputItems::Span(range) if range.end <= body.len() => body.slice(range.clone()),
            InputItems::Span(_) => bytes::Bytes::from_static(b"[]"),
            InputItems::Text(text) => bytes::Bytes::from(text.clone()),
        }
    }
}

// === Request decoding ===

#[derive(Deserialize)]
struct RequestWire<'a> {
    model: Option<String>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    instructions: Option<&'a RawValue>,
    stream: Option<bool>,
    store: Option<bool>,
    previous_response_id: Option<String>,
    max_output_tokens: Option<u64>,
    max_tool_calls: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_choice: Option<&'a RawValue>,
    parallel_tool_calls: Option<bool>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    user: Option<String>,
    background: Option<bool>,
    #[serde(borrow)]
    conversation: Option<&'a RawValue>,
    #[serde(borrow)]
    truncation: Option<&'a RawValue>,
}

/// Decode a `POST /v1/responses` body.
pub fn decode_request(body: &[u8]) -> Result<ResponsesRequest, DecodeError> {
    let wire: RequestWire<'_> = parse(body)?;
    if wire.background == Some(true) {
        return Err(DecodeError::new(
            "background: background responses are not supported by this gateway; send the request without it",
            Some("background".into()),
        ));
    }
    if wire.conversation.is_some() {
        return Err(DecodeError::new(
            "conversation: the Conversations API is not supported by this gateway; continue a conversation with previous_response_id",
            Some("conversation".into()),
        ));
    }
    let Some(input) = wire.input else {
        return Err(missing("input"));
    };
    let echo = echo_members(&wire);
    let raw_input = input.get();
    let input_items = match raw_input.as_bytes().first() {
        Some(b'"') => {
            let mut items = String::with_capacity(raw_input.len() + 48);
            items.push_str(r#"[{"type":"message","role":"user","content":"#);
            items.push_str(raw_input);
            items.push_str("}]");
            InputItems::Text(items)
        }
        Some(b'[') => {
            // The raw value borrows from `body`: its offset there.
            let start = (raw_input.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
            InputItems::Span(start..start + raw_input.len())
        }
        _ => {
            return Err(DecodeError::new(
                "input: expected a string or an array of input items",
                Some("input".into()),
            ));
        }
    };
    let instructions = match wire.instructions {
        None => Vec::new(),
        Some(raw) => instructions_text(raw)?,
    };
    let mut chat = ChatRequest {
        model: wire.model,
        system: instructions.clone(),
        stream: wire.stream.unwrap_or(false),
        params: SamplingParams {
            max_tokens: wire.max_output_tokens,
            temperature: wire.temperature,
            top_p: wire.top_p,
            ..SamplingParams::default()
        },
        user: wire.user.clone(),
        parallel_tool_calls: wire.parallel_tool_calls,
        ..ChatRequest::default()
    };
    match &input_items {
        // A string is one user message: what `push_items` makes of its item, without reading the
        // item back.
        InputItems::Text(text) => match serde_json::from_str::<String>(raw_input) {
            Ok(content) => chat.messages.push(Message {
                role: Role::User,
                parts: vec![Part::Text(content)],
                name: None,
            }),
            Err(_) => push_items(text.as_bytes(), "input", &mut chat)?,
        },
        InputItems::Span(_) => push_items(raw_input.as_bytes(), "input", &mut chat)?,
    }
    if let Some(tools) = wire.tools {
        let tools: Vec<ToolWire> = parse_field(tools, "tools")?;
        for tool in tools {
            if let Some(tool) = tool.into_tool() {
                chat.tools.push(tool);
            }
        }
    }
    if let Some(choice) = wire.tool_choice {
        chat.tool_choice = tool_choice(choice)?;
    }
    if let Some(text) = wire.text {
        let text: TextWire = parse_field(text, "text")?;
        chat.response_format = text.format.and_then(FormatWire::into_format).map(Box::new);
    }
    if let Some(reasoning) = wire.reasoning {
        let reasoning: ReasoningWire = parse_field(reasoning, "reasoning")?;
        chat.reasoning_effort = reasoning.effort;
    }
    if let Some(metadata) = wire.metadata
        && !matches!(metadata.get().as_bytes().first(), Some(b'{'))
    {
        return Err(DecodeError::new(
            "metadata: expected an object of string values",
            Some("metadata".into()),
        ));
    }
    Ok(ResponsesRequest {
        chat,
        previous_response_id: wire.previous_response_id,
        store: wire.store.unwrap_or(true),
        instructions,
        input_items,
        echo,
    })
}

/// JSON text with its line breaks made spaces: a line break in JSON text is whitespace between tokens
/// (strings cannot hold a raw one), and an SSE `data:` line must not contain one.
fn compact(json: &str) -> Cow<'_, str> {
    if json.contains(['\n', '\r']) {
        Cow::Owned(json.replace(['\n', '\r'], " "))
    } else {
        Cow::Borrowed(json)
    }
}

/// The members of the response object that repeat the request, in OpenAI's order, written into one
/// string.
fn echo_members(wire: &RequestWire<'_>) -> ResponseEcho {
    let raw_len = |value: Option<&RawValue>| value.map_or(0, |v| v.get().len());
    let mut out = String::with_capacity(
        400 + raw_len(wire.instructions)
            + raw_len(wire.tools)
            + raw_len(wire.text)
            + raw_len(wire.reasoning)
            + raw_len(wire.tool_choice)
            + raw_len(wire.metadata),
    );
    let raw = |out: &mut String, key: &str, value: Option<&RawValue>, default: &str| {
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        out.push_str(&value.map_or(Cow::Borrowed(default), |v| compact(v.get())));
        out.push(',');
    };
    let optional = |out: &mut String, key: &str, value: Option<String>| {
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        out.push_str(value.as_deref().unwrap_or("null"));
        out.push(',');
    };
    let boolean = |out: &mut String, key: &str, value: bool| {
        out.push('"');
        out.push_str(key);
        out.push_str(if value { "\":true," } else { "\":false," });
    };
    let integer = |out: &mut String, key: &str, value: Option<u64>| {
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        match value {
            Some(n) => out.push_str(itoa::Buffer::new().format(n)),
            None => out.push_str("null"),
        }
        out.push(',');
    };
    raw(&mut out, "instructions", wire.instructions, "null");
    integer(&mut out, "max_output_tokens", wire.max_output_tokens);
    integer(&mut out, "max_tool_calls", wire.max_tool_calls);
    boolean(
        &mut out,
        "parallel_tool_calls",
        wire.parallel_tool_calls.unwrap_or(true),
    );
    optional(
        &mut out,
        "previous_response_id",
        wire.previous_response_id
            .as_deref()
            .map(super::json_patch::json_string),
    );
    raw(
        &mut out,
        "reasoning",
        wire.reasoning,
        r#"{"effort":null,"summary":null}"#,
    );
    boolean(&mut out, "store", wire.store.unwrap_or(true));
    optional(&mut out, "temperature", wire.temperature.map(float_text));
    raw(&mut out, "text", wire.text, r#"{"format":{"type":"text"}}"#);
    raw(&mut out, "tool_choice", wire.tool_choice, r#""auto""#);
    raw(&mut out, "tools", wire.tools, "[]");
    optional(&mut out, "top_p", wire.top_p.map(float_text));
    raw(&mut out, "truncation", wire.truncation, r#""disabled""#);
    optional(
        &mut out,
        "user",
        wire.user.as_deref().map(super::json_patch::json_string),
    );
    raw(&mut out, "metadata", wire.metadata, "{}");
    out.pop();
    ResponseEcho(Arc::from(out))
}

/// `n` as `Display` writes it (`0`, `0.7`, `-0`), whole numbers without the float formatter.
fn float_text(n: f64) -> String {
    // Whole numbers below 2^53 convert to `i64` exactly.
    if n.fract() == 0.0 && n.abs() < 9.0e15 && !(n == 0.0 && n.is_sign_negative()) {
        return itoa::Buffer::new().format(n as i64).to_owned();
    }
    n.to_string()
}

/// Decode a field's raw JSON into `T`, naming the path inside the body when it does not fit.
fn parse_field<'a, T: Deserialize<'a>>(raw: &'a RawValue, field: &str) -> Result<T, DecodeError> {
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let inner = error.path().to_string();
        let path = if inner.is_empty() || inner == "." {
            field.to_owned()
        } else if inner.starts_with('[') {
            format!("{field}{inner}")
        } else {
            format!("{field}.{inner}")
        };
        DecodeError::new(format!("{path}: {}", error.into_inner()), Some(path))
    })
}

/// `instructions`: a string, or input items whose text becomes system parts.
fn instructions_text(raw: &RawValue) -> Result<Vec<String>, DecodeError> {
    if let Ok(text) = serde_json::from_str::<String>(raw.get()) {
        return Ok(vec![text]);
    }
    let mut holder = ChatRequest::default();
    push_items(raw.get().as_bytes(), "instructions", &mut holder)?;
    let mut out = holder.system;
    out.extend(holder.messages.iter().map(Message::text));
    Ok(out)
}

/// One input item, as far as the canonical model reads it; unknown item types are skipped.
#[derive(Deserialize)]
struct ItemWire {
    #[serde(rename = "type")]
    kind: Option<String>,
    role: Option<String>,
    content: Option<ContentWire>,
    id: Option<String>,
    call_id: Option<String>,
    name: Option<String>,
    arguments: Option<Value>,
    output: Option<ContentWire>,
    summary: Option<Vec<TextPartWire>>,
    encrypted_content: Option<String>,
}

/// Message content or a tool output: a string or an array of typed parts.
enum ContentWire {
    Text(String),
    Parts(Vec<PartWire>),
}

#[derive(Deserialize)]
struct PartWire {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    refusal: Option<String>,
    image_url: Option<Value>,
}

#[derive(Deserialize)]
struct TextPartWire {
    text: Option<String>,
}

impl<'de> Deserialize<'de> for ContentWire {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = ContentWire;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<ContentWire, E> {
                Ok(ContentWire::Text(value.to_owned()))
            }
            fn visit_string<E: de::Error>(self, value: String) -> Result<ContentWire, E> {
                Ok(ContentWire::Text(value))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ContentWire, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element::<PartWire>()? {
                    parts.push(part);
                }
                Ok(ContentWire::Parts(parts))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

impl ContentWire {
    /// Canonical parts: text (`input_text`, `output_text`, `text`, a `refusal`) and images; files and
    /// audio are dropped.
    fn into_parts(self) -> Vec<Part> {
        match self {
            ContentWire::Text(text) => vec![Part::Text(text)],
            ContentWire::Parts(parts) => parts
                .into_iter()
                .filter_map(|part| match part.kind.as_deref() {
                    Some("input_text" | "output_text" | "text") => part.text.map(Part::Text),
                    Some("refusal") => part.refusal.map(Part::Text),
                    Some("input_image" | "image_url") => {
                        let url = match part.image_url? {
                            Value::String(url) => url,
                            other => other.get("url")?.as_str()?.to_owned(),
                        };
                        Some(Part::Image(image_from_url(url)))
                    }
                    _ => None,
                })
                .collect(),
        }
    }

    /// The text of a tool output: its text parts joined by a newline.
    fn into_text(self) -> String {
        match self {
            ContentWire::Text(text) => text,
            ContentWire::Parts(parts) => parts
                .into_iter()
                .filter_map(|part| part.text)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// Decode the JSON array of input items in `items` (named `field` in errors) and append them to
/// `chat`: leading system/developer messages join `system`, an assistant's message, reasoning and
/// function calls that follow one another form one assistant turn, and each `function_call_output`
/// is a tool message. Unknown item types (hosted tool calls, item references) are skipped.
pub(crate) fn push_items(
    items: &[u8],
    field: &str,
    chat: &mut ChatRequest,
) -> Result<(), DecodeError> {
    let text = std::str::from_utf8(items)
        .map_err(|_| DecodeError::new(format!("{field}: not valid UTF-8"), Some(field.into())))?;
    let raw: &RawValue = serde_json::from_str(text).map_err(|error| {
        DecodeError::new(
            format!("{field}: invalid JSON: {error}"),
            Some(field.into()),
        )
    })?;
    let items: Vec<ItemWire> = parse_field(raw, field)?;
    chat.messages.reserve(items.len());
    for (index, item) in items.into_iter().enumerate() {
        // Only errors name the item.
        let path = || format!("{field}[{index}]");
        let kind = match (item.kind.as_deref(), item.role.is_some()) {
            (Some(kind), _) => kind,
            (None, true) => "message",
            (None, false) => {
                return Err(DecodeError::new(
                    format!("{}: expected an item with a `type` or a `role`", path()),
                    Some(path()),
                ));
            }
        };
        match kind {
            "message" => {
                let role = match item.role.as_deref() {
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some("system" | "developer") => Role::System,
                    Some(other) => {
                        return Err(DecodeError::new(
                            format!(
                                "{}.role: unknown role '{other}'; expected user, assistant, system or developer",
                                path()
                            ),
                            Some(format!("{}.role", path())),
                        ));
                    }
                    None => return Err(missing(&format!("{}.role", path()))),
                };
                let parts = item
                    .content
                    .map(ContentWire::into_parts)
                    .unwrap_or_default();
                if role == Role::System && chat.messages.is_empty() {
                    chat.system.push(
                        Message {
                            role,
                            parts,
                            name: None,
                        }
                        .text(),
                    );
                } else if role == Role::Assistant {
                    assistant_turn(chat).extend(parts);
                } else {
                    chat.messages.push(Message {
                        role,
                        parts,
                        name: None,
                    });
                }
            }
            "function_call" => {
                let Some(call_id) = item.call_id.or(item.id) else {
                    return Err(missing(&format!("{}.call_id", path())));
                };
                let Some(name) = item.name else {
                    return Err(missing(&format!("{}.name", path())));
                };
                let arguments = match item.arguments {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(text)) => text,
                    Some(other) => other.to_string(),
                };
                assistant_turn(chat).push(Part::ToolCall(ToolCall {
                    id: call_id,
                    name,
                    arguments,
                }));
            }
            "function_call_output" => {
                let Some(call_id) = item.call_id else {
                    return Err(missing(&format!("{}.call_id", path())));
                };
                chat.messages.push(Message {
                    role: Role::Tool,
                    parts: vec![Part::ToolResult(ToolResult {
                        tool_call_id: call_id,
                        content: item.output.map(ContentWire::into_text).unwrap_or_default(),
                        is_error: false,
                    })],
                    name: None,
                });
            }
            "reasoning" => {
                let text = match item.content {
                    Some(content) => content.into_text(),
                    None => item
                        .summary
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|part| part.text)
                        .collect::<Vec<_>>()
                        .join("\n"),
                };
                let part = match item.encrypted_content.filter(|e| !e.is_empty()) {
                    Some(encrypted) => match encrypted.strip_prefix(REDACTED_PREFIX) {
                        Some(data) => Part::RedactedThinking {
                            data: data.to_owned(),
                        },
                        None => Part::Thinking {
                            text,
                            signature: Some(encrypted),
                        },
                    },
                    None => Part::Thinking {
                        text,
                        signature: None,
                    },
                };
                assistant_turn(chat).push(part);
            }
            _ => {}
        }
    }
    Ok(())
}

/// The parts of the assistant turn being built: the last message when it is the assistant's, else a
/// new one.
fn assistant_turn(chat: &mut ChatRequest) -> &mut Vec<Part> {
    if chat
        .messages
        .last()
        .is_none_or(|message| message.role != Role::Assistant)
    {
        chat.messages.push(Message {
            role: Role::Assistant,
            parts: Vec::new(),
            name: None,
        });
    }
    let at = chat.messages.len() - 1;
    &mut chat.messages[at].parts
}

#[derive(Deserialize)]
struct ToolWire {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    description: Option<String>,
    parameters: Option<RawJson>,
    /// A chat-completions-style tool (`{"type":"function","function":{…}}`), accepted as well.
    function: Option<FunctionWire>,
}

#[derive(Deserialize)]
struct FunctionWire {
    name: Option<String>,
    description: Option<String>,
    parameters: Option<RawJson>,
}

impl ToolWire {
    /// Function tools only: hosted tools (web search, file search, …) cannot run elsewhere.
    fn into_tool(self) -> Option<Tool> {
        if self.kind.as_deref() != Some("function") {
            return None;
        }
        let (name, description, parameters) = match self.function {
            Some(function) => (function.name, function.description, function.parameters),
            None => (self.name, self.description, self.parameters),
        };
        Some(Tool {
            name: name?,
            description,
            parameters: parameters.unwrap_or_else(RawJson::empty_object_schema),
        })
    }
}

fn tool_choice(raw: &RawValue) -> Result<Option<ToolChoice>, DecodeError> {
    let value: Value = parse_field(raw, "tool_choice")?;
    Ok(match &value {
        Value::Null => None,
        Value::String(choice) => Some(match choice.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(DecodeError::new(
                    format!(
                        "tool_choice: unknown value '{other}'; expected auto, none, required or an object naming a function"
                    ),
                    Some("tool_choice".into()),
                ));
            }
        }),
        Value::Object(object) => match object.get("type").and_then(Value::as_str) {
            Some("function") => match object.get("name").and_then(Value::as_str) {
                Some(name) => Some(ToolChoice::Named(name.to_owned())),
                None => return Err(missing("tool_choice.name")),
            },
            Some("allowed_tools") => match object.get("mode").and_then(Value::as_str) {
                Some("required") => Some(ToolChoice::Required),
                _ => Some(ToolChoice::Auto),
            },
            // A hosted tool (`{"type":"web_search"}`, …): no canonical form.
            _ => None,
        },
        _ => {
            return Err(DecodeError::new(
                "tool_choice: expected a string or an object",
                Some("tool_choice".into()),
            ));
        }
    })
}

#[derive(Deserialize)]
struct TextWire {
    format: Option<FormatWire>,
}

#[derive(Deserialize)]
struct FormatWire {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    description: Option<String>,
    schema: Option<Value>,
    strict: Option<bool>,
}

impl FormatWire {
    fn into_format(self) -> Option<ResponseFormat> {
        match self.kind.as_str() {
            "json_object" => Some(ResponseFormat::JsonObject),
            "json_schema" => Some(ResponseFormat::JsonSchema {
                name: self.name.unwrap_or_else(|| "response".to_owned()),
                description: self.description,
                schema: self.schema.unwrap_or_else(|| serde_json::json!({})),
                strict: self.strict,
            }),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct ReasoningWire {
    effort: Option<String>,
}

impl ResponsesRequest {
    /// Continue a stored conversation: its items (`stored`, a JSON array: the earlier input followed by
    /// the earlier output) come before this request's input items (`new_items`), and the canonical
    /// messages are rebuilt from the whole. Returns the whole conversation's items, what this answer
    /// stores as its input.
    pub(crate) fn continue_from(
        &mut self,
        stored: &str,
        new_items: &str,
    ) -> Result<String, DecodeError> {
        let items = join_items(&[stored, new_items]);
        let mut chat = ChatRequest {
            system: self.instructions.clone(),
            messages: Vec::new(),
            ..std::mem::take(&mut self.chat)
        };
        push_items(items.as_bytes(), "input", &mut chat)?;
        self.chat = chat;
        Ok(items)
    }
}

/// JSON arrays joined into one (`[a,b]` + `[c]` → `[a,b,c]`); empty arrays add nothing.
pub(crate) fn join_items(arrays: &[&str]) -> String {
    let mut out = String::with_capacity(arrays.iter().map(|a| a.len()).sum::<usize>() + 2);
    out.push('[');
    for array in arrays {
        let inner = array
            .trim()
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or("")
            .trim();
        if inner.is_empty() {
            continue;
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(inner);
    }
    out.push(']');
    out
}

// === Request encoding (canonical → Responses, for backends that speak it) ===

/// Render a canonical request as a Responses request body: `system` becomes `instructions`, messages
/// become input items (tool calls `function_call`, tool results `function_call_output`); thinking is
/// not sent (a Responses backend accepts only its own reasoning items), and the backend is asked not
/// to store the answer (the gateway keeps conversations itself).
pub fn encode_request(req: &ChatRequest, model: Option<&str>) -> Value {
    use serde_json::json;
    let mut input: Vec<Value> = Vec::with_capacity(req.messages.len());
    for message in &req.messages {
        let mut content: Vec<Value> = Vec::new();
        let mut calls: Vec<Value> = Vec::new();
        for part in &message.parts {
            match part {
                Part::Text(text) if message.role == Role::Assistant => {
                    content.push(json!({"type": "output_text", "text": text, "annotations": []}));
                }
                Part::Text(text) => content.push(json!({"type": "input_text", "text": text})),
                Part::Image(image) => content.push(json!({
                    "type": "input_image",
                    "image_url": match image {
                        Image::Url(url) => url.clone(),
                        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
                    },
                    "detail": "auto",
                })),
                Part::ToolCall(call) => calls.push(json!({
                    "type": "function_call",
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": call.arguments,
                })),
                Part::ToolResult(result) => input.push(json!({
                    "type": "function_call_output",
                    "call_id": result.tool_call_id,
                    "output": result.content,
                })),
                Part::Thinking { .. } | Part::RedactedThinking { .. } => {}
            }
        }
        if !content.is_empty() {
            let role = match message.role {
                Role::System => "system",
                Role::User | Role::Tool => "user",
                Role::Assistant => "assistant",
            };
            input.push(json!({"type": "message", "role": role, "content": content}));
        }
        input.extend(calls);
    }
    let mut body = serde_json::Map::new();
    if let Some(model) = model.or(req.model.as_deref()) {
        body.insert("model".into(), json!(model));
    }
    if !req.system.is_empty() {
        body.insert("instructions".into(), json!(req.system.join("\n")));
    }
    body.insert("input".into(), Value::Array(input));
    if req.stream {
        body.insert("stream".into(), json!(true));
    }
    if let Some(max) = req.params.max_tokens {
        body.insert("max_output_tokens".into(), json!(max));
    }
    if let Some(temperature) = req.params.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = req.params.top_p {
        body.insert("top_p".into(), json!(top_p));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|tool| {
                let mut out = serde_json::Map::new();
                out.insert("type".into(), json!("function"));
                out.insert("name".into(), json!(tool.name));
                if let Some(description) = &tool.description {
                    out.insert("description".into(), json!(description));
                }
                out.insert("parameters".into(), tool.parameters.to_value());
                Value::Object(out)
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = &req.tool_choice {
            body.insert(
                "tool_choice".into(),
                match choice {
                    ToolChoice::Auto => json!("auto"),
                    ToolChoice::None => json!("none"),
                    ToolChoice::Required => json!("required"),
                    ToolChoice::Named(name) => json!({"type": "function", "name": name}),
                },
            );
        }
        if let Some(parallel) = req.parallel_tool_calls {
            body.insert("parallel_tool_calls".into(), json!(parallel));
        }
    }
    if let Some(effort) = &req.reasoning_effort {
        body.insert("reasoning".into(), json!({"effort": effort}));
    }
    if let Some(format) = &req.response_format {
        body.insert(
            "text".into(),
            json!({"format": match &**format {
                ResponseFormat::JsonObject => json!({"type": "json_object"}),
                ResponseFormat::JsonSchema { name, description, schema, strict } => {
                    let mut out = serde_json::Map::new();
                    out.insert("type".into(), json!("json_schema"));
                    out.insert("name".into(), json!(name));
                    if let Some(description) = description {
                        out.insert("description".into(), json!(description));
                    }
                    out.insert("schema".into(), schema.clone());
                    if let Some(strict) = strict {
                        out.insert("strict".into(), json!(strict));
                    }
                    Value::Object(out)
                }
            }}),
        );
    }
    if let Some(user) = &req.user {
        body.insert("user".into(), json!(user));
    }
    body.insert("store".into(), json!(false));
    Value::Object(body)
}

// === Responses: the `response` object ===

/// Decode a complete `response` object into canonical form: reasoning items become thinking (their
/// `encrypted_content` the signature), message items text, function calls tool calls; `incomplete`
/// becomes a length (or content filter) stop.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, DecodeError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| DecodeError::new(format!("invalid JSON response: {error}"), None))?;
    if !value.is_object() {
        return Err(DecodeError::new(
            "upstream response must be a JSON object",
            None,
        ));
    }
    Ok(response_from_value(&value))
}

/// [`decode_response`] of a parsed `response` object (streams' final events carry one).
pub(crate) fn response_from_value(value: &Value) -> ChatResponse {
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut parts = Vec::new();
    for item in value
        .get("output")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        parts.extend(item_parts(item));
    }
    let has_tool_calls = parts.iter().any(|part| matches!(part, Part::ToolCall(_)));
    ChatResponse {
        id: text("id"),
        model: text("model"),
        created: value.get("created_at").and_then(|created| {
            created
                .as_i64()
                .or_else(|| created.as_f64().map(|seconds| seconds as i64))
        }),
        parts,
        finish_reason: Some(finish_reason_of(value, has_tool_calls)),
        stop_sequence: None,
        usage: value
            .get("usage")
            .filter(|usage| usage.is_object())
            .map(usage_from),
    }
}

/// Why a response ended, from its `status` and `incomplete_details`.
pub(crate) fn finish_reason_of(response: &Value, has_tool_calls: bool) -> FinishReason {
    if response.get("status").and_then(Value::as_str) == Some("incomplete") {
        return match response
            .pointer("/incomplete_details/reason")
            .and_then(Value::as_str)
        {
            Some("content_filter") => FinishReason::ContentFilter,
            _ => FinishReason::Length,
        };
    }
    if has_tool_calls {
        FinishReason::ToolCalls
    } else {
        FinishReason::Stop
    }
}

/// The canonical parts of one output item (unknown item types give none).
pub(crate) fn item_parts(item: &Value) -> Vec<Part> {
    let str_of = |value: &Value, key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let texts = |key: &str, field: &str| -> String {
        item.get(key)
            .and_then(Value::as_array)
            .map(|parts| {
                parts
                    .iter()
                    .filter_map(|part| part.get(field).and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    match item.get("type").and_then(Value::as_str) {
        Some("message") => item
            .get("content")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|part| match part.get("type").and_then(Value::as_str) {
                Some("output_text") => Some(Part::Text(str_of(part, "text"))),
                Some("refusal") => Some(Part::Text(str_of(part, "refusal"))),
                _ => None,
            })
            .collect(),
        Some("function_call") => vec![Part::ToolCall(ToolCall {
            id: str_of(item, "call_id"),
            name: str_of(item, "name"),
            arguments: str_of(item, "arguments"),
        })],
        Some("reasoning") => {
            let mut text = texts("content", "text");
            if text.is_empty() {
                text = texts("summary", "text");
            }
            let encrypted = item
                .get("encrypted_content")
                .and_then(Value::as_str)
                .filter(|e| !e.is_empty());
            vec![match encrypted {
                Some(encrypted) => match encrypted.strip_prefix(REDACTED_PREFIX) {
                    Some(data) => Part::RedactedThinking {
                        data: data.to_owned(),
                    },
                    None => Part::Thinking {
                        text,
                        signature: Some(encrypted.to_owned()),
                    },
                },
                None => Part::Thinking {
                    text,
                    signature: None,
                },
            }]
        }
        _ => Vec::new(),
    }
}

/// Canonical usage from a Responses `usage` object (`input_tokens` includes cached tokens, as OpenAI's
/// `prompt_tokens` does).
pub(crate) fn usage_from(value: &Value) -> Usage {
    let field = |pointer: &str| value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: field("/input_tokens"),
        output_tokens: field("/output_tokens"),
        cache_read_tokens: field("/input_tokens_details/cached_tokens"),
        cache_creation_tokens: 0,
        reasoning_tokens: field("/output_tokens_details/reasoning_tokens"),
    }
}

/// Status and `incomplete_details.reason` for how an answer ended.
pub(crate) fn status_of(reason: Option<FinishReason>) -> (&'static str, Option<&'static str>) {
    match reason {
        Some(FinishReason::Length) => ("incomplete", Some("max_output_tokens")),
        Some(FinishReason::ContentFilter) => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// One output item as rendered; strings borrowed from whoever holds the answer.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ItemOut<'a> {
    Reasoning {
        id: &'a str,
        summary: [(); 0],
        content: Vec<ReasoningTextOut<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<&'a str>,
    },
    Message {
        id: &'a str,
        status: &'static str,
        role: &'static str,
        content: Vec<OutputTextOut<'a>>,
    },
    FunctionCall {
        id: &'a str,
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
        status: &'static str,
    },
}

#[derive(Serialize)]
pub(crate) struct OutputTextOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: &'a str,
    pub annotations: [(); 0],
    pub logprobs: [(); 0],
}

impl<'a> OutputTextOut<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        OutputTextOut {
            kind: "output_text",
            text,
            annotations: [],
            logprobs: [],
        }
    }
}

#[derive(Serialize)]
pub(crate) struct ReasoningTextOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: &'a str,
}

impl<'a> ReasoningTextOut<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        ReasoningTextOut {
            kind: "reasoning_text",
            text,
        }
    }
}

/// `"text"` in quotes: the fixed names and values our writers use have nothing to escape.
fn lit<S: Sink + ?Sized>(out: &mut S, text: &str) {
    debug_assert_eq!(plain_run(text.as_bytes()), text.len());
    out.put_byte(b'"');
    out.put(text.as_bytes());
    out.put_byte(b'"');
}

impl ItemOut<'_> {
    /// The item's JSON, byte for byte what its `Serialize` derive writes (held to it by the tests): the
    /// hand-written form skips serde's escaping of every member name.
    pub(crate) fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        match self {
            ItemOut::Reasoning {
                id,
                summary: _,
                content,
                encrypted_content,
            } => {
                out.put(br#"{"type":"reasoning","id":"#);
                write_str(out, id);
                out.put(br#","summary":[],"content":["#);
                for (index, part) in content.iter().enumerate() {
                    if index > 0 {
                        out.put_byte(b',');
                    }
                    out.put(br#"{"type":"#);
                    lit(out, part.kind);
                    out.put(br#","text":"#);
                    write_str(out, part.text);
                    out.put_byte(b'}');
                }
                out.put_byte(b']');
                if let Some(encrypted) = encrypted_content {
                    out.put(br#","encrypted_content":"#);
                    write_str(out, encrypted);
                }
                out.put_byte(b'}');
            }
            ItemOut::Message {
                id,
                status,
                role,
                content,
            } => {
                out.put(br#"{"type":"message","id":"#);
                write_str(out, id);
                out.put(br#","status":"#);
                lit(out, status);
                out.put(br#","role":"#);
                lit(out, role);
                out.put(br#","content":["#);
                for (index, part) in content.iter().enumerate() {
                    if index > 0 {
                        out.put_byte(b',');
                    }
                    part.write(out);
                }
                out.put(b"]}");
            }
            ItemOut::FunctionCall {
                id,
                call_id,
                name,
                arguments,
                status,
            } => {
                out.put(br#"{"type":"function_call","id":"#);
                write_str(out, id);
                out.put(br#","call_id":"#);
                write_str(out, call_id);
                out.put(br#","name":"#);
                write_str(out, name);
                out.put(br#","arguments":"#);
                write_str(out, arguments);
                out.put(br#","status":"#);
                lit(out, status);
                out.put_byte(b'}');
            }
        }
    }
}

impl OutputTextOut<'_> {
    /// As its `Serialize` derive writes it.
    pub(crate) fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put(br#"{"type":"#);
        lit(out, self.kind);
        out.put(br#","text":"#);
        write_str(out, self.text);
        out.put(br#","annotations":[],"logprobs":[]}"#);
    }
}

impl ReasoningTextOut<'_> {
    /// As its `Serialize` derive writes it.
    pub(crate) fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put(br#"{"type":"#);
        lit(out, self.kind);
        out.put(br#","text":"#);
        write_str(out, self.text);
        out.put_byte(b'}');
    }
}

/// The kind of an output item, with what it holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ItemBody<S> {
    Reasoning { text: S, encrypted: Option<S> },
    Message { text: S },
    FunctionCall { call_id: S, name: S, arguments: S },
}

impl<S: AsRef<str>> ItemBody<S> {
    /// The id prefix of this kind of item.
    pub(crate) fn prefix(&self) -> &'static str {
        match self {
            ItemBody::Reasoning { .. } => "rs",
            ItemBody::Message { .. } => "msg",
            ItemBody::FunctionCall { .. } => "fc",
        }
    }

    /// The item as rendered, with `status` (`in_progress`, `completed`, `incomplete`) where its kind
    /// has one; `full` false renders the item as it starts (no content yet).
    pub(crate) fn out<'a>(&'a self, id: &'a str, status: &'static str, full: bool) -> ItemOut<'a> {
        match self {
            ItemBody::Reasoning { text, encrypted } => ItemOut::Reasoning {
                id,
                summary: [],
                content: if full && !text.as_ref().is_empty() {
                    vec![ReasoningTextOut::new(text.as_ref())]
                } else {
                    Vec::new()
                },
                encrypted_content: encrypted.as_ref().map(AsRef::as_ref).filter(|_| full),
            },
            ItemBody::Message { text } => ItemOut::Message {
                id,
                status,
                role: "assistant",
                content: if full {
                    vec![OutputTextOut::new(text.as_ref())]
                } else {
                    Vec::new()
                },
            },
            ItemBody::FunctionCall {
                call_id,
                name,
                arguments,
            } => ItemOut::FunctionCall {
                id,
                call_id: call_id.as_ref(),
                name: name.as_ref(),
                arguments: if full { arguments.as_ref() } else { "" },
                status,
            },
        }
    }
}

/// The output items of a canonical answer, in order: each thinking block a reasoning item, each run of
/// text one message, each tool call a function call.
pub(crate) fn items_of(parts: &[Part]) -> Vec<ItemBody<Cow<'_, str>>> {
    let mut items: Vec<ItemBody<Cow<'_, str>>> = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            Part::Text(text) => match items.last_mut() {
                Some(ItemBody::Message { text: joined }) => joined.to_mut().push_str(text),
                _ => items.push(ItemBody::Message {
                    text: Cow::Borrowed(text),
                }),
            },
            Part::Thinking { text, signature } => items.push(ItemBody::Reasoning {
                text: Cow::Borrowed(text),
                encrypted: signature.as_deref().map(Cow::Borrowed),
            }),
            Part::RedactedThinking { data } => items.push(ItemBody::Reasoning {
                text: Cow::Borrowed(""),
                encrypted: Some(Cow::Owned(format!("{REDACTED_PREFIX}{data}"))),
            }),
            Part::ToolCall(call) => items.push(ItemBody::FunctionCall {
                call_id: Cow::Borrowed(&call.id),
                name: Cow::Borrowed(&call.name),
                arguments: Cow::Borrowed(&call.arguments),
            }),
            Part::Image(_) | Part::ToolResult(_) => {}
        }
    }
    items
}

/// The top of a `response` object.
pub(crate) struct ResponseHead<'a> {
    pub id: &'a str,
    pub created_at: i64,
    /// `in_progress`, `completed`, `incomplete` or `failed`.
    pub status: &'static str,
    /// `(code, message)` of a failed response.
    pub error: Option<(&'a str, &'a str)>,
    pub incomplete_reason: Option<&'static str>,
    pub model: &'a str,
    /// The request's members ([`ResponseEcho`]); empty for the defaults.
    pub echo: &'a str,
}

/// Write Responses `usage` as the API writes it (`UsageOut` in the tests is the serde form).
pub(crate) fn write_usage<S: Sink + ?Sized>(out: &mut S, usage: &Usage) {
    out.put(br#"{"input_tokens":"#);
    write_u64(out, usage.input_tokens);
    out.put(br#","input_tokens_details":{"cached_tokens":"#);
    write_u64(out, usage.cache_read_tokens);
    out.put(br#"},"output_tokens":"#);
    write_u64(out, usage.output_tokens);
    out.put(br#","output_tokens_details":{"reasoning_tokens":"#);
    write_u64(out, usage.reasoning_tokens);
    out.put(br#"},"total_tokens":"#);
    write_u64(out, usage.input_tokens.saturating_add(usage.output_tokens));
    out.put_byte(b'}');
}

/// Write a whole `response` object: the head, `output` (written by `output`, which gets the buffer
/// right after `[`), the request's members and `usage`. Hand-written; the tests hold it to the serde
/// form (`HeadOut`, `UsageOut`).
pub(crate) fn write_response(
    out: &mut Vec<u8>,
    head: &ResponseHead<'_>,
    output: impl FnOnce(&mut Vec<u8>),
    usage: Option<&Usage>,
) {
    let echo = if head.echo.is_empty() {
        DEFAULT_ECHO
    } else {
        head.echo
    };
    out.reserve(256 + head.id.len() + head.model.len() + echo.len());
    out.extend_from_slice(br#"{"id":"#);
    write_str(out, head.id);
    out.extend_from_slice(br#","object":"response","created_at":"#);
    write_i64(out, head.created_at);
    out.extend_from_slice(br#","status":"#);
    lit(out, head.status);
    out.extend_from_slice(br#","background":false,"error":"#);
    match head.error {
        Some((code, message)) => {
            out.extend_from_slice(br#"{"code":"#);
            write_str(out, code);
            out.extend_from_slice(br#","message":"#);
            write_str(out, message);
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","incomplete_details":"#);
    match head.incomplete_reason {
        Some(reason) => {
            out.extend_from_slice(br#"{"reason":"#);
            lit(out, reason);
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","model":"#);
    write_str(out, head.model);
    out.extend_from_slice(br#","output":["#);
    output(out);
    out.extend_from_slice(b"],");
    out.extend_from_slice(echo.as_bytes());
    out.extend_from_slice(br#","usage":"#);
    match usage {
        Some(usage) => write_usage(out, usage),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// Items written one after another into an array being written.
pub(crate) fn write_items<'a>(out: &mut Vec<u8>, items: impl IntoIterator<Item = ItemOut<'a>>) {
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        item.write(out);
    }
}

/// Render a canonical answer as a complete `response` object (`created` when it carries none, `echo`
/// the request's members, or empty for the defaults).
pub(crate) fn encode_response_bytes(response: &ChatResponse, created: i64, echo: &str) -> Vec<u8> {
    let items = items_of(&response.parts);
    let ids: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(index, item)| item_id(item.prefix(), &response.id, index))
        .collect();
    let (status, incomplete_reason) = status_of(response.finish_reason);
    let item_status = if status == "incomplete" {
        "incomplete"
    } else {
        "completed"
    };
    let head = ResponseHead {
        id: &response.id,
        created_at: response.created.unwrap_or(created),
        status,
        error: None,
        incomplete_reason,
        model: &response.model,
        echo,
    };
    let mut out = Vec::with_capacity(512 + echo.len());
    write_response(
        &mut out,
        &head,
        |out| {
            write_items(
                out,
                items
                    .iter()
                    .zip(&ids)
                    .map(|(item, id)| item.out(id, item_status, true)),
            );
        },
        Some(&response.usage.unwrap_or_default()),
    );
    out
}

// === Stored conversations ===

/// A stored answer as the conversation store keeps it: who owns it (the client key's name, `null` on an
/// open gateway), the whole conversation's input items, and the `response` object the client got.
pub(crate) fn stored_entry(owner: Option<&str>, input_items: &[u8], response: &[u8]) -> Vec<u8> {
    let owner = owner.map_or_else(|| "null".to_owned(), super::json_patch::json_string);
    let mut out = Vec::with_capacity(owner.len() + input_items.len() + response.len() + 32);
    out.extend_from_slice(br#"{"owner":"#);
    out.extend_from_slice(owner.as_bytes());
    out.extend_from_slice(br#","input":"#);
    out.extend_from_slice(input_items);
    out.extend_from_slice(br#","response":"#);
    out.extend_from_slice(response);
    out.push(b'}');
    out
}

/// A stored answer, read without building a JSON tree.
#[derive(Deserialize)]
pub(crate) struct StoredView<'a> {
    #[serde(borrow)]
    pub owner: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub input: &'a RawValue,
    #[serde(borrow)]
    pub response: &'a RawValue,
}

#[derive(Deserialize)]
struct OutputOnly<'a> {
    #[serde(borrow)]
    output: Option<&'a RawValue>,
}

impl StoredView<'_> {
    /// Read an entry written by [`stored_entry`].
    pub fn read(bytes: &[u8]) -> Option<StoredView<'_>> {
        serde_json::from_slice(bytes).ok()
    }

    /// The conversation so far: the stored input items followed by the response's output items.
    pub fn conversation(&self) -> String {
        let output = serde_json::from_str::<OutputOnly<'_>>(self.response.get())
            .ok()
            .and_then(|response| response.output)
            .map_or("[]", RawValue::get);
        join_items(&[self.input.get(), output])
    }
}

/// The serde forms the hand-written writers are held to.
#[cfg(test)]
pub(crate) mod oracle {
    use super::*;

    #[derive(Serialize)]
    struct HeadOut<'a> {
        id: &'a str,
        object: &'static str,
        created_at: i64,
        status: &'static str,
        background: bool,
        error: Option<ErrorOut<'a>>,
        incomplete_details: Option<IncompleteOut>,
        model: &'a str,
    }

    #[derive(Serialize)]
    pub(crate) struct ErrorOut<'a> {
        code: &'a str,
        message: &'a str,
    }

    #[derive(Serialize)]
    pub(crate) struct IncompleteOut {
        reason: &'static str,
    }

    /// Responses `usage`, as the API writes it.
    #[derive(Serialize)]
    pub(crate) struct UsageOut {
        input_tokens: u64,
        input_tokens_details: CachedOut,
        output_tokens: u64,
        output_tokens_details: ReasoningTokensOut,
        total_tokens: u64,
    }

    #[derive(Serialize)]
    pub(crate) struct CachedOut {
        cached_tokens: u64,
    }

    #[derive(Serialize)]
    pub(crate) struct ReasoningTokensOut {
        reasoning_tokens: u64,
    }

    impl UsageOut {
        pub(crate) fn new(usage: &Usage) -> UsageOut {
            UsageOut {
                input_tokens: usage.input_tokens,
                input_tokens_details: CachedOut {
                    cached_tokens: usage.cache_read_tokens,
                },
                output_tokens: usage.output_tokens,
                output_tokens_details: ReasoningTokensOut {
                    reasoning_tokens: usage.reasoning_tokens,
                },
                total_tokens: usage.input_tokens.saturating_add(usage.output_tokens),
            }
        }
    }

    /// Write a whole `response` object: the head, `output` (written by `output`, which gets the buffer
    /// right after `[`), the request's members and `usage`.
    pub(crate) fn write_response_serde(
        out: &mut Vec<u8>,
        head: &ResponseHead<'_>,
        output: impl FnOnce(&mut Vec<u8>),
        usage: Option<&Usage>,
    ) {
        let head_out = HeadOut {
            id: head.id,
            object: "response",
            created_at: head.created_at,
            status: head.status,
            background: false,
            error: head.error.map(|(code, message)| ErrorOut { code, message }),
            incomplete_details: head
                .incomplete_reason
                .map(|reason| IncompleteOut { reason }),
            model: head.model,
        };
        let start = out.len();
        if serde_json::to_writer(&mut *out, &head_out).is_err() {
            out.truncate(start);
            out.extend_from_slice(b"{");
        } else {
            // Reopen the object: `…"model":"m"}` continues with `,"output":[`.
            out.pop();
            out.push(b',');
        }
        out.extend_from_slice(br#""output":["#);
        output(out);
        out.extend_from_slice(b"],");
        out.extend_from_slice(if head.echo.is_empty() {
            DEFAULT_ECHO.as_bytes()
        } else {
            head.echo.as_bytes()
        });
        out.extend_from_slice(br#","usage":"#);
        match usage {
            Some(usage) => {
                if serde_json::to_writer(&mut *out, &UsageOut::new(usage)).is_err() {
                    out.extend_from_slice(b"null");
                }
            }
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }

    /// Items written one after another into an array being written.
    pub(crate) fn write_items_serde<'a>(
        out: &mut Vec<u8>,
        items: impl IntoIterator<Item = ItemOut<'a>>,
    ) {
        for (index, item) in items.into_iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            let start = out.len();
            if serde_json::to_writer(&mut *out, &item).is_err() {
                out.truncate(start);
                out.extend_from_slice(b"null");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        decode_request(body.as_bytes()).unwrap_err().message
    }

    #[test]
    fn decodes_strings_items_tools_and_formats() {
        let request = decode_request(
            br#"{"model":"m","instructions":"be brief","input":[
                {"role":"developer","content":"dev note"},
                {"role":"user","content":[{"type":"input_text","text":"hi"},{"type":"input_image","image_url":"data:image/png;base64,AAAA"}]},
                {"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"think"}],"encrypted_content":"sig"},
                {"type":"message","role":"assistant","content":[{"type":"output_text","text":"calling"}]},
                {"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},
                {"type":"function_call_output","call_id":"c1","output":"42"},
                {"type":"web_search_call","id":"ws"},
                {"role":"user","content":"again"}],
              "tools":[{"type":"function","name":"f","parameters":{"type":"object"}},{"type":"web_search"}],
              "tool_choice":{"type":"function","name":"f"},"max_output_tokens":50,"stream":true,
              "text":{"format":{"type":"json_schema","name":"out","schema":{"type":"object"},"strict":true}},
              "reasoning":{"effort":"high","summary":"auto"},"store":false,"metadata":{"k":"v"}}"#,
        )
        .unwrap();
        let chat = &request.chat;
        assert_eq!(chat.system, vec!["be brief", "dev note"]);
        assert_eq!(chat.messages.len(), 4);
        assert_eq!(chat.messages[1].role, Role::Assistant);
        assert_eq!(
            chat.messages[1].parts[0],
            Part::Thinking {
                text: "think".into(),
                signature: Some("sig".into())
            }
        );
        assert_eq!(chat.messages[1].parts.len(), 3);
        assert_eq!(chat.messages[2].role, Role::Tool);
        assert_eq!(chat.last_user_text().as_deref(), Some("again"));
        assert_eq!(chat.tools.len(), 1);
        assert_eq!(chat.tool_choice, Some(ToolChoice::Named("f".into())));
        assert_eq!(chat.params.max_tokens, Some(50));
        assert_eq!(chat.reasoning_effort.as_deref(), Some("high"));
        assert!(matches!(
            chat.response_format.as_deref(),
            Some(ResponseFormat::JsonSchema { name, strict: Some(true), .. }) if name == "out"
        ));
        assert!(!request.store);
        assert!(request.echo.as_str().contains(r#""metadata":{"k":"v"}"#));
        let text = decode_request(br#"{"input":"Hello world"}"#).unwrap();
        assert_eq!(text.chat.last_user_text().as_deref(), Some("Hello world"));
        assert_eq!(
            text.input_items,
            InputItems::Text(
                r#"[{"type":"message","role":"user","content":"Hello world"}]"#.into()
            )
        );
        let body = bytes::Bytes::from_static(br#"{"input": [{"role":"user","content":"x"}] }"#);
        let spanned = decode_request(&body).unwrap();
        assert_eq!(
            &spanned.input_items.bytes(&body)[..],
            br#"[{"role":"user","content":"x"}]"#
        );
        assert!(text.store);
    }

    #[test]
    fn names_what_was_wrong() {
        assert_eq!(err("{}"), "missing required field 'input'");
        assert_eq!(
            err(r#"{"input":5}"#),
            "input: expected a string or an array of input items"
        );
        assert_eq!(
            err(r#"{"input":[{"role":"wizard","content":"x"}]}"#),
            "input[0].role: unknown role 'wizard'; expected user, assistant, system or developer"
        );
        assert!(
            err(r#"{"input":[{"role":"user","content":5}]}"#)
                .starts_with("input[0].content: invalid type: integer `5`"),
            "{}",
            err(r#"{"input":[{"role":"user","content":5}]}"#)
        );
        assert_eq!(
            err(r#"{"input":[{"type":"function_call_output","output":"x"}]}"#),
            "missing required field 'input[0].call_id'"
        );
        assert_eq!(
            err(r#"{"input":[{"content":"x"}]}"#),
            "input[0]: expected an item with a `type` or a `role`"
        );
        assert!(err(r#"{"input":"x","tool_choice":"maybe"}"#).contains("unknown value 'maybe'"));
        assert!(err(r#"{"input":"x","background":true}"#).starts_with("background:"));
        assert!(
            err(r#"{"input":"x","tools":[{"type":"function","name":5}]}"#)
                .starts_with("tools[0].name: invalid type")
        );
        assert!(err(r#"{"input":"x","stream":"yes"}"#).starts_with("stream: invalid type"));
        assert_eq!(err("[]"), "request body must be a JSON object");
    }

    #[test]
    fn continuing_puts_the_stored_conversation_first() {
        let body = bytes::Bytes::from_static(
            br#"{"instructions":"new rules","input":[{"type":"function_call_output","call_id":"c1","output":"sunny"}]}"#,
        );
        let mut request = decode_request(&body).unwrap();
        let stored = r#"[{"role":"user","content":"weather?"},{"type":"function_call","call_id":"c1","name":"w","arguments":"{}"}]"#;
        let new_items = request.input_items.bytes(&body);
        let items = request
            .continue_from(stored, std::str::from_utf8(&new_items).unwrap())
            .unwrap();
        assert!(items.starts_with(r#"[{"role":"user","content":"weather?"}"#));
        assert!(items.ends_with(r#""output":"sunny"}]"#));
        let chat = &request.chat;
        assert_eq!(chat.system, vec!["new rules"]);
        assert_eq!(chat.messages.len(), 3);
        assert_eq!(chat.messages[2].role, Role::Tool);
        assert_eq!(join_items(&["[ ]", "[1]", " [2, 3] "]), "[1,2, 3]");
    }

    #[test]
    fn stored_entries_read_back() {
        let entry = stored_entry(
            Some("team-a"),
            br#"[{"role":"user","content":"hi"}]"#,
            br#"{"id":"resp_1","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"yo"}]}]}"#,
        );
        let view = StoredView::read(&entry).unwrap();
        assert_eq!(view.owner.as_deref(), Some("team-a"));
        let conversation = view.conversation();
        assert!(conversation.starts_with(r#"[{"role":"user""#));
        assert!(conversation.contains(r#""text":"yo""#));
    }

    #[test]
    fn response_objects_round_trip() {
        let response = ChatResponse {
            id: "resp_x".into(),
            model: "m".into(),
            created: Some(5),
            parts: vec![
                Part::Thinking {
                    text: "hmm".into(),
                    signature: Some("sig".into()),
                },
                Part::RedactedThinking { data: "zz".into() },
                Part::Text("a".into()),
                Part::Text("b".into()),
                Part::ToolCall(ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into(),
                }),
            ],
            finish_reason: Some(FinishReason::ToolCalls),
            stop_sequence: None,
            usage: Some(Usage {
                input_tokens: 10,
                output_tokens: 5,
                cache_read_tokens: 2,
                reasoning_tokens: 3,
                ..Usage::default()
            }),
        };
        let bytes = encode_response_bytes(&response, 0, "");
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["object"], "response");
        assert_eq!(value["status"], "completed");
        assert_eq!(value["output"][2]["id"], "msg_x_2");
        assert_eq!(value["output"][2]["content"][0]["text"], "ab");
        assert_eq!(value["output"][3]["call_id"], "call_1");
        assert_eq!(value["usage"]["total_tokens"], 15);
        assert_eq!(value["tools"], serde_json::json!([]));
        let back = decode_response(&bytes).unwrap();
        assert_eq!(back.usage, response.usage);
        assert_eq!(back.parts[0], response.parts[0]);
        assert_eq!(back.parts[1], response.parts[1]);
        assert_eq!(back.parts[2], Part::Text("ab".into()));
        assert_eq!(back.finish_reason, Some(FinishReason::ToolCalls));
        let truncated = ChatResponse {
            finish_reason: Some(FinishReason::Length),
            ..response
        };
        let value: Value =
            serde_json::from_slice(&encode_response_bytes(&truncated, 0, "")).unwrap();
        assert_eq!(value["status"], "incomplete");
        assert_eq!(value["incomplete_details"]["reason"], "max_output_tokens");
    }

    #[test]
    fn pretty_printed_requests_echo_on_one_line() {
        let request =
            decode_request(b"{\n  \"input\": \"x\",\n  \"tools\": [\n    {\"type\": \"function\", \"name\": \"f\"}\n  ]\n}")
                .unwrap();
        assert!(!request.echo.as_str().contains('\n'));
        let value: Value = serde_json::from_str(&format!("{{{}}}", request.echo.as_str())).unwrap();
        assert_eq!(value["tools"][0]["name"], "f");
        assert_eq!(value["store"], true);
    }
}

#[cfg(test)]
mod writer_tests {
    use super::oracle::{write_items_serde, write_response_serde};
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        "(\\PC|[\"\\\\\n\\x01\\x7f]){0,12}"
    }

    fn part() -> impl Strategy<Value = Part> {
        prop_oneof![
            4 => text().prop_map(Part::Text),
            2 => (text(), text(), text()).prop_map(|(id, name, arguments)| Part::ToolCall(ToolCall { id, name, arguments })),
            1 => (text(), proptest::option::of(text())).prop_map(|(text, signature)| Part::Thinking { text, signature }),
            1 => text().prop_map(|data| Part::RedactedThinking { data }),
        ]
    }

    fn usage() -> impl Strategy<Value = Usage> {
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(input_tokens, output_tokens, cache_read_tokens, reasoning_tokens)| Usage {
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_creation_tokens: 0,
                reasoning_tokens,
            },
        )
    }

    /// [`encode_response_bytes`] as it was written through serde (ids through `format!`).
    fn encode_response_serde(response: &ChatResponse, created: i64, echo: &str) -> Vec<u8> {
        let items = items_of(&response.parts);
        let own = response.id.strip_prefix("resp_").unwrap_or(&response.id);
        let ids: Vec<String> = items
            .iter()
            .enumerate()
            .map(|(index, item)| format!("{}_{own}_{index}", item.prefix()))
            .collect();
        let (status, incomplete_reason) = status_of(response.finish_reason);
        let item_status = if status == "incomplete" {
            "incomplete"
        } else {
            "completed"
        };
        let head = ResponseHead {
            id: &response.id,
            created_at: response.created.unwrap_or(created),
            status,
            error: None,
            incomplete_reason,
            model: &response.model,
            echo,
        };
        let mut out = Vec::new();
        write_response_serde(
            &mut out,
            &head,
            |out| {
                write_items_serde(
                    out,
                    items
                        .iter()
                        .zip(&ids)
                        .map(|(item, id)| item.out(id, item_status, true)),
                );
            },
            Some(&response.usage.unwrap_or_default()),
        );
        out
    }

    proptest! {
        /// A whole answer is byte for byte what the serde form wrote.
        #[test]
        fn response_is_the_serde_form(
            id in text(),
            model in text(),
            parts in proptest::collection::vec(part(), 0..5),
            finish in proptest::option::of(prop_oneof![
                Just(FinishReason::Stop), Just(FinishReason::Length), Just(FinishReason::ContentFilter), Just(FinishReason::ToolCalls),
            ]),
            usage in proptest::option::of(usage()),
            created in proptest::option::of(any::<i64>()),
            echo in prop_oneof![Just(String::new()), Just(r#""instructions":"x","metadata":{}"#.to_owned())],
        ) {
            let response = ChatResponse {
                id: format!("resp_{id}"),
                model,
                created,
                parts,
                finish_reason: finish,
                stop_sequence: None,
                usage,
            };
            let written = encode_response_bytes(&response, 7, &echo);
            let oracle = encode_response_serde(&response, 7, &echo);
            prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(oracle).unwrap());
        }

        /// Heads with an error or an incomplete reason, items as they start, usage or none.
        #[test]
        fn head_and_items_are_the_serde_form(
            id in text(),
            model in text(),
            error in proptest::option::of((text(), text())),
            incomplete in proptest::option::of(prop_oneof![Just("max_output_tokens"), Just("content_filter")]),
            status in prop_oneof![Just("in_progress"), Just("failed"), Just("completed")],
            parts in proptest::collection::vec(part(), 0..4),
            full in any::<bool>(),
            usage in proptest::option::of(usage()),
        ) {
            let head = ResponseHead {
                id: &id,
                created_at: -3,
                status,
                error: error.as_ref().map(|(code, message)| (code.as_str(), message.as_str())),
                incomplete_reason: incomplete,
                model: &model,
                echo: "",
            };
            let items = items_of(&parts);
            let ids: Vec<String> = (0..items.len()).map(|index| item_id("x", &id, index)).collect();
            let output = |write: fn(&mut Vec<u8>, Vec<ItemOut<'_>>)| {
                let items = &items;
                let ids = &ids;
                move |out: &mut Vec<u8>| {
                    write(out, items.iter().zip(ids).map(|(item, id)| item.out(id, status, full)).collect());
                }
            };
            let mut written = Vec::new();
            write_response(&mut written, &head, output(|out, items| write_items(out, items)), usage.as_ref());
            let mut oracle = Vec::new();
            write_response_serde(&mut oracle, &head, output(|out, items| write_items_serde(out, items)), usage.as_ref());
            prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(oracle).unwrap());
        }

        #[test]
        fn item_ids_are_the_formatted_ones(id in text(), index in any::<usize>()) {
            let own = id.strip_prefix("resp_").unwrap_or(&id).to_owned();
            prop_assert_eq!(item_id("msg", &id, index), format!("msg_{own}_{index}"));
        }

        #[test]
        fn float_text_is_display(n in prop_oneof![any::<f64>(), Just(0.0), Just(-0.0), Just(2.0), Just(1e15), Just(-7.0)]) {
            prop_assert_eq!(float_text(n), n.to_string());
        }
    }
}
