//! `service(state)`: every route and the layer order, in one place.
//!
//! Outer to inner: `AppService` (request id read or minted, stored in extensions and echoed as
//! `X-Request-ID`; HTTP metrics for the routes the pipeline does not record itself; the peer address) →
//! CORS, for requests that carry an `Origin` header (browsers; the headers mean nothing to other clients,
//! so they skip the layer and its cost) → catch-panic (a bug answers 500, the process stays up) → router
//! → handler.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::routing::{get, post};
use futures_util::future::Either;
use http::{HeaderValue, Method};
use tower::{Layer, Service};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, Cors, CorsLayer};

use crate::http::{RequestId, admin, api};
use crate::state::AppState;

/// The application for one connection: the router, behind CORS when the request has an `Origin`.
#[derive(Clone)]
pub struct AppService {
    plain: Router,
    cors: Cors<Router>,
    state: AppState,
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
    type Future = AppFuture;

    /// A `Router` is always ready, and so is CORS around it.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> AppFuture {
        let started = Instant::now();
        let id = RequestId::from_headers(request.headers());
        let header = HeaderValue::from_str(&id.0).ok();
        let method = request.method().clone();
        let path = route_label(request.uri().path());
        let extensions = request.extensions_mut();
        extensions.insert(id);
        if let Some(peer) = self.peer {
            extensions.insert(ConnectInfo(peer));
        }
        let inner = if request.headers().contains_key(http::header::ORIGIN) {
            Either::Right(self.cors.call(request))
        } else {
            Either::Left(self.plain.call(request))
        };
        AppFuture {
            inner,
            state: self.state.clone(),
            started,
            method,
            path,
            header,
        }
    }
}

pin_project_lite::pin_project! {
    /// One request's response: `X-Request-ID` added, and HTTP metrics recorded unless the pipeline
    /// recorded them (API routes, with their model and backend).
    pub struct AppFuture {
        #[pin]
        inner: Either<<Router as Service<Request>>::Future, <Cors<Router> as Service<Request>>::Future>,
        state: AppState,
        started: Instant,
        method: Method,
        path: &'static str,
        header: Option<HeaderValue>,
    }
}

impl Future for AppFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.inner.poll(cx));
        if response
            .extensions()
            .get::<crate::pipeline::Recorded>()
            .is_none()
        {
            this.state.metrics().http_request(
                this.method.as_str(),
                this.path,
                response.status().as_u16(),
                this.started.elapsed(),
            );
        }
        if let Some(header) = this.header.take() {
            response.headers_mut().insert("x-request-id", header);
        }
        Poll::Ready(Ok(response))
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
        .with_state(state.clone())
        .layer(CatchPanicLayer::custom(panic_response));
    AppService {
        cors: cors.layer(plain.clone()),
        plain,
        state,
        peer: None,
    }
}

/// Request paths as bounded metric labels: the route templates (no route has parameters), `/docs` for
/// the API docs, `unmatched` for everything else.
fn route_label(path: &str) -> &'static str {
    match path {
        "/v1/models" => "/v1/models",
        "/health" => "/health",
        "/health/ready" => "/health/ready",
        "/metrics" => "/metrics",
        "/stats" => "/stats",
        "/admin/reload" => "/admin/reload",
        "/admin/keys" => "/admin/keys",
        "/v1/usage" => "/v1/usage",
        "/v1/messages/count_tokens" => "/v1/messages/count_tokens",
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/completions" => "/v1/completions",
        "/v1/embeddings" => "/v1/embeddings",
        "/v1/messages" => "/v1/messages",
        "/docs" | "/openapi.json" => "/docs",
        docs if docs.starts_with("/docs/") => "/docs",
        _ => "unmatched",
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
