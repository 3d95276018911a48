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

/// Serialize a string as JSON text (quoted and escaped).
pub fn json_string(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| String::from("\"\""))
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
    fn rejects_non_objects() {
        assert!(set_fields(b"[1,2]", &[("a", "1")]).is_err());
        assert!(set_fields(b"{\"a\":", &[("a", "1")]).is_err());
    }
}
