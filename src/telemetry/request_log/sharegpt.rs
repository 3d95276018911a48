//! The `format: sharegpt` line: `{"id",…,"conversations":[{"from","value"}]}`, written byte by byte
//! (no intermediate value); the tests hold it to a serde model of the same line.

use std::io::Write;

use serde::Serialize;

use super::{LogRecord, LogRole, LogToolCall, RedactFn};
use crate::protocol::Text;
use crate::protocol::json_text::{simd_room, write_str};

/// One `format: sharegpt` line (without the newline), written straight into `out`: the same bytes as
/// serializing the `ShareGptLine` of the tests (field order, escapes, numbers, optional fields), without
/// building it, and strings scanned eight bytes at a time.
pub(super) fn write_sharegpt_line(
    out: &mut Vec<u8>,
    record: &LogRecord,
    redact: Option<&RedactFn>,
) {
    reserve_for(out, record);
    out.extend_from_slice(b"{\"id\":");
    write_str(out, &record.id);
    // A timestamp's Display form (RFC 3339) has nothing to escape.
    let _ = write!(out, ",\"timestamp\":\"{}\",\"model\":", record.timestamp);
    write_str(out, &record.model);
    out.extend_from_slice(b",\"backend\":");
    write_str(out, &record.backend);
    out.extend_from_slice(b",\"instance\":");
    match &record.instance {
        Some(instance) => write_str(out, instance),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"status\":");
    write_number(out, record.status);
    out.extend_from_slice(b",\"usage\":{\"prompt_tokens\":");
    write_number(out, record.prompt_tokens);
    out.extend_from_slice(b",\"completion_tokens\":");
    write_number(out, record.completion_tokens);
    out.extend_from_slice(b",\"total_tokens\":");
    write_number(out, record.prompt_tokens + record.completion_tokens);
    out.extend_from_slice(b"},\"latency_ms\":");
    write_number(out, record.latency_ms);
    out.extend_from_slice(b",\"ttft_ms\":");
    write_number(out, record.ttft_ms);
    out.extend_from_slice(b",\"conversations\":[");
    if let Some(system) = &record.system {
        turn_head(out, "system");
        write_text(out, system, redact);
        turn_tail(out, &[], None, redact);
        out.push(b',');
    }
    for message in &record.messages {
        turn_head(out, sharegpt_from(message.role));
        write_text(out, &message.text, redact);
        turn_tail(
            out,
            &message.tool_calls,
            message.tool_call_id.as_deref(),
            redact,
        );
        out.push(b',');
    }
    turn_head(out, "gpt");
    write_redacted(out, &record.reply, redact);
    turn_tail(out, &[], None, redact);
    out.push(b']');
    if let Some(reasoning) = &record.reasoning {
        out.extend_from_slice(b",\"reasoning\":");
        write_redacted(out, reasoning, redact);
    }
    if !record.reply_tool_calls.is_empty() {
        out.extend_from_slice(b",\"tool_calls\":");
        write_tool_calls(out, &record.reply_tool_calls, redact);
    }
    if record.incomplete {
        out.extend_from_slice(b",\"incomplete\":true");
    }
    out.push(b'}');
}

/// `text` as a JSON string, redacted.
fn write_redacted(out: &mut Vec<u8>, text: &str, redact: Option<&RedactFn>) {
    match redact {
        Some(redact) => write_str(out, &redact(text)),
        None => write_str(out, text),
    }
}

/// A conversation text as a JSON string, redacted; without redaction, a text taken from the request
/// body is written as the body wrote it, never unescaped (the same value).
fn write_text(out: &mut Vec<u8>, text: &Text, redact: Option<&RedactFn>) {
    match redact {
        Some(redact) => write_str(out, &redact(text)),
        None => text.write_json(out),
    }
}

/// Room for the whole line, escapes included, plus what the SIMD escaper needs past the end for the
/// longest text, so each text is escaped straight into `out`. The writer reuses `out` from line to
/// line: after the first large lines this reserves nothing.
fn reserve_for(out: &mut Vec<u8>, record: &LogRecord) {
    let texts = record
        .messages
        .iter()
        .flat_map(|message| {
            std::iter::once(message.text.written_len()).chain(
                message
                    .tool_calls
                    .iter()
                    .map(|call| call.arguments.written_len()),
            )
        })
        .chain(record.system.as_ref().map(Text::written_len))
        .chain([record.reply.len()])
        .chain(record.reasoning.as_ref().map(String::len))
        .chain(
            record
                .reply_tool_calls
                .iter()
                .map(|call| call.arguments.written_len()),
        );
    let (total, longest) = texts.fold((0, 0), |(total, longest), len| {
        (total + len, longest.max(len))
    });
    out.reserve(1024 + total + total / 8 + 64 * record.messages.len() + simd_room(longest));
}

/// A turn up to its value: `{"from":…,"value":`.
fn turn_head(out: &mut Vec<u8>, from: &'static str) {
    // `from` is one of four plain words: nothing to escape.
    out.extend_from_slice(b"{\"from\":\"");
    out.extend_from_slice(from.as_bytes());
    out.extend_from_slice(b"\",\"value\":");
}

/// A turn after its value: its tool calls, the call it answers, the closing brace.
fn turn_tail(
    out: &mut Vec<u8>,
    tool_calls: &[LogToolCall],
    tool_call_id: Option<&str>,
    redact: Option<&RedactFn>,
) {
    if !tool_calls.is_empty() {
        out.extend_from_slice(b",\"tool_calls\":");
        write_tool_calls(out, tool_calls, redact);
    }
    if let Some(id) = tool_call_id {
        out.extend_from_slice(b",\"tool_call_id\":");
        write_str(out, id);
    }
    out.push(b'}');
}

fn write_tool_calls(out: &mut Vec<u8>, calls: &[LogToolCall], redact: Option<&RedactFn>) {
    out.push(b'[');
    for (n, call) in calls.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        write_str(out, &call.id);
        out.extend_from_slice(b",\"name\":");
        write_str(out, &call.name);
        out.extend_from_slice(b",\"arguments\":");
        write_text(out, &call.arguments, redact);
        out.push(b'}');
    }
    out.push(b']');
}

/// A number as `serde_json` writes it (integers exactly, floats shortest round-trip, `null` for a
/// non-finite float or `None`).
fn write_number(out: &mut Vec<u8>, number: impl Serialize) {
    // Writing a number into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &number);
}

fn sharegpt_from(role: LogRole) -> &'static str {
    match role {
        LogRole::System => "system",
        LogRole::User => "human",
        LogRole::Assistant => "gpt",
        LogRole::Tool => "tool",
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use jiff::Timestamp;
    use serde_json::Map;

    use super::*;
    use crate::telemetry::request_log::tests::{redactor, rich, ts};
    use crate::telemetry::request_log::{LogMessage, no_redaction};

    // The serde model of a sharegpt line: `write_sharegpt_line` must write exactly its bytes.
    #[derive(Serialize)]
    struct UsageOut {
        prompt_tokens: u64,
        completion_tokens: u64,
        total_tokens: u64,
    }

    #[derive(Serialize)]
    struct ToolCallOut<'a> {
        id: &'a str,
        name: &'a str,
        arguments: Cow<'a, str>,
    }

    #[derive(Serialize)]
    struct Turn<'a> {
        from: &'static str,
        value: Cow<'a, str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCallOut<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_call_id: Option<&'a str>,
    }

    #[derive(Serialize)]
    struct ShareGptLine<'a> {
        id: &'a str,
        timestamp: Timestamp,
        model: &'a str,
        backend: &'a str,
        instance: Option<&'a str>,
        status: u16,
        usage: UsageOut,
        latency_ms: f64,
        ttft_ms: Option<f64>,
        conversations: Vec<Turn<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reasoning: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCallOut<'a>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        incomplete: bool,
    }

    fn tool_calls_out<'a>(calls: &'a [LogToolCall], redact: &RedactFn) -> Vec<ToolCallOut<'a>> {
        calls
            .iter()
            .map(|c| ToolCallOut {
                id: &c.id,
                name: &c.name,
                arguments: redact(&c.arguments),
            })
            .collect()
    }

    fn sharegpt_line<'a>(record: &'a LogRecord, redact: Option<&RedactFn>) -> ShareGptLine<'a> {
        let redact = redact.unwrap_or(&super::super::keep_text);
        let mut conversations = Vec::with_capacity(record.messages.len() + 2);
        if let Some(system) = &record.system {
            conversations.push(Turn {
                from: "system",
                value: redact(system),
                tool_calls: Vec::new(),
                tool_call_id: None,
            });
        }
        for message in &record.messages {
            conversations.push(Turn {
                from: sharegpt_from(message.role),
                value: redact(&message.text),
                tool_calls: tool_calls_out(&message.tool_calls, redact),
                tool_call_id: message.tool_call_id.as_deref(),
            });
        }
        conversations.push(Turn {
            from: "gpt",
            value: redact(&record.reply),
            tool_calls: Vec::new(),
            tool_call_id: None,
        });
        ShareGptLine {
            id: &record.id,
            timestamp: record.timestamp,
            model: &record.model,
            backend: &record.backend,
            instance: record.instance.as_deref(),
            status: record.status,
            usage: UsageOut {
                prompt_tokens: record.prompt_tokens,
                completion_tokens: record.completion_tokens,
                total_tokens: record.prompt_tokens + record.completion_tokens,
            },
            latency_ms: record.latency_ms,
            ttft_ms: record.ttft_ms,
            conversations,
            reasoning: record.reasoning.as_deref().map(redact),
            tool_calls: tool_calls_out(&record.reply_tool_calls, redact),
            incomplete: record.incomplete,
        }
    }

    /// The hand-written sharegpt writer gives exactly the serde model's bytes.
    fn assert_sharegpt_bytes(record: &LogRecord, redact: Option<&RedactFn>) {
        let mut written = Vec::new();
        write_sharegpt_line(&mut written, record, redact);
        let expected = serde_json::to_vec(&sharegpt_line(record, redact)).unwrap();
        assert_eq!(
            String::from_utf8(written).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    /// Texts taken from a request body (with escapes or without) are written as the body wrote them
    /// where nothing is redacted — the same values — and redacted like any text where something is.
    #[test]
    fn body_texts_are_written_as_sent_or_redacted() {
        let escaped = r#""key sk-secret\n\u00e9 \"quoted\"""#;
        let plain = "key sk-secret and more";
        let mut record = rich();
        record.messages = vec![
            LogMessage::text(
                LogRole::User,
                Text::escaped(bytes::Bytes::from_static(escaped.as_bytes())),
            ),
            LogMessage::text(
                LogRole::Tool,
                Text::verbatim(bytes::Bytes::from_static(plain.as_bytes())),
            ),
        ];
        let values = |redact: Option<&RedactFn>| {
            let mut written = Vec::new();
            write_sharegpt_line(&mut written, &record, redact);
            let line: serde_json::Value = serde_json::from_slice(&written).unwrap();
            (
                line["conversations"][1]["value"].clone(),
                line["conversations"][2]["value"].clone(),
            )
        };
        let (first, second) = values(None);
        assert_eq!(first, "key sk-secret\n\u{e9} \"quoted\"");
        assert_eq!(second, plain);
        let (first, second) = values(redactor().as_deref());
        assert_eq!(first, "key [REDACTED]\n\u{e9} \"quoted\"");
        assert_eq!(second, "key [REDACTED] and more");
    }

    #[test]
    fn sharegpt_writer_matches_the_serde_model() {
        let mut record = rich();
        assert_sharegpt_bytes(&record, redactor().as_deref());
        record.instance = None;
        record.ttft_ms = None;
        record.latency_ms = f64::NAN;
        record.system = None;
        record.reasoning = None;
        record.reply_tool_calls.clear();
        record.timestamp = ts("2026-01-02T03:04:05.000000001Z");
        assert_sharegpt_bytes(&record, no_redaction().as_deref());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

        /// Random texts (controls, quotes, any Unicode), numbers and optional parts: same bytes.
        #[test]
        fn sharegpt_writer_matches_the_serde_model_on_any_record(
            texts in proptest::collection::vec("(\\PC|[\\x00-\\x1f\"\\\\])*", 6),
            numbers in (proptest::prelude::any::<u16>(), 0u64..1 << 40, 0u64..1 << 40),
            latency in proptest::prelude::any::<f64>(),
            ttft in proptest::option::of(0.0f64..1e6),
            nanos in 0i64..2_000_000_000_000_000_000,
            optional in proptest::collection::vec(proptest::prelude::any::<bool>(), 4),
        ) {
            let call = LogToolCall {
                id: texts[0].clone(),
                name: texts[1].clone(),
                arguments: texts[2].clone().into(),
            };
            let record = LogRecord {
                id: texts[3].clone(),
                timestamp: Timestamp::from_nanosecond(i128::from(nanos)).unwrap(),
                model: texts[4].clone(),
                backend: texts[5].clone(),
                instance: optional[0].then(|| texts[1].clone()),
                status: numbers.0,
                prompt_tokens: numbers.1,
                completion_tokens: numbers.2,
                latency_ms: latency,
                ttft_ms: ttft,
                system: optional[1].then(|| texts[2].clone().into()),
                messages: vec![
                    LogMessage::text(LogRole::User, texts[0].clone()),
                    LogMessage {
                        role: LogRole::Assistant,
                        text: Text::default(),
                        tool_calls: vec![call.clone(), call.clone()],
                        tool_call_id: None,
                    },
                    LogMessage {
                        role: LogRole::Tool,
                        text: texts[4].clone().into(),
                        tool_calls: Vec::new(),
                        tool_call_id: Some(texts[5].clone()),
                    },
                ],
                reply: texts[3].clone(),
                reasoning: optional[2].then(|| texts[1].clone()),
                reply_tool_calls: if optional[3] { vec![call] } else { Vec::new() },
                request_params: Map::new(),
                incomplete: numbers.0 % 2 == 1,
            };
            let mut written = Vec::new();
            write_sharegpt_line(&mut written, &record, redactor().as_deref());
            let expected = serde_json::to_vec(&sharegpt_line(&record, redactor().as_deref())).unwrap();
            proptest::prop_assert_eq!(written, expected);
        }
    }
}
