//! Process logging: `tracing` with `logging.level` (or `RUST_LOG`) and `logging.format: json | pretty`,
//! written by a background thread so a slow terminal never stalls a request.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::model::LoggingConfig;

/// Install the global subscriber. Keep the guard alive until exit: dropping it flushes the log.
pub fn init(config: &LoggingConfig) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let result = if config.json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if result.is_err() {
        // Already installed (tests start several gateways in one process).
    }
    guard
}
