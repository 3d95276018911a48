//! `service(state)`: every route and the layer order, in one place.
//!
//! Outer to inner: `AppService` (hyper's service for one connection: request id read or minted and
//! echoed as `X-Request-ID`; HTTP metrics for the routes the pipeline does not record itself; the peer
//! address). A `POST` to an API route without an `Origin` header — the request path, nearly all traffic —
//! goes straight to `pipeline::handle` (a caught panic answers 500 in the endpoint's protocol). The rest
//! goes through CORS, for requests that carry an `Origin` header (browsers; the headers mean nothing to
//! other clients, so they skip the layer and its cost) → catch-panic (a bug answers 500, the process
//! stays up) → router → handler, with the request id and peer address in the request's extensions.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::routing::{get, post};
use futures_util::FutureExt;
use http::{HeaderValue, Method};
use hyper::body::Incoming;
use tower::{Layer, Service};
use tower_http::catch_panic::CatchPanicLayer;

use crate::http::{RequestId, admin, api, names};
use crate::http1::HeadLines;
use crate::limits::RateHeaders;
use crate::pipeline::{self, Inbound};
use crate::protocol::{Endpoint, Protocol};
use crate::state::{AppState, Snapshot};

/// The application for one connection: the five API routes called directly (no router, no request
/// extensions), everything else through the router, behind CORS when the request has an `Origin` (the
/// CORS layer of the live snapshot, so a reload applies `server.cors_allow_origin`).
#[derive(Clone)]
pub struct AppService {
    plain: Router,
    state: AppState,
    peer: Option<SocketAddr>,
}

impl AppService {
    /// The same application for a connection from `peer` (its address reaches handlers as
    /// `ConnectInfo`).
    pub(crate) fn for_peer(&self, peer: SocketAddr) -> AppService {
        AppService {
            peer: Some(peer),
            ..self.clone()
        }
    }
}

/// The API route a request goes to without the router: a `POST` to one of the pipeline's paths.
/// Browsers (`Origin`) take the router for CORS.
fn direct_endpoint<B>(request: &http::Request<B>) -> Option<Endpoint> {
    if request.method() != Method::POST || request.headers().contains_key(http::header::ORIGIN) {
        return None;
    }
    match request.uri().path() {
        "/v1/chat/completions" => Some(Endpoint::ChatCompletions),
        "/v1/messages" => Some(Endpoint::Messages),
        "/v1/completions" => Some(Endpoint::Completions),
        "/v1/embeddings" => Some(Endpoint::Embeddings),
        "/v1/responses" => Some(Endpoint::Responses),
        _ => None,
    }
}

/// The pipeline's future for a request that skipped the router; a panic in it is caught and answered
/// 500 in the endpoint's protocol.
type DirectFuture = futures_util::future::CatchUnwind<
    std::panic::AssertUnwindSafe<futures_util::future::BoxFuture<'static, Response>>,
>;

impl hyper::service::Service<http::Request<Incoming>> for AppService {
    type Response = Response;
    type Error = Infallible;
    type Future = AppFuture;

    /// HTTP/2 (hyper's connection).
    fn call(&self, request: http::Request<Incoming>) -> AppFuture {
        self.serve_h2(self.scope(), request.map(Body::new))
    }
}

/// The live config as one request sees it, taken once when its head is in: the server reads its body
/// limits from it and hands it back with the request ([`AppService::serve_in`]), and the pipeline runs
/// on it — a reload during the request changes nothing for it.
pub struct RequestScope(Arc<Snapshot>);

impl RequestScope {
    /// `server.max_body_bytes`: the server side reads no longer body.
    pub fn max_body_bytes(&self) -> usize {
        self.0.config.server.max_body_bytes
    }

    /// `server.body_timeout_s`: the longest wait for more of a request body.
    pub fn body_timeout(&self) -> std::time::Duration {
        self.0.config.server.body_timeout
    }
}

impl AppService {
    /// The live config for a request whose head just came in.
    pub fn scope(&self) -> RequestScope {
        RequestScope(self.state.snapshot())
    }

    /// `server.header_timeout_s` of the live config: a head not complete this long after its first
    /// byte gets 408.
    pub(crate) fn header_timeout(&self) -> std::time::Duration {
        self.state.snapshot().config.server.header_timeout
    }

    /// The response to one HTTP/2 request: the response's header map is all hyper writes.
    pub(crate) fn serve_h2(&self, scope: RequestScope, request: http::Request<Body>) -> AppFuture {
        let mut future = self.serve_in(scope, request);
        future.rate_headers_in_map = true;
        future
    }

    /// The response to one request, on the live config.
    pub fn serve(&self, request: http::Request<Body>) -> AppFuture {
        self.serve_in(self.scope(), request)
    }

    /// The response to one request, on the config its scope holds.
    pub(crate) fn serve_in(
        &self,
        scope: RequestScope,
        mut request: http::Request<Body>,
    ) -> AppFuture {
        let started = Instant::now();
        let id = RequestId::from_headers(request.headers());
        let header = HeaderValue::from_str(&id.0).ok();
        let method = request.method().clone();
        let path = route_label(request.uri().path());
        let inner = match direct_endpoint(&request) {
            Some(endpoint) => {
                let (parts, body) = request.into_parts();
                let inbound = Inbound {
                    endpoint,
                    request_id: id.0,
                    headers: parts.headers,
                    body,
                    peer: self.peer.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
                    started,
                    snapshot: scope.0,
                };
                let state = self.state.clone();
                // The heap slot first, then the future written into it: `Box::pin(future)` built the
                // future (≈ 5.5 KB, most of it states not yet entered) on the stack and copied all of
                // it, a cold block under many connections (bench/profile.sh with a simulated cache).
                let run = boxed_in_place(|| async move { pipeline::handle(&state, inbound).await });
                Inner::Direct {
                    future: std::panic::AssertUnwindSafe(run).catch_unwind(),
                    protocol: endpoint.protocol(),
                }
            }
            None => {
                let extensions = request.extensions_mut();
                extensions.insert(id);
                // The API routes run the pipeline on this request's snapshot too (`http::api`).
                extensions.insert(Arc::clone(&scope.0));
                if let Some(peer) = self.peer {
                    extensions.insert(ConnectInfo(peer));
                }
                // Boxed: these paths are off the API hot path, and inline their futures (≈ 500 bytes)
                // would make every `AppFuture` that large — hyper moves it into its per-connection
                // slot on every request, ten cache lines under many connections.
                // Browsers go through CORS as the live config describes it (a reload applies it).
                let future: RouterFuture = if request.headers().contains_key(http::header::ORIGIN) {
                    let mut cors = scope.0.cors.layer(self.plain.clone());
                    Box::pin(cors.call(request))
                } else {
                    Box::pin(self.plain.clone().call(request))
                };
                Inner::Router { future }
            }
        };
        AppFuture {
            inner,
            state: self.state.clone(),
            started,
            method,
            path,
            header,
            rate_headers_in_map: false,
        }
    }
}

/// HTTP/1.1 heads take the `x-ratelimit-*` headers (a response's [`RateHeaders`] extension: an admitted
/// request's, or a limit's refusal) as lines; HTTP/2 responses as header-map entries (`AppFuture`).
impl HeadLines for AppService {
    fn write_head_lines(&self, extensions: &http::Extensions, out: &mut Vec<u8>) {
        if let Some(rate) = extensions.get::<RateHeaders>() {
            rate.write_fields(out);
        }
    }
}

/// The router's future (with or without the CORS layer), boxed.
type RouterFuture = futures_util::future::BoxFuture<'static, Result<Response, Infallible>>;

pin_project_lite::pin_project! {
    #[project = InnerProj]
    enum Inner {
        Direct { #[pin] future: DirectFuture, protocol: Protocol },
        Router { future: RouterFuture },
    }
}

/// `make()`'s future in a heap slot allocated before it is built, so the compiler can build it there
/// instead of building it on the stack and copying all of it.
fn boxed_in_place<F>(make: impl FnOnce() -> F) -> futures_util::future::BoxFuture<'static, Response>
where
    F: Future<Output = Response> + Send + 'static,
{
    let slot = Box::<F>::new_uninit();
    let future: Box<F> = Box::write(slot, make());
    Box::into_pin(future)
}

pin_project_lite::pin_project! {
    /// One request's response: `X-Request-ID` added, and HTTP metrics recorded unless the pipeline
    /// recorded them (API routes, with their model and backend).
    pub struct AppFuture {
        #[pin]
        inner: Inner,
        state: AppState,
        started: Instant,
        method: Method,
        path: &'static str,
        header: Option<HeaderValue>,
        // The `x-ratelimit-*` headers moved from the response's extensions into its header map (for a
        // server that writes only the map; our HTTP/1.1 server writes them as `HeadLines`).
        rate_headers_in_map: bool,
    }
}

impl Future for AppFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.inner.project() {
            InnerProj::Direct { future, protocol } => match ready!(future.poll(cx)) {
                Ok(response) => response,
                Err(_) => panic_response(*protocol),
            },
            InnerProj::Router { future } => match ready!(future.as_mut().poll(cx)) {
                Ok(response) => response,
            },
        };
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
            response.headers_mut().insert(names::X_REQUEST_ID, header);
        }
        if *this.rate_headers_in_map
            && let Some(rate) = response.extensions_mut().remove::<RateHeaders>()
        {
            for (name, value) in rate.pairs() {
                response.headers_mut().insert(name, value);
            }
        }
        Poll::Ready(Ok(response))
    }
}

pub fn service(state: AppState) -> AppService {
    let plain = Router::new()
        .route("/v1/chat/completions", post(api::chat_completions))
        .route("/v1/completions", post(api::completions))
        .route("/v1/embeddings", post(api::embeddings))
        .route("/v1/messages", post(api::messages))
        .route("/v1/messages/count_tokens", post(admin::count_tokens))
        .route("/v1/responses", post(api::responses))
        .route(
            "/v1/responses/{id}",
            get(api::get_response).delete(api::delete_response),
        )
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
        .layer(CatchPanicLayer::custom(|_| {
            panic_response(Protocol::OpenAi)
        }));
    AppService {
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
        "/v1/responses" => "/v1/responses",
        responses if responses.starts_with("/v1/responses/") => "/v1/responses/{id}",
        "/docs" | "/openapi.json" => "/docs",
        docs if docs.starts_with("/docs/") => "/docs",
        _ => "unmatched",
    }
}

fn panic_response(protocol: Protocol) -> Response {
    tracing::error!("a request handler panicked; answered 500");
    let error = crate::error::GatewayError::new(
        crate::error::ErrorKind::Internal,
        "internal error while handling the request",
    );
    crate::http::error_body::response(protocol, &error)
}
