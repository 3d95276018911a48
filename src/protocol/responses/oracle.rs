//! The serde forms the hand-written Responses writers are held to (test-only).

use serde::Serialize;

use super::DEFAULT_ECHO;
use super::write::{ItemOut, ResponseHead};
use crate::protocol::Usage;

#[derive(Serialize)]
struct HeadOut<'a> {
    id: &'a str,
    object: &'static str,
    created_at: i64,
    status: &'static str,
    background: bool,
    error: Option<ErrorOut<'a>>,
    incomplete_details: Option<IncompleteOut>,
    model: &'a str,
}

#[derive(Serialize)]
pub(crate) struct ErrorOut<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
pub(crate) struct IncompleteOut {
    reason: &'static str,
}

/// Responses `usage`, as the API writes it.
#[derive(Serialize)]
pub(crate) struct UsageOut {
    input_tokens: u64,
    input_tokens_details: CachedOut,
    output_tokens: u64,
    output_tokens_details: ReasoningTokensOut,
    total_tokens: u64,
}

#[derive(Serialize)]
pub(crate) struct CachedOut {
    cached_tokens: u64,
}

#[derive(Serialize)]
pub(crate) struct ReasoningTokensOut {
    reasoning_tokens: u64,
}

impl UsageOut {
    pub(crate) fn new(usage: &Usage) -> UsageOut {
        UsageOut {
            input_tokens: usage.input_tokens,
            input_tokens_details: CachedOut {
                cached_tokens: usage.cache_read_tokens,
            },
            output_tokens: usage.output_tokens,
            output_tokens_details: ReasoningTokensOut {
                reasoning_tokens: usage.reasoning_tokens,
            },
            total_tokens: usage.input_tokens.saturating_add(usage.output_tokens),
        }
    }
}

/// Write a whole `response` object: the head, `output` (written by `output`, which gets the buffer
/// right after `[`), the request's members and `usage`.
pub(crate) fn write_response_serde(
    out: &mut Vec<u8>,
    head: &ResponseHead<'_>,
    output: impl FnOnce(&mut Vec<u8>),
    usage: Option<&Usage>,
) {
    let head_out = HeadOut {
        id: head.id,
        object: "response",
        created_at: head.created_at,
        status: head.status,
        background: false,
        error: head.error.map(|(code, message)| ErrorOut { code, message }),
        incomplete_details: head
            .incomplete_reason
            .map(|reason| IncompleteOut { reason }),
        model: head.model,
    };
    let start = out.len();
    if serde_json::to_writer(&mut *out, &head_out).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"{");
    } else {
        // Reopen the object: `…"model":"m"}` continues with `,"output":[`.
        out.pop();
        out.push(b',');
    }
    out.extend_from_slice(br#""output":["#);
    output(out);
    out.extend_from_slice(b"],");
    out.extend_from_slice(if head.echo.is_empty() {
        DEFAULT_ECHO.as_bytes()
    } else {
        head.echo.as_bytes()
    });
    out.extend_from_slice(br#","usage":"#);
    match usage {
        Some(usage) => {
            if serde_json::to_writer(&mut *out, &UsageOut::new(usage)).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// Items written one after another into an array being written.
pub(crate) fn write_items_serde<'a>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = ItemOut<'a>>,
) {
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        let start = out.len();
        if serde_json::to_writer(&mut *out, &item).is_err() {
            out.truncate(start);
            out.extend_from_slice(b"null");
        }
    }
}
