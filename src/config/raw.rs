//! `RawConfig`: the serde mirror of the config file, after dialect translation. All defaults live here.
//!
//! Sections owned by other modules (limits, cache, logs, alerts…) are kept as JSON values here and
//! decoded by their owners during validation, so each module keeps its own schema.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub default_backend: Option<String>,
    #[serde(default)]
    pub backends: IndexMap<String, RawBackend>,
    #[serde(default)]
    pub models: IndexMap<String, RawModelTarget>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub logging: RawLogging,
    pub rate_limit: Option<Value>,
    pub keys: Option<Value>,
    pub cache: Option<Value>,
    pub request_log: Option<Value>,
    pub metrics: Option<Value>,
    pub alerts: Option<Value>,
    pub policies: Option<Value>,
    pub state: Option<Value>,
    pub responses: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawServer {
    pub host: String,
    pub port: u16,
    pub max_body_bytes: usize,
    /// Largest upstream answer (or error body) read whole; streams are bounded per event instead.
    pub max_upstream_body_bytes: usize,
    /// How long in-flight requests and streams may run after SIGTERM before the process exits anyway.
    pub shutdown_grace_s: f64,
    /// A new connection's wait for its first byte, and a request head's from its first byte to its end.
    pub header_timeout_s: f64,
    /// A keep-alive connection's wait between requests (HTTP/2: with no stream open).
    pub idle_timeout_s: f64,
    /// The longest gap between two reads of a request body.
    pub body_timeout_s: f64,
    pub cors_allow_origin: String,
    /// Peers whose `X-Forwarded-For` first hop is trusted as the client address.
    pub trusted_proxies: Vec<String>,
    /// Without any configured key, `/admin/*` answers only clients on this machine unless this is set.
    pub admin_open: bool,
    /// Runtime worker threads; absent means one per available core. `1` runs a single-threaded runtime
    /// (the cheapest per request when the gateway is pinned to one core).
    pub workers: Option<usize>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            host: "0.0.0.0".into(),
            port: 8080,
            max_body_bytes: 10 * 1024 * 1024,
            max_upstream_body_bytes: 64 * 1024 * 1024,
            shutdown_grace_s: 30.0,
            header_timeout_s: 30.0,
            idle_timeout_s: 60.0,
            body_timeout_s: 60.0,
            cors_allow_origin: "*".into(),
            trusted_proxies: Vec::new(),
            admin_open: false,
            workers: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// Present in the list form of `backends` (seed 003); must match the map key otherwise.
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: Option<String>,
    pub api_key: Option<String>,
    pub model: Option<String>,
    pub instances: Option<Vec<RawInstance>>,
    pub load_balancing: Option<String>,
    #[serde(alias = "timeout")]
    pub timeout_s: Option<f64>,
    pub stream_idle_timeout_s: Option<f64>,
    pub retries: Option<u32>,
    #[serde(default)]
    pub fallback: Vec<String>,
    pub health: Option<Value>,
    /// `max_tokens` sent to Anthropic backends when an OpenAI client omitted it.
    pub max_tokens: Option<u64>,
    pub anthropic_version: Option<String>,
    /// Echo only: pause between streamed chunks, for a visible typewriter effect.
    pub chunk_delay_ms: Option<u64>,
    /// OpenAI only: the backend serves `/v1/responses` itself (OpenAI, recent vLLM), so Responses
    /// requests are passed through instead of converted to chat completions.
    pub native_responses: Option<bool>,
    /// `prefix_affinity` settings (decoded by `routing::affinity`).
    pub affinity: Option<Value>,
    /// Scraping of the instances' own load metrics (decoded by `routing::engine_load`).
    pub engine_load: Option<Value>,
    /// Requests in flight per instance at most (instances may override it); beyond, requests wait.
    pub max_in_flight: Option<u32>,
    /// The wait for a slot when every instance is at its `max_in_flight` (decoded by `routing::admission`).
    pub queue: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstance {
    pub url: String,
    pub weight: Option<u32>,
    pub api_key: Option<String>,
    #[serde(alias = "model_name")]
    pub model: Option<String>,
    pub max_in_flight: Option<u32>,
}

/// `alias: backend` or `alias: { backend, model }` (strings are normalized to the object form first).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModelTarget {
    pub backend: String,
    pub model: Option<String>,
}

/// A per-endpoint default backend (seed 002's `[[routes]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub path: String,
    pub backend: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLogging {
    pub level: String,
    pub format: String,
    /// One access line per request at info level.
    pub access_log: bool,
}

impl Default for RawLogging {
    fn default() -> Self {
        RawLogging {
            level: "info".into(),
            format: "pretty".into(),
            access_log: true,
        }
    }
}
