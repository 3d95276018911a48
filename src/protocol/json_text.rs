//! JSON strings written and scanned without a parser: the byte-level pieces the hot paths share (the
//! exact stream-chunk readers, the request log writer). Each is held to `serde_json` by a property test.

use std::borrow::Cow;

/// How many bytes at the start of `bytes` are neither `"`, `\\` nor a control character: eight bytes
/// per step (SWAR), then one by one. Each test below flags a matching byte exactly and may also flag
/// bytes after it (a borrow), never before, so the lowest flag of the three is the first match.
pub(crate) fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    let mut done = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let flags = zero_byte(word ^ (ONES * u64::from(b'"')))
            | zero_byte(word ^ (ONES * u64::from(b'\\')))
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGH);
        if flags != 0 {
            return done + (flags.trailing_zeros() / 8) as usize;
        }
        done += 8;
    }
    done + chunks
        .remainder()
        .iter()
        .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
        .unwrap_or(chunks.remainder().len())
}

/// The length of a string without escapes or control characters at the start of `bytes`, quotes
/// included.
pub(crate) fn plain_string_len(bytes: &[u8]) -> Option<usize> {
    let rest = bytes.strip_prefix(b"\"")?;
    let at = plain_run(rest);
    (rest.get(at)? == &b'"').then_some(at + 2)
}

/// One flat field `"key":value` at the start of `bytes` (compact, no whitespace): the key without its
/// quotes and the value as written, which is a plain string (no escapes, quotes kept), an integer without
/// leading zeros, `true`, `false` or `null`. Anything else (nesting, escapes, fractions) is `None`.
pub(crate) fn flat_field(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let key_len = plain_string_len(bytes)?;
    let key = &bytes[1..key_len - 1];
    let value = bytes[key_len..].strip_prefix(b":")?;
    let value_len = match value.first()? {
        b'"' => plain_string_len(value)?,
        b'n' if value.starts_with(b"null") => 4,
        b't' if value.starts_with(b"true") => 4,
        b'f' if value.starts_with(b"false") => 5,
        _ => {
            let sign = usize::from(value[0] == b'-');
            let digits = value[sign..]
                .iter()
                .take_while(|byte| byte.is_ascii_digit())
                .count();
            if digits == 0 || (digits > 1 && value[sign] == b'0') {
                return None;
            }
            sign + digits
        }
    };
    Some((key, &value[..value_len]))
}

/// The text of a plain string value from [`flat_field`] (`None` for any other value).
pub(crate) fn plain_str(value: &[u8]) -> Option<&str> {
    let inner = value.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    std::str::from_utf8(inner).ok()
}

/// An integer value from [`flat_field`] as `serde_json::Value::as_i64` reads it: `None` when it does
/// not fit or is not an integer (`-0` included: the parser keeps it as the float −0.0).
pub(crate) fn int_i64(value: &[u8]) -> Option<i64> {
    if value == b"-0" {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Like [`int_i64`], as `as_u64` reads it.
pub(crate) fn int_u64(value: &[u8]) -> Option<u64> {
    if value.first() == Some(&b'-') {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The JSON string at the start of `text` (opening quote first): its text and its length in bytes,
/// quotes included. Plain text is borrowed; a string with escapes is decoded by `serde_json`, which also
/// rejects bad escapes. A raw control character (which JSON forbids) is `None`. Taking `&str` means the
/// caller checked the whole document's UTF-8 once instead of once per string.
pub(crate) fn read_str(text: &str) -> Option<(Cow<'_, str>, usize)> {
    let (end, escaped) = string_end(text.as_bytes())?;
    decode_quoted(text.get(..=end)?, escaped)
}

/// [`read_str`] for bytes whose UTF-8 is not checked yet: only the string's own bytes are checked.
pub(crate) fn read_str_bytes(bytes: &[u8]) -> Option<(Cow<'_, str>, usize)> {
    let (end, escaped) = string_end(bytes)?;
    decode_quoted(std::str::from_utf8(bytes.get(..=end)?).ok()?, escaped)
}

/// Where the string at the start of `bytes` ends (the index of its closing quote), and whether it
/// has escapes.
fn string_end(bytes: &[u8]) -> Option<(usize, bool)> {
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut end = 1;
    let mut escaped = false;
    loop {
        end += plain_run(bytes.get(end..)?);
        match bytes.get(end)? {
            b'"' => return Some((end, escaped)),
            b'\\' => {
                escaped = true;
                end += 2;
            }
            _ => return None,
        }
    }
}

fn decode_quoted(quoted: &str, escaped: bool) -> Option<(Cow<'_, str>, usize)> {
    let text = if escaped {
        Cow::Owned(serde_json::from_str::<String>(quoted).ok()?)
    } else {
        Cow::Borrowed(quoted.get(1..quoted.len() - 1)?)
    };
    Some((text, quoted.len()))
}

/// `rest`, a tail of the document `whole` was read from, as text again (no second UTF-8 check: every
/// reader cuts at ASCII punctuation, which is always a character boundary).
pub(crate) fn tail<'a>(whole: &'a str, rest: &[u8]) -> Option<&'a str> {
    whole.get(whole.len().checked_sub(rest.len())?..)
}

/// Where the value of member `name` of the JSON object in `json` sits (the first such member; a key
/// written with escapes is compared by its text). Meant for documents a parser already accepted — a
/// request body after its decode, a stored entry we wrote — where it is a second, cheap read: strings
/// are skipped eight bytes a step, where `serde_json`'s `RawValue` skips them a byte at a time (its
/// ignore path). On any other bytes it never panics; it may give `None` or a range the caller's own
/// parse of it then refuses. Held to `RawValue`'s offsets by a property test.
pub fn member_range(json: &[u8], name: &str) -> Option<std::ops::Range<usize>> {
    let [range] = member_ranges(json, [name]);
    range
}

/// [`member_range`] for several names in one read of the object: each name's range, `None` for a
/// name not found before the object ends (or before bytes no parser would accept).
pub(crate) fn member_ranges<const N: usize>(
    json: &[u8],
    names: [&str; N],
) -> [Option<std::ops::Range<usize>>; N] {
    let mut found = [const { None }; N];
    let _ = find_members(json, &names, &mut found);
    found
}

/// Fills `found` walking the object's members; stops (`None`) when every name is found, at the
/// object's end, or at bytes it cannot read.
fn find_members(
    json: &[u8],
    names: &[&str],
    found: &mut [Option<std::ops::Range<usize>>],
) -> Option<()> {
    let mut at = skip_space(json, 0);
    if json.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_space(json, at + 1);
    if json.get(at) == Some(&b'}') {
        return None;
    }
    let mut missing = names.len();
    loop {
        let (close, escaped) = string_end(json.get(at..)?)?;
        let key = json.get(at..=at + close)?;
        let key: std::borrow::Cow<'_, [u8]> = if escaped {
            std::borrow::Cow::Owned(serde_json::from_slice::<String>(key).ok()?.into_bytes())
        } else {
            std::borrow::Cow::Borrowed(key.get(1..key.len() - 1)?)
        };
        at = skip_space(json, at + close + 1);
        if json.get(at) != Some(&b':') {
            return None;
        }
        let start = skip_space(json, at + 1);
        let end = value_end(json, start)?;
        for (name, slot) in names.iter().zip(found.iter_mut()) {
            if slot.is_none() && name.as_bytes() == &*key {
                *slot = Some(start..end);
                missing -= 1;
            }
        }
        if missing == 0 {
            return None;
        }
        at = skip_space(json, end);
        if json.get(at) != Some(&b',') {
            return None;
        }
        at = skip_space(json, at + 1);
    }
}

/// The first index from `at` that is not JSON whitespace.
fn skip_space(json: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = json.get(at) {
        at += 1;
    }
    at
}

/// Where the value starting at `start` ends (exclusive): a string by its closing quote, an array or
/// object by its closing bracket (strings inside skipped whole), anything else at the next delimiter.
fn value_end(json: &[u8], start: usize) -> Option<usize> {
    match *json.get(start)? {
        b'"' => skip_string(json, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut at = start;
            loop {
                match *json.get(at)? {
                    b'"' => {
                        at = skip_string(json, at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        _ => {
            let rest = json.get(start..)?;
            let len = rest
                .iter()
                .position(|byte| matches!(byte, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(rest.len());
            (len > 0).then_some(start + len)
        }
    }
}

/// The index just past the string whose opening quote is at `start`, in a document a parser accepted:
/// only quotes and backslashes matter there (a control character cannot be inside), looked for eight
/// bytes a step, as in [`plain_run`] with one test fewer.
fn skip_string(json: &[u8], start: usize) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGH;
    let mut at = start + 1;
    loop {
        match json.get(at..at + 8) {
            Some(chunk) => {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let word = u64::from_le_bytes(word);
                let flags = zero_byte(word ^ (ONES * u64::from(b'"')))
                    | zero_byte(word ^ (ONES * u64::from(b'\\')));
                if flags == 0 {
                    at += 8;
                    continue;
                }
                at += (flags.trailing_zeros() / 8) as usize;
            }
            None => {
                at += json
                    .get(at..)?
                    .iter()
                    .position(|&byte| byte == b'"' || byte == b'\\')?;
            }
        }
        if *json.get(at)? == b'"' {
            return Some(at + 1);
        }
        // A backslash and the byte it escapes (`\u`'s four digits are plain).
        at += 2;
    }
}

/// Where hand-written JSON goes: a `Vec<u8>` (answers) or a `BytesMut` (stream events).
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn put_byte(&mut self, byte: u8);
    fn reserve_more(&mut self, additional: usize);
    /// Appends `text` as a JSON string (see [`write_str`]).
    fn put_json_str(&mut self, text: &str) {
        write_str_swar(self, text);
    }
}

/// Texts shorter than this (a role, a short name) are escaped eight bytes a step, cheaper to set up.
/// Measured on agent turns and small bodies: thresholds of 32 or 128 bytes cost more on the first and
/// saved nothing on the second.
const SIMD_FROM_BYTES: usize = 8;

/// The SIMD escaper's stores are speculative: it needs this much room past the end of its output
/// buffer for a text of `len` bytes, whatever the text.
pub(crate) fn simd_room(len: usize) -> usize {
    len * 6 + 35
}

/// The longest piece of a text the SIMD escaper writes into the thread's scratch buffer at once,
/// which bounds that buffer at [`simd_room`] of it.
const SIMD_CHUNK: usize = 16 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `text` as a JSON string through sonic-rs's SIMD escaper (16 or 32 bytes a step, chosen at run
/// time), which an agent's escape-dense texts (source, logs: a newline or quote every few dozen
/// bytes) need: the eight-byte scan costs about four instructions a byte there. Straight into `out`
/// when it has the escaper's room; otherwise piece by piece through a bounded scratch buffer, so a
/// body sized to fit is not grown to six times a long text.
fn write_str_simd(out: &mut Vec<u8>, text: &str) {
    if out.capacity() - out.len() >= simd_room(text.len()) {
        json_escape_simd::escape_into(text, out);
        return;
    }
    SCRATCH.with_borrow_mut(|scratch| {
        out.reserve(text.len() + 2);
        out.push(b'"');
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = rest.len().min(SIMD_CHUNK);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (piece, tail) = rest.split_at(cut);
            scratch.clear();
            json_escape_simd::escape_into(piece, scratch);
            // The escaper quotes each piece: its quotes are not part of the text.
            let inner = scratch.get(1..scratch.len().saturating_sub(1));
            out.extend_from_slice(inner.unwrap_or_default());
            rest = tail;
        }
        out.push(b'"');
    });
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn put_byte(&mut self, byte: u8) {
        self.push(byte);
    }
    fn reserve_more(&mut self, additional: usize) {
        self.reserve(additional);
    }
    fn put_json_str(&mut self, text: &str) {
        if text.len() < SIMD_FROM_BYTES {
            write_str_swar(self, text);
        } else {
            write_str_simd(self, text);
        }
    }
}

impl Sink for bytes::BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn put_byte(&mut self, byte: u8) {
        self.extend_from_slice(&[byte]);
    }
    fn reserve_more(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

/// Appends `n` as a JSON number (what `serde_json` writes for an integer).
pub(crate) fn write_u64<S: Sink + ?Sized>(out: &mut S, n: u64) {
    out.put(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `n` as a JSON number.
pub(crate) fn write_i64<S: Sink + ?Sized>(out: &mut S, n: i64) {
    out.put(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `text` as a JSON string, byte for byte what `serde_json` writes (the same escapes: `\"`,
/// `\\`, `\b \f \n \r \t`, `\u00xx` for other control characters, nothing else).
pub(crate) fn write_str<S: Sink + ?Sized>(out: &mut S, text: &str) {
    out.put_json_str(text);
}

/// [`write_str`] eight bytes a step, copying the runs between escapes whole (sinks other than `Vec`,
/// short texts).
pub(crate) fn write_str_swar<S: Sink + ?Sized>(out: &mut S, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = text.as_bytes();
    out.reserve_more(rest.len() + 2);
    out.put_byte(b'"');
    loop {
        let run = plain_run(rest);
        out.put(&rest[..run]);
        let Some(&byte) = rest.get(run) else {
            break;
        };
        match byte {
            b'"' => out.put(b"\\\""),
            b'\\' => out.put(b"\\\\"),
            b'\n' => out.put(b"\\n"),
            b'\r' => out.put(b"\\r"),
            b'\t' => out.put(b"\\t"),
            0x08 => out.put(b"\\b"),
            0x0c => out.put(b"\\f"),
            _ => out.put(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]),
        }
        rest = &rest[run + 1..];
    }
    out.put_byte(b'"');
}

/// Tests only: JSON values around the flat-field grammar — the flat ones (plain strings, integers,
/// literals) and near misses (leading zeros, `-0`, fractions, out-of-range integers, nesting) — for the
/// exact readers' property tests.
#[cfg(test)]
pub(crate) fn near_flat_value() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        2 => Just("null".to_owned()),
        1 => Just("true".to_owned()),
        1 => Just("false".to_owned()),
        1 => Just("-0".to_owned()),
        1 => Just("007".to_owned()),
        1 => Just("1.5".to_owned()),
        1 => Just("-3".to_owned()),
        1 => Just("99999999999999999999".to_owned()),
        1 => Just("[]".to_owned()),
        1 => Just("{\"prompt_tokens\":1}".to_owned()),
        1 => Just("\"error\"".to_owned()),
        5 => any::<u32>().prop_map(|n| n.to_string()),
        3 => any::<i64>().prop_map(|n| n.to_string()),
        6 => ".{0,6}".prop_map(|text| serde_json::to_string(&text).unwrap_or_default()),
    ]
}

/// Tests only: any finite number as clients write floats — Rust's plain form (`0.1`, `1e300` written
/// out) and its exponent form (`1.5e3`, `-0e0`).
#[cfg(test)]
pub(crate) fn float_text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        any::<f32>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
    ]
}

/// Tests only: `text` with one stray byte inserted anywhere — a byte that matters to JSON's grammar
/// (quote, comma, brackets, backslash, sign, digit, space, exponent, point) or any byte at all.
#[cfg(test)]
pub(crate) fn with_stray_byte(
    text: impl proptest::strategy::Strategy<Value = String>,
) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let byte = prop_oneof![
        Just(b'"'),
        Just(b','),
        Just(b'}'),
        Just(b']'),
        Just(b'\\'),
        Just(b'-'),
        Just(b'0'),
        Just(b' '),
        Just(b'e'),
        Just(b'.'),
        any::<u8>(),
    ];
    (text, any::<prop::sample::Index>(), byte).prop_map(|(text, at, byte)| {
        let mut bytes = text.into_bytes();
        bytes.insert(at.index(bytes.len() + 1), byte);
        bytes
    })
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy as _;

    use super::*;

    #[test]
    fn escapes_like_serde_json() {
        for text in [
            "",
            "plain",
            "q\"b\\s",
            "\u{0}\u{1f}\u{7f}\u{8}\u{c}\n\r\t",
            "ü 日本 🎉",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, text);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(text).unwrap()
            );
        }
    }

    /// Texts longer than the SIMD escaper's piece, with characters of every width across the cuts,
    /// into a buffer with the escaper's room and into one sized to the text: serde_json's bytes.
    #[test]
    fn long_texts_are_written_like_serde_json_whatever_the_room() {
        let unit = "fn main() {\n\t\"日本\\ü\u{1}🎉 é\"}\r\n";
        for repeat in [1, 500, 1000, 1500, 3000] {
            for skew in 0..4 {
                let text = format!("{}{}", "x".repeat(skew), unit.repeat(repeat));
                let expected = serde_json::to_string(&text).unwrap();
                let mut roomy = Vec::with_capacity(simd_room(text.len()) + 1);
                write_str(&mut roomy, &text);
                let mut tight = Vec::with_capacity(text.len() + 2);
                write_str(&mut tight, &text);
                assert_eq!(String::from_utf8(roomy).unwrap(), expected);
                assert_eq!(String::from_utf8(tight).unwrap(), expected);
            }
        }
    }

    #[test]
    fn read_str_reads_one_string_like_the_parser() {
        for (bytes, expected) in [
            (&br#""plain" rest"#[..], Some(("plain", 7))),
            (br#""q\"\u00e9\n","#, Some(("q\"é\n", 13))),
            (br#""""#, Some(("", 2))),
            (b"\"a\x01\"", None),
            (br#""a\x""#, None),
            (br#""open"#, None),
            (br#"x"a""#, None),
        ] {
            let read = std::str::from_utf8(bytes).ok().and_then(read_str);
            assert_eq!(
                read.as_ref().map(|(text, len)| (text.as_ref(), *len)),
                expected,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    proptest::proptest! {
        /// The eight-bytes-at-a-time scan finds what a byte-by-byte scan finds.
        #[test]
        fn plain_run_matches_a_byte_loop(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![8 => 0x20u8..0x7f, 1 => proptest::prelude::any::<u8>()],
                0..40,
            )
        ) {
            let expected = bytes
                .iter()
                .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
                .unwrap_or(bytes.len());
            proptest::prop_assert_eq!(plain_run(&bytes), expected);
        }

        /// Any text, short or long enough for every vector width, with escapes sparse or dense, is
        /// written exactly as `serde_json` writes it, by both sinks.
        #[test]
        fn write_str_matches_serde_json(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => "[a-z ]{0,80}",
                    2 => "\\PC{0,12}",
                    2 => "[\\x00-\\x1f\"\\\\\\x7f/]{1,3}",
                ],
                0..40,
            )
        ) {
            let text = pieces.concat();
            let expected = format!("x{}", serde_json::to_string(&text).unwrap());
            // A buffer without the SIMD escaper's room (written piece by piece) and one with it.
            let mut out = b"x".to_vec();
            write_str(&mut out, &text);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), expected.clone());
            let mut out = Vec::with_capacity(simd_room(text.len()) + 1);
            out.push(b'x');
            write_str(&mut out, &text);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), expected.clone());
            let mut out = bytes::BytesMut::from(&b"x"[..]);
            write_str(&mut out, &text);
            proptest::prop_assert_eq!(std::str::from_utf8(&out).unwrap(), expected.as_str());
        }

        /// On any object as clients write one (any whitespace, keys written plainly or every
        /// character escaped, any values), each member's range is where `RawValue` finds it, and a
        /// name that is not there is `None`.
        #[test]
        fn member_range_finds_what_the_parser_finds(
            object in member_object(),
            absent in "[a-z]{1,3}",
        ) {
            let (text, keys) = object;
            let parsed: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
                serde_json::from_str(&text).unwrap();
            for key in &keys {
                let raw = parsed[key].get();
                let start = raw.as_ptr() as usize - text.as_ptr() as usize;
                proptest::prop_assert_eq!(
                    member_range(text.as_bytes(), key),
                    Some(start..start + raw.len()),
                    "{} in {}", key, text
                );
            }
            if !parsed.contains_key(&absent) {
                proptest::prop_assert_eq!(member_range(text.as_bytes(), &absent), None);
            }
            // Several names in one read: each as alone.
            if let [first, .., last] = keys.as_slice() {
                let names = [last.as_str(), absent.as_str(), first.as_str()];
                let together = member_ranges(text.as_bytes(), names);
                for (name, range) in names.iter().zip(together) {
                    proptest::prop_assert_eq!(range, member_range(text.as_bytes(), name));
                }
            }
        }

        /// On any bytes — such an object with one stray byte anywhere, or noise — it never panics,
        /// and a range it gives lies within the bytes.
        #[test]
        fn member_range_survives_any_bytes(
            bytes in proptest::prop_oneof![
                with_stray_byte(member_object().prop_map(|(text, _)| text)),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            ],
            name in "[a-z]{1,3}",
        ) {
            if let Some(range) = member_range(&bytes, &name) {
                proptest::prop_assert!(range.start <= range.end && range.end <= bytes.len());
            }
        }
    }

    /// A JSON object written with arbitrary whitespace, some keys escaped whole, and its keys.
    fn member_object() -> impl proptest::strategy::Strategy<Value = (String, Vec<String>)> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "(\\PC|[\"\\\\\\n\\x00-\\x1f{}\\[\\],:])*".prop_map(serde_json::Value::from),
        ];
        let value = leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[a-z\"]{0,3}", inner, 0..5)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        });
        let space = prop_oneof![Just(""), Just(" "), Just("\n\t "), Just("\r\n")];
        let member = (
            "[a-z\"\\\\]{0,3}|\\PC{1,3}",
            any::<bool>(),
            value,
            any::<bool>(),
            space.clone(),
            space,
        );
        proptest::collection::btree_map("[a-z]{1,3}", member, 0..6).prop_map(|members| {
            let mut text = String::from("{");
            let mut keys = Vec::new();
            for (n, (prefix, (suffix, escape_key, value, pretty, before, after))) in
                members.into_iter().enumerate()
            {
                // Unique keys: a short name (what lookups ask for) plus anything.
                let key = if n % 2 == 0 {
                    prefix
                } else {
                    format!("{prefix}{suffix}")
                };
                if keys.contains(&key) {
                    continue;
                }
                if !keys.is_empty() {
                    text.push(',');
                }
                text.push_str(before);
                if escape_key {
                    text.push('"');
                    for unit in key.encode_utf16() {
                        text.push_str(&format!("\\u{unit:04x}"));
                    }
                    text.push('"');
                } else {
                    text.push_str(&serde_json::to_string(&key).unwrap());
                }
                text.push_str(after);
                text.push(':');
                text.push_str(before);
                let value = if pretty {
                    serde_json::to_string_pretty(&value)
                } else {
                    serde_json::to_string(&value)
                };
                text.push_str(&value.unwrap());
                text.push_str(after);
                keys.push(key);
            }
            text.push('}');
            (text, keys)
        })
    }
}
