//! Anthropic Messages wire format: request decoding/encoding, responses, usage, stop reasons and errors.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::openai::{self, missing, parse};
use super::{
    ChatRequest, ChatResponse, DecodeError, FinishReason, Image, Message, Part, RawJson, Role,
    SamplingParams, Tool, ToolCall, ToolChoice, ToolResult, Usage,
};

/// Decode a `POST /v1/messages` body into a canonical chat request.
pub fn decode_request(body: &[u8]) -> Result<ChatRequest, DecodeError> {
    let wire: MessagesWire = parse(body)?;
    let Some(max_tokens) = wire.max_tokens else {
        return Err(missing("max_tokens"));
    };
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
        system: system_parts(wire.system.as_ref())?,
        stream: wire.stream.unwrap_or(false),
        params: SamplingParams {
            max_tokens: Some(max_tokens),
            temperature: wire.temperature,
            top_p: wire.top_p,
            top_k: wire.top_k,
            stop: wire.stop_sequences.unwrap_or_default(),
            ..SamplingParams::default()
        },
        user: wire.metadata.and_then(|metadata| metadata.user_id),
        ..ChatRequest::default()
    };
    for (index, message) in messages.into_iter().enumerate() {
        let role = match message.role.as_deref() {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(other) => {
                return Err(DecodeError::new(
                    format!(
                        "messages[{index}].role: unknown role '{other}'; expected user or assistant"
                    ),
                    Some(format!("messages[{index}].role")),
                ));
            }
            None => return Err(missing(&format!("messages[{index}].role"))),
        };
        let path = format!("messages[{index}].content");
        let parts = match message.content {
            None => return Err(missing(&path)),
            Some(Value::String(text)) => vec![Part::Text(text)],
            Some(Value::Array(blocks)) => {
                let mut parts = Vec::with_capacity(blocks.len());
                for (position, block) in blocks.iter().enumerate() {
                    if let Some(part) = decode_block(block, &format!("{path}[{position}]"))? {
                        parts.push(part);
                    }
                }
                parts
            }
            Some(_) => {
                return Err(DecodeError::new(
                    format!("{path}: expected a string or an array of content blocks"),
                    Some(path),
                ));
            }
        };
        request.messages.push(Message {
            role,
            parts,
            name: None,
        });
    }
    for (index, tool) in wire.tools.unwrap_or_default().into_iter().enumerate() {
        // Server tools (web search, code execution, …) have a `type` and no schema: the other side cannot
        // run them, so they are dropped.
        let Some(schema) = tool.input_schema else {
            if tool.kind.is_some() {
                continue;
            }
            return Err(missing(&format!("tools[{index}].input_schema")));
        };
        let Some(name) = tool.name else {
            return Err(missing(&format!("tools[{index}].name")));
        };
        request.tools.push(Tool {
            name,
            description: tool.description,
            parameters: schema,
        });
    }
    if let Some(choice) = wire.tool_choice {
        request.tool_choice = Some(match choice.kind.as_str() {
            "auto" => ToolChoice::Auto,
            "any" => ToolChoice::Required,
            "none" => ToolChoice::None,
            "tool" => match choice.name {
                Some(name) => ToolChoice::Named(name),
                None => return Err(missing("tool_choice.name")),
            },
            other => {
                return Err(DecodeError::new(
                    format!(
                        "tool_choice.type: unknown value '{other}'; expected auto, any, tool or none"
                    ),
                    Some("tool_choice.type".into()),
                ));
            }
        });
        if choice.disable_parallel_tool_use == Some(true) {
            request.parallel_tool_calls = Some(false);
        }
    }
    Ok(request)
}

fn system_parts(system: Option<&Value>) -> Result<Vec<String>, DecodeError> {
    match system {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .enumerate()
            .map(|(index, block)| {
                let path = format!("system[{index}].text");
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        DecodeError::new(format!("{path}: expected a string"), Some(path))
                    })
            })
            .collect(),
        Some(_) => Err(DecodeError::new(
            "system: expected a string or an array of text blocks",
            Some("system".into()),
        )),
    }
}

fn str_field(block: &Value, key: &str, path: &str) -> Result<String, DecodeError> {
    match block.get(key) {
        Some(Value::String(text)) => Ok(text.clone()),
        None | Some(Value::Null) => Err(missing(&format!("{path}.{key}"))),
        Some(_) => Err(DecodeError::new(
            format!("{path}.{key}: expected a string"),
            Some(format!("{path}.{key}")),
        )),
    }
}

/// One content block; `Ok(None)` for block types the canonical model deliberately drops.
fn decode_block(block: &Value, path: &str) -> Result<Option<Part>, DecodeError> {
    let kind = match block.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => return Err(missing(&format!("{path}.type"))),
    };
    Ok(Some(match kind {
        "text" => Part::Text(str_field(block, "text", path)?),
        "image" => {
            let source_path = format!("{path}.source");
            let Some(source) = block.get("source") else {
                return Err(missing(&source_path));
            };
            match source.get("type").and_then(Value::as_str) {
                Some("base64") => Part::Image(Image::Base64 {
                    media_type: str_field(source, "media_type", &source_path)?,
                    data: str_field(source, "data", &source_path)?,
                }),
                Some("url") => Part::Image(Image::Url(str_field(source, "url", &source_path)?)),
                _ => return Ok(None),
            }
        }
        "tool_use" => Part::ToolCall(ToolCall {
            id: str_field(block, "id", path)?,
            name: str_field(block, "name", path)?,
            arguments: match block.get("input") {
                None | Some(Value::Null) => "{}".to_owned(),
                Some(input) => input.to_string(),
            },
        }),
        "tool_result" => Part::ToolResult(ToolResult {
            tool_call_id: str_field(block, "tool_use_id", path)?,
            content: tool_result_text(block.get("content")),
            is_error: block.get("is_error").and_then(Value::as_bool) == Some(true),
        }),
        "thinking" => Part::Thinking {
            text: str_field(block, "thinking", path)?,
            // An empty signature (thinking that came from an OpenAI-format backend) is as good as none.
            signature: block
                .get("signature")
                .and_then(Value::as_str)
                .filter(|signature| !signature.is_empty())
                .map(str::to_owned),
        },
        "redacted_thinking" => Part::RedactedThinking {
            data: str_field(block, "data", path)?,
        },
        _ => return Ok(None),
    }))
}

/// Tool result content: a string, or blocks whose text parts are joined (images are dropped).
fn tool_result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|block| block.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[derive(Deserialize)]
struct MessagesWire {
    model: Option<String>,
    max_tokens: Option<u64>,
    messages: Option<Vec<MessageWire>>,
    system: Option<Value>,
    stream: Option<bool>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u64>,
    stop_sequences: Option<Vec<String>>,
    tools: Option<Vec<ToolWire>>,
    tool_choice: Option<ToolChoiceWire>,
    metadata: Option<MetadataWire>,
}

#[derive(Deserialize)]
struct MessageWire {
    role: Option<String>,
    content: Option<Value>,
}

#[derive(Deserialize)]
struct ToolWire {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    description: Option<String>,
    input_schema: Option<RawJson>,
}

#[derive(Deserialize)]
struct ToolChoiceWire {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
struct MetadataWire {
    user_id: Option<String>,
}

// === Encoding requests ===

/// Render a canonical request as an Anthropic Messages body.
///
/// Anthropic requires `max_tokens`, so `default_max_tokens` fills in when the client gave none. Later
/// system messages join the top-level `system` (Anthropic has no system role inside `messages`),
/// consecutive messages of the same role merge (tool results must share one user turn), and thinking
/// without a signature is dropped (Anthropic rejects unsigned thinking blocks).
pub fn encode_request(
    req: &ChatRequest,
    model: Option<&str>,
    default_max_tokens: u64,
) -> Result<Value, DecodeError> {
    let body = RequestOut::new(req, model, default_max_tokens)?;
    serde_json::to_value(body)
        .map_err(|error| DecodeError::new(format!("cannot serialize body: {error}"), None))
}

/// [`encode_request`] straight to bytes (no JSON tree on the way).
pub(crate) fn encode_request_bytes(
    req: &ChatRequest,
    model: Option<&str>,
    default_max_tokens: u64,
) -> Result<Vec<u8>, DecodeError> {
    let body = RequestOut::new(req, model, default_max_tokens)?;
    serde_json::to_vec(&body)
        .map_err(|error| DecodeError::new(format!("cannot serialize body: {error}"), None))
}

/// A Messages request body as written: field order is the wire order.
#[derive(Serialize)]
struct RequestOut<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "SystemOut::is_empty")]
    system: SystemOut<'a>,
    messages: Vec<TurnOut<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<MetadataOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<ThinkingOut>,
}

/// Extended thinking, asked for by a canonical `reasoning_effort`.
#[derive(Serialize)]
struct ThinkingOut {
    #[serde(rename = "type")]
    kind: &'static str,
    budget_tokens: u64,
}

/// The thinking budget for a reasoning effort (`None`: no thinking).
fn thinking_budget(effort: &str) -> Option<u64> {
    match effort {
        "low" => Some(1024),
        "medium" => Some(2048),
        "high" => Some(4096),
        "xhigh" => Some(8192),
        _ => None,
    }
}

/// Anthropic's smallest thinking budget.
const MIN_THINKING_BUDGET: u64 = 1024;

/// `system`: absent, one string, or text blocks when there are several.
#[derive(Serialize)]
#[serde(untagged)]
enum SystemOut<'a> {
    One(&'a str),
    Blocks(Vec<BlockOut<'a>>),
}

impl SystemOut<'_> {
    fn is_empty(&self) -> bool {
        matches!(self, SystemOut::Blocks(blocks) if blocks.is_empty())
    }
}

#[derive(Serialize)]
struct TurnOut<'a> {
    role: &'static str,
    content: ContentOut<'a>,
}

/// A turn's content: a lone text block is sent as a plain string.
#[derive(Serialize)]
#[serde(untagged)]
enum ContentOut<'a> {
    Text(&'a str),
    Blocks(Vec<BlockOut<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockOut<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: ImageSourceOut<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSourceOut<'a> {
    Url { url: &'a str },
    Base64 { media_type: &'a str, data: &'a str },
}

#[derive(Serialize)]
struct MetadataOut<'a> {
    user_id: &'a str,
}

#[derive(Serialize)]
struct ToolOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a RawJson,
}

#[derive(Serialize)]
struct ToolChoiceOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
}

impl<'a> RequestOut<'a> {
    fn new(
        req: &'a ChatRequest,
        model: Option<&'a str>,
        default_max_tokens: u64,
    ) -> Result<RequestOut<'a>, DecodeError> {
        let Some(model) = model.or(req.model.as_deref()) else {
            return Err(missing("model"));
        };
        let mut system: Vec<&str> = req.system.iter().map(String::as_str).collect();
        let mut turns: Vec<(&'static str, Vec<BlockOut<'a>>)> =
            Vec::with_capacity(req.messages.len());
        for (index, message) in req.messages.iter().enumerate() {
            let role = match message.role {
                Role::System => {
                    for part in &message.parts {
                        if let Part::Text(text) = part {
                            system.push(text);
                        }
                    }
                    continue;
                }
                Role::User | Role::Tool => "user",
                Role::Assistant => "assistant",
            };
            let mut blocks = Vec::with_capacity(message.parts.len());
            for part in &message.parts {
                if let Some(block) = encode_block(part, index)? {
                    blocks.push(block);
                }
            }
            if blocks.is_empty() {
                continue;
            }
            match turns.last_mut() {
                Some((last_role, last_blocks)) if *last_role == role => {
                    // Tool results must lead the user turn that answers the tool calls.
                    if role == "user" && blocks.iter().any(is_tool_result) {
                        let at = last_blocks.iter().take_while(|b| is_tool_result(b)).count();
                        let rest: Vec<BlockOut<'a>> = last_blocks.drain(at..).collect();
                        last_blocks.extend(blocks);
                        last_blocks.extend(rest);
                    } else {
                        last_blocks.extend(blocks);
                    }
                }
                _ => turns.push((role, blocks)),
            }
        }
        let messages = turns
            .into_iter()
            .map(|(role, blocks)| TurnOut {
                role,
                content: match blocks.as_slice() {
                    [BlockOut::Text { text }] => ContentOut::Text(text),
                    _ => ContentOut::Blocks(blocks),
                },
            })
            .collect();
        let system = match system.as_slice() {
            [only] => SystemOut::One(only),
            many => SystemOut::Blocks(many.iter().map(|text| BlockOut::Text { text }).collect()),
        };
        let mut tool_choice = None;
        if !req.tools.is_empty() {
            let disable_parallel = req.parallel_tool_calls == Some(false);
            let choice = |kind, name| ToolChoiceOut {
                kind,
                name,
                disable_parallel_tool_use: None,
            };
            tool_choice = match &req.tool_choice {
                None if !disable_parallel => None,
                None | Some(ToolChoice::Auto) => Some(choice("auto", None)),
                Some(ToolChoice::None) => Some(choice("none", None)),
                Some(ToolChoice::Required) => Some(choice("any", None)),
                Some(ToolChoice::Named(name)) => Some(choice("tool", Some(name.as_str()))),
            };
            if disable_parallel
                && let Some(choice) = &mut tool_choice
                && choice.kind != "none"
            {
                choice.disable_parallel_tool_use = Some(true);
            }
        }
        // A reasoning effort asks for extended thinking, within `max_tokens` (which Anthropic counts
        // thinking in): the client's limit bounds the budget (half of it at most, no thinking when that
        // is under Anthropic's minimum); without one, the budget comes on top of the default. Anthropic refuses thinking with a forced tool choice and with sampling changes.
        let forced_tool = matches!(
            tool_choice.as_ref().map(|choice| choice.kind),
            Some("any" | "tool")
        );
        let mut max_tokens = req.params.max_tokens.unwrap_or(default_max_tokens);
        let thinking = req
            .reasoning_effort
            .as_deref()
            .and_then(thinking_budget)
            .filter(|_| !forced_tool)
            .and_then(|budget| match req.params.max_tokens {
                // At most half the client's limit, so thinking leaves room for the answer.
                Some(limit) => {
                    Some(budget.min(limit / 2)).filter(|budget| *budget >= MIN_THINKING_BUDGET)
                }
                None => {
                    max_tokens = max_tokens.saturating_add(budget);
                    Some(budget)
                }
            })
            .map(|budget_tokens| ThinkingOut {
                kind: "enabled",
                budget_tokens,
            });
        let sampling = thinking.is_none();
        Ok(RequestOut {
            model,
            max_tokens,
            system,
            messages,
            stop_sequences: &req.params.stop,
            temperature: req.params.temperature.filter(|_| sampling),
            top_p: req.params.top_p.filter(|_| sampling),
            top_k: req.params.top_k.filter(|_| sampling),
            stream: req.stream,
            metadata: req.user.as_deref().map(|user_id| MetadataOut { user_id }),
            tools: req
                .tools
                .iter()
                .map(|tool| ToolOut {
                    name: &tool.name,
                    description: tool.description.as_deref(),
                    input_schema: &tool.parameters,
                })
                .collect(),
            tool_choice,
            thinking,
        })
    }
}

fn is_tool_result(block: &BlockOut<'_>) -> bool {
    matches!(block, BlockOut::ToolResult { .. })
}

fn encode_block(part: &Part, index: usize) -> Result<Option<BlockOut<'_>>, DecodeError> {
    Ok(Some(match part {
        Part::Text(text) if text.is_empty() => return Ok(None),
        Part::Text(text) => BlockOut::Text { text },
        Part::Image(Image::Url(url)) => BlockOut::Image {
            source: ImageSourceOut::Url { url },
        },
        Part::Image(Image::Base64 { media_type, data }) => BlockOut::Image {
            source: ImageSourceOut::Base64 { media_type, data },
        },
        Part::ToolCall(call) => {
            let input: Value = if call.arguments.trim().is_empty() {
                Value::Object(Map::new())
            } else {
                match serde_json::from_str::<Value>(&call.arguments) {
                    Ok(input @ Value::Object(_)) => input,
                    _ => {
                        let path = format!("messages[{index}].tool_calls");
                        return Err(DecodeError::new(
                            format!(
                                "{path}: arguments of tool call '{}' are not a JSON object: {}",
                                call.id, call.arguments
                            ),
                            Some(path),
                        ));
                    }
                }
            };
            BlockOut::ToolUse {
                id: &call.id,
                name: &call.name,
                input,
            }
        }
        Part::ToolResult(result) => BlockOut::ToolResult {
            tool_use_id: &result.tool_call_id,
            content: &result.content,
            is_error: result.is_error,
        },
        Part::Thinking {
            text,
            signature: Some(signature),
        } => BlockOut::Thinking {
            thinking: text,
            signature,
        },
        Part::Thinking {
            signature: None, ..
        } => return Ok(None),
        Part::RedactedThinking { data } => BlockOut::RedactedThinking { data },
    }))
}

// === Responses ===

/// Anthropic `stop_reason` for a canonical reason.
pub(crate) fn stop_reason_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "end_turn",
        FinishReason::StopSequence => "stop_sequence",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// Canonical reason for an Anthropic `stop_reason`; unknown values count as a normal stop.
pub fn finish_reason_from(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "stop_sequence" => FinishReason::StopSequence,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// Anthropic `usage` object for canonical usage (its `input_tokens` excludes cached tokens).
pub(crate) fn usage_json(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage
            .input_tokens
            .saturating_sub(usage.cache_read_tokens)
            .saturating_sub(usage.cache_creation_tokens),
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens,
    })
}

/// Raw Anthropic usage counters, merged field by field as `message_start` and `message_delta` arrive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WireUsage {
    pub input: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
    pub output: u64,
}

impl WireUsage {
    /// Overwrite the counters present in `value` (an Anthropic `usage` object).
    pub fn merge(&mut self, value: &Value) {
        let field = |name: &str| value.get(name).and_then(Value::as_u64);
        if let Some(input) = field("input_tokens") {
            self.input = input;
        }
        if let Some(read) = field("cache_read_input_tokens") {
            self.cache_read = read;
        }
        if let Some(creation) = field("cache_creation_input_tokens") {
            self.cache_creation = creation;
        }
        if let Some(output) = field("output_tokens") {
            self.output = output;
        }
    }

    pub(crate) fn canonical(self) -> Usage {
        Usage {
            input_tokens: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_creation),
            output_tokens: self.output,
            cache_read_tokens: self.cache_read,
            cache_creation_tokens: self.cache_creation,
            reasoning_tokens: 0,
        }
    }
}

/// Decode a complete Anthropic `message` response.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, DecodeError> {
    if let Some(response) = super::fast_decode::<MessageIn<'_>>(body).and_then(MessageIn::decode) {
        return Ok(response);
    }
    decode_response_value(body)
}

// --- Borrowed fast path for `decode_response` ---
//
// Text, thinking and `tool_use` answers read without a JSON tree for the whole body (a `tool_use`
// block's `input` alone goes through one, to be re-rendered as compact JSON exactly as the `Value` path
// renders it); images, tool results, and any unexpected type take the `Value` path, which defines the
// semantics. A unit test compares both on fixtures and arbitrary JSON. This tier is kept because it
// wins clearly: without it (every body through the `Value` path) an OpenAI client's request to an
// Anthropic upstream costs 21% more instructions for a text answer (docs/performance.md).

#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<Vec<super::Obj<BlockIn<'a>>>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop_sequence: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<super::Obj<UsageIn>>,
}

/// A content block as the fast paths read it (responses here, `content_block_start` in streams).
#[derive(Deserialize)]
pub(crate) struct BlockIn<'a> {
    #[serde(rename = "type", default, borrow)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub data: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub input: Option<&'a RawValue>,
}

/// An Anthropic `usage` object as [`WireUsage::merge`] reads it: a present counter replaces the
/// running one.
#[derive(Deserialize)]
pub(crate) struct UsageIn {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl UsageIn {
    pub(crate) fn merge_into(&self, usage: &mut WireUsage) {
        if let Some(input) = self.input_tokens {
            usage.input = input;
        }
        if let Some(read) = self.cache_read_input_tokens {
            usage.cache_read = read;
        }
        if let Some(creation) = self.cache_creation_input_tokens {
            usage.cache_creation = creation;
        }
        if let Some(output) = self.output_tokens {
            usage.output = output;
        }
    }
}

impl MessageIn<'_> {
    fn decode(self) -> Option<ChatResponse> {
        let owned = |text: &Option<Cow<'_, str>>| text.as_deref().map(str::to_owned);
        let mut parts = Vec::new();
        for block in self.content.iter().flatten() {
            // A block the `Value` path would refuse (a required field missing) is skipped there too.
            let part = match block.kind.as_deref() {
                None => continue,
                Some("text") => owned(&block.text).map(Part::Text),
                Some("thinking") => owned(&block.thinking).map(|text| Part::Thinking {
                    text,
                    signature: block
                        .signature
                        .as_deref()
                        .filter(|signature| !signature.is_empty())
                        .map(str::to_owned),
                }),
                Some("redacted_thinking") => {
                    owned(&block.data).map(|data| Part::RedactedThinking { data })
                }
                // Without an `id` and a `name` the `Value` path skips the block too.
                Some("tool_use") => match (&block.id, &block.name) {
                    (Some(id), Some(name)) => Some(Part::ToolCall(ToolCall {
                        id: id.clone().into_owned(),
                        name: name.clone().into_owned(),
                        arguments: match block.input {
                            None => "{}".to_owned(),
                            Some(input) => {
                                serde_json::from_str::<Value>(input.get()).ok()?.to_string()
                            }
                        },
                    })),
                    _ => None,
                },
                Some("image" | "tool_result") => return None,
                Some(_) => None,
            };
            parts.extend(part);
        }
        let usage = self.usage.as_ref().map(|usage| {
            let mut wire = WireUsage::default();
            usage.merge_into(&mut wire);
            wire.canonical()
        });
        Some(ChatResponse {
            id: self.id.map(Cow::into_owned).unwrap_or_default(),
            model: self.model.map(Cow::into_owned).unwrap_or_default(),
            created: None,
            parts,
            finish_reason: self.stop_reason.as_deref().map(finish_reason_from),
            stop_sequence: owned(&self.stop_sequence),
            usage,
        })
    }
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
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut parts = Vec::new();
    for block in value
        .get("content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if let Ok(Some(part)) = decode_block(block, "content") {
            parts.push(part);
        }
    }
    let usage = value
        .get("usage")
        .filter(|usage| usage.is_object())
        .map(|usage| {
            let mut wire = WireUsage::default();
            wire.merge(usage);
            wire.canonical()
        });
    Ok(ChatResponse {
        id: text("id"),
        model: text("model"),
        created: None,
        parts,
        finish_reason: value
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(finish_reason_from),
        stop_sequence: value
            .get("stop_sequence")
            .and_then(Value::as_str)
            .map(str::to_owned),
        usage,
    })
}

/// Render a canonical response as an Anthropic `message`.
pub fn encode_response(response: &ChatResponse) -> Value {
    let mut content = Vec::with_capacity(response.parts.len());
    for part in &response.parts {
        content.push(match part {
            Part::Text(text) => json!({"type": "text", "text": text}),
            Part::Thinking { text, signature } => json!({
                "type": "thinking",
                "thinking": text,
                "signature": signature.as_deref().unwrap_or_default(),
            }),
            Part::RedactedThinking { data } => json!({"type": "redacted_thinking", "data": data}),
            Part::ToolCall(call) => json!({
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": tool_input(&call.arguments),
            }),
            Part::Image(_) | Part::ToolResult(_) => continue,
        });
    }
    let has_tool_calls = response
        .parts
        .iter()
        .any(|part| matches!(part, Part::ToolCall(_)));
    // Some OpenAI-compatible servers say `stop` after tool calls; Anthropic clients run tools only on
    // `tool_use`.
    let reason = match response.finish_reason.unwrap_or(FinishReason::Stop) {
        FinishReason::Stop if has_tool_calls => FinishReason::ToolCalls,
        reason => reason,
    };
    json!({
        "id": response.id,
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": stop_reason_str(reason),
        "stop_sequence": response.stop_sequence,
        "usage": usage_json(&response.usage.unwrap_or_default()),
    })
}

/// Tool arguments as an `input` object: invalid or non-object JSON (a truncated answer) is kept as a
/// string under `_raw` rather than lost.
pub(crate) fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => input,
        _ => json!({"_raw": arguments}),
    }
}

/// Render an Anthropic error body.
pub fn error_body(error_type: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type, "message": message}})
}

/// Render the echo backend's answer as an Anthropic `message`.
pub(crate) fn message_response(answer: &openai::TextAnswer<'_>) -> Value {
    json!({
        "id": answer.id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": [{"type": "text", "text": answer.text}],
        "stop_reason": stop_reason_str(answer.finish_reason),
        "stop_sequence": null,
        "usage": usage_json(&answer.usage),
    })
}

/// Render the echo backend's answer as Anthropic stream events `(event name, data)`, one text delta per
/// piece, in the exact order the Messages API uses.
pub(crate) fn message_stream(
    answer: &openai::TextAnswer<'_>,
    pieces: &[&str],
    input_tokens: u64,
) -> Vec<(&'static str, Value)> {
    let mut out = Vec::with_capacity(pieces.len() + 6);
    out.push((
        "message_start",
        json!({"type": "message_start", "message": {
            "id": answer.id,
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage_json(&Usage { input_tokens, output_tokens: 0, ..answer.usage }),
        }}),
    ));
    out.push((
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    out.push(("ping", json!({"type": "ping"})));
    for piece in pieces {
        out.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    out.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push((
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason_str(answer.finish_reason), "stop_sequence": null},
            "usage": usage_json(&answer.usage),
        }),
    ));
    out.push(("message_stop", json!({"type": "message_stop"})));
    out
}

/// The text `/v1/messages/count_tokens` counts: system, messages (tool calls and results included) and
/// the tool definitions, which Anthropic also bills as input.
pub(crate) fn count_tokens_input(req: &ChatRequest) -> String {
    let mut out = req.all_text();
    out.push_str(&tools_text(req));
    out
}

/// The tool definitions as [`count_tokens_input`] counts them (each after a newline).
pub(crate) fn tools_text(req: &ChatRequest) -> String {
    let mut out = String::new();
    for tool in &req.tools {
        out.push('\n');
        out.push_str(&tool.name);
        if let Some(description) = &tool.description {
            out.push('\n');
            out.push_str(description);
        }
        out.push('\n');
        out.push_str(tool.parameters.get());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        decode_request(body.as_bytes()).unwrap_err().message
    }

    #[test]
    fn decodes_blocks_tools_and_thinking() {
        let request = decode_request(
            br#"{"model":"claude","max_tokens":100,"system":[{"type":"text","text":"a"},{"type":"text","text":"b"}],
            "messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image","source":{"type":"url","url":"http://x/i.png"}}]},
            {"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"sig"},{"type":"redacted_thinking","data":"xx"},{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"42"}],"is_error":true}]}],
            "tools":[{"name":"f","input_schema":{"type":"object"}},{"type":"web_search_20250305","name":"web_search"}],
            "tool_choice":{"type":"any","disable_parallel_tool_use":true},"metadata":{"user_id":"u"},"stop_sequences":["END"]}"#,
        )
        .unwrap();
        assert_eq!(request.system, vec!["a", "b"]);
        assert_eq!(request.params.max_tokens, Some(100));
        assert_eq!(request.tools.len(), 1);
        assert_eq!(request.tool_choice, Some(ToolChoice::Required));
        assert_eq!(request.parallel_tool_calls, Some(false));
        assert_eq!(request.user.as_deref(), Some("u"));
        assert_eq!(
            request.messages[1].parts[0],
            Part::Thinking {
                text: "hm".into(),
                signature: Some("sig".into())
            }
        );
        assert_eq!(
            request.messages[2].parts[0],
            Part::ToolResult(ToolResult {
                tool_call_id: "t1".into(),
                content: "42".into(),
                is_error: true
            })
        );
    }

    #[test]
    fn names_what_was_wrong() {
        assert_eq!(
            err(r#"{"messages":[{"role":"user","content":"x"}]}"#),
            "missing required field 'max_tokens'"
        );
        assert_eq!(
            err(r#"{"max_tokens":5}"#),
            "missing required field 'messages'"
        );
        assert_eq!(
            err(r#"{"max_tokens":5,"messages":[]}"#),
            "'messages' must be a non-empty array of messages"
        );
        assert!(err(r#"{"max_tokens":"5","messages":[]}"#).starts_with("max_tokens: invalid type"));
        assert_eq!(
            err(r#"{"max_tokens":5,"messages":[{"role":"system","content":"x"}]}"#),
            "messages[0].role: unknown role 'system'; expected user or assistant"
        );
        assert_eq!(
            err(r#"{"max_tokens":5,"messages":[{"role":"user","content":5}]}"#),
            "messages[0].content: expected a string or an array of content blocks"
        );
        assert_eq!(
            err(r#"{"max_tokens":5,"messages":[{"role":"user","content":[{"type":"text"}]}]}"#),
            "missing required field 'messages[0].content[0].text'"
        );
        assert_eq!(err("[]"), "request body must be a JSON object");
    }

    #[test]
    fn encodes_with_default_max_tokens_and_merged_tool_results() {
        let request = openai::decode_chat(
            br#"{"model":"gpt","messages":[{"role":"system","content":"s"},{"role":"user","content":"q"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{}"}},{"id":"b","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},
            {"role":"tool","tool_call_id":"a","content":"1"},{"role":"tool","tool_call_id":"b","content":"2"}],"parallel_tool_calls":false,"tools":[{"type":"function","function":{"name":"f"}}]}"#,
        )
        .unwrap();
        let body = encode_request(&request, None, 4096).unwrap();
        assert_eq!(body["max_tokens"], 4096);
        assert_eq!(body["system"], "s");
        assert_eq!(body["messages"].as_array().unwrap().len(), 3);
        assert_eq!(body["messages"][2]["content"][1]["tool_use_id"], "b");
        assert_eq!(
            body["tool_choice"],
            json!({"type":"auto","disable_parallel_tool_use":true})
        );
        let counted = count_tokens_input(&request);
        assert!(counted.starts_with("s\nq"), "{counted}");
        assert!(
            counted.contains("{\"x\":1}") && counted.contains("\nf\n"),
            "{counted}"
        );
        let no_model = ChatRequest::default();
        assert_eq!(
            encode_request(&no_model, None, 1).unwrap_err().message,
            "missing required field 'model'"
        );
    }

    #[test]
    fn usage_excludes_cache_on_the_wire() {
        let mut wire = WireUsage::default();
        wire.merge(&json!({"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 1}));
        let usage = wire.canonical();
        assert_eq!(usage.input_tokens, 115);
        assert_eq!(usage_json(&usage)["input_tokens"], 10);
    }
}
