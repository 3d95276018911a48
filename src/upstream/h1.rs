//! Our HTTP/1.1 client connection for plain `http://` upstreams: the request is written and its
//! response read by the request's own task, on a connection taken from [`super::pool`]. No connection
//! task, no channels between tasks: hyper's client connection cost a task switch each way per request and
//! a per-connection dispatcher whose state every request walked through (bench/profile.sh: ≈ 11.7k
//! instructions per request; with 256 connections that state no longer fits in L2).
//!
//! The bytes are read and written here; the head is parsed and the body framed by the codec both sides
//! share (`crate::http1`). A connection is reusable only when its body ended cleanly, the server did not
//! ask to close, and nothing was left over in the buffer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http1::{
    Framing, FramingError, READ_SIZE, ResponseHead, ResponseHeadError, advance, final_head,
    take_data,
};

/// Bound on opening one TCP connection.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One open connection to an upstream, with the bytes read from it and not yet used.
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

/// Why an exchange produced no response head.
#[derive(Debug)]
pub enum ExchangeError {
    /// The request could not be written to a connection that had served before: the server closed
    /// it while it was idle, so it cannot have acted on this request. It may go again on a new one.
    Unsent(String),
    Failed(String),
}

/// Why a request got no response head from its upstream, other than time; the text never names the
/// URL (it may carry credentials).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the upstream URL has no host")]
    NoHost,
    #[error("tcp connect error: connection timed out")]
    ConnectTimeout,
    #[error("tcp connect error: {0}")]
    Connect(std::io::Error),
    /// The exchange on a connection failed (`upstream::h1`'s account of it).
    #[error("{0}")]
    Exchange(String),
    #[error("the upstream closed every pooled connection before the request was sent")]
    AllClosed,
    /// hyper-util's client (`https://`), described with its causes.
    #[error("{0}")]
    Client(String),
}

impl Conn {
    /// Open a TCP connection to `authority` (`[::1]` in a URL is `::1` to the resolver; port 80 when
    /// the URL names none), bounded by [`CONNECT_TIMEOUT`].
    pub async fn connect(authority: &Authority) -> Result<Conn, SendError> {
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = authority.port_u16().unwrap_or(80);
        let io = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await
        {
            Err(_) => return Err(SendError::ConnectTimeout),
            Ok(Err(error)) => return Err(SendError::Connect(error)),
            Ok(Ok(io)) => io,
        };
        let _ = io.set_nodelay(true);
        Ok(Conn {
            io,
            buf: BytesMut::new(),
        })
    }

    /// An idle connection can carry a request: nothing arrived on it since its last response (a
    /// server that closed it sent an end of file; anything else would be a protocol error). Costs no
    /// system call unless the socket was reported readable.
    pub(crate) fn is_open(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Write `request` and read the response head; the body is then read from the returned
    /// [`ResponseBody`]. `reused`: the connection served an earlier request.
    /// Once written, `request` is freed (emptied): its memory goes back to the allocator while still in
    /// the CPU's caches, not after the upstream's answer. A request that could not be written is kept
    /// for another connection.
    pub async fn exchange(
        mut self,
        request: &mut Wire,
        reused: bool,
    ) -> Result<http::Response<ResponseBody>, ExchangeError> {
        if let Err(error) = write_all(&mut self.io, &request.head, &request.body).await {
            let detail = format!("error writing the request: {error}");
            return Err(if reused {
                ExchangeError::Unsent(detail)
            } else {
                ExchangeError::Failed(detail)
            });
        }
        *request = Wire::default();
        loop {
            let head = final_head(&mut self.buf).map_err(|error| failed(&error))?;
            if let Some(head) = head {
                return into_response(head, self).map_err(|error| failed(&error));
            }
            self.buf.reserve(READ_SIZE);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return Err(failed(&ResponseHeadError::Unfinished)),
                Ok(_) => {}
                Err(error) => {
                    return Err(ExchangeError::Failed(format!(
                        "error reading the response: {error}"
                    )));
                }
            }
        }
    }
}

/// A request as it goes on a connection: its encoded head — with a small body copied in behind it —
/// and a large body, written from its own buffer after the head (one `writev`) instead of being
/// copied: a coding agent's turn is hundreds of KB.
#[derive(Default)]
pub struct Wire {
    pub head: Vec<u8>,
    pub body: Bytes,
}

/// Bodies from this size go in [`Wire::body`]; smaller ones are copied behind the head (one buffer,
/// one `write`).
pub(crate) const BODY_APART_FROM: usize = 16 * 1024;

/// Write `head`, then `body`, gathering both into each `writev` while any of `head` is left.
async fn write_all(io: &mut TcpStream, mut head: &[u8], mut body: &[u8]) -> std::io::Result<()> {
    if body.is_empty() {
        return io.write_all(head).await;
    }
    while !head.is_empty() || !body.is_empty() {
        let slices = [std::io::IoSlice::new(head), std::io::IoSlice::new(body)];
        let written = io.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_head = written.min(head.len());
        head = &head[from_head..];
        body = body.get(written - from_head..).unwrap_or_default();
    }
    Ok(())
}

/// No response head: the exchange failed (the request was sent, so it does not go again).
fn failed(error: &ResponseHeadError) -> ExchangeError {
    ExchangeError::Failed(error.to_string())
}

/// The response of `head`, its body read from `conn` as it is polled.
fn into_response(
    head: ResponseHead,
    conn: Conn,
) -> Result<http::Response<ResponseBody>, ResponseHeadError> {
    let (response, framing, reusable) = head.into_parts()?;
    let mut body = ResponseBody {
        conn: Some(conn),
        framing,
        reusable,
    };
    body.settle();
    Ok(response.map(|()| body))
}

/// The error of a response body.
#[derive(Debug, Clone)]
pub struct BodyError(pub String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

/// The body of a response, read from its connection as it is polled.
pub struct ResponseBody {
    /// `None` once the body ended or failed (the connection was taken back or closed).
    conn: Option<Conn>,
    framing: Framing,
    reusable: bool,
}

impl ResponseBody {
    /// All of the body has been read.
    pub(crate) fn is_done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// Bytes still to come when the length is known.
    pub fn remaining(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(left) => Some(left),
            Framing::Done => Some(0),
            _ => None,
        }
    }

    /// The connection, once the body ended cleanly and it can carry another request.
    pub(crate) fn take_reusable(&mut self) -> Option<Conn> {
        if self.framing == Framing::Done && self.reusable {
            self.reusable = false;
            return self.conn.take().filter(|conn| conn.buf.is_empty());
        }
        None
    }

    /// The next piece of the body: `None` at its end.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match take_data(&mut self.framing, &mut conn.buf) {
                Err(error) => return Poll::Ready(Some(Err(self.fail(error.to_string())))),
                Ok(Some(data)) => {
                    self.settle();
                    return Poll::Ready(Some(Ok(data)));
                }
                Ok(None) if self.framing == Framing::Done => return Poll::Ready(None),
                Ok(None) => {}
            }
            if conn.buf.is_empty() {
                // Everything read so far was handed on: a small fresh buffer for what comes next (a
                // stream's events arrive one by one, often seconds apart), so a long stream does not
                // hold the 8 KiB one the head was read into; it is freed with the pieces handed on.
                conn.buf = BytesMut::with_capacity(READ_SIZE / 4);
            } else if conn.buf.capacity() - conn.buf.len() < READ_SIZE / 4 {
                conn.buf.reserve(READ_SIZE);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if self.framing == Framing::UntilClose {
                        self.framing = Framing::Done;
                        self.reusable = false;
                        return Poll::Ready(None);
                    }
                    let error = FramingError::Truncated.to_string();
                    return Poll::Ready(Some(Err(self.fail(error))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => {
                    let error = format!("error reading a body from connection: {error}");
                    return Poll::Ready(Some(Err(self.fail(error))));
                }
            }
        }
    }

    /// Go past framing that is already in the buffer (a chunk's CRLF, the next size line, the last
    /// chunk and trailers), so the end of the body is known as soon as its bytes are here. A malformed
    /// piece is left for the next poll to report.
    fn settle(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            let _ = advance(&mut self.framing, &mut conn.buf);
        }
    }

    fn fail(&mut self, error: String) -> BodyError {
        self.conn = None;
        self.reusable = false;
        self.framing = Framing::Done;
        BodyError(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream waiting for its next event holds a small read buffer, not the 8 KiB one its head was
    /// read into (9,800 slow streams: 223 → 175 MB of RSS in bench/run.sh's slow-streams run).
    #[tokio::test]
    async fn a_stream_waiting_for_more_holds_a_small_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                         transfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n";
            stream
                .write_all(head)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            // The connection stays open, the next event not sent, until the test ends.
            let _ = done.await;
        });
        let authority: Authority = addr.to_string().parse().unwrap_or_else(|e| panic!("{e}"));
        let conn = Conn::connect(&authority)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut request = Wire {
            head: b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
            body: Bytes::new(),
        };
        let response = conn
            .exchange(&mut request, false)
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        // The request's bytes were freed once written, not held until the answer.
        assert_eq!(request.head.capacity(), 0);
        let mut body = response.into_body();
        let first = std::future::poll_fn(|cx| body.poll_data(cx)).await;
        assert!(matches!(first, Some(Ok(data)) if data == "data: 1\n\n"));
        let waiting = std::future::poll_fn(|cx| Poll::Ready(body.poll_data(cx).is_pending())).await;
        assert!(waiting, "no more data was sent");
        let held = body.conn.as_ref().map(|conn| conn.buf.capacity());
        assert!(
            held.is_some_and(|capacity| capacity <= READ_SIZE / 4),
            "read buffer while waiting: {held:?} bytes"
        );
        let _ = done_tx.send(());
    }
}
