//! Bad input gets a 4xx OpenAI-format error naming the problem, and the gateway keeps serving.

use serde_json::Value;

use crate::support::{Gateway, client};

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"].is_string(),
        "OpenAI error shape expected: {body}"
    );
    assert!(
        body["error"]["type"].is_string(),
        "OpenAI error shape expected: {body}"
    );
    (status, body)
}

#[tokio::test]
async fn each_bad_request_is_named_and_the_gateway_keeps_serving() {
    let gateway =
        Gateway::start("server: { max_body_bytes: 2048 }\nbackends:\n  local: { type: echo }\n")
            .await;
    let cases: Vec<(&[u8], u16, &str)> = vec![
        (b"{\"messages\": [", 400, "invalid JSON body"),
        (b"not json", 400, "invalid JSON body"),
        (b"", 400, "request body is empty"),
        (b"[]", 400, "must be a JSON object"),
        (b"{}", 400, "missing required field 'messages'"),
        (
            b"{\"messages\": []}",
            400,
            "'messages' must be a non-empty array",
        ),
        (
            b"{\"messages\": \"hi\"}",
            400,
            "messages: invalid type: string",
        ),
        (
            b"{\"messages\": [{\"role\": \"user\", \"content\": 42}]}",
            400,
            "messages[0].content: invalid type: integer",
        ),
        (
            b"{\"messages\": [{\"content\": \"x\"}]}",
            400,
            "missing required field 'messages[0].role'",
        ),
        (
            b"{\"model\": 7, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
            400,
            "model: invalid type",
        ),
        (
            b"{\"stream\": \"yes\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
            400,
            "stream: invalid type",
        ),
        (
            b"{\"messages\": [{\"role\": \"system\", \"content\": \"x\"}]}",
            400,
            "no user message",
        ),
        (
            b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}",
            400,
            "not valid UTF-8",
        ),
    ];
    for (body, status, message) in cases {
        let response = client()
            .post(gateway.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let (got, error) = error_of(response).await;
        assert_eq!(
            got,
            status,
            "body {:?}: {error}",
            String::from_utf8_lossy(body)
        );
        let text = error["error"]["message"].as_str().unwrap();
        assert!(
            text.contains(message),
            "body {:?}: expected '{message}' in '{text}'",
            String::from_utf8_lossy(body)
        );
    }

    let big = format!(
        "{{\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "x".repeat(4096)
    );
    let (status, error) = error_of(gateway.post("/v1/chat/completions", &big).await).await;
    assert_eq!(status, 413);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_body_bytes")
    );

    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(status, 415);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("text/plain")
    );

    let (status, body) = gateway
        .chat(serde_json::json!({"messages": [{"role": "user", "content": "still here"}]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "Echo: still here");
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405_with_json() {
    let gateway = Gateway::start(ai_gateway::config::EMBEDDED_DEFAULT).await;
    let (status, body) = error_of(
        client()
            .get(gateway.url("/v2/nothing"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v2/nothing")
    );
    let (status, body) = error_of(
        client()
            .get(gateway.url("/v1/chat/completions"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 405);
    assert!(body["error"]["message"].as_str().unwrap().contains("GET"));
    let (status, _) = error_of(
        client()
            .delete(gateway.url("/v1/models"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn completions_and_embeddings_validate_their_fields() {
    let gateway = Gateway::start(ai_gateway::config::EMBEDDED_DEFAULT).await;
    let (status, body) =
        error_of(gateway.post("/v1/completions", "{\"max_tokens\": 3}").await).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'prompt'")
    );
    assert_eq!(body["error"]["param"], "prompt");
    let (status, body) = error_of(gateway.post("/v1/embeddings", "{\"input\": 5}").await).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("input"));
}
