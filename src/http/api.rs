//! API handlers: each extracts the request and hands it to `pipeline::handle`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::Response;
use http::HeaderMap;

use crate::http::RequestId;
use crate::pipeline::{self, Inbound};
use crate::protocol::Endpoint;
use crate::state::{AppState, Snapshot};

pub(crate) async fn chat_completions(State(state): State<AppState>, request: Request) -> Response {
    serve(state, Endpoint::ChatCompletions, request).await
}

pub async fn completions(State(state): State<AppState>, request: Request) -> Response {
    serve(state, Endpoint::Completions, request).await
}

pub async fn embeddings(State(state): State<AppState>, request: Request) -> Response {
    serve(state, Endpoint::Embeddings, request).await
}

async fn serve(state: AppState, endpoint: Endpoint, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |info| info.0);
    let request_id = match parts.extensions.get::<RequestId>() {
        Some(id) => id.0.clone(),
        None => RequestId::from_headers(&parts.headers).0,
    };
    pipeline::handle(
        &state,
        Inbound {
            endpoint,
            request_id,
            headers: parts.headers,
            body,
            peer,
            started: std::time::Instant::now(),
            // The snapshot `AppService` took for this request; the live one for a router built
            // without it (tests calling the router directly).
            snapshot: parts
                .extensions
                .remove::<Arc<Snapshot>>()
                .unwrap_or_else(|| state.snapshot()),
        },
    )
    .await
}

pub async fn messages(State(state): State<AppState>, request: Request) -> Response {
    serve(state, Endpoint::Messages, request).await
}

pub async fn responses(State(state): State<AppState>, request: Request) -> Response {
    serve(state, Endpoint::Responses, request).await
}

/// `GET /v1/responses/{id}`.
pub(crate) async fn get_response(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    pipeline::responses::get(&state, &headers, &id).await
}

/// `DELETE /v1/responses/{id}`.
pub(crate) async fn delete_response(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    pipeline::responses::delete(&state, &headers, &id).await
}
