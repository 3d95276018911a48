//! The limit rules as configured: the `rate_limit:` section and a key's own `keys[].rate_limit` and
//! `keys[].quota`, with their validation. Plain data shared by `auth` (a key's entry carries its
//! rules) and `limits` (which counts against them); it depends on neither.

use serde::{Deserialize, Serialize};

use crate::config_error::Invalid;

/// The `rate_limit:` config section. A scope that is absent is not limited.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub per_ip: Option<LimitRule>,
    /// Default for every key; `keys[].rate_limit` overrides it per key.
    pub per_key: Option<LimitRule>,
    pub per_key_model: Option<LimitRule>,
    pub global: Option<LimitRule>,
}

/// One limit: requests and/or tokens per `window_s`.
///
/// With `token_bucket` the rate is `requests / window_s` per second and `burst` (default
/// `requests`) is how many may arrive at once; the tokens bucket holds `tokens` and refills over
/// `window_s`. Seed 004's "5/s, burst 10" is `{requests: 5, window_s: 1, burst: 10, algorithm: token_bucket}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitRule {
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
    pub window_s: f64,
    pub algorithm: Algorithm,
    pub burst: Option<u64>,
}

impl Default for LimitRule {
    fn default() -> Self {
        LimitRule {
            requests: None,
            tokens: None,
            window_s: 60.0,
            algorithm: Algorithm::SlidingWindow,
            burst: None,
        }
    }
}

/// Per-key override from `keys[].rate_limit`.
pub(crate) type KeyRateLimitConfig = LimitRule;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    #[default]
    SlidingWindow,
    TokenBucket,
}

/// `keys[].quota`: requests and/or tokens per calendar `period` (UTC) or per rolling `window_s`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
    pub period: Option<Period>,
    pub window_s: Option<f64>,
}

/// Calendar periods in UTC; weeks start on Monday (ISO 8601).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
}

impl RateLimitConfig {
    /// Checks every rule; the error is located at `rate_limit` and names the rule.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        for (rule, path) in [
            (&self.per_ip, "rate_limit.per_ip"),
            (&self.per_key, "rate_limit.per_key"),
            (&self.per_key_model, "rate_limit.per_key_model"),
            (&self.global, "rate_limit.global"),
        ] {
            if let Some(rule) = rule {
                rule.validate(path)
                    .map_err(|error| error.under("rate_limit"))?;
            }
        }
        Ok(())
    }
}

impl LimitRule {
    /// Checks the rule; `path` (e.g. `rate_limit.per_ip`) is named in the message, and the caller
    /// locates the error in its section ([`Invalid::under`]).
    pub(crate) fn validate(&self, path: &str) -> Result<(), Invalid> {
        check_amounts(path, self.requests, self.tokens)?;
        if !(self.window_s.is_finite() && self.window_s > 0.0) {
            return Err(Invalid::unlocated(format!(
                "{path}.window_s must be a positive number of seconds, got {}",
                self.window_s
            )));
        }
        match (self.algorithm, self.burst) {
            (Algorithm::SlidingWindow, Some(_)) => Err(Invalid::unlocated(format!(
                "{path}.burst applies only to algorithm token_bucket"
            ))),
            (_, Some(0)) => Err(Invalid::unlocated(format!(
                "{path}.burst must be at least 1"
            ))),
            (Algorithm::TokenBucket, Some(_)) if self.requests.is_none() => {
                Err(Invalid::unlocated(format!(
                    "{path}.burst needs requests (it is the request burst)"
                )))
            }
            _ => Ok(()),
        }
    }
}

impl QuotaConfig {
    /// Checks the quota; `path` (e.g. `keys[0].quota`) is named in the message, and the caller locates
    /// the error in its section ([`Invalid::under`]).
    pub(crate) fn validate(&self, path: &str) -> Result<(), Invalid> {
        check_amounts(path, self.requests, self.tokens)?;
        match (self.period, self.window_s) {
            (Some(_), Some(_)) => Err(Invalid::unlocated(format!(
                "{path}: set either period or window_s, not both"
            ))),
            (None, None) => Err(Invalid::unlocated(format!(
                "{path}: set period (day, week, month) or window_s (rolling)"
            ))),
            (None, Some(w)) if !(w.is_finite() && w > 0.0) => Err(Invalid::unlocated(format!(
                "{path}.window_s must be a positive number of seconds, got {w}"
            ))),
            _ => Ok(()),
        }
    }
}

/// The checks a rate rule and a quota share: at least one amount, and none of them zero.
fn check_amounts(path: &str, requests: Option<u64>, tokens: Option<u64>) -> Result<(), Invalid> {
    if requests.is_none() && tokens.is_none() {
        return Err(Invalid::unlocated(format!(
            "{path}: set requests and/or tokens"
        )));
    }
    if requests == Some(0) || tokens == Some(0) {
        return Err(Invalid::unlocated(format!(
            "{path}: requests and tokens must be at least 1"
        )));
    }
    Ok(())
}
