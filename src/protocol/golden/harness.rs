//! What the golden suites share: fixture names and files, expected-file comparison (`UPDATE_EXPECT=1`
//! rewrites), stream conversion in arbitrary pieces, fixture mutation, request content for round trips,
//! and arbitrary JSON for the property tests.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::Value;

use crate::protocol::stream::StreamConverter;
use crate::protocol::{ChatRequest, Part, Protocol, Role};

/// The `created` time every converted answer shows.
pub(super) const CREATED: i64 = 1_700_000_000;

/// A fixture directory under `src/protocol/`.
pub(super) fn fixtures_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/protocol")
        .join(name)
}

/// `(kind, from)` parsed from a fixture name like `stream_openai_x.sse`.
pub(super) fn classify(name: &str) -> (&str, Protocol) {
    let mut parts = name.split('_');
    let kind = parts.next().unwrap();
    let from = match parts.next().unwrap() {
        "openai" => Protocol::OpenAi,
        "anthropic" => Protocol::Anthropic,
        "responses" => Protocol::Responses,
        other => panic!("fixture {name}: unknown protocol {other}"),
    };
    (kind, from)
}

/// The input files (not `*.expected.*`) of the fixture directories, sorted.
pub(super) fn inputs_in(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap();
            if path.is_file() && !name.contains(".expected.") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The name of an input's expected output: `<stem>.expected.<ext>`, or `<stem>.<target>.expected.<ext>`
/// where one input has several (a `.txt` input expects `.json`).
pub(super) fn expected_name(input: &Path, target: Option<&str>) -> String {
    let stem = input.file_stem().unwrap().to_str().unwrap();
    let ext = match input.extension().unwrap().to_str().unwrap() {
        "txt" => "json",
        ext => ext,
    };
    match target {
        Some(target) => format!("{stem}.{target}.expected.{ext}"),
        None => format!("{stem}.expected.{ext}"),
    }
}

/// Compare `actual` with `expected_file` (or rewrite it with `UPDATE_EXPECT=1`); `label` names the
/// conversion in the failure.
pub(super) fn compare(label: &str, expected_file: &Path, actual: &[u8]) -> Result<(), String> {
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(expected_file, actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read(expected_file)
        .map_err(|error| format!("{}: {error}", expected_file.display()))?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{label} differs from {}:\n--- expected\n{}\n--- actual\n{}",
            expected_file.display(),
            String::from_utf8_lossy(&expected),
            String::from_utf8_lossy(actual)
        ))
    }
}

pub(super) fn pretty(bytes: &[u8]) -> Vec<u8> {
    let value: Value = serde_json::from_slice(bytes).unwrap();
    let mut text = serde_json::to_vec_pretty(&value).unwrap();
    text.push(b'\n');
    text
}

/// `input` cut into `pieces` (each at most what is left), then the rest (possibly empty).
pub(super) fn chunks<'a>(input: &'a [u8], pieces: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(pieces.len() + 1);
    let mut rest = input;
    for &size in pieces {
        let (head, tail) = rest.split_at(size.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
}

/// Push `input` through `converter` in the [`chunks`] of `pieces`, then finish it.
pub(super) fn convert_in_pieces(
    mut converter: StreamConverter,
    input: &[u8],
    pieces: &[usize],
) -> (Vec<u8>, StreamConverter) {
    let mut out = BytesMut::new();
    for chunk in chunks(input, pieces) {
        converter.push(chunk, &mut out).unwrap();
    }
    converter.finish(&mut out).unwrap();
    (out.to_vec(), converter)
}

/// A fixture's bytes with `edits` applied: an even byte overwrites, an odd one is inserted.
pub(super) fn mutated(file: &Path, edits: Vec<(usize, u8)>) -> Vec<u8> {
    let mut bytes = std::fs::read(file).unwrap();
    for (at, byte) in edits {
        let at = at % (bytes.len() + 1);
        if at < bytes.len() && byte % 2 == 0 {
            bytes[at] = byte;
        } else {
            bytes.insert(at, byte);
        }
    }
    bytes
}

/// A request's content as sorted lines for round-trip comparisons: `system` (as the caller renders
/// it), then text, images, tool calls and results of every message. Tool results' roles differ by
/// design (OpenAI `tool` messages vs Anthropic user turns), so `tool:` reads `user:`.
pub(super) fn content_lines(system: Vec<String>, request: &ChatRequest) -> Vec<String> {
    let mut out = system;
    for message in &request.messages {
        for part in &message.parts {
            match part {
                Part::Text(text) if message.role == Role::System => out.push(text.to_string()),
                Part::Text(text) => out.push(format!("{}: {text}", message.role.as_str())),
                Part::Image(image) => out.push(format!("{image:?}")),
                Part::ToolCall(call) => {
                    let args: Value = serde_json::from_str(&call.arguments).unwrap();
                    out.push(format!("call {} {} {args}", call.id, call.name));
                }
                Part::ToolResult(result) => {
                    out.push(format!("result {} {}", result.tool_call_id, result.content));
                }
                Part::Thinking { .. } | Part::RedactedThinking { .. } => {}
            }
        }
    }
    out.sort();
    out.into_iter()
        .map(|line| line.replace("tool: ", "user: "))
        .collect()
}

pub(super) fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just("text".to_owned()),
            Just("tool_use".to_owned()),
            Just("tool_result".to_owned()),
            Just("thinking".to_owned()),
            Just("user".to_owned()),
            ".{0,8}"
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("text".to_owned()),
                    Just("content".to_owned()),
                    Just("index".to_owned()),
                    Just("id".to_owned()),
                    Just("name".to_owned()),
                    Just("input".to_owned()),
                    Just("source".to_owned()),
                    Just("tool_calls".to_owned()),
                    Just("function".to_owned()),
                    Just("arguments".to_owned()),
                    "[a-z_]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}
