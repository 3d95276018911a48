//! Live per-instance state (breaker, in-flight count, latency estimate, engine load) that survives config
//! reloads.
//!
//! The registry lives beside the config snapshot, not inside it: a reload builds a new snapshot and asks the
//! registry for each configured (backend, url); instances that stay configured get the same `Arc` back, so
//! their breaker state, in-flight count and latency statistics carry over.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::routing::balance::InstanceView;
use crate::routing::engine_load::{EngineCell, EngineView};
use crate::routing::health::{Breaker, BreakerState, HealthConfig};

/// Decay time constant of the peak-EWMA: an old sample weighs 1/e after this long.
const EWMA_TAU: Duration = Duration::from_secs(10);

/// Peak-sensitive EWMA of time-to-first-byte (as in Finagle and linkerd): a slower sample replaces the
/// estimate at once, faster samples pull it down gradually, and the estimate decays toward zero while no
/// samples arrive, so an instance that was slow once gets explored again.
#[derive(Debug, Default, Clone, Copy)]
struct PeakEwma {
    estimate_us: f64,
    updated: Option<Instant>,
}

impl PeakEwma {
    fn decay_factor(&self, now: Instant) -> f64 {
        match self.updated {
            Some(at) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                (-elapsed / EWMA_TAU.as_secs_f64()).exp()
            }
            None => 0.0,
        }
    }

    fn get(&self, now: Instant) -> f64 {
        self.estimate_us * self.decay_factor(now)
    }

    fn observe(&mut self, sample_us: f64, now: Instant) {
        let decay = self.decay_factor(now);
        let current = self.estimate_us * decay;
        self.estimate_us = if sample_us > current {
            sample_us
        } else {
            self.estimate_us * decay + sample_us * (1.0 - decay)
        };
        self.updated = Some(now);
    }
}

/// State of one upstream instance, shared by every request and every config snapshot that uses it.
pub struct InstanceState {
    pub breaker: Breaker,
    backend: String,
    url: String,
    /// Requests currently sent to this instance and not finished (for `least_connections` and `latency`).
    in_flight: AtomicU64,
    /// Uncontended in practice: updated once per request, read once per balancing decision.
    ttfb: Mutex<PeakEwma>,
    /// `max_in_flight` (0: none); set from the config on every snapshot.
    cap: AtomicU64,
    /// The latest engine load reading (`engine_load:`).
    pub engine: EngineCell,
}

impl fmt::Debug for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry credentials in its userinfo or query: only the redacted form is shown.
        f.debug_struct("InstanceState")
            .field("backend", &self.backend)
            .field("url", &redacted_url(&self.url))
            .field("breaker", &self.breaker)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl InstanceState {
    pub fn new(backend: &str, url: &str, cfg: &HealthConfig) -> Self {
        Self {
            breaker: Breaker::new(cfg),
            backend: backend.to_owned(),
            url: url.to_owned(),
            in_flight: AtomicU64::new(0),
            ttfb: Mutex::new(PeakEwma::default()),
            cap: AtomicU64::new(0),
            engine: EngineCell::default(),
        }
    }

    /// Applies the instance's `max_in_flight` (`None`: no cap).
    pub(crate) fn set_cap(&self, cap: Option<u32>) {
        self.cap.store(cap.map_or(0, u64::from), Ordering::Relaxed);
    }

    pub(crate) fn cap(&self) -> Option<u64> {
        Some(self.cap.load(Ordering::Relaxed)).filter(|&c| c > 0)
    }

    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The configured URL, possibly with credentials: use [`redacted_url`] for logs and alerts.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until the returned guard is dropped (keep it alive for the whole
    /// response stream). Takes `Arc<Self>` so the guard is `'static` and can move into a body stream.
    pub fn start(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            state: Arc::clone(self),
            permit: None,
        }
    }

    /// Feeds the latency estimate with one time-to-first-byte measurement.
    pub fn observe_ttfb(&self, d: Duration, now: Instant) {
        let sample_us = d.as_secs_f64() * 1e6;
        self.ttfb
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(sample_us, now);
    }

    /// Current peak-EWMA of time-to-first-byte in microseconds; 0 when unknown (no recent samples).
    pub(crate) fn ewma_ttfb_us(&self, now: Instant) -> f64 {
        self.ttfb
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(now)
    }

    pub fn status(&self, now: Instant) -> InstanceStatus {
        let retry_at = self.breaker.retry_at(now);
        InstanceStatus {
            backend: self.backend.clone(),
            url: redacted_url(&self.url),
            state: self.breaker.state(now),
            healthy: retry_at.is_none(),
            in_flight: self.in_flight(),
            recent_errors: self.breaker.recent_errors(now),
            ewma_ttfb_ms: self.ewma_ttfb_us(now) / 1000.0,
            retry_in_s: retry_at.map(|t| t.saturating_duration_since(now).as_secs_f64()),
            max_in_flight: self.cap(),
            engine: self
                .engine
                .status(now)
                .map(|(view, age_s, fresh)| EngineStatus { view, age_s, fresh }),
        }
    }

    /// The balancer's view of this instance at `now`.
    pub(crate) fn view(&self, now: Instant) -> InstanceView {
        let retry_at = self.breaker.retry_at(now);
        InstanceView {
            usable: retry_at.is_none(),
            in_flight: self.in_flight(),
            ewma_ttfb_us: self.ewma_ttfb_us(now),
            retry_at,
            recent_errors: self.breaker.recent_errors(now),
            cap: self.cap(),
            engine: self.engine.view(now),
        }
    }
}

/// Serializable snapshot of one instance for `/health` and `/stats` (URL redacted).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct InstanceStatus {
    pub backend: String,
    pub url: String,
    pub state: BreakerState,
    pub healthy: bool,
    pub in_flight: u64,
    pub recent_errors: u32,
    pub ewma_ttfb_ms: f64,
    /// Seconds until the instance is usable again (open breaker or Retry-After); absent when usable.
    pub retry_in_s: Option<f64>,
    pub max_in_flight: Option<u64>,
    /// The latest engine load reading, when scraped.
    pub engine: Option<EngineStatus>,
}

/// An engine load reading as `/health` shows it.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct EngineStatus {
    #[serde(flatten)]
    pub view: EngineView,
    /// Seconds since the scrape.
    pub age_s: f64,
    /// False once it is too old to be used (three scrape intervals).
    pub fresh: bool,
}

/// Decrements the instance's in-flight count on drop (and gives back the admission slot it holds).
#[derive(Debug)]
pub struct InFlightGuard {
    state: Arc<InstanceState>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl InFlightGuard {
    pub fn instance(&self) -> &Arc<InstanceState> {
        &self.state
    }

    /// Keeps the request's admission slot until the request ends (its stream included).
    pub fn hold(&mut self, permit: Option<tokio::sync::OwnedSemaphorePermit>) {
        if permit.is_some() {
            self.permit = permit;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

type Key = (String, String);

/// All live instances, keyed by (backend name, url). Long-lived: create once, keep across reloads.
///
/// Touched on reload (and by `/health`), not per request: requests use the `Arc`s held by the snapshot.
#[derive(Debug, Default)]
pub struct InstanceRegistry {
    instances: Mutex<HashMap<Key, Arc<InstanceState>>>,
}

impl InstanceRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<InstanceState>>> {
        self.instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Same (backend, url) → same `Arc`, with `cfg` applied to its breaker (state kept).
    pub(crate) fn get_or_create(
        &self,
        backend: &str,
        url: &str,
        cfg: &HealthConfig,
    ) -> Arc<InstanceState> {
        let mut map = self.lock();
        if let Some(existing) = map.get(&(backend.to_owned(), url.to_owned())) {
            existing.breaker.set_config(cfg);
            return Arc::clone(existing);
        }
        let state = Arc::new(InstanceState::new(backend, url, cfg));
        map.insert((backend.to_owned(), url.to_owned()), Arc::clone(&state));
        state
    }

    pub fn get(&self, backend: &str, url: &str) -> Option<Arc<InstanceState>> {
        self.lock()
            .get(&(backend.to_owned(), url.to_owned()))
            .cloned()
    }

    /// Forgets instances no longer configured after a reload. Requests still holding their `Arc` finish
    /// normally; a later re-add of the same (backend, url) starts fresh.
    pub(crate) fn retain(&self, live: &[(String, String)]) {
        let keep: HashSet<(&str, &str)> =
            live.iter().map(|(b, u)| (b.as_str(), u.as_str())).collect();
        self.lock()
            .retain(|(b, u), _| keep.contains(&(b.as_str(), u.as_str())));
    }

    /// Every live instance, sorted by (backend, url), for `/health` and `/stats`.
    pub fn all(&self) -> Vec<Arc<InstanceState>> {
        let mut out: Vec<_> = self.lock().values().cloned().collect();
        out.sort_by(|a, b| (a.backend(), a.url()).cmp(&(b.backend(), b.url())));
        out
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// An instance URL safe for logs, alerts and metrics: userinfo, query and fragment removed (they may hold
/// credentials such as `https://user:pass@host` or `?key=...`).
pub(crate) fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            // These setters only fail for cannot-be-a-base URLs, which have no userinfo to leak.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => {
            // Unparseable: keep only what surely is not a secret, the text after the last '@' up to '?'.
            let tail = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
            let tail = tail.split(['?', '#']).next().unwrap_or_default();
            format!("<invalid url>{tail}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::health::Acquire;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn registry_keeps_state_for_same_backend_and_url() {
        let reg = InstanceRegistry::new();
        let cfg = HealthConfig {
            error_threshold: 1,
            ..HealthConfig::default()
        };
        let now = Instant::now();
        let a = reg.get_or_create("vllm", "http://10.0.0.1:8000/v1", &cfg);
        let _guard = a.start();
        a.observe_ttfb(ms(200), now);
        assert!(a.breaker.on_failure(now).is_some());

        // Reload: same backend + url, new health config.
        let cfg2 = HealthConfig {
            error_threshold: 3,
            ..HealthConfig::default()
        };
        let a2 = reg.get_or_create("vllm", "http://10.0.0.1:8000/v1", &cfg2);
        assert!(Arc::ptr_eq(&a, &a2));
        assert_eq!(a2.in_flight(), 1);
        assert_eq!(a2.breaker.state(now), BreakerState::Open);
        assert!((a2.ewma_ttfb_us(now) - 200_000.0).abs() < 1.0);

        // Same url under another backend is another instance.
        let b = reg.get_or_create("other", "http://10.0.0.1:8000/v1", &cfg);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(b.breaker.try_acquire(now), Acquire::Allowed);
        assert_eq!(reg.len(), 2);

        reg.retain(&[("other".to_owned(), "http://10.0.0.1:8000/v1".to_owned())]);
        assert_eq!(reg.len(), 1);
        assert!(reg.get("vllm", "http://10.0.0.1:8000/v1").is_none());
        let fresh = reg.get_or_create("vllm", "http://10.0.0.1:8000/v1", &cfg);
        assert!(!Arc::ptr_eq(&a, &fresh));
        assert_eq!(fresh.breaker.state(now), BreakerState::Closed);
        assert_eq!(
            reg.all()
                .iter()
                .map(|i| i.backend().to_owned())
                .collect::<Vec<_>>(),
            ["other", "vllm"]
        );
    }

    #[test]
    fn in_flight_guard_counts_until_drop() {
        let s = Arc::new(InstanceState::new(
            "b",
            "http://h",
            &HealthConfig::default(),
        ));
        let g1 = s.start();
        let g2 = s.start();
        assert_eq!(s.in_flight(), 2);
        assert_eq!(s.view(Instant::now()).in_flight, 2);
        drop(g1);
        assert_eq!(s.in_flight(), 1);
        assert!(Arc::ptr_eq(g2.instance(), &s));
        drop(g2);
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn peak_ewma_jumps_up_decays_down() {
        let s = InstanceState::new("b", "http://h", &HealthConfig::default());
        let t0 = Instant::now();
        assert_eq!(s.ewma_ttfb_us(t0), 0.0);
        s.observe_ttfb(ms(100), t0);
        assert!((s.ewma_ttfb_us(t0) - 100_000.0).abs() < 1.0);
        // A slower sample takes over at once.
        s.observe_ttfb(ms(500), t0 + ms(10));
        assert!((s.ewma_ttfb_us(t0 + ms(10)) - 500_000.0).abs() < 1.0);
        // Faster samples pull it down gradually.
        let mut t = t0 + ms(10);
        for _ in 0..50 {
            t += ms(100);
            s.observe_ttfb(ms(100), t);
        }
        let est = s.ewma_ttfb_us(t);
        assert!(est > 100_000.0 && est < 400_000.0, "{est}");
        // Without samples it fades, so the instance gets explored again.
        assert!(s.ewma_ttfb_us(t + Duration::from_secs(60)) < 1_000.0);
    }

    #[test]
    fn view_reflects_breaker() {
        let cfg = HealthConfig {
            error_threshold: 1,
            cooldown_s: 5.0,
            ..HealthConfig::default()
        };
        let s = InstanceState::new("b", "http://h", &cfg);
        let t0 = Instant::now();
        assert!(s.view(t0).usable);
        s.breaker.on_failure(t0);
        let v = s.view(t0);
        assert!(!v.usable);
        assert_eq!(v.retry_at, Some(t0 + Duration::from_secs(5)));
        let st = s.status(t0 + Duration::from_secs(1));
        assert_eq!(st.state, BreakerState::Open);
        assert!(!st.healthy);
        assert_eq!(st.recent_errors, 1);
        assert_eq!(st.retry_in_s, Some(4.0));
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["state"], "open");
        assert_eq!(json["url"], "http://h/");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redacted_url("https://user:s3cret@api.example.com:8443/v1?key=abc#x"),
            "https://api.example.com:8443/v1"
        );
        assert_eq!(
            redacted_url("http://10.0.0.1:8000/v1"),
            "http://10.0.0.1:8000/v1"
        );
        let bad = redacted_url("not a url:s3cret@host?key=1");
        assert!(!bad.contains("s3cret") && !bad.contains("key"), "{bad}");
        let s = InstanceState::new("b", "http://u:s3cret@h/v1", &HealthConfig::default());
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
