//! ai-gateway: one binary that serves OpenAI- and Anthropic-compatible endpoints in front of any backend.

pub mod docs;
pub mod telemetry;
