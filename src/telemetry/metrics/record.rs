//! The recording methods of [`Metrics`]: one per event, each a no-op while metrics are disabled.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::labels::{
    AffinityRef, BackendLabels, BackendModelRef, BackendRef, HttpLabels, InFlightLabels,
    InstanceLabels, KeyRef, ProviderLabels, QueueRefusalLabels, ResultLabels, TokenLabels,
    UpstreamErrorRef, UpstreamLabels, UpstreamStatusRef, method_label,
};
use super::{InFlightGuard, Metrics};

impl Metrics {
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

    /// Sets the circuit state of an upstream instance (see [`instance_state`](super::instance_state)).
    /// Breaker transitions are rare, so this goes to the family directly.
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
