//! A refused request's answer: which bucket to report, its retry time and the message naming who
//! was limited and by what rule.

use std::sync::Arc;
use std::time::Duration;

use super::engine::Outcome;
use super::headers::{RateHeaders, go_duration};
use super::rules::Spec;
use super::{LimitRequest, RejectKind, Rejection};

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

pub(super) fn too_large(
    spec: &Spec<'_>,
    req: &LimitRequest<'_>,
    key_name: Option<Arc<str>>,
) -> Rejection {
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

pub(super) fn rejection(
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
