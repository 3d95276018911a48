//! `GatewayError`: every failure the gateway itself reports, with its consequences (status, source,
//! retryability, metrics kind). Rendering per front door lives in `http::error_body`. Also `describe`,
//! any error with its chain of causes as one line.

use std::time::Duration;

use http::StatusCode;

/// What went wrong, as a closed set. HTTP status and retryability come from one `match` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed or invalid request body or parameters.
    InvalidRequest,
    PayloadTooLarge,
    /// The request body stopped arriving (`server.body_timeout_s`).
    RequestTimeout,
    UnsupportedMediaType,
    NotFound,
    MethodNotAllowed,
    /// No or unknown API key.
    Unauthorized,
    /// The key may not use this model or route.
    Forbidden,
    RateLimited,
    QuotaExceeded,
    /// A prompt policy refused the request.
    PolicyViolation,
    /// The upstream did not answer within `timeout_s` (or went idle mid-stream).
    UpstreamTimeout,
    /// Connect refused/reset, 5xx, or a broken response from the upstream.
    UpstreamUnavailable,
    /// Every candidate answered 429.
    UpstreamRateLimited,
    /// Shared state (Redis) unreachable while `fail_closed`.
    ServiceUnavailable,
    /// Every instance of the backend was at its `max_in_flight` and the wait queue was full, or the wait
    /// for a slot ran out.
    Overloaded,
    Internal,
}

/// A request body that stopped arriving: no byte of it for this long (`server.body_timeout_s`). The
/// error an HTTP/2 request body fails with; answered 408.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the request body stopped arriving: nothing of it came for {} s (server.body_timeout_s)",
    .0.as_secs_f64()
)]
pub(crate) struct BodyTimeout(pub Duration);

/// Who caused an error: decides what is logged at which level and what is counted as an upstream fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    Client,
    Upstream,
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: String,
    /// The offending request field, when one is to blame.
    pub param: Option<String>,
    /// Sent as `Retry-After` (seconds, rounded up).
    pub retry_after: Option<Duration>,
    /// What the error's response carries in its extensions (a limit's refusal: its `x-ratelimit-*`
    /// headers, which reach the wire the way an admitted request's do).
    pub extensions: http::Extensions,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError {
            kind,
            message: message.into(),
            param: None,
            retry_after: None,
            extensions: http::Extensions::new(),
        }
    }

    pub fn invalid(message: impl Into<String>, param: Option<String>) -> Self {
        GatewayError {
            param,
            ..GatewayError::new(ErrorKind::InvalidRequest, message)
        }
    }

    pub(crate) fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::InvalidRequest | ErrorKind::PolicyViolation => StatusCode::BAD_REQUEST,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::RateLimited | ErrorKind::QuotaExceeded | ErrorKind::UpstreamRateLimited => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ErrorKind::ServiceUnavailable | ErrorKind::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn source(&self) -> ErrorSource {
        match self.kind {
            ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamRateLimited => ErrorSource::Upstream,
            ErrorKind::ServiceUnavailable | ErrorKind::Internal => ErrorSource::Internal,
            _ => ErrorSource::Client,
        }
    }

    /// Stable short name, used as a metrics label and an error `code`.
    pub(crate) fn kind_str(&self) -> &'static str {
        match self.kind {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::RateLimited => "rate_limit_exceeded",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::PolicyViolation => "policy_violation",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::UpstreamRateLimited => "upstream_rate_limited",
            ErrorKind::ServiceUnavailable => "service_unavailable",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Internal => "internal_error",
        }
    }
}

/// An error with its chain of causes, `a: b: c`.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
