//! A raw-TCP OpenAI upstream on 127.0.0.1:0 whose answers are scripted byte by byte, per request: for
//! the tests of what the gateway's HTTP/1.1 client does with malformed answers. Unscripted requests
//! get a correct answer naming the request's own content, so an answer that reaches the wrong client
//! shows.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream does after writing an answer (in one write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Read the connection's next request.
    KeepOpen,
    /// Close the connection.
    Close,
    /// Neither read nor close: the connection stays silent until the gateway closes it.
    Hold,
}

/// One scripted answer, built from the content of the request it answers.
pub type Script = Box<dyn FnOnce(&str) -> (Vec<u8>, After) + Send>;

/// A request as the upstream received it: on which connection (numbered from 0 in accept order), and
/// its first message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub connection: usize,
    pub content: String,
}

pub struct RawUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

/// The answer a correct upstream gives: `answer to <content>`, as JSON with `Content-Length`.
pub fn good_answer(content: &str) -> Vec<u8> {
    let body = good_json(content);
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The JSON of [`good_answer`].
pub fn good_json(content: &str) -> String {
    json!({
        "id": "chatcmpl-raw",
        "object": "chat.completion",
        "created": 1,
        "model": "raw",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": format!("answer to {content}")},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
    })
    .to_string()
}

/// A streamed answer's events for `content` (OpenAI SSE, `[DONE]` last).
pub fn good_events(content: &str) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": 1, "model": "raw",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
        })
    };
    vec![
        format!(
            "data: {}\n\n",
            chunk(
                json!({"role": "assistant", "content": "answer to "}),
                Value::Null
            )
        ),
        format!(
            "data: {}\n\n",
            chunk(json!({"content": content}), Value::Null)
        ),
        format!("data: {}\n\n", chunk(json!({}), json!("stop"))),
        "data: [DONE]\n\n".to_owned(),
    ]
}

impl RawUpstream {
    /// Serve: the n-th request (in arrival order) gets the n-th script, later ones a correct answer.
    pub async fn start(script: Vec<Script>) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let recorded = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut connection = 0;
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(
                    stream,
                    connection,
                    Arc::clone(&script),
                    Arc::clone(&recorded),
                ));
                connection += 1;
            }
        });
        RawUpstream { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    connection: usize,
    script: Arc<Mutex<VecDeque<Script>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(body) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let content = request["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        seen.lock().unwrap().push(Seen {
            connection,
            content: content.clone(),
        });
        let next = script.lock().unwrap().pop_front();
        let (answer, after) = match next {
            Some(script) => script(&content),
            None if request["stream"] == true => {
                let mut answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                                   transfer-encoding: chunked\r\n\r\n"
                    .to_vec();
                for event in good_events(&content) {
                    answer
                        .extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
                }
                answer.extend_from_slice(b"0\r\n\r\n");
                (answer, After::KeepOpen)
            }
            None => (good_answer(&content), After::KeepOpen),
        };
        if stream.write_all(&answer).await.is_err() {
            return;
        }
        match after {
            After::KeepOpen => {}
            After::Close => return,
            After::Hold => {
                // Wait for the gateway to give up the connection.
                let mut rest = [0u8; 1024];
                while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

/// The body of the next request on the connection (framed by `Content-Length`, as the gateway sends
/// it); `None` once the gateway closed it.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                let body = buf[end + 4..end + 4 + length].to_vec();
                buf.drain(..end + 4 + length);
                return Some(body);
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
