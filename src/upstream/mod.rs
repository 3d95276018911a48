//! Upstream side: the echo backend, HTTP calls to OpenAI/Anthropic backends with fault classification,
//! and the stream relay that forwards (or converts) SSE chunk by chunk.

pub mod call;
pub mod client;
pub mod echo;
pub mod h1;
pub mod pool;
pub mod relay;
