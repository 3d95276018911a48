//! Zero-delay mock LLM upstream for the benchmark: OpenAI and Anthropic endpoints, JSON and finite SSE streams.
//!
//! Every response body is built once at start-up, so a request costs only HTTP parsing and one body
//! scan for `"stream": true`. The mock runs on a current-thread runtime because `bench/run.sh` pins it to
//! one core next to the load generator; a single thread avoids cross-thread wake-ups there.
//!
//! Endpoints:
//! - `POST /v1/chat/completions`: OpenAI chat completion JSON; with `"stream": true` an exact OpenAI SSE
//!   stream of 20 content chunks (role in the first), a finish chunk, a usage chunk when the request sets
//!   `stream_options.include_usage`, and `data: [DONE]`;
//! - `POST /v1/completions`: OpenAI (legacy) text completion JSON; with `"stream": true` 20 text chunks, a
//!   finish chunk and `data: [DONE]` (llama.cpp's endpoint in seed 004);
//! - `POST /v1/messages`: Anthropic message JSON; with `"stream": true` the exact Anthropic event sequence
//!   (`message_start`, `content_block_start`, `ping`, 20 `text_delta`s, `content_block_stop`,
//!   `message_delta`, `message_stop`);
//! - `GET /health`: `{"status":"ok"}`.
//!
//! `--answer tool-call` answers every chat and messages request with one function call instead of text (an
//! agent's usual turn): OpenAI `tool_calls` (streamed as 20 argument pieces after a first chunk naming
//! the function), Anthropic `tool_use` (streamed as 20 `input_json_delta`s).
//!
//! Streams are sent one SSE event per body frame with chunked transfer encoding, so they are finite and a
//! load generator counts each one as a complete response. `--chunk-delay-ms N` waits N ms before each
//! streamed event (a slow model: the slow-streams run holds thousands of streams open this way; JSON
//! replies stay immediate). `--instance-id` adds an `x-mock-instance` header so a fail-over run can tell
//! instances apart.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Content chunks in every streamed reply; the benchmark's "20-chunk stream".
const STREAM_CHUNKS: usize = 20;

#[derive(Parser, Debug)]
#[command(
    name = "mock_upstream",
    about = "Zero-delay OpenAI/Anthropic mock upstream for benchmarks"
)]
struct Cli {
    /// Port to listen on (0 picks a free one; the bound address is printed on stderr).
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Sent back as the `x-mock-instance` response header, to tell instances apart.
    #[arg(long)]
    instance_id: Option<String>,
    /// Print `first request at unix_ms=<ms>` on stderr when the first POST arrives, so the fail-over run can
    /// tell when a restarted instance takes traffic again.
    #[arg(long)]
    log_first_request: bool,
    /// Wait this many milliseconds before each streamed SSE event (0: none, the zero-delay mock).
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// What the chat and messages replies carry.
    #[arg(long, value_enum, default_value_t = Answer::Text)]
    answer: Answer,
}

/// What a chat or messages reply carries.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// 20 text tokens.
    Text,
    /// One function call whose arguments come in 20 pieces.
    ToolCall,
}

/// One wait before a streamed event.
type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Makes the wait before each streamed event: a timer of `--chunk-delay-ms` in the mock, waits the test
/// releases itself in the tests (no real time there).
type WaitMaker = Arc<dyn Fn() -> Wait + Send + Sync>;

fn sleep_before_each(delay: Duration) -> WaitMaker {
    Arc::new(move || Box::pin(tokio::time::sleep(delay)))
}

/// Pre-built replies, shared by every connection.
struct Replies {
    openai_json: Bytes,
    openai_stream: Arc<[Bytes]>,
    openai_stream_usage: Arc<[Bytes]>,
    completion_json: Bytes,
    completion_stream: Arc<[Bytes]>,
    anthropic_json: Bytes,
    anthropic_stream: Arc<[Bytes]>,
    responses_json: Bytes,
    responses_stream: Arc<[Bytes]>,
    health: Bytes,
    not_found: Bytes,
    instance: Option<HeaderValue>,
    log_first_request: bool,
    served: AtomicBool,
    /// Set by `--chunk-delay-ms` > 0: every stream waits before each event.
    pace: Option<WaitMaker>,
}

impl Replies {
    fn new(
        instance: Option<HeaderValue>,
        log_first_request: bool,
        pace: Option<WaitMaker>,
        answer: Answer,
    ) -> Self {
        let events = |events: Vec<String>| events.into_iter().map(Bytes::from).collect();
        let tool = answer == Answer::ToolCall;
        Self {
            openai_json: Bytes::from(if tool { openai_tool_json() } else { openai_json() }),
            openai_stream: events(if tool {
                openai_tool_stream(false)
            } else {
                openai_stream(false)
            }),
            openai_stream_usage: events(if tool {
                openai_tool_stream(true)
            } else {
                openai_stream(true)
            }),
            completion_json: Bytes::from(completion_json()),
            completion_stream: events(completion_stream()),
            anthropic_json: Bytes::from(if tool {
                anthropic_tool_json()
            } else {
                anthropic_json()
            }),
            anthropic_stream: events(if tool {
                anthropic_tool_stream()
            } else {
                anthropic_stream()
            }),
            responses_json: Bytes::from(responses_object("completed", &full_text()).to_string()),
            responses_stream: events(responses_stream()),
            health: Bytes::from_static(br#"{"status":"ok"}"#),
            not_found: Bytes::from_static(
                br#"{"error":{"message":"mock: unknown route","type":"invalid_request_error","param":null,"code":"not_found"}}"#,
            ),
            instance,
            log_first_request,
            served: AtomicBool::new(false),
            pace,
        }
    }

    /// The body of one streamed reply: the events, paced when `--chunk-delay-ms` asks for it.
    fn stream_body(&self, events: Arc<[Bytes]>) -> MockBody {
        MockBody::Events {
            events,
            next: 0,
            pace: self.pace.clone().map(Pace::new),
        }
    }

    /// Notes that a POST was served; the first one is logged when asked for.
    fn mark_served(&self) {
        if self.log_first_request
            && !self.served.load(Ordering::Relaxed)
            && !self.served.swap(true, Ordering::Relaxed)
        {
            let unix_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis());
            eprintln!("first request at unix_ms={unix_ms}");
        }
    }
}

/// The text of content chunk `index`; the non-stream replies carry the concatenation of all of them.
fn token(index: usize) -> String {
    format!("tok{index} ")
}

fn full_text() -> String {
    (0..STREAM_CHUNKS).map(token).collect()
}

fn openai_json() -> String {
    serde_json::json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "mock-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": full_text(), "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": openai_usage(),
        "system_fingerprint": "fp_mock"
    })
    .to_string()
}

fn openai_usage() -> serde_json::Value {
    serde_json::json!({"prompt_tokens": 9, "completion_tokens": STREAM_CHUNKS, "total_tokens": 9 + STREAM_CHUNKS})
}

fn openai_chunk(delta: &serde_json::Value, finish_reason: Option<&str>) -> String {
    let chunk = serde_json::json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "mock-model",
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]
    });
    format!("data: {chunk}\n\n")
}

fn openai_stream(include_usage: bool) -> Vec<String> {
    let mut events: Vec<String> = (0..STREAM_CHUNKS)
        .map(|index| {
            let delta = if index == 0 {
                serde_json::json!({"role": "assistant", "content": token(index), "refusal": null})
            } else {
                serde_json::json!({"content": token(index)})
            };
            openai_chunk(&delta, None)
        })
        .collect();
    events.push(openai_chunk(&serde_json::json!({}), Some("stop")));
    if include_usage {
        let chunk = serde_json::json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "mock-model",
            "system_fingerprint": "fp_mock",
            "choices": [],
            "usage": openai_usage()
        });
        events.push(format!("data: {chunk}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_owned());
    events
}

/// The arguments of the `--answer tool-call` function call, sent whole or in [`STREAM_CHUNKS`] pieces.
fn tool_arguments() -> String {
    let args: Vec<String> = (0..STREAM_CHUNKS)
        .map(|index| format!("line {index}"))
        .collect();
    serde_json::json!({"path": "src/lib.rs", "pattern": "fn main", "lines": args}).to_string()
}

/// [`tool_arguments`] cut into [`STREAM_CHUNKS`] pieces (ASCII, so any byte is a boundary).
fn tool_argument_pieces() -> Vec<String> {
    let whole = tool_arguments();
    let size = whole.len().div_ceil(STREAM_CHUNKS);
    whole
        .as_bytes()
        .chunks(size)
        .map(|piece| String::from_utf8_lossy(piece).into_owned())
        .collect()
}

fn openai_tool_json() -> String {
    serde_json::json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "mock-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [{
                "id": "call_mock", "type": "function",
                "function": {"name": "grep", "arguments": tool_arguments()}
            }]},
            "logprobs": null,
            "finish_reason": "tool_calls"
        }],
        "usage": openai_usage(),
        "system_fingerprint": "fp_mock"
    })
    .to_string()
}

fn openai_tool_stream(include_usage: bool) -> Vec<String> {
    let mut events = vec![openai_chunk(
        &serde_json::json!({"role": "assistant", "content": null, "tool_calls": [{
            "index": 0, "id": "call_mock", "type": "function",
            "function": {"name": "grep", "arguments": ""}
        }]}),
        None,
    )];
    events.extend(tool_argument_pieces().iter().map(|piece| {
        openai_chunk(
            &serde_json::json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            None,
        )
    }));
    let mut text = openai_stream(include_usage);
    // The finish chunk, the usage chunk and `[DONE]` as the text stream has them, finishing with
    // `tool_calls`.
    let tail = text.split_off(STREAM_CHUNKS);
    events.extend(tail.into_iter().map(|event| {
        event.replace(
            r#""finish_reason":"stop""#,
            r#""finish_reason":"tool_calls""#,
        )
    }));
    events
}

fn anthropic_tool_json() -> String {
    let input: serde_json::Value =
        serde_json::from_str(&tool_arguments()).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": "mock-model",
        "content": [{"type": "tool_use", "id": "toolu_mock", "name": "grep", "input": input}],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {"input_tokens": 9, "output_tokens": STREAM_CHUNKS}
    })
    .to_string()
}

fn anthropic_tool_stream() -> Vec<String> {
    let text = anthropic_stream();
    // message_start, then the tool_use block in place of the text block, then the same ending.
    let mut events = vec![text[0].clone()];
    events.push(anthropic_event(
        "content_block_start",
        &serde_json::json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_mock", "name": "grep", "input": {}}}),
    ));
    events.extend(tool_argument_pieces().iter().map(|piece| {
        anthropic_event(
            "content_block_delta",
            &serde_json::json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": piece}}),
        )
    }));
    events.extend(
        text[text.len() - 3..].iter().map(|event| {
            event.replace(r#""stop_reason":"end_turn""#, r#""stop_reason":"tool_use""#)
        }),
    );
    events
}

fn completion_json() -> String {
    serde_json::json!({
        "id": "cmpl-mock",
        "object": "text_completion",
        "created": 1_700_000_000,
        "model": "mock-model",
        "choices": [{"text": full_text(), "index": 0, "logprobs": null, "finish_reason": "stop"}],
        "usage": openai_usage()
    })
    .to_string()
}

fn completion_stream() -> Vec<String> {
    let chunk = |text: &str, finish_reason: Option<&str>| {
        let chunk = serde_json::json!({
            "id": "cmpl-mock",
            "object": "text_completion",
            "created": 1_700_000_000,
            "model": "mock-model",
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish_reason}]
        });
        format!("data: {chunk}\n\n")
    };
    let mut events: Vec<String> = (0..STREAM_CHUNKS)
        .map(|index| chunk(&token(index), None))
        .collect();
    events.push(chunk("", Some("stop")));
    events.push("data: [DONE]\n\n".to_owned());
    events
}

fn anthropic_json() -> String {
    serde_json::json!({
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": "mock-model",
        "content": [{"type": "text", "text": full_text()}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 9, "output_tokens": STREAM_CHUNKS}
    })
    .to_string()
}

fn anthropic_event(name: &str, data: &serde_json::Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn anthropic_stream() -> Vec<String> {
    let mut events = vec![
        anthropic_event(
            "message_start",
            &serde_json::json!({"type": "message_start", "message": {
                "id": "msg_mock", "type": "message", "role": "assistant", "model": "mock-model",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 9, "output_tokens": 1}
            }}),
        ),
        anthropic_event(
            "content_block_start",
            &serde_json::json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
        ),
        anthropic_event("ping", &serde_json::json!({"type": "ping"})),
    ];
    events.extend((0..STREAM_CHUNKS).map(|index| {
        anthropic_event(
            "content_block_delta",
            &serde_json::json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": token(index)}}),
        )
    }));
    events.push(anthropic_event(
        "content_block_stop",
        &serde_json::json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(anthropic_event(
        "message_delta",
        &serde_json::json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": STREAM_CHUNKS}}),
    ));
    events.push(anthropic_event(
        "message_stop",
        &serde_json::json!({"type": "message_stop"}),
    ));
    events
}

/// A Responses API `response` object (a backend with `native_responses`) with one message of `text`.
fn responses_object(status: &str, text: &str) -> serde_json::Value {
    let output = if text.is_empty() {
        serde_json::json!([])
    } else {
        serde_json::json!([{"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}])
    };
    serde_json::json!({
        "id": "resp_mock", "object": "response", "created_at": 1_700_000_000, "status": status,
        "model": "mock-model", "output": output,
        "usage": {"input_tokens": 9, "output_tokens": STREAM_CHUNKS, "total_tokens": 9 + STREAM_CHUNKS}
    })
}

/// The Responses API's semantic events for the same answer, `sequence_number` in order.
fn responses_stream() -> Vec<String> {
    let item = |status: &str, text: &str| {
        serde_json::json!({"type": "message", "id": "msg_mock", "status": status, "role": "assistant",
            "content": if status == "completed" { serde_json::json!([{"type": "output_text", "text": text, "annotations": []}]) } else { serde_json::json!([]) }})
    };
    let part =
        |text: &str| serde_json::json!({"type": "output_text", "text": text, "annotations": []});
    let mut data = vec![
        serde_json::json!({"type": "response.created", "response": responses_object("in_progress", "")}),
        serde_json::json!({"type": "response.in_progress", "response": responses_object("in_progress", "")}),
        serde_json::json!({"type": "response.output_item.added", "output_index": 0, "item": item("in_progress", "")}),
        serde_json::json!({"type": "response.content_part.added", "item_id": "msg_mock", "output_index": 0,
            "content_index": 0, "part": part("")}),
    ];
    data.extend((0..STREAM_CHUNKS).map(|index| {
        serde_json::json!({"type": "response.output_text.delta", "item_id": "msg_mock", "output_index": 0,
            "content_index": 0, "delta": token(index)})
    }));
    let text = full_text();
    data.extend([
        serde_json::json!({"type": "response.output_text.done", "item_id": "msg_mock", "output_index": 0,
            "content_index": 0, "text": text}),
        serde_json::json!({"type": "response.content_part.done", "item_id": "msg_mock", "output_index": 0,
            "content_index": 0, "part": part(&text)}),
        serde_json::json!({"type": "response.output_item.done", "output_index": 0, "item": item("completed", &text)}),
        serde_json::json!({"type": "response.completed", "response": responses_object("completed", &text)}),
    ]);
    data.into_iter()
        .enumerate()
        .map(|(sequence, mut event)| {
            event["sequence_number"] = serde_json::json!(sequence);
            let name = event["type"].as_str().unwrap_or_default().to_owned();
            format!("event: {name}\ndata: {event}\n\n")
        })
        .collect()
}

/// A response body that is either one pre-built buffer (sent with `content-length`) or a list of
/// pre-built SSE events, one frame each (sent chunked, ending with the terminating chunk), optionally
/// with a wait before each event.
enum MockBody {
    Full(Option<Bytes>),
    Events {
        events: Arc<[Bytes]>,
        next: usize,
        pace: Option<Pace>,
    },
}

/// The wait before each event of one paced stream; `waiting` is the wait for event `next`, made when
/// that event is first polled for and dropped once it has elapsed.
struct Pace {
    make: WaitMaker,
    waiting: Option<Wait>,
}

impl Pace {
    fn new(make: WaitMaker) -> Self {
        Pace {
            make,
            waiting: None,
        }
    }

    /// Ready once the wait for the next event has elapsed.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let make = &self.make;
        let wait = self.waiting.get_or_insert_with(|| make());
        if wait.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.waiting = None;
        Poll::Ready(())
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            MockBody::Full(bytes) => bytes.take(),
            MockBody::Events { events, next, pace } => {
                if let Some(pace) = pace
                    && *next < events.len()
                    && pace.poll_wait(cx).is_pending()
                {
                    return Poll::Pending;
                }
                let event = events.get(*next).cloned();
                *next += 1;
                event
            }
        };
        Poll::Ready(frame.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(bytes) => bytes.is_none(),
            MockBody::Events { events, next, .. } => *next >= events.len(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Events { .. } => SizeHint::default(),
        }
    }
}

/// Whether a JSON request body sets `key` (given with its quotes) to `true` anywhere.
///
/// A byte scan instead of a parse keeps the mock's CPU per request small; an escaped `\"stream\"` inside
/// a string value never matches because the closing quote there is preceded by a backslash.
fn flag_is_true(body: &[u8], key: &[u8]) -> bool {
    memchr::memmem::find_iter(body, key).any(|at| {
        let rest = &body[at + key.len()..];
        let rest = rest.trim_ascii_start();
        rest.strip_prefix(b":")
            .is_some_and(|value| value.trim_ascii_start().starts_with(b"true"))
    })
}

fn wants_stream(body: &[u8]) -> bool {
    flag_is_true(body, b"\"stream\"")
}

fn reply(
    replies: &Replies,
    status: StatusCode,
    content_type: &'static str,
    body: MockBody,
) -> Response<MockBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type == "text/event-stream" {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    if let Some(instance) = &replies.instance {
        headers.insert("x-mock-instance", instance.clone());
    }
    response
}

/// The APIs the mock answers.
#[derive(Clone, Copy)]
enum Api {
    Chat,
    Completions,
    Messages,
    Responses,
}

async fn handle(
    replies: Arc<Replies>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let route = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/v1/chat/completions") => Some(Api::Chat),
        (&Method::POST, "/v1/completions") => Some(Api::Completions),
        (&Method::POST, "/v1/messages") => Some(Api::Messages),
        (&Method::POST, "/v1/responses") => Some(Api::Responses),
        (&Method::GET, "/health") => {
            return Ok(reply(
                &replies,
                StatusCode::OK,
                "application/json",
                MockBody::Full(Some(replies.health.clone())),
            ));
        }
        _ => None,
    };
    // Read the whole body even for an unknown route, so the connection stays usable.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let Some(api) = route else {
        return Ok(reply(
            &replies,
            StatusCode::NOT_FOUND,
            "application/json",
            MockBody::Full(Some(replies.not_found.clone())),
        ));
    };
    replies.mark_served();
    let response = match (api, wants_stream(&body)) {
        (Api::Chat, false) => reply(
            &replies,
            StatusCode::OK,
            "application/json",
            MockBody::Full(Some(replies.openai_json.clone())),
        ),
        (Api::Chat, true) => {
            let events = if flag_is_true(&body, b"\"include_usage\"") {
                replies.openai_stream_usage.clone()
            } else {
                replies.openai_stream.clone()
            };
            reply(
                &replies,
                StatusCode::OK,
                "text/event-stream",
                replies.stream_body(events),
            )
        }
        (Api::Completions, false) => reply(
            &replies,
            StatusCode::OK,
            "application/json",
            MockBody::Full(Some(replies.completion_json.clone())),
        ),
        (Api::Completions, true) => reply(
            &replies,
            StatusCode::OK,
            "text/event-stream",
            replies.stream_body(replies.completion_stream.clone()),
        ),
        (Api::Messages, false) => reply(
            &replies,
            StatusCode::OK,
            "application/json",
            MockBody::Full(Some(replies.anthropic_json.clone())),
        ),
        (Api::Messages, true) => reply(
            &replies,
            StatusCode::OK,
            "text/event-stream",
            replies.stream_body(replies.anthropic_stream.clone()),
        ),
        (Api::Responses, false) => reply(
            &replies,
            StatusCode::OK,
            "application/json",
            MockBody::Full(Some(replies.responses_json.clone())),
        ),
        (Api::Responses, true) => reply(
            &replies,
            StatusCode::OK,
            "text/event-stream",
            replies.stream_body(replies.responses_stream.clone()),
        ),
    };
    Ok(response)
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let instance = match &cli.instance_id {
        Some(id) => Some(
            HeaderValue::from_str(id)
                .map_err(|error| anyhow::anyhow!("invalid --instance-id '{id}': {error}"))?,
        ),
        None => None,
    };
    let pace = (cli.chunk_delay_ms > 0)
        .then(|| sleep_before_each(Duration::from_millis(cli.chunk_delay_ms)));
    let replies = Arc::new(Replies::new(
        instance,
        cli.log_first_request,
        pace,
        cli.answer,
    ));
    let address = format!("{}:{}", cli.host, cli.port);
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {address}: {error}"))?;
    let local: SocketAddr = listener.local_addr()?;
    eprintln!("mock_upstream listening on {local}");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors or similar: back off briefly instead of spinning.
                eprintln!("mock_upstream: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Best effort: without it small SSE frames may wait for delayed ACKs.
        let _ = stream.set_nodelay(true);
        let replies = replies.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(replies.clone(), request));
            // Connection errors (client resets mid-stream) are normal under load; nothing to report.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mock_upstream: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mock_upstream: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_flag_is_found_with_any_spacing() {
        assert!(wants_stream(br#"{"stream":true}"#));
        assert!(wants_stream(br#"{"model":"m", "stream" :  true}"#));
        assert!(!wants_stream(br#"{"stream":false}"#));
        assert!(!wants_stream(br#"{"stream_options":true}"#));
        assert!(!wants_stream(br#"{"content":"say \"stream\": true"}"#));
        assert!(!wants_stream(b""));
        assert!(flag_is_true(
            br#"{"stream_options": {"include_usage": true}}"#,
            b"\"include_usage\""
        ));
    }

    #[test]
    fn streams_have_the_expected_event_counts() {
        let openai = openai_stream(false);
        assert_eq!(openai.len(), STREAM_CHUNKS + 2);
        let with_usage = openai_stream(true);
        assert_eq!(with_usage.len(), STREAM_CHUNKS + 3);
        assert!(with_usage[STREAM_CHUNKS + 1].contains(r#""choices":[],"usage""#));
        assert_eq!(openai.last().map(String::as_str), Some("data: [DONE]\n\n"));
        assert!(openai[0].contains(r#""role":"assistant""#));
        assert!(openai[STREAM_CHUNKS].contains(r#""finish_reason":"stop""#));
        let completion = completion_stream();
        assert_eq!(completion.len(), STREAM_CHUNKS + 2);
        assert!(completion[STREAM_CHUNKS].contains(r#""finish_reason":"stop""#));
        assert_eq!(
            completion.last().map(String::as_str),
            Some("data: [DONE]\n\n")
        );
        let anthropic = anthropic_stream();
        let deltas = anthropic
            .iter()
            .filter(|event| event.starts_with("event: content_block_delta\n"))
            .count();
        assert_eq!(deltas, STREAM_CHUNKS);
        assert!(anthropic[0].starts_with("event: message_start\n"));
        assert!(
            anthropic
                .last()
                .is_some_and(|event| event.starts_with("event: message_stop\n"))
        );
    }

    /// The tool-call answers carry one call whose streamed argument pieces join to the whole arguments,
    /// and finish as a tool call in both wire formats.
    #[test]
    fn tool_call_answers_stream_the_whole_arguments() {
        let whole = tool_arguments();
        let field = |event: &str, pointer: &str| -> String {
            let data = event.lines().find_map(|line| line.strip_prefix("data: "));
            let value: serde_json::Value =
                serde_json::from_str(data.unwrap_or("null")).unwrap_or_default();
            value
                .pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let openai = openai_tool_stream(true);
        let joined: String = openai
            .iter()
            .map(|event| field(event, "/choices/0/delta/tool_calls/0/function/arguments"))
            .collect();
        assert_eq!(joined, whole);
        assert!(
            openai
                .iter()
                .any(|event| event.contains(r#""finish_reason":"tool_calls""#))
        );
        assert!(
            openai
                .iter()
                .any(|event| event.contains(r#""choices":[],"usage""#))
        );
        assert_eq!(openai.last().map(String::as_str), Some("data: [DONE]\n\n"));
        let anthropic = anthropic_tool_stream();
        let joined: String = anthropic
            .iter()
            .map(|event| field(event, "/delta/partial_json"))
            .collect();
        assert_eq!(joined, whole);
        assert!(
            anthropic
                .iter()
                .any(|event| event.contains(r#""stop_reason":"tool_use""#))
        );
        assert!(anthropic[anthropic.len() - 1].starts_with("event: message_stop\n"));
        let json: serde_json::Value = serde_json::from_str(&openai_tool_json()).unwrap_or_default();
        assert_eq!(
            json.pointer("/choices/0/message/tool_calls/0/function/arguments"),
            Some(&serde_json::Value::String(whole.clone()))
        );
        let json: serde_json::Value =
            serde_json::from_str(&anthropic_tool_json()).unwrap_or_default();
        assert_eq!(
            json.pointer("/content/0/input/path"),
            Some(&serde_json::Value::String("src/lib.rs".into()))
        );
    }

    /// A paced stream waits before every event and still yields all of them, in order, then ends. The
    /// waits are released one at a time by the test (a semaphore), so no real time passes.
    #[tokio::test]
    async fn a_paced_stream_yields_every_event_after_its_wait() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let released = gate.clone();
        let make: WaitMaker = Arc::new(move || {
            let gate = released.clone();
            Box::pin(async move { gate.acquire().await.unwrap().forget() })
        });
        let replies = Replies::new(None, false, Some(make), Answer::Text);
        for expected in [
            replies.openai_stream.clone(),
            replies.openai_stream_usage.clone(),
            replies.anthropic_stream.clone(),
        ] {
            let mut body = replies.stream_body(expected.clone());
            for event in expected.iter() {
                let mut frame = std::pin::pin!(body.frame());
                assert!(
                    futures_util::poll!(frame.as_mut()).is_pending(),
                    "an event came before its wait was over"
                );
                gate.add_permits(1);
                let data = frame.await.unwrap().unwrap().into_data().unwrap();
                assert_eq!(&data, event);
            }
            assert!(body.is_end_stream());
            assert!(
                body.frame().await.is_none(),
                "the stream ends without another wait"
            );
        }
    }

    /// Without `--chunk-delay-ms` a stream is ready at once, as before the option existed.
    #[tokio::test]
    async fn an_unpaced_stream_is_ready_at_once() {
        let replies = Replies::new(None, false, None, Answer::Text);
        let mut body = replies.stream_body(replies.openai_stream.clone());
        for event in replies.openai_stream.iter() {
            let frame = futures_util::poll!(body.frame());
            let Poll::Ready(Some(Ok(frame))) = frame else {
                panic!("an unpaced stream waited");
            };
            assert_eq!(&frame.into_data().unwrap(), event);
        }
        assert!(body.is_end_stream());
    }

    #[test]
    fn every_event_is_valid_json() {
        for event in openai_stream(true)
            .iter()
            .chain(completion_stream().iter())
            .chain(anthropic_stream().iter())
        {
            let data = event
                .lines()
                .find_map(|line| line.strip_prefix("data: "))
                .unwrap();
            if data != "[DONE]" {
                serde_json::from_str::<serde_json::Value>(data).unwrap();
            }
        }
        serde_json::from_str::<serde_json::Value>(&openai_json()).unwrap();
        serde_json::from_str::<serde_json::Value>(&completion_json()).unwrap();
        serde_json::from_str::<serde_json::Value>(&anthropic_json()).unwrap();
    }
}
