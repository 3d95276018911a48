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

use super::client::{Failure, HttpClient, Response, Target, read_body};

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
    pub fn is_timeout(&self) -> bool {
        matches!(self, Fault::Timeout(_))
    }

    pub fn rate_limited(&self) -> Option<Option<Duration>> {
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
    pub fn kind_str(&self) -> &'static str {
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

pub async fn send(client: &HttpClient, spec: CallSpec<'_>) -> Result<Reply, Fault> {
    let mut request = http::Request::new(spec.body);
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = spec.target.uri.clone();
    let headers = request.headers_mut();
    headers.reserve(6);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static(if spec.stream {
            "text/event-stream"
        } else {
            "application/json"
        }),
    );
    if let Ok(id) = HeaderValue::from_str(spec.request_id) {
        headers.insert(crate::http::names::X_REQUEST_ID, id);
    }
    match spec.kind {
        BackendKind::Anthropic => {
            if let Some(key) = spec
                .api_key
                .and_then(|k| HeaderValue::from_str(k.expose()).ok())
            {
                headers.insert(crate::http::names::X_API_KEY, sensitive(key));
            } else if let Some(auth) = spec.passthrough_auth {
                // The client's own credential: a bearer token stays `Authorization` (OAuth), a bare
                // key (from the client's `x-api-key`) is sent as `x-api-key`, as Anthropic expects.
                let name = if is_bearer(auth) {
                    header::AUTHORIZATION
                } else {
                    crate::http::names::X_API_KEY
                };
                headers.insert(name, sensitive(auth.clone()));
            }
            if let Ok(version) = HeaderValue::from_str(spec.anthropic_version) {
                headers.insert(crate::http::names::ANTHROPIC_VERSION, version);
            }
            if let Some(beta) = spec.anthropic_beta {
                headers.insert(crate::http::names::ANTHROPIC_BETA, beta.clone());
            }
        }
        BackendKind::OpenAi | BackendKind::Echo => {
            if let Some(key) = spec
                .api_key
                .and_then(|k| HeaderValue::from_str(&format!("Bearer {}", k.expose())).ok())
            {
                headers.insert(header::AUTHORIZATION, sensitive(key));
            } else if let Some(auth) = spec.passthrough_auth {
                // A bare key (an Anthropic client's `x-api-key`) becomes a bearer token.
                let value = if is_bearer(auth) {
                    Some(auth.clone())
                } else {
                    auth.to_str()
                        .ok()
                        .and_then(|key| HeaderValue::from_str(&format!("Bearer {key}")).ok())
                };
                if let Some(value) = value {
                    headers.insert(header::AUTHORIZATION, sensitive(value));
                }
            }
        }
    }
    if let Some(basic) = &spec.target.basic_auth
        && !headers.contains_key(header::AUTHORIZATION)
    {
        headers.insert(header::AUTHORIZATION, basic.clone());
    }
    let response = match client.send_within(request, spec.timeout).await {
        Err(Failure::Timeout) => return Err(Fault::Timeout(spec.timeout)),
        Err(Failure::Connect(detail)) => return Err(Fault::Connect(detail)),
        Ok(response) => response,
    };
    let status = response.status().as_u16();
    if response.status().is_success() {
        return Ok(Reply::Success(response));
    }
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let body = match tokio::time::timeout(spec.timeout, read_body(response.into_body())).await {
        Ok(Ok(body)) => body,
        _ => Bytes::new(),
    };
    if status == 429 || !(400..500).contains(&status) {
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

fn is_bearer(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
}

fn sensitive(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
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
}
