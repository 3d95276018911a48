//! Decoding a `POST /v1/messages` body into a canonical chat request; its content-block reader also
//! serves the `Value` path of response decoding.

use serde::Deserialize;
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
            Some(Value::String(text)) => vec![Part::Text(text)],
            Some(Value::Array(mut blocks)) => {
                let mut parts = Vec::with_capacity(blocks.len());
                for (position, block) in blocks.iter_mut().enumerate() {
                    if let Some(part) = decode_block(block, &|| format!("{}[{position}]", path()))?
                    {
                        parts.push(part);
                    }
                }
                parts
            }
            Some(_) => {
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

/// The string `key` of `block`, taken out of it (the block is read once).
fn str_field(
    block: &mut Value,
    key: &str,
    path: &dyn Fn() -> String,
) -> Result<String, DecodeError> {
    match block.get_mut(key) {
        Some(Value::String(text)) => Ok(std::mem::take(text)),
        None | Some(Value::Null) => Err(missing(&format!("{}.{key}", path()))),
        Some(_) => Err(DecodeError::new(
            format!("{}.{key}: expected a string", path()),
            Some(format!("{}.{key}", path())),
        )),
    }
}

/// One content block, its strings taken out of it; `Ok(None)` for block types the canonical model
/// deliberately drops. `path` names the block in an error.
pub(super) fn decode_block(
    block: &mut Value,
    path: &dyn Fn() -> String,
) -> Result<Option<Part>, DecodeError> {
    let kind = match block.get_mut("type") {
        Some(Value::String(kind)) => std::mem::take(kind),
        _ => return Err(missing(&format!("{}.type", path()))),
    };
    Ok(Some(match kind.as_str() {
        "text" => Part::Text(str_field(block, "text", path)?),
        "image" => {
            let source_path = || format!("{}.source", path());
            let Some(source) = block.get_mut("source") else {
                return Err(missing(&source_path()));
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
            content: tool_result_text(block.get_mut("content")),
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
fn tool_result_text(content: Option<&mut Value>) -> String {
    match content {
        Some(Value::String(text)) => std::mem::take(text),
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
}
