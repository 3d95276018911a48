//! Prometheus metrics: one `Metrics` value owns its own `Registry` and every named series the gateway exports.
//!
//! Why one struct with one method per event: the pipeline calls a single typed method per request stage, so
//! metric names and label sets live in exactly one file, and label values come only from bounded sets
//! (configured backend/key/model names, `&'static str` kinds, HTTP status codes), never from user strings.
//! There is no global registry, so several gateways can run in one test process.
//!
//! prometheus-client appends `_total` to counters itself, so counters are registered without the suffix;
//! `render` converts its OpenMetrics output to the classic text format that every scraper and
//! `promtool check metrics` read.
//! Family lookups take a read lock on the family's map (cheap, uncontended); the label-less series are
//! stored as plain handles and cost one atomic operation.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Request latency buckets (seconds): from sub-millisecond cache hits to multi-minute generations.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

/// Gateway overhead buckets (seconds): the budget is tens of microseconds, so the low end is fine-grained.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];

/// Time-to-first-token and time-to-first-byte buckets (seconds).
const FIRST_TOKEN_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];

/// Whole-stream duration buckets (seconds).
const STREAM_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

fn first_token_histogram() -> Histogram {
    Histogram::new(FIRST_TOKEN_BUCKETS.iter().copied())
}

fn stream_histogram() -> Histogram {
    Histogram::new(STREAM_BUCKETS.iter().copied())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    path: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InFlightLabels {
    method: &'static str,
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
    provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamStatusLabels {
    upstream: String,
    provider: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: String,
    error_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    backend: String,
    model: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    backend: String,
    instance: String,
}

/// Circuit state of one upstream instance, as exported by `upstream_instance_state`.
pub mod instance_state {
    /// The instance takes traffic.
    pub const CLOSED: i64 = 0;
    /// The instance is on probation after a cooldown.
    pub const HALF_OPEN: i64 = 1;
    /// The instance is skipped until its cooldown ends.
    pub const OPEN: i64 = 2;
}

/// All gateway metrics plus the registry that renders them.
///
/// Not `Clone`: the lead keeps one in `AppState` behind an `Arc`; the metric handles inside are `Arc`s
/// already, so nothing here needs a lock of its own.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<HttpLabels>,
    http_in_flight: Family<InFlightLabels, Gauge>,
    upstream_duration: HistogramFamily<UpstreamLabels>,
    upstream_requests: Family<UpstreamStatusLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    streaming_events: Family<ProviderLabels, Counter>,
    streaming_bytes: Family<ProviderLabels, Counter>,
    streaming_duration: HistogramFamily<ProviderLabels>,
    auth_requests: Family<ResultLabels, Counter>,
    rate_limit_exceeded: Family<KeyLabels, Counter>,
    quota_exceeded: Family<KeyLabels, Counter>,
    gateway_overhead: Histogram,
    ttft: HistogramFamily<BackendLabels>,
    tokens: Family<TokenLabels, Counter>,
    cache_requests: Family<ResultLabels, Counter>,
    instance_state: Family<InstanceLabels, Gauge>,
    fallbacks: Counter,
    config_reloads: Family<ResultLabels, Counter>,
    request_log_dropped: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Decrements `http_requests_in_flight` when dropped, so a cancelled request (client disconnect) is
/// still accounted for.
#[must_use = "the in-flight gauge is decremented when the guard is dropped"]
#[derive(Debug)]
pub struct InFlightGuard {
    gauge: Gauge,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Maps a request method onto a bounded set, so a client cannot mint new series with made-up methods.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// Converts prometheus-client's OpenMetrics text into the classic Prometheus text format.
///
/// The two differ only where this touches: OpenMetrics names a counter family without `_total` in its
/// `# HELP`/`# TYPE` lines (classic parsers then see samples without help or type), and ends with
/// `# EOF`. Label and value syntax are the same. Runs per scrape, not per request.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = descriptor
            && let Some((name, tail)) = rest.split_once(' ')
            && counters.contains(name)
        {
            out.push_str(prefix);
            out.push_str(name);
            out.push_str("_total ");
            out.push_str(tail);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

impl Metrics {
    /// Creates every metric family and registers it in a fresh registry owned by this value.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by method, route and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from request received to last response byte",
            http_duration.clone(),
        );
        let http_in_flight = Family::<InFlightLabels, Gauge>::default();
        registry.register(
            "http_requests_in_flight",
            "Requests currently being served",
            http_in_flight.clone(),
        );
        let upstream_duration: HistogramFamily<UpstreamLabels> =
            Family::new_with_constructor(first_token_histogram);
        registry.register(
            "upstream_request_duration_seconds",
            "Time from sending an upstream request to its response headers (time to first byte)",
            upstream_duration.clone(),
        );
        let upstream_requests = Family::<UpstreamStatusLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "Upstream responses, by backend, provider and status",
            upstream_requests.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Failed upstream attempts, by backend and error type (connect, timeout, status_5xx, rate_limited, broken_response)",
            upstream_errors.clone(),
        );
        let streaming_events = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "streaming_events",
            "Server-sent events forwarded to clients",
            streaming_events.clone(),
        );
        let streaming_bytes = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "streaming_bytes",
            "Bytes of streamed responses forwarded to clients",
            streaming_bytes.clone(),
        );
        let streaming_duration: HistogramFamily<ProviderLabels> =
            Family::new_with_constructor(stream_histogram);
        registry.register(
            "streaming_duration_seconds",
            "Duration of streamed responses, first to last event",
            streaming_duration.clone(),
        );
        let auth_requests = Family::<ResultLabels, Counter>::default();
        registry.register(
            "auth_requests",
            "API key checks, by result (allowed or denied)",
            auth_requests.clone(),
        );
        let rate_limit_exceeded = Family::<KeyLabels, Counter>::default();
        registry.register(
            "rate_limit_exceeded",
            "Requests rejected by a rate limit, by configured key name",
            rate_limit_exceeded.clone(),
        );
        let quota_exceeded = Family::<KeyLabels, Counter>::default();
        registry.register(
            "quota_exceeded",
            "Requests rejected by a quota, by configured key name",
            quota_exceeded.clone(),
        );
        let gateway_overhead = Histogram::new(OVERHEAD_BUCKETS.iter().copied());
        registry.register(
            "gateway_overhead_seconds",
            "Time spent in the gateway itself: total request time minus upstream wait",
            gateway_overhead.clone(),
        );
        let ttft: HistogramFamily<BackendLabels> =
            Family::new_with_constructor(first_token_histogram);
        registry.register(
            "time_to_first_token_seconds",
            "Time from request received to the first generated token sent to the client",
            ttft.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens processed, by backend, configured model name and direction (input or output)",
            tokens.clone(),
        );
        let cache_requests = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cache_requests",
            "Response cache lookups, by result (hit or miss)",
            cache_requests.clone(),
        );
        let instance_state = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "upstream_instance_state",
            "Circuit state of each upstream instance: 0 closed, 1 half-open, 2 open",
            instance_state.clone(),
        );
        let fallbacks = Counter::default();
        registry.register(
            "fallbacks",
            "Requests served by a fallback backend after the primary failed",
            fallbacks.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by result (success or failure)",
            config_reloads.clone(),
        );
        let request_log_dropped = Counter::default();
        registry.register(
            "request_log_dropped",
            "Request log records dropped because the writer queue was full",
            request_log_dropped.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            http_in_flight,
            upstream_duration,
            upstream_requests,
            upstream_errors,
            streaming_events,
            streaming_bytes,
            streaming_duration,
            auth_requests,
            rate_limit_exceeded,
            quota_exceeded,
            gateway_overhead,
            ttft,
            tokens,
            cache_requests,
            instance_state,
            fallbacks,
            config_reloads,
            request_log_dropped,
        }
    }

    /// Renders the classic Prometheus text exposition (format 0.0.4), which `promtool check metrics`
    /// accepts without lint findings; serve it with [`Metrics::content_type`].
    pub fn render(&self) -> String {
        to_prometheus_text(&self.render_openmetrics())
    }

    /// The content type matching [`Metrics::render`].
    pub fn content_type() -> &'static str {
        "text/plain; version=0.0.4; charset=utf-8"
    }

    /// Renders the OpenMetrics text exposition (ends with `# EOF`), for scrapers that ask for it with
    /// `Accept: application/openmetrics-text`; serve it with [`Metrics::openmetrics_content_type`].
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Err(err) = encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; an encoder error would be a bug in a label encoder.
            tracing::error!(error = %err, "metrics encoding failed");
        }
        out
    }

    /// The content type matching [`Metrics::render_openmetrics`].
    pub fn openmetrics_content_type() -> &'static str {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    }

    /// Counts one finished HTTP request and observes its total duration. `path` is the matched route
    /// template (e.g. `/v1/chat/completions`), never the raw URI.
    pub fn http_request(&self, method: &str, path: &'static str, status: u16, duration: Duration) {
        let labels = HttpLabels {
            method: method_label(method),
            path,
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }

    /// Increments `http_requests_in_flight` until the returned guard is dropped.
    pub fn in_flight(&self, method: &str, path: &'static str) -> InFlightGuard {
        let gauge = self.http_in_flight.get_or_create_owned(&InFlightLabels {
            method: method_label(method),
            path,
        });
        gauge.inc();
        InFlightGuard { gauge }
    }

    /// Records an upstream response (any status) and its time to first byte.
    pub fn upstream_response(
        &self,
        upstream: &str,
        provider: &'static str,
        status: u16,
        ttfb: Duration,
    ) {
        self.upstream_requests
            .get_or_create(&UpstreamStatusLabels {
                upstream: upstream.to_owned(),
                provider,
                status,
            })
            .inc();
        self.upstream_duration
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
                provider,
            })
            .observe(ttfb.as_secs_f64());
    }

    /// Counts a failed upstream attempt; `error_type` is a closed kind: `connect`, `timeout`,
    /// `status_5xx`, `rate_limited` (429) or `broken_response`. An attempt that got a 5xx/429 response
    /// is also an upstream response and is counted by [`Metrics::upstream_response`] with its status.
    pub fn upstream_error(&self, upstream: &str, error_type: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                upstream: upstream.to_owned(),
                error_type,
            })
            .inc();
    }

    /// Records one finished stream: events and bytes forwarded, and its duration.
    pub fn stream_finished(
        &self,
        provider: &'static str,
        events: u64,
        bytes: u64,
        duration: Duration,
    ) {
        let labels = ProviderLabels { provider };
        self.streaming_events.get_or_create(&labels).inc_by(events);
        self.streaming_bytes.get_or_create(&labels).inc_by(bytes);
        self.streaming_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }

    /// Counts one API key check.
    pub fn auth(&self, allowed: bool) {
        let result = if allowed { "allowed" } else { "denied" };
        self.auth_requests
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a rate-limit rejection for a configured key name (or a fixed name such as `anonymous`).
    pub fn rate_limited(&self, key_name: &str) {
        self.rate_limit_exceeded
            .get_or_create(&KeyLabels {
                key_name: key_name.to_owned(),
            })
            .inc();
    }

    /// Counts a quota rejection for a configured key name.
    pub fn quota_exceeded(&self, key_name: &str) {
        self.quota_exceeded
            .get_or_create(&KeyLabels {
                key_name: key_name.to_owned(),
            })
            .inc();
    }

    /// Observes the time spent in the gateway itself (total minus upstream wait).
    pub fn overhead(&self, d: Duration) {
        self.gateway_overhead.observe(d.as_secs_f64());
    }

    /// Observes the time to first token for a configured backend.
    pub fn ttft(&self, backend: &str, d: Duration) {
        self.ttft
            .get_or_create(&BackendLabels {
                backend: backend.to_owned(),
            })
            .observe(d.as_secs_f64());
    }

    /// Adds input and output tokens. `model` must be a configured model name (alias or backend name),
    /// never the client's free-form string, so the series stay bounded.
    pub fn tokens(&self, backend: &str, model: &str, input: u64, output: u64) {
        let mut labels = TokenLabels {
            backend: backend.to_owned(),
            model: model.to_owned(),
            direction: "input",
        };
        self.tokens.get_or_create(&labels).inc_by(input);
        labels.direction = "output";
        self.tokens.get_or_create(&labels).inc_by(output);
    }

    /// Counts one response cache lookup.
    pub fn cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache_requests
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Sets the circuit state of an upstream instance (see [`instance_state`]).
    pub fn instance_state(&self, backend: &str, instance: &str, state: i64) {
        self.instance_state
            .get_or_create(&InstanceLabels {
                backend: backend.to_owned(),
                instance: instance.to_owned(),
            })
            .set(state);
    }

    /// Counts a request that was served by a fallback backend.
    pub fn fallback(&self) {
        self.fallbacks.inc();
    }

    /// Counts one configuration reload attempt.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts one request log record dropped because the writer queue was full.
    pub fn request_log_dropped(&self) {
        self.request_log_dropped.inc();
    }
}

// The strict exposition parser the integration tests use: one copy, shared through `#[path]`.
#[cfg(test)]
#[path = "../../tests/it/support/prom.rs"]
#[expect(dead_code, reason = "its scrape helpers serve the integration tests")]
mod prom_text;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    use super::prom_text::{Sample, parse_prometheus_text};

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
        let (types, samples) =
            parse_prometheus_text(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

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
        let alert_names: BTreeSet<&str> =
            rules.iter().filter_map(|r| r["alert"].as_str()).collect();
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
}
