//! The limiter of one snapshot: turns a request into its buckets, checks and charges them all or
//! none in the state store, reconciles token charges, reads a key's quota usage.

use hashbrown::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::clock::{Clock, SystemClock};
use super::engine::{BucketKind, Outcome};
use super::headers::RateHeaders;
use super::rejection::{rejection, too_large};
use super::rules::{KeyLimits, LimitRules, QuotaBucket, QuotaMode, RuleBucket, Spec, Unit};
use super::{
    Admission, KeyUsage, LimitRequest, RejectKind, Rejection, TokenCharge, UsageCounter, quota,
    redis_buckets,
};
use crate::store::{FailMode, StateStore, StoreUnavailable};

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
pub(super) fn ip_text(ip: std::net::IpAddr) -> String {
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

pub(super) fn truncate(text: &str, max: usize) -> &str {
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
