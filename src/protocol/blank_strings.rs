//! A large body's long string values blanked before a typed reading that does not keep them.
//!
//! A chat body that goes upstream as received is still checked with the typed wire structs
//! (`openai::decode_chat_unread`), and serde_json reads every string to its end, eight bytes a step,
//! copying the escaped ones: on an agent's turn that is nearly all of the request's cost. Here the body
//! is read once, 64 bytes a step with SIMD: every string inside the named top-level members (`messages`,
//! `tools`) whose text is longer than [`LONG`] bytes is checked as serde_json's string reader checks it
//! (escapes, surrogate pairs, control characters; UTF-8 is the caller's) and written as `""` in a
//! copy of the body; keys, short strings and everything outside strings are copied as they are, so the
//! copy has the body's structure and the typed reading refuses it wherever it refuses the body — save
//! that a blanked string reads as empty. That is only sound where nothing the reading keeps comes from
//! those strings and no string's value decides what it accepts but the tags' (`type`, `role`), which
//! are never blanked: the caller's to know. Held to serde_json by the tests below, the
//! unread readings' property tests and the `blank_strings` and `request_unread` fuzz targets.

use wide::u8x16;

/// Strings whose text (as written, escapes included) is longer than this are blanked; shorter ones
/// (ids, names) are left to the typed reading.
pub(crate) const LONG: usize = 16;

/// Members whose values are never blanked, however long: the tags the readings tell parts, blocks
/// and items apart by (an unknown block type is skipped, a known one checked) and roles. Nor are the
/// values of keys written with escapes, which may read as one of these.
fn is_tag(key: &str) -> bool {
    matches!(key.as_bytes(), b"type" | b"role")
}

/// `text` with every long string value inside the top-level members named in `members` written as
/// `""` (but the values of tags, [`is_tag`]); `None` when nothing was blanked, or when anything is not
/// as a valid body has it (a string serde_json would refuse, a backslash outside a string, unbalanced
/// brackets): the caller then reads the body itself and names what is wrong.
pub fn blank_long_strings(text: &str, members: &[&str]) -> Option<String> {
    blank_and_map(text, members).map(|blanked| blanked.text)
}

/// The copy [`blank_long_strings`] gives, and where its blanked strings were in the body: a reading of
/// the copy can take a string's or a value's place back to the body ([`Blanked::body_offset`]).
pub(crate) struct Blanked {
    pub(crate) text: String,
    /// In order: each blanked string's opening quote in the copy (`at`, where it reads `""`) and its
    /// quotes in the body.
    blanks: Vec<Blank>,
}

#[derive(Clone, Copy)]
struct Blank {
    at: usize,
    open: usize,
    close: usize,
    escaped: bool,
}

impl Blanked {
    /// The index of the first blank at or after the copy's byte `at`. A reading asks in the copy's
    /// order: `hint` (the last answer) is most often the answer or just before it.
    fn next_blank(&self, at: usize, hint: usize) -> usize {
        let mut next = hint.min(self.blanks.len());
        if next > 0
            && self
                .blanks
                .get(next - 1)
                .is_some_and(|blank| blank.at >= at)
        {
            return self.blanks.partition_point(|blank| blank.at < at);
        }
        while self.blanks.get(next).is_some_and(|blank| blank.at < at) {
            next += 1;
        }
        next
    }

    /// The body offset of the copy's byte `at`: the same byte (or, for a blanked string's closing
    /// quote, the closing quote of the string it stood for). The end of a value maps as its last
    /// byte's successor. `hint` as for [`Blanked::blanked_at`].
    pub(crate) fn body_offset(&self, at: usize, hint: &mut usize) -> usize {
        let next = self.next_blank(at, *hint);
        *hint = next;
        if let Some(blank) = self.blanks.get(next)
            && blank.at == at
        {
            return blank.open;
        }
        match next.checked_sub(1).and_then(|last| self.blanks.get(last)) {
            // After a blanked string: shifted by the text it dropped.
            Some(blank) => at - (blank.at + 1) + blank.close,
            None => at,
        }
    }

    /// The body's quotes of the blanked string whose (empty) text starts at `at` in the copy, and
    /// whether it has escapes. `hint` is where the last search ended (a reading's cursor).
    pub(crate) fn blanked_at(&self, at: usize, hint: &mut usize) -> Option<(usize, usize, bool)> {
        let before = at.checked_sub(1)?;
        let next = self.next_blank(before, *hint);
        *hint = next;
        let blank = self.blanks.get(next).filter(|blank| blank.at == before)?;
        Some((blank.open, blank.close, blank.escaped))
    }
}

/// [`blank_long_strings`] with the place of each blanked string.
pub(crate) fn blank_and_map(text: &str, members: &[&str]) -> Option<Blanked> {
    let mut scan = Scan {
        blanks: Vec::new(),
        text,
        members,
        // An agent's turn is mostly long texts: its copy is a fraction of it.
        out: String::with_capacity(text.len() / 4),
        copied: 0,
        depth: 0,
        inside: false,
        mark: 0,
        in_string: false,
        skip_to: 0,
        tag: false,
        escaped: false,
    };
    let bytes = text.as_bytes();
    let mut blocks = bytes.chunks_exact(64);
    let mut base = 0;
    for block in &mut blocks {
        scan.block(base, special_bits(block))?;
        base += 64;
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        // Spaces matter to nothing the scan looks for.
        let mut last = [b' '; 64];
        last[..rest.len()].copy_from_slice(rest);
        scan.block(base, special_bits(&last))?;
    }
    if scan.in_string || scan.copied == 0 {
        return None;
    }
    scan.out.push_str(text.get(scan.copied..)?);
    Some(Blanked {
        text: scan.out,
        blanks: scan.blanks,
    })
}

/// One bit per byte of a 64-byte block: set for a quote, a backslash or a control character.
fn special_bits(block: &[u8]) -> u64 {
    let mut bits = 0;
    for (k, lanes) in block.chunks_exact(16).enumerate() {
        let mut array = [0u8; 16];
        array.copy_from_slice(lanes);
        let v = u8x16::new(array);
        let hit = v.simd_eq(u8x16::splat(b'"'))
            | v.simd_eq(u8x16::splat(b'\\'))
            | v.min(u8x16::splat(0x1f)).simd_eq(v);
        bits |= u64::from(hit.to_bitmask()) << (16 * k);
    }
    bits
}

struct Scan<'a> {
    text: &'a str,
    members: &'a [&'a str],
    /// The copy, up to `copied` of `text`.
    out: String,
    blanks: Vec<Blank>,
    copied: usize,
    /// Brackets open outside strings, up to `mark`.
    depth: usize,
    /// The current top-level member is one of `members`.
    inside: bool,
    /// In a string: its opening quote; outside: where the last string ended.
    mark: usize,
    in_string: bool,
    /// An escape's characters end here: specials before it are escaped.
    skip_to: usize,
    /// The last key read was a tag ([`is_tag`]).
    tag: bool,
    /// The string being read has an escape.
    escaped: bool,
}

impl Scan<'_> {
    /// The special bytes of the block at `base`, in order.
    #[inline(always)]
    fn block(&mut self, base: usize, mut bits: u64) -> Option<()> {
        while bits != 0 {
            self.at(base + bits.trailing_zeros() as usize)?;
            bits &= bits - 1;
        }
        Some(())
    }

    /// A quote, backslash or control character at `at`; `None` when the body is not as a valid one.
    // Inlined into the loop over a block's bits: the scan's state stays in registers.
    #[inline(always)]
    fn at(&mut self, at: usize) -> Option<()> {
        if at < self.skip_to {
            return Some(());
        }
        let bytes = self.text.as_bytes();
        match (self.in_string, *bytes.get(at)?) {
            (true, b'"') => {
                self.in_string = false;
                self.close(at)?;
            }
            (true, b'\\') => {
                self.escaped = true;
                self.skip_to = escape_end(bytes, at)?;
            }
            // A control character in a string, a backslash outside one.
            (true, _) | (false, b'\\') => return None,
            (false, b'"') => {
                for &byte in bytes.get(self.mark..at)? {
                    match byte {
                        b'{' | b'[' => self.depth += 1,
                        b'}' | b']' => self.depth = self.depth.checked_sub(1)?,
                        _ => {}
                    }
                }
                self.in_string = true;
                self.escaped = false;
                self.mark = at;
            }
            // Whitespace between tokens (or a stray control character the typed reading refuses).
            (false, _) => {}
        }
        Some(())
    }

    /// The string opened at `mark` closes at `close`.
    #[inline(always)]
    fn close(&mut self, close: usize) -> Option<()> {
        let open = self.mark;
        let bytes = self.text.as_bytes();
        self.mark = close + 1;
        let after = bytes.get(close + 1..)?;
        let key = after
            .iter()
            .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
            == Some(&b':');
        if key {
            let name = self.text.get(open + 1..close)?;
            // A key written with escapes may read as a tag: its value is kept too.
            self.tag = self.escaped || is_tag(name);
            if self.depth == 1 {
                self.inside = self.members.contains(&name);
            }
        } else if self.depth >= 2 && self.inside && !self.tag && close - open - 1 > LONG {
            self.out.push_str(self.text.get(self.copied..=open)?);
            self.blanks.push(Blank {
                at: self.out.len() - 1,
                open,
                close,
                escaped: self.escaped,
            });
            self.copied = close;
        }
        Some(())
    }
}

/// Where the escape whose backslash is at `at` ends, if serde_json's string reader (the one that
/// refuses lone surrogates) accepts it.
#[inline(always)]
fn escape_end(bytes: &[u8], at: usize) -> Option<usize> {
    Some(match *bytes.get(at + 1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at + 2,
        b'u' => match hex4(bytes.get(at + 2..)?)? {
            0xD800..=0xDBFF => {
                if bytes.get(at + 6..at + 8)? != b"\\u"
                    || !(0xDC00..=0xDFFF).contains(&hex4(bytes.get(at + 8..)?)?)
                {
                    return None;
                }
                at + 12
            }
            0xDC00..=0xDFFF => return None,
            _ => at + 6,
        },
        _ => return None,
    })
}

/// Four hex digits, as `\u` takes them.
fn hex4(bytes: &[u8]) -> Option<u16> {
    bytes.get(..4)?.iter().try_fold(0u16, |n, &byte| {
        let digit = char::from(byte).to_digit(16)?;
        Some(n << 4 | digit as u16)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// `value` with every string inside the named top-level members (not keys) mapped by `f`.
    fn map_member_strings(value: &Value, members: &[&str], f: &dyn Fn(&str) -> String) -> Value {
        fn walk(value: &Value, f: &dyn Fn(&str) -> String) -> Value {
            match value {
                Value::String(text) => Value::String(f(text)),
                Value::Array(items) => Value::Array(items.iter().map(|v| walk(v, f)).collect()),
                Value::Object(map) => Value::Object(
                    map.iter()
                        .map(|(key, v)| (key.clone(), walk(v, f)))
                        .collect(),
                ),
                other => other.clone(),
            }
        }
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, v)| {
                        let v = if members.contains(&key.as_str()) && !v.is_string() {
                            walk(v, f)
                        } else {
                            v.clone()
                        };
                        (key.clone(), v)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// The one place a string's text decides whether serde_json reads a `Value`: under the `RawValue`
    /// token as a key, it must itself be JSON. Blanked, the copy is refused (never the other way).
    #[test]
    fn the_raw_value_token_refuses_the_copy_not_the_body() {
        let body = r#"{"messages":[{"$serde_json::private::RawValue":"                    8"}]}"#;
        let copy = blank_long_strings(body, &["messages"]).unwrap_or_default();
        assert!(serde_json::from_str::<Value>(body).is_ok());
        assert!(serde_json::from_str::<Value>(&copy).is_err());
    }

    /// `blanked` is `body` with some strings emptied.
    fn same_or_emptied(body: &Value, blanked: &Value) -> bool {
        match (body, blanked) {
            (Value::String(body), Value::String(blanked)) => blanked.is_empty() || body == blanked,
            (Value::Array(body), Value::Array(blanked)) => {
                body.len() == blanked.len()
                    && body.iter().zip(blanked).all(|(a, b)| same_or_emptied(a, b))
            }
            (Value::Object(body), Value::Object(blanked)) => {
                body.len() == blanked.len()
                    && body
                        .iter()
                        .zip(blanked)
                        .all(|((k, a), (l, b))| k == l && same_or_emptied(a, b))
            }
            (body, blanked) => body == blanked,
        }
    }

    /// What must hold of any text: with a copy given, the copy reads (as a `Value`) exactly when the
    /// body reads — the blanked strings were ones serde_json accepts, the structure is the body's — and
    /// as the body with some strings inside the members emptied.
    fn holds(text: &str, members: &[&str]) -> Result<(), proptest::test_runner::TestCaseError> {
        let Some(copy) = blank_long_strings(text, members) else {
            return Ok(());
        };
        proptest::prop_assert!(copy.len() < text.len());
        let (body, blanked) = match (
            serde_json::from_str::<Value>(text),
            serde_json::from_str::<Value>(&copy),
        ) {
            (Ok(body), Ok(blanked)) => (body, blanked),
            (Err(_), Err(_)) => return Ok(()),
            // serde_json reads a map keyed by its `RawValue` token by parsing the value's text, which
            // an emptied one is not: the copy is refused, and the reading falls back to the body.
            (Ok(_), Err(_)) if text.contains("$serde_json::private::RawValue") => return Ok(()),
            (body, blanked) => {
                return Err(proptest::test_runner::TestCaseError::fail(format!(
                    "body read {}, copy read {}: {text} / {copy}",
                    body.is_ok(),
                    blanked.is_ok()
                )));
            }
        };
        // Outside the members nothing changed; inside, every string is the body's or emptied.
        let empty = |_: &str| String::new();
        proptest::prop_assert_eq!(
            map_member_strings(&body, members, &empty),
            map_member_strings(&blanked, members, &empty)
        );
        proptest::prop_assert!(same_or_emptied(&body, &blanked), "{} / {}", text, copy);
        Ok(())
    }

    fn agent_body() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let text = "(\\PC|[\"\\\\\n\\x01\\x7f\u{1F600}é]){0,40}";
        let part = prop_oneof![
            text.prop_map(Value::from),
            text.prop_map(|t| serde_json::json!({"type": "text", "text": t})),
        ];
        let message = (
            prop_oneof![
                Just("user".to_owned()),
                Just("assistant".to_owned()),
                Just("tool".to_owned()),
                text,
            ],
            prop_oneof![
                text.prop_map(Value::from),
                proptest::collection::vec(part, 0..3).prop_map(Value::Array),
            ],
            proptest::option::of(text),
        )
            .prop_map(|(role, content, args)| {
                let mut message = serde_json::json!({"role": role, "content": content});
                if let Some(args) = args {
                    message["tool_calls"] =
                        serde_json::json!([{"id": "c", "function": {"name": "f", "arguments": args}}]);
                }
                message
            });
        (
            proptest::collection::vec(message, 0..4),
            text,
            text,
            prop_oneof![Just(""), Just(" "), Just("\n  ")],
        )
            .prop_map(|(messages, model, description, space)| {
                let body = serde_json::json!({
                    "model": model,
                    "messages": messages,
                    "tools": [{"type": "function", "function": {"name": "f", "description": description,
                        "parameters": {"type": "object", "properties": {"a": {"description": description}}}}}],
                    "user": model,
                });
                let text = serde_json::to_string(&body).unwrap_or_default();
                // Whitespace between tokens as some clients write it.
                text.replace(",\"", &format!(",{space}\""))
            })
    }

    proptest::proptest! {
        /// On bodies as clients write them: the copy reads as the body with long strings emptied, and
        /// only inside the members named (`model`, `user` outside them keep their text).
        #[test]
        fn the_copy_reads_as_the_body_with_long_strings_emptied(body in agent_body()) {
            holds(&body, &["messages", "tools"])?;
            if let Some(copy) = blank_long_strings(&body, &["messages", "tools"]) {
                let body: Value = serde_json::from_str(&body).unwrap_or_default();
                let copy: Value = serde_json::from_str(&copy).unwrap_or_default();
                proptest::prop_assert_eq!(&body["model"], &copy["model"]);
                proptest::prop_assert_eq!(&body["user"], &copy["user"]);
            }
        }

        /// The map takes every byte of the copy back to the body: each blanked string to the body's
        /// string (its escapes as the scan saw them), every other byte to the same byte, whatever hint
        /// a look-up starts from.
        #[test]
        fn the_map_takes_the_copy_back_to_the_body(
            body in agent_body(),
            hints in proptest::collection::vec(proptest::prelude::any::<usize>(), 1..8),
        ) {
            let Some(blanked) = blank_and_map(&body, &["messages", "tools"]) else { return Ok(()) };
            let copy = blanked.text.as_bytes();
            let mut hint = hints[0];
            for (at, &byte) in copy.iter().enumerate() {
                hint = if at % 7 == 0 { hints[at % hints.len()] } else { hint };
                let in_body = blanked.body_offset(at, &mut hint);
                proptest::prop_assert_eq!(body.as_bytes()[in_body], byte, "at {}", at);
                if let Some((open, close, escaped)) = blanked.blanked_at(at + 1, &mut hint) {
                    proptest::prop_assert_eq!(byte, b'"');
                    proptest::prop_assert_eq!(open, in_body);
                    let string: Value = serde_json::from_str(&body[open..=close]).unwrap_or_default();
                    proptest::prop_assert!(string.as_str().is_some_and(|s| !s.is_empty()));
                    proptest::prop_assert_eq!(escaped, body[open..=close].contains('\\'));
                    proptest::prop_assert_eq!(&blanked.text[at..at + 2], "\"\"");
                }
            }
            // The end of the copy is the end of the body.
            proptest::prop_assert_eq!(blanked.body_offset(copy.len(), &mut hint), body.len());
        }

        /// With a stray byte anywhere (a broken escape, a raw control character, a quote, a bracket), or
        /// on noise: no panic, and a copy only of what serde_json reads.
        #[test]
        fn a_copy_is_only_given_for_what_serde_json_reads(
            bytes in proptest::prop_oneof![
                crate::protocol::json_text::with_stray_byte(agent_body()),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            ],
        ) {
            if let Ok(text) = std::str::from_utf8(&bytes) {
                holds(text, &["messages", "tools"])?;
            }
        }
    }

    /// A long text as written in JSON, escapes and all: pieces of plain text and escapes serde_json
    /// accepts, and ones it refuses (lone or reversed surrogates, unknown escapes, short or bad hex, raw
    /// control characters, a backslash at the end).
    fn written_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            4 => "[a-zé😀 ]{1,12}".prop_map(String::from),
            2 => prop_oneof![
                Just(r"\n"), Just(r#"\""#), Just(r"\\"), Just(r"\/"), Just(r"\b"), Just(r"\f"),
                Just(r"\r"), Just(r"\t"), Just(r"\u00e9"), Just(r"\uD83D\uDE00"), Just(r"\ud83d\ude00"),
                Just(r"\u0000"), Just(r"\\u"),
            ].prop_map(String::from),
            1 => prop_oneof![
                Just(r"\ud800"), Just(r"\udc00"), Just(r"\ude00\ud83d"), Just(r"\ud83d\u0041"),
                Just(r"\ud83d\\"), Just(r"\q"), Just(r"\u12"), Just(r"\u12g4"), Just("\u{1}"),
                Just("\t"), Just("\n"), Just("\u{1f}"), Just(r"\"),
            ].prop_map(String::from),
        ];
        proptest::collection::vec(piece, 1..12).prop_map(|pieces| pieces.concat())
    }

    proptest::proptest! {
        /// Long texts with any escapes, valid or not, wherever they go: a copy only when serde_json
        /// reads the body, and then the body with those texts emptied.
        #[test]
        fn escapes_are_checked_as_serde_json_checks_them(
            content in written_text(),
            arguments in written_text(),
            model in written_text(),
        ) {
            let body = format!(
                r#"{{"model":"{model}","messages":[{{"role":"user","content":"{content}"}},{{"role":"assistant","tool_calls":[{{"id":"c","function":{{"name":"f","arguments":"{arguments}"}}}}]}}]}}"#
            );
            holds(&body, &["messages"])?;
            let readable = serde_json::from_str::<Value>(&body).is_ok();
            let long = content.len() > LONG || arguments.len() > LONG;
            // Where the body reads and has a long text, it is blanked.
            proptest::prop_assert_eq!(
                blank_long_strings(&body, &["messages"]).is_some(),
                readable && long,
                "{}", body
            );
        }
    }

    /// Escapes are accepted exactly as serde_json's string reader accepts them: pairs of surrogates,
    /// not lone ones; the eight single-character escapes; four hex digits; no raw control character.
    #[test]
    fn long_strings_are_checked_as_serde_json_checks_them() {
        let long = "x".repeat(LONG);
        for (escape, valid) in [
            (r"\n\t\r\b\f\/\\\u0041\u00e9", true),
            (r"\ud83d\ude00", true),
            (r#"\""#, true),
            (r"\ud83d", false),
            (r"\ude00", false),
            (r"\ud83d\u0041", false),
            (r"\ud83dx", false),
            (r"\q", false),
            (r"\u12", false),
            (r"\u12g4", false),
            ("\u{1}", false),
            ("\t", false),
        ] {
            let body = format!(r#"{{"messages":[{{"role":"user","content":"{long}{escape}"}}]}}"#);
            let copy = blank_long_strings(&body, &["messages"]);
            assert_eq!(copy.is_some(), valid, "{body}");
            assert_eq!(
                serde_json::from_str::<Value>(&body).is_ok(),
                valid,
                "{body}"
            );
            if let Some(copy) = copy {
                assert_eq!(copy, r#"{"messages":[{"role":"user","content":""}]}"#);
            }
        }
    }

    /// The values of `type` and `role` (and of keys written with escapes) are kept however long: a
    /// reading skips a block of an unknown type, and an empty one would pass for unknown.
    #[test]
    fn tags_are_kept_however_long() {
        let long = "l".repeat(LONG + 1);
        let body = format!(
            r#"{{"messages":[{{"role":"{long}","content":[{{"type":"{long}","typ\u0065":"{long}","text":"{long}"}}]}}]}}"#
        );
        assert_eq!(
            blank_long_strings(&body, &["messages"]).as_deref(),
            Some(
                format!(
                    r#"{{"messages":[{{"role":"{long}","content":[{{"type":"{long}","typ\u0065":"{long}","text":""}}]}}]}}"#
                )
                .as_str()
            )
        );
    }

    /// Keys, short strings and strings outside the named members are kept; a body with nothing to
    /// blank gives no copy.
    #[test]
    fn only_long_values_inside_the_members_are_blanked() {
        let long = "l".repeat(LONG + 1);
        let body = format!(
            r#"{{"model":"{long}","messages":[{{"role":"user","{long}":"{long}","content":"short"}}],"user":"{long}"}}"#
        );
        assert_eq!(
            blank_long_strings(&body, &["messages"]).as_deref(),
            Some(
                format!(
                    r#"{{"model":"{long}","messages":[{{"role":"user","{long}":"","content":"short"}}],"user":"{long}"}}"#
                )
                .as_str()
            )
        );
        assert_eq!(blank_long_strings(&body, &["tools"]), None);
        let exactly = "e".repeat(LONG);
        let body = format!(r#"{{"messages":[{{"content":"{exactly}"}}]}}"#);
        assert_eq!(blank_long_strings(&body, &["messages"]), None);
    }
}
