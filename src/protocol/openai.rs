//! OpenAI wire format: request decoding into canonical types and response/chunk encoding.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;

use super::{
    ApiRequest, ChatRequest, ChatResponse, CompletionRequest, DecodeError, EmbeddingsRequest,
    Endpoint, FinishReason, Image, Message, Part, RawJson, Role, SamplingParams, Tool, ToolCall,
    ToolChoice, ToolResult, Usage,
};

/// Decode an OpenAI-format request body for `endpoint` into its canonical form.
pub fn decode_request(endpoint: Endpoint, body: &[u8]) -> Result<ApiRequest, DecodeError> {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages => decode_chat(body).map(ApiRequest::Chat),
        Endpoint::Completions => decode_completion(body).map(ApiRequest::Completion),
        Endpoint::Embeddings => decode_embeddings(body).map(ApiRequest::Embeddings),
        Endpoint::Responses => super::responses::decode_request(body)
            .map(|request| ApiRequest::Responses(Box::new(request))),
    }
}

/// Decode a `/v1/chat/completions` body.
pub fn decode_chat(body: &[u8]) -> Result<ChatRequest, DecodeError> {
    // The exact reader pays off on the small requests most clients send; a large body is most often
    // an agent's turn with tools, which it would read to the end only to give up on.
    if body.len() <= super::exact_request::MAX_BODY
        && let Some(request) = super::exact_request::chat(body)
    {
        return Ok(request);
    }
    decode_chat_typed(body)
}

/// The typed path of [`decode_chat`]: it defines the semantics and names what is wrong.
pub(crate) fn decode_chat_typed(body: &[u8]) -> Result<ChatRequest, DecodeError> {
    let wire: ChatWire = parse(body)?;
    let messages = match wire.messages {
        None => return Err(missing("messages")),
        Some(messages) if messages.is_empty() => {
            return Err(DecodeError::new(
                "'messages' must be a non-empty array of messages",
                Some("messages".into()),
            ));
        }
        Some(messages) => messages,
    };
    let mut request = ChatRequest {
        model: wire.model,
        stream: wire.stream.unwrap_or(false),
        include_usage: wire
            .stream_options
            .as_ref()
            .and_then(|options| options.include_usage)
            .unwrap_or(false),
        params: SamplingParams {
            max_tokens: wire.max_completion_tokens.or(wire.max_tokens),
            temperature: wire.temperature,
            top_p: wire.top_p,
            top_k: wire.top_k,
            stop: stop_list(wire.stop.as_ref(), "stop")?,
            seed: wire.seed,
            presence_penalty: wire.presence_penalty,
            frequency_penalty: wire.frequency_penalty,
            n: wire.n,
        },
        user: wire.user,
        parallel_tool_calls: wire.parallel_tool_calls,
        ..ChatRequest::default()
    };
    let mut leading_system = true;
    for (index, message) in messages.into_iter().enumerate() {
        let role = match message.role.as_deref() {
            Some("system" | "developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("tool" | "function") => Role::Tool,
            Some(other) => {
                return Err(DecodeError::new(
                    format!(
                        "messages[{index}].role: unknown role '{other}'; expected system, developer, user, assistant or tool"
                    ),
                    Some(format!("messages[{index}].role")),
                ));
            }
            None => return Err(missing(&format!("messages[{index}].role"))),
        };
        let mut parts = Vec::new();
        let thinking_blocks = message.thinking_blocks.unwrap_or_default();
        if thinking_blocks.is_empty() {
            if let Some(reasoning) = message
                .reasoning_content
                .or(message.reasoning)
                .filter(|text| !text.is_empty())
            {
                parts.push(Part::Thinking {
                    text: reasoning,
                    signature: None,
                });
            }
        } else {
            // `thinking_blocks` (a LiteLLM-style extension we also emit) carries Anthropic signatures and
            // redacted thinking, which plain `reasoning_content` cannot; it wins when both are present.
            parts.extend(
                thinking_blocks
                    .into_iter()
                    .filter_map(ThinkingBlockWire::into_part),
            );
        }
        if role == Role::Tool {
            let text = message.content.map(Content::into_text).unwrap_or_default();
            parts.push(Part::ToolResult(ToolResult {
                tool_call_id: message.tool_call_id.unwrap_or_default(),
                content: text,
                is_error: false,
            }));
        } else if let Some(content) = message.content {
            parts.extend(content.into_parts());
        }
        for call in message.tool_calls.unwrap_or_default() {
            parts.push(Part::ToolCall(ToolCall {
                id: call.id.unwrap_or_default(),
                name: call.function.name,
                arguments: call.function.arguments.unwrap_or_default(),
            }));
        }
        if role == Role::System && leading_system {
            request.system.push(
                Message {
                    role,
                    parts,
                    name: None,
                }
                .text(),
            );
            continue;
        }
        leading_system = false;
        request.messages.push(Message {
            role,
            parts,
            name: message.name,
        });
    }
    for tool in wire.tools.unwrap_or_default() {
        request.tools.push(Tool {
            name: tool.function.name,
            description: tool.function.description,
            parameters: tool
                .function
                .parameters
                .unwrap_or_else(RawJson::empty_object_schema),
        });
    }
    request.tool_choice = match wire.tool_choice {
        None | Some(Value::Null) => None,
        Some(Value::String(choice)) => Some(match choice.as_str() {
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
        Some(other) => match other.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(ToolChoice::Named(name.to_owned())),
            None => {
                return Err(DecodeError::new(
                    "tool_choice: expected {\"type\":\"function\",\"function\":{\"name\":…}}",
                    Some("tool_choice".into()),
                ));
            }
        },
    };
    Ok(request)
}

/// Decode a legacy `/v1/completions` body.
pub(crate) fn decode_completion(body: &[u8]) -> Result<CompletionRequest, DecodeError> {
    let wire: CompletionWire = parse(body)?;
    let prompt = match wire.prompt {
        None => return Err(missing("prompt")),
        Some(prompt) => text_list(&prompt, "prompt")?,
    };
    Ok(CompletionRequest {
        model: wire.model,
        prompt,
        stream: wire.stream.unwrap_or(false),
        params: SamplingParams {
            max_tokens: wire.max_tokens,
            temperature: wire.temperature,
            top_p: wire.top_p,
            top_k: wire.top_k,
            stop: stop_list(wire.stop.as_ref(), "stop")?,
            seed: wire.seed,
            presence_penalty: wire.presence_penalty,
            frequency_penalty: wire.frequency_penalty,
            n: wire.n,
        },
    })
}

/// Decode a `/v1/embeddings` body.
pub(crate) fn decode_embeddings(body: &[u8]) -> Result<EmbeddingsRequest, DecodeError> {
    let wire: EmbeddingsWire = parse(body)?;
    let input = match wire.input {
        None => return Err(missing("input")),
        Some(input) => text_list(&input, "input")?,
    };
    if input.is_empty() {
        return Err(DecodeError::new(
            "'input' must not be empty",
            Some("input".into()),
        ));
    }
    Ok(EmbeddingsRequest {
        model: wire.model,
        input,
    })
}

pub(crate) fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    // The body is read as text checked once as a whole (a few GB/s): from bytes, serde_json checks
    // every string's UTF-8 again on its own, which cost a fifth of the decode of a 250 KB agent
    // request — and would not check the strings of ignored fields at all.
    let text = std::str::from_utf8(body).map_err(|error| {
        DecodeError::new(
            format!(
                "request body is not valid UTF-8 (invalid byte at offset {})",
                error.valid_up_to()
            ),
            None,
        )
    })?;
    // Fast path: a plain decode. Only a body that fails is decoded again with path tracking, which
    // costs several times more and is needed just to name the offending field.
    if let Ok(value) = serde_json::from_str::<T>(text) {
        return Ok(value);
    }
    let trimmed = body.iter().position(|b| !b.is_ascii_whitespace());
    if trimmed.is_none() {
        return Err(DecodeError::new(
            "request body is empty; expected a JSON object",
            None,
        ));
    }
    if let Some(start) = trimmed
        && body[start] != b'{'
    {
        if serde_json::from_slice::<de::IgnoredAny>(body).is_ok() {
            return Err(DecodeError::new("request body must be a JSON object", None));
        }
        let error = serde_json::from_slice::<de::IgnoredAny>(body)
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        return Err(DecodeError::new(
            format!("invalid JSON body: {error}"),
            None,
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            DecodeError::new(format!("invalid JSON body: {inner}"), None)
        } else if path.is_empty() || path == "." {
            DecodeError::new(format!("invalid request body: {inner}"), None)
        } else {
            DecodeError::new(format!("{path}: {inner}"), Some(path))
        }
    })?;
    deserializer
        .end()
        .map_err(|error| DecodeError::new(format!("invalid JSON body: {error}"), None))?;
    Ok(value)
}

pub(crate) fn missing(field: &str) -> DecodeError {
    DecodeError::new(
        format!("missing required field '{field}'"),
        Some(field.to_owned()),
    )
}

fn stop_list(stop: Option<&Value>, field: &str) -> Result<Vec<String>, DecodeError> {
    match stop {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(value) => text_list(value, field),
    }
}

/// A string, or an array of strings (token arrays are rendered as their numbers).
fn text_list(value: &Value, field: &str) -> Result<Vec<String>, DecodeError> {
    match value {
        Value::String(text) => Ok(vec![text.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                Value::Number(number) => Ok(number.to_string()),
                Value::Array(tokens) => Ok(tokens
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")),
                _ => Err(DecodeError::new(
                    format!("{field}: expected a string or an array of strings"),
                    Some(field.to_owned()),
                )),
            })
            .collect(),
        _ => Err(DecodeError::new(
            format!("{field}: expected a string or an array of strings"),
            Some(field.to_owned()),
        )),
    }
}

#[derive(Deserialize)]
struct ChatWire {
    model: Option<String>,
    messages: Option<Vec<MessageWire>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptionsWire>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u64>,
    stop: Option<Value>,
    seed: Option<i64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    n: Option<u64>,
    tools: Option<Vec<ToolWire>>,
    tool_choice: Option<Value>,
    user: Option<String>,
    parallel_tool_calls: Option<bool>,
}

#[derive(Deserialize)]
struct StreamOptionsWire {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct MessageWire {
    role: Option<String>,
    content: Option<Content>,
    name: Option<String>,
    tool_calls: Option<Vec<ToolCallWire>>,
    tool_call_id: Option<String>,
    reasoning_content: Option<String>,
    reasoning: Option<String>,
    thinking_blocks: Option<Vec<ThinkingBlockWire>>,
}

/// One entry of the `thinking_blocks` extension on assistant messages and deltas.
#[derive(Deserialize)]
pub(crate) struct ThinkingBlockWire {
    #[serde(rename = "type")]
    kind: Option<String>,
    thinking: Option<String>,
    signature: Option<String>,
    data: Option<String>,
}

impl ThinkingBlockWire {
    fn into_part(self) -> Option<Part> {
        if self.kind.as_deref() == Some("redacted_thinking") {
            return self.data.map(|data| Part::RedactedThinking { data });
        }
        Some(Part::Thinking {
            text: self.thinking.unwrap_or_default(),
            signature: self.signature.filter(|signature| !signature.is_empty()),
        })
    }
}

#[derive(Deserialize)]
struct ToolCallWire {
    id: Option<String>,
    function: FunctionCallWire,
}

#[derive(Deserialize)]
struct FunctionCallWire {
    name: String,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ToolWire {
    function: FunctionWire,
}

#[derive(Deserialize)]
struct FunctionWire {
    name: String,
    description: Option<String>,
    parameters: Option<RawJson>,
}

#[derive(Deserialize)]
struct CompletionWire {
    model: Option<String>,
    prompt: Option<Value>,
    stream: Option<bool>,
    max_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u64>,
    stop: Option<Value>,
    seed: Option<i64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    n: Option<u64>,
}

#[derive(Deserialize)]
struct EmbeddingsWire {
    model: Option<String>,
    input: Option<Value>,
}

/// Message content: a string or an array of typed parts.
enum Content {
    Text(String),
    Parts(Vec<PartWire>),
}

#[derive(Deserialize)]
struct PartWire {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    image_url: Option<Value>,
}

impl Content {
    fn into_text(self) -> String {
        match self {
            Content::Text(text) => text,
            Content::Parts(parts) => parts
                .into_iter()
                .filter_map(|part| part.text)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    fn into_parts(self) -> Vec<Part> {
        match self {
            Content::Text(text) => vec![Part::Text(text)],
            Content::Parts(parts) => parts
                .into_iter()
                .filter_map(|part| match part.kind.as_str() {
                    "text" | "input_text" => part.text.map(Part::Text),
                    "image_url" => {
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
}

/// `data:` URLs carry base64 images; anything else is a plain URL.
pub(crate) fn image_from_url(url: String) -> Image {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media_type, data)) = rest.split_once(";base64,")
    {
        return Image::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        };
    }
    Image::Url(url)
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Content, E> {
                Ok(Content::Text(value.to_owned()))
            }
            fn visit_string<E: de::Error>(self, value: String) -> Result<Content, E> {
                Ok(Content::Text(value))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element::<PartWire>()? {
                    parts.push(part);
                }
                Ok(Content::Parts(parts))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

// === Encoding ===

/// OpenAI `finish_reason` for a canonical reason.
pub(crate) fn finish_reason_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::StopSequence => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

#[derive(Serialize)]
pub(crate) struct UsageWire {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl From<Usage> for UsageWire {
    fn from(usage: Usage) -> Self {
        UsageWire {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: usage.input_tokens + usage.output_tokens,
        }
    }
}

/// A complete assistant text answer, rendered in the shape of each endpoint.
#[derive(Debug, Clone)]
pub struct TextAnswer<'a> {
    pub id: &'a str,
    pub model: &'a str,
    pub created: i64,
    pub text: &'a str,
    pub finish_reason: FinishReason,
    pub usage: Usage,
}

/// Render a `chat.completion` object.
pub(crate) fn chat_completion(answer: &TextAnswer<'_>) -> Value {
    serde_json::json!({
        "id": answer.id,
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.text},
            "logprobs": null,
            "finish_reason": finish_reason_str(answer.finish_reason),
        }],
        "usage": UsageWire::from(answer.usage),
    })
}

/// Render a `text_completion` object.
pub fn text_completion(answer: &TextAnswer<'_>) -> Value {
    serde_json::json!({
        "id": answer.id,
        "object": "text_completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [{
            "index": 0,
            "text": answer.text,
            "logprobs": null,
            "finish_reason": finish_reason_str(answer.finish_reason),
        }],
        "usage": UsageWire::from(answer.usage),
    })
}

/// Render the SSE `data:` payloads of a streamed chat answer split into `pieces`: the role in the first
/// chunk, one chunk per piece, an empty delta with the finish reason, then a usage chunk when asked.
pub(crate) fn chat_chunks(
    answer: &TextAnswer<'_>,
    pieces: &[&str],
    include_usage: bool,
) -> Vec<Value> {
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut chunk = serde_json::json!({
            "id": answer.id,
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": answer.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage && let Some(object) = chunk.as_object_mut() {
            object.insert("usage".into(), Value::Null);
        }
        chunk
    };
    let mut out = Vec::with_capacity(pieces.len() + 3);
    out.push(chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
    ));
    for piece in pieces {
        out.push(chunk(serde_json::json!({"content": piece}), None));
    }
    out.push(chunk(
        serde_json::json!({}),
        Some(finish_reason_str(answer.finish_reason)),
    ));
    if include_usage {
        out.push(serde_json::json!({
            "id": answer.id,
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": answer.model,
            "choices": [],
            "usage": UsageWire::from(answer.usage),
        }));
    }
    out
}

/// Render the SSE payloads of a streamed text completion.
pub(crate) fn text_completion_chunks(answer: &TextAnswer<'_>, pieces: &[&str]) -> Vec<Value> {
    let chunk = |text: &str, finish: Option<&str>| {
        serde_json::json!({
            "id": answer.id,
            "object": "text_completion",
            "created": answer.created,
            "model": answer.model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut out: Vec<Value> = pieces.iter().map(|piece| chunk(piece, None)).collect();
    out.push(chunk("", Some(finish_reason_str(answer.finish_reason))));
    out
}

/// Render an embeddings list.
pub fn embeddings(model: &str, vectors: &[Vec<f32>], prompt_tokens: u64) -> Value {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| serde_json::json!({"object": "embedding", "index": index, "embedding": vector}))
        .collect();
    serde_json::json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
}

/// Render an OpenAI error body.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    serde_json::json!({
        "error": {"message": message, "type": kind, "param": param, "code": code}
    })
}

// === Conversion to and from the canonical model (requests to a backend, complete responses) ===

/// Canonical reason for an OpenAI `finish_reason`; unknown values count as a normal stop.
pub fn finish_reason_from(reason: &str) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// OpenAI `usage` object; `prompt_tokens_details.cached_tokens` only when some were read from cache
/// (cache writes have no OpenAI field and are only part of `prompt_tokens`).
pub(crate) fn usage_json(usage: &Usage) -> Value {
    serde_json::to_value(UsageOut::new(usage)).unwrap_or_default()
}

/// Canonical usage from an OpenAI `usage` object.
pub(crate) fn usage_from(value: &Value) -> Usage {
    // `get` chains, not `Value::pointer`, which allocates for every step of the path.
    let count = |value: Option<&Value>| value.and_then(Value::as_u64).unwrap_or(0);
    let inner = |outer: &str, key: &str| count(value.get(outer).and_then(|v| v.get(key)));
    Usage {
        input_tokens: count(value.get("prompt_tokens")),
        output_tokens: count(value.get("completion_tokens")),
        cache_read_tokens: inner("prompt_tokens_details", "cached_tokens"),
        cache_creation_tokens: 0,
        reasoning_tokens: inner("completion_tokens_details", "reasoning_tokens"),
    }
}

/// Render a canonical request as an OpenAI chat completions body, written straight to bytes.
///
/// Thinking is not sent (OpenAI-compatible servers reject or ignore reasoning in input messages), tool
/// results inside a user turn become `tool` messages ahead of the turn's remaining content, and a
/// streamed request always asks for usage so accounting works whatever the client asked. The body is
/// the one [`encode_request`] (the `Value` form, kept as the tests' oracle) serializes to, member for
/// member and in the same order; a tool's parameter schema is written as its text came.
pub(crate) fn encode_request_bytes(req: &ChatRequest, model: Option<&str>) -> Vec<u8> {
    use super::json_text::{write_str, write_u64};
    let text_len: usize = req.system.iter().map(String::len).sum::<usize>()
        + req
            .messages
            .iter()
            .flat_map(|message| &message.parts)
            .map(|part| match part {
                Part::Text(text) => text.len(),
                Part::ToolCall(call) => call.arguments.len() + 64,
                Part::ToolResult(result) => result.content.len() + 64,
                _ => 64,
            })
            .sum::<usize>()
        + req
            .tools
            .iter()
            .map(|tool| tool.parameters.get().len() + 128)
            .sum::<usize>();
    let mut out = Vec::with_capacity(256 + text_len + 48 * req.messages.len());
    out.push(b'{');
    if let Some(model) = model.or(req.model.as_deref()) {
        out.extend_from_slice(br#""model":"#);
        write_str(&mut out, model);
        out.push(b',');
    }
    out.extend_from_slice(br#""messages":["#);
    let mut first = true;
    let mut next = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    for system in &req.system {
        next(&mut out);
        out.extend_from_slice(br#"{"role":"system","content":"#);
        write_str(&mut out, system);
        out.push(b'}');
    }
    let mut content: Vec<&Part> = Vec::new();
    let mut tool_calls: Vec<&ToolCall> = Vec::new();
    let mut text = String::new();
    for message in &req.messages {
        content.clear();
        tool_calls.clear();
        text.clear();
        for part in &message.parts {
            match part {
                Part::ToolResult(result) => {
                    next(&mut out);
                    out.extend_from_slice(br#"{"role":"tool","tool_call_id":"#);
                    write_str(&mut out, &result.tool_call_id);
                    out.extend_from_slice(br#","content":"#);
                    write_str(&mut out, &result.content);
                    out.push(b'}');
                }
                Part::ToolCall(call) => tool_calls.push(call),
                Part::Text(piece) if message.role == Role::Assistant => {
                    if !text.is_empty() && !piece.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(piece);
                }
                Part::Text(_) | Part::Image(_) => content.push(part),
                Part::Thinking { .. } | Part::RedactedThinking { .. } => {}
            }
        }
        match message.role {
            Role::Tool => continue,
            Role::Assistant => {
                if text.is_empty() && tool_calls.is_empty() {
                    continue;
                }
                next(&mut out);
                out.extend_from_slice(br#"{"role":"assistant","content":"#);
                if text.is_empty() {
                    out.extend_from_slice(b"null");
                } else {
                    write_str(&mut out, &text);
                }
                if !tool_calls.is_empty() {
                    out.extend_from_slice(br#","tool_calls":["#);
                    for (index, call) in tool_calls.iter().enumerate() {
                        if index > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(br#"{"id":"#);
                        write_str(&mut out, &call.id);
                        out.extend_from_slice(br#","type":"function","function":{"name":"#);
                        write_str(&mut out, &call.name);
                        out.extend_from_slice(br#","arguments":"#);
                        write_str(&mut out, &call.arguments);
                        out.extend_from_slice(b"}}");
                    }
                    out.push(b']');
                }
            }
            Role::System | Role::User => {
                if content.is_empty() {
                    continue;
                }
                next(&mut out);
                out.extend_from_slice(br#"{"role":""#);
                out.extend_from_slice(message.role.as_str().as_bytes());
                out.extend_from_slice(br#"","content":"#);
                match content.as_slice() {
                    [Part::Text(only)] => write_str(&mut out, only),
                    parts => {
                        out.push(b'[');
                        let mut first_part = true;
                        for part in parts {
                            let start = |out: &mut Vec<u8>, first_part: &mut bool| {
                                if !std::mem::take(first_part) {
                                    out.push(b',');
                                }
                            };
                            match part {
                                Part::Text(text) => {
                                    start(&mut out, &mut first_part);
                                    out.extend_from_slice(br#"{"type":"text","text":"#);
                                    write_str(&mut out, text);
                                    out.push(b'}');
                                }
                                Part::Image(Image::Url(url)) => {
                                    start(&mut out, &mut first_part);
                                    out.extend_from_slice(
                                        br#"{"type":"image_url","image_url":{"url":"#,
                                    );
                                    write_str(&mut out, url);
                                    out.extend_from_slice(b"}}");
                                }
                                Part::Image(Image::Base64 { media_type, data }) => {
                                    start(&mut out, &mut first_part);
                                    out.extend_from_slice(
                                        br#"{"type":"image_url","image_url":{"url":"#,
                                    );
                                    write_str(
                                        &mut out,
                                        &format!("data:{media_type};base64,{data}"),
                                    );
                                    out.extend_from_slice(b"}}");
                                }
                                _ => {}
                            }
                        }
                        out.push(b']');
                    }
                }
            }
        }
        if let Some(name) = &message.name {
            out.extend_from_slice(br#","name":"#);
            write_str(&mut out, name);
        }
        out.push(b'}');
    }
    out.push(b']');
    let params = &req.params;
    let key = |out: &mut Vec<u8>, key: &str| {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
    };
    // Floats as `serde_json` writes them (non-finite ones as `null`, as a `Value` holds them).
    let number = |out: &mut Vec<u8>, value: &f64| {
        if serde_json::to_writer(&mut *out, value).is_err() {
            out.extend_from_slice(b"null");
        }
    };
    if let Some(max_tokens) = params.max_tokens {
        key(&mut out, "max_tokens");
        write_u64(&mut out, max_tokens);
    }
    if let Some(temperature) = params.temperature {
        key(&mut out, "temperature");
        number(&mut out, &temperature);
    }
    if let Some(top_p) = params.top_p {
        key(&mut out, "top_p");
        number(&mut out, &top_p);
    }
    if let Some(top_k) = params.top_k {
        key(&mut out, "top_k");
        write_u64(&mut out, top_k);
    }
    if !params.stop.is_empty() {
        key(&mut out, "stop");
        out.push(b'[');
        for (index, stop) in params.stop.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            write_str(&mut out, stop);
        }
        out.push(b']');
    }
    if let Some(seed) = params.seed {
        key(&mut out, "seed");
        super::json_text::write_i64(&mut out, seed);
    }
    if let Some(penalty) = params.presence_penalty {
        key(&mut out, "presence_penalty");
        number(&mut out, &penalty);
    }
    if let Some(penalty) = params.frequency_penalty {
        key(&mut out, "frequency_penalty");
        number(&mut out, &penalty);
    }
    if let Some(n) = params.n {
        key(&mut out, "n");
        write_u64(&mut out, n);
    }
    if req.stream {
        out.extend_from_slice(br#","stream":true,"stream_options":{"include_usage":true}"#);
    }
    if !req.tools.is_empty() {
        key(&mut out, "tools");
        out.push(b'[');
        for (index, tool) in req.tools.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"type":"function","function":{"name":"#);
            write_str(&mut out, &tool.name);
            if let Some(description) = &tool.description {
                out.extend_from_slice(br#","description":"#);
                write_str(&mut out, description);
            }
            out.extend_from_slice(br#","parameters":"#);
            out.extend_from_slice(tool.parameters.get().as_bytes());
            out.extend_from_slice(b"}}");
        }
        out.push(b']');
        if let Some(choice) = &req.tool_choice {
            key(&mut out, "tool_choice");
            match choice {
                ToolChoice::Auto => out.extend_from_slice(br#""auto""#),
                ToolChoice::None => out.extend_from_slice(br#""none""#),
                ToolChoice::Required => out.extend_from_slice(br#""required""#),
                ToolChoice::Named(name) => {
                    out.extend_from_slice(br#"{"type":"function","function":{"name":"#);
                    write_str(&mut out, name);
                    out.extend_from_slice(b"}}");
                }
            }
        }
        if let Some(parallel) = req.parallel_tool_calls {
            key(&mut out, "parallel_tool_calls");
            out.extend_from_slice(if parallel { b"true" } else { b"false" });
        }
    }
    if let Some(user) = &req.user {
        key(&mut out, "user");
        write_str(&mut out, user);
    }
    if let Some(effort) = &req.reasoning_effort {
        key(&mut out, "reasoning_effort");
        write_str(&mut out, effort);
    }
    if let Some(format) = &req.response_format {
        key(&mut out, "response_format");
        // Rare and small: through its `Value`, which always serializes.
        if serde_json::to_writer(&mut out, &response_format_json(format)).is_err() {
            out.extend_from_slice(b"null");
        }
    }
    out.push(b'}');
    out
}

/// Render a canonical request as an OpenAI chat completions body, as a JSON tree: the definition
/// [`encode_request_bytes`] is held to.
///
/// Thinking is not sent (OpenAI-compatible servers reject or ignore reasoning in input messages), tool
/// results inside a user turn become `tool` messages ahead of the turn's remaining content, and a
/// streamed request always asks for usage so accounting works whatever the client asked.
#[cfg(test)]
pub fn encode_request(req: &ChatRequest, model: Option<&str>) -> Value {
    use serde_json::json;
    let mut messages: Vec<Value> = Vec::with_capacity(req.system.len() + req.messages.len());
    for system in &req.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &req.messages {
        let mut content: Vec<&Part> = Vec::with_capacity(message.parts.len());
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for part in &message.parts {
            match part {
                Part::ToolResult(result) => messages.push(json!({
                    "role": "tool",
                    "tool_call_id": result.tool_call_id,
                    "content": result.content,
                })),
                Part::ToolCall(call) => tool_calls.push(json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                })),
                Part::Text(piece) if message.role == Role::Assistant => {
                    if !text.is_empty() && !piece.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(piece);
                }
                Part::Text(_) | Part::Image(_) => content.push(part),
                Part::Thinking { .. } | Part::RedactedThinking { .. } => {}
            }
        }
        let mut object = serde_json::Map::new();
        match message.role {
            Role::Tool => continue,
            Role::Assistant => {
                if text.is_empty() && tool_calls.is_empty() {
                    continue;
                }
                object.insert("role".into(), json!("assistant"));
                object.insert(
                    "content".into(),
                    if text.is_empty() {
                        Value::Null
                    } else {
                        json!(text)
                    },
                );
                if !tool_calls.is_empty() {
                    object.insert("tool_calls".into(), Value::Array(tool_calls));
                }
            }
            Role::System | Role::User => {
                let rendered = match content.as_slice() {
                    [] => continue,
                    [Part::Text(only)] => json!(only),
                    parts => Value::Array(
                        parts
                            .iter()
                            .filter_map(|part| match part {
                                Part::Text(text) => Some(json!({"type": "text", "text": text})),
                                Part::Image(Image::Url(url)) => {
                                    Some(json!({"type": "image_url", "image_url": {"url": url}}))
                                }
                                Part::Image(Image::Base64 { media_type, data }) => Some(json!({
                                    "type": "image_url",
                                    "image_url": {"url": format!("data:{media_type};base64,{data}")},
                                })),
                                _ => None,
                            })
                            .collect(),
                    ),
                };
                object.insert("role".into(), json!(message.role.as_str()));
                object.insert("content".into(), rendered);
            }
        }
        if let Some(name) = &message.name {
            object.insert("name".into(), json!(name));
        }
        messages.push(Value::Object(object));
    }
    let mut body = serde_json::Map::new();
    if let Some(model) = model.or(req.model.as_deref()) {
        body.insert("model".into(), json!(model));
    }
    body.insert("messages".into(), Value::Array(messages));
    let params = &req.params;
    let mut put = |key: &str, value: Value| {
        body.insert(key.into(), value);
    };
    if let Some(max_tokens) = params.max_tokens {
        put("max_tokens", json!(max_tokens));
    }
    if let Some(temperature) = params.temperature {
        put("temperature", json!(temperature));
    }
    if let Some(top_p) = params.top_p {
        put("top_p", json!(top_p));
    }
    if let Some(top_k) = params.top_k {
        put("top_k", json!(top_k));
    }
    if !params.stop.is_empty() {
        put("stop", json!(params.stop));
    }
    if let Some(seed) = params.seed {
        put("seed", json!(seed));
    }
    if let Some(penalty) = params.presence_penalty {
        put("presence_penalty", json!(penalty));
    }
    if let Some(penalty) = params.frequency_penalty {
        put("frequency_penalty", json!(penalty));
    }
    if let Some(n) = params.n {
        put("n", json!(n));
    }
    if req.stream {
        put("stream", json!(true));
        put("stream_options", json!({"include_usage": true}));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|tool| {
                let mut function = serde_json::Map::new();
                function.insert("name".into(), json!(tool.name));
                if let Some(description) = &tool.description {
                    function.insert("description".into(), json!(description));
                }
                function.insert("parameters".into(), tool.parameters.to_value());
                json!({"type": "function", "function": function})
            })
            .collect();
        put("tools", Value::Array(tools));
        if let Some(choice) = &req.tool_choice {
            put(
                "tool_choice",
                match choice {
                    ToolChoice::Auto => json!("auto"),
                    ToolChoice::None => json!("none"),
                    ToolChoice::Required => json!("required"),
                    ToolChoice::Named(name) => {
                        json!({"type": "function", "function": {"name": name}})
                    }
                },
            );
        }
        if let Some(parallel) = req.parallel_tool_calls {
            put("parallel_tool_calls", json!(parallel));
        }
    }
    if let Some(user) = &req.user {
        put("user", json!(user));
    }
    if let Some(effort) = &req.reasoning_effort {
        put("reasoning_effort", json!(effort));
    }
    if let Some(format) = &req.response_format {
        put("response_format", response_format_json(format));
    }
    Value::Object(body)
}

/// OpenAI chat `response_format` for a canonical structured-output request.
fn response_format_json(format: &super::ResponseFormat) -> Value {
    use serde_json::json;
    match format {
        super::ResponseFormat::JsonObject => json!({"type": "json_object"}),
        super::ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        } => {
            let mut inner = serde_json::Map::new();
            inner.insert("name".into(), json!(name));
            if let Some(description) = description {
                inner.insert("description".into(), json!(description));
            }
            inner.insert("schema".into(), schema.clone());
            if let Some(strict) = strict {
                inner.insert("strict".into(), json!(strict));
            }
            json!({"type": "json_schema", "json_schema": inner})
        }
    }
}

/// Decode a complete `chat.completion` response (the first choice; others are dropped).
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, DecodeError> {
    if let Some(response) = exact_response(body) {
        return Ok(response);
    }
    if let Some(response) = super::fast_decode::<ResponseIn<'_>>(body).and_then(ResponseIn::decode)
    {
        return Ok(response);
    }
    decode_response_value(body)
}

/// The general path of [`decode_response`], through a JSON tree; it defines the semantics.
pub(crate) fn decode_response_value(body: &[u8]) -> Result<ChatResponse, DecodeError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| DecodeError::new(format!("invalid JSON response: {error}"), None))?;
    if !value.is_object() {
        return Err(DecodeError::new(
            "upstream response must be a JSON object",
            None,
        ));
    }
    let choice = value.pointer("/choices/0");
    let message = choice.and_then(|choice| choice.get("message"));
    let field = |key: &str| message.and_then(|message| message.get(key));
    let mut parts = Vec::new();
    match field("thinking_blocks").and_then(Value::as_array) {
        Some(blocks) if !blocks.is_empty() => {
            for block in blocks {
                if let Ok(block) = ThinkingBlockWire::deserialize(block)
                    && let Some(part) = block.into_part()
                {
                    parts.push(part);
                }
            }
        }
        _ => {
            if let Some(reasoning) = field("reasoning_content")
                .or_else(|| field("reasoning"))
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
            {
                parts.push(Part::Thinking {
                    text: reasoning.to_owned(),
                    signature: None,
                });
            }
        }
    }
    match field("content") {
        Some(Value::String(text)) if !text.is_empty() => parts.push(Part::Text(text.clone())),
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(text) = item.get("text").and_then(Value::as_str) {
                    parts.push(Part::Text(text.to_owned()));
                }
            }
        }
        _ => {
            if let Some(refusal) = field("refusal").and_then(Value::as_str) {
                parts.push(Part::Text(refusal.to_owned()));
            } else if let Some(text) = choice
                .and_then(|choice| choice.get("text"))
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
            {
                // A legacy `text_completion` answer.
                parts.push(Part::Text(text.to_owned()));
            }
        }
    }
    for call in field("tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let text = |pointer: &str| {
            call.pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        parts.push(Part::ToolCall(ToolCall {
            id: text("/id"),
            name: text("/function/name"),
            arguments: text("/function/arguments"),
        }));
    }
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Ok(ChatResponse {
        id: text("id"),
        model: text("model"),
        created: value.get("created").and_then(Value::as_i64),
        parts,
        finish_reason: choice
            .and_then(|choice| choice.get("finish_reason"))
            .and_then(Value::as_str)
            .map(finish_reason_from),
        stop_sequence: None,
        usage: value
            .get("usage")
            .filter(|usage| usage.is_object())
            .map(usage_from),
    })
}

// --- Exact reader for `decode_response` ---

/// True when `body` is a complete answer in the compact layout [`exact_response`] reads: valid JSON, an
/// object, no `error` field, no `"type":"error"`. A cheap positive check; `false` says nothing.
pub(crate) fn is_exact_answer(body: &[u8]) -> bool {
    exact_response(body).is_some()
}

/// A text answer in the compact layout vLLM, llama.cpp and most OpenAI-compatible servers send, read
/// without a parser: `{<flat fields>,"choices":[{"index":0,"message":{"role":"assistant","content":"…"
/// <,"refusal":null>},"logprobs":null,"finish_reason":<"…"|null>}],"usage":{<flat integer or null
/// fields>}<,flat fields>}` in any field order, where a flat field is `"key":value` with a plain string,
/// an integer, `true`, `false` or `null` (see [`json_text::flat_field`]). Anything else (whitespace,
/// tool calls, reasoning, nested usage details, `error`) returns `None` for the parsers below, which
/// define the semantics; a property test holds this reader to the `Value` path.
pub(crate) fn exact_response(body: &[u8]) -> Option<ChatResponse> {
    use super::json_text::{flat_field, int_i64, int_u64, plain_str, read_str, tail};
    const CHOICE_START: &[u8] =
        br#""choices":[{"index":0,"message":{"role":"assistant","content":"#;
    const USAGE_START: &[u8] = br#""usage":{"#;
    let inner = body.strip_prefix(b"{")?.strip_suffix(b"}")?;
    let whole = std::str::from_utf8(inner).ok()?;
    let mut response = ChatResponse::default();
    let (mut id, mut model, mut created) = (None, None, None);
    let mut seen_choice = false;
    let mut seen_usage = false;
    let mut rest = inner;
    loop {
        if let Some(after) = rest.strip_prefix(CHOICE_START) {
            if seen_choice {
                return None;
            }
            seen_choice = true;
            // The content string, escapes allowed (decoded by the parser).
            let (text, len) = read_str(tail(whole, after)?)?;
            let after = &after[len..];
            let after = after.strip_prefix(br#","refusal":null"#).unwrap_or(after);
            let after = after.strip_prefix(br#"},"logprobs":null,"finish_reason":"#)?;
            let (reason, after) = if after.starts_with(b"null") {
                (None, &after[4..])
            } else {
                let len = super::json_text::plain_string_len(after)?;
                (Some(plain_str(&after[..len])?), &after[len..])
            };
            response.finish_reason = reason.map(finish_reason_from);
            if !text.is_empty() {
                response.parts.push(Part::Text(text.into_owned()));
            }
            rest = after.strip_prefix(b"}]")?;
        } else if let Some(mut after) = rest.strip_prefix(USAGE_START) {
            if seen_usage {
                return None;
            }
            seen_usage = true;
            let mut usage = Usage::default();
            loop {
                let (key, value) = flat_field(after)?;
                if matches!(key, b"prompt_tokens" | b"completion_tokens") {
                    // The parsers read `null`, a boolean or a negative count as 0; a number that fits
                    // no integer type is left to them.
                    let count = match int_u64(value) {
                        Some(count) => count,
                        None if matches!(value, b"null" | b"true" | b"false") => 0,
                        None if value.first() == Some(&b'"') => 0,
                        None => int_i64(value).map(|_| 0)?,
                    };
                    if key == b"prompt_tokens" {
                        usage.input_tokens = count;
                    } else {
                        usage.output_tokens = count;
                    }
                }
                after = &after[key.len() + 3 + value.len()..];
                match after.first()? {
                    b',' => after = &after[1..],
                    b'}' => break,
                    _ => return None,
                }
            }
            response.usage = Some(usage);
            rest = &after[1..];
        } else {
            let (key, value) = flat_field(rest)?;
            match key {
                b"choices" | b"usage" | b"error" => return None,
                // An error shape (Anthropic's): left to the parsers, so an answer read here is never one.
                b"type" if value == br#""error""# => return None,
                b"id" => id = Some(value),
                b"model" => model = Some(value),
                b"created" => created = Some(value),
                _ => {}
            }
            rest = &rest[key.len() + 3 + value.len()..];
        }
        if rest.is_empty() {
            break;
        }
        rest = rest.strip_prefix(b",")?;
    }
    if !seen_choice {
        return None;
    }
    response.id = id.and_then(plain_str).unwrap_or_default().to_owned();
    response.model = model.and_then(plain_str).unwrap_or_default().to_owned();
    response.created = created.and_then(int_i64);
    Some(response)
}

// --- Borrowed fast path for `decode_response` ---
//
// The common response shape read without a JSON tree: fields stay raw JSON and are read the way the
// `Value` path reads them (`as_str`, `as_i64`, presence). Rare shapes (`thinking_blocks`, array content,
// non-object entries) return `None` and take the `Value` path; a unit test compares both on fixtures and
// arbitrary JSON.

#[derive(Deserialize)]
struct ResponseIn<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default, borrow)]
    choices: Option<Vec<super::Obj<ResponseChoiceIn<'a>>>>,
    #[serde(default)]
    usage: Option<super::Obj<UsageIn>>,
}

#[derive(Deserialize)]
struct ResponseChoiceIn<'a> {
    #[serde(default, borrow)]
    message: Option<super::Obj<ResponseMessageIn<'a>>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ResponseMessageIn<'a> {
    #[serde(default, borrow)]
    thinking_blocks: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    reasoning_content: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    reasoning: Option<&'a RawValue>,
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<super::Obj<ResponseToolCallIn<'a>>>>,
}

#[derive(Deserialize)]
struct ResponseToolCallIn<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<super::Obj<ResponseFunctionIn<'a>>>,
}

#[derive(Deserialize)]
struct ResponseFunctionIn<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// `usage` as [`usage_from`] reads it (absent counters are 0).
#[derive(Deserialize)]
struct UsageIn {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<super::Obj<UsageDetailsIn>>,
    #[serde(default)]
    completion_tokens_details: Option<super::Obj<UsageDetailsIn>>,
}

#[derive(Deserialize)]
struct UsageDetailsIn {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// Keeps a present `null` as `Some("null")` (plain `Option` makes it `None`), for fields whose mere
/// presence matters.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// `Value::as_str` on a raw JSON value; `Err` when the string does not decode (the `Value` path then
/// reports the body as invalid).
fn raw_str(raw: Option<&RawValue>) -> Result<Option<std::borrow::Cow<'_, str>>, serde_json::Error> {
    match raw {
        Some(raw) if raw.get().starts_with('"') => serde_json::from_str(raw.get()).map(Some),
        _ => Ok(None),
    }
}

impl ResponseIn<'_> {
    fn decode(self) -> Option<ChatResponse> {
        let choice = self.choices.as_ref().and_then(|choices| choices.first());
        let message = choice.and_then(|choice| choice.message.as_ref());
        let mut parts = Vec::new();
        if let Some(message) = message {
            if message.thinking_blocks.is_some() {
                return None;
            }
            if let Some(reasoning) = raw_str(message.reasoning_content.or(message.reasoning))
                .ok()?
                .filter(|text| !text.is_empty())
            {
                parts.push(Part::Thinking {
                    text: reasoning.into_owned(),
                    signature: None,
                });
            }
        }
        let non_empty = |text: &Option<Cow<'_, str>>| {
            text.as_deref()
                .filter(|text| !text.is_empty())
                .map(str::to_owned)
        };
        match message.and_then(|message| non_empty(&message.content)) {
            Some(text) => parts.push(Part::Text(text)),
            None => {
                if let Some(refusal) = message.and_then(|message| message.refusal.as_deref()) {
                    parts.push(Part::Text(refusal.to_owned()));
                } else if let Some(text) = choice.and_then(|choice| non_empty(&choice.text)) {
                    parts.push(Part::Text(text));
                }
            }
        }
        for call in message
            .and_then(|message| message.tool_calls.as_deref())
            .unwrap_or_default()
        {
            let function = call.function.as_ref();
            let text =
                |text: Option<&Cow<'_, str>>| text.map(|t| t.to_string()).unwrap_or_default();
            parts.push(Part::ToolCall(ToolCall {
                id: text(call.id.as_ref()),
                name: text(function.and_then(|function| function.name.as_ref())),
                arguments: text(function.and_then(|function| function.arguments.as_ref())),
            }));
        }
        let usage = self.usage.as_ref().map(|usage| Usage {
            input_tokens: usage.prompt_tokens.unwrap_or(0),
            output_tokens: usage.completion_tokens.unwrap_or(0),
            cache_read_tokens: usage
                .prompt_tokens_details
                .as_ref()
                .and_then(|details| details.cached_tokens)
                .unwrap_or(0),
            cache_creation_tokens: 0,
            reasoning_tokens: usage
                .completion_tokens_details
                .as_ref()
                .and_then(|details| details.reasoning_tokens)
                .unwrap_or(0),
        });
        Some(ChatResponse {
            id: self.id.map(Cow::into_owned).unwrap_or_default(),
            model: self.model.map(Cow::into_owned).unwrap_or_default(),
            created: self.created,
            parts,
            finish_reason: choice
                .and_then(|choice| choice.finish_reason.as_deref())
                .map(finish_reason_from),
            stop_sequence: None,
            usage,
        })
    }
}

/// Render a canonical response as a `chat.completion`; `created` is used when the response has none.
pub fn encode_response(response: &ChatResponse, created: i64) -> Value {
    serde_json::to_value(ResponseOut::new(response, created)).unwrap_or_default()
}

/// [`encode_response`] straight to bytes (no JSON tree on the way).
pub(crate) fn encode_response_bytes(
    response: &ChatResponse,
    created: i64,
) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&ResponseOut::new(response, created))
}

/// A `chat.completion` as written: field order is the wire order.
#[derive(Serialize)]
struct ResponseOut<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: [ChoiceOut<'a>; 1],
    usage: UsageOut,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: MessageOut<'a>,
    logprobs: (),
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    /// `null` for an answer that only calls tools.
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    /// Kept only when a block carries a signature or is redacted (plain reasoning says it all otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_blocks: Option<Vec<ThinkingBlockOut<'a>>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ThinkingBlockOut<'a> {
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// OpenAI's `usage` object, as [`usage_json`] writes it.
#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<CachedTokensOut>,
}

#[derive(Serialize)]
struct CachedTokensOut {
    cached_tokens: u64,
}

impl UsageOut {
    fn new(usage: &Usage) -> UsageOut {
        UsageOut {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: usage.input_tokens.saturating_add(usage.output_tokens),
            prompt_tokens_details: (usage.cache_read_tokens > 0).then_some(CachedTokensOut {
                cached_tokens: usage.cache_read_tokens,
            }),
        }
    }
}

impl<'a> ResponseOut<'a> {
    fn new(response: &'a ChatResponse, created: i64) -> ResponseOut<'a> {
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut thinking_blocks = Vec::new();
        let mut keep_blocks = false;
        let mut tool_calls = Vec::new();
        for part in &response.parts {
            match part {
                Part::Text(piece) => text.push_str(piece),
                Part::Thinking { text, signature } => {
                    reasoning.push_str(text);
                    keep_blocks |= signature.is_some();
                    thinking_blocks.push(ThinkingBlockOut::Thinking {
                        thinking: text,
                        signature: signature.as_deref().unwrap_or_default(),
                    });
                }
                Part::RedactedThinking { data } => {
                    keep_blocks = true;
                    thinking_blocks.push(ThinkingBlockOut::RedactedThinking { data });
                }
                Part::ToolCall(call) => tool_calls.push(ToolCallOut {
                    id: &call.id,
                    kind: "function",
                    function: FunctionOut {
                        name: &call.name,
                        arguments: &call.arguments,
                    },
                }),
                Part::Image(_) | Part::ToolResult(_) => {}
            }
        }
        let content = (!text.is_empty() || tool_calls.is_empty()).then_some(text);
        ResponseOut {
            id: &response.id,
            object: "chat.completion",
            created: response.created.unwrap_or(created),
            model: &response.model,
            choices: [ChoiceOut {
                index: 0,
                message: MessageOut {
                    role: "assistant",
                    content,
                    reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                    thinking_blocks: keep_blocks.then_some(thinking_blocks),
                    tool_calls,
                },
                logprobs: (),
                finish_reason: finish_reason_str(
                    response.finish_reason.unwrap_or(FinishReason::Stop),
                ),
            }],
            usage: UsageOut::new(&response.usage.unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tool's schema is kept as the client wrote it (read, not rebuilt), a wrong field after the tools
    /// is still named, and a conversion puts the same schema into the other protocol.
    #[test]
    fn tool_schemas_are_kept_as_text_and_errors_after_them_are_named() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{ "type": "object", "properties": {"b": {"type": "string"}, "a": {}} }}}],"temperature":"hot"}"#;
        let error = super::decode_chat(body)
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(error.starts_with("temperature: invalid type"), "{error}");

        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{ "type": "object", "properties": {"b": {"type": "string"}, "a": {}} }}},{"type":"function","function":{"name":"g","parameters":null}}]}"#;
        let request = super::decode_chat(body).unwrap();
        assert_eq!(
            request.tools[0].parameters.get(),
            r#"{ "type": "object", "properties": {"b": {"type": "string"}, "a": {}} }"#
        );
        assert_eq!(
            request.tools[1].parameters.to_value(),
            serde_json::json!({"type": "object", "properties": {}})
        );
        let anthropic: serde_json::Value = serde_json::from_slice(
            &crate::protocol::anthropic::encode_request_bytes(&request, Some("m"), 64).unwrap(),
        )
        .unwrap();
        assert_eq!(
            anthropic["tools"][0]["input_schema"],
            serde_json::json!({"type": "object", "properties": {"b": {"type": "string"}, "a": {}}})
        );
        let keys: Vec<&String> = anthropic["tools"][0]["input_schema"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys, ["b", "a"]);
    }

    /// The cache stores streamed answers through the direct writer: the same bytes as the tree.
    #[test]
    fn response_bytes_match_the_json_tree() {
        let response = ChatResponse {
            id: "chatcmpl-1".into(),
            model: "m".into(),
            parts: vec![Part::Text("say \"hi\"\n".into())],
            finish_reason: Some(FinishReason::Length),
            usage: Some(Usage {
                input_tokens: 3,
                output_tokens: 4,
                ..Default::default()
            }),
            ..Default::default()
        };
        let tree = serde_json::to_vec(&encode_response(&response, 7)).unwrap();
        assert_eq!(encode_response_bytes(&response, 7).unwrap(), tree);
    }

    fn err(body: &str) -> String {
        decode_chat(body.as_bytes()).unwrap_err().message
    }

    #[test]
    fn decodes_a_typical_chat() {
        let request = decode_chat(
            br#"{"model":"m","stream":true,"messages":[
                {"role":"system","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"42"},
                {"role":"user","content":"again"}],
              "stop":"x","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"auto"}"#,
        )
        .unwrap();
        assert_eq!(request.model.as_deref(), Some("m"));
        assert!(request.stream);
        assert_eq!(request.system, vec!["be brief"]);
        assert_eq!(request.messages.len(), 4);
        assert_eq!(request.last_user_text().as_deref(), Some("again"));
        assert_eq!(request.params.stop, vec!["x"]);
        assert_eq!(request.tool_choice, Some(ToolChoice::Auto));
        assert!(matches!(
            request.messages[0].parts[1],
            Part::Image(Image::Base64 { .. })
        ));
    }

    #[test]
    fn names_what_was_wrong() {
        assert_eq!(err("{}"), "missing required field 'messages'");
        assert_eq!(
            err(r#"{"messages":[]}"#),
            "'messages' must be a non-empty array of messages"
        );
        assert!(err(r#"{"messages":[{"role":"user","content":5}]}"#)
            .starts_with("messages[0].content: invalid type: integer `5`, expected a string or an array of content parts"));
        assert!(err(r#"{"messages":"hi"}"#).starts_with("messages: invalid type"));
        assert!(
            err(r#"{"messages":[{"role":"user","content":"x"}],"stream":"yes"}"#)
                .starts_with("stream: invalid type")
        );
        assert!(
            err(r#"{"messages":[{"role":"wizard","content":"x"}]}"#)
                .contains("unknown role 'wizard'")
        );
        assert!(err("{\"messages\": [").starts_with("invalid JSON body"));
        assert_eq!(err("[1]"), "request body must be a JSON object");
        assert_eq!(err(""), "request body is empty; expected a JSON object");
    }

    #[test]
    fn completion_and_embeddings_inputs() {
        let completion = decode_completion(br#"{"prompt":["a","b"],"max_tokens":3}"#).unwrap();
        assert_eq!(completion.prompt, vec!["a", "b"]);
        assert!(decode_completion(b"{}").is_err());
        let embeddings = decode_embeddings(br#"{"input":"hello"}"#).unwrap();
        assert_eq!(embeddings.input, vec!["hello"]);
        assert!(decode_embeddings(br#"{"input":[]}"#).is_err());
    }
}

#[cfg(test)]
mod exact_response_tests {

    use super::*;
    use crate::protocol::json_text::near_flat_value;

    const TYPICAL: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi \"there\"\n","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":20,"total_tokens":29,"prompt_tokens_details":null},"system_fingerprint":"fp"}"#;

    #[test]
    fn reads_the_compact_layout_like_the_value_path() {
        let exact = exact_response(TYPICAL.as_bytes()).expect("the compact layout is read exactly");
        assert_eq!(exact, decode_response_value(TYPICAL.as_bytes()).unwrap());
        assert_eq!(exact.parts, vec![Part::Text("Hi \"there\"\n".into())]);
        assert_eq!(
            exact.usage.map(|u| (u.input_tokens, u.output_tokens)),
            Some((9, 20))
        );
        // Found by the property test: the parser keeps `-0` as a float, so it is no `created`.
        let negative_zero = TYPICAL.replace("1700000000", "-0");
        let exact = exact_response(negative_zero.as_bytes()).unwrap();
        assert_eq!(exact.created, None);
        assert_eq!(
            exact,
            decode_response_value(negative_zero.as_bytes()).unwrap()
        );
        // Pretty-printed, tool calls, nested usage details: left to the parsers.
        for body in [
            r#"{ "choices": [] }"#,
            r#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[]},"logprobs":null,"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"a"},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens_details":{"cached_tokens":1}}}"#,
        ] {
            assert_eq!(exact_response(body.as_bytes()), None, "{body}");
        }
    }

    fn field() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![
            4 => Just("id"),
            4 => Just("created"),
            4 => Just("model"),
            4 => Just("object"),
            1 => Just("error"),
            1 => Just("usage"),
            1 => Just("type"),
            1 => Just("x\\\"y"),
        ];
        (key, near_flat_value()).prop_map(|(key, value)| format!("\"{key}\":{value}"))
    }

    fn usage() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("prompt_tokens"),
            Just("completion_tokens"),
            Just("total_tokens"),
            Just("prompt_tokens_details"),
        ];
        proptest::collection::vec((key, near_flat_value()), 0..4).prop_map(|fields| {
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(key, value)| format!("\"{key}\":{value}"))
                .collect();
            format!("\"usage\":{{{}}}", fields.join(","))
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// Bodies near the compact layout (random fields around the choice and usage, any content
        /// and finish reason, a stray byte): whenever the exact reader answers, the body is valid JSON
        /// and the `Value` path reads the same response.
        #[test]
        fn exact_reader_agrees_with_the_value_path(
            before in proptest::collection::vec(field(), 0..3),
            after in proptest::collection::vec(field(), 0..3),
            usage in proptest::option::of(usage()),
            text in ".{0,12}",
            refusal in proptest::prelude::any::<bool>(),
            finish in proptest::option::of("stop|length|tool_calls|x\\\\y|"),
            cut in proptest::option::weighted(0.3, (0usize..300, proptest::prelude::any::<u8>())),
        ) {
            let mut fields = before;
            fields.push(format!(
                r#""choices":[{{"index":0,"message":{{"role":"assistant","content":{}{}}},"logprobs":null,"finish_reason":{}}}]"#,
                serde_json::to_string(&text).unwrap(),
                if refusal { r#","refusal":null"# } else { "" },
                finish.map_or("null".to_owned(), |f| serde_json::to_string(&f).unwrap()),
            ));
            fields.extend(usage);
            fields.extend(after);
            let mut body = format!("{{{}}}", fields.join(",")).into_bytes();
            if let Some((at, byte)) = cut {
                let at = at % body.len();
                body[at] = byte;
            }
            if let Some(exact) = exact_response(&body) {
                let value = decode_response_value(&body);
                proptest::prop_assert!(value.is_ok(), "exact reader accepted {:?}", String::from_utf8_lossy(&body));
                proptest::prop_assert_eq!(exact, value.unwrap());
                // An answer read exactly is never an error shape (the cache relies on it).
                let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
                proptest::prop_assert!(value.get("error").is_none() && value["type"] != "error");
            }
        }
    }
}

#[cfg(test)]
mod encode_request_tests {
    use super::*;
    use crate::protocol::{RawJson, ResponseFormat, Tool, ToolResult};
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        "(\\PC|[\"\\\\\n\\x01\\x7f]){0,12}"
    }

    fn part() -> impl Strategy<Value = Part> {
        prop_oneof![
            4 => text().prop_map(Part::Text),
            1 => text().prop_map(|url| Part::Image(Image::Url(url))),
            1 => (text(), text()).prop_map(|(media_type, data)| Part::Image(Image::Base64 { media_type, data })),
            2 => (text(), text(), text()).prop_map(|(id, name, arguments)| Part::ToolCall(ToolCall { id, name, arguments })),
            2 => (text(), text()).prop_map(|(tool_call_id, content)| Part::ToolResult(ToolResult { tool_call_id, content, is_error: false })),
            1 => text().prop_map(|text| Part::Thinking { text, signature: None }),
            1 => text().prop_map(|data| Part::RedactedThinking { data }),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            prop_oneof![
                Just(Role::System),
                Just(Role::User),
                Just(Role::Assistant),
                Just(Role::Tool)
            ],
            proptest::collection::vec(part(), 0..4),
            proptest::option::of(text()),
        )
            .prop_map(|(role, parts, name)| Message { role, parts, name })
    }

    fn tool() -> impl Strategy<Value = Tool> {
        (text(), proptest::option::of(text()), text()).prop_map(|(name, description, property)| {
            Tool {
                name,
                description,
                parameters: RawJson::from_value(&serde_json::json!({
                    "type": "object",
                    "properties": {property: {"type": "string"}},
                })),
            }
        })
    }

    fn float() -> impl Strategy<Value = Option<f64>> {
        proptest::option::of(prop_oneof![
            any::<f64>(),
            Just(0.0),
            Just(0.7),
            Just(1.0),
            Just(-0.0)
        ])
    }

    prop_compose! {
        fn request()(
            model in proptest::option::of(text()),
            system in proptest::collection::vec(text(), 0..2),
            messages in proptest::collection::vec(message(), 0..5),
            stream in any::<bool>(),
            numbers in (proptest::option::of(any::<u64>()), float(), float(), proptest::option::of(any::<u64>()),
                proptest::option::of(any::<i64>()), float(), float(), proptest::option::of(any::<u64>())),
            stop in proptest::collection::vec(text(), 0..2),
            tools in proptest::collection::vec(tool(), 0..3),
            tool_choice in proptest::option::of(prop_oneof![
                Just(ToolChoice::Auto), Just(ToolChoice::None), Just(ToolChoice::Required), text().prop_map(ToolChoice::Named),
            ]),
            parallel_tool_calls in proptest::option::of(any::<bool>()),
            user in proptest::option::of(text()),
            reasoning_effort in proptest::option::of(text()),
            json_object in any::<bool>(),
        ) -> ChatRequest {
            let (max_tokens, temperature, top_p, top_k, seed, presence_penalty, frequency_penalty, n) = numbers;
            ChatRequest {
                model,
                system,
                messages,
                stream,
                params: SamplingParams { max_tokens, temperature, top_p, top_k, stop, seed, presence_penalty, frequency_penalty, n },
                tools,
                tool_choice,
                parallel_tool_calls,
                user,
                reasoning_effort,
                response_format: json_object.then(|| Box::new(ResponseFormat::JsonObject)),
                ..ChatRequest::default()
            }
        }
    }

    proptest! {
        /// The written body is byte for byte the serialized `Value` form.
        #[test]
        fn bytes_are_the_value_form(request in request(), model in proptest::option::of(text())) {
            let written = encode_request_bytes(&request, model.as_deref());
            let oracle = serde_json::to_vec(&encode_request(&request, model.as_deref())).unwrap();
            prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(oracle).unwrap());
        }
    }

    #[test]
    fn a_schema_is_written_as_it_came_and_reads_as_the_value_form() {
        let request = ChatRequest {
            messages: vec![Message { role: Role::User, parts: vec![Part::Text("hi".into())], name: None }],
            tools: vec![Tool {
                name: "f".into(),
                description: None,
                parameters: serde_json::from_str(r#"{ "type" : "object", "properties": {"a": {"type": "number", "default": 1e2}} }"#).unwrap(),
            }],
            response_format: Some(Box::new(ResponseFormat::JsonSchema {
                name: "s".into(),
                description: Some("d".into()),
                schema: serde_json::json!({"type": "object"}),
                strict: Some(true),
            })),
            ..ChatRequest::default()
        };
        let written = encode_request_bytes(&request, Some("m"));
        assert!(String::from_utf8_lossy(&written).contains(r#""parameters":{ "type" : "object""#));
        let parsed: Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(parsed, encode_request(&request, Some("m")));
    }
}
