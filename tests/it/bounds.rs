//! Resource bounds (issue 23 §7): connections that send nothing or stop between requests are closed,
//! a request body that stops arriving gets 408, and an upstream answer too large to buffer is a 502
//! naming the limit — read no further than it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::support::Gateway;

/// An upstream that answers every request with `status` and a body far larger than any limit
/// (1 GiB, generated as it is written), chunked or with its `Content-Length`; it
/// records how many bytes each answer got out before the gateway closed the connection.
struct Flood {
    addr: SocketAddr,
    written: Arc<std::sync::Mutex<Vec<u64>>>,
}

const FLOOD_BYTES: u64 = 1 << 30;

impl Flood {
    async fn start(status: u16, chunked: bool) -> Flood {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&written);
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let total = flood(socket, status, chunked).await;
                    record.lock().unwrap().push(total);
                });
            }
        });
        Flood { addr, written }
    }

    fn base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// Read one request, then write the huge answer until done or the peer goes; bytes written.
async fn flood(mut socket: TcpStream, status: u16, chunked: bool) -> u64 {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return 0;
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {}", FLOOD_BYTES + 10)
    };
    let head =
        format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{framing}\r\n\r\n");
    if socket.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let piece = vec![b'a'; 64 * 1024];
    let mut total = 0u64;
    let mut out = Vec::with_capacity(piece.len() + 32);
    while total < FLOOD_BYTES {
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(&piece);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(&piece);
        }
        if socket.write_all(&out).await.is_err() {
            return total;
        }
        total += out.len() as u64;
        out.clear();
    }
    total
}

/// Issue 23 §7: an upstream answer, or an error body, larger than `server.max_upstream_body_bytes` is
/// not buffered: the client gets 502 naming the limit, the gateway stops reading at the limit (the
/// upstream could not write its gigabyte), and the next request is served.
#[tokio::test]
async fn an_upstream_body_over_the_limit_is_a_502_naming_it() {
    for (status, chunked) in [
        (200, true),
        (200, false),
        (400, true),
        (400, false),
        (500, true),
    ] {
        let flood = Flood::start(status, chunked).await;
        let yaml = format!(
            "server: {{ max_upstream_body_bytes: 1048576 }}\n\
             backends:\n  up: {{ type: openai, url: '{}', retries: 0 }}\n  local: {{ type: echo }}\n",
            flood.base()
        );
        let gateway = Gateway::start(&yaml).await;
        let case = format!("HTTP {status}, chunked: {chunked}");
        let (code, _, body) = gateway
            .send(
                "/v1/chat/completions",
                &json!({"model": "up", "messages": [{"role": "user", "content": "hi"}]}),
                &[],
            )
            .await;
        assert_eq!(code, 502, "{case}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("limit of 1048576 bytes (server.max_upstream_body_bytes)"),
            "{case}: {message}"
        );
        // The gateway closed the connection long before the upstream's gigabyte was out: what it
        // wrote is the limit plus what the sockets' buffers hold.
        let written = loop {
            if let Some(&written) = flood.written.lock().unwrap().first() {
                break written;
            }
            tokio::task::yield_now().await;
        };
        assert!(
            written < 64 << 20,
            "{case}: the upstream wrote {written} bytes"
        );
        let (code, reply) = gateway
            .chat(json!({"model": "local", "messages": [{"role": "user", "content": "next"}]}))
            .await;
        assert_eq!(code, 200, "{case}: {reply}");
        assert_eq!(reply["choices"][0]["message"]["content"], "Echo: next");
    }
}

/// A gateway with these `server:` settings in front of the echo backend.
async fn echo_with(server: &str) -> Gateway {
    Gateway::start(&format!(
        "server: {{ {server} }}\nbackends:\n  local: {{ type: echo }}\n"
    ))
    .await
}

/// Read until the gateway closes the connection; what it sent, and when it closed. Panics when it
/// stays open for an hour (of the paused clock).
async fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(3600), stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("the connection is still open after an hour"));
        match read {
            Ok(0) | Err(_) => return (received, Instant::now()),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: gw\r\n\r\n";

/// Issue 23 §7: a connection that never sends a byte is closed after `server.header_timeout_s`
/// (silently: there is no request to answer).
#[tokio::test(start_paused = true)]
async fn a_connection_that_never_sends_a_byte_is_closed() {
    let gateway = echo_with("header_timeout_s: 5, idle_timeout_s: 100").await;
    let mut client = TcpStream::connect(gateway.addr).await.unwrap();
    let opened = Instant::now();
    let (received, closed) = until_closed(&mut client).await;
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
    let open_for = closed - opened;
    assert!(
        open_for >= Duration::from_secs(5) && open_for < Duration::from_secs(7),
        "{open_for:?}"
    );
}

/// Issue 23 §7: a keep-alive connection idle after its request is closed after
/// `server.idle_timeout_s`, not before.
#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let gateway = echo_with("header_timeout_s: 5, idle_timeout_s: 20").await;
    let mut client = TcpStream::connect(gateway.addr).await.unwrap();
    client.write_all(HEALTH).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\"healthy\"") {
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the answer");
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();
    let (received, closed) = until_closed(&mut client).await;
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
    let idle_for = closed - answered;
    assert!(
        idle_for >= Duration::from_secs(20) && idle_for < Duration::from_secs(23),
        "{idle_for:?}"
    );
}

/// A head cut short gets 408 naming the setting, `server.header_timeout_s` after its first byte.
#[tokio::test(start_paused = true)]
async fn a_head_cut_short_gets_408_after_the_header_timeout() {
    let gateway = echo_with("header_timeout_s: 3").await;
    let mut client = TcpStream::connect(gateway.addr).await.unwrap();
    client
        .write_all(b"GET /health HTTP/1.1\r\nhost:")
        .await
        .unwrap();
    let sent = Instant::now();
    let (received, closed) = until_closed(&mut client).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("server.header_timeout_s"), "{text}");
    assert!(
        closed - sent >= Duration::from_secs(3),
        "{:?}",
        closed - sent
    );
}

/// Issue 23 §7: a body whose bytes come further apart than `server.body_timeout_s` gets 408 in the
/// OpenAI error shape, then the connection closes; bytes that keep coming within the timeout keep
/// the body being read, however long it takes in all.
#[tokio::test(start_paused = true)]
async fn a_body_trickled_slower_than_the_body_timeout_gets_408() {
    let gateway = echo_with("body_timeout_s: 2").await;
    let body = r#"{"messages":[{"role":"user","content":"slow"}]}"#;
    let mut client = TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    // One byte a second for 5 s: within the timeout each time.
    for byte in &body.as_bytes()[..5] {
        tokio::time::sleep(Duration::from_secs(1)).await;
        client.write_all(&[*byte]).await.unwrap();
    }
    let stalled = Instant::now();
    let (received, closed) = until_closed(&mut client).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let json: Value = serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.contains("server.body_timeout_s"), "{message}");
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert!(
        closed - stalled >= Duration::from_secs(2),
        "{:?}",
        closed - stalled
    );
    // The gateway goes on serving.
    let (status, reply) = gateway
        .chat(json!({"messages": [{"role": "user", "content": "next"}]}))
        .await;
    assert_eq!(status, 200, "{reply}");
}

/// What an HTTP/2 client sends first: the preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Issue 23 §7: an h2c connection that sent only its preface (no stream) is closed after
/// `server.header_timeout_s`, though it never answers the server's frames.
#[tokio::test(start_paused = true)]
async fn an_h2c_connection_that_sent_only_its_preface_is_closed() {
    let gateway = echo_with("header_timeout_s: 5, idle_timeout_s: 100").await;
    let mut client = TcpStream::connect(gateway.addr).await.unwrap();
    client.write_all(H2_PREFACE).await.unwrap();
    let opened = Instant::now();
    let (received, closed) = until_closed(&mut client).await;
    assert!(!received.is_empty(), "the server's SETTINGS");
    let open_for = closed - opened;
    assert!(
        open_for >= Duration::from_secs(5) && open_for < Duration::from_secs(9),
        "{open_for:?}"
    );
}

/// An h2c client over one connection (hyper's client): the sender, and the connection's task, which
/// ends when the server closes the connection.
async fn h2c(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<BoxBody>,
    tokio::task::JoinHandle<Instant>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let ended = tokio::spawn(async move {
        let _ = connection.await;
        Instant::now()
    });
    (sender, ended)
}

type BoxBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

fn chat_request(body: BoxBody) -> http::Request<BoxBody> {
    http::Request::post("http://gw/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

/// Issue 23 §7: an h2c connection with no stream open is closed after `server.idle_timeout_s`;
/// while a stream is open (its body still being sent) it is not, however long that takes.
#[tokio::test(start_paused = true)]
async fn an_idle_h2c_connection_is_closed_after_the_idle_timeout() {
    use http_body_util::BodyExt;
    // The body timeout is far beyond the 30 s gap: under a loaded machine loopback delivery can lag,
    // and the paused clock then runs on to the next timer while the second piece is in flight.
    let gateway =
        echo_with("header_timeout_s: 5, idle_timeout_s: 20, body_timeout_s: 1000000").await;
    let (mut sender, ended) = h2c(gateway.addr).await;
    // A request whose body comes in two pieces 30 s apart: its stream is open the whole time.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(2);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let data = rx.recv().await?;
        Some((Ok(hyper::body::Frame::data(data)), rx))
    });
    let body = BoxBody::new(http_body_util::StreamBody::new(frames));
    let response = tokio::spawn(sender.send_request(chat_request(body)));
    tx.send(bytes::Bytes::from_static(
        br#"{"messages":[{"role":"user","#,
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    tx.send(bytes::Bytes::from_static(br#""content":"h2"}]}"#))
        .await
        .unwrap();
    drop(tx);
    let response = tokio::time::timeout(Duration::from_secs(3600), response)
        .await
        .unwrap_or_else(|_| panic!("no answer after an hour"))
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Echo: h2");
    let answered = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(3600), ended)
        .await
        .unwrap_or_else(|_| panic!("the connection is still open after an hour"))
        .unwrap();
    let idle_for = closed - answered;
    assert!(
        idle_for >= Duration::from_secs(20) && idle_for < Duration::from_secs(25),
        "{idle_for:?}"
    );
}

/// An HTTP/2 request body that stops arriving gets 408 after `server.body_timeout_s`.
#[tokio::test(start_paused = true)]
async fn an_h2c_body_that_stops_arriving_gets_408() {
    use http_body_util::BodyExt;
    let gateway = echo_with("body_timeout_s: 4").await;
    let (mut sender, _ended) = h2c(gateway.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(2);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let data = rx.recv().await?;
        Some((Ok(hyper::body::Frame::data(data)), rx))
    });
    let body = BoxBody::new(http_body_util::StreamBody::new(frames));
    let response = tokio::spawn(sender.send_request(chat_request(body)));
    tx.send(bytes::Bytes::from_static(br#"{"messages":"#))
        .await
        .unwrap();
    let stalled = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(3600), response)
        .await
        .unwrap_or_else(|_| panic!("no answer after an hour"))
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 408);
    assert!(stalled.elapsed() >= Duration::from_secs(4));
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("server.body_timeout_s"), "{message}");
    drop(tx);
}
