//! Support for the resilience and reload tests: a gateway built from a config file (optionally with the
//! file watcher and SIGHUP reloader running), an upstream that answers after a fixed delay, and an alert
//! webhook receiver.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ai_gateway::config::{Env, Source, load};
use ai_gateway::reload::Reloader;
use ai_gateway::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::Gateway;

impl Gateway {
    /// Start a gateway from the config file at `path` (`Source::File`, so `/admin/reload` re-reads it).
    /// With `watch`, the file watcher and SIGHUP reloader run too; keep the returned `Reloader` alive.
    pub async fn start_from_file(path: &Path, watch: bool) -> (Gateway, Option<Reloader>) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let source = Source::File(path.to_owned());
        let config = load(
            &source,
            &Env::from_pairs(std::iter::empty::<(&str, &str)>()),
        )
        .unwrap_or_else(|error| panic!("test config invalid: {error}"));
        let state = AppState::new(config, source).unwrap();
        let reloader = watch.then(|| ai_gateway::reload::spawn(state.clone()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(ai_gateway::server::run(
            listener,
            state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        (
            Gateway {
                addr,
                state,
                stop: Some(stop),
            },
            reloader,
        )
    }
}

/// An OpenAI upstream that answers every chat request after `delay`, counting requests.
pub struct Delayed {
    pub addr: SocketAddr,
    count: Arc<AtomicU64>,
}

impl Delayed {
    pub async fn start(delay: Duration) -> Delayed {
        let count = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&count);
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            post(move |Json(body): Json<Value>| {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    Json(json!({
                        "id": "chatcmpl-delayed", "object": "chat.completion", "created": 1,
                        "model": body["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "delayed"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                    }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Delayed { addr, count }
    }

    pub fn base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

/// An alert webhook on 127.0.0.1:0; every POSTed JSON body arrives on the returned channel.
pub async fn webhook() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |State(tx): State<mpsc::UnboundedSender<Value>>, Json(body): Json<Value>| async move {
                    let _ = tx.send(body);
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), rx)
}

/// Polls `check` every 20 ms until it holds, failing the test after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
