//! Our HTTP/1.1 server side: one connection's requests read, handed to the application and answered by
//! the connection's own task. hyper's server connection (a dispatcher whose state every request walks
//! through, a body channel between it and the service, a head parsed into its own buffers) was the
//! largest piece of per-connection machinery left on the request path once the upstream side was ours
//! (`upstream::h1`); with many connections each one's state is cold by the time its next request comes.
//! The bytes are read and written here; bodies are framed by the codec both sides share (`crate::http1`).
//!
//! What a client sees is what hyper gave it: keep-alive by default for HTTP/1.1 and on request for
//! HTTP/1.0, pipelined requests answered in order, `Expect: 100-continue` honoured, bodies framed by
//! `Content-Length` or chunked coding (both at once, or a coding but chunked, refused; the chunked
//! coding read strictly, see `http1::framing`), `Content-Length` on
//! whole responses and chunked coding on streams (HTTP/1.0 clients: until close), a `Date` header, and a
//! client that leaves while its request is in flight cancels it (its upstream call is dropped). A head
//! larger than 64 KiB gets 431, a malformed one 400, one that does not complete within
//! `server.header_timeout_s` of its first byte 408, a body with no byte for `server.body_timeout_s` 408
//! — each in the OpenAI error shape, then the connection closes. A connection that waits with nothing
//! of a request received is closed by `server::idle`'s sweeper.
//!
//! The request body is read whole before the application sees it (every route reads it whole anyway),
//! bounded by `server.max_body_bytes`: a longer one by its `Content-Length` is not read; the request
//! goes on with an empty body and its declared length (the API routes answer 413 from the length), and
//! the connection closes after the answer. A chunked one is answered 413 (OpenAI error shape, the same
//! error) as soon as it passes the limit, then the connection closes. HTTP/2 by prior knowledge is
//! recognised by its preface and handed to hyper.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody as _};
use axum::response::Response;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING};
use http::{Method, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::idle::Flags;
use crate::app::{AppService, RequestScope};
use crate::error::{ErrorKind, GatewayError};
use crate::http1::HeadLines;
use crate::http1::{
    BodyReader, Framing, MAX_HEAD, READ_SIZE, ReadBody, Rejection, RequestHead, body_framing,
    content_length, keeps_alive, parse_head,
};
use crate::protocol::Protocol;

/// Bytes read ahead (pipelined requests) while a response is produced; past it the client is not
/// watched until the response is out.
const MAX_READ_AHEAD: usize = 64 * 1024;
/// A body piece up to this size is copied behind the head (or the pieces before it) so they leave in
/// one write; a larger one is written from where it is.
const COPY_LIMIT: usize = 16 * 1024;
/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How serving a connection ended.
pub enum Outcome {
    Closed,
    /// The client speaks HTTP/2: these bytes were read from it already.
    Http2(Bytes),
}

/// Serve the HTTP/1 requests of one connection until the client closes it, an error ends it, or the
/// server stops.
pub async fn serve(io: &mut TcpStream, service: &AppService, flags: &Flags) -> Outcome {
    let mut conn = ClientConn {
        io,
        buf: BytesMut::new(),
        out: Vec::new(),
    };
    let mut first = true;
    loop {
        let head = match conn.read_head(flags, service, first).await {
            Ok(Some(head)) => head,
            Ok(None) => return Outcome::Closed,
            Err(Stop::Http2) => return Outcome::Http2(conn.buf.split().freeze()),
            Err(Stop::Reject(status, message)) => {
                conn.reject(status, message).await;
                return Outcome::Closed;
            }
        };
        first = false;
        match conn.exchange(head, service, flags).await {
            Ok(true) => {}
            Ok(false) => return Outcome::Closed,
            Err(Stop::Reject(status, message)) => {
                conn.reject(status, message).await;
                return Outcome::Closed;
            }
            Err(Stop::Http2) => return Outcome::Closed,
        }
    }
}

/// Why a connection stops being served as HTTP/1.
enum Stop {
    Http2,
    /// A malformed request: answered with this status and message, then the connection closes.
    Reject(StatusCode, String),
}

fn reject(status: StatusCode, message: impl Into<String>) -> Stop {
    Stop::Reject(status, message.into())
}

impl From<Rejection> for Stop {
    fn from(rejection: Rejection) -> Stop {
        Stop::Reject(rejection.status, rejection.message)
    }
}

/// One client connection as the server reads and writes it (the upstream side has `upstream::h1::Conn`).
struct ClientConn<'a> {
    io: &'a mut TcpStream,
    /// Bytes read and not yet used: the rest of a head, a body, pipelined requests.
    buf: BytesMut,
    /// A response's bytes on their way out.
    out: Vec<u8>,
}

impl ClientConn<'_> {
    /// Read until a whole head is buffered; `None` when the client closed (or the server is stopping,
    /// or the sweeper closed an idle connection) between requests. A head not complete
    /// `server.header_timeout_s` after its first byte gets 408; the wait for a head's first byte is
    /// bounded by the sweeper (`server::idle`).
    async fn read_head(
        &mut self,
        flags: &Flags,
        service: &AppService,
        first: bool,
    ) -> Result<Option<RequestHead>, Stop> {
        let mut deadline = None;
        loop {
            if !self.buf.is_empty() {
                if first
                    && H2_PREFACE.starts_with(&self.buf[..self.buf.len().min(H2_PREFACE.len())])
                {
                    if self.buf.len() >= H2_PREFACE.len() {
                        return Err(Stop::Http2);
                    }
                } else if let Some(head) = parse_head(&mut self.buf)? {
                    return Ok(Some(head));
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(reject(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "the request head is larger than 64 KiB",
                    ));
                }
                deadline.get_or_insert_with(|| {
                    let timeout = service.header_timeout();
                    (tokio::time::Instant::now() + timeout, timeout)
                });
            } else if flags.stop.load(Ordering::Relaxed) {
                return Ok(None);
            } else if !first {
                // Nothing of the next request yet: the sweeper closes the connection after
                // `server.idle_timeout_s` (a new one: `header_timeout_s` from its accept).
                flags.idle_between_requests();
            }
            if self.buf.capacity() - self.buf.len() < READ_SIZE / 8 {
                self.buf.reserve(READ_SIZE);
            }
            let read = match deadline {
                None => self.io.read_buf(&mut self.buf).await,
                Some((deadline, timeout)) => {
                    match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                        Ok(read) => read,
                        Err(_) => {
                            return Err(reject(
                                StatusCode::REQUEST_TIMEOUT,
                                format!(
                                    "the request head did not arrive within {} s (server.header_timeout_s)",
                                    timeout.as_secs_f64()
                                ),
                            ));
                        }
                    }
                }
            };
            if !flags.busy() {
                return Ok(None);
            }
            match read {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }

    /// One request after its head: body read, application called, response written. `Ok(true)` when
    /// the connection can carry another request.
    async fn exchange(
        &mut self,
        head: RequestHead,
        service: &AppService,
        flags: &Flags,
    ) -> Result<bool, Stop> {
        let mut keep_alive = keeps_alive(head.version, &head.headers);
        let framing = body_framing(head.version, &head.headers)?;
        let scope = service.scope();
        let body = match self.read_body(framing, &head, &scope).await? {
            Some(ReadBody::Whole(bytes)) if bytes.is_empty() => Body::empty(),
            Some(ReadBody::Whole(bytes)) => Body::from(bytes),
            Some(ReadBody::TooLarge) => {
                keep_alive = false;
                Body::empty()
            }
            None => return Ok(false),
        };
        if self.buf.is_empty() {
            // Nothing of a next request yet: let go of the read buffer, which the request's head and
            // body still share, so it is freed with them — a stream that runs for minutes holds no
            // read buffer of 8 KiB meanwhile.
            self.buf = BytesMut::new();
        }
        let is_head = head.method == Method::HEAD;
        let version = head.version;
        let mut request = http::Request::new(body);
        *request.method_mut() = head.method;
        *request.uri_mut() = head.uri;
        *request.version_mut() = head.version;
        *request.headers_mut() = head.headers;
        let mut future = std::pin::pin!(service.serve_in(scope, request));
        let Some(response) = self
            .unless_client_leaves(|cx| future.as_mut().poll(cx))
            .await
        else {
            return Ok(false);
        };
        let Ok(response) = response;
        keep_alive &= !flags.stop.load(Ordering::Relaxed);
        Ok(self
            .write_response(response, Some(service), is_head, version, keep_alive)
            .await)
    }

    /// The body of the request whose head was just read; `None` when the client left before it ended.
    /// A body that stops arriving — no byte of it for `server.body_timeout_s` — gets 408.
    async fn read_body(
        &mut self,
        framing: Framing,
        head: &RequestHead,
        scope: &RequestScope,
    ) -> Result<Option<ReadBody>, Stop> {
        // Looked up only when a body needs more than the head's read.
        let mut timeout = None;
        let started = !self.buf.is_empty();
        let mut body = BodyReader::new(framing, scope.max_body_bytes());
        if let Some(read) = body.step(&mut self.buf)? {
            return Ok(Some(read));
        }
        if !started
            && head.version == Version::HTTP_11
            && head
                .headers
                .get(EXPECT)
                .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"))
            && self
                .io
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return Ok(None);
        }
        loop {
            if let Framing::Length(length) = framing {
                // Checked against `limit` by `step`, so it fits in memory: room for all of it.
                let length = usize::try_from(length).unwrap_or(usize::MAX);
                self.buf.reserve(length.saturating_sub(self.buf.len()));
            } else if self.buf.capacity() - self.buf.len() < READ_SIZE / 8 {
                self.buf.reserve(READ_SIZE);
            }
            let timeout = *timeout.get_or_insert_with(|| scope.body_timeout());
            if !self.read_body_bytes(timeout).await? {
                return Ok(None);
            }
            if let Some(read) = body.step(&mut self.buf)? {
                return Ok(Some(read));
            }
        }
    }

    /// Read more of a request body, waiting at most `timeout`; `false` when the client closed the
    /// connection (or it failed).
    async fn read_body_bytes(&mut self, timeout: Duration) -> Result<bool, Stop> {
        match tokio::time::timeout(timeout, self.io.read_buf(&mut self.buf)).await {
            Ok(Ok(0) | Err(_)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Err(_) => Err(reject(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body stopped arriving: nothing of it came for {} s (server.body_timeout_s)",
                    timeout.as_secs_f64()
                ),
            )),
        }
    }

    /// Poll `poll` to its end while watching the client: `None` when it closed the connection (or the
    /// connection failed) first. Bytes it sends meanwhile (a pipelined request) are kept.
    async fn unless_client_leaves<T>(
        &mut self,
        mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Option<T> {
        let ClientConn { io, buf, .. } = self;
        poll_fn(|cx| {
            if let Poll::Ready(value) = poll(cx) {
                return Poll::Ready(Some(value));
            }
            client_left(io, buf, cx)
        })
        .await
    }

    /// Write `response`, with the header lines `lines` writes from its extensions; `true` when the
    /// connection can carry another request.
    async fn write_response(
        &mut self,
        response: Response,
        lines: Option<&impl HeadLines>,
        is_head: bool,
        version: Version,
        keep_alive: bool,
    ) -> bool {
        let (parts, body) = response.into_parts();
        let wire = WireFraming::of(&parts, &body, is_head, version, keep_alive);
        self.out.clear();
        write_head(&mut self.out, &parts, lines, &wire);
        if wire.bodiless {
            return self.io.write_all(&self.out).await.is_ok() && wire.keep_alive;
        }
        self.write_body(body, &wire).await
    }

    /// Send `body` behind the head gathered in `out`, piece by piece as it is produced (in chunked
    /// coding when `wire` says so), while watching the client; `true` when the connection can carry
    /// another request.
    async fn write_body(&mut self, mut body: Body, wire: &WireFraming) -> bool {
        let mut written = 0u64;
        loop {
            let ClientConn { io, buf, out } = self;
            let next = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(frame) => Poll::Ready(Some(Next::Frame(frame))),
                // Nothing ready: what is gathered goes out before waiting for more.
                Poll::Pending if !out.is_empty() => Poll::Ready(Some(Next::Flush)),
                Poll::Pending => client_left(io, buf, cx),
            })
            .await;
            match next {
                None => return false,
                Some(Next::Flush) => {
                    if self.flush().await.is_err() {
                        return false;
                    }
                }
                Some(Next::Frame(Some(Ok(frame)))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers: not sent
                    };
                    if data.is_empty() {
                        continue;
                    }
                    written += data.len() as u64;
                    if !self.write_data(data, wire.chunked).await {
                        return false;
                    }
                }
                Some(Next::Frame(Some(Err(error)))) => {
                    // The body broke (an upstream failed mid-stream): what was sent stays without its
                    // end, so the client sees the answer cut short rather than complete.
                    tracing::debug!(error = %error, "response body failed; closing the connection");
                    let _ = self.flush().await;
                    return false;
                }
                Some(Next::Frame(None)) => {
                    if wire.chunked {
                        self.out.extend_from_slice(b"0\r\n\r\n");
                    }
                    if self.flush().await.is_err() {
                        return false;
                    }
                    // A body that did not match its declared length leaves the framing unknown.
                    return wire.keep_alive
                        && wire.declared.is_none_or(|declared| declared == written);
                }
            }
        }
    }

    /// One piece of a response body: gathered behind what is waiting in `out` when small, written from
    /// where it is when large; `false` when the connection failed.
    async fn write_data(&mut self, data: Bytes, chunked: bool) -> bool {
        if chunked {
            write_chunk_size(&mut self.out, data.len());
        }
        if data.len() <= COPY_LIMIT {
            self.out.extend_from_slice(&data);
        } else if self.flush().await.is_err() || self.io.write_all(&data).await.is_err() {
            return false;
        }
        if chunked {
            self.out.extend_from_slice(b"\r\n");
        }
        !(self.out.len() >= MAX_READ_AHEAD && self.flush().await.is_err())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = self.io.write_all(&self.out).await;
        self.out.clear();
        result
    }

    /// Answer a malformed request (OpenAI error shape) and give up the connection.
    async fn reject(&mut self, status: StatusCode, message: String) {
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorKind::PayloadTooLarge
        } else {
            ErrorKind::InvalidRequest
        };
        let mut response =
            crate::http::error_body::response(Protocol::OpenAi, &GatewayError::new(kind, message));
        *response.status_mut() = status;
        let _ = self
            .write_response(
                response,
                None::<&AppService>,
                false,
                Version::HTTP_11,
                false,
            )
            .await;
        let _ = self.io.shutdown().await;
    }
}

enum Next<F> {
    Frame(F),
    Flush,
}

/// Read ahead from the client while waiting for something else: `Ready(None)` when it closed the
/// connection or the connection failed, else `Pending` (the read side registered for a wake-up).
/// A short read leaves tokio's readiness cleared, so this costs no system call after a request.
fn client_left<T>(io: &mut TcpStream, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<Option<T>> {
    loop {
        if buf.len() >= MAX_READ_AHEAD {
            return Poll::Pending;
        }
        if buf.capacity() == buf.len() {
            // Room for a pipelined request's start or the end of the connection; more as it comes.
            buf.reserve(1024);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
            Poll::Ready(Ok(_)) => {}
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// How a response is framed on the wire, decided from its status, headers and body before its head
/// is written.
struct WireFraming {
    /// No body goes out: a HEAD request's answer, 1xx, 204, 304.
    bodiless: bool,
    /// The `Content-Length` the application set.
    declared: Option<u64>,
    /// The body's length, declared or known from the body itself.
    length: Option<u64>,
    /// The body goes in chunked coding (no length known, an HTTP/1.1 client).
    chunked: bool,
    /// The connection may carry another request after this response.
    keep_alive: bool,
    /// The answer to a HEAD request.
    is_head: bool,
    /// The client's HTTP version.
    version: Version,
}

impl WireFraming {
    fn of(
        parts: &http::response::Parts,
        body: &Body,
        is_head: bool,
        version: Version,
        mut keep_alive: bool,
    ) -> WireFraming {
        let status = parts.status;
        let bodiless = is_head
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let declared = content_length(&parts.headers).ok().flatten();
        let length = declared.or_else(|| body.size_hint().exact());
        let chunked = !bodiless && length.is_none() && version == Version::HTTP_11;
        if !bodiless && length.is_none() && !chunked {
            // An HTTP/1.0 client without a length: the body ends when the connection does.
            keep_alive = false;
        }
        WireFraming {
            bodiless,
            declared,
            length,
            chunked,
            keep_alive,
            is_head,
            version,
        }
    }
}

/// A response's head into `out`: status line, the application's header fields but the framing ones,
/// the lines `lines` writes from its extensions, then the framing fields `wire` calls for, `Date`
/// unless the application set one, and `Connection` when it differs from the version's default.
fn write_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    lines: Option<&impl HeadLines>,
    wire: &WireFraming,
) {
    let status = parts.status;
    write_status_line(out, status);
    for (name, value) in &parts.headers {
        if name == CONNECTION || name == TRANSFER_ENCODING || name == CONTENT_LENGTH {
            continue;
        }
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(lines) = lines {
        lines.write_head_lines(&parts.extensions, out);
    }
    if let Some(length) = wire.length
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
        && !status.is_informational()
        && (!wire.is_head || wire.declared.is_some())
    {
        write_field(
            out,
            b"content-length",
            itoa::Buffer::new().format(length).as_bytes(),
        );
    }
    if wire.chunked {
        write_field(out, b"transfer-encoding", b"chunked");
    }
    if !parts.headers.contains_key(DATE) {
        write_date(out);
    }
    if !wire.keep_alive {
        write_field(out, b"connection", b"close");
    } else if wire.version == Version::HTTP_10 {
        write_field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

fn write_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn write_chunk_size(out: &mut Vec<u8>, size: usize) {
    use std::io::Write as _;
    let _ = write!(out, "{size:x}\r\n");
}

/// `date: <IMF-fixdate>`, formatted once a second per thread.
fn write_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != second || text.is_empty() {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        write_field(out, b"date", text.as_bytes());
    });
}

/// The connection handed to hyper for HTTP/2, with the bytes already read from it first.
pub(crate) struct Rewind {
    pub read: Bytes,
    pub io: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let take = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..take]);
            self.read.advance(take);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
