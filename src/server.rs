//! `run(listener, state, shutdown)`: serve until `shutdown` resolves, then stop accepting and let
//! in-flight requests and streams finish within `server.shutdown_grace_s`.

use std::future::Future;
use std::net::SocketAddr;

use axum::serve::{IncomingStream, ListenerExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.snapshot().config.server.shutdown_grace;
    let app = crate::app::service(state);
    let stopping = CancellationToken::new();
    let signal = stopping.clone();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let connections = tower::service_fn(move |incoming: IncomingStream<'_, _>| {
        let peer: SocketAddr = *incoming.remote_addr();
        std::future::ready(Ok::<_, std::convert::Infallible>(app.for_peer(peer)))
    });
    let serve = axum::serve(listener, connections).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; waiting for requests in flight");
        signal.cancel();
    });
    tokio::select! {
        result = serve.into_future() => result,
        () = async {
            stopping.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_s = grace.as_secs_f64(), "grace period over; closing the connections still open");
            Ok(())
        }
    }
}
