//! Reading JSON bodies, shared by every protocol: a request body into a wire struct with errors that
//! name the offending field, an upstream answer into a tree.

use serde::Deserialize;
use serde::de;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::protocol::{DecodeError, ToolChoice};

pub(crate) fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    // The body is read as text checked once as a whole (a few GB/s): from bytes, serde_json checks
    // every string's UTF-8 again on its own, which cost a fifth of the decode of a 250 KB agent
    // request — and would not check the strings of ignored fields at all.
    let text = body_text(body)?;
    // Fast path: a plain decode. Only a body that fails is decoded again with path tracking, which
    // costs several times more and is needed just to name the offending field.
    if let Ok(value) = serde_json::from_str::<T>(text) {
        return Ok(value);
    }
    let trimmed = body.iter().position(|b| !b.is_ascii_whitespace());
    if trimmed.is_none() {
        return Err(DecodeError::new(
            "request body is empty; expected a JSON object",
            None,
        ));
    }
    if let Some(start) = trimmed
        && body[start] != b'{'
    {
        if serde_json::from_slice::<de::IgnoredAny>(body).is_ok() {
            return Err(DecodeError::new("request body must be a JSON object", None));
        }
        let error = serde_json::from_slice::<de::IgnoredAny>(body)
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        return Err(DecodeError::new(
            format!("invalid JSON body: {error}"),
            None,
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            DecodeError::new(format!("invalid JSON body: {inner}"), None)
        } else if path.is_empty() || path == "." {
            DecodeError::new(format!("invalid request body: {inner}"), None)
        } else {
            DecodeError::new(format!("{path}: {inner}"), Some(path))
        }
    })?;
    deserializer
        .end()
        .map_err(|error| DecodeError::new(format!("invalid JSON body: {error}"), None))?;
    Ok(value)
}

/// A request body as text: its UTF-8 checked once, as a whole (SIMD: several GB/s on text with
/// non-ASCII characters, where std's check runs a byte at a time), the offset named when it is not.
pub(crate) fn body_text(body: &[u8]) -> Result<&str, DecodeError> {
    simdutf8::basic::from_utf8(body).map_err(|_| {
        let offset = std::str::from_utf8(body)
            .err()
            .map_or(0, |error| error.valid_up_to());
        DecodeError::new(
            format!("request body is not valid UTF-8 (invalid byte at offset {offset})"),
            None,
        )
    })
}

pub(crate) fn missing(field: &str) -> DecodeError {
    DecodeError::new(
        format!("missing required field '{field}'"),
        Some(field.to_owned()),
    )
}

/// A required, non-empty `messages` array.
pub(crate) fn required_messages<T>(messages: Option<Vec<T>>) -> Result<Vec<T>, DecodeError> {
    match messages {
        None => Err(missing("messages")),
        Some(messages) if messages.is_empty() => Err(empty_messages()),
        Some(messages) => Ok(messages),
    }
}

/// An empty `messages` array.
pub(crate) fn empty_messages() -> DecodeError {
    DecodeError::new(
        "'messages' must be a non-empty array of messages",
        Some("messages".into()),
    )
}

/// An upstream answer as a JSON tree, which must be an object.
pub(crate) fn response_object(body: &[u8]) -> Result<Value, DecodeError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| DecodeError::new(format!("invalid JSON response: {error}"), None))?;
    if !value.is_object() {
        return Err(DecodeError::new(
            "upstream response must be a JSON object",
            None,
        ));
    }
    Ok(value)
}

/// Decode a field's raw JSON into `T`, naming the path inside the body when it does not fit.
pub(crate) fn parse_field<'a, T: Deserialize<'a>>(
    raw: &'a RawValue,
    field: &str,
) -> Result<T, DecodeError> {
    parse_field_text(raw.get(), field)
}

/// [`parse_field`] for JSON text not checked yet (a syntax error is named too).
pub(crate) fn parse_field_text<'a, T: Deserialize<'a>>(
    text: &'a str,
    field: &str,
) -> Result<T, DecodeError> {
    // Fast path, as in `parse`: tracking the path costs several times the plain decode (two thirds
    // of a 250 KB Responses request's input items), and only a value that does not fit needs it.
    if let Ok(value) = serde_json::from_str::<T>(text) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        if error.inner().is_syntax() || error.inner().is_eof() {
            return DecodeError::new(
                format!("{field}: invalid JSON: {}", error.into_inner()),
                Some(field.into()),
            );
        }
        let inner = error.path().to_string();
        let path = if inner.is_empty() || inner == "." {
            field.to_owned()
        } else if inner.starts_with('[') {
            format!("{field}{inner}")
        } else {
            format!("{field}.{inner}")
        };
        DecodeError::new(format!("{path}: {}", error.into_inner()), Some(path))
    })
}

/// The string member `key` of `value`, empty when absent or not a string (the `Value` oracles'
/// reading of ids, models and names).
pub(crate) fn str_member(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A `tool_choice` given as a word (`auto`, `none`, `required`), in chat completions and Responses alike.
pub(crate) fn tool_choice_word(choice: &str) -> Result<ToolChoice, DecodeError> {
    Ok(match choice {
        "auto" => ToolChoice::Auto,
        "none" => ToolChoice::None,
        "required" => ToolChoice::Required,
        other => {
            return Err(DecodeError::new(
                format!(
                    "tool_choice: unknown value '{other}'; expected auto, none, required or an object naming a function"
                ),
                Some("tool_choice".into()),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::body_text;

    proptest::proptest! {
        /// The SIMD check agrees with std's on any bytes: text of any characters (long enough for the
        /// vector path), with one byte anywhere perhaps replaced; a refusal names std's offset.
        #[test]
        fn body_text_agrees_with_std(
            text in "\\PC{0,300}",
            change in proptest::option::of((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>())),
        ) {
            let mut bytes = text.into_bytes();
            if let Some((at, byte)) = change && !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            match (body_text(&bytes), std::str::from_utf8(&bytes)) {
                (Ok(ours), Ok(std)) => proptest::prop_assert_eq!(ours, std),
                (Err(ours), Err(std)) => proptest::prop_assert_eq!(
                    ours.message,
                    format!("request body is not valid UTF-8 (invalid byte at offset {})", std.valid_up_to())
                ),
                (ours, std) => proptest::prop_assert!(false, "{:?} vs {:?}", ours.is_ok(), std.is_ok()),
            }
        }
    }
}
