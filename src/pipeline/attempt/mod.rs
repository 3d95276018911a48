//! The attempt loop: candidates in order (the routed backend's instances as its balancer — or
//! `prefix_affinity` — orders them, skipping open breakers unless none is usable, bounded by `retries`;
//! then each fallback backend), one upstream call each, until one answers. A backend with `max_in_flight`
//! first admits the request (a slot, or a bounded wait for one). Nothing has reached the client while this
//! loop runs, so every fault may move on; the first byte to the client ends the loop.
//!
//! One exchange with one instance (prepare → send → finish JSON | start stream) is `exchange.rs`.

mod exchange;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use crate::alerts::{Alert, AlertKind};
use crate::config::{BackendConfig, BackendKind};
use crate::error::{ErrorKind, GatewayError};
use crate::protocol::{ApiRequest, Endpoint, Protocol};
use crate::routing::admission::{Admission, Refusal};
use crate::routing::affinity::AffinityKey;
use crate::routing::balance::InstanceView;
use crate::routing::health::Acquire;
use crate::routing::instances::InstanceState;
use crate::state::{AppState, BackendRuntime, Snapshot};
use crate::upstream::call::Fault;

use super::RequestCtx;
use super::reply;

/// Everything an attempt needs, borrowed for the duration of the request.
pub struct Exchange<'a> {
    pub state: &'a AppState,
    pub snapshot: &'a Arc<Snapshot>,
    pub endpoint: Endpoint,
    pub request: &'a Arc<ApiRequest>,
    pub body: &'a Bytes,
    pub headers: &'a ForwardedHeaders,
    /// Model name the routing alias sends upstream (applies to the routed backend only).
    pub alias_model: Option<&'a str>,
    /// Forward the client's credentials when a backend has no key of its own: only for an open gateway,
    /// where they are not gateway keys.
    pub forward_client_auth: bool,
    /// The request's `prefix_affinity` key, when the routed backend uses it.
    pub affinity_key: Option<AffinityKey>,
    /// Its prompt's prefix block hashes, with `prompt: index`.
    pub affinity_blocks: Option<crate::routing::affinity::PromptBlocks>,
}

/// The client's headers an upstream request may carry, taken out of the request's header map before
/// the upstream call: the map then goes while its memory is still in the CPU's caches (dropped after
/// the upstream answered, it was read back cold under many connections). No `Debug`: it may hold the
/// client's credentials.
pub struct ForwardedHeaders {
    authorization: Option<HeaderValue>,
    x_api_key: Option<HeaderValue>,
    anthropic_version: Option<HeaderValue>,
    anthropic_beta: Option<HeaderValue>,
}

impl ForwardedHeaders {
    /// Moves the forwarded headers out of `headers` (their first values); the client's credentials only
    /// when they are to be forwarded (`forward_client_auth`: an open gateway).
    pub fn take(headers: &mut HeaderMap, forward_client_auth: bool) -> ForwardedHeaders {
        let (authorization, x_api_key) = if forward_client_auth {
            (
                headers.remove(header::AUTHORIZATION),
                headers.remove(crate::http::names::X_API_KEY),
            )
        } else {
            (None, None)
        };
        ForwardedHeaders {
            authorization,
            x_api_key,
            anthropic_version: headers.remove(crate::http::names::ANTHROPIC_VERSION),
            anthropic_beta: headers.remove(crate::http::names::ANTHROPIC_BETA),
        }
    }
}

/// Why one attempt did not produce a response.
enum AttemptError {
    /// Counts against the instance; the loop moves on.
    Fault(Fault),
    /// The request itself cannot be served this way (e.g. not convertible): answer the client now.
    Fatal(GatewayError),
}

impl From<Fault> for AttemptError {
    fn from(fault: Fault) -> Self {
        AttemptError::Fault(fault)
    }
}

/// A backend of the chain as the candidate loop tries it.
#[derive(Clone, Copy)]
struct Candidate<'a> {
    backend: &'a BackendConfig,
    runtime: &'a BackendRuntime,
    /// The routing alias's model: set for the routed backend only.
    alias_model: Option<&'a str>,
}

/// One failed attempt, for the final error message.
struct Tried {
    backend: String,
    instance: String,
    fault: Fault,
}

pub(crate) fn backend_protocol(kind: BackendKind) -> Protocol {
    match kind {
        BackendKind::Anthropic => Protocol::Anthropic,
        BackendKind::OpenAi | BackendKind::Echo => Protocol::OpenAi,
    }
}

/// The protocol a request goes to `backend` in: a Responses request as it is to a backend that serves
/// the Responses API itself (`native_responses`), else the backend's own.
fn target_protocol(endpoint: Endpoint, backend: &BackendConfig) -> Protocol {
    if endpoint == Endpoint::Responses && backend.native_responses {
        Protocol::Responses
    } else {
        backend_protocol(backend.kind)
    }
}

impl Exchange<'_> {
    /// Answers the request from the routed backend `primary` or, when none of its attempted instances
    /// answered (or it refused admission), from its fallbacks in order ([`Exchange::none_answered`]
    /// when none did).
    pub async fn run(
        &self,
        primary: usize,
        ctx: &mut RequestCtx,
    ) -> Result<Response, GatewayError> {
        let config = &self.snapshot.config;
        let fallbacks = config.backends[primary].fallback.iter().copied();
        let mut tried: Vec<Tried> = Vec::new();
        let mut overloaded: Option<GatewayError> = None;
        for (position, backend_index) in std::iter::once(primary).chain(fallbacks).enumerate() {
            let backend = &config.backends[backend_index];
            if backend.kind == BackendKind::Echo {
                if position > 0 {
                    self.state.metrics().fallback();
                }
                return self.echo(backend, ctx).await;
            }
            let runtime = &self.snapshot.backends[backend_index];
            // A slot somewhere in the backend, held while the request is in flight (its stream included).
            let permit = match &runtime.admission {
                Some(admission) => match self.admit(backend, admission).await {
                    Ok(permit) => Some(permit),
                    Err(error) => {
                        overloaded.get_or_insert(error);
                        continue;
                    }
                },
                None => None,
            };
            // The routing alias names the model of the routed backend only.
            let alias_model = if position == 0 {
                self.alias_model
            } else {
                None
            };
            let candidate = Candidate {
                backend,
                runtime,
                alias_model,
            };
            if let Some(response) = self
                .try_instances(candidate, permit, &mut tried, ctx)
                .await?
            {
                if position > 0 {
                    self.state.metrics().fallback();
                }
                return Ok(response);
            }
        }
        Err(self.none_answered(primary, &tried, overloaded, ctx))
    }

    /// An `echo` backend answers itself.
    async fn echo(
        &self,
        backend: &BackendConfig,
        ctx: &mut RequestCtx,
    ) -> Result<Response, GatewayError> {
        if self.endpoint == Endpoint::Responses {
            return super::responses::echo(self.request, backend, ctx).await;
        }
        reply::echo(self.request, self.endpoint, backend, ctx)
    }

    /// No candidate answered: the routed backend's overload error when nothing was tried, else the
    /// error naming every fault ([`exhausted`]); the context names the last backend and instance tried.
    fn none_answered(
        &self,
        primary: usize,
        tried: &[Tried],
        overloaded: Option<GatewayError>,
        ctx: &mut RequestCtx,
    ) -> GatewayError {
        if let Some(last) = tried.last() {
            ctx.backend = Some(last.backend.clone());
            ctx.instance = Some(last.instance.clone());
        }
        match overloaded {
            Some(error) if tried.is_empty() => {
                ctx.backend = Some(self.snapshot.config.backends[primary].name.clone());
                error
            }
            _ => exhausted(tried),
        }
    }

    /// One backend's instances in [`Exchange::order`], at most `1 + retries` of them, skipping open
    /// breakers while another instance is usable: the first answer, or `None` once every attempted
    /// instance failed (each fault recorded and pushed onto `tried`).
    async fn try_instances(
        &self,
        candidate: Candidate<'_>,
        mut permit: Option<tokio::sync::OwnedSemaphorePermit>,
        tried: &mut Vec<Tried>,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Response>, GatewayError> {
        let (backend, runtime) = (candidate.backend, candidate.runtime);
        let now = Instant::now();
        let views: Vec<_> = runtime.instances.iter().map(|i| i.view(now)).collect();
        let any_usable = views.iter().any(|v| v.usable);
        let affinity = runtime.affinity.as_ref();
        let key = affinity.and(self.affinity_key);
        let blocks = affinity.and(self.affinity_blocks.as_ref());
        let sticky = match affinity {
            Some(affinity) => affinity.lookup(key, blocks, now).await,
            None => None,
        };
        let order = self.order(&candidate, &views, now, key, sticky);
        let budget = (1 + backend.retries as usize).min(order.len());
        let mut attempted = 0;
        for index in order {
            if attempted == budget {
                break;
            }
            let instance = &runtime.instances[index];
            // Open breakers and pending Retry-Afters are skipped while another instance is usable;
            // a pool with none usable is still tried (ejection never empties a pool, and with client
            // credentials passed through one client's 429 must not block the others).
            // The first candidate is asked at `now`; later ones after a failed attempt took time.
            let at = if attempted == 0 { now } else { Instant::now() };
            if let Acquire::Rejected { .. } = instance.breaker.try_acquire(at)
                && any_usable
            {
                continue;
            }
            attempted += 1;
            ctx.attempts += 1;
            let upstream_model = candidate
                .alias_model
                .or(backend.instances[index].model.as_deref())
                .or(backend.model.as_deref());
            let guard = instance.start();
            match self
                .attempt(backend, index, guard, &mut permit, upstream_model, ctx)
                .await
            {
                Ok(response) => {
                    if let Some(affinity) = affinity {
                        affinity.served(key, blocks, sticky, index, Instant::now());
                    }
                    return Ok(Some(response));
                }
                Err(AttemptError::Fatal(error)) => return Err(error),
                Err(AttemptError::Fault(fault)) => {
                    tried.push(self.attempt_failed(backend, index, instance, fault, ctx));
                }
            }
        }
        if attempted > 0 {
            self.state.alert(Alert {
                kind: AlertKind::BackendExhausted,
                backend: backend.name.clone(),
                instance: None,
                detail: format!("every attempted instance of '{}' failed", backend.name),
            });
        }
        Ok(None)
    }

    /// The order to try a backend's instances in: `prefix_affinity`'s (`sticky` first) or the balancer's;
    /// with admission, instances at their cap after the others (the permit means one of those has a slot).
    fn order(
        &self,
        candidate: &Candidate<'_>,
        views: &[InstanceView],
        now: Instant,
        key: Option<AffinityKey>,
        sticky: Option<usize>,
    ) -> Vec<usize> {
        let runtime = candidate.runtime;
        let mut order = match &runtime.affinity {
            Some(affinity) => {
                let (order, decision) = affinity.order(views, now, key, sticky);
                self.state
                    .metrics()
                    .affinity(&candidate.backend.name, decision.as_str());
                order
            }
            None => runtime.balancer.order(views, now),
        };
        if runtime.admission.is_some() {
            order.sort_by_key(|&i| views[i].full() && views[i].is_usable(now));
        }
        order
    }

    /// A failed attempt: logged, counted, held against the instance's breaker; returned for the final
    /// error message.
    fn attempt_failed(
        &self,
        backend: &BackendConfig,
        index: usize,
        instance: &InstanceState,
        fault: Fault,
        ctx: &RequestCtx,
    ) -> Tried {
        let shown = &backend.instances[index].display;
        tracing::warn!(
            id = %ctx.id, backend = %backend.name, instance = %shown,
            fault = %fault, "upstream attempt failed"
        );
        self.state
            .metrics()
            .upstream_error(&backend.name, fault.kind_str());
        self.record_failure(instance, &fault);
        Tried {
            backend: backend.name.clone(),
            instance: shown.clone(),
            fault,
        }
    }

    /// Admission to a backend with `max_in_flight`: a slot, or a 503 with `Retry-After` when the queue
    /// is full or the wait ran out.
    async fn admit(
        &self,
        backend: &BackendConfig,
        admission: &Admission,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, GatewayError> {
        let metrics = self.state.metrics();
        let refusal = match admission
            .acquire(|waiting| metrics.queue_waiting(&backend.name, waiting))
            .await
        {
            Ok(permit) => return Ok(permit),
            Err(refusal) => refusal,
        };
        metrics.queue_refused(&backend.name, refusal.as_str());
        let message = match refusal {
            Refusal::QueueFull => format!(
                "backend '{}' is at capacity: every instance is at its max_in_flight and {} requests are already waiting (queue.max_waiting); retry later",
                backend.name,
                admission.max_waiting()
            ),
            Refusal::Timeout => format!(
                "backend '{}' is at capacity: no instance freed a slot within {} s (queue.max_wait_s); retry later",
                backend.name,
                admission.max_wait().as_secs_f64()
            ),
        };
        Err(GatewayError::new(ErrorKind::Overloaded, message)
            .with_retry_after(Some(admission.retry_after())))
    }

    /// A fault counts against the instance: its breaker (and a 429's Retry-After) and, for a timeout,
    /// its latency.
    fn record_failure(&self, instance: &InstanceState, fault: &Fault) {
        let now = Instant::now();
        if let Fault::Timeout(waited) = fault {
            // A timeout is a (lower-bound) latency sample too.
            instance.observe_ttfb(*waited, now);
        }
        if let Some(retry_after) = fault.rate_limited() {
            instance
                .breaker
                .rate_limited_until(now + retry_after.unwrap_or(Duration::from_secs(1)));
        }
        if let Some(transition) = instance.breaker.on_failure(now) {
            self.state.instance_transition(instance, transition);
        }
    }
}

/// The error once every candidate failed: 504 when the last fault was a timeout, 429 (shortest
/// Retry-After) when all were rate-limited, else 502; the message names each backend/instance tried.
fn exhausted(tried: &[Tried]) -> GatewayError {
    let detail = tried
        .iter()
        .map(|t| format!("{} ({}): {}", t.backend, t.instance, t.fault))
        .collect::<Vec<_>>()
        .join("; ");
    let rate_limits: Vec<Option<Duration>> = tried
        .iter()
        .filter_map(|t| t.fault.rate_limited())
        .collect();
    if !tried.is_empty() && rate_limits.len() == tried.len() {
        let shortest = rate_limits.iter().flatten().min().copied();
        return GatewayError::new(
            ErrorKind::UpstreamRateLimited,
            format!("every upstream is rate limited: {detail}"),
        )
        .with_retry_after(shortest);
    }
    let kind = match tried.last() {
        Some(last) if last.fault.is_timeout() => ErrorKind::UpstreamTimeout,
        _ => ErrorKind::UpstreamUnavailable,
    };
    if tried.is_empty() {
        return GatewayError::new(kind, "no upstream instance is configured for this backend");
    }
    GatewayError::new(kind, format!("all upstream attempts failed: {detail}"))
}
