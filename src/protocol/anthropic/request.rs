//! Decoding a `POST /v1/messages` body into a canonical chat request; its content-block reader also
//! serves the `Value` path of response decoding.

use serde::Deserialize;
use serde::de;
use serde_json::Value;

use crate::protocol::openai::{missing, parse, required_messages};
use crate::protocol::{
    ChatRequest, DecodeError, Image, Message, Part, RawJson, Role, SamplingParams, Tool, ToolCall,
    ToolChoice, ToolResult,
};

/// Decode a `POST /v1/messages` body into a canonical chat request.
pub fn decode_request(body: &[u8]) -> Result<ChatRequest, DecodeError> {
    let wire: MessagesWire = parse(body)?;
    let Some(max_tokens) = wire.max_tokens else {
        return Err(missing("max_tokens"));
    };
    let messages = required_messages(wire.messages)?;
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
        // Paths are written only for an error: formatting one per block cost as much as a tenth
        // of an agent turn's decode.
        let path = || format!("messages[{index}].content");
        let parts = match message.content {
            None => return Err(missing(&path())),
            Some(Shape::Text(text)) => vec![Part::Text(text)],
            Some(Shape::Array(blocks)) => {
                let mut parts = Vec::with_capacity(blocks.len());
                for (position, block) in blocks.into_iter().enumerate() {
                    if let Some(part) = decode_block(block, &|| format!("{}[{position}]", path()))?
                    {
                        parts.push(part);
                    }
                }
                parts
            }
            Some(Shape::Other) => {
                return Err(DecodeError::new(
                    format!(
                        "{}: expected a string or an array of content blocks",
                        path()
                    ),
                    Some(path()),
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

/// A block member that must be a string.
fn string(
    value: Option<Loose>,
    key: &str,
    path: &dyn Fn() -> String,
) -> Result<String, DecodeError> {
    match value {
        Some(Loose::Text(text)) => Ok(text),
        None => Err(missing(&format!("{}.{key}", path()))),
        Some(Loose::Other) => Err(DecodeError::new(
            format!("{}.{key}: expected a string", path()),
            Some(format!("{}.{key}", path())),
        )),
    }
}

/// One content block; `Ok(None)` for block types the canonical model deliberately drops. `path`
/// names the block in an error.
pub(super) fn decode_block(
    block: BlockItem,
    path: &dyn Fn() -> String,
) -> Result<Option<Part>, DecodeError> {
    let BlockItem::Block(block) = block else {
        return Err(missing(&format!("{}.type", path())));
    };
    let block = *block;
    let Some(Loose::Text(kind)) = block.kind else {
        return Err(missing(&format!("{}.type", path())));
    };
    Ok(Some(match kind.as_str() {
        "text" => Part::Text(string(block.text, "text", path)?),
        "image" => {
            let source_path = || format!("{}.source", path());
            let Some(mut source) = block.source else {
                return Err(missing(&source_path()));
            };
            let mut member = |key: &str| match source.get_mut(key).map(Value::take) {
                Some(Value::String(text)) => Some(Loose::Text(text)),
                None | Some(Value::Null) => None,
                Some(_) => Some(Loose::Other),
            };
            match member("type") {
                Some(Loose::Text(kind)) if kind == "base64" => Part::Image(Image::Base64 {
                    media_type: string(member("media_type"), "media_type", &source_path)?,
                    data: string(member("data"), "data", &source_path)?,
                }),
                Some(Loose::Text(kind)) if kind == "url" => {
                    Part::Image(Image::Url(string(member("url"), "url", &source_path)?))
                }
                _ => return Ok(None),
            }
        }
        "tool_use" => Part::ToolCall(ToolCall {
            id: string(block.id, "id", path)?,
            name: string(block.name, "name", path)?,
            arguments: match block.input {
                None | Some(Value::Null) => "{}".to_owned(),
                Some(input) => input.to_string(),
            },
        }),
        "tool_result" => Part::ToolResult(ToolResult {
            tool_call_id: string(block.tool_use_id, "tool_use_id", path)?,
            content: match block.content {
                Some(Shape::Text(text)) => text,
                Some(Shape::Array(blocks)) => blocks
                    .iter()
                    .filter_map(|block| block.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                Some(Shape::Other) | None => String::new(),
            },
            is_error: block.is_error.as_ref().and_then(Value::as_bool) == Some(true),
        }),
        "thinking" => Part::Thinking {
            text: string(block.thinking, "thinking", path)?,
            // An empty signature (thinking that came from an OpenAI-format backend) is as good as none.
            signature: match block.signature {
                Some(Loose::Text(signature)) if !signature.is_empty() => Some(signature),
                _ => None,
            },
        },
        "redacted_thinking" => Part::RedactedThinking {
            data: string(block.data, "data", path)?,
        },
        _ => return Ok(None),
    }))
}

/// The visits of the scalars other than strings (booleans, numbers, `null` outside an `Option`), each
/// read as one value: `Other` for the loose readers below.
macro_rules! scalars_read_as {
    ($value:ty, $other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$value, E> {
            Ok($other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$value, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$value, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$value, E> {
            Ok($other)
        }
        fn visit_unit<E: de::Error>(self) -> Result<$value, E> {
            Ok($other)
        }
    };
}

/// A block member read as whatever it is, for the decoder to judge: a string, or anything else (`null`
/// reads as absent, through `Option`).
pub(super) enum Loose {
    Text(String),
    Other,
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LooseVisitor;
        impl<'de> de::Visitor<'de> for LooseVisitor {
            type Value = Loose;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Loose, E> {
                Ok(Loose::Text(text.to_owned()))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Loose, E> {
                Ok(Loose::Text(text))
            }
            scalars_read_as!(Loose, Loose::Other);
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Loose::Other)
            }
        }
        deserializer.deserialize_any(LooseVisitor)
    }
}

/// A content block as the decoder reads it: every member it looks at, each taken as it comes.
#[derive(Deserialize)]
pub(super) struct BlockWire {
    #[serde(rename = "type")]
    kind: Option<Loose>,
    text: Option<Loose>,
    source: Option<Value>,
    id: Option<Loose>,
    name: Option<Loose>,
    input: Option<Value>,
    tool_use_id: Option<Loose>,
    content: Option<ResultContent>,
    is_error: Option<Value>,
    thinking: Option<Loose>,
    signature: Option<Loose>,
    data: Option<Loose>,
}

/// An element of a content array: a block (an object), or anything else, which has no `type`.
pub(super) enum BlockItem {
    Block(Box<BlockWire>),
    Other,
}

impl<'de> Deserialize<'de> for BlockItem {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> de::Visitor<'de> for ItemVisitor {
            type Value = BlockItem;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a content block")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<BlockItem, A::Error> {
                BlockWire::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|block| BlockItem::Block(Box::new(block)))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<BlockItem, E> {
                Ok(BlockItem::Other)
            }
            scalars_read_as!(BlockItem, BlockItem::Other);
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<BlockItem, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(BlockItem::Other)
            }
        }
        deserializer.deserialize_any(ItemVisitor)
    }
}

/// A content member: a string, an array of `T`, or anything else. A message's `content` holds blocks
/// (anything else is an error); a tool result's, blocks whose text is joined (anything else: no text).
enum Shape<T> {
    Text(String),
    Array(Vec<T>),
    Other,
}

type MessageContent = Shape<BlockItem>;
type ResultContent = Shape<Value>;

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shape<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ShapeVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for ShapeVisitor<T> {
            type Value = Shape<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Shape<T>, E> {
                Ok(Shape::Text(text.to_owned()))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Shape<T>, E> {
                Ok(Shape::Text(text))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Shape<T>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Shape::Array(items))
            }
            scalars_read_as!(Shape<T>, Shape::Other);
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Shape<T>, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Shape::Other)
            }
        }
        deserializer.deserialize_any(ShapeVisitor(std::marker::PhantomData))
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
    content: Option<MessageContent>,
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
}
