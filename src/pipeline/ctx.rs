//! `RequestCtx`: what one request did (route, attempts, timings, usage), finished exactly once —
//! when the response (or its stream) ends, or when the client goes away (Drop).

use std::time::{Duration, Instant};

use crate::protocol::{Endpoint, Usage};
use crate::state::AppState;

pub struct RequestCtx {
    pub state: AppState,
    pub id: String,
    pub endpoint: Endpoint,
    pub started: Instant,
    /// The model the client asked for.
    pub model: Option<String>,
    pub backend: Option<String>,
    pub instance: Option<String>,
    pub stream: bool,
    pub status: u16,
    /// Time until the upstream's response headers (or the echo answer).
    pub ttfb: Option<Duration>,
    /// Time until the first byte of the body went to the client.
    pub ttft: Option<Duration>,
    pub usage: Option<Usage>,
    pub error: Option<&'static str>,
    pub attempts: u32,
    finished: bool,
}

impl RequestCtx {
    pub fn new(state: &AppState, id: String, endpoint: Endpoint) -> RequestCtx {
        RequestCtx {
            state: state.clone(),
            id,
            endpoint,
            started: Instant::now(),
            model: None,
            backend: None,
            instance: None,
            stream: false,
            status: 0,
            ttfb: None,
            ttft: None,
            usage: None,
            error: None,
            attempts: 0,
            finished: false,
        }
    }

    /// Move the record out (into a response stream); `self` is left finished so it records nothing.
    pub fn detach(&mut self) -> RequestCtx {
        let detached = RequestCtx {
            state: self.state.clone(),
            id: std::mem::take(&mut self.id),
            endpoint: self.endpoint,
            started: self.started,
            model: self.model.take(),
            backend: self.backend.take(),
            instance: self.instance.take(),
            stream: self.stream,
            status: self.status,
            ttfb: self.ttfb,
            ttft: self.ttft,
            usage: self.usage,
            error: self.error,
            attempts: self.attempts,
            finished: false,
        };
        self.finished = true;
        detached
    }

    /// Record the request: one access line (and, as telemetry lands, one metrics update and log record).
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let latency = self.started.elapsed();
        let snapshot = self.state.snapshot();
        if snapshot.config.logging.access_log {
            let usage = self.usage.unwrap_or_default();
            tracing::info!(
                target: "access",
                id = %self.id,
                route = self.endpoint.path(),
                model = self.model.as_deref().unwrap_or("-"),
                backend = self.backend.as_deref().unwrap_or("-"),
                status = self.status,
                stream = self.stream,
                latency_ms = latency.as_secs_f64() * 1000.0,
                ttft_ms = self.ttft.map(|d| d.as_secs_f64() * 1000.0),
                input_tokens = usage.input_tokens,
                output_tokens = usage.output_tokens,
                error = self.error,
                "request"
            );
        }
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        if !self.finished {
            // The client went away before the response was complete (nginx's 499).
            if self.status == 0 || self.status == 200 {
                self.status = 499;
                self.error.get_or_insert("client_disconnected");
            }
            self.finish();
        }
    }
}
