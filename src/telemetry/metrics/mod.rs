//! Prometheus metrics: one `Metrics` value owns its own `Registry` and every named series the gateway exports.
//!
//! Why one struct with one method per event: the pipeline calls a single typed method per request stage, so
//! metric names and label sets live in one module, and label values come only from bounded sets
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
//!
//! Files: `mod.rs` the families and their registration, `labels.rs` their label sets, `record.rs` one
//! recording method per event, `render.rs` the text expositions.

mod labels;
mod record;
mod render;
#[cfg(test)]
mod tests;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use super::handles::HandleCache;
use labels::{
    AffinityLabels, BackendLabels, BackendModel, HttpLabels, InFlightLabels, InstanceLabels,
    KeyLabels, ProviderLabels, QueueRefusalLabels, ResultLabels, TokenLabels, UpstreamErrorLabels,
    UpstreamLabels, UpstreamStatusLabels,
};

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
}
