//! ai-gateway: one binary that serves OpenAI- and Anthropic-compatible endpoints in front of any backend.

pub mod auth;
pub mod cache;
pub mod limits;
pub mod policy;
pub mod shared_state;
pub mod tokens;
