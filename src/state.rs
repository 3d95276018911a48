//! Shared state: the live config `Snapshot` behind one `ArcSwap`, and the long-lived parts beside it
//! (HTTP client, instance registry, metrics, stats, request logger, alerter). A request loads the snapshot
//! once and uses it to the end; a reload swaps in a whole new snapshot, so no request sees half of one.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::alerts::{Alert, Alerter};
use crate::config::{Config, Source};
use crate::routing::balance::Balancer;
use crate::routing::health::{BreakerState, Transition};
use crate::routing::instances::{InstanceRegistry, InstanceState, redacted_url};
use crate::telemetry::metrics::{Metrics, instance_state};
use crate::telemetry::request_log::RequestLogger;
use crate::telemetry::stats::Stats;

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    live: ArcSwap<Snapshot>,
    client: reqwest::Client,
    started: Instant,
    source: Source,
    /// Per-instance breaker, in-flight and latency state; outlives snapshots so reloads keep it.
    instances: InstanceRegistry,
    metrics: Arc<Metrics>,
    stats: Stats,
    /// Configured from the config the process started with (changes need a restart).
    request_log: RequestLogger,
    alerter: Alerter,
}

/// Everything derived from one config, swapped as a unit.
pub struct Snapshot {
    pub config: Config,
    /// Parallel to `config.backends`.
    pub backends: Vec<BackendRuntime>,
}

/// Per-backend live state for one snapshot.
pub struct BackendRuntime {
    pub balancer: Balancer,
    /// Parallel to the backend's `instances`; shared with the registry, so they survive reloads.
    pub instances: Vec<Arc<InstanceState>>,
}

impl Snapshot {
    fn new(config: Config, registry: &InstanceRegistry) -> Snapshot {
        let backends: Vec<BackendRuntime> = config
            .backends
            .iter()
            .map(|backend| {
                let weights: Vec<u32> = backend.instances.iter().map(|i| i.weight).collect();
                BackendRuntime {
                    balancer: Balancer::new(backend.load_balancing, &weights),
                    instances: backend
                        .instances
                        .iter()
                        .map(|instance| {
                            registry.get_or_create(
                                &backend.name,
                                &instance.base_url,
                                &backend.health,
                            )
                        })
                        .collect(),
                }
            })
            .collect();
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
        Snapshot { config, backends }
    }
}

impl AppState {
    /// Build the state; starts the request-log writer and the alerter, so call it inside a runtime.
    pub fn new(config: Config, source: Source) -> anyhow::Result<AppState> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        let metrics = Arc::new(Metrics::new());
        let dropped = {
            let metrics = Arc::clone(&metrics);
            Arc::new(move || metrics.request_log_dropped()) as Arc<dyn Fn() + Send + Sync>
        };
        let request_log = RequestLogger::start(
            &config.request_log,
            crate::telemetry::request_log::no_redaction(),
            dropped,
        );
        let alerter = Alerter::start(&config.alerts, client.clone());
        let instances = InstanceRegistry::new();
        let snapshot = Snapshot::new(config, &instances);
        Ok(AppState {
            inner: Arc::new(Inner {
                live: ArcSwap::from_pointee(snapshot),
                client,
                started: Instant::now(),
                source,
                instances,
                metrics,
                stats: Stats::new(),
                request_log,
                alerter,
            }),
        })
    }

    /// The current snapshot; hold it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.live.load_full()
    }

    /// Swap in a new config atomically; requests in flight keep the snapshot they loaded. Instances that
    /// stay (same backend name and URL) keep their breaker, in-flight count and latency estimate.
    pub fn replace_config(&self, config: Config) {
        let snapshot = Snapshot::new(config, &self.inner.instances);
        self.inner.live.store(Arc::new(snapshot));
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.inner.client
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

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn request_log(&self) -> &RequestLogger {
        &self.inner.request_log
    }

    /// Report a breaker transition: metrics gauge and, for down/up, an alert.
    pub fn instance_transition(&self, instance: &InstanceState, transition: Transition) {
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
            self.inner.alerter.raise(Alert {
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
        self.inner.alerter.raise(alert);
    }

    /// Flush what is queued for the request log and the alert sinks (clean shutdown).
    pub async fn flush(&self) {
        self.inner.request_log.shutdown().await;
        self.inner.alerter.shutdown().await;
    }
}
