//! Shared state: the live config `Snapshot` behind one `ArcSwap`, and the long-lived parts beside it
//! (HTTP client, instance registry, metrics, stats, request logger, alerter). A request loads the snapshot
//! once and uses it to the end; a reload swaps in a whole new snapshot, so no request sees half of one.

mod engine_scrape;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::alerts::{Alert, Alerter};
use crate::auth::KeyStore;
use crate::cache::ResponseCache;
use crate::config::{Config, Parts, Source};
use crate::limits::Limiter;
use crate::policy::Policy;
use crate::responses_store::ResponseStore;
use crate::routing::admission::{Admission, Admissions};
use crate::routing::affinity::{Affinity, SessionTables};
use crate::routing::balance::Balancer;
use crate::routing::health::{BreakerState, Transition};
use crate::routing::instances::{InstanceRegistry, InstanceState, redacted_url};
use crate::secret::Secret;
use crate::store::{RedisStore, StateConfig, StateStore};
use crate::telemetry::metrics::{Metrics, instance_state};
use crate::telemetry::request_log::RequestLogger;
use crate::telemetry::stats::Stats;
use crate::upstream::client::{HttpClient, Target};

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    live: ArcSwap<Snapshot>,
    client: HttpClient,
    started: Instant,
    source: Source,
    /// Per-instance breaker, in-flight and latency state; outlives snapshots so reloads keep it.
    instances: InstanceRegistry,
    /// `prefix_affinity`'s moved sessions and the admission queues, per backend; reloads keep them.
    sessions: SessionTables,
    admissions: Admissions,
    metrics: Arc<Metrics>,
    stats: Stats,
    /// Replaced as a whole when a reload changes `request_log` or `policies` (the redactor); the one it
    /// replaces drains its queue in the background.
    request_log: ArcSwap<RequestLogger>,
    /// Replaced when a reload changes `alerts`.
    alerter: ArcSwap<Alerter>,
    /// Request logs and alerters replaced by reloads, still draining; awaited by [`AppState::flush`].
    retiring: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Where limit counters live (memory or Redis); shared by every snapshot so counters survive reloads.
    store: StateStore,
    /// Response cache; long-lived so entries survive reloads (its settings apply from startup).
    cache: ResponseCache,
    /// Stored Responses answers; long-lived like the cache.
    responses: ResponseStore,
    /// Input-token counts by text, for estimates that do not recount a resent history.
    tokens: crate::tokens::TokenCounter,
}

/// Everything derived from one config, swapped as a unit.
pub struct Snapshot {
    pub config: Config,
    /// Parallel to `config.backends`.
    pub backends: Vec<BackendRuntime>,
    pub keys: KeyStore,
    pub limiter: Arc<Limiter>,
    pub policy: Policy,
    /// `server.cors_allow_origin` as the layer browser requests go through.
    pub cors: tower_http::cors::CorsLayer,
    /// Whether something on a chat request's way reads its messages, per front door.
    pub reads_messages: ReadsMessages,
}

/// Something on a chat request's way reads its messages: the request log, a token count (limits,
/// quotas, a policy's input bound), a policy's patterns, prompt affinity, the echo backend or a
/// conversion to another protocol (any backend, fallbacks included). When nothing does, a large body
/// is checked but its conversation not kept (`openai::decode_chat_unread`,
/// `anthropic::decode_request_unread`); the response cache, which keys on it, is asked per request.
#[derive(Debug, Clone, Copy)]
pub struct ReadsMessages {
    /// `/v1/chat/completions`: every backend an OpenAI-compatible one, or something reads them.
    pub chat: bool,
    /// `/v1/messages`: every backend an Anthropic one, or something reads them.
    pub messages: bool,
    /// `/v1/responses`: every backend one that speaks Responses (`native_responses`), or something
    /// reads them.
    pub responses: bool,
}

/// Per-backend live state for one snapshot.
pub struct BackendRuntime {
    pub balancer: Balancer,
    /// Parallel to the backend's `instances`; shared with the registry, so they survive reloads.
    pub instances: Vec<Arc<InstanceState>>,
    /// `load_balancing: prefix_affinity`: orders the instances instead of `balancer`.
    pub affinity: Option<Affinity>,
    /// Some instance has a `max_in_flight`: requests take a slot here first.
    pub admission: Option<Arc<Admission>>,
}

/// The long-lived parts a snapshot's backends are built on.
struct Shared<'a> {
    registry: &'a InstanceRegistry,
    sessions: &'a SessionTables,
    admissions: &'a Admissions,
    store: &'a StateStore,
}

impl Snapshot {
    /// The runtime form of a validated config: takes the key store, limit rules and policy validation
    /// built (`parts`, from `Config::take_parts`), binds the limit rules to the state store and the
    /// backends to their live instance state. Cannot fail: everything was checked when the config was
    /// loaded.
    fn new(config: Config, parts: Parts, shared: &Shared<'_>) -> Snapshot {
        let Shared {
            registry,
            sessions,
            admissions,
            store,
        } = *shared;
        let Parts {
            keys,
            limits,
            policy,
        } = parts;
        let limiter = Limiter::new(limits, store.clone());
        let backends: Vec<BackendRuntime> = config
            .backends
            .iter()
            .map(|backend| {
                let weights: Vec<u32> = backend.instances.iter().map(|i| i.weight).collect();
                let affinity = backend.affinity.as_ref().map(|cfg| {
                    let urls: Vec<&str> = backend
                        .instances
                        .iter()
                        .map(|i| i.display.as_str())
                        .collect();
                    Affinity::new(
                        &backend.name,
                        cfg,
                        &urls,
                        &weights,
                        sessions.get_or_create(&backend.name, cfg.max_sessions),
                        store,
                        &config.state.key_prefix,
                    )
                });
                let caps: Vec<Option<u32>> =
                    backend.instances.iter().map(|i| i.max_in_flight).collect();
                let admission = caps.iter().any(Option::is_some).then(|| {
                    // An instance without a cap of its own counts for as many slots as the largest one.
                    let largest = caps.iter().flatten().copied().max().unwrap_or(1);
                    let slots = caps.iter().map(|c| c.unwrap_or(largest) as usize).sum();
                    admissions.get_or_create(&backend.name, slots, &backend.queue)
                });
                BackendRuntime {
                    balancer: Balancer::new(backend.load_balancing, &weights),
                    instances: backend
                        .instances
                        .iter()
                        .map(|instance| {
                            let live = registry.get_or_create(
                                &backend.name,
                                &instance.base_url,
                                &backend.health,
                            );
                            live.set_cap(instance.max_in_flight);
                            live
                        })
                        .collect(),
                    affinity,
                    admission,
                }
            })
            .collect();
        let with_affinity: Vec<&str> = config
            .backends
            .iter()
            .filter(|b| b.affinity.is_some())
            .map(|b| b.name.as_str())
            .collect();
        sessions.retain(&with_affinity);
        let with_caps: Vec<&str> = backends
            .iter()
            .zip(&config.backends)
            .filter(|(runtime, _)| runtime.admission.is_some())
            .map(|(_, b)| b.name.as_str())
            .collect();
        admissions.retain(&with_caps);
        let live: Vec<(String, String)> = config
            .backends
            .iter()
            .flat_map(|b| {
                b.instances
                    .iter()
                    .map(|i| (b.name.clone(), i.base_url.clone()))
            })
            .collect();
        registry.retain(&live);
        let cors = crate::http::cors::layer(&config.server.cors_allow_origin);
        let read_anyway = config.request_log.enabled
            || limiter.counts_tokens()
            || policy.needs_token_count()
            || policy.reads_text()
            || config
                .backends
                .iter()
                .any(|backend| backend.affinity.is_some());
        let converted_from = |kind| config.backends.iter().any(|backend| backend.kind != kind);
        let reads_messages = ReadsMessages {
            chat: read_anyway || converted_from(crate::config::BackendKind::OpenAi),
            messages: read_anyway || converted_from(crate::config::BackendKind::Anthropic),
            responses: read_anyway
                || config.backends.iter().any(|backend| {
                    backend.kind != crate::config::BackendKind::OpenAi || !backend.native_responses
                }),
        };
        Snapshot {
            config,
            backends,
            keys,
            limiter: Arc::new(limiter),
            policy,
            cors,
            reads_messages,
        }
    }
}

/// The request log writer for `config.request_log`, redacting with `policy` (the config's
/// `policies.redact_patterns`); drops are counted in `request_log_dropped_total`.
fn start_request_log(config: &Config, policy: Policy, metrics: &Arc<Metrics>) -> RequestLogger {
    let dropped = {
        let metrics = Arc::clone(metrics);
        Arc::new(move || metrics.request_log_dropped()) as Arc<dyn Fn() + Send + Sync>
    };
    // Without patterns nothing is redacted, and the log writes a body's texts as the body wrote them.
    let redact = if policy.redacts() {
        crate::telemetry::request_log::redactor(move |text| policy.redact(text))
    } else {
        crate::telemetry::request_log::no_redaction()
    };
    RequestLogger::start(&config.request_log, redact, dropped)
}

/// The state store for `state:`: Redis when `redis_url` is set (connects and reconnects in the
/// background, following `on_unavailable` meanwhile), else memory.
fn store_for(config: &StateConfig) -> StateStore {
    match &config.redis_url {
        Some(url) => StateStore::Redis(RedisStore::new(
            url,
            &config.key_prefix,
            config.on_unavailable,
            std::time::Duration::from_secs(1),
        )),
        None => StateStore::memory(),
    }
}

impl AppState {
    /// Build the state; starts the request-log writer and the alerter, so call it inside a runtime.
    pub fn new(mut config: Config, source: Source) -> anyhow::Result<AppState> {
        let client = HttpClient::new()?;
        let metrics = Arc::new(Metrics::with_config(&config.metrics));
        let parts = config.take_parts();
        let request_log = start_request_log(&config, parts.policy.clone(), &metrics);
        let alerter = Alerter::start(&config.alerts, client.clone());
        let instances = InstanceRegistry::new();
        let sessions = SessionTables::default();
        let admissions = Admissions::default();
        let store = store_for(&config.state);
        let cache = ResponseCache::new(&config.cache, store.clone());
        let responses = ResponseStore::new(&config.responses, store.clone());
        let tokens = crate::tokens::TokenCounter::new(&store);
        let snapshot = Snapshot::new(
            config,
            parts,
            &Shared {
                registry: &instances,
                sessions: &sessions,
                admissions: &admissions,
                store: &store,
            },
        );
        let state = AppState {
            inner: Arc::new(Inner {
                live: ArcSwap::from_pointee(snapshot),
                client,
                started: Instant::now(),
                source,
                instances,
                sessions,
                admissions,
                metrics,
                stats: Stats::new(),
                request_log: ArcSwap::from_pointee(request_log),
                alerter: ArcSwap::from_pointee(alerter),
                retiring: std::sync::Mutex::new(Vec::new()),
                store,
                cache,
                responses,
                tokens,
            }),
        };
        tokio::spawn(active_health_checks(Arc::downgrade(&state.inner)));
        tokio::spawn(engine_scrape::scrape(state.downgrade()));
        Ok(state)
    }

    /// A handle that does not keep the state alive (for background tasks that end with it).
    pub(crate) fn downgrade(&self) -> WeakAppState {
        WeakAppState(Arc::downgrade(&self.inner))
    }

    /// The current snapshot; hold it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.live.load_full()
    }

    /// Swap in a new config atomically; requests in flight keep the snapshot they loaded. Instances that
    /// stay (same backend name and URL) keep their breaker, in-flight count and latency estimate.
    ///
    /// `request_log`, `alerts` and `metrics.enabled` apply too: a changed request log or alert section
    /// starts a new writer or alerter, swapped in before the snapshot, and the old one finishes what it
    /// holds in the background. (`server.host/port`, `cache` and `state` need a restart.)
    pub(crate) fn replace_config(&self, mut config: Config) {
        let old = self.snapshot();
        let parts = config.take_parts();
        let request_log = (old.config.request_log != config.request_log
            || old.config.policies != config.policies)
            .then(|| start_request_log(&config, parts.policy.clone(), &self.inner.metrics));
        let alerter = (old.config.alerts != config.alerts)
            .then(|| Alerter::start(&config.alerts, self.inner.client.clone()));
        let metrics_enabled = config.metrics.enabled;
        let snapshot = Snapshot::new(
            config,
            parts,
            &Shared {
                registry: &self.inner.instances,
                sessions: &self.inner.sessions,
                admissions: &self.inner.admissions,
                store: &self.inner.store,
            },
        );
        if let Some(request_log) = request_log {
            let previous = self.inner.request_log.swap(Arc::new(request_log));
            self.retire(async move { previous.shutdown().await });
        }
        if let Some(alerter) = alerter {
            let previous = self.inner.alerter.swap(Arc::new(alerter));
            self.retire(async move { previous.shutdown().await });
        }
        self.inner.metrics.set_enabled(metrics_enabled);
        self.inner.live.store(Arc::new(snapshot));
    }

    /// Runs the shutdown of a replaced writer or alerter in the background, remembered for `flush`.
    fn retire(&self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(shutdown);
        let mut retiring = self
            .inner
            .retiring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        retiring.retain(|handle| !handle.is_finished());
        retiring.push(handle);
    }

    pub fn client(&self) -> &HttpClient {
        &self.inner.client
    }

    /// The state store (memory or Redis) limits, quotas and the cache use.
    pub fn store(&self) -> &StateStore {
        &self.inner.store
    }

    pub fn started(&self) -> Instant {
        self.inner.started
    }

    pub fn source(&self) -> &Source {
        &self.inner.source
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn cache(&self) -> &ResponseCache {
        &self.inner.cache
    }

    /// Stored Responses answers (`previous_response_id`, `GET /v1/responses/{id}`).
    pub fn responses(&self) -> &ResponseStore {
        &self.inner.responses
    }

    /// Input-token estimates with counts cached by text (and shared through Redis).
    pub fn tokens(&self) -> &crate::tokens::TokenCounter {
        &self.inner.tokens
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The current request logger (a reload may replace it; hold the guard briefly).
    pub fn request_log(&self) -> arc_swap::Guard<Arc<RequestLogger>> {
        self.inner.request_log.load()
    }

    /// Report a breaker transition: metrics gauge and, for down/up, an alert.
    pub(crate) fn instance_transition(&self, instance: &InstanceState, transition: Transition) {
        let url = redacted_url(instance.url());
        let value = match transition.to {
            BreakerState::Closed => instance_state::CLOSED,
            BreakerState::HalfOpen => instance_state::HALF_OPEN,
            BreakerState::Open => instance_state::OPEN,
        };
        self.inner
            .metrics
            .instance_state(instance.backend(), &url, value);
        tracing::warn!(
            backend = instance.backend(), instance = %url,
            from = transition.from.as_str(), to = transition.to.as_str(), "instance state changed"
        );
        if let Some(kind) = crate::alerts::AlertKind::from_transition(transition) {
            self.inner.alerter.load().raise(Alert {
                kind,
                backend: instance.backend().to_owned(),
                instance: Some(url),
                detail: format!(
                    "circuit {} → {}",
                    transition.from.as_str(),
                    transition.to.as_str()
                ),
            });
        }
    }

    pub fn alert(&self, alert: Alert) {
        self.inner.alerter.load().raise(alert);
    }

    /// Flush what is queued for the request log and the alert sinks (clean shutdown).
    pub async fn flush(&self) {
        self.inner.request_log.load_full().shutdown().await;
        self.inner.alerter.load_full().shutdown().await;
        let retiring = std::mem::take(
            &mut *self
                .inner
                .retiring
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for handle in retiring {
            let _ = handle.await;
        }
    }
}

/// An [`AppState`] that background tasks hold without keeping it alive.
#[derive(Clone)]
pub struct WeakAppState(std::sync::Weak<Inner>);

impl WeakAppState {
    pub fn upgrade(&self) -> Option<AppState> {
        self.0.upgrade().map(|inner| AppState { inner })
    }
}

/// A `GET` of `url` (a path under an instance) carrying the instance's credentials as a request of the
/// backend would: its API key (Bearer, or `x-api-key` with `anthropic-version` for Anthropic), else the
/// URL's userinfo. `None` when the URL does not parse.
pub(crate) fn instance_get(
    backend: &crate::config::BackendConfig,
    instance: &crate::config::InstanceConfig,
    url: &str,
) -> Option<http::Request<bytes::Bytes>> {
    let target = Target::parse(url).ok()?;
    let mut request = http::Request::new(bytes::Bytes::new());
    *request.uri_mut() = target.uri;
    let headers = request.headers_mut();
    let key = instance.api_key.as_ref().map(Secret::expose);
    let anthropic = backend.kind == crate::config::BackendKind::Anthropic;
    let credential = match (key, anthropic) {
        (Some(key), true) => http::HeaderValue::from_str(key)
            .ok()
            .map(|value| (http::HeaderName::from_static("x-api-key"), value)),
        (Some(key), false) => http::HeaderValue::from_str(&format!("Bearer {key}"))
            .ok()
            .map(|value| (http::header::AUTHORIZATION, value)),
        (None, _) => target
            .basic_auth
            .map(|value| (http::header::AUTHORIZATION, value)),
    };
    if let Some((name, mut value)) = credential {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    if anthropic && let Ok(version) = http::HeaderValue::from_str(&backend.anthropic_version) {
        headers.insert("anthropic-version", version);
    }
    Some(request)
}

/// Optional active health checks (`backends.X.health.check_interval_s`): `GET <base url>/models` on each
/// instance every interval, the outcome fed to its breaker like a request's. Ends when the state is
/// dropped; reads the current snapshot each round, so reloads take effect.
async fn active_health_checks(state: std::sync::Weak<Inner>) {
    use std::collections::HashMap;
    let mut last_checked: HashMap<(String, String), Instant> = HashMap::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = state.upgrade() else {
            return;
        };
        let app = AppState { inner };
        let snapshot = app.snapshot();
        for (backend, runtime) in snapshot.config.backends.iter().zip(&snapshot.backends) {
            let Some(interval) = backend.health.check_interval_s else {
                continue;
            };
            let interval = std::time::Duration::from_secs_f64(interval);
            for (instance, live) in backend.instances.iter().zip(&runtime.instances) {
                let key = (backend.name.clone(), instance.base_url.clone());
                let now = Instant::now();
                if last_checked
                    .get(&key)
                    .is_some_and(|at| now.duration_since(*at) < interval)
                {
                    continue;
                }
                last_checked.insert(key, now);
                let client = app.client().clone();
                let Some(request) =
                    instance_get(backend, instance, &format!("{}/models", instance.base_url))
                else {
                    continue;
                };
                let live = Arc::clone(live);
                let app = app.clone();
                let timeout = interval.min(backend.timeout);
                tokio::spawn(async move {
                    let healthy = client
                        .send_within(request, timeout)
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    let now = Instant::now();
                    let transition = if healthy {
                        live.breaker.on_success(now)
                    } else {
                        live.breaker.on_failure(now)
                    };
                    if let Some(transition) = transition {
                        app.instance_transition(&live, transition);
                    }
                });
            }
        }
    }
}
