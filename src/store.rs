//! Where limits, quotas and the response cache keep their state: process memory or a shared Redis.
//!
//! One `StateStore` is built from the `state:` config section and kept across config reloads, so
//! in-memory counters (monthly quotas especially) survive a reload. With `redis_url` set, every
//! replica talks to the same Redis and acts as one gateway. Redis trouble never fails a request by
//! itself: callers get [`StoreUnavailable`] and follow [`FailMode`]; the store backs off and tries
//! again on its own.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::Deserialize;

use crate::config_error::Invalid;
use crate::limits::memory::MemoryBuckets;

/// The `state:` config section.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `redis://[user:password@]host:port[/db]`; absent means state lives in this process only.
    pub redis_url: Option<String>,
    /// What limits do while Redis cannot be reached.
    pub on_unavailable: FailMode,
    /// Prefix of every Redis key, so several gateways can share one Redis.
    pub key_prefix: String,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            redis_url: None,
            on_unavailable: FailMode::FailOpen,
            key_prefix: "aigw".to_owned(),
        }
    }
}

/// Debug hides the password a Redis URL may carry.
impl fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateConfig")
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("on_unavailable", &self.on_unavailable)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

impl StateConfig {
    /// Checks what `connect` cannot report (it never fails): the URL must parse.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if let Some(url) = &self.redis_url {
            redis::Client::open(url.as_str()).map_err(|e| {
                Invalid::new(
                    "state",
                    format!(
                        "state.redis_url '{}' is not a valid redis url: {e}",
                        redact_url(url)
                    ),
                )
            })?;
        }
        if self.key_prefix.is_empty() {
            return Err(Invalid::new("state", "state.key_prefix must not be empty"));
        }
        Ok(())
    }
}

/// Whether requests pass (`fail_open`) or are refused with 503 (`fail_closed`) while Redis is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    #[default]
    FailOpen,
    FailClosed,
}

/// Shared state backend; cheap to clone, clones share the same state.
#[derive(Clone, Debug)]
pub enum StateStore {
    /// Counters in this process; the bucket map is shared by clones so it outlives config snapshots.
    Memory(MemoryStore),
    Redis(RedisStore),
}

/// In-process bucket map behind one mutex: critical sections are a few arithmetic ops and never
/// span an `.await`, and one lock is what makes multi-bucket admission all-or-nothing.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    pub(crate) buckets: Arc<Mutex<MemoryBuckets>>,
}

/// Redis connection plus health tracking. `ConnectionManager` is a multiplexed, self-reconnecting
/// connection, so it is cloned per call rather than locked.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<RedisInner>,
}

struct RedisInner {
    /// `None` only when the URL did not parse: then the store is permanently unavailable.
    conn: Option<ConnectionManager>,
    url_for_logs: String,
    prefix: String,
    fail_mode: FailMode,
    /// Set while Redis is considered down. Requests then skip Redis entirely (an atomic load is
    /// all an outage costs them) and a background probe clears the flag once PING answers.
    down: AtomicBool,
    /// Pause between probes while down.
    retry_interval: Duration,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url_for_logs)
            .field("prefix", &self.inner.prefix)
            .field("fail_mode", &self.inner.fail_mode)
            .field("down", &self.inner.down.load(Ordering::Relaxed))
            .finish()
    }
}

/// Why this replica is not ready (`GET /health/ready` answers 503 with it): Redis, shown without its
/// password, does not answer while `state.on_unavailable` is `fail_closed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redis at {url} does not answer and state.on_unavailable is fail_closed")]
pub(crate) struct NotReady {
    url: String,
}

/// Redis could not be used for this operation; the caller applies the fail mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shared state (redis) is unavailable")]
pub struct StoreUnavailable;

impl StateStore {
    /// Builds the store. Never fails: an unreachable Redis is retried lazily while callers follow
    /// the fail mode; an unparsable URL is logged and the store stays unavailable.
    pub async fn connect(cfg: &StateConfig) -> StateStore {
        match &cfg.redis_url {
            None => StateStore::memory(),
            Some(url) => {
                let store = RedisStore::new(
                    url,
                    &cfg.key_prefix,
                    cfg.on_unavailable,
                    Duration::from_secs(1),
                );
                // Find out now whether Redis answers, so an outage at startup is logged at once
                // and the background probe starts; the result itself is not needed.
                let _ = store.query::<String>(&redis::cmd("PING")).await;
                StateStore::Redis(store)
            }
        }
    }

    /// A fresh in-memory store.
    pub fn memory() -> StateStore {
        StateStore::Memory(MemoryStore::default())
    }

    /// True when state is shared through Redis.
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, StateStore::Redis(_))
    }

    /// Whether requests can be served as far as the state store goes, for `GET /health/ready`: an error
    /// only when Redis does not answer a PING within `within` and `on_unavailable` is `fail_closed`
    /// (then every limited request gets 503). With `fail_open`, or in memory, this replica serves
    /// whatever Redis does.
    pub(crate) async fn readiness(&self, within: Duration) -> Result<(), NotReady> {
        let StateStore::Redis(redis) = self else {
            return Ok(());
        };
        if redis.fail_mode() == FailMode::FailOpen {
            return Ok(());
        }
        let ping = redis::cmd("PING");
        match tokio::time::timeout(within, redis.query::<String>(&ping)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(NotReady {
                url: redis.inner.url_for_logs.clone(),
            }),
        }
    }
}

impl RedisStore {
    /// `retry_interval` is the pause between reconnection probes while Redis is down.
    pub fn new(
        url: &str,
        prefix: &str,
        fail_mode: FailMode,
        retry_interval: Duration,
    ) -> RedisStore {
        let url_for_logs = redact_url(url);
        let conn = match redis::Client::open(url) {
            Ok(client) => {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(2)))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(200));
                match ConnectionManager::new_lazy_with_config(client, config) {
                    Ok(conn) => Some(conn),
                    Err(e) => {
                        tracing::warn!(url = %url_for_logs, error = %e, "cannot set up redis connection; shared state unavailable");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(url = %url_for_logs, error = %e, "invalid redis url; shared state unavailable");
                None
            }
        };
        RedisStore {
            inner: Arc::new(RedisInner {
                conn,
                url_for_logs,
                prefix: prefix.to_owned(),
                fail_mode,
                down: AtomicBool::new(false),
                retry_interval,
            }),
        }
    }

    /// Key prefix every Redis key of this gateway starts with.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The configured behaviour while Redis is down.
    pub(crate) fn fail_mode(&self) -> FailMode {
        self.inner.fail_mode
    }

    /// True while the last command failed and the store has not recovered yet.
    pub fn is_down(&self) -> bool {
        self.inner.down.load(Ordering::Relaxed)
    }

    /// Runs one command. Errors are logged once per outage (not per request) and turned into
    /// `StoreUnavailable`.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreUnavailable> {
        let mut conn = self.conn_for_attempt()?;
        let result = cmd.query_async(&mut conn).await;
        self.record(result)
    }

    /// Runs one Lua script invocation (EVALSHA, falling back to EVAL on NOSCRIPT).
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreUnavailable> {
        let mut conn = self.conn_for_attempt()?;
        let result = invocation.invoke_async(&mut conn).await;
        self.record(result)
    }

    fn conn_for_attempt(&self) -> Result<ConnectionManager, StoreUnavailable> {
        if self.inner.down.load(Ordering::Relaxed) {
            return Err(StoreUnavailable);
        }
        self.inner.conn.clone().ok_or(StoreUnavailable)
    }

    fn record<T>(&self, result: redis::RedisResult<T>) -> Result<T, StoreUnavailable> {
        match result {
            Ok(value) => Ok(value),
            Err(e) if !is_outage(&e) => {
                // A script or type error is a bug, not an outage: report it, but keep using Redis.
                tracing::warn!(url = %self.inner.url_for_logs, error = %e, "redis command failed");
                Err(StoreUnavailable)
            }
            Err(e) => {
                if !self.inner.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        url = %self.inner.url_for_logs,
                        error = %e,
                        on_unavailable = ?self.inner.fail_mode,
                        "redis unavailable; limits follow on_unavailable until it recovers"
                    );
                    spawn_probe(Arc::downgrade(&self.inner));
                }
                Err(StoreUnavailable)
            }
        }
    }
}

/// Pings Redis every `retry_interval` until it answers, then lets requests use it again. Holds
/// only a weak reference, so it ends when the store is dropped (config change or shutdown).
fn spawn_probe(inner: Weak<RedisInner>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // Outside a runtime nobody can probe; try again on the next request instead.
        if let Some(inner) = inner.upgrade() {
            inner.down.store(false, Ordering::Relaxed);
        }
        return;
    };
    runtime.spawn(async move {
        loop {
            let Some(interval) = inner.upgrade().map(|i| i.retry_interval) else { return };
            tokio::time::sleep(interval).await;
            let Some(strong) = inner.upgrade() else { return };
            let Some(mut conn) = strong.conn.clone() else { return };
            let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
            if pong.is_ok() {
                strong.down.store(false, Ordering::Relaxed);
                tracing::info!(url = %strong.url_for_logs, "redis reachable again; shared state restored");
                return;
            }
        }
    });
}

fn is_outage(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
        )
}

/// Replaces `user:password@` in a URL with `*****@` so it can be logged.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}*****{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Starts throw-away `redis-server` processes for tests: the integration tests' launcher, shared through
/// `#[path]` so there is one copy.
#[cfg(test)]
#[path = "../tests/it/support/redis.rs"]
#[expect(dead_code, reason = "`keys` serves the integration tests")]
pub(crate) mod test_redis;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_redis_password() {
        let cfg = StateConfig {
            redis_url: Some("redis://user:hunter2@10.0.0.1:6379/0".to_owned()),
            ..StateConfig::default()
        };
        let text = format!("{cfg:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redis://*****@10.0.0.1:6379/0"), "{text}");
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let cfg: StateConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.on_unavailable, FailMode::FailOpen);
        assert_eq!(cfg.key_prefix, "aigw");
        assert!(cfg.redis_url.is_none());
        let cfg: StateConfig = serde_json::from_str(r#"{"on_unavailable":"fail_closed"}"#).unwrap();
        assert_eq!(cfg.on_unavailable, FailMode::FailClosed);
        assert!(serde_json::from_str::<StateConfig>(r#"{"redis":"x"}"#).is_err());
        let bad = StateConfig {
            redis_url: Some("nope://".to_owned()),
            ..StateConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("nope://"));
    }

    #[tokio::test]
    async fn unreachable_redis_is_unavailable_then_recovers() {
        let Some(mut server) = test_redis::TestRedis::start() else {
            return;
        };
        server.kill();
        let store = RedisStore::new(
            &server.url(),
            "t",
            FailMode::FailOpen,
            Duration::from_millis(50),
        );
        let ping = redis::cmd("PING");
        assert_eq!(store.query::<String>(&ping).await, Err(StoreUnavailable));
        assert!(store.is_down());
        server.restart();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if store.query::<String>(&ping).await.is_ok() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "store did not recover"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!store.is_down());
    }

    #[tokio::test]
    async fn connect_never_fails_and_recovers_in_background() {
        let Some(mut server) = test_redis::TestRedis::start() else {
            return;
        };
        server.kill();
        let cfg = StateConfig {
            redis_url: Some(server.url()),
            ..StateConfig::default()
        };
        let StateStore::Redis(store) = StateStore::connect(&cfg).await else {
            panic!("redis store expected")
        };
        assert!(
            store.is_down(),
            "an unreachable redis is noticed at startup"
        );
        // While down, requests do not wait on redis at all.
        let started = std::time::Instant::now();
        for _ in 0..100 {
            assert_eq!(
                store.query::<String>(&redis::cmd("PING")).await,
                Err(StoreUnavailable)
            );
        }
        assert!(started.elapsed() < Duration::from_millis(500));
        server.restart();
        // The background probe (every second by default) brings it back without any request.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.is_down() {
            assert!(
                std::time::Instant::now() < deadline,
                "store did not recover by itself"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            store.query::<String>(&redis::cmd("PING")).await,
            Ok("PONG".to_owned())
        );
    }
}
