//! One HTTP call to one upstream instance, and the classification of what went wrong.
//!
//! Faults that move on to the next candidate (DESIGN "what fails over"): connect refused/reset, timeout,
//! 5xx and 429. Other 4xx answers are relayed to the client as they came.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, header};

use crate::config::BackendKind;
use crate::secret::Secret;

use super::client::{BodyReadError, Failure, HttpClient, Response, Target, read_body};
use crate::http1::{HeaderSink, header_safe};

/// Everything needed to send one attempt.
pub struct CallSpec<'a> {
    pub kind: BackendKind,
    pub target: &'a Target,
    pub body: Bytes,
    pub api_key: Option<&'a Secret>,
    /// Client credentials forwarded only when the backend has no key of its own and the gateway is open.
    pub passthrough_auth: Option<&'a HeaderValue>,
    pub anthropic_version: &'a str,
    pub anthropic_beta: Option<&'a HeaderValue>,
    pub request_id: &'a str,
    pub stream: bool,
    /// Bound on the wait for response headers.
    pub timeout: Duration,
    /// Bound on an error body read whole (`server.max_upstream_body_bytes`).
    pub max_body_bytes: usize,
}

/// Why one attempt failed in a way that counts against the instance.
#[derive(Debug, Clone)]
pub enum Fault {
    Timeout(Duration),
    Connect(String),
    Status {
        status: u16,
        retry_after: Option<Duration>,
        detail: String,
    },
    /// The upstream answered 200 but the body or stream was broken.
    Broken(String),
}

impl Fault {
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, Fault::Timeout(_))
    }

    pub(crate) fn rate_limited(&self) -> Option<Option<Duration>> {
        match self {
            Fault::Status {
                status: 429,
                retry_after,
                ..
            } => Some(*retry_after),
            _ => None,
        }
    }

    /// Metrics label.
    pub(crate) fn kind_str(&self) -> &'static str {
        match self {
            Fault::Timeout(_) => "timeout",
            Fault::Connect(_) => "connect",
            Fault::Status { status: 429, .. } => "rate_limited",
            Fault::Status { .. } => "status_5xx",
            Fault::Broken(_) => "broken_response",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Timeout(after) => write!(f, "timed out after {:.1}s", after.as_secs_f64()),
            Fault::Connect(detail) => write!(f, "connection failed: {detail}"),
            Fault::Status { status, detail, .. } if detail.is_empty() => write!(f, "HTTP {status}"),
            Fault::Status { status, detail, .. } => write!(f, "HTTP {status}: {detail}"),
            Fault::Broken(detail) => write!(f, "broken response: {detail}"),
        }
    }
}

/// A non-fault outcome of one attempt.
pub enum Reply {
    /// 2xx: the body is still to be read (or streamed).
    Success(Response),
    /// A 4xx other than 429: relayed to the client, not retried.
    ClientError {
        status: u16,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
}

pub async fn send(client: &HttpClient, mut spec: CallSpec<'_>) -> Result<Reply, Fault> {
    let body = std::mem::take(&mut spec.body);
    // The headers are written once, where they go: into the request's bytes for `http://`, into a
    // header map for hyper-util (`https://`) — no map built and dropped per request on the hot path.
    let response = client
        .post(
            &spec.target.uri,
            |sink| write_headers(&spec, sink),
            body,
            spec.timeout,
        )
        .await;
    let response = match response {
        Err(Failure::Timeout) => return Err(Fault::Timeout(spec.timeout)),
        Err(Failure::Connect(detail)) => return Err(Fault::Connect(detail.to_string())),
        Ok(response) => response,
    };
    if response.status().is_success() {
        return Ok(Reply::Success(response));
    }
    // Boxed: the error body's read is rare, and inline its state would be copied with this
    // future on every call (a cold block under many connections).
    Box::pin(unsuccessful(response, spec.timeout, spec.max_body_bytes)).await
}

/// A non-2xx answer: its body read (within `timeout`, at most `limit` bytes), then a fault (429, 5xx,
/// anything not 4xx) or a client error to relay. A client error whose body is over the limit is not
/// relayed — neither whole nor cut (a cut JSON body is no error body) — but is a broken answer naming
/// the limit; a fault's over-large body is not read, its detail says so.
async fn unsuccessful(response: Response, timeout: Duration, limit: usize) -> Result<Reply, Fault> {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let fault = status == 429 || !(400..500).contains(&status);
    let body = match tokio::time::timeout(timeout, read_body(response.into_body(), limit)).await {
        Ok(Ok(body)) => body,
        Ok(Err(BodyReadError::TooLarge)) if fault => {
            return Err(Fault::Status {
                status,
                retry_after,
                detail: format!("{}; not read", too_large("the error body", limit)),
            });
        }
        Ok(Err(BodyReadError::TooLarge)) => {
            return Err(Fault::Broken(format!(
                "HTTP {status}: {}",
                too_large("the error body", limit)
            )));
        }
        _ => Bytes::new(),
    };
    if fault {
        return Err(Fault::Status {
            status,
            retry_after,
            detail: error_detail(&body),
        });
    }
    Ok(Reply::ClientError {
        status,
        content_type,
        body,
    })
}

/// `<what> is larger than the limit of N bytes (server.max_upstream_body_bytes)`: how an upstream
/// body that was not buffered is described.
pub(crate) fn too_large(what: &str, limit: usize) -> String {
    format!("{what} is larger than the limit of {limit} bytes (server.max_upstream_body_bytes)")
}

/// The headers of one upstream request: content type, accept, request id, the backend's credential (or
/// the client's, passed through on an open gateway), Anthropic's version and beta, and the URL's basic
/// auth when nothing else authorizes. A value that is not valid in a header is left out by the sink; a
/// backend key that is not valid gives way to the client's credential.
fn write_headers(spec: &CallSpec<'_>, sink: &mut dyn HeaderSink) {
    sink.put(header::CONTENT_TYPE, "", b"application/json", false);
    let accept: &[u8] = if spec.stream {
        b"text/event-stream"
    } else {
        b"application/json"
    };
    sink.put(header::ACCEPT, "", accept, false);
    sink.put(
        crate::http::names::X_REQUEST_ID,
        "",
        spec.request_id.as_bytes(),
        false,
    );
    let api_key = spec
        .api_key
        .map(|key| key.expose().as_bytes())
        .filter(|key| header_safe(key));
    let mut authorized = false;
    match spec.kind {
        BackendKind::Anthropic => {
            if let Some(key) = api_key {
                sink.put(crate::http::names::X_API_KEY, "", key, true);
            } else if let Some(auth) = spec.passthrough_auth {
                // The client's own credential: a bearer token stays `Authorization` (OAuth), a bare
                // key (from the client's `x-api-key`) is sent as `x-api-key`, as Anthropic expects.
                let name = if is_bearer(auth) {
                    authorized = true;
                    header::AUTHORIZATION
                } else {
                    crate::http::names::X_API_KEY
                };
                sink.put(name, "", auth.as_bytes(), true);
            }
            sink.put(
                crate::http::names::ANTHROPIC_VERSION,
                "",
                spec.anthropic_version.as_bytes(),
                false,
            );
            if let Some(beta) = spec.anthropic_beta {
                sink.put(
                    crate::http::names::ANTHROPIC_BETA,
                    "",
                    beta.as_bytes(),
                    false,
                );
            }
        }
        BackendKind::OpenAi | BackendKind::Echo => {
            if let Some(key) = api_key {
                sink.put(header::AUTHORIZATION, "Bearer ", key, true);
                authorized = true;
            } else if let Some(auth) = spec.passthrough_auth {
                // A bare key (an Anthropic client's `x-api-key`) becomes a bearer token.
                if is_bearer(auth) {
                    sink.put(header::AUTHORIZATION, "", auth.as_bytes(), true);
                    authorized = true;
                } else if auth.to_str().is_ok() {
                    sink.put(header::AUTHORIZATION, "Bearer ", auth.as_bytes(), true);
                    authorized = true;
                }
            }
        }
    }
    if let Some(basic) = &spec.target.basic_auth
        && !authorized
    {
        sink.put(header::AUTHORIZATION, "", basic.as_bytes(), true);
    }
}

fn is_bearer(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
}

/// `Retry-After` in seconds (HTTP dates are rare from LLM APIs and are treated as absent).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// A short description of an upstream error body: its `error.message` when it has one.
fn error_detail(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.pointer("/message"))
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    });
    let text = message.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let mut text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    if text.len() >= 200 {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_and_details() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(
            error_detail(br#"{"error":{"message":"overloaded"}}"#),
            "overloaded"
        );
        assert_eq!(error_detail(b"plain\ntext"), "plaintext");
    }

    #[test]
    fn bearer_scheme_is_recognised() {
        assert!(is_bearer(&HeaderValue::from_static("Bearer sk-x")));
        assert!(is_bearer(&HeaderValue::from_static("bearer sk-x")));
        assert!(!is_bearer(&HeaderValue::from_static("sk-ant-x")));
        assert!(!is_bearer(&HeaderValue::from_static("Bear")));
    }

    /// The headers written into an `http://` request's bytes are the ones an `https://` request's map
    /// gets, credentials marked sensitive in the map; invalid values are left out of both.
    #[test]
    fn headers_are_the_same_on_the_wire_and_in_a_map() {
        let plain = Target::parse("http://user:pw@127.0.0.1:9/v1/chat/completions").unwrap();
        let key = Secret::new("sk-backend");
        let bad_key = Secret::new("sk\nbad");
        let client_bearer = HeaderValue::from_static("Bearer sk-client");
        let client_bare = HeaderValue::from_static("sk-ant-client");
        let beta = HeaderValue::from_static("tools-2024");
        let spec = |kind, api_key, passthrough_auth, request_id| CallSpec {
            kind,
            target: &plain,
            body: Bytes::new(),
            api_key,
            passthrough_auth,
            anthropic_version: "2023-06-01",
            anthropic_beta: Some(&beta),
            request_id,
            stream: true,
            timeout: Duration::from_secs(1),
            max_body_bytes: 1 << 20,
        };
        let cases = [
            (
                spec(
                    BackendKind::OpenAi,
                    Some(&key),
                    Some(&client_bearer),
                    "req-1",
                ),
                "content-type: application/json|accept: text/event-stream|x-request-id: req-1|authorization: Bearer sk-backend",
            ),
            (
                spec(
                    BackendKind::OpenAi,
                    Some(&bad_key),
                    Some(&client_bare),
                    "req\r\n2",
                ),
                "content-type: application/json|accept: text/event-stream|authorization: Bearer sk-ant-client",
            ),
            (
                spec(BackendKind::OpenAi, None, None, "r"),
                "content-type: application/json|accept: text/event-stream|x-request-id: r|authorization: Basic dXNlcjpwdw==",
            ),
            (
                spec(BackendKind::Anthropic, None, Some(&client_bare), "r"),
                "content-type: application/json|accept: text/event-stream|x-request-id: r|x-api-key: sk-ant-client|anthropic-version: 2023-06-01|anthropic-beta: tools-2024|authorization: Basic dXNlcjpwdw==",
            ),
            (
                spec(BackendKind::Anthropic, Some(&key), None, "r"),
                "content-type: application/json|accept: text/event-stream|x-request-id: r|x-api-key: sk-backend|anthropic-version: 2023-06-01|anthropic-beta: tools-2024|authorization: Basic dXNlcjpwdw==",
            ),
        ];
        for (spec, expected) in cases {
            let mut wire = Vec::new();
            write_headers(&spec, &mut crate::http1::WireHeaders { out: &mut wire });
            let wire = String::from_utf8(wire).unwrap();
            assert_eq!(wire.trim_end().replace("\r\n", "|"), expected);
            let mut map = http::HeaderMap::new();
            write_headers(&spec, &mut map);
            let from_map: Vec<String> = map
                .iter()
                .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
                .collect();
            assert_eq!(from_map.join("|"), expected);
            for name in ["authorization", "x-api-key"] {
                if let Some(value) = map.get(name) {
                    assert!(value.is_sensitive(), "{name}");
                }
            }
            assert!(!map["content-type"].is_sensitive());
        }
    }
}
