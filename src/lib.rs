//! ai-gateway: one binary that serves OpenAI- and Anthropic-compatible endpoints in front of any backend.
//!
//! Modules in reading order, following a request:
//! - `server`, `app`: listener, graceful shutdown, routes and layers;
//! - `http1`: the HTTP/1.1 codec both sides share (framing, heads, request encoding), no I/O;
//! - `http`: front-door handlers, request ids, error bodies per protocol;
//! - `pipeline`: the request path (decode → route → attempts → reply → record);
//! - `auth`, `limits`, `policy`, `cache`, `tokens`, `store`: keys, rate limits and quotas, prompt
//!   policies, response cache, token counting, the state store (process memory or a shared Redis);
//!   `limit_rules`: the limit rules as configured, shared by `auth` and `limits`;
//! - `routing`: model → backend, candidate order, balancing, circuit breakers, live instance state;
//! - `upstream`: echo backend, HTTP calls and fault classification, stream relay;
//! - `protocol`: pure wire formats and canonical types;
//! - `config`, `config_error`, `config_watch`, `state`: validated config, its errors, reload triggers, the
//!   atomically swapped snapshot;
//! - `telemetry`, `docs`, `alerts`: metrics, request logs, stats, OpenAPI, state-change alerts;
//! - `error`, `secret`, `logging`: cross-cutting pieces.

pub mod alerts;
pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub(crate) mod config_error;
pub mod config_watch;
pub mod docs;
pub mod error;
pub mod http;
pub mod http1;
pub mod limit_rules;
pub mod limits;
pub mod logging;
pub(crate) mod offload;
pub mod pipeline;
pub mod policy;
pub mod protocol;
pub mod reload;
pub mod responses_store;
pub mod routing;
pub mod secret;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod upstream;
