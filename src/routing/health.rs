//! Passive health: a per-instance circuit breaker fed by request outcomes, plus 429 Retry-After.
//!
//! Time is always passed in (`now`), never read here, so the state machine is tested without sleeps.
//!
//! States: `Closed` (normal) → `Open` after `error_threshold` faults within `error_window_s` → after the
//! cooldown one probe request is let through (`HalfOpen`) → success closes it, failure re-opens it with the
//! cooldown doubled (capped at `max_cooldown_s`).

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config_error::Invalid;

/// Upper bound for any configured duration, so `Instant + Duration` can never overflow.
const MAX_CONFIG_SECS: f64 = 10.0 * 365.0 * 24.0 * 3600.0;

/// Highest doubling exponent; beyond it the cap (`max_cooldown_s`) has long been reached.
const MAX_BACKOFF_SHIFT: u32 = 16;

/// `health:` section of a backend.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Faults (connect errors, timeouts, 5xx, 429) within `error_window_s` that open the breaker.
    pub error_threshold: u32,
    /// Sliding window, in seconds, over which faults are counted.
    pub error_window_s: f64,
    /// How long an opened breaker rejects requests before letting one probe through.
    pub cooldown_s: f64,
    /// Cap for the doubled cooldown after failed probes.
    pub max_cooldown_s: f64,
    /// Active health checks: every this many seconds, `GET <url>/models` feeds the breaker (off when absent).
    pub check_interval_s: Option<f64>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            error_threshold: 5,
            error_window_s: 60.0,
            cooldown_s: 30.0,
            max_cooldown_s: 300.0,
            check_interval_s: None,
        }
    }
}

impl HealthConfig {
    /// Checks the values a deserializer cannot: positive, finite durations and a non-zero threshold.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if self.error_threshold == 0 {
            return Err(Invalid::new(
                "health",
                "health.error_threshold is 0; it must be at least 1".to_owned(),
            ));
        }
        let durations = [
            ("error_window_s", Some(self.error_window_s)),
            ("cooldown_s", Some(self.cooldown_s)),
            ("max_cooldown_s", Some(self.max_cooldown_s)),
            ("check_interval_s", self.check_interval_s),
        ];
        for (name, value) in durations {
            if let Some(v) = value
                && !(v.is_finite() && v > 0.0 && v <= MAX_CONFIG_SECS)
            {
                return Err(Invalid::new(
                    "health",
                    format!(
                        "health.{name} is {v}; it must be a number of seconds above 0 and at most {MAX_CONFIG_SECS}"
                    ),
                ));
            }
        }
        if self.max_cooldown_s < self.cooldown_s {
            return Err(Invalid::new(
                "health",
                format!(
                    "health.max_cooldown_s ({}) is below health.cooldown_s ({}); raise it or lower cooldown_s",
                    self.max_cooldown_s, self.cooldown_s
                ),
            ));
        }
        Ok(())
    }
}

/// Converts configured seconds into a `Duration` without panicking on NaN, negative or huge values.
pub(crate) fn secs(value: f64) -> Duration {
    if value.is_finite() && value > 0.0 {
        Duration::from_secs_f64(value.min(MAX_CONFIG_SECS))
    } else {
        Duration::ZERO
    }
}

/// `Instant + Duration` that saturates instead of panicking.
fn later(now: Instant, by: Duration) -> Instant {
    now.checked_add(by).unwrap_or(now)
}

/// Parses an HTTP `Retry-After` value, delta-seconds (`"7"`, also `"1.5"`) or an HTTP-date, into the wait
/// from `now`. `None` when unparseable; a date in the past gives zero. Capped at `max` so an upstream
/// cannot eject an instance for days by accident.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp, max: Duration) -> Option<Duration> {
    static HTTP_DATE: jiff::fmt::rfc2822::DateTimeParser =
        jiff::fmt::rfc2822::DateTimeParser::new();
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<f64>() {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return None;
        }
        secs(seconds)
    } else {
        let at = HTTP_DATE.parse_timestamp(value).ok()?;
        let ms = at.as_millisecond().saturating_sub(now.as_millisecond());
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    };
    Some(wait.min(max))
}

/// Observable breaker state (for `/health`, metrics and alerts).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    /// The cooldown is over: one probe request may go (or is in flight).
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// A state change, returned so the caller can raise alerts and update metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

/// Why an instance may not be used right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The breaker is open and its cooldown is not over.
    CircuitOpen,
    /// The single half-open probe is already in flight.
    ProbeInFlight,
    /// The upstream answered 429 and its Retry-After has not passed.
    RateLimited,
}

/// Answer of [`Breaker::try_acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// Closed breaker: send the request.
    Allowed,
    /// Half-open: this request is the single probe; report its outcome with `on_success`/`on_failure`.
    Probe,
    /// Skip this instance until `until` (unless every instance is rejected: ejection never empties a pool).
    Rejected { until: Instant, reason: Rejection },
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    threshold: usize,
    window: Duration,
    cooldown: Duration,
    max_cooldown: Duration,
}

impl Timing {
    fn new(cfg: &HealthConfig) -> Self {
        let cooldown = secs(cfg.cooldown_s);
        Self {
            threshold: usize::try_from(cfg.error_threshold.max(1)).unwrap_or(usize::MAX),
            window: secs(cfg.error_window_s),
            cooldown,
            max_cooldown: secs(cfg.max_cooldown_s).max(cooldown),
        }
    }

    /// Cooldown after the `trips`-th consecutive opening: base, 2x, 4x, … capped.
    fn cooldown(&self, trips: u32) -> Duration {
        let shift = trips.saturating_sub(1).min(MAX_BACKOFF_SHIFT);
        self.cooldown
            .saturating_mul(1u32 << shift)
            .min(self.max_cooldown)
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_since: Instant },
}

#[derive(Debug)]
struct Inner {
    timing: Timing,
    phase: Phase,
    /// Times of the most recent faults, at most `threshold` of them (older ones cannot matter).
    errors: VecDeque<Instant>,
    /// Consecutive openings without a close; drives the cooldown doubling.
    trips: u32,
    rate_limited_until: Option<Instant>,
}

impl Inner {
    fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn recent_errors(&self, now: Instant) -> usize {
        self.errors
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= self.timing.window)
            .count()
    }

    fn open(&mut self, now: Instant) {
        self.trips = self.trips.saturating_add(1);
        self.phase = Phase::Open {
            until: later(now, self.timing.cooldown(self.trips)),
        };
    }

    fn rate_limit(&self, now: Instant) -> Option<Instant> {
        self.rate_limited_until.filter(|t| *t > now)
    }
}

/// Circuit breaker of one upstream instance.
///
/// A std `Mutex` guards a few words of state: it is held for nanoseconds and never across an await, so it
/// is effectively uncontended and cheaper than juggling several atomics consistently.
#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(cfg: &HealthConfig) -> Self {
        Self {
            inner: Mutex::new(Inner {
                timing: Timing::new(cfg),
                phase: Phase::Closed,
                errors: VecDeque::new(),
                trips: 0,
                rate_limited_until: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the plain-data state invalid, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a reloaded `health:` section while keeping the current state (open/closed, faults, backoff).
    pub(crate) fn set_config(&self, cfg: &HealthConfig) {
        let mut inner = self.lock();
        inner.timing = Timing::new(cfg);
        let threshold = inner.timing.threshold;
        while inner.errors.len() > threshold {
            inner.errors.pop_front();
        }
    }

    /// Asks whether a request may go to this instance now. At most one caller gets `Probe` per cooldown.
    pub(crate) fn try_acquire(&self, now: Instant) -> Acquire {
        let mut inner = self.lock();
        if let Some(until) = inner.rate_limit(now) {
            // Checked first so a rate-limited instance does not burn its half-open probe.
            let until = match inner.phase {
                Phase::Open { until: open_until } => until.max(open_until),
                Phase::Closed | Phase::HalfOpen { .. } => until,
            };
            return Acquire::Rejected {
                until,
                reason: Rejection::RateLimited,
            };
        }
        match inner.phase {
            Phase::Closed => Acquire::Allowed,
            Phase::Open { until } if now < until => Acquire::Rejected {
                until,
                reason: Rejection::CircuitOpen,
            },
            Phase::Open { .. } => {
                inner.phase = Phase::HalfOpen { probe_since: now };
                Acquire::Probe
            }
            Phase::HalfOpen { probe_since } => {
                // A probe whose outcome never came back (client gone, caller bug) must not wedge the
                // breaker half-open forever: after one more cooldown another probe may go.
                let deadline = later(probe_since, inner.timing.cooldown(inner.trips));
                if now >= deadline {
                    inner.phase = Phase::HalfOpen { probe_since: now };
                    Acquire::Probe
                } else {
                    Acquire::Rejected {
                        until: deadline,
                        reason: Rejection::ProbeInFlight,
                    }
                }
            }
        }
    }

    /// Records a successful response. A success while open or half-open closes the breaker.
    pub fn on_success(&self, now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Closed => None,
            Phase::Open { .. } | Phase::HalfOpen { .. } => {
                let from = inner.state(now);
                inner.phase = Phase::Closed;
                inner.trips = 0;
                inner.errors.clear();
                Some(Transition {
                    from,
                    to: BreakerState::Closed,
                })
            }
        }
    }

    /// Records a fault (connect error, timeout, 5xx, 429). May open or re-open the breaker.
    pub(crate) fn on_failure(&self, now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Closed => {
                let threshold = inner.timing.threshold;
                inner.errors.push_back(now);
                while inner.errors.len() > threshold {
                    inner.errors.pop_front();
                }
                let window = inner.timing.window;
                let trips_now = inner.errors.len() >= threshold
                    && inner
                        .errors
                        .front()
                        .is_some_and(|first| now.saturating_duration_since(*first) <= window);
                if !trips_now {
                    return None;
                }
                inner.open(now);
                Some(Transition {
                    from: BreakerState::Closed,
                    to: BreakerState::Open,
                })
            }
            Phase::HalfOpen { .. } => {
                inner.open(now);
                Some(Transition {
                    from: BreakerState::HalfOpen,
                    to: BreakerState::Open,
                })
            }
            Phase::Open { until } => {
                // A request forced through an open breaker (every instance was open) failed. Once the
                // cooldown is over this counts as a failed probe; before that it changes nothing.
                if now >= until {
                    inner.open(now);
                }
                None
            }
        }
    }

    /// Honours an upstream 429's Retry-After: the instance is skipped until `until`. Never shortens it.
    pub(crate) fn rate_limited_until(&self, until: Instant) {
        let mut inner = self.lock();
        inner.rate_limited_until = Some(inner.rate_limited_until.map_or(until, |t| t.max(until)));
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        self.lock().state(now)
    }

    /// Faults counted in the current window (at most `error_threshold`, older ones are forgotten).
    pub fn recent_errors(&self, now: Instant) -> u32 {
        u32::try_from(self.lock().recent_errors(now)).unwrap_or(u32::MAX)
    }

    /// When this instance becomes usable again; `None` when a request may go now (possibly as the probe).
    pub fn retry_at(&self, now: Instant) -> Option<Instant> {
        let inner = self.lock();
        let blocked = match inner.phase {
            Phase::Closed => None,
            Phase::Open { until } => Some(until).filter(|t| *t > now),
            Phase::HalfOpen { probe_since } => {
                Some(later(probe_since, inner.timing.cooldown(inner.trips))).filter(|t| *t > now)
            }
        };
        match (blocked, inner.rate_limit(now)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(threshold: u32, window: f64, cooldown: f64, max_cooldown: f64) -> HealthConfig {
        HealthConfig {
            error_threshold: threshold,
            error_window_s: window,
            cooldown_s: cooldown,
            max_cooldown_s: max_cooldown,
            check_interval_s: None,
        }
    }

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    /// Opens a fresh breaker (threshold 3, window 60 s, cooldown 10 s, cap 80 s) at `t0`.
    fn opened(t0: Instant) -> Breaker {
        let b = Breaker::new(&cfg(3, 60.0, 10.0, 80.0));
        assert_eq!(b.on_failure(t0), None);
        assert_eq!(b.on_failure(t0), None);
        assert_eq!(
            b.on_failure(t0),
            Some(Transition {
                from: BreakerState::Closed,
                to: BreakerState::Open
            })
        );
        b
    }

    #[test]
    fn defaults_and_yaml_field_names() {
        let c: HealthConfig =
            yaml_serde::from_str("{ error_threshold: 10, error_window_s: 300, cooldown_s: 30 }")
                .unwrap();
        assert_eq!(c.error_threshold, 10);
        assert_eq!(c.error_window_s, 300.0);
        assert_eq!(c.max_cooldown_s, 300.0);
        assert_eq!(c.check_interval_s, None);
        assert!(c.validate().is_ok());
        let d = HealthConfig::default();
        assert_eq!(
            (d.error_threshold, d.error_window_s, d.cooldown_s),
            (5, 60.0, 30.0)
        );
        assert!(yaml_serde::from_str::<HealthConfig>("{ threshold: 1 }").is_err());
    }

    #[test]
    fn validate_names_the_bad_value() {
        let err = cfg(0, 60.0, 30.0, 300.0)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("error_threshold"), "{err}");
        let err = cfg(5, -1.0, 30.0, 300.0)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("error_window_s is -1"), "{err}");
        let err = cfg(5, 60.0, 30.0, 10.0).validate().unwrap_err().to_string();
        assert!(err.contains("max_cooldown_s (10)"), "{err}");
    }

    #[test]
    fn opens_after_threshold_within_window() {
        let t0 = Instant::now();
        let b = opened(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(
            b.try_acquire(t0 + s(5)),
            Acquire::Rejected {
                until: t0 + s(10),
                reason: Rejection::CircuitOpen
            }
        );
        assert_eq!(b.retry_at(t0 + s(5)), Some(t0 + s(10)));
    }

    #[test]
    fn errors_spread_beyond_window_do_not_open() {
        let t0 = Instant::now();
        let b = Breaker::new(&cfg(3, 60.0, 10.0, 80.0));
        for i in 0..10 {
            assert_eq!(b.on_failure(t0 + s(31 * i)), None, "fault {i}");
            assert_eq!(b.try_acquire(t0 + s(31 * i)), Acquire::Allowed);
        }
        assert_eq!(b.state(t0 + s(400)), BreakerState::Closed);
        assert_eq!(b.recent_errors(t0 + s(31 * 9)), 2);
        assert_eq!(b.recent_errors(t0 + s(31 * 9 + 61)), 0);
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let t0 = Instant::now();
        let b = opened(t0);
        let t = t0 + s(10);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        assert_eq!(b.retry_at(t), None);
        assert_eq!(b.try_acquire(t), Acquire::Probe);
        assert_eq!(
            b.try_acquire(t),
            Acquire::Rejected {
                until: t + s(10),
                reason: Rejection::ProbeInFlight
            }
        );
        assert_eq!(b.retry_at(t + s(1)), Some(t + s(10)));
        // A probe that never reports back does not wedge the breaker.
        assert_eq!(b.try_acquire(t + s(10)), Acquire::Probe);
    }

    #[test]
    fn probe_success_closes_and_resets() {
        let t0 = Instant::now();
        let b = opened(t0);
        assert_eq!(b.try_acquire(t0 + s(10)), Acquire::Probe);
        assert_eq!(
            b.on_success(t0 + s(11)),
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed
            })
        );
        assert_eq!(b.try_acquire(t0 + s(11)), Acquire::Allowed);
        assert_eq!(b.recent_errors(t0 + s(11)), 0);
        assert_eq!(b.on_success(t0 + s(12)), None);
        // Counting starts over: two faults are not enough to re-open.
        assert_eq!(b.on_failure(t0 + s(12)), None);
        assert_eq!(b.on_failure(t0 + s(12)), None);
        assert_eq!(b.state(t0 + s(12)), BreakerState::Closed);
    }

    #[test]
    fn probe_failure_reopens_with_doubled_capped_cooldown() {
        let t0 = Instant::now();
        let b = opened(t0);
        let mut t = t0 + s(10);
        // Cooldowns after each failed probe: 20, 40, 80, then capped at 80.
        for expected in [20, 40, 80, 80] {
            assert_eq!(b.try_acquire(t), Acquire::Probe);
            assert_eq!(
                b.on_failure(t),
                Some(Transition {
                    from: BreakerState::HalfOpen,
                    to: BreakerState::Open
                })
            );
            assert_eq!(b.retry_at(t), Some(t + s(expected)));
            assert!(matches!(
                b.try_acquire(t + s(expected) - Duration::from_millis(1)),
                Acquire::Rejected { .. }
            ));
            t += s(expected);
        }
        // After a success the next opening starts from the base cooldown again.
        assert_eq!(b.try_acquire(t), Acquire::Probe);
        assert!(b.on_success(t).is_some());
        for _ in 0..3 {
            b.on_failure(t);
        }
        assert_eq!(b.retry_at(t), Some(t + s(10)));
    }

    #[test]
    fn forced_success_while_open_closes() {
        let t0 = Instant::now();
        let b = opened(t0);
        let tr = b.on_success(t0 + s(1)).unwrap();
        assert_eq!(tr.from, BreakerState::Open);
        assert_eq!(b.state(t0 + s(1)), BreakerState::Closed);
    }

    #[test]
    fn retry_after_skips_the_instance_without_burning_the_probe() {
        let t0 = Instant::now();
        let b = Breaker::new(&cfg(3, 60.0, 10.0, 80.0));
        b.rate_limited_until(t0 + s(7));
        b.rate_limited_until(t0 + s(3)); // never shortens
        assert_eq!(
            b.try_acquire(t0),
            Acquire::Rejected {
                until: t0 + s(7),
                reason: Rejection::RateLimited
            }
        );
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert_eq!(b.retry_at(t0 + s(6)), Some(t0 + s(7)));
        assert_eq!(b.try_acquire(t0 + s(7)), Acquire::Allowed);

        let b = opened(t0);
        b.rate_limited_until(t0 + s(15));
        assert!(matches!(
            b.try_acquire(t0 + s(12)),
            Acquire::Rejected {
                reason: Rejection::RateLimited,
                ..
            }
        ));
        assert_eq!(b.try_acquire(t0 + s(15)), Acquire::Probe);
    }

    #[test]
    fn retry_after_values() {
        let now: jiff::Timestamp = "2026-11-22T20:00:00Z".parse().unwrap();
        let max = s(3600);
        assert_eq!(parse_retry_after("7", now, max), Some(s(7)));
        assert_eq!(
            parse_retry_after(" 1.5 ", now, max),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("999999", now, max), Some(max));
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 20:00:30 GMT", now, max),
            Some(s(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 19:00:00 GMT", now, max),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-3", now, max), None);
        assert_eq!(parse_retry_after("soon", now, max), None);
    }

    #[test]
    fn reload_keeps_state_and_applies_new_timing() {
        let t0 = Instant::now();
        let b = opened(t0);
        b.set_config(&cfg(3, 60.0, 2.0, 80.0));
        // The current opening keeps its deadline; the next one uses the new cooldown.
        assert_eq!(b.state(t0 + s(5)), BreakerState::Open);
        assert_eq!(b.try_acquire(t0 + s(10)), Acquire::Probe);
        b.on_failure(t0 + s(10));
        assert_eq!(b.retry_at(t0 + s(10)), Some(t0 + s(14)));
    }
}
