//! Responses request decoding: a `POST /v1/responses` body into the canonical chat request plus what
//! only this API has (`previous_response_id`, `store`, the echo of the request's members), tools,
//! `tool_choice`, the text format and reasoning; and continuing a stored conversation.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::ResponseEcho;
use super::input::{
    InputWire, check_item_list, join_items, push_item_list, push_items, push_raw_items,
};
use crate::protocol::blank_strings::blank_long_strings;
use crate::protocol::openai::{
    KeptText, Unread, WireText, body_text, missing, parse, parse_field, tool_choice_word,
};
use crate::protocol::sliced::Sliced;
use crate::protocol::{
    ChatRequest, DecodeError, Message, Part, RawJson, ResponseFormat, Role, SamplingParams, Text,
    Tool, ToolChoice,
};

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
    /// The `input` array of the request body (looked for there when needed: no copy, and no second
    /// read of the body for an answer that is stored but never continued).
    InBody,
    /// A string `input` as one user message item.
    Text(String),
    /// Not kept: nothing is stored and nothing continued (`store: false`, no `previous_response_id`).
    NotKept,
}

impl InputItems {
    /// The items' JSON text, from the body the request was decoded from.
    pub fn bytes(&self, body: &bytes::Bytes) -> bytes::Bytes {
        match self {
            InputItems::InBody => crate::protocol::json_text::member_range(body, "input")
                .map_or_else(
                    || bytes::Bytes::from_static(b"[]"),
                    |range| body.slice(range),
                ),
            InputItems::NotKept => bytes::Bytes::from_static(b"[]"),
            InputItems::Text(text) => bytes::Bytes::from(text.clone()),
        }
    }

    /// The items as an answer to the request stores them: the body they are in (copied when the
    /// answer is stored, [`super::StoredInput::detached`]), or our items for a string `input`.
    pub(crate) fn stored(&self, body: &bytes::Bytes) -> super::StoredInput {
        match self {
            InputItems::InBody => super::StoredInput::InBody(body.clone()),
            InputItems::NotKept | InputItems::Text(_) => {
                super::StoredInput::Items(self.bytes(body))
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a, T: WireText"))]
struct RequestWire<'a, T: WireText = String> {
    model: Option<String>,
    input: Option<InputWire<T>>,
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
    decode_wire::<_, String>(wire, read_input, |raw| Some(raw.get()))
}

/// [`decode_request`] for a large body held as `Bytes`: its input items' texts are slices of the body
/// (`protocol::sliced`), as a large chat body's are; what that reading does not accept goes to the
/// typed path, which names what is wrong.
pub fn decode_request_sliced(body: &Bytes) -> Result<ResponsesRequest, DecodeError> {
    request_sliced(body).map_or_else(|| decode_request(body), Ok)
}

fn request_sliced(body: &Bytes) -> Option<ResponsesRequest> {
    let text = body_text(body).ok()?;
    // Every string kept from the items and tools is a `Sliced` (or a value taken back from the
    // body); only the item, part and tool types and the roles are read from the copy, and those are
    // never blanked. What the answer echoes (`tools`, the other raw members) is the body's text.
    crate::protocol::sliced::read_with(body, text, &["input", "tools"], |copy| {
        let wire: RequestWire<'_, Sliced> = serde_json::from_str(copy).ok()?;
        decode_wire::<_, Sliced>(wire, read_input, |raw| {
            text.get(crate::protocol::sliced::body_range(raw.get())?)
        })
        .ok()
    })
}

/// A request's `input` into the canonical request (see [`decode_wire`]).
fn read_input<T: KeptText>(
    input: InputWire<T>,
    chat: &mut ChatRequest,
    keep: bool,
) -> Result<InputItems, DecodeError> {
    Ok(match input {
        InputWire::Text(content) => {
            let content = content.into_text();
            let mut items = Vec::with_capacity(content.written_len() + 54);
            items.extend_from_slice(br#"[{"type":"message","role":"user","content":"#);
            content.write_json(&mut items);
            items.extend_from_slice(b"}]");
            chat.messages.push(Message {
                role: Role::User,
                parts: vec![Part::Text(content)],
                name: None,
            });
            InputItems::Text(String::from_utf8(items).unwrap_or_default())
        }
        InputWire::Items(items) => {
            push_item_list(items, "input", chat)?;
            // The items as written are kept only for an answer that is stored or a conversation
            // that is continued.
            if keep {
                InputItems::InBody
            } else {
                InputItems::NotKept
            }
        }
    })
}

/// [`decode_request`] for a route where nothing reads the conversation (`Snapshot::reads_messages`: a
/// body forwarded as received to backends that speak Responses). The body is checked as the typed path
/// checks it, but its input items are not kept in the canonical request, which says `messages_unread`;
/// an answer to store still finds them in the body. A string `input` or a `previous_response_id` (whose
/// history joins the canonical request) goes to the typed path, as does whatever this reading does not
/// accept, so errors are the typed path's.
pub fn decode_request_unread(body: &[u8]) -> Result<ResponsesRequest, DecodeError> {
    request_unread(body).map_or_else(|| decode_request(body), Ok)
}

fn request_unread(body: &[u8]) -> Option<ResponsesRequest> {
    let text = body_text(body).ok()?;
    // Only `input`: the response echoes `tools`, `instructions` and the others as written. A stored
    // answer keeps the body itself.
    let blanked = blank_long_strings(text, &["input"]);
    let wire: RequestWire<'_, Unread> =
        serde_json::from_str(blanked.as_deref().unwrap_or(text)).ok()?;
    if wire.previous_response_id.is_some() {
        return None;
    }
    let mut request = decode_wire::<_, String>(
        wire,
        |input, _, keep| match input {
            InputWire::Text(Unread) => Err(missing("input")),
            InputWire::Items(items) => {
                check_item_list(&items, "input")?;
                Ok(if keep {
                    InputItems::InBody
                } else {
                    InputItems::NotKept
                })
            }
        },
        |raw| Some(raw.get()),
    )
    .ok()?;
    request.chat.messages_unread = true;
    Some(request)
}

/// Everything of a request but its `input`, which `read_input` reads into the canonical request and returns
/// as items (`keep`: an answer is to be stored or a conversation continued).
/// Tools are read with their texts as `K` holds them; `as_written` gives a raw member's JSON text as
/// the body wrote it (what the answer echoes), `None` when it cannot.
fn decode_wire<'a, 's, T: WireText, K: KeptText>(
    wire: RequestWire<'a, T>,
    read_input: impl FnOnce(InputWire<T>, &mut ChatRequest, bool) -> Result<InputItems, DecodeError>,
    as_written: impl Fn(&'a RawValue) -> Option<&'s str>,
) -> Result<ResponsesRequest, DecodeError> {
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
    let echo = echo_members(&wire, as_written)
        .ok_or_else(|| DecodeError::new("a member could not be echoed", None))?;
    let Some(input) = wire.input else {
        return Err(missing("input"));
    };
    let instructions = match wire.instructions {
        None => Vec::new(),
        Some(raw) => instructions_text(raw)?,
    };
    let mut chat = ChatRequest {
        model: wire.model,
        system: instructions.iter().map(Text::from).collect(),
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
    let keep = wire.store != Some(false) || wire.previous_response_id.is_some();
    let input_items = read_input(input, &mut chat, keep)?;
    if let Some(tools) = wire.tools {
        let tools: Vec<ToolWire<K>> = parse_field(tools, "tools")?;
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
    if memchr::memchr2(b'\n', b'\r', json.as_bytes()).is_some() {
        Cow::Owned(json.replace(['\n', '\r'], " "))
    } else {
        Cow::Borrowed(json)
    }
}

/// The members of the response object that repeat the request, in OpenAI's order, written into one
/// string.
fn echo_members<'a, 's, T: WireText>(
    wire: &RequestWire<'a, T>,
    as_written: impl Fn(&'a RawValue) -> Option<&'s str>,
) -> Option<ResponseEcho> {
    // `None` when a member is there but its text is not to be had; `Some(None)` when it is absent.
    let written = |value: Option<&'a RawValue>| match value {
        None => Some(None),
        Some(raw) => as_written(raw).map(Some),
    };
    let instructions = written(wire.instructions)?;
    let tools = written(wire.tools)?;
    let text = written(wire.text)?;
    let reasoning = written(wire.reasoning)?;
    let tool_choice = written(wire.tool_choice)?;
    let metadata = written(wire.metadata)?;
    let truncation = written(wire.truncation)?;
    let len = |value: Option<&str>| value.map_or(0, str::len);
    let mut out = String::with_capacity(
        400 + len(instructions)
            + len(tools)
            + len(text)
            + len(reasoning)
            + len(tool_choice)
            + len(metadata),
    );
    let raw = |out: &mut String, key: &str, value: Option<&str>, default: &str| {
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        out.push_str(&value.map_or(Cow::Borrowed(default), compact));
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
    raw(&mut out, "instructions", instructions, "null");
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
            .map(crate::protocol::json_patch::json_string),
    );
    raw(
        &mut out,
        "reasoning",
        reasoning,
        r#"{"effort":null,"summary":null}"#,
    );
    boolean(&mut out, "store", wire.store.unwrap_or(true));
    optional(&mut out, "temperature", wire.temperature.map(float_text));
    raw(&mut out, "text", text, r#"{"format":{"type":"text"}}"#);
    raw(&mut out, "tool_choice", tool_choice, r#""auto""#);
    raw(&mut out, "tools", tools, "[]");
    optional(&mut out, "top_p", wire.top_p.map(float_text));
    raw(&mut out, "truncation", truncation, r#""disabled""#);
    optional(
        &mut out,
        "user",
        wire.user
            .as_deref()
            .map(crate::protocol::json_patch::json_string),
    );
    raw(&mut out, "metadata", metadata, "{}");
    out.pop();
    Some(ResponseEcho(Arc::from(out)))
}

/// `n` as `Display` writes it (`0`, `0.7`, `-0`), whole numbers without the float formatter.
fn float_text(n: f64) -> String {
    // Whole numbers below 2^53 convert to `i64` exactly.
    if n.fract() == 0.0 && n.abs() < 9.0e15 && !(n == 0.0 && n.is_sign_negative()) {
        return itoa::Buffer::new().format(n as i64).to_owned();
    }
    n.to_string()
}

/// `instructions`: a string, or input items whose text becomes system parts.
fn instructions_text(raw: &RawValue) -> Result<Vec<String>, DecodeError> {
    if let Ok(text) = serde_json::from_str::<String>(raw.get()) {
        return Ok(vec![text]);
    }
    let mut holder = ChatRequest::default();
    push_raw_items(raw, "instructions", &mut holder)?;
    let mut out: Vec<String> = holder.system.into_iter().map(Text::into_string).collect();
    out.extend(holder.messages.iter().map(Message::text));
    Ok(out)
}

#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
struct ToolWire<T: WireText = String> {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<T>,
    description: Option<T>,
    parameters: Option<T::Raw>,
    /// A chat-completions-style tool (`{"type":"function","function":{…}}`), accepted as well.
    function: Option<FunctionWire<T>>,
}

#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
struct FunctionWire<T: WireText = String> {
    name: Option<T>,
    description: Option<T>,
    parameters: Option<T::Raw>,
}

impl<T: KeptText> ToolWire<T> {
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
            name: name?.into_string(),
            description: description.map(T::into_string),
            parameters: parameters.map_or_else(RawJson::empty_object_schema, T::raw_json),
        })
    }
}

fn tool_choice(raw: &RawValue) -> Result<Option<ToolChoice>, DecodeError> {
    let value: Value = parse_field(raw, "tool_choice")?;
    Ok(match &value {
        Value::Null => None,
        Value::String(choice) => Some(tool_choice_word(choice)?),
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
            system: self.instructions.iter().map(Text::from).collect(),
            messages: Vec::new(),
            ..std::mem::take(&mut self.chat)
        };
        push_items(&items, "input", &mut chat)?;
        self.chat = chat;
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        // Nothing stored, nothing continued: the items as written are not looked for.
        let unkept =
            decode_request(br#"{"input":[{"role":"user","content":"x"}],"store":false}"#).unwrap();
        assert_eq!(unkept.input_items, InputItems::NotKept);
        assert_eq!(unkept.chat.last_user_text().as_deref(), Some("x"));
        let continued = bytes::Bytes::from_static(
            br#"{"input":[{"role":"user","content":"y"}],"store":false,"previous_response_id":"resp_1"}"#,
        );
        let continued_request = decode_request(&continued).unwrap();
        assert_eq!(
            &continued_request.input_items.bytes(&continued)[..],
            br#"[{"role":"user","content":"y"}]"#
        );
        assert!(text.store);
    }

    #[test]
    fn names_what_was_wrong() {
        assert_eq!(err("{}"), "missing required field 'input'");
        assert!(err(r#"{"input":5}"#).starts_with(
            "input: invalid type: integer `5`, expected a string or an array of input items"
        ));
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
        // A stored conversation that is not JSON, or holds a wrong item, is named as the input.
        let mut request = decode_request(&body).unwrap();
        let error = request
            .continue_from(r#"[{"role":"user",]"#, "[]")
            .unwrap_err();
        assert!(
            error.message.starts_with("input: invalid JSON:"),
            "{}",
            error.message
        );
        let error = request
            .continue_from(r#"[{"role":"wizard","content":"x"}]"#, "[]")
            .unwrap_err();
        assert!(
            error.message.starts_with("input[0].role: unknown role"),
            "{}",
            error.message
        );
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

    proptest! {
        #[test]
        fn float_text_is_display(n in prop_oneof![any::<f64>(), Just(0.0), Just(-0.0), Just(2.0), Just(1e15), Just(-7.0)]) {
            prop_assert_eq!(float_text(n), n.to_string());
        }
    }

    proptest! {
        /// The reading that keeps no conversation accepts exactly the bodies the typed path accepts
        /// (but for a string `input` or a `previous_response_id`, which it leaves to the typed path),
        /// agrees with it on everything it keeps, and gives the typed path's error for the others.
        /// Bodies: any canonical request as the Responses writer writes it, with one value anywhere in
        /// it (or none) replaced by a value of any type.
        #[test]
        fn the_unread_reading_accepts_what_the_typed_path_accepts(
            request in crate::protocol::openai::any_chat_request(),
            pick in any::<usize>(),
            new in crate::protocol::openai::replacement(),
        ) {
            let written = serde_json::to_vec(&super::super::encode_request(&request, Some("m"))).unwrap();
            let body = crate::protocol::openai::with_one_value_replaced(&written, pick, new);
            crate::protocol::openai::unread_agrees(
                &body,
                decode_request(&body),
                request_unread(&body),
                decode_request_unread(&body),
                |typed| matches!(typed.input_items, InputItems::Text(_)) || typed.previous_response_id.is_some(),
                |typed| ResponsesRequest {
                    chat: ChatRequest {
                        system: typed.instructions.iter().map(Text::from).collect(),
                        messages: Vec::new(),
                        messages_unread: true,
                        ..typed.chat.clone()
                    },
                    ..typed
                },
            )?;
        }
    }

    proptest! {
        /// The sliced reading (input and tool texts kept as slices of the body) accepts exactly the
        /// bodies the typed path accepts, reads the same request from them (every text, id, name,
        /// argument, schema and image equal, the echo and the items as written), and gives the typed
        /// path's error for the others. It declines only bodies with nothing in `input` or `tools` to
        /// blank. Bodies as for the unread reading above.
        #[test]
        fn the_sliced_reading_reads_what_the_typed_path_reads(
            request in crate::protocol::openai::any_chat_request(),
            pick in any::<usize>(),
            new in crate::protocol::openai::replacement(),
        ) {
            let written = serde_json::to_vec(&super::super::encode_request(&request, Some("m"))).unwrap();
            let body = Bytes::from(crate::protocol::openai::with_one_value_replaced(&written, pick, new));
            crate::protocol::openai::sliced_agrees(
                &body,
                || decode_request(&body),
                request_sliced(&body),
                decode_request_sliced(&body),
                &["input", "tools"],
                |request| &request.chat,
            )?;
        }
    }

    /// Long input and tool texts of every kind are slices that read as the typed path reads them
    /// (escapes, surrogate pairs, object arguments, images, tool outputs in parts, reasoning, tool
    /// descriptions and schemas, echoed as written); a bad one is refused with the typed path's error.
    #[test]
    fn sliced_items_are_checked_and_read_as_typed() {
        let body = |items: &str| {
            Bytes::from(format!(
                r#"{{"model":"m","instructions":"be brief","input":{items},"tools":[{{"type":"function","name":"f"}},
                    {{"type":"function","name":"read_a_file_by_its_path","description":"Reads a file: \"path\" is relative","parameters":{{"type":"object","properties":{{"path":{{"type":"string","description":"the path, relative to the root"}}}}}}}},
                    {{"type":"function","function":{{"name":"a_chat_style_tool_name","description":"described in the chat style"}}}}],"tool_choice":"auto"}}"#
            ))
        };
        // A string `input` (not blanked: only strings inside the items are) is read as typed.
        let string_input = body(r#""a string input that is long enough to be blanked""#);
        assert_eq!(
            request_sliced(&string_input),
            Some(decode_request(&string_input).unwrap())
        );
        let accepted = [body(
            r#"[{"role":"developer","content":"a developer note, long enough"},
                {"role":"user","content":[{"type":"input_text","text":"caf\u00e9 \ud83d\ude00 long enough to be blanked"},
                    {"type":"input_image","image_url":"data:image/png;base64,AAAAAAAAAAAAAAAAAAAAAAAA"}]},
                {"type":"reasoning","summary":[{"type":"summary_text","text":"thinking about it for a while"}],"encrypted_content":"an encrypted blob of some length"},
                {"type":"function_call","call_id":"call_0123456789abcdef","name":"a_long_function_name","arguments":"{\"path\":\"src/main.rs\"}"},
                {"type":"function_call","call_id":"c2","name":"f","arguments":{"k":["object arguments, long ones"]}},
                {"type":"function_call_output","call_id":"call_0123456789abcdef","output":"fn main() {\n    println!(\"hi\");\n}\n"},
                {"type":"function_call_output","call_id":"c2","output":[{"type":"input_text","text":"a part of the output, long"},{"type":"input_text","text":"x"}]},
                {"role":"assistant","content":[{"type":"refusal","refusal":"a refusal that is long enough"}]}]"#,
        )];
        for body in &accepted {
            let typed = decode_request(body).unwrap();
            assert_eq!(request_sliced(body).as_ref(), Some(&typed), "{body:?}");
        }
        let sliced = request_sliced(&accepted[0]).unwrap();
        let Part::ToolCall(call) = &sliced.chat.messages[1].parts[1] else {
            panic!("{:?}", sliced.chat.messages[1]);
        };
        assert_eq!(call.arguments, r#"{"path":"src/main.rs"}"#);
        let Part::ToolCall(call) = &sliced.chat.messages[1].parts[2] else {
            panic!("{:?}", sliced.chat.messages[1]);
        };
        assert_eq!(call.arguments, r#"{"k":["object arguments, long ones"]}"#);
        // Tools are read from the body, and echoed as it wrote them.
        assert_eq!(sliced.chat.tools.len(), 3);
        assert_eq!(
            sliced.chat.tools[1].description.as_deref(),
            Some(r#"Reads a file: "path" is relative"#)
        );
        assert!(
            sliced
                .echo
                .as_str()
                .contains(r#""description":"the path, relative to the root""#)
        );
        let refused = [
            body(r#"[{"role":"user","content":"bad \ud800 surrogate in a long text"}]"#),
            body(
                r#"[{"role":"user","content":[{"type":"input_text","text":"bad \q escape in a long text"}]}]"#,
            ),
            body("[{\"role\":\"user\",\"content\":\"raw \x01 control in a long text\"}]"),
            body(
                r#"[{"type":"function_call","call_id":"c","name":"f","arguments":"bad \udc00 in long arguments"}]"#,
            ),
            body(
                r#"[{"type":"function_call","call_id":"c","name":"f","arguments":{"a":"\udc00 in a long string"}}]"#,
            ),
            body(
                r#"[{"type":"function_call_output","call_id":"c","output":"\ud800 in a long output text"}]"#,
            ),
            body(r#"[{"type":"function_call","name":"a name that is long enough"}]"#),
            body(r#"[{"role":"wizard","content":"a long enough text to blank"}]"#),
            // A bad string in the tools, which are blanked too.
            Bytes::from_static(
                br#"{"model":"m","input":[{"role":"user","content":"a long enough text to blank"}],"tools":[{"type":"function","name":"f","description":"bad \ud800 surrogate in a description"}]}"#,
            ),
            Bytes::from_static(
                br#"{"model":"m","input":[{"role":"user","content":"a long enough text to blank"}],"tools":[{"type":"function","name":"f","parameters":{"a":}}]}"#,
            ),
        ];
        crate::protocol::openai::check_unread_table(
            &[] as &[Bytes],
            &refused,
            decode_request,
            |body| request_sliced(&Bytes::copy_from_slice(body)),
            |body| decode_request_sliced(&Bytes::copy_from_slice(body)),
        );
    }

    /// Unread items are checked as decoded ones are: a lone surrogate or bad escape in a text, a
    /// function call's arguments or an encrypted reasoning blob, an item without a type or role, a
    /// message of an unknown role, a call without its id or name — each refused with the typed path's
    /// error.
    #[test]
    fn unread_items_are_still_checked() {
        let body =
            |items: &str| format!(r#"{{"model":"m","store":false,"input":{items}}}"#).into_bytes();
        let accepted = [body(
            r#"[{"role":"user","content":"a\u0000b \ud83d\ude00"},{"type":"reasoning","summary":[{"text":"s"}],"encrypted_content":"e"},
                {"type":"function_call","call_id":"c","name":"f","arguments":{"k":["\ud83d\ude00"]}},{"type":"function_call_output","call_id":"c","output":[{"type":"input_text","text":"x"}]},
                {"type":"web_search_call"}]"#,
        )];
        let refused = [
            body(r#"[{"role":"user","content":"bad \ud800 surrogate"}]"#),
            body(r#"[{"role":"user","content":[{"type":"input_text","text":"bad \q escape"}]}]"#),
            body(
                r#"[{"type":"function_call","call_id":"c","name":"f","arguments":{"a":"\udc00"}}]"#,
            ),
            body(r#"[{"type":"reasoning","encrypted_content":"\ud800"}]"#),
            body(r#"[{"type":"function_call_output","call_id":"c","output":"\ud800"}]"#),
            body(r#"[{"content":"x"}]"#),
            body(r#"[{"role":"robot","content":"x"}]"#),
            body(r#"[{"type":"function_call","name":"f"}]"#),
            body(r#"[{"type":"function_call","call_id":"c"}]"#),
            body(r#"[{"type":"function_call_output","output":"x"}]"#),
            body(r#"[{"role":"user","content":7}]"#),
            body(r#"[{"role":"user","content":[{"type":"input_text","text":7}]}]"#),
            body("[{\"role\":\"user\",\"content\":\"raw \x01 control\"}]"),
        ];
        crate::protocol::openai::check_unread_table(
            &accepted,
            &refused,
            decode_request,
            request_unread,
            decode_request_unread,
        );
    }
}
