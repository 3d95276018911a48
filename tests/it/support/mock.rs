//! A mock OpenAI-compatible upstream on 127.0.0.1:0 speaking the exact wire format (JSON and SSE),
//! with scripted faults: status codes, Retry-After, hang, stream cut, slow or gated chunks.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use http::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// What the mock does with one request.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Answer normally (JSON, or SSE when the request asked to stream).
    Reply,
    /// Answer with this status and body, and `Retry-After` when given.
    Status(u16, &'static str, Option<u64>),
    /// Never answer (counted in `cancelled` when the gateway gives up the call).
    Hang,
    /// Stream this many chunks, then break the connection.
    StreamCut(usize),
    /// Stream with this pause between chunks.
    Slow(Duration),
    /// Stream the first chunk, then wait for `Mock::release` before the rest.
    Gate,
    /// Stream this many chunks, then an OpenAI error chunk `data: {"error": …}` and close (no `[DONE]`).
    StreamErrorChunk(usize),
    /// Answer with two parallel tool calls (`get_weather`, `get_time`); streamed, their arguments
    /// come in fragments, and a usage chunk follows when `stream_options.include_usage` asked.
    ToolCalls,
    /// Answer 200 with this SSE body verbatim (`text/event-stream`).
    Sse(&'static str),
    /// Stream the whole answer with its `[DONE]`, then keep the body open until `Mock::release`.
    LingerAfterDone,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
pub struct MockState {
    pub requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Behavior>>,
    /// Streams whose body was dropped before it finished (the client went away).
    pub cancelled: AtomicU64,
    pub release: Notify,
    pub cancel_seen: Notify,
}

pub struct Mock {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl Mock {
    pub async fn start() -> Mock {
        let state = Arc::new(MockState::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .route("/v1/completions", post(handle))
            .route("/v1/embeddings", post(handle))
            .route(
                "/v1/models",
                axum::routing::get(|| async {
                    axum::Json(json!({"object": "list", "data": [{"id": "mock-model", "object": "model"}]}))
                }),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Mock { addr, state }
    }

    /// Base URL without `/v1` (the gateway adds it).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue behaviours for the next requests, in order; afterwards the default applies.
    pub fn script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.state.script.lock().unwrap().extend(behaviors);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn release(&self) {
        self.state.release.notify_one();
    }
}

/// A port with nothing listening: connections are refused.
pub async fn refused_base() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

async fn handle(State(state): State<Arc<MockState>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    state.requests.lock().unwrap().push(Recorded {
        path: path.clone(),
        headers,
        body: body.clone(),
    });
    let behavior = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Behavior::Reply);
    let stream = body["stream"].as_bool().unwrap_or(false);
    let model = body["model"].as_str().unwrap_or("mock-model").to_owned();
    match behavior {
        Behavior::Status(status, text, retry_after) => {
            let mut response = Response::new(Body::from(text));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            if let Some(seconds) = retry_after {
                response.headers_mut().insert("retry-after", seconds.into());
            }
            response
        }
        Behavior::Hang => {
            // Counted as cancelled when the gateway drops the call.
            let _guard = CancelGuard {
                state: state.clone(),
                finished: false,
            };
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::new(Body::empty())
        }
        Behavior::ToolCalls if !stream => tool_calls_reply(&model),
        Behavior::ToolCalls => {
            let include_usage = body["stream_options"]["include_usage"]
                .as_bool()
                .unwrap_or(false);
            tool_calls_sse(&model, include_usage)
        }
        Behavior::Sse(body) => {
            let mut response = Response::new(Body::from(body));
            response
                .headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            response
        }
        _ if !stream => json_reply(&path, &model),
        behavior => sse_reply(state, &path, &model, behavior),
    }
}

fn json_reply(path: &str, model: &str) -> Response {
    let body = match path {
        "/v1/completions" => json!({
            "id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model,
            "choices": [{"index": 0, "text": "hello from mock", "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
        }),
        "/v1/embeddings" => json!({
            "object": "list", "model": model,
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
            "usage": {"prompt_tokens": 2, "total_tokens": 2}
        }),
        _ => json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from mock"}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        }),
    };
    let mut response = Response::new(Body::from(body.to_string()));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

/// The chunks of the mock's streamed answer "hello from mock", OpenAI chunk rules.
pub fn chunks(model: &str) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        .to_string()
    };
    vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "hello"}), Value::Null),
        chunk(json!({"content": " from"}), Value::Null),
        chunk(json!({"content": " mock"}), Value::Null),
        chunk(json!({}), json!("stop")),
    ]
}

struct CancelGuard {
    state: Arc<MockState>,
    finished: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.state.cancelled.fetch_add(1, Ordering::SeqCst);
            self.state.cancel_seen.notify_waiters();
        }
    }
}

fn sse_reply(state: Arc<MockState>, path: &str, model: &str, behavior: Behavior) -> Response {
    let frames: Vec<String> = if path == "/v1/completions" {
        ["hello", " from", " mock"]
            .iter()
            .map(|t| json!({"id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model,
                            "choices": [{"index": 0, "text": t, "logprobs": null, "finish_reason": null}]}).to_string())
            .collect()
    } else {
        chunks(model)
    };
    let mut frames: Vec<Bytes> = frames
        .into_iter()
        .map(|data| Bytes::from(format!("data: {data}\n\n")))
        .collect();
    if let Behavior::StreamErrorChunk(after) = behavior {
        frames.truncate(after);
        frames.push(Bytes::from(format!(
            "data: {}\n\n",
            json!({"error": {"message": "mock overloaded", "type": "server_error", "param": null, "code": null}})
        )));
    } else {
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    }
    let guard = CancelGuard {
        state: state.clone(),
        finished: false,
    };
    let stream = futures_util::stream::unfold(
        (frames.into_iter().enumerate(), guard, behavior),
        move |(mut frames, mut guard, behavior)| {
            let state = state.clone();
            async move {
                let Some((i, frame)) = frames.next() else {
                    if let Behavior::LingerAfterDone = behavior {
                        state.release.notified().await;
                    }
                    guard.finished = true;
                    drop(guard);
                    return None;
                };
                match &behavior {
                    Behavior::StreamCut(after) if i >= *after => {
                        // Let the frames already yielded reach the wire before the connection breaks.
                        if *after > 0 {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        return Some((
                            Err(std::io::Error::other("cut")),
                            (frames, guard, behavior),
                        ));
                    }
                    Behavior::Slow(delay) if i > 0 => tokio::time::sleep(*delay).await,
                    Behavior::Gate if i == 1 => state.release.notified().await,
                    _ => {}
                }
                Some((
                    Ok::<Bytes, std::io::Error>(frame),
                    (frames, guard, behavior),
                ))
            }
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}

/// The complete answer of `Behavior::ToolCalls`.
fn tool_calls_reply(model: &str) -> Response {
    let body = json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\": \"CET\"}"}}
        ]}, "logprobs": null, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50}
    });
    let mut response = Response::new(Body::from(body.to_string()));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

/// The streamed chunks of `Behavior::ToolCalls`, OpenAI chunk rules (arguments split across chunks).
pub fn tool_call_chunks(model: &str, include_usage: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        let mut chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk.to_string()
    };
    let call = |index: u64, id: Option<&str>, name: Option<&str>, arguments: &str| {
        let mut function = json!({"arguments": arguments});
        if let Some(name) = name {
            function["name"] = json!(name);
        }
        let mut call = json!({"index": index, "function": function});
        if let Some(id) = id {
            call["id"] = json!(id);
            call["type"] = json!("function");
        }
        json!({"tool_calls": [call]})
    };
    let mut chunks = vec![
        chunk(json!({"role": "assistant", "content": null}), Value::Null),
        chunk(
            call(0, Some("call_1"), Some("get_weather"), ""),
            Value::Null,
        ),
        chunk(call(0, None, None, "{\"city\": "), Value::Null),
        chunk(call(0, None, None, "\"Paris\"}"), Value::Null),
        chunk(call(1, Some("call_2"), Some("get_time"), ""), Value::Null),
        chunk(call(1, None, None, "{\"tz\""), Value::Null),
        chunk(call(1, None, None, ": \"CET\"}"), Value::Null),
        chunk(json!({}), json!("tool_calls")),
    ];
    if include_usage {
        chunks.push(
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
                   "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50}})
            .to_string(),
        );
    }
    chunks
}

fn tool_calls_sse(model: &str, include_usage: bool) -> Response {
    let mut body: String = tool_call_chunks(model, include_usage)
        .into_iter()
        .map(|data| format!("data: {data}\n\n"))
        .collect();
    body.push_str("data: [DONE]\n\n");
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}
