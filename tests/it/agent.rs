//! Issue 25: coding-agent requests (hundreds of KB) through the real gateway: a first turn's tokenizing
//! and decoding run off the runtime thread, so small requests on other connections are not held up.

use serde_json::{Value, json};

use crate::support::mock::Mock;
use crate::support::{Gateway, client};

/// A chat history of about `bytes` bytes of tool output, all of it new to the tokenizer.
fn agent_turn(bytes: usize) -> Value {
    let mut messages = vec![json!({"role": "system", "content": "You are a coding agent."})];
    let mut size = 0;
    let mut i = 0;
    while size < bytes {
        let output = format!(
            "file {i}: {}",
            "fn handler(request: &Request) -> Result<Response, Error> { todo() }\n".repeat(40)
        );
        size += output.len();
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{i}"),
            "type": "function", "function": {"name": "read_file", "arguments": format!("{{\"path\":\"src/f{i}.rs\"}}")}}]}));
        messages
            .push(json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": output}));
        i += 1;
    }
    messages.push(json!({"role": "user", "content": "now fix it"}));
    json!({"model": "m", "messages": messages})
}

/// The gateway runs on this test's single-threaded runtime, as it does pinned to one core. While a
/// 1 MB first turn is decoded and tokenized (token limits on), the runtime thread keeps serving: a
/// heartbeat task on it never waits long, and a small request is answered before the large one.
#[tokio::test(flavor = "current_thread")]
async fn a_large_first_turn_does_not_hold_up_the_runtime() {
    // The mock parses every body whole: on a runtime of its own, so only the gateway shares this one.
    let (mock_tx, mock_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mock = Mock::start().await;
            mock_tx.send(mock.base()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let mock_base = mock_rx.recv().unwrap();
    let gateway = Gateway::start(&format!(
        "default_backend: vllm\nserver: {{ max_body_bytes: 4000000 }}\nbackends:\n  vllm: {{ type: openai, url: '{}' }}\nkeys:\n  - {{ name: a, key: ka, rate_limit: {{ tokens: 1000000000, window_s: 60 }} }}\n",
        mock_base
    ))
    .await;
    let client = client();
    let large = client
        .post(gateway.url("/v1/chat/completions"))
        .header("x-api-key", "ka")
        .header("content-type", "application/json")
        .body(agent_turn(1_000_000).to_string())
        .send();
    // A heartbeat on the runtime thread: the longest gap between two beats is how long the thread
    // was held by something else.
    let done = std::sync::atomic::AtomicBool::new(false);
    let heartbeat = async {
        let mut longest = std::time::Duration::ZERO;
        let mut last = std::time::Instant::now();
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            longest = longest.max(last.elapsed());
            last = std::time::Instant::now();
        }
        longest
    };
    let started = std::time::Instant::now();
    let request = async {
        let response = large.await.unwrap();
        let status = response.status();
        let elapsed = started.elapsed();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (status, elapsed)
    };
    let ((status, elapsed), longest) = tokio::join!(request, heartbeat);
    assert_eq!(status, 200);
    assert!(gateway.state.tokens().counted() > 100);
    // Decoding and counting a megabyte take most of the request's time (in a debug build, much
    // longer than any scheduling hiccup); none of it may hold the runtime thread.
    assert!(
        longest < elapsed / 4,
        "the runtime thread was held for {longest:?} of a {elapsed:?} request"
    );
}
