//! The limit rules of one config compiled into buckets (per scope and unit), with the text their
//! messages use; checked and built once when the config is validated. A request's own buckets
//! ([`Spec`]) are made from them.

use hashbrown::HashMap;
use std::sync::Arc;

use super::engine::BucketKind;
use crate::auth::KeyConfig;
use crate::config_error::Invalid;
use crate::limit_rules::{Algorithm, LimitRule, Period, QuotaConfig, RateLimitConfig};

/// The compiled limit rules of one config: built (and checked) once when the config is validated,
/// then bound to the state store by [`Limiter::new`].
#[derive(Debug, Default)]
pub(crate) struct LimitRules {
    pub(super) global: Vec<RuleBucket>,
    pub(super) per_ip: Vec<RuleBucket>,
    pub(super) per_key: Vec<RuleBucket>,
    pub(super) per_key_model: Vec<RuleBucket>,
    pub(super) keys: HashMap<Arc<str>, KeyLimits>,
    pub(super) counts_tokens: bool,
}

#[derive(Debug, Default)]
pub(super) struct KeyLimits {
    /// `Some` when the key overrides `per_key` (an override with no buckets cannot happen).
    pub(super) rate: Option<Vec<RuleBucket>>,
    pub(super) quota: Vec<QuotaBucket>,
    pub(super) period: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
    Requests,
    Tokens,
}

impl Unit {
    pub(super) fn name(self) -> &'static str {
        match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
        }
    }
}

/// One bucket of a rate rule, with the text used in messages.
#[derive(Debug, Clone)]
pub(super) struct RuleBucket {
    pub(super) unit: Unit,
    pub(super) kind: BucketKind,
    pub(super) limit: u64,
    /// Distinguishes buckets of different rules in keys, so a changed rule starts fresh.
    pub(super) tag: String,
    /// "per 60s" etc.
    pub(super) per: String,
}

#[derive(Debug, Clone)]
pub(super) struct QuotaBucket {
    pub(super) unit: Unit,
    pub(super) limit: u64,
    pub(super) mode: QuotaMode,
    pub(super) per: String,
}

#[derive(Debug, Clone)]
pub(super) enum QuotaMode {
    Calendar(Period),
    Rolling { kind: BucketKind, window_us: u64 },
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

/// One bucket of one request, ready for the store. Message text is built only on rejection.
#[derive(Debug)]
pub(super) struct Spec<'a> {
    pub(super) key: String,
    pub(super) kind: BucketKind,
    pub(super) cost: u64,
    pub(super) unit: Unit,
    pub(super) limit: u64,
    pub(super) scope: &'static str,
    /// "per 60s", "per month": from the compiled rule.
    pub(super) per: &'a str,
    pub(super) quota: bool,
}
