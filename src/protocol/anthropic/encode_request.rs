//! Encoding a canonical chat request as an Anthropic Messages body: system parts lifted, turns merged,
//! tool arguments as objects, a reasoning effort as a thinking budget.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::protocol::json_text::{write_str, write_u64};
use crate::protocol::openai::missing;
use crate::protocol::{
    ChatRequest, DecodeError, Image, Part, Piece, RawJson, Role, Text, ToolChoice,
};

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
    let mut out = Vec::with_capacity(req.encoded_len_hint());
    body.write(&mut out);
    Ok(out)
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
    Text(Piece<'a>),
    Blocks(Vec<BlockOut<'a>>),
}

/// A tool call's `input`: its arguments as the client wrote them (read to be one JSON object, not
/// built into a tree), or an empty object for none.
struct InputOut<'a>(Option<&'a RawValue>);

impl Serialize for InputOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(raw) => raw.serialize(serializer),
            None => Map::new().serialize(serializer),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockOut<'a> {
    Text {
        text: Piece<'a>,
    },
    Image {
        source: ImageSourceOut<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: InputOut<'a>,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a Text,
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
        let mut system: Vec<&str> = req.system.iter().map(Text::as_str).collect();
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
                    [BlockOut::Text { text }] => ContentOut::Text(*text),
                    _ => ContentOut::Blocks(blocks),
                },
            })
            .collect();
        let system = match system.as_slice() {
            [only] => SystemOut::One(only),
            many => SystemOut::Blocks(
                many.iter()
                    .map(|text| BlockOut::Text {
                        text: Piece::Str(text),
                    })
                    .collect(),
            ),
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

impl RequestOut<'_> {
    /// The body as `serde_json` writes this struct (field order, skipped fields, internally tagged
    /// blocks), written by hand: `serde_json` escapes a string a byte at a time, [`write_str`] copies
    /// the runs between escapes whole — 2.1M of the 5.7M instructions of a 250 KB agent turn converted
    /// the first way. The serde derive stays the oracle (`written_bytes_are_the_serde_form`).
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"model":"#);
        write_str(out, self.model);
        out.extend_from_slice(br#","max_tokens":"#);
        write_u64(out, self.max_tokens);
        match &self.system {
            system if system.is_empty() => {}
            SystemOut::One(text) => {
                out.extend_from_slice(br#","system":"#);
                write_str(out, text);
            }
            SystemOut::Blocks(blocks) => {
                out.extend_from_slice(br#","system":"#);
                write_blocks(out, blocks);
            }
        }
        out.extend_from_slice(br#","messages":"#);
        write_array(out, &self.messages, |out, turn| {
            out.extend_from_slice(br#"{"role":"#);
            write_str(out, turn.role);
            out.extend_from_slice(br#","content":"#);
            match &turn.content {
                ContentOut::Text(text) => text.write_json(out),
                ContentOut::Blocks(blocks) => write_blocks(out, blocks),
            }
            out.push(b'}');
        });
        if !self.stop_sequences.is_empty() {
            out.extend_from_slice(br#","stop_sequences":"#);
            write_array(out, self.stop_sequences, |out, stop| write_str(out, stop));
        }
        for (name, value) in [
            (&br#","temperature":"#[..], self.temperature),
            (br#","top_p":"#, self.top_p),
        ] {
            if let Some(value) = value {
                out.extend_from_slice(name);
                write_value(out, &value);
            }
        }
        if let Some(top_k) = self.top_k {
            out.extend_from_slice(br#","top_k":"#);
            write_u64(out, top_k);
        }
        if self.stream {
            out.extend_from_slice(br#","stream":true"#);
        }
        if let Some(metadata) = &self.metadata {
            out.extend_from_slice(br#","metadata":{"user_id":"#);
            write_str(out, metadata.user_id);
            out.push(b'}');
        }
        if !self.tools.is_empty() {
            out.extend_from_slice(br#","tools":"#);
            write_array(out, &self.tools, |out, tool| {
                out.extend_from_slice(br#"{"name":"#);
                write_str(out, tool.name);
                if let Some(description) = tool.description {
                    out.extend_from_slice(br#","description":"#);
                    write_str(out, description);
                }
                out.extend_from_slice(br#","input_schema":"#);
                out.extend_from_slice(tool.input_schema.get().as_bytes());
                out.push(b'}');
            });
        }
        if let Some(choice) = &self.tool_choice {
            out.extend_from_slice(br#","tool_choice":{"type":"#);
            write_str(out, choice.kind);
            if let Some(name) = choice.name {
                out.extend_from_slice(br#","name":"#);
                write_str(out, name);
            }
            if let Some(disable) = choice.disable_parallel_tool_use {
                out.extend_from_slice(br#","disable_parallel_tool_use":"#);
                out.extend_from_slice(if disable { b"true" } else { b"false" });
            }
            out.push(b'}');
        }
        if let Some(thinking) = &self.thinking {
            out.extend_from_slice(br#","thinking":{"type":"#);
            write_str(out, thinking.kind);
            out.extend_from_slice(br#","budget_tokens":"#);
            write_u64(out, thinking.budget_tokens);
            out.push(b'}');
        }
        out.push(b'}');
    }
}

/// Content blocks, each `{"type":…}` first as the internally tagged enum writes them.
fn write_blocks(out: &mut Vec<u8>, blocks: &[BlockOut<'_>]) {
    write_array(out, blocks, |out, block| {
        match block {
            BlockOut::Text { text } => {
                out.extend_from_slice(br#"{"type":"text","text":"#);
                text.write_json(out);
            }
            BlockOut::Image {
                source: ImageSourceOut::Url { url },
            } => {
                out.extend_from_slice(br#"{"type":"image","source":{"type":"url","url":"#);
                write_str(out, url);
                out.push(b'}');
            }
            BlockOut::Image {
                source: ImageSourceOut::Base64 { media_type, data },
            } => {
                out.extend_from_slice(
                    br#"{"type":"image","source":{"type":"base64","media_type":"#,
                );
                write_str(out, media_type);
                out.extend_from_slice(br#","data":"#);
                write_str(out, data);
                out.push(b'}');
            }
            BlockOut::ToolUse { id, name, input } => {
                out.extend_from_slice(br#"{"type":"tool_use","id":"#);
                write_str(out, id);
                out.extend_from_slice(br#","name":"#);
                write_str(out, name);
                out.extend_from_slice(br#","input":"#);
                out.extend_from_slice(input.0.map_or("{}", RawValue::get).as_bytes());
            }
            BlockOut::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => {
                out.extend_from_slice(br#"{"type":"tool_result","tool_use_id":"#);
                write_str(out, tool_use_id);
                out.extend_from_slice(br#","content":"#);
                content.write_json(out);
                if *is_error {
                    out.extend_from_slice(br#","is_error":true"#);
                }
            }
            BlockOut::Thinking {
                thinking,
                signature,
            } => {
                out.extend_from_slice(br#"{"type":"thinking","thinking":"#);
                write_str(out, thinking);
                out.extend_from_slice(br#","signature":"#);
                write_str(out, signature);
            }
            BlockOut::RedactedThinking { data } => {
                out.extend_from_slice(br#"{"type":"redacted_thinking","data":"#);
                write_str(out, data);
            }
        }
        out.push(b'}');
    });
}

/// `[…]`, each item written by `item`.
fn write_array<T>(out: &mut Vec<u8>, items: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (index, each) in items.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        item(out, each);
    }
    out.push(b']');
}

/// A small value (a tool call's input, a float) as `serde_json` writes it.
fn write_value(out: &mut Vec<u8>, value: &impl Serialize) {
    // Writing into a `Vec` fails only for a value serde_json cannot represent, and these are a
    // `Value` and finite-or-not floats (written as `null`), which it always can.
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

fn is_tool_result(block: &BlockOut<'_>) -> bool {
    matches!(block, BlockOut::ToolResult { .. })
}

fn encode_block(part: &Part, index: usize) -> Result<Option<BlockOut<'_>>, DecodeError> {
    Ok(Some(match part {
        Part::Text(text) if text.is_empty() => return Ok(None),
        Part::Text(text) => BlockOut::Text {
            text: Piece::Text(text),
        },
        Part::Image(Image::Url(url)) => BlockOut::Image {
            source: ImageSourceOut::Url { url },
        },
        Part::Image(Image::Base64 { media_type, data }) => BlockOut::Image {
            source: ImageSourceOut::Base64 { media_type, data },
        },
        Part::ToolCall(call) => {
            // Read as JSON, not built into a tree: the object goes upstream as written.
            let input = if call.arguments.trim().is_empty() {
                InputOut(None)
            } else {
                match serde_json::from_str::<&RawValue>(&call.arguments) {
                    Ok(input) if input.get().starts_with('{') => InputOut(Some(input)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::anthropic::count_tokens_input;
    use crate::protocol::openai;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// The hand-written body is byte for byte what the serde derive writes.
        #[test]
        fn written_bytes_are_the_serde_form(
            request in openai::any_chat_request(),
            model in proptest::option::of("(\\PC|[\"\\\\\n]){0,6}"),
            effort in proptest::option::of(prop_oneof![Just("low"), Just("high"), Just("other")]),
            default_max_tokens in 0..10_000u64,
        ) {
            let mut request = request;
            request.reasoning_effort = effort.map(str::to_owned);
            // Most tool calls with arguments Anthropic takes (an object), the rest refused alike.
            let mut calls = 0;
            for part in request.messages.iter_mut().flat_map(|message| &mut message.parts) {
                if let Part::ToolCall(call) = part {
                    calls += 1;
                    if calls % 3 != 0 {
                        call.arguments = json!({"n": calls, "text": call.arguments, "f": 0.5}).to_string().into();
                    }
                }
            }
            if let Ok(body) = RequestOut::new(&request, model.as_deref(), default_max_tokens) {
                let mut written = Vec::new();
                body.write(&mut written);
                let oracle = serde_json::to_vec(&body).unwrap();
                prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(oracle).unwrap());
            }
        }
    }

    /// A tool call's arguments go upstream as the client wrote them: a number no float holds keeps its
    /// digits, escapes and spacing stay; none is an empty object; anything but an object is refused.
    #[test]
    fn tool_call_arguments_go_upstream_as_written() {
        let body = |arguments: &str| {
            let request = openai::decode_chat(
                format!(
                    r#"{{"model":"m","messages":[{{"role":"user","content":"q"}},{{"role":"assistant","tool_calls":[{{"id":"a","type":"function","function":{{"name":"f","arguments":{}}}}}]}}]}}"#,
                    serde_json::to_string(arguments).unwrap()
                )
                .as_bytes(),
            )
            .unwrap();
            encode_request_bytes(&request, None, 64).map(|bytes| String::from_utf8(bytes).unwrap())
        };
        let written = r#"{ "n": 123456789012345678901234567890, "s": "caf\u00e9 \"q\"" }"#;
        let sent = body(written).unwrap();
        assert!(
            sent.contains(&format!(r#""name":"f","input":{written}}}"#)),
            "{sent}"
        );
        assert!(body("  ").unwrap().contains(r#""input":{}}"#));
        for refused in ["[1]", "\"text\"", "{\"a\":", "1 2"] {
            let error = body(refused).unwrap_err();
            assert!(
                error
                    .message
                    .contains("arguments of tool call 'a' are not a JSON object"),
                "{refused}: {}",
                error.message
            );
        }
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
}
