//! Front door: thin axum handlers (extract → `pipeline::handle` → response), operational endpoints,
//! and error rendering per inbound protocol.

pub mod admin;
pub mod api;
pub mod error_body;

use http::HeaderMap;

/// The request id: the client's `X-Request-ID` (or `request-id`) when it is a sane token, else a new UUID v4.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    pub fn from_headers(headers: &HeaderMap) -> RequestId {
        let given = headers
            .get("x-request-id")
            .or_else(|| headers.get("request-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic()));
        RequestId(match given {
            Some(id) => id.to_owned(),
            None => uuid::Uuid::new_v4().to_string(),
        })
    }
}
