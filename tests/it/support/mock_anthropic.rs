//! A mock Anthropic Messages API upstream on 127.0.0.1:0 speaking the exact wire format: JSON messages
//! (text, tool_use, thinking with signature), SSE with the real event sequence (message_start with
//! usage.input_tokens, content_block_start/delta/stop, input_json_delta split across events, ping,
//! message_delta with stop_reason and usage, message_stop), errors in Anthropic shape, and scripted
//! faults. Every request is recorded (path, headers, parsed body) so tests can assert the converted
//! request.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::mock::Recorded;

/// The input tokens every mock answer reports.
pub const INPUT_TOKENS: u64 = 25;
/// The output tokens every mock answer reports.
pub const OUTPUT_TOKENS: u64 = 12;

/// Which answer the mock gives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Answer {
    /// One text block: "Hello from claude".
    Text,
    /// A text block, then two parallel `tool_use` blocks (`get_weather`, `get_time`).
    Tools,
    /// A `thinking` block with a signature, then a text block "42".
    Thinking,
}

/// What the mock does with one request.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Answer normally (JSON, or SSE when the request has `"stream": true`).
    Reply(Answer),
    /// Answer with this status and Anthropic error type, and `Retry-After` when given.
    Error(u16, &'static str, Option<u64>),
    /// Stream this many events of the answer, then break the connection.
    StreamCut(Answer, usize),
    /// Stream this many events of the answer, then an Anthropic `event: error` (overloaded) and end.
    StreamError(Answer, usize),
    /// Stream the whole answer, but end the last event (`message_stop`) with one newline, not a blank
    /// line (some proxies trim it).
    NoFinalBlankLine(Answer),
    /// Stream the whole answer with its `message_stop`, then keep the body open until
    /// `MockAnthropic::release`.
    LingerAfterStop(Answer),
}

#[derive(Default)]
pub struct MockState {
    pub requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Behavior>>,
    pub release: tokio::sync::Notify,
}

pub struct MockAnthropic {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl MockAnthropic {
    pub async fn start() -> MockAnthropic {
        let state = Arc::new(MockState::default());
        let app = Router::new()
            .route("/v1/messages", post(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        MockAnthropic { addr, state }
    }

    /// Base URL without `/v1` (the gateway adds it).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue behaviours for the next requests, in order; afterwards `Reply(Text)` applies.
    pub fn script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.state.script.lock().unwrap().extend(behaviors);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Let a lingering stream (`Behavior::LingerAfterStop`) end.
    pub fn release(&self) {
        self.state.release.notify_one();
    }
}

/// The Anthropic error body for a type and message.
pub fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

async fn handle(State(state): State<Arc<MockState>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    state.requests.lock().unwrap().push(Recorded {
        path,
        headers: headers.clone(),
        body: body.clone(),
    });
    let behavior = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Behavior::Reply(Answer::Text));
    let model = body["model"].as_str().unwrap_or("claude-mock").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    // The real API refuses requests without these; so does the mock.
    if headers.get("anthropic-version").is_none() {
        return error_response(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
            None,
        );
    }
    if body["max_tokens"].as_u64().is_none() {
        return error_response(
            400,
            "invalid_request_error",
            "max_tokens: Field required",
            None,
        );
    }
    match behavior {
        Behavior::Error(status, kind, retry_after) => {
            error_response(status, kind, &format!("mock {kind}"), retry_after)
        }
        Behavior::Reply(answer) if !stream => json_response(200, &message(answer, &model)),
        Behavior::Reply(answer) => sse_response(events(answer, &model), End::Complete),
        Behavior::StreamCut(answer, after) => sse_response(events(answer, &model), End::Cut(after)),
        Behavior::StreamError(answer, after) => {
            sse_response(events(answer, &model), End::Error(after))
        }
        Behavior::NoFinalBlankLine(answer) => sse_response(events(answer, &model), End::Trimmed),
        Behavior::LingerAfterStop(answer) => {
            sse_response(events(answer, &model), End::Linger(state.clone()))
        }
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
        .headers_mut()
        .insert("request-id", "req_mock".parse().unwrap());
    response
}

fn error_response(status: u16, kind: &str, message: &str, retry_after: Option<u64>) -> Response {
    let mut response = json_response(status, &error_body(kind, message));
    if let Some(seconds) = retry_after {
        response.headers_mut().insert("retry-after", seconds.into());
    }
    response
}

fn usage(output_tokens: u64) -> Value {
    json!({
        "input_tokens": INPUT_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens
    })
}

/// The content blocks of an answer, complete.
pub fn content(answer: Answer) -> Value {
    match answer {
        Answer::Text => json!([{"type": "text", "text": "Hello from claude"}]),
        Answer::Tools => json!([
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {"tz": "CET"}}
        ]),
        Answer::Thinking => json!([
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc123"},
            {"type": "text", "text": "42"}
        ]),
    }
}

fn stop_reason(answer: Answer) -> &'static str {
    match answer {
        Answer::Tools => "tool_use",
        Answer::Text | Answer::Thinking => "end_turn",
    }
}

/// The complete `message` JSON for an answer.
pub fn message(answer: Answer, model: &str) -> Value {
    json!({
        "id": "msg_mock01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content(answer),
        "stop_reason": stop_reason(answer),
        "stop_sequence": null,
        "usage": usage(OUTPUT_TOKENS)
    })
}

/// The SSE events `(name, data)` of a streamed answer, as the Messages API sends them.
pub fn events(answer: Answer, model: &str) -> Vec<(&'static str, Value)> {
    let mut out = vec![(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": "msg_mock01", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage(1)
        }}),
    )];
    let start = |index: u64, block: Value| {
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        )
    };
    let delta = |index: u64, delta: Value| {
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    };
    let stop = |index: u64| {
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        )
    };
    let text = |t: &str| json!({"type": "text_delta", "text": t});
    let partial = |t: &str| json!({"type": "input_json_delta", "partial_json": t});
    match answer {
        Answer::Text => {
            out.push(start(0, json!({"type": "text", "text": ""})));
            out.push(("ping", json!({"type": "ping"})));
            out.push(delta(0, text("Hello")));
            out.push(delta(0, text(" from claude")));
            out.push(stop(0));
        }
        Answer::Tools => {
            out.push(start(0, json!({"type": "text", "text": ""})));
            out.push(("ping", json!({"type": "ping"})));
            out.push(delta(0, text("Let me check.")));
            out.push(stop(0));
            out.push(start(
                1,
                json!({"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}),
            ));
            out.push(delta(1, partial("")));
            out.push(delta(1, partial("{\"city\": \"Par")));
            out.push(delta(1, partial("is\"}")));
            out.push(stop(1));
            out.push(start(
                2,
                json!({"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}),
            ));
            out.push(delta(2, partial("{\"tz\":")));
            out.push(delta(2, partial(" \"CET\"}")));
            out.push(stop(2));
        }
        Answer::Thinking => {
            out.push(start(
                0,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
            ));
            out.push(delta(
                0,
                json!({"type": "thinking_delta", "thinking": "Let me think."}),
            ));
            out.push(delta(
                0,
                json!({"type": "signature_delta", "signature": "sig-abc123"}),
            ));
            out.push(stop(0));
            out.push(start(1, json!({"type": "text", "text": ""})));
            out.push(delta(1, text("42")));
            out.push(stop(1));
        }
    }
    out.push((
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason(answer), "stop_sequence": null},
               "usage": {"output_tokens": OUTPUT_TOKENS}}),
    ));
    out.push(("message_stop", json!({"type": "message_stop"})));
    out
}

/// One SSE frame as the Messages API writes it.
pub fn frame(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

enum End {
    Complete,
    Trimmed,
    Cut(usize),
    Error(usize),
    /// Complete, then the body stays open until the state's `release`.
    Linger(Arc<MockState>),
}

fn sse_response(events: Vec<(&'static str, Value)>, end: End) -> Response {
    let mut frames: Vec<Result<Bytes, std::io::Error>> = Vec::new();
    let keep = match end {
        End::Complete | End::Trimmed | End::Linger(_) => events.len(),
        End::Cut(n) | End::Error(n) => n,
    };
    for (name, data) in events.iter().take(keep) {
        frames.push(Ok(Bytes::from(frame(name, data))));
    }
    let mut linger = None;
    match end {
        End::Complete => {}
        End::Linger(state) => linger = Some(state),
        End::Trimmed => {
            if let Some(Ok(last)) = frames.pop() {
                frames.push(Ok(last.slice(..last.len() - 1)));
            }
        }
        End::Cut(_) => frames.push(Err(std::io::Error::other("cut"))),
        End::Error(_) => frames.push(Ok(Bytes::from(frame(
            "error",
            &error_body("overloaded_error", "Overloaded"),
        )))),
    }
    let stream =
        futures_util::stream::iter(frames.into_iter().enumerate()).then(|(i, frame)| async move {
            // Let the frames already yielded reach the wire before the connection breaks.
            if frame.is_err() && i > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            frame
        });
    let stream = stream.chain(
        futures_util::stream::once(async move {
            if let Some(state) = linger {
                state.release.notified().await;
            }
            Ok(Bytes::new())
        })
        .filter(|_| std::future::ready(false)),
    );
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}
