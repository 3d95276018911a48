//! The attempt loop: candidates in order (the routed backend's instances as its balancer — or
//! `prefix_affinity` — orders them, skipping open breakers unless none is usable, bounded by `retries`;
//! then each fallback backend), one upstream call each, until one answers. A backend with `max_in_flight`
//! first admits the request (a slot, or a bounded wait for one). Nothing has reached the client while this
//! loop runs, so every fault may move on; the first byte to the client ends the loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use crate::alerts::{Alert, AlertKind};
use crate::config::{BackendConfig, BackendKind};
use crate::error::{ErrorKind, GatewayError};
use crate::protocol::convert::{self, RequestOptions, ResponseOptions};
use crate::protocol::json_patch::{json_string, set_fields};
use crate::protocol::responses_stream::ResponsesPassThrough;
use crate::protocol::stream::{StreamConverter, StreamOptions, StreamTap};
use crate::protocol::{ApiRequest, Endpoint, Protocol};
use crate::routing::admission::{Admission, Refusal};
use crate::routing::affinity::AffinityKey;
use crate::routing::health::Acquire;
use crate::routing::instances::{InFlightGuard, InstanceState};
use crate::state::{AppState, Snapshot};
use crate::upstream::call::{self, CallSpec, Fault, Reply, too_large};
use crate::upstream::client::BodyReadError;
use crate::upstream::relay::{Relay, Transform};

use super::RequestCtx;
use super::{cached, reply};

/// Everything an attempt needs, borrowed for the duration of the request.
pub struct Exchange<'a> {
    pub state: &'a AppState,
    pub snapshot: &'a Arc<Snapshot>,
    pub endpoint: Endpoint,
    pub request: &'a Arc<ApiRequest>,
    pub body: &'a Bytes,
    pub headers: &'a ForwardedHeaders,
    /// Model name the routing alias sends upstream (applies to the routed backend only).
    pub alias_model: Option<&'a str>,
    /// Forward the client's credentials when a backend has no key of its own: only for an open gateway,
    /// where they are not gateway keys.
    pub forward_client_auth: bool,
    /// The request's `prefix_affinity` key, when the routed backend uses it.
    pub affinity_key: Option<AffinityKey>,
    /// Its prompt's prefix block hashes, with `prompt: index`.
    pub affinity_blocks: Option<crate::routing::affinity::PromptBlocks>,
}

/// The client's headers an upstream request may carry, taken out of the request's header map before
/// the upstream call: the map then goes while its memory is still in the CPU's caches (dropped after
/// the upstream answered, it was read back cold under many connections). No `Debug`: it may hold the
/// client's credentials.
pub struct ForwardedHeaders {
    authorization: Option<HeaderValue>,
    x_api_key: Option<HeaderValue>,
    anthropic_version: Option<HeaderValue>,
    anthropic_beta: Option<HeaderValue>,
}

impl ForwardedHeaders {
    /// Moves the forwarded headers out of `headers` (their first values); the client's credentials only
    /// when they are to be forwarded (`forward_client_auth`: an open gateway).
    pub fn take(headers: &mut HeaderMap, forward_client_auth: bool) -> ForwardedHeaders {
        let (authorization, x_api_key) = if forward_client_auth {
            (
                headers.remove(header::AUTHORIZATION),
                headers.remove(crate::http::names::X_API_KEY),
            )
        } else {
            (None, None)
        };
        ForwardedHeaders {
            authorization,
            x_api_key,
            anthropic_version: headers.remove(crate::http::names::ANTHROPIC_VERSION),
            anthropic_beta: headers.remove(crate::http::names::ANTHROPIC_BETA),
        }
    }
}

/// Why one attempt did not produce a response.
enum AttemptError {
    /// Counts against the instance; the loop moves on.
    Fault(Fault),
    /// The request itself cannot be served this way (e.g. not convertible): answer the client now.
    Fatal(GatewayError),
}

impl From<Fault> for AttemptError {
    fn from(fault: Fault) -> Self {
        AttemptError::Fault(fault)
    }
}

/// One failed attempt, for the final error message.
struct Tried {
    backend: String,
    instance: String,
    fault: Fault,
}

pub fn backend_protocol(kind: BackendKind) -> Protocol {
    match kind {
        BackendKind::Anthropic => Protocol::Anthropic,
        BackendKind::OpenAi | BackendKind::Echo => Protocol::OpenAi,
    }
}

/// The protocol a request goes to `backend` in: a Responses request as it is to a backend that serves
/// the Responses API itself (`native_responses`), else the backend's own.
fn target_protocol(endpoint: Endpoint, backend: &BackendConfig) -> Protocol {
    if endpoint == Endpoint::Responses && backend.native_responses {
        Protocol::Responses
    } else {
        backend_protocol(backend.kind)
    }
}

impl Exchange<'_> {
    pub async fn run(
        &self,
        primary: usize,
        ctx: &mut RequestCtx,
    ) -> Result<Response, GatewayError> {
        let config = &self.snapshot.config;
        let mut chain = vec![primary];
        chain.extend(config.backends[primary].fallback.iter().copied());
        let mut tried: Vec<Tried> = Vec::new();
        let mut overloaded: Option<GatewayError> = None;
        for (position, &backend_index) in chain.iter().enumerate() {
            let backend = &config.backends[backend_index];
            if backend.kind == BackendKind::Echo {
                if position > 0 {
                    self.state.metrics().fallback();
                }
                if self.endpoint == Endpoint::Responses {
                    return super::responses::echo(self.request, backend, ctx).await;
                }
                return reply::echo(self.request, self.endpoint, backend, ctx);
            }
            let runtime = &self.snapshot.backends[backend_index];
            // A slot somewhere in the backend, held while the request is in flight (its stream included).
            let mut permit = match &runtime.admission {
                Some(admission) => match self.admit(backend, admission).await {
                    Ok(permit) => Some(permit),
                    Err(error) => {
                        overloaded.get_or_insert(error);
                        continue;
                    }
                },
                None => None,
            };
            let now = Instant::now();
            let views: Vec<_> = runtime.instances.iter().map(|i| i.view(now)).collect();
            let any_usable = views.iter().any(|v| v.usable);
            let affinity = runtime.affinity.as_ref();
            let key = affinity.and(self.affinity_key);
            let blocks = affinity.and(self.affinity_blocks.as_ref());
            let sticky = match affinity {
                Some(affinity) => affinity.lookup(key, blocks, now).await,
                None => None,
            };
            let mut order = match affinity {
                Some(affinity) => {
                    let (order, decision) = affinity.order(&views, now, key, sticky);
                    self.state
                        .metrics()
                        .affinity(&backend.name, decision.as_str());
                    order
                }
                None => runtime.balancer.order(&views, now),
            };
            if runtime.admission.is_some() {
                // Instances at their cap go after the others (the permit means one of those has a slot).
                order.sort_by_key(|&i| views[i].full() && views[i].is_usable(now));
            }
            let budget = (1 + backend.retries as usize).min(order.len());
            let mut attempted = 0;
            for index in order {
                if attempted == budget {
                    break;
                }
                let instance = &runtime.instances[index];
                // Open breakers and pending Retry-Afters are skipped while another instance is usable;
                // a pool with none usable is still tried (ejection never empties a pool, and with client
                // credentials passed through one client's 429 must not block the others).
                // The first candidate is asked at `now`; later ones after a failed attempt took time.
                let at = if attempted == 0 { now } else { Instant::now() };
                if let Acquire::Rejected { .. } = instance.breaker.try_acquire(at)
                    && any_usable
                {
                    continue;
                }
                attempted += 1;
                ctx.attempts += 1;
                let alias_model = if position == 0 {
                    self.alias_model
                } else {
                    None
                };
                let upstream_model = alias_model
                    .or(backend.instances[index].model.as_deref())
                    .or(backend.model.as_deref());
                let guard = instance.start();
                match self
                    .attempt(backend, index, guard, &mut permit, upstream_model, ctx)
                    .await
                {
                    Ok(response) => {
                        if position > 0 {
                            self.state.metrics().fallback();
                        }
                        if let Some(affinity) = affinity {
                            affinity.served(key, blocks, sticky, index, Instant::now());
                        }
                        return Ok(response);
                    }
                    Err(AttemptError::Fatal(error)) => return Err(error),
                    Err(AttemptError::Fault(fault)) => {
                        let shown = &backend.instances[index].display;
                        tracing::warn!(
                            id = %ctx.id, backend = %backend.name, instance = %shown,
                            fault = %fault, "upstream attempt failed"
                        );
                        self.state
                            .metrics()
                            .upstream_error(&backend.name, fault.kind_str());
                        self.record_failure(instance, &fault);
                        tried.push(Tried {
                            backend: backend.name.clone(),
                            instance: shown.clone(),
                            fault,
                        });
                    }
                }
            }
            if attempted > 0 {
                self.state.alert(Alert {
                    kind: AlertKind::BackendExhausted,
                    backend: backend.name.clone(),
                    instance: None,
                    detail: format!("every attempted instance of '{}' failed", backend.name),
                });
            }
        }
        if let Some(last) = tried.last() {
            ctx.backend = Some(last.backend.clone());
            ctx.instance = Some(last.instance.clone());
        }
        match overloaded {
            Some(error) if tried.is_empty() => {
                ctx.backend = Some(config.backends[primary].name.clone());
                Err(error)
            }
            _ => Err(exhausted(&tried)),
        }
    }

    /// Admission to a backend with `max_in_flight`: a slot, or a 503 with `Retry-After` when the queue
    /// is full or the wait ran out.
    async fn admit(
        &self,
        backend: &BackendConfig,
        admission: &Admission,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, GatewayError> {
        let metrics = self.state.metrics();
        let refusal = match admission
            .acquire(|waiting| metrics.queue_waiting(&backend.name, waiting))
            .await
        {
            Ok(permit) => return Ok(permit),
            Err(refusal) => refusal,
        };
        metrics.queue_refused(&backend.name, refusal.as_str());
        let message = match refusal {
            Refusal::QueueFull => format!(
                "backend '{}' is at capacity: every instance is at its max_in_flight and {} requests are already waiting (queue.max_waiting); retry later",
                backend.name,
                admission.max_waiting()
            ),
            Refusal::Timeout => format!(
                "backend '{}' is at capacity: no instance freed a slot within {} s (queue.max_wait_s); retry later",
                backend.name,
                admission.max_wait().as_secs_f64()
            ),
        };
        Err(GatewayError::new(ErrorKind::Overloaded, message)
            .with_retry_after(Some(admission.retry_after())))
    }

    fn record_failure(&self, instance: &InstanceState, fault: &Fault) {
        let now = Instant::now();
        if let Fault::Timeout(waited) = fault {
            // A timeout is a (lower-bound) latency sample too.
            instance.observe_ttfb(*waited, now);
        }
        if let Some(retry_after) = fault.rate_limited() {
            instance
                .breaker
                .rate_limited_until(now + retry_after.unwrap_or(Duration::from_secs(1)));
        }
        if let Some(transition) = instance.breaker.on_failure(now) {
            self.state.instance_transition(instance, transition);
        }
    }

    /// A success whose answer was complete at `now`.
    fn record_success(&self, instance: &InstanceState, ttfb: Duration, now: Instant) {
        instance.observe_ttfb(ttfb, now);
        if let Some(transition) = instance.breaker.on_success(now) {
            self.state.instance_transition(instance, transition);
        }
    }

    /// The body to send: as received when the protocols match (only `model` rewritten), else converted
    /// (off the runtime thread when the body is large).
    async fn upstream_body(
        &self,
        backend: &BackendConfig,
        upstream_model: Option<&str>,
    ) -> Result<Bytes, AttemptError> {
        let client_protocol = self.endpoint.protocol();
        let target = target_protocol(self.endpoint, backend);
        if client_protocol == target {
            return match upstream_model {
                Some(model) if self.request.model() != Some(model) => {
                    set_fields(self.body, &[("model", &json_string(model))])
                        .map(Bytes::from)
                        .map_err(|e| AttemptError::Fatal(GatewayError::invalid(e.message, e.param)))
                }
                _ => Ok(self.body.clone()),
            };
        }
        if self.request.chat().is_none() {
            return Err(AttemptError::Fatal(GatewayError::invalid(
                format!(
                    "backend '{}' speaks the Anthropic Messages API, which has no {} endpoint; route this model to an OpenAI-compatible backend",
                    backend.name,
                    self.endpoint.path()
                ),
                Some("model".into()),
            )));
        }
        let request = Arc::clone(self.request);
        let model = upstream_model.map(str::to_owned);
        let default_max_tokens = backend.max_tokens;
        let encoded = crate::offload::run(self.body.len(), move || {
            let Some(chat) = request.chat() else {
                return Ok(Vec::new());
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

    /// One call to one instance. `Err(Fault)` means "try the next candidate".
    async fn attempt(
        &self,
        backend: &BackendConfig,
        index: usize,
        mut guard: InFlightGuard,
        permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
        upstream_model: Option<&str>,
        ctx: &mut RequestCtx,
    ) -> Result<Response, AttemptError> {
        let instance = &backend.instances[index];
        let client_protocol = self.endpoint.protocol();
        let target = target_protocol(self.endpoint, backend);
        let body = self.upstream_body(backend, upstream_model).await?;
        let url = match (target, self.endpoint) {
            (Protocol::Anthropic, _) => &instance.urls.messages,
            (Protocol::Responses, _) => &instance.urls.responses,
            (Protocol::OpenAi, Endpoint::Completions) => &instance.urls.completions,
            (Protocol::OpenAi, Endpoint::Embeddings) => &instance.urls.embeddings,
            (Protocol::OpenAi, _) => &instance.urls.chat_completions,
        };
        let stream = self.request.stream();
        let forwarded = self.headers;
        let passthrough_auth = match target {
            _ if !self.forward_client_auth => None,
            Protocol::Anthropic => forwarded
                .x_api_key
                .as_ref()
                .or(forwarded.authorization.as_ref()),
            Protocol::OpenAi | Protocol::Responses => forwarded
                .authorization
                .as_ref()
                .or(forwarded.x_api_key.as_ref()),
        };
        let sent = Instant::now();
        let sent_result = call::send(
            self.state.client(),
            CallSpec {
                kind: backend.kind,
                target: url,
                body,
                api_key: instance.api_key.as_ref(),
                passthrough_auth,
                anthropic_version: forwarded
                    .anthropic_version
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(&backend.anthropic_version),
                anthropic_beta: forwarded.anthropic_beta.as_ref(),
                request_id: &ctx.id,
                stream,
                timeout: backend.timeout,
                max_body_bytes: self.snapshot.config.server.max_upstream_body_bytes,
            },
        )
        .await;
        let reply = match sent_result {
            Ok(reply) => reply,
            Err(fault) => {
                if let Fault::Status { status, .. } = &fault {
                    self.state.metrics().upstream_response(
                        &backend.name,
                        backend.kind.as_str(),
                        *status,
                        sent.elapsed(),
                    );
                }
                return Err(fault.into());
            }
        };
        let ttfb = sent.elapsed();
        let provider = backend.kind.as_str();
        let response = match reply {
            Reply::ClientError {
                status,
                content_type,
                body,
            } => {
                // The instance is alive; the request was refused. Relay it, do not retry.
                self.state
                    .metrics()
                    .upstream_response(&backend.name, provider, status, ttfb);
                self.record_success(guard.instance(), ttfb, sent + ttfb);
                ctx.status = status;
                ctx.error = Some("upstream_client_error");
                ctx.upstream_wait = ttfb;
                ctx.backend = Some(backend.name.clone());
                ctx.instance = Some(instance.display.clone());
                let body = if client_protocol == target {
                    body
                } else {
                    Bytes::from(convert::convert_error(
                        target,
                        client_protocol,
                        status,
                        &body,
                    ))
                };
                return Ok(reply::relayed_error(
                    status,
                    content_type,
                    body,
                    &backend.name,
                ));
            }
            Reply::Success(response) => response,
        };
        self.state.metrics().upstream_response(
            &backend.name,
            provider,
            response.status().as_u16(),
            ttfb,
        );
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if is_sse {
            let transform = if client_protocol == target {
                match target {
                    Protocol::OpenAi => Transform::OpenAiPassThrough {
                        id_json: json_string(&ctx.id),
                    },
                    Protocol::Anthropic => Transform::AnthropicPassThrough,
                    Protocol::Responses => Transform::ResponsesPassThrough(Box::new(
                        ResponsesPassThrough::new(&ctx.id),
                    )),
                }
            } else {
                let include_usage =
                    matches!(self.request.as_ref(), ApiRequest::Chat(chat) if chat.include_usage);
                // `message_start` carries the real input count when known: an estimate here (texts'
                // counts cached, tool definitions included), replaced by the backend's own count when
                // it reports one. Boxed: only converted Anthropic streams take this branch.
                let anthropic_input_estimate = match self.request.as_ref() {
                    ApiRequest::Chat(chat) if client_protocol == Protocol::Anthropic => {
                        let tokens = self.state.tokens();
                        Box::pin(tokens.estimate(self.request)).await
                            + tokens.count_cached(&crate::protocol::anthropic::tools_text(chat))
                    }
                    _ => 0,
                };
                Transform::Convert(Box::new(StreamConverter::new(
                    target,
                    client_protocol,
                    StreamOptions {
                        id: ctx.id.clone(),
                        model: self
                            .request
                            .model()
                            .or(upstream_model)
                            .unwrap_or(&backend.name)
                            .to_owned(),
                        include_usage,
                        input_tokens: anthropic_input_estimate,
                        echo: self
                            .request
                            .responses()
                            .map(|r| r.echo.clone())
                            .unwrap_or_default(),
                    },
                )))
            };
            // A Responses pass-through reads its final event for the summary itself.
            let tap = (ctx.request.is_some()
                && client_protocol == target
                && target != Protocol::Responses)
                .then(|| StreamTap::new(target));
            let counts_tokens = ctx
                .admission
                .as_ref()
                .is_some_and(crate::limits::Admission::counts_tokens);
            // The tap (request log) collects the text too: then it is not gathered twice.
            let collect_text = (counts_tokens || ctx.cache_key.is_some()) && tap.is_none();
            let mut relay = Relay::new(
                response,
                transform,
                backend.stream_idle_timeout,
                tap,
                collect_text,
            );
            // Fail-over stays possible until the first event is in hand.
            let first = relay
                .next_output()
                .await?
                .ok_or_else(|| Fault::Broken("upstream sent an empty stream".into()))?;
            let now = Instant::now();
            self.record_success(guard.instance(), ttfb, now);
            ctx.status = 200;
            ctx.upstream_wait = ttfb;
            ctx.backend = Some(backend.name.clone());
            ctx.instance = Some(instance.display.clone());
            ctx.ttft = Some(now.duration_since(ctx.started));
            // The stream keeps the admission slot until its end.
            guard.hold(permit.take());
            let detached = ctx.detach();
            return Ok(super::streaming::stream(
                first,
                relay,
                detached,
                guard,
                self.state.clone(),
                provider,
                &backend.name,
            ));
        }
        let limit = self.snapshot.config.server.max_upstream_body_bytes;
        let upstream_body = match tokio::time::timeout(
            backend.timeout,
            crate::upstream::client::read_body(response.into_body(), limit),
        )
        .await
        {
            Err(_) => return Err(Fault::Timeout(backend.timeout).into()),
            Ok(Err(BodyReadError::TooLarge)) => {
                return Err(Fault::Broken(too_large("the answer", limit)).into());
            }
            Ok(Err(BodyReadError::Failed(detail))) => return Err(Fault::Broken(detail).into()),
            Ok(Ok(body)) => body,
        };
        let converted = if client_protocol == target {
            upstream_body.to_vec()
        } else {
            convert::convert_response(
                target,
                client_protocol,
                &upstream_body,
                &ResponseOptions {
                    id: &ctx.id,
                    model: self.request.model(),
                    echo: self.request.responses().map(|r| r.echo.as_str()),
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
                ("id", &json_string(&ctx.id)),
                ("backend", &json_string(&backend.name)),
            ],
        )
        .map_err(|_| Fault::Broken("upstream returned a body that is not a JSON object".into()))?;
        // One reading of the clock for the instance's record, the upstream wait and the answer's time.
        let done = Instant::now();
        self.record_success(guard.instance(), ttfb, done);
        drop(guard);
        ctx.status = 200;
        ctx.upstream_wait = done.duration_since(sent);
        ctx.ttft = Some(done.duration_since(ctx.started));
        ctx.backend = Some(backend.name.clone());
        ctx.instance = Some(instance.display.clone());
        // Our own encoder wrote a converted body; a compact OpenAI answer read exactly is one too.
        let mut known_answer = client_protocol != target;
        if ctx.request.is_some() {
            let exact = (target == Protocol::OpenAi)
                .then(|| crate::protocol::openai::exact_response(&upstream_body))
                .flatten();
            known_answer |= exact.is_some();
            let summary = match exact {
                Some(response) => Some(crate::protocol::ResponseSummary::from_response(&response)),
                None => convert::summarize_response(target, &upstream_body),
            };
            ctx.usage = summary.as_ref().and_then(|s| s.usage);
            ctx.reply = summary;
        } else {
            ctx.usage = usage_of(&upstream_body);
        }
        let mut body = Bytes::from(patched);
        // A complete answer to a cacheable request is stored as sent, and the client's copy says
        // `"cached": false` (seed 004). A stream request answered with JSON is not stored.
        if !self.request.stream()
            && let Some(key) = ctx.cache_key.take()
        {
            let stored = cached::Stored {
                body: body.clone(),
                backend: &backend.name,
                protocol: client_protocol,
                known_answer,
            };
            cached::store_json(self.state, key, stored);
            body = cached::mark_miss(body);
        }
        Ok(reply::json(body, &backend.name))
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
    if tried.is_empty() {
        return GatewayError::new(kind, "no upstream instance is configured for this backend");
    }
    GatewayError::new(kind, format!("all upstream attempts failed: {detail}"))
}

/// Usage from a complete OpenAI or Anthropic response body without a full decode: `usage` is the last
/// top-level field in practice, so only the object after its last occurrence is parsed.
fn usage_of(body: &[u8]) -> Option<crate::protocol::Usage> {
    crate::upstream::relay::usage_after_key(body)
}
