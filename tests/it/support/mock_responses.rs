//! A mock upstream that serves the OpenAI Responses API natively (`POST /v1/responses`, as OpenAI and
//! recent vLLM do) on 127.0.0.1:0: the exact `response` object and the official event stream
//! (`event:` lines, `sequence_number`s, no `[DONE]`), its own ids (`resp_upstream…`, `msg_up…`), and
//! scripted faults. Every request is recorded so tests can assert what was forwarded.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

use super::mock::Recorded;

/// What the mock does with one request.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Answer "Hello from responses" (JSON, or the event stream when `stream` is true).
    Reply,
    /// Answer with one function call `get_weather({"city":"Paris"})`, arguments streamed in two pieces.
    ToolCall,
    /// Answer with this status and an OpenAI error body.
    Status(u16),
    /// Stream this many events, then break the connection.
    StreamCut(usize),
}

#[derive(Default)]
pub struct MockState {
    pub requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Behavior>>,
}

pub struct MockResponses {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl MockResponses {
    pub async fn start() -> MockResponses {
        let state = Arc::new(MockState::default());
        let app = Router::new()
            .route("/v1/responses", post(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        MockResponses { addr, state }
    }

    /// Base URL without `/v1` (the gateway adds it).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.state.script.lock().unwrap().extend(behaviors);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }
}

/// The upstream's own `response` object.
fn response(model: &str, status: &str, output: Value, usage: Value) -> Value {
    json!({
        "id": "resp_upstream_1", "object": "response", "created_at": 1741290958, "status": status,
        "background": false, "error": null, "incomplete_details": null, "instructions": null,
        "max_output_tokens": null, "model": model, "output": output, "parallel_tool_calls": true,
        "previous_response_id": null, "reasoning": {"effort": null, "summary": null}, "store": true,
        "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": null, "metadata": {},
        "service_tier": "default"
    })
}

fn usage() -> Value {
    json!({"input_tokens": 9, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 4,
           "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 13})
}

fn message_item(text: &str, status: &str) -> Value {
    json!({"id": "msg_up1", "type": "message", "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(arguments: &str, status: &str) -> Value {
    json!({"id": "fc_up1", "type": "function_call", "status": status, "call_id": "call_up1",
           "name": "get_weather", "arguments": arguments})
}

/// The official event stream of an answer, `(event type, data)` with sequence numbers.
pub fn events(model: &str, tool: bool) -> Vec<(String, Value)> {
    let mut events: Vec<Value> = vec![
        json!({"type": "response.created", "response": response(model, "in_progress", json!([]), Value::Null)}),
        json!({"type": "response.in_progress", "response": response(model, "in_progress", json!([]), Value::Null)}),
    ];
    let output = if tool {
        events.extend([
            json!({"type": "response.output_item.added", "output_index": 0, "item": call_item("", "in_progress")}),
            json!({"type": "response.function_call_arguments.delta", "item_id": "fc_up1", "output_index": 0, "delta": "{\"city\":"}),
            json!({"type": "response.function_call_arguments.delta", "item_id": "fc_up1", "output_index": 0, "delta": "\"Paris\"}"}),
            json!({"type": "response.function_call_arguments.done", "item_id": "fc_up1", "output_index": 0, "arguments": "{\"city\":\"Paris\"}"}),
            json!({"type": "response.output_item.done", "output_index": 0, "item": call_item("{\"city\":\"Paris\"}", "completed")}),
        ]);
        json!([call_item("{\"city\":\"Paris\"}", "completed")])
    } else {
        events.push(json!({"type": "response.output_item.added", "output_index": 0, "item": {"id": "msg_up1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}}));
        events.push(json!({"type": "response.content_part.added", "item_id": "msg_up1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}));
        for delta in ["Hello", " from", " responses"] {
            events.push(json!({"type": "response.output_text.delta", "item_id": "msg_up1", "output_index": 0, "content_index": 0, "delta": delta, "logprobs": []}));
        }
        events.extend([
            json!({"type": "response.output_text.done", "item_id": "msg_up1", "output_index": 0, "content_index": 0, "text": "Hello from responses", "logprobs": []}),
            json!({"type": "response.content_part.done", "item_id": "msg_up1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "Hello from responses", "annotations": []}}),
            json!({"type": "response.output_item.done", "output_index": 0, "item": message_item("Hello from responses", "completed")}),
        ]);
        json!([message_item("Hello from responses", "completed")])
    };
    events.push(json!({"type": "response.completed", "response": response(model, "completed", output, usage())}));
    events
        .into_iter()
        .enumerate()
        .map(|(seq, mut event)| {
            event["sequence_number"] = json!(seq);
            (event["type"].as_str().unwrap().to_owned(), event)
        })
        .collect()
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
        headers,
        body: body.clone(),
    });
    let behavior = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Behavior::Reply);
    let model = body["model"].as_str().unwrap_or("mock-model").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let (tool, cut) = match behavior {
        Behavior::Status(status) => {
            let error = json!({"error": {"message": "mock responses failure", "type": "server_error", "param": null, "code": null}});
            let mut response = Response::new(Body::from(error.to_string()));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            return response;
        }
        Behavior::Reply => (false, None),
        Behavior::ToolCall => (true, None),
        Behavior::StreamCut(after) => (false, Some(after)),
    };
    if !stream {
        let output = if tool {
            json!([call_item("{\"city\":\"Paris\"}", "completed")])
        } else {
            json!([message_item("Hello from responses", "completed")])
        };
        let mut response = Response::new(Body::from(
            response(&model, "completed", output, usage()).to_string(),
        ));
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        return response;
    }
    let frames: Vec<Bytes> = events(&model, tool)
        .into_iter()
        .map(|(name, data)| Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
        .collect();
    let stream = futures_util::stream::unfold(
        (frames.into_iter().enumerate(), cut),
        |(mut frames, cut)| async move {
            let (i, frame) = frames.next()?;
            if cut.is_some_and(|after| i >= after) {
                // Let the frames already yielded reach the wire before the connection breaks.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Some((Err(std::io::Error::other("cut")), (frames, cut)));
            }
            Some((Ok::<Bytes, std::io::Error>(frame), (frames, cut)))
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}
