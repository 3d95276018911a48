//! Tests of the metrics as a whole: every series renders and parses, cached handles agree with the
//! families, concurrency, the exposition formats, and the dashboards and alerts name exported series.

// The strict exposition parser the integration tests use: one copy, shared through `#[path]`.
#[path = "../../../tests/it/support/prom.rs"]
#[expect(dead_code, reason = "its scrape helpers serve the integration tests")]
mod prom_text;

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

use prom_text::{Sample, parse_prometheus_text};

/// A series name, its exact label set and its expected value.
type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && s.labels.len() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

/// Exercises every method once so every family has at least one series.
fn exercise(m: &Metrics) -> InFlightGuard {
    let ms = Duration::from_millis;
    m.http_request("POST", "/v1/chat/completions", 200, ms(120));
    m.http_request("POST", "/v1/chat/completions", 200, ms(80));
    m.http_request("BREW", "/v1/chat/completions", 405, ms(1));
    let guard = m.in_flight("POST", "/v1/messages");
    m.upstream_response("vllm", "openai", 200, ms(40));
    m.upstream_error("vllm", "timeout");
    m.stream_finished("anthropic", 12, 3456, Duration::from_secs(2));
    m.auth(true);
    m.auth(false);
    m.rate_limited("team-a");
    m.quota_exceeded("team-b");
    m.overhead(Duration::from_micros(30));
    m.ttft("vllm", ms(250));
    m.tokens("vllm", "deepseek-r1", 100, 42);
    m.cache(true);
    m.cache(false);
    m.instance_state("vllm", "http://10.0.0.1:8000/v1", instance_state::OPEN);
    m.engine_load(
        "vllm",
        "http://10.0.0.1:8000/v1",
        &crate::routing::engine_load::EngineView {
            running: 5,
            waiting: 2,
            slots: None,
            kv_cache_usage: Some(0.5),
            external: 0,
        },
    );
    m.affinity("vllm", "home");
    m.queue_waiting("vllm", 3);
    m.queue_refused("vllm", "queue_full");
    m.fallback();
    m.config_reload(true);
    m.config_reload(false);
    m.request_log_dropped();
    guard
}

#[test]
fn every_series_renders_with_its_labels_and_parses() {
    let m = Metrics::new();
    let guard = exercise(&m);
    let text = m.render();
    let (types, samples) = parse_prometheus_text(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    let expected_types = [
        ("http_requests_total", "counter"),
        ("http_request_duration_seconds", "histogram"),
        ("http_requests_in_flight", "gauge"),
        ("upstream_request_duration_seconds", "histogram"),
        ("upstream_requests_total", "counter"),
        ("upstream_errors_total", "counter"),
        ("streaming_events_total", "counter"),
        ("streaming_bytes_total", "counter"),
        ("streaming_duration_seconds", "histogram"),
        ("auth_requests_total", "counter"),
        ("rate_limit_exceeded_total", "counter"),
        ("quota_exceeded_total", "counter"),
        ("gateway_overhead_seconds", "histogram"),
        ("time_to_first_token_seconds", "histogram"),
        ("tokens_total", "counter"),
        ("cache_requests_total", "counter"),
        ("upstream_instance_state", "gauge"),
        ("upstream_engine_requests_running", "gauge"),
        ("upstream_engine_requests_waiting", "gauge"),
        ("upstream_engine_kv_cache_usage", "gauge"),
        ("upstream_affinity_routed_total", "counter"),
        ("upstream_queue_waiting", "gauge"),
        ("upstream_queue_refused_total", "counter"),
        ("fallbacks_total", "counter"),
        ("config_reloads_total", "counter"),
        ("request_log_dropped_total", "counter"),
    ];
    for (name, ty) in expected_types {
        assert_eq!(types.get(name).map(String::as_str), Some(ty), "{name}");
    }
    assert_eq!(types.len(), expected_types.len());

    let checks: &[Expected] = &[
        (
            "http_requests_total",
            &[
                ("method", "POST"),
                ("path", "/v1/chat/completions"),
                ("status", "200"),
            ],
            2.0,
        ),
        (
            "http_requests_total",
            &[
                ("method", "OTHER"),
                ("path", "/v1/chat/completions"),
                ("status", "405"),
            ],
            1.0,
        ),
        (
            "http_request_duration_seconds_count",
            &[
                ("method", "POST"),
                ("path", "/v1/chat/completions"),
                ("status", "200"),
            ],
            2.0,
        ),
        (
            "http_request_duration_seconds_bucket",
            &[
                ("method", "POST"),
                ("path", "/v1/chat/completions"),
                ("status", "200"),
                ("le", "0.1"),
            ],
            1.0,
        ),
        (
            "http_requests_in_flight",
            &[("method", "POST"), ("path", "/v1/messages")],
            1.0,
        ),
        (
            "upstream_request_duration_seconds_count",
            &[("upstream", "vllm"), ("provider", "openai")],
            1.0,
        ),
        (
            "upstream_requests_total",
            &[
                ("upstream", "vllm"),
                ("provider", "openai"),
                ("status", "200"),
            ],
            1.0,
        ),
        (
            "upstream_errors_total",
            &[("upstream", "vllm"), ("error_type", "timeout")],
            1.0,
        ),
        ("streaming_events_total", &[("provider", "anthropic")], 12.0),
        (
            "streaming_bytes_total",
            &[("provider", "anthropic")],
            3456.0,
        ),
        (
            "streaming_duration_seconds_sum",
            &[("provider", "anthropic")],
            2.0,
        ),
        ("auth_requests_total", &[("result", "allowed")], 1.0),
        ("auth_requests_total", &[("result", "denied")], 1.0),
        ("rate_limit_exceeded_total", &[("key_name", "team-a")], 1.0),
        ("quota_exceeded_total", &[("key_name", "team-b")], 1.0),
        ("gateway_overhead_seconds_count", &[], 1.0),
        ("gateway_overhead_seconds_bucket", &[("le", "0.00005")], 1.0),
        (
            "time_to_first_token_seconds_count",
            &[("backend", "vllm")],
            1.0,
        ),
        (
            "tokens_total",
            &[
                ("backend", "vllm"),
                ("model", "deepseek-r1"),
                ("direction", "input"),
            ],
            100.0,
        ),
        (
            "tokens_total",
            &[
                ("backend", "vllm"),
                ("model", "deepseek-r1"),
                ("direction", "output"),
            ],
            42.0,
        ),
        ("cache_requests_total", &[("result", "hit")], 1.0),
        ("cache_requests_total", &[("result", "miss")], 1.0),
        (
            "upstream_instance_state",
            &[("backend", "vllm"), ("instance", "http://10.0.0.1:8000/v1")],
            2.0,
        ),
        ("fallbacks_total", &[], 1.0),
        ("config_reloads_total", &[("result", "success")], 1.0),
        ("config_reloads_total", &[("result", "failure")], 1.0),
        ("request_log_dropped_total", &[], 1.0),
    ];
    for (name, labels, value) in checks {
        let sample = find(&samples, name, labels)
            .unwrap_or_else(|| panic!("missing {name} {labels:?} in\n{text}"));
        assert!(
            (sample.value - value).abs() < 1e-9,
            "{name} {labels:?}: {} != {value}",
            sample.value
        );
    }

    drop(guard);
    let (_, samples) = parse_prometheus_text(&m.render()).unwrap_or_else(|e| panic!("{e}"));
    let gauge = find(
        &samples,
        "http_requests_in_flight",
        &[("method", "POST"), ("path", "/v1/messages")],
    );
    assert_eq!(gauge.map(|s| s.value), Some(0.0));
}

/// What `exercise` records, written straight to the families (a read lock and owned labels per call),
/// as the methods did before the handle caches. Returns the in-flight gauge it left at 1.
fn exercise_families(m: &Metrics) -> Gauge {
    let secs = |d: Duration| d.as_secs_f64();
    let ms = Duration::from_millis;
    for (method, status, d) in [
        ("POST", 200, ms(120)),
        ("POST", 200, ms(80)),
        ("OTHER", 405, ms(1)),
    ] {
        let labels = HttpLabels {
            method,
            path: "/v1/chat/completions",
            status,
        };
        m.http_requests.get_or_create(&labels).inc();
        m.http_duration.get_or_create(&labels).observe(secs(d));
    }
    let gauge = m.http_in_flight.get_or_create_owned(&InFlightLabels {
        method: "POST",
        path: "/v1/messages",
    });
    gauge.inc();
    let upstream = "vllm".to_owned();
    m.upstream_requests
        .get_or_create(&UpstreamStatusLabels {
            upstream: upstream.clone(),
            provider: "openai",
            status: 200,
        })
        .inc();
    m.upstream_duration
        .get_or_create(&UpstreamLabels {
            upstream: upstream.clone(),
            provider: "openai",
        })
        .observe(secs(ms(40)));
    m.upstream_errors
        .get_or_create(&UpstreamErrorLabels {
            upstream,
            error_type: "timeout",
        })
        .inc();
    let anthropic = ProviderLabels {
        provider: "anthropic",
    };
    m.streaming_events.get_or_create(&anthropic).inc_by(12);
    m.streaming_bytes.get_or_create(&anthropic).inc_by(3456);
    m.streaming_duration
        .get_or_create(&anthropic)
        .observe(secs(Duration::from_secs(2)));
    for result in ["allowed", "denied"] {
        m.auth_requests
            .get_or_create(&ResultLabels { result })
            .inc();
    }
    let key = |name: &str| KeyLabels {
        key_name: name.to_owned(),
    };
    m.rate_limit_exceeded.get_or_create(&key("team-a")).inc();
    m.quota_exceeded.get_or_create(&key("team-b")).inc();
    m.gateway_overhead.observe(secs(Duration::from_micros(30)));
    m.ttft
        .get_or_create(&BackendLabels {
            backend: "vllm".to_owned(),
        })
        .observe(secs(ms(250)));
    for (direction, n) in [("input", 100), ("output", 42)] {
        m.tokens
            .get_or_create(&TokenLabels {
                backend: "vllm".to_owned(),
                model: "deepseek-r1".to_owned(),
                direction,
            })
            .inc_by(n);
    }
    for result in ["hit", "miss"] {
        m.cache_requests
            .get_or_create(&ResultLabels { result })
            .inc();
    }
    m.instance_state
        .get_or_create(&InstanceLabels {
            backend: "vllm".to_owned(),
            instance: "http://10.0.0.1:8000/v1".to_owned(),
        })
        .set(instance_state::OPEN);
    let instance = InstanceLabels {
        backend: "vllm".to_owned(),
        instance: "http://10.0.0.1:8000/v1".to_owned(),
    };
    m.engine_running.get_or_create(&instance).set(5);
    m.engine_waiting.get_or_create(&instance).set(2);
    m.engine_kv_usage.get_or_create(&instance).set(0.5);
    m.affinity
        .get_or_create(&AffinityLabels {
            backend: "vllm".to_owned(),
            decision: "home",
        })
        .inc();
    m.queue_waiting
        .get_or_create(&BackendLabels {
            backend: "vllm".to_owned(),
        })
        .set(3);
    m.queue_refused
        .get_or_create(&QueueRefusalLabels {
            backend: "vllm".to_owned(),
            reason: "queue_full",
        })
        .inc();
    m.fallbacks.inc();
    for result in ["success", "failure"] {
        m.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }
    m.request_log_dropped.inc();
    gauge
}

/// Updates through the handle caches render exactly like the same updates made on the families: same
/// series, same labels, same values, first call (miss) and later calls (hits) alike.
#[test]
fn cached_handles_and_families_render_the_same() {
    let cached = Metrics::new();
    let direct = Metrics::new();
    let guards = [exercise(&cached), exercise(&cached), exercise(&cached)];
    let gauges = [
        exercise_families(&direct),
        exercise_families(&direct),
        exercise_families(&direct),
    ];
    // Series order inside a family follows the family's own hash map, so compare sorted lines.
    let lines = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(lines(cached.render()), lines(direct.render()));
    assert_eq!(
        lines(cached.render_openmetrics()),
        lines(direct.render_openmetrics())
    );
    assert_eq!(cached.http_handles.len(), 2);
    assert_eq!(cached.upstream_handles.len(), 1);
    assert_eq!(cached.token_handles.len(), 1);
    drop(guards);
    gauges.iter().for_each(|g| {
        g.dec();
    });
    assert_eq!(lines(cached.render()), lines(direct.render()));
}

/// Several threads updating the same and new label sets at once (first-time misses racing each
/// other included): every update is counted.
#[test]
fn concurrent_updates_are_all_counted() {
    const THREADS: usize = 4;
    const ROUNDS: u64 = 5_000;
    let m = Metrics::new();
    let backends = ["a", "b", "c"];
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                for round in 0..ROUNDS {
                    let backend = backends[(round % 3) as usize];
                    m.http_request("POST", "/v1/chat/completions", 200, Duration::ZERO);
                    m.upstream_response(backend, "openai", 200, Duration::ZERO);
                    m.tokens(backend, "model", 1, 2);
                    m.rate_limited(backend);
                    drop(m.in_flight("POST", "/v1/chat/completions"));
                }
            });
        }
    });
    let total = THREADS as f64 * ROUNDS as f64;
    let text = m.render();
    let (_, samples) = parse_prometheus_text(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let value = |name: &str, labels: &[(&str, &str)]| {
        find(&samples, name, labels)
            .map(|s| s.value)
            .unwrap_or_else(|| panic!("missing {name} {labels:?}"))
    };
    let http = [
        ("method", "POST"),
        ("path", "/v1/chat/completions"),
        ("status", "200"),
    ];
    assert_eq!(value("http_requests_total", &http), total);
    assert_eq!(value("http_request_duration_seconds_count", &http), total);
    assert_eq!(
        value(
            "http_requests_in_flight",
            &[("method", "POST"), ("path", "/v1/chat/completions")]
        ),
        0.0
    );
    let per_backend = |b: &str| {
        let rounds = (0..ROUNDS)
            .filter(|r| backends[(r % 3) as usize] == b)
            .count();
        (THREADS * rounds) as f64
    };
    for backend in backends {
        let n = per_backend(backend);
        assert_eq!(
            value(
                "upstream_requests_total",
                &[
                    ("upstream", backend),
                    ("provider", "openai"),
                    ("status", "200")
                ]
            ),
            n
        );
        assert_eq!(
            value(
                "upstream_request_duration_seconds_count",
                &[("upstream", backend), ("provider", "openai")]
            ),
            n
        );
        let tokens = |direction| {
            value(
                "tokens_total",
                &[
                    ("backend", backend),
                    ("model", "model"),
                    ("direction", direction),
                ],
            )
        };
        assert_eq!((tokens("input"), tokens("output")), (n, 2.0 * n));
        assert_eq!(
            value("rate_limit_exceeded_total", &[("key_name", backend)]),
            n
        );
    }
}

/// With `metrics: { enabled: false }` the recording methods leave every family empty.
#[test]
fn disabled_metrics_record_nothing() {
    let off = MetricsConfig { enabled: false };
    let m = Metrics::with_config(&off);
    assert!(!m.enabled());
    let guard = exercise(&m);
    drop(guard);
    assert_eq!(m.render(), Metrics::with_config(&off).render());
    assert!(!m.render().contains("fallbacks_total 1"));
    assert!(Metrics::new().enabled());
}

#[test]
fn content_types_match_formats() {
    let m = Metrics::new();
    m.fallback();
    assert!(Metrics::content_type().starts_with("text/plain; version=0.0.4"));
    assert!(!m.render().contains("# EOF"));
    assert!(
        m.render()
            .contains("# TYPE fallbacks_total counter\nfallbacks_total 1\n")
    );
    assert!(
        Metrics::openmetrics_content_type()
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    let om = m.render_openmetrics();
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE fallbacks counter\nfallbacks_total 1\n"));
}

#[test]
fn registries_are_independent() {
    let a = Metrics::new();
    let b = Metrics::new();
    a.fallback();
    let (_, sa) = parse_prometheus_text(&a.render()).unwrap_or_else(|e| panic!("{e}"));
    let (_, sb) = parse_prometheus_text(&b.render()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        find(&sa, "fallbacks_total", &[]).map(|s| s.value),
        Some(1.0)
    );
    assert_eq!(
        find(&sb, "fallbacks_total", &[]).map(|s| s.value),
        Some(0.0)
    );
}

#[test]
fn parser_rejects_malformed_expositions() {
    for bad in [
        "x_total 1\n",
        "# HELP x_total h\n# TYPE x_total counter\nx_total{a=\"1\" 1\n",
        "# HELP x_total h\n# TYPE x_total counter\nx_total 1",
        "# HELP x_total h\n# TYPE x_total counter\nx_total one\n",
        "# HELP x h\n# TYPE x gauge\nx_total 1\n",
        "# TYPE x_total counter\nx_total 1\n",
        "# HELP x h\n# TYPE x counter\nx 1\n",
        "# HELP x h\n# TYPE x histogram\nx_bucket 1\n",
    ] {
        assert!(parse_prometheus_text(bad).is_err(), "{bad:?}");
    }
}

/// Metric names a PromQL expression references: identifiers outside label matchers, ranges, strings,
/// grouping clauses and function calls, minus keywords.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
    ];
    // Blank out {...}, [...] and "..." so label names and durations are not taken for metrics.
    let mut cleaned = String::with_capacity(expr.len());
    let mut depth_brace = 0usize;
    let mut depth_bracket = 0usize;
    let mut in_str = false;
    for c in expr.chars() {
        match c {
            '"' => {
                in_str = !in_str;
                cleaned.push(' ');
            }
            _ if in_str => cleaned.push(' '),
            '{' => {
                depth_brace += 1;
                cleaned.push(' ');
            }
            '}' => {
                depth_brace = depth_brace.saturating_sub(1);
                cleaned.push(' ');
            }
            '[' => {
                depth_bracket += 1;
                cleaned.push(' ');
            }
            ']' => {
                depth_bracket = depth_bracket.saturating_sub(1);
                cleaned.push(' ');
            }
            _ if depth_brace > 0 || depth_bracket > 0 => cleaned.push(' '),
            c => cleaned.push(c),
        }
    }
    cleaned.push(' ');
    // Blank out grouping label lists: `by (a, b)` / `without (...)` / `on (...)` / `ignoring (...)`.
    let mut out = BTreeSet::new();
    let tokens: Vec<(usize, &str)> = cleaned
        .match_indices(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .fold((Vec::new(), 0usize), |(mut acc, start), (i, sep)| {
            if i > start {
                acc.push((start, &cleaned[start..i]));
            }
            (acc, i + sep.len())
        })
        .0;
    let mut skip_until = 0usize;
    for (pos, tok) in tokens {
        if pos < skip_until {
            continue;
        }
        let after = &cleaned[pos + tok.len()..];
        let next_non_space = after.trim_start().chars().next();
        if [
            "by",
            "without",
            "on",
            "ignoring",
            "group_left",
            "group_right",
        ]
        .contains(&tok)
        {
            // Grouping label lists never nest parentheses: skip to the closing one.
            if next_non_space == Some('(') {
                let close = after.find(')').map_or(cleaned.len(), |i| i + 1);
                skip_until = pos + tok.len() + close;
            }
            continue;
        }
        if tok.chars().next().is_some_and(|c| c.is_ascii_digit())
            || KEYWORDS.contains(&tok.to_ascii_lowercase().as_str())
            || next_non_space == Some('(')
        {
            continue;
        }
        out.insert(tok.to_owned());
    }
    out
}

#[test]
fn promql_name_extraction() {
    let names = promql_metric_names(
        "histogram_quantile(0.99, sum by (le, backend) (rate(time_to_first_token_seconds_bucket{backend=~\"a|b\"}[5m]))) > 2 * on (x) group_left foo_total",
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "time_to_first_token_seconds_bucket".to_owned(),
            "foo_total".to_owned()
        ])
    );
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if k == "expr" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_owned());
                    }
                } else {
                    collect_exprs(v, out);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The dashboard and the alert rules only reference series this module exports.
#[test]
fn dashboards_and_alerts_use_exported_metrics() {
    let m = Metrics::new();
    let _guard = exercise(&m);
    let (_, samples) = parse_prometheus_text(&m.render()).unwrap_or_else(|e| panic!("{e}"));
    let exported: BTreeSet<String> = samples.into_iter().map(|s| s.name).collect();

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard_text = std::fs::read_to_string(root.join("deploy/grafana/ai-gateway.json"))
        .unwrap_or_else(|e| panic!("dashboard: {e}"));
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).unwrap_or_else(|e| panic!("dashboard json: {e}"));
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 9));
    let alerts_text = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml"))
        .unwrap_or_else(|e| panic!("alerts: {e}"));
    let alerts: serde_json::Value =
        yaml_serde::from_str(&alerts_text).unwrap_or_else(|e| panic!("alerts yaml: {e}"));
    let rules = alerts["groups"][0]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let alert_names: BTreeSet<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for wanted in ["UpstreamDown", "HighErrorRate", "HighGatewayOverhead"] {
        assert!(alert_names.contains(wanted), "missing alert {wanted}");
    }

    for (file, doc) in [("dashboard", &dashboard), ("alerts", &alerts)] {
        let mut exprs = Vec::new();
        collect_exprs(doc, &mut exprs);
        assert!(!exprs.is_empty(), "{file} has no expressions");
        for expr in exprs {
            let names = promql_metric_names(&expr);
            assert!(!names.is_empty(), "{file}: no metric in {expr:?}");
            for name in names {
                assert!(
                    exported.contains(&name),
                    "{file}: {name} is not exported ({expr})"
                );
            }
        }
    }
}
