//! The HTTP/1.1 wire as clients speak it, on raw TCP: pipelining, chunked request bodies,
//! `Expect: 100-continue`, HTTP/1.0 clients, HEAD, and malformed or ambiguous heads refused with a
//! named error (the gateway's own server side, `server/h1.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Gateway;
use crate::support::mock::{Behavior, Mock};

const ECHO: &str = "backends:\n  local: { type: echo }\n";

/// A gateway in front of a mock OpenAI upstream (streams come back as SSE chunks).
async fn with_mock() -> (Mock, Gateway) {
    let mock = Mock::start().await;
    let yaml = format!(
        "default_backend: up\nbackends:\n  up: {{ type: openai, url: \"{}/v1\" }}\n",
        mock.base()
    );
    let gateway = Gateway::start(&yaml).await;
    (mock, gateway)
}

/// One response read off a connection: status, lower-cased head, body (chunked coding removed).
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn has(&self, field: &str) -> bool {
        self.head.lines().any(|line| line == field)
    }
}

/// Reads responses from one connection, keeping what arrived past the current one.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    async fn connect(addr: SocketAddr) -> Reader {
        Reader {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// More bytes; `false` at the end of the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(60), self.stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("the gateway neither answered nor closed"))
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn take_until(&mut self, pattern: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(pattern.len()).position(|w| w == pattern) {
                let taken: Vec<u8> = self.buf.drain(..at + pattern.len()).collect();
                return taken;
            }
            assert!(
                self.fill().await,
                "connection closed while waiting for {:?}; got {:?}",
                String::from_utf8_lossy(pattern),
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "connection closed inside a body");
        }
        self.buf.drain(..n).collect()
    }

    /// The next response; `head_only` for the answer to a HEAD request.
    async fn answer(&mut self, head_only: bool) -> Answer {
        let head = String::from_utf8(self.take_until(b"\r\n\r\n").await).unwrap();
        let status: u16 = head[9..12].parse().unwrap();
        let head = head.to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .map(|value| value.trim().parse::<usize>().unwrap());
        let body = if head_only || status == 100 {
            Vec::new()
        } else if head.contains("transfer-encoding: chunked") {
            let mut body = Vec::new();
            loop {
                let line = String::from_utf8(self.take_until(b"\r\n").await).unwrap();
                let size = usize::from_str_radix(line.trim(), 16).unwrap();
                body.extend(self.take(size).await);
                assert_eq!(self.take(2).await, b"\r\n");
                if size == 0 {
                    break body;
                }
            }
        } else if let Some(length) = length {
            self.take(length).await
        } else {
            while self.fill().await {}
            std::mem::take(&mut self.buf)
        };
        Answer { status, head, body }
    }

    /// The server closed the connection (nothing more arrives).
    async fn closed(&mut self) -> bool {
        !self.fill().await && self.buf.is_empty()
    }
}

fn chat(content: &str) -> String {
    format!(r#"{{"messages":[{{"role":"user","content":"{content}"}}]}}"#)
}

fn post(body: &str, extra: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn content(answer: &Answer) -> String {
    answer.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let gateway = Gateway::start(ECHO).await;
    let mut client = Reader::connect(gateway.addr).await;
    let wire = format!(
        "{}{}GET /health HTTP/1.1\r\nhost: gw\r\n\r\n{}",
        post(&chat("first"), ""),
        post(&chat("second"), ""),
        post(&chat("third"), "")
    );
    client.send(wire.as_bytes()).await;
    let first = client.answer(false).await;
    assert_eq!(first.status, 200);
    assert_eq!(content(&first), "Echo: first");
    assert!(first.head.contains("\r\ndate: "), "{}", first.head);
    assert_eq!(content(&client.answer(false).await), "Echo: second");
    let health = client.answer(false).await;
    assert_eq!(health.status, 200);
    assert_eq!(content(&client.answer(false).await), "Echo: third");
}

#[tokio::test]
async fn chunked_bodies_and_expect_continue_are_read() {
    let gateway = Gateway::start(ECHO).await;
    let mut client = Reader::connect(gateway.addr).await;
    client
        .send(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
              transfer-encoding: chunked\r\nexpect: 100-continue\r\n\r\n",
        )
        .await;
    // The body is sent only once the gateway asked for it.
    let interim = client.answer(false).await;
    assert_eq!(interim.status, 100);
    let body = chat("in three chunks");
    let (a, rest) = body.split_at(10);
    let (b, c) = rest.split_at(7);
    for piece in [a, b, c] {
        client
            .send(format!("{:x};ext=1\r\n{piece}\r\n", piece.len()).as_bytes())
            .await;
    }
    client.send(b"0\r\ntrailer: x\r\n\r\n").await;
    let answer = client.answer(false).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(content(&answer), "Echo: in three chunks");

    // A stream from an upstream comes back in chunked coding and ends with [DONE].
    let (_mock, gateway) = with_mock().await;
    let mut client = Reader::connect(gateway.addr).await;
    let stream = r#"{"stream":true,"messages":[{"role":"user","content":"s"}]}"#;
    client.send(post(stream, "").as_bytes()).await;
    let answer = client.answer(false).await;
    assert!(answer.has("transfer-encoding: chunked"), "{}", answer.head);
    assert!(String::from_utf8_lossy(&answer.body).ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn http_1_0_clients_keep_the_connection_only_when_they_ask() {
    let gateway = Gateway::start(ECHO).await;
    let body = chat("old");
    let request = |extra: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
    };
    let mut client = Reader::connect(gateway.addr).await;
    client
        .send(request("connection: keep-alive\r\n").as_bytes())
        .await;
    let answer = client.answer(false).await;
    assert!(answer.has("connection: keep-alive"), "{}", answer.head);
    assert_eq!(content(&answer), "Echo: old");
    // Without the ask, the answer says close and the connection ends after it.
    client.send(request("").as_bytes()).await;
    let answer = client.answer(false).await;
    assert!(answer.has("connection: close"), "{}", answer.head);
    assert_eq!(content(&answer), "Echo: old");
    assert!(client.closed().await);

    // A stream to an HTTP/1.0 client has no chunked coding: it ends with the connection.
    let (_mock, gateway) = with_mock().await;
    let stream = r#"{"stream":true,"messages":[{"role":"user","content":"s"}]}"#;
    let mut client = Reader::connect(gateway.addr).await;
    client
        .send(
            format!(
                "POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\n\
                 connection: keep-alive\r\ncontent-length: {}\r\n\r\n{stream}",
                stream.len()
            )
            .as_bytes(),
        )
        .await;
    let answer = client.answer(false).await;
    assert!(
        !answer.head.contains("transfer-encoding"),
        "{}",
        answer.head
    );
    assert!(answer.has("connection: close"), "{}", answer.head);
    assert!(String::from_utf8_lossy(&answer.body).ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn a_head_request_gets_no_body_and_the_connection_goes_on() {
    let gateway = Gateway::start(ECHO).await;
    let mut client = Reader::connect(gateway.addr).await;
    client
        .send(b"HEAD /health HTTP/1.1\r\nhost: gw\r\n\r\nGET /health HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await;
    let head = client.answer(true).await;
    assert_eq!(head.status, 200);
    // Had the HEAD answer carried body bytes, they would be read here as the next head.
    let get = client.answer(false).await;
    assert_eq!(get.status, 200);
    assert!(!get.body.is_empty());
}

#[tokio::test]
async fn malformed_and_ambiguous_heads_are_refused_by_name() {
    let gateway =
        Gateway::start("server: { max_body_bytes: 2048 }\nbackends:\n  local: { type: echo }\n")
            .await;
    let many_fields: String = (0..120).map(|i| format!("x-f{i}: v\r\n")).collect();
    let long_field = format!("x-long: {}\r\n", "a".repeat(70 * 1024));
    let cases: Vec<(String, u16, &str)> = vec![
        ("GARBAGE\r\n\r\n".into(), 400, "invalid HTTP request"),
        (
            "POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: chunked\r\n\
             content-length: 5\r\n\r\n"
                .into(),
            400,
            "both transfer-encoding and content-length",
        ),
        // RFC 9112 §6.3: codings that do not end in chunked leave the length unknown — 400 (issue 23;
        // it was 501 before).
        (
            "POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n".into(),
            400,
            "transfer-encoding 'gzip' does not end in chunked",
        ),
        (
            "POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n".into(),
            501,
            "unsupported transfer-encoding 'gzip': only chunked is understood",
        ),
        (
            "POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: chunked\r\n\
             transfer-encoding: chunked\r\n\r\n"
                .into(),
            400,
            "chunked applied more than once",
        ),
        (
            "POST /v1/chat/completions HTTP/1.1\r\ncontent-length: +5\r\n\r\nhello".into(),
            400,
            "invalid content-length",
        ),
        (
            "POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"
                .into(),
            400,
            "invalid content-length",
        ),
        (
            "POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".into(),
            400,
            "invalid chunk size",
        ),
        // Issue 23: an empty chunk-size line (httparse read it as the last chunk) and a bare LF in a
        // chunk extension were taken; hyper and nginx refuse both.
        (
            "POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n\
             \r\n5\r\nhello\r\n0\r\n\r\n"
                .into(),
            400,
            "invalid chunk size line",
        ),
        (
            "POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n\
             5;ext\nhello\r\n0\r\n\r\n"
                .into(),
            400,
            "bare LF",
        ),
        (
            format!("GET /health HTTP/1.1\r\n{many_fields}\r\n"),
            431,
            "more than 100 header fields",
        ),
        (
            format!("GET /health HTTP/1.1\r\n{long_field}\r\n"),
            431,
            "larger than 64 KiB",
        ),
        // Longer than server.max_body_bytes: refused from its length, the body never read.
        (
            "POST /v1/chat/completions HTTP/1.1\r\ncontent-type: application/json\r\n\
             content-length: 100000\r\n\r\n"
                .into(),
            413,
            "server.max_body_bytes",
        ),
    ];
    for (wire, status, message) in cases {
        let mut client = Reader::connect(gateway.addr).await;
        client.send(wire.as_bytes()).await;
        let answer = client.answer(false).await;
        assert_eq!(answer.status, status, "{wire:.80}");
        let text = answer.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(text.contains(message), "{wire:.80}: {text}");
        assert!(answer.has("connection: close"), "{}", answer.head);
        assert!(client.closed().await, "{wire:.80}: connection left open");
    }
    let (status, body) = gateway
        .chat(serde_json::json!({"messages": [{"role": "user", "content": "still here"}]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "Echo: still here");
}

/// Issue 23: a chunked body ended with `0\r\n\n` (bare LF) made the next request's head be read as
/// trailers, and that request's body — a complete chat request of its own — was served. The framing
/// error is now answered 400 and the connection closed: nothing after it is read or forwarded.
#[tokio::test]
async fn a_bare_lf_after_the_last_chunk_smuggles_no_request() {
    let gateway = Gateway::start(ECHO).await;
    let first = chat("first");
    let inner = post(&chat("smuggled"), "");
    let wire = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n0\r\n\n\
         POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{inner}",
        first.len(),
        inner.len()
    );
    let mut client = Reader::connect(gateway.addr).await;
    client.send(wire.as_bytes()).await;
    let answer = client.answer(false).await;
    assert_eq!(
        answer.status,
        400,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let message = answer.json()["error"]["message"].clone();
    assert!(
        message.as_str().unwrap_or_default().contains("bare LF"),
        "{message}"
    );
    assert!(answer.has("connection: close"), "{}", answer.head);
    assert!(
        client.closed().await,
        "an answer followed the refused request: {:?}",
        String::from_utf8_lossy(&client.buf)
    );
}

/// Issue 23: a chunked body longer than `server.max_body_bytes` was answered 400 "request body is
/// empty"; it gets the 413 a `Content-Length` body of that size gets, and the connection closes.
#[tokio::test]
async fn an_oversized_chunked_body_gets_the_413_a_length_gets() {
    let gateway =
        Gateway::start("server: { max_body_bytes: 2048 }\nbackends:\n  local: { type: echo }\n")
            .await;
    let body = chat(&"x".repeat(3000));
    let mut client = Reader::connect(gateway.addr).await;
    client.send(post(&body, "").as_bytes()).await;
    let by_length = client.answer(false).await;
    assert_eq!(by_length.status, 413);

    let mut chunked = String::from(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n",
    );
    for piece in body.as_bytes().chunks(1000) {
        let piece = std::str::from_utf8(piece).unwrap();
        chunked.push_str(&format!("{:x}\r\n{piece}\r\n", piece.len()));
    }
    chunked.push_str("0\r\n\r\n");
    let mut client = Reader::connect(gateway.addr).await;
    client.send(chunked.as_bytes()).await;
    let answer = client.answer(false).await;
    assert_eq!(
        answer.status,
        413,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["error"], by_length.json()["error"]);
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("server.max_body_bytes")
    );
    assert!(answer.has("connection: close"), "{}", answer.head);
    assert!(client.closed().await);
}

/// A head that stops arriving (a slow-header client) is answered 408 after 30 s and closed.
#[tokio::test(start_paused = true)]
async fn a_head_that_never_ends_times_out() {
    let gateway = Gateway::start(ECHO).await;
    let mut client = Reader::connect(gateway.addr).await;
    client.send(b"GET /health HTTP/1.1\r\nhost: g").await;
    let answer = client.answer(false).await;
    assert_eq!(answer.status, 408);
    assert!(client.closed().await);
}

/// A client that leaves while its (non-stream) request waits on the upstream cancels the upstream call;
/// the gateway notices the closed connection without writing to it.
#[tokio::test]
async fn a_client_leaving_mid_request_cancels_the_upstream_call() {
    let (mock, gateway) = with_mock().await;
    mock.script([Behavior::Hang]);
    let mut client = Reader::connect(gateway.addr).await;
    client.send(post(&chat("wait"), "").as_bytes()).await;
    // The request reached the upstream before the client leaves.
    tokio::time::timeout(Duration::from_secs(10), async {
        while mock.requests().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the request never reached the upstream"));
    let cancelled = mock.state.cancel_seen.notified();
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), cancelled)
        .await
        .unwrap_or_else(|_| panic!("the upstream call was not cancelled after the client left"));
    assert_eq!(
        mock.state
            .cancelled
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}
