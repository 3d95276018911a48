//! Front door: thin axum handlers (extract → `pipeline::handle` → response), operational endpoints,
//! and error rendering per inbound protocol.

pub mod admin;
pub mod api;
pub mod cors;
pub mod error_body;

use http::{HeaderMap, HeaderName};

/// Header names the request path uses, built at compile time (a `&str` name is parsed on every use).
pub mod names {
    use super::HeaderName;

    pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
    pub(crate) const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
    pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub(crate) const X_GATEWAY_BACKEND: HeaderName = HeaderName::from_static("x-gateway-backend");
    pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
    pub(crate) const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
    pub(crate) const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");
}

/// The request id: the client's `X-Request-ID` (or `request-id`) when it is a sane token, else a new UUID v4.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    pub fn from_headers(headers: &HeaderMap) -> RequestId {
        let given = headers
            .get(names::X_REQUEST_ID)
            .or_else(|| headers.get(names::REQUEST_ID))
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic()));
        RequestId(match given {
            Some(id) => id.to_owned(),
            None => {
                let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
                uuid::Uuid::new_v4()
                    .hyphenated()
                    .encode_lower(&mut text)
                    .to_owned()
            }
        })
    }
}
