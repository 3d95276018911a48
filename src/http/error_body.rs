//! Render a `GatewayError` in the client's protocol: OpenAI (and Responses) `{"error":{message,type,param,code}}` or
//! Anthropic `{"type":"error","error":{type,message}}`, with `Retry-After` and the error's extensions.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, header};

use crate::error::{ErrorKind, GatewayError};
use crate::protocol::{Protocol, openai};

pub fn response(protocol: Protocol, error: &GatewayError) -> Response {
    let body = match protocol {
        // The Responses API answers errors in the OpenAI shape.
        Protocol::OpenAi | Protocol::Responses => openai::error_body(
            &error.message,
            openai_type(error.kind),
            error.param.as_deref(),
            Some(error.kind_str()),
        ),
        Protocol::Anthropic => serde_json::json!({
            "type": "error",
            "error": {"type": anthropic_type(error.kind), "message": error.message},
        }),
    };
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(retry_after) = error.retry_after {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    *response.extensions_mut() = error.extensions.clone();
    response
}

fn openai_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::PayloadTooLarge
        | ErrorKind::RequestTimeout
        | ErrorKind::UnsupportedMediaType
        | ErrorKind::PolicyViolation
        | ErrorKind::MethodNotAllowed => "invalid_request_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::Unauthorized => "authentication_error",
        ErrorKind::Forbidden => "permission_error",
        ErrorKind::RateLimited | ErrorKind::UpstreamRateLimited => "rate_limit_error",
        ErrorKind::QuotaExceeded => "insufficient_quota",
        ErrorKind::UpstreamTimeout
        | ErrorKind::UpstreamUnavailable
        | ErrorKind::ServiceUnavailable
        | ErrorKind::Overloaded
        | ErrorKind::Internal => "server_error",
    }
}

fn anthropic_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::RequestTimeout
        | ErrorKind::UnsupportedMediaType
        | ErrorKind::PolicyViolation
        | ErrorKind::MethodNotAllowed => "invalid_request_error",
        ErrorKind::PayloadTooLarge => "request_too_large",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::Unauthorized => "authentication_error",
        ErrorKind::Forbidden => "permission_error",
        ErrorKind::RateLimited | ErrorKind::QuotaExceeded | ErrorKind::UpstreamRateLimited => {
            "rate_limit_error"
        }
        ErrorKind::UpstreamTimeout => "timeout_error",
        ErrorKind::ServiceUnavailable | ErrorKind::Overloaded => "overloaded_error",
        ErrorKind::UpstreamUnavailable | ErrorKind::Internal => "api_error",
    }
}
