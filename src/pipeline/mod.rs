//! THE request path, in order: read and decode the body → route → attempt loop over candidates
//! (instances of the routed backend, then its fallbacks) → reply (JSON or a relayed stream) → record.
//!
//! Handlers in `http/` only extract and call `handle`; this is the one place that orders the stages.

pub mod ctx;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;

use crate::config::{BackendConfig, BackendKind};
use crate::error::{ErrorKind, GatewayError};
use crate::http::error_body;
use crate::protocol::json_patch::{json_string, set_fields};
use crate::protocol::openai::{self, TextAnswer};
use crate::protocol::{ApiRequest, Endpoint, FinishReason, Protocol};
use crate::routing::route;
use crate::state::{AppState, Snapshot};
use crate::upstream::call::{self, CallSpec, Fault, Reply};
use crate::upstream::echo;
use crate::upstream::relay::{Relay, Transform};

pub use ctx::RequestCtx;

/// One inbound API request, as the handler extracted it.
pub struct Inbound {
    pub endpoint: Endpoint,
    pub request_id: String,
    pub headers: HeaderMap,
    pub body: Body,
}

/// Run one API request to completion (or to the start of its stream).
pub async fn handle(state: &AppState, inbound: Inbound) -> Response {
    let snapshot = state.snapshot();
    let protocol = inbound.endpoint.protocol();
    let mut ctx = RequestCtx::new(state, inbound.request_id.clone(), inbound.endpoint);
    let response = match run(state, &snapshot, inbound, &mut ctx).await {
        Ok(response) => response,
        Err(error) => {
            ctx.status = error.status().as_u16();
            ctx.error = Some(error.kind_str());
            error_body::response(protocol, &error)
        }
    };
    ctx.finish();
    response
}

async fn run(
    state: &AppState,
    snapshot: &Arc<Snapshot>,
    inbound: Inbound,
    ctx: &mut RequestCtx,
) -> Result<Response, GatewayError> {
    let config = &snapshot.config;
    check_content_type(&inbound.headers)?;
    let body = read_body(inbound.body, &inbound.headers, config.server.max_body_bytes).await?;
    if let Err(error) = std::str::from_utf8(&body) {
        return Err(GatewayError::invalid(
            format!(
                "request body is not valid UTF-8 (invalid byte at offset {})",
                error.valid_up_to()
            ),
            None,
        ));
    }
    let request = match inbound.endpoint.protocol() {
        Protocol::OpenAi => openai::decode_request(inbound.endpoint, &body),
        Protocol::Anthropic => Err(crate::protocol::DecodeError::new(
            "the Anthropic front door is not enabled",
            None,
        )),
    }
    .map_err(|error| GatewayError::invalid(error.message, error.param))?;
    ctx.model = request.model().map(str::to_owned);
    ctx.stream = request.stream();

    let route = route::resolve(config, inbound.endpoint, request.model());
    let exchange = Exchange {
        state,
        snapshot,
        endpoint: inbound.endpoint,
        request: &request,
        body: &body,
        headers: &inbound.headers,
        alias_model: route.alias_model,
    };
    exchange.attempt_all(route.backend, ctx).await
}

/// Everything an attempt needs, borrowed for the duration of the request.
struct Exchange<'a> {
    state: &'a AppState,
    snapshot: &'a Arc<Snapshot>,
    endpoint: Endpoint,
    request: &'a ApiRequest,
    body: &'a Bytes,
    headers: &'a HeaderMap,
    alias_model: Option<&'a str>,
}

/// One failed attempt, for the final error message.
struct Tried {
    backend: String,
    instance: String,
    fault: Fault,
}

impl Exchange<'_> {
    /// The attempt loop: the routed backend's instances (bounded by `retries`), then each fallback.
    /// Nothing has been sent to the client while this loop runs, so every fault may move on.
    async fn attempt_all(
        &self,
        primary: usize,
        ctx: &mut RequestCtx,
    ) -> Result<Response, GatewayError> {
        let config = &self.snapshot.config;
        let mut chain = vec![primary];
        chain.extend(config.backends[primary].fallback.iter().copied());
        let mut tried: Vec<Tried> = Vec::new();
        for (position, &backend_index) in chain.iter().enumerate() {
            let backend = &config.backends[backend_index];
            if backend.kind == BackendKind::Echo {
                ctx.backend = Some(backend.name.clone());
                return self.echo(backend, ctx);
            }
            let runtime = &self.snapshot.backends[backend_index];
            let budget = (1 + backend.retries as usize).min(backend.instances.len());
            for instance_index in runtime
                .order(backend.instances.len())
                .into_iter()
                .take(budget)
            {
                let instance = &backend.instances[instance_index];
                ctx.attempts += 1;
                let alias_model = if position == 0 {
                    self.alias_model
                } else {
                    None
                };
                let upstream_model = alias_model
                    .or(instance.model.as_deref())
                    .or(backend.model.as_deref());
                let _in_flight = runtime.instances[instance_index].start();
                match self.attempt(backend, instance, upstream_model, ctx).await {
                    Ok(response) => {
                        ctx.backend = Some(backend.name.clone());
                        ctx.instance = Some(instance.display.clone());
                        return Ok(response);
                    }
                    Err(fault) => {
                        tracing::warn!(
                            id = %ctx.id, backend = %backend.name, instance = %instance.display,
                            fault = %fault, "upstream attempt failed"
                        );
                        tried.push(Tried {
                            backend: backend.name.clone(),
                            instance: instance.display.clone(),
                            fault,
                        });
                    }
                }
            }
        }
        Err(exhausted(&tried))
    }

    /// One call to one instance. `Err` means "try the next candidate".
    async fn attempt(
        &self,
        backend: &BackendConfig,
        instance: &crate::config::InstanceConfig,
        upstream_model: Option<&str>,
        ctx: &mut RequestCtx,
    ) -> Result<Response, Fault> {
        let client_protocol = self.endpoint.protocol();
        let backend_protocol = match backend.kind {
            BackendKind::Anthropic => Protocol::Anthropic,
            _ => Protocol::OpenAi,
        };
        if client_protocol != backend_protocol {
            return Err(Fault::Broken(format!(
                "converting {} requests for a {} backend is not enabled",
                client_protocol.as_str(),
                backend_protocol.as_str()
            )));
        }
        let body = match upstream_model {
            Some(model) if self.request.model() != Some(model) => Bytes::from(
                set_fields(self.body, &[("model", &json_string(model))])
                    .map_err(|e| Fault::Broken(e.message))?,
            ),
            _ => self.body.clone(),
        };
        let suffix = match self.endpoint {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Messages => "/messages",
        };
        let stream = self.request.stream();
        let gateway_open = true;
        let passthrough_auth = if gateway_open {
            match backend.kind {
                BackendKind::Anthropic => self
                    .headers
                    .get("x-api-key")
                    .or_else(|| self.headers.get(header::AUTHORIZATION)),
                _ => self.headers.get(header::AUTHORIZATION),
            }
        } else {
            None
        };
        let sent = Instant::now();
        let reply = call::send(
            self.state.client(),
            CallSpec {
                kind: backend.kind,
                url: format!("{}{}", instance.base_url, suffix),
                body,
                api_key: instance.api_key.as_ref(),
                passthrough_auth,
                anthropic_version: self
                    .headers
                    .get("anthropic-version")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(&backend.anthropic_version),
                anthropic_beta: self.headers.get("anthropic-beta"),
                request_id: &ctx.id,
                stream,
                timeout: backend.timeout,
            },
        )
        .await?;
        ctx.ttfb = Some(sent.elapsed());
        let response = match reply {
            Reply::ClientError {
                status,
                content_type,
                body,
            } => {
                ctx.status = status;
                ctx.error = Some("upstream_client_error");
                let mut response = Response::new(Body::from(body));
                *response.status_mut() =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    content_type.unwrap_or(HeaderValue::from_static("application/json")),
                );
                return Ok(with_backend(response, &backend.name));
            }
            Reply::Success(response) => response,
        };
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if is_sse {
            let transform = match backend_protocol {
                Protocol::OpenAi => Transform::OpenAiPassThrough {
                    id_json: json_string(&ctx.id),
                },
                Protocol::Anthropic => Transform::AnthropicPassThrough,
            };
            let mut relay = Relay::new(response, transform, backend.stream_idle_timeout);
            // Fail-over stays possible until the first event is in hand.
            let first = relay
                .next_output()
                .await?
                .ok_or_else(|| Fault::Broken("upstream sent an empty stream".into()))?;
            ctx.status = 200;
            ctx.backend = Some(backend.name.clone());
            ctx.instance = Some(instance.display.clone());
            ctx.ttft = Some(ctx.started.elapsed());
            return Ok(stream_response(first, relay, ctx.detach(), &backend.name));
        }
        let body = match tokio::time::timeout(backend.timeout, response.bytes()).await {
            Err(_) => return Err(Fault::Timeout(backend.timeout)),
            Ok(Err(error)) => return Err(Fault::Broken(call::describe(error))),
            Ok(Ok(body)) => body,
        };
        let patched = set_fields(
            &body,
            &[
                ("id", &json_string(&ctx.id)),
                ("backend", &json_string(&backend.name)),
            ],
        )
        .map_err(|_| Fault::Broken("upstream returned a body that is not a JSON object".into()))?;
        ctx.status = 200;
        ctx.usage = usage_of(&patched);
        ctx.ttft = Some(ctx.started.elapsed());
        Ok(json_response(Bytes::from(patched), &backend.name))
    }

    /// The in-process echo backend.
    fn echo(
        &self,
        backend: &BackendConfig,
        ctx: &mut RequestCtx,
    ) -> Result<Response, GatewayError> {
        let answer = echo::answer(self.request)?;
        let created = jiff::Timestamp::now().as_second();
        let model = self.request.model().unwrap_or(&backend.name);
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
        ctx.ttfb = Some(Duration::ZERO);
        ctx.ttft = Some(ctx.started.elapsed());
        let value = match (self.request, self.request.stream()) {
            (ApiRequest::Chat(chat), true) => {
                let events =
                    openai::chat_chunks(&text_answer, &answer.pieces(), chat.include_usage);
                return Ok(echo_stream(
                    events,
                    backend.chunk_delay,
                    ctx.detach(),
                    &backend.name,
                ));
            }
            (ApiRequest::Completion(_), true) => {
                let events = openai::text_completion_chunks(&text_answer, &answer.pieces());
                return Ok(echo_stream(
                    events,
                    backend.chunk_delay,
                    ctx.detach(),
                    &backend.name,
                ));
            }
            (ApiRequest::Chat(_), false) => openai::chat_completion(&text_answer),
            (ApiRequest::Completion(_), false) => openai::text_completion(&text_answer),
            (ApiRequest::Embeddings(embeddings), _) => {
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
        Ok(json_response(Bytes::from(value.to_string()), &backend.name))
    }
}

/// The error once every candidate failed: 504 when the last fault was a timeout, 429 (shortest
/// Retry-After) when all were rate-limited, else 502; the message names each backend/instance tried.
fn exhausted(tried: &[Tried]) -> GatewayError {
    let detail = tried
        .iter()
        .map(|t| format!("{} ({}): {}", t.backend, t.instance, t.fault))
        .collect::<Vec<_>>()
        .join("; ");
    let rate_limits: Vec<Option<Duration>> = tried
        .iter()
        .filter_map(|t| t.fault.rate_limited())
        .collect();
    if !tried.is_empty() && rate_limits.len() == tried.len() {
        let shortest = rate_limits.iter().flatten().min().copied();
        return GatewayError::new(
            ErrorKind::UpstreamRateLimited,
            format!("every upstream is rate limited: {detail}"),
        )
        .with_retry_after(shortest);
    }
    let kind = match tried.last() {
        Some(last) if last.fault.is_timeout() => ErrorKind::UpstreamTimeout,
        _ => ErrorKind::UpstreamUnavailable,
    };
    GatewayError::new(kind, format!("all upstream attempts failed: {detail}"))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") || essence.is_empty() {
        return Ok(());
    }
    Err(GatewayError::new(
        ErrorKind::UnsupportedMediaType,
        format!(
            "unsupported content type '{text}'; send a JSON body with Content-Type: application/json"
        ),
    ))
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::new(
            ErrorKind::PayloadTooLarge,
            format!("request body exceeds the limit of {limit} bytes (server.max_body_bytes)"),
        )
    };
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && length > limit
    {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err(GatewayError::invalid(
            format!("could not read the request body: {error}"),
            None,
        )),
    }
}

fn usage_of(body: &[u8]) -> Option<crate::protocol::Usage> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        usage: Option<UsageWire>,
    }
    #[derive(serde::Deserialize)]
    struct UsageWire {
        #[serde(alias = "input_tokens")]
        prompt_tokens: Option<u64>,
        #[serde(alias = "output_tokens")]
        completion_tokens: Option<u64>,
    }
    let usage = serde_json::from_slice::<Envelope>(body).ok()?.usage?;
    Some(crate::protocol::Usage {
        input_tokens: usage.prompt_tokens.unwrap_or(0),
        output_tokens: usage.completion_tokens.unwrap_or(0),
        ..Default::default()
    })
}

fn with_backend(mut response: Response, backend: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(backend) {
        response.headers_mut().insert("x-gateway-backend", value);
    }
    response
}

fn json_response(body: Bytes, backend: &str) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_backend(response, backend)
}

fn sse_response(body: Body, backend: &str) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    with_backend(response, backend)
}

/// Relay an upstream stream: `first` is already in hand; the rest follows as the upstream sends it.
/// A fault after the first byte ends the stream with a protocol-correct error event.
fn stream_response(first: Bytes, relay: Relay, ctx: RequestCtx, backend: &str) -> Response {
    struct State {
        relay: Relay,
        ctx: RequestCtx,
        first: Option<Bytes>,
        done: bool,
    }
    let state = State {
        relay,
        ctx,
        first: Some(first),
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        if let Some(first) = state.first.take() {
            return Some((Ok::<Bytes, std::io::Error>(first), state));
        }
        if state.done {
            return None;
        }
        match state.relay.next_output().await {
            Ok(Some(bytes)) => Some((Ok(bytes), state)),
            Ok(None) => {
                state.done = true;
                state.ctx.usage = state.relay.facts.usage.or(state.ctx.usage);
                state.ctx.finish();
                None
            }
            Err(fault) => {
                state.done = true;
                let message = format!("upstream stream failed: {fault}");
                tracing::warn!(id = %state.ctx.id, fault = %fault, "stream ended by an upstream fault");
                state.ctx.error = Some("upstream_stream_error");
                state.ctx.finish();
                let event = state.relay.error_event(&message);
                Some((Ok(event), state))
            }
        }
    });
    sse_response(Body::from_stream(stream), backend)
}

/// Stream the echo backend's events, optionally paced by `delay`.
fn echo_stream(
    events: Vec<serde_json::Value>,
    delay: Duration,
    mut ctx: RequestCtx,
    backend: &str,
) -> Response {
    let mut frames: Vec<Bytes> = events
        .into_iter()
        .map(|event| {
            let mut out = BytesMut::new();
            crate::protocol::sse::encode(None, event.to_string().as_bytes(), &mut out);
            out.freeze()
        })
        .collect();
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    if delay.is_zero() {
        let mut out = BytesMut::new();
        for frame in &frames {
            out.extend_from_slice(frame);
        }
        ctx.finish();
        return sse_response(Body::from(out.freeze()), backend);
    }
    let stream = futures_util::stream::iter(frames.into_iter().enumerate())
        .then(move |(i, frame)| async move {
            if i > 0 {
                tokio::time::sleep(delay).await;
            }
            Ok::<Bytes, std::io::Error>(frame)
        })
        .chain(futures_util::stream::once(async move {
            ctx.finish();
            Ok(Bytes::new())
        }));
    sse_response(Body::from_stream(stream), backend)
}
