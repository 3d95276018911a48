//! A Responses request's input items (messages, function calls and their outputs, reasoning) into
//! canonical messages, and joining item arrays (a stored conversation followed by new input).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::REDACTED_PREFIX;
use crate::protocol::openai::{
    KeptText, StringOrParts, WireText, image_part, missing, parse_field, parse_field_text,
};
use crate::protocol::{ChatRequest, DecodeError, Message, Part, Role, Text, ToolCall, ToolResult};

/// One input item, as far as the canonical model reads it; unknown item types are skipped. Its texts
/// are kept (`T = String`) or only checked (`T = Unread`).
#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
pub(crate) struct ItemWire<T: WireText = String> {
    #[serde(rename = "type")]
    kind: Option<String>,
    role: Option<String>,
    content: Option<ContentWire<T>>,
    id: Option<T>,
    call_id: Option<T>,
    name: Option<T>,
    arguments: Option<T::Any>,
    output: Option<ContentWire<T>>,
    summary: Option<Vec<TextPartWire<T>>>,
    encrypted_content: Option<T>,
}

/// Message content or a tool output: a string or an array of typed parts.
type ContentWire<T = String> = StringOrParts<PartWire<T>, T>;

#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
struct PartWire<T: WireText = String> {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<T>,
    refusal: Option<T>,
    image_url: Option<T::Any>,
}

#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
struct TextPartWire<T: WireText = String> {
    text: Option<T>,
}

impl<T: KeptText> ContentWire<T> {
    /// Canonical parts: text (`input_text`, `output_text`, `text`, a `refusal`) and images; files and
    /// audio are dropped.
    fn into_parts(self) -> Vec<Part> {
        match self {
            StringOrParts::Text(text) => vec![Part::Text(text.into_text())],
            StringOrParts::Parts(parts) => parts
                .into_iter()
                .filter_map(|part| match part.kind.as_deref() {
                    Some("input_text" | "output_text" | "text") => {
                        part.text.map(|text| Part::Text(text.into_text()))
                    }
                    Some("refusal") => part.refusal.map(|text| Part::Text(text.into_text())),
                    Some("input_image" | "image_url") => image_part(T::any_value(part.image_url?)),
                    _ => None,
                })
                .collect(),
        }
    }

    /// The text of a tool output: the string as it is (a body's slice stays one), or its parts' texts
    /// joined by a newline.
    fn into_text(self) -> Text {
        self.joined_text(|part| part.text)
    }
}

/// Decode the JSON array of input items in `items` (named `field` in errors) and append them to
/// `chat`: leading system/developer messages join `system`, an assistant's message, reasoning and
/// function calls that follow one another form one assistant turn, and each `function_call_output`
/// is a tool message. Unknown item types (hosted tool calls, item references) are skipped.
pub(crate) fn push_items(
    items: &str,
    field: &str,
    chat: &mut ChatRequest,
) -> Result<(), DecodeError> {
    // Read in one pass: checking it as a `RawValue` first would skip a long history a byte at a time.
    push_item_list::<String>(parse_field_text(items, field)?, field, chat)
}

/// [`push_items`] for items the request's own decode has already read as JSON.
pub(crate) fn push_raw_items(
    raw: &RawValue,
    field: &str,
    chat: &mut ChatRequest,
) -> Result<(), DecodeError> {
    push_item_list::<String>(parse_field(raw, field)?, field, chat)
}

/// A request's `input`: a string (one user message) or items, read in the body's own decode.
pub(crate) enum InputWire<T: WireText = String> {
    Text(T),
    Items(Vec<ItemWire<T>>),
}

impl<'de, T: WireText> Deserialize<'de> for InputWire<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: WireText> serde::de::Visitor<'de> for InputVisitor<T> {
            type Value = InputWire<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of input items")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<InputWire<T>, E> {
                Ok(InputWire::Text(T::from_str(text)))
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<InputWire<T>, E> {
                Ok(InputWire::Text(T::from_string(text)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<InputWire<T>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(InputWire::Items(items))
            }
        }
        deserializer.deserialize_any(InputVisitor(std::marker::PhantomData))
    }
}

/// What an item is (`type`, or `message` for an item with only a `role`), checked as [`push_item_list`]
/// checks it: a message's role, a function call's id and name, a function call output's id.
fn item_kind<'a, T: WireText>(
    item: &'a ItemWire<T>,
    path: &dyn Fn() -> String,
) -> Result<&'a str, DecodeError> {
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
            role_of(item.role.as_deref(), path)?;
        }
        "function_call" => {
            if item.call_id.is_none() && item.id.is_none() {
                return Err(missing(&format!("{}.call_id", path())));
            }
            if item.name.is_none() {
                return Err(missing(&format!("{}.name", path())));
            }
        }
        "function_call_output" if item.call_id.is_none() => {
            return Err(missing(&format!("{}.call_id", path())));
        }
        _ => {}
    }
    Ok(kind)
}

fn role_of(role: Option<&str>, path: &dyn Fn() -> String) -> Result<Role, DecodeError> {
    match role {
        Some("user") => Ok(Role::User),
        Some("assistant") => Ok(Role::Assistant),
        Some("system" | "developer") => Ok(Role::System),
        Some(other) => Err(DecodeError::new(
            format!(
                "{}.role: unknown role '{other}'; expected user, assistant, system or developer",
                path()
            ),
            Some(format!("{}.role", path())),
        )),
        None => Err(missing(&format!("{}.role", path()))),
    }
}

/// Input items read unread (`field` names them in errors): checked as [`push_item_list`] checks them,
/// nothing kept.
pub(crate) fn check_item_list<T: WireText>(
    items: &[ItemWire<T>],
    field: &str,
) -> Result<(), DecodeError> {
    for (index, item) in items.iter().enumerate() {
        item_kind(item, &|| format!("{field}[{index}]"))?;
    }
    Ok(())
}

/// Appends decoded input items (named `field` in errors) to `chat`, as [`push_items`] describes.
pub(crate) fn push_item_list<T: KeptText>(
    items: Vec<ItemWire<T>>,
    field: &str,
    chat: &mut ChatRequest,
) -> Result<(), DecodeError> {
    chat.messages.reserve(items.len());
    for (index, item) in items.into_iter().enumerate() {
        // Only errors name the item.
        let path = || format!("{field}[{index}]");
        let kind = item_kind(&item, &path)?;
        match kind {
            "message" => {
                let role = role_of(item.role.as_deref(), &path)?;
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
                        .into_text(),
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
                let (Some(call_id), Some(name)) = (item.call_id.or(item.id), item.name) else {
                    return Err(missing(&format!("{}.call_id", path())));
                };
                assistant_turn(chat).push(Part::ToolCall(ToolCall {
                    id: call_id.into_string(),
                    name: name.into_string(),
                    arguments: item.arguments.map(T::any_text).unwrap_or_default(),
                }));
            }
            "function_call_output" => {
                let Some(call_id) = item.call_id else {
                    return Err(missing(&format!("{}.call_id", path())));
                };
                chat.messages.push(Message {
                    role: Role::Tool,
                    parts: vec![Part::ToolResult(ToolResult {
                        tool_call_id: call_id.into_string(),
                        content: item.output.map(ContentWire::into_text).unwrap_or_default(),
                        is_error: false,
                    })],
                    name: None,
                });
            }
            "reasoning" => {
                let text = match item.content {
                    Some(content) => content.into_text().into_string(),
                    None => item
                        .summary
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|part| part.text.map(T::into_string))
                        .collect::<Vec<_>>()
                        .join("\n"),
                };
                let part = match item
                    .encrypted_content
                    .filter(|e| !e.is_empty())
                    .map(T::into_string)
                {
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
