//! A text of a conversation (a message's text, a tool result, a tool call's arguments): a string, or
//! a slice of the request body that holds it as a JSON string, unescaped only when read as text.
//!
//! An agent's turn is a few hundred kilobytes of such texts, and a gateway reads most of them only to
//! hash them (token counts, cache keys), write them into another JSON document (a conversion, the
//! request log) or not at all. A large body's texts are taken as slices of it
//! (`openai::decode_chat`'s sliced reading): no copy, no unescaping; whatever needs the text itself
//! gets it from [`Text::as_str`], which unescapes once and keeps the result.

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;

use crate::protocol::json_text::{Sink, write_str};

/// A conversation text. Equal, ordered and printed as its string, whatever its form.
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Plain(String),
    /// A JSON string of the body without escapes: these bytes are the text (UTF-8 checked with the
    /// body, no quote, backslash or control character in them).
    Verbatim(Bytes),
    /// A JSON string of the body with escapes (boxed: a conversation holds thousands of texts, and
    /// every wire struct and part is as large as its largest form).
    Escaped(Box<Escaped>),
}

/// A JSON string with escapes, quotes included, checked as serde_json's string reader checks it;
/// `plain` is its text once something read it.
#[derive(Clone)]
struct Escaped {
    quoted: Bytes,
    plain: OnceLock<String>,
}

/// Seed of the hashes of escaped texts: their bytes are not their text, so they hash apart from a
/// plain text that happens to be written the same (`a\nb` escaped is not the four characters).
const ESCAPED_SEED: u64 = 0x6a73_6f6e_5f65_7363;

impl Text {
    /// The body's JSON string `quoted` (quotes included), which has escapes; checked as for
    /// [`Text::from_json`].
    pub(crate) fn escaped(quoted: Bytes) -> Text {
        Text(Repr::Escaped(Box::new(Escaped {
            quoted,
            plain: OnceLock::new(),
        })))
    }

    /// `bytes` of the body that are a JSON string's text as written: no escapes, UTF-8 checked with
    /// the body.
    pub(crate) fn verbatim(bytes: Bytes) -> Text {
        Text(Repr::Verbatim(bytes))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Plain(text) => text,
            // Checked with the body: this never fails.
            Repr::Verbatim(bytes) => simdutf8::basic::from_utf8(bytes).unwrap_or_default(),
            Repr::Escaped(escaped) => escaped.plain.get_or_init(|| unescape(&escaped.quoted)),
        }
    }

    pub fn into_string(self) -> String {
        match self.0 {
            Repr::Plain(text) => text,
            Repr::Verbatim(_) => self.as_str().to_owned(),
            Repr::Escaped(escaped) => {
                let Escaped { quoted, plain } = *escaped;
                plain.into_inner().unwrap_or_else(|| unescape(&quoted))
            }
        }
    }

    /// Whether the text is empty (without reading it).
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            Repr::Plain(text) => text.is_empty(),
            Repr::Verbatim(bytes) => bytes.is_empty(),
            // An escape is at least one character.
            Repr::Escaped(_) => false,
        }
    }

    /// Appends `more` (the text becomes a plain one).
    pub(crate) fn push_str(&mut self, more: &str) {
        if let Repr::Plain(text) = &mut self.0 {
            text.push_str(more);
            return;
        }
        let mut text = std::mem::take(self).into_string();
        text.push_str(more);
        *self = Text::from(text);
    }

    /// The length of the text as a JSON string would write it, about: the bytes a writer reserves.
    pub(crate) fn written_len(&self) -> usize {
        match &self.0 {
            Repr::Plain(text) => text.len(),
            Repr::Verbatim(bytes) => bytes.len(),
            Repr::Escaped(escaped) => escaped.quoted.len(),
        }
    }

    /// Appends the text as a JSON string: a body's string as the body wrote it (the same value,
    /// its escapes kept), a plain one escaped as serde_json escapes it.
    pub(crate) fn write_json<S: Sink + ?Sized>(&self, out: &mut S) {
        match &self.0 {
            Repr::Plain(text) => write_str(out, text),
            Repr::Verbatim(bytes) => {
                out.reserve_more(bytes.len() + 2);
                out.put_byte(b'"');
                out.put(bytes);
                out.put_byte(b'"');
            }
            Repr::Escaped(escaped) => out.put(&escaped.quoted),
        }
    }

    /// A 128-bit hash that is the same for the same text in the same form: XXH3 of the text, or of
    /// its escaped form under another seed. The same text written with and without escapes hashes
    /// apart (a cache of counts keyed by it misses, nothing worse).
    pub(crate) fn hash128(&self) -> u128 {
        match &self.0 {
            Repr::Plain(text) => twox_hash::XxHash3_128::oneshot(text.as_bytes()),
            Repr::Verbatim(bytes) => twox_hash::XxHash3_128::oneshot(bytes),
            Repr::Escaped(escaped) => {
                twox_hash::XxHash3_128::oneshot_with_seed(ESCAPED_SEED, &escaped.quoted)
            }
        }
    }
}

/// The text of a checked JSON string (quotes included): the runs between escapes copied whole into
/// a buffer sized once (serde_json's reader, the reference the tests hold this to, grows a fresh
/// scratch buffer for every string it is given alone, then copies it). Whatever does not read as a
/// checked string gives serde_json's reading of it.
fn unescape(quoted: &[u8]) -> String {
    unescape_checked(quoted).unwrap_or_else(|| {
        simdutf8::basic::from_utf8(quoted)
            .ok()
            .and_then(|quoted| serde_json::from_str::<String>(quoted).ok())
            .unwrap_or_default()
    })
}

fn unescape_checked(quoted: &[u8]) -> Option<String> {
    // UTF-8 checked once, on the input (SIMD); the runs between escapes are its slices and every
    // escape a `char`, so the output is never checked again.
    let quoted = simdutf8::basic::from_utf8(quoted).ok()?;
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(at) = memchr::memchr(b'\\', rest.as_bytes()) {
        out.push_str(rest.get(..at)?);
        let escape = rest.as_bytes();
        let (ch, len) = match *escape.get(at + 1)? {
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            b'u' => {
                let high = hex4(escape.get(at + 2..at + 6)?)?;
                if (0xD800..0xDC00).contains(&high) {
                    if escape.get(at + 6..at + 8)? != b"\\u" {
                        return None;
                    }
                    let low = hex4(escape.get(at + 8..at + 12)?)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return None;
                    }
                    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    (char::from_u32(code)?, 12)
                } else {
                    (char::from_u32(high)?, 6)
                }
            }
            _ => return None,
        };
        out.push(ch);
        rest = rest.get(at + len..)?;
    }
    out.push_str(rest);
    Some(out)
}

/// Four hex digits.
fn hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &digit| {
        Some(n << 4 | char::from(digit).to_digit(16)?)
    })
}

impl Default for Text {
    fn default() -> Text {
        Text(Repr::Plain(String::new()))
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text(Repr::Plain(text))
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Text {
        Text(Repr::Plain(text.to_owned()))
    }
}

impl From<&String> for Text {
    fn from(text: &String) -> Text {
        Text(Repr::Plain(text.clone()))
    }
}

impl From<Text> for String {
    fn from(text: Text) -> String {
        text.into_string()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl std::hash::Hash for Text {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        String::deserialize(deserializer).map(Text::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body's JSON string (quotes included) as the sliced reading takes it.
    fn body_string(json: &str) -> Text {
        let quoted = Bytes::copy_from_slice(json.as_bytes());
        if json.contains('\\') {
            Text::escaped(quoted)
        } else {
            Text::verbatim(quoted.slice(1..quoted.len() - 1))
        }
    }

    proptest::proptest! {
        /// A body's string reads, writes and compares as the text serde_json reads from it; its hash
        /// is the plain text's when it has no escapes, and apart from it when it does.
        #[test]
        fn a_body_string_is_its_text(text in "\\PC{0,40}", escape_all in proptest::bool::ANY) {
            let quoted = if escape_all {
                text.chars().map(|c| format!("\\u{:04x}", u32::from(c).min(0xffff))).collect::<String>()
            } else {
                serde_json::to_string(&text).unwrap_or_default().trim_matches('"').to_owned()
            };
            let json = format!("\"{quoted}\"");
            let Ok(reference) = serde_json::from_str::<String>(&json) else { return Ok(()) };
            let sliced = body_string(&json);
            proptest::prop_assert_eq!(sliced.as_str(), reference.as_str());
            proptest::prop_assert_eq!(&sliced, &Text::from(reference.clone()));
            let mut written = Vec::new();
            sliced.write_json(&mut written);
            proptest::prop_assert_eq!(serde_json::from_slice::<String>(&written).ok(), Some(reference.clone()));
            let plain_hash = Text::from(reference.clone()).hash128();
            proptest::prop_assert_eq!(sliced.hash128() == plain_hash, !json.contains('\\'));
            proptest::prop_assert_eq!(sliced.clone().into_string(), reference);
        }
    }

    proptest::proptest! {
        /// The unescaping agrees with serde_json's reading on a JSON string as the body's check lets
        /// it through (no raw quote, backslash or control character) with any escapes, valid or not
        /// (lone surrogates, bad hex, unknown letters): those it refuses, serde_json refuses too.
        #[test]
        fn unescaping_agrees_with_serde_json(
            pieces in proptest::collection::vec(proptest::prop_oneof![
                "[^\"\\\\\\x00-\\x1f]{0,8}",
                proptest::prelude::Just("\\n".to_owned()),
                proptest::prelude::Just("\\\"".to_owned()),
                proptest::prelude::Just("\\/".to_owned()),
                proptest::prelude::Just("\\\\".to_owned()),
                proptest::prelude::Just("\\ud83d\\ude00".to_owned()),
                proptest::prelude::Just("\\ud83d".to_owned()),
                proptest::prelude::Just("\\ude00".to_owned()),
                proptest::prelude::Just("\\q".to_owned()),
                proptest::prelude::Just("\\u12".to_owned()),
                "\\\\u[0-9a-fA-F]{4}",
                "\\\\[bfnrt]",
            ], 0..12),
        ) {
            let json = format!("\"{}\"", pieces.concat());
            let reference = serde_json::from_str::<String>(&json).ok();
            if let Some(reference) = &reference {
                proptest::prop_assert_eq!(&unescape(json.as_bytes()), reference);
            }
            let ours = unescape_checked(json.as_bytes());
            if ours.is_some() {
                proptest::prop_assert_eq!(ours, reference);
            }
        }
    }

    #[test]
    fn escaped_and_plain_spellings_of_the_same_bytes_hash_apart() {
        // The escaped body string `a\nb` is a newline; the plain text is a backslash and an `n`.
        let escaped = body_string(r#""a\nb""#);
        let plain = Text::from(r"a\nb");
        assert_eq!(escaped.as_str(), "a\nb");
        assert_ne!(escaped.hash128(), plain.hash128());
        assert_eq!(body_string(r#""""#).as_str(), "");
    }
}
