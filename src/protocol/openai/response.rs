//! Decoding a complete OpenAI `chat.completion` answer into a canonical response, in three tiers: the
//! exact reader of the compact layout, the borrowed fast path, and the `Value` path that defines the
//! semantics (each faster tier returns `None` where it cannot answer exactly as the `Value` path).

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

use super::content::ThinkingBlockWire;
use super::finish_reason_from;
use super::parse::{response_object, str_member};
use crate::protocol::{ChatResponse, DecodeError, Part, ToolCall, Usage, json_text};

/// Canonical usage from an OpenAI `usage` object.
pub(crate) fn usage_from(value: &Value) -> Usage {
    // `get` chains, not `Value::pointer`, which allocates for every step of the path.
    let count = |value: Option<&Value>| value.and_then(Value::as_u64).unwrap_or(0);
    let inner = |outer: &str, key: &str| count(value.get(outer).and_then(|v| v.get(key)));
    Usage {
        input_tokens: count(value.get("prompt_tokens")),
        output_tokens: count(value.get("completion_tokens")),
        cache_read_tokens: inner("prompt_tokens_details", "cached_tokens"),
        cache_creation_tokens: 0,
        reasoning_tokens: inner("completion_tokens_details", "reasoning_tokens"),
    }
}

/// Decode a complete `chat.completion` response (the first choice; others are dropped).
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, DecodeError> {
    if let Some(response) = exact_response(body) {
        return Ok(response);
    }
    if let Some(response) =
        crate::protocol::fast_decode::<ResponseIn<'_>>(body).and_then(ResponseIn::decode)
    {
        return Ok(response);
    }
    decode_response_value(body)
}

/// The general path of [`decode_response`], through a JSON tree; it defines the semantics.
pub(crate) fn decode_response_value(body: &[u8]) -> Result<ChatResponse, DecodeError> {
    let value = response_object(body)?;
    let choice = value.pointer("/choices/0");
    let message = choice.and_then(|choice| choice.get("message"));
    let field = |key: &str| message.and_then(|message| message.get(key));
    let mut parts = Vec::new();
    match field("thinking_blocks").and_then(Value::as_array) {
        Some(blocks) if !blocks.is_empty() => {
            for block in blocks {
                if let Ok(block) = ThinkingBlockWire::<String>::deserialize(block)
                    && let Some(part) = block.into_part()
                {
                    parts.push(part);
                }
            }
        }
        _ => {
            if let Some(reasoning) = field("reasoning_content")
                .or_else(|| field("reasoning"))
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
            {
                parts.push(Part::Thinking {
                    text: reasoning.to_owned(),
                    signature: None,
                });
            }
        }
    }
    match field("content") {
        Some(Value::String(text)) if !text.is_empty() => {
            parts.push(Part::Text(text.clone().into()))
        }
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(text) = item.get("text").and_then(Value::as_str) {
                    parts.push(Part::Text(text.to_owned().into()));
                }
            }
        }
        _ => {
            if let Some(refusal) = field("refusal").and_then(Value::as_str) {
                parts.push(Part::Text(refusal.to_owned().into()));
            } else if let Some(text) = choice
                .and_then(|choice| choice.get("text"))
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
            {
                // A legacy `text_completion` answer.
                parts.push(Part::Text(text.to_owned().into()));
            }
        }
    }
    for call in field("tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let text = |pointer: &str| {
            call.pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        parts.push(Part::ToolCall(ToolCall {
            id: text("/id"),
            name: text("/function/name"),
            arguments: text("/function/arguments").into(),
        }));
    }
    let text = |key: &str| str_member(&value, key);
    Ok(ChatResponse {
        id: text("id"),
        model: text("model"),
        created: value.get("created").and_then(Value::as_i64),
        parts,
        finish_reason: choice
            .and_then(|choice| choice.get("finish_reason"))
            .and_then(Value::as_str)
            .map(finish_reason_from),
        stop_sequence: None,
        usage: value
            .get("usage")
            .filter(|usage| usage.is_object())
            .map(usage_from),
    })
}

// --- Exact reader for `decode_response` ---

/// True when `body` is a complete answer in the compact layout [`exact_response`] reads: valid JSON, an
/// object, no `error` field, no `"type":"error"`. A cheap positive check; `false` says nothing.
pub(crate) fn is_exact_answer(body: &[u8]) -> bool {
    exact_response(body).is_some()
}

/// A text answer in the compact layout vLLM, llama.cpp and most OpenAI-compatible servers send, read
/// without a parser: `{<flat fields>,"choices":[{"index":0,"message":{"role":"assistant","content":"…"
/// <,"refusal":null>},"logprobs":null,"finish_reason":<"…"|null>}],"usage":{<flat integer or null
/// fields>}<,flat fields>}` in any field order, where a flat field is `"key":value` with a plain string,
/// an integer, `true`, `false` or `null` (see [`json_text::flat_field`]). Anything else (whitespace,
/// tool calls, reasoning, nested usage details, `error`) returns `None` for the parsers below, which
/// define the semantics; a property test holds this reader to the `Value` path.
pub(crate) fn exact_response(body: &[u8]) -> Option<ChatResponse> {
    use json_text::{flat_field, int_i64, int_u64, plain_str, read_str, tail};
    const CHOICE_START: &[u8] =
        br#""choices":[{"index":0,"message":{"role":"assistant","content":"#;
    const USAGE_START: &[u8] = br#""usage":{"#;
    let inner = body.strip_prefix(b"{")?.strip_suffix(b"}")?;
    let whole = std::str::from_utf8(inner).ok()?;
    let mut response = ChatResponse::default();
    let (mut id, mut model, mut created) = (None, None, None);
    let mut seen_choice = false;
    let mut seen_usage = false;
    let mut rest = inner;
    loop {
        if let Some(after) = rest.strip_prefix(CHOICE_START) {
            if seen_choice {
                return None;
            }
            seen_choice = true;
            // The content string, escapes allowed (decoded by the parser).
            let (text, len) = read_str(tail(whole, after)?)?;
            let after = &after[len..];
            let after = after.strip_prefix(br#","refusal":null"#).unwrap_or(after);
            let after = after.strip_prefix(br#"},"logprobs":null,"finish_reason":"#)?;
            let (reason, after) = if after.starts_with(b"null") {
                (None, &after[4..])
            } else {
                let len = json_text::plain_string_len(after)?;
                (Some(plain_str(&after[..len])?), &after[len..])
            };
            response.finish_reason = reason.map(finish_reason_from);
            if !text.is_empty() {
                response.parts.push(Part::Text(text.into_owned().into()));
            }
            rest = after.strip_prefix(b"}]")?;
        } else if let Some(mut after) = rest.strip_prefix(USAGE_START) {
            if seen_usage {
                return None;
            }
            seen_usage = true;
            let mut usage = Usage::default();
            loop {
                let (key, value) = flat_field(after)?;
                if matches!(key, b"prompt_tokens" | b"completion_tokens") {
                    // The parsers read `null`, a boolean or a negative count as 0; a number that fits
                    // no integer type is left to them.
                    let count = match int_u64(value) {
                        Some(count) => count,
                        None if matches!(value, b"null" | b"true" | b"false") => 0,
                        None if value.first() == Some(&b'"') => 0,
                        None => int_i64(value).map(|_| 0)?,
                    };
                    if key == b"prompt_tokens" {
                        usage.input_tokens = count;
                    } else {
                        usage.output_tokens = count;
                    }
                }
                after = &after[key.len() + 3 + value.len()..];
                match after.first()? {
                    b',' => after = &after[1..],
                    b'}' => break,
                    _ => return None,
                }
            }
            response.usage = Some(usage);
            rest = &after[1..];
        } else {
            let (key, value) = flat_field(rest)?;
            match key {
                b"choices" | b"usage" | b"error" => return None,
                // An error shape (Anthropic's): left to the parsers, so an answer read here is never one.
                b"type" if value == br#""error""# => return None,
                b"id" => id = Some(value),
                b"model" => model = Some(value),
                b"created" => created = Some(value),
                _ => {}
            }
            rest = &rest[key.len() + 3 + value.len()..];
        }
        if rest.is_empty() {
            break;
        }
        rest = rest.strip_prefix(b",")?;
    }
    if !seen_choice {
        return None;
    }
    response.id = id.and_then(plain_str).unwrap_or_default().to_owned();
    response.model = model.and_then(plain_str).unwrap_or_default().to_owned();
    response.created = created.and_then(int_i64);
    Some(response)
}

// --- Borrowed fast path for `decode_response` ---
//
// The common response shape read without a JSON tree: fields stay raw JSON and are read the way the
// `Value` path reads them (`as_str`, `as_i64`, presence). Rare shapes (`thinking_blocks`, array content,
// non-object entries) return `None` and take the `Value` path; a unit test compares both on fixtures and
// arbitrary JSON.

#[derive(Deserialize)]
struct ResponseIn<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default, borrow)]
    choices: Option<Vec<crate::protocol::Obj<ResponseChoiceIn<'a>>>>,
    #[serde(default)]
    usage: Option<crate::protocol::Obj<UsageIn>>,
}

#[derive(Deserialize)]
struct ResponseChoiceIn<'a> {
    #[serde(default, borrow)]
    message: Option<crate::protocol::Obj<ResponseMessageIn<'a>>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ResponseMessageIn<'a> {
    #[serde(default, borrow)]
    thinking_blocks: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    reasoning_content: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    reasoning: Option<&'a RawValue>,
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<crate::protocol::Obj<ResponseToolCallIn<'a>>>>,
}

#[derive(Deserialize)]
struct ResponseToolCallIn<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<crate::protocol::Obj<ResponseFunctionIn<'a>>>,
}

#[derive(Deserialize)]
struct ResponseFunctionIn<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// `usage` as [`usage_from`] reads it (absent counters are 0).
#[derive(Deserialize)]
struct UsageIn {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<crate::protocol::Obj<UsageDetailsIn>>,
    #[serde(default)]
    completion_tokens_details: Option<crate::protocol::Obj<UsageDetailsIn>>,
}

#[derive(Deserialize)]
struct UsageDetailsIn {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// Keeps a present `null` as `Some("null")` (plain `Option` makes it `None`), for fields whose mere
/// presence matters.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// `Value::as_str` on a raw JSON value; `Err` when the string does not decode (the `Value` path then
/// reports the body as invalid).
fn raw_str(raw: Option<&RawValue>) -> Result<Option<std::borrow::Cow<'_, str>>, serde_json::Error> {
    match raw {
        Some(raw) if raw.get().starts_with('"') => serde_json::from_str(raw.get()).map(Some),
        _ => Ok(None),
    }
}

impl ResponseIn<'_> {
    fn decode(self) -> Option<ChatResponse> {
        let choice = self.choices.as_ref().and_then(|choices| choices.first());
        let message = choice.and_then(|choice| choice.message.as_ref());
        let mut parts = Vec::new();
        if let Some(message) = message {
            if message.thinking_blocks.is_some() {
                return None;
            }
            if let Some(reasoning) = raw_str(message.reasoning_content.or(message.reasoning))
                .ok()?
                .filter(|text| !text.is_empty())
            {
                parts.push(Part::Thinking {
                    text: reasoning.into_owned(),
                    signature: None,
                });
            }
        }
        let non_empty = |text: &Option<Cow<'_, str>>| {
            text.as_deref()
                .filter(|text| !text.is_empty())
                .map(str::to_owned)
        };
        match message.and_then(|message| non_empty(&message.content)) {
            Some(text) => parts.push(Part::Text(text.into())),
            None => {
                if let Some(refusal) = message.and_then(|message| message.refusal.as_deref()) {
                    parts.push(Part::Text(refusal.to_owned().into()));
                } else if let Some(text) = choice.and_then(|choice| non_empty(&choice.text)) {
                    parts.push(Part::Text(text.into()));
                }
            }
        }
        for call in message
            .and_then(|message| message.tool_calls.as_deref())
            .unwrap_or_default()
        {
            let function = call.function.as_ref();
            let text =
                |text: Option<&Cow<'_, str>>| text.map(|t| t.to_string()).unwrap_or_default();
            parts.push(Part::ToolCall(ToolCall {
                id: text(call.id.as_ref()),
                name: text(function.and_then(|function| function.name.as_ref())),
                arguments: text(function.and_then(|function| function.arguments.as_ref())).into(),
            }));
        }
        let usage = self.usage.as_ref().map(|usage| Usage {
            input_tokens: usage.prompt_tokens.unwrap_or(0),
            output_tokens: usage.completion_tokens.unwrap_or(0),
            cache_read_tokens: usage
                .prompt_tokens_details
                .as_ref()
                .and_then(|details| details.cached_tokens)
                .unwrap_or(0),
            cache_creation_tokens: 0,
            reasoning_tokens: usage
                .completion_tokens_details
                .as_ref()
                .and_then(|details| details.reasoning_tokens)
                .unwrap_or(0),
        });
        Some(ChatResponse {
            id: self.id.map(Cow::into_owned).unwrap_or_default(),
            model: self.model.map(Cow::into_owned).unwrap_or_default(),
            created: self.created,
            parts,
            finish_reason: choice
                .and_then(|choice| choice.finish_reason.as_deref())
                .map(finish_reason_from),
            stop_sequence: None,
            usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json_text::near_flat_value;

    const TYPICAL: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi \"there\"\n","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":20,"total_tokens":29,"prompt_tokens_details":null},"system_fingerprint":"fp"}"#;

    #[test]
    fn reads_the_compact_layout_like_the_value_path() {
        let exact = exact_response(TYPICAL.as_bytes()).expect("the compact layout is read exactly");
        assert_eq!(exact, decode_response_value(TYPICAL.as_bytes()).unwrap());
        assert_eq!(exact.parts, vec![Part::Text("Hi \"there\"\n".into())]);
        assert_eq!(
            exact.usage.map(|u| (u.input_tokens, u.output_tokens)),
            Some((9, 20))
        );
        // Found by the property test: the parser keeps `-0` as a float, so it is no `created`.
        let negative_zero = TYPICAL.replace("1700000000", "-0");
        let exact = exact_response(negative_zero.as_bytes()).unwrap();
        assert_eq!(exact.created, None);
        assert_eq!(
            exact,
            decode_response_value(negative_zero.as_bytes()).unwrap()
        );
        // Pretty-printed, tool calls, nested usage details: left to the parsers.
        for body in [
            r#"{ "choices": [] }"#,
            r#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[]},"logprobs":null,"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"a"},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens_details":{"cached_tokens":1}}}"#,
        ] {
            assert_eq!(exact_response(body.as_bytes()), None, "{body}");
        }
    }

    fn field() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![
            4 => Just("id"),
            4 => Just("created"),
            4 => Just("model"),
            4 => Just("object"),
            1 => Just("error"),
            1 => Just("usage"),
            1 => Just("type"),
            1 => Just("x\\\"y"),
        ];
        (key, near_flat_value()).prop_map(|(key, value)| format!("\"{key}\":{value}"))
    }

    fn usage() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("prompt_tokens"),
            Just("completion_tokens"),
            Just("total_tokens"),
            Just("prompt_tokens_details"),
        ];
        proptest::collection::vec((key, near_flat_value()), 0..4).prop_map(|fields| {
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(key, value)| format!("\"{key}\":{value}"))
                .collect();
            format!("\"usage\":{{{}}}", fields.join(","))
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// Bodies near the compact layout (random fields around the choice and usage, any content
        /// and finish reason, a stray byte): whenever the exact reader answers, the body is valid JSON
        /// and the `Value` path reads the same response.
        #[test]
        fn exact_reader_agrees_with_the_value_path(
            before in proptest::collection::vec(field(), 0..3),
            after in proptest::collection::vec(field(), 0..3),
            usage in proptest::option::of(usage()),
            text in ".{0,12}",
            refusal in proptest::prelude::any::<bool>(),
            finish in proptest::option::of("stop|length|tool_calls|x\\\\y|"),
            cut in proptest::option::weighted(0.3, (0usize..300, proptest::prelude::any::<u8>())),
        ) {
            let mut fields = before;
            fields.push(format!(
                r#""choices":[{{"index":0,"message":{{"role":"assistant","content":{}{}}},"logprobs":null,"finish_reason":{}}}]"#,
                serde_json::to_string(&text).unwrap(),
                if refusal { r#","refusal":null"# } else { "" },
                finish.map_or("null".to_owned(), |f| serde_json::to_string(&f).unwrap()),
            ));
            fields.extend(usage);
            fields.extend(after);
            let mut body = format!("{{{}}}", fields.join(",")).into_bytes();
            if let Some((at, byte)) = cut {
                let at = at % body.len();
                body[at] = byte;
            }
            if let Some(exact) = exact_response(&body) {
                let value = decode_response_value(&body);
                proptest::prop_assert!(value.is_ok(), "exact reader accepted {:?}", String::from_utf8_lossy(&body));
                proptest::prop_assert_eq!(exact, value.unwrap());
                // An answer read exactly is never an error shape (the cache relies on it).
                let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
                proptest::prop_assert!(value.get("error").is_none() && value["type"] != "error");
            }
        }
    }
}
