//! ai-gateway: one binary that serves OpenAI- and Anthropic-compatible endpoints in front of any backend.

pub mod alerts;
pub mod config_watch;
pub mod routing;
