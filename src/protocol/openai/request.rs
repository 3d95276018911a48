//! Decoding OpenAI requests (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`) into
//! canonical requests: the wire structs and the typed path that defines the semantics.

use serde::Deserialize;
use serde_json::Value;

use bytes::Bytes;

use super::content::{Content, KeptText, ThinkingBlockWire, Unread, WireText};
use super::parse::{
    body_text, empty_messages, missing, parse, required_messages, tool_choice_word,
};
use crate::protocol::blank_strings::blank_long_strings;
use crate::protocol::sliced::Sliced;
use crate::protocol::{
    ApiRequest, ChatRequest, CompletionRequest, DecodeError, EmbeddingsRequest, Endpoint, Message,
    Part, RawJson, Role, SamplingParams, Tool, ToolCall, ToolChoice, ToolResult,
};

/// Decode an OpenAI-format request body for `endpoint` into its canonical form.
pub fn decode_request(endpoint: Endpoint, body: &[u8]) -> Result<ApiRequest, DecodeError> {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages => decode_chat(body).map(ApiRequest::Chat),
        Endpoint::Completions => decode_completion(body).map(ApiRequest::Completion),
        Endpoint::Embeddings => decode_embeddings(body).map(ApiRequest::Embeddings),
        Endpoint::Responses => crate::protocol::responses::decode_request(body)
            .map(|request| ApiRequest::Responses(Box::new(request))),
    }
}

/// Decode a `/v1/chat/completions` body.
pub fn decode_chat(body: &[u8]) -> Result<ChatRequest, DecodeError> {
    // The exact reader pays off on the small requests most clients send; a large body is most often
    // an agent's turn with tools, which it would read to the end only to give up on.
    if body.len() <= crate::protocol::exact_request::MAX_BODY
        && let Some(request) = crate::protocol::exact_request::chat(body)
    {
        return Ok(request);
    }
    decode_chat_typed(body)
}

/// The typed path of [`decode_chat`]: it defines the semantics and names what is wrong.
pub(crate) fn decode_chat_typed(body: &[u8]) -> Result<ChatRequest, DecodeError> {
    build(parse::<ChatWire<String, ReadMessages<String>>>(body)?)
}

/// [`decode_chat`] for a large body held as `Bytes`: its conversation's texts are slices of the body
/// (`protocol::sliced`), read neither by serde_json nor copied; what that reading does not accept goes
/// to the typed path, which names what is wrong.
pub fn decode_chat_sliced(body: &Bytes) -> Result<ChatRequest, DecodeError> {
    chat_sliced(body).map_or_else(|| decode_chat_typed(body), Ok)
}

fn chat_sliced(body: &Bytes) -> Option<ChatRequest> {
    let text = body_text(body).ok()?;
    // Every string `build` keeps from these members is a `Sliced` (or a raw value taken back from
    // the body); only the roles and part types are read from the copy, and those are never blanked.
    let wire: ChatWire<Sliced, ReadMessages<Sliced>> =
        crate::protocol::sliced::read(body, text, &["messages", "tools"])?;
    build(wire).ok()
}

/// The canonical request of a chat body's wire struct, whatever holds its texts.
fn build<T: KeptText>(mut wire: ChatWire<T, ReadMessages<T>>) -> Result<ChatRequest, DecodeError> {
    let read = match wire.messages.take() {
        None => return Err(missing("messages")),
        Some(read) if read.count == 0 => return Err(empty_messages()),
        Some(read) => read,
    };
    let mut request = head(&mut wire)?;
    if let Some(error) = read.error {
        return Err(error);
    }
    let mut messages = read.messages.into_iter().peekable();
    // Leading system and developer messages are the system prompt.
    while let Some(system) = messages.next_if(|message| message.role == Role::System) {
        request.system.push(system.into_text());
    }
    request.messages = messages.collect();
    for tool in wire.tools.unwrap_or_default() {
        request.tools.push(Tool {
            name: tool.function.name.into_string(),
            description: tool.function.description.map(T::into_string),
            parameters: tool
                .function
                .parameters
                .map_or_else(RawJson::empty_object_schema, T::raw_json),
        });
    }
    request.tool_choice = tool_choice(wire.tool_choice.take())?;
    Ok(request)
}

/// `messages[index]` made canonical.
fn message_of<T: KeptText>(index: usize, message: MessageWire<T>) -> Result<Message, DecodeError> {
    let role = role_at(index, message.role.as_deref())?;
    let mut parts = Vec::new();
    let thinking_blocks = message.thinking_blocks.unwrap_or_default();
    if thinking_blocks.is_empty() {
        if let Some(reasoning) = message
            .reasoning_content
            .or(message.reasoning)
            .filter(|text| !text.is_empty())
        {
            parts.push(Part::Thinking {
                text: reasoning.into_string(),
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
            tool_call_id: message.tool_call_id.map(T::into_string).unwrap_or_default(),
            content: text,
            is_error: false,
        }));
    } else if let Some(content) = message.content {
        parts.extend(content.into_parts());
    }
    for call in message.tool_calls.unwrap_or_default() {
        parts.push(Part::ToolCall(ToolCall {
            id: call.id.map(T::into_string).unwrap_or_default(),
            name: call.function.name.into_string(),
            arguments: call
                .function
                .arguments
                .map(T::into_text)
                .unwrap_or_default(),
        }));
    }
    Ok(Message {
        name: message.name.map(T::into_string),
        role,
        parts,
    })
}

/// `messages` as the typed readings take it: each message made canonical as soon as it is read, so
/// a long conversation is never held as wire structs and canonical messages at once. The first message
/// whose role is wrong is named after the whole body was read, as the body's other errors come first.
struct ReadMessages<T> {
    messages: Vec<Message>,
    count: usize,
    error: Option<DecodeError>,
    texts: std::marker::PhantomData<T>,
}

impl<'de, T: KeptText> Deserialize<'de> for ReadMessages<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(MessagesOf(std::marker::PhantomData))
    }
}

/// How the typed readings read `messages`, with texts held as `T`.
struct MessagesOf<T>(std::marker::PhantomData<T>);

impl<'de, T: KeptText> serde::de::Visitor<'de> for MessagesOf<T> {
    type Value = ReadMessages<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<ReadMessages<T>, A::Error> {
        let mut read = ReadMessages {
            messages: Vec::new(),
            count: 0,
            error: None,
            texts: std::marker::PhantomData,
        };
        while let Some(message) = seq.next_element::<MessageWire<T>>()? {
            let index = read.count;
            read.count += 1;
            if read.error.is_some() {
                continue;
            }
            match message_of(index, message) {
                Ok(message) => read.messages.push(message),
                Err(error) => read.error = Some(error),
            }
        }
        Ok(read)
    }
}

/// [`decode_chat`] for a route where nothing reads the conversation (`Snapshot::reads_messages`: a
/// plain pass-through, the body forwarded as received). The body is checked as the typed path checks
/// it, but its messages, system prompt and tools are not kept: the request says `messages_unread`.
/// Whatever this reading does not accept goes to the typed path, which names what is wrong.
pub fn decode_chat_unread(body: &[u8]) -> Result<ChatRequest, DecodeError> {
    chat_unread(body).map_or_else(|| decode_chat_typed(body), Ok)
}

fn chat_unread(body: &[u8]) -> Option<ChatRequest> {
    let text = body_text(body).ok()?;
    // Nothing kept comes from `messages` or `tools` but the roles, which a blanked string never
    // passes for; their long texts are checked by the blanking, not read again.
    let blanked = blank_long_strings(text, &["messages", "tools"]);
    let mut wire: ChatWire<Unread> =
        serde_json::from_str(blanked.as_deref().unwrap_or(text)).ok()?;
    let messages = required_messages(wire.messages.take()).ok()?;
    let mut request = head(&mut wire).ok()?;
    for (index, message) in messages.iter().enumerate() {
        role_at(index, message.role.as_deref()).ok()?;
    }
    request.tool_choice = tool_choice(wire.tool_choice.take()).ok()?;
    request.messages_unread = true;
    Some(request)
}

/// The request's fields besides its conversation and tools, as both readings of a chat body take them.
fn head<T: WireText, M>(wire: &mut ChatWire<T, M>) -> Result<ChatRequest, DecodeError> {
    Ok(ChatRequest {
        model: wire.model.take(),
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
        user: wire.user.take(),
        parallel_tool_calls: wire.parallel_tool_calls,
        ..ChatRequest::default()
    })
}

/// The role of `messages[index]`.
fn role_at(index: usize, role: Option<&str>) -> Result<Role, DecodeError> {
    Ok(match role {
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
    })
}

fn tool_choice(choice: Option<Value>) -> Result<Option<ToolChoice>, DecodeError> {
    Ok(match choice {
        None | Some(Value::Null) => None,
        Some(Value::String(choice)) => Some(tool_choice_word(&choice)?),
        Some(other) => match other.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(ToolChoice::Named(name.to_owned())),
            None => {
                return Err(DecodeError::new(
                    "tool_choice: expected {\"type\":\"function\",\"function\":{\"name\":…}}",
                    Some("tool_choice".into()),
                ));
            }
        },
    })
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

/// A chat body as the parser reads it; `T` is how its texts are held (see [`WireText`]), `M` its
/// messages (the typed readings' [`ReadMessages`]).
#[derive(Deserialize)]
#[serde(bound = "T: WireText, M: Deserialize<'de>")]
struct ChatWire<T: WireText = String, M = Vec<MessageWire<T>>> {
    model: Option<String>,
    messages: Option<M>,
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
    tools: Option<Vec<ToolWire<T>>>,
    tool_choice: Option<Value>,
    user: Option<String>,
    parallel_tool_calls: Option<bool>,
}

#[derive(Deserialize)]
struct StreamOptionsWire {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
struct MessageWire<T: WireText> {
    role: Option<String>,
    content: Option<Content<T>>,
    name: Option<T>,
    tool_calls: Option<Vec<ToolCallWire<T>>>,
    tool_call_id: Option<T>,
    reasoning_content: Option<T>,
    reasoning: Option<T>,
    thinking_blocks: Option<Vec<ThinkingBlockWire<T>>>,
}

#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
struct ToolCallWire<T> {
    id: Option<T>,
    function: FunctionCallWire<T>,
}

#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
struct FunctionCallWire<T> {
    name: T,
    arguments: Option<T>,
}

#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
struct ToolWire<T: WireText> {
    function: FunctionWire<T>,
}

#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
struct FunctionWire<T: WireText> {
    name: T,
    description: Option<T>,
    parameters: Option<T::Raw>,
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::Image;

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

    /// The property every unread reading holds on one body: it accepts what the typed reading accepts
    /// (but for the requests it `declines`, leaving them to the typed reading), keeps what `kept` leaves
    /// of the typed request, and where it refuses, the reading with its fallback (`checked`) gives the
    /// typed reading's error.
    pub(crate) fn unread_agrees<T: PartialEq + std::fmt::Debug>(
        body: &[u8],
        typed: Result<T, DecodeError>,
        unread: Option<T>,
        checked: Result<T, DecodeError>,
        declines: impl Fn(&T) -> bool,
        kept: impl FnOnce(T) -> T,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let text = String::from_utf8_lossy(body);
        match (typed, unread) {
            (Ok(typed), Some(unread)) => proptest::prop_assert_eq!(kept(typed), unread, "{}", text),
            (Ok(typed), None) => proptest::prop_assert!(declines(&typed), "declined: {}", text),
            (Err(typed), None) => {
                let error = checked.err().map(|e| (e.message, e.param));
                proptest::prop_assert_eq!(error, Some((typed.message, typed.param)));
            }
            (Err(typed), Some(_)) => proptest::prop_assert!(
                false,
                "accepted what the typed reading refuses ({}): {}",
                typed.message,
                text
            ),
        }
        Ok(())
    }

    /// The property every sliced reading holds on one body: what both it and the typed reading accept
    /// is written upstream as the same JSON by both writers ([`written_values`] of the canonical
    /// request `chat` gives), and otherwise it agrees as [`unread_agrees`] says, declining only bodies
    /// with nothing inside `members` to blank.
    pub(crate) fn sliced_agrees<T: PartialEq + std::fmt::Debug>(
        body: &[u8],
        typed: impl Fn() -> Result<T, DecodeError>,
        sliced: Option<T>,
        checked: Result<T, DecodeError>,
        members: &[&str],
        chat: impl Fn(&T) -> &ChatRequest,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        if let (Ok(typed), Some(sliced)) = (typed(), &sliced) {
            proptest::prop_assert_eq!(written_values(chat(&typed)), written_values(chat(sliced)));
        }
        let nothing_blanked = std::str::from_utf8(body)
            .map_or(true, |text| blank_long_strings(text, members).is_none());
        unread_agrees(
            body,
            typed(),
            sliced,
            checked,
            |_| nothing_blanked,
            |typed| typed,
        )
    }

    /// The table check of every unread reading: `accepted` bodies pass the typed reading and the unread
    /// one (`unread`, without its fallback); `refused` ones fail both, and the reading with its fallback
    /// (`checked`) gives the typed reading's error.
    pub(crate) fn check_unread_table<B: AsRef<[u8]>, T, U, V>(
        accepted: &[B],
        refused: &[B],
        typed: impl Fn(&[u8]) -> Result<T, DecodeError>,
        unread: impl Fn(&[u8]) -> Option<U>,
        checked: impl Fn(&[u8]) -> Result<V, DecodeError>,
    ) {
        for body in accepted.iter().map(AsRef::as_ref) {
            let text = String::from_utf8_lossy(body);
            assert!(typed(body).is_ok(), "{text}");
            assert!(unread(body).is_some(), "{text}");
        }
        for body in refused.iter().map(AsRef::as_ref) {
            let text = String::from_utf8_lossy(body);
            let typed = typed(body).map(|_| ()).map_err(|e| e.message);
            assert!(typed.is_err(), "{text}");
            assert!(unread(body).is_none(), "{text}");
            let checked = checked(body).map(|_| ()).map_err(|e| e.message);
            assert_eq!(typed, checked, "{text}");
        }
    }

    /// Every place in a JSON tree, as a list of steps from the root.
    fn places(value: &Value, at: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        out.push(at.clone());
        let children: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            Value::Object(members) => members.values().collect(),
            _ => Vec::new(),
        };
        for (index, child) in children.into_iter().enumerate() {
            at.push(index);
            places(child, at, out);
            at.pop();
        }
    }

    fn place_mut<'a>(value: &'a mut Value, steps: &[usize]) -> &'a mut Value {
        match steps.split_first() {
            None => value,
            Some((&step, rest)) => match value {
                Value::Array(items) => place_mut(&mut items[step], rest),
                Value::Object(members) => place_mut(members.values_mut().nth(step).unwrap(), rest),
                _ => unreachable!("places lists only containers' children"),
            },
        }
    }

    /// `written` (a JSON body) with the value at place `pick` of its tree (counted modulo the places,
    /// one more for none) replaced by `new`.
    pub(crate) fn with_one_value_replaced(written: &[u8], pick: usize, new: Value) -> Vec<u8> {
        let mut value: Value = serde_json::from_slice(written).unwrap();
        let mut all = Vec::new();
        places(&value, &mut Vec::new(), &mut all);
        if let Some(steps) = all.get(pick % (all.len() + 1)) {
            *place_mut(&mut value, steps) = new;
        }
        serde_json::to_vec(&value).unwrap()
    }

    /// A value of any JSON type to put in a request's place: the words both chat formats give
    /// meaning to, and containers shaped like their parts.
    pub(crate) fn replacement() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            Just(serde_json::json!(0.5)),
            Just(serde_json::json!(-1)),
            prop_oneof![
                Just("user"),
                Just("assistant"),
                Just("tool"),
                Just("system"),
                Just("bogus"),
                Just("auto"),
                Just("any"),
                Just("text"),
                Just("image"),
                Just("base64"),
                Just("url"),
                Just("tool_use"),
                Just("tool_result"),
                Just("thinking"),
                Just("redacted_thinking"),
                Just("a \"quoted\" line\n\u{e9}"),
            ]
            .prop_map(Value::from),
            Just(serde_json::json!([])),
            Just(serde_json::json!(["x", 1])),
            Just(serde_json::json!({})),
            Just(serde_json::json!({"type": "text", "text": "x"})),
            Just(serde_json::json!({"type": "tool_use", "id": "t", "name": "f"})),
            Just(serde_json::json!({"type": "url", "url": "http://x/i.png"})),
            Just(serde_json::json!({"role": "user"})),
            Just(serde_json::json!({"function": {"name": "f"}})),
        ]
    }

    proptest::proptest! {
        /// The reading that keeps no conversation accepts exactly the bodies the typed path accepts,
        /// agrees with it on everything it keeps, and gives the typed path's error for the others.
        /// Bodies: any canonical request as written, with one value anywhere in it (or none) replaced
        /// by a value of any type — most of those the typed path refuses.
        #[test]
        fn the_unread_reading_accepts_what_the_typed_path_accepts(
            request in crate::protocol::openai::any_chat_request(),
            pick in proptest::prelude::any::<usize>(),
            new in replacement(),
        ) {
            let written = crate::protocol::openai::encode_request_bytes(&request, Some("m"));
            let body = with_one_value_replaced(&written, pick, new);
            unread_agrees(
                &body,
                decode_chat_typed(&body),
                chat_unread(&body),
                decode_chat_unread(&body),
                |_| false,
                |typed| ChatRequest {
                    system: Vec::new(),
                    messages: Vec::new(),
                    tools: Vec::new(),
                    messages_unread: true,
                    ..typed
                },
            )?;
        }
    }

    /// Both writers' JSON for `request`, as trees: what a conversion sends upstream.
    pub(crate) fn written_values(request: &ChatRequest) -> (Value, Option<Value>) {
        let openai = crate::protocol::openai::encode_request_bytes(request, Some("m"));
        let anthropic =
            crate::protocol::anthropic::encode_request_bytes(request, Some("m"), 64).ok();
        (
            serde_json::from_slice(&openai).unwrap_or(Value::Null),
            anthropic.map(|body| serde_json::from_slice(&body).unwrap_or(Value::Null)),
        )
    }

    proptest::proptest! {
        /// The sliced reading (texts kept as slices of the body) accepts exactly the bodies the typed
        /// path accepts, reads the same request from them (every text, name, schema and image equal),
        /// which both writers write as the same JSON, and gives the typed path's error for the others.
        /// It declines only bodies with nothing to blank. Bodies as for the unread reading above.
        #[test]
        fn the_sliced_reading_reads_what_the_typed_path_reads(
            request in crate::protocol::openai::any_chat_request(),
            pick in proptest::prelude::any::<usize>(),
            new in replacement(),
        ) {
            let written = crate::protocol::openai::encode_request_bytes(&request, Some("m"));
            let body = Bytes::from(with_one_value_replaced(&written, pick, new));
            sliced_agrees(
                &body,
                || decode_chat_typed(&body),
                chat_sliced(&body),
                decode_chat_sliced(&body),
                &["messages", "tools"],
                |request| request,
            )?;
        }
    }

    /// The unread table holds for the sliced reading too, and what it reads from the accepted bodies
    /// is what the typed path reads.
    #[test]
    fn sliced_texts_are_checked_and_read_as_typed() {
        let accepted: [&[u8]; 3] = [
            br#"{"model":"m","messages":[{"role":"user","content":"a\u0000b \n ok, and more than sixteen bytes"}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"pair \ud83d\ude00, \u0041 and \\u0041"}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"\ud83d\ude00 long enough to be blanked"}]}]}"#,
        ];
        for body in accepted {
            let body = Bytes::from_static(body);
            assert_eq!(
                chat_sliced(&body).ok_or(()),
                decode_chat_typed(&body).map_err(|_| ())
            );
        }
        let refused: [&[u8]; 5] = [
            br#"{"model":"m","messages":[{"role":"user","content":"bad \ud800 surrogate in a long text"}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"bad \q escape in a long text"}]}"#,
            b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"raw \x01 control in a long text\"}]}",
            br#"{"model":"m","messages":[{"role":"user","content":"a long enough text"}],"tools":[{"function":{"name":"f","parameters":{"a":}}}]}"#,
            br#"{"model":"m","messages":[{"role":"wizard","content":"a long enough text"}]}"#,
        ];
        check_unread_table(
            &[] as &[&[u8]],
            &refused,
            decode_chat_typed,
            |body| chat_sliced(&Bytes::copy_from_slice(body)),
            |body| decode_chat_sliced(&Bytes::copy_from_slice(body)),
        );
    }

    /// Skipped texts are checked as decoded ones are: an escaped NUL, a surrogate pair or an escaped
    /// backslash before a `u` is text; a lone surrogate, a bad escape, a raw control character, a byte
    /// that is not UTF-8, a broken schema or a part of the wrong type is refused — anywhere in the
    /// conversation, and with the typed path's error.
    #[test]
    fn unread_texts_are_still_checked() {
        let accepted: [&[u8]; 3] = [
            br#"{"model":"m","messages":[{"role":"user","content":"a\u0000b \n ok"}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"pair \ud83d\ude00, \u0041 and \\u0041"}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"\ud83d\ude00"}]}]}"#,
        ];
        let refused: [&[u8]; 12] = [
            br#"{"model":"m","messages":[{"role":"user","content":"bad \ud800 surrogate"}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"bad \q escape"}]}"#,
            b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"raw \x01 control\"}]}",
            b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"bad \xff byte\"}]}",
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"function":{"name":"f","parameters":{"a":}}}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":7}]}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"\udc00"}]}]}"#,
            br#"{"model":"m","messages":[{"role":"tool","tool_call_id":"a\ud800","content":"x"}]}"#,
            br#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"\ud800\u0041"}}]}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":{"text":"x"}}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":true}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"function":{"name":7}}]}"#,
        ];
        check_unread_table(
            &accepted,
            &refused,
            decode_chat_typed,
            chat_unread,
            decode_chat_unread,
        );
    }
}
