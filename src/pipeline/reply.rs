//! Responses the pipeline sends: JSON bodies, relayed upstream errors, relayed streams, and the echo
//! backend's answers in either front-door protocol.

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
use crate::routing::instances::InFlightGuard;
use crate::state::AppState;
use crate::upstream::echo;
use crate::upstream::relay::{Relay, StreamEnd};

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

pub fn relayed_error(
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

fn sse_response(body: Body, backend: &str) -> Response {
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
pub fn sse_bytes(body: Bytes, backend: &str) -> Response {
    sse_response(Body::from(body), backend)
}

/// Relay an upstream stream: `first` is already in hand; the rest follows as the upstream sends it.
/// A fault after the first byte ends the stream with a protocol-correct error event (and without the
/// success sentinel) and counts against the instance. The request is recorded when the stream's last
/// bytes are handed to the connection — a client that closes right after reading the terminal event
/// got the whole answer — or, if the client leaves first, as a 499 with what it was sent (marked
/// incomplete). The in-flight guard lives as long as the stream.
pub fn stream(
    first: Bytes,
    relay: Relay,
    ctx: RequestCtx,
    guard: InFlightGuard,
    state: AppState,
    provider: &'static str,
    backend: &str,
) -> Response {
    let streaming = Streaming {
        relay,
        ctx,
        guard,
        state,
        provider,
        first: Some(first),
        done: false,
    };
    let body = futures_util::stream::unfold(streaming, |mut streaming| async move {
        if streaming.done {
            return None;
        }
        let next = match streaming.first.take() {
            Some(first) => Ok(Some(first)),
            None => streaming.relay.next_output().await,
        };
        match next {
            Ok(Some(bytes)) => {
                streaming.store_response().await;
                if let Some(end) = streaming.relay.end().cloned() {
                    streaming.ended(end);
                }
                Some((Ok::<Bytes, std::io::Error>(bytes), streaming))
            }
            Ok(None) => {
                let end = streaming
                    .relay
                    .end()
                    .cloned()
                    .unwrap_or(StreamEnd::Complete);
                streaming.ended(end);
                None
            }
            Err(fault) => {
                tracing::warn!(id = %streaming.ctx.id, fault = %fault, "stream ended by an upstream fault");
                let event = streaming
                    .relay
                    .error_event(&format!("upstream stream failed: {fault}"));
                streaming.failed();
                Some((Ok(event), streaming))
            }
        }
    });
    sse_response(Body::from_stream(body), backend)
}

/// A relayed stream in flight: the relay, the request's record and the instance it holds.
struct Streaming {
    relay: Relay,
    ctx: RequestCtx,
    guard: InFlightGuard,
    state: AppState,
    provider: &'static str,
    first: Option<Bytes>,
    /// The record is closed: nothing more is sent.
    done: bool,
}

impl Streaming {
    /// A Responses answer is stored before the bytes with its final event leave, so the client's
    /// next turn finds it.
    /// (Boxed: rare, and inline its Redis call would grow every stream's state.)
    async fn store_response(&mut self) {
        if self.ctx.responses.is_some()
            && let Some(last) = self.relay.completed_response().map(<[u8]>::to_vec)
        {
            Box::pin(super::responses::store_final(
                &self.state,
                &mut self.ctx,
                &last,
            ))
            .await;
        }
    }

    /// The stream's last bytes are in hand: record it as it ended.
    fn ended(&mut self, end: StreamEnd) {
        match end {
            StreamEnd::Complete => {
                self.done = true;
                self.close(true);
            }
            StreamEnd::UpstreamError(message) => {
                tracing::warn!(id = %self.ctx.id, error = %message, "upstream ended the stream with an error");
                self.failed();
            }
        }
    }

    /// The upstream failed mid-stream: count it against the instance and record the request.
    fn failed(&mut self) {
        self.done = true;
        let instance = self.guard.instance();
        if let Some(transition) = instance.breaker.on_failure(std::time::Instant::now()) {
            self.state.instance_transition(instance, transition);
        }
        self.ctx.error = Some("upstream_stream_error");
        self.close(false);
    }

    fn close(&mut self, complete: bool) {
        self.ctx.usage = self.relay.facts.usage.or(self.ctx.usage);
        if self.ctx.usage.is_none()
            && let Some(admission) = &self.ctx.admission
            && admission.counts_tokens()
        {
            // Streams without usage are counted from their text when limits count tokens.
            self.ctx.usage = Some(crate::protocol::Usage {
                input_tokens: admission.estimated_tokens(),
                output_tokens: crate::tokens::count(self.relay.text()),
                ..Default::default()
            });
        }
        self.ctx.streamed = Some((
            self.provider,
            self.relay.facts.events,
            self.relay.facts.bytes,
        ));
        let cache_key = self.ctx.cache_key.take();
        if self.ctx.request.is_some() || cache_key.is_some() {
            let summary = self.relay.summary();
            if complete && let Some(key) = cache_key {
                match self.relay.completed_response() {
                    // A Responses stream's final `response` object is the complete answer.
                    Some(last) => super::cached::store_json(
                        &self.state,
                        key,
                        super::cached::Stored {
                            body: Bytes::copy_from_slice(last),
                            backend: self.ctx.backend.as_deref().unwrap_or(""),
                            protocol: Protocol::Responses,
                            known_answer: true,
                        },
                    ),
                    None => super::cached::store_stream(&self.state, key, &summary, &self.ctx),
                }
            }
            if self.ctx.request.is_some() {
                self.ctx.reply = Some(summary);
            }
        }
        self.ctx.incomplete = !complete;
        self.ctx.finish();
    }
}

impl Drop for Streaming {
    /// The client left before the stream ended: a 499 with what it was sent, marked incomplete.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.ctx.status = 499;
        self.ctx.error = Some("client_disconnected");
        self.ctx.usage = self.relay.facts.usage.or(self.ctx.usage);
        self.ctx.streamed = Some((
            self.provider,
            self.relay.facts.events,
            self.relay.facts.bytes,
        ));
        if self.ctx.request.is_some() {
            self.ctx.reply = Some(self.relay.summary());
        }
        self.ctx.incomplete = true;
        self.ctx.finish();
    }
}

/// The in-process echo backend, answering in the client's protocol.
pub fn echo(
    request: &ApiRequest,
    endpoint: Endpoint,
    backend: &BackendConfig,
    ctx: &mut RequestCtx,
) -> Result<Response, GatewayError> {
    let answer = echo::answer(request)?;
    let created = jiff::Timestamp::now().as_second();
    let model = request.model().unwrap_or(&backend.name);
    let text_answer = TextAnswer {
        id: &ctx.id,
        model,
        created,
        text: &answer.text,
        finish_reason: FinishReason::Stop,
        usage: answer.usage,
    };
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
    let pieces = answer.pieces();
    let stream = request.stream();
    let value = match (endpoint.protocol(), request) {
        (Protocol::Anthropic, _) if stream => {
            let events =
                anthropic::message_stream(&text_answer, &pieces, answer.usage.input_tokens);
            let frames = events
                .into_iter()
                .map(|(name, data)| frame(Some(name), &data))
                .collect();
            return Ok(paced(
                frames,
                backend.chunk_delay,
                ctx.detach(),
                &backend.name,
            ));
        }
        (Protocol::Anthropic, _) => anthropic::message_response(&text_answer),
        (Protocol::OpenAi, ApiRequest::Chat(chat)) if stream => {
            let mut frames: Vec<Bytes> =
                openai::chat_chunks(&text_answer, &pieces, chat.include_usage)
                    .iter()
                    .map(|data| frame(None, data))
                    .collect();
            frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
            return Ok(paced(
                frames,
                backend.chunk_delay,
                ctx.detach(),
                &backend.name,
            ));
        }
        (Protocol::OpenAi, ApiRequest::Completion(_)) if stream => {
            let mut frames: Vec<Bytes> = openai::text_completion_chunks(&text_answer, &pieces)
                .iter()
                .map(|data| frame(None, data))
                .collect();
            frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
            return Ok(paced(
                frames,
                backend.chunk_delay,
                ctx.detach(),
                &backend.name,
            ));
        }
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
    let mut value = value;
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "backend".into(),
            serde_json::Value::from(backend.name.as_str()),
        );
    }
    Ok(json(Bytes::from(value.to_string()), &backend.name))
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
