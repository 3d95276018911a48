//! The cache key's canonical text, written in one pass over the request body: object keys sorted (the
//! last of duplicate keys wins, as in a parsed object), whitespace dropped, strings escaped the one way
//! `serde_json` writes them, numbers as `serde_json` prints the number it parses, and a `,` after every
//! member and array item. Top-level fields in `ignored` are left out.
//!
//! The text is the one a tree parse (`serde_json` into a field list, then written sorted) produces —
//! keys already stored in a shared Redis cache stay valid — and a property test holds it to that tree
//! path, which the tests keep as the definition.

use std::borrow::Cow;

use crate::protocol::json_text::{read_str, write_str};

/// `serde_json`'s nesting limit: a document nested deeper does not parse, so it gets no key.
const MAX_DEPTH: usize = 127;

/// What the top-level object said about the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TopLevel {
    /// The last top-level `cache` field: `None` when absent, else whether it is `false`.
    pub cache: Option<bool>,
}

/// Appends the canonical text of the JSON object `body` to `out`, without the top-level fields named in
/// `ignored`. `None` when `body` is not one valid JSON object (`out` is then left partly written).
pub(super) fn write_canonical(
    body: &[u8],
    ignored: &[&str],
    out: &mut Vec<u8>,
) -> Option<TopLevel> {
    // UTF-8 checked once for the whole body (SIMD, as request bodies are); strings are then read as
    // text without a check each.
    let text = simdutf8::basic::from_utf8(body).ok()?;
    let mut reader = Reader {
        body,
        text,
        at: 0,
        members: Vec::with_capacity(16),
        values: Vec::with_capacity(body.len()),
    };
    reader.skip_ws();
    if reader.peek()? != b'{' {
        return None;
    }
    let mut top = TopLevel { cache: None };
    reader.object(out, 1, Some((ignored, &mut top)))?;
    reader.skip_ws();
    (reader.at == body.len()).then_some(top)
}

struct Reader<'a> {
    body: &'a [u8],
    /// `body` as text.
    text: &'a str,
    at: usize,
    /// The members of the objects being read, innermost last (one buffer for the whole document).
    members: Vec<Member<'a>>,
    /// An object's values while its members are put in order (reused by every object).
    values: Vec<u8>,
}

/// One object member: its key and where its canonical value sits in the output.
struct Member<'a> {
    key: Cow<'a, str>,
    start: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.body.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(out, depth + 1, None),
            b'[' => self.array(out, depth + 1),
            b'"' => {
                let (text, len) = read_str(self.text.get(self.at..)?)?;
                match text {
                    // Plain text is written as it came: no byte of it needs an escape.
                    Cow::Borrowed(_) => out.extend_from_slice(&self.body[self.at..self.at + len]),
                    Cow::Owned(text) => write_str(out, &text),
                }
                self.at += len;
                Some(())
            }
            b't' => self.literal(out, b"true"),
            b'f' => self.literal(out, b"false"),
            b'n' => self.literal(out, b"null"),
            _ => self.number(out),
        }
    }

    fn literal(&mut self, out: &mut Vec<u8>, word: &[u8]) -> Option<()> {
        if !self.body[self.at..].starts_with(word) {
            return None;
        }
        self.at += word.len();
        out.extend_from_slice(word);
        Some(())
    }

    /// An integer that fits `u64` or `i64` is written as it came (JSON integers have one spelling);
    /// anything else is parsed by `serde_json` as a float and written as it writes one.
    fn number(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let rest = &self.body[self.at..];
        let len = rest
            .iter()
            .position(|byte| !matches!(byte, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
            .unwrap_or(rest.len());
        let token = &rest[..len];
        self.at += len;
        let digits = token.strip_prefix(b"-").unwrap_or(token);
        let integer = !digits.is_empty()
            && digits.iter().all(u8::is_ascii_digit)
            && (digits[0] != b'0' || digits.len() == 1)
            && token != b"-0";
        if integer && fits_64(token) {
            out.extend_from_slice(token);
            return Some(());
        }
        let number: serde_json::Number = serde_json::from_slice(token).ok()?;
        serde_json::to_writer(&mut *out, &number).ok()
    }

    fn array(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1;
        out.push(b'[');
        self.skip_ws();
        if self.peek()? == b']' {
            self.at += 1;
            out.push(b']');
            return Some(());
        }
        loop {
            self.skip_ws();
            self.value(out, depth)?;
            out.push(b',');
            self.skip_ws();
            match self.peek()? {
                b',' => self.at += 1,
                b']' => break,
                _ => return None,
            }
        }
        self.at += 1;
        out.push(b']');
        Some(())
    }

    /// The members' values are written first, in the order they come; then that run of the output is
    /// replaced by the sorted object.
    fn object(
        &mut self,
        out: &mut Vec<u8>,
        depth: usize,
        mut top: Option<(&[&str], &mut TopLevel)>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1;
        let start = out.len();
        let first_member = self.members.len();
        self.skip_ws();
        if self.peek()? == b'}' {
            self.at += 1;
            out.extend_from_slice(b"{}");
            return Some(());
        }
        loop {
            self.skip_ws();
            let (key, len) = read_str(self.text.get(self.at..)?)?;
            self.at += len;
            self.skip_ws();
            if self.peek()? != b':' {
                return None;
            }
            self.at += 1;
            self.skip_ws();
            let value_start = out.len();
            self.value(out, depth)?;
            match top.as_mut() {
                Some((ignored, top)) if ignored.contains(&key.as_ref()) => {
                    if key == "cache" {
                        top.cache = Some(&out[value_start..] == b"false");
                    }
                    out.truncate(value_start);
                }
                _ => self.members.push(Member {
                    key,
                    start: value_start - start,
                    end: out.len() - start,
                }),
            }
            self.skip_ws();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => break,
                _ => return None,
            }
        }
        self.at += 1;
        // A stable sort keeps duplicates in their order: the last of each name is the one written.
        let members = &mut self.members[first_member..];
        members.sort_by(|a, b| a.key.cmp(&b.key));
        self.values.clear();
        self.values.extend_from_slice(&out[start..]);
        out.truncate(start);
        out.push(b'{');
        for (i, member) in members.iter().enumerate() {
            if members
                .get(i + 1)
                .is_some_and(|next| next.key == member.key)
            {
                continue;
            }
            write_str(out, &member.key);
            out.push(b':');
            out.extend_from_slice(&self.values[member.start..member.end]);
            out.push(b',');
        }
        out.push(b'}');
        self.members.truncate(first_member);
        Some(())
    }
}

/// Whether an integer token (`-?[0-9]+`) fits `u64` (non-negative) or `i64` (negative), the range
/// `serde_json` keeps as an integer.
fn fits_64(token: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(token) else {
        return false;
    };
    if token.first() == Some(&b'-') {
        text.parse::<i64>().is_ok()
    } else {
        text.parse::<u64>().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IGNORED: [&str; 3] = ["stream", "user", "cache"];

    /// The definition: parse into a tree of field lists, drop the ignored top-level fields, write the
    /// tree with keys sorted (the stable sort's last duplicate wins).
    mod tree {
        use std::borrow::Cow;

        use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

        pub(crate) enum Node<'a> {
            Null,
            Bool(bool),
            Number(serde_json::Number),
            Str(Cow<'a, str>),
            Array(Vec<Node<'a>>),
            Object(Vec<(Cow<'a, str>, Node<'a>)>),
        }

        impl<'de> serde::Deserialize<'de> for Node<'de> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(NodeVisitor)
            }
        }

        struct NodeVisitor;

        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Node<'de>, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
                Ok(Node::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
                Ok(Node::Number(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
                Ok(Node::Number(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Node<'de>, E> {
                serde_json::Number::from_f64(v)
                    .map(Node::Number)
                    .ok_or_else(|| E::custom("a number that is not finite"))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
                Ok(Node::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
                Ok(Node::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
                let mut fields = Vec::new();
                while let Some(name) = map.next_key_seed(KeySeed)? {
                    fields.push((name, map.next_value()?));
                }
                Ok(Node::Object(fields))
            }
        }

        struct KeySeed;

        impl<'de> DeserializeSeed<'de> for KeySeed {
            type Value = Cow<'de, str>;

            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_str(KeyVisitor)
            }
        }

        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Cow<'de, str>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
        }

        fn write_sorted(node: Node<'_>, out: &mut Vec<u8>) {
            match node {
                Node::Object(mut fields) => {
                    fields.sort_by(|a, b| a.0.cmp(&b.0));
                    out.push(b'{');
                    let mut fields = fields.into_iter().peekable();
                    while let Some((name, value)) = fields.next() {
                        if fields.peek().is_some_and(|(next, _)| *next == name) {
                            continue;
                        }
                        out.extend_from_slice(serde_json::to_string(&name).unwrap().as_bytes());
                        out.push(b':');
                        write_sorted(value, out);
                        out.push(b',');
                    }
                    out.push(b'}');
                }
                Node::Array(items) => {
                    out.push(b'[');
                    for item in items {
                        write_sorted(item, out);
                        out.push(b',');
                    }
                    out.push(b']');
                }
                Node::Str(text) => {
                    out.extend_from_slice(serde_json::to_string(&text).unwrap().as_bytes())
                }
                Node::Number(number) => serde_json::to_writer(&mut *out, &number).unwrap(),
                Node::Bool(true) => out.extend_from_slice(b"true"),
                Node::Bool(false) => out.extend_from_slice(b"false"),
                Node::Null => out.extend_from_slice(b"null"),
            }
        }

        /// The canonical text and the top-level `cache` field, or `None` for anything but an object.
        pub(crate) fn canonical(body: &[u8], ignored: &[&str]) -> Option<(Vec<u8>, Option<bool>)> {
            let Ok(Node::Object(mut fields)) = serde_json::from_slice::<Node<'_>>(body) else {
                return None;
            };
            let cache = fields
                .iter()
                .rposition(|(name, _)| name == "cache")
                .map(|at| matches!(fields[at].1, Node::Bool(false)));
            fields.retain(|(name, _)| !ignored.contains(&name.as_ref()));
            let mut out = Vec::new();
            write_sorted(Node::Object(fields), &mut out);
            Some((out, cache))
        }
    }

    fn one_pass(body: &[u8]) -> Option<(Vec<u8>, Option<bool>)> {
        let mut out = b"prefix\n".to_vec();
        let top = write_canonical(body, &IGNORED, &mut out)?;
        Some((out.split_off(7), top.cache))
    }

    fn agree(body: &[u8]) {
        assert_eq!(
            one_pass(body),
            tree::canonical(body, &IGNORED),
            "{}",
            String::from_utf8_lossy(body)
        );
    }

    #[test]
    fn writes_the_canonical_text() {
        let (text, cache) = one_pass(
            br#" { "b" : [1, {"c": null, "a": -2.50e1}], "a": "x\n\"\u00e9", "user": "u", "cache": false } "#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "{\"a\":\"x\\n\\\"é\",\"b\":[1,{\"a\":-25.0,\"c\":null,},],}"
        );
        assert_eq!(cache, Some(true));
    }

    #[test]
    fn agrees_with_the_tree_on_hand_picked_documents() {
        for body in [
            r#"{}"#,
            r#"{"a":[]}"#,
            r#"{"a":{}}"#,
            r#"{"a":1,"a":2,"\u0061":3}"#,
            r#"{"cache":false,"cache":true}"#,
            r#"{"cache":true,"cache":false}"#,
            r#"{"cache":0}"#,
            r#"{"n":[0,-0,-0.0,1.0,1e2,1E+2,0.1e-3,18446744073709551615,18446744073709551616,-9223372036854775808,-9223372036854775809,123456789012345678901234567890]}"#,
            r#"{"n":1e400}"#,
            r#"{"n":01}"#,
            r#"{"n":1.}"#,
            r#"{"n":+1}"#,
            r#"{"n":-}"#,
            r#"{"n":.5}"#,
            r#"{"s":"\ud83c\udf89","t":"\ud83c"}"#,
            "{\"s\":\"a\u{1}\"}",
            r#"{"s":"\x"}"#,
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            r#"{"a":1} x"#,
            r#"{"a":1}}"#,
            r#"[1]"#,
            r#""text""#,
            "",
            "{",
        ] {
            agree(body.as_bytes());
        }
    }

    #[test]
    fn nesting_stops_where_serde_json_stops() {
        for depth in 120..=130 {
            let body = format!("{{\"a\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
            agree(body.as_bytes());
        }
        let mut body = "{\"a\":".to_owned();
        for _ in 0..200 {
            body.push_str("{\"b\":");
        }
        agree(body.as_bytes());
    }

    /// JSON text with the spellings that matter: whitespace, duplicate and escaped keys, escapes in
    /// strings, every way to write a number, the ignored fields.
    fn json_text() -> impl Strategy<Value = String> {
        let ws = prop_oneof![4 => Just(""), 1 => Just(" "), 1 => Just("\n\t "), 1 => Just("\r")];
        let number = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            crate::protocol::json_text::float_text(),
            Just("-0".to_owned()),
            Just("0.50".to_owned()),
            Just("1E+2".to_owned()),
            Just("99999999999999999999".to_owned()),
            Just("-9223372036854775809".to_owned()),
            Just("1e999".to_owned()),
            Just("007".to_owned()),
        ];
        let string = prop_oneof![
            ".{0,6}".prop_map(|text| serde_json::to_string(&text).unwrap()),
            ".{0,4}".prop_map(|text| {
                // Every character as a \u escape (surrogate pairs for the astral ones).
                let mut out = "\"".to_owned();
                for unit in text.encode_utf16() {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
                out.push('"');
                out
            }),
            Just(r#""a\/b\"\\\b\f\n\r\t""#.to_owned()),
        ];
        let key = prop_oneof![
            Just("\"a\"".to_owned()),
            Just("\"\\u0061\"".to_owned()),
            Just("\"b\"".to_owned()),
            Just("\"user\"".to_owned()),
            Just("\"cache\"".to_owned()),
            Just("\"stream\"".to_owned()),
            Just("\"é\"".to_owned()),
            string.clone(),
        ];
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            number,
            string,
        ];
        let value = leaf.prop_recursive(4, 40, 5, move |inner| {
            let ws = ws.clone();
            prop_oneof![
                (
                    proptest::collection::vec((inner.clone(), ws.clone()), 0..5),
                    ws.clone()
                )
                    .prop_map(|(items, ws)| {
                        let items: Vec<String> = items
                            .into_iter()
                            .map(|(v, w)| format!("{w}{v}{w}"))
                            .collect();
                        format!("[{ws}{}]", items.join(","))
                    }),
                (
                    proptest::collection::vec((key.clone(), inner, ws.clone()), 0..5),
                    ws.clone()
                )
                    .prop_map(|(members, ws)| {
                        let members: Vec<String> = members
                            .into_iter()
                            .map(|(k, v, w)| format!("{w}{k}{w}:{w}{v}{w}"))
                            .collect();
                        format!("{{{ws}{}}}", members.join(","))
                    }),
            ]
        });
        value.prop_map(|v| format!("{{\"m\":{v}}}"))
    }

    proptest! {
        /// The one-pass writer produces the tree path's text (and its verdict on the `cache` field)
        /// for any document, and rejects what it rejects.
        #[test]
        fn one_pass_agrees_with_the_tree(body in json_text()) {
            let one = one_pass(body.as_bytes());
            let parses = serde_json::from_str::<serde_json::Value>(&body).is_ok();
            prop_assert_eq!(one.is_some(), parses, "what parses is keyed: {}", body);
            prop_assert_eq!(one, tree::canonical(body.as_bytes(), &IGNORED), "{}", body);
        }

        /// A stray byte anywhere: both accept or both reject, with the same text.
        #[test]
        fn one_pass_agrees_with_a_stray_byte(
            body in crate::protocol::json_text::with_stray_byte(json_text()),
        ) {
            prop_assert_eq!(one_pass(&body), tree::canonical(&body, &IGNORED));
        }
    }
}
