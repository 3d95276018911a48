//! The `/stats` collector: uptime, request and error counts, limit rejections, and per-backend latency
//! percentiles, all in bounded memory.
//!
//! Latencies go into a fixed log-linear histogram (8 sub-buckets per power of two, so a percentile is
//! within about 6% of the true value) made of atomics: recording is lock-free once a backend's entry
//! exists, and memory does not grow with traffic. The lead merges cache stats (`cache_size`,
//! `cache_capacity`, `hits`, `misses`) into the JSON object [`Stats::snapshot`] returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// Values below this many microseconds get one bucket each.
const LINEAR: u64 = 16;
/// Sub-buckets per power of two (3 mantissa bits).
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Largest tracked exponent: 2^38 µs is about 76 hours; longer latencies land in the last bucket.
const MAX_EXP: u32 = 37;
const BUCKETS: usize = (LINEAR + (MAX_EXP as u64 - 3) * SUB) as usize;

/// Backend entries kept before further names are folded into `other`: names come from the config,
/// so this only guards against a caller passing unbounded strings.
const MAX_BACKENDS: usize = 1024;

fn bucket_index(micros: u64) -> usize {
    if micros < LINEAR {
        return micros as usize;
    }
    let exp = 63 - micros.leading_zeros();
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (micros >> (exp - SUB_BITS)) & (SUB - 1);
    (LINEAR + u64::from(exp - 4) * SUB + sub) as usize
}

/// The midpoint of a bucket, in microseconds.
fn bucket_value(index: usize) -> f64 {
    let index = index as u64;
    if index < LINEAR {
        return index as f64;
    }
    let exp = (index - LINEAR) / SUB + 4;
    let sub = (index - LINEAR) % SUB;
    let width = 1u64 << (exp - u64::from(SUB_BITS));
    let lower = (SUB + sub) * width;
    lower as f64 + width as f64 / 2.0
}

/// A fixed-size latency histogram of atomics.
struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl LatencyHistogram {
    fn new() -> Self {
        LatencyHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            max_micros: AtomicU64::new(0),
        }
    }

    fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(bucket) = self.buckets.get(bucket_index(micros)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// `{"count","mean","p50","p95","p99","max"}` in milliseconds (null when nothing was recorded).
    fn summary(&self) -> Value {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return json!({"count": 0, "mean": null, "p50": null, "p95": null, "p99": null, "max": null});
        }
        let max = self.max_micros.load(Ordering::Relaxed) as f64;
        let quantile = |q: f64| -> f64 {
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0u64;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return bucket_value(i).min(max);
                }
            }
            max
        };
        let ms = |micros: f64| (micros / 1000.0 * 1000.0).round() / 1000.0;
        let mean = self.sum_micros.load(Ordering::Relaxed) as f64 / count as f64;
        json!({
            "count": count,
            "mean": ms(mean),
            "p50": ms(quantile(0.50)),
            "p95": ms(quantile(0.95)),
            "p99": ms(quantile(0.99)),
            "max": ms(max),
        })
    }
}

struct BackendStats {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: LatencyHistogram,
}

impl BackendStats {
    fn new() -> Self {
        BackendStats {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: LatencyHistogram::new(),
        }
    }
}

/// Counters behind `GET /stats`; share it behind an `Arc`.
pub struct Stats {
    started: Instant,
    requests: AtomicU64,
    /// Responses with status >= 500 (including gateway-made 502/504).
    errors: AtomicU64,
    /// Responses with status 400..=499.
    client_errors: AtomicU64,
    /// Requests rejected by rate limits or quotas.
    rejected: AtomicU64,
    latency: LatencyHistogram,
    /// Written once per backend name (first request), read on every request: a read lock then.
    backends: RwLock<HashMap<String, Arc<BackendStats>>>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Starts the uptime clock now.
    pub fn new() -> Stats {
        Stats {
            started: Instant::now(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            latency: LatencyHistogram::new(),
            backends: RwLock::new(HashMap::new()),
        }
    }

    /// Records one completed request. `backend` is the configured backend that answered; pass `""`
    /// when none was chosen (e.g. a 400 before routing): it then counts only in the totals.
    pub fn record(&self, backend: &str, status: u16, latency: Duration) {
        let is_error = status >= 500;
        self.requests.fetch_add(1, Ordering::Relaxed);
        if is_error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        } else if status >= 400 {
            self.client_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(latency);
        if backend.is_empty() {
            return;
        }
        let entry = self.backend(backend);
        entry.requests.fetch_add(1, Ordering::Relaxed);
        if is_error {
            entry.errors.fetch_add(1, Ordering::Relaxed);
        }
        entry.latency.record(latency);
    }

    fn backend(&self, name: &str) -> Arc<BackendStats> {
        if let Some(entry) = self
            .backends
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return entry.clone();
        }
        let mut map = self
            .backends
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let key = if map.len() >= MAX_BACKENDS && !map.contains_key(name) {
            "other"
        } else {
            name
        };
        map.entry(key.to_owned())
            .or_insert_with(|| Arc::new(BackendStats::new()))
            .clone()
    }

    /// Counts a request rejected by a rate limit or quota.
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// The `/stats` JSON object; the caller may insert more keys (cache stats) before serving it.
    pub fn snapshot(&self) -> Value {
        self.snapshot_with_uptime(self.started.elapsed())
    }

    fn snapshot_with_uptime(&self, uptime: Duration) -> Value {
        let requests = self.requests.load(Ordering::Relaxed);
        let errors = self.errors.load(Ordering::Relaxed);
        let secs = uptime.as_secs_f64();
        let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
        let mut backends = Map::new();
        let map = self.backends.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        for name in names {
            if let Some(b) = map.get(name) {
                backends.insert(
                    name.clone(),
                    json!({
                        "requests": b.requests.load(Ordering::Relaxed),
                        "errors": b.errors.load(Ordering::Relaxed),
                        "latency_ms": b.latency.summary(),
                    }),
                );
            }
        }
        json!({
            "uptime_seconds": uptime.as_secs(),
            "requests": requests,
            "errors": errors,
            "client_errors": self.client_errors.load(Ordering::Relaxed),
            "rejected": self.rejected.load(Ordering::Relaxed),
            "error_rate": if requests == 0 { 0.0 } else { round3(errors as f64 / requests as f64) },
            "requests_per_second": if secs > 0.0 { round3(requests as f64 / secs) } else { 0.0 },
            "latency_ms": self.latency.summary(),
            "backends": backends,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_precise() {
        let mut last = 0usize;
        let mut v = 0u64;
        while v < 1u64 << 36 {
            let i = bucket_index(v);
            assert!(i >= last, "index went down at {v}");
            assert!(i < BUCKETS);
            last = i;
            let mid = bucket_value(i);
            let err = (mid - v as f64).abs() / (v.max(1) as f64);
            assert!(
                err <= 0.0625 + 1e-9,
                "{v} -> bucket {i} mid {mid} err {err}"
            );
            v = v + 1 + v / 7;
        }
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn snapshot_counts_and_percentiles() {
        let stats = Stats::new();
        for ms in 1..=100u64 {
            stats.record("vllm", 200, Duration::from_millis(ms));
        }
        stats.record("vllm", 502, Duration::from_millis(5));
        stats.record("cloud", 200, Duration::from_secs(2));
        stats.record("", 400, Duration::from_micros(50));
        stats.rejected();
        stats.rejected();

        let snap = stats.snapshot_with_uptime(Duration::from_secs(10));
        assert_eq!(snap["uptime_seconds"], 10);
        assert_eq!(snap["requests"], 103);
        assert_eq!(snap["errors"], 1);
        assert_eq!(snap["client_errors"], 1);
        assert_eq!(snap["rejected"], 2);
        assert_eq!(snap["requests_per_second"], 10.3);
        assert_eq!(snap["error_rate"], 0.01);

        let vllm = &snap["backends"]["vllm"];
        assert_eq!(vllm["requests"], 101);
        assert_eq!(vllm["errors"], 1);
        let lat = &vllm["latency_ms"];
        assert_eq!(lat["count"], 101);
        assert_eq!(lat["max"], 100.0);
        let near = |key: &str, want: f64| {
            let got = lat[key].as_f64().unwrap_or(f64::NAN);
            assert!((got - want).abs() / want <= 0.07, "{key}: {got} vs {want}");
        };
        near("p50", 50.0);
        near("p95", 95.0);
        near("p99", 99.0);
        near("mean", 5055.0 / 101.0);

        assert_eq!(snap["backends"]["cloud"]["latency_ms"]["p99"], 2000.0);
        assert!(snap["backends"].get("").is_none());
        assert_eq!(snap["latency_ms"]["count"], 103);
    }

    #[test]
    fn empty_stats_have_null_percentiles() {
        let snap = Stats::new().snapshot();
        assert_eq!(snap["requests"], 0);
        assert_eq!(snap["error_rate"], 0.0);
        assert_eq!(snap["latency_ms"]["p50"], Value::Null);
        assert_eq!(snap["backends"], json!({}));
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let stats = Arc::new(Stats::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000u64 {
                        let backend = if i % 2 == 0 { "a" } else { "b" };
                        stats.record(backend, 200, Duration::from_micros(i + t));
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        let snap = stats.snapshot();
        assert_eq!(snap["requests"], 20_000);
        assert_eq!(snap["backends"]["a"]["requests"], 10_000);
        assert_eq!(snap["backends"]["b"]["latency_ms"]["count"], 10_000);
    }

    #[test]
    fn backend_entries_are_bounded() {
        let stats = Stats::new();
        for i in 0..(MAX_BACKENDS + 10) {
            stats.record(&format!("b{i}"), 200, Duration::from_millis(1));
        }
        let snap = stats.snapshot();
        let backends = snap["backends"]
            .as_object()
            .map(Map::len)
            .unwrap_or_default();
        assert_eq!(backends, MAX_BACKENDS + 1);
        assert_eq!(snap["backends"]["other"]["requests"], 10);
    }
}
