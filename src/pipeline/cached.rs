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
use sha2::{Digest, Sha256};

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

/// True when the client asked not to use the cache (`Cache-Control: no-cache` or `no-store`).
pub(crate) fn bypassed(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            // Directives are case-insensitive (RFC 9111 §5.2).
            v.split(',').any(|directive| {
                let directive = directive.trim();
                directive.eq_ignore_ascii_case("no-cache")
                    || directive.eq_ignore_ascii_case("no-store")
            })
        })
}

/// What the cache stage decided for one request.
pub struct Plan {
    /// `None` when the request bypasses the cache (`Cache-Control: no-cache`, `"cache": false`).
    pub key: Option<CacheKey>,
    /// The body to forward instead of the client's, when it carried a `cache` field (stripped: upstreams
    /// reject unknown parameters).
    pub forward: Option<Bytes>,
}

pub fn plan(endpoint: Endpoint, backend: &str, headers: &http::HeaderMap, body: &[u8]) -> Plan {
    plan_with(endpoint, backend, bypassed(headers), body)
}

/// [`plan`] with the client's `Cache-Control` already read ([`bypassed`]): what runs off the runtime
/// thread for a large body.
pub fn plan_with(endpoint: Endpoint, backend: &str, bypassed: bool, body: &[u8]) -> Plan {
    let mut bypass = bypassed;
    // The canonical text is built whole and hashed once: a hasher fed piece by piece pays per piece.
    let mut text = Vec::with_capacity(body.len() + 64);
    text.extend_from_slice(endpoint.path().as_bytes());
    text.push(b'\n');
    text.extend_from_slice(backend.as_bytes());
    text.push(b'\n');
    let Some(top) = super::cache_key::write_canonical(body, &IGNORED, &mut text) else {
        return Plan {
            key: None,
            forward: None,
        };
    };
    let forward = match top.cache {
        Some(is_false) => {
            bypass |= is_false;
            without_cache_field(body)
        }
        None => None,
    };
    if bypass {
        return Plan { key: None, forward };
    }
    let mut hasher = Sha256::new();
    hasher.update(&text);
    Plan {
        key: Some(ResponseCache::key_of(hasher)),
        forward,
    }
}

/// The client's body without its top-level `cache` field (upstreams reject unknown parameters).
fn without_cache_field(body: &[u8]) -> Option<Bytes> {
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    object.shift_remove("cache");
    serde_json::to_vec(&object).ok().map(Bytes::from)
}

fn wire(protocol: Protocol) -> WireProtocol {
    match protocol {
        Protocol::OpenAi => WireProtocol::OpenAi,
        Protocol::Anthropic => WireProtocol::Anthropic,
        Protocol::Responses => WireProtocol::Responses,
    }
}

/// Answer a request from a cached entry, or `None` when the entry cannot serve it (a stream request for
/// an answer with tool calls). `echo`: a Responses request's members its answer repeats.
pub fn answer(
    cached: &CachedResponse,
    stream: bool,
    include_usage: bool,
    echo: Option<&str>,
    ctx: &mut RequestCtx,
) -> Option<Response> {
    let protocol = ctx.endpoint.protocol();
    let response = if stream && protocol == Protocol::Responses {
        // Responses streams replay every kind of answer (tool calls included).
        let mut decoded = convert::decode_response(protocol, &cached.body).ok()?;
        decoded.id = ctx.id.clone();
        if let Some(model) = &ctx.model {
            decoded.model = model.clone();
        }
        let opts = crate::protocol::stream::StreamOptions {
            id: ctx.id.clone(),
            model: decoded.model.clone(),
            echo: crate::protocol::responses::ResponseEcho(echo.unwrap_or("").into()),
            ..Default::default()
        };
        let created = jiff::Timestamp::now().as_second();
        let (events, _) = crate::protocol::responses::stream::replay(&decoded, &opts, created);
        ctx.usage = decoded.usage;
        if ctx.request.is_some() {
            ctx.reply = Some(ResponseSummary::from_response(&decoded));
        }
        reply::sse_bytes(events.freeze(), &cached.backend)
    } else if stream {
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
            // Replayed above.
            Protocol::Responses => return None,
        }
        ctx.usage = Some(usage);
        if ctx.request.is_some() {
            ctx.reply = Some(ResponseSummary::from_response(&decoded));
        }
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
        // The request log shows the answer the client got.
        let decoded = convert::decode_response(protocol, &cached.body).ok();
        ctx.usage = decoded.as_ref().and_then(|response| response.usage);
        if ctx.request.is_some() {
            ctx.reply = decoded.as_ref().map(ResponseSummary::from_response);
        }
        reply::json(Bytes::from(body), &cached.backend)
    };
    ctx.status = 200;
    ctx.backend = Some(cached.backend.clone());
    ctx.ttft = Some(ctx.started.elapsed());
    Some(with_cache_header(response, true))
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
        crate::http::names::X_CACHE,
        HeaderValue::from_static(if hit { "HIT" } else { "MISS" }),
    );
    response
}

/// The client's copy of an answer that was just stored: `"cached":false` first in the object, as
/// [`set_fields`] would put it (which does the work when the body already names a `cached` field or is
/// not an object with members).
pub fn mark_miss(body: Bytes) -> Bytes {
    const FIELD: &[u8] = br#""cached":false,"#;
    let first_member = body.first() == Some(&b'{')
        && body[1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'"');
    if !first_member || crate::protocol::json_patch::has_quoted(&body, b"cached") {
        return set_fields(&body, &[("cached", "false")]).map_or(body, Bytes::from);
    }
    let mut out = Vec::with_capacity(body.len() + FIELD.len());
    out.push(b'{');
    out.extend_from_slice(FIELD);
    out.extend_from_slice(&body[1..]);
    Bytes::from(out)
}

/// A complete JSON answer to store.
pub struct Stored<'a> {
    pub body: Bytes,
    pub backend: &'a str,
    /// The client's protocol (the body's).
    pub protocol: Protocol,
    /// The body is known to be a complete answer (our own encoder wrote it, or the exact reader read
    /// it), so the cache need not check it again.
    pub known_answer: bool,
}

/// Store a complete JSON answer without making the answer wait: in memory at once (a map insert), in
/// Redis from a task of its own.
pub fn store_json(state: &AppState, key: CacheKey, stored: Stored<'_>) {
    let known_answer = stored.known_answer;
    let value = CachedResponse {
        body: stored.body,
        backend: stored.backend.to_owned(),
        protocol: wire(stored.protocol),
    };
    if (known_answer || crate::cache::is_cacheable(&value.body))
        && let Some((key, value)) = state.cache().put_answer_in_memory(key, value)
    {
        let state = state.clone();
        tokio::spawn(async move { state.cache().put_answer_shared(&key, value).await });
    }
}

/// The cache stage after the call, for a complete JSON answer: stored under `key` (without making the
/// answer wait), and the client's copy marked `"cached":false` (seed 004). The attempt calls it with the
/// body it already holds; [`store_response`] for answers that did not come through an attempt.
pub(crate) fn store_answer(state: &AppState, key: CacheKey, stored: Stored<'_>) -> Bytes {
    let body = stored.body.clone();
    store_json(state, key, stored);
    mark_miss(body)
}

/// [`store_answer`] for a whole response (the echo backend's): its body collected, stored under the
/// backend it names, and sent marked.
pub(crate) async fn store_response(
    state: &AppState,
    key: CacheKey,
    response: Response,
    protocol: Protocol,
) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let backend = parts
        .headers
        .get(crate::http::names::X_GATEWAY_BACKEND)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let stored = Stored {
        body: bytes,
        backend: &backend,
        protocol,
        known_answer: false,
    };
    let marked = store_answer(state, key, stored);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(marked))
}

/// Store a finished stream as its complete JSON answer (text answers only).
pub(crate) fn store_stream(
    state: &AppState,
    key: CacheKey,
    summary: &ResponseSummary,
    ctx: &RequestCtx,
) {
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
            let stored = Stored {
                body: Bytes::from(bytes),
                backend: ctx.backend.as_deref().unwrap_or(""),
                protocol,
                known_answer: true,
            };
            store_json(state, key, stored);
        }
        return;
    }
    let response = ChatResponse {
        id: ctx.id.clone(),
        model: ctx.model.clone().unwrap_or_default(),
        created: None,
        parts: vec![Part::Text(summary.text.clone().into())],
        finish_reason: summary.finish_reason,
        stop_sequence: None,
        usage,
    };
    let bytes = convert::encode_response_bytes(protocol, &response, created);
    let Ok(bytes) = bytes else {
        return;
    };
    let stored = Stored {
        body: Bytes::from(bytes),
        backend: ctx.backend.as_deref().unwrap_or(""),
        protocol,
        known_answer: true,
    };
    store_json(state, key, stored);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str) -> Option<CacheKey> {
        plan(
            Endpoint::ChatCompletions,
            "b",
            &http::HeaderMap::new(),
            body.as_bytes(),
        )
        .key
    }

    fn same(a: &str, b: &str) -> bool {
        let (a, b) = (key(a).unwrap(), key(b).unwrap());
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn the_key_is_the_request_not_its_spelling() {
        let base = r#"{"model":"m","messages":[{"role":"user","content":"hé \"x\""}],"temperature":0.5,"tools":[{"b":1,"a":2}]}"#;
        // Key order (also nested), whitespace, escapes and the ignored fields do not matter.
        assert!(same(
            base,
            r#"{ "tools":[{"a":2,"b":1}], "temperature":0.5, "stream":true, "stream_options":{"include_usage":true},
                "user":"u1", "metadata":{"k":"v"}, "cache":true,
                "messages":[{"content":"h\u00e9 \"x\"","role":"user"}], "model":"m" }"#
        ));
        // The last of duplicate keys counts, as in any JSON parser that keeps one.
        assert!(same(
            base,
            r#"{"model":"x","model":"m","messages":[{"role":"user","content":"hé \"x\""}],"temperature":0.5,"tools":[{"b":1,"a":2}]}"#
        ));
        // Every sampling parameter, the messages and the model do.
        for other in [
            r#"{"model":"m","messages":[{"role":"user","content":"hé \"x\""}],"temperature":0.6,"tools":[{"b":1,"a":2}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hé \"x\""}],"temperature":0.5,"tools":[{"b":1,"a":3}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hé x"}],"temperature":0.5,"tools":[{"b":1,"a":2}]}"#,
            r#"{"model":"n","messages":[{"role":"user","content":"hé \"x\""}],"temperature":0.5,"tools":[{"b":1,"a":2}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hé \"x\""}],"temperature":0.5,"tools":[{"b":1,"a":2}],"seed":1}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hé \"x\""}],"temperature":0.5,"tools":[{"b":1,"a":2},null]}"#,
        ] {
            assert!(!same(base, other), "{other}");
        }
        // Strings and numbers never meet: "1" is not 1, and [1,2] is not [12].
        assert!(!same(r#"{"a":"1"}"#, r#"{"a":1}"#));
        assert!(!same(r#"{"a":[1,2]}"#, r#"{"a":[12]}"#));
        assert!(!same(r#"{"a":{"b":1}}"#, r#"{"a":{"b":"1"}}"#));
    }

    /// The key is the SHA-256 of this canonical text (stable across versions: a shared Redis cache
    /// keeps its entries through an upgrade).
    #[test]
    fn the_key_hashes_the_canonical_text() {
        let canonical = "/v1/chat/completions\nb\n{\"a\":\"x\\n\\\"\",\"b\":[1,{\"c\":null,},],}";
        let mut hasher = Sha256::new();
        hasher.update(canonical.as_bytes());
        let expected = ResponseCache::key_of(hasher);
        let key = key(r#"{ "b": [1, {"c": null}], "a": "x\n\"", "user": "u" }"#).unwrap();
        assert_eq!(format!("{key:?}"), format!("{expected:?}"));
    }

    #[test]
    fn a_miss_is_marked_as_set_fields_marks_it() {
        for body in [
            r#"{"backend":"b","id":"x","choices":[]}"#,
            r#"{ "a":1}"#,
            r#"{}"#,
            r#"{ }"#,
            r#"{"a":1,"cached":true}"#,
            r#"{"a":{"cached":1}}"#,
            r#"[1]"#,
        ] {
            let expected = set_fields(body.as_bytes(), &[("cached", "false")])
                .map_or(body.as_bytes().to_vec(), |marked| marked);
            let marked = mark_miss(Bytes::from(body));
            assert_eq!(
                String::from_utf8_lossy(&marked),
                String::from_utf8_lossy(&expected)
            );
        }
    }

    #[test]
    fn endpoint_backend_and_bypass_are_part_of_the_plan() {
        let body = r#"{"model":"m","prompt":"p"}"#.as_bytes();
        let headers = http::HeaderMap::new();
        let chat = plan(Endpoint::ChatCompletions, "b", &headers, body)
            .key
            .unwrap();
        let completions = plan(Endpoint::Completions, "b", &headers, body)
            .key
            .unwrap();
        let other_backend = plan(Endpoint::ChatCompletions, "c", &headers, body)
            .key
            .unwrap();
        assert_ne!(format!("{chat:?}"), format!("{completions:?}"));
        assert_ne!(format!("{chat:?}"), format!("{other_backend:?}"));

        let mut no_cache = http::HeaderMap::new();
        no_cache.insert(
            http::header::CACHE_CONTROL,
            "max-age=0, No-Cache".parse().unwrap(),
        );
        assert!(
            plan(Endpoint::ChatCompletions, "b", &no_cache, body)
                .key
                .is_none()
        );

        let off = plan(
            Endpoint::ChatCompletions,
            "b",
            &headers,
            br#"{"model":"m","cache":false,"prompt":"p"}"#,
        );
        assert!(off.key.is_none());
        let forward: Value = serde_json::from_slice(&off.forward.unwrap()).unwrap();
        assert_eq!(forward, serde_json::json!({"model": "m", "prompt": "p"}));
        assert!(
            plan(Endpoint::ChatCompletions, "b", &headers, body)
                .forward
                .is_none()
        );
        assert!(
            plan(Endpoint::ChatCompletions, "b", &headers, b"[1]")
                .key
                .is_none()
        );
        assert!(
            plan(Endpoint::ChatCompletions, "b", &headers, b"{")
                .key
                .is_none()
        );
    }
}
