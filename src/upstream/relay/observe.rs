//! What the relay reads from upstream bytes it forwards unchanged: an error event's message, the finish
//! reason, usage and (when asked) the text of a pass-through OpenAI chunk, the plain `id` member. Byte
//! searches and flat readers, each held to serde by a test, with serde deciding whatever they decline.

use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};

use super::StreamFacts;
use crate::protocol::sse::SseEvent;
use crate::protocol::stream::push_piece;
use crate::protocol::{FinishReason, Usage};

/// The message of an upstream error event (Anthropic `event: error`, OpenAI `data: {"error": …}`).
pub(super) fn error_message(event: &SseEvent) -> Option<String> {
    if event.event.as_deref() != Some("error") && !event.data.starts_with(b"{\"error\"") {
        // Cheap pre-check; an OpenAI error chunk may also have spaces or other keys first.
        if event.data.first() != Some(&b'{') || ERROR_KEY.find(&event.data).is_none() {
            return None;
        }
    }
    let value: serde_json::Value = serde_json::from_slice(&event.data).ok()?;
    let error = value.get("error")?;
    let message = error
        .get("message")
        .and_then(serde_json::Value::as_str)
        .or_else(|| error.as_str())
        .unwrap_or("upstream stream error");
    Some(
        message
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect(),
    )
}

// Searchers built once: building a `memmem` searcher costs more than running it on a chunk.
static ERROR_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
static FINISH_REASON: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"finish_reason\":\""));
static USAGE_OBJECT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\":{"));
static USAGE_KEY_REV: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"\"usage\""));

/// What follows the first member of a chunk that starts exactly `{"id":"<text without escapes>"` and
/// is one line (compact JSON, as every OpenAI-compatible server writes chunks); `None` otherwise.
pub(super) fn after_plain_id(data: &[u8]) -> Option<&[u8]> {
    let value = data.strip_prefix(b"{\"id\":\"")?;
    let close = memchr::memchr2(b'"', b'\\', value)?;
    if value[close] != b'"' || memchr::memchr(b'\n', data).is_some() {
        return None;
    }
    Some(&value[close + 1..])
}

/// Parse the `usage` object that follows the last `"usage":` key in `body` (OpenAI or Anthropic names).
pub(crate) fn usage_after_key(body: &[u8]) -> Option<Usage> {
    let at = USAGE_KEY_REV.rfind(body)?;
    let rest = &body[at + 7..];
    let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[colon] != b':' {
        return None;
    }
    let value = &rest[colon + 1..];
    flat_usage(value).unwrap_or_else(|| typed_usage(value))
}

/// The usage object at the start of `bytes` through serde (what follows it is not read).
fn typed_usage(bytes: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct UsageWire {
        #[serde(alias = "input_tokens")]
        prompt_tokens: Option<u64>,
        #[serde(alias = "output_tokens")]
        completion_tokens: Option<u64>,
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let usage: Option<UsageWire> = serde::Deserialize::deserialize(&mut deserializer).ok()?;
    let usage = usage?;
    Some(Usage {
        input_tokens: usage.prompt_tokens.unwrap_or(0),
        output_tokens: usage.completion_tokens.unwrap_or(0),
        ..Usage::default()
    })
}

/// The usage object as the compact answers of vLLM, llama.cpp and OpenAI write it — flat fields only —
/// read without a parser: `Some(reading)` where the typed parse below would read the same, `None` when
/// that parse must decide (nesting, escapes, duplicates, a count that is not a plain integer).
fn flat_usage(bytes: &[u8]) -> Option<Option<Usage>> {
    use crate::protocol::json_text::{flat_field, int_u64};
    if bytes.starts_with(b"null") {
        return Some(None);
    }
    let mut rest = bytes.strip_prefix(b"{")?;
    let (mut input, mut output) = (None::<Option<u64>>, None::<Option<u64>>);
    if !rest.starts_with(b"}") {
        loop {
            let (key, value) = flat_field(rest)?;
            let slot = match key {
                b"prompt_tokens" | b"input_tokens" => Some(&mut input),
                b"completion_tokens" | b"output_tokens" => Some(&mut output),
                _ => None,
            };
            if let Some(slot) = slot {
                let count = match value {
                    b"null" => None,
                    digits => Some(int_u64(digits)?),
                };
                // A second spelling of the same count is a duplicate field for the parser.
                if slot.replace(count).is_some() {
                    return None;
                }
            }
            rest = &rest[key.len() + 3 + value.len()..];
            match rest.split_first()? {
                (b',', after) => rest = after,
                (b'}', _) => break,
                _ => return None,
            }
        }
    }
    Some(Some(Usage {
        input_tokens: input.flatten().unwrap_or(0),
        output_tokens: output.flatten().unwrap_or(0),
        ..Usage::default()
    }))
}

/// What a pass-through OpenAI chunk says that the gateway needs: the finish reason and usage are found
/// by a byte search and a parse of just that part; the text only when `collect_text` (token accounting,
/// cache storage) asks for it.
/// Returns true when the chunk is an error (`{"error": …}`).
pub(super) fn observe_openai_chunk(
    data: &[u8],
    collect_text: bool,
    facts: &mut StreamFacts,
) -> bool {
    #[derive(serde::Deserialize)]
    struct ErrorProbe {
        error: Option<serde::de::IgnoredAny>,
    }
    if ERROR_KEY.find(data).is_some()
        && serde_json::from_slice::<ErrorProbe>(data).is_ok_and(|probe| probe.error.is_some())
    {
        return true;
    }
    if let Some(at) = FINISH_REASON.find(data) {
        let rest = &data[at + 17..];
        if let Some(end) = memchr::memchr(b'"', rest) {
            facts.finish_reason = Some(match &rest[..end] {
                b"length" => FinishReason::Length,
                b"tool_calls" | b"function_call" => FinishReason::ToolCalls,
                b"content_filter" => FinishReason::ContentFilter,
                _ => FinishReason::Stop,
            });
        }
    }
    if USAGE_OBJECT.find(data).is_some()
        && let Some(usage) = usage_after_key(data)
    {
        facts.usage = Some(usage);
    }
    if !collect_text {
        return false;
    }
    #[derive(serde::Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow, default)]
        choices: Vec<Choice<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Choice<'a> {
        #[serde(borrow)]
        delta: Option<Delta<'a>>,
        #[serde(borrow)]
        text: Option<std::borrow::Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct Delta<'a> {
        #[serde(borrow)]
        content: Option<std::borrow::Cow<'a, str>>,
    }
    if let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) {
        for choice in chunk.choices {
            if let Some(text) = choice.delta.and_then(|d| d.content).or(choice.text) {
                push_piece(&mut facts.text, &text);
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::protocol::json_patch;

    /// The direct id write gives what `set_fields` + `encode` give, and declines what they must do.
    #[test]
    fn plain_id_chunks_are_patched_as_set_fields_patches_them() {
        let id_json = r#""req-1""#;
        for (data, direct) in [
            (
                r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[]}"#,
                true,
            ),
            (
                r#"{"id":"","choices":[{"delta":{"content":"a\"b"}}]}"#,
                true,
            ),
            (r#"{"id":"x\"y","choices":[]}"#, false),
            (r#"{ "id":"x","choices":[]}"#, false),
            (r#"{"object":"x","id":"y"}"#, false),
            ("{\"id\":\"x\",\n\"choices\":[]}", false),
            (r#"{"id":"unterminated"#, false),
        ] {
            let mut expected = BytesMut::new();
            if let Ok(patched) = json_patch::set_fields(data.as_bytes(), &[("id", id_json)]) {
                crate::protocol::sse::encode(None, &patched, &mut expected);
            }
            match after_plain_id(data.as_bytes()) {
                Some(rest) => {
                    assert!(direct, "{data}");
                    let written = [b"data: {\"id\":", id_json.as_bytes(), rest, b"\n\n"].concat();
                    assert_eq!(written, expected.as_ref(), "{data}");
                }
                None => assert!(!direct, "{data}"),
            }
        }
    }

    #[test]
    fn flat_usage_reads_compact_usage_like_the_parser() {
        for (text, expected) in [
            (
                r#"{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
                Some((3, 4)),
            ),
            (
                r#"{"input_tokens":5,"output_tokens":null,"x":"y"}"#,
                Some((5, 0)),
            ),
            (r#"{}"#, Some((0, 0))),
            (r#"null,"#, None),
        ] {
            let read = flat_usage(text.as_bytes()).expect(text);
            assert_eq!(read, typed_usage(text.as_bytes()), "{text}");
            assert_eq!(read.map(|u| (u.input_tokens, u.output_tokens)), expected);
        }
        for declined in [
            r#"{"prompt_tokens":1,"input_tokens":2}"#,
            r#"{"prompt_tokens":-1}"#,
            r#"{"prompt_tokens":1.0}"#,
            r#"{"prompt_tokens":"1"}"#,
            r#"{"details":{"cached_tokens":1}}"#,
            r#"{ "prompt_tokens":1}"#,
        ] {
            assert_eq!(flat_usage(declined.as_bytes()), None, "{declined}");
        }
    }

    proptest::proptest! {
        /// Whatever the flat reader reads, serde reads the same.
        #[test]
        fn flat_usage_agrees_with_serde(
            fields in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        proptest::strategy::Just("prompt_tokens"),
                        proptest::strategy::Just("completion_tokens"),
                        proptest::strategy::Just("input_tokens"),
                        proptest::strategy::Just("output_tokens"),
                        proptest::strategy::Just("total_tokens"),
                    ],
                    crate::protocol::json_text::near_flat_value(),
                ),
                0..4,
            ),
            tail in proptest::prop_oneof![
                proptest::strategy::Just(""),
                proptest::strategy::Just("}"),
                proptest::strategy::Just(",\"x\":1}"),
            ],
        ) {
            let fields: Vec<String> =
                fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let text = format!("{{{}}}{tail}", fields.join(","));
            if let Some(read) = flat_usage(text.as_bytes()) {
                proptest::prop_assert_eq!(read, typed_usage(text.as_bytes()), "{}", text);
            }
        }
    }
}
