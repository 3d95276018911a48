//! Operational endpoints: `/health`, `/health/ready`, `/v1/models`, and the JSON 404/405 answers.

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

use crate::config::BackendKind;
use crate::error::{ErrorKind, GatewayError};
use crate::http::error_body;
use crate::protocol::Protocol;
use crate::state::AppState;

/// `GET /health`: always 200 while the process serves; per-backend instance summary.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    let snapshot = state.snapshot();
    let mut backends = serde_json::Map::new();
    for (backend, runtime) in snapshot.config.backends.iter().zip(&snapshot.backends) {
        let instances: Vec<Value> = backend
            .instances
            .iter()
            .zip(&runtime.instances)
            .map(|(instance, live)| {
                json!({
                    "url": instance.display,
                    "weight": instance.weight,
                    "state": "closed",
                    "in_flight": live.in_flight(),
                })
            })
            .collect();
        let total = if backend.kind == BackendKind::Echo {
            1
        } else {
            instances.len()
        };
        backends.insert(
            backend.name.clone(),
            json!({
                "type": backend.kind.as_str(),
                "load_balancing": backend.load_balancing,
                "healthy_instances": total,
                "total_instances": total,
                "instances": instances,
            }),
        );
    }
    Json(json!({
        "status": "healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started().elapsed().as_secs(),
        "backends": backends,
    }))
}

/// `GET /health/ready`: 503 when some backend has no usable instance.
pub async fn ready(State(state): State<AppState>) -> Response {
    let snapshot = state.snapshot();
    let unusable: Vec<&str> = snapshot
        .config
        .backends
        .iter()
        .filter(|b| b.kind != BackendKind::Echo && b.instances.is_empty())
        .map(|b| b.name.as_str())
        .collect();
    if unusable.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "unusable_backends": unusable})),
        )
            .into_response()
    }
}

/// `GET /v1/models`: configured aliases and backend names, in OpenAI's list shape.
pub async fn models(State(state): State<AppState>) -> Json<Value> {
    let snapshot = state.snapshot();
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
    Json(json!({"object": "list", "data": data}))
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
pub async fn method_not_allowed(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let error = GatewayError::new(
        ErrorKind::MethodNotAllowed,
        format!("method {} is not allowed on {}", request.method(), path),
    );
    error_body::response(protocol_for(&path), &error)
}
