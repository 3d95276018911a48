//! Message content as OpenAI writes it, read into canonical parts: a string or an array of typed parts
//! (text, images), and the `thinking_blocks` extension of assistant messages.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::Value;

use crate::protocol::sliced::{Sliced, SlicedRaw, SlicedValue};
use crate::protocol::{Image, Part, RawJson, Text};

/// A JSON string as a wire struct holds it: its text (`String`), or [`Unread`] where nothing reads it.
pub(crate) trait WireText: for<'de> Deserialize<'de> {
    /// Any JSON value in the same place (a tool's `parameters`): kept as written, or only checked.
    type Raw: for<'de> Deserialize<'de>;
    /// Any JSON value read as a tree where the text is kept (`Value`), so every string in it is checked
    /// as a string: [`Checked`] checks the same without building the tree.
    type Any: for<'de> Deserialize<'de>;
    /// Any JSON value the reading inspects as a tree, whether or not it keeps the text (an Anthropic
    /// image's `source`): `Value`, or in a sliced reading one taken back from the body.
    type Tree: for<'de> Deserialize<'de> + Into<Value>;
    fn from_str(text: &str) -> Self;
    fn from_string(text: String) -> Self;
}

impl WireText for String {
    type Raw = crate::protocol::RawJson;
    type Any = Value;
    type Tree = Value;
    fn from_str(text: &str) -> String {
        text.to_owned()
    }
    fn from_string(text: String) -> String {
        text
    }
}

/// A string of a large body inside a sliced reading (`protocol::sliced`): a slice of the body.
impl WireText for Sliced {
    type Raw = SlicedRaw;
    type Any = SlicedValue;
    type Tree = SlicedValue;
    fn from_str(text: &str) -> Sliced {
        Sliced::of(text)
    }
    fn from_string(text: String) -> Sliced {
        Sliced(Text::from(text))
    }
}

/// A [`WireText`] a reading keeps: what the canonical request is built from.
pub(crate) trait KeptText: WireText {
    fn into_text(self) -> Text;
    fn into_string(self) -> String {
        self.into_text().into_string()
    }
    fn is_empty(&self) -> bool;
    fn raw_json(raw: Self::Raw) -> RawJson;
    fn any_value(any: Self::Any) -> Value;
    /// A string's text, or any other value as a tree.
    fn any_string(any: Self::Any) -> Result<Text, Value>;
    /// Any JSON value as text: a string's text, `null` empty, anything else its JSON (a function
    /// call's `arguments` written as an object).
    fn any_text(any: Self::Any) -> Text {
        match Self::any_string(any) {
            Ok(text) => text,
            Err(Value::Null) => Text::default(),
            Err(other) => Text::from(serde_json::to_string(&other).unwrap_or_default()),
        }
    }
}

impl KeptText for String {
    fn into_text(self) -> Text {
        Text::from(self)
    }
    fn into_string(self) -> String {
        self
    }
    fn is_empty(&self) -> bool {
        str::is_empty(self)
    }
    fn raw_json(raw: RawJson) -> RawJson {
        raw
    }
    fn any_value(any: Value) -> Value {
        any
    }
    fn any_string(any: Value) -> Result<Text, Value> {
        match any {
            Value::String(text) => Ok(Text::from(text)),
            other => Err(other),
        }
    }
}

impl KeptText for Sliced {
    fn into_text(self) -> Text {
        self.0
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn raw_json(raw: SlicedRaw) -> RawJson {
        raw.0
    }
    fn any_value(any: SlicedValue) -> Value {
        any.into()
    }
    fn any_string(any: SlicedValue) -> Result<Text, Value> {
        match any {
            SlicedValue::Text(text) => Ok(text),
            SlicedValue::Value(value) => String::any_string(value),
        }
    }
}

/// A string nothing reads: the parser checks it is one (escapes included), and nothing is kept. A
/// wire struct with these in place of its texts accepts exactly the bodies the `String` one does.
pub(crate) struct Unread;

impl WireText for Unread {
    type Raw = de::IgnoredAny;
    type Any = Checked;
    type Tree = Value;
    fn from_str(_: &str) -> Unread {
        Unread
    }
    fn from_string(_: String) -> Unread {
        Unread
    }
}

impl<'de> Deserialize<'de> for Unread {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Unread, D::Error> {
        struct UnreadVisitor;
        impl Visitor<'_> for UnreadVisitor {
            type Value = Unread;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Unread, E> {
                Ok(Unread)
            }
        }
        deserializer.deserialize_str(UnreadVisitor)
    }
}

/// Any JSON value nothing reads, checked as a `Value` would read it: every string (map keys included)
/// goes through the parser's string reader, which refuses what `Value` refuses (a lone surrogate, a bad
/// escape), where `IgnoredAny` only skips to the closing quote. Numbers are read as `Value` reads them.
pub(crate) struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Checked, D::Error> {
        struct CheckedVisitor;
        impl<'de> Visitor<'de> for CheckedVisitor {
            type Value = Checked;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
                while seq.next_element::<Checked>()?.is_some() {}
                Ok(Checked)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
                while map.next_entry::<Checked, Checked>()?.is_some() {}
                Ok(Checked)
            }
        }
        deserializer.deserialize_any(CheckedVisitor)
    }
}

/// Content in the OpenAI families' shape: a string or an array of typed parts `P`. Chat messages and
/// Responses input items and tool outputs all take it; each reads its own part type.
pub(crate) enum StringOrParts<P, T = String> {
    Text(T),
    Parts(Vec<P>),
}

/// Chat message content.
pub(super) type Content<T = String> = StringOrParts<PartWire<T>, T>;

#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
pub(super) struct PartWire<T: WireText = String> {
    #[serde(rename = "type")]
    kind: String,
    text: Option<T>,
    image_url: Option<T::Any>,
}

impl<P, T: KeptText> StringOrParts<P, T> {
    /// The content as one text: the string (as it is: a body's slice stays one), or the text of each
    /// part (`text` says which) joined by a newline.
    pub(crate) fn joined_text(self, text: impl FnMut(P) -> Option<T>) -> Text {
        match self {
            StringOrParts::Text(whole) => whole.into_text(),
            StringOrParts::Parts(parts) => parts
                .into_iter()
                .filter_map(text)
                .map(T::into_text)
                .collect::<Vec<_>>()
                .join("\n")
                .into(),
        }
    }
}

impl<T: KeptText> Content<T> {
    /// The content as one text: see [`StringOrParts::joined_text`].
    pub(super) fn into_text(self) -> Text {
        self.joined_text(|part| part.text)
    }

    pub(super) fn into_parts(self) -> Vec<Part> {
        match self {
            StringOrParts::Text(text) => vec![Part::Text(text.into_text())],
            StringOrParts::Parts(parts) => parts
                .into_iter()
                .filter_map(|part| match part.kind.as_str() {
                    "text" | "input_text" => part.text.map(|text| Part::Text(text.into_text())),
                    "image_url" => image_part(T::any_value(part.image_url?)),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// An image part's `image_url`: the URL as a string, or an object with a `url` member.
pub(crate) fn image_part(image_url: Value) -> Option<Part> {
    let url = match image_url {
        Value::String(url) => url,
        other => other.get("url")?.as_str()?.to_owned(),
    };
    Some(Part::Image(image_from_url(url)))
}

/// `data:` URLs carry base64 images; anything else is a plain URL.
fn image_from_url(url: String) -> Image {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media_type, data)) = rest.split_once(";base64,")
    {
        return Image::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        };
    }
    Image::Url(url)
}

impl<'de, P: Deserialize<'de>, T: WireText> Deserialize<'de> for StringOrParts<P, T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor<P, T>(PhantomData<(P, T)>);
        impl<'de, P: Deserialize<'de>, T: WireText> Visitor<'de> for ContentVisitor<P, T> {
            type Value = StringOrParts<P, T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(StringOrParts::Text(T::from_str(value)))
            }
            fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
                Ok(StringOrParts::Text(T::from_string(value)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element::<P>()? {
                    parts.push(part);
                }
                Ok(StringOrParts::Parts(parts))
            }
        }
        deserializer.deserialize_any(ContentVisitor(PhantomData))
    }
}

/// One entry of the `thinking_blocks` extension on assistant messages and deltas.
#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
pub(crate) struct ThinkingBlockWire<T = String> {
    #[serde(rename = "type")]
    kind: Option<String>,
    thinking: Option<T>,
    signature: Option<T>,
    data: Option<T>,
}

impl<T: KeptText> ThinkingBlockWire<T> {
    pub(super) fn into_part(self) -> Option<Part> {
        if self.kind.as_deref() == Some("redacted_thinking") {
            return self.data.map(|data| Part::RedactedThinking {
                data: data.into_string(),
            });
        }
        Some(Part::Thinking {
            text: self.thinking.map(T::into_string).unwrap_or_default(),
            signature: self
                .signature
                .filter(|signature| !signature.is_empty())
                .map(T::into_string),
        })
    }
}
