//! The validated configuration: what the rest of the gateway reads. Built from `RawConfig` by
//! `Config::try_from_raw`; code after loading never re-checks what is guaranteed here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use super::raw::{RawBackend, RawConfig};
use crate::alerts::AlertsConfig;
use crate::auth::{KeyConfig, KeyStore};
use crate::cache::CacheConfig;
use crate::config_error::Invalid;
use crate::limit_rules::RateLimitConfig;
use crate::limits::LimitRules;
use crate::policy::{Policy, PolicyConfig};
use crate::protocol::Endpoint;
use crate::responses_store::ResponsesConfig;
use crate::routing::admission::QueueConfig;
use crate::routing::affinity::AffinityConfig;
use crate::routing::balance::Strategy;
use crate::routing::engine_load::EngineLoadConfig;
use crate::routing::health::HealthConfig;
use crate::secret::{Secret, redact_userinfo};
use crate::store::StateConfig;
use crate::telemetry::metrics::MetricsConfig;
use crate::telemetry::request_log::RequestLogConfig;
use crate::upstream::client::Target;

/// The whole validated config. Immutable; a reload builds a new one.
#[derive(Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub backends: Vec<BackendConfig>,
    /// Index into `backends`.
    pub default_backend: usize,
    /// Public model name → target.
    pub models: HashMap<String, ModelTarget>,
    /// Alias names in file order, for `/v1/models`.
    pub model_names: Vec<String>,
    /// Per-endpoint default backends (seed 002 routes), before `default_backend`.
    pub endpoint_defaults: HashMap<Endpoint, usize>,
    pub logging: LoggingConfig,
    pub alerts: AlertsConfig,
    pub request_log: RequestLogConfig,
    pub metrics: MetricsConfig,
    pub keys: Vec<KeyConfig>,
    pub rate_limit: RateLimitConfig,
    pub cache: CacheConfig,
    pub policies: PolicyConfig,
    pub state: StateConfig,
    pub responses: ResponsesConfig,
    /// Built from `keys`, `rate_limit` and `policies` while validating them; the snapshot takes them.
    parts: Parts,
}

/// What validation builds from the config and the snapshot takes as is, so nothing is built twice:
/// the key store, the compiled limit rules (bound to the state store by the snapshot) and the policy.
#[derive(Debug, Default)]
pub(crate) struct Parts {
    pub(crate) keys: KeyStore,
    pub(crate) limits: LimitRules,
    pub(crate) policy: Policy,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub max_body_bytes: usize,
    /// Largest upstream answer or error body buffered; a longer one is a 502 naming the limit.
    pub max_upstream_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// A new connection's wait for its first byte (then closed), and a head's from its first byte to
    /// its end (then 408).
    pub header_timeout: Duration,
    /// A keep-alive connection's wait between requests (HTTP/2: with no stream open); then closed.
    pub idle_timeout: Duration,
    /// The longest gap between two reads of a request body (then 408).
    pub body_timeout: Duration,
    pub cors_allow_origin: String,
    pub trusted_proxies: Vec<IpAddr>,
    /// `/admin/*` open to every client when no key is configured (else loopback clients only).
    pub admin_open: bool,
    pub workers: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub level: String,
    pub json: bool,
    pub access_log: bool,
}

/// Where a public model name goes.
#[derive(Debug, Clone)]
pub struct ModelTarget {
    pub backend: usize,
    /// Model name sent upstream instead of the client's.
    pub model: Option<String>,
}

/// The closed set of backend kinds (seed aliases are mapped at load time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Echo,
    OpenAi,
    Anthropic,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Echo => "echo",
            BackendKind::OpenAi => "openai",
            BackendKind::Anthropic => "anthropic",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    pub kind: BackendKind,
    /// Never empty for OpenAi/Anthropic; empty for Echo.
    pub instances: Vec<InstanceConfig>,
    /// Model name sent upstream for every request to this backend, unless an alias sets one.
    pub model: Option<String>,
    pub load_balancing: Strategy,
    /// Bound on the wait for the upstream's response headers.
    pub timeout: Duration,
    /// Bound on the gap between two stream events.
    pub stream_idle_timeout: Duration,
    /// Extra attempts on other instances of this backend after the first one failed.
    pub retries: u32,
    /// Backends tried in order once every instance of this one failed (indexes into `Config::backends`).
    pub fallback: Vec<usize>,
    pub health: HealthConfig,
    pub max_tokens: u64,
    pub anthropic_version: String,
    pub chunk_delay: Duration,
    /// Responses requests are passed through (`native_responses: true`; OpenAI-type backends only).
    pub native_responses: bool,
    /// Set when `load_balancing` is `prefix_affinity` (defaults when the section is absent).
    pub affinity: Option<AffinityConfig>,
    /// Set when `engine_load:` is written and not disabled.
    pub engine_load: Option<EngineLoadConfig>,
    /// The wait for a slot; used when some instance has a `max_in_flight`.
    pub queue: QueueConfig,
}

#[derive(Clone)]
pub struct InstanceConfig {
    /// Base URL ending in the API version path (`http://h:8000/v1`), no trailing slash. It may carry
    /// credentials (userinfo), so Debug shows `display` in its place.
    pub base_url: String,
    /// The base URL without credentials, safe to show in `/health`, logs and errors.
    pub display: String,
    pub weight: u32,
    pub api_key: Option<Secret>,
    pub model: Option<String>,
    /// Requests in flight at most (the instance's own or the backend's `max_in_flight`).
    pub max_in_flight: Option<u32>,
    /// Endpoint URLs parsed once at load, so no request pays for URL parsing.
    pub urls: EndpointUrls,
}

impl std::fmt::Debug for InstanceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceConfig")
            .field("url", &self.display)
            .field("weight", &self.weight)
            .field("api_key", &self.api_key)
            .field("model", &self.model)
            .field("max_in_flight", &self.max_in_flight)
            .field("urls", &self.urls)
            .finish()
    }
}

/// The upstream URL of each API path under an instance's base URL.
#[derive(Debug, Clone)]
pub struct EndpointUrls {
    pub chat_completions: Target,
    pub completions: Target,
    pub embeddings: Target,
    pub messages: Target,
    pub responses: Target,
}

impl EndpointUrls {
    fn new(path: &str, base: &str) -> Result<EndpointUrls, Invalid> {
        let parse = |suffix: &str| {
            Target::parse(&format!("{base}{suffix}")).map_err(|error| {
                Invalid::new(
                    path,
                    redact_userinfo(&format!("'{base}{suffix}' is not a valid URL ({error})")),
                )
            })
        };
        Ok(EndpointUrls {
            chat_completions: parse("/chat/completions")?,
            completions: parse("/completions")?,
            embeddings: parse("/embeddings")?,
            messages: parse("/messages")?,
            responses: parse("/responses")?,
        })
    }
}

impl Config {
    pub(crate) fn try_from_raw(raw: RawConfig) -> Result<Config, Invalid> {
        let names: Vec<String> = raw.backends.keys().cloned().collect();
        let index_of = |name: &str| names.iter().position(|n| n == name);
        if names.is_empty() {
            return Err(Invalid::new(
                "backends",
                "at least one backend is required, e.g. `backends: { local: { type: echo } }`",
            ));
        }
        let mut backends = Vec::with_capacity(names.len());
        for (name, backend) in &raw.backends {
            backends.push(backend_from_raw(name, backend, &names)?);
        }
        let default_backend = match &raw.default_backend {
            Some(name) => index_of(name).ok_or_else(|| {
                Invalid::new(
                    "default_backend",
                    format!(
                        "unknown backend '{name}'; configured backends: {}",
                        names.join(", ")
                    ),
                )
            })?,
            None => 0,
        };
        let mut models = HashMap::new();
        let mut model_names = Vec::new();
        for (alias, target) in &raw.models {
            let backend = index_of(&target.backend).ok_or_else(|| {
                Invalid::new(
                    format!("models.{alias}"),
                    format!(
                        "unknown backend '{}'; configured backends: {}",
                        target.backend,
                        names.join(", ")
                    ),
                )
            })?;
            models.insert(
                alias.clone(),
                ModelTarget {
                    backend,
                    model: target.model.clone(),
                },
            );
            model_names.push(alias.clone());
        }
        let mut endpoint_defaults = HashMap::new();
        for (i, route) in raw.routes.iter().enumerate() {
            let endpoint = match route.path.trim_end_matches('/') {
                "/v1/chat/completions" => Endpoint::ChatCompletions,
                "/v1/completions" => Endpoint::Completions,
                "/v1/embeddings" => Endpoint::Embeddings,
                "/v1/messages" => Endpoint::Messages,
                "/v1/responses" => Endpoint::Responses,
                other => {
                    return Err(Invalid::new(
                        format!("routes[{i}].path"),
                        format!(
                            "unknown path '{other}'; expected /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/messages or /v1/responses"
                        ),
                    ));
                }
            };
            let backend = index_of(&route.backend).ok_or_else(|| {
                Invalid::new(
                    format!("routes[{i}].backend"),
                    format!(
                        "unknown backend '{}'; configured backends: {}",
                        route.backend,
                        names.join(", ")
                    ),
                )
            })?;
            endpoint_defaults.insert(endpoint, backend);
        }
        let server = &raw.server;
        if server.max_body_bytes == 0 {
            return Err(Invalid::new(
                "server.max_body_bytes",
                "must be greater than 0",
            ));
        }
        if server.max_upstream_body_bytes == 0 {
            return Err(Invalid::new(
                "server.max_upstream_body_bytes",
                "must be greater than 0",
            ));
        }
        let mut trusted_proxies = Vec::new();
        for (i, proxy) in server.trusted_proxies.iter().enumerate() {
            trusted_proxies.push(proxy.parse::<IpAddr>().map_err(|_| {
                Invalid::new(
                    format!("server.trusted_proxies[{i}]"),
                    format!("'{proxy}' is not an IP address"),
                )
            })?);
        }
        let mut alerts: AlertsConfig = section("alerts", raw.alerts.clone())?;
        // `webhook_url: "${ALERT_WEBHOOK:-}"` with the variable unset means no webhook.
        if alerts
            .webhook_url
            .as_deref()
            .is_some_and(|url| url.trim().is_empty())
        {
            alerts.webhook_url = None;
        }
        alerts.validate()?;
        let request_log: RequestLogConfig = section("request_log", raw.request_log.clone())?;
        request_log
            .validate()
            .map_err(|error| Invalid::new("request_log", error.to_string()))?;
        let metrics: MetricsConfig = section("metrics", raw.metrics.clone())?;
        let keys: Vec<KeyConfig> = section("keys", raw.keys.clone())?;
        let key_store = KeyStore::new(&keys)?;
        let rate_limit: RateLimitConfig = section("rate_limit", raw.rate_limit.clone())?;
        let limits = LimitRules::new(&rate_limit, &keys)?;
        let cache: CacheConfig = section("cache", raw.cache.clone())?;
        cache.validate()?;
        let policies: PolicyConfig = section("policies", raw.policies.clone())?;
        let policy = Policy::new(&policies)?;
        let state: StateConfig = section("state", raw.state.clone())?;
        state.validate()?;
        let responses: ResponsesConfig = section("responses", raw.responses.clone())?;
        responses.validate()?;
        let logging = &raw.logging;
        let json = match logging.format.as_str() {
            "json" => true,
            "pretty" | "text" | "compact" => false,
            other => {
                return Err(Invalid::new(
                    "logging.format",
                    format!("unknown format '{other}'; expected json or pretty"),
                ));
            }
        };
        Ok(Config {
            server: ServerConfig {
                host: server.host.clone(),
                port: server.port,
                max_body_bytes: server.max_body_bytes,
                max_upstream_body_bytes: server.max_upstream_body_bytes,
                shutdown_grace: seconds("server.shutdown_grace_s", server.shutdown_grace_s)?,
                header_timeout: seconds("server.header_timeout_s", server.header_timeout_s)?,
                idle_timeout: seconds("server.idle_timeout_s", server.idle_timeout_s)?,
                body_timeout: seconds("server.body_timeout_s", server.body_timeout_s)?,
                cors_allow_origin: server.cors_allow_origin.clone(),
                trusted_proxies,
                admin_open: server.admin_open,
                workers: match server.workers {
                    Some(0) => return Err(Invalid::new("server.workers", "must be at least 1")),
                    other => other,
                },
            },
            backends,
            default_backend,
            models,
            model_names,
            endpoint_defaults,
            logging: LoggingConfig {
                level: logging.level.clone(),
                json,
                access_log: logging.access_log,
            },
            alerts,
            request_log,
            metrics,
            keys,
            rate_limit,
            cache,
            policies,
            state,
            responses,
            parts: Parts {
                keys: key_store,
                limits,
                policy,
            },
        })
    }

    /// The parts validation built, for the snapshot: called once, by `AppState` as it hands the config
    /// to a new snapshot (empty parts are left behind).
    pub(crate) fn take_parts(&mut self) -> Parts {
        std::mem::take(&mut self.parts)
    }

    /// The optional features this config turns on, one `name: setting` per entry, for the start-up
    /// log line and `ai-gateway check` (a section that is written is on unless it says
    /// `enabled: false`; this says which are).
    pub fn features(&self) -> Vec<String> {
        let on_off = |on: bool| if on { "on" } else { "off" };
        let log = &self.request_log;
        let mut features = vec![if log.enabled {
            format!("request_log: on ({}, {:?})", log.dir.display(), log.format)
        } else {
            "request_log: off".to_owned()
        }];
        features.push(if self.cache.enabled {
            format!(
                "cache: on (ttl {} s, {} entries)",
                self.cache.ttl_s, self.cache.max_entries
            )
        } else {
            "cache: off".to_owned()
        });
        features.push(format!("metrics: {}", on_off(self.metrics.enabled)));
        let limits = &self.rate_limit;
        let scopes: Vec<&str> = [
            ("per_ip", limits.per_ip.is_some()),
            ("per_key", limits.per_key.is_some()),
            ("per_key_model", limits.per_key_model.is_some()),
            ("global", limits.global.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        features.push(match scopes.is_empty() {
            true => "rate_limit: off".to_owned(),
            false => format!("rate_limit: {}", scopes.join(", ")),
        });
        features.push(match self.keys.len() {
            0 => "keys: off (open gateway)".to_owned(),
            n => format!("keys: {n}"),
        });
        let policies = &self.policies;
        let policy_on = policies.max_input_tokens.is_some()
            || !policies.block_patterns.is_empty()
            || !policies.redact_patterns.is_empty();
        features.push(format!("policies: {}", on_off(policy_on)));
        features.push(format!(
            "alerts: {}",
            match self.alerts.webhook_url {
                Some(_) => "webhook + error log",
                None => "error log",
            }
        ));
        features.push(match self.state.redis_url {
            Some(_) => "state: redis".to_owned(),
            None => "state: memory".to_owned(),
        });
        features
    }

    pub(crate) fn backend_index(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == name)
    }
}

/// Decode a section owned by another module; errors carry the path inside the section.
pub(crate) fn section<T: serde::de::DeserializeOwned + Default>(
    name: &str,
    value: Option<Value>,
) -> Result<T, Invalid> {
    match value {
        None | Some(Value::Null) => Ok(T::default()),
        Some(value) => serde_path_to_error::deserialize(value).map_err(|error| {
            let inner = error.path().to_string();
            let path = if inner.is_empty() || inner == "." {
                name.to_owned()
            } else {
                format!("{name}.{inner}")
            };
            Invalid::new(path, error.into_inner().to_string())
        }),
    }
}

fn seconds(path: &str, value: f64) -> Result<Duration, Invalid> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Invalid::new(
                path,
                format!("expected a positive number of seconds, got {value}"),
            )
        })
}

fn backend_from_raw(
    name: &str,
    raw: &RawBackend,
    names: &[String],
) -> Result<BackendConfig, Invalid> {
    let path = format!("backends.{name}");
    let kind = match raw.kind.as_str() {
        "echo" | "local" => BackendKind::Echo,
        "openai" | "http" | "vllm" | "remote" | "modal" | "llamacpp" | "llama.cpp" | "ollama"
        | "openai-chat" | "openai_compatible" => BackendKind::OpenAi,
        "anthropic" => BackendKind::Anthropic,
        other => {
            return Err(Invalid::new(
                format!("{path}.type"),
                format!(
                    "unknown backend type '{other}'; expected echo, openai or anthropic (aliases: local, http, vllm, remote, modal)"
                ),
            ));
        }
    };
    let mut instances = Vec::new();
    if kind != BackendKind::Echo {
        match (&raw.instances, &raw.url) {
            (Some(list), _) if !list.is_empty() => {
                for (i, instance) in list.iter().enumerate() {
                    let ipath = format!("{path}.instances[{i}]");
                    let weight = instance.weight.unwrap_or(1);
                    if weight == 0 {
                        return Err(Invalid::new(
                            format!("{ipath}.weight"),
                            "must be at least 1",
                        ));
                    }
                    let (base_url, display) =
                        normalize_url(&format!("{ipath}.url"), &instance.url)?;
                    let urls = EndpointUrls::new(&format!("{ipath}.url"), &base_url)?;
                    instances.push(InstanceConfig {
                        urls,
                        base_url,
                        display,
                        weight,
                        api_key: instance
                            .api_key
                            .clone()
                            .or_else(|| raw.api_key.clone())
                            .filter(|k| !k.is_empty())
                            .map(Secret::new),
                        model: instance.model.clone(),
                        max_in_flight: instance.max_in_flight.or(raw.max_in_flight),
                    });
                }
            }
            (_, Some(url)) => {
                let (base_url, display) = normalize_url(&format!("{path}.url"), url)?;
                let urls = EndpointUrls::new(&format!("{path}.url"), &base_url)?;
                instances.push(InstanceConfig {
                    urls,
                    base_url,
                    display,
                    weight: 1,
                    api_key: raw
                        .api_key
                        .clone()
                        .filter(|k| !k.is_empty())
                        .map(Secret::new),
                    model: None,
                    max_in_flight: raw.max_in_flight,
                });
            }
            _ => {
                return Err(Invalid::new(
                    path,
                    format!(
                        "a backend of type {} needs `url` or a non-empty `instances` list",
                        kind.as_str()
                    ),
                ));
            }
        }
    }
    let load_balancing = match &raw.load_balancing {
        None => Strategy::default(),
        Some(name) => serde_json::from_value::<Strategy>(Value::String(name.clone())).map_err(|_| {
            Invalid::new(
                format!("{path}.load_balancing"),
                format!("unknown strategy '{name}'; expected round_robin, weighted, least_connections, latency or prefix_affinity"),
            )
        })?,
    };
    let affinity = match (load_balancing, &raw.affinity) {
        (Strategy::PrefixAffinity, value) => {
            let cfg: AffinityConfig = section(&format!("{path}.affinity"), value.clone())?;
            cfg.validate().map_err(|error| error.under(&path))?;
            Some(cfg)
        }
        (_, None | Some(Value::Null)) => None,
        (other, Some(_)) => {
            return Err(Invalid::new(
                format!("{path}.affinity"),
                format!(
                    "affinity settings apply to load_balancing: prefix_affinity, not {}",
                    other.as_str()
                ),
            ));
        }
    };
    let engine_load: Option<EngineLoadConfig> = match &raw.engine_load {
        None | Some(Value::Null) => None,
        Some(value) => {
            let cfg: EngineLoadConfig =
                section(&format!("{path}.engine_load"), Some(value.clone()))?;
            cfg.validate().map_err(|error| error.under(&path))?;
            cfg.enabled.then_some(cfg)
        }
    };
    if raw.max_in_flight == Some(0) || instances.iter().any(|i| i.max_in_flight == Some(0)) {
        return Err(Invalid::new(
            format!("{path}.max_in_flight"),
            "must be at least 1 (leave it out for no cap)",
        ));
    }
    let queue: QueueConfig = section(&format!("{path}.queue"), raw.queue.clone())?;
    queue.validate().map_err(|error| error.under(&path))?;
    if raw.queue.is_some() && instances.iter().all(|i| i.max_in_flight.is_none()) {
        return Err(Invalid::new(
            format!("{path}.queue"),
            "a queue needs max_in_flight on the backend or its instances (requests wait for a free slot)",
        ));
    }
    let health: HealthConfig = section(&format!("{path}.health"), raw.health.clone())?;
    health.validate().map_err(|error| error.under(&path))?;
    let mut fallback = Vec::new();
    for (i, other) in raw.fallback.iter().enumerate() {
        let index = names.iter().position(|n| n == other).ok_or_else(|| {
            Invalid::new(
                format!("{path}.fallback[{i}]"),
                format!(
                    "unknown backend '{other}'; configured backends: {}",
                    names.join(", ")
                ),
            )
        })?;
        if other == name {
            return Err(Invalid::new(
                format!("{path}.fallback[{i}]"),
                "a backend cannot fall back to itself",
            ));
        }
        fallback.push(index);
    }
    let native_responses = raw.native_responses.unwrap_or(false);
    if native_responses && kind != BackendKind::OpenAi {
        return Err(Invalid::new(
            format!("{path}.native_responses"),
            format!(
                "only backends of type openai serve the Responses API; remove it from this {} backend",
                kind.as_str()
            ),
        ));
    }
    Ok(BackendConfig {
        name: name.to_owned(),
        kind,
        instances,
        model: raw.model.clone(),
        load_balancing,
        timeout: seconds(&format!("{path}.timeout_s"), raw.timeout_s.unwrap_or(60.0))?,
        stream_idle_timeout: seconds(
            &format!("{path}.stream_idle_timeout_s"),
            raw.stream_idle_timeout_s.unwrap_or(300.0),
        )?,
        retries: raw.retries.unwrap_or(1),
        fallback,
        health,
        max_tokens: raw.max_tokens.unwrap_or(4096),
        anthropic_version: raw
            .anthropic_version
            .clone()
            .unwrap_or_else(|| "2023-06-01".into()),
        chunk_delay: Duration::from_millis(raw.chunk_delay_ms.unwrap_or(0)),
        native_responses,
        affinity,
        engine_load,
        queue,
    })
}

/// `http://h:8000` and `http://h:8000/v1` both mean `http://h:8000/v1`; other paths are kept.
/// Returns the base URL and a display form without credentials.
fn normalize_url(path: &str, url: &str) -> Result<(String, String), Invalid> {
    // Error messages quote the URL with its userinfo hidden: it may hold a password.
    let shown = redact_userinfo(url);
    let mut parsed = url::Url::parse(url.trim()).map_err(|error| {
        Invalid::new(
            path,
            format!(
                "'{shown}' is not a valid URL ({error}); expected e.g. http://127.0.0.1:8000/v1"
            ),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Invalid::new(
            path,
            format!("'{shown}' must start with http:// or https://"),
        ));
    }
    if parsed.host_str().is_none() {
        return Err(Invalid::new(path, format!("'{shown}' has no host")));
    }
    if parsed.path() == "/" || parsed.path().is_empty() {
        parsed.set_path("/v1");
    }
    parsed.set_query(None);
    parsed.set_fragment(None);
    let base = parsed.as_str().trim_end_matches('/').to_owned();
    let mut shown = parsed.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    Ok((base, shown.as_str().trim_end_matches('/').to_owned()))
}

#[cfg(test)]
mod tests {
    use super::normalize_url;

    #[test]
    fn base_urls_get_v1_when_they_have_no_path() {
        assert_eq!(
            normalize_url("u", "http://h:8000").unwrap().0,
            "http://h:8000/v1"
        );
        assert_eq!(
            normalize_url("u", "http://h:8000/v1/").unwrap().0,
            "http://h:8000/v1"
        );
        assert_eq!(
            normalize_url("u", "https://x.io/maas/v1").unwrap().0,
            "https://x.io/maas/v1"
        );
        let (base, shown) = normalize_url("u", "http://user:pw@h:1/v1").unwrap();
        assert_eq!(base, "http://user:pw@h:1/v1");
        assert_eq!(shown, "http://h:1/v1");
        assert!(normalize_url("u", "ftp://h").is_err());
        let error = normalize_url("u", "http://user:PASS@host:99999").unwrap_err();
        assert!(!error.message.contains("PASS"), "{}", error.message);
        assert!(
            error.message.contains("http://*****@host:99999"),
            "{}",
            error.message
        );
        assert!(normalize_url("u", "not a url").is_err());
    }
}
