//! Engine load: each instance's own account of its load, scraped from the inference server at an interval
//! (`engine_load:` of a backend) and fed to the balancer, `/health` and the gateway's metrics.
//!
//! - vLLM `GET /metrics`: `vllm:num_requests_running`, `vllm:num_requests_waiting`,
//!   `vllm:kv_cache_usage_perc` (`vllm:gpu_cache_usage_perc` before v0.10);
//! - llama.cpp `GET /metrics` (`--metrics`): `llamacpp:requests_processing`, `llamacpp:requests_deferred`,
//!   `llamacpp:kv_cache_usage_ratio`; and `GET /slots` (`slots: true`): the slot count and the busy ones;
//! - SGLang (`sglang:num_running_reqs`, `sglang:num_queue_reqs`, `sglang:token_usage`) and TGI
//!   (`tgi_batch_current_size`, `tgi_queue_size`) the same way.
//!
//! Series of the same name are summed (one server may run several engines); usage takes the fullest.
//! The endpoints sit at the server's root: the instance URL without its `/v1`. A reading is used for
//! three scrape intervals; after that (or when a scrape fails) the balancer goes by its own in-flight
//! counts alone. A failed scrape says nothing about the instance's health: breakers are fed by requests
//! and by the active health check only.
//!
//! A reading is up to an interval old, and this gateway's own requests come and go faster than that; so
//! the balancer counts its own in-flight requests as they are now and takes from the reading only the
//! load it does not know about — running + waiting beyond this gateway's in-flight count at the scrape
//! (other gateway replicas, other clients). The slot count is llama.cpp's from `/slots`; for vLLM, which
//! does not export `max_num_seqs`, it is learned: the running count of the last reading that had a
//! queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config_error::Invalid;

/// An engine's `/metrics` or `/slots` answer is read up to this size.
pub(crate) const MAX_SCRAPE_BYTES: usize = 4 * 1024 * 1024;

/// `engine_load:` of a backend.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineLoadConfig {
    pub enabled: bool,
    /// Seconds between two scrapes of one instance.
    pub interval_s: f64,
    /// Prometheus endpoint under the server's root; empty: none (llama.cpp without `--metrics`).
    pub metrics_path: String,
    /// Also read llama.cpp's `GET /slots` (slot count and busy slots).
    pub slots: bool,
    /// Bound on one scrape.
    pub timeout_s: f64,
}

impl Default for EngineLoadConfig {
    fn default() -> Self {
        EngineLoadConfig {
            enabled: true,
            interval_s: 1.0,
            metrics_path: "/metrics".to_owned(),
            slots: false,
            timeout_s: 1.0,
        }
    }
}

impl EngineLoadConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        for (name, value) in [
            ("interval_s", self.interval_s),
            ("timeout_s", self.timeout_s),
        ] {
            if !(value.is_finite() && (0.01..=3600.0).contains(&value)) {
                return Err(Invalid::new(
                    "engine_load",
                    format!(
                        "engine_load.{name} is {value}; it must be a number of seconds from 0.01 to 3600"
                    ),
                ));
            }
        }
        if !self.metrics_path.is_empty() && !self.metrics_path.starts_with('/') {
            return Err(Invalid::new(
                "engine_load",
                format!(
                    "engine_load.metrics_path '{}' must start with '/' (or be empty for none)",
                    self.metrics_path
                ),
            ));
        }
        if self.metrics_path.is_empty() && !self.slots {
            return Err(Invalid::new(
                "engine_load",
                "engine_load reads nothing: set metrics_path (e.g. /metrics) or slots: true"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_s)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }
}

/// What the balancer sees of one engine reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct EngineView {
    /// Requests the engine is running.
    pub running: u32,
    /// Requests queued inside the engine.
    pub waiting: u32,
    /// Slots (llama.cpp `--parallel`; for vLLM learned from a reading with a queue), when known.
    pub slots: Option<u32>,
    /// KV cache in use, 0..1, when reported.
    pub kv_cache_usage: Option<f64>,
    /// Running + waiting beyond this gateway's own in-flight requests at the scrape: load from others.
    pub external: u32,
}

impl EngineView {
    /// The instance's load now: this gateway's in-flight requests plus the others' from the reading.
    pub fn load(&self, in_flight: u64) -> u64 {
        in_flight + u64::from(self.external)
    }

    /// True when a new request would wait inside the engine (no slot known: when it had a queue).
    pub fn busy(&self, in_flight: u64) -> bool {
        match self.slots {
            Some(slots) => self.load(in_flight) >= u64::from(slots),
            None => self.waiting > 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    view: EngineView,
    at: Instant,
    valid_until: Instant,
}

/// The latest reading of one instance; part of its long-lived state.
#[derive(Debug, Default)]
pub struct EngineCell {
    reading: Mutex<Option<Reading>>,
    scraping: AtomicBool,
}

impl EngineCell {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Reading>> {
        self.reading.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reading, unless it is older than three intervals.
    pub(crate) fn view(&self, now: Instant) -> Option<EngineView> {
        self.lock()
            .filter(|reading| now <= reading.valid_until)
            .map(|reading| reading.view)
    }

    /// The reading and its age in seconds, for `/health` (also when stale).
    pub fn status(&self, now: Instant) -> Option<(EngineView, f64, bool)> {
        self.lock().map(|reading| {
            (
                reading.view,
                now.saturating_duration_since(reading.at).as_secs_f64(),
                now <= reading.valid_until,
            )
        })
    }

    /// Stores a reading taken while this gateway had `in_flight` requests on the instance; a vLLM
    /// reading without a slot count inherits the one learned earlier.
    pub fn store(&self, mut view: EngineView, in_flight: u64, now: Instant, interval: Duration) {
        let mut reading = self.lock();
        let total = u64::from(view.running) + u64::from(view.waiting);
        view.external = u32::try_from(total.saturating_sub(in_flight)).unwrap_or(u32::MAX);
        if view.slots.is_none() {
            view.slots = if view.waiting > 0 && view.running > 0 {
                Some(view.running)
            } else {
                reading.and_then(|r| r.view.slots)
            };
        }
        *reading = Some(Reading {
            view,
            at: now,
            valid_until: now + interval * 3,
        });
    }

    /// Claims the next scrape; false while one is still running.
    pub(crate) fn begin_scrape(&self) -> bool {
        !self.scraping.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn end_scrape(&self) {
        self.scraping.store(false, Ordering::Relaxed);
    }
}

/// The engine's numbers found in one Prometheus text exposition.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scraped {
    pub running: Option<f64>,
    pub waiting: Option<f64>,
    pub kv_cache_usage: Option<f64>,
}

fn add(slot: &mut Option<f64>, value: f64) {
    *slot = Some(slot.unwrap_or(0.0) + value);
}

/// Reads the load gauges of vLLM, llama.cpp, SGLang and TGI from a Prometheus text exposition.
pub(crate) fn parse_metrics(text: &str) -> Scraped {
    let mut out = Scraped::default();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let name = &line[..name_end];
        let rest = &line[name_end..];
        let rest = if rest.starts_with('{') {
            match labels_end(rest) {
                Some(end) => &rest[end..],
                None => continue,
            }
        } else {
            rest
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
        else {
            continue;
        };
        match name {
            "vllm:num_requests_running"
            | "llamacpp:requests_processing"
            | "sglang:num_running_reqs"
            | "tgi_batch_current_size" => add(&mut out.running, value),
            "vllm:num_requests_waiting"
            | "llamacpp:requests_deferred"
            | "sglang:num_queue_reqs"
            | "tgi_queue_size" => add(&mut out.waiting, value),
            "vllm:kv_cache_usage_perc"
            | "vllm:gpu_cache_usage_perc"
            | "llamacpp:kv_cache_usage_ratio"
            | "sglang:token_usage" => {
                out.kv_cache_usage = Some(out.kv_cache_usage.map_or(value, |v: f64| v.max(value)));
            }
            _ => {}
        }
    }
    out
}

/// Byte offset just past the `}` closing the label set that `text` starts with (quotes respected).
fn labels_end(text: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, byte) in text.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'}' if !quoted => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// llama.cpp's `GET /slots`: (slots, busy slots). A slot is busy when `is_processing` is true (or, in
/// older servers, `state` is not 0).
pub(crate) fn parse_slots(body: &[u8]) -> Option<(u32, u32)> {
    let slots: Vec<serde_json::Value> = serde_json::from_slice(body).ok()?;
    let busy = slots
        .iter()
        .filter(|slot| match slot.get("is_processing") {
            Some(flag) => flag.as_bool() == Some(true),
            None => slot
                .get("state")
                .and_then(serde_json::Value::as_u64)
                .is_some_and(|s| s != 0),
        })
        .count();
    Some((
        u32::try_from(slots.len()).unwrap_or(u32::MAX),
        u32::try_from(busy).unwrap_or(u32::MAX),
    ))
}

/// Combines what one scrape found into the balancer's view; `None` when it found nothing usable.
pub fn combine(metrics: Option<Scraped>, slots: Option<(u32, u32)>) -> Option<EngineView> {
    let count = |v: Option<f64>| v.map(|v| v.round().min(f64::from(u32::MAX)) as u32);
    let metrics = metrics.filter(|m| m.running.is_some() || m.waiting.is_some());
    if metrics.is_none() && slots.is_none() {
        return None;
    }
    let running = metrics
        .and_then(|m| count(m.running))
        .or(slots.map(|(_, busy)| busy))
        .unwrap_or(0);
    Some(EngineView {
        running,
        waiting: metrics.and_then(|m| count(m.waiting)).unwrap_or(0),
        slots: slots.map(|(total, _)| total),
        kv_cache_usage: metrics.and_then(|m| m.kv_cache_usage),
        external: 0,
    })
}

/// The server root of an instance's base URL: `http://h:8000/v1` → `http://h:8000`.
pub(crate) fn server_root(base_url: &str) -> &str {
    base_url.strip_suffix("/v1").unwrap_or(base_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 5.0
vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m{x} \"y\""} 0.42
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.61
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 1234.0
"#;

    #[test]
    fn reads_vllm_metrics_summed_over_engines() {
        let scraped = parse_metrics(VLLM);
        assert_eq!(scraped.running, Some(7.0));
        assert_eq!(scraped.waiting, Some(3.0));
        assert_eq!(scraped.kv_cache_usage, Some(0.61));
        let view = combine(Some(scraped), None).unwrap();
        assert_eq!((view.running, view.waiting, view.slots), (7, 3, None));
        assert!(view.busy(0));
    }

    #[test]
    fn only_the_load_of_others_is_taken_from_a_reading_and_vllm_slots_are_learned() {
        let cell = EngineCell::default();
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        // 8 running and 2 queued while 6 of them were ours: 4 come from elsewhere, and 8 is the slot count.
        cell.store(
            EngineView {
                running: 8,
                waiting: 2,
                ..EngineView::default()
            },
            6,
            t0,
            second,
        );
        let view = cell.view(t0).unwrap();
        assert_eq!((view.external, view.slots), (4, Some(8)));
        assert_eq!(view.load(2), 6);
        assert!(!view.busy(3));
        assert!(view.busy(4));
        // A later reading without a queue keeps the learned slot count.
        cell.store(
            EngineView {
                running: 3,
                ..EngineView::default()
            },
            3,
            t0,
            second,
        );
        let view = cell.view(t0).unwrap();
        assert_eq!((view.external, view.slots), (0, Some(8)));
        assert!(!view.busy(7));
    }

    #[test]
    fn reads_the_older_vllm_and_llama_cpp_names() {
        let old = "vllm:num_requests_running{model_name=\"m\"} 1\nvllm:gpu_cache_usage_perc{model_name=\"m\"} 0.25\n";
        assert_eq!(
            parse_metrics(old),
            Scraped {
                running: Some(1.0),
                waiting: None,
                kv_cache_usage: Some(0.25)
            }
        );
        let llama = "# HELP llamacpp:requests_processing Number of requests processing.\n# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 2\nllamacpp:requests_deferred 0\nllamacpp:kv_cache_usage_ratio 0.5\n";
        let scraped = parse_metrics(llama);
        assert_eq!((scraped.running, scraped.waiting), (Some(2.0), Some(0.0)));
        // Junk and unrelated series are skipped, not errors.
        assert_eq!(
            parse_metrics("garbage\nfoo{a=\"b\" 1\nvllm:num_requests_waiting NaN\n"),
            Scraped::default()
        );
    }

    #[test]
    fn reads_llama_cpp_slots() {
        let body =
            br#"[{"id":0,"is_processing":true},{"id":1,"is_processing":false},{"id":2,"state":1}]"#;
        assert_eq!(parse_slots(body), Some((3, 2)));
        assert_eq!(parse_slots(b"{\"error\":1}"), None);
        let cell = EngineCell::default();
        let now = Instant::now();
        let view = combine(None, Some((4, 4))).unwrap();
        assert_eq!((view.running, view.slots), (4, Some(4)));
        // Four busy slots, none of them ours: full.
        cell.store(view, 0, now, Duration::from_secs(1));
        assert!(cell.view(now).unwrap().busy(0));
        // Three busy, all ours: one slot left until our fourth request.
        cell.store(
            combine(None, Some((4, 3))).unwrap(),
            3,
            now,
            Duration::from_secs(1),
        );
        let view = cell.view(now).unwrap();
        assert!(!view.busy(3));
        assert!(view.busy(4));
        assert_eq!(combine(Some(Scraped::default()), None), None);
    }

    #[test]
    fn a_reading_goes_stale_after_three_intervals() {
        let cell = EngineCell::default();
        let t0 = Instant::now();
        assert_eq!(cell.view(t0), None);
        let view = EngineView {
            running: 1,
            ..EngineView::default()
        };
        cell.store(view, 1, t0, Duration::from_secs(1));
        assert_eq!(cell.view(t0 + Duration::from_secs(2)), Some(view));
        assert_eq!(cell.view(t0 + Duration::from_secs(4)), None);
        let (_, age, fresh) = cell.status(t0 + Duration::from_secs(4)).unwrap();
        assert!(age >= 4.0 && !fresh);
        assert!(cell.begin_scrape());
        assert!(!cell.begin_scrape());
        cell.end_scrape();
        assert!(cell.begin_scrape());
    }

    #[test]
    fn config_is_checked() {
        assert!(EngineLoadConfig::default().validate().is_ok());
        let err = EngineLoadConfig {
            interval_s: 0.0,
            ..EngineLoadConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("engine_load.interval_s is 0"), "{err}");
        let err = EngineLoadConfig {
            metrics_path: "metrics".into(),
            ..EngineLoadConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("'metrics'"), "{err}");
        assert_eq!(server_root("http://h:8000/v1"), "http://h:8000");
        assert_eq!(server_root("http://h:8080"), "http://h:8080");
    }
}
