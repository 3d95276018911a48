//! The response cache end to end: HIT/MISS, `"cached"` flags, bypasses, errors never stored, SSE replay
//! of cached answers, completed streams stored, and `/stats` (seed 004).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::mock::{Behavior, Mock};
use crate::support::{Gateway, client, sse_data};

async fn gateway(mock: &Mock) -> Gateway {
    Gateway::start(&format!(
        "default_backend: vllm\nbackends:\n  vllm: {{ type: openai, url: '{}' }}\ncache: {{ enabled: true, ttl_s: 60, max_entries: 50 }}\n",
        mock.base()
    ))
    .await
}

fn chat(text: &str) -> Value {
    json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

async fn post(
    gateway: &Gateway,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let mut request = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

fn x_cache(headers: &http::HeaderMap) -> &str {
    headers
        .get("x-cache")
        .map_or("<none>", |v| v.to_str().unwrap())
}

/// Wait until the cache holds `n` entries (answers are stored in the background).
async fn wait_cache_size(gateway: &Gateway, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = gateway.get_json("/stats").await;
        if stats["cache_size"] == n {
            return;
        }
        assert!(Instant::now() < deadline, "cache_size never {n}: {stats}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn stream_text(body: &str) -> String {
    sse_data(body)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| {
            let chunk: Value = serde_json::from_str(d).unwrap();
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn second_identical_request_is_a_hit_and_stats_count_it() {
    let mock = Mock::start().await;
    let gateway = gateway(&mock).await;
    let stats0 = gateway.get_json("/stats").await;
    assert_eq!(stats0["cache_size"], 0, "{stats0}");
    assert_eq!(stats0["cache_capacity"], 50, "{stats0}");

    let (status, headers, text) = post(&gateway, &chat("cache me"), &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(x_cache(&headers), "MISS");
    let first: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(first["cached"], false, "{first}");
    wait_cache_size(&gateway, 1).await;

    let (status, headers, text) =
        post(&gateway, &chat("cache me"), &[("x-request-id", "again-1")]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(x_cache(&headers), "HIT");
    let second: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(second["cached"], true, "{second}");
    assert_eq!(second["id"], "again-1", "a hit carries this request's id");
    assert_eq!(second["choices"], first["choices"]);
    assert_eq!(second["usage"], first["usage"]);
    assert_eq!(mock.requests().len(), 1, "the upstream is called once");

    // Different sampling parameters are a different entry.
    let mut hotter = chat("cache me");
    hotter["temperature"] = json!(1);
    let (_, headers, _) = post(&gateway, &hotter, &[]).await;
    assert_eq!(x_cache(&headers), "MISS");
    assert_eq!(mock.requests().len(), 2);

    let stats = gateway.get_json("/stats").await;
    assert_eq!(stats["hits"], 1, "{stats}");
    assert_eq!(stats["misses"], 2, "{stats}");
}

#[tokio::test]
async fn no_cache_header_and_cache_false_bypass_and_the_flag_is_stripped() {
    let mock = Mock::start().await;
    let gateway = gateway(&mock).await;
    post(&gateway, &chat("bypass"), &[]).await;
    wait_cache_size(&gateway, 1).await;

    let (status, headers, _) =
        post(&gateway, &chat("bypass"), &[("cache-control", "no-cache")]).await;
    assert_eq!(status, 200);
    assert_ne!(x_cache(&headers), "HIT");
    assert_eq!(
        mock.requests().len(),
        2,
        "Cache-Control: no-cache reaches the upstream"
    );
    let (status, headers, _) = post(
        &gateway,
        &chat("bypass"),
        &[("cache-control", "max-age=0, No-Store")],
    )
    .await;
    assert_eq!(status, 200);
    assert_ne!(x_cache(&headers), "HIT");
    assert_eq!(mock.requests().len(), 3, "directives are case-insensitive");

    let mut flagged = chat("bypass");
    flagged["cache"] = json!(false);
    let (status, headers, text) = post(&gateway, &flagged, &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_ne!(x_cache(&headers), "HIT");
    let requests = mock.requests();
    assert_eq!(requests.len(), 4, "\"cache\": false reaches the upstream");
    let forwarded = &requests[3].body;
    assert!(
        forwarded.get("cache").is_none(),
        "the cache flag is not forwarded: {forwarded}"
    );
    assert_eq!(forwarded["messages"], chat("bypass")["messages"]);

    // `"cache": true` is stripped too and uses the cache.
    let mut on = chat("bypass");
    on["cache"] = json!(true);
    let (_, headers, _) = post(&gateway, &on, &[]).await;
    assert_eq!(x_cache(&headers), "HIT");
    assert_eq!(mock.requests().len(), 4);
}

#[tokio::test]
async fn errors_are_never_cached() {
    let mock = Mock::start().await;
    let gateway = gateway(&mock).await;
    mock.script([Behavior::Status(
        500,
        r#"{"error":{"message":"boom"}}"#,
        None,
    )]);
    let (status, _, _) = post(&gateway, &chat("flaky"), &[]).await;
    assert_eq!(status, 502);
    let (status, headers, text) = post(&gateway, &chat("flaky"), &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(x_cache(&headers), "MISS");
    assert_eq!(mock.requests().len(), 2);
    // A cut stream is never stored either.
    mock.script([Behavior::StreamCut(2)]);
    let mut streamed = chat("cut");
    streamed["stream"] = json!(true);
    let (status, _, _) = post(&gateway, &streamed, &[]).await;
    assert_eq!(status, 200);
    wait_cache_size(&gateway, 1).await; // only the 200 answer
    let (_, headers, _) = post(&gateway, &chat("cut"), &[]).await;
    assert_eq!(x_cache(&headers), "MISS", "a partial stream was stored");
}

#[tokio::test]
async fn a_stream_request_after_a_cached_answer_is_replayed_as_sse() {
    let mock = Mock::start().await;
    let gateway = gateway(&mock).await;
    post(&gateway, &chat("replay"), &[]).await;
    wait_cache_size(&gateway, 1).await;

    let mut streamed = chat("replay");
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, headers, body) = post(&gateway, &streamed, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(x_cache(&headers), "HIT");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(stream_text(&body), "hello from mock");
    let data = sse_data(&body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 7, "{usage}");
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn a_completed_stream_is_stored_and_replayed() {
    let mock = Mock::start().await;
    let gateway = gateway(&mock).await;
    let mut streamed = chat("stream once");
    streamed["stream"] = json!(true);
    let (status, headers, body) = post(&gateway, &streamed, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(x_cache(&headers), "MISS");
    assert_eq!(stream_text(&body), "hello from mock");
    wait_cache_size(&gateway, 1).await;

    let (status, headers, body) = post(&gateway, &streamed, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(x_cache(&headers), "HIT");
    assert_eq!(stream_text(&body), "hello from mock");
    assert_eq!(sse_data(&body).last().unwrap(), "[DONE]");

    let (status, headers, text) = post(&gateway, &chat("stream once"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(x_cache(&headers), "HIT");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "hello from mock"
    );
    assert_eq!(answer["cached"], true);
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn anthropic_messages_are_cached_and_replayed_as_anthropic_sse() {
    let mock = Mock::start().await;
    let gateway = gateway(&mock).await;
    let message = json!({"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "cache me"}]});
    let send = |body: Value| {
        client()
            .post(gateway.url("/v1/messages"))
            .json(&body)
            .send()
    };
    let response = send(message.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(x_cache(response.headers()), "MISS");
    let first: Value = response.json().await.unwrap();
    assert_eq!(first["type"], "message", "{first}");
    wait_cache_size(&gateway, 1).await;

    let response = send(message.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(x_cache(response.headers()), "HIT");
    let second: Value = response.json().await.unwrap();
    assert_eq!(second["content"], first["content"], "{second}");
    assert_eq!(second["cached"], true, "{second}");

    let mut streamed = message;
    streamed["stream"] = json!(true);
    let response = send(streamed).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(x_cache(response.headers()), "HIT");
    let body = response.text().await.unwrap();
    let events: Vec<Value> = sse_data(&body)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["type"], "message_start", "{body}");
    assert_eq!(events.last().unwrap()["type"], "message_stop", "{body}");
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .map(|e| e["delta"]["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(text, "hello from mock");
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let mock = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "default_backend: vllm\nbackends:\n  vllm: {{ type: openai, url: '{}' }}\ncache: {{ enabled: true, ttl_s: 1 }}\n",
        mock.base()
    ))
    .await;
    // The entry is inserted after `sent` and before `seen`: fresh until sent + 1 s, gone by seen + 1 s.
    let sent = Instant::now();
    post(&gateway, &chat("short lived"), &[]).await;
    wait_cache_size(&gateway, 1).await;
    let seen = Instant::now();
    let (_, headers, _) = post(&gateway, &chat("short lived"), &[]).await;
    if sent.elapsed() < Duration::from_millis(900) {
        assert_eq!(x_cache(&headers), "HIT");
    }
    tokio::time::sleep(
        (seen + Duration::from_millis(1100)).saturating_duration_since(Instant::now()),
    )
    .await;
    let (status, headers, _) = post(&gateway, &chat("short lived"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(x_cache(&headers), "MISS", "expired after ttl_s");
}

#[tokio::test]
async fn cache_hits_still_pass_authentication_and_rate_limits() {
    let mock = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "default_backend: vllm\nbackends:\n  vllm: {{ type: openai, url: '{}' }}\ncache: {{ enabled: true }}\nkeys:\n  - {{ name: c, key: sk-c, rate_limit: {{ requests: 2, window_s: 60 }} }}\n",
        mock.base()
    ))
    .await;
    let auth = [("x-api-key", "sk-c")];
    let (status, _, _) = post(&gateway, &chat("gated"), &auth).await;
    assert_eq!(status, 200);
    wait_cache_size(&gateway, 1).await;
    let (status, headers, text) = post(&gateway, &chat("gated"), &[]).await;
    assert_eq!(status, 401, "a cached answer needs a key too: {text}");
    assert_ne!(x_cache(&headers), "HIT");
    let (status, headers, _) = post(&gateway, &chat("gated"), &auth).await;
    assert_eq!(status, 200);
    assert_eq!(x_cache(&headers), "HIT");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    let (status, _, text) = post(&gateway, &chat("gated"), &auth).await;
    assert_eq!(status, 429, "hits count against the key's limit: {text}");
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn a_streamed_legacy_completion_is_stored_and_replayed_as_a_completion() {
    let mock = Mock::start().await;
    // A complete legacy completions stream, finish_reason and all (as OpenAI and vLLM send it).
    mock.script([Behavior::Sse(concat!(
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"hi there\",\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n"
    ))]);
    let gateway = gateway(&mock).await;
    let completion = |stream: bool| {
        client()
            .post(gateway.url("/v1/completions"))
            .json(&json!({"model": "m", "prompt": "Say hi", "max_tokens": 5, "stream": stream}))
            .send()
    };
    let response = completion(true).await.unwrap();
    assert_eq!(response.status(), 200);
    let streamed = response.text().await.unwrap();
    assert!(streamed.contains("hi there"), "{streamed}");
    wait_cache_size(&gateway, 1).await;
    let response = completion(false).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(x_cache(response.headers()), "HIT");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "text_completion", "{body}");
    assert_eq!(body["choices"][0]["text"], "hi there", "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn a_stream_after_a_cached_legacy_completion_streams_completion_chunks() {
    let mock = Mock::start().await;
    let gateway = gateway(&mock).await;
    let completion = |stream: bool| {
        client()
            .post(gateway.url("/v1/completions"))
            .json(&json!({"model": "m", "prompt": "Say hi", "max_tokens": 5, "stream": stream}))
            .send()
    };
    let response = completion(false).await.unwrap();
    assert_eq!(response.status(), 200);
    wait_cache_size(&gateway, 1).await;
    let response = completion(true).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().unwrap(), "[DONE]", "{body}");
    let mut text = String::new();
    for payload in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(chunk["object"], "text_completion", "{body}");
        text.push_str(chunk["choices"][0]["text"].as_str().unwrap_or(""));
    }
    assert_eq!(text, "hello from mock");
}

#[tokio::test]
async fn a_completed_anthropic_stream_is_stored_with_its_usage_and_replayed() {
    let mock = Mock::start().await;
    // With a token limit on, a stream without a usage chunk is counted by the gateway.
    let gateway = Gateway::start(&format!(
        "default_backend: vllm\nbackends:\n  vllm: {{ type: openai, url: '{}' }}\ncache: {{ enabled: true }}\nrate_limit:\n  per_ip: {{ tokens: 100000 }}\n",
        mock.base()
    ))
    .await;
    let message = json!({"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "tell me"}]});
    let mut streamed = message.clone();
    streamed["stream"] = json!(true);
    let response = client()
        .post(gateway.url("/v1/messages"))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(x_cache(response.headers()), "MISS");
    let body = response.text().await.unwrap();
    assert!(body.contains("message_stop"), "{body}");
    wait_cache_size(&gateway, 1).await;

    let response = client()
        .post(gateway.url("/v1/messages"))
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(x_cache(response.headers()), "HIT");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["type"], "message", "{answer}");
    assert_eq!(answer["content"][0]["text"], "hello from mock", "{answer}");
    // The mock's stream has no usage chunk: the entry carries the gateway's count, not zeros.
    assert!(
        answer["usage"]["output_tokens"].as_u64().unwrap() > 0,
        "{answer}"
    );
    assert_eq!(mock.requests().len(), 1);
}

/// An OpenAI stream without a usage chunk, with the request log on (whose tap collects the text) and a
/// token limit: the stored answer carries the gateway's count of the streamed text, not zero.
#[tokio::test]
async fn a_stream_without_usage_is_counted_from_the_logged_text() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&format!(
        "default_backend: vllm\nbackends:\n  vllm: {{ type: openai, url: '{}' }}\ncache: {{ enabled: true }}\nrequest_log: {{ enabled: true, dir: '{}' }}\nrate_limit:\n  per_ip: {{ tokens: 100000 }}\n",
        mock.base(),
        dir.path().display()
    ))
    .await;
    let mut streamed = chat("count me");
    streamed["stream"] = json!(true);
    let (status, headers, text) = post(&gateway, &streamed, &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(x_cache(&headers), "MISS");
    assert!(
        !text.contains("\"usage\""),
        "the mock's stream has no usage: {text}"
    );
    wait_cache_size(&gateway, 1).await;

    let (status, headers, text) = post(&gateway, &chat("count me"), &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(x_cache(&headers), "HIT");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"], "hello from mock",
        "{answer}"
    );
    let counted = ai_gateway::tokens::count("hello from mock");
    assert_eq!(answer["usage"]["completion_tokens"], counted, "{answer}");
}

/// With the request log on, the answer is read once for the log and stored without a second check:
/// the next identical requests are hits, and every one is logged with the answer the client got.
#[tokio::test]
async fn with_the_request_log_on_answers_are_stored_hit_and_logged() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&format!(
        "default_backend: vllm\nbackends:\n  vllm: {{ type: openai, url: '{}' }}\ncache: {{ enabled: true, ttl_s: 60, max_entries: 50 }}\nrequest_log: {{ enabled: true, dir: '{}' }}\n",
        mock.base(),
        dir.path().display()
    ))
    .await;
    let (status, headers, text) = post(&gateway, &chat("cache and log"), &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(x_cache(&headers), "MISS");
    let first: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(first["cached"], false, "{first}");
    wait_cache_size(&gateway, 1).await;

    let (status, headers, text) = post(&gateway, &chat("cache and log"), &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(x_cache(&headers), "HIT");
    let second: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(second["cached"], true, "{second}");
    assert_eq!(second["choices"], first["choices"]);
    let mut streamed = chat("cache and log");
    streamed["stream"] = json!(true);
    let (status, headers, text) = post(&gateway, &streamed, &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(x_cache(&headers), "HIT", "a stream request is replayed");
    assert_eq!(mock.requests().len(), 1);

    gateway.state.flush().await;
    let logged: String = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    let answer = first["choices"][0]["message"]["content"].as_str().unwrap();
    let lines: Vec<Value> = logged
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "a miss, a hit, a replayed stream: {logged}");
    for line in &lines {
        let turns = line["conversations"].as_array().unwrap();
        assert_eq!(turns.last().unwrap()["value"], answer, "{line}");
    }
}

/// Issue 23 item 5, seed 004's LRU: `max_entries: 2`, completions with prompts A, B, C, then C again is
/// a hit (and A, evicted, a miss); a hit counts as a use.
#[tokio::test]
async fn max_entries_keeps_the_most_recently_used_answers() {
    let mock = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "default_backend: vllm\nbackends:\n  vllm: {{ type: openai, url: '{}' }}\ncache: {{ max_entries: 2 }}\n",
        mock.base()
    ))
    .await;
    let complete = |prompt: &str| {
        let body = json!({"model": "m", "prompt": prompt, "max_tokens": 5});
        let gateway = &gateway;
        async move {
            let (status, _, body) = gateway.send("/v1/completions", &body, &[]).await;
            assert_eq!(status, 200, "{body}");
            body["cached"].as_bool().unwrap()
        }
    };
    let mut seen = Vec::new();
    for prompt in ["A", "B", "C", "C", "B", "D", "C", "B", "A"] {
        seen.push((prompt, complete(prompt).await));
    }
    assert_eq!(
        seen,
        [
            ("A", false),
            ("B", false),
            ("C", false),
            ("C", true),
            ("B", true),
            ("D", false), // evicts C: B was used after it
            ("C", false),
            ("B", false), // D and C were used last
            ("A", false),
        ]
    );
}
