//! Config reload: a file edit (watched, debounced), SIGHUP, or `POST /admin/reload` loads and validates
//! the whole config and swaps the snapshot atomically. An invalid edit is rejected with a log line and
//! the old config keeps serving; requests in flight finish on the snapshot they started with.

use std::sync::{Mutex, PoisonError};

use tokio::sync::mpsc;

use crate::config::{self, Config, ConfigError, Env, Source};
use crate::config_watch::{self, ReloadTrigger, WatchError};
use crate::state::AppState;

/// Serializes reloads: a file-change reload and `POST /admin/reload` racing could otherwise each read a
/// different version of the file and store them in the opposite order, leaving the older one serving.
static RELOADING: Mutex<()> = Mutex::new(());

/// Reload now from the source the gateway started with.
pub(crate) fn reload(state: &AppState, trigger: ReloadTrigger) -> Result<(), ConfigError> {
    let _one_at_a_time = RELOADING.lock().unwrap_or_else(PoisonError::into_inner);
    let source = state.source().clone();
    let env = Env::from_process();
    match config::load(&source, &env) {
        Ok(config) => {
            let old = state.snapshot();
            for section in restart_only_changes(&old.config, &config) {
                tracing::warn!("{section} changes take effect on restart");
            }
            state.replace_config(config);
            state.metrics().config_reload(true);
            tracing::info!(config = %source, trigger = ?trigger, "config reloaded");
            Ok(())
        }
        Err(error) => {
            state.metrics().config_reload(false);
            tracing::error!(error = %error, trigger = ?trigger, "config reload rejected; the previous config keeps serving");
            Err(error)
        }
    }
}

/// Sections read once at startup that a reload cannot apply: the listener, and the cache, the state
/// store and the Responses store (their entries and counters outlive snapshots). Everything else applies live, the request log,
/// alerts and the metrics switch included.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.server.port != new.server.port || old.server.host != new.server.host {
        changed.push("server.host/server.port");
    }
    if old.cache != new.cache {
        changed.push("cache");
    }
    if old.state != new.state {
        changed.push("state");
    }
    if old.responses != new.responses {
        changed.push("responses");
    }
    changed
}

/// Keeps the file watcher alive; dropping it stops watching.
pub struct Reloader {
    _watcher: Option<config_watch::ConfigWatcher>,
}

/// Watch the config file (when there is one) and SIGHUP, reloading on each trigger.
pub fn spawn(state: AppState) -> Result<Reloader, WatchError> {
    let (tx, mut rx) = mpsc::channel::<ReloadTrigger>(8);
    let watcher = match state.source() {
        Source::File(path) => Some(config_watch::watch(path, tx.clone())?),
        Source::LlmUrl | Source::Embedded => None,
    };
    config_watch::watch_sighup(tx)?;
    tokio::spawn(async move {
        while let Some(trigger) = rx.recv().await {
            let _ = reload(&state, trigger);
        }
    });
    Ok(Reloader { _watcher: watcher })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Format, parse_str};

    fn config(yaml: &str) -> Config {
        parse_str(
            yaml,
            Format::Yaml,
            &Env::from_pairs(std::iter::empty::<(&str, &str)>()),
        )
        .unwrap()
    }

    #[test]
    fn names_the_sections_a_reload_cannot_apply() {
        let base = "backends:\n  local: { type: echo }\n";
        let old = config(base);
        assert!(restart_only_changes(&old, &config(base)).is_empty());
        // Routing, backends, request log, alerts and the metrics switch apply live: not reported.
        let routes = config("backends:\n  local: { type: echo }\n  other: { type: echo }\n");
        assert!(restart_only_changes(&old, &routes).is_empty());
        let live = config(&format!(
            "{base}alerts: {{ cooldown_s: 5 }}\nrequest_log: {{ enabled: true }}\nmetrics: {{ enabled: false }}\n"
        ));
        assert!(restart_only_changes(&old, &live).is_empty());
        let new = config(&format!(
            "{base}server: {{ port: 9 }}\ncache: {{ enabled: true }}\nstate: {{ key_prefix: x }}\n"
        ));
        assert_eq!(
            restart_only_changes(&old, &new),
            ["server.host/server.port", "cache", "state"]
        );
    }
}
