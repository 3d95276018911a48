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
//! The per-request families sit behind `HandleCache`s (`handles.rs`): a recording call costs one atomic
//! load, one hash lookup with borrowed labels and the metric's own atomics — no lock, no allocation; only
//! the first call with a new label set goes through the family. Label-less series are plain handles.
//! With `metrics: { enabled: false }` every recording call returns at its first branch.

use std::time::Duration;

use hashbrown::Equivalent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use super::handles::{HandleCache, LabelKey};

/// The `metrics` config section.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Off: nothing is recorded and `GET /metrics` answers 404. Read at startup only.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true }
    }
}

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AffinityLabels {
    backend: String,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueRefusalLabels {
    backend: String,
    reason: &'static str,
}

/// Cache key of the token counters: both directions of one backend and model in one entry.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct BackendModel {
    backend: String,
    model: String,
}

// Borrowed forms of the label sets with owned strings, for cache lookups without allocating. Each derives
// `Hash` over the same fields in the same order as its owned form, so both hash alike.

#[derive(Hash)]
struct UpstreamStatusRef<'a> {
    upstream: &'a str,
    provider: &'static str,
    status: u16,
}

impl Equivalent<UpstreamStatusLabels> for UpstreamStatusRef<'_> {
    fn equivalent(&self, key: &UpstreamStatusLabels) -> bool {
        self.upstream == key.upstream && self.provider == key.provider && self.status == key.status
    }
}

impl LabelKey<UpstreamStatusLabels> for UpstreamStatusRef<'_> {
    fn to_key(&self) -> UpstreamStatusLabels {
        UpstreamStatusLabels {
            upstream: self.upstream.to_owned(),
            provider: self.provider,
            status: self.status,
        }
    }
}

#[derive(Hash)]
struct UpstreamErrorRef<'a> {
    upstream: &'a str,
    error_type: &'static str,
}

impl Equivalent<UpstreamErrorLabels> for UpstreamErrorRef<'_> {
    fn equivalent(&self, key: &UpstreamErrorLabels) -> bool {
        self.upstream == key.upstream && self.error_type == key.error_type
    }
}

impl LabelKey<UpstreamErrorLabels> for UpstreamErrorRef<'_> {
    fn to_key(&self) -> UpstreamErrorLabels {
        UpstreamErrorLabels {
            upstream: self.upstream.to_owned(),
            error_type: self.error_type,
        }
    }
}

#[derive(Hash)]
struct KeyRef<'a> {
    key_name: &'a str,
}

impl Equivalent<KeyLabels> for KeyRef<'_> {
    fn equivalent(&self, key: &KeyLabels) -> bool {
        self.key_name == key.key_name
    }
}

impl LabelKey<KeyLabels> for KeyRef<'_> {
    fn to_key(&self) -> KeyLabels {
        KeyLabels {
            key_name: self.key_name.to_owned(),
        }
    }
}

#[derive(Hash)]
struct BackendRef<'a> {
    backend: &'a str,
}

impl Equivalent<BackendLabels> for BackendRef<'_> {
    fn equivalent(&self, key: &BackendLabels) -> bool {
        self.backend == key.backend
    }
}

impl LabelKey<BackendLabels> for BackendRef<'_> {
    fn to_key(&self) -> BackendLabels {
        BackendLabels {
            backend: self.backend.to_owned(),
        }
    }
}

#[derive(Hash)]
struct AffinityRef<'a> {
    backend: &'a str,
    decision: &'static str,
}

impl Equivalent<AffinityLabels> for AffinityRef<'_> {
    fn equivalent(&self, key: &AffinityLabels) -> bool {
        self.backend == key.backend && self.decision == key.decision
    }
}

impl LabelKey<AffinityLabels> for AffinityRef<'_> {
    fn to_key(&self) -> AffinityLabels {
        AffinityLabels {
            backend: self.backend.to_owned(),
            decision: self.decision,
        }
    }
}

#[derive(Hash)]
struct BackendModelRef<'a> {
    backend: &'a str,
    model: &'a str,
}

impl Equivalent<BackendModel> for BackendModelRef<'_> {
    fn equivalent(&self, key: &BackendModel) -> bool {
        self.backend == key.backend && self.model == key.model
    }
}

impl LabelKey<BackendModel> for BackendModelRef<'_> {
    fn to_key(&self) -> BackendModel {
        BackendModel {
            backend: self.backend.to_owned(),
            model: self.model.to_owned(),
        }
    }
}

/// Circuit state of one upstream instance, as exported by `upstream_instance_state`.
pub mod instance_state {
    /// The instance takes traffic.
    pub(crate) const CLOSED: i64 = 0;
    /// The instance is on probation after a cooldown.
    pub(crate) const HALF_OPEN: i64 = 1;
    /// The instance is skipped until its cooldown ends.
    pub(crate) const OPEN: i64 = 2;
}

/// All gateway metrics plus the registry that renders them.
///
/// Not `Clone`: the lead keeps one in `AppState` behind an `Arc`; the metric handles inside are `Arc`s
/// already, so nothing here needs a lock of its own.
///
/// The families are what the registry renders; the `*_handles` caches in front of them are what the
/// request path updates (see `handles.rs`). A cache entry may hold handles of several families that share
/// its key, so one lookup serves them all.
pub struct Metrics {
    /// `metrics.enabled`: false turns every recording method into an immediate return. Atomic so a
    /// reload can switch it (one relaxed load per recording call).
    enabled: std::sync::atomic::AtomicBool,
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
    engine_running: Family<InstanceLabels, Gauge>,
    engine_waiting: Family<InstanceLabels, Gauge>,
    engine_kv_usage: Family<InstanceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    affinity: Family<AffinityLabels, Counter>,
    queue_waiting: Family<BackendLabels, Gauge>,
    queue_refused: Family<QueueRefusalLabels, Counter>,
    fallbacks: Counter,
    config_reloads: Family<ResultLabels, Counter>,
    request_log_dropped: Counter,
    http_handles: HandleCache<HttpLabels, (Counter, Histogram)>,
    in_flight_handles: HandleCache<InFlightLabels, Gauge>,
    /// The counter per status and the time-to-first-byte histogram of its upstream and provider.
    upstream_handles: HandleCache<UpstreamStatusLabels, (Counter, Histogram)>,
    upstream_error_handles: HandleCache<UpstreamErrorLabels, Counter>,
    /// Events, bytes, duration.
    streaming_handles: HandleCache<ProviderLabels, (Counter, Counter, Histogram)>,
    auth_handles: HandleCache<ResultLabels, Counter>,
    rate_limit_handles: HandleCache<KeyLabels, Counter>,
    quota_handles: HandleCache<KeyLabels, Counter>,
    ttft_handles: HandleCache<BackendLabels, Histogram>,
    /// Input, output.
    token_handles: HandleCache<BackendModel, (Counter, Counter)>,
    cache_handles: HandleCache<ResultLabels, Counter>,
    affinity_handles: HandleCache<AffinityLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.enabled())
            .finish_non_exhaustive()
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
    /// `None` when metrics are disabled.
    gauge: Option<Gauge>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Some(gauge) = &self.gauge {
            gauge.dec();
        }
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
    /// Creates every metric family and registers it in a fresh registry owned by this value; recording on.
    pub fn new() -> Metrics {
        Metrics::with_config(&MetricsConfig::default())
    }

    /// Like [`Metrics::new`], recording only when `config.enabled`.
    pub(crate) fn with_config(config: &MetricsConfig) -> Metrics {
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
        let engine_running = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "upstream_engine_requests_running",
            "Requests the instance's engine reports running (engine_load scrapes)",
            engine_running.clone(),
        );
        let engine_waiting = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "upstream_engine_requests_waiting",
            "Requests the instance's engine reports queued (engine_load scrapes)",
            engine_waiting.clone(),
        );
        let engine_kv_usage =
            Family::<InstanceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "upstream_engine_kv_cache_usage",
            "KV cache in use as the instance's engine reports it, 0 to 1 (engine_load scrapes)",
            engine_kv_usage.clone(),
        );
        let affinity = Family::<AffinityLabels, Counter>::default();
        registry.register(
            "upstream_affinity_routed",
            "prefix_affinity decisions: home, sticky (a moved session followed), overflow (load bound), failover (home ejected), unkeyed",
            affinity.clone(),
        );
        let queue_waiting = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "upstream_queue_waiting",
            "Requests waiting at the gateway for a free slot (max_in_flight)",
            queue_waiting.clone(),
        );
        let queue_refused = Family::<QueueRefusalLabels, Counter>::default();
        registry.register(
            "upstream_queue_refused",
            "Requests refused with 503 because the wait queue was full or the wait timed out",
            queue_refused.clone(),
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
            enabled: std::sync::atomic::AtomicBool::new(config.enabled),
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
            engine_running,
            engine_waiting,
            engine_kv_usage,
            affinity,
            queue_waiting,
            queue_refused,
            fallbacks,
            config_reloads,
            request_log_dropped,
            http_handles: HandleCache::default(),
            in_flight_handles: HandleCache::default(),
            upstream_handles: HandleCache::default(),
            upstream_error_handles: HandleCache::default(),
            streaming_handles: HandleCache::default(),
            auth_handles: HandleCache::default(),
            rate_limit_handles: HandleCache::default(),
            quota_handles: HandleCache::default(),
            ttft_handles: HandleCache::default(),
            token_handles: HandleCache::default(),
            cache_handles: HandleCache::default(),
            affinity_handles: HandleCache::default(),
        }
    }

    /// False when `metrics.enabled` is off: nothing is recorded and `/metrics` is not served.
    pub fn enabled(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Applies a reloaded `metrics.enabled`; series recorded so far are kept.
    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.enabled
            .store(enabled, std::sync::atomic::Ordering::Relaxed);
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
    pub(crate) fn render_openmetrics(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Err(err) = encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; an encoder error would be a bug in a label encoder.
            tracing::error!(error = %err, "metrics encoding failed");
        }
        out
    }

    /// The content type matching [`Metrics::render_openmetrics`].
    pub(crate) fn openmetrics_content_type() -> &'static str {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    }

    /// Counts one finished HTTP request and observes its total duration. `path` is the matched route
    /// template (e.g. `/v1/chat/completions`), never the raw URI.
    pub fn http_request(&self, method: &str, path: &'static str, status: u16, duration: Duration) {
        if !self.enabled() {
            return;
        }
        let labels = HttpLabels {
            method: method_label(method),
            path,
            status,
        };
        self.http_handles.with(
            &labels,
            |labels| {
                (
                    self.http_requests.get_or_create_owned(labels),
                    self.http_duration.get_or_create_owned(labels),
                )
            },
            |(requests, seconds)| {
                requests.inc();
                seconds.observe(duration.as_secs_f64());
            },
        );
    }

    /// Increments `http_requests_in_flight` until the returned guard is dropped.
    pub fn in_flight(&self, method: &str, path: &'static str) -> InFlightGuard {
        if !self.enabled() {
            return InFlightGuard { gauge: None };
        }
        let labels = InFlightLabels {
            method: method_label(method),
            path,
        };
        let gauge = self.in_flight_handles.with(
            &labels,
            |labels| self.http_in_flight.get_or_create_owned(labels),
            |gauge| {
                gauge.inc();
                gauge.clone()
            },
        );
        InFlightGuard { gauge: Some(gauge) }
    }

    /// Records an upstream response (any status) and its time to first byte.
    pub fn upstream_response(
        &self,
        upstream: &str,
        provider: &'static str,
        status: u16,
        ttfb: Duration,
    ) {
        if !self.enabled() {
            return;
        }
        self.upstream_handles.with(
            &UpstreamStatusRef {
                upstream,
                provider,
                status,
            },
            |labels| {
                (
                    self.upstream_requests.get_or_create_owned(labels),
                    self.upstream_duration.get_or_create_owned(&UpstreamLabels {
                        upstream: labels.upstream.clone(),
                        provider,
                    }),
                )
            },
            |(responses, seconds)| {
                responses.inc();
                seconds.observe(ttfb.as_secs_f64());
            },
        );
    }

    /// Counts a failed upstream attempt; `error_type` is a closed kind: `connect`, `timeout`,
    /// `status_5xx`, `rate_limited` (429) or `broken_response`. An attempt that got a 5xx/429 response
    /// is also an upstream response and is counted by [`Metrics::upstream_response`] with its status.
    pub(crate) fn upstream_error(&self, upstream: &str, error_type: &'static str) {
        if !self.enabled() {
            return;
        }
        self.upstream_error_handles.with(
            &UpstreamErrorRef {
                upstream,
                error_type,
            },
            |labels| self.upstream_errors.get_or_create_owned(labels),
            Counter::inc,
        );
    }

    /// Records one finished stream: events and bytes forwarded, and its duration.
    pub(crate) fn stream_finished(
        &self,
        provider: &'static str,
        events: u64,
        bytes: u64,
        duration: Duration,
    ) {
        if !self.enabled() {
            return;
        }
        self.streaming_handles.with(
            &ProviderLabels { provider },
            |labels| {
                (
                    self.streaming_events.get_or_create_owned(labels),
                    self.streaming_bytes.get_or_create_owned(labels),
                    self.streaming_duration.get_or_create_owned(labels),
                )
            },
            |(event_count, byte_count, seconds)| {
                event_count.inc_by(events);
                byte_count.inc_by(bytes);
                seconds.observe(duration.as_secs_f64());
            },
        );
    }

    /// Counts one API key check.
    pub fn auth(&self, allowed: bool) {
        if !self.enabled() {
            return;
        }
        let result = if allowed { "allowed" } else { "denied" };
        self.auth_handles.with(
            &ResultLabels { result },
            |labels| self.auth_requests.get_or_create_owned(labels),
            Counter::inc,
        );
    }

    /// Counts a rate-limit rejection for a configured key name (or a fixed name such as `anonymous`).
    pub(crate) fn rate_limited(&self, key_name: &str) {
        if !self.enabled() {
            return;
        }
        self.rate_limit_handles.with(
            &KeyRef { key_name },
            |labels| self.rate_limit_exceeded.get_or_create_owned(labels),
            Counter::inc,
        );
    }

    /// Counts a quota rejection for a configured key name.
    pub fn quota_exceeded(&self, key_name: &str) {
        if !self.enabled() {
            return;
        }
        self.quota_handles.with(
            &KeyRef { key_name },
            |labels| self.quota_exceeded.get_or_create_owned(labels),
            Counter::inc,
        );
    }

    /// Observes the time spent in the gateway itself (total minus upstream wait).
    pub fn overhead(&self, d: Duration) {
        if !self.enabled() {
            return;
        }
        self.gateway_overhead.observe(d.as_secs_f64());
    }

    /// Observes the time to first token for a configured backend.
    pub fn ttft(&self, backend: &str, d: Duration) {
        if !self.enabled() {
            return;
        }
        self.ttft_handles.with(
            &BackendRef { backend },
            |labels| self.ttft.get_or_create_owned(labels),
            |seconds| seconds.observe(d.as_secs_f64()),
        );
    }

    /// Adds input and output tokens. `model` must be a configured model name (alias or backend name),
    /// never the client's free-form string, so the series stay bounded.
    pub fn tokens(&self, backend: &str, model: &str, input: u64, output: u64) {
        if !self.enabled() {
            return;
        }
        self.token_handles.with(
            &BackendModelRef { backend, model },
            |key| {
                let mut labels = TokenLabels {
                    backend: key.backend.clone(),
                    model: key.model.clone(),
                    direction: "input",
                };
                let input = self.tokens.get_or_create_owned(&labels);
                labels.direction = "output";
                (input, self.tokens.get_or_create_owned(&labels))
            },
            |(input_tokens, output_tokens)| {
                input_tokens.inc_by(input);
                output_tokens.inc_by(output);
            },
        );
    }

    /// Counts one response cache lookup.
    pub fn cache(&self, hit: bool) {
        if !self.enabled() {
            return;
        }
        let result = if hit { "hit" } else { "miss" };
        self.cache_handles.with(
            &ResultLabels { result },
            |labels| self.cache_requests.get_or_create_owned(labels),
            Counter::inc,
        );
    }

    /// Sets the circuit state of an upstream instance (see [`instance_state`]). Breaker transitions are
    /// rare, so this goes to the family directly.
    pub fn instance_state(&self, backend: &str, instance: &str, state: i64) {
        if !self.enabled() {
            return;
        }
        self.instance_state
            .get_or_create(&InstanceLabels {
                backend: backend.to_owned(),
                instance: instance.to_owned(),
            })
            .set(state);
    }

    /// Records one engine load reading of an instance (once per scrape: straight to the families).
    pub fn engine_load(
        &self,
        backend: &str,
        instance: &str,
        view: &crate::routing::engine_load::EngineView,
    ) {
        if !self.enabled() {
            return;
        }
        let labels = InstanceLabels {
            backend: backend.to_owned(),
            instance: instance.to_owned(),
        };
        self.engine_running
            .get_or_create(&labels)
            .set(i64::from(view.running));
        self.engine_waiting
            .get_or_create(&labels)
            .set(i64::from(view.waiting));
        if let Some(usage) = view.kv_cache_usage {
            self.engine_kv_usage.get_or_create(&labels).set(usage);
        }
    }

    /// Counts one `prefix_affinity` decision.
    pub fn affinity(&self, backend: &str, decision: &'static str) {
        if !self.enabled() {
            return;
        }
        self.affinity_handles.with(
            &AffinityRef { backend, decision },
            |labels| self.affinity.get_or_create_owned(labels),
            Counter::inc,
        );
    }

    /// Sets how many requests wait for a slot of `backend` (only requests that wait call this).
    pub(crate) fn queue_waiting(&self, backend: &str, waiting: usize) {
        if !self.enabled() {
            return;
        }
        self.queue_waiting
            .get_or_create(&BackendLabels {
                backend: backend.to_owned(),
            })
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// Counts a request refused by the admission queue (`queue_full` or `timeout`).
    pub(crate) fn queue_refused(&self, backend: &str, reason: &'static str) {
        if !self.enabled() {
            return;
        }
        self.queue_refused
            .get_or_create(&QueueRefusalLabels {
                backend: backend.to_owned(),
                reason,
            })
            .inc();
    }

    /// Counts a request that was served by a fallback backend.
    pub fn fallback(&self) {
        if !self.enabled() {
            return;
        }
        self.fallbacks.inc();
    }

    /// Counts one configuration reload attempt (rare: straight to the family).
    pub(crate) fn config_reload(&self, ok: bool) {
        if !self.enabled() {
            return;
        }
        let result = if ok { "success" } else { "failure" };
        self.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts one request log record dropped because the writer queue was full.
    pub(crate) fn request_log_dropped(&self) {
        if !self.enabled() {
            return;
        }
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

    /// A lookup with borrowed labels only hits when the borrowed form hashes like the owned key.
    #[test]
    fn borrowed_label_forms_hash_and_compare_like_their_owned_keys() {
        use std::hash::BuildHasher;
        let hasher = hashbrown::DefaultHashBuilder::default();
        fn same<Q: LabelKey<K>, K: Hash + Eq>(hasher: &hashbrown::DefaultHashBuilder, q: &Q) {
            let key = q.to_key();
            assert_eq!(hasher.hash_one(q), hasher.hash_one(&key));
            assert!(q.equivalent(&key));
        }
        use std::hash::Hash;
        same(
            &hasher,
            &UpstreamStatusRef {
                upstream: "vllm",
                provider: "openai",
                status: 200,
            },
        );
        same(
            &hasher,
            &UpstreamErrorRef {
                upstream: "vllm",
                error_type: "timeout",
            },
        );
        same(&hasher, &KeyRef { key_name: "team-a" });
        same(&hasher, &BackendRef { backend: "vllm" });
        same(
            &hasher,
            &BackendModelRef {
                backend: "vllm",
                model: "deepseek-r1",
            },
        );
        let other = KeyLabels {
            key_name: "team-b".to_owned(),
        };
        assert!(!KeyRef { key_name: "team-a" }.equivalent(&other));
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
