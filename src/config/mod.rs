//! Configuration: where it comes from, how it is parsed, interpolated, translated and validated.
//!
//! Pipeline: pick the source (`--config`, `CONFIG_FILE`, `config/${GATEWAY_ENV:-default}.{yaml,toml}`,
//! `config.yaml`, `config.json5`, `/etc/ai-gateway/config.yaml`, `LLM_URL`, the embedded default) → parse by extension into a JSON value →
//! expand `${VAR}` / `${VAR:-default}` in strings → translate seed dialects (`dialect`) → apply env
//! overrides → decode `RawConfig` (errors carry the path) → validate into `Config`.

pub mod dialect;
pub mod env;
pub mod model;
pub mod raw;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use crate::config_error::ConfigError;
use crate::config_error::Invalid;
pub use env::Env;
pub(crate) use model::Parts;
pub use model::{BackendConfig, BackendKind, Config, InstanceConfig};

/// The config served when no file is found: one echo backend named `local` on port 8080.
pub const EMBEDDED_DEFAULT: &str = "\
# Embedded default: every request is answered by the echo backend.
server: { host: 0.0.0.0, port: 8080 }
default_backend: local
backends:
  local: { type: echo }
";

/// Seed 004's setup, chosen by `LLM_URL` when no config file is found: its OpenAI-compatible server
/// behind a token bucket (5/s, burst 10) and a response cache (64 entries, 300 s), on port 9001 unless
/// `GATEWAY_PORT` (or another port override) says otherwise. `{url}` is the backend's base URL.
const LLM_URL_TEMPLATE: &str = "\
# LLM_URL with no config file (seed 004): one OpenAI-compatible backend, rate limit and cache as the seed.
server: { host: 0.0.0.0, port: 9001, cors_allow_origin: \"*\" }
default_backend: llm
backends:
  llm: { type: openai, url: {url} }
rate_limit:
  global: { requests: 5, window_s: 1, burst: 10, algorithm: token_bucket }
cache: { enabled: true, ttl_s: 300, max_entries: 64 }
";

/// Where the config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// No file, `LLM_URL` set: seed 004's setup around that server.
    LlmUrl,
    Embedded,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::LlmUrl => f.write_str("<LLM_URL, seed 004 setup>"),
            Source::Embedded => f.write_str("<embedded default config>"),
        }
    }
}

/// The config text for `LLM_URL`: seed 004's setup around that server.
pub(crate) fn llm_url_config(llm_url: &str) -> String {
    let base = Value::from(llm_base_url(llm_url)).to_string();
    LLM_URL_TEMPLATE.replace("{url}", &base)
}

/// `LLM_URL` may name an endpoint, as seed 004's does (`http://h:8080/v1/completions`): the backend's
/// base URL is what precedes it, and each request's own endpoint is appended to that.
fn llm_base_url(url: &str) -> &str {
    let url = url.trim().trim_end_matches('/');
    ["/chat/completions", "/completions"]
        .iter()
        .find_map(|endpoint| url.strip_suffix(endpoint))
        .unwrap_or(url)
}

/// The system-wide config file, looked for after the working directory's: where the container image and
/// the Kubernetes ConfigMap put it.
pub(crate) const SYSTEM_CONFIG: &str = "/etc/ai-gateway/config.yaml";

/// Pick the config source: an explicit path wins, then the environment, then well-known files, then
/// `LLM_URL`, then the embedded default.
pub fn locate(explicit: Option<&Path>, env: &Env) -> Source {
    if let Some(path) = explicit {
        return Source::File(path.to_owned());
    }
    if let Some(path) = env.get("CONFIG_FILE") {
        return Source::File(PathBuf::from(path));
    }
    let profile = env.get("GATEWAY_ENV").unwrap_or("default");
    for ext in ["yaml", "yml", "toml"] {
        let candidate = PathBuf::from(format!("config/{profile}.{ext}"));
        if candidate.is_file() {
            return Source::File(candidate);
        }
    }
    for name in ["config.yaml", "config.yml", "config.json5", SYSTEM_CONFIG] {
        let candidate = PathBuf::from(name);
        if candidate.is_file() {
            return Source::File(candidate);
        }
    }
    if env.get("LLM_URL").is_some() {
        return Source::LlmUrl;
    }
    Source::Embedded
}

/// Load and validate the config from `source`.
pub fn load(source: &Source, env: &Env) -> Result<Config, ConfigError> {
    let (text, format) = match source {
        Source::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
                source: source.to_string(),
                path: None,
                message: format!("cannot read the config file: {error}"),
            })?;
            (text, Format::from_path(path))
        }
        Source::LlmUrl => (
            llm_url_config(env.get("LLM_URL").unwrap_or_default()),
            Format::Yaml,
        ),
        Source::Embedded => (EMBEDDED_DEFAULT.to_owned(), Format::Yaml),
    };
    // Any URL a message quotes loses its userinfo: config errors are printed by `check`, logged by a
    // rejected reload and returned by `POST /admin/reload`.
    parse_str(&text, format, env).map_err(|(path, message)| ConfigError {
        source: source.to_string(),
        path,
        message: crate::secret::redact_userinfo(&message).into_owned(),
    })
}

/// The file syntaxes we read, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Toml,
    Json5,
}

impl Format {
    pub(crate) fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Format::Toml,
            Some("json" | "json5") => Format::Json5,
            _ => Format::Yaml,
        }
    }
}

/// Parse config text; errors are `(path inside the document, message)`.
pub fn parse_str(
    text: &str,
    format: Format,
    env: &Env,
) -> Result<Config, (Option<String>, String)> {
    let mut document: Value = match format {
        Format::Yaml => {
            yaml_serde::from_str(text).map_err(|e| (None, format!("invalid YAML: {e}")))?
        }
        Format::Toml => toml::from_str(text).map_err(|e| (None, format!("invalid TOML: {e}")))?,
        Format::Json5 => {
            json5::from_str(text).map_err(|e| (None, format!("invalid JSON5: {e}")))?
        }
    };
    if document.is_null() {
        document = Value::Object(serde_json::Map::new());
    }
    let located = |error: Invalid| (Some(error.path), error.message);
    interpolate(&mut document, env, &mut String::new()).map_err(located)?;
    dialect::to_native(&mut document).map_err(located)?;
    apply_env_overrides(&mut document, env).map_err(located)?;
    written_sections_are_on(&mut document);
    let raw: raw::RawConfig = serde_path_to_error::deserialize(&document).map_err(|error| {
        let path = error.path().to_string();
        (Some(path), error.into_inner().to_string())
    })?;
    Config::try_from_raw(raw).map_err(located)
}

/// The optional sections that have an `enabled` switch.
const SWITCHED_SECTIONS: [&str; 4] = ["request_log", "cache", "metrics", "responses"];

/// A section the user wrote is on unless it says `enabled: false`: `request_log: {dir: logs}` logs. An
/// empty section (`cache:` or `cache: {}`) is written too.
fn written_sections_are_on(document: &mut Value) {
    let Some(map) = document.as_object_mut() else {
        return;
    };
    for name in SWITCHED_SECTIONS {
        match map.get_mut(name) {
            Some(Value::Object(section)) => {
                section.entry("enabled").or_insert(Value::Bool(true));
            }
            Some(value @ Value::Null) => *value = serde_json::json!({"enabled": true}),
            _ => {}
        }
    }
}

/// Expand `${VAR}` and `${VAR:-default}` in every string value. A missing variable without a default is
/// an error naming the variable and where it is used.
fn interpolate(value: &mut Value, env: &Env, path: &mut String) -> Result<(), Invalid> {
    match value {
        Value::String(text) if text.contains("${") => {
            *text =
                expand(text, env).map_err(|unset| Invalid::new(path.clone(), unset.to_string()))?;
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                interpolate(item, env, path)?;
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                interpolate(item, env, path)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// A `${VAR}` without a default whose variable is not set.
#[derive(Debug, thiserror::Error)]
#[error("environment variable '{0}' is not set (use ${{{0}:-default}} for an optional value)")]
struct Unset(String);

fn expand(text: &str, env: &Env) -> Result<String, Unset> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (expr, None),
        };
        match (env.get(name), default) {
            (Some(value), _) => out.push_str(value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => return Err(Unset(name.to_owned())),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `GATEWAY_PORT` (seed 004), `PORT`/`HOST` (seed 003), `GATEWAY_SERVER_*`, `GATEWAY_LOGGING_*` and
/// `GATEWAY_UPSTREAMS_<NAME>_API_KEY` (seed 002). Later ones win: `PORT` (what platforms set) over
/// `GATEWAY_PORT`, the specific `GATEWAY_SERVER_*` names over both.
fn apply_env_overrides(document: &mut Value, env: &Env) -> Result<(), Invalid> {
    let Some(root) = document.as_object_mut() else {
        return Ok(());
    };
    let mut set = |section: &str, key: &str, var: &str, number: bool| -> Result<(), Invalid> {
        let Some(value) = env.get(var) else {
            return Ok(());
        };
        let value = if number {
            let port: u16 = value.parse().map_err(|_| {
                Invalid::new(
                    format!("{section}.{key}"),
                    format!("environment variable {var}='{value}' is not a port number"),
                )
            })?;
            Value::from(port)
        } else {
            Value::from(value)
        };
        let entry = root
            .entry(section)
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(object) = entry.as_object_mut() {
            object.insert(key.to_owned(), value);
        }
        Ok(())
    };
    set("server", "port", "GATEWAY_PORT", true)?;
    set("server", "port", "PORT", true)?;
    set("server", "host", "HOST", false)?;
    set("server", "port", "GATEWAY_SERVER_PORT", true)?;
    set("server", "host", "GATEWAY_SERVER_HOST", false)?;
    set("logging", "level", "GATEWAY_LOGGING_LEVEL", false)?;
    set("logging", "format", "GATEWAY_LOGGING_FORMAT", false)?;
    if let Some(Value::Object(backends)) = root.get_mut("backends") {
        for (var, value) in env.with_prefix("GATEWAY_UPSTREAMS_") {
            let Some(name) = var
                .strip_prefix("GATEWAY_UPSTREAMS_")
                .and_then(|rest| rest.strip_suffix("_API_KEY"))
            else {
                continue;
            };
            let wanted = name.to_ascii_lowercase();
            for (backend_name, backend) in backends.iter_mut() {
                if backend_name.to_ascii_lowercase().replace('-', "_") == wanted
                    && let Some(object) = backend.as_object_mut()
                    && !value.is_empty()
                {
                    object.insert("api_key".into(), Value::from(value));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    fn err(text: &str, format: Format) -> String {
        let (path, message) = parse_str(text, format, &env(&[])).unwrap_err();
        format!("{}: {message}", path.unwrap_or_default())
    }

    #[test]
    fn embedded_default_is_one_echo_backend_on_8080() {
        let config = parse_str(EMBEDDED_DEFAULT, Format::Yaml, &env(&[])).unwrap();
        assert_eq!(config.server.port, 8080);
        assert_eq!(config.backends.len(), 1);
        assert_eq!(config.backends[0].name, "local");
        assert_eq!(config.backends[0].kind, BackendKind::Echo);
    }

    #[test]
    fn server_bounds_have_defaults_and_refuse_zero() {
        let base = "backends:\n  a: { type: echo }\n";
        let server = parse_str(base, Format::Yaml, &env(&[])).unwrap().server;
        assert_eq!(server.header_timeout, std::time::Duration::from_secs(30));
        assert_eq!(server.idle_timeout, std::time::Duration::from_secs(60));
        assert_eq!(server.body_timeout, std::time::Duration::from_secs(60));
        assert_eq!(server.max_upstream_body_bytes, 64 << 20);
        assert!(!server.admin_open);
        let with = |setting: &str| err(&format!("server: {{ {setting} }}\n{base}"), Format::Yaml);
        for name in ["header_timeout_s", "idle_timeout_s", "body_timeout_s"] {
            let error = with(&format!("{name}: 0"));
            assert!(error.starts_with(&format!("server.{name}: ")), "{error}");
            assert!(error.contains("positive number of seconds"), "{error}");
        }
        let error = with("max_upstream_body_bytes: 0");
        assert!(
            error.starts_with("server.max_upstream_body_bytes: must be"),
            "{error}"
        );
    }

    #[test]
    fn llm_url_is_seed_004s_setup_around_that_server() {
        let load = |url: &str, vars: &[(&str, &str)]| {
            parse_str(&llm_url_config(url), Format::Yaml, &env(vars)).unwrap()
        };
        let config = load("http://localhost:8080/v1/completions", &[]);
        assert_eq!(config.server.port, 9001);
        let backend = &config.backends[config.default_backend];
        assert_eq!(backend.kind, BackendKind::OpenAi);
        assert_eq!(backend.instances[0].base_url, "http://localhost:8080/v1");
        assert!(config.cache.enabled);
        assert_eq!(config.cache.max_entries, 64);
        assert_eq!(config.cache.ttl_s, 300.0);
        let global = config.rate_limit.global.as_ref().unwrap();
        assert_eq!((global.requests, global.burst), (Some(5), Some(10)));
        for (url, base) in [
            (
                "http://llama-server:8080/v1/chat/completions",
                "http://llama-server:8080/v1",
            ),
            ("http://h:8000/v1/", "http://h:8000/v1"),
            ("http://h:8000", "http://h:8000/v1"),
            (
                "https://x.io/openai/v1/completions",
                "https://x.io/openai/v1",
            ),
        ] {
            assert_eq!(
                load(url, &[]).backends[0].instances[0].base_url,
                base,
                "{url}"
            );
        }
        assert_eq!(
            load("http://h:1", &[("GATEWAY_PORT", "9100")]).server.port,
            9100
        );
        // PORT (what platforms set) wins over GATEWAY_PORT, GATEWAY_SERVER_PORT over both.
        assert_eq!(
            load("http://h:1", &[("GATEWAY_PORT", "9100"), ("PORT", "9200")])
                .server
                .port,
            9200
        );
        let (path, message) = parse_str(
            &llm_url_config("http://h:1"),
            Format::Yaml,
            &env(&[("GATEWAY_PORT", "nine")]),
        )
        .unwrap_err();
        assert_eq!(path.as_deref(), Some("server.port"));
        assert_eq!(
            message,
            "environment variable GATEWAY_PORT='nine' is not a port number"
        );
    }

    #[test]
    fn seed_000_config_loads_unchanged() {
        let text = "default_backend: local\nbackends:\n  local:\n    type: local\n    url: http://127.0.0.1:8081\n  modal:\n    type: modal\n    url: https:/YOUR_MODAL_URL\n  modal_vllm:\n    type: vllm\n    url: https://YOUR_MODAL_VLLM_URL\n";
        let config = parse_str(text, Format::Yaml, &env(&[])).unwrap();
        let kinds: Vec<_> = config
            .backends
            .iter()
            .map(|b| (b.name.as_str(), b.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("local", BackendKind::Echo),
                ("modal", BackendKind::OpenAi),
                ("modal_vllm", BackendKind::OpenAi)
            ]
        );
        assert_eq!(
            config.backends[2].instances[0].base_url,
            "https://your_modal_vllm_url/v1"
        );
    }

    #[test]
    fn metrics_section_defaults_on_and_rejects_unknown_keys() {
        let base = "backends:\n  a: { type: echo }\n";
        assert!(
            parse_str(base, Format::Yaml, &env(&[]))
                .unwrap()
                .metrics
                .enabled
        );
        let off = format!("{base}metrics: {{ enabled: false }}\n");
        assert!(
            !parse_str(&off, Format::Yaml, &env(&[]))
                .unwrap()
                .metrics
                .enabled
        );
        assert_eq!(
            err(
                &format!("{base}metrics: {{ enable: false }}\n"),
                Format::Yaml
            ),
            "metrics.enable: unknown field `enable`, expected `enabled`"
        );
        assert_eq!(
            err(&format!("{base}metrics: {{ enabled: 0 }}\n"), Format::Yaml),
            "metrics.enabled: invalid type: integer `0`, expected a boolean"
        );
    }

    /// Issue 23 item 3: a written section is on unless it says `enabled: false`.
    #[test]
    fn a_written_section_is_on_unless_it_says_enabled_false() {
        let base = "backends:\n  a: { type: echo }\n";
        let parse =
            |extra: &str| parse_str(&format!("{base}{extra}"), Format::Yaml, &env(&[])).unwrap();
        let absent = parse("");
        assert!(!absent.request_log.enabled && !absent.cache.enabled && absent.metrics.enabled);
        let written = parse("request_log: { dir: logs, format: sharegpt }\ncache: { ttl_s: 5 }\n");
        assert!(written.request_log.enabled);
        assert_eq!(written.request_log.dir, std::path::PathBuf::from("logs"));
        assert!(written.cache.enabled);
        assert!(parse("cache: {}\n").cache.enabled);
        assert!(parse("cache:\n").cache.enabled);
        let off = parse("request_log: { enabled: false, dir: logs }\ncache: { enabled: false }\n");
        assert!(!off.request_log.enabled && !off.cache.enabled);
        // TOML and JSON5 follow the same rule.
        let toml = parse_str(
            "[backends.a]\ntype = \"echo\"\n[request_log]\ndir = \"logs\"\n",
            Format::Toml,
            &env(&[]),
        )
        .unwrap();
        assert!(toml.request_log.enabled);
        let features = written.features().join("; ");
        assert!(
            features.contains("request_log: on (logs, ShareGpt)"),
            "{features}"
        );
        assert!(features.contains("cache: on"), "{features}");
        assert!(absent.features().join("; ").contains("request_log: off"));
    }

    #[test]
    fn seed_003_list_form_and_timeout_alias() {
        let text = "default_backend: local\nbackends:\n- name: local\n  type: echo\n- name: remote\n  type: http\n  url: http://localhost:8081\n  timeout: 60.0\n";
        let config = parse_str(text, Format::Yaml, &env(&[])).unwrap();
        assert_eq!(config.backends[1].name, "remote");
        assert_eq!(config.backends[1].timeout.as_secs(), 60);
    }

    #[test]
    fn errors_name_the_path_and_the_expectation() {
        assert_eq!(
            err(
                "backends:\n  v:\n    type: openai\n    instances:\n      - url: http://a\n      - url: 5\n",
                Format::Yaml
            ),
            "backends.v.instances[1].url: invalid type: integer `5`, expected a string"
        );
        assert!(
            err("backends:\n  v: { type: gpu }\n", Format::Yaml)
                .starts_with("backends.v.type: unknown backend type 'gpu'")
        );
        assert!(
            err(
                "default_backend: nope\nbackends:\n  a: { type: echo }\n",
                Format::Yaml
            )
            .starts_with("default_backend: unknown backend 'nope'")
        );
        assert!(
            err(
                "backends:\n  a: { type: echo, colour: red }\n",
                Format::Yaml
            )
            .contains("unknown field `colour`")
        );
        assert!(
            err(
                "backends:\n  a: { type: openai, url: \"${NOPE}\" }\n",
                Format::Yaml
            )
            .starts_with("backends.a.url: environment variable 'NOPE' is not set")
        );
    }

    #[test]
    fn interpolation_and_env_overrides() {
        let text = "server: { port: 1 }\nbackends:\n  openai: { type: openai, url: \"${BASE:-http://x}\", api_key: \"${KEY}\" }\n";
        let config = parse_str(
            text,
            Format::Yaml,
            &env(&[
                ("KEY", "k1"),
                ("PORT", "9000"),
                ("GATEWAY_SERVER_PORT", "9100"),
                ("HOST", "127.0.0.1"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.port, 9100);
        assert_eq!(config.server.host, "127.0.0.1");
        assert_eq!(config.backends[0].instances[0].base_url, "http://x/v1");
        assert_eq!(
            config.backends[0].instances[0]
                .api_key
                .as_ref()
                .unwrap()
                .expose(),
            "k1"
        );
        let config = parse_str(
            text,
            Format::Yaml,
            &env(&[("KEY", "k1"), ("GATEWAY_UPSTREAMS_OPENAI_API_KEY", "k2")]),
        )
        .unwrap();
        assert_eq!(
            config.backends[0].instances[0]
                .api_key
                .as_ref()
                .unwrap()
                .expose(),
            "k2"
        );
    }

    #[test]
    fn seed_002_toml_routes_by_path() {
        let text = r#"
[server]
host = "0.0.0.0"
port = 8080
[logging]
level = "info"
format = "json"
[[upstreams]]
name = "openai"
url = "https://api.openai.com"
format = "openai-chat"
[[upstreams]]
name = "anthropic"
url = "https://api.anthropic.com"
format = "anthropic"
[[routes]]
path = "/v1/chat/completions"
input_format = "openai-chat"
upstream = "openai"
[[routes]]
path = "/v1/messages"
input_format = "anthropic"
upstream = "anthropic"
"#;
        let config = parse_str(
            text,
            Format::Toml,
            &env(&[("GATEWAY_UPSTREAMS_ANTHROPIC_API_KEY", "sk-ant")]),
        )
        .unwrap();
        assert_eq!(config.backends[config.default_backend].name, "openai");
        let messages = config.endpoint_defaults[&crate::protocol::Endpoint::Messages];
        assert_eq!(config.backends[messages].kind, BackendKind::Anthropic);
        assert_eq!(
            config.backends[messages].instances[0].base_url,
            "https://api.anthropic.com/v1"
        );
        assert!(config.backends[messages].instances[0].api_key.is_some());
        assert!(config.logging.json);
    }

    #[test]
    fn seed_001_json5_means_what_it_meant() {
        let text = r#"{
            "instances": [ // private instances for inference
              {"url": "http://10.82.1.1:8080/v1", "api_key": "empty", "model_name": "deepseek-r1", "weight": 1},
              {"url": "http://10.82.1.2:8080/v1", "api_key": "empty", "model_name": "deepseek-r1", "weight": 1},
            ],
            "fallback_instances":[ {"url": "https://cloud.infini-ai.com/maas/v1", "api_key":"your_api_key", "model_name": "deepseek-r1", "weight": 1} ],
            "data_dir": "./data",
            "load_balancing_strategy": "round_robin",
            "error_threshold": 10, "error_window": 300, "alert_cooldown": 300
        }"#;
        let config = parse_str(text, Format::Json5, &env(&[])).unwrap();
        assert_eq!(config.server.port, 9999);
        let primary = &config.backends[config.default_backend];
        assert_eq!(primary.instances.len(), 2);
        assert_eq!(primary.fallback.len(), 1);
        assert_eq!(
            config.backends[primary.fallback[0]].instances[0].base_url,
            "https://cloud.infini-ai.com/maas/v1"
        );
        assert_eq!(config.models["deepseek-r1"].backend, config.default_backend);
        assert!(config.request_log.enabled);
        assert_eq!(config.alerts.cooldown_s, 300.0);
        assert_eq!(
            config.backends[config.default_backend]
                .health
                .error_threshold,
            10
        );
    }
}
