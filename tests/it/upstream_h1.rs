//! Our HTTP/1.1 client against malformed upstream answers (issue 23): after every kind of bad answer,
//! the next requests through the same pool reach the same upstream and each gets its own answer —
//! no bytes of the bad answer are read as another request's, and a connection whose framing went
//! wrong is never used again.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::Gateway;
use crate::support::raw_upstream::{
    After, RawUpstream, Script, Seen, good_answer, good_events, good_json,
};

fn script(answer: impl FnOnce(&str) -> (Vec<u8>, After) + Send + 'static) -> Script {
    Box::new(answer)
}

/// A complete, well-formed answer that belongs to no request: if a client gets it, answers were mixed.
fn smuggled() -> Vec<u8> {
    good_answer("smuggled")
}

fn chunked_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        .to_vec()
}

fn chunk(data: &[u8]) -> Vec<u8> {
    [format!("{:x}\r\n", data.len()).as_bytes(), data, b"\r\n"].concat()
}

/// Every kind of malformed (or connection-ending) answer: its name, whether the first client still
/// gets its own answer (the body itself was readable), and the script.
fn bad_answers() -> Vec<(&'static str, bool, Script)> {
    vec![
        (
            "a status line that is not one",
            false,
            script(|_| {
                let answer = [
                    &b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\n{}"[..],
                    &smuggled(),
                ];
                (answer.concat(), After::KeepOpen)
            }),
        ),
        (
            "a bad chunk size",
            false,
            script(|content| {
                let body = good_json(content);
                let answer = [
                    chunked_head(),
                    b"zz\r\n".to_vec(),
                    chunk(body.as_bytes()),
                    b"0\r\n\r\n".to_vec(),
                    smuggled(),
                ];
                (answer.concat(), After::KeepOpen)
            }),
        ),
        (
            "an empty chunk-size line",
            false,
            script(|content| {
                let body = good_json(content);
                let answer = [
                    chunked_head(),
                    b"\r\n".to_vec(),
                    chunk(body.as_bytes()),
                    b"0\r\n\r\n".to_vec(),
                    smuggled(),
                ];
                (answer.concat(), After::KeepOpen)
            }),
        ),
        (
            "chunk data not followed by CRLF",
            false,
            script(|content| {
                let body = good_json(content);
                let answer = [
                    chunked_head(),
                    format!("{:x}\r\n{body}XX0\r\n\r\n", body.len()).into_bytes(),
                    smuggled(),
                ];
                (answer.concat(), After::KeepOpen)
            }),
        ),
        (
            "a bare LF after the last chunk, then another response",
            false,
            script(|content| {
                let body = good_json(content);
                let answer = [
                    chunked_head(),
                    chunk(body.as_bytes()),
                    b"0\r\n\n".to_vec(),
                    smuggled(),
                ];
                (answer.concat(), After::KeepOpen)
            }),
        ),
        (
            "a body cut short by the upstream closing",
            false,
            script(|content| {
                let body = good_json(content);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len() + 100
                );
                (answer.into_bytes(), After::Close)
            }),
        ),
        (
            "Content-Length shorter than the body",
            false,
            script(|content| {
                let body = good_json(content);
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{body}");
                ([answer.into_bytes(), smuggled()].concat(), After::KeepOpen)
            }),
        ),
        (
            "garbage after the body",
            true,
            script(|content| {
                let answer = [good_answer(content), b"GARBAGE\r\n\r\n".to_vec()];
                (answer.concat(), After::KeepOpen)
            }),
        ),
        (
            "a second response after the body",
            true,
            script(|content| ([good_answer(content), smuggled()].concat(), After::KeepOpen)),
        ),
        (
            "a 1xx answer followed by junk",
            false,
            script(|_| {
                let answer = [
                    &b"HTTP/1.1 100 Continue\r\n\r\nJUNK\r\n\r\n"[..],
                    &smuggled(),
                ];
                (answer.concat(), After::KeepOpen)
            }),
        ),
        (
            "a head larger than 64 KiB",
            false,
            script(|content| {
                let body = good_json(content);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: {}\r\n\r\n{body}",
                    "a".repeat(70 * 1024),
                    body.len()
                );
                ([answer.into_bytes(), smuggled()].concat(), After::KeepOpen)
            }),
        ),
        (
            "a switch to a protocol nobody asked for (101)",
            false,
            script(|_| {
                let answer = [
                    &b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n"[..],
                    &smuggled(),
                ];
                (answer.concat(), After::KeepOpen)
            }),
        ),
        (
            "an invalid Content-Length",
            false,
            script(|content| {
                let body = good_json(content);
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: 1_0\r\n\r\n{body}");
                ([answer.into_bytes(), smuggled()].concat(), After::KeepOpen)
            }),
        ),
        (
            "both Transfer-Encoding and Content-Length",
            true,
            script(|content| {
                let body = good_json(content);
                let answer = [
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\
                      transfer-encoding: chunked\r\n\r\n"
                        .to_vec(),
                    chunk(body.as_bytes()),
                    b"0\r\n\r\n".to_vec(),
                ];
                (answer.concat(), After::KeepOpen)
            }),
        ),
        (
            "HTTP/1.0 without keep-alive",
            true,
            script(|content| {
                let body = good_json(content);
                let answer = format!(
                    "HTTP/1.0 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                (answer.into_bytes(), After::KeepOpen)
            }),
        ),
        (
            "Connection: close",
            true,
            script(|content| {
                let body = good_json(content);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                (answer.into_bytes(), After::KeepOpen)
            }),
        ),
        (
            "a body delimited by the upstream closing",
            true,
            script(|content| {
                let answer = format!("HTTP/1.1 200 OK\r\n\r\n{}", good_json(content));
                (answer.into_bytes(), After::Close)
            }),
        ),
        (
            "a close without an answer",
            false,
            script(|_| (Vec::new(), After::Close)),
        ),
        (
            "a stream whose chunk framing breaks after an event",
            false,
            script(|content| {
                let events = good_events(content);
                let answer = [
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                      transfer-encoding: chunked\r\n\r\n"
                        .to_vec(),
                    chunk(events[0].as_bytes()),
                    b"zz\r\n".to_vec(),
                    smuggled(),
                ];
                (answer.concat(), After::KeepOpen)
            }),
        ),
    ]
}

fn config(upstream: &RawUpstream) -> String {
    format!(
        "default_backend: up\nbackends:\n  up: {{ type: openai, url: \"{}\", retries: 0 }}\n",
        upstream.url()
    )
}

/// Ask for `content` (streamed when `stream`): the status and the answer's text (a non-stream
/// answer's content, or a stream's whole body).
async fn ask(gateway: &Gateway, content: &str, stream: bool) -> (u16, String) {
    thread_local! {
        // One client for the test's requests: building one costs more than a request.
        static CLIENT: reqwest::Client = crate::support::client();
    }
    let body = json!({"stream": stream, "messages": [{"role": "user", "content": content}]});
    let request = CLIENT
        .with(Clone::clone)
        .post(gateway.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send();
    let response = tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .unwrap_or_else(|_| panic!("no answer to {content:?}"))
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    if stream {
        return (status, text);
    }
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let answer = parsed["choices"][0]["message"]["content"]
        .as_str()
        .map_or(text, str::to_owned);
    (status, answer)
}

#[tokio::test]
async fn after_every_malformed_upstream_answer_the_next_requests_get_their_own() {
    for (kind, first_served, bad) in bad_answers() {
        let upstream = RawUpstream::start(vec![bad]).await;
        let gateway = Gateway::start(&config(&upstream)).await;
        let stream = kind.starts_with("a stream");
        let (status, answer) = ask(&gateway, "first", stream).await;
        assert!(!answer.contains("smuggled"), "{kind}: {status} {answer}");
        if first_served {
            assert_eq!(
                (status, answer.as_str()),
                (200, "answer to first"),
                "{kind}"
            );
        } else if !stream {
            assert!(
                status >= 500,
                "{kind}: the bad answer was served: {status} {answer}"
            );
        }
        for content in ["second", "third"] {
            assert_eq!(
                ask(&gateway, content, false).await,
                (200, format!("answer to {content}")),
                "{kind}: the request after the bad answer"
            );
        }
        let seen = upstream.seen();
        let contents: Vec<&str> = seen.iter().map(|s| s.content.as_str()).collect();
        assert_eq!(contents, ["first", "second", "third"], "{kind}");
        // The connection the bad answer came on is not used again; the next one is kept alive.
        assert_ne!(seen[1].connection, seen[0].connection, "{kind}: {seen:?}");
        assert_eq!(seen[2].connection, seen[1].connection, "{kind}: {seen:?}");
    }
}

/// The control for the test above: after a correct answer the connection is reused, so that test's
/// "not used again" is the pool's choice, not an accident.
#[tokio::test]
async fn after_a_correct_answer_the_connection_is_reused() {
    let upstream = RawUpstream::start(Vec::new()).await;
    let gateway = Gateway::start(&config(&upstream)).await;
    for content in ["first", "second"] {
        assert_eq!(
            ask(&gateway, content, false).await,
            (200, format!("answer to {content}"))
        );
    }
    let (status, body) = ask(&gateway, "streamed", true).await;
    assert_eq!(status, 200);
    assert!(body.contains("data: [DONE]"), "{body}");
    assert_eq!(
        ask(&gateway, "third", false).await,
        (200, "answer to third".to_owned())
    );
    let connections: Vec<usize> = upstream.seen().iter().map(|s| s.connection).collect();
    assert_eq!(connections, [0, 0, 0, 0]);
}

/// A `Content-Length` longer than the body, and then nothing: the call times out (`timeout_s`), its
/// connection is dropped, and the next request gets its own answer on a new one.
#[tokio::test(start_paused = true)]
async fn a_body_shorter_than_its_length_times_out_and_the_next_request_is_answered() {
    let upstream = RawUpstream::start(vec![script(|content| {
        let body = good_json(content);
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len() + 10
        );
        (answer.into_bytes(), After::Hold)
    })])
    .await;
    let gateway = Gateway::start(&format!(
        "default_backend: up\nbackends:\n  up: {{ type: openai, url: \"{}\", retries: 0, timeout_s: 5 }}\n",
        upstream.url()
    ))
    .await;
    let (status, answer) = ask(&gateway, "first", false).await;
    assert!(status >= 500, "{status} {answer}");
    assert_eq!(
        ask(&gateway, "second", false).await,
        (200, "answer to second".to_owned())
    );
    let seen = upstream.seen();
    assert_eq!(
        seen,
        [
            Seen {
                connection: 0,
                content: "first".into()
            },
            Seen {
                connection: 1,
                content: "second".into()
            }
        ]
    );
}
