//! The Responses API around the request path: a request that continues a stored conversation
//! (`previous_response_id`) gets its history before the gate (so limits count it and the backend sees
//! it), each answer is stored before the client can see it end (so the client's next turn finds it on
//! any replica), the echo backend's Responses answers, and `GET`/`DELETE /v1/responses/{id}`.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::de::IgnoredAny;

use crate::auth::Principal;
use crate::config::BackendConfig;
use crate::error::{ErrorKind, GatewayError};
use crate::http::error_body;
use crate::protocol::json_patch::{json_string, set_fields};
use crate::protocol::responses::stream::{final_response_of, replay};
use crate::protocol::responses::{StoredInput, StoredResponse, encode_response_bytes};
use crate::protocol::stream::StreamOptions;
use crate::protocol::{ApiRequest, ChatResponse, FinishReason, Part, Protocol, ResponseSummary};
use crate::state::AppState;
use crate::upstream::echo;

use super::ctx::PendingResponse;
use super::{RequestCtx, gate, reply};

/// What [`prepare`] found, checked by [`admitted`] once the client's key is known.
pub struct Prepared {
    input_items: StoredInput,
    store: bool,
    /// The continued answer's id and owner.
    continued: Option<(String, Option<String>)>,
}

fn not_found(id: &str) -> GatewayError {
    GatewayError {
        param: Some("previous_response_id".into()),
        ..GatewayError::new(
            ErrorKind::NotFound,
            format!(
                "no stored response '{id}'; it may have expired or been deleted, or was created with store: false"
            ),
        )
    }
}

fn unavailable() -> GatewayError {
    GatewayError::new(
        ErrorKind::ServiceUnavailable,
        "the conversation store (redis) is unavailable; stored responses cannot be read right now",
    )
}

/// Before the gate: a request with `previous_response_id` gets the stored conversation in front of its
/// input — in its canonical messages, and in the body a backend that speaks Responses is sent (`input`
/// the whole conversation, `previous_response_id` null: the gateway keeps conversations, so any
/// instance can answer). `None` for other requests.
pub async fn prepare(
    state: &AppState,
    request: &mut ApiRequest,
    body: &mut Bytes,
) -> Result<Option<Prepared>, GatewayError> {
    let ApiRequest::Responses(request) = request else {
        return Ok(None);
    };
    let Some(previous) = request.previous_response_id.clone() else {
        return Ok(Some(Prepared {
            input_items: request.input_items.stored(body),
            store: request.store,
            continued: None,
        }));
    };
    // Boxed: the store's (Redis) call is rare, and inline it would grow every request's state.
    let stored = Box::pin(state.responses().get(&previous))
        .await
        .map_err(|_| unavailable())?
        .ok_or_else(|| not_found(&previous))?;
    let new_items = request.input_items.bytes(body);
    // The body was checked to be UTF-8 and the items are a span of it (or text of ours).
    let new_items = std::str::from_utf8(&new_items).unwrap_or("[]");
    let items = request
        .continue_from(&stored.conversation(), new_items)
        .map_err(|error| GatewayError::invalid(error.message, error.param))?;
    *body = set_fields(body, &[("input", &items), ("previous_response_id", "null")])
        .map(Bytes::from)
        .map_err(|error| GatewayError::invalid(error.message, error.param))?;
    Ok(Some(Prepared {
        input_items: StoredInput::Items(Bytes::from(items)),
        store: request.store,
        continued: Some((previous, stored.owner)),
    }))
}

/// After the gate: only the key that made a conversation continues it (another key gets 404, as for an
/// id that does not exist), and an answer that is to be stored is marked in the record.
pub fn admitted(
    state: &AppState,
    prepared: Option<Prepared>,
    principal: Option<&Principal>,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let Some(prepared) = prepared else {
        return Ok(());
    };
    let owner = principal.map(|principal| principal.name.to_string());
    if let Some((id, continued_owner)) = &prepared.continued
        && *continued_owner != owner
    {
        return Err(not_found(id));
    }
    if prepared.store && state.responses().is_enabled() {
        ctx.responses = Some(Box::new(PendingResponse {
            input_items: prepared.input_items,
            owner,
        }));
    }
    Ok(())
}

/// Store the answer whose final `response` object is `response`, if this request stores one. Called
/// before the answer's last bytes go to the client. `response` is kept as it is: it must be its own
/// allocation, not a slice of a larger buffer a stored answer would pin for its TTL (a cached answer's
/// bytes are copied first, `store_body`).
pub(crate) async fn store_final(state: &AppState, ctx: &mut RequestCtx, response: Bytes) {
    let Some(pending) = ctx.responses.take() else {
        return;
    };
    let entry = StoredResponse {
        owner: pending.owner,
        input: pending.input_items.detached(),
        response,
    };
    if state.responses().put(&ctx.id, entry).await.is_err() {
        tracing::warn!(id = %ctx.id, "conversation store unavailable; this response cannot be continued");
    }
}

/// Store a complete answer already in hand (a cache hit: a JSON body, or a replayed stream with its
/// whole body) before it is sent, if nothing stored it yet: an upstream's JSON answer is stored where it
/// is read (`attempt::exchange`), streams relayed from an upstream as they end (`streaming::stream`).
pub async fn store_complete(
    state: &AppState,
    ctx: &mut RequestCtx,
    response: Response,
) -> Response {
    if ctx.responses.is_none()
        || response.status() != StatusCode::OK
        || hyper::body::Body::size_hint(response.body())
            .exact()
            .is_none()
    {
        return response;
    }
    // Boxed: only Responses answers get here; inline, its state would grow every request's.
    Box::pin(store_body(state, ctx, response)).await
}

async fn store_body(state: &AppState, ctx: &mut RequestCtx, response: Response) -> Response {
    let sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let response = if sse {
        final_response_of(&bytes).map(Bytes::from)
    } else {
        // A cache hit's bytes may be a slice of the cache's shared block.
        Some(Bytes::copy_from_slice(&bytes))
    };
    if let Some(response) = response {
        store_final(state, ctx, response).await;
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The echo backend's answer to a Responses request (`Echo: <last user message>`), stored before it is
/// sent.
pub async fn echo(
    request: &ApiRequest,
    backend: &BackendConfig,
    ctx: &mut RequestCtx,
) -> Result<Response, GatewayError> {
    let answer = echo::answer(request)?;
    let created = jiff::Timestamp::now().as_second();
    let model = request.model().unwrap_or(&backend.name).to_owned();
    let echo = request
        .responses()
        .map(|r| r.echo.clone())
        .unwrap_or_default();
    let response = ChatResponse {
        id: ctx.id.clone(),
        model,
        created: Some(created),
        parts: vec![Part::Text(answer.text.into())],
        finish_reason: Some(FinishReason::Stop),
        stop_sequence: None,
        usage: Some(answer.usage),
    };
    ctx.status = 200;
    ctx.usage = Some(answer.usage);
    ctx.backend = Some(backend.name.clone());
    ctx.ttft = Some(ctx.started.elapsed());
    if ctx.request.is_some() {
        ctx.reply = Some(ResponseSummary::from_response(&response));
    }
    let state = ctx.state.clone();
    if request.stream() {
        let opts = StreamOptions {
            id: ctx.id.clone(),
            model: response.model.clone(),
            echo,
            ..StreamOptions::default()
        };
        let (events, last) = replay(&response, &opts, created);
        store_final(&state, ctx, Bytes::from(last)).await;
        let frames = split_events(events.freeze());
        return Ok(reply::paced(
            frames,
            backend.chunk_delay,
            ctx.detach(),
            &backend.name,
        ));
    }
    let body = encode_response_bytes(&response, created, echo.as_str());
    let body =
        Bytes::from(set_fields(&body, &[("backend", &json_string(&backend.name))]).unwrap_or(body));
    store_final(&state, ctx, body.clone()).await;
    Ok(reply::json(body, &backend.name))
}

/// An SSE body cut into its events (each with its blank line).
fn split_events(mut events: Bytes) -> Vec<Bytes> {
    let mut frames = Vec::new();
    while let Some(end) = memchr::memmem::find(&events, b"\n\n") {
        frames.push(events.split_to(end + 2));
    }
    if !events.is_empty() {
        frames.push(events);
    }
    frames
}

// === GET / DELETE /v1/responses/{id} ===

fn json(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The stored answer `id` the calling key may see.
async fn owned_entry(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<StoredResponse, GatewayError> {
    let snapshot = state.snapshot();
    let principal = gate::authenticate(state, &snapshot.keys, headers)?;
    let entry = state.responses().get(id).await.map_err(|_| unavailable())?;
    let missing = || GatewayError::new(ErrorKind::NotFound, format!("no stored response '{id}'"));
    let entry = entry.ok_or_else(missing)?;
    let caller = principal.as_deref().map(|principal| &*principal.name);
    if entry.owner.as_deref() != caller {
        return Err(missing());
    }
    Ok(entry)
}

/// `GET /v1/responses/{id}`: the stored `response` object.
pub async fn get(state: &AppState, headers: &HeaderMap, id: &str) -> Response {
    match owned_entry(state, headers, id).await {
        // A response read back from Redis is checked before it is sent.
        Ok(entry) if serde_json::from_slice::<IgnoredAny>(&entry.response).is_ok() => {
            json(StatusCode::OK, entry.response)
        }
        Ok(_) => error_body::response(
            Protocol::Responses,
            &GatewayError::new(ErrorKind::NotFound, format!("no stored response '{id}'")),
        ),
        Err(error) => error_body::response(Protocol::Responses, &error),
    }
}

/// `DELETE /v1/responses/{id}`: forget a stored answer (it can no longer be read or continued).
pub async fn delete(state: &AppState, headers: &HeaderMap, id: &str) -> Response {
    if let Err(error) = owned_entry(state, headers, id).await {
        return error_body::response(Protocol::Responses, &error);
    }
    match state.responses().delete(id).await {
        Ok(_) => json(
            StatusCode::OK,
            format!(
                r#"{{"id":{},"object":"response.deleted","deleted":true}}"#,
                json_string(id)
            ),
        ),
        Err(_) => error_body::response(Protocol::Responses, &unavailable()),
    }
}
