//! The byte writers of Responses objects: output items, usage and whole `response` objects, written by
//! hand into a [`Sink`] (held byte for byte to their serde forms in `oracle.rs` by the tests here).

use std::borrow::Cow;

use serde::Serialize;

use super::{DEFAULT_ECHO, REDACTED_PREFIX, item_id};
use crate::protocol::json_text::{Sink, plain_run, write_i64, write_str, write_u64};
use crate::protocol::{ChatResponse, FinishReason, Part, Usage};

/// Status and `incomplete_details.reason` for how an answer ended.
pub(crate) fn status_of(reason: Option<FinishReason>) -> (&'static str, Option<&'static str>) {
    match reason {
        Some(FinishReason::Length) => ("incomplete", Some("max_output_tokens")),
        Some(FinishReason::ContentFilter) => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// One output item as rendered; strings borrowed from whoever holds the answer.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ItemOut<'a> {
    Reasoning {
        id: &'a str,
        summary: [(); 0],
        content: Vec<ReasoningTextOut<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<&'a str>,
    },
    Message {
        id: &'a str,
        status: &'static str,
        role: &'static str,
        content: Vec<OutputTextOut<'a>>,
    },
    FunctionCall {
        id: &'a str,
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
        status: &'static str,
    },
}

#[derive(Serialize)]
pub(crate) struct OutputTextOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: &'a str,
    pub annotations: [(); 0],
    pub logprobs: [(); 0],
}

impl<'a> OutputTextOut<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        OutputTextOut {
            kind: "output_text",
            text,
            annotations: [],
            logprobs: [],
        }
    }
}

#[derive(Serialize)]
pub(crate) struct ReasoningTextOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: &'a str,
}

impl<'a> ReasoningTextOut<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        ReasoningTextOut {
            kind: "reasoning_text",
            text,
        }
    }
}

/// `"text"` in quotes: the fixed names and values our writers use have nothing to escape.
fn lit<S: Sink + ?Sized>(out: &mut S, text: &str) {
    debug_assert_eq!(plain_run(text.as_bytes()), text.len());
    out.put_byte(b'"');
    out.put(text.as_bytes());
    out.put_byte(b'"');
}

impl ItemOut<'_> {
    /// The item's JSON, byte for byte what its `Serialize` derive writes (held to it by the tests): the
    /// hand-written form skips serde's escaping of every member name.
    pub(crate) fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        match self {
            ItemOut::Reasoning {
                id,
                summary: _,
                content,
                encrypted_content,
            } => {
                out.put(br#"{"type":"reasoning","id":"#);
                write_str(out, id);
                out.put(br#","summary":[],"content":["#);
                for (index, part) in content.iter().enumerate() {
                    if index > 0 {
                        out.put_byte(b',');
                    }
                    out.put(br#"{"type":"#);
                    lit(out, part.kind);
                    out.put(br#","text":"#);
                    write_str(out, part.text);
                    out.put_byte(b'}');
                }
                out.put_byte(b']');
                if let Some(encrypted) = encrypted_content {
                    out.put(br#","encrypted_content":"#);
                    write_str(out, encrypted);
                }
                out.put_byte(b'}');
            }
            ItemOut::Message {
                id,
                status,
                role,
                content,
            } => {
                out.put(br#"{"type":"message","id":"#);
                write_str(out, id);
                out.put(br#","status":"#);
                lit(out, status);
                out.put(br#","role":"#);
                lit(out, role);
                out.put(br#","content":["#);
                for (index, part) in content.iter().enumerate() {
                    if index > 0 {
                        out.put_byte(b',');
                    }
                    part.write(out);
                }
                out.put(b"]}");
            }
            ItemOut::FunctionCall {
                id,
                call_id,
                name,
                arguments,
                status,
            } => {
                out.put(br#"{"type":"function_call","id":"#);
                write_str(out, id);
                out.put(br#","call_id":"#);
                write_str(out, call_id);
                out.put(br#","name":"#);
                write_str(out, name);
                out.put(br#","arguments":"#);
                write_str(out, arguments);
                out.put(br#","status":"#);
                lit(out, status);
                out.put_byte(b'}');
            }
        }
    }
}

impl OutputTextOut<'_> {
    /// As its `Serialize` derive writes it.
    pub(crate) fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put(br#"{"type":"#);
        lit(out, self.kind);
        out.put(br#","text":"#);
        write_str(out, self.text);
        out.put(br#","annotations":[],"logprobs":[]}"#);
    }
}

impl ReasoningTextOut<'_> {
    /// As its `Serialize` derive writes it.
    pub(crate) fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put(br#"{"type":"#);
        lit(out, self.kind);
        out.put(br#","text":"#);
        write_str(out, self.text);
        out.put_byte(b'}');
    }
}

/// The kind of an output item, with what it holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ItemBody<S> {
    Reasoning { text: S, encrypted: Option<S> },
    Message { text: S },
    FunctionCall { call_id: S, name: S, arguments: S },
}

impl<S: AsRef<str>> ItemBody<S> {
    /// The id prefix of this kind of item.
    pub(crate) fn prefix(&self) -> &'static str {
        match self {
            ItemBody::Reasoning { .. } => "rs",
            ItemBody::Message { .. } => "msg",
            ItemBody::FunctionCall { .. } => "fc",
        }
    }

    /// The item as rendered, with `status` (`in_progress`, `completed`, `incomplete`) where its kind
    /// has one; `full` false renders the item as it starts (no content yet).
    pub(crate) fn out<'a>(&'a self, id: &'a str, status: &'static str, full: bool) -> ItemOut<'a> {
        match self {
            ItemBody::Reasoning { text, encrypted } => ItemOut::Reasoning {
                id,
                summary: [],
                content: if full && !text.as_ref().is_empty() {
                    vec![ReasoningTextOut::new(text.as_ref())]
                } else {
                    Vec::new()
                },
                encrypted_content: encrypted.as_ref().map(AsRef::as_ref).filter(|_| full),
            },
            ItemBody::Message { text } => ItemOut::Message {
                id,
                status,
                role: "assistant",
                content: if full {
                    vec![OutputTextOut::new(text.as_ref())]
                } else {
                    Vec::new()
                },
            },
            ItemBody::FunctionCall {
                call_id,
                name,
                arguments,
            } => ItemOut::FunctionCall {
                id,
                call_id: call_id.as_ref(),
                name: name.as_ref(),
                arguments: if full { arguments.as_ref() } else { "" },
                status,
            },
        }
    }
}

/// The output items of a canonical answer, in order: each thinking block a reasoning item, each run of
/// text one message, each tool call a function call.
pub(crate) fn items_of(parts: &[Part]) -> Vec<ItemBody<Cow<'_, str>>> {
    let mut items: Vec<ItemBody<Cow<'_, str>>> = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            Part::Text(text) => match items.last_mut() {
                Some(ItemBody::Message { text: joined }) => joined.to_mut().push_str(text),
                _ => items.push(ItemBody::Message {
                    text: Cow::Borrowed(text),
                }),
            },
            Part::Thinking { text, signature } => items.push(ItemBody::Reasoning {
                text: Cow::Borrowed(text),
                encrypted: signature.as_deref().map(Cow::Borrowed),
            }),
            Part::RedactedThinking { data } => items.push(ItemBody::Reasoning {
                text: Cow::Borrowed(""),
                encrypted: Some(Cow::Owned(format!("{REDACTED_PREFIX}{data}"))),
            }),
            Part::ToolCall(call) => items.push(ItemBody::FunctionCall {
                call_id: Cow::Borrowed(&call.id),
                name: Cow::Borrowed(&call.name),
                arguments: Cow::Borrowed(&call.arguments),
            }),
            Part::Image(_) | Part::ToolResult(_) => {}
        }
    }
    items
}

/// The top of a `response` object.
pub(crate) struct ResponseHead<'a> {
    pub id: &'a str,
    pub created_at: i64,
    /// `in_progress`, `completed`, `incomplete` or `failed`.
    pub status: &'static str,
    /// `(code, message)` of a failed response.
    pub error: Option<(&'a str, &'a str)>,
    pub incomplete_reason: Option<&'static str>,
    pub model: &'a str,
    /// The request's members ([`ResponseEcho`]); empty for the defaults.
    pub echo: &'a str,
}

/// Write Responses `usage` as the API writes it (`UsageOut` in the tests is the serde form).
pub(crate) fn write_usage<S: Sink + ?Sized>(out: &mut S, usage: &Usage) {
    out.put(br#"{"input_tokens":"#);
    write_u64(out, usage.input_tokens);
    out.put(br#","input_tokens_details":{"cached_tokens":"#);
    write_u64(out, usage.cache_read_tokens);
    out.put(br#"},"output_tokens":"#);
    write_u64(out, usage.output_tokens);
    out.put(br#","output_tokens_details":{"reasoning_tokens":"#);
    write_u64(out, usage.reasoning_tokens);
    out.put(br#"},"total_tokens":"#);
    write_u64(out, usage.input_tokens.saturating_add(usage.output_tokens));
    out.put_byte(b'}');
}

/// Write a whole `response` object: the head, `output` (written by `output`, which gets the buffer
/// right after `[`), the request's members and `usage`. Hand-written; the tests hold it to the serde
/// form (`HeadOut`, `UsageOut`).
pub(crate) fn write_response(
    out: &mut Vec<u8>,
    head: &ResponseHead<'_>,
    output: impl FnOnce(&mut Vec<u8>),
    usage: Option<&Usage>,
) {
    let echo = if head.echo.is_empty() {
        DEFAULT_ECHO
    } else {
        head.echo
    };
    out.reserve(256 + head.id.len() + head.model.len() + echo.len());
    out.extend_from_slice(br#"{"id":"#);
    write_str(out, head.id);
    out.extend_from_slice(br#","object":"response","created_at":"#);
    write_i64(out, head.created_at);
    out.extend_from_slice(br#","status":"#);
    lit(out, head.status);
    out.extend_from_slice(br#","background":false,"error":"#);
    match head.error {
        Some((code, message)) => {
            out.extend_from_slice(br#"{"code":"#);
            write_str(out, code);
            out.extend_from_slice(br#","message":"#);
            write_str(out, message);
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","incomplete_details":"#);
    match head.incomplete_reason {
        Some(reason) => {
            out.extend_from_slice(br#"{"reason":"#);
            lit(out, reason);
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","model":"#);
    write_str(out, head.model);
    out.extend_from_slice(br#","output":["#);
    output(out);
    out.extend_from_slice(b"],");
    out.extend_from_slice(echo.as_bytes());
    out.extend_from_slice(br#","usage":"#);
    match usage {
        Some(usage) => write_usage(out, usage),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// Items written one after another into an array being written.
pub(crate) fn write_items<'a>(out: &mut Vec<u8>, items: impl IntoIterator<Item = ItemOut<'a>>) {
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        item.write(out);
    }
}

/// Render a canonical answer as a complete `response` object (`created` when it carries none, `echo`
/// the request's members, or empty for the defaults).
pub(crate) fn encode_response_bytes(response: &ChatResponse, created: i64, echo: &str) -> Vec<u8> {
    let layout = ResponseLayout::of(response, created, echo);
    let mut out = Vec::with_capacity(512 + echo.len());
    write_response(
        &mut out,
        &layout.head,
        |out| write_items(out, layout.items()),
        Some(&response.usage.unwrap_or_default()),
    );
    out
}

/// A complete answer laid out as a `response` object: its head and its output items with their ids.
struct ResponseLayout<'a> {
    head: ResponseHead<'a>,
    items: Vec<ItemBody<Cow<'a, str>>>,
    ids: Vec<String>,
    /// `incomplete` on every item of an answer cut short, else `completed`.
    item_status: &'static str,
}

impl<'a> ResponseLayout<'a> {
    fn of(response: &'a ChatResponse, created: i64, echo: &'a str) -> Self {
        let items = items_of(&response.parts);
        let ids: Vec<String> = items
            .iter()
            .enumerate()
            .map(|(index, item)| item_id(item.prefix(), &response.id, index))
            .collect();
        let (status, incomplete_reason) = status_of(response.finish_reason);
        let item_status = if status == "incomplete" {
            "incomplete"
        } else {
            "completed"
        };
        let head = ResponseHead {
            id: &response.id,
            created_at: response.created.unwrap_or(created),
            status,
            error: None,
            incomplete_reason,
            model: &response.model,
            echo,
        };
        ResponseLayout {
            head,
            items,
            ids,
            item_status,
        }
    }

    /// The output items as rendered.
    fn items(&self) -> impl Iterator<Item = ItemOut<'_>> {
        self.items
            .iter()
            .zip(&self.ids)
            .map(|(item, id)| item.out(id, self.item_status, true))
    }
}

#[cfg(test)]
mod writer_tests {
    use super::super::oracle::{write_items_serde, write_response_serde};
    use super::*;
    use crate::protocol::ToolCall;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        "(\\PC|[\"\\\\\n\\x01\\x7f]){0,12}"
    }

    fn part() -> impl Strategy<Value = Part> {
        prop_oneof![
            4 => text().prop_map(|text| Part::Text(text.into())),
            2 => (text(), text(), text()).prop_map(|(id, name, arguments)| Part::ToolCall(ToolCall { id, name, arguments: arguments.into() })),
            1 => (text(), proptest::option::of(text())).prop_map(|(text, signature)| Part::Thinking { text, signature }),
            1 => text().prop_map(|data| Part::RedactedThinking { data }),
        ]
    }

    fn usage() -> impl Strategy<Value = Usage> {
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(input_tokens, output_tokens, cache_read_tokens, reasoning_tokens)| Usage {
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_creation_tokens: 0,
                reasoning_tokens,
            },
        )
    }

    /// [`encode_response_bytes`] through the serde forms.
    fn encode_response_serde(response: &ChatResponse, created: i64, echo: &str) -> Vec<u8> {
        let layout = ResponseLayout::of(response, created, echo);
        let mut out = Vec::new();
        write_response_serde(
            &mut out,
            &layout.head,
            |out| write_items_serde(out, layout.items()),
            Some(&response.usage.unwrap_or_default()),
        );
        out
    }

    proptest! {
        /// A whole answer is byte for byte what the serde form wrote.
        #[test]
        fn response_is_the_serde_form(
            id in text(),
            model in text(),
            parts in proptest::collection::vec(part(), 0..5),
            finish in proptest::option::of(prop_oneof![
                Just(FinishReason::Stop), Just(FinishReason::Length), Just(FinishReason::ContentFilter), Just(FinishReason::ToolCalls),
            ]),
            usage in proptest::option::of(usage()),
            created in proptest::option::of(any::<i64>()),
            echo in prop_oneof![Just(String::new()), Just(r#""instructions":"x","metadata":{}"#.to_owned())],
        ) {
            let response = ChatResponse {
                id: format!("resp_{id}"),
                model,
                created,
                parts,
                finish_reason: finish,
                stop_sequence: None,
                usage,
            };
            let written = encode_response_bytes(&response, 7, &echo);
            let oracle = encode_response_serde(&response, 7, &echo);
            prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(oracle).unwrap());
        }

        /// Heads with an error or an incomplete reason, items as they start, usage or none.
        #[test]
        fn head_and_items_are_the_serde_form(
            id in text(),
            model in text(),
            error in proptest::option::of((text(), text())),
            incomplete in proptest::option::of(prop_oneof![Just("max_output_tokens"), Just("content_filter")]),
            status in prop_oneof![Just("in_progress"), Just("failed"), Just("completed")],
            parts in proptest::collection::vec(part(), 0..4),
            full in any::<bool>(),
            usage in proptest::option::of(usage()),
        ) {
            let head = ResponseHead {
                id: &id,
                created_at: -3,
                status,
                error: error.as_ref().map(|(code, message)| (code.as_str(), message.as_str())),
                incomplete_reason: incomplete,
                model: &model,
                echo: "",
            };
            let items = items_of(&parts);
            let ids: Vec<String> = (0..items.len()).map(|index| item_id("x", &id, index)).collect();
            let output = |write: fn(&mut Vec<u8>, Vec<ItemOut<'_>>)| {
                let items = &items;
                let ids = &ids;
                move |out: &mut Vec<u8>| {
                    write(out, items.iter().zip(ids).map(|(item, id)| item.out(id, status, full)).collect());
                }
            };
            let mut written = Vec::new();
            write_response(&mut written, &head, output(|out, items| write_items(out, items)), usage.as_ref());
            let mut oracle = Vec::new();
            write_response_serde(&mut oracle, &head, output(|out, items| write_items_serde(out, items)), usage.as_ref());
            prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(oracle).unwrap());
        }

    }
}
