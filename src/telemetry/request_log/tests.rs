//! Tests of the request logger as a whole: files, rotation, the bounded queue, sampling, config; and
//! the record fixtures the layout tests share.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Map, Value};

use super::*;

fn counter_hook() -> (DropHook, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    (
        Arc::new(move || {
            c.fetch_add(1, Ordering::Relaxed);
        }),
        count,
    )
}

/// A logger for `config` writing hour files in `zone`, and the count of records it dropped.
fn start_counted(
    config: &RequestLogConfig,
    redact: Redactor,
    zone: TimeZone,
) -> (RequestLogger, Arc<AtomicU64>) {
    let (hook, dropped) = counter_hook();
    let logger = RequestLogger::start_with_zone(config, redact, hook, zone);
    (logger, dropped)
}

/// A logger with the test redactor in a fresh directory, hours in UTC, and its drop count.
fn redacting_logger(format: LogFormat) -> (tempfile::TempDir, RequestLogger, Arc<AtomicU64>) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (logger, dropped) = start_counted(&cfg(dir.path(), format), redactor(), TimeZone::UTC);
    (dir, logger, dropped)
}

/// A logger whose writer takes the returned lock before each record (hold it to stall the writer),
/// hours in UTC, and its drop count.
fn start_gated(config: &RequestLogConfig) -> (RequestLogger, Arc<AtomicU64>, Arc<Mutex<()>>) {
    let (hook, dropped) = counter_hook();
    let gate = Arc::new(Mutex::new(()));
    let options = WriterOptions {
        zone: TimeZone::UTC,
        gate: Some(gate.clone()),
        wakeups: None,
    };
    let logger = RequestLogger::start_inner(config, no_redaction(), hook, options);
    (logger, dropped, gate)
}

fn cfg(dir: &Path, format: LogFormat) -> RequestLogConfig {
    RequestLogConfig {
        enabled: true,
        dir: dir.to_path_buf(),
        format,
        ..RequestLogConfig::default()
    }
}

pub(super) fn ts(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn simple(id: &str, at: &str) -> LogRecord {
    LogRecord {
        id: id.into(),
        timestamp: ts(at),
        model: "m".into(),
        backend: "local".into(),
        instance: None,
        status: 200,
        prompt_tokens: 2,
        completion_tokens: 3,
        latency_ms: 1.5,
        ttft_ms: None,
        system: None,
        messages: vec![LogMessage::text(LogRole::User, "hi")],
        reply: "Echo: hi".into(),
        reasoning: None,
        reply_tool_calls: Vec::new(),
        request_params: Map::new(),
        incomplete: false,
    }
}

pub(super) fn rich() -> LogRecord {
    let call = LogToolCall {
        id: "call_1".into(),
        name: "weather".into(),
        arguments: r#"{"city":"Zürich","key":"sk-secret"}"#.into(),
    };
    let mut params = Map::new();
    params.insert("model".into(), Value::String("claude".into()));
    params.insert("temperature".into(), serde_json::json!(0.2));
    params.insert("stream".into(), Value::Bool(true));
    params.insert("user".into(), Value::String("sk-secret".into()));
    params.insert("messages".into(), serde_json::json!(["ignored"]));
    LogRecord {
        id: "req-1".into(),
        timestamp: ts("2026-11-22T10:15:00Z"),
        model: "claude".into(),
        backend: "cloud".into(),
        instance: Some("https://api.anthropic.com".into()),
        status: 200,
        prompt_tokens: 10,
        completion_tokens: 7,
        latency_ms: 812.5,
        ttft_ms: Some(120.0),
        system: Some("Tu es un assistant. sk-secret".into()),
        messages: vec![
            LogMessage::text(LogRole::User, "Wetter in Zürich? 日本語 🚀"),
            LogMessage {
                role: LogRole::Assistant,
                text: String::new().into(),
                tool_calls: vec![call.clone()],
                tool_call_id: None,
            },
            LogMessage {
                role: LogRole::Tool,
                text: "12°C".into(),
                tool_calls: Vec::new(),
                tool_call_id: Some("call_1".into()),
            },
        ],
        reply: "Es sind 12°C in Zürich.".into(),
        reasoning: Some("the tool said sk-secret 12".into()),
        reply_tool_calls: vec![LogToolCall {
            id: "call_2".into(),
            name: "notify".into(),
            arguments: r#"{"msg":"✓"}"#.into(),
        }],
        request_params: params,
        incomplete: false,
    }
}

pub(super) fn redactor() -> Redactor {
    super::redactor(|s| Cow::Owned(s.replace("sk-secret", "[REDACTED]")))
}

fn read_lines(dir: &Path, file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn sharegpt_line_has_conversation_tool_calls_and_raw_utf8() {
    let (dir, logger, dropped) = redacting_logger(LogFormat::ShareGpt);
    logger.log(rich());
    logger.shutdown().await;
    assert_eq!(dropped.load(Ordering::Relaxed), 0);

    let raw = std::fs::read_to_string(dir.path().join("20261122_10.jsonl"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        raw.contains("日本語 🚀") && raw.contains("Zürich"),
        "not raw utf-8: {raw}"
    );
    assert!(!raw.contains("\\u"), "escaped: {raw}");
    assert!(!raw.contains("sk-secret"), "not redacted: {raw}");
    assert_eq!(raw.lines().count(), 1);

    let line: Value = serde_json::from_str(raw.trim_end()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(line["id"], "req-1");
    assert_eq!(line["timestamp"], "2026-11-22T10:15:00Z");
    assert_eq!(line["model"], "claude");
    assert_eq!(line["backend"], "cloud");
    assert_eq!(line["instance"], "https://api.anthropic.com");
    assert_eq!(line["status"], 200);
    assert_eq!(
        line["usage"],
        serde_json::json!({"prompt_tokens":10,"completion_tokens":7,"total_tokens":17})
    );
    assert_eq!(line["latency_ms"], 812.5);
    assert_eq!(line["ttft_ms"], 120.0);
    assert_eq!(line["reasoning"], "the tool said [REDACTED] 12");
    let froms: Vec<&str> = line["conversations"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["from"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(froms, ["system", "human", "gpt", "tool", "gpt"]);
    let conv = &line["conversations"];
    assert_eq!(conv[0]["value"], "Tu es un assistant. [REDACTED]");
    assert_eq!(conv[1]["value"], "Wetter in Zürich? 日本語 🚀");
    assert_eq!(conv[2]["tool_calls"][0]["name"], "weather");
    assert_eq!(
        conv[2]["tool_calls"][0]["arguments"],
        r#"{"city":"Zürich","key":"[REDACTED]"}"#
    );
    assert_eq!(conv[3]["tool_call_id"], "call_1");
    assert_eq!(conv[4]["value"], "Es sind 12°C in Zürich.");
    assert_eq!(line["tool_calls"][0]["id"], "call_2");
    assert_eq!(line["tool_calls"][0]["arguments"], r#"{"msg":"✓"}"#);
}

#[tokio::test]
async fn openai_line_has_request_fields_and_reply_appended() {
    let (dir, logger, _) = redacting_logger(LogFormat::OpenAi);
    logger.log(rich());
    let mut plain = simple("req-2", "2026-11-22T10:20:00Z");
    plain.model = "local-model".into();
    logger.log(plain);
    logger.shutdown().await;

    let raw = std::fs::read_to_string(dir.path().join("20261122_10.jsonl"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        raw.contains("日本語 🚀") && !raw.contains("sk-secret"),
        "{raw}"
    );
    let lines = read_lines(dir.path(), "20261122_10.jsonl");
    assert_eq!(lines.len(), 2);
    let line = &lines[0];
    assert_eq!(line["model"], "claude");
    assert_eq!(line["temperature"], 0.2);
    assert_eq!(line["stream"], true);
    assert_eq!(line["user"], "[REDACTED]");
    let messages = line["messages"].as_array().cloned().unwrap_or_default();
    let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "assistant"]);
    assert_eq!(messages[1]["content"], "Wetter in Zürich? 日本語 🚀");
    assert_eq!(messages[2]["content"], Value::Null);
    assert_eq!(messages[2]["tool_calls"][0]["type"], "function");
    assert_eq!(messages[2]["tool_calls"][0]["function"]["name"], "weather");
    assert_eq!(messages[3]["tool_call_id"], "call_1");
    assert_eq!(messages[4]["content"], "Es sind 12°C in Zürich.");
    assert_eq!(
        messages[4]["reasoning_content"],
        "the tool said [REDACTED] 12"
    );
    assert_eq!(
        messages[4]["tool_calls"][0]["function"]["arguments"],
        r#"{"msg":"✓"}"#
    );

    // Without request params the model still appears.
    assert_eq!(lines[1]["model"], "local-model");
    assert_eq!(
        lines[1]["messages"],
        serde_json::json!([
            {"role":"user","content":"hi"},
            {"role":"assistant","content":"Echo: hi"}
        ])
    );
}

#[tokio::test]
async fn files_rotate_by_hour_in_the_logger_time_zone() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let zone = TimeZone::fixed(jiff::tz::offset(5));
    let (logger, _) = start_counted(&cfg(dir.path(), LogFormat::ShareGpt), no_redaction(), zone);
    // 05:59:59Z is 10:59:59 at +05; 06:00:00Z is 11:00; 19:00Z is 00:00 the next day.
    logger.log(simple("a", "2026-11-22T05:59:59Z"));
    logger.log(simple("b", "2026-11-22T06:00:00Z"));
    logger.log(simple("c", "2026-11-22T06:59:59.999Z"));
    logger.log(simple("d", "2026-11-22T19:00:00Z"));
    logger.log(simple("e", "2026-11-22T05:00:00Z"));
    logger.shutdown().await;

    assert_eq!(
        files(dir.path()),
        [
            "20261122_10.jsonl",
            "20261122_11.jsonl",
            "20261123_00.jsonl"
        ]
    );
    let ids = |file: &str| -> Vec<String> {
        read_lines(dir.path(), file)
            .iter()
            .filter_map(|l| l["id"].as_str().map(str::to_owned))
            .collect()
    };
    // Re-opening an hour appends rather than truncating.
    assert_eq!(ids("20261122_10.jsonl"), ["a", "e"]);
    assert_eq!(ids("20261122_11.jsonl"), ["b", "c"]);
    assert_eq!(ids("20261123_00.jsonl"), ["d"]);
}

/// With the writer stalled, `log()` must return at once: everything beyond the queue is dropped and
/// counted, and everything accepted is written after the stall ends.
#[tokio::test]
async fn full_queue_drops_and_counts_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = RequestLogConfig {
        queue_capacity: 8,
        ..cfg(dir.path(), LogFormat::ShareGpt)
    };
    let (logger, dropped, gate) = start_gated(&config);
    let logger = Arc::new(logger);
    let stall = gate.lock().unwrap_or_else(|e| panic!("{e}"));

    let total = 1_000u64;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let producer = logger.clone();
    std::thread::spawn(move || {
        for i in 0..total {
            producer.log(simple(&format!("r{i}"), "2026-11-22T10:00:00Z"));
        }
        let _ = done_tx.send(());
    });
    // A generous bound that only a blocked log() could exceed; the stall is still in place here.
    assert!(
        done_rx.recv_timeout(Duration::from_secs(60)).is_ok(),
        "log() blocked on a stalled writer"
    );
    let dropped_now = dropped.load(Ordering::Relaxed);
    assert!(dropped_now >= total - 9, "dropped only {dropped_now}");
    assert_eq!(logger.dropped(), dropped_now);
    drop(stall);

    logger.shutdown().await;
    let written = read_lines(dir.path(), "20261122_10.jsonl").len() as u64;
    assert_eq!(written + dropped.load(Ordering::Relaxed), total);
    assert!(written >= 8, "written {written}");

    // After shutdown, records are dropped and counted rather than silently lost.
    logger.log(simple("late", "2026-11-22T10:00:00Z"));
    assert_eq!(dropped.load(Ordering::Relaxed), dropped_now + 1);
}

/// Records arriving one by one, faster than the batch interval, are written in batches: the
/// writer is woken once per batch, not once per record (each wake-up is a system call on the
/// request path and a switch to the writer thread).
#[tokio::test]
async fn steady_records_wake_the_writer_once_per_batch() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (hook, _) = counter_hook();
    let wakeups = Arc::new(AtomicU64::new(0));
    let logger = RequestLogger::start_inner(
        &cfg(dir.path(), LogFormat::ShareGpt),
        no_redaction(),
        hook,
        WriterOptions {
            zone: TimeZone::UTC,
            gate: None,
            wakeups: Some(wakeups.clone()),
        },
    );
    let total = 100;
    // The stimulus: one record every 2 ms (≈ 200 ms in all, ten batch intervals).
    for i in 0..total {
        logger.log(simple(&format!("r{i}"), "2026-11-22T10:00:00Z"));
        std::thread::sleep(Duration::from_millis(2));
    }
    logger.shutdown().await;
    assert_eq!(read_lines(dir.path(), "20261122_10.jsonl").len(), total);
    let woken = wakeups.load(Ordering::Relaxed);
    assert!(
        woken <= 30,
        "the writer was woken {woken} times for {total} records"
    );
}

#[tokio::test]
async fn shutdown_flushes_ten_thousand_queued_records() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (logger, dropped, gate) = start_gated(&cfg(dir.path(), LogFormat::OpenAi));
    let stall = gate.lock().unwrap_or_else(|e| panic!("{e}"));
    for i in 0..10_000 {
        logger.log(simple(&format!("r{i}"), "2026-11-22T10:00:00Z"));
    }
    assert_eq!(dropped.load(Ordering::Relaxed), 0);
    // Nothing can have been written yet: the writer is stalled on the first record.
    assert!(
        std::fs::read_to_string(dir.path().join("20261122_10.jsonl"))
            .unwrap_or_default()
            .is_empty()
    );
    drop(stall);
    logger.shutdown().await;
    let lines = read_lines(dir.path(), "20261122_10.jsonl");
    assert_eq!(lines.len(), 10_000);
    assert_eq!(lines[9_999]["messages"][1]["content"], "Echo: hi");
    // A second shutdown returns at once.
    logger.shutdown().await;
}

#[tokio::test]
async fn sample_rate_keeps_an_exact_fraction() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = RequestLogConfig {
        sample_rate: 0.25,
        ..cfg(dir.path(), LogFormat::ShareGpt)
    };
    let (logger, dropped) = start_counted(&config, no_redaction(), TimeZone::UTC);
    for i in 0..100 {
        logger.log(simple(&format!("r{i}"), "2026-11-22T10:00:00Z"));
    }
    logger.shutdown().await;
    assert_eq!(read_lines(dir.path(), "20261122_10.jsonl").len(), 25);
    assert_eq!(
        dropped.load(Ordering::Relaxed),
        0,
        "sampling is not dropping"
    );

    let none = Sampler {
        rate: 0.0,
        seen: AtomicU64::new(0),
    };
    assert!((0..100).all(|_| !none.keep()));
}

#[tokio::test]
async fn disabled_logger_writes_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (hook, dropped) = counter_hook();
    let config = RequestLogConfig {
        enabled: false,
        ..cfg(&dir.path().join("logs"), LogFormat::ShareGpt)
    };
    let logger = RequestLogger::start(&config, no_redaction(), hook);
    logger.log(simple("a", "2026-11-22T10:00:00Z"));
    logger.shutdown().await;
    assert!(!dir.path().join("logs").exists());
    assert_eq!(dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn config_defaults_and_validation() {
    let c: RequestLogConfig =
        yaml_serde::from_str("enabled: true").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c,
        RequestLogConfig {
            enabled: true,
            ..RequestLogConfig::default()
        }
    );
    assert_eq!(c.dir, PathBuf::from("data/requests_responses"));
    assert_eq!(c.format, LogFormat::ShareGpt);
    assert_eq!(c.sample_rate, 1.0);
    assert_eq!(c.queue_capacity, 10_000);
    assert_eq!(c.validate(), Ok(()));

    let c: RequestLogConfig =
        yaml_serde::from_str("format: openai\nsample_rate: 1.5").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.format, LogFormat::OpenAi);
    let err = c
        .validate()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        err,
        "request_log.sample_rate must be between 0 and 1, got 1.5"
    );
    let c = RequestLogConfig {
        queue_capacity: 0,
        ..RequestLogConfig::default()
    };
    assert_eq!(c.validate(), Err(RequestLogConfigError::QueueCapacity(0)));

    assert!(yaml_serde::from_str::<RequestLogConfig>("enable: true").is_err());
    assert!(yaml_serde::from_str::<RequestLogConfig>("format: csv").is_err());
}

#[test]
fn debug_hides_message_text() {
    let shown = format!("{:?}", rich());
    assert!(shown.contains("req-1"));
    assert!(
        !shown.contains("Zürich") && !shown.contains("sk-secret"),
        "{shown}"
    );
}

/// Records holding more than `queue_bytes` of text while the writer is stalled make new requests
/// wait for room (nothing is dropped for it); once the writer catches up they go on, and every
/// record is written. A logger that is off, or shut down, never holds anyone.
#[tokio::test]
async fn a_backlog_over_its_bytes_holds_new_requests_until_written() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = RequestLogConfig {
        queue_bytes: 1_000,
        ..cfg(dir.path(), LogFormat::ShareGpt)
    };
    let (logger, dropped, gate) = start_gated(&config);
    let logger = Arc::new(logger);
    // The writer is stalled by a thread holding its gate until told to let go.
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _stall = gate.lock().unwrap_or_else(|e| panic!("{e}"));
        let _ = locked_tx.send(());
        let _ = release_rx.recv();
    });
    locked.recv().unwrap_or_else(|e| panic!("{e}"));
    let turn = |id: &str| {
        let mut record = simple(id, "2026-11-22T10:00:00Z");
        record.messages = vec![LogMessage::text(LogRole::User, "x".repeat(600))];
        record
    };
    logger.log(turn("first"));
    assert!(!logger.behind(), "600 bytes wait, within the 1,000");
    assert!(logger.room().now_or_never().is_some());
    logger.log(turn("second"));
    assert!(logger.behind(), "1,200 bytes wait");
    let waiter = tokio::spawn({
        let logger = Arc::clone(&logger);
        async move { logger.room().await }
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "room while the writer is stalled");
    release.send(()).unwrap_or_else(|e| panic!("{e}"));
    tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .unwrap_or_else(|e| panic!("still waiting once the writer went on: {e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!logger.behind());
    logger.shutdown().await;
    assert_eq!(dropped.load(Ordering::Relaxed), 0);
    assert_eq!(read_lines(dir.path(), "20261122_10.jsonl").len(), 2);

    // Off: never behind. Shut down: never waits.
    let off = RequestLogger::start(&RequestLogConfig::default(), redactor(), Arc::new(|| {}));
    assert!(!off.behind());
    assert!(logger.room().now_or_never().is_some());
}
