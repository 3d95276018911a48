//! The `ai-gateway` binary: parse the command line, load the config, serve until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ai_gateway::config::{self, Env};
use ai_gateway::state::AppState;
use ai_gateway::upstream::client::TrustRoots;

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
    /// Ask the gateway this config describes (on loopback, at `server.port`) whether it is ready:
    /// exit 0 when `GET /health/ready` answers 200, 1 otherwise. The container image's health check
    /// (it has no shell or curl).
    Health,
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
    if matches!(cli.command, Some(Command::Health)) {
        return probe_ready(&config.server.host, config.server.port);
    }
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
    log_trust_roots(&state);
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

/// `ai-gateway health`: `GET /health/ready` on the gateway's own port, over loopback when it listens on
/// every address; 0 for a 200, 1 for anything else or no answer within 3 s.
fn probe_ready(host: &str, port: u16) -> ExitCode {
    use std::io::{BufRead, BufReader, Write};
    use std::net::ToSocketAddrs;
    let host = match host.trim_matches(['[', ']']) {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" => "::1",
        other => other,
    };
    let timeout = std::time::Duration::from_secs(3);
    let status_line = (|| -> std::io::Result<String> {
        let address = (host, port).to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the host")
        })?;
        let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(
            stream,
            "GET /health/ready HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )?;
        let mut line = String::new();
        BufReader::new(std::io::Read::take(stream, 1024)).read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    })();
    match status_line {
        Ok(line) if line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.0 200") => {
            eprintln!("ai-gateway: {host}:{port} is ready");
            ExitCode::SUCCESS
        }
        Ok(line) => {
            eprintln!("ai-gateway: {host}:{port} is not ready: {line}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("ai-gateway: cannot ask {host}:{port} whether it is ready: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Says so when `https://` upstreams are checked against the bundled roots because the system has no CA
/// certificates: a warning when the config has such an upstream, a note otherwise.
fn log_trust_roots(state: &AppState) {
    let TrustRoots::Bundled(reason) = state.client().trust_roots() else {
        return;
    };
    let snapshot = state.snapshot();
    let https = snapshot
        .config
        .backends
        .iter()
        .flat_map(|backend| &backend.instances)
        .any(|instance| instance.base_url.starts_with("https://"));
    if https {
        tracing::warn!(
            reason = %reason,
            "no system CA certificates: https upstreams are verified against the bundled Mozilla roots \
             (webpki-roots); install ca-certificates or set SSL_CERT_FILE to use the system's own"
        );
    } else {
        tracing::info!(
            reason = %reason,
            "no system CA certificates: https upstreams would be verified against the bundled Mozilla roots \
             (webpki-roots)"
        );
    }
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
