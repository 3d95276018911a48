//! `router(state)`: every route and the layer order, in one place.
//!
//! Layers, outer to inner: CORS → catch-panic (a bug answers 500, the process stays up) → request id
//! (read or minted, stored in extensions, echoed as `X-Request-ID`) → handler.

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use http::HeaderValue;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::http::{RequestId, admin, api};
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let origin = state.snapshot().config.server.cors_allow_origin.clone();
    let cors = if origin == "*" {
        CorsLayer::new().allow_origin(Any)
    } else {
        match HeaderValue::from_str(&origin) {
            Ok(value) => CorsLayer::new().allow_origin(AllowOrigin::exact(value)),
            Err(_) => CorsLayer::new(),
        }
    }
    .allow_methods(Any)
    .allow_headers(Any)
    .expose_headers(Any);
    Router::new()
        .route("/v1/chat/completions", post(api::chat_completions))
        .route("/v1/completions", post(api::completions))
        .route("/v1/embeddings", post(api::embeddings))
        .route("/v1/models", get(admin::models))
        .route("/health", get(admin::health))
        .route("/health/ready", get(admin::ready))
        .fallback(admin::not_found)
        .method_not_allowed_fallback(admin::method_not_allowed)
        .with_state(state)
        .layer(middleware::from_fn(request_id)) // <- inner
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(cors) // <- outer
}

async fn request_id(mut request: Request, next: Next) -> Response {
    let id = RequestId::from_headers(request.headers());
    let header = HeaderValue::from_str(&id.0).ok();
    request.extensions_mut().insert(id);
    let mut response = next.run(request).await;
    if let Some(header) = header {
        response.headers_mut().insert("x-request-id", header);
    }
    response
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; answered 500");
    let error = crate::error::GatewayError::new(
        crate::error::ErrorKind::Internal,
        "internal error while handling the request",
    );
    crate::http::error_body::response(crate::protocol::Protocol::OpenAi, &error)
}
