//! Incremental stream conversion between the protocols, bytes in → bytes out: the canonical
//! [`StreamEvent`], each protocol's decoder and encoder, and the converter choosing them.
//!
//! Upstream SSE bytes are cut into events by [`SseDecoder`](super::sse::SseDecoder) (only the
//! current event is buffered), each event is decoded into canonical [`StreamEvent`]s, and an
//! encoder state machine renders them in the client's protocol: the Anthropic event order
//! (`message_start`, per-block start/delta/stop, `message_delta`, `message_stop`) or the OpenAI
//! chunk rules (role first, `finish_reason` last, optional usage chunk, `data: [DONE]`). A summary
//! of the answer is kept on the side for logs and accounting.
//!
//! - `converter.rs`: [`StreamConverter`], one upstream stream in the client's protocol.
//! - `dispatch.rs`: the decoder and encoder enums over every protocol (the Responses ones included).
//! - `summary.rs`: the answer's summary; `tap.rs`: [`StreamTap`], which only keeps it (pass-through).
//! - `decode_openai.rs`, `decode_anthropic.rs`: upstream events → canonical events (the Responses
//!   decoder and encoder live in `responses/stream/`).
//! - `exact.rs`: parser-free readers of the events most streams are made of.
//! - `encode_openai.rs`, `encode_anthropic.rs`: canonical events → the client's SSE bytes.
//!
//! A decoder reads an event through the first of three tiers that takes it: an exact reader for the
//! layout OpenAI, vLLM and Anthropic send, then borrowed typed views (no JSON tree, strings
//! borrowed from the event unless they contain escapes), then the general `Value` path, which
//! defines the semantics. Anything unusual (a field of an unexpected type, a duplicate key, invalid
//! JSON) fails the faster tiers and takes the `Value` path; all tiers emit the same events, and the
//! golden and re-chunking tests run through both the fast tiers and the `Value` path alone
//! (`decode_both_ways`).

mod converter;
mod decode_anthropic;
mod decode_openai;
mod dispatch;
mod encode_anthropic;
mod encode_openai;
pub(crate) mod exact;
mod summary;
mod tap;

use std::borrow::Cow;

use bytes::BytesMut;
use serde::Serialize;
use serde_json::{Value, json};

pub use super::ResponseSummary;
use super::convert;
use super::sse::{SseError, SseEvent};
use super::{FinishReason, Protocol, Usage};
pub use converter::StreamConverter;
#[cfg(test)]
pub(crate) use dispatch::decode_both_ways;
pub(crate) use summary::push_piece;
pub(crate) use tap::StreamTap;

/// How to present the converted stream.
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// The gateway's request id, used as the message/chunk id.
    pub id: String,
    /// Model name shown to the client.
    pub model: String,
    /// OpenAI clients' `stream_options.include_usage`.
    pub include_usage: bool,
    /// Prompt token estimate, used while (or when) the backend has not reported the real count.
    pub input_tokens: u64,
    /// Responses clients: what the `response` object repeats from the request.
    pub echo: super::responses::ResponseEcho,
}

/// The upstream stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Sse(#[from] SseError),
    #[error("upstream sent an invalid stream event: {0}")]
    InvalidEvent(String),
}

/// One step of a streamed answer, in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StreamEvent {
    /// The answer begins; Anthropic backends report the prompt usage here.
    Start {
        usage: Option<Usage>,
    },
    Text(String),
    Thinking(String),
    /// The signature of the current thinking block.
    Signature(String),
    RedactedThinking(String),
    /// A tool call begins; `index` counts tool calls from 0 (OpenAI's `tool_calls[].index`).
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// A fragment of a tool call's JSON arguments.
    ToolCallArgs {
        index: usize,
        arguments: String,
    },
    Finish {
        reason: FinishReason,
        stop_sequence: Option<String>,
    },
    /// Usage so far (a full snapshot, later ones replace earlier ones).
    Usage(Usage),
    Error {
        kind: String,
        message: String,
    },
    Done,
}

fn push_text(out: &mut Vec<StreamEvent>, make: fn(String) -> StreamEvent, text: String) {
    if !text.is_empty() {
        out.push(make(text));
    }
}

pub(crate) fn parse_event(event: &SseEvent) -> Result<Value, StreamError> {
    serde_json::from_slice(&event.data).map_err(|error| {
        let data = String::from_utf8_lossy(&event.data);
        let mut cut = data.len().min(200);
        while !data.is_char_boundary(cut) {
            cut -= 1;
        }
        StreamError::InvalidEvent(format!("{error} in '{}'", &data[..cut]))
    })
}

pub(crate) fn error_event(error: &Value) -> StreamEvent {
    let body = json!({ "error": error });
    let info = convert::error_info(Protocol::OpenAi, 500, body.to_string().as_bytes());
    StreamEvent::Error {
        kind: info.kind.to_owned(),
        message: info.message,
    }
}

fn non_empty<'s>(text: &'s Option<Cow<'_, str>>) -> Option<&'s str> {
    text.as_deref().filter(|text| !text.is_empty())
}

/// Per upstream event: the canonical events decoded, or the error.
#[cfg(test)]
pub(crate) type DecodedEvents = Vec<Result<Vec<StreamEvent>, String>>;

/// A data-only SSE event carrying `data` (tests).
#[cfg(test)]
pub(crate) fn data_event(data: impl Into<Vec<u8>>) -> SseEvent {
    let data = bytes::Bytes::from(data.into());
    SseEvent {
        event: None,
        data: data.clone(),
        raw: data,
    }
}

/// One SSE event whose data is `data` as compact JSON, serialized straight into `out` (compact JSON has
/// no raw newline, so it is one `data:` line, exactly what [`sse::encode`](super::sse::encode) would
/// write).
pub(crate) fn write_event<T: Serialize + ?Sized>(out: &mut BytesMut, name: Option<&str>, data: &T) {
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"data: ");
    let start = out.len();
    if serde_json::to_writer(bytes::BufMut::writer(&mut *out), data).is_err() {
        // Our wire types always serialize; keep the frame well-formed if one ever did not.
        out.truncate(start);
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sse;

    /// `write_event` frames exactly like `sse::encode` over the serialized value.
    #[test]
    fn write_event_matches_sse_encode() {
        let value = json!({"type": "content_block_delta", "delta": {"text": "a\nb"}});
        for name in [None, Some("content_block_delta")] {
            let mut out = BytesMut::new();
            write_event(&mut out, name, &value);
            let mut expected = BytesMut::new();
            sse::encode(name, &serde_json::to_vec(&value).unwrap(), &mut expected);
            assert_eq!(out, expected);
        }
    }
}
