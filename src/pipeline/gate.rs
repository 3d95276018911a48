//! The gate before routing: API key → principal (401/403), model allow-list, prompt policies (400),
//! then rate limits and quotas (429, or 503 when shared state is down and `fail_closed`). Requests
//! rejected as invalid never reach this stage, so they consume no budget.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderMap;

use crate::auth::{AuthError, KeyStore, Principal};
use crate::error::{ErrorKind, GatewayError};
use crate::limits::{Admission, LimitRequest, RejectKind};
use crate::protocol::ApiRequest;
use crate::state::{AppState, Snapshot};

/// What the gate let through.
pub struct Admitted {
    pub principal: Option<Arc<Principal>>,
    pub admission: Option<Admission>,
}

/// Authenticate the request's key; `Ok(None)` when the gateway has no keys configured.
pub fn authenticate(
    state: &AppState,
    keys: &KeyStore,
    headers: &HeaderMap,
) -> Result<Option<Arc<Principal>>, GatewayError> {
    match keys.authenticate(headers) {
        Ok(None) => Ok(None),
        Ok(Some(principal)) => {
            state.metrics().auth(true);
            Ok(Some(principal))
        }
        Err(error) => {
            state.metrics().auth(false);
            Err(auth_error(error))
        }
    }
}

pub(crate) fn auth_error(error: AuthError) -> GatewayError {
    let kind = match error {
        AuthError::Forbidden { .. } => ErrorKind::Forbidden,
        AuthError::Missing | AuthError::Invalid => ErrorKind::Unauthorized,
    };
    GatewayError::new(kind, error.to_string())
}

/// The client address: the peer, or the first `X-Forwarded-For` hop when the peer is a trusted proxy.
pub fn client_ip(snapshot: &Snapshot, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let peer_ip = peer.ip();
    if snapshot.config.server.trusted_proxies.contains(&peer_ip)
        && let Some(first) = headers
            .get(crate::http::names::X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return first;
    }
    peer_ip
}

/// A client on this machine: a loopback peer whose request no proxy forwarded. A reverse proxy on the
/// same host makes every client's connection come from loopback; it says so with `X-Forwarded-For`,
/// `Forwarded` or `X-Real-IP`, and such a request is not taken for a local one.
pub(crate) fn is_local_client(peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
    peer.is_some_and(|peer| peer.ip().is_loopback())
        && !headers.contains_key(crate::http::names::X_FORWARDED_FOR)
        && !headers.contains_key(http::header::FORWARDED)
        && !headers.contains_key("x-real-ip")
}

pub async fn admit(
    state: &AppState,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    ip: IpAddr,
    request: &Arc<ApiRequest>,
    public_model: &str,
) -> Result<Admitted, GatewayError> {
    // One auth count per request: a valid key refused for the model counts as denied only.
    let principal = snapshot.keys.authenticate(headers).map_err(|error| {
        state.metrics().auth(false);
        auth_error(error)
    })?;
    if let Some(principal) = &principal {
        let checked = KeyStore::check_model(principal, public_model);
        state.metrics().auth(checked.is_ok());
        checked.map_err(auth_error)?;
    }
    let limited = !snapshot.limiter.is_noop();
    let policed = !snapshot.policy.is_empty();
    if !limited && !policed {
        return Ok(Admitted {
            principal,
            admission: None,
        });
    }
    // The prompt's text only when a policy reads it; its tokens only when a limit or policy counts
    // them (each text's count cached, so a resent history is not counted again).
    let counts_tokens = snapshot.limiter.counts_tokens() || snapshot.policy.needs_token_count();
    let text = if snapshot.policy.reads_text() {
        request.all_input_text()
    } else {
        String::new()
    };
    let estimated_tokens = if counts_tokens {
        state.tokens().estimate(request).await
    } else {
        0
    };
    if policed && let Err(violation) = snapshot.policy.check(&text, estimated_tokens) {
        return Err(GatewayError::new(
            ErrorKind::PolicyViolation,
            violation.to_string(),
        ));
    }
    if !limited {
        return Ok(Admitted {
            principal,
            admission: None,
        });
    }
    let admission = snapshot
        .limiter
        .admit(&LimitRequest {
            ip,
            key: principal.as_deref(),
            model: public_model,
            estimated_tokens,
        })
        .await
        .map_err(|rejection| {
            state.stats().rejected();
            let key_name = rejection.key_name.as_deref().unwrap_or("anonymous");
            let kind = match rejection.kind {
                RejectKind::RateLimited => {
                    state.metrics().rate_limited(key_name);
                    ErrorKind::RateLimited
                }
                RejectKind::QuotaExceeded => {
                    state.metrics().quota_exceeded(key_name);
                    ErrorKind::QuotaExceeded
                }
                RejectKind::Unavailable => ErrorKind::ServiceUnavailable,
            };
            let mut error = GatewayError::new(kind, rejection.message)
                .with_retry_after(Some(rejection.retry_after));
            // The `x-ratelimit-*` headers go with the response as an admitted request's do.
            if !rejection.rate.is_empty() {
                error.extensions.insert(*rejection.rate);
            }
            error
        })?;
    Ok(Admitted {
        principal,
        admission: Some(admission),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loopback_peer_that_no_proxy_forwarded_is_local() {
        let none = HeaderMap::new();
        let local = |addr: &str| is_local_client(Some(addr.parse().unwrap()), &none);
        assert!(local("127.0.0.1:5000"));
        assert!(local("[::1]:5000"));
        assert!(!local("10.1.2.3:5000"));
        assert!(!local("203.0.113.7:443"));
        assert!(!local("[2001:db8::1]:5000"));
        assert!(!is_local_client(None, &none));
        for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
            let mut headers = HeaderMap::new();
            headers.insert(name, http::HeaderValue::from_static("127.0.0.1"));
            let peer = Some("127.0.0.1:5000".parse().unwrap());
            assert!(!is_local_client(peer, &headers), "{name}");
        }
    }
}
