//! Cross-protocol conversion of requests (canonical → wire), complete responses and error bodies.
//!
//! Everything goes through the canonical types in `protocol/mod.rs` (hub and spoke), so each wire format
//! only knows how to decode into and encode from the hub. What a target format cannot express is dropped
//! on purpose; docs/conversion.md lists it.

use serde_json::Value;

pub use super::ResponseSummary;
use super::{ChatRequest, ChatResponse, DecodeError, Protocol, anthropic, openai, responses};

/// How to render a request for a backend.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestOptions<'a> {
    /// Model name sent upstream; `None` keeps the client's.
    pub model: Option<&'a str>,
    /// `max_tokens` for Anthropic backends when the client gave none (Anthropic requires it).
    pub default_max_tokens: u64,
}

/// Render `req` as an Anthropic Messages body.
pub(crate) fn encode_anthropic_request(
    req: &ChatRequest,
    opts: &RequestOptions<'_>,
) -> Result<Vec<u8>, DecodeError> {
    anthropic::encode_request_bytes(req, opts.model, opts.default_max_tokens)
}

/// Render `req` as an OpenAI chat completions body.
pub(crate) fn encode_openai_request(
    req: &ChatRequest,
    opts: &RequestOptions<'_>,
) -> Result<Vec<u8>, DecodeError> {
    Ok(openai::encode_request_bytes(req, opts.model))
}

/// Render `req` as a Responses API body (for backends that speak it natively).
pub(crate) fn encode_responses_request(
    req: &ChatRequest,
    opts: &RequestOptions<'_>,
) -> Result<Vec<u8>, DecodeError> {
    to_bytes(&responses::encode_request(req, opts.model))
}

fn to_bytes(value: &Value) -> Result<Vec<u8>, DecodeError> {
    serde_json::to_vec(value)
        .map_err(|error| DecodeError::new(format!("cannot serialize body: {error}"), None))
}

/// How to present a converted response to the client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseOptions<'a> {
    /// The gateway's request id, shown as the response id.
    pub id: &'a str,
    /// Model name shown to the client; `None` keeps the backend's.
    pub model: Option<&'a str>,
    /// For Responses clients: the request's members the `response` object repeats
    /// ([`responses::ResponseEcho`]); `None` shows the defaults.
    pub echo: Option<&'a str>,
}

/// Decode a complete response body of `protocol` into canonical form.
pub fn decode_response(protocol: Protocol, body: &[u8]) -> Result<ChatResponse, DecodeError> {
    match protocol {
        Protocol::OpenAi => openai::decode_response(body),
        Protocol::Anthropic => anthropic::decode_response(body),
        Protocol::Responses => responses::decode_response(body),
    }
}

/// Render a canonical response in `protocol`; `created` fills OpenAI's timestamp when unknown.
pub fn encode_response(protocol: Protocol, response: &ChatResponse, created: i64) -> Value {
    match protocol {
        Protocol::OpenAi => openai::encode_response(response, created),
        Protocol::Anthropic => anthropic::encode_response(response),
        Protocol::Responses => {
            serde_json::from_slice(&responses::encode_response_bytes(response, created, ""))
                .unwrap_or_default()
        }
    }
}

/// Convert a complete (non-stream) success body from the backend's protocol to the client's.
pub(crate) fn convert_response(
    from: Protocol,
    to: Protocol,
    body: &[u8],
    opts: &ResponseOptions<'_>,
) -> Result<Vec<u8>, DecodeError> {
    convert_response_at(from, to, body, opts, unix_now())
}

/// [`convert_response`] with an explicit `created` timestamp (deterministic tests, cache replays).
pub(crate) fn convert_response_at(
    from: Protocol,
    to: Protocol,
    body: &[u8],
    opts: &ResponseOptions<'_>,
    created: i64,
) -> Result<Vec<u8>, DecodeError> {
    let mut response = decode_response(from, body)?;
    response.id = opts.id.to_owned();
    if let Some(model) = opts.model {
        response.model = model.to_owned();
    }
    if to == Protocol::Responses {
        return Ok(responses::encode_response_bytes(
            &response,
            created,
            opts.echo.unwrap_or(""),
        ));
    }
    encode_response_bytes(to, &response, created)
}

/// [`encode_response`] written to bytes (OpenAI's without a JSON tree on the way).
pub(crate) fn encode_response_bytes(
    protocol: Protocol,
    response: &ChatResponse,
    created: i64,
) -> Result<Vec<u8>, DecodeError> {
    match protocol {
        Protocol::OpenAi => openai::encode_response_bytes(response, created)
            .map_err(|error| DecodeError::new(format!("cannot serialize body: {error}"), None)),
        Protocol::Anthropic => to_bytes(&anthropic::encode_response(response)),
        Protocol::Responses => Ok(responses::encode_response_bytes(response, created, "")),
    }
}

/// Summarize a complete success body for logs and usage accounting.
pub(crate) fn summarize_response(protocol: Protocol, body: &[u8]) -> Option<ResponseSummary> {
    decode_response(protocol, body)
        .ok()
        .map(|response| ResponseSummary::from_response(&response))
}

/// Seconds since the Unix epoch, for OpenAI's `created`; 0 if the clock is before 1970.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// The error types both protocols share (Anthropic's list; OpenAI clients accept them too).
const ERROR_TYPES: [&str; 9] = [
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
    "timeout_error",
];

/// The error type a status implies when the body does not say.
pub(crate) fn error_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// Normalize an error type from either protocol to the shared list. A generic
/// `invalid_request_error` is refined by the status when it says more: OpenAI answers a bad key with
/// 401 `{"type":"invalid_request_error","code":"invalid_api_key"}`, which is an `authentication_error`.
fn normalize_error_type(kind: Option<&str>, status: u16) -> &'static str {
    let normalized = normalize_error_name(kind, status);
    match (normalized, status) {
        ("invalid_request_error", 401 | 403 | 404 | 413 | 429) => error_type_for_status(status),
        _ => normalized,
    }
}

fn normalize_error_name(kind: Option<&str>, status: u16) -> &'static str {
    match kind {
        Some(kind) => {
            if let Some(known) = ERROR_TYPES.iter().find(|known| **known == kind) {
                return known;
            }
            match kind {
                "server_error" | "internal_error" => "api_error",
                "insufficient_quota" | "rate_limit_exceeded" | "tokens" | "requests" => {
                    "rate_limit_error"
                }
                "invalid_api_key" => "authentication_error",
                "not_found" | "model_not_found" => "not_found_error",
                _ => error_type_for_status(status),
            }
        }
        None => error_type_for_status(status),
    }
}

/// An error body's parts, whichever protocol shaped it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ErrorInfo {
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// Read an error body (OpenAI or Anthropic shape; `_from` only documents intent since both are
/// recognised); unknown shapes become a generic error naming the status.
pub(crate) fn error_info(_from: Protocol, status: u16, body: &[u8]) -> ErrorInfo {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|value| value.get("error"));
    let text = |key: &str| {
        error
            .and_then(|error| error.get(key))
            .and_then(|value| match value {
                Value::String(text) => Some(text.clone()),
                Value::Number(number) => Some(number.to_string()),
                _ => None,
            })
    };
    match error {
        Some(Value::Object(_)) => {
            let kind = text("type");
            let code = text("code");
            // A specific `code` (`invalid_api_key`, `rate_limit_exceeded`, …) says more than a generic type.
            let by_code = code
                .as_deref()
                .map(|code| normalize_error_name(Some(code), 0))
                .filter(|kind| *kind != "api_error");
            ErrorInfo {
                kind: by_code.unwrap_or_else(|| {
                    normalize_error_type(kind.as_deref().or(code.as_deref()), status)
                }),
                message: text("message")
                    .unwrap_or_else(|| format!("upstream returned status {status}")),
                param: text("param"),
                code,
            }
        }
        Some(Value::String(message)) => ErrorInfo {
            kind: error_type_for_status(status),
            message: message.clone(),
            param: None,
            code: None,
        },
        _ => {
            // vLLM/FastAPI shapes: `{"object":"error","message":…,"type":…}` and `{"detail":…}`.
            let top = |key: &str| {
                parsed
                    .as_ref()
                    .and_then(|value| value.get(key))
                    .and_then(Value::as_str)
            };
            match top("message").or_else(|| top("detail")) {
                Some(message) => ErrorInfo {
                    kind: normalize_error_type(top("type"), status),
                    message: message.to_owned(),
                    param: None,
                    code: None,
                },
                None => ErrorInfo {
                    kind: error_type_for_status(status),
                    message: generic_message(status, body),
                    param: None,
                    code: None,
                },
            }
        }
    }
}

fn generic_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!("upstream returned status {status}");
    }
    let mut cut = text.len().min(200);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let ellipsis = if cut < text.len() { "…" } else { "" };
    format!(
        "upstream returned status {status}: {}{ellipsis}",
        &text[..cut]
    )
}

/// Render error parts in `protocol`'s shape.
pub(crate) fn render_error(protocol: Protocol, info: &ErrorInfo) -> Value {
    match protocol {
        // The Responses API answers errors in the OpenAI shape.
        Protocol::OpenAi | Protocol::Responses => openai::error_body(
            &info.message,
            info.kind,
            info.param.as_deref(),
            info.code.as_deref(),
        ),
        Protocol::Anthropic => anthropic::error_body(info.kind, &info.message),
    }
}

/// Convert an upstream error body to the client's protocol. Never fails.
pub(crate) fn convert_error(from: Protocol, to: Protocol, status: u16, body: &[u8]) -> Vec<u8> {
    let info = error_info(from, status, body);
    serde_json::to_vec(&render_error(to, &info)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_convert_both_ways() {
        let openai_body = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let out: Value = serde_json::from_slice(&convert_error(
            Protocol::OpenAi,
            Protocol::Anthropic,
            429,
            openai_body,
        ))
        .unwrap();
        assert_eq!(
            out,
            serde_json::json!({"type":"error","error":{"type":"rate_limit_error","message":"Rate limit reached"}})
        );
        let anthropic_body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let out: Value = serde_json::from_slice(&convert_error(
            Protocol::Anthropic,
            Protocol::OpenAi,
            529,
            anthropic_body,
        ))
        .unwrap();
        assert_eq!(
            out,
            serde_json::json!({"error":{"message":"Overloaded","type":"overloaded_error","param":null,"code":null}})
        );
        let out: Value = serde_json::from_slice(&convert_error(
            Protocol::OpenAi,
            Protocol::Anthropic,
            502,
            b"<html>bad gateway</html>",
        ))
        .unwrap();
        assert_eq!(
            out["error"]["message"],
            "upstream returned status 502: <html>bad gateway</html>"
        );
        assert_eq!(out["error"]["type"], "api_error");
        let out: Value = serde_json::from_slice(&convert_error(
            Protocol::Anthropic,
            Protocol::OpenAi,
            401,
            b"",
        ))
        .unwrap();
        assert_eq!(out["error"]["message"], "upstream returned status 401");
        assert_eq!(out["error"]["type"], "authentication_error");
        let vllm = br#"{"object":"error","message":"max_tokens is too large","type":"BadRequestError","param":null,"code":400}"#;
        let info = error_info(Protocol::OpenAi, 400, vllm);
        assert_eq!(
            (info.kind, info.message.as_str()),
            ("invalid_request_error", "max_tokens is too large")
        );
        let openai_401 = br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let info = error_info(Protocol::OpenAi, 401, openai_401);
        assert_eq!(info.kind, "authentication_error");
        let generic_403 = br#"{"error":{"message":"no","type":"invalid_request_error"}}"#;
        assert_eq!(
            error_info(Protocol::OpenAi, 403, generic_403).kind,
            "permission_error"
        );
        let fastapi = br#"{"detail":"Not Found"}"#;
        let info = error_info(Protocol::OpenAi, 404, fastapi);
        assert_eq!(
            (info.kind, info.message.as_str()),
            ("not_found_error", "Not Found")
        );
    }

    #[test]
    fn summary_of_a_tool_call_response() {
        let body = br#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        let summary = summarize_response(Protocol::OpenAi, body).unwrap();
        assert_eq!(summary.tool_calls.len(), 1);
        assert_eq!(
            summary.finish_reason,
            Some(super::super::FinishReason::ToolCalls)
        );
        assert_eq!(summary.usage.unwrap().output_tokens, 4);
        assert!(summarize_response(Protocol::Anthropic, b"nope").is_none());
    }
}
