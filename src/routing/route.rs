//! Model routing: `models` alias → backend name → per-endpoint default → `default_backend`.

use crate::config::Config;
use crate::protocol::Endpoint;

/// Where one request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route<'a> {
    /// Index into `Config::backends`.
    pub backend: usize,
    /// Model name an alias sends upstream instead of the client's.
    pub alias_model: Option<&'a str>,
    pub via: Via,
}

/// Which routing rule matched (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Alias,
    BackendName,
    EndpointDefault,
    DefaultBackend,
}

pub(crate) fn resolve<'a>(
    config: &'a Config,
    endpoint: Endpoint,
    model: Option<&str>,
) -> Route<'a> {
    if let Some(model) = model {
        if let Some(target) = config.models.get(model) {
            return Route {
                backend: target.backend,
                alias_model: target.model.as_deref(),
                via: Via::Alias,
            };
        }
        if let Some(backend) = config.backend_index(model) {
            return Route {
                backend,
                alias_model: None,
                via: Via::BackendName,
            };
        }
    }
    if let Some(&backend) = config.endpoint_defaults.get(&endpoint) {
        return Route {
            backend,
            alias_model: None,
            via: Via::EndpointDefault,
        };
    }
    Route {
        backend: config.default_backend,
        alias_model: None,
        via: Via::DefaultBackend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, Format, parse_str};

    #[test]
    fn alias_then_backend_then_default() {
        let config = parse_str(
            "default_backend: local\nbackends:\n  local: { type: echo }\n  vllm: { type: openai, url: 'http://a' }\nmodels:\n  r1: vllm\n  big: { backend: vllm, model: deepseek-r1 }\n",
            Format::Yaml,
            &Env::default(),
        )
        .unwrap();
        let at = |model: Option<&str>| resolve(&config, Endpoint::ChatCompletions, model);
        assert_eq!(
            (at(Some("r1")).backend, at(Some("r1")).via),
            (1, Via::Alias)
        );
        assert_eq!(at(Some("big")).alias_model, Some("deepseek-r1"));
        assert_eq!(
            (at(Some("vllm")).backend, at(Some("vllm")).via),
            (1, Via::BackendName)
        );
        assert_eq!(
            (at(Some("gpt-9")).backend, at(Some("gpt-9")).via),
            (0, Via::DefaultBackend)
        );
        assert_eq!(at(None).backend, 0);
    }
}
