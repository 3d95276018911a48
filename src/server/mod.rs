//! `run(listener, state, shutdown)`: serve until `shutdown` resolves, then stop accepting and let
//! in-flight requests and streams finish within `server.shutdown_grace_s`.
//!
//! One task per connection: HTTP/1.1 served by our own `h1` (the request path's connection handling),
//! HTTP/2 by prior knowledge — told apart by its preface — handed to hyper (`h2`), with `AppService` as
//! the application either way. The accept loop also sweeps idle connections (`idle`): one that sent
//! nothing within `server.header_timeout_s`, or waited longer than `server.idle_timeout_s` between
//! requests, is closed, and when accepting fails (out of file descriptors) the longest idle ones are.

mod h1;
mod h2;
mod idle;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::AppService;
use crate::config::model::ServerConfig;
use crate::state::AppState;

pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.snapshot().config.server.shutdown_grace;
    let app = crate::app::service(state.clone());
    let builder = auto::Builder::new(TokioExecutor::new());
    let tasks = TaskTracker::new();
    let connections = idle::Connections::default();
    let stopping = CancellationToken::new();
    let mut shutdown = pin!(shutdown);
    // The idle sweep: its pace follows the live config's timeouts (a reload changes them).
    let mut sweep = pin!(tokio::time::sleep(Duration::ZERO));
    let mut next_id = 0u64;
    let mut shedding = Shedding::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = sweep.as_mut() => {
                let timeouts = timeouts(&state.snapshot().config.server);
                let closed = connections.sweep(timeouts);
                if closed > 0 {
                    tracing::debug!(closed, "closed idle connections");
                }
                sweep.as_mut().reset(tokio::time::Instant::now() + timeouts.sweep_interval());
                continue;
            }
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_per_connection(&error) => continue,
            Err(error) => {
                shedding.accept_failed(&error, &connections).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let flags = connections.flags();
        let task = tasks.spawn(serve_connection(
            tcp,
            peer,
            app.for_peer(peer),
            builder.clone(),
            Arc::clone(&flags),
            stopping.clone(),
        ));
        connections.track(next_id, &flags, task.abort_handle());
        next_id += 1;
    }
    tracing::info!("shutting down: no new connections; waiting for requests in flight");
    drop(listener);
    stopping.cancel();
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs_f64(),
            "grace period over; closing the connections still open"
        );
    }
    Ok(())
}

/// One connection's task: HTTP/1.1 by our server until it ends, or, when the client opened with the
/// HTTP/2 preface, hyper's HTTP/2 server from there. On shutdown an idle connection closes at once and
/// a busy one finishes what it is doing.
async fn serve_connection(
    mut tcp: TcpStream,
    peer: std::net::SocketAddr,
    service: AppService,
    builder: auto::Builder<TokioExecutor>,
    flags: Arc<idle::Flags>,
    stopping: CancellationToken,
) {
    let outcome = {
        let mut connection = pin!(h1::serve(&mut tcp, &service, &flags));
        tokio::select! {
            outcome = connection.as_mut() => outcome,
            () = stopping.cancelled() => {
                flags.stop.store(true, Ordering::Relaxed);
                if flags.is_idle() {
                    h1::Outcome::Closed
                } else {
                    connection.await
                }
            }
        }
    };
    let h1::Outcome::Http2(read) = outcome else {
        return;
    };
    flags.switch_to_h2();
    let io = TokioIo::new(h1::Rewind { read, io: tcp });
    let service = h2::H2Service {
        app: service,
        flags: Arc::clone(&flags),
    };
    let mut connection = pin!(builder.serve_connection(io, service));
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = flags.closing() => {
            // Idle (no stream open): GOAWAY, and the connection ends — bounded, since a client that
            // never answers would keep it open, unless a stream opened meanwhile.
            connection.as_mut().graceful_shutdown();
            loop {
                let bound = tokio::time::sleep(Duration::from_secs(1));
                tokio::select! {
                    result = connection.as_mut() => break result,
                    () = bound => if flags.streams() == 0 {
                        break Ok(());
                    }
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::trace!(%peer, error, "connection ended with an error");
    }
}

/// What the accept loop does when accepting fails for the server as a whole (out of file descriptors
/// and the like), and its log's pace.
#[derive(Default)]
struct Shedding {
    last_log: Option<tokio::time::Instant>,
    since_log: usize,
}

impl Shedding {
    /// Close the connections that waited longest for a request and accept again once they are gone;
    /// with none to close, wait for some to be released.
    async fn accept_failed(&mut self, error: &std::io::Error, connections: &idle::Connections) {
        let shed = connections.shed();
        if shed == 0 {
            tracing::error!(%error, "cannot accept connections; retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
        // One line a second at most: this repeats every few milliseconds under a flood.
        self.since_log += shed;
        if self
            .last_log
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(%error, shed = self.since_log, "cannot accept connections; closed the longest idle ones");
            self.last_log = Some(tokio::time::Instant::now());
            self.since_log = 0;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The idle timeouts of the live config.
fn timeouts(server: &ServerConfig) -> idle::Timeouts {
    idle::Timeouts {
        header: server.header_timeout,
        idle: server.idle_timeout,
    }
}

/// An accept error that concerns one connection only (the client gave up before it was accepted).
fn is_per_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
