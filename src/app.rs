//! `service(state)`: every route and the layer order, in one place.
//!
//! Layers, outer to inner: CORS, for requests that carry an `Origin` header (browsers; the headers mean
//! nothing to other clients, so they skip the layer and its cost) → catch-panic (a bug answers 500, the
//! process stays up) → request id (read or minted, stored in extensions, echoed as `X-Request-ID`) →
//! handler.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use futures_util::future::Either;
use tower::Service;
use tower_http::cors::Cors;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use http::HeaderValue;
use tower::Layer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::http::{RequestId, admin, api};
use crate::state::AppState;

/// The application for one connection: the router, behind CORS when the request has an `Origin`.
#[derive(Clone)]
pub struct AppService {
    plain: Router,
    cors: Cors<Router>,
    peer: Option<SocketAddr>,
}

impl AppService {
    /// The same application for a connection from `peer` (its address reaches handlers as
    /// `ConnectInfo`).
    pub fn for_peer(&self, peer: SocketAddr) -> AppService {
        AppService {
            peer: Some(peer),
            ..self.clone()
        }
    }
}

impl Service<Request> for AppService {
    type Response = Response;
    type Error = Infallible;
    type Future =
        Either<<Router as Service<Request>>::Future, <Cors<Router> as Service<Request>>::Future>;

    /// A `Router` is always ready, and so is CORS around it.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        if request.headers().contains_key(http::header::ORIGIN) {
            Either::Right(self.cors.call(request))
        } else {
            Either::Left(self.plain.call(request))
        }
    }
}

pub fn service(state: AppState) -> AppService {
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
    let plain = Router::new()
        .route("/v1/chat/completions", post(api::chat_completions))
        .route("/v1/completions", post(api::completions))
        .route("/v1/embeddings", post(api::embeddings))
        .route("/v1/messages", post(api::messages))
        .route("/v1/messages/count_tokens", post(admin::count_tokens))
        .route("/v1/usage", get(admin::usage))
        .route("/admin/keys", get(admin::keys))
        .route("/v1/models", get(admin::models))
        .route("/health", get(admin::health))
        .route("/health/ready", get(admin::ready))
        .route("/metrics", get(admin::metrics))
        .route("/stats", get(admin::stats))
        .route("/admin/reload", post(admin::reload))
        .merge(crate::docs::docs_router())
        .fallback(admin::not_found)
        .method_not_allowed_fallback(admin::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), request_id)) // <- inner
        .with_state(state)
        .layer(CatchPanicLayer::custom(panic_response));
    AppService {
        cors: cors.layer(plain.clone()),
        plain,
        peer: None,
    }
}

/// Request id in and out; HTTP metrics for the routes the pipeline does not record itself.
async fn request_id(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let id = RequestId::from_headers(request.headers());
    let header = HeaderValue::from_str(&id.0).ok();
    let method = request.method().clone();
    let path = route_label(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    request.extensions_mut().insert(id);
    let mut response = next.run(request).await;
    if response
        .extensions()
        .get::<crate::pipeline::Recorded>()
        .is_none()
    {
        state.metrics().http_request(
            method.as_str(),
            path,
            response.status().as_u16(),
            started.elapsed(),
        );
    }
    if let Some(header) = header {
        response.headers_mut().insert("x-request-id", header);
    }
    response
}

/// Route templates as bounded metric labels.
fn route_label(matched: Option<&str>) -> &'static str {
    match matched {
        Some("/v1/models") => "/v1/models",
        Some("/health") => "/health",
        Some("/health/ready") => "/health/ready",
        Some("/metrics") => "/metrics",
        Some("/stats") => "/stats",
        Some("/admin/reload") => "/admin/reload",
        Some("/admin/keys") => "/admin/keys",
        Some("/v1/usage") => "/v1/usage",
        Some("/v1/messages/count_tokens") => "/v1/messages/count_tokens",
        Some("/v1/chat/completions") => "/v1/chat/completions",
        Some("/v1/completions") => "/v1/completions",
        Some("/v1/embeddings") => "/v1/embeddings",
        Some("/v1/messages") => "/v1/messages",
        Some(path) if path.starts_with("/docs") || path == "/openapi.json" => "/docs",
        Some(_) => "other",
        None => "unmatched",
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; answered 500");
    let error = crate::error::GatewayError::new(
        crate::error::ErrorKind::Internal,
        "internal error while handling the request",
    );
    crate::http::error_body::response(crate::protocol::Protocol::OpenAi, &error)
}
