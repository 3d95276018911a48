//! A mock inference server (vLLM / llama.cpp) on 127.0.0.1:0 for the balancing tests: OpenAI chat answers
//! (JSON, or SSE when asked) that record which conversation reached this instance, `GET /metrics` in
//! vLLM's names and `GET /slots` in llama.cpp's shape reporting a load the test sets, a gate that holds
//! requests in flight until released, scripted 500s, and a kill switch (port closed, connections dropped)
//! with a restart on the same port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tower::ServiceExt as _;

#[derive(Default)]
pub struct EngineState {
    pub name: String,
    /// The first user message of each chat request served, in arrival order (a conversation's marker).
    pub served: Mutex<Vec<String>>,
    /// Reported as `vllm:num_requests_running` / `_waiting`.
    pub running: AtomicU64,
    pub waiting: AtomicU64,
    /// Reported by `/slots`: (slots, busy).
    pub slots: Mutex<(u32, u32)>,
    pub scrapes: AtomicU64,
    /// Requests answered 500 before normal answers resume.
    pub fail_next: AtomicUsize,
    /// While set, chat requests wait for `open` before answering.
    pub gated: std::sync::atomic::AtomicBool,
    pub open: Notify,
    /// Requests waiting at the gate.
    pub at_gate: AtomicUsize,
}

pub struct Engine {
    pub addr: SocketAddr,
    pub state: Arc<EngineState>,
    /// `true` kills the server (listener and connections).
    kill: watch::Sender<bool>,
}

impl Engine {
    pub async fn start(name: &str) -> Engine {
        let state = Arc::new(EngineState {
            name: name.to_owned(),
            slots: Mutex::new((4, 0)),
            ..EngineState::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (kill, _) = watch::channel(false);
        let engine = Engine { addr, state, kill };
        engine.serve(listener);
        engine
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        self.kill.send_replace(false);
        let mut killed = self.kill.subscribe();
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/metrics", get(metrics))
            .route("/slots", get(slots))
            .route(
                "/v1/models",
                get(|| async { axum::Json(json!({"object": "list", "data": []})) }),
            )
            .with_state(Arc::clone(&self.state));
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = killed.wait_for(|k| *k) => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => continue,
                    },
                };
                let app = app.clone();
                let mut killed = killed.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            app.clone().oneshot(request.map(Body::new))
                        },
                    );
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = killed.wait_for(|k| *k) => {}
                        _ = connection => {}
                    }
                });
            }
        });
    }

    /// Base URL without `/v1` (the gateway adds it).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The conversations (first user messages) this instance served, in order.
    pub fn served(&self) -> Vec<String> {
        self.state.served.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.served.lock().unwrap().len()
    }

    /// Sets the load `/metrics` reports.
    pub fn report(&self, running: u64, waiting: u64) {
        self.state.running.store(running, Ordering::Relaxed);
        self.state.waiting.store(waiting, Ordering::Relaxed);
    }

    /// Holds every chat request until `release` (counted in `at_gate`).
    pub fn gate(&self) {
        self.state.gated.store(true, Ordering::Relaxed);
    }

    /// Lets every waiting request through and lifts the gate.
    pub fn release(&self) {
        self.state.gated.store(false, Ordering::Relaxed);
        self.state.open.notify_waiters();
    }

    /// The port refuses connections and the open ones are dropped.
    pub fn kill(&self) {
        self.kill.send_replace(true);
    }

    /// Serves again on the same port.
    pub async fn restart(&self) {
        for _ in 0..200 {
            if let Ok(listener) = tokio::net::TcpListener::bind(self.addr).await {
                self.serve(listener);
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("could not bind {} again", self.addr);
    }
}

async fn chat(State(state): State<Arc<EngineState>>, request: Request) -> Response {
    let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if state
        .fail_next
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        let mut response = Response::new(Body::from(
            r#"{"error":{"message":"engine failed","type":"server_error","param":null,"code":null}}"#,
        ));
        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        return response;
    }
    // Made before the gate is looked at, so a release in between is not missed.
    let opened = state.open.notified();
    if state.gated.load(Ordering::Relaxed) {
        state.at_gate.fetch_add(1, Ordering::Relaxed);
        opened.await;
        state.at_gate.fetch_sub(1, Ordering::Relaxed);
    }
    let marker = body["messages"]
        .as_array()
        .and_then(|messages| messages.iter().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    state.served.lock().unwrap().push(marker);
    let text = format!("served by {}", state.name);
    let model = body["model"].as_str().unwrap_or("m").to_owned();
    if body["stream"].as_bool().unwrap_or(false) {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let sse = [
            chunk(json!({"role": "assistant", "content": text}), Value::Null),
            chunk(json!({}), json!("stop")),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let mut response = Response::new(Body::from(sse));
        response
            .headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return response;
    }
    let reply = json!({
        "id": "chatcmpl-engine", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    });
    let mut response = Response::new(Body::from(reply.to_string()));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

async fn metrics(State(state): State<Arc<EngineState>>) -> String {
    state.scrapes.fetch_add(1, Ordering::Relaxed);
    let running = state.running.load(Ordering::Relaxed);
    let waiting = state.waiting.load(Ordering::Relaxed);
    format!(
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{engine=\"0\",model_name=\"m\"}} {running}.0\n# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{engine=\"0\",model_name=\"m\"}} {waiting}.0\n# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{{engine=\"0\",model_name=\"m\"}} 0.25\n"
    )
}

async fn slots(State(state): State<Arc<EngineState>>) -> axum::Json<Value> {
    let (total, busy) = *state.slots.lock().unwrap();
    axum::Json(Value::Array(
        (0..total)
            .map(|id| json!({"id": id, "n_ctx": 4096, "is_processing": id < busy}))
            .collect(),
    ))
}
