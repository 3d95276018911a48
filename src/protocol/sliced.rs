//! A large body read with its conversation's texts taken as slices of it ([`Text`]), not copied.
//!
//! The body's long strings are checked and blanked first (`blank_strings`: a SIMD scan, far cheaper
//! than serde_json's string reader on an agent's source files and logs); serde_json then reads the
//! blanked copy into wire structs whose strings are [`Sliced`], and each string it hands over is taken
//! back to the body through the copy's map: a blanked one is the body's JSON string (its escapes
//! kept, unescaped only when something reads it); a short one (an id, a name) is copied as serde_json
//! read it, which costs less than a slice. Raw values (a tool's schema, an image part) are taken
//! back the same way, by their place in the copy.
//!
//! serde's derived readings cannot carry the map down to the strings, so it sits in a thread-local for
//! the length of one synchronous reading ([`read`]); outside one, a [`Sliced`] reads as a plain string.

use std::cell::{Cell, RefCell};
use std::ops::Range;

use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::protocol::RawJson;
use crate::protocol::Text;
use crate::protocol::blank_strings::{Blanked, blank_and_map};

struct Reading {
    body: Bytes,
    blanked: Blanked,
    /// Where the last look-up in the map ended: serde_json reads the copy in order.
    cursor: Cell<usize>,
}

thread_local! {
    static READING: RefCell<Option<Reading>> = const { RefCell::new(None) };
}

/// Clears the thread's reading however the reading ends.
struct Clear;

impl Drop for Clear {
    fn drop(&mut self) {
        READING.with_borrow_mut(|reading| *reading = None);
    }
}

/// `body` (whose UTF-8 is checked: `text` is it) read as `T` with its long strings inside `members`
/// blanked and taken back as slices; `None` when nothing was blanked, when the scan refuses the body,
/// or when `T` does not read the copy — the caller then reads the body itself, which names what is
/// wrong. Sound where the blanking is (see `blank_strings`): every string `T` keeps from `members` is
/// a [`Sliced`] (or a raw value, [`SlicedRaw`], [`SlicedValue`]).
pub(crate) fn read<T: DeserializeOwned>(body: &Bytes, text: &str, members: &[&str]) -> Option<T> {
    read_with(body, text, members, |copy| serde_json::from_str(copy).ok())
}

/// [`read`] for a reading that borrows from the copy (`read_copy` is given it, and runs inside the
/// sliced reading): whatever it keeps must own its data or be taken back to the body.
pub(crate) fn read_with<R>(
    body: &Bytes,
    text: &str,
    members: &[&str],
    read_copy: impl FnOnce(&str) -> Option<R>,
) -> Option<R> {
    let blanked = blank_and_map(text, members)?;
    let _clear = Clear;
    READING.with_borrow_mut(|reading| {
        *reading = Some(Reading {
            body: body.clone(),
            blanked,
            cursor: Cell::new(0),
        });
    });
    READING.with_borrow(|reading| read_copy(&reading.as_ref()?.blanked.text))
}

impl Reading {
    /// The copy's offset of `piece` if it lies in the copy.
    fn offset(&self, piece: &str) -> Option<usize> {
        let copy = &self.blanked.text;
        let at = (piece.as_ptr() as usize).checked_sub(copy.as_ptr() as usize)?;
        (at + piece.len() <= copy.len()).then_some(at)
    }

    /// The body's string for an empty one serde_json read from the copy, if it was blanked.
    fn blanked(&self, text: &str) -> Option<Text> {
        let at = self.offset(text)?;
        let mut cursor = self.cursor.get();
        let (open, close, escaped) = self.blanked.blanked_at(at, &mut cursor)?;
        self.cursor.set(cursor);
        let quoted = self.body.slice(open..=close);
        Some(if escaped {
            Text::escaped(quoted)
        } else {
            Text::verbatim(quoted.slice(1..quoted.len() - 1))
        })
    }

    /// The body's range of a value serde_json read from the copy.
    fn range(&self, raw: &str) -> Option<Range<usize>> {
        let at = self.offset(raw)?;
        let mut cursor = self.cursor.get();
        let start = self.blanked.body_offset(at, &mut cursor);
        let end = self.blanked.body_offset(at + raw.len(), &mut cursor);
        self.cursor.set(cursor);
        Some(start..end)
    }

    /// The body's JSON text of a value serde_json read from the copy.
    fn raw(&self, raw: &str) -> Option<&str> {
        simdutf8::basic::from_utf8(self.body.get(self.range(raw)?)?).ok()
    }

    /// A value serde_json read from the copy as a [`SlicedValue`]: a blanked string as the body's, a
    /// short one read as serde_json reads it, anything else as a tree.
    fn value(&self, raw: &str) -> Option<SlicedValue> {
        if raw == "\"\"" {
            // The (empty) text between the copy's quotes, where a blanked string is looked up.
            if let Some(text) = raw.get(1..1).and_then(|text| self.blanked(text)) {
                return Some(SlicedValue::Text(text));
            }
        }
        let body = self.raw(raw)?;
        if body.starts_with('"') {
            return serde_json::from_str::<String>(body)
                .ok()
                .map(|text| SlicedValue::Text(Text::from(text)));
        }
        serde_json::from_str(body).ok().map(SlicedValue::Value)
    }
}

/// The body's range of a value serde_json read from the copy inside a sliced reading (`raw`, its JSON
/// text in the copy): where the body wrote it, blanked strings and all.
pub(crate) fn body_range(raw: &str) -> Option<Range<usize>> {
    READING.with_borrow(|reading| reading.as_ref()?.range(raw))
}

/// A string serde_json read: a blanked one taken from the body, any other (short: an id, a name, a
/// short text) copied as it is.
fn text_of(text: &str) -> Text {
    if !text.is_empty() {
        return Text::from(text);
    }
    READING
        .with_borrow(|reading| reading.as_ref()?.blanked(text))
        .unwrap_or_default()
}

/// A string of the body as a wire struct holds it inside a sliced reading ([`read`]).
pub(crate) struct Sliced(pub(crate) Text);

impl Sliced {
    pub(crate) fn of(text: &str) -> Sliced {
        Sliced(text_of(text))
    }
}

impl<'de> Deserialize<'de> for Sliced {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Sliced, D::Error> {
        struct SlicedVisitor;
        impl Visitor<'_> for SlicedVisitor {
            type Value = Sliced;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Sliced, E> {
                Ok(Sliced::of(text))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Sliced, E> {
                Ok(Sliced(Text::from(text)))
            }
        }
        deserializer.deserialize_str(SlicedVisitor)
    }
}

/// Any JSON value of the body, kept as its text (a tool's schema), inside a sliced reading.
pub(crate) struct SlicedRaw(pub(crate) RawJson);

impl<'de> Deserialize<'de> for SlicedRaw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SlicedRaw, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        let text = READING
            .with_borrow(|reading| reading.as_ref()?.raw(raw.get()).map(str::to_owned))
            .ok_or_else(|| de::Error::custom("a value outside the sliced reading"))?;
        RawValue::from_string(text)
            .map(|raw| SlicedRaw(RawJson::from_raw(raw)))
            .map_err(de::Error::custom)
    }
}

/// Any JSON value of the body inside a sliced reading (an image part's `image_url`, a function call's
/// `arguments`): a string as a [`Text`] (a long one a slice of the body), anything else as a tree.
pub(crate) enum SlicedValue {
    Text(Text),
    Value(Value),
}

/// The value as a tree.
impl From<SlicedValue> for Value {
    fn from(value: SlicedValue) -> Value {
        match value {
            SlicedValue::Text(text) => Value::String(text.into_string()),
            SlicedValue::Value(value) => value,
        }
    }
}

impl<'de> Deserialize<'de> for SlicedValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SlicedValue, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        READING
            .with_borrow(|reading| reading.as_ref()?.value(raw.get()))
            .ok_or_else(|| de::Error::custom("a value outside the sliced reading"))
    }
}
