//! One exchange with one upstream instance, in named steps: prepare (body, URL, credentials) → send →
//! finish the JSON answer | start the stream relay | relay the upstream's refusal. Every way of
//! answering records the answer through one step, [`Call::answered`]; a fault returns to the candidate
//! loop, which moves on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, header};

use crate::config::{BackendConfig, InstanceConfig};
use crate::error::GatewayError;
use crate::protocol::convert::{self, RequestOptions, ResponseOptions};
use crate::protocol::json_patch::{json_string, set_fields};
use crate::protocol::responses::stream::ResponsesPassThrough;
use crate::protocol::stream::{StreamConverter, StreamOptions, StreamTap};
use crate::protocol::{ApiRequest, Endpoint, Protocol};
use crate::routing::instances::{InFlightGuard, InstanceState};
use crate::upstream::call::{self, CallSpec, Fault, Reply, too_large};
use crate::upstream::client::BodyReadError;
use crate::upstream::relay::{Relay, Transform};

use super::super::{RequestCtx, cached, reply, streaming};
use super::{AttemptError, Exchange, target_protocol};

impl Exchange<'_> {
    /// One call to one instance: prepare → send → finish the JSON answer, start the stream, or relay
    /// the upstream's refusal. `Err(Fault)` means "try the next candidate".
    pub(super) async fn attempt(
        &self,
        backend: &BackendConfig,
        index: usize,
        guard: InFlightGuard,
        permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
        upstream_model: Option<&str>,
        ctx: &mut RequestCtx,
    ) -> Result<Response, AttemptError> {
        let call = Call {
            exchange: self,
            backend,
            instance: &backend.instances[index],
            client: self.endpoint.protocol(),
            target: target_protocol(self.endpoint, backend),
            upstream_model,
        };
        let spec = call.prepare(&ctx.id).await?;
        let (reply, timing) = call.send(spec).await?;
        match reply {
            Reply::ClientError {
                status,
                content_type,
                body,
            } => Ok(call.relay_refusal(status, content_type, body, timing, guard, ctx)),
            Reply::Success(response) if is_event_stream(&response) => {
                call.start_stream(response, timing, guard, permit, ctx)
                    .await
            }
            Reply::Success(response) => call.finish_json(response, timing, guard, ctx).await,
        }
    }
}

/// One exchange's fixed facts: which instance, and the protocols on either side.
struct Call<'a> {
    exchange: &'a Exchange<'a>,
    backend: &'a BackendConfig,
    instance: &'a InstanceConfig,
    /// The client's protocol.
    client: Protocol,
    /// The protocol the request goes upstream in.
    target: Protocol,
    /// The model name sent upstream, when it is rewritten.
    upstream_model: Option<&'a str>,
}

/// When the request went out and how long its response headers took.
#[derive(Clone, Copy)]
struct Timing {
    sent: Instant,
    ttfb: Duration,
}

/// The attempt that answered, as the instance's record and the request context take it.
struct Answer {
    status: u16,
    error: Option<&'static str>,
    /// When the answer was complete enough to count as a success for the instance.
    at: Instant,
    /// The upstream's part of the latency.
    upstream_wait: Duration,
    /// When the first byte of the body was ready for the client, when there is a body of ours.
    first_byte: Option<Instant>,
}

impl Call<'_> {
    /// The request for the instance: its body ([`Call::body`]), the endpoint's URL and the credentials.
    async fn prepare<'r>(&'r self, request_id: &'r str) -> Result<CallSpec<'r>, AttemptError> {
        let exchange = self.exchange;
        let (backend, instance) = (self.backend, self.instance);
        let body = self.body().await?;
        let target = match (self.target, exchange.endpoint) {
            (Protocol::Anthropic, _) => &instance.urls.messages,
            (Protocol::Responses, _) => &instance.urls.responses,
            (Protocol::OpenAi, Endpoint::Completions) => &instance.urls.completions,
            (Protocol::OpenAi, Endpoint::Embeddings) => &instance.urls.embeddings,
            (Protocol::OpenAi, _) => &instance.urls.chat_completions,
        };
        let forwarded = exchange.headers;
        let passthrough_auth = match self.target {
            _ if !exchange.forward_client_auth => None,
            Protocol::Anthropic => forwarded
                .x_api_key
                .as_ref()
                .or(forwarded.authorization.as_ref()),
            Protocol::OpenAi | Protocol::Responses => forwarded
                .authorization
                .as_ref()
                .or(forwarded.x_api_key.as_ref()),
        };
        Ok(CallSpec {
            kind: backend.kind,
            target,
            body,
            api_key: instance.api_key.as_ref(),
            passthrough_auth,
            anthropic_version: forwarded
                .anthropic_version
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or(&backend.anthropic_version),
            anthropic_beta: forwarded.anthropic_beta.as_ref(),
            request_id,
            stream: exchange.request.stream(),
            timeout: backend.timeout,
            max_body_bytes: exchange.snapshot.config.server.max_upstream_body_bytes,
        })
    }

    /// The body to send: as received when the protocols match (only `model` rewritten), else converted
    /// (off the runtime thread when the body is large).
    async fn body(&self) -> Result<Bytes, AttemptError> {
        let exchange = self.exchange;
        let target = self.target;
        if self.client == target {
            return match self.upstream_model {
                Some(model) if exchange.request.model() != Some(model) => {
                    set_fields(exchange.body, &[("model", &json_string(model))])
                        .map(Bytes::from)
                        .map_err(|e| AttemptError::Fatal(GatewayError::invalid(e.message, e.param)))
                }
                _ => Ok(exchange.body.clone()),
            };
        }
        if exchange.request.chat().is_none() {
            return Err(AttemptError::Fatal(GatewayError::invalid(
                format!(
                    "backend '{}' speaks the Anthropic Messages API, which has no {} endpoint; route this model to an OpenAI-compatible backend",
                    self.backend.name,
                    exchange.endpoint.path()
                ),
                Some("model".into()),
            )));
        }
        let request = Arc::clone(exchange.request);
        let body = exchange.body.clone();
        let model = self.upstream_model.map(str::to_owned);
        let default_max_tokens = self.backend.max_tokens;
        let endpoint = exchange.endpoint;
        let encoded = crate::offload::run(exchange.body.len(), move || {
            let Some(chat) = request.chat() else {
                return Ok(Vec::new());
            };
            // A conversation read but not kept (`Snapshot::reads_messages` says no conversion is
            // configured) is read again rather than sent empty.
            let read;
            let chat = if chat.messages_unread {
                read = reread(endpoint, &body)?;
                &read
            } else {
                chat
            };
            let options = RequestOptions {
                model: model.as_deref(),
                default_max_tokens,
            };
            match target {
                Protocol::Anthropic => convert::encode_anthropic_request(chat, &options),
                Protocol::OpenAi => convert::encode_openai_request(chat, &options),
                Protocol::Responses => convert::encode_responses_request(chat, &options),
            }
        })
        .await
        .ok_or_else(|| AttemptError::Fatal(crate::offload::cancelled()))?;
        encoded
            .map(Bytes::from)
            .map_err(|e| AttemptError::Fatal(GatewayError::invalid(e.message, e.param)))
    }

    /// Sends the request and counts the upstream's response (a 5xx/429 fault included) by status.
    async fn send(&self, spec: CallSpec<'_>) -> Result<(Reply, Timing), AttemptError> {
        let exchange = self.exchange;
        let backend = self.backend;
        let sent = Instant::now();
        let status = match call::send(exchange.state.client(), spec).await {
            Ok(reply) => {
                let ttfb = sent.elapsed();
                let status = match &reply {
                    Reply::ClientError { status, .. } => *status,
                    Reply::Success(response) => response.status().as_u16(),
                };
                exchange.state.metrics().upstream_response(
                    &backend.name,
                    backend.kind.as_str(),
                    status,
                    ttfb,
                );
                return Ok((reply, Timing { sent, ttfb }));
            }
            Err(fault) => fault,
        };
        if let Fault::Status { status, .. } = &status {
            exchange.state.metrics().upstream_response(
                &backend.name,
                backend.kind.as_str(),
                *status,
                sent.elapsed(),
            );
        }
        Err(status.into())
    }

    /// The upstream refused the request (4xx): the instance is alive, so the refusal goes to the client
    /// (in the client's protocol) instead of to the next candidate.
    fn relay_refusal(
        &self,
        status: u16,
        content_type: Option<HeaderValue>,
        body: Bytes,
        timing: Timing,
        guard: InFlightGuard,
        ctx: &mut RequestCtx,
    ) -> Response {
        let answer = Answer {
            status,
            error: Some("upstream_client_error"),
            at: timing.sent + timing.ttfb,
            upstream_wait: timing.ttfb,
            first_byte: None,
        };
        self.answered(answer, timing, guard.instance(), ctx);
        let body = if self.client == self.target {
            body
        } else {
            Bytes::from(convert::convert_error(
                self.target,
                self.client,
                status,
                &body,
            ))
        };
        reply::relayed_error(status, content_type, body, &self.backend.name)
    }

    /// Starts relaying an event stream. Fail-over stays possible until its first event is in hand;
    /// then the answer is recorded and the stream, which keeps the instance's in-flight guard and the
    /// admission slot until its end, goes to the client.
    async fn start_stream(
        &self,
        response: crate::upstream::client::Response,
        timing: Timing,
        mut guard: InFlightGuard,
        permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
        ctx: &mut RequestCtx,
    ) -> Result<Response, AttemptError> {
        let transform = self.transform(&ctx.id).await;
        // A Responses pass-through reads its final event for the summary itself.
        let tap = (ctx.request.is_some()
            && self.client == self.target
            && self.target != Protocol::Responses)
            .then(|| StreamTap::new(self.target));
        let counts_tokens = ctx
            .admission
            .as_ref()
            .is_some_and(crate::limits::Admission::counts_tokens);
        // The tap (request log) collects the text too: then it is not gathered twice.
        let collect_text = (counts_tokens || ctx.cache_key.is_some()) && tap.is_none();
        let mut relay = Relay::new(
            response,
            transform,
            self.backend.stream_idle_timeout,
            tap,
            collect_text,
        );
        let first = relay
            .next_output()
            .await?
            .ok_or_else(|| Fault::Broken("upstream sent an empty stream".into()))?;
        let now = Instant::now();
        let answer = Answer {
            status: 200,
            error: None,
            at: now,
            upstream_wait: timing.ttfb,
            first_byte: Some(now),
        };
        self.answered(answer, timing, guard.instance(), ctx);
        guard.hold(permit.take());
        let detached = ctx.detach();
        Ok(streaming::stream(
            first,
            relay,
            detached,
            guard,
            self.exchange.state.clone(),
            self.backend.kind.as_str(),
            &self.backend.name,
        ))
    }

    /// How each upstream event becomes client bytes: passed through (with our `id`) when the protocols
    /// match, else converted.
    async fn transform(&self, id: &str) -> Transform {
        if self.client != self.target {
            return Transform::Convert(Box::new(self.converter(id).await));
        }
        match self.target {
            Protocol::OpenAi => Transform::OpenAiPassThrough {
                id_json: json_string(id),
            },
            Protocol::Anthropic => Transform::AnthropicPassThrough,
            Protocol::Responses => {
                Transform::ResponsesPassThrough(Box::new(ResponsesPassThrough::new(id)))
            }
        }
    }

    /// The stream converter from the upstream's protocol to the client's.
    async fn converter(&self, id: &str) -> StreamConverter {
        let exchange = self.exchange;
        let request = exchange.request;
        let include_usage =
            matches!(request.as_ref(), ApiRequest::Chat(chat) if chat.include_usage);
        // `message_start` carries the real input count when known: an estimate here (texts' counts
        // cached, tool definitions included), replaced by the backend's own count when it reports one.
        // Boxed: only converted Anthropic streams take this branch.
        let anthropic_input_estimate = match request.as_ref() {
            ApiRequest::Chat(chat) if self.client == Protocol::Anthropic => {
                let tokens = exchange.state.tokens();
                Box::pin(tokens.estimate(request)).await
                    + tokens.count_cached(&crate::protocol::anthropic::tools_text(chat))
            }
            _ => 0,
        };
        StreamConverter::new(
            self.target,
            self.client,
            StreamOptions {
                id: id.to_owned(),
                model: request
                    .model()
                    .or(self.upstream_model)
                    .unwrap_or(&self.backend.name)
                    .to_owned(),
                include_usage,
                input_tokens: anthropic_input_estimate,
                echo: request
                    .responses()
                    .map(|r| r.echo.clone())
                    .unwrap_or_default(),
            },
        )
    }

    /// Reads the whole answer, brings it into the client's protocol with our `id` and `backend`,
    /// records it (with its usage and summary) and stores it when the request is cacheable.
    async fn finish_json(
        &self,
        response: crate::upstream::client::Response,
        timing: Timing,
        guard: InFlightGuard,
        ctx: &mut RequestCtx,
    ) -> Result<Response, AttemptError> {
        let upstream_body = self.read_answer(response).await?;
        let body = self.client_body(&upstream_body, &ctx.id)?;
        // One reading of the clock for the instance's record, the upstream wait and the answer's time.
        let done = Instant::now();
        let answer = Answer {
            status: 200,
            error: None,
            at: done,
            upstream_wait: done.duration_since(timing.sent),
            first_byte: Some(done),
        };
        self.answered(answer, timing, guard.instance(), ctx);
        drop(guard);
        let known_answer = self.summarize(&upstream_body, ctx);
        let body = self.store(body, known_answer, ctx);
        if ctx.responses.is_some() {
            // Stored here, where the answer's bytes are in hand (boxed: only Responses answers store).
            Box::pin(crate::pipeline::responses::store_final(
                self.exchange.state,
                ctx,
                body.clone(),
            ))
            .await;
        }
        Ok(reply::json(body, &self.backend.name))
    }

    /// The upstream's whole body, bounded by the backend's timeout and `server.max_upstream_body_bytes`.
    async fn read_answer(
        &self,
        response: crate::upstream::client::Response,
    ) -> Result<Bytes, AttemptError> {
        let timeout = self.backend.timeout;
        let limit = self.exchange.snapshot.config.server.max_upstream_body_bytes;
        let read = crate::upstream::client::read_body(response.into_body(), limit);
        match tokio::time::timeout(timeout, read).await {
            Err(_) => Err(Fault::Timeout(timeout).into()),
            Ok(Err(BodyReadError::TooLarge)) => {
                Err(Fault::Broken(too_large("the answer", limit)).into())
            }
            Ok(Err(BodyReadError::Failed(detail))) => Err(Fault::Broken(detail).into()),
            Ok(Ok(body)) => Ok(body),
        }
    }

    /// The answer as the client gets it: converted to its protocol when they differ, with the request's
    /// `id` and the `backend` that answered.
    fn client_body(&self, upstream_body: &Bytes, id: &str) -> Result<Bytes, AttemptError> {
        let request = self.exchange.request;
        let converted = if self.client == self.target {
            upstream_body.to_vec()
        } else {
            convert::convert_response(
                self.target,
                self.client,
                upstream_body,
                &ResponseOptions {
                    id,
                    model: request.model(),
                    echo: request.responses().map(|r| r.echo.as_str()),
                },
            )
            .map_err(|e| {
                Fault::Broken(format!(
                    "upstream response could not be converted: {}",
                    e.message
                ))
            })?
        };
        let patched = set_fields(
            &converted,
            &[
                ("id", &json_string(id)),
                ("backend", &json_string(&self.backend.name)),
            ],
        )
        .map_err(|_| Fault::Broken("upstream returned a body that is not a JSON object".into()))?;
        Ok(Bytes::from(patched))
    }

    /// The answer's usage (and, for the request log, its summary) into the context; whether the body
    /// is known to be a complete answer (our own encoder wrote it, or a compact OpenAI answer was read
    /// exactly).
    fn summarize(&self, upstream_body: &[u8], ctx: &mut RequestCtx) -> bool {
        let mut known_answer = self.client != self.target;
        if ctx.request.is_some() {
            let exact = (self.target == Protocol::OpenAi)
                .then(|| crate::protocol::openai::exact_response(upstream_body))
                .flatten();
            known_answer |= exact.is_some();
            let summary = match exact {
                Some(response) => Some(crate::protocol::ResponseSummary::from_response(&response)),
                None => convert::summarize_response(self.target, upstream_body),
            };
            ctx.usage = summary.as_ref().and_then(|s| s.usage);
            ctx.reply = summary;
        } else {
            ctx.usage = usage_of(upstream_body);
        }
        known_answer
    }

    /// A complete answer to a cacheable request is stored as sent, and the client's copy says
    /// `"cached": false` (seed 004). A stream request answered with JSON is not stored.
    fn store(&self, body: Bytes, known_answer: bool, ctx: &mut RequestCtx) -> Bytes {
        let exchange = self.exchange;
        if exchange.request.stream() {
            return body;
        }
        let Some(key) = ctx.cache_key.take() else {
            return body;
        };
        let stored = cached::Stored {
            body,
            backend: &self.backend.name,
            protocol: self.client,
            known_answer,
        };
        cached::store_answer(exchange.state, key, stored)
    }

    /// The one place an answer is recorded: a success for the instance (its breaker and latency) and
    /// the request context's status, timings and the backend and instance that answered.
    fn answered(
        &self,
        answer: Answer,
        timing: Timing,
        instance: &InstanceState,
        ctx: &mut RequestCtx,
    ) {
        instance.observe_ttfb(timing.ttfb, answer.at);
        if let Some(transition) = instance.breaker.on_success(answer.at) {
            self.exchange
                .state
                .instance_transition(instance, transition);
        }
        ctx.status = answer.status;
        ctx.error = answer.error;
        ctx.upstream_wait = answer.upstream_wait;
        ctx.ttft = answer.first_byte.map(|at| at.duration_since(ctx.started));
        ctx.backend = Some(self.backend.name.clone());
        ctx.instance = Some(self.instance.display.clone());
    }
}

/// The upstream answered with an event stream.
/// The conversation of a request decoded unread, read again in its front door's protocol.
fn reread(
    endpoint: Endpoint,
    body: &[u8],
) -> Result<crate::protocol::ChatRequest, crate::protocol::DecodeError> {
    match endpoint {
        Endpoint::Messages => crate::protocol::anthropic::decode_request(body),
        Endpoint::Responses => crate::protocol::responses::decode_request(body).map(|r| r.chat),
        _ => crate::protocol::openai::decode_chat_typed(body),
    }
}

fn is_event_stream(response: &crate::upstream::client::Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// Usage from a complete OpenAI or Anthropic response body without a full decode: `usage` is the last
/// top-level field in practice, so only the object after its last occurrence is parsed.
fn usage_of(body: &[u8]) -> Option<crate::protocol::Usage> {
    crate::upstream::relay::usage_after_key(body)
}
