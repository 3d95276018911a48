//! Our HTTP/1.1 client side for plain `http://` upstreams: the request is written and its response read
//! by the request's own task, on a connection taken from [`super::pool`]. No connection task, no
//! channels between tasks: hyper's client connection cost a task switch each way per request and a
//! per-connection dispatcher whose state every request walked through (bench/profile.sh: ≈ 11.7k
//! instructions per request; with 256 connections that state no longer fits in L2).
//!
//! httparse reads the response head; the body is framed as RFC 9112 §6.3 says: no body for 1xx, 204
//! and 304, chunked transfer coding, `Content-Length`, or else until the server closes. A connection is
//! reusable only when its body ended cleanly, the server did not ask to close, and nothing was left
//! over in the buffer.
//!
//! The chunked coding is read strictly (shared with the server side, `server::h1`): RFC 9112 §7.1's
//! grammar with CRLF wherever it says CRLF — a bare LF, an empty chunk-size line, a control character
//! in a chunk extension, a size past 64 bits or a malformed trailer field is an error, never a guess
//! at where the body ends (the guess is what request smuggling and response mixing live on).

use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on opening one TCP connection.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Room made in the read buffer before each read.
pub(crate) const READ_SIZE: usize = 8 * 1024;
/// Bound on a response head (and, on the server side, a request head).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Bound on one chunk-size line, extensions included (they carry nothing we use).
const MAX_CHUNK_LINE: usize = 16 * 1024;
/// Bound on a chunked body's trailer section (hyper's; it fits in a `u16`): its fields are read and
/// dropped, at most [`MAX_HEADERS`] of them.
const MAX_TRAILERS: usize = 16 * 1024;
/// Bound on the number of header fields in a response head (hyper's default).
pub(crate) const MAX_HEADERS: usize = 100;

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

impl Conn {
    /// Open a TCP connection to `authority` (`[::1]` in a URL is `::1` to the resolver; port 80 when
    /// the URL names none), bounded by [`CONNECT_TIMEOUT`].
    pub async fn connect(authority: &Authority) -> Result<Conn, String> {
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = authority.port_u16().unwrap_or(80);
        let io = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await
        {
            Err(_) => return Err("tcp connect error: connection timed out".into()),
            Ok(Err(error)) => return Err(format!("tcp connect error: {error}")),
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
    pub fn is_open(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Write `request` (a whole encoded request) and read the response head; the body is then read
    /// from the returned [`ResponseBody`]. `reused`: the connection served an earlier request.
    /// Once written, `request` is freed (emptied): its memory goes back to the allocator while still in
    /// the CPU's caches, not after the upstream's answer. A request that could not be written is kept
    /// for another connection.
    pub async fn exchange(
        mut self,
        request: &mut Vec<u8>,
        reused: bool,
    ) -> Result<http::Response<ResponseBody>, ExchangeError> {
        if let Err(error) = self.io.write_all(request).await {
            let detail = format!("error writing the request: {error}");
            return Err(if reused {
                ExchangeError::Unsent(detail)
            } else {
                ExchangeError::Failed(detail)
            });
        }
        *request = Vec::new();
        loop {
            if let Some(head) = final_head(&mut self.buf).map_err(ExchangeError::Failed)? {
                return head.into_response(self).map_err(ExchangeError::Failed);
            }
            self.buf.reserve(READ_SIZE);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => {
                    return Err(ExchangeError::Failed(
                        "connection closed before message completed".into(),
                    ));
                }
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

/// The final response head at the start of `buf`, taken out of `buf` with the interim (1xx) ones
/// before it; `None` while incomplete.
fn final_head(buf: &mut BytesMut) -> Result<Option<Head>, String> {
    loop {
        match parse_head(buf)? {
            Some(head) => match head.status.as_u16() {
                101 => {
                    return Err(
                        "the upstream switched protocols (101), which was not asked for".into(),
                    );
                }
                // Interim answers (100 Continue, 103 Early Hints): the final one follows.
                100..=199 => {}
                _ => return Ok(Some(head)),
            },
            None if buf.len() > MAX_HEAD => {
                return Err("invalid HTTP response: the head is larger than 64 KiB".into());
            }
            None => return Ok(None),
        }
    }
}

/// Where an upstream request's headers are written: `prefix` then `value` (`Bearer ` and a key), marked
/// sensitive when it carries a credential (hyper's HTTP/2 encoder never indexes those). A value that is
/// not valid in a header ([`header_safe`]) is left out.
pub trait HeaderSink {
    fn put(&mut self, name: HeaderName, prefix: &'static str, value: &[u8], sensitive: bool);
}

/// Bytes `HeaderValue` accepts: visible ASCII, space, tab and obs-text; no control characters.
pub fn header_safe(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&byte| byte == b'\t' || (byte >= 0x20 && byte != 0x7f))
}

/// Headers written straight into an HTTP/1.1 request being encoded.
pub struct WireHeaders<'a> {
    pub out: &'a mut Vec<u8>,
}

impl HeaderSink for WireHeaders<'_> {
    fn put(&mut self, name: HeaderName, prefix: &'static str, value: &[u8], _sensitive: bool) {
        if header_safe(value) {
            write_field(self.out, &name, prefix, value);
        }
    }
}

/// One header line; the framing headers are the encoder's own (`Content-Length` from the body).
fn write_field(out: &mut Vec<u8>, name: &HeaderName, prefix: &str, value: &[u8]) {
    if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
        return;
    }
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

impl HeaderSink for HeaderMap {
    fn put(&mut self, name: HeaderName, prefix: &'static str, value: &[u8], sensitive: bool) {
        let value = if prefix.is_empty() {
            HeaderValue::from_bytes(value)
        } else {
            HeaderValue::from_bytes(&[prefix.as_bytes(), value].concat())
        };
        if let Ok(mut value) = value {
            value.set_sensitive(sensitive);
            self.insert(name, value);
        }
    }
}

/// The request line and `Host` of a request to `uri` (origin form; the default port left out of
/// `Host`), unless `has_host`: then only the request line.
pub fn encode_request_line(method: &Method, uri: &http::Uri, has_host: bool, out: &mut Vec<u8>) {
    let path = uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let path = if path.is_empty() { "/" } else { path };
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !has_host && let Some(authority) = uri.authority() {
        let host = authority.as_str();
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.strip_suffix(":80").unwrap_or(host).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The end of a request's head (`Content-Length`, left out only for a bodiless GET or HEAD) and its body.
pub fn encode_request_end(method: &Method, body: &[u8], out: &mut Vec<u8>) {
    if !body.is_empty() || !matches!(*method, Method::GET | Method::HEAD) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Encode a request with a complete body into `out`: request line in origin form, `Host` from
/// `authority` unless `headers` has one, the headers as given (names are lowercase in `http`), and
/// `Content-Length` (left out only for a bodiless GET or HEAD).
pub fn encode_request(
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    out: &mut Vec<u8>,
) {
    out.reserve(128 + 48 * headers.len() + body.len());
    encode_request_line(method, uri, headers.contains_key(http::header::HOST), out);
    for (name, value) in headers {
        write_field(out, name, "", value.as_bytes());
    }
    encode_request_end(method, body, out);
}

/// A parsed response head: status, version and the header fields, their values slices of `head`.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    version: Version,
    head: Bytes,
    fields: Vec<(HeaderName, Range<usize>)>,
}

/// Parse a response head at the start of `buf` and take it out of `buf`; `None` while incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, String> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut storage);
    let length = match response.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("invalid HTTP response: {error}")),
    };
    if length > MAX_HEAD {
        return Err("invalid HTTP response: the head is larger than 64 KiB".into());
    }
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or("invalid HTTP response: invalid status code")?;
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let fields = field_ranges(response.headers, buf)
        .map_err(|name| format!("invalid HTTP response: invalid header name {name:?}"))?;
    Ok(Some(Head {
        status,
        version,
        head: buf.split_to(length).freeze(),
        fields,
    }))
}

/// The fields of a head parsed from `head`: each name, and where its value sits in `head` (so the value
/// can be a slice of the head's bytes once they are frozen). `Err` carries a name that is not valid.
pub(crate) fn field_ranges<'a>(
    fields: &[httparse::Header<'a>],
    head: &[u8],
) -> Result<Vec<(HeaderName, Range<usize>)>, &'a str> {
    let base = head.as_ptr() as usize;
    let mut ranges = Vec::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| field.name)?;
        let start = field.value.as_ptr() as usize - base;
        ranges.push((name, start..start + field.value.len()));
    }
    Ok(ranges)
}

impl Head {
    fn into_response(self, conn: Conn) -> Result<http::Response<ResponseBody>, String> {
        let (response, framing, reusable) = self.into_parts()?;
        let mut body = ResponseBody {
            conn: Some(conn),
            framing,
            reusable,
        };
        body.settle();
        Ok(response.map(|()| body))
    }

    /// The response without its body, how the body is delimited, and whether the connection may carry
    /// another request after it. `Err` when the framing cannot be trusted: then there is no response
    /// (before its first byte, another upstream may still be tried).
    fn into_parts(self) -> Result<(http::Response<()>, Framing, bool), String> {
        let mut headers = HeaderMap::with_capacity(self.fields.len());
        for (name, range) in self.fields {
            // httparse admits obs-text that `HeaderValue` refuses: such a field is left out.
            if let Ok(value) = HeaderValue::from_maybe_shared(self.head.slice(range)) {
                headers.append(name, value);
            }
        }
        let (framing, reusable) = framing(self.status, self.version, &headers)?;
        let mut response = http::Response::new(());
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = headers;
        Ok((response, framing, reusable))
    }
}

/// How the body is delimited, and whether the connection may carry another request after it; `Err`
/// when the head's framing cannot be trusted.
fn framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> Result<(Framing, bool), String> {
    let mut reusable = keeps_alive(version, headers);
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), reusable));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            return Err("invalid HTTP response: transfer-encoding in an HTTP/1.0 response".into());
        }
        let chunked = is_chunked(headers);
        // With both codings named, transfer coding wins and the connection is not trusted again.
        reusable &= !headers.contains_key(CONTENT_LENGTH);
        return Ok(if chunked {
            (Framing::Chunked(Chunk::Size), reusable)
        } else {
            (Framing::UntilClose, false)
        });
    }
    match content_length(headers) {
        Err(()) => Err("invalid HTTP response: invalid or conflicting content-length".into()),
        Ok(Some(length)) => Ok((Framing::Length(length), reusable)),
        Ok(None) => Ok((Framing::UntilClose, false)),
    }
}

/// Whether the connection persists after a message (RFC 9112 §9.3): not when it says `close`;
/// HTTP/1.1 by default, HTTP/1.0 only when it says `keep-alive`.
pub(crate) fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    !has_token(headers, CONNECTION, "close")
        && (version != Version::HTTP_10 || has_token(headers, CONNECTION, "keep-alive"))
}

/// The `Content-Length` of a head: `Err` when a value is not digits only (`u64::from_str` would also
/// take a sign) or two values disagree.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let parsed = std::str::from_utf8(value.as_bytes())
            .ok()
            .map(str::trim)
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse::<u64>().ok());
        match (length, parsed) {
            (_, None) => return Err(()),
            (Some(seen), Some(this)) if seen != this => return Err(()),
            _ => length = parsed,
        }
    }
    Ok(length)
}

/// The last transfer coding named is `chunked`.
pub(crate) fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

pub(crate) fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',')
                .any(|item| item.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// How a message body is delimited, as it is read (shared with the server side, `server::h1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// No length: the body ends when the server closes the connection.
    UntilClose,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data are still to come.
    Data(u64),
    /// The CRLF after a chunk's data is next.
    DataEnd,
    /// The last chunk was read: trailer field lines, then an empty line. So many bytes and fields of
    /// them were read (and dropped) so far.
    Trailers { bytes: u16, fields: u8 },
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
    pub fn is_done(&self) -> bool {
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
    pub fn take_reusable(&mut self) -> Option<Conn> {
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
                Err(error) => return Poll::Ready(Some(Err(self.fail(error)))),
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
                    let error = "connection closed before the body ended".to_owned();
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

/// Consume framing that carries no data while the buffer holds it; stops at data or missing bytes.
fn advance(framing: &mut Framing, buf: &mut BytesMut) -> Result<(), String> {
    loop {
        match *framing {
            Framing::Length(0) | Framing::Chunked(Chunk::Data(0)) => {
                *framing = match *framing {
                    Framing::Length(_) => Framing::Done,
                    _ => Framing::Chunked(Chunk::DataEnd),
                };
            }
            Framing::Chunked(Chunk::DataEnd) => match buf.get(..2) {
                Some(b"\r\n") => {
                    buf.advance(2);
                    *framing = Framing::Chunked(Chunk::Size);
                }
                None if buf.first().is_none_or(|&byte| byte == b'\r') => return Ok(()),
                _ => {
                    return Err("invalid chunked body: chunk data is not followed by CRLF".into());
                }
            },
            Framing::Chunked(Chunk::Size) => match chunk_size_line(buf)? {
                Some((used, size)) => {
                    buf.advance(used);
                    *framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers {
                            bytes: 0,
                            fields: 0,
                        }
                    } else {
                        Chunk::Data(size)
                    });
                }
                None => return Ok(()),
            },
            Framing::Chunked(Chunk::Trailers { bytes, fields }) => {
                match trailer_line(buf, bytes)? {
                    Some(0) => {
                        buf.advance(2);
                        *framing = Framing::Done;
                    }
                    Some(_) if usize::from(fields) >= MAX_HEADERS => {
                        return Err(format!(
                            "invalid chunked body: more than {MAX_HEADERS} trailer fields"
                        ));
                    }
                    Some(used) => {
                        buf.advance(used);
                        // `trailer_line` bounds `bytes + used` by MAX_TRAILERS (16 KiB), and fields
                        // are at most MAX_HEADERS (100).
                        *framing = Framing::Chunked(Chunk::Trailers {
                            bytes: bytes + used as u16,
                            fields: fields + 1,
                        });
                    }
                    None => return Ok(()),
                }
            }
            Framing::Length(_)
            | Framing::Chunked(Chunk::Data(_))
            | Framing::UntilClose
            | Framing::Done => return Ok(()),
        }
    }
}

/// A chunk-size line at the start of `buf` (RFC 9112 §7.1: `1*HEXDIG [ BWS ";" chunk-ext ] CRLF`; like
/// hyper, whitespace after the size is taken without an extension too): its length and the size;
/// `None` while incomplete. Checked as far as it has arrived, so a bad line fails before its end.
fn chunk_size_line(buf: &[u8]) -> Result<Option<(usize, u64)>, String> {
    let line = &buf[..buf.len().min(MAX_CHUNK_LINE)];
    let mut size = 0u64;
    let mut at = 0;
    while let Some(&byte) = line.get(at) {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => break,
        };
        if size >> 60 != 0 {
            return Err("invalid chunked body: invalid chunk size: larger than 64 bits".into());
        }
        size = size << 4 | u64::from(digit);
        at += 1;
    }
    // The usual line: the size, then CRLF.
    if at > 0 && line.get(at..at + 2) == Some(b"\r\n") {
        return Ok(Some((at + 2, size)));
    }
    chunk_size_line_rest(buf, line, at, size)
}

/// [`chunk_size_line`] from `at`, after the size's digits, when CRLF does not follow them at once.
#[cold]
fn chunk_size_line_rest(
    buf: &[u8],
    line: &[u8],
    mut at: usize,
    size: u64,
) -> Result<Option<(usize, u64)>, String> {
    if let Some(&byte) = line.get(at)
        && at == 0
    {
        return Err(format!(
            "invalid chunked body: invalid chunk size line: expected a hex digit, found {}",
            shown(byte)
        ));
    }
    while line
        .get(at)
        .is_some_and(|&byte| byte == b' ' || byte == b'\t')
    {
        at += 1;
    }
    let mut extension = false;
    while let Some(&byte) = line.get(at) {
        match byte {
            b'\r' => {
                return match line.get(at + 1) {
                    Some(b'\n') => Ok(Some((at + 2, size))),
                    Some(_) => {
                        Err("invalid chunked body: invalid chunk size line: CR without LF".into())
                    }
                    None => incomplete(buf),
                };
            }
            b'\n' => {
                return Err(
                    "invalid chunked body: invalid chunk size line: bare LF (expected CRLF)".into(),
                );
            }
            b';' => extension = true,
            // RFC 9112 §7.1.1: tokens and quoted strings, no control characters.
            b'\t' if extension => {}
            _ if extension && !byte.is_ascii_control() => {}
            _ if extension => {
                return Err(format!(
                    "invalid chunked body: invalid chunk size line: {} in a chunk extension",
                    shown(byte)
                ));
            }
            _ => {
                return Err(format!(
                    "invalid chunked body: invalid chunk size line: {} after the size",
                    shown(byte)
                ));
            }
        }
        at += 1;
    }
    incomplete(buf)
}

/// One line of a trailer section at the start of `buf`, after `seen` bytes of earlier ones: `Some(0)`
/// for the empty line that ends the section, else the field line's length (CRLF included); `None`
/// while incomplete. Each line must end in CRLF and be `name: value` (RFC 9112 §7.1.2, §5).
fn trailer_line(buf: &[u8], seen: u16) -> Result<Option<usize>, String> {
    let room = MAX_TRAILERS.saturating_sub(usize::from(seen));
    let line = &buf[..buf.len().min(room)];
    let Some(end) = memchr::memchr(b'\n', line) else {
        // What has arrived is checked already, so a bad line fails before its end.
        check_field_line(line, false)?;
        if buf.len() >= room {
            return Err(format!(
                "invalid chunked body: trailer section longer than {} KiB",
                MAX_TRAILERS / 1024
            ));
        }
        return Ok(None);
    };
    if end == 0 || line[end - 1] != b'\r' {
        return Err("invalid chunked body: bare LF in the trailer section (expected CRLF)".into());
    }
    if end == 1 {
        return Ok(Some(0));
    }
    check_field_line(&line[..end - 1], true)?;
    Ok(Some(end + 1))
}

/// A trailer field line without its CRLF (`whole`) or the part of it that has arrived: a token, `:`,
/// then a value without control characters but HTAB (no obs-fold, no whitespace before the colon).
fn check_field_line(line: &[u8], whole: bool) -> Result<(), String> {
    let invalid = || Err("invalid chunked body: invalid trailer field".to_owned());
    let name_end = line.iter().position(|&byte| !is_token(byte));
    match name_end {
        // The CR of the empty line that ends the section, its LF still to come.
        Some(0) if !whole && line == b"\r" => Ok(()),
        Some(0) => invalid(),
        Some(colon) if line[colon] != b':' => invalid(),
        Some(colon) => {
            let value = &line[colon + 1..];
            let value = if whole {
                value
            } else {
                value.strip_suffix(b"\r").unwrap_or(value)
            };
            if value
                .iter()
                .any(|&byte| byte != b'\t' && byte.is_ascii_control())
            {
                return invalid();
            }
            Ok(())
        }
        None if whole => invalid(),
        None => Ok(()),
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A chunk-size line not complete yet: `None` unless [`MAX_CHUNK_LINE`] bytes arrived without its end.
fn incomplete<T>(buf: &[u8]) -> Result<Option<T>, String> {
    if buf.len() >= MAX_CHUNK_LINE {
        return Err(format!(
            "invalid chunked body: chunk size line longer than {} KiB",
            MAX_CHUNK_LINE / 1024
        ));
    }
    Ok(None)
}

/// A byte for an error message: `'z'`, or `0x0b` when it is not printable.
fn shown(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        format!("'{}'", char::from(byte))
    } else {
        format!("0x{byte:02x}")
    }
}

/// The next data the buffer holds, after any framing before it.
pub(crate) fn take_data(
    framing: &mut Framing,
    buf: &mut BytesMut,
) -> Result<Option<Bytes>, String> {
    advance(framing, buf)?;
    if buf.is_empty() {
        return Ok(None);
    }
    let data = match framing {
        Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
            let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
            *left -= take as u64;
            buf.split_to(take).freeze()
        }
        Framing::UntilClose => buf.split().freeze(),
        _ => return Ok(None),
    };
    Ok(Some(data))
}

/// One response as the client side reads it, without a socket ([`decode_response`]).
#[doc(hidden)]
#[derive(Debug, PartialEq)]
pub struct DecodedResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// The body, or why it could not be read.
    pub body: Result<Bytes, String>,
    /// The connection could carry another request: the body ended cleanly, the server did not ask to
    /// close, nothing was left over.
    pub reusable: bool,
}

/// What the client side reads of the answer to one request when the upstream sends `pieces` and then
/// closes the connection: the same head parser and body framing as [`Conn::exchange`] and
/// [`ResponseBody`], without a socket — for the fuzz targets (`fuzz/`) and the differential tests
/// against hyper (`tests/it/h1_reference.rs`). `Err`: no response head.
#[doc(hidden)]
pub fn decode_response(pieces: &[&[u8]]) -> Result<DecodedResponse, String> {
    let mut buf = BytesMut::new();
    let mut pieces = pieces.iter();
    let head = loop {
        if let Some(head) = final_head(&mut buf)? {
            break head;
        }
        let Some(piece) = pieces.next() else {
            return Err("connection closed before message completed".into());
        };
        buf.extend_from_slice(piece);
    };
    let (response, mut framing, mut reusable) = head.into_parts()?;
    let mut data = BytesMut::new();
    let body = loop {
        match take_data(&mut framing, &mut buf) {
            Err(error) => break Err(error),
            Ok(Some(piece)) => data.extend_from_slice(&piece),
            Ok(None) if framing == Framing::Done => break Ok(data.freeze()),
            Ok(None) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None if framing == Framing::UntilClose => {
                    framing = Framing::Done;
                    reusable = false;
                    break Ok(data.freeze());
                }
                None => break Err("connection closed before the body ended".into()),
            },
        }
    };
    // What the upstream sent after the body stays in the buffer (the connection is not reused).
    for piece in pieces {
        buf.extend_from_slice(piece);
    }
    let (parts, ()) = response.into_parts();
    Ok(DecodedResponse {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        reusable: reusable && framing == Framing::Done && body.is_ok() && buf.is_empty(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `wire` (a body after its head) delivered in the given pieces: the data, and whether
    /// the end was recognised.
    fn decode(mut framing: Framing, pieces: &[&[u8]]) -> Result<(Vec<u8>, bool), String> {
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            while let Some(bytes) = take_data(&mut framing, &mut buf)? {
                data.extend_from_slice(&bytes);
            }
        }
        Ok((data, framing == Framing::Done && buf.is_empty()))
    }

    const CHUNKED: &[u8] =
        b"5;ext=1\r\nhello\r\n1A\r\n, world of chunked bodies!\r\n0\r\nx-trailer: 1\r\n\r\n";

    #[test]
    fn chunked_bodies_decode_the_same_whatever_the_split() {
        let whole = decode(Framing::Chunked(Chunk::Size), &[CHUNKED]).unwrap();
        assert_eq!(
            whole,
            (b"hello, world of chunked bodies!".to_vec(), true),
            "{whole:?}"
        );
        for one in 0..=CHUNKED.len() {
            for two in one..=CHUNKED.len() {
                let pieces = [&CHUNKED[..one], &CHUNKED[one..two], &CHUNKED[two..]];
                assert_eq!(
                    decode(Framing::Chunked(Chunk::Size), &pieces).unwrap(),
                    whole,
                    "split at {one} and {two}"
                );
            }
        }
        let plain_end = b"3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(
            decode(Framing::Chunked(Chunk::Size), &[plain_end]).unwrap(),
            (b"abc".to_vec(), true)
        );
        let unfinished = decode(Framing::Chunked(Chunk::Size), &[&CHUNKED[..40]]).unwrap();
        assert!(!unfinished.1);
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for wire in [&b"zz\r\nabc\r\n"[..], b"3\r\nabcX\r\n0\r\n\r\n"] {
            let error = decode(Framing::Chunked(Chunk::Size), &[wire]).unwrap_err();
            assert!(error.starts_with("invalid chunked body"), "{error}");
        }
    }

    /// Issue 23: chunked framing read as RFC 9112 §7.1 writes it — every case here was taken before
    /// (httparse's chunk-size parser and a search for CRLFCRLF), and the first one let a request's head
    /// be read as trailers and its body as the next request.
    #[test]
    fn lenient_chunked_framing_is_an_error() {
        let cases: [(&[u8], &str); 18] = [
            (b"3\r\nabc\r\n0\r\n\nPOST / HTTP/1.1\r\n\r\n", "bare LF"),
            (b"3\r\nabc\r\n0\r\nx: 1\n\r\n", "bare LF"),
            (b"3\nabc\r\n0\r\n\r\n", "bare LF"),
            (b"3;a\nabc\r\n0\r\n\r\n", "bare LF"),
            (b"3\r\nabc\n0\r\n\r\n", "not followed by CRLF"),
            (
                b"\r\n3\r\nabc\r\n0\r\n\r\n",
                "expected a hex digit, found 0x0d",
            ),
            (b";a\r\nabc\r\n0\r\n\r\n", "expected a hex digit, found ';'"),
            (b" 3\r\nabc\r\n", "expected a hex digit"),
            (b"3 4\r\nabcd\r\n", "'4' after the size"),
            (b"3x\r\nabc\r\n", "'x' after the size"),
            (b"3;a=\x01\r\nabc\r\n", "0x01 in a chunk extension"),
            (b"3\rabc", "CR without LF"),
            (b"10000000000000000\r\n", "larger than 64 bits"),
            (b"3\r\nabc\r\n0\r\nx : 1\r\n\r\n", "invalid trailer field"),
            (
                b"3\r\nabc\r\n0\r\nx: 1\r\n folded\r\n\r\n",
                "invalid trailer field",
            ),
            (
                b"3\r\nabc\r\n0\r\nx: a\x00b\r\n\r\n",
                "invalid trailer field",
            ),
            (b"3\r\nabc\r\n0\r\n: 1\r\n\r\n", "invalid trailer field"),
            // Found by the fuzz target `server_request`: a bare CR taken as a trailer field line
            // when the whole section had arrived (in pieces it was refused).
            (b"3\r\nabc\r\n0\r\n\r\r\n\r\n", "invalid trailer field"),
        ];
        for (wire, expected) in cases {
            // Whole, and byte by byte: a bad line fails before its end has arrived.
            let whole = decode(Framing::Chunked(Chunk::Size), &[wire]).unwrap_err();
            assert!(
                whole.starts_with("invalid chunked body") && whole.contains(expected),
                "{:?}: {whole}",
                String::from_utf8_lossy(wire)
            );
            let bytes: Vec<&[u8]> = wire.chunks(1).collect();
            let split = decode(Framing::Chunked(Chunk::Size), &bytes).unwrap_err();
            assert_eq!(split, whole, "{:?}", String::from_utf8_lossy(wire));
        }

        let long_extension = [&b"3;"[..], &[b'a'; MAX_CHUNK_LINE], b"\r\nabc\r\n"].concat();
        let error = decode(Framing::Chunked(Chunk::Size), &[&long_extension]).unwrap_err();
        assert!(
            error.contains("chunk size line longer than 16 KiB"),
            "{error}"
        );
        let many_trailers = [
            &b"0\r\n"[..],
            &b"x-trailer: 0123456789\r\n".repeat(MAX_TRAILERS / 20),
            b"\r\n",
        ]
        .concat();
        let error = decode(Framing::Chunked(Chunk::Size), &[&many_trailers]).unwrap_err();
        assert!(error.contains("more than 100 trailer fields"), "{error}");
        let long_trailers = [
            &b"0\r\n"[..],
            &[&b"x-trailer: "[..], &[b'a'; 1000], b"\r\n"]
                .concat()
                .repeat(17),
            b"\r\n",
        ]
        .concat();
        let error = decode(Framing::Chunked(Chunk::Size), &[&long_trailers]).unwrap_err();
        assert!(
            error.contains("trailer section longer than 16 KiB"),
            "{error}"
        );
    }

    #[test]
    fn strict_chunked_framing_still_takes_what_rfc_9112_allows() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"0000000000000000000003\r\nabc\r\n0\r\n\r\n", b"abc"),
            (
                b"A\r\n0123456789\r\nb\r\n0123456789a\r\n00\r\n\r\n",
                b"01234567890123456789a",
            ),
            (b"3 ;name=value;q=\"a b\"\r\nabc\r\n0;last\r\n\r\n", b"abc"),
            (b"3\t\r\nabc\r\n0\r\n\r\n", b"abc"),
            (b"3;\xff\r\nabc\r\n0\r\n\r\n", b"abc"),
            (b"3\r\nabc\r\n0\r\nx-a: 1\r\nX-B:\t2 \r\n\r\n", b"abc"),
        ];
        for (wire, body) in cases {
            let bytes: Vec<&[u8]> = wire.chunks(1).collect();
            for pieces in [&[wire][..], &bytes] {
                let decoded = decode(Framing::Chunked(Chunk::Size), pieces)
                    .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(wire)));
                assert_eq!(
                    decoded,
                    (body.to_vec(), true),
                    "{:?}",
                    String::from_utf8_lossy(wire)
                );
            }
        }
        // The largest size there is: valid, its data still to come.
        let mut framing = Framing::Chunked(Chunk::Size);
        let mut buf = BytesMut::from(&b"ffffffffffffffff\r\n"[..]);
        assert_eq!(take_data(&mut framing, &mut buf).unwrap(), None);
        assert_eq!(framing, Framing::Chunked(Chunk::Data(u64::MAX)));
    }

    #[test]
    fn a_length_body_stops_at_its_length() {
        let (data, done) = decode(Framing::Length(3), &[b"a", b"bc"]).unwrap();
        assert_eq!((data.as_slice(), done), (&b"abc"[..], true));
        // Bytes after the body are not part of it (and keep the connection from being reused).
        let mut framing = Framing::Length(2);
        let mut buf = BytesMut::from(&b"abEXTRA"[..]);
        assert_eq!(take_data(&mut framing, &mut buf).unwrap().unwrap(), "ab");
        assert_eq!(take_data(&mut framing, &mut buf).unwrap(), None);
        assert_eq!((framing, &buf[..]), (Framing::Done, &b"EXTRA"[..]));
    }

    fn head(text: &str) -> (Head, BytesMut) {
        let mut buf = BytesMut::from(text.as_bytes());
        let head = parse_head(&mut buf).unwrap().unwrap();
        (head, buf)
    }

    /// How `text`'s body is framed; `None` when its framing cannot be trusted.
    fn framing_of(text: &str) -> Option<(Framing, bool)> {
        let (head, _) = head(text);
        let mut headers = HeaderMap::new();
        for (name, range) in head.fields {
            headers.append(
                name,
                HeaderValue::from_maybe_shared(head.head.slice(range)).unwrap(),
            );
        }
        framing(head.status, head.version, &headers).ok()
    }

    #[test]
    fn heads_are_parsed_and_framed_as_rfc_9112_says() {
        let (parsed, rest) =
            head("HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nX-A: 1\r\nx-a: 2\r\n\r\nBODY");
        assert_eq!(parsed.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(&rest[..], b"BODY");
        let names: Vec<_> = parsed.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["retry-after", "x-a", "x-a"]);
        assert_eq!(&parsed.head[parsed.fields[0].1.clone()], b"7");

        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Len"[..]);
        assert!(parse_head(&mut partial).unwrap().is_none());
        assert_eq!(partial.len(), 28, "an incomplete head stays in the buffer");
        let mut garbage = BytesMut::from(&b"SSH-2.0-OpenSSH\r\n\r\n"[..]);
        assert!(
            parse_head(&mut garbage)
                .unwrap_err()
                .starts_with("invalid HTTP response")
        );

        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n",
                Some((Framing::Length(12), true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
                Some((Framing::Length(5), false)),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Some((Framing::Chunked(Chunk::Size), true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
                Some((Framing::Chunked(Chunk::Size), false)),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Some((Framing::UntilClose, false)),
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                Some((Framing::UntilClose, false)),
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                Some((Framing::Length(0), true)),
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
                None,
            ),
            ("HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n", None),
            ("HTTP/1.1 200 OK\r\ncontent-length: -3\r\n\r\n", None),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n",
                Some((Framing::Length(3), false)),
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 3\r\nConnection: Keep-Alive\r\n\r\n",
                Some((Framing::Length(3), true)),
            ),
            // `close` wins over `keep-alive` (RFC 9112 §9.3).
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 3\r\nConnection: keep-alive, close\r\n\r\n",
                Some((Framing::Length(3), false)),
            ),
            // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing (hyper refuses it too).
            (
                "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                None,
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(framing_of(text), expected, "{text:?}");
        }
    }

    #[test]
    fn requests_are_encoded_in_origin_form_with_host_and_length() {
        let encoded = |method: Method, url: &str, headers: &HeaderMap, body: &[u8]| {
            let mut out = Vec::new();
            encode_request(&method, &url.parse().unwrap(), headers, body, &mut out);
            String::from_utf8(out).unwrap()
        };
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        assert_eq!(
            encoded(
                Method::POST,
                "http://10.0.0.1:80/v1/chat/completions?a=b",
                &headers,
                b"{}"
            ),
            "POST /v1/chat/completions?a=b HTTP/1.1\r\nhost: 10.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
        );
        headers.insert("host", HeaderValue::from_static("example.test"));
        assert_eq!(
            encoded(Method::GET, "http://[::1]:8000", &headers, b""),
            "GET / HTTP/1.1\r\ncontent-type: application/json\r\nhost: example.test\r\n\r\n"
        );
    }

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
        let mut request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
        let response = conn
            .exchange(&mut request, false)
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        // The request's bytes were freed once written, not held until the answer.
        assert_eq!(request.capacity(), 0);
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
