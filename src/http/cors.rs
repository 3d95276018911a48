//! CORS for browsers: the layer `server.cors_allow_origin` describes, built with each config snapshot
//! so a reload applies a new origin.

use http::HeaderValue;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

/// The CORS layer for `origin`: `*` allows any origin; any other value is the only origin allowed (a
/// value that is not a valid header allows none). Methods, request headers and exposed headers: any.
pub fn layer(origin: &str) -> CorsLayer {
    let layer = if origin == "*" {
        CorsLayer::new().allow_origin(Any)
    } else {
        match HeaderValue::from_str(origin) {
            Ok(value) => CorsLayer::new().allow_origin(AllowOrigin::exact(value)),
            Err(_) => CorsLayer::new(),
        }
    };
    layer
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers(Any)
}
