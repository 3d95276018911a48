//! HTTP/2 by prior knowledge: hyper's connection serving `AppService`, with every stream counted while
//! it is open (a connection with none is idle, and `server::idle` closes it after
//! `server.idle_timeout_s`) and every request body bounded in time (no frame of it for
//! `server.body_timeout_s` fails it with `BodyTimeout`, answered 408).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::idle::Flags;
use crate::app::AppService;
use crate::error::BodyTimeout;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `AppService` for one HTTP/2 connection.
pub(crate) struct H2Service {
    pub app: AppService,
    pub flags: Arc<Flags>,
}

impl hyper::service::Service<http::Request<Incoming>> for H2Service {
    type Response = Response;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Response, Infallible>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let stream = OpenStream::new(Arc::clone(&self.flags));
        let scope = self.app.scope();
        let timeout = scope.body_timeout();
        let future = self.app.serve_h2(
            scope,
            request.map(|body| Body::new(Timed::new(body, timeout))),
        );
        Box::pin(async move {
            let Ok(response) = future.await;
            // The stream stays open until hyper drops the response body (sent, or the stream reset).
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _open = &stream;
                    frame
                }))
            }))
        })
    }
}

/// One open stream of the connection; counted from the request's arrival to the response body's drop.
struct OpenStream(Arc<Flags>);

impl OpenStream {
    fn new(flags: Arc<Flags>) -> OpenStream {
        flags.stream_opened();
        OpenStream(flags)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.stream_closed();
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails with `BodyTimeout` when no frame of it comes for `timeout` while it
    /// is read.
    struct Timed {
        #[pin]
        body: Incoming,
        #[pin]
        sleep: Sleep,
        armed: bool,
        timeout: Duration,
    }
}

impl Timed {
    fn new(body: Incoming, timeout: Duration) -> Timed {
        Timed {
            body,
            sleep: tokio::time::sleep(timeout),
            armed: false,
            timeout,
        }
    }
}

impl HttpBody for Timed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            *this.armed = false;
            return Poll::Ready(frame.map(|frame| frame.map_err(BoxError::from)));
        }
        if !*this.armed {
            this.sleep.as_mut().reset(Instant::now() + *this.timeout);
            *this.armed = true;
        }
        ready!(this.sleep.poll(cx));
        Poll::Ready(Some(Err(BodyTimeout(*this.timeout).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
