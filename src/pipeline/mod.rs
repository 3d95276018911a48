//! THE request path, in order: read and decode the body → route → attempt loop over candidates
//! (instances of the routed backend, then its fallbacks) → reply (JSON or a relayed stream) → record.
//!
//! Handlers in `http/` only extract and call `handle`; this is the one place that orders the stages.

pub mod attempt;
mod cache_key;
pub mod cached;
pub mod ctx;
pub mod gate;
pub mod reply;
pub mod responses;
mod streaming;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::BodyExt;

use crate::error::{ErrorKind, GatewayError};
use crate::http::error_body;
use crate::protocol::{ApiRequest, Endpoint, Protocol, anthropic, openai};
use crate::routing::affinity::{AffinityKey, KeySource, PromptBlocks};
use crate::routing::route;
use crate::state::{AppState, Snapshot};

pub use ctx::RequestCtx;

/// One inbound API request, as the handler extracted it.
pub struct Inbound {
    pub endpoint: Endpoint,
    pub request_id: String,
    pub headers: HeaderMap,
    pub body: Body,
    pub peer: SocketAddr,
    /// When the request's head was in: the start of its latency.
    pub started: std::time::Instant,
    /// The live config when the request's head was in; the request runs on it to the end.
    pub snapshot: Arc<Snapshot>,
}

/// Run one API request to completion (or to the start of its stream).
pub async fn handle(state: &AppState, inbound: Inbound) -> Response {
    let snapshot = Arc::clone(&inbound.snapshot);
    let protocol = inbound.endpoint.protocol();
    // A Responses answer's id is `resp_<request id>`; it names the answer everywhere (logs included).
    let id = match inbound.endpoint {
        Endpoint::Responses => crate::protocol::responses::response_id(&inbound.request_id),
        _ => inbound.request_id.clone(),
    };
    let mut ctx = RequestCtx::new(
        state,
        Arc::clone(&snapshot),
        id,
        inbound.endpoint,
        inbound.started,
    );
    let _in_flight = state.metrics().in_flight("POST", inbound.endpoint.path());
    let response = match run(state, &snapshot, inbound, &mut ctx).await {
        Ok(response) => response,
        Err(error) => {
            ctx.status = error.status().as_u16();
            ctx.error = Some(error.kind_str());
            if error.source() == crate::error::ErrorSource::Upstream {
                tracing::warn!(id = %ctx.id, error = %error.message, "request failed upstream");
            }
            error_body::response(protocol, &error)
        }
    };
    ctx.finish();
    let mut response = response;
    response.extensions_mut().insert(Recorded);
    response
}

/// Marks a response whose HTTP metrics the pipeline recorded (the middleware skips it).
#[derive(Debug, Clone, Copy)]
pub struct Recorded;

async fn run(
    state: &AppState,
    snapshot: &Arc<Snapshot>,
    mut inbound: Inbound,
    ctx: &mut RequestCtx,
) -> Result<Response, GatewayError> {
    let config = &snapshot.config;
    check_content_type(&inbound.headers)?;
    let mut body = read_body(inbound.body, &inbound.headers, config.server.max_body_bytes).await?;
    if config.request_log.enabled && state.request_log().behind() {
        // A request log behind on writing holds new requests here, each with only its body.
        let logger = arc_swap::Guard::into_inner(state.request_log());
        logger.room().await;
    }
    let endpoint = inbound.endpoint;
    // A large body waits for its turn before it is decoded, and keeps it until it is admitted.
    let turn = crate::offload::decode_turn(body.len()).await;
    let decoded = body.clone();
    let unread = keeps_nothing(state, snapshot, endpoint, body.len());
    let mut request = crate::offload::run(body.len(), move || {
        if unread {
            decode_unread(endpoint, &decoded)
        } else {
            decode(endpoint, &decoded)
        }
    })
    .await
    .ok_or_else(crate::offload::cancelled)??;
    // Responses: a continued conversation's history comes in before anything counts the input.
    let prepared = responses::prepare(state, &mut request, &mut body).await?;
    let request = Arc::new(request);
    note_request(config, ctx, &request, &body);

    let route = route::resolve(config, endpoint, request.model());
    let routed_name = config.backends[route.backend].name.as_str();
    let public_model = request.model().unwrap_or(routed_name);
    let ip = gate::client_ip(snapshot, inbound.peer, &inbound.headers);
    let admitted = gate::admit(
        state,
        snapshot,
        &inbound.headers,
        ip,
        &request,
        public_model,
    )
    .await?;
    responses::admitted(state, prepared, admitted.principal.as_deref(), ctx)?;
    drop(turn);
    let rate_headers = charged(admitted.admission, ctx);

    let cache_on = state.cache().is_enabled();
    if cache_on
        && let Some(hit) = cache_lookup(
            state,
            &inbound.headers,
            endpoint,
            routed_name,
            &mut body,
            &request,
            ctx,
        )
        .await?
    {
        let response = responses::store_complete(state, ctx, hit).await;
        return Ok(with_headers(response, rate_headers));
    }

    let (affinity_key, affinity_blocks) =
        affinity_of(snapshot, route.backend, &inbound.headers, &request);
    // The header map goes now, while it is still in the CPU's caches; the upstream call needs only a
    // few of its values.
    let forward_client_auth = snapshot.keys.is_open();
    let forwarded = attempt::ForwardedHeaders::take(&mut inbound.headers, forward_client_auth);
    drop(std::mem::take(&mut inbound.headers));
    let exchange = attempt::Exchange {
        state,
        snapshot,
        endpoint,
        request: &request,
        body: &body,
        headers: &forwarded,
        alias_model: route.alias_model,
        forward_client_auth,
        affinity_key,
        affinity_blocks,
    };
    let response = exchange.run(route.backend, ctx).await?;
    let response = cache_store(state, ctx, response, cache_on, &request, endpoint).await;
    let response = responses::store_complete(state, ctx, response).await;
    Ok(with_headers(response, rate_headers))
}

/// What the request log and the metrics need to know of the decoded request, in the context.
fn note_request(
    config: &crate::config::Config,
    ctx: &mut RequestCtx,
    request: &Arc<ApiRequest>,
    body: &Bytes,
) {
    ctx.model = request.model().map(str::to_owned);
    ctx.stream = request.stream();
    if config.request_log.enabled {
        ctx.request = Some(Arc::clone(request));
        // Only the `openai` layout logs the request's other fields. The body is a slice of the
        // connection's read buffer: holding it to the end of a stream makes the server allocate a
        // fresh buffer for the next request.
        if config.request_log.format == crate::telemetry::request_log::LogFormat::OpenAi {
            ctx.request_body = Some(body.clone());
        }
    }
}

/// The `x-ratelimit-*` headers the response takes; the context keeps what was charged only when
/// tokens are reconciled at the end (every later use asks `counts_tokens` first).
fn charged(
    admission: Option<crate::limits::Admission>,
    ctx: &mut RequestCtx,
) -> crate::limits::RateHeaders {
    let rate_headers = admission
        .as_ref()
        .map(|admission| admission.headers)
        .unwrap_or_default();
    ctx.admission = admission.filter(crate::limits::Admission::counts_tokens);
    rate_headers
}

/// The cache stage after the call: the answer marked as not cached and, when the lookup left a key
/// for it, a complete non-stream answer stored.
async fn cache_store(
    state: &AppState,
    ctx: &mut RequestCtx,
    response: Response,
    cache_on: bool,
    request: &ApiRequest,
    endpoint: Endpoint,
) -> Response {
    if !cache_on {
        return response;
    }
    let response = cached::with_cache_header(response, false);
    match ctx.cache_key.take() {
        Some(key) if !request.stream() && response.status() == http::StatusCode::OK => {
            cached::store_response(state, key, response, endpoint.protocol()).await
        }
        _ => response,
    }
}

/// The cache stage before the call: a hit answered from the cache (`Some`), or, on a miss, the key put
/// in the context for the answer to be stored under. A body with a `cache` field is forwarded without it.
async fn cache_lookup(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: Endpoint,
    backend_name: &str,
    body: &mut Bytes,
    request: &Arc<ApiRequest>,
    ctx: &mut RequestCtx,
) -> Result<Option<Response>, GatewayError> {
    let bypass = cached::bypassed(headers);
    let (keyed, backend_name) = (body.clone(), backend_name.to_owned());
    let plan = crate::offload::run(body.len(), move || {
        cached::plan_with(endpoint, &backend_name, bypass, &keyed)
    })
    .await
    .ok_or_else(crate::offload::cancelled)?;
    if let Some(forward) = plan.forward {
        *body = forward;
    }
    let Some(key) = plan.key else {
        return Ok(None);
    };
    if let Some(hit) = state.cache().get(&key).await {
        let include_usage =
            matches!(request.as_ref(), ApiRequest::Chat(chat) if chat.include_usage);
        let echo = request.responses().map(|r| r.echo.as_str());
        if let Some(response) = cached::answer(&hit, request.stream(), include_usage, echo, ctx) {
            state.metrics().cache(true);
            return Ok(Some(response));
        }
    }
    state.metrics().cache(false);
    ctx.cache_key = Some(key);
    Ok(None)
}

/// `prefix_affinity`'s key for the request (a session header, the user field or the prompt's start)
/// and, with `prompt: index`, the prefix blocks of a request keyed by its prompt.
fn affinity_of(
    snapshot: &Snapshot,
    backend: usize,
    headers: &HeaderMap,
    request: &ApiRequest,
) -> (Option<AffinityKey>, Option<PromptBlocks>) {
    let Some(affinity) = snapshot.backends[backend].affinity.as_ref() else {
        return (None, None);
    };
    let key = affinity.rules.key(headers, request);
    let blocks = key
        .filter(|key| key.source == KeySource::Prompt)
        .and_then(|_| affinity.rules.blocks(request));
    (key, blocks)
}

/// The `x-ratelimit-*` headers go with the response as numbers (an extension), as a limit's refusal's do:
/// `AppService` writes them straight into an HTTP/1.1 head (`http1::HeadLines`) and turns them into
/// header values for HTTP/2.
fn with_headers(mut response: Response, headers: crate::limits::RateHeaders) -> Response {
    if !headers.is_empty() {
        response.extensions_mut().insert(headers);
    }
    response
}

/// A large chat body goes upstream as received and nothing on its way reads its conversation: it is
/// checked, but its messages are not kept (held once, not twice, while in flight). Small bodies keep
/// the exact reader (chat) or the typed one, which cost no more on them.
fn keeps_nothing(state: &AppState, snapshot: &Snapshot, endpoint: Endpoint, len: usize) -> bool {
    let read = match endpoint {
        Endpoint::ChatCompletions => snapshot.reads_messages.chat,
        Endpoint::Messages => snapshot.reads_messages.messages,
        Endpoint::Responses => snapshot.reads_messages.responses,
        Endpoint::Completions | Endpoint::Embeddings => true,
    };
    !read && len > crate::protocol::exact_request::MAX_BODY && !state.cache().is_enabled()
}

/// [`decode`] for a body whose conversation nothing reads ([`keeps_nothing`]).
pub fn decode_unread(endpoint: Endpoint, body: &[u8]) -> Result<ApiRequest, GatewayError> {
    match endpoint {
        Endpoint::Messages => anthropic::decode_request_unread(body).map(ApiRequest::Chat),
        Endpoint::Responses => crate::protocol::responses::decode_request_unread(body)
            .map(|request| ApiRequest::Responses(Box::new(request))),
        _ => openai::decode_chat_unread(body).map(ApiRequest::Chat),
    }
    .map_err(|error| GatewayError::invalid(error.message, error.param))
}

/// Decode the body in the endpoint's protocol into the canonical request.
pub fn decode(endpoint: Endpoint, body: &Bytes) -> Result<ApiRequest, GatewayError> {
    // Every decoder checks the body's UTF-8 first (once: `openai::parse`) and names the offset.
    // A large body's texts are kept as slices of it, whatever the front door (the exact reader takes
    // the small chat ones).
    if body.len() > crate::protocol::exact_request::MAX_BODY {
        let sliced = match endpoint {
            Endpoint::ChatCompletions => {
                Some(openai::decode_chat_sliced(body).map(ApiRequest::Chat))
            }
            Endpoint::Messages => {
                Some(anthropic::decode_request_sliced(body).map(ApiRequest::Chat))
            }
            Endpoint::Responses => Some(
                crate::protocol::responses::decode_request_sliced(body)
                    .map(|request| ApiRequest::Responses(Box::new(request))),
            ),
            _ => None,
        };
        if let Some(decoded) = sliced {
            return decoded.map_err(|error| GatewayError::invalid(error.message, error.param));
        }
    }
    match endpoint.protocol() {
        Protocol::OpenAi | Protocol::Responses => openai::decode_request(endpoint, body),
        Protocol::Anthropic => anthropic::decode_request(body).map(ApiRequest::Chat),
    }
    .map_err(|error| GatewayError::invalid(error.message, error.param))
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

/// The body timeout among an error's causes (an HTTP/2 body that stopped arriving).
fn body_timeout(error: &(dyn std::error::Error + 'static)) -> Option<crate::error::BodyTimeout> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(timeout) = error.downcast_ref::<crate::error::BodyTimeout>() {
            return Some(*timeout);
        }
        cause = error.source();
    }
    None
}

/// Read the whole request body, bounded by `server.max_body_bytes` (and, for HTTP/2, in time by
/// `server.body_timeout_s`: 408).
pub async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, GatewayError> {
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
        Err(error) if let Some(timeout) = body_timeout(&*error) => Err(GatewayError::new(
            ErrorKind::RequestTimeout,
            timeout.to_string(),
        )),
        Err(error) => Err(GatewayError::invalid(
            format!("could not read the request body: {error}"),
            None,
        )),
    }
}
