//! `run(listener, state, shutdown)`: serve until `shutdown` resolves, then stop accepting and let
//! in-flight requests and streams finish within `server.shutdown_grace_s`.
//!
//! One task per connection: HTTP/1.1 served by our own `h1` (the request path's connection handling),
//! HTTP/2 by prior knowledge — told apart by its preface — handed to hyper, with `AppService` as the
//! application either way.

mod h1;

/// The HTTP/1 request reader without a socket, for the differential tests and fuzz targets.
#[doc(hidden)]
pub use h1::{DecodedEnd, DecodedRequest, decode_requests};

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::AppState;

pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.snapshot().config.server.shutdown_grace;
    let app = crate::app::service(state);
    let builder = auto::Builder::new(TokioExecutor::new());
    let connections = TaskTracker::new();
    let stopping = CancellationToken::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_per_connection(&error) => continue,
            Err(error) => {
                // Out of file descriptors and the like: wait for some to be released, then go on.
                tracing::error!(%error, "cannot accept connections; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let service = app.for_peer(peer);
        let builder = builder.clone();
        let stopping = stopping.clone();
        connections.spawn(async move {
            let mut tcp = tcp;
            let flags = h1::Flags::default();
            let outcome = {
                let mut connection = pin!(h1::serve(&mut tcp, &service, &flags));
                tokio::select! {
                    outcome = connection.as_mut() => outcome,
                    () = stopping.cancelled() => {
                        flags.stop.store(true, Ordering::Relaxed);
                        if flags.idle.load(Ordering::Relaxed) {
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
            let io = TokioIo::new(h1::Rewind { read, io: tcp });
            let mut connection = pin!(builder.serve_connection(io, service));
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::trace!(%peer, error, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: no new connections; waiting for requests in flight");
    drop(listener);
    stopping.cancel();
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = grace.as_secs_f64(),
            "grace period over; closing the connections still open"
        );
    }
    Ok(())
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
