//! The built binary with the request log on: SIGTERM while records are queued and a stream is still in
//! flight loses no record.

use std::process::Command;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::client;
use crate::support::mock::{Behavior, Mock};
use crate::support::process::spawn;

#[tokio::test]
async fn sigterm_writes_every_queued_request_log_record_before_exit() {
    let mock = Mock::start().await;
    mock.script([Behavior::Gate]);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let config = dir.path().join("gw.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{ shutdown_grace_s: 20 }}\nbackends:\n  up: {{ type: openai, url: '{}' }}\n  local: {{ type: echo }}\nrequest_log: {{ enabled: true, dir: '{}', format: sharegpt }}\n",
            mock.base(),
            logs.display()
        ),
    )
    .unwrap();
    let (child, base) = spawn(&config);

    // A stream held open by the upstream: its record can only be queued after SIGTERM.
    let response = client()
        .post(format!("{base}/v1/chat/completions"))
        .header("x-request-id", "held-stream")
        .json(&json!({"model": "up", "stream": true, "messages": [{"role": "user", "content": "wait"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    assert!(!stream.next().await.unwrap().unwrap().is_empty());

    // A burst of finished requests, whose records are queued for the writer thread.
    const BURST: usize = 300;
    let burst_client = client();
    let requests = (0..BURST).map(|i| {
        let base = base.clone();
        let client = burst_client.clone();
        async move {
            client
                .post(format!("{base}/v1/chat/completions"))
                .header("x-request-id", format!("burst-{i}"))
                .json(&json!({"model": "local", "messages": [{"role": "user", "content": format!("n{i}")}]}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status, 200);
    }

    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    // Let the held stream finish during the grace period.
    mock.release();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let mut records: Vec<Value> = Vec::new();
    for entry in std::fs::read_dir(&logs).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(text.ends_with('\n'), "last line cut: {text:?}");
        records.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    assert_eq!(records.len(), BURST + 1);
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), BURST + 1, "duplicate records");
    let held = records
        .iter()
        .find(|r| r["id"] == "held-stream")
        .unwrap_or_else(|| panic!("the stream finished after SIGTERM was not logged"));
    let conversations = held["conversations"].as_array().unwrap();
    assert_eq!(conversations.last().unwrap()["value"], "hello from mock");
    assert!(
        records
            .iter()
            .any(|r| r["id"] == "burst-299" && r["conversations"][1]["value"] == "Echo: n299"),
        "burst records incomplete"
    );
}
