//! Byte-level edits of a JSON object's top-level fields, for pass-through bodies.
//!
//! A body forwarded between the same protocols must keep every field it came with (unknown ones
//! included), so instead of re-serializing we locate each top-level value's span with
//! `serde_json::value::RawValue` and splice new text in. Nested content is never touched.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::DecodeError;

/// Replace (or add, when absent) top-level fields of the JSON object in `body`.
/// Each `(name, json)` pair gives the field name and its new value as JSON text.
pub fn set_fields(body: &[u8], fields: &[(&str, &str)]) -> Result<Vec<u8>, DecodeError> {
    if let Some(out) = fast_set_fields(body, fields) {
        return Ok(out);
    }
    let spans = top_level_spans(body)?;
    let mut edits: Vec<(usize, usize, String)> = Vec::with_capacity(fields.len());
    let mut missing = String::new();
    for (name, json) in fields {
        let mut found = false;
        for (key, start, end) in &spans {
            if key == name {
                edits.push((*start, *end, (*json).to_owned()));
                found = true;
            }
        }
        if !found {
            missing.push_str(&serde_json::to_string(name).unwrap_or_default());
            missing.push(':');
            missing.push_str(json);
            missing.push(',');
        }
    }
    edits.sort_by_key(|(start, _, _)| *start);
    let mut out = Vec::with_capacity(body.len() + missing.len() + 32);
    let open = body
        .iter()
        .position(|&b| b == b'{')
        .ok_or_else(|| DecodeError::new("request body must be a JSON object", None))?;
    out.extend_from_slice(&body[..=open]);
    let mut cursor = open + 1;
    if !missing.is_empty() {
        if spans.is_empty() {
            missing.pop();
        }
        out.extend_from_slice(missing.as_bytes());
    }
    for (start, end, json) in edits {
        out.extend_from_slice(&body[cursor..start]);
        out.extend_from_slice(json.as_bytes());
        cursor = end;
    }
    out.extend_from_slice(&body[cursor..]);
    Ok(out)
}

/// The common case without parsing: the object starts with `{"<first>":"<plain string>"` and every other
/// field is absent from the body. Returns `None` whenever that is not certain (the caller then parses).
fn fast_set_fields(body: &[u8], fields: &[(&str, &str)]) -> Option<Vec<u8>> {
    let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[open] != b'{' {
        return None;
    }
    // First key and, when it is a string without escapes, its value span.
    let mut i = open + 1;
    while body.get(i)?.is_ascii_whitespace() {
        i += 1;
    }
    let first_key: Option<(&[u8], usize, usize)> = if body[i] == b'"' {
        let key_end = i + 1 + memchr::memchr(b'"', &body[i + 1..])?;
        let key = &body[i + 1..key_end];
        let mut j = key_end + 1;
        while body.get(j)?.is_ascii_whitespace() {
            j += 1;
        }
        if body[j] != b':' {
            return None;
        }
        j += 1;
        while body.get(j)?.is_ascii_whitespace() {
            j += 1;
        }
        if body[j] == b'"' {
            let value_end = j + 1 + memchr::memchr(b'"', &body[j + 1..])?;
            if memchr::memchr(b'\\', &body[j + 1..value_end]).is_some() {
                return None;
            }
            Some((key, j, value_end + 1))
        } else {
            None
        }
    } else {
        None
    };
    let mut replace: Option<(usize, usize, &str)> = None;
    let added: usize = fields
        .iter()
        .map(|(name, json)| name.len() + json.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(body.len() + added);
    out.extend_from_slice(&body[..=open]);
    for (name, json) in fields {
        match first_key {
            Some((key, start, end)) if key == name.as_bytes() => replace = Some((start, end, json)),
            _ => {
                if has_quoted(body, name.as_bytes()) {
                    return None;
                }
                out.push(b'"');
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
                out.extend_from_slice(json.as_bytes());
                out.push(b',');
            }
        }
    }
    let inserted = out.len() > open + 1;
    match replace {
        Some((start, end, json)) => {
            out.extend_from_slice(&body[open + 1..start]);
            out.extend_from_slice(json.as_bytes());
            out.extend_from_slice(&body[end..]);
        }
        None => {
            if first_key.is_none() && body[i] == b'}' && inserted {
                out.pop();
            }
            out.extend_from_slice(&body[open + 1..]);
        }
    }
    Some(out)
}

/// `(key, start, end)` byte spans of every top-level value.
fn top_level_spans(body: &[u8]) -> Result<Vec<(String, usize, usize)>, DecodeError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let entries = deserializer
        .deserialize_map(SpanVisitor)
        .map_err(|error| DecodeError::new(format!("invalid JSON body: {error}"), None))?;
    let base = body.as_ptr() as usize;
    Ok(entries
        .into_iter()
        .map(|(key, raw)| {
            let start = raw.get().as_ptr() as usize - base;
            (key.into_owned(), start, start + raw.get().len())
        })
        .collect())
}

struct SpanVisitor;

impl<'de> Visitor<'de> for SpanVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            out.push((key, value));
        }
        Ok(out)
    }
}

/// Serialize a string as JSON text (quoted and escaped). For the short values set into bodies (ids,
/// names): the eight-byte scan, which needs no room beyond the text's own.
pub fn json_string(value: &str) -> String {
    let mut out = Vec::with_capacity(value.len() + 2);
    super::json_text::write_str_swar(&mut out, value);
    // `write_str` copies UTF-8 text and writes ASCII escapes: the result is UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| String::from("\"\""))
}

/// Whether `"name"` (quotes included) occurs anywhere in `body`. The names the request path sets have
/// their searcher built once: building a `memmem` searcher costs more than running it on an answer.
pub(crate) fn has_quoted(body: &[u8], name: &[u8]) -> bool {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    static ID: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"id\""));
    static BACKEND: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"backend\""));
    static CACHED: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"cached\""));
    let finder = match name {
        b"id" => &*ID,
        b"backend" => &*BACKEND,
        b"cached" => &*CACHED,
        _ => {
            let mut quoted = Vec::with_capacity(name.len() + 2);
            quoted.push(b'"');
            quoted.extend_from_slice(name);
            quoted.push(b'"');
            return memchr::memmem::find(body, &quoted).is_some();
        }
    };
    finder.find(body).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, fields: &[(&str, &str)], expect: &str) {
        let out = set_fields(body.as_bytes(), fields).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), expect);
    }

    #[test]
    fn replaces_existing_and_keeps_unknown_fields() {
        check(
            r#"{"model":"a","x_vendor":{"model":"keep"},"messages":[]}"#,
            &[("model", "\"b\"")],
            r#"{"model":"b","x_vendor":{"model":"keep"},"messages":[]}"#,
        );
    }

    #[test]
    fn inserts_missing_fields() {
        check(
            r#"{"messages":[]}"#,
            &[("model", "\"b\"")],
            r#"{"model":"b","messages":[]}"#,
        );
        check(r#"{ }"#, &[("id", "\"x\"")], r#"{"id":"x" }"#);
    }

    #[test]
    fn handles_whitespace_and_unicode() {
        check(
            "{ \"id\" : \"héllo\" ,\n \"n\": 1 }",
            &[("id", "\"r-1\""), ("backend", "\"local\"")],
            "{\"backend\":\"local\", \"id\" : \"r-1\" ,\n \"n\": 1 }",
        );
    }

    #[test]
    fn fast_path_agrees_with_the_parsed_path() {
        let bodies = [
            r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[]}"#,
            r#"{ "id" : "x", "backend": "old" }"#,
            r#"{"object":"x","id":"y"}"#,
            r#"{"id":"a\"b","n":1}"#,
            r#"{"id":5}"#,
            r#"{}"#,
        ];
        for body in bodies {
            let fields = [("id", "\"r-1\""), ("backend", "\"b\"")];
            let fast = fast_set_fields(body.as_bytes(), &fields);
            let slow_value: serde_json::Value = {
                let mut value: serde_json::Value = serde_json::from_str(body).unwrap();
                value["id"] = serde_json::json!("r-1");
                value["backend"] = serde_json::json!("b");
                value
            };
            if let Some(fast) = fast {
                let fast_value: serde_json::Value = serde_json::from_slice(&fast).unwrap();
                assert_eq!(fast_value, slow_value, "{body}");
            }
            let full: serde_json::Value =
                serde_json::from_slice(&set_fields(body.as_bytes(), &fields).unwrap()).unwrap();
            assert_eq!(full, slow_value, "{body}");
        }
    }

    #[test]
    fn a_quoted_name_is_found_only_whole() {
        assert!(has_quoted(br#"{"id":"x","backend":"b"}"#, b"backend"));
        assert!(has_quoted(br#"{"x":"backend"}"#, b"backend"));
        assert!(!has_quoted(br#"{"backends":1,"my_backend":2}"#, b"backend"));
        assert!(!has_quoted(br#"{"id":"x","backend"#, b"backend"));
        assert!(has_quoted(br#"{"model":"m"}"#, b"model"));
        assert!(!has_quoted(br#"{"models":"m"}"#, b"model"));
        assert!(has_quoted(br#""""#, b""));
    }

    #[test]
    fn json_string_is_what_serde_json_writes() {
        for text in [
            "",
            "plain",
            "quote \" and \\",
            "line\nbreak\t\u{1}",
            "ünï €",
        ] {
            assert_eq!(json_string(text), serde_json::to_string(text).unwrap());
        }
    }

    #[test]
    fn rejects_non_objects() {
        assert!(set_fields(b"[1,2]", &[("a", "1")]).is_err());
        assert!(set_fields(b"{\"a\":", &[("a", "1")]).is_err());
    }
}
