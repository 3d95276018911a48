//! Resource bounds (issue 23 §7): connections that send nothing or stop between requests are closed,
//! a request body that stops arriving gets 408, and an upstream answer too large to buffer is a 502
//! naming the limit — read no further than it.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
