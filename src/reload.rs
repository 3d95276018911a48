//! Config reload: a file edit (watched, debounced), SIGHUP, or `POST /admin/reload` loads and validates
//! the whole config and swaps the snapshot atomically. An invalid edit is rejected with a log line and
//! the old config keeps serving; requests in flight finish on the snapshot they started with.

use tokio::sync::mpsc;

use crate::config::{self, ConfigError, Env, Source};
use crate::config_watch::{self, ReloadTrigger};
use crate::state::AppState;

/// Reload now from the source the gateway started with.
pub fn reload(state: &AppState, trigger: ReloadTrigger) -> Result<(), ConfigError> {
    let source = state.source().clone();
    let env = Env::from_process();
    match config::load(&source, &env) {
        Ok(config) => {
            let old = state.snapshot();
            if old.config.server.port != config.server.port
                || old.config.server.host != config.server.host
            {
                tracing::warn!("server.host/server.port changes take effect on restart");
            }
            if old.config.request_log != config.request_log || old.config.alerts != config.alerts {
                tracing::warn!("request_log and alerts changes take effect on restart");
            }
            if let Err(message) = state.replace_config(config) {
                state.metrics().config_reload(false);
                tracing::error!(error = %message, "config reload rejected; the previous config keeps serving");
                return Err(ConfigError {
                    source: source.to_string(),
                    path: None,
                    message,
                });
            }
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

/// Keeps the file watcher alive; dropping it stops watching.
pub struct Reloader {
    _watcher: Option<config_watch::ConfigWatcher>,
}

/// Watch the config file (when there is one) and SIGHUP, reloading on each trigger.
pub fn spawn(state: AppState) -> Result<Reloader, String> {
    let (tx, mut rx) = mpsc::channel::<ReloadTrigger>(8);
    let watcher = match state.source() {
        Source::File(path) => Some(config_watch::watch(path, tx.clone())?),
        Source::Embedded => None,
    };
    config_watch::watch_sighup(tx)?;
    tokio::spawn(async move {
        while let Some(trigger) = rx.recv().await {
            let _ = reload(&state, trigger);
        }
    });
    Ok(Reloader { _watcher: watcher })
}
