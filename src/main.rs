//! The `ai-gateway` binary: parse the command line, load the config, serve until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ai_gateway::config::{self, Env};
use ai_gateway::state::AppState;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ai-gateway",
    version,
    about = "One endpoint for every LLM backend (OpenAI and Anthropic formats)"
)]
struct Cli {
    /// Config file (YAML, TOML or JSON5). Default: CONFIG_FILE, config/${GATEWAY_ENV:-default}.{yaml,toml},
    /// config.yaml, config.json5, else the embedded default (an echo backend on port 8080).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Validate the config and exit: 0 when valid, 2 with the error otherwise.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    let source = config::locate(cli.config.as_deref(), &env);
    let config = match config::load(&source, &env) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ai-gateway: invalid config: {error}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Some(Command::Check)) {
        eprintln!(
            "ai-gateway: {source}: config is valid ({} backends, {} model aliases)",
            config.backends.len(),
            config.models.len()
        );
        for feature in config.features() {
            eprintln!("  {feature}");
        }
        return ExitCode::SUCCESS;
    }
    // One usable CPU (a small VM, or `taskset` pinning) gets a single-threaded runtime: no work-stealing
    // or cross-thread wake-ups, which measured 2x cheaper per request pinned to one core (BENCHMARKS.md).
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let workers = config.server.workers.or((cores == 1).then_some(1));
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ai-gateway: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ai-gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: config::Config, source: config::Source) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _log_guard = ai_gateway::logging::init(&config.logging);
    let address = format!("{}:{}", config.server.host, config.server.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {address}: {error}"))?;
    let backends = config.backends.len();
    let shown = source.to_string();
    let features = config.features().join("; ");
    let state = AppState::new(config, source)?;
    // The tokenizer table takes ~150 ms and ~30 MB: load it before the first request, but only when
    // this config counts tokens (a limit or quota in tokens, or `max_input_tokens`).
    let snapshot = state.snapshot();
    if snapshot.limiter.counts_tokens() || snapshot.policy.needs_token_count() {
        tokio::task::spawn_blocking(ai_gateway::tokens::warm);
    }
    drop(snapshot);
    // Reload triggers (file watch, SIGHUP) are installed before the gateway says it is listening, so a
    // SIGHUP right after startup reloads instead of killing the process.
    let _reloader = match ai_gateway::reload::spawn(state.clone()) {
        Ok(reloader) => Some(reloader),
        Err(error) => {
            tracing::warn!(error = %error, "config reload on file edit/SIGHUP is unavailable");
            None
        }
    };
    tracing::info!(address = %listener.local_addr()?, config = %shown, backends, "ai-gateway listening");
    tracing::info!(features = %features, "optional features");
    ai_gateway::server::run(listener, state.clone(), shutdown_signal()).await?;
    state.flush().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
