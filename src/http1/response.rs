//! The response head as our client reads it (RFC 9112 §6.3): httparse for the head, interim (1xx)
//! answers skipped, and the body's framing — no body for 204 and 304, chunked transfer coding,
//! `Content-Length`, or else until the server closes — with whether the connection may carry another
//! request after it. [`decode_response`] reads a whole answer from bytes, without a socket.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use super::framing::{Chunk, Framing, FramingError, take_data};
use super::head::{content_length, field_ranges, is_chunked, keeps_alive};
use super::{MAX_HEAD, MAX_HEADERS};

/// Why a response head gives no response: malformed, too large, or framed in a way that cannot be
/// trusted. Before the response's first byte reaches the client, another upstream may still be tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseHeadError {
    /// httparse refused the head.
    Parse(httparse::Error),
    /// The head is larger than [`MAX_HEAD`].
    TooLarge,
    /// A status code outside 100–999.
    InvalidStatus,
    /// A header name `http` refuses.
    InvalidHeaderName(String),
    /// 101 Switching Protocols, which no request of ours asks for.
    SwitchedProtocols,
    /// `Transfer-Encoding` in an HTTP/1.0 response (RFC 9112 §6.1: faulty framing).
    TransferEncodingInHttp10,
    /// A `Content-Length` that is not digits only, or two that disagree.
    InvalidContentLength,
    /// The bytes ended (the upstream closed the connection) before the head did.
    Unfinished,
}

impl std::fmt::Display for ResponseHeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const INVALID: &str = "invalid HTTP response";
        match self {
            ResponseHeadError::Parse(error) => write!(f, "{INVALID}: {error}"),
            ResponseHeadError::TooLarge => {
                write!(
                    f,
                    "{INVALID}: the head is larger than {} KiB",
                    MAX_HEAD / 1024
                )
            }
            ResponseHeadError::InvalidStatus => write!(f, "{INVALID}: invalid status code"),
            ResponseHeadError::InvalidHeaderName(name) => {
                write!(f, "{INVALID}: invalid header name {name:?}")
            }
            ResponseHeadError::SwitchedProtocols => {
                f.write_str("the upstream switched protocols (101), which was not asked for")
            }
            ResponseHeadError::TransferEncodingInHttp10 => {
                write!(f, "{INVALID}: transfer-encoding in an HTTP/1.0 response")
            }
            ResponseHeadError::InvalidContentLength => {
                write!(f, "{INVALID}: invalid or conflicting content-length")
            }
            ResponseHeadError::Unfinished => {
                f.write_str("connection closed before message completed")
            }
        }
    }
}

impl std::error::Error for ResponseHeadError {}

/// The final response head at the start of `buf`, taken out of `buf` with the interim (1xx) ones
/// before it; `None` while incomplete.
pub(crate) fn final_head(buf: &mut BytesMut) -> Result<Option<ResponseHead>, ResponseHeadError> {
    loop {
        match parse_head(buf)? {
            Some(head) => match head.status.as_u16() {
                101 => return Err(ResponseHeadError::SwitchedProtocols),
                // Interim answers (100 Continue, 103 Early Hints): the final one follows.
                100..=199 => {}
                _ => return Ok(Some(head)),
            },
            None if buf.len() > MAX_HEAD => return Err(ResponseHeadError::TooLarge),
            None => return Ok(None),
        }
    }
}

/// A parsed response head: status, version and the header fields, their values slices of `head`.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    status: StatusCode,
    version: Version,
    head: Bytes,
    fields: Vec<(HeaderName, Range<usize>)>,
}

/// Parse a response head at the start of `buf` and take it out of `buf`; `None` while incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<ResponseHead>, ResponseHeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut storage);
    let length = match response.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(ResponseHeadError::Parse(error)),
    };
    if length > MAX_HEAD {
        return Err(ResponseHeadError::TooLarge);
    }
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(ResponseHeadError::InvalidStatus)?;
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let fields = field_ranges(response.headers, buf)
        .map_err(|name| ResponseHeadError::InvalidHeaderName(name.to_owned()))?;
    Ok(Some(ResponseHead {
        status,
        version,
        head: buf.split_to(length).freeze(),
        fields,
    }))
}

impl ResponseHead {
    /// The response without its body, how the body is delimited, and whether the connection may carry
    /// another request after it. `Err` when the framing cannot be trusted: then there is no response
    /// (before its first byte, another upstream may still be tried).
    pub(crate) fn into_parts(
        self,
    ) -> Result<(http::Response<()>, Framing, bool), ResponseHeadError> {
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
) -> Result<(Framing, bool), ResponseHeadError> {
    let mut reusable = keeps_alive(version, headers);
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), reusable));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            return Err(ResponseHeadError::TransferEncodingInHttp10);
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
        Err(()) => Err(ResponseHeadError::InvalidContentLength),
        Ok(Some(length)) => Ok((Framing::Length(length), reusable)),
        Ok(None) => Ok((Framing::UntilClose, false)),
    }
}

/// One response as the client side reads it, without a socket ([`decode_response`]).
#[doc(hidden)]
#[derive(Debug, PartialEq)]
pub struct DecodedResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// The body, or why it could not be read.
    pub body: Result<Bytes, FramingError>,
    /// The connection could carry another request: the body ended cleanly, the server did not ask to
    /// close, nothing was left over.
    pub reusable: bool,
}

/// What the client side reads of the answer to one request when the upstream sends `pieces` and then
/// closes the connection: the same head parser and body framing as `upstream::h1::Conn::exchange`
/// and its `ResponseBody`, without a socket — for the fuzz targets (`fuzz/`) and the differential tests
/// against hyper (`tests/it/h1_reference.rs`). `Err`: no response head.
#[doc(hidden)]
pub fn decode_response(pieces: &[&[u8]]) -> Result<DecodedResponse, ResponseHeadError> {
    let mut buf = BytesMut::new();
    let mut pieces = pieces.iter();
    let head = loop {
        if let Some(head) = final_head(&mut buf)? {
            break head;
        }
        let Some(piece) = pieces.next() else {
            return Err(ResponseHeadError::Unfinished);
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
                None => break Err(FramingError::Truncated),
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

    fn head(text: &str) -> (ResponseHead, BytesMut) {
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
                .to_string()
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
}
