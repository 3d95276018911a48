//! Operational endpoints: `/health`, `/health/ready`, `/v1/models`, and the JSON 404/405 answers.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::StatusCode;
use serde_json::{Value, json};

use crate::config::BackendKind;
use crate::error::{ErrorKind, GatewayError};
use crate::http::error_body;
use crate::protocol::Protocol;
use crate::state::AppState;

/// `GET /health`: always 200 while the process serves; every backend's instances with their breaker
/// state, in-flight count, recent errors, latency estimate, `max_in_flight` and engine load reading; the
/// backend's admission queue and the sessions `prefix_affinity` remembers.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    let snapshot = state.snapshot();
    let now = std::time::Instant::now();
    let mut backends = serde_json::Map::new();
    for (backend, runtime) in snapshot.config.backends.iter().zip(&snapshot.backends) {
        let mut healthy = 0;
        let instances: Vec<Value> = backend
            .instances
            .iter()
            .zip(&runtime.instances)
            .map(|(instance, live)| {
                let status = live.status(now);
                healthy += usize::from(status.healthy);
                json!({
                    "url": instance.display,
                    "weight": instance.weight,
                    "state": status.state,
                    "healthy": status.healthy,
                    "in_flight": status.in_flight,
                    "recent_errors": status.recent_errors,
                    "ewma_ttfb_ms": status.ewma_ttfb_ms,
                    "retry_in_s": status.retry_in_s,
                    "max_in_flight": status.max_in_flight,
                    "engine": status.engine,
                })
            })
            .collect();
        let (healthy, total) = if backend.kind == BackendKind::Echo {
            (1, 1)
        } else {
            (healthy, instances.len())
        };
        let mut entry = json!({
            "type": backend.kind.as_str(),
            "load_balancing": backend.load_balancing.as_str(),
            "healthy_instances": healthy,
            "total_instances": total,
            "instances": instances,
        });
        if let Some(affinity) = &runtime.affinity {
            entry["affinity"] = json!({"sessions": affinity.remembered()});
        }
        if let Some(admission) = &runtime.admission {
            entry["queue"] = json!({
                "slots": admission.slots(),
                "free_slots": admission.free(),
                "waiting": admission.waiting(),
                "max_waiting": admission.max_waiting(),
            });
        }
        backends.insert(backend.name.clone(), entry);
    }
    Json(json!({
        "status": "healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started().elapsed().as_secs(),
        "backends": backends,
    }))
}

/// `GET /health/ready`: whether this replica can serve. That it answers means the config is loaded and
/// the listener accepts; beyond that only Redis counts, when `state.on_unavailable` is `fail_closed`
/// (unreachable, every limited request would get 503). Upstream health is deliberately not part of it:
/// `/health` and the metrics carry it. A readiness probe that followed upstream health would take every
/// replica out of the load balancer when one upstream dies, and with them the traffic that fallbacks and
/// other backends could still serve.
pub async fn ready(State(state): State<AppState>) -> Response {
    match state.store().readiness(READY_REDIS_TIMEOUT).await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": reason.to_string()})),
        )
            .into_response(),
    }
}

/// How long `/health/ready` waits for Redis's PING (probes usually time out after 1–3 s).
const READY_REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

/// `GET /v1/models`: configured aliases and backend names, in OpenAI's list shape.
pub async fn models(State(state): State<AppState>, headers: http::HeaderMap) -> Response {
    let snapshot = state.snapshot();
    if let Err(error) = crate::pipeline::gate::authenticate(&state, &snapshot.keys, &headers) {
        return error_body::response(Protocol::OpenAi, &error);
    }
    let config = &snapshot.config;
    let created = state_created(&state);
    let mut data: Vec<Value> = config
        .model_names
        .iter()
        .map(|alias| {
            let target = &config.models[alias];
            json!({
                "id": alias,
                "object": "model",
                "created": created,
                "owned_by": "ai-gateway",
                "backend": config.backends[target.backend].name,
            })
        })
        .collect();
    for backend in &config.backends {
        if !config.models.contains_key(&backend.name) {
            data.push(json!({
                "id": backend.name,
                "object": "model",
                "created": created,
                "owned_by": "ai-gateway",
                "backend": backend.name,
            }));
        }
    }
    Json(json!({"object": "list", "data": data})).into_response()
}

fn state_created(state: &AppState) -> i64 {
    jiff::Timestamp::now().as_second() - state.started().elapsed().as_secs() as i64
}

fn protocol_for(path: &str) -> Protocol {
    if path.starts_with("/v1/messages") {
        Protocol::Anthropic
    } else {
        Protocol::OpenAi
    }
}

/// Unknown path: 404 with a JSON error body.
pub async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let error = GatewayError::new(
        ErrorKind::NotFound,
        format!(
            "unknown path '{} {}'; see GET /docs for the routes this gateway serves",
            request.method(),
            path
        ),
    );
    error_body::response(protocol_for(&path), &error)
}

/// Known path, wrong method: 405 with a JSON error body.
pub(crate) async fn method_not_allowed(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let error = GatewayError::new(
        ErrorKind::MethodNotAllowed,
        format!("method {} is not allowed on {}", request.method(), path),
    );
    error_body::response(protocol_for(&path), &error)
}

/// `GET /metrics`: Prometheus text exposition; never needs a key. 404 when `metrics.enabled` is off.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if !state.metrics().enabled() {
        let error = GatewayError::new(
            ErrorKind::NotFound,
            "metrics are disabled in config (metrics.enabled: false); set it to true and restart to serve /metrics",
        );
        return error_body::response(Protocol::OpenAi, &error);
    }
    let mut response = Response::new(axum::body::Body::from(state.metrics().render()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(crate::telemetry::metrics::Metrics::content_type()),
    );
    response
}

/// `GET /stats`: a JSON summary for people. With Redis, `cache_size` is counted in Redis now (at most
/// `cache::COUNT_TIMEOUT`); `cache.size_source` says when it is a last known value or unknown (null).
pub async fn stats(State(state): State<AppState>) -> Json<Value> {
    let mut stats = state.stats().snapshot();
    let cache = state.cache().stats().await;
    if let Some(object) = stats.as_object_mut() {
        // Seed 004's field names, plus the whole cache block.
        object.insert("cache_size".into(), json!(cache.size));
        object.insert("cache_capacity".into(), json!(cache.capacity));
        object.insert("hits".into(), json!(cache.hits));
        object.insert("misses".into(), json!(cache.misses));
        object.insert("cache".into(), json!(cache));
    }
    Json(stats)
}

/// The peer address the server put in the request's extensions (absent only off a real connection).
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// `POST /admin/reload`: reload the config now; 200 when it took, 400 naming the error otherwise.
pub async fn reload(
    State(state): State<AppState>,
    peer: Peer,
    headers: http::HeaderMap,
) -> Response {
    if let Err(error) = require_admin(&state, &state.snapshot(), peer, &headers) {
        return error_body::response(Protocol::OpenAi, &error);
    }
    match crate::reload::reload(&state, crate::config_watch::ReloadTrigger::Admin) {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "reloaded", "config": state.source().to_string()})),
        )
            .into_response(),
        Err(error) => {
            let error = GatewayError::invalid(
                format!("config rejected, previous config still serving: {error}"),
                None,
            );
            error_body::response(Protocol::OpenAi, &error)
        }
    }
}

/// Require an admin key on `/admin/*` when keys are configured. Without any key, only a client on
/// this machine may use them (a loopback peer, not forwarded by a proxy), unless `server.admin_open`.
fn require_admin(
    state: &AppState,
    snapshot: &crate::state::Snapshot,
    peer: Peer,
    headers: &http::HeaderMap,
) -> Result<(), GatewayError> {
    if snapshot.keys.is_open() {
        let peer = peer.map(|Extension(ConnectInfo(peer))| peer);
        if snapshot.config.server.admin_open
            || crate::pipeline::gate::is_local_client(peer, headers)
        {
            return Ok(());
        }
        let client = peer.map_or_else(
            || "unknown".to_owned(),
            |peer| crate::pipeline::gate::client_ip(snapshot, peer, headers).to_string(),
        );
        return Err(GatewayError::new(
            ErrorKind::Forbidden,
            format!(
                "admin routes answer only clients on this machine when no keys are configured, and client {client} is not one; add a key with `admin: true` under `keys:`, or set `server.admin_open: true` to open them to every client"
            ),
        ));
    }
    match crate::pipeline::gate::authenticate(state, &snapshot.keys, headers)? {
        Some(principal) if principal.admin => Ok(()),
        Some(principal) => Err(GatewayError::new(
            ErrorKind::Forbidden,
            format!(
                "key '{}' is not an admin key; /admin routes need a key with `admin: true`",
                principal.name
            ),
        )),
        None => Err(GatewayError::new(
            ErrorKind::Unauthorized,
            "missing api key",
        )),
    }
}

/// `GET /admin/keys`: every key's name, admin flag, allowed models and quota usage (never the key).
pub async fn keys(State(state): State<AppState>, peer: Peer, headers: http::HeaderMap) -> Response {
    let snapshot = state.snapshot();
    if let Err(error) = require_admin(&state, &snapshot, peer, &headers) {
        return error_body::response(Protocol::OpenAi, &error);
    }
    let mut keys = Vec::new();
    for principal in snapshot.keys.principals() {
        let usage = snapshot.limiter.usage(&principal.name).await;
        keys.push(json!({
            "name": principal.name.as_ref(),
            "admin": principal.admin,
            "models": principal.models.as_deref(),
            "usage": usage,
        }));
    }
    Json(json!({"object": "list", "data": keys})).into_response()
}

/// `GET /v1/usage`: the calling key's own quota usage.
pub async fn usage(State(state): State<AppState>, headers: http::HeaderMap) -> Response {
    let snapshot = state.snapshot();
    match crate::pipeline::gate::authenticate(&state, &snapshot.keys, &headers) {
        Ok(Some(principal)) => {
            Json(json!(snapshot.limiter.usage(&principal.name).await)).into_response()
        }
        Ok(None) => error_body::response(
            Protocol::OpenAi,
            &GatewayError::invalid(
                "this gateway has no keys configured, so there is no per-key usage",
                None,
            ),
        ),
        Err(error) => error_body::response(Protocol::OpenAi, &error),
    }
}

/// `POST /v1/messages/count_tokens`: an estimate of the prompt's tokens (o200k BPE; Anthropic has no
/// public tokenizer, so this is an approximation).
pub async fn count_tokens(
    State(state): State<AppState>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let snapshot = state.snapshot();
    if let Err(error) = crate::pipeline::gate::authenticate(&state, &snapshot.keys, &headers) {
        return error_body::response(Protocol::Anthropic, &error);
    }
    if body.len() > snapshot.config.server.max_body_bytes {
        let error = GatewayError::new(
            ErrorKind::PayloadTooLarge,
            "request body exceeds server.max_body_bytes",
        );
        return error_body::response(Protocol::Anthropic, &error);
    }
    let request = match crate::protocol::anthropic::decode_request(&body) {
        Ok(request) => request,
        Err(error) if error.message.contains("max_tokens") => {
            // count_tokens does not need max_tokens: retry with a placeholder.
            let patched = crate::protocol::json_patch::set_fields(&body, &[("max_tokens", "1")])
                .unwrap_or_default();
            match crate::protocol::anthropic::decode_request(&patched) {
                Ok(request) => request,
                Err(error) => {
                    return error_body::response(
                        Protocol::Anthropic,
                        &GatewayError::invalid(error.message, error.param),
                    );
                }
            }
        }
        Err(error) => {
            return error_body::response(
                Protocol::Anthropic,
                &GatewayError::invalid(error.message, error.param),
            );
        }
    };
    let text = crate::protocol::anthropic::count_tokens_input(&request);
    Json(json!({"input_tokens": crate::tokens::count(&text)})).into_response()
}
