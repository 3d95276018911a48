//! Responses API streams: the encoder (canonical [`StreamEvent`]s → the official semantic events, in
//! order, numbered by `sequence_number`), the decoder (a Responses upstream's events → canonical), the
//! pass-through observer for backends that speak Responses natively, and replays of complete answers.
//!
//! Event order written for an answer (each event `event: <type>` + `data: {"type":…,"sequence_number":…}`):
//! `response.created`, `response.in_progress`, then per output item `response.output_item.added`,
//! (`response.content_part.added`, text or reasoning deltas, their `.done`, `response.content_part.done`)
//! or (`response.function_call_arguments.delta`…, `.done`), `response.output_item.done`; finally
//! `response.completed` (`response.incomplete` when the answer was cut by a length limit or a content
//! filter). A fault ends the stream with `error` and `response.failed`, never `response.completed`.

use std::borrow::Cow;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::json_patch::set_fields;
use super::json_text::{Sink, plain_run, write_str, write_u64};
use super::responses::{
    ItemBody, ItemOut, OutputTextOut, REDACTED_PREFIX, ReasoningTextOut, ResponseHead, item_id,
    response_from_value, status_of, usage_from, write_items, write_response,
};
use super::sse::{self, SseEvent};
use super::stream::{StreamError, StreamEvent, StreamOptions, error_event, parse_event};
use super::{ChatResponse, FinishReason, Part, ResponseSummary, Usage};

// === Encoder ===

/// One output item of the answer being streamed.
#[derive(Debug)]
struct Item {
    id: String,
    body: ItemBody<String>,
    /// Its `response.output_item.done` was sent.
    done: bool,
    /// Status shown once done (`completed`, or `incomplete` for the item a length limit cut).
    status: &'static str,
}

/// Writes the Responses event stream for canonical events.
#[derive(Debug)]
pub(crate) struct ResponsesEncoder {
    pub(crate) created_at: i64,
    seq: u64,
    started: bool,
    pub(crate) ended: bool,
    items: Vec<Item>,
    /// Position of the item that takes deltas.
    open: Option<usize>,
    /// `(tool call index, item position)`.
    tools: Vec<(usize, usize)>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// The `response` object of the terminal `response.completed` (or `.incomplete`) event.
    pub(crate) final_response: Option<Vec<u8>>,
}

#[derive(Serialize)]
struct ItemEventOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    output_index: usize,
    item: ItemOut<'a>,
}

#[derive(Serialize)]
struct PartEventOut<'a, P: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    part: P,
}

#[derive(Serialize)]
struct TextDeltaOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    delta: &'a str,
    logprobs: [(); 0],
}

#[derive(Serialize)]
struct TextDoneOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    text: &'a str,
    logprobs: [(); 0],
}

#[derive(Serialize)]
struct ReasoningDeltaOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    delta: &'a str,
}

#[derive(Serialize)]
struct ReasoningDoneOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    text: &'a str,
}

#[derive(Serialize)]
struct ArgsDeltaOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    delta: &'a str,
}

#[derive(Serialize)]
struct ArgsDoneOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ErrorEventOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    code: &'a str,
    message: &'a str,
    param: Option<()>,
}

// Each event is written by hand (`write`): byte for byte what `write_event` makes of the struct's
// `Serialize` derive (held to it by the tests), without serde escaping every member name.

/// `event: <name>\ndata: {"type":"<name>","sequence_number":<seq>`: the start every event shares.
fn event_start(out: &mut BytesMut, name: &str, seq: u64, more: usize) {
    debug_assert_eq!(plain_run(name.as_bytes()), name.len());
    out.reserve(2 * name.len() + more + 64);
    out.put(b"event: ");
    out.put(name.as_bytes());
    out.put(b"\ndata: {\"type\":\"");
    out.put(name.as_bytes());
    out.put(b"\",\"sequence_number\":");
    write_u64(out, seq);
}

/// `,"item_id":…,"output_index":…`.
fn item_fields(out: &mut BytesMut, item_id: &str, output_index: usize) {
    out.put(b",\"item_id\":");
    write_str(out, item_id);
    out.put(b",\"output_index\":");
    write_u64(out, output_index as u64);
}

const EVENT_END: &[u8] = b"}\n\n";

/// A text event of one content part (`response.output_text.delta`/`.done`, the reasoning ones):
/// `,"content_index":…,"<field>":"<text>"` after the item's fields, then `,"logprobs":[]` for output
/// text.
fn content_text_event(
    out: &mut BytesMut,
    (kind, seq): (&str, u64),
    (item_id, output_index, content_index): (&str, usize, u64),
    field: &[u8],
    text: &str,
    logprobs: bool,
) {
    event_start(out, kind, seq, text.len() + 96);
    item_fields(out, item_id, output_index);
    out.put(b",\"content_index\":");
    write_u64(out, content_index);
    out.put(b",\"");
    out.put(field);
    out.put(b"\":");
    write_str(out, text);
    if logprobs {
        out.put(b",\"logprobs\":[]");
    }
    out.put(EVENT_END);
}

impl ItemEventOut<'_> {
    fn write(&self, out: &mut BytesMut) {
        event_start(out, self.kind, self.sequence_number, 128);
        out.put(b",\"output_index\":");
        write_u64(out, self.output_index as u64);
        out.put(b",\"item\":");
        self.item.write(out);
        out.put(EVENT_END);
    }
}

/// A content part as written inside an event.
trait PartOut: Serialize {
    fn write_part(&self, out: &mut BytesMut);
}

impl PartOut for OutputTextOut<'_> {
    fn write_part(&self, out: &mut BytesMut) {
        self.write(out);
    }
}

impl PartOut for ReasoningTextOut<'_> {
    fn write_part(&self, out: &mut BytesMut) {
        self.write(out);
    }
}

impl<P: PartOut> PartEventOut<'_, P> {
    fn write(&self, out: &mut BytesMut) {
        event_start(out, self.kind, self.sequence_number, 128);
        item_fields(out, self.item_id, self.output_index);
        out.put(b",\"content_index\":");
        write_u64(out, u64::from(self.content_index));
        out.put(b",\"part\":");
        self.part.write_part(out);
        out.put(EVENT_END);
    }
}

impl TextDeltaOut<'_> {
    fn write(&self, out: &mut BytesMut) {
        content_text_event(
            out,
            (self.kind, self.sequence_number),
            (
                self.item_id,
                self.output_index,
                u64::from(self.content_index),
            ),
            b"delta",
            self.delta,
            true,
        );
    }
}

impl TextDoneOut<'_> {
    fn write(&self, out: &mut BytesMut) {
        content_text_event(
            out,
            (self.kind, self.sequence_number),
            (
                self.item_id,
                self.output_index,
                u64::from(self.content_index),
            ),
            b"text",
            self.text,
            true,
        );
    }
}

impl ReasoningDeltaOut<'_> {
    fn write(&self, out: &mut BytesMut) {
        content_text_event(
            out,
            (self.kind, self.sequence_number),
            (
                self.item_id,
                self.output_index,
                u64::from(self.content_index),
            ),
            b"delta",
            self.delta,
            false,
        );
    }
}

impl ReasoningDoneOut<'_> {
    fn write(&self, out: &mut BytesMut) {
        content_text_event(
            out,
            (self.kind, self.sequence_number),
            (
                self.item_id,
                self.output_index,
                u64::from(self.content_index),
            ),
            b"text",
            self.text,
            false,
        );
    }
}

impl ArgsDeltaOut<'_> {
    fn write(&self, out: &mut BytesMut) {
        event_start(out, self.kind, self.sequence_number, self.delta.len() + 96);
        item_fields(out, self.item_id, self.output_index);
        out.put(b",\"delta\":");
        write_str(out, self.delta);
        out.put(EVENT_END);
    }
}

impl ArgsDoneOut<'_> {
    fn write(&self, out: &mut BytesMut) {
        let more = self.name.len() + self.arguments.len() + 96;
        event_start(out, self.kind, self.sequence_number, more);
        item_fields(out, self.item_id, self.output_index);
        out.put(b",\"name\":");
        write_str(out, self.name);
        out.put(b",\"arguments\":");
        write_str(out, self.arguments);
        out.put(EVENT_END);
    }
}

impl ErrorEventOut<'_> {
    fn write(&self, out: &mut BytesMut) {
        event_start(
            out,
            self.kind,
            self.sequence_number,
            self.message.len() + 64,
        );
        out.put(b",\"code\":");
        write_str(out, self.code);
        out.put(b",\"message\":");
        write_str(out, self.message);
        out.put(b",\"param\":null");
        out.put(EVENT_END);
    }
}

/// The next sequence number.
fn bump(seq: &mut u64) -> u64 {
    let now = *seq;
    *seq += 1;
    now
}

/// `response.content_part.added` / `.done` of an item with content parts (messages, reasoning).
fn part_event(
    name: &'static str,
    seq: u64,
    at: usize,
    item: &Item,
    text: &str,
    out: &mut BytesMut,
) {
    match &item.body {
        ItemBody::Message { .. } => PartEventOut {
            kind: name,
            sequence_number: seq,
            item_id: &item.id,
            output_index: at,
            content_index: 0,
            part: OutputTextOut::new(text),
        }
        .write(out),
        ItemBody::Reasoning { .. } => PartEventOut {
            kind: name,
            sequence_number: seq,
            item_id: &item.id,
            output_index: at,
            content_index: 0,
            part: ReasoningTextOut::new(text),
        }
        .write(out),
        ItemBody::FunctionCall { .. } => {}
    }
}

/// The `code` of a Responses error for a normalized error type.
fn error_code(kind: &str) -> &'static str {
    match kind {
        "rate_limit_error" => "rate_limit_exceeded",
        _ => "server_error",
    }
}

/// A lifecycle event (`response.created`, `.in_progress`, `.completed`, `.incomplete`, `.failed`)
/// around the `response` object already written.
fn lifecycle_event(out: &mut BytesMut, name: &str, seq: u64, response: &[u8]) {
    out.reserve(response.len() + 2 * name.len() + 64);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: {\"type\":\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\",\"sequence_number\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b",\"response\":");
    out.extend_from_slice(response);
    out.extend_from_slice(b"}\n\n");
}

impl ResponsesEncoder {
    pub(crate) fn new(created_at: i64) -> Self {
        ResponsesEncoder {
            created_at,
            seq: 0,
            started: false,
            ended: false,
            items: Vec::new(),
            open: None,
            tools: Vec::new(),
            finish: None,
            usage: None,
            final_response: None,
        }
    }

    fn next_seq(&mut self) -> u64 {
        bump(&mut self.seq)
    }

    pub(crate) fn emit(&mut self, event: &StreamEvent, opts: &StreamOptions, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        if !matches!(event, StreamEvent::Error { .. }) {
            self.ensure_started(opts, out);
        }
        match event {
            StreamEvent::Start { usage } => {
                if usage.is_some() {
                    self.usage = *usage;
                }
            }
            StreamEvent::Text(text) => {
                let at = self.ensure_item(Kind::Message, opts, out);
                let item = &mut self.items[at];
                if let ItemBody::Message { text: all } = &mut item.body {
                    super::stream::push_piece(all, text);
                }
                let seq = self.next_seq();
                let item = &self.items[at];
                TextDeltaOut {
                    kind: "response.output_text.delta",
                    sequence_number: seq,
                    item_id: &item.id,
                    output_index: at,
                    content_index: 0,
                    delta: text,
                    logprobs: [],
                }
                .write(out);
            }
            StreamEvent::Thinking(text) => {
                let at = self.ensure_item(Kind::Reasoning, opts, out);
                if let ItemBody::Reasoning { text: all, .. } = &mut self.items[at].body {
                    all.push_str(text);
                }
                let seq = self.next_seq();
                let item = &self.items[at];
                ReasoningDeltaOut {
                    kind: "response.reasoning_text.delta",
                    sequence_number: seq,
                    item_id: &item.id,
                    output_index: at,
                    content_index: 0,
                    delta: text,
                }
                .write(out);
            }
            StreamEvent::Signature(signature) => {
                let at = self.ensure_item(Kind::Reasoning, opts, out);
                if let ItemBody::Reasoning { encrypted, .. } = &mut self.items[at].body {
                    encrypted
                        .get_or_insert_with(String::new)
                        .push_str(signature);
                }
                // A signature ends its thinking block: later thinking is another reasoning item.
                self.close_open("completed", out);
            }
            StreamEvent::RedactedThinking(data) => {
                self.close_open("completed", out);
                let at = self.add_item(
                    ItemBody::Reasoning {
                        text: String::new(),
                        encrypted: Some(format!("{REDACTED_PREFIX}{data}")),
                    },
                    opts,
                    out,
                );
                self.open = Some(at);
                self.close_open("completed", out);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                if !self.tools.iter().any(|(tool, _)| tool == index) {
                    self.start_tool(*index, id, name, opts, out);
                }
            }
            StreamEvent::ToolCallArgs { index, arguments } => {
                let at = match self.tools.iter().find(|(tool, _)| tool == index) {
                    Some((_, at)) => *at,
                    None => self.start_tool(*index, &format!("call_{index}"), "", opts, out),
                };
                // Arguments of a call whose item is done cannot be sent (OpenAI backends send calls
                // one after another); the summary keeps them.
                if self.open == Some(at) {
                    if let ItemBody::FunctionCall { arguments: all, .. } = &mut self.items[at].body
                    {
                        all.push_str(arguments);
                    }
                    let seq = self.next_seq();
                    let item = &self.items[at];
                    ArgsDeltaOut {
                        kind: "response.function_call_arguments.delta",
                        sequence_number: seq,
                        item_id: &item.id,
                        output_index: at,
                        delta: arguments,
                    }
                    .write(out);
                }
            }
            StreamEvent::Finish { reason, .. } => self.finish = Some(*reason),
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
            StreamEvent::Error { kind, message } => self.fail(kind, message, opts, out),
            StreamEvent::Done => self.end(opts, out),
        }
    }

    fn ensure_started(&mut self, opts: &StreamOptions, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let mut response = Vec::with_capacity(256 + opts.echo.as_str().len());
        write_response(
            &mut response,
            &ResponseHead {
                id: &opts.id,
                created_at: self.created_at,
                status: "in_progress",
                error: None,
                incomplete_reason: None,
                model: &opts.model,
                echo: opts.echo.as_str(),
            },
            |_| {},
            None,
        );
        let seq = self.next_seq();
        lifecycle_event(out, "response.created", seq, &response);
        let seq = self.next_seq();
        lifecycle_event(out, "response.in_progress", seq, &response);
    }

    fn start_tool(
        &mut self,
        index: usize,
        id: &str,
        name: &str,
        opts: &StreamOptions,
        out: &mut BytesMut,
    ) -> usize {
        self.close_open("completed", out);
        let at = self.add_item(
            ItemBody::FunctionCall {
                call_id: id.to_owned(),
                name: name.to_owned(),
                arguments: String::new(),
            },
            opts,
            out,
        );
        self.tools.push((index, at));
        self.open = Some(at);
        at
    }

    /// The open item of `kind`, or a new one after closing the open item.
    fn ensure_item(&mut self, kind: Kind, opts: &StreamOptions, out: &mut BytesMut) -> usize {
        if let Some(at) = self.open
            && Kind::of(&self.items[at].body) == Some(kind)
        {
            return at;
        }
        self.close_open("completed", out);
        let body = match kind {
            Kind::Message => ItemBody::Message {
                text: String::new(),
            },
            Kind::Reasoning => ItemBody::Reasoning {
                text: String::new(),
                encrypted: None,
            },
        };
        let at = self.add_item(body, opts, out);
        self.open = Some(at);
        at
    }

    /// A new item: `response.output_item.added`, and `response.content_part.added` for the kinds that
    /// have content parts.
    fn add_item(
        &mut self,
        body: ItemBody<String>,
        opts: &StreamOptions,
        out: &mut BytesMut,
    ) -> usize {
        let at = self.items.len();
        let id = item_id(body.prefix(), &opts.id, at);
        self.items.push(Item {
            id,
            body,
            done: false,
            status: "in_progress",
        });
        let seq = self.next_seq();
        let item = &self.items[at];
        ItemEventOut {
            kind: "response.output_item.added",
            sequence_number: seq,
            output_index: at,
            item: item.body.out(&item.id, "in_progress", false),
        }
        .write(out);
        let has_part = !matches!(item.body, ItemBody::FunctionCall { .. })
            && !matches!(&item.body, ItemBody::Reasoning { encrypted: Some(e), .. } if e.starts_with(REDACTED_PREFIX));
        if has_part {
            let seq = self.next_seq();
            part_event(
                "response.content_part.added",
                seq,
                at,
                &self.items[at],
                "",
                out,
            );
        }
        at
    }

    /// Finish the open item: its `.done` events and `response.output_item.done`.
    fn close_open(&mut self, status: &'static str, out: &mut BytesMut) {
        let Some(at) = self.open.take() else {
            return;
        };
        let seq = &mut self.seq;
        let item = &mut self.items[at];
        item.status = status;
        item.done = true;
        let item = &*item;
        match &item.body {
            ItemBody::Message { text } => {
                TextDoneOut {
                    kind: "response.output_text.done",
                    sequence_number: bump(seq),
                    item_id: &item.id,
                    output_index: at,
                    content_index: 0,
                    text,
                    logprobs: [],
                }
                .write(out);
                part_event("response.content_part.done", bump(seq), at, item, text, out);
            }
            ItemBody::Reasoning { text, encrypted } => {
                let redacted = encrypted
                    .as_deref()
                    .is_some_and(|e| e.starts_with(REDACTED_PREFIX));
                if !redacted {
                    ReasoningDoneOut {
                        kind: "response.reasoning_text.done",
                        sequence_number: bump(seq),
                        item_id: &item.id,
                        output_index: at,
                        content_index: 0,
                        text,
                    }
                    .write(out);
                    part_event("response.content_part.done", bump(seq), at, item, text, out);
                }
            }
            ItemBody::FunctionCall {
                name, arguments, ..
            } => {
                ArgsDoneOut {
                    kind: "response.function_call_arguments.done",
                    sequence_number: bump(seq),
                    item_id: &item.id,
                    output_index: at,
                    name,
                    arguments,
                }
                .write(out);
            }
        }
        ItemEventOut {
            kind: "response.output_item.done",
            sequence_number: bump(seq),
            output_index: at,
            item: item.body.out(&item.id, item.status, true),
        }
        .write(out);
    }

    /// The whole `response` object with the items so far.
    fn response(
        &self,
        opts: &StreamOptions,
        status: &'static str,
        error: Option<(&str, &str)>,
        incomplete_reason: Option<&'static str>,
        usage: Option<&Usage>,
    ) -> Vec<u8> {
        let mut response = Vec::with_capacity(512 + opts.echo.as_str().len());
        write_response(
            &mut response,
            &ResponseHead {
                id: &opts.id,
                created_at: self.created_at,
                status,
                error,
                incomplete_reason,
                model: &opts.model,
                echo: opts.echo.as_str(),
            },
            |out| {
                write_items(
                    out,
                    self.items.iter().map(|item| {
                        let status = if item.done { item.status } else { "incomplete" };
                        item.body.out(&item.id, status, true)
                    }),
                );
            },
            usage,
        );
        response
    }

    fn end(&mut self, opts: &StreamOptions, out: &mut BytesMut) {
        let (status, incomplete_reason) = status_of(self.finish);
        let item_status = if status == "incomplete" {
            "incomplete"
        } else {
            "completed"
        };
        self.close_open(item_status, out);
        let usage = self.usage.unwrap_or(Usage {
            input_tokens: opts.input_tokens,
            ..Usage::default()
        });
        let response = self.response(opts, status, None, incomplete_reason, Some(&usage));
        let name = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        let seq = self.next_seq();
        lifecycle_event(out, name, seq, &response);
        self.final_response = Some(response);
        self.ended = true;
    }

    fn fail(&mut self, kind: &str, message: &str, opts: &StreamOptions, out: &mut BytesMut) {
        let code = error_code(kind);
        let seq = self.next_seq();
        ErrorEventOut {
            kind: "error",
            sequence_number: seq,
            code,
            message,
            param: None,
        }
        .write(out);
        if self.started {
            let response = self.response(
                opts,
                "failed",
                Some((code, message)),
                None,
                self.usage.as_ref(),
            );
            let seq = self.next_seq();
            lifecycle_event(out, "response.failed", seq, &response);
        }
        self.ended = true;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Reasoning,
}

impl Kind {
    /// The streamed-delta kind of an item (function calls take their own path).
    fn of(body: &ItemBody<String>) -> Option<Kind> {
        match body {
            ItemBody::Message { .. } => Some(Kind::Message),
            ItemBody::Reasoning { .. } => Some(Kind::Reasoning),
            ItemBody::FunctionCall { .. } => None,
        }
    }
}

/// A complete answer as a Responses event stream (echo backend, cache replays): text in word-sized
/// pieces, then reasoning, tool calls, usage and the end. Returns the stream and the final `response`.
pub fn replay(
    response: &ChatResponse,
    opts: &StreamOptions,
    created_at: i64,
) -> (BytesMut, Vec<u8>) {
    let mut encoder = ResponsesEncoder::new(created_at);
    let mut out = BytesMut::new();
    encoder.emit(&StreamEvent::Start { usage: None }, opts, &mut out);
    let mut tools = 0;
    for part in &response.parts {
        match part {
            Part::Text(text) => {
                for piece in text.split_inclusive(' ') {
                    encoder.emit(&StreamEvent::Text(piece.to_owned()), opts, &mut out);
                }
            }
            Part::Thinking { text, signature } => {
                encoder.emit(&StreamEvent::Thinking(text.clone()), opts, &mut out);
                if let Some(signature) = signature {
                    encoder.emit(&StreamEvent::Signature(signature.clone()), opts, &mut out);
                }
            }
            Part::RedactedThinking { data } => {
                encoder.emit(&StreamEvent::RedactedThinking(data.clone()), opts, &mut out);
            }
            Part::ToolCall(call) => {
                let index = tools;
                tools += 1;
                encoder.emit(
                    &StreamEvent::ToolCallStart {
                        index,
                        id: call.id.clone(),
                        name: call.name.clone(),
                    },
                    opts,
                    &mut out,
                );
                encoder.emit(
                    &StreamEvent::ToolCallArgs {
                        index,
                        arguments: call.arguments.clone(),
                    },
                    opts,
                    &mut out,
                );
            }
            Part::Image(_) | Part::ToolResult(_) => {}
        }
    }
    if let Some(reason) = response.finish_reason {
        encoder.emit(
            &StreamEvent::Finish {
                reason,
                stop_sequence: None,
            },
            opts,
            &mut out,
        );
    }
    encoder.emit(
        &StreamEvent::Usage(response.usage.unwrap_or_default()),
        opts,
        &mut out,
    );
    encoder.emit(&StreamEvent::Done, opts, &mut out);
    (out, encoder.final_response.unwrap_or_default())
}

// === Decoder ===

/// A function call item of the upstream's answer.
#[derive(Debug)]
struct Call {
    item_id: String,
    output_index: Option<u64>,
    index: usize,
    /// Its arguments came as deltas (so `.done` adds nothing).
    streamed: bool,
}

/// Reads a Responses upstream's events into canonical events.
#[derive(Debug, Default)]
pub(crate) struct ResponsesDecoder {
    started: bool,
    calls: Vec<Call>,
    /// Reasoning text came as deltas for the current reasoning item.
    reasoning_streamed: bool,
    ended: bool,
}

impl ResponsesDecoder {
    pub(crate) fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), StreamError> {
        if event.data.is_empty() {
            return Ok(());
        }
        if event.is_done() {
            if !self.ended {
                self.ended = true;
                out.push(StreamEvent::Done);
            }
            return Ok(());
        }
        let value = parse_event(event)?;
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default();
        if kind != "error" && kind != "response.failed" && !self.started {
            self.started = true;
            out.push(StreamEvent::Start { usage: None });
        }
        match kind {
            "response.output_item.added" => {
                let item = value.get("item").unwrap_or(&Value::Null);
                match item.get("type").and_then(Value::as_str) {
                    Some("function_call") => {
                        let call = self.call(item, value.get("output_index"), out);
                        let arguments = item
                            .get("arguments")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if !arguments.is_empty() {
                            self.calls[call].streamed = true;
                            out.push(StreamEvent::ToolCallArgs {
                                index: self.calls[call].index,
                                arguments: arguments.to_owned(),
                            });
                        }
                    }
                    Some("reasoning") => self.reasoning_streamed = false,
                    _ => {}
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                push_text(out, StreamEvent::Text, text("delta"));
            }
            "response.reasoning_text.delta" | "response.reasoning_summary_text.delta" => {
                self.reasoning_streamed |= !text("delta").is_empty();
                push_text(out, StreamEvent::Thinking, text("delta"));
            }
            "response.function_call_arguments.delta" => {
                let delta = text("delta");
                if let Some(call) = self.find(text("item_id"), value.get("output_index"))
                    && !delta.is_empty()
                {
                    self.calls[call].streamed = true;
                    out.push(StreamEvent::ToolCallArgs {
                        index: self.calls[call].index,
                        arguments: delta.to_owned(),
                    });
                }
            }
            "response.output_item.done" => {
                let item = value.get("item").unwrap_or(&Value::Null);
                match item.get("type").and_then(Value::as_str) {
                    Some("function_call") => {
                        let call = self.call(item, value.get("output_index"), out);
                        let arguments = item
                            .get("arguments")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if !self.calls[call].streamed && !arguments.is_empty() {
                            self.calls[call].streamed = true;
                            out.push(StreamEvent::ToolCallArgs {
                                index: self.calls[call].index,
                                arguments: arguments.to_owned(),
                            });
                        }
                    }
                    Some("reasoning") => {
                        for part in super::responses::item_parts(item) {
                            match part {
                                Part::Thinking { text, signature } => {
                                    if !self.reasoning_streamed {
                                        push_text(out, StreamEvent::Thinking, &text);
                                    }
                                    if let Some(signature) = signature {
                                        out.push(StreamEvent::Signature(signature));
                                    }
                                }
                                Part::RedactedThinking { data } => {
                                    out.push(StreamEvent::RedactedThinking(data));
                                }
                                _ => {}
                            }
                        }
                        self.reasoning_streamed = false;
                    }
                    _ => {}
                }
            }
            "response.completed" | "response.incomplete" => {
                let response = value.get("response").unwrap_or(&Value::Null);
                if let Some(usage) = response.get("usage").filter(|usage| usage.is_object()) {
                    out.push(StreamEvent::Usage(usage_from(usage)));
                }
                let reason = super::responses::finish_reason_of(response, !self.calls.is_empty());
                out.push(StreamEvent::Finish {
                    reason,
                    stop_sequence: None,
                });
                self.ended = true;
                out.push(StreamEvent::Done);
            }
            "response.failed" => {
                let error = value
                    .pointer("/response/error")
                    .filter(|error| error.is_object())
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"message": "upstream response failed"}));
                out.push(error_event(&error));
            }
            "error" => {
                let error = match value.get("error") {
                    Some(inner) if inner.is_object() => inner,
                    _ => &value,
                };
                out.push(error_event(error));
            }
            _ => {}
        }
        Ok(())
    }

    /// The call an item names (by item id or output index), registered (and started) when new.
    fn call(
        &mut self,
        item: &Value,
        output_index: Option<&Value>,
        out: &mut Vec<StreamEvent>,
    ) -> usize {
        let field = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default();
        if let Some(at) = self.find(field("id"), output_index) {
            return at;
        }
        let index = self.calls.len();
        self.calls.push(Call {
            item_id: field("id").to_owned(),
            output_index: output_index.and_then(Value::as_u64),
            index,
            streamed: false,
        });
        let call_id = match field("call_id") {
            "" => format!("call_{index}"),
            id => id.to_owned(),
        };
        out.push(StreamEvent::ToolCallStart {
            index,
            id: call_id,
            name: field("name").to_owned(),
        });
        index
    }

    fn find(&self, item_id: &str, output_index: Option<&Value>) -> Option<usize> {
        let output_index = output_index.and_then(Value::as_u64);
        self.calls.iter().position(|call| {
            (!item_id.is_empty() && call.item_id == item_id)
                || (item_id.is_empty()
                    && output_index.is_some()
                    && call.output_index == output_index)
        })
    }
}

fn push_text(out: &mut Vec<StreamEvent>, make: fn(String) -> StreamEvent, text: &str) {
    if !text.is_empty() {
        out.push(make(text.to_owned()));
    }
}

// === Pass-through ===

/// How a pass-through Responses stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Terminal {
    /// Not yet.
    Open,
    /// `response.completed` or `response.incomplete`.
    Completed,
    /// `response.failed` or `error`.
    Failed,
}

#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LifecycleIn<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    response: Option<&'a RawValue>,
}

/// The `response` object of a complete Responses stream's terminal event (`response.completed` or
/// `response.incomplete`), when it has one.
pub(crate) fn final_response_of(stream: &[u8]) -> Option<Vec<u8>> {
    let trimmed = stream.strip_suffix(b"\n\n")?;
    let start = memchr::memmem::rfind(trimmed, b"\n\n").map_or(0, |at| at + 2);
    let event = &trimmed[start..];
    let data = &event[memchr::memmem::find(event, b"data: ")? + 6..];
    let lifecycle: LifecycleIn<'_> = serde_json::from_slice(data).ok()?;
    matches!(
        lifecycle.kind.as_deref(),
        Some("response.completed" | "response.incomplete")
    )
    .then(|| lifecycle.response.map(|r| r.get().as_bytes().to_vec()))
    .flatten()
}

/// Same protocol in and out (a backend that speaks Responses): events are forwarded as received, except
/// that the `response.id` of lifecycle events becomes the gateway's response id. The final
/// `response.completed` is read once for the summary (logs, usage) and kept for the conversation store;
/// deltas are not parsed.
#[derive(Debug)]
pub(crate) struct ResponsesPassThrough {
    id_json: String,
    /// Events forwarded so far: the next `sequence_number` for an event of the gateway's own.
    forwarded: u64,
    /// The last lifecycle `response` object (id rewritten); a fault's `response.failed` repeats it.
    last_response: Option<Vec<u8>>,
    completed: Option<Vec<u8>>,
    summary: Option<ResponseSummary>,
    terminal: Terminal,
    /// A lifecycle end (`response.completed`, `.incomplete`, `.failed`) went by.
    finished: bool,
    first_error: Option<String>,
}

impl ResponsesPassThrough {
    /// `response_id` is the gateway's id for the answer.
    pub fn new(response_id: &str) -> Self {
        ResponsesPassThrough {
            id_json: super::json_patch::json_string(response_id),
            forwarded: 0,
            last_response: None,
            completed: None,
            summary: None,
            terminal: Terminal::Open,
            finished: false,
            first_error: None,
        }
    }

    /// True once the upstream's final lifecycle event (`response.completed`, `.incomplete` or
    /// `.failed`) went by: nothing after it changes the answer.
    pub fn finished(&self) -> bool {
        self.finished
    }

    pub fn terminal(&self) -> Terminal {
        self.terminal
    }

    /// The message of an error that was the upstream's very first event (nothing was answered).
    pub(crate) fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// The final `response` object, once `response.completed` (or `.incomplete`) passed.
    pub(crate) fn completed_response(&self) -> Option<&[u8]> {
        self.completed.as_deref()
    }

    /// What the final `response` says (text, reasoning, tool calls, usage, finish).
    pub fn summary(&self) -> Option<&ResponseSummary> {
        self.summary.as_ref()
    }

    /// Forward one upstream event to `out`.
    pub fn forward(&mut self, event: &SseEvent, out: &mut BytesMut) {
        let first = self.forwarded == 0;
        if !event.is_comment() {
            self.forwarded += 1;
        }
        let named;
        let kind = match event.event.as_deref() {
            Some(name) => name,
            None => {
                named = super::fast_decode::<TypeOnly<'_>>(&event.data).and_then(|t| t.kind);
                named.as_deref().unwrap_or_default()
            }
        };
        match kind {
            "response.created"
            | "response.in_progress"
            | "response.queued"
            | "response.completed"
            | "response.incomplete"
            | "response.failed" => {
                self.finished |= matches!(
                    kind,
                    "response.completed" | "response.incomplete" | "response.failed"
                );
                let Some((data, response)) = self.with_our_id(&event.data) else {
                    // Not an object we can read: forwarded as it came, still the end it says it is.
                    match kind {
                        "response.completed" | "response.incomplete" => {
                            self.terminal = Terminal::Completed;
                        }
                        "response.failed" => self.terminal = Terminal::Failed,
                        _ => {}
                    }
                    out.extend_from_slice(&event.raw);
                    return;
                };
                sse::encode(event.event.as_deref(), &data, out);
                match kind {
                    "response.completed" | "response.incomplete" => {
                        self.terminal = Terminal::Completed;
                        if let Ok(value) = serde_json::from_slice::<Value>(&response) {
                            self.summary =
                                Some(ResponseSummary::from_response(&response_from_value(&value)));
                        }
                        self.completed = Some(response);
                    }
                    "response.failed" => {
                        self.terminal = Terminal::Failed;
                        if first {
                            self.first_error = Some(failure_message(&event.data));
                        }
                        self.last_response = Some(response);
                    }
                    _ => self.last_response = Some(response),
                }
            }
            "error" => {
                self.terminal = Terminal::Failed;
                if first {
                    self.first_error = Some(failure_message(&event.data));
                }
                out.extend_from_slice(&event.raw);
            }
            _ => out.extend_from_slice(&event.raw),
        }
    }

    /// The event's data and its `response` object, with the response's id made ours.
    fn with_our_id(&self, data: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let lifecycle: LifecycleIn<'_> = serde_json::from_slice(data).ok()?;
        let response = set_fields(
            lifecycle.response?.get().as_bytes(),
            &[("id", &self.id_json)],
        )
        .ok()?;
        let response_text = std::str::from_utf8(&response).ok()?;
        let data = set_fields(data, &[("response", response_text)]).ok()?;
        Some((data, response))
    }

    /// The events that end the stream after a fault: `error`, then `response.failed` (when the
    /// upstream had announced the response).
    pub(crate) fn error_events(&mut self, message: &str, out: &mut BytesMut) {
        let seq = self.forwarded;
        ErrorEventOut {
            kind: "error",
            sequence_number: seq,
            code: "server_error",
            message,
            param: None,
        }
        .write(out);
        if let Some(response) = &self.last_response {
            let error = serde_json::json!({"code": "server_error", "message": message}).to_string();
            if let Ok(failed) = set_fields(response, &[("status", "\"failed\""), ("error", &error)])
            {
                lifecycle_event(out, "response.failed", seq + 1, &failed);
            }
        }
        self.forwarded += 2;
        self.terminal = Terminal::Failed;
    }
}

/// The message of an `error` or `response.failed` event.
fn failure_message(data: &[u8]) -> String {
    let value: Value = serde_json::from_slice(data).unwrap_or_default();
    let message = value
        .pointer("/response/error/message")
        .or_else(|| value.pointer("/error/message"))
        .or_else(|| value.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("upstream response failed");
    message
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> StreamOptions {
        StreamOptions {
            id: "resp_t".into(),
            model: "m".into(),
            ..StreamOptions::default()
        }
    }

    fn events(bytes: &[u8]) -> Vec<Value> {
        let mut decoder = super::super::sse::SseDecoder::default();
        decoder.feed(bytes);
        let mut out = Vec::new();
        while let Ok(Some(event)) = decoder.next_event() {
            let value: Value = serde_json::from_slice(&event.data).unwrap();
            assert_eq!(event.event.as_deref(), value["type"].as_str());
            out.push(value);
        }
        out
    }

    #[test]
    fn events_are_numbered_in_the_official_order() {
        let response = ChatResponse {
            id: "resp_t".into(),
            model: "m".into(),
            parts: vec![
                Part::Thinking {
                    text: "why".into(),
                    signature: Some("sig".into()),
                },
                Part::Text("Hello world".into()),
                Part::ToolCall(super::super::ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments: "{}".into(),
                }),
            ],
            finish_reason: Some(FinishReason::ToolCalls),
            usage: Some(Usage {
                input_tokens: 3,
                output_tokens: 4,
                ..Usage::default()
            }),
            ..ChatResponse::default()
        };
        let (out, last) = replay(&response, &opts(), 7);
        let events = events(&out);
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.reasoning_text.delta",
                "response.reasoning_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (seq, event) in events.iter().enumerate() {
            assert_eq!(event["sequence_number"], seq as u64);
        }
        let completed = &events.last().unwrap()["response"];
        assert_eq!(completed["status"], "completed");
        assert_eq!(completed["output"][0]["encrypted_content"], "sig");
        assert_eq!(completed["output"][1]["content"][0]["text"], "Hello world");
        assert_eq!(completed["usage"]["output_tokens"], 4);
        let kept: Value = serde_json::from_slice(&last).unwrap();
        assert_eq!(&kept, completed);
    }

    #[test]
    fn a_fault_ends_with_error_and_failed() {
        let mut encoder = ResponsesEncoder::new(1);
        let mut out = BytesMut::new();
        encoder.emit(&StreamEvent::Text("partial".into()), &opts(), &mut out);
        encoder.emit(
            &StreamEvent::Error {
                kind: "api_error".into(),
                message: "upstream reset".into(),
            },
            &opts(),
            &mut out,
        );
        encoder.emit(&StreamEvent::Done, &opts(), &mut out);
        let events = events(&out);
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types[types.len() - 2..], ["error", "response.failed"]);
        assert!(!types.contains(&"response.completed"));
        let failed = &events.last().unwrap()["response"];
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["error"]["message"], "upstream reset");
        assert_eq!(failed["output"][0]["status"], "incomplete");
        assert!(encoder.final_response.is_none());
    }

    #[test]
    fn pass_through_rewrites_only_the_response_id() {
        let upstream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_up\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[],\"extra\":1}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_up\",\"output_index\":0,\"content_index\":0,\"delta\":\"hi\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_up\",\"status\":\"completed\",\"output\":[{\"type\":\"message\",\"id\":\"msg_up\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"hi\"}]}],\"usage\":{\"input_tokens\":2,\"output_tokens\":1,\"total_tokens\":3}}}\n\n",
        );
        let mut decoder = super::super::sse::SseDecoder::default();
        decoder.feed(upstream.as_bytes());
        let mut pass = ResponsesPassThrough::new("resp_gw");
        let mut out = BytesMut::new();
        while let Ok(Some(event)) = decoder.next_event() {
            pass.forward(&event, &mut out);
        }
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(!text.contains("resp_up"), "{text}");
        assert!(text.contains("\"extra\":1"));
        assert!(text.contains("\"item_id\":\"msg_up\""));
        assert_eq!(pass.terminal(), Terminal::Completed);
        let summary = pass.summary().unwrap();
        assert_eq!(summary.text, "hi");
        assert_eq!(summary.usage.map(|u| u.input_tokens), Some(2));
        let completed: Value = serde_json::from_slice(pass.completed_response().unwrap()).unwrap();
        assert_eq!(completed["id"], "resp_gw");
        let mut more = BytesMut::new();
        pass.error_events("boom", &mut more);
        let events = events(&more);
        assert_eq!(events[0]["sequence_number"], 3);
    }
}

#[cfg(test)]
mod writer_tests {
    use super::super::stream::write_event;
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        "(\\PC|[\"\\\\\n\\x01\\x7f]){0,12}"
    }

    /// `write` against `write_event` of the serde derive.
    fn same<T: Serialize>(
        kind: &str,
        event: &T,
        write: impl Fn(&T, &mut BytesMut),
    ) -> Result<(), TestCaseError> {
        let mut written = BytesMut::new();
        write(event, &mut written);
        let mut oracle = BytesMut::new();
        write_event(&mut oracle, Some(kind), event);
        prop_assert_eq!(
            String::from_utf8_lossy(&written),
            String::from_utf8_lossy(&oracle)
        );
        Ok(())
    }

    proptest! {
        /// Every event is byte for byte what `write_event` makes of its serde form.
        #[test]
        fn events_are_the_serde_form(
            seq in any::<u64>(),
            at in any::<usize>(),
            id in text(),
            a in text(),
            b in text(),
            status in prop_oneof![Just("in_progress"), Just("completed"), Just("incomplete")],
            full in any::<bool>(),
            encrypted in proptest::option::of(text()),
        ) {
            let kind = "response.x";
            same(kind, &TextDeltaOut { kind, sequence_number: seq, item_id: &id, output_index: at, content_index: 0, delta: &a, logprobs: [] }, |e, out| e.write(out))?;
            same(kind, &TextDoneOut { kind, sequence_number: seq, item_id: &id, output_index: at, content_index: 0, text: &a, logprobs: [] }, |e, out| e.write(out))?;
            same(kind, &ReasoningDeltaOut { kind, sequence_number: seq, item_id: &id, output_index: at, content_index: 0, delta: &a }, |e, out| e.write(out))?;
            same(kind, &ReasoningDoneOut { kind, sequence_number: seq, item_id: &id, output_index: at, content_index: 0, text: &a }, |e, out| e.write(out))?;
            same(kind, &ArgsDeltaOut { kind, sequence_number: seq, item_id: &id, output_index: at, delta: &a }, |e, out| e.write(out))?;
            same(kind, &ArgsDoneOut { kind, sequence_number: seq, item_id: &id, output_index: at, name: &a, arguments: &b }, |e, out| e.write(out))?;
            same("error", &ErrorEventOut { kind: "error", sequence_number: seq, code: &a, message: &b, param: None }, |e, out| e.write(out))?;
            same(kind, &PartEventOut { kind, sequence_number: seq, item_id: &id, output_index: at, content_index: 0, part: OutputTextOut::new(&a) }, |e, out| e.write(out))?;
            same(kind, &PartEventOut { kind, sequence_number: seq, item_id: &id, output_index: at, content_index: 0, part: ReasoningTextOut::new(&a) }, |e, out| e.write(out))?;
            let bodies = [
                ItemBody::Message { text: a.clone() },
                ItemBody::Reasoning { text: a.clone(), encrypted: encrypted.clone() },
                ItemBody::FunctionCall { call_id: a.clone(), name: b.clone(), arguments: a.clone() },
            ];
            for body in &bodies {
                same(kind, &ItemEventOut { kind, sequence_number: seq, output_index: at, item: body.out(&id, status, full) }, |e, out| e.write(out))?;
            }
        }
    }
}
