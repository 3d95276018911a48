//! Rate limits (per IP, per key, per key+model, global) and per-key quotas, in memory or in Redis.
//!
//! Every request is turned into a list of buckets (one per scope and unit: requests, tokens) that
//! are checked and charged together, all or none, so a rejected request consumes nothing. Token
//! buckets are charged the estimate before the upstream call and corrected by `reconcile` after it.
//! Bucket math lives in `engine`; `memory` and `redis_buckets` only store state.
//!
//! Scopes: `global` and `per_ip` apply to every request; `per_key` (or the key's own
//! `rate_limit`), `per_key_model` and the key's `quota` only to requests with a key. While Redis
//! is down, `fail_open` admits without limiting (no headers) and `fail_closed` rejects with
//! `RejectKind::Unavailable` (503); both recover by themselves once Redis answers again.

pub(crate) mod engine;
pub(crate) mod memory;
mod quota;
mod redis_buckets;

use hashbrown::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde::Serialize;

use crate::auth::{KeyConfig, Principal};
use crate::config_error::Invalid;
use crate::limit_rules::{Algorithm, LimitRule, Period, QuotaConfig, RateLimitConfig};
use crate::store::{FailMode, StateStore, StoreUnavailable};
use engine::{BucketKind, Outcome};

/// Source of the current time, injected so tests can move time without sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Microseconds since the UNIX epoch.
    fn now_us(&self) -> u64;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now_us: u64) -> ManualClock {
        ManualClock(AtomicU64::new(now_us))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(
            u64::try_from(by.as_micros()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    pub fn set(&self, now_us: u64) {
        self.0.store(now_us, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the limiter needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct LimitRequest<'a> {
    pub ip: IpAddr,
    pub key: Option<&'a Principal>,
    pub model: &'a str,
    /// Input tokens estimated before the call (see `tokens::count`).
    pub estimated_tokens: u64,
}

/// An admitted request: headers for the response and what was charged, for `reconcile`.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// `x-ratelimit-*` headers (OpenAI names) of the tightest request and token limits.
    pub headers: RateHeaders,
    token_charges: Vec<TokenCharge>,
    estimated_tokens: u64,
}

#[derive(Debug, Clone)]
struct TokenCharge {
    key: String,
    kind: BucketKind,
    mark: i64,
}

impl Admission {
    /// Tokens charged up front to each token bucket.
    pub(crate) fn estimated_tokens(&self) -> u64 {
        self.estimated_tokens
    }

    /// Some bucket of this request counts tokens: the reply's usage is reconciled against it.
    pub fn counts_tokens(&self) -> bool {
        !self.token_charges.is_empty()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// A rate limit: 429 `rate_limit_exceeded`.
    RateLimited,
    /// A key's quota is used up until its reset: 429 `quota_exceeded`.
    QuotaExceeded,
    /// Redis is down and `on_unavailable: fail_closed`: 503.
    Unavailable,
}

impl RejectKind {
    pub fn status(self) -> http::StatusCode {
        match self {
            RejectKind::RateLimited | RejectKind::QuotaExceeded => {
                http::StatusCode::TOO_MANY_REQUESTS
            }
            RejectKind::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Error code for response bodies and metrics labels.
    pub fn code(self) -> &'static str {
        match self {
            RejectKind::RateLimited => "rate_limit_exceeded",
            RejectKind::QuotaExceeded => "quota_exceeded",
            RejectKind::Unavailable => "limits_unavailable",
        }
    }
}

/// A refused request with everything the response needs.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub kind: RejectKind,
    /// `"ip" | "key" | "key_model" | "global" | "quota" | "state"`.
    pub scope: &'static str,
    pub key_name: Option<Arc<str>>,
    /// Sent as `retry-after` (whole seconds, rounded up, at least 1).
    pub retry_after: Duration,
    /// The `x-ratelimit-*` headers of the limits checked (empty when they could not be read).
    pub rate: Box<RateHeaders>,
    pub message: String,
}

impl Rejection {
    /// The response headers: `retry-after`, then the `x-ratelimit-*` headers.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let seconds = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        let retry_after = (http::header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        std::iter::once(retry_after)
            .chain(self.rate.pairs())
            .collect()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Quota usage of one key, for `GET /admin/keys` and `/v1/usage`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyUsage {
    pub key: String,
    /// `"day" | "week" | "month" | "rolling"`; absent when the key has no quota.
    pub period: Option<&'static str>,
    pub requests: Option<UsageCounter>,
    pub tokens: Option<UsageCounter>,
    /// True when shared state could not be read (Redis down): counters are then absent.
    pub unavailable: bool,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct UsageCounter {
    pub used: u64,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the counter is back to zero (period end, or the rolling window draining).
    pub resets_in_s: f64,
}

/// The compiled limit rules of one config: built (and checked) once when the config is validated,
/// then bound to the state store by [`Limiter::new`].
#[derive(Debug, Default)]
pub(crate) struct LimitRules {
    global: Vec<RuleBucket>,
    per_ip: Vec<RuleBucket>,
    per_key: Vec<RuleBucket>,
    per_key_model: Vec<RuleBucket>,
    keys: HashMap<Arc<str>, KeyLimits>,
    counts_tokens: bool,
}

/// Rate limiter and quota keeper for one config snapshot.
#[derive(Debug)]
pub struct Limiter {
    global: Vec<RuleBucket>,
    per_ip: Vec<RuleBucket>,
    per_key: Vec<RuleBucket>,
    per_key_model: Vec<RuleBucket>,
    keys: HashMap<Arc<str>, KeyLimits>,
    /// Some limit or quota counts tokens (see `counts_tokens`).
    counts_tokens: bool,
    store: StateStore,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Default)]
struct KeyLimits {
    /// `Some` when the key overrides `per_key` (an override with no buckets cannot happen).
    rate: Option<Vec<RuleBucket>>,
    quota: Vec<QuotaBucket>,
    period: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Requests,
    Tokens,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
        }
    }
}

/// One bucket of a rate rule, with the text used in messages.
#[derive(Debug, Clone)]
struct RuleBucket {
    unit: Unit,
    kind: BucketKind,
    limit: u64,
    /// Distinguishes buckets of different rules in keys, so a changed rule starts fresh.
    tag: String,
    /// "per 60s" etc.
    per: String,
}

#[derive(Debug, Clone)]
struct QuotaBucket {
    unit: Unit,
    limit: u64,
    mode: QuotaMode,
    per: String,
}

#[derive(Debug, Clone)]
enum QuotaMode {
    Calendar(Period),
    Rolling { kind: BucketKind, window_us: u64 },
}

/// One bucket of one request, ready for the store. Message text is built only on rejection.
#[derive(Debug)]
struct Spec<'a> {
    key: String,
    kind: BucketKind,
    cost: u64,
    unit: Unit,
    limit: u64,
    scope: &'static str,
    /// "per 60s", "per month": from the compiled rule.
    per: &'a str,
    quota: bool,
}

/// Who a scope limits, for messages: "ip 10.0.0.1", "key 'team-a'", "the gateway (global)".
fn who(scope: &str, req: &LimitRequest<'_>) -> String {
    let name = req.key.map_or("", |p| &*p.name);
    match scope {
        "ip" => format!("ip {}", req.ip),
        "key_model" => format!("key '{name}' on model '{}'", req.model),
        "global" => "the gateway (global)".to_owned(),
        _ => format!("key '{name}'"),
    }
}

fn seconds_text(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s}s")
    }
}

fn compile_rule(rule: &LimitRule) -> Vec<RuleBucket> {
    let window_us = rule.window_s * 1e6;
    let per = format!("per {}", seconds_text(rule.window_s));
    let mut out = Vec::new();
    for (unit, limit) in [(Unit::Requests, rule.requests), (Unit::Tokens, rule.tokens)] {
        let Some(limit) = limit else { continue };
        let (kind, shown) = match rule.algorithm {
            Algorithm::SlidingWindow => (
                BucketKind::Window {
                    window_us,
                    limit: limit as f64,
                },
                limit,
            ),
            Algorithm::TokenBucket => {
                let burst = match unit {
                    Unit::Requests => rule.burst.unwrap_or(limit),
                    Unit::Tokens => limit,
                };
                (
                    BucketKind::Gcra {
                        emission_us: window_us / limit as f64,
                        burst: burst as f64,
                    },
                    burst,
                )
            }
        };
        let algo = match rule.algorithm {
            Algorithm::SlidingWindow => "sw",
            Algorithm::TokenBucket => "tb",
        };
        let unit_tag = match unit {
            Unit::Requests => "r",
            Unit::Tokens => "t",
        };
        out.push(RuleBucket {
            unit,
            kind,
            limit: shown,
            tag: format!("{unit_tag}:{algo}{window_us:.0}:{limit}:{shown}"),
            per: per.clone(),
        });
    }
    out
}

fn compile_quota(q: &QuotaConfig) -> Vec<QuotaBucket> {
    [(Unit::Requests, q.requests), (Unit::Tokens, q.tokens)]
        .into_iter()
        .filter_map(|(unit, limit)| {
            let limit = limit?;
            let (mode, per) = match (q.period, q.window_s) {
                (Some(p), _) => (QuotaMode::Calendar(p), format!("per {}", period_name(p))),
                (None, w) => {
                    let window_s = w.unwrap_or(86_400.0);
                    let window_us = window_s * 1e6;
                    let mode = QuotaMode::Rolling {
                        kind: BucketKind::Window {
                            window_us,
                            limit: limit as f64,
                        },
                        window_us: window_us as u64,
                    };
                    (mode, format!("per rolling {}", seconds_text(window_s)))
                }
            };
            Some(QuotaBucket {
                unit,
                limit,
                mode,
                per,
            })
        })
        .collect()
}

fn period_name(p: Period) -> &'static str {
    match p {
        Period::Day => "day",
        Period::Week => "week",
        Period::Month => "month",
    }
}

impl LimitRules {
    /// Checks and compiles `rate_limit` and the keys' own rules and quotas. The error is located at
    /// `rate_limit` or `keys` and names the offending rule.
    pub(crate) fn new(cfg: &RateLimitConfig, keys: &[KeyConfig]) -> Result<LimitRules, Invalid> {
        cfg.validate()?;
        let compiled =
            |rule: &Option<LimitRule>| rule.as_ref().map(compile_rule).unwrap_or_default();
        let global = compiled(&cfg.global);
        let per_ip = compiled(&cfg.per_ip);
        let per_key = compiled(&cfg.per_key);
        let per_key_model = compiled(&cfg.per_key_model);
        let mut key_limits = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let mut limits = KeyLimits::default();
            if let Some(rule) = &k.rate_limit {
                rule.validate(&format!("keys[{i}] '{}'.rate_limit", k.name))
                    .map_err(|error| error.under("keys"))?;
                limits.rate = Some(compile_rule(rule));
            }
            if let Some(q) = &k.quota {
                q.validate(&format!("keys[{i}] '{}'.quota", k.name))
                    .map_err(|error| error.under("keys"))?;
                limits.quota = compile_quota(q);
                limits.period = Some(q.period.map_or("rolling", period_name));
            }
            key_limits.insert(Arc::from(k.name.as_str()), limits);
        }
        let tokens = |buckets: &[RuleBucket]| buckets.iter().any(|b| b.unit == Unit::Tokens);
        let counts_tokens = [&global, &per_ip, &per_key, &per_key_model]
            .into_iter()
            .any(|buckets| tokens(buckets))
            || key_limits.values().any(|k| {
                k.rate.as_deref().is_some_and(tokens)
                    || k.quota.iter().any(|q| q.unit == Unit::Tokens)
            });
        Ok(LimitRules {
            global,
            per_ip,
            per_key,
            per_key_model,
            keys: key_limits,
            counts_tokens,
        })
    }
}

impl Limiter {
    /// The limiter for one config snapshot. Pass the same `StateStore` to every snapshot so counters
    /// survive reloads.
    pub(crate) fn new(rules: LimitRules, store: StateStore) -> Limiter {
        Limiter::with_clock(rules, store, Arc::new(SystemClock))
    }

    /// Like `new`, with an injected clock (tests). In Redis mode rate windows use Redis' clock and
    /// the injected clock only decides calendar quota periods.
    pub(crate) fn with_clock(
        rules: LimitRules,
        store: StateStore,
        clock: Arc<dyn Clock>,
    ) -> Limiter {
        let LimitRules {
            global,
            per_ip,
            per_key,
            per_key_model,
            keys,
            counts_tokens,
        } = rules;
        Limiter {
            global,
            per_ip,
            per_key,
            per_key_model,
            keys,
            counts_tokens,
            store,
            clock,
        }
    }

    /// True when some limit or quota counts tokens: only then is the input estimated before the call
    /// (and reconciled after it). Request-only limits skip the tokenizer.
    pub fn counts_tokens(&self) -> bool {
        self.counts_tokens
    }

    /// True when nothing is limited, so the caller can skip token estimation for limits.
    pub(crate) fn is_noop(&self) -> bool {
        self.global.is_empty()
            && self.per_ip.is_empty()
            && self.per_key.is_empty()
            && self.per_key_model.is_empty()
            && self
                .keys
                .values()
                .all(|k| k.rate.is_none() && k.quota.is_empty())
    }

    /// Checks and charges every applicable bucket, all or none.
    pub async fn admit(&self, req: &LimitRequest<'_>) -> Result<Admission, Rejection> {
        let now_us = self.clock.now_us();
        let specs = self.specs(req, now_us);
        if specs.is_empty() {
            return Ok(Admission::default());
        }
        let key_name = req.key.map(|p| Arc::clone(&p.name));
        if let Some(spec) = specs.iter().find(|s| s.cost as f64 > s.kind.capacity()) {
            let mut rejection = too_large(spec, req, key_name);
            // The x-ratelimit-* headers still describe the limits (read without charging).
            let probe: Vec<(&str, BucketKind, u64)> =
                specs.iter().map(|s| (s.key.as_str(), s.kind, 0)).collect();
            if let Ok(outcomes) = self.check(&probe, now_us, false).await {
                rejection.rate = Box::new(RateHeaders::of(&specs, &outcomes));
            }
            return Err(rejection);
        }
        let buckets: Vec<(&str, BucketKind, u64)> = specs
            .iter()
            .map(|s| (s.key.as_str(), s.kind, s.cost))
            .collect();
        let outcomes = match self.check(&buckets, now_us, true).await {
            Ok(outcomes) => outcomes,
            Err(StoreUnavailable) => return self.unavailable(key_name),
        };
        let headers = RateHeaders::of(&specs, &outcomes);
        if outcomes.iter().all(|o| o.allowed) {
            let token_charges = specs
                .iter()
                .zip(&outcomes)
                .filter(|(s, _)| s.unit == Unit::Tokens && s.cost > 0)
                .map(|(s, o)| TokenCharge {
                    key: s.key.clone(),
                    kind: s.kind,
                    mark: o.mark,
                })
                .collect();
            return Ok(Admission {
                headers,
                token_charges,
                estimated_tokens: req.estimated_tokens,
            });
        }
        Err(rejection(&specs, req, &outcomes, headers, key_name))
    }

    /// Charges the difference between actual and estimated tokens (negative refunds) to every
    /// token bucket the admission charged. Never rejects: the request already happened.
    pub(crate) async fn reconcile(&self, admission: &Admission, actual_tokens: u64) {
        let delta = i64::try_from(actual_tokens).unwrap_or(i64::MAX)
            - i64::try_from(admission.estimated_tokens).unwrap_or(i64::MAX);
        if delta == 0 || admission.token_charges.is_empty() {
            return;
        }
        let now = self.clock.now_us() as f64;
        match &self.store {
            StateStore::Memory(m) => {
                let mut buckets = lock(&m.buckets);
                for c in &admission.token_charges {
                    buckets.adjust(&c.key, c.kind, c.mark, delta, now);
                }
            }
            StateStore::Redis(r) => {
                let corrections: Vec<_> = admission
                    .token_charges
                    .iter()
                    .map(|c| (c.key.as_str(), c.kind, c.mark, delta))
                    .collect();
                // An outage is already logged by the store; a lost correction only skews one window.
                let _ = redis_buckets::adjust(r, &corrections).await;
            }
        }
    }

    /// Quota usage of `key_name` (zeros for unknown keys or keys without a quota).
    pub async fn usage(&self, key_name: &str) -> KeyUsage {
        let mut usage = KeyUsage {
            key: key_name.to_owned(),
            period: None,
            requests: None,
            tokens: None,
            unavailable: false,
        };
        let Some(limits) = self.keys.get(key_name) else {
            return usage;
        };
        usage.period = limits.period;
        let now_us = self.clock.now_us();
        let specs: Vec<Spec> = limits
            .quota
            .iter()
            .map(|q| quota_spec(key_name, q, 0, now_us))
            .collect();
        if specs.is_empty() {
            return usage;
        }
        let buckets: Vec<(&str, BucketKind, u64)> =
            specs.iter().map(|s| (s.key.as_str(), s.kind, 0)).collect();
        let Ok(outcomes) = self.check(&buckets, now_us, false).await else {
            usage.unavailable = true;
            return usage;
        };
        for (spec, outcome) in specs.iter().zip(outcomes) {
            let counter = UsageCounter {
                used: spec.limit.saturating_sub(outcome.remaining),
                limit: spec.limit,
                remaining: outcome.remaining,
                resets_in_s: outcome.reset_us as f64 / 1e6,
            };
            match spec.unit {
                Unit::Requests => usage.requests = Some(counter),
                Unit::Tokens => usage.tokens = Some(counter),
            }
        }
        usage
    }

    async fn check(
        &self,
        buckets: &[(&str, BucketKind, u64)],
        now_us: u64,
        apply: bool,
    ) -> Result<Vec<Outcome>, StoreUnavailable> {
        match &self.store {
            StateStore::Memory(m) => Ok(lock(&m.buckets).check(buckets, now_us as f64, apply)),
            StateStore::Redis(r) => redis_buckets::check(r, buckets, apply).await,
        }
    }

    fn unavailable(&self, key_name: Option<Arc<str>>) -> Result<Admission, Rejection> {
        let fail_mode = match &self.store {
            StateStore::Redis(r) => r.fail_mode(),
            StateStore::Memory(_) => FailMode::FailOpen,
        };
        match fail_mode {
            FailMode::FailOpen => Ok(Admission::default()),
            FailMode::FailClosed => Err(Rejection {
                kind: RejectKind::Unavailable,
                scope: "state",
                key_name,
                retry_after: Duration::from_secs(1),
                rate: Box::default(),
                message: "rate limits cannot be checked: shared state (redis) is unavailable and \
                          state.on_unavailable is fail_closed"
                    .to_owned(),
            }),
        }
    }

    fn specs<'a>(&'a self, req: &LimitRequest<'_>, now_us: u64) -> Vec<Spec<'a>> {
        let mut specs = Vec::new();
        // The key: `scope:id:tag`, where an id of several parts is joined with `:`.
        let mut add = |rules: &'a [RuleBucket], scope: &'static str, id: &[&str]| {
            for r in rules {
                let mut key = String::with_capacity(scope.len() + r.tag.len() + 48);
                key.push_str(scope);
                for part in id {
                    key.push(':');
                    key.push_str(part);
                }
                key.push(':');
                key.push_str(&r.tag);
                specs.push(Spec {
                    key,
                    kind: r.kind,
                    cost: cost(r.unit, req),
                    unit: r.unit,
                    limit: r.limit,
                    scope,
                    per: &r.per,
                    quota: false,
                });
            }
        };
        add(&self.global, "global", &["all"]);
        if !self.per_ip.is_empty() {
            add(&self.per_ip, "ip", &[&ip_text(req.ip)]);
        }
        let Some(principal) = req.key else {
            return specs;
        };
        let name = &*principal.name;
        let limits = self.keys.get(name);
        let per_key = limits
            .and_then(|l| l.rate.as_deref())
            .unwrap_or(&self.per_key);
        add(per_key, "key", &[name]);
        // The model string comes from the client: cap what of it lands in (bounded) state keys.
        let model = truncate(req.model, MAX_MODEL_KEY_BYTES);
        add(&self.per_key_model, "key_model", &[name, model]);
        if let Some(limits) = limits {
            for q in &limits.quota {
                specs.push(quota_spec(name, q, cost(q.unit, req), now_us));
            }
        }
        specs
    }
}

const MAX_MODEL_KEY_BYTES: usize = 128;

/// The address as `Display` writes it (dotted decimal for IPv4, written here without the formatter).
fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut digits = itoa::Buffer::new();
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(digits.format(octet));
    }
    text
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn cost(unit: Unit, req: &LimitRequest<'_>) -> u64 {
    match unit {
        Unit::Requests => 1,
        Unit::Tokens => req.estimated_tokens,
    }
}

fn quota_spec<'a>(name: &str, q: &'a QuotaBucket, cost: u64, now_us: u64) -> Spec<'a> {
    let unit_tag = match q.unit {
        Unit::Requests => "r",
        Unit::Tokens => "t",
    };
    let (key, kind) = match &q.mode {
        QuotaMode::Calendar(period) => {
            let (id, end) = quota::period_bounds(*period, now_us);
            let kind = BucketKind::Fixed {
                limit: q.limit as f64,
                period_end_us: end as f64,
            };
            (format!("quota:{name}:{unit_tag}:{id}"), kind)
        }
        QuotaMode::Rolling { kind, window_us } => (
            format!("quota:{name}:{unit_tag}:roll{window_us}:{}", q.limit),
            *kind,
        ),
    };
    Spec {
        key,
        kind,
        cost,
        unit: q.unit,
        limit: q.limit,
        scope: "quota",
        per: &q.per,
        quota: true,
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Bucket updates cannot be left half-done by a panic (each is a plain assignment), so a
    // poisoned lock still holds consistent state.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn too_large(spec: &Spec<'_>, req: &LimitRequest<'_>, key_name: Option<Arc<str>>) -> Rejection {
    let (kind, what) = if spec.quota {
        (RejectKind::QuotaExceeded, "quota")
    } else {
        (RejectKind::RateLimited, "rate limit")
    };
    let retry_after = Duration::from_secs(60);
    Rejection {
        kind,
        scope: spec.scope,
        key_name,
        retry_after,
        rate: Box::default(),
        message: format!(
            "request needs {} {}, more than the {what} of {} allows ({} {} {}); it can never be admitted",
            spec.cost,
            spec.unit.name(),
            who(spec.scope, req),
            spec.limit,
            spec.unit.name(),
            spec.per
        ),
    }
}

fn rejection(
    specs: &[Spec<'_>],
    req: &LimitRequest<'_>,
    outcomes: &[Outcome],
    rate: RateHeaders,
    key_name: Option<Arc<str>>,
) -> Rejection {
    // Report the quota if one is exhausted (it outlasts rate limits), else the longest wait.
    let denied = specs.iter().zip(outcomes).filter(|(_, o)| !o.allowed);
    let Some((spec, outcome)) = denied.max_by_key(|(s, o)| (s.quota, o.retry_after_us)) else {
        return Rejection {
            kind: RejectKind::RateLimited,
            scope: "global",
            key_name,
            retry_after: Duration::from_secs(1),
            rate: Box::new(rate),
            message: "rate limit exceeded".to_owned(),
        };
    };
    let retry_after = Duration::from_micros(outcome.retry_after_us);
    let retry_s = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let retry_s = retry_s.max(1);
    let (kind, message) = if spec.quota {
        (
            RejectKind::QuotaExceeded,
            format!(
                "quota exceeded for {}: {} {} {}; resets in {}",
                who(spec.scope, req),
                spec.limit,
                spec.unit.name(),
                spec.per,
                go_duration(outcome.reset_us)
            ),
        )
    } else {
        let who = who(spec.scope, req);
        (
            RejectKind::RateLimited,
            format!(
                "rate limit exceeded for {who}: {} {} {}; retry after {retry_s}s",
                spec.limit,
                spec.unit.name(),
                spec.per
            ),
        )
    };
    Rejection {
        kind,
        scope: spec.scope,
        key_name,
        retry_after,
        rate: Box::new(rate),
        message,
    }
}

/// OpenAI's rate-limit header names: limit, remaining, reset — for requests, then tokens.
const RATE_HEADER_NAMES: [[&str; 3]; 2] = [
    [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ],
    [
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ],
];

/// The `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers (OpenAI's names) of the tightest
/// rate bucket of each unit. Kept as numbers until the response is written: an admitted request holds
/// them through its upstream call, and header values held that long were separate allocations read
/// back cold under many connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// Requests, then tokens.
    units: [Option<Tightest>; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tightest {
    limit: u64,
    remaining: u64,
    reset_us: u64,
}

impl RateHeaders {
    fn of(specs: &[Spec<'_>], outcomes: &[Outcome]) -> RateHeaders {
        let tightest = |unit| {
            specs
                .iter()
                .zip(outcomes)
                .filter(|(s, _)| s.unit == unit && !s.quota)
                .min_by_key(|(s, o)| (o.remaining, std::cmp::Reverse(s.limit)))
                .map(|(spec, outcome)| Tightest {
                    limit: spec.limit,
                    remaining: outcome.remaining,
                    reset_us: outcome.reset_us,
                })
        };
        RateHeaders {
            units: [tightest(Unit::Requests), tightest(Unit::Tokens)],
        }
    }

    /// No limit applies (nothing to send).
    pub fn is_empty(&self) -> bool {
        self.units.iter().all(Option::is_none)
    }

    /// The headers as HTTP/1.1 field lines (`name: value\r\n`), requests first — the one place they are
    /// rendered: an HTTP/1.1 head takes the lines as they are (no header value allocated, no map
    /// insert), a header map takes them through [`pairs`](Self::pairs).
    pub fn write_fields(&self, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        for (unit, [limit, remaining, reset]) in self.units.iter().zip(&RATE_HEADER_NAMES) {
            let Some(unit) = unit else {
                continue;
            };
            for (name, value) in [(limit, unit.limit), (remaining, unit.remaining)] {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(digits.format(value).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(reset.as_bytes());
            out.extend_from_slice(b": ");
            write_go_duration(out, unit.reset_us);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The headers as name and value, requests first: [`write_fields`](Self::write_fields) split up (the
    /// values share one buffer).
    pub fn pairs(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + use<> {
        const fn names(unit: usize) -> [HeaderName; 3] {
            let [limit, remaining, reset] = RATE_HEADER_NAMES[unit];
            [
                HeaderName::from_static(limit),
                HeaderName::from_static(remaining),
                HeaderName::from_static(reset),
            ]
        }
        static NAMES: [[HeaderName; 3]; 2] = [names(0), names(1)];
        let mut lines = Vec::with_capacity(192);
        self.write_fields(&mut lines);
        let mut rest = Bytes::from(lines);
        std::iter::from_fn(move || {
            let end = memchr::memmem::find(&rest, b"\r\n")?;
            let line = rest.split_to(end + 2);
            let colon = memchr::memchr(b':', &line)?;
            let name = NAMES
                .as_flattened()
                .iter()
                .find(|name| name.as_str().as_bytes() == &line[..colon])?;
            let value = HeaderValue::from_maybe_shared(line.slice(colon + 2..end)).ok()?;
            Some((name.clone(), value))
        })
    }

    /// The headers as a list.
    pub fn to_vec(&self) -> Vec<(HeaderName, HeaderValue)> {
        self.pairs().collect()
    }
}

/// Formats a duration like OpenAI's reset headers (Go style): `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
fn go_duration(us: u64) -> String {
    let mut out = Vec::with_capacity(12);
    write_go_duration(&mut out, us);
    // Only ASCII digits and unit letters were written.
    String::from_utf8(out).unwrap_or_default()
}

/// [`go_duration`] appended to `out`.
fn write_go_duration(out: &mut Vec<u8>, us: u64) {
    let mut digits = itoa::Buffer::new();
    let ms = us.div_ceil(1000);
    if ms < 1000 {
        out.extend_from_slice(digits.format(ms).as_bytes());
        out.extend_from_slice(b"ms");
        return;
    }
    let hours = ms / 3_600_000;
    let minutes = ms % 3_600_000 / 60_000;
    let secs_ms = ms % 60_000;
    if hours > 0 {
        out.extend_from_slice(digits.format(hours).as_bytes());
        out.push(b'h');
    }
    if hours > 0 || minutes > 0 {
        out.extend_from_slice(digits.format(minutes).as_bytes());
        out.push(b'm');
    }
    out.extend_from_slice(digits.format(secs_ms / 1000).as_bytes());
    let millis = secs_ms % 1000;
    if millis > 0 {
        // Milliseconds without trailing zeros: 500 → ".5", 250 → ".25", 7 → ".007".
        out.push(b'.');
        let text = digits.format(millis + 1000);
        out.extend_from_slice(text[1..].trim_end_matches('0').as_bytes());
    }
    out.push(b's');
}

#[cfg(test)]
mod tests;
