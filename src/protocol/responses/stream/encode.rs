//! The Responses stream encoder: canonical [`StreamEvent`]s → the official semantic events, in order,
//! numbered by `sequence_number`, with the final `response` object kept for the conversation store.

use bytes::BytesMut;

use crate::protocol::responses::write::{
    ItemBody, OutputTextOut, ReasoningTextOut, ResponseHead, status_of, write_items, write_response,
};
use crate::protocol::responses::{REDACTED_PREFIX, item_id};
use crate::protocol::stream::{StreamEvent, StreamOptions};
use crate::protocol::{FinishReason, Usage};

use super::events::{
    ArgsDeltaOut, ArgsDoneOut, ErrorEventOut, ItemEventOut, PartEventOut, PartTextOut,
    lifecycle_event,
};

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

/// Which text event of a content part: a piece, or the whole text once the part is done.
#[derive(Debug, Clone, Copy)]
enum TextEvent {
    Delta,
    Done,
}

impl Item {
    /// The text event of this item's content part (a message's output text, with `logprobs`, or a
    /// reasoning item's text); none for a function call.
    fn text_event(&self, which: TextEvent, seq: u64, at: usize, text: &str, out: &mut BytesMut) {
        let (kind, logprobs) = match (Kind::of(&self.body), which) {
            (Some(Kind::Message), TextEvent::Delta) => ("response.output_text.delta", true),
            (Some(Kind::Message), TextEvent::Done) => ("response.output_text.done", true),
            (Some(Kind::Reasoning), TextEvent::Delta) => ("response.reasoning_text.delta", false),
            (Some(Kind::Reasoning), TextEvent::Done) => ("response.reasoning_text.done", false),
            (None, _) => return,
        };
        PartTextOut {
            kind,
            sequence_number: seq,
            item_id: &self.id,
            output_index: at,
            content_index: 0,
            field: match which {
                TextEvent::Delta => "delta",
                TextEvent::Done => "text",
            },
            text,
            logprobs,
        }
        .write(out);
    }
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
                if let ItemBody::Message { text: all } = &mut self.items[at].body {
                    crate::protocol::stream::push_piece(all, text);
                }
                let seq = self.next_seq();
                self.items[at].text_event(TextEvent::Delta, seq, at, text, out);
            }
            StreamEvent::Thinking(text) => {
                let at = self.ensure_item(Kind::Reasoning, opts, out);
                if let ItemBody::Reasoning { text: all, .. } = &mut self.items[at].body {
                    all.push_str(text);
                }
                let seq = self.next_seq();
                self.items[at].text_event(TextEvent::Delta, seq, at, text, out);
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
                item.text_event(TextEvent::Done, bump(seq), at, text, out);
                part_event("response.content_part.done", bump(seq), at, item, text, out);
            }
            ItemBody::Reasoning { text, encrypted } => {
                let redacted = encrypted
                    .as_deref()
                    .is_some_and(|e| e.starts_with(REDACTED_PREFIX));
                if !redacted {
                    item.text_event(TextEvent::Done, bump(seq), at, text, out);
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{events, opts};
    use super::*;

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
}
