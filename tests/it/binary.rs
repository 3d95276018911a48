//! The built binary: `check`, config errors, the embedded default, and SIGTERM with a stream in flight.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;

use crate::support::client;
use crate::support::mock::{Behavior, Mock};
use crate::support::process::{binary, signal, spawn, spawn_logged, spawn_wrapped};

#[test]
fn check_accepts_valid_configs_and_names_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "backends:\n  local: { type: echo }\n").unwrap();
    let out = binary()
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "backends:\n  v:\n    type: openai\n    instances:\n      - url: http://a\n      - url: 5\n").unwrap();
    let out = binary()
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    assert!(stderr.contains("backends.v.instances[1].url"), "{stderr}");
    assert!(stderr.contains("expected a string"), "{stderr}");
}

/// Issue 23 item 3: `request_log:` with settings and no `enabled` logs; `check` says which optional
/// features are on, and the served gateway writes the request's line.
#[tokio::test]
async fn a_written_request_log_section_logs_and_check_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{ host: 127.0.0.1, port: 0 }}\nbackends:\n  local: {{ type: echo }}\nrequest_log: {{ dir: '{}', format: sharegpt }}\n",
            logs.display()
        ),
    )
    .unwrap();
    let out = binary()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("request_log: on"), "{stderr}");
    assert!(stderr.contains("cache: off"), "{stderr}");

    let (mut child, base) = spawn(&config);
    let response = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({"messages": [{"role": "user", "content": "log me"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // SIGTERM flushes the log before the process exits.
    assert!(signal(&child, "TERM"));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let files: Vec<_> = std::fs::read_dir(&logs).unwrap().collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    assert!(text.contains("Echo: log me"), "{text}");
}

/// Issue 23 §7: a URL's password never shows in a config error — not in `check`, not in the log line
/// of a rejected reload, not in the 400 of `POST /admin/reload`; the URL is shown with `*****`.
#[tokio::test]
async fn url_passwords_are_redacted_in_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "backends:\n  up: { type: openai, url: 'http://user:PASS@host:99999' }\n";
    let bad_path = dir.path().join("bad.yaml");
    std::fs::write(&bad_path, bad).unwrap();
    let out = binary()
        .args(["check", "--config"])
        .arg(&bad_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("backends.up.url"), "{stderr}");
    assert!(stderr.contains("http://*****@host:99999"), "{stderr}");
    assert!(!stderr.contains("PASS"), "{stderr}");

    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, "backends:\n  local: { type: echo }\n").unwrap();
    let (mut child, base, log) = spawn_logged(&path);
    std::fs::write(&path, bad).unwrap();
    let response = client()
        .post(format!("{base}/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(body.contains("http://*****@host:99999"), "{body}");
    assert!(!body.contains("PASS"), "{body}");
    // SIGTERM, not a kill: the log writer flushes what it holds before the process exits.
    assert!(signal(&child, "TERM"));
    let _ = child.wait();
    // The child is gone: its log ends, and every line of it is read.
    let lines: Vec<String> = log.iter().collect();
    let rejected: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("config reload rejected"))
        .collect();
    assert!(
        !rejected.is_empty(),
        "no rejected reload logged: {lines:#?}"
    );
    assert!(
        rejected
            .iter()
            .all(|line| line.contains("*****@host:99999")),
        "{rejected:#?}"
    );
    assert!(
        lines.iter().all(|line| !line.contains("PASS")),
        "{lines:#?}"
    );
}

#[test]
fn examples_all_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in walk(&root) {
        let name = entry.to_string_lossy().to_string();
        if !(name.ends_with(".yaml") || name.ends_with(".toml") || name.ends_with(".json5")) {
            continue;
        }
        let out = binary()
            .args(["check", "--config"])
            .arg(&entry)
            .env("OPENAI_API_KEY", "x")
            .env("ANTHROPIC_API_KEY", "x")
            .env("VLLM_KEY", "x")
            .env("TEAM_A_KEY", "x")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected the example configs, found {checked}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn sigterm_lets_a_stream_in_flight_finish_then_exits_zero() {
    let mock = Mock::start().await;
    mock.script([Behavior::Gate]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{ shutdown_grace_s: 20 }}\nbackends:\n  up: {{ type: openai, url: '{}' }}\n",
            mock.base()
        ),
    )
    .unwrap();
    let (mut child, base) = spawn(&config);
    let response = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({"stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());

    assert!(signal(&child, "TERM"));
    // New connections are refused once shutdown started.
    let mut refused = false;
    for _ in 0..100 {
        if client().get(format!("{base}/health")).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "the gateway kept accepting connections after SIGTERM"
    );
    mock.release();
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(
        String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"),
        "stream was cut by shutdown"
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn embedded_default_serves_echo_without_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut child = binary()
        .current_dir(dir.path())
        .env("PORT", port.to_string())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let line = loop {
        let line = lines.next().expect("gateway exited").unwrap();
        if line.contains("ai-gateway listening") {
            break line;
        }
    };
    assert!(line.contains("embedded default"), "{line}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let body: serde_json::Value = runtime.block_on(async {
        client()
            .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
            .json(&serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(body["choices"][0]["message"]["content"], "Echo: hi");
    let _ = child.kill();
    let _ = child.wait();
}

/// `ai-gateway check` run in `dir`, returning the source it reports.
fn checked_source(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = binary();
    command.current_dir(dir).arg("check").args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn config_sources_follow_the_documented_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let echo = "backends:\n  local: { type: echo }\n";
    let embedded = checked_source(path, &[], &[]);
    assert!(embedded.contains("embedded default"), "{embedded}");

    std::fs::write(
        path.join("config.json5"),
        "{ backends: { local: { type: 'echo' } } }",
    )
    .unwrap();
    assert!(checked_source(path, &[], &[]).contains("ai-gateway: config.json5:"));

    std::fs::write(path.join("config.yaml"), echo).unwrap();
    assert!(checked_source(path, &[], &[]).contains("ai-gateway: config.yaml:"));

    std::fs::create_dir(path.join("config")).unwrap();
    std::fs::write(path.join("config/default.yaml"), echo).unwrap();
    std::fs::write(
        path.join("config/production.toml"),
        "[[upstreams]]\nname = \"local\"\nurl = \"http://127.0.0.1:9\"\nformat = \"openai-chat\"\n",
    )
    .unwrap();
    assert!(checked_source(path, &[], &[]).contains("ai-gateway: config/default.yaml:"));
    assert!(
        checked_source(path, &[], &[("GATEWAY_ENV", "production")])
            .contains("ai-gateway: config/production.toml:")
    );

    std::fs::write(path.join("dotenv.yaml"), echo).unwrap();
    std::fs::write(path.join(".env"), "CONFIG_FILE=dotenv.yaml\n").unwrap();
    assert!(
        checked_source(path, &[], &[]).contains("ai-gateway: dotenv.yaml:"),
        ".env sets CONFIG_FILE"
    );

    std::fs::write(path.join("env.yaml"), echo).unwrap();
    assert!(
        checked_source(path, &[], &[("CONFIG_FILE", "env.yaml")]).contains("ai-gateway: env.yaml:"),
        "the real environment wins over .env"
    );

    std::fs::write(path.join("flag.yaml"), echo).unwrap();
    assert!(
        checked_source(
            path,
            &["--config", "flag.yaml"],
            &[("CONFIG_FILE", "env.yaml")]
        )
        .contains("ai-gateway: flag.yaml:")
    );
}

/// Issue 23 §7: out of file descriptors, the gateway closes the connections that waited longest for a
/// request, so a real request still gets in. The binary runs with 128 descriptors; 200 connections
/// that send nothing (timeouts far away) fill them and the listen queue, then a request comes.
#[tokio::test]
async fn idle_connections_are_shed_when_descriptors_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.yaml");
    std::fs::write(
        &config,
        "server: { header_timeout_s: 600, idle_timeout_s: 600 }\nbackends:\n  local: { type: echo }\n",
    )
    .unwrap();
    let (mut child, base, log) = spawn_wrapped(&config, &["prlimit", "--nofile=128:128", "--"]);
    let addr = base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let response = client()
        .get(format!("{base}/health"))
        .timeout(Duration::from_secs(20))
        .send()
        .await;
    let status = response.map(|response| response.status().as_u16());
    // Some of the idle connections were closed to make room.
    let mut closed = 0;
    for stream in &mut idle {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(
            Duration::from_millis(1),
            tokio::io::AsyncReadExt::read(stream, &mut byte),
        )
        .await;
        if matches!(read, Ok(Ok(0) | Err(_))) {
            closed += 1;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let lines: Vec<String> = log.iter().collect();
    assert_eq!(status.ok(), Some(200), "{lines:#?}");
    assert!(closed > 0, "no idle connection was closed");
    assert!(
        lines
            .iter()
            .any(|line| line.contains("closed the longest idle ones")),
        "{lines:#?}"
    );
}
