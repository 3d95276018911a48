//! The exact reader for the chat request most clients send (the OpenAI SDKs, curl examples, the bench):
//! compact JSON, a model, text messages, and flat sampling parameters. It reads that layout without a
//! parser and builds the same [`ChatRequest`] the typed decoder builds; anything else — whitespace,
//! unknown or duplicate fields, `null`, parts arrays, tools, stop lists, names, another role — returns
//! `None` for [`super::openai::decode_chat`]'s typed path, which defines the semantics and every error
//! message. A property test holds this reader to that path.

use super::json_text::{flat_field, int_i64, int_u64, read_str, tail};
use super::{ChatRequest, Message, Part, Role};

/// Bodies longer than this go to the typed decoder directly (see [`super::openai::decode_chat`]).
pub(crate) const MAX_BODY: usize = 32 * 1024;

/// `{"<field>":<value>,…}` with the fields below, in any order, each at most once:
/// `model`, `user` (strings); `messages` (a non-empty array of `{"role":…,"content":"…"}` in either
/// order, role `system`, `developer`, `user` or `assistant`); `stream`, `parallel_tool_calls`
/// (booleans); `max_tokens`, `max_completion_tokens`, `n`, `top_k` (unsigned integers); `seed` (an
/// integer); `temperature`, `top_p`, `presence_penalty`, `frequency_penalty` (numbers);
/// `stream_options` (`{}` or `{"include_usage":<boolean>}`).
pub(crate) fn chat(body: &[u8]) -> Option<ChatRequest> {
    // UTF-8 checked once for the whole body (invalid anywhere is the typed decoder's error to report).
    let whole = std::str::from_utf8(body).ok()?;
    let mut rest = body.strip_prefix(b"{")?;
    let mut request = ChatRequest::default();
    let (mut max_tokens, mut max_completion_tokens) = (None, None);
    let mut seen = 0u32;
    let mut messages = false;
    loop {
        let key_len = super::json_text::plain_string_len(rest)?;
        let key = &rest[1..key_len - 1];
        rest = rest[key_len..].strip_prefix(b":")?;
        let (bit, used) = match key {
            b"messages" => {
                let used = read_messages(whole, rest, &mut request)?;
                messages = true;
                (0, used)
            }
            b"model" | b"user" => {
                let (text, used) = read_str(tail(whole, rest)?)?;
                let slot = if key == b"model" {
                    &mut request.model
                } else {
                    &mut request.user
                };
                *slot = Some(text.into_owned());
                (if key == b"model" { 1 } else { 2 }, used)
            }
            b"stream" | b"parallel_tool_calls" => {
                let (value, used) = boolean(rest)?;
                if key == b"stream" {
                    request.stream = value;
                    (3, used)
                } else {
                    request.parallel_tool_calls = Some(value);
                    (4, used)
                }
            }
            b"max_tokens" | b"max_completion_tokens" | b"n" | b"top_k" => {
                let token = number_token(rest);
                let value = int_u64(token).filter(|_| plain_integer(token))?;
                let (slot, bit) = match key {
                    b"max_tokens" => (&mut max_tokens, 5),
                    b"max_completion_tokens" => (&mut max_completion_tokens, 6),
                    b"n" => (&mut request.params.n, 7),
                    _ => (&mut request.params.top_k, 8),
                };
                *slot = Some(value);
                (bit, token.len())
            }
            b"seed" => {
                let token = number_token(rest);
                let value = int_i64(token).filter(|_| plain_integer(token))?;
                request.params.seed = Some(value);
                (9, token.len())
            }
            b"temperature" | b"top_p" | b"presence_penalty" | b"frequency_penalty" => {
                let token = number_token(rest);
                // The parser's own reading of the number (integers and floats alike).
                let value: f64 = serde_json::from_slice(token).ok()?;
                let (slot, bit) = match key {
                    b"temperature" => (&mut request.params.temperature, 10),
                    b"top_p" => (&mut request.params.top_p, 11),
                    b"presence_penalty" => (&mut request.params.presence_penalty, 12),
                    _ => (&mut request.params.frequency_penalty, 13),
                };
                *slot = Some(value);
                (bit, token.len())
            }
            b"stream_options" => {
                let (include_usage, used) = if rest.starts_with(b"{}") {
                    (false, 2)
                } else {
                    let after = rest.strip_prefix(br#"{"include_usage":"#)?;
                    let (value, used) = boolean(after)?;
                    after[used..].strip_prefix(b"}")?;
                    (value, rest.len() - after.len() + used + 1)
                };
                request.include_usage = include_usage;
                (14, used)
            }
            _ => return None,
        };
        // A field given twice is an error for the typed decoder.
        if seen & (1 << bit) != 0 {
            return None;
        }
        seen |= 1 << bit;
        rest = &rest[used..];
        match rest.split_first()? {
            (b',', after) => rest = after,
            // Trailing whitespace is JSON too (a body file often ends with a newline).
            (b'}', after)
                if after
                    .iter()
                    .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) =>
            {
                break;
            }
            _ => return None,
        }
    }
    if !messages {
        return None;
    }
    request.params.max_tokens = max_completion_tokens.or(max_tokens);
    Some(request)
}

/// The messages array at the start of `bytes` (a tail of the body `whole`); its length.
fn read_messages(whole: &str, bytes: &[u8], request: &mut ChatRequest) -> Option<usize> {
    let mut rest = bytes.strip_prefix(b"[")?;
    let mut leading_system = true;
    loop {
        let (role, text, used) = read_message(whole, rest)?;
        if role == Role::System && leading_system {
            request.system.push(text.into());
        } else {
            leading_system = false;
            request.messages.push(Message {
                role,
                parts: vec![Part::Text(text.into())],
                name: None,
            });
        }
        rest = &rest[used..];
        match rest.split_first()? {
            (b',', after) => rest = after,
            (b']', after) => return Some(bytes.len() - after.len()),
            _ => return None,
        }
    }
}

/// `{"role":"…","content":"…"}` (either order) at the start of `bytes` (a tail of the body `whole`):
/// role, text, length.
fn read_message(whole: &str, bytes: &[u8]) -> Option<(Role, String, usize)> {
    let mut rest = bytes.strip_prefix(b"{")?;
    let (mut role, mut content) = (None, None);
    loop {
        if rest.starts_with(br#""role":"#) {
            let (key, value) = flat_field(rest)?;
            debug_assert_eq!(key, b"role");
            let parsed = match value {
                br#""system""# | br#""developer""# => Role::System,
                br#""user""# => Role::User,
                br#""assistant""# => Role::Assistant,
                _ => return None,
            };
            if role.replace(parsed).is_some() {
                return None;
            }
            rest = &rest[br#""role":"#.len() + value.len()..];
        } else {
            rest = rest.strip_prefix(br#""content":"#)?;
            let (text, used) = read_str(tail(whole, rest)?)?;
            if content.replace(text.into_owned()).is_some() {
                return None;
            }
            rest = &rest[used..];
        }
        match rest.split_first()? {
            (b',', after) => rest = after,
            (b'}', after) => return Some((role?, content?, bytes.len() - after.len())),
            _ => return None,
        }
    }
}

fn boolean(bytes: &[u8]) -> Option<(bool, usize)> {
    if bytes.starts_with(b"true") {
        Some((true, 4))
    } else if bytes.starts_with(b"false") {
        Some((false, 5))
    } else {
        None
    }
}

/// The run of number characters at the start of `bytes` (validated by whoever reads it).
fn number_token(bytes: &[u8]) -> &[u8] {
    let len = bytes
        .iter()
        .position(|byte| !matches!(byte, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .unwrap_or(bytes.len());
    &bytes[..len]
}

/// `-?(0|[1-9][0-9]*)`: how JSON writes an integer (Rust's `parse` also takes `+1` and `01`).
fn plain_integer(token: &[u8]) -> bool {
    let digits = token.strip_prefix(b"-").unwrap_or(token);
    !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || digits.len() == 1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::openai;

    /// The typed decoder alone (what `decode_chat` does when this reader declines).
    fn typed(body: &[u8]) -> Option<ChatRequest> {
        openai::decode_chat_typed(body).ok()
    }

    #[test]
    fn reads_what_clients_send() {
        for body in [
            r#"{"model":"mock-model","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Benchmark request 7: say hello in twenty tokens."}],"max_tokens":64,"temperature":0}"#,
            r#"{"messages":[{"content":"Hi \"there\"\n","role":"user"}],"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"developer","content":"c"}],"seed":-3,"top_p":0.9,"n":1,"user":"u","parallel_tool_calls":false,"max_completion_tokens":5,"max_tokens":9}"#,
            "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}\r\n \t",
        ] {
            let exact = chat(body.as_bytes()).expect(body);
            assert_eq!(Some(exact), typed(body.as_bytes()), "{body}");
        }
    }

    #[test]
    fn declines_what_it_does_not_read() {
        for body in [
            r#"{"model":"m","messages":[]}"#,
            r#"{"model":"m"}"#,
            r#"{"model":"m","model":"n","messages":[{"role":"user","content":"a"}]}"#,
            r#"{"model":null,"messages":[{"role":"user","content":"a"}]}"#,
            r#"{"messages":[{"role":"tool","content":"a"}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}"#,
            r#"{"messages":[{"role":"user","content":"a","name":"x"}]}"#,
            r#"{"messages":[{"role":"user","role":"user","content":"a"}]}"#,
            r#"{"messages":[{"role":"user","content":"a"}],"max_tokens":1.0}"#,
            r#"{"messages":[{"role":"user","content":"a"}],"max_tokens":-1}"#,
            r#"{"messages":[{"role":"user","content":"a"}],"max_tokens":01}"#,
            r#"{"messages":[{"role":"user","content":"a"}],"seed":-0}"#,
            r#"{"messages":[{"role":"user","content":"a"}],"stop":["x"]}"#,
            r#"{"messages":[{"role":"user","content":"a"}],"logprobs":true}"#,
            r#"{ "messages":[{"role":"user","content":"a"}]}"#,
            r#"{"messages":[{"role":"user","content":"a"}]}}"#,
        ] {
            assert_eq!(chat(body.as_bytes()), None, "{body}");
        }
    }

    fn message() -> impl Strategy<Value = String> {
        let role = prop_oneof![
            6 => Just("user"),
            3 => Just("system"),
            3 => Just("assistant"),
            1 => Just("developer"),
            1 => Just("tool"),
            1 => Just("other"),
        ];
        let content = prop_oneof![
            14 => ".{0,12}".prop_map(|text| serde_json::to_string(&text).unwrap()),
            1 => Just(r#""\u00e9\ud83c\udf89""#.to_owned()),
            1 => Just("null".to_owned()),
            1 => Just(r#"[{"type":"text","text":"p"}]"#.to_owned()),
        ];
        (role, content, any::<bool>(), 0..32u8).prop_map(|(role, content, swap, odd)| {
            let role = format!(r#""role":"{role}""#);
            let content = format!(r#""content":{content}"#);
            match odd {
                0 => format!(r#"{{{role},"name":"n",{content}}}"#),
                1 => format!(r#"{{{role},{role},{content}}}"#),
                2 => format!("{{{role}}}"),
                _ if swap => format!("{{{content},{role}}}"),
                _ => format!("{{{role},{content}}}"),
            }
        })
    }

    const FIELDS: [&str; 16] = [
        "model",
        "user",
        "stream",
        "parallel_tool_calls",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "top_k",
        "seed",
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "stream_options",
        "stop",
        "logprobs",
    ];

    /// A value of the field's own type most of the time, any other value otherwise.
    fn value_for(name: &'static str) -> BoxedStrategy<String> {
        let fitting: BoxedStrategy<String> = match name {
            "model" | "user" => ".{0,8}"
                .prop_map(|text| serde_json::to_string(&text).unwrap())
                .boxed(),
            "stream" | "parallel_tool_calls" | "logprobs" => {
                any::<bool>().prop_map(|b| b.to_string()).boxed()
            }
            "max_tokens" | "max_completion_tokens" | "n" | "top_k" => {
                any::<u64>().prop_map(|n| n.to_string()).boxed()
            }
            "seed" => any::<i64>().prop_map(|n| n.to_string()).boxed(),
            "stream_options" => prop_oneof![
                Just(r#"{"include_usage":true}"#.to_owned()),
                Just(r#"{"include_usage":false}"#.to_owned()),
                Just("{}".to_owned()),
            ]
            .boxed(),
            "stop" => Just(r#"["x"]"#.to_owned()).boxed(),
            _ => prop_oneof![
                crate::protocol::json_text::float_text(),
                any::<i32>().prop_map(|n| n.to_string()),
                Just("-0.0".to_owned()),
            ]
            .boxed(),
        };
        let other = prop_oneof![
            crate::protocol::json_text::near_flat_value(),
            Just("1e400".to_owned()),
            Just("1.0".to_owned()),
            Just(r#"{"include_usage":null}"#.to_owned()),
        ];
        prop_oneof![12 => fitting, 1 => other].boxed()
    }

    fn body() -> impl Strategy<Value = String> {
        let fields = proptest::sample::subsequence(FIELDS.to_vec(), 0..6)
            .prop_flat_map(|names| {
                names
                    .into_iter()
                    .map(|name| {
                        value_for(name).prop_map(move |value| format!(r#""{name}":{value}"#))
                    })
                    .collect::<Vec<_>>()
            })
            .prop_shuffle();
        (
            proptest::collection::vec(message(), 1..4),
            fields,
            0..6usize,
            proptest::option::weighted(0.1, (0..16usize, any::<prop::sample::Index>())),
        )
            .prop_map(|(messages, mut fields, at, duplicate)| {
                // Now and then one field twice (the typed decoder refuses that).
                if let Some((_, which)) = duplicate
                    && !fields.is_empty()
                {
                    let again = fields[which.index(fields.len())].clone();
                    fields.push(again);
                }
                let at = at.min(fields.len());
                fields.insert(at, format!(r#""messages":[{}]"#, messages.join(",")));
                format!(
                    "{{{}}}{}",
                    fields.join(","),
                    if at % 2 == 0 { "" } else { "\n" }
                )
            })
    }

    proptest! {
        /// Whatever the exact reader reads, the typed decoder reads the same way.
        #[test]
        fn exact_reader_agrees_with_the_typed_decoder(body in body()) {
            if let Some(exact) = chat(body.as_bytes()) {
                prop_assert_eq!(Some(exact), typed(body.as_bytes()), "{}", body);
            }
        }

        /// A stray byte anywhere: still never a different reading.
        #[test]
        fn exact_reader_agrees_with_a_stray_byte(
            body in crate::protocol::json_text::with_stray_byte(body()),
        ) {
            if let Some(exact) = chat(&body) {
                prop_assert_eq!(Some(exact), typed(&body), "{}", String::from_utf8_lossy(&body));
            }
        }
    }
}
