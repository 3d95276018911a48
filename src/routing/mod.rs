//! Routing: model name → backend, and the ordered list of upstream candidates for one request.

pub mod route;
