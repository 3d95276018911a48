//! Message content as OpenAI writes it, read into canonical parts: a string or an array of typed parts
//! (text, images), and the `thinking_blocks` extension of assistant messages.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::Value;

use crate::protocol::{Image, Part};

/// Message content: a string or an array of typed parts.
pub(super) enum Content {
    Text(String),
    Parts(Vec<PartWire>),
}

#[derive(Deserialize)]
pub(super) struct PartWire {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    image_url: Option<Value>,
}

impl Content {
    pub(super) fn into_text(self) -> String {
        match self {
            Content::Text(text) => text,
            Content::Parts(parts) => parts
                .into_iter()
                .filter_map(|part| part.text)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    pub(super) fn into_parts(self) -> Vec<Part> {
        match self {
            Content::Text(text) => vec![Part::Text(text)],
            Content::Parts(parts) => parts
                .into_iter()
                .filter_map(|part| match part.kind.as_str() {
                    "text" | "input_text" => part.text.map(Part::Text),
                    "image_url" => {
                        let url = match part.image_url? {
                            Value::String(url) => url,
                            other => other.get("url")?.as_str()?.to_owned(),
                        };
                        Some(Part::Image(image_from_url(url)))
                    }
                    _ => None,
                })
                .collect(),
        }
    }
}

/// `data:` URLs carry base64 images; anything else is a plain URL.
pub(crate) fn image_from_url(url: String) -> Image {
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

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Content, E> {
                Ok(Content::Text(value.to_owned()))
            }
            fn visit_string<E: de::Error>(self, value: String) -> Result<Content, E> {
                Ok(Content::Text(value))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element::<PartWire>()? {
                    parts.push(part);
                }
                Ok(Content::Parts(parts))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

/// One entry of the `thinking_blocks` extension on assistant messages and deltas.
#[derive(Deserialize)]
pub(crate) struct ThinkingBlockWire {
    #[serde(rename = "type")]
    kind: Option<String>,
    thinking: Option<String>,
    signature: Option<String>,
    data: Option<String>,
}

impl ThinkingBlockWire {
    pub(super) fn into_part(self) -> Option<Part> {
        if self.kind.as_deref() == Some("redacted_thinking") {
            return self.data.map(|data| Part::RedactedThinking { data });
        }
        Some(Part::Thinking {
            text: self.thinking.unwrap_or_default(),
            signature: self.signature.filter(|signature| !signature.is_empty()),
        })
    }
}
