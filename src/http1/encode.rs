//! Request encoding: the request line, `Host`, header lines and `Content-Length` of an HTTP/1.1 request
//! written straight into the bytes that go on the wire, and [`HeaderSink`], the interface the upstream
//! call writes its headers through (into those bytes for `http://`, into a header map for `https://`).

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// Where an upstream request's headers are written: `prefix` then `value` (`Bearer ` and a key), marked
/// sensitive when it carries a credential (hyper's HTTP/2 encoder never indexes those). A value that is
/// not valid in a header ([`header_safe`]) is left out.
pub(crate) trait HeaderSink {
    fn put(&mut self, name: HeaderName, prefix: &'static str, value: &[u8], sensitive: bool);
}

/// Bytes `HeaderValue` accepts: visible ASCII, space, tab and obs-text; no control characters.
pub(crate) fn header_safe(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&byte| byte == b'\t' || (byte >= 0x20 && byte != 0x7f))
}

/// Headers written straight into an HTTP/1.1 request being encoded.
pub(crate) struct WireHeaders<'a> {
    pub(crate) out: &'a mut Vec<u8>,
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
pub(crate) fn encode_request_line(
    method: &Method,
    uri: &http::Uri,
    has_host: bool,
    out: &mut Vec<u8>,
) {
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
pub(crate) fn encode_request_end(method: &Method, body: &[u8], out: &mut Vec<u8>) {
    encode_head_end(method, body.len(), out);
    out.extend_from_slice(body);
}

/// The end of a request's head for a body of `len` bytes sent after it.
pub(crate) fn encode_head_end(method: &Method, len: usize, out: &mut Vec<u8>) {
    if len != 0 || !matches!(*method, Method::GET | Method::HEAD) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Encode a request with a complete body into `out`: request line in origin form, `Host` from
/// `authority` unless `headers` has one, the headers as given (names are lowercase in `http`), and
/// `Content-Length` (left out only for a bodiless GET or HEAD).
pub(crate) fn encode_request(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
