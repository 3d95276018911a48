//! Parser-free readers of the events most streams are made of, in exactly the layout OpenAI, vLLM
//! and Anthropic send; anything else returns `None` for the parsers. Held to the parser by tests.

use std::borrow::Cow;

use crate::protocol::json_text::{self, flat_field};
use crate::protocol::{FinishReason, openai};

/// What [`exact_chunk`] read from one OpenAI chunk: its text (content; may be empty) and finish reason.
#[derive(Debug, PartialEq)]
pub(crate) struct ExactChunk<'a> {
    pub(crate) text: Cow<'a, str>,
    pub(crate) finish: Option<FinishReason>,
}

/// An OpenAI chunk in the layout OpenAI and vLLM send, read without a parser:
/// `{<flat fields>,"choices":[{"index":0,"delta":{<delta>},"logprobs":null,"finish_reason":<"…"|null>}]
/// <,flat fields>}`, where the delta is empty or `<"role":"assistant",>"content":"…"<,"refusal":null>`,
/// a flat field is `"key":value` with a plain string (no escapes), an integer, `true`, `false` or `null`,
/// and no field is `choices`, `error`, or a non-null `usage`. Most events of a stream are this one;
/// anything else — whitespace, nesting, other delta fields — returns `None` for the parsers.
///
/// `prefix` caches the flat fields before `"choices"` of the last chunk read (every chunk of a stream
/// repeats the same id, model and timestamps): a chunk starting with the same bytes skips reading them
/// again, since equal bytes read the same.
pub(crate) fn exact_chunk<'a>(data: &'a [u8], prefix: &mut Vec<u8>) -> Option<ExactChunk<'a>> {
    const ROLE: &[u8] = br#""role":"assistant","#;
    const CONTENT: &[u8] = br#""content":"#;
    const REFUSAL: &[u8] = br#","refusal":null"#;
    // One pass, no search: flat fields up to the choice (or the cached ones), the delta, the finish
    // reason, flat fields after it.
    let mut rest = exact_delta_start(data, prefix)?;
    let mut text = Cow::Borrowed("");
    if !rest.starts_with(b"}") {
        rest = rest.strip_prefix(ROLE).unwrap_or(rest);
        rest = rest.strip_prefix(CONTENT)?;
        let (content, len) = json_text::read_str_bytes(rest)?;
        text = content;
        let after = &rest[len..];
        rest = after.strip_prefix(REFUSAL).unwrap_or(after);
    }
    let finish = exact_choice_end(rest)?;
    Some(ExactChunk { text, finish })
}

/// What [`exact_tool_args`] read from one OpenAI chunk: a piece of one tool call's arguments.
#[derive(Debug, PartialEq)]
pub(crate) struct ExactToolArgs<'a> {
    /// The call's `index` in the delta's `tool_calls`.
    pub(crate) index: usize,
    pub(crate) arguments: Cow<'a, str>,
    pub(crate) finish: Option<FinishReason>,
}

/// A tool call's later chunks in the layout OpenAI and vLLM send (an agent's usual answer): the layout
/// of [`exact_chunk`] with the delta `"tool_calls":[{"index":<n>,"function":{"arguments":"…"}}]` — no id
/// and no name, which only a call's first chunk carries. Anything else returns `None` for the parsers.
pub(crate) fn exact_tool_args<'a>(
    data: &'a [u8],
    prefix: &mut Vec<u8>,
) -> Option<ExactToolArgs<'a>> {
    const CALL_START: &[u8] = br#""tool_calls":[{"index":"#;
    const ARGUMENTS: &[u8] = br#","function":{"arguments":"#;
    const CALL_END: &[u8] = b"}}]";
    let rest = exact_delta_start(data, prefix)?.strip_prefix(CALL_START)?;
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    // JSON allows no leading zero; a number beyond `usize` is left to the parser too.
    if digits == 0 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let index: usize = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(ARGUMENTS)?;
    let (arguments, len) = json_text::read_str_bytes(rest)?;
    let finish = exact_choice_end(rest[len..].strip_prefix(CALL_END)?)?;
    Some(ExactToolArgs {
        index,
        arguments,
        finish,
    })
}

/// The start of an exact chunk up to its delta's first field: `{<flat fields>,"choices":[{"index":0,
/// "delta":{` (the fields checked for UTF-8 and cached in `prefix`, see [`exact_chunk`]); the rest
/// after it, without the chunk's closing brace.
fn exact_delta_start<'a>(data: &'a [u8], prefix: &mut Vec<u8>) -> Option<&'a [u8]> {
    const CHOICE_START: &[u8] = br#""choices":[{"index":0,"delta":{"#;
    let inner = data.strip_prefix(b"{")?.strip_suffix(b"}")?;
    // UTF-8 is checked piecewise: the prefix when it is read, the text, the finish reason and the
    // fields after the choice; everything else is ASCII the reader matched itself.
    let rest = match inner.strip_prefix(prefix.as_slice()) {
        Some(rest) if !prefix.is_empty() && rest.starts_with(CHOICE_START) => rest,
        _ => {
            let mut rest = inner;
            while !rest.starts_with(CHOICE_START) {
                rest = rest[flat_field_len(rest)?..].strip_prefix(b",")?;
            }
            let read = &inner[..inner.len() - rest.len()];
            std::str::from_utf8(read).ok()?;
            prefix.clear();
            prefix.extend_from_slice(read);
            rest
        }
    };
    Some(&rest[CHOICE_START.len()..])
}

/// The end of an exact chunk after its delta's fields: `},"logprobs":null,"finish_reason":<"…"|null>}]
/// <,flat fields>` (the chunk's closing brace already taken off); the finish reason.
fn exact_choice_end(rest: &[u8]) -> Option<Option<FinishReason>> {
    const CHOICE_END: &[u8] = br#"},"logprobs":null,"finish_reason":"#;
    let mut rest = rest.strip_prefix(CHOICE_END)?;
    let finish = if let Some(after) = rest.strip_prefix(b"null") {
        rest = after;
        None
    } else {
        let len = json_text::plain_string_len(rest)?;
        let reason = json_text::plain_str(&rest[..len])?;
        rest = &rest[len..];
        Some(openai::finish_reason_from(reason))
    };
    let fields = rest.strip_prefix(b"}]")?;
    let mut after = fields;
    while !after.is_empty() {
        after = after.strip_prefix(b",")?;
        after = &after[flat_field_len(after)?..];
    }
    std::str::from_utf8(fields).ok()?;
    Some(finish)
}

/// The length of one flat field `"key":value` at the start of `bytes`, for [`exact_chunk`]: a
/// plain string (no escapes), an integer, `true`, `false` or `null` as the value, and no key that would
/// change what the chunk means (`choices`, `error`, a non-null `usage`).
fn flat_field_len(bytes: &[u8]) -> Option<usize> {
    let (key, value) = flat_field(bytes)?;
    if key == b"choices" || key == b"error" || (key == b"usage" && value != b"null") {
        return None;
    }
    Some(key.len() + 3 + value.len())
}

/// The text of a `content_block_delta` event in exactly the layout Anthropic sends,
/// `{"type":"content_block_delta","index":N,"delta":{"type":"text_delta","text":"…"}}`, read without a
/// parser: most events of a stream are this one. Any other layout returns `None`.
pub(super) fn exact_text_delta(data: &[u8]) -> Option<String> {
    let rest = data.strip_prefix(br#"{"type":"content_block_delta","index":"#)?;
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    // JSON numbers have no leading zeros; leave odd ones to the parser.
    if digits == 0 || digits > 15 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let text = rest[digits..]
        .strip_prefix(br#","delta":{"type":"text_delta","text":"#)?
        .strip_suffix(b"}}")?;
    let inner = text.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner
        .iter()
        .any(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
    {
        // Escapes (or a stray quote): exactly one JSON string, decoded by the parser.
        return serde_json::from_slice::<String>(text).ok();
    }
    String::from_utf8(inner.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Protocol;
    use crate::protocol::sse::SseEvent;
    use crate::protocol::stream::{data_event, decode_both_ways};

    /// The layout-specific text reader agrees with the parser, and declines anything else.
    #[test]
    fn exact_text_delta_reads_only_the_exact_layout() {
        let event = |text: &str| {
            format!(
                r#"{{"type":"content_block_delta","index":3,"delta":{{"type":"text_delta","text":{}}}}}"#,
                serde_json::to_string(text).unwrap()
            )
        };
        for text in ["hello ", "", "é ü 😀", "quote \" and \\ and \n", "\u{1}"] {
            let data = event(text);
            assert_eq!(
                exact_text_delta(data.as_bytes()).as_deref(),
                Some(text),
                "{data}"
            );
        }
        for data in [
            r#"{"type":"content_block_delta","index":01,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a"}} "#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a" }}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a","b":"c"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a"b"}}"#,
            r#"{"type":"content_block_delta","index":-1,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"thinking_delta","thinking":"a"}}"#,
        ] {
            assert_eq!(exact_text_delta(data.as_bytes()), None, "{data}");
        }
    }

    /// The text [`exact_chunk`] reads from one chunk, without a cached prefix.
    fn exact_content_chunk(data: &[u8]) -> Option<String> {
        exact_chunk(data, &mut Vec::new()).map(|chunk| chunk.text.into_owned())
    }

    /// The OpenAI content-chunk reader agrees with the parser on the layouts it accepts and declines the
    /// rest (which the typed and `Value` paths then read).
    #[test]
    fn exact_content_chunk_reads_only_the_exact_layout() {
        let chunk = |before: &str, text: &str, after: &str| {
            format!(
                r#"{{{before}"choices":[{{"index":0,"delta":{{"content":{}}},"logprobs":null,"finish_reason":null}}]{after}}}"#,
                serde_json::to_string(text).unwrap()
            )
        };
        let vllm = r#""id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","#;
        let openai = r#""id":"chatcmpl-2","object":"chat.completion.chunk","created":1,"model":"gpt","service_tier":"default","system_fingerprint":"fp_1","#;
        for text in [
            "tok1 ",
            "",
            "é ü 😀",
            "quote \" and \\ and \n",
            "\u{1}tab\t",
        ] {
            for (before, after) in [
                ("", ""),
                (vllm, ""),
                (openai, r#","obfuscation":"abc""#),
                (vllm, r#","usage":null"#),
                (r#""n":-12,"flag":true,"other":false,"none":null,"#, ""),
            ] {
                let data = chunk(before, text, after);
                assert_eq!(
                    exact_content_chunk(data.as_bytes()).as_deref(),
                    Some(text),
                    "{data}"
                );
            }
        }
        for (before, after) in [
            (r#""id": "x","#, ""),
            (r#""id":"x" ,"#, ""),
            (r#""x":{"a":1},"#, ""),
            (r#""x":[1],"#, ""),
            (r#""error":null,"#, ""),
            (r#""error":{"message":"m"},"#, ""),
            (r#""usage":{"prompt_tokens":1},"#, ""),
            ("", r#","usage":{"prompt_tokens":1}"#),
            ("", r#","choices":[]"#),
            (r#""id":"a\"b","#, ""),
            (r#""created":1.5,"#, ""),
            (r#""created":01,"#, ""),
            (r#""created":1e3,"#, ""),
            ("", ","),
            ("", r#","x""#),
            (r#""x":nul,"#, ""),
        ] {
            let data = chunk(before, "a", after);
            assert_eq!(exact_content_chunk(data.as_bytes()), None, "{data}");
        }
        for data in [
            r#"{"choices":[{"index":0,"delta":{"role":"user","content":"a"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a","refusal":"no"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"role":"assistant"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":null,"finish_reason":1}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":null,"finish_reason":null}]} "#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":null,"finish_reason":null}],}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a\x"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":null,"finish_reason":null},{"index":1}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"}},"logprobs":null,"finish_reason":null}]}"#,
        ] {
            assert_eq!(exact_content_chunk(data.as_bytes()), None, "{data}");
        }
    }

    /// The first and the last chunk of a stream are read exactly too: role, refusal, empty delta,
    /// finish reason.
    #[test]
    fn exact_chunk_reads_the_first_and_the_finish_chunk() {
        let prefix = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":"#;
        for (delta, finish, text, reason) in [
            (
                r#"{"role":"assistant","content":"","refusal":null}"#,
                "null",
                "",
                None,
            ),
            (r#"{"role":"assistant","content":"hi"}"#, "null", "hi", None),
            (r#"{"content":"x","refusal":null}"#, "null", "x", None),
            ("{}", r#""stop""#, "", Some(FinishReason::Stop)),
            ("{}", r#""length""#, "", Some(FinishReason::Length)),
            (
                r#"{"content":"y"}"#,
                r#""tool_calls""#,
                "y",
                Some(FinishReason::ToolCalls),
            ),
        ] {
            let data = format!(r#"{prefix}{delta},"logprobs":null,"finish_reason":{finish}}}]}}"#);
            let chunk = exact_chunk(data.as_bytes(), &mut Vec::new());
            assert_eq!(
                chunk,
                Some(ExactChunk {
                    text: Cow::Borrowed(text),
                    finish: reason
                }),
                "{data}"
            );
            let event = data_event(data);
            let (fast, slow) = decode_both_ways(Protocol::OpenAi, &[event]);
            assert_eq!(fast, slow);
        }
    }

    /// The cached prefix only skips bytes equal to ones already read: a chunk that repeats it but
    /// breaks later, or changes it, is read as if there were no cache.
    #[test]
    fn exact_chunk_prefix_cache_reads_like_no_cache() {
        let chunk = |id: &str, tail: &str| {
            format!(
                r#"{{"id":{id},"created":1,"choices":[{{"index":0,"delta":{{"content":"a"}},"logprobs":null,"finish_reason":null}}]{tail}}}"#
            )
        };
        let mut bad_utf8 = chunk(r#""x""#, r#","z":"~""#).into_bytes();
        let at = bad_utf8.iter().position(|&b| b == b'~').unwrap();
        bad_utf8[at] = 0xA1;
        let sequence = [
            chunk(r#""x""#, "").into_bytes(),
            chunk(r#""x""#, ",").into_bytes(),
            bad_utf8,
            chunk(r#""y""#, "").into_bytes(),
            chunk(r#""x""#, r#","usage":null"#).into_bytes(),
            chunk("1.5", "").into_bytes(),
        ];
        let mut prefix = Vec::new();
        for data in &sequence {
            let cached = exact_chunk(data, &mut prefix).map(|c| c.text.into_owned());
            let fresh = exact_chunk(data, &mut Vec::new()).map(|c| c.text.into_owned());
            assert_eq!(cached, fresh, "{}", String::from_utf8_lossy(data));
        }
        assert_eq!(
            sequence
                .iter()
                .map(|data| exact_chunk(data, &mut Vec::new()).is_some())
                .collect::<Vec<_>>(),
            [true, false, false, true, true, false]
        );
    }

    /// Chunks in the exact layout decode to the same events on the fast and the `Value` path.
    #[test]
    fn exact_content_chunks_decode_like_the_value_path() {
        let texts = ["", "a", "é😀", "q\"\\\n", "\u{7}"];
        let mut events = Vec::new();
        for (index, text) in texts.iter().enumerate() {
            let data = format!(
                r#"{{"id":"c","object":"chat.completion.chunk","created":{index},"model":"m","choices":[{{"index":0,"delta":{{"content":{}}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#,
                serde_json::to_string(text).unwrap()
            );
            assert!(exact_content_chunk(data.as_bytes()).is_some(), "{data}");
            events.push(data_event(data));
        }
        let (fast, slow) = decode_both_ways(Protocol::OpenAi, &events);
        assert_eq!(fast, slow);
    }

    /// A tool call's later pieces are read exactly (OpenAI's and vLLM's layout), its first chunk (id and
    /// name) and anything unusual are not, and a stream of them decodes the same on both paths.
    #[test]
    fn exact_tool_args_reads_a_calls_later_pieces() {
        let chunk = |delta: &str| {
            format!(
                r#"{{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":null}}]}}"#
            )
        };
        let first = chunk(
            r#"{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"grep","arguments":""}}]}"#,
        );
        let pieces = [r#"{\"pat"#, r#"h\":\"é\n"#, r#"\"}"#];
        let mut events = vec![data_event(first.clone())];
        assert_eq!(exact_tool_args(first.as_bytes(), &mut Vec::new()), None);
        for piece in pieces {
            let data = chunk(&format!(
                r#"{{"tool_calls":[{{"index":0,"function":{{"arguments":"{piece}"}}}}]}}"#
            ));
            let read = exact_tool_args(data.as_bytes(), &mut Vec::new());
            let expected: String = serde_json::from_str(&format!("\"{piece}\"")).unwrap();
            assert_eq!(
                read.map(|read| (read.index, read.arguments.into_owned())),
                Some((0, expected))
            );
            events.push(data_event(data));
        }
        for odd in [
            r#"{"tool_calls":[{"index":01,"function":{"arguments":"x"}}]}"#,
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"x"}},{"index":1,"function":{"arguments":"y"}}]}"#,
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"x","name":"f"}}]}"#,
            r#"{"tool_calls":[{"index":99999999999999999999999,"function":{"arguments":"x"}}]}"#,
        ] {
            let data = chunk(odd);
            assert_eq!(
                exact_tool_args(data.as_bytes(), &mut Vec::new()),
                None,
                "{odd}"
            );
            events.push(data_event(data));
        }
        let (fast, slow) = decode_both_ways(Protocol::OpenAi, &events);
        assert_eq!(fast, slow);
    }

    /// Cases the property below found: a content value that is not a string, and invalid UTF-8 in a
    /// field the borrowed decoder skips (the `Value` path rejects the event; so must the fast path).
    #[test]
    fn chunks_the_property_test_found() {
        let not_a_string = br#"{"choices":[{"index":0,"delta":{"content":#x"},"logprobs":null,"finish_reason":null}]}"#;
        assert_eq!(exact_content_chunk(not_a_string), None);
        let mut bad_utf8 =
            br#"{"x": "~","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#
                .to_vec();
        let at = bad_utf8.iter().position(|&b| b == b'~').unwrap();
        bad_utf8[at] = 0xA1;
        for data in [not_a_string.to_vec(), bad_utf8] {
            let event = data_event(data);
            let (fast, slow) = decode_both_ways(Protocol::OpenAi, &[event]);
            assert_eq!(fast, slow);
            assert!(fast[0].is_err());
        }
    }

    fn chunk_field() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![
            3 => Just("id"),
            3 => Just("created"),
            3 => Just("model"),
            1 => Just("choices"),
            1 => Just("error"),
            1 => Just("usage"),
            2 => Just("obfuscation"),
            1 => Just("x\\\"y"),
        ];
        let value = crate::protocol::json_text::near_flat_value();
        (key, value, proptest::bool::weighted(0.1)).prop_map(|(key, value, spaced)| {
            format!("\"{key}\":{}{value}", if spaced { " " } else { "" })
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// Chunks near the exact layout (random flat and non-flat fields around it, any content text,
        /// stray bytes): the exact reader agrees with the parser whenever it answers, and valid chunks
        /// decode the same on the fast and the `Value` path.
        #[test]
        fn near_layout_chunks_decode_like_the_value_path(
            before in proptest::collection::vec(chunk_field(), 0..4),
            after in proptest::collection::vec(chunk_field(), 0..3),
            text in ".{0,12}",
            delta in 0usize..8,
            finish in proptest::option::of("stop|length|tool_calls|x\\\\y|"),
            cut in proptest::option::weighted(0.3, (0usize..200, proptest::prelude::any::<u8>())),
        ) {
            let content = serde_json::to_string(&text).unwrap();
            let delta = match delta {
                0 => format!(r#"{{"content":{content}}}"#),
                1 => format!(r#"{{"role":"assistant","content":{content},"refusal":null}}"#),
                2 => format!(r#"{{"role":"assistant","content":{content}}}"#),
                3 => format!(r#"{{"content":{content},"refusal":null}}"#),
                5 => format!(r#"{{"tool_calls":[{{"index":0,"function":{{"arguments":{content}}}}}]}}"#),
                6 => format!(r#"{{"tool_calls":[{{"index":12,"function":{{"arguments":{content}}}}}]}}"#),
                7 => format!(
                    r#"{{"tool_calls":[{{"index":1,"id":"call_1","type":"function","function":{{"name":"f","arguments":{content}}}}}]}}"#
                ),
                _ => "{}".to_owned(),
            };
            let finish = finish.map_or("null".to_owned(), |f| serde_json::to_string(&f).unwrap());
            let mut fields: Vec<String> = before;
            fields.push(format!(
                r#""choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]"#
            ));
            fields.extend(after);
            let whole = format!("{{{}}}", fields.join(",")).into_bytes();
            let mut data = whole.clone();
            if let Some((at, byte)) = cut {
                let at = at % data.len();
                data[at] = byte;
            }
            let parsed = serde_json::from_slice::<serde_json::Value>(&data);
            // Read after the uncut chunk, as the next chunk of a stream: the cached prefix applies.
            let mut prefix = Vec::new();
            let _ = exact_chunk(&whole, &mut prefix);
            let cached = exact_chunk(&data, &mut prefix);
            proptest::prop_assert_eq!(&cached, &exact_chunk(&data, &mut Vec::new()));
            if let Some(read) = cached {
                // The exact reader never accepts what the parser rejects, and reads the same text.
                let value = parsed.as_ref().unwrap();
                let delta = &value["choices"][0]["delta"];
                proptest::prop_assert_eq!(delta["content"].as_str().unwrap_or(""), read.text);
                proptest::prop_assert_eq!(
                    value["choices"][0]["finish_reason"].as_str().map(openai::finish_reason_from),
                    read.finish
                );
            }
            // The same for the tool-call reader: it answers only for a later piece of one call.
            let mut prefix = Vec::new();
            let _ = exact_tool_args(&whole, &mut prefix);
            let cached = exact_tool_args(&data, &mut prefix);
            proptest::prop_assert_eq!(&cached, &exact_tool_args(&data, &mut Vec::new()));
            if let Some(read) = cached {
                let value = parsed.as_ref().unwrap();
                let calls = value["choices"][0]["delta"]["tool_calls"].as_array().unwrap();
                proptest::prop_assert_eq!(calls.len(), 1);
                proptest::prop_assert!(calls[0].get("id").is_none());
                proptest::prop_assert!(calls[0]["function"].get("name").is_none());
                proptest::prop_assert_eq!(calls[0]["index"].as_u64(), Some(read.index as u64));
                proptest::prop_assert_eq!(
                    calls[0]["function"]["arguments"].as_str(),
                    Some(read.arguments.as_ref())
                );
                proptest::prop_assert_eq!(
                    value["choices"][0]["finish_reason"].as_str().map(openai::finish_reason_from),
                    read.finish
                );
            }
            // On valid JSON the fast and the `Value` path agree, over the two-chunk stream too. On
            // invalid JSON only the exact reader is held to the parser: the typed fast path skips fields
            // it does not read without checking them (a number out of range there passes), which is its
            // one known leniency.
            if parsed.is_ok() && serde_json::from_slice::<serde_json::Value>(&whole).is_ok() {
                let events: Vec<SseEvent> = [whole, data]
                    .into_iter()
                    .map(data_event)
                    .collect();
                let (fast, slow) = decode_both_ways(Protocol::OpenAi, &events);
                proptest::prop_assert_eq!(fast, slow);
            }
        }
    }
}
