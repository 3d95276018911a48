//! The response-cache stage: the key rule, answering a hit (JSON, or an SSE replay for stream requests),
//! and storing complete answers. Errors and partial streams are never stored.
//!
//! Key rule: endpoint + resolved backend + the request body with `stream`, `stream_options`, `user`,
//! `metadata` and `cache` removed and object keys sorted — every sampling parameter counts, the request
//! id and the client key never do. A stream and a non-stream request for the same thing share the entry.

use axum::response::Response;
use bytes::Bytes;
use http::HeaderValue;
use serde_json::Value;

use crate::cache::{CacheKey, CachedResponse, ResponseCache, WireProtocol};
use crate::protocol::convert;
use crate::protocol::json_patch::{json_string, set_fields};
use crate::protocol::openai::{self, TextAnswer};
use crate::protocol::{
    ChatResponse, Endpoint, FinishReason, Part, Protocol, ResponseSummary, anthropic,
};
use crate::state::AppState;

use super::RequestCtx;
use super::reply;

const IGNORED: [&str; 5] = ["stream", "stream_options", "user", "metadata", "cache"];

/// What the cache stage decided for one request.
pub struct Plan {
    /// `None` when the request bypasses the cache (`Cache-Control: no-cache`, `"cache": false`).
    pub key: Option<CacheKey>,
    /// The body to forward instead of the client's, when it carried a `cache` field (stripped: upstreams
    /// reject unknown parameters).
    pub forward: Option<Bytes>,
}

pub fn plan(endpoint: Endpoint, backend: &str, headers: &http::HeaderMap, body: &[u8]) -> Plan {
    let mut bypass = headers
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            // Directives are case-insensitive (RFC 9111 §5.2).
            v.split(',').any(|directive| {
                let directive = directive.trim();
                directive.eq_ignore_ascii_case("no-cache")
                    || directive.eq_ignore_ascii_case("no-store")
            })
        });
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
        return Plan {
            key: None,
            forward: None,
        };
    };
    let forward = match object.shift_remove("cache") {
        Some(flag) => {
            bypass |= flag == Value::Bool(false);
            serde_json::to_vec(&object).ok().map(Bytes::from)
        }
        None => None,
    };
    if bypass {
        return Plan { key: None, forward };
    }
    for field in IGNORED {
        object.shift_remove(field);
    }
    let mut material = format!("{}\n{}\n", endpoint.path(), backend);
    write_sorted(&Value::Object(object), &mut material);
    Plan {
        key: Some(ResponseCache::key(material.as_bytes())),
        forward,
    }
}

fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for key in keys {
                out.push_str(&json_string(key));
                out.push(':');
                write_sorted(&map[key], out);
                out.push(',');
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for item in items {
                write_sorted(item, out);
                out.push(',');
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn wire(protocol: Protocol) -> WireProtocol {
    match protocol {
        Protocol::OpenAi => WireProtocol::OpenAi,
        Protocol::Anthropic => WireProtocol::Anthropic,
    }
}

/// Answer a request from a cached entry, or `None` when the entry cannot serve it (a stream request for
/// an answer with tool calls).
pub fn answer(
    cached: &CachedResponse,
    stream: bool,
    include_usage: bool,
    ctx: &mut RequestCtx,
) -> Option<Response> {
    let protocol = ctx.endpoint.protocol();
    let response = if stream {
        let decoded = convert::decode_response(protocol, &cached.body).ok()?;
        let text = text_only(&decoded)?;
        let created = jiff::Timestamp::now().as_second();
        let model = ctx.model.clone().unwrap_or_else(|| decoded.model.clone());
        let usage = decoded.usage.unwrap_or_default();
        let text_answer = TextAnswer {
            id: &ctx.id,
            model: &model,
            created,
            text: &text,
            finish_reason: decoded.finish_reason.unwrap_or(FinishReason::Stop),
            usage,
        };
        let pieces: Vec<&str> = text.split_inclusive(' ').collect();
        let mut out = bytes::BytesMut::new();
        match protocol {
            // A legacy completions client gets `text_completion` chunks, not chat chunks.
            Protocol::OpenAi if ctx.endpoint == Endpoint::Completions => {
                for chunk in openai::text_completion_chunks(&text_answer, &pieces) {
                    crate::protocol::sse::encode(None, chunk.to_string().as_bytes(), &mut out);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            Protocol::OpenAi => {
                for chunk in openai::chat_chunks(&text_answer, &pieces, include_usage) {
                    crate::protocol::sse::encode(None, chunk.to_string().as_bytes(), &mut out);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            Protocol::Anthropic => {
                for (name, data) in
                    anthropic::message_stream(&text_answer, &pieces, usage.input_tokens)
                {
                    crate::protocol::sse::encode(Some(name), data.to_string().as_bytes(), &mut out);
                }
            }
        }
        ctx.usage = Some(usage);
        reply::sse_bytes(out.freeze(), &cached.backend)
    } else {
        let body = set_fields(
            &cached.body,
            &[
                ("id", &json_string(&ctx.id)),
                ("backend", &json_string(&cached.backend)),
                ("cached", "true"),
            ],
        )
        .ok()?;
        ctx.usage = usage_of(&cached.body, protocol);
        reply::json(Bytes::from(body), &cached.backend)
    };
    ctx.status = 200;
    ctx.backend = Some(cached.backend.clone());
    ctx.ttft = Some(ctx.started.elapsed());
    Some(with_cache_header(response, true))
}

fn usage_of(body: &[u8], protocol: Protocol) -> Option<crate::protocol::Usage> {
    convert::decode_response(protocol, body).ok()?.usage
}

fn text_only(response: &ChatResponse) -> Option<String> {
    let mut text = String::new();
    for part in &response.parts {
        match part {
            Part::Text(piece) => text.push_str(piece),
            Part::Thinking { .. } | Part::RedactedThinking { .. } => {}
            _ => return None,
        }
    }
    Some(text)
}

pub fn with_cache_header(mut response: Response, hit: bool) -> Response {
    response.headers_mut().insert(
        "x-cache",
        HeaderValue::from_static(if hit { "HIT" } else { "MISS" }),
    );
    response
}

/// Store a complete JSON answer in the background (never on the request path).
pub fn store_json(state: &AppState, key: CacheKey, body: Bytes, backend: &str, protocol: Protocol) {
    let state = state.clone();
    let value = CachedResponse {
        body,
        backend: backend.to_owned(),
        protocol: wire(protocol),
    };
    tokio::spawn(async move { state.cache().put(&key, value).await });
}

/// Store a finished stream as its complete JSON answer (text answers only).
pub fn store_stream(state: &AppState, key: CacheKey, summary: &ResponseSummary, ctx: &RequestCtx) {
    if ctx.endpoint == Endpoint::Embeddings
        || !summary.tool_calls.is_empty()
        || summary.finish_reason.is_none()
    {
        return;
    }
    let protocol = ctx.endpoint.protocol();
    let created = jiff::Timestamp::now().as_second();
    // A stream without a usage chunk was counted from its text when it closed (`ctx.usage`).
    let usage = summary.usage.or(ctx.usage);
    if ctx.endpoint == Endpoint::Completions {
        // Stored in the endpoint's own shape: a `text_completion`, never a `chat.completion`.
        let model = ctx.model.clone().unwrap_or_default();
        let body = openai::text_completion(&TextAnswer {
            id: &ctx.id,
            model: &model,
            created,
            text: &summary.text,
            finish_reason: summary.finish_reason.unwrap_or(FinishReason::Stop),
            usage: usage.unwrap_or_default(),
        });
        if let Ok(bytes) = serde_json::to_vec(&body) {
            store_json(
                state,
                key,
                Bytes::from(bytes),
                ctx.backend.as_deref().unwrap_or(""),
                protocol,
            );
        }
        return;
    }
    let response = ChatResponse {
        id: ctx.id.clone(),
        model: ctx.model.clone().unwrap_or_default(),
        created: None,
        parts: vec![Part::Text(summary.text.clone())],
        finish_reason: summary.finish_reason,
        stop_sequence: None,
        usage,
    };
    let body = convert::encode_response(protocol, &response, created);
    let Ok(bytes) = serde_json::to_vec(&body) else {
        return;
    };
    store_json(
        state,
        key,
        Bytes::from(bytes),
        ctx.backend.as_deref().unwrap_or(""),
        protocol,
    );
}
