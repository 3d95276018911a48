//! Decoding a `POST /v1/messages` body into a canonical chat request, typed or unread; its content-block
//! reader also serves the `Value` path of response decoding.

use bytes::Bytes;
use serde_json::Value;

use super::wire::{BlockItem, Loose, MessageContent, MessagesWire, ToolChoiceWire, ToolWire};
use crate::protocol::blank_strings::blank_long_strings;
use crate::protocol::openai::{
    KeptText, Unread, WireText, body_text, missing, parse, required_messages,
};
use crate::protocol::sliced::Sliced;
use crate::protocol::{
    ChatRequest, DecodeError, Image, Message, Part, Role, SamplingParams, Text, Tool, ToolCall,
    ToolChoice, ToolResult,
};

/// Decode a `POST /v1/messages` body into a canonical chat request.
pub fn decode_request(body: &[u8]) -> Result<ChatRequest, DecodeError> {
    build(parse::<MessagesWire>(body)?)
}

/// [`decode_request`] for a large body held as `Bytes`: its conversation's and tools' texts are slices
/// of the body (`protocol::sliced`), as a large chat body's are; what that reading does not accept
/// goes to the typed path, which names what is wrong.
pub fn decode_request_sliced(body: &Bytes) -> Result<ChatRequest, DecodeError> {
    request_sliced(body).map_or_else(|| decode_request(body), Ok)
}

fn request_sliced(body: &Bytes) -> Option<ChatRequest> {
    let text = body_text(body).ok()?;
    // Every string `build` keeps from these members is a `Sliced` (or a value taken back from the
    // body); only the roles and block types are read from the copy, and those are never blanked.
    // The system prompt is read as written.
    let wire: MessagesWire<Sliced> =
        crate::protocol::sliced::read(body, text, &["messages", "tools"])?;
    build(wire).ok()
}

/// The canonical request of a body's wire struct, whatever holds its texts.
fn build<T: KeptText>(mut wire: MessagesWire<T>) -> Result<ChatRequest, DecodeError> {
    let mut request = head(&mut wire)?;
    let messages = required_messages(wire.messages.take())?;
    request.system = system_parts(wire.system.as_ref())?;
    for (index, message) in messages.into_iter().enumerate() {
        let role = role_at(index, message.role.as_deref())?;
        // Paths are written only for an error: formatting one per block cost as much as a tenth
        // of an agent turn's decode.
        let path = || format!("messages[{index}].content");
        let parts = match message.content {
            None => return Err(missing(&path())),
            Some(MessageContent::Text(text)) => vec![Part::Text(text.into_text())],
            Some(MessageContent::Blocks(blocks)) => {
                let mut parts = Vec::with_capacity(blocks.len());
                for (position, block) in blocks.into_iter().enumerate() {
                    if let Some(part) = read_block(block, &|| format!("{}[{position}]", path()))? {
                        parts.push(part.into_part());
                    }
                }
                parts
            }
            Some(MessageContent::Other) => return Err(not_content(&path())),
        };
        request.messages.push(Message {
            role,
            parts,
            name: None,
        });
    }
    for tool in tools(&mut wire) {
        if let Some((name, description, parameters)) = tool? {
            request.tools.push(Tool {
                name: name.into_string(),
                description: description.map(T::into_string),
                parameters: T::raw_json(parameters),
            });
        }
    }
    tool_choice(wire.tool_choice.take(), &mut request)?;
    Ok(request)
}

/// [`decode_request`] for a route where nothing reads the conversation (`Snapshot::reads_messages`: an
/// Anthropic client's body forwarded as received to Anthropic backends). The body is checked as the
/// typed path checks it — every block's type and required members, every string's escapes — but its
/// messages and tools are not kept: the request says `messages_unread`. Whatever this reading does not
/// accept goes to the typed path, which names what is wrong.
pub fn decode_request_unread(body: &[u8]) -> Result<ChatRequest, DecodeError> {
    request_unread(body).map_or_else(|| decode_request(body), Ok)
}

fn request_unread(body: &[u8]) -> Option<ChatRequest> {
    let text = body_text(body).ok()?;
    // Nothing kept comes from these members: their long texts are checked by the blanking, not
    // read again (`blank_strings`).
    let blanked = blank_long_strings(text, &["messages", "system", "tools"]);
    let mut wire: MessagesWire<Unread> =
        serde_json::from_str(blanked.as_deref().unwrap_or(text)).ok()?;
    let mut request = head(&mut wire).ok()?;
    let messages = required_messages(wire.messages.take()).ok()?;
    system_parts(wire.system.as_ref()).ok()?;
    let no_path = String::new;
    for (index, message) in messages.into_iter().enumerate() {
        role_at(index, message.role.as_deref()).ok()?;
        match message.content? {
            MessageContent::Text(Unread) => {}
            MessageContent::Blocks(blocks) => {
                for block in blocks {
                    read_block(block, &no_path).ok()?;
                }
            }
            MessageContent::Other => return None,
        }
    }
    for tool in tools(&mut wire) {
        tool.ok()?;
    }
    tool_choice(wire.tool_choice.take(), &mut request).ok()?;
    request.messages_unread = true;
    Some(request)
}

/// The request's fields besides its conversation, system prompt and tools, as both readings take them.
fn head<T: WireText>(wire: &mut MessagesWire<T>) -> Result<ChatRequest, DecodeError> {
    let Some(max_tokens) = wire.max_tokens else {
        return Err(missing("max_tokens"));
    };
    Ok(ChatRequest {
        model: wire.model.take(),
        stream: wire.stream.unwrap_or(false),
        params: SamplingParams {
            max_tokens: Some(max_tokens),
            temperature: wire.temperature,
            top_p: wire.top_p,
            top_k: wire.top_k,
            stop: wire.stop_sequences.take().unwrap_or_default(),
            ..SamplingParams::default()
        },
        user: wire.metadata.take().and_then(|metadata| metadata.user_id),
        ..ChatRequest::default()
    })
}

/// The role of `messages[index]`.
fn role_at(index: usize, role: Option<&str>) -> Result<Role, DecodeError> {
    match role {
        Some("user") => Ok(Role::User),
        Some("assistant") => Ok(Role::Assistant),
        Some(other) => Err(DecodeError::new(
            format!("messages[{index}].role: unknown role '{other}'; expected user or assistant"),
            Some(format!("messages[{index}].role")),
        )),
        None => Err(missing(&format!("messages[{index}].role"))),
    }
}

fn not_content(path: &str) -> DecodeError {
    DecodeError::new(
        format!("{path}: expected a string or an array of content blocks"),
        Some(path.to_owned()),
    )
}

/// A tool's name, description and schema.
type ToolAt<T> = (T, Option<T>, <T as WireText>::Raw);

/// The request's tools, each as [`tool_at`] reads it.
fn tools<T: WireText>(
    wire: &mut MessagesWire<T>,
) -> impl Iterator<Item = Result<Option<ToolAt<T>>, DecodeError>> {
    let tools = wire.tools.take().unwrap_or_default();
    tools
        .into_iter()
        .enumerate()
        .map(|(index, tool)| tool_at(index, tool))
}

/// `tools[index]`: its name, description and schema, or `None` for a server tool (web search, code
/// execution, …), which has a `type` and no schema: the other side cannot run it, so it is dropped.
fn tool_at<T: WireText>(index: usize, tool: ToolWire<T>) -> Result<Option<ToolAt<T>>, DecodeError> {
    let Some(schema) = tool.input_schema else {
        if tool.kind.is_some() {
            return Ok(None);
        }
        return Err(missing(&format!("tools[{index}].input_schema")));
    };
    let Some(name) = tool.name else {
        return Err(missing(&format!("tools[{index}].name")));
    };
    Ok(Some((name, tool.description, schema)))
}

/// `tool_choice` into `request` (and `disable_parallel_tool_use` as `parallel_tool_calls: false`).
fn tool_choice(
    choice: Option<ToolChoiceWire>,
    request: &mut ChatRequest,
) -> Result<(), DecodeError> {
    let Some(choice) = choice else {
        return Ok(());
    };
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
    Ok(())
}

fn system_parts(system: Option<&Value>) -> Result<Vec<Text>, DecodeError> {
    match system {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![text.into()]),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .enumerate()
            .map(|(index, block)| {
                let path = format!("system[{index}].text");
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .map(Text::from)
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

/// A block member that must be a string.
fn string<T: WireText>(
    value: Option<Loose<T>>,
    key: &str,
    path: &dyn Fn() -> String,
) -> Result<T, DecodeError> {
    match value {
        Some(Loose::Text(text)) => Ok(text),
        None => Err(missing(&format!("{}.{key}", path()))),
        Some(Loose::Other) => Err(DecodeError::new(
            format!("{}.{key}: expected a string", path()),
            Some(format!("{}.{key}", path())),
        )),
    }
}

/// A content block as both readings take it: what it is, with the members its type requires checked
/// (`T = String` keeps their text, `T = Unread` only that they are strings).
pub(super) enum BlockPart<T: WireText> {
    Text(T),
    Image(Image),
    ToolUse {
        id: T,
        name: T,
        input: Option<T::Any>,
    },
    ToolResult {
        tool_use_id: T,
        content: Option<T::Any>,
        is_error: bool,
    },
    Thinking {
        text: T,
        signature: Option<Loose<T>>,
    },
    RedactedThinking {
        data: T,
    },
}

impl<T: KeptText> BlockPart<T> {
    fn into_part(self) -> Part {
        match self {
            BlockPart::Text(text) => Part::Text(text.into_text()),
            BlockPart::Image(image) => Part::Image(image),
            BlockPart::ToolUse { id, name, input } => Part::ToolCall(ToolCall {
                id: id.into_string(),
                name: name.into_string(),
                arguments: match input.map(T::any_value) {
                    None | Some(Value::Null) => "{}".into(),
                    Some(input) => serde_json::to_string(&input).unwrap_or_default().into(),
                },
            }),
            BlockPart::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => Part::ToolResult(ToolResult {
                tool_call_id: tool_use_id.into_string(),
                content: match content.map(T::any_string) {
                    // A string (a large body's: a slice of it) as it is.
                    Some(Ok(text)) => text,
                    Some(Err(Value::Array(blocks))) => blocks
                        .iter()
                        .filter_map(|block| block.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n")
                        .into(),
                    _ => Text::default(),
                },
                is_error,
            }),
            BlockPart::Thinking { text, signature } => Part::Thinking {
                text: text.into_string(),
                // An empty signature (thinking that came from an OpenAI-format backend) is as good as
                // none.
                signature: match signature {
                    Some(Loose::Text(signature)) if !signature.is_empty() => {
                        Some(signature.into_string())
                    }
                    _ => None,
                },
            },
            BlockPart::RedactedThinking { data } => Part::RedactedThinking {
                data: data.into_string(),
            },
        }
    }
}

/// One content block; `Ok(None)` for block types the canonical model deliberately drops. `path`
/// names the block in an error.
pub(super) fn decode_block(
    block: BlockItem,
    path: &dyn Fn() -> String,
) -> Result<Option<Part>, DecodeError> {
    Ok(read_block(block, path)?.map(BlockPart::into_part))
}

/// What [`decode_block`] reads, in either reading.
fn read_block<T: WireText>(
    block: BlockItem<T>,
    path: &dyn Fn() -> String,
) -> Result<Option<BlockPart<T>>, DecodeError> {
    let BlockItem::Block(block) = block else {
        return Err(missing(&format!("{}.type", path())));
    };
    let block = *block;
    let Some(Loose::Text(kind)) = block.kind else {
        return Err(missing(&format!("{}.type", path())));
    };
    Ok(Some(match kind.as_str() {
        "text" => BlockPart::Text(string(block.text, "text", path)?),
        "image" => {
            let source_path = || format!("{}.source", path());
            let Some(source) = block.source else {
                return Err(missing(&source_path()));
            };
            let mut source: Value = source.into();
            let mut member = |key: &str| match source.get_mut(key).map(Value::take) {
                Some(Value::String(text)) => Some(Loose::Text(text)),
                None | Some(Value::Null) => None,
                Some(_) => Some(Loose::Other),
            };
            match member("type") {
                Some(Loose::Text(kind)) if kind == "base64" => BlockPart::Image(Image::Base64 {
                    media_type: string(member("media_type"), "media_type", &source_path)?,
                    data: string(member("data"), "data", &source_path)?,
                }),
                Some(Loose::Text(kind)) if kind == "url" => {
                    BlockPart::Image(Image::Url(string(member("url"), "url", &source_path)?))
                }
                _ => return Ok(None),
            }
        }
        "tool_use" => BlockPart::ToolUse {
            id: string(block.id, "id", path)?,
            name: string(block.name, "name", path)?,
            input: block.input,
        },
        "tool_result" => BlockPart::ToolResult {
            tool_use_id: string(block.tool_use_id, "tool_use_id", path)?,
            content: block.content,
            is_error: block.is_error.as_ref().and_then(Value::as_bool) == Some(true),
        },
        "thinking" => BlockPart::Thinking {
            text: string(block.thinking, "thinking", path)?,
            signature: block.signature,
        },
        "redacted_thinking" => BlockPart::RedactedThinking {
            data: string(block.data, "data", path)?,
        },
        _ => return Ok(None),
    }))
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
        assert_eq!(
            err(r#"{"max_tokens":5,"messages":[{"role":"user","content":["x"]}]}"#),
            "missing required field 'messages[0].content[0].type'"
        );
        assert_eq!(
            err(
                r#"{"max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":{"a":[1]}}]}]}"#
            ),
            "messages[0].content[0].text: expected a string"
        );
        assert_eq!(
            err(
                r#"{"max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":7}}]}]}"#
            ),
            "messages[0].content[0].source.url: expected a string"
        );
        assert_eq!(err("[]"), "request body must be a JSON object");
    }

    /// Blocks are read member by member: unknown members and block types pass, a tool result's
    /// blocks give their text.
    #[test]
    fn reads_blocks_member_by_member() {
        let request = decode_request(
            br#"{"max_tokens":5,"messages":[{"role":"user","content":[
                {"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"a"},{"type":"image"},{"type":"text","text":"b"}],"is_error":true,"cache_control":{"type":"ephemeral"}},
                {"type":"document","source":{"type":"text","data":"d"}},
                {"type":"text","text":"x","citations":null}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            request.messages[0].parts,
            vec![
                Part::ToolResult(ToolResult {
                    tool_call_id: "t".into(),
                    content: "a\nb".into(),
                    is_error: true
                }),
                Part::Text("x".into()),
            ]
        );
    }

    proptest::proptest! {
        /// The reading that keeps no conversation accepts exactly the bodies the typed path accepts,
        /// agrees with it on everything it keeps, and gives the typed path's error for the others.
        /// Bodies: any canonical request as the Anthropic writer writes it, with one value anywhere in
        /// it (or none) replaced by a value of any type — most of those the typed path refuses.
        #[test]
        fn the_unread_reading_accepts_what_the_typed_path_accepts(
            request in crate::protocol::openai::any_chat_request(),
            pick in proptest::prelude::any::<usize>(),
            new in crate::protocol::openai::replacement(),
        ) {
            let Ok(written) = super::super::encode_request_bytes(&request, Some("m"), 64) else {
                return Ok(());
            };
            let body = crate::protocol::openai::with_one_value_replaced(&written, pick, new);
            crate::protocol::openai::unread_agrees(
                &body,
                decode_request(&body),
                request_unread(&body),
                decode_request_unread(&body),
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

    proptest::proptest! {
        /// The sliced reading (texts kept as slices of the body) accepts exactly the bodies the typed
        /// path accepts, reads the same request from them (every text, id, input, schema and image
        /// equal), which both writers write as the same JSON, and gives the typed path's error for the
        /// others. It declines only bodies with nothing to blank. Bodies as for the unread reading.
        #[test]
        fn the_sliced_reading_reads_what_the_typed_path_reads(
            request in crate::protocol::openai::any_chat_request(),
            pick in proptest::prelude::any::<usize>(),
            new in crate::protocol::openai::replacement(),
        ) {
            let Ok(written) = super::super::encode_request_bytes(&request, Some("m"), 64) else {
                return Ok(());
            };
            let body = Bytes::from(crate::protocol::openai::with_one_value_replaced(&written, pick, new));
            crate::protocol::openai::sliced_agrees(
                &body,
                || decode_request(&body),
                request_sliced(&body),
                decode_request_sliced(&body),
                &["messages", "tools"],
                |request| request,
            )?;
        }
    }

    /// Long texts of every kind are slices that read as the typed path reads them (escapes, surrogate
    /// pairs, tool inputs, tool results as a string or blocks, thinking, images, tool descriptions and
    /// schemas); a bad one is refused with the typed path's error.
    #[test]
    fn sliced_blocks_are_checked_and_read_as_typed() {
        let body = |messages: &str| {
            Bytes::from(format!(
                r#"{{"model":"m","max_tokens":5,"system":"a system prompt, long enough","messages":{messages},
                "tools":[{{"name":"a_tool_with_a_long_name","description":"Reads a file: \"path\" is relative","input_schema":{{"type":"object","properties":{{"path":{{"type":"string","description":"the path, relative to the root"}}}}}}}}]}}"#
            ))
        };
        let accepted = [
            body(r#"[{"role":"user","content":"a\u0000b \n ok \ud83d\ude00, long enough"}]"#),
            body(
                r#"[{"role":"user","content":[{"type":"text","text":"caf\u00e9 \ud83d\ude00 long enough to be blanked"},
                    {"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAAAAAAAAAAAAAAAAAAAAAAAAAA"}},
                    {"type":"image","source":{"type":"url","url":"https://example.com/a/long/path/to/an/image.png"}}]},
                {"role":"assistant","content":[{"type":"thinking","thinking":"thinking about it for a while","signature":"a signature that is long enough"},
                    {"type":"redacted_thinking","data":"redacted data that is long enough"},
                    {"type":"tool_use","id":"toolu_0123456789abcdef","name":"a_tool_with_a_long_name","input":{"path":"src/a/long/path/main.rs","n":[1,2.5,null]}},
                    {"type":"tool_use","id":"toolu_2","name":"f","input":"a string input, long enough"}]},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_0123456789abcdef","content":"fn main() {\n    println!(\"hi\");\n}\n"},
                    {"type":"tool_result","tool_use_id":"toolu_2","content":[{"type":"text","text":"a part of the result, long"},{"type":"text","text":"x"}],"is_error":true}]}]"#,
            ),
        ];
        for body in &accepted {
            let typed = decode_request(body).unwrap();
            assert_eq!(request_sliced(body).as_ref(), Some(&typed), "{body:?}");
        }
        let sliced = request_sliced(&accepted[1]).unwrap();
        assert_eq!(
            sliced.messages[2].parts[0],
            Part::ToolResult(ToolResult {
                tool_call_id: "toolu_0123456789abcdef".into(),
                content: "fn main() {\n    println!(\"hi\");\n}\n".into(),
                is_error: false,
            })
        );
        assert_eq!(
            sliced.tools[0].description.as_deref(),
            Some(r#"Reads a file: "path" is relative"#)
        );
        let refused = [
            body(r#"[{"role":"user","content":"bad \ud800 surrogate in a long text"}]"#),
            body(r#"[{"role":"user","content":[{"type":"text","text":"bad \q escape in a long text"}]}]"#),
            body("[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"raw \x01 control in a long text\"}]}]"),
            body(r#"[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"a":"\udc00 in a long string"}}]}]"#),
            body(r#"[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"\ud800 in a long result"}]}]"#),
            body(r#"[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"text":"\ud800 in a long block"}]}]}]"#),
            body(r#"[{"role":"user","content":[{"type":"tool_result","content":"a long enough result"}]}]"#),
            body(r#"[{"role":"assistant","content":[{"type":"tool_use","id":"a long enough id","input":{}}]}]"#),
            body(r#"[{"role":"user","content":[{"type":"image","source":{"type":"base64","data":"long enough data, no media type"}}]}]"#),
            body(r#"[{"role":"system","content":"a long enough text"}]"#),
            Bytes::from_static(br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"a long enough text"}],"tools":[{"name":"f","description":"bad \ud800 in a long description","input_schema":{}}]}"#),
            Bytes::from_static(br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"a long enough text"}],"tools":[{"name":"f","input_schema":{"a":}}]}"#),
        ];
        crate::protocol::openai::check_unread_table(
            &[] as &[Bytes],
            &refused,
            decode_request,
            |body| request_sliced(&Bytes::copy_from_slice(body)),
            |body| decode_request_sliced(&Bytes::copy_from_slice(body)),
        );
    }

    /// Unread texts are checked as decoded ones are — a lone surrogate, a bad escape, a raw control
    /// character, a byte that is not UTF-8 is refused in a text, a tool call's input, a tool result's
    /// content (string or blocks) or the system prompt — and so are blocks missing what their type
    /// requires; each with the typed path's error.
    #[test]
    fn unread_blocks_are_still_checked() {
        let body = |messages: &str| {
            format!(r#"{{"model":"m","max_tokens":5,"system":"s","messages":{messages}}}"#)
                .into_bytes()
        };
        let accepted = [
            body(r#"[{"role":"user","content":"a\u0000b \n ok \ud83d\ude00"}]"#),
            body(
                r#"[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"k\u0041":["\ud83d\ude00",1e3,null]}}]},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"x"},5]},{"type":"document"},{"type":"image","source":"x"}]}]"#,
            ),
        ];
        let refused = [
            body(r#"[{"role":"user","content":"bad \ud800 surrogate"}]"#),
            body(r#"[{"role":"user","content":[{"type":"text","text":"bad \q escape"}]}]"#),
            body("[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"raw \x01 control\"}]}]"),
            body(r#"[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"a":"\udc00"}}]}]"#),
            body(r#"[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"\ud800":1}}]}]"#),
            body(r#"[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":[1e999]}]}]"#),
            body(r#"[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"\ud800"}]}]"#),
            body(r#"[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"text":"\ud800"}]}]}]"#),
            body(r#"[{"role":"user","content":[{"type":"tool_result","content":"x"}]}]"#),
            body(r#"[{"role":"assistant","content":[{"type":"tool_use","id":"t","input":{}}]}]"#),
            body(r#"[{"role":"assistant","content":[{"type":"thinking","thinking":7}]}]"#),
            body(r#"[{"role":"assistant","content":[{"type":"redacted_thinking"}]}]"#),
            body(r#"[{"role":"user","content":[{"type":"image","source":{"type":"base64","data":"x"}}]}]"#),
            body(r#"[{"role":"user","content":[{"text":"x"}]}]"#),
            body(r#"[{"role":"user","content":{"text":"x"}}]"#),
            body(r#"[{"role":"system","content":"x"}]"#),
            br#"{"model":"m","max_tokens":5,"system":[{"type":"text"}],"messages":[{"role":"user","content":"x"}]}"#.to_vec(),
            br#"{"model":"m","max_tokens":5,"system":"\ud800","messages":[{"role":"user","content":"x"}]}"#.to_vec(),
            br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f","input_schema":{"a":}}]}"#.to_vec(),
            br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f"}]}"#.to_vec(),
            b"{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"bad \xff byte\"}]}".to_vec(),
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
