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

mod clock;
pub(crate) mod engine;
mod headers;
mod limiter;
pub(crate) mod memory;
mod quota;
mod redis_buckets;
mod rejection;
mod rules;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Serialize;

use crate::auth::Principal;
use engine::BucketKind;

pub use clock::{Clock, ManualClock, SystemClock};
pub use headers::RateHeaders;
pub use limiter::Limiter;
pub(crate) use rules::LimitRules;

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

#[cfg(test)]
mod tests;
