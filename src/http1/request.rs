//! A request as the server side reads it, with no I/O: the head parsed from a buffer ([`parse_head`]),
//! how its body is delimited ([`body_framing`], strict where request smuggling lives), and the body
//! taken out of the buffer as its bytes arrive ([`BodyReader`]). A malformed request is a
//! [`Rejection`]: the status and message the client is answered with before the connection closes.
//! [`decode_requests`] runs the three over a client's bytes without a socket, for the differential
//! tests against hyper and the fuzz targets.

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};

use super::{
    Chunk, Framing, MAX_HEAD, MAX_HEADERS, content_length, field_ranges, keeps_alive, take_data,
};

/// A malformed request: answered with this status and message, then the connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

fn reject(status: StatusCode, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        message: message.into(),
    }
}

/// A request head, its values slices of the bytes it came in.
pub(crate) struct RequestHead {
    pub(crate) method: Method,
    pub(crate) uri: http::Uri,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
}

/// A request body as read: whole, or not read because its `Content-Length` is longer than allowed.
pub(crate) enum ReadBody {
    Whole(Bytes),
    TooLarge,
}

/// A request body being taken out of the connection's read buffer as its bytes arrive.
pub(crate) struct BodyReader {
    framing: Framing,
    limit: usize,
    /// Chunked: the first piece (a body in one chunk is not copied) …
    first: Option<Bytes>,
    /// … and the pieces joined once there is more than one.
    joined: BytesMut,
    total: usize,
}

impl BodyReader {
    pub(crate) fn new(framing: Framing, limit: usize) -> BodyReader {
        BodyReader {
            framing,
            limit,
            first: None,
            joined: BytesMut::new(),
            total: 0,
        }
    }

    /// Use what `buf` holds: the body once it is complete (taken out of `buf`), `None` while more must
    /// be read. A `Content-Length` body longer than the limit is not read; a chunked one is refused
    /// (413) as soon as it is, a malformed one 400.
    pub(crate) fn step(&mut self, buf: &mut BytesMut) -> Result<Option<ReadBody>, Rejection> {
        if let Framing::Length(length) = self.framing {
            if length == 0 {
                return Ok(Some(ReadBody::Whole(Bytes::new())));
            }
            if length > self.limit as u64 {
                return Ok(Some(ReadBody::TooLarge));
            }
            // Not more than `limit`, so it fits in memory.
            let length = usize::try_from(length).unwrap_or(usize::MAX);
            if buf.len() < length {
                return Ok(None);
            }
            return Ok(Some(ReadBody::Whole(buf.split_to(length).freeze())));
        }
        loop {
            match take_data(&mut self.framing, buf) {
                Err(error) => return Err(reject(StatusCode::BAD_REQUEST, error.to_string())),
                Ok(Some(data)) => {
                    self.total += data.len();
                    if self.total > self.limit {
                        return Err(reject(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!(
                                "request body exceeds the limit of {} bytes (server.max_body_bytes)",
                                self.limit
                            ),
                        ));
                    }
                    match self.first.take() {
                        None if self.joined.is_empty() => self.first = Some(data),
                        None => self.joined.extend_from_slice(&data),
                        Some(earlier) => {
                            self.joined.extend_from_slice(&earlier);
                            self.joined.extend_from_slice(&data);
                        }
                    }
                }
                Ok(None) if self.framing == Framing::Done => {
                    let body = self
                        .first
                        .take()
                        .unwrap_or_else(|| self.joined.split().freeze());
                    return Ok(Some(ReadBody::Whole(body)));
                }
                Ok(None) => return Ok(None),
            }
        }
    }
}

/// Parse a request head at the start of `buf` and take it out of `buf`; `None` while incomplete.
pub(crate) fn parse_head(buf: &mut BytesMut) -> Result<Option<RequestHead>, Rejection> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut storage);
    let length = match request.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the request head is larger than 64 KiB",
            ));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("the request has more than {MAX_HEADERS} header fields"),
            ));
        }
        Err(error) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                format!("invalid HTTP request: {error}"),
            ));
        }
    };
    if length > MAX_HEAD {
        return Err(reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request head is larger than 64 KiB",
        ));
    }
    let (Some(method), Some(path), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(reject(StatusCode::BAD_REQUEST, "invalid HTTP request"));
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| {
        reject(
            StatusCode::BAD_REQUEST,
            "invalid HTTP request: invalid method",
        )
    })?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    let offset = |text: &str| text.as_ptr() as usize - base;
    let target = offset(path)..offset(path) + path.len();
    let fields = field_ranges(request.headers, buf).map_err(|name| {
        reject(
            StatusCode::BAD_REQUEST,
            format!("invalid HTTP request: invalid header name {name:?}"),
        )
    })?;
    let head = buf.split_to(length).freeze();
    let uri = http::Uri::from_maybe_shared(head.slice(target)).map_err(|_| {
        reject(
            StatusCode::BAD_REQUEST,
            "invalid HTTP request: invalid request target",
        )
    })?;
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, range) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(range)).map_err(|_| {
            reject(
                StatusCode::BAD_REQUEST,
                format!("invalid HTTP request: invalid value of header {name}"),
            )
        })?;
        headers.append(name, value);
    }
    Ok(Some(RequestHead {
        method,
        uri,
        version,
        headers,
    }))
}

/// How a request's body is delimited (RFC 9112 §6.3): chunked coding, `Content-Length`, or none.
/// Refused, as the ambiguities request smuggling lives on: both at once (§6.3 ¶3 lets a server
/// refuse), a coding in HTTP/1.0 (§6.1), codings that do not end in chunked (§6.3 ¶4: 400), chunked
/// twice (§6.1), and any coding but chunked (§6.1: 501, as we decode none) — so the body we read is
/// the body the client meant, whatever a proxy in front of us made of the same bytes.
pub(crate) fn body_framing(version: Version, headers: &HeaderMap) -> Result<Framing, Rejection> {
    if headers.contains_key(TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "invalid HTTP request: transfer-encoding in an HTTP/1.0 request",
            ));
        }
        if headers.contains_key(CONTENT_LENGTH) {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "invalid HTTP request: both transfer-encoding and content-length",
            ));
        }
        check_transfer_codings(headers)?;
        return Ok(Framing::Chunked(Chunk::Size));
    }
    match content_length(headers) {
        Ok(length) => Ok(Framing::Length(length.unwrap_or(0))),
        Err(()) => Err(reject(
            StatusCode::BAD_REQUEST,
            "invalid HTTP request: invalid content-length",
        )),
    }
}

/// The request's transfer codings, all its `Transfer-Encoding` lines as one list, are exactly
/// `chunked`. Empty list elements are skipped (RFC 9110 §5.6.1) but not at the end: `chunked,` does
/// not end in chunked to a reader that splits on the last comma (hyper, and proxies like it), so a
/// reader that skipped it would see a body where they see none.
fn check_transfer_codings(headers: &HeaderMap) -> Result<(), Rejection> {
    let mut codings = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii);
    let is_chunked = |coding: &[u8]| coding.eq_ignore_ascii_case(b"chunked");
    match codings.next_back() {
        Some(last) if is_chunked(last) => {}
        last => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid HTTP request: transfer-encoding {} does not end in chunked",
                    quoted(last.unwrap_or_default())
                ),
            ));
        }
    }
    match codings.rfind(|coding| !coding.is_empty()) {
        None => Ok(()),
        Some(coding) if is_chunked(coding) => Err(reject(
            StatusCode::BAD_REQUEST,
            "invalid HTTP request: transfer-encoding chunked applied more than once",
        )),
        Some(coding) => Err(reject(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "unsupported transfer-encoding {}: only chunked is understood",
                quoted(coding)
            ),
        )),
    }
}

/// A client's value for an error message: quoted, at most 64 bytes of it.
fn quoted(value: &[u8]) -> String {
    let shown = String::from_utf8_lossy(&value[..value.len().min(64)]);
    let more = if value.len() > 64 { "…" } else { "" };
    format!("'{shown}{more}'")
}

/// One request as the server side reads it, without a socket ([`decode_requests`]).
#[doc(hidden)]
#[derive(Debug, PartialEq)]
pub struct DecodedRequest {
    pub method: Method,
    pub uri: http::Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// `None`: longer than the limit by its `Content-Length`, not read.
    pub body: Option<Bytes>,
}

/// How reading a connection's requests ended ([`decode_requests`]).
#[doc(hidden)]
#[derive(Debug, PartialEq)]
pub enum DecodedEnd {
    /// The bytes ran out between requests.
    Closed,
    /// The bytes ran out inside a request (it is not in the list).
    Truncated,
    /// A request ended the connection: `Connection: close`, HTTP/1.0 without keep-alive, a body over
    /// the limit. Bytes after it were not read.
    Stopped,
    /// A malformed request, answered with this status and message, then the connection closed.
    Rejected(StatusCode, String),
}

/// What the server side reads from a client that sends `pieces` and then closes its side, every
/// request answered at once: the same head parser, framing and body reader as `server::h1`, without a
/// socket — for the differential tests against hyper (`tests/it/h1_reference.rs`) and the fuzz
/// targets (`fuzz/`). `max_body` stands for `server.max_body_bytes`.
#[doc(hidden)]
pub fn decode_requests(pieces: &[&[u8]], max_body: usize) -> (Vec<DecodedRequest>, DecodedEnd) {
    let mut buf = BytesMut::new();
    let mut pieces = pieces.iter();
    let mut requests = Vec::new();
    let mut more = |buf: &mut BytesMut| pieces.next().map(|piece| buf.extend_from_slice(piece));
    loop {
        let head = loop {
            match parse_head(&mut buf) {
                Err(failure) => return (requests, failure.into()),
                Ok(Some(head)) => break head,
                Ok(None) if more(&mut buf).is_some() => {}
                Ok(None) if buf.is_empty() => return (requests, DecodedEnd::Closed),
                Ok(None) => return (requests, DecodedEnd::Truncated),
            }
        };
        let framing = match body_framing(head.version, &head.headers) {
            Ok(framing) => framing,
            Err(failure) => return (requests, failure.into()),
        };
        let keep_alive = keeps_alive(head.version, &head.headers);
        let mut reader = BodyReader::new(framing, max_body);
        let body = loop {
            match reader.step(&mut buf) {
                Err(failure) => return (requests, failure.into()),
                Ok(Some(ReadBody::Whole(body))) => break Some(body),
                Ok(Some(ReadBody::TooLarge)) => break None,
                Ok(None) if more(&mut buf).is_some() => {}
                Ok(None) => return (requests, DecodedEnd::Truncated),
            }
        };
        let stop = !keep_alive || body.is_none();
        requests.push(DecodedRequest {
            method: head.method,
            uri: head.uri,
            version: head.version,
            headers: head.headers,
            body,
        });
        if stop {
            return (requests, DecodedEnd::Stopped);
        }
    }
}

impl From<Rejection> for DecodedEnd {
    fn from(rejection: Rejection) -> DecodedEnd {
        // An HTTP/2 preface is a malformed HTTP/1 head to `parse_head` (the server looks for it first).
        DecodedEnd::Rejected(rejection.status, rejection.message)
    }
}
