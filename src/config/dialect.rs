//! Seed config dialects, translated to the native layout before decoding.
//!
//! - native / seed 000 / seed 003: `backends` as a map or as a list of `{name, …}` entries, `models`
//!   values as a backend name or `{backend, model}`;
//! - seed 001 (`config.json5`): top-level `instances`, `fallback_instances`, `load_balancing_strategy`,
//!   `error_threshold`, `error_window`, `alert_cooldown`, `data_dir`;
//! - seed 002 (TOML): `[[upstreams]]` (name, url, format) and `[[routes]]` (path, input_format, upstream).

use serde_json::{Map, Value, json};

use crate::config_error::Invalid;

/// Rewrite `document` in place into the native layout.
pub(crate) fn to_native(document: &mut Value) -> Result<(), Invalid> {
    let Some(root) = document.as_object_mut() else {
        return Err(Invalid {
            path: String::new(),
            message: "the config must be a mapping of sections (server, backends, …)".into(),
        });
    };
    if root.contains_key("upstreams") {
        seed_002(root)?;
    } else if root.contains_key("instances") || root.contains_key("fallback_instances") {
        seed_001(root)?;
    }
    normalize_backends(root)?;
    normalize_models(root);
    Ok(())
}

fn normalize_backends(root: &mut Map<String, Value>) -> Result<(), Invalid> {
    let Some(Value::Array(list)) = root.get("backends") else {
        return Ok(());
    };
    let mut map = Map::new();
    for (i, entry) in list.iter().enumerate() {
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| Invalid {
                path: format!("backends[{i}].name"),
                message: "each backend in a list needs a `name`".into(),
            })?;
        if map.contains_key(name) {
            return Err(Invalid {
                path: format!("backends[{i}].name"),
                message: format!("duplicate backend name '{name}'"),
            });
        }
        map.insert(name.to_owned(), entry.clone());
    }
    root.insert("backends".into(), Value::Object(map));
    Ok(())
}

fn normalize_models(root: &mut Map<String, Value>) {
    if let Some(Value::Object(models)) = root.get_mut("models") {
        for value in models.values_mut() {
            if let Value::String(backend) = value {
                *value = json!({ "backend": backend });
            }
        }
    }
}

fn seed_001(root: &mut Map<String, Value>) -> Result<(), Invalid> {
    let take = |root: &mut Map<String, Value>, key: &str| root.remove(key);
    let instances = take(root, "instances").unwrap_or(Value::Array(Vec::new()));
    let fallback_instances = take(root, "fallback_instances");
    let strategy = take(root, "load_balancing_strategy");
    let error_threshold = take(root, "error_threshold");
    let error_window = take(root, "error_window");
    let alert_cooldown = take(root, "alert_cooldown");
    let data_dir = take(root, "data_dir")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "./data".into());

    let mut health = Map::new();
    if let Some(threshold) = error_threshold {
        health.insert("error_threshold".into(), threshold);
    }
    if let Some(window) = error_window {
        health.insert("error_window_s".into(), window);
    }
    let mut model_names = Vec::new();
    let mut collect_models = |list: &Value| {
        for instance in list.as_array().into_iter().flatten() {
            if let Some(name) = instance.get("model_name").and_then(Value::as_str)
                && !model_names.iter().any(|n| n == name)
            {
                model_names.push(name.to_owned());
            }
        }
    };
    collect_models(&instances);
    if let Some(list) = &fallback_instances {
        collect_models(list);
    }
    let mut primary = json!({ "type": "openai", "instances": instances });
    if let Some(strategy) = strategy {
        primary["load_balancing"] = strategy;
    }
    if !health.is_empty() {
        primary["health"] = Value::Object(health.clone());
    }
    let mut backends = Map::new();
    if let Some(list) = fallback_instances.filter(|l| l.as_array().is_some_and(|a| !a.is_empty())) {
        primary["fallback"] = json!(["fallback"]);
        let mut fallback = json!({ "type": "openai", "instances": list });
        if !health.is_empty() {
            fallback["health"] = Value::Object(health);
        }
        backends.insert("primary".into(), primary);
        backends.insert("fallback".into(), fallback);
    } else {
        backends.insert("primary".into(), primary);
    }
    let models: Map<String, Value> = model_names
        .into_iter()
        .map(|name| (name, json!({ "backend": "primary" })))
        .collect();
    root.insert("backends".into(), Value::Object(backends));
    root.entry("models").or_insert(Value::Object(models));
    root.entry("default_backend").or_insert(json!("primary"));
    let server = root.entry("server").or_insert(json!({}));
    if let Some(server) = server.as_object_mut() {
        server.entry("port").or_insert(json!(9999));
    }
    root.entry("request_log").or_insert(json!({
        "enabled": true,
        "dir": format!("{}/requests_responses", data_dir.trim_end_matches('/')),
        "format": "openai",
    }));
    let mut alerts = json!({ "dir": data_dir });
    if let Some(cooldown) = alert_cooldown {
        alerts["cooldown_s"] = cooldown;
    }
    root.entry("alerts").or_insert(alerts);
    Ok(())
}

fn seed_002(root: &mut Map<String, Value>) -> Result<(), Invalid> {
    let upstreams = root.remove("upstreams").unwrap_or(Value::Array(Vec::new()));
    let routes = root.remove("routes").unwrap_or(Value::Array(Vec::new()));
    let Value::Array(upstreams) = upstreams else {
        return Err(Invalid {
            path: "upstreams".into(),
            message: "expected a list of [[upstreams]] tables".into(),
        });
    };
    let mut backends = Map::new();
    for (i, upstream) in upstreams.iter().enumerate() {
        let name = upstream
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| Invalid {
                path: format!("upstreams[{i}].name"),
                message: "each upstream needs a `name`".into(),
            })?;
        let format = upstream
            .get("format")
            .and_then(Value::as_str)
            .unwrap_or("openai-chat");
        let kind = match format {
            "openai-chat" | "openai" => "openai",
            "anthropic" => "anthropic",
            other => {
                return Err(Invalid {
                    path: format!("upstreams[{i}].format"),
                    message: format!("unknown format '{other}'; expected openai-chat or anthropic"),
                });
            }
        };
        let mut backend = json!({ "type": kind });
        for key in ["url", "api_key", "timeout_s", "model"] {
            if let Some(value) = upstream.get(key) {
                backend[key] = value.clone();
            }
        }
        backends.insert(name.to_owned(), backend);
    }
    let mut native_routes = Vec::new();
    let mut chat_default = None;
    for (i, route) in routes.as_array().into_iter().flatten().enumerate() {
        let path = route
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let upstream = route
            .get("upstream")
            .and_then(Value::as_str)
            .ok_or_else(|| Invalid {
                path: format!("routes[{i}].upstream"),
                message: "each route needs an `upstream`".into(),
            })?;
        if path.trim_end_matches('/') == "/v1/chat/completions" {
            chat_default = Some(upstream.to_owned());
        }
        native_routes.push(json!({ "path": path, "backend": upstream }));
    }
    let default = chat_default.or_else(|| backends.keys().next().cloned());
    root.insert("backends".into(), Value::Object(backends));
    root.insert("routes".into(), Value::Array(native_routes));
    if let Some(default) = default {
        root.entry("default_backend")
            .or_insert(Value::String(default));
    }
    Ok(())
}
