//! Issue 23, items 1 and 2: when a stream counts as complete. A client that closes its connection right
//! after reading the stream's terminal event (`[DONE]`, `message_stop`) got the whole answer: the
//! request is a 200, logged whole. Only a client that leaves before it is a 499, logged as far as it
//! went and marked incomplete.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::Gateway;
use crate::support::mock::{Behavior, Mock};
use crate::support::mock_anthropic::{Answer, Behavior as ABehavior, MockAnthropic};

/// A gateway with an OpenAI backend `oa` and an Anthropic backend `an`, logging requests to `dir`.
async fn gateway(openai: &Mock, anthropic: &MockAnthropic, dir: &std::path::Path) -> Gateway {
    Gateway::start(&format!(
        "default_backend: oa\nbackends:\n  oa: {{ type: openai, url: '{}' }}\n  an: {{ type: anthropic, url: '{}', api_key: k }}\nrequest_log: {{ enabled: true, dir: '{}' }}\n",
        openai.base(),
        format_args!("http://{}", anthropic.addr),
        dir.display()
    ))
    .await
}

/// Send a streamed request on a raw connection and read until `marker` has arrived; the connection
/// closes when this returns (the way an SDK's client object closes once it is collected).
async fn read_until(gateway: &Gateway, path: &str, body: &Value, marker: &str) -> String {
    let mut socket = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let body = body.to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&seen).contains(marker) {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {marker:?}: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {marker:?} within 10 s"));
    String::from_utf8_lossy(&seen).into_owned()
}

/// Wait until the gateway has recorded `count` requests on `path` (any status); their count by status.
async fn recorded(gateway: &Gateway, path: &str, count: f64) -> (f64, f64) {
    for _ in 0..500 {
        let scrape = gateway.metrics().await;
        let by_status = |status: &str| {
            scrape
                .get(
                    "http_requests_total",
                    &[("method", "POST"), ("path", path), ("status", status)],
                )
                .unwrap_or(0.0)
        };
        let (ok, gone) = (by_status("200"), by_status("499"));
        if ok + gone >= count {
            return (ok, gone);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gateway did not record {count} requests on {path}");
}

/// The request log's lines, once everything queued is written.
async fn log_lines(gateway: &Gateway, dir: &std::path::Path) -> Vec<Value> {
    gateway.state.flush().await;
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        lines.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    lines
}

fn gpt_turn(line: &Value) -> &str {
    line["conversations"].as_array().unwrap().last().unwrap()["value"]
        .as_str()
        .unwrap()
}

#[tokio::test]
async fn a_client_that_closes_after_the_terminal_event_made_a_complete_request() {
    let openai = Mock::start().await;
    let anthropic = MockAnthropic::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&openai, &anthropic, dir.path()).await;
    // Both upstreams keep their connections open after the stream's last event, as a server may
    // while it finishes its side; the client has everything at the terminal event and leaves.
    openai.script([Behavior::LingerAfterDone]);
    anthropic.script([ABehavior::LingerAfterStop(Answer::Text)]);

    let chat =
        json!({"model": "oa", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let seen = read_until(&gateway, "/v1/chat/completions", &chat, "data: [DONE]").await;
    assert!(seen.contains("mock"), "{seen}");
    let messages = json!({"model": "an", "max_tokens": 20, "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]});
    let seen = read_until(&gateway, "/v1/messages", &messages, "event: message_stop").await;
    assert!(seen.contains("claude"), "{seen}");

    assert_eq!(
        recorded(&gateway, "/v1/chat/completions", 1.0).await,
        (1.0, 0.0)
    );
    assert_eq!(recorded(&gateway, "/v1/messages", 1.0).await, (1.0, 0.0));
    let lines = log_lines(&gateway, dir.path()).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert_eq!(line["status"], 200, "{line}");
        assert!(line.get("incomplete").is_none(), "{line}");
    }
    let by_backend = |name: &str| lines.iter().find(|l| l["backend"] == name).unwrap();
    assert_eq!(gpt_turn(by_backend("oa")), "hello from mock");
    assert_eq!(gpt_turn(by_backend("an")), "Hello from claude");
    openai.release();
    anthropic.release();
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_logged_as_far_as_it_went() {
    let openai = Mock::start().await;
    let anthropic = MockAnthropic::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&openai, &anthropic, dir.path()).await;
    // One chunk a second: the client reads " from" and leaves long before the end.
    openai.script([Behavior::Slow(Duration::from_secs(1))]);
    let chat =
        json!({"model": "oa", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let seen = read_until(&gateway, "/v1/chat/completions", &chat, "\" from\"").await;
    assert!(!seen.contains("[DONE]"), "{seen}");

    assert_eq!(
        recorded(&gateway, "/v1/chat/completions", 1.0).await,
        (0.0, 1.0)
    );
    let lines = log_lines(&gateway, dir.path()).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], 499);
    assert_eq!(lines[0]["incomplete"], true);
    assert!(
        gpt_turn(&lines[0]).starts_with("hello from"),
        "what the client was sent is logged: {}",
        lines[0]
    );
}
