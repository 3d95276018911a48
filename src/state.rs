//! Shared state: the live config `Snapshot` behind one `ArcSwap`, and the long-lived parts beside it
//! (HTTP client, start time). A request loads the snapshot once and uses it to the end; a reload swaps
//! in a whole new snapshot, so no request ever sees half of one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::config::{Config, Source};

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
}

/// Everything derived from one config, swapped as a unit.
pub struct Snapshot {
    pub config: Config,
    /// Parallel to `config.backends`.
    pub backends: Vec<BackendRuntime>,
}

/// Per-backend live state for one snapshot.
pub struct BackendRuntime {
    /// Round-robin cursor.
    cursor: AtomicUsize,
    /// Parallel to the backend's `instances`.
    pub instances: Vec<Arc<InstanceRuntime>>,
}

/// Per-instance live counters.
#[derive(Default)]
pub struct InstanceRuntime {
    in_flight: AtomicU64,
}

impl InstanceRuntime {
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Count one request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

pub struct InFlight(Arc<InstanceRuntime>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl BackendRuntime {
    /// Instance indexes in the order to try them for one request.
    pub fn order(&self, count: usize) -> Vec<usize> {
        if count == 0 {
            return Vec::new();
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % count;
        (0..count).map(|i| (start + i) % count).collect()
    }
}

impl Snapshot {
    pub fn new(config: Config) -> Snapshot {
        let backends = config
            .backends
            .iter()
            .map(|backend| BackendRuntime {
                cursor: AtomicUsize::new(0),
                instances: backend
                    .instances
                    .iter()
                    .map(|_| Arc::new(InstanceRuntime::default()))
                    .collect(),
            })
            .collect();
        Snapshot { config, backends }
    }
}

impl AppState {
    pub fn new(config: Config, source: Source) -> anyhow::Result<AppState> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(AppState {
            inner: Arc::new(Inner {
                live: ArcSwap::from_pointee(Snapshot::new(config)),
                client,
                started: Instant::now(),
                source,
            }),
        })
    }

    /// The current snapshot; hold it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.live.load_full()
    }

    /// Swap in a new config atomically; requests in flight keep the snapshot they loaded.
    pub fn replace_config(&self, config: Config) {
        self.inner.live.store(Arc::new(Snapshot::new(config)));
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
}
