//! OpenAI wire format: request decoding into canonical types and response/chunk encoding.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ApiRequest, ChatRequest, CompletionRequest, DecodeError, EmbeddingsRequest, Endpoint,
    FinishReason, Image, Message, Part, Role, SamplingParams, Tool, ToolCall, ToolChoice,
    ToolResult, Usage,
};

/// Decode an OpenAI-format request body for `endpoint` into its canonical form.
pub fn decode_request(endpoint: Endpoint, body: &[u8]) -> Result<ApiRequest, DecodeError> {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages => decode_chat(body).map(ApiRequest::Chat),
        Endpoint::Completions => decode_completion(body).map(ApiRequest::Completion),
        Endpoint::Embeddings => decode_embeddings(body).map(ApiRequest::Embeddings),
    }
}

/// Decode a `/v1/chat/completions` body.
pub fn decode_chat(body: &[u8]) -> Result<ChatRequest, DecodeError> {
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
        if let Some(reasoning) = message.reasoning_content.filter(|text| !text.is_empty()) {
            parts.push(Part::Thinking {
                text: reasoning,
                signature: None,
            });
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
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
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
pub fn decode_completion(body: &[u8]) -> Result<CompletionRequest, DecodeError> {
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
pub fn decode_embeddings(body: &[u8]) -> Result<EmbeddingsRequest, DecodeError> {
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

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
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

fn missing(field: &str) -> DecodeError {
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
    parameters: Option<Value>,
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
pub fn image_from_url(url: String) -> Image {
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
pub fn finish_reason_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::StopSequence => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

#[derive(Serialize)]
pub struct UsageWire {
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
pub fn chat_completion(answer: &TextAnswer<'_>) -> Value {
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
pub fn chat_chunks(answer: &TextAnswer<'_>, pieces: &[&str], include_usage: bool) -> Vec<Value> {
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
pub fn text_completion_chunks(answer: &TextAnswer<'_>, pieces: &[&str]) -> Vec<Value> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
