//! Kept-alive HTTP/1.1 connections to plain `http://` upstreams (vLLM, llama.cpp, Ollama and the like
//! on a private network): hyper's own client connections, pooled here by origin. A checkout is a lock
//! and a `pop`; a connection goes back to the pool when its response body has been read to the end.
//! `https://` upstreams go through hyper-util's pooled client (TLS, HTTP/2 by ALPN).
//!
//! Semantics kept from hyper-util's pool: last idle connection first; a request that a reused
//! connection could not even start (closed by the server while idle) is sent again on a new
//! connection; idle connections older than [`IDLE_TIMEOUT`] are dropped; at most [`MAX_IDLE`] idle
//! connections per origin. A body dropped before its end closes its connection (HTTP/1 cannot reuse it).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Request, Uri, header};
use http_body_util::Full;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

/// Idle connections older than this are not reused (hyper-util's `pool_idle_timeout` as configured).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per origin; more are closed when they come back.
pub const MAX_IDLE: usize = 1024;
/// Bound on opening one TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Sender = SendRequest<Full<Bytes>>;

/// The pool: idle connections per origin (`host:port` as written in the URL).
#[derive(Default)]
pub struct Pool {
    origins: Mutex<hashbrown::HashMap<Box<str>, Vec<Idle>>>,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Pool {
    /// Send `request` (an absolute `http://` URI) on a pooled connection or a new one.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<http::Response<Body>, String> {
        let uri = std::mem::take(request.uri_mut());
        let authority = uri.authority().ok_or("the upstream URL has no host")?;
        // The pool key is the authority as written (`host:port`); host and port are parsed only to dial.
        let key = authority.as_str();
        *request.uri_mut() = origin_form(&uri);
        if !request.headers().contains_key(header::HOST) {
            // The default port is left out of `Host`, any other kept as the URL has it.
            let host = HeaderValue::from_str(key.strip_suffix(":80").unwrap_or(key))
                .map_err(|_| "the upstream host is not valid in a header")?;
            request.headers_mut().insert(header::HOST, host);
        }
        // A reused connection may turn out closed before the request could start: then once more on a
        // new connection (the request was not sent, so nothing is repeated upstream).
        for _ in 0..2 {
            let (mut sender, reused) = match self.checkout(key).await {
                Some(sender) => (sender, true),
                None => (connect(authority).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let pool = Arc::clone(self);
                    return Ok(response.map(|incoming| Body {
                        inner: incoming,
                        back: Some(Back { pool, uri, sender }),
                    }));
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(super::client::describe(error.error())),
                },
            }
        }
        Err("the upstream closed every pooled connection before the request was sent".into())
    }

    /// The most recently returned idle connection that is still open, ready for a request.
    async fn checkout(&self, key: &str) -> Option<Sender> {
        loop {
            let idle = {
                let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
                origins.get_mut(key)?.pop()?
            };
            if idle.sender.is_closed() || idle.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            let mut sender = idle.sender;
            // A connection comes back when its body ended; its task may not have seen that yet.
            if sender.is_ready() || sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn put_back(&self, key: &str, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = origins.entry_ref(key).or_default();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Idle connections held for `key` (tests).
    #[cfg(test)]
    pub fn idle(&self, key: &str) -> usize {
        let origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        origins.get(key).map_or(0, Vec::len)
    }
}

/// `/path?query` of an absolute URI (what an HTTP/1.1 request line to an origin server carries).
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(path) if path.as_str() != "/" => Uri::from(path.clone()),
        _ => Uri::from_static("/"),
    }
}

async fn connect(authority: &Authority) -> Result<Sender, String> {
    // `[::1]` in a URL is `::1` to the resolver.
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = authority.port_u16().unwrap_or(80);
    let stream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Err(_) => return Err("tcp connect error: connection timed out".into()),
        Ok(Err(error)) => return Err(format!("tcp connect error: {error}")),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|error| super::client::describe(&error))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %error, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// A response body from an upstream; a pooled connection goes back to its pool once the body ended.
pub struct Body {
    inner: Incoming,
    back: Option<Back>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("pooled", &self.back.is_some())
            .finish_non_exhaustive()
    }
}

struct Back {
    pool: Arc<Pool>,
    /// The request's URI: its authority is the pool key.
    uri: Uri,
    sender: Sender,
}

impl Body {
    /// A body that returns nothing to a pool (hyper-util's client keeps its own).
    pub fn unpooled(inner: Incoming) -> Body {
        Body { inner, back: None }
    }

    fn release(&mut self) {
        if let Some(back) = self.back.take() {
            let key = back.uri.authority().map_or("", Authority::as_str);
            back.pool.put_back(key, back.sender);
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if self.back.is_none() {
            return;
        }
        // Read to its end (or empty from the start): the connection can carry the next request. A
        // reader that stopped at the last event (an SSE stream's own end) often finds the end of the
        // body already there: one poll that never waits tells.
        let at_end = self.inner.is_end_stream() || {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            matches!(
                Pin::new(&mut self.inner).poll_frame(&mut cx),
                Poll::Ready(None)
            )
        };
        if at_end {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::service::service_fn;

    use super::*;

    /// A local HTTP/1.1 server that answers every request with its request line and `Host`, counts the
    /// connections it accepted, and (with `close_after_one`) closes each connection after one answer
    /// (`connection: close`).
    async fn server(close_after_one: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|request: Request<Incoming>| async move {
                        let host = request.headers()[header::HOST].to_str().unwrap().to_owned();
                        let line = format!("{} {} {host}", request.method(), request.uri());
                        // `/chunked`: the line in two chunks (no length: chunked encoding).
                        let body = if request.uri().path() == "/chunked" {
                            let frames = [Bytes::from(line), Bytes::from_static(b"\n")]
                                .map(|data| Ok::<_, std::convert::Infallible>(Frame::data(data)));
                            http_body_util::StreamBody::new(futures_util::stream::iter(frames))
                                .boxed()
                        } else {
                            Full::new(Bytes::from(line)).boxed()
                        };
                        Ok::<_, std::convert::Infallible>(http::Response::new(body))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!close_after_one)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn post(url: &str) -> Request<Full<Bytes>> {
        Request::post(url)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    }

    async fn text(response: http::Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn requests_go_in_origin_form_with_a_host_and_reuse_one_connection() {
        let (addr, accepted) = server(false).await;
        let pool = Arc::new(Pool::default());
        let key = addr.to_string();
        for _ in 0..3 {
            let response = pool
                .send(post(&format!("http://{addr}/v1/chat/completions?x=1")))
                .await
                .unwrap();
            assert_eq!(
                text(response).await,
                format!("POST /v1/chat/completions?x=1 {addr}")
            );
            assert_eq!(
                pool.idle(&key),
                1,
                "the connection is back once its body ended"
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_does_not_go_back() {
        let (addr, accepted) = server(false).await;
        let pool = Arc::new(Pool::default());
        let response = pool.send(post(&format!("http://{addr}/a"))).await.unwrap();
        let mut body = response.into_body();
        if body.is_end_stream() {
            panic!("the answer has a body");
        }
        let only_frame = body.frame().await;
        assert!(only_frame.is_some_and(|frame| frame.is_ok()));
        drop(body);
        // Read to its end (its one frame): this one goes back. The next request reuses it.
        assert_eq!(pool.idle(&addr.to_string()), 1);
        let unread = pool.send(post(&format!("http://{addr}/b"))).await.unwrap();
        drop(unread);
        assert_eq!(
            pool.idle(&addr.to_string()),
            0,
            "an unread body closes its connection"
        );
        let response = pool.send(post(&format!("http://{addr}/c"))).await.unwrap();
        assert!(text(response).await.starts_with("POST /c "));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A reader that stops at the last chunk it expects (an SSE stream's own end) without reading the
    /// end of the body still gives the connection back once that end has arrived.
    #[tokio::test]
    async fn a_body_whose_end_has_arrived_goes_back_unread() {
        let (addr, accepted) = server(false).await;
        let pool = Arc::new(Pool::default());
        for _ in 0..3 {
            let response = pool
                .send(post(&format!("http://{addr}/chunked")))
                .await
                .unwrap();
            let mut body = response.into_body();
            for _ in 0..2 {
                let frame = body.frame().await.unwrap().unwrap();
                assert!(frame.is_data());
            }
            // The connection task decodes the terminating chunk when it next runs.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            drop(body);
            assert_eq!(pool.idle(&addr.to_string()), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn connections_the_server_closed_are_replaced_without_an_error() {
        let (addr, accepted) = server(true).await;
        let pool = Arc::new(Pool::default());
        for i in 0..5 {
            let response = pool
                .send(post(&format!("http://{addr}/n{i}")))
                .await
                .unwrap();
            assert!(text(response).await.starts_with(&format!("POST /n{i} ")));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_refused_connection_names_its_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let pool = Arc::new(Pool::default());
        let error = pool
            .send(post(&format!("http://{addr}/x")))
            .await
            .unwrap_err();
        assert!(error.starts_with("tcp connect error:"), "{error}");
        assert!(error.to_lowercase().contains("refused"), "{error}");
    }
}
