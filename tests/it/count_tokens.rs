//! `POST /v1/messages/count_tokens`: an estimate of the prompt's tokens, Anthropic-shaped errors.

use serde_json::{Value, json};

use crate::support::{Gateway, client};

#[tokio::test]
async fn counts_grow_with_the_prompt_and_errors_are_anthropic_shaped() {
    let gateway = Gateway::start(ai_gateway::config::EMBEDDED_DEFAULT).await;
    let count = |body: Value| {
        let url = gateway.url("/v1/messages/count_tokens");
        async move {
            let response = client().post(url).json(&body).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, small) =
        count(json!({"model": "claude", "messages": [{"role": "user", "content": "Hello world"}]}))
            .await;
    assert_eq!(status, 200);
    let small = small["input_tokens"].as_u64().unwrap();
    assert!(small >= 2, "{small}");
    let (_, large) = count(json!({
        "model": "claude",
        "system": "You are a careful assistant.",
        "messages": [{"role": "user", "content": "Hello world, ".repeat(50)}]
    }))
    .await;
    assert!(large["input_tokens"].as_u64().unwrap() > small * 10);
    let (status, error) = count(json!({"model": "claude", "messages": "nope"})).await;
    assert_eq!(status, 400);
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
}
