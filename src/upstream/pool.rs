//! Kept-alive HTTP/1.1 connections to plain `http://` upstreams (vLLM, llama.cpp, Ollama and the like
//! on a private network), pooled here by origin and driven by [`super::h1`] from the request's own
//! task. A checkout is a lock and a `pop`; a connection goes back to the pool when its response body
//! has been read to the end. `https://` upstreams go through hyper-util's pooled client (TLS, HTTP/2 by
//! ALPN).
//!
//! Semantics kept from hyper-util's pool: last idle connection first; a request that a reused
//! connection could not even take (closed by the server while idle) is sent again on a new
//! connection; idle connections older than [`IDLE_TIMEOUT`] are dropped; at most [`MAX_IDLE`] idle
//! connections per origin. A body dropped before its end closes its connection (HTTP/1 cannot reuse it).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use hyper::body::{Frame, Incoming, SizeHint};

pub(crate) use super::h1::{BODY_APART_FROM, Wire};
pub use super::h1::{BodyError, CONNECT_TIMEOUT};
use super::h1::{Conn, ExchangeError, ResponseBody, SendError};

/// Idle connections older than this are not reused (hyper-util's `pool_idle_timeout` as configured).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per origin; more are closed when they come back.
pub(crate) const MAX_IDLE: usize = 1024;

/// The pool: idle connections per origin (`host:port` as written in the URL).
#[derive(Default)]
pub struct Pool {
    origins: Mutex<hashbrown::HashMap<Box<str>, Arc<Origin>>>,
}

/// The idle connections to one origin; a response body holds its origin to give its connection back.
#[derive(Default)]
struct Origin {
    /// Oldest first: taken from the back (the most recently used), expired and closed ones dropped
    /// from the front.
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Pool {
    /// Send `request` (an absolute `http://` URI) on a pooled connection or a new one.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<Bytes>,
    ) -> Result<http::Response<Body>, SendError> {
        let (parts, body) = request.into_parts();
        let mut head = Vec::new();
        crate::http1::encode_request(&parts.method, &parts.uri, &parts.headers, &body, &mut head);
        drop(body);
        let wire = Wire {
            head,
            body: Bytes::new(),
        };
        self.send_encoded(&parts.uri, wire).await
    }

    /// Send a request already encoded ([`super::h1`]) to `uri`'s origin.
    pub async fn send_encoded(
        self: &Arc<Self>,
        uri: &http::Uri,
        mut wire: Wire,
    ) -> Result<http::Response<Body>, SendError> {
        let authority = uri.authority().ok_or(SendError::NoHost)?;
        // The pool key is the authority as written (`host:port`); host and port are parsed only to dial.
        let origin = self.origin(authority.as_str());
        // A reused connection may turn out closed before it could take the request: then once more on
        // a new connection (nothing of the request reached a server that would act on it).
        for _ in 0..2 {
            let (conn, reused) = match origin.checkout() {
                Some(conn) => (conn, true),
                // Boxed: dialing is rare and its future large (the resolver's); inline, it would
                // size every request's future.
                None => (Box::pin(Conn::connect(authority)).await?, false),
            };
            match conn.exchange(&mut wire, reused).await {
                Ok(response) => {
                    return Ok(response.map(|inner| Body {
                        inner: Inner::Own(inner),
                        origin: Some(origin),
                    }));
                }
                Err(ExchangeError::Unsent(_)) if reused => {}
                Err(ExchangeError::Unsent(error) | ExchangeError::Failed(error)) => {
                    return Err(SendError::Exchange(error));
                }
            }
        }
        Err(SendError::AllClosed)
    }

    fn origin(&self, key: &str) -> Arc<Origin> {
        let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(origins.entry_ref(key).or_default())
    }

    /// Idle connections held for `key` (tests).
    #[cfg(test)]
    pub fn idle(&self, key: &str) -> usize {
        let origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        origins.get(key).map_or(0, |origin| {
            origin
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
        })
    }
}

impl Origin {
    /// The most recently returned idle connection that is still open.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(Idle { conn, since }) = idle.pop_back() {
            if conn.is_open() && since.elapsed() <= IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    /// Keep `conn` for the next request. Connections at the front that expired or that the server
    /// closed are dropped first: with no connection task watching them, a connection the server closed
    /// would otherwise hold its socket until a checkout reached it (under light load, never).
    fn put_back(&self, conn: Conn) {
        let since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while idle.front().is_some_and(|oldest| {
            since.duration_since(oldest.since) > IDLE_TIMEOUT || !oldest.conn.is_open()
        }) {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { conn, since });
        }
    }
}

/// A response body from an upstream; a pooled connection goes back to its pool once the body ended.
pub struct Body {
    inner: Inner,
    /// Where the connection goes back (`None` for hyper-util's bodies, and once it went back).
    origin: Option<Arc<Origin>>,
}

enum Inner {
    /// Read by [`super::h1`] from a pooled connection.
    Own(ResponseBody),
    /// hyper-util's client (`https://`), which keeps its own pool.
    Hyper(Incoming),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("pooled", &self.origin.is_some())
            .finish_non_exhaustive()
    }
}

impl Body {
    /// A body that returns nothing to a pool (hyper-util's client keeps its own).
    pub(crate) fn unpooled(inner: Incoming) -> Body {
        Body {
            inner: Inner::Hyper(inner),
            origin: None,
        }
    }

    /// The body is read from its socket by the task that polls it (no connection task in between).
    pub(crate) fn reads_in_place(&self) -> bool {
        matches!(self.inner, Inner::Own(_))
    }

    /// Give the connection back if the body has ended and it can carry another request.
    fn release(&mut self) {
        if let Inner::Own(own) = &mut self.inner
            && let Some(conn) = own.take_reusable()
            && let Some(origin) = self.origin.take()
        {
            origin.put_back(conn);
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.inner {
            Inner::Own(own) => {
                let polled = own.poll_data(cx);
                if own.is_done() {
                    self.release();
                }
                polled.map(|data| data.map(|data| data.map(Frame::data)))
            }
            Inner::Hyper(incoming) => Pin::new(incoming).poll_frame(cx).map(|frame| {
                frame.map(|frame| frame.map_err(|error| BodyError(crate::error::describe(&error))))
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Own(own) => own.is_done(),
            Inner::Hyper(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Own(own) => own
                .remaining()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
            Inner::Hyper(incoming) => incoming.size_hint(),
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        let Inner::Own(own) = &mut self.inner else {
            return;
        };
        if self.origin.is_none() || own.is_done() {
            return;
        }
        // A reader that stopped at the last event (an SSE stream's own end) often finds the end of the
        // body already there: a poll that never waits tells, and the connection can carry the next
        // request. Anything but the end closes the connection.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready(None) = own.poll_data(&mut cx) {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::header;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Body as _;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

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

    fn post(url: &str) -> Request<Bytes> {
        Request::post(url).body(Bytes::from_static(b"{}")).unwrap()
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
            // The terminating chunk may come in a packet of its own: let it arrive.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            drop(body);
            assert_eq!(pool.idle(&addr.to_string()), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// A body larger than the socket's buffers, written from its own buffer after the head (partial
    /// `writev`s, the head's end and the body's start in one), arrives whole and in order, request
    /// after request on one connection, and a small one behind it still arrives copied into the head.
    #[tokio::test]
    async fn a_large_body_goes_after_its_head_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = service_fn(|request: Request<Incoming>| async move {
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body)))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let pool = Arc::new(Pool::default());
        let uri: http::Uri = format!("http://{addr}/echo").parse().unwrap();
        let large: Bytes = (0..8_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for body in [large.clone(), Bytes::from_static(b"{\"small\":1}"), large] {
            let mut head = Vec::new();
            crate::http1::encode_request_line(&http::Method::POST, &uri, false, &mut head);
            let wire = if body.len() >= BODY_APART_FROM {
                crate::http1::encode_head_end(&http::Method::POST, body.len(), &mut head);
                Wire {
                    head,
                    body: body.clone(),
                }
            } else {
                crate::http1::encode_request_end(&http::Method::POST, &body, &mut head);
                Wire {
                    head,
                    body: Bytes::new(),
                }
            };
            // Bounded: a body cut short would leave the server waiting for the rest.
            let exchange = async {
                let response = pool.send_encoded(&uri, wire).await.unwrap();
                response.into_body().collect().await.unwrap().to_bytes()
            };
            let echoed = tokio::time::timeout(Duration::from_secs(60), exchange)
                .await
                .expect("the whole body arrived and came back");
            assert!(
                echoed == body,
                "{} bytes back for {}",
                echoed.len(),
                body.len()
            );
        }
        assert_eq!(pool.idle(&addr.to_string()), 1);
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
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("tcp connect error:"), "{error}");
        assert!(error.to_lowercase().contains("refused"), "{error}");
    }

    /// A server that answers each request on a connection with the next canned reply, written in the
    /// given pieces with yields between them (the test runtime has one thread: the client reads each
    /// piece before the next is written); after the last reply it closes the connection.
    async fn canned(replies: Vec<Vec<&'static [u8]>>) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            for reply in replies {
                // Each request here is a head and a two-byte body.
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") || !seen.ends_with(b"{}") {
                    let mut chunk = [0u8; 1024];
                    let n = stream.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the client closed early");
                    seen.extend_from_slice(&chunk[..n]);
                }
                for piece in reply {
                    stream.write_all(piece).await.unwrap();
                    stream.flush().await.unwrap();
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn interim_answers_split_chunks_and_close_delimited_bodies_are_read_whole() {
        let addr = canned(vec![
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n5\r\nhel",
                b"lo\r\n7;ext=1\r\n, world\r",
                b"\n0\r\n\r\n",
            ],
            vec![
                b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil",
                b" the end",
            ],
        ])
        .await;
        let pool = Arc::new(Pool::default());
        let response = pool.send(post(&format!("http://{addr}/a"))).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-up"], "1");
        assert_eq!(text(response).await, "hello, world");
        assert_eq!(
            pool.idle(&addr.to_string()),
            1,
            "a chunked body that ended goes back"
        );
        let response = pool.send(post(&format!("http://{addr}/b"))).await.unwrap();
        assert_eq!(text(response).await, "until the end");
        assert_eq!(
            pool.idle(&addr.to_string()),
            0,
            "a close-delimited body ends its connection"
        );
    }

    #[tokio::test]
    async fn a_body_cut_short_or_a_broken_head_is_an_error() {
        let addr = canned(vec![vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
        ]])
        .await;
        let pool = Arc::new(Pool::default());
        let response = pool.send(post(&format!("http://{addr}/a"))).await.unwrap();
        let error = response.into_body().collect().await.unwrap_err();
        assert_eq!(error.to_string(), "connection closed before the body ended");
        assert_eq!(pool.idle(&addr.to_string()), 0);

        let addr = canned(vec![vec![b"HTTP/1.1 200 OK\r\ncontent-le"]]).await;
        let error = pool
            .send(post(&format!("http://{addr}/a")))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(error, "connection closed before message completed");
        let addr = canned(vec![vec![b"HTTP/9 200 OK\r\n\r\n"]]).await;
        let error = pool
            .send(post(&format!("http://{addr}/a")))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("invalid HTTP response"), "{error}");
    }

    /// An idle connection the server closed is dropped when another connection goes back, not kept
    /// (with its socket) until a checkout happens to reach it.
    #[tokio::test]
    async fn idle_connections_the_server_closed_are_dropped_when_another_comes_back() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for index in 0.. {
                let (mut stream, _) = listener.accept().await.unwrap();
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    loop {
                        let mut chunk = [0u8; 1024];
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&chunk[..n]);
                        if !seen.ends_with(b"{}") {
                            continue;
                        }
                        seen.clear();
                        stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await
                            .unwrap();
                        // The first connection is closed by the server right after its answer.
                        if index == 0 {
                            drop(stream);
                            closed_tx.send(()).unwrap();
                            return;
                        }
                    }
                });
            }
        });
        let pool = Arc::new(Pool::default());
        let key = addr.to_string();
        let url = format!("http://{addr}/x");
        // Two connections: the first (closed by the server) goes back before the second.
        let first = pool.send(post(&url)).await.unwrap();
        let second = pool.send(post(&url)).await.unwrap();
        assert_eq!(text(first).await, "ok");
        assert_eq!(pool.idle(&key), 1);
        closed.recv().await.unwrap();
        // Let the runtime's I/O driver see the end of file on the closed connection.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        // The second goes back (and a third request uses it): the closed one, older, is dropped.
        assert_eq!(text(second).await, "ok");
        let third = pool.send(post(&url)).await.unwrap();
        assert_eq!(text(third).await, "ok");
        assert_eq!(pool.idle(&key), 1, "the closed connection was dropped");
    }
}
