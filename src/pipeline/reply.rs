//! Responses the pipeline sends: JSON bodies, relayed upstream errors, SSE responses, and the echo
//! backend's answers in either front-door protocol. (Relayed upstream streams: `streaming`.)

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};

use crate::config::BackendConfig;
use crate::error::GatewayError;
use crate::protocol::openai::{self, TextAnswer};
use crate::protocol::{
    ApiRequest, Endpoint, FinishReason, Protocol, ResponseSummary, anthropic, sse,
};
use crate::upstream::echo;

use super::RequestCtx;

pub fn with_backend(mut response: Response, backend: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(backend) {
        response
            .headers_mut()
            .insert(crate::http::names::X_GATEWAY_BACKEND, value);
    }
    response
}

/// A response whose header map has room for what the request path adds (content type, backend, request
/// id, cache status, six rate-limit headers) without growing and rehashing on the way.
fn response_with_room(body: Body) -> Response {
    let mut response = Response::new(body);
    *response.headers_mut() = http::HeaderMap::with_capacity(12);
    response
}

pub fn json(body: Bytes, backend: &str) -> Response {
    let mut response = response_with_room(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_backend(response, backend)
}

pub(crate) fn relayed_error(
    status: u16,
    content_type: Option<HeaderValue>,
    body: Bytes,
    backend: &str,
) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or(HeaderValue::from_static("application/json")),
    );
    with_backend(response, backend)
}

pub(super) fn sse_response(body: Body, backend: &str) -> Response {
    let mut response = response_with_room(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    with_backend(response, backend)
}

/// A complete SSE body already in hand (cache replays).
pub(crate) fn sse_bytes(body: Bytes, backend: &str) -> Response {
    sse_response(Body::from(body), backend)
}

/// The in-process echo backend, answering in the client's protocol.
pub fn echo(
    request: &ApiRequest,
    endpoint: Endpoint,
    backend: &BackendConfig,
    ctx: &mut RequestCtx,
) -> Result<Response, GatewayError> {
    let answer = echo::answer(request)?;
    let model = request.model().unwrap_or(&backend.name);
    let text_answer = TextAnswer {
        id: &ctx.id,
        model,
        created: jiff::Timestamp::now().as_second(),
        text: &answer.text,
        finish_reason: FinishReason::Stop,
        usage: answer.usage,
    };
    let pieces = answer.pieces();
    if request.stream()
        && let Some(frames) = echo_frames(endpoint.protocol(), request, &text_answer, &pieces)
    {
        record_echo(ctx, backend, &answer);
        return Ok(paced(
            frames,
            backend.chunk_delay,
            ctx.detach(),
            &backend.name,
        ));
    }
    let mut value = match (endpoint.protocol(), request) {
        (Protocol::Anthropic, _) => anthropic::message_response(&text_answer),
        (Protocol::OpenAi, ApiRequest::Chat(_)) => openai::chat_completion(&text_answer),
        (Protocol::OpenAi, ApiRequest::Completion(_)) => openai::text_completion(&text_answer),
        // Answered by `pipeline::responses::echo`; a request of another kind cannot come here.
        (Protocol::Responses, _) | (Protocol::OpenAi, ApiRequest::Responses(_)) => {
            return Err(GatewayError::new(
                crate::error::ErrorKind::Internal,
                "the echo backend got a Responses request on the wrong path",
            ));
        }
        (Protocol::OpenAi, ApiRequest::Embeddings(embeddings)) => {
            let vectors: Vec<Vec<f32>> = embeddings
                .input
                .iter()
                .map(|text| echo::embedding(text))
                .collect();
            openai::embeddings(model, &vectors, answer.usage.input_tokens)
        }
    };
    record_echo(ctx, backend, &answer);
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "backend".into(),
            serde_json::Value::from(backend.name.as_str()),
        );
    }
    Ok(json(Bytes::from(value.to_string()), &backend.name))
}

/// The echo answer in the context, as an upstream's would be.
fn record_echo(ctx: &mut RequestCtx, backend: &BackendConfig, answer: &echo::EchoAnswer) {
    ctx.status = 200;
    ctx.usage = Some(answer.usage);
    ctx.backend = Some(backend.name.clone());
    ctx.ttft = Some(ctx.started.elapsed());
    if ctx.request.is_some() {
        ctx.reply = Some(ResponseSummary {
            text: answer.text.clone(),
            usage: Some(answer.usage),
            finish_reason: Some(FinishReason::Stop),
            ..ResponseSummary::default()
        });
    }
}

/// The SSE frames of a streamed echo answer in the client's protocol; `None` for a request that has
/// no stream form (embeddings), answered as JSON.
fn echo_frames(
    protocol: Protocol,
    request: &ApiRequest,
    answer: &TextAnswer<'_>,
    pieces: &[&str],
) -> Option<Vec<Bytes>> {
    let data_frames = |chunks: Vec<serde_json::Value>| {
        let mut frames: Vec<Bytes> = chunks.iter().map(|data| frame(None, data)).collect();
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        frames
    };
    match (protocol, request) {
        (Protocol::Anthropic, _) => Some(
            anthropic::message_stream(answer, pieces, answer.usage.input_tokens)
                .into_iter()
                .map(|(name, data)| frame(Some(name), &data))
                .collect(),
        ),
        (Protocol::OpenAi, ApiRequest::Chat(chat)) => Some(data_frames(openai::chat_chunks(
            answer,
            pieces,
            chat.include_usage,
        ))),
        (Protocol::OpenAi, ApiRequest::Completion(_)) => {
            Some(data_frames(openai::text_completion_chunks(answer, pieces)))
        }
        _ => None,
    }
}

fn frame(event: Option<&str>, data: &serde_json::Value) -> Bytes {
    let mut out = BytesMut::new();
    sse::encode(event, data.to_string().as_bytes(), &mut out);
    out.freeze()
}

/// Stream prepared frames, optionally paced by `delay`; the record is finished after the last one.
pub(super) fn paced(
    frames: Vec<Bytes>,
    delay: Duration,
    mut ctx: RequestCtx,
    backend: &str,
) -> Response {
    let bytes = frames.iter().map(|frame| frame.len() as u64).sum();
    ctx.streamed = Some(("echo", frames.len() as u64, bytes));
    if delay.is_zero() {
        let mut out = BytesMut::new();
        for frame in &frames {
            out.extend_from_slice(frame);
        }
        ctx.finish();
        return sse_response(Body::from(out.freeze()), backend);
    }
    // The record is finished as the last frame is handed out: a client that closes right after
    // reading it got the whole answer.
    let last = frames.len().saturating_sub(1);
    let body =
        futures_util::stream::iter(frames.into_iter().enumerate()).then(move |(i, frame)| {
            let finished = (i == last).then(|| ctx.detach());
            async move {
                if i > 0 {
                    tokio::time::sleep(delay).await;
                }
                if let Some(mut ctx) = finished {
                    ctx.finish();
                }
                Ok::<Bytes, std::io::Error>(frame)
            }
        });
    sse_response(Body::from_stream(body), backend)
}
