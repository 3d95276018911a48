//! The official `openai` Python SDK (`client.responses.create`, `.stream`, `.retrieve`, `.delete`, tools
//! and a `function_call_output` round trip, `previous_response_id`) against the real gateway over the
//! echo backend, a mock OpenAI chat upstream and a mock Anthropic upstream: `tests/sdk/responses_sdk.py`
//! run by `python3`. Skipped with a note when `import openai` fails, unless `REQUIRE_OPENAI_SDK` is set
//! (CI installs the pinned SDK and sets it; see `.ci/run`).

use std::path::Path;
use std::process::Stdio;

use crate::support::Gateway;
use crate::support::mock::{self, Mock};
use crate::support::mock_anthropic::{self, Answer, MockAnthropic};

/// True when `python3` can import the SDK; otherwise a note (or a failure under `REQUIRE_OPENAI_SDK`).
async fn sdk_available() -> bool {
    let found = tokio::process::Command::new("python3")
        .args(["-c", "import openai"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success());
    if !found {
        let required = std::env::var("REQUIRE_OPENAI_SDK").is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "REQUIRE_OPENAI_SDK is set but `python3 -c \"import openai\"` fails; pip install openai"
        );
        eprintln!("note: the openai Python SDK is not installed; skipping the SDK test");
    }
    found
}

/// Run the SDK script for `model` whose backend answers as `kind`.
async fn run_script(gateway: &Gateway, model: &str, kind: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/responses_sdk.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(gateway.url("/v1"))
        .arg(model)
        .arg(kind)
        // The SDK reads proxies and keys from the environment; none may interfere.
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK script failed for {kind}:\n{stdout}\n{stderr}"
    );
    assert_eq!(stdout.trim(), format!("ok {kind}"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_speaks_responses_through_every_backend() {
    if !sdk_available().await {
        return;
    }
    let chat = Mock::start().await;
    let anthropic = MockAnthropic::start().await;
    let gateway = Gateway::start(&format!(
        "default_backend: local
backends:
  local: {{ type: echo }}
  up: {{ type: openai, url: '{}' }}
  claude: {{ type: anthropic, url: '{}', api_key: sk-ant }}
models:
  chat-model: {{ backend: up, model: qwen }}
  claude-model: {{ backend: claude, model: claude-sonnet-4 }}
",
        chat.base(),
        anthropic.base()
    ))
    .await;

    run_script(&gateway, "local", "echo").await;

    // The script's upstream calls in order: text, text (stream), tool calls, text, tool calls
    // (stream), text.
    chat.script([
        mock::Behavior::Reply,
        mock::Behavior::Reply,
        mock::Behavior::ToolCalls,
        mock::Behavior::Reply,
        mock::Behavior::ToolCalls,
    ]);
    run_script(&gateway, "chat-model", "chat").await;
    let requests = chat.requests();
    assert_eq!(requests.len(), 6);
    assert!(requests.iter().all(|r| r.body["model"] == "qwen"));
    // The tool outputs reached the chat upstream as tool messages after the calls.
    let messages = requests[3].body["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "tool"], "{messages:?}");
    assert_eq!(messages[2]["content"], "result of get_weather");

    use mock_anthropic::Behavior::Reply;
    anthropic.script([
        Reply(Answer::Text),
        Reply(Answer::Text),
        Reply(Answer::Tools),
        Reply(Answer::Text),
        Reply(Answer::Tools),
    ]);
    run_script(&gateway, "claude-model", "anthropic").await;
    let requests = anthropic.requests();
    assert_eq!(requests.len(), 6);
    // The second request continued the first: its history, then the new input.
    let turns = requests[1].body["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3, "{turns:?}");
    assert_eq!(turns[1]["content"], "Hello from claude");
    // Tool results lead the user turn that answers the calls.
    let answer = requests[3].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(answer["content"][0]["type"], "tool_result", "{answer}");
    assert_eq!(answer["content"][0]["tool_use_id"], "toolu_01");
}
