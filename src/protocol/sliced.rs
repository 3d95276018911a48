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
    let blanked = blank_and_map(text, members)?;
    let _clear = Clear;
    READING.with_borrow_mut(|reading| {
        *reading = Some(Reading {
            body: body.clone(),
            blanked,
            cursor: Cell::new(0),
        });
    });
    READING.with_borrow(|reading| {
        let copy = &reading.as_ref()?.blanked.text;
        serde_json::from_str(copy).ok()
    })
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

    /// The body's JSON text of a value serde_json read from the copy.
    fn raw(&self, raw: &str) -> Option<&str> {
        let at = self.offset(raw)?;
        let mut cursor = self.cursor.get();
        let start = self.blanked.body_offset(at, &mut cursor);
        let end = self.blanked.body_offset(at + raw.len(), &mut cursor);
        self.cursor.set(cursor);
        simdutf8::basic::from_utf8(self.body.get(start..end)?).ok()
    }
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

/// Any JSON value of the body read as a tree (an image part's `image_url`), inside a sliced reading.
pub(crate) struct SlicedValue(pub(crate) Value);

impl<'de> Deserialize<'de> for SlicedValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SlicedValue, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        READING
            .with_borrow(|reading| {
                serde_json::from_str(reading.as_ref()?.raw(raw.get())?)
                    .ok()
                    .map(SlicedValue)
            })
            .ok_or_else(|| de::Error::custom("a value outside the sliced reading"))
    }
}
