//! The `format: openai` line: the request fields plus `messages` with the assistant reply appended,
//! built as a `serde_json::Value`.

use serde_json::{Map, Value};

use super::{LogRecord, LogRole, LogToolCall, RedactFn};

fn redact_value(value: &Value, redact: &RedactFn) -> Value {
    match value {
        Value::String(s) => Value::String(redact(s).into_owned()),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| redact_value(v, redact)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redact_value(v, redact)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn openai_tool_calls(calls: &[LogToolCall], redact: &RedactFn) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id,
                    "type": "function",
                    "function": { "name": c.name, "arguments": redact(&c.arguments) },
                })
            })
            .collect(),
    )
}

fn openai_message(
    role: LogRole,
    text: &str,
    tool_calls: &[LogToolCall],
    tool_call_id: Option<&str>,
    redact: &RedactFn,
) -> Value {
    let mut m = Map::new();
    m.insert(
        "role".into(),
        serde_json::to_value(role).unwrap_or(Value::Null),
    );
    let content = if text.is_empty() && !tool_calls.is_empty() {
        Value::Null
    } else {
        Value::String(redact(text).into_owned())
    };
    m.insert("content".into(), content);
    if !tool_calls.is_empty() {
        m.insert("tool_calls".into(), openai_tool_calls(tool_calls, redact));
    }
    if let Some(id) = tool_call_id {
        m.insert("tool_call_id".into(), Value::String(id.to_owned()));
    }
    Value::Object(m)
}

pub(super) fn openai_line(record: &LogRecord, redact: &RedactFn) -> Value {
    let mut line: Map<String, Value> = record
        .request_params
        .iter()
        .filter(|(k, _)| k.as_str() != "messages")
        .map(|(k, v)| (k.clone(), redact_value(v, redact)))
        .collect();
    line.entry("model")
        .or_insert_with(|| Value::String(record.model.clone()));
    let mut messages = Vec::with_capacity(record.messages.len() + 2);
    if let Some(system) = &record.system {
        messages.push(openai_message(LogRole::System, system, &[], None, redact));
    }
    for m in &record.messages {
        messages.push(openai_message(
            m.role,
            &m.text,
            &m.tool_calls,
            m.tool_call_id.as_deref(),
            redact,
        ));
    }
    let mut reply = openai_message(
        LogRole::Assistant,
        &record.reply,
        &record.reply_tool_calls,
        None,
        redact,
    );
    if let (Some(reasoning), Value::Object(map)) = (&record.reasoning, &mut reply) {
        map.insert(
            "reasoning_content".into(),
            Value::String(redact(reasoning).into_owned()),
        );
    }
    messages.push(reply);
    line.insert("messages".into(), Value::Array(messages));
    if record.incomplete {
        line.insert("incomplete".into(), Value::Bool(true));
    }
    Value::Object(line)
}
