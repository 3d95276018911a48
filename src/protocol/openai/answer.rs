//! Bodies the gateway writes itself in OpenAI's shapes: the echo backend's and the cache's text answers
//! (chat, completion, their stream chunks), embeddings lists and error bodies.

use serde::Serialize;
use serde_json::Value;

use super::finish_reason_str;
use crate::protocol::{FinishReason, Usage};

#[derive(Serialize)]
pub(crate) struct UsageWire {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl From<Usage> for UsageWire {
    fn from(usage: Usage) -> Self {
        UsageWire {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: usage.input_tokens + usage.output_tokens,
        }
    }
}

/// A complete assistant text answer, rendered in the shape of each endpoint.
#[derive(Debug, Clone)]
pub struct TextAnswer<'a> {
    pub id: &'a str,
    pub model: &'a str,
    pub created: i64,
    pub text: &'a str,
    pub finish_reason: FinishReason,
    pub usage: Usage,
}

/// Render a `chat.completion` object.
pub(crate) fn chat_completion(answer: &TextAnswer<'_>) -> Value {
    serde_json::json!({
        "id": answer.id,
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.text},
            "logprobs": null,
            "finish_reason": finish_reason_str(answer.finish_reason),
        }],
        "usage": UsageWire::from(answer.usage),
    })
}

/// Render a `text_completion` object.
pub fn text_completion(answer: &TextAnswer<'_>) -> Value {
    serde_json::json!({
        "id": answer.id,
        "object": "text_completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [{
            "index": 0,
            "text": answer.text,
            "logprobs": null,
            "finish_reason": finish_reason_str(answer.finish_reason),
        }],
        "usage": UsageWire::from(answer.usage),
    })
}

/// Render the SSE `data:` payloads of a streamed chat answer split into `pieces`: the role in the first
/// chunk, one chunk per piece, an empty delta with the finish reason, then a usage chunk when asked.
pub(crate) fn chat_chunks(
    answer: &TextAnswer<'_>,
    pieces: &[&str],
    include_usage: bool,
) -> Vec<Value> {
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut chunk = serde_json::json!({
            "id": answer.id,
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": answer.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage && let Some(object) = chunk.as_object_mut() {
            object.insert("usage".into(), Value::Null);
        }
        chunk
    };
    let mut out = Vec::with_capacity(pieces.len() + 3);
    out.push(chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
    ));
    for piece in pieces {
        out.push(chunk(serde_json::json!({"content": piece}), None));
    }
    out.push(chunk(
        serde_json::json!({}),
        Some(finish_reason_str(answer.finish_reason)),
    ));
    if include_usage {
        out.push(serde_json::json!({
            "id": answer.id,
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": answer.model,
            "choices": [],
            "usage": UsageWire::from(answer.usage),
        }));
    }
    out
}

/// Render the SSE payloads of a streamed text completion.
pub(crate) fn text_completion_chunks(answer: &TextAnswer<'_>, pieces: &[&str]) -> Vec<Value> {
    let chunk = |text: &str, finish: Option<&str>| {
        serde_json::json!({
            "id": answer.id,
            "object": "text_completion",
            "created": answer.created,
            "model": answer.model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut out: Vec<Value> = pieces.iter().map(|piece| chunk(piece, None)).collect();
    out.push(chunk("", Some(finish_reason_str(answer.finish_reason))));
    out
}

/// Render an embeddings list.
pub fn embeddings(model: &str, vectors: &[Vec<f32>], prompt_tokens: u64) -> Value {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| serde_json::json!({"object": "embedding", "index": index, "embedding": vector}))
        .collect();
    serde_json::json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
}

/// Render an OpenAI error body.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    serde_json::json!({
        "error": {"message": message, "type": kind, "param": param, "code": code}
    })
}
