//! A mock OpenAI upstream with a fixed answer: one JSON body for plain requests and fixed SSE chunks
//! (then `[DONE]`) for streamed ones, so a test can script tool calls and non-ASCII text exactly.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use http::HeaderMap;
use serde_json::Value;

struct Answer {
    json: Value,
    chunks: Vec<Value>,
    headers: Mutex<Vec<HeaderMap>>,
}

pub struct Canned {
    pub addr: SocketAddr,
    answer: Arc<Answer>,
}

impl Canned {
    pub async fn start(json: Value, chunks: Vec<Value>) -> Canned {
        let answer = Arc::new(Answer {
            json,
            chunks,
            headers: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .with_state(answer.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Canned { addr, answer }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Headers of every request received, in order.
    pub fn headers(&self) -> Vec<HeaderMap> {
        self.answer.headers.lock().unwrap().clone()
    }
}

async fn handle(State(answer): State<Arc<Answer>>, request: Request) -> Response {
    answer
        .headers
        .lock()
        .unwrap()
        .push(request.headers().clone());
    let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let (content_type, text) = if body["stream"].as_bool().unwrap_or(false) {
        let mut out = String::new();
        for chunk in &answer.chunks {
            out.push_str(&format!("data: {chunk}\n\n"));
        }
        out.push_str("data: [DONE]\n\n");
        ("text/event-stream", out)
    } else {
        ("application/json", answer.json.to_string())
    };
    let mut response = Response::new(Body::from(text));
    response
        .headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    response
}
