//! API handlers: each extracts the request and hands it to `pipeline::handle`.

use axum::extract::{Request, State};
use axum::response::Response;

use crate::http::RequestId;
use crate::pipeline::{self, Inbound};
use crate::protocol::Endpoint;
use crate::state::AppState;

pub async fn chat_completions(State(state): State<AppState>, request: Request) -> Response {
    serve(state, Endpoint::ChatCompletions, request).await
}

pub async fn completions(State(state): State<AppState>, request: Request) -> Response {
    serve(state, Endpoint::Completions, request).await
}

pub async fn embeddings(State(state): State<AppState>, request: Request) -> Response {
    serve(state, Endpoint::Embeddings, request).await
}

async fn serve(state: AppState, endpoint: Endpoint, request: Request) -> Response {
    let (parts, body) = request.into_parts();
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
        },
    )
    .await
}

pub async fn messages(State(state): State<AppState>, request: Request) -> Response {
    serve(state, Endpoint::Messages, request).await
}
