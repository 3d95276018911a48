//! A `POST /v1/messages` body as serde reads it: the wire structs the readings of a request share
//! (`T = String` keeps the conversation's texts, `T = Sliced` keeps them as slices of a large body,
//! `T = Unread` only checks them), and the loose member
//! readers that let the decoder name what is wrong instead of serde.

use std::marker::PhantomData;

use serde::Deserialize;
use serde::de;
use serde_json::Value;

use crate::protocol::openai::WireText;

/// The visits of the scalars other than strings (booleans, numbers, `null` outside an `Option`), each
/// read as one value: `Other` for the loose readers below.
macro_rules! scalars_read_as {
    ($value:ty, $other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$value, E> {
            Ok($other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$value, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$value, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$value, E> {
            Ok($other)
        }
        fn visit_unit<E: de::Error>(self) -> Result<$value, E> {
            Ok($other)
        }
    };
}

/// A block member read as whatever it is, for the decoder to judge: a string, or anything else (`null`
/// reads as absent, through `Option`).
pub(crate) enum Loose<T: WireText = String> {
    Text(T),
    Other,
}

impl<'de, T: WireText> Deserialize<'de> for Loose<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LooseVisitor<T>(PhantomData<T>);
        impl<'de, T: WireText> de::Visitor<'de> for LooseVisitor<T> {
            type Value = Loose<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Loose<T>, E> {
                Ok(Loose::Text(T::from_str(text)))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Loose<T>, E> {
                Ok(Loose::Text(T::from_string(text)))
            }
            scalars_read_as!(Loose<T>, Loose::Other);
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Loose<T>, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Loose<T>, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Loose::Other)
            }
        }
        deserializer.deserialize_any(LooseVisitor(PhantomData))
    }
}

/// A content block as the decoder reads it: every member it looks at, each taken as it comes. Member
/// types never fail here (the decoder judges them), so both readings accept the same blocks.
#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
pub(crate) struct BlockWire<T: WireText = String> {
    #[serde(rename = "type")]
    pub(super) kind: Option<Loose>,
    pub(super) text: Option<Loose<T>>,
    pub(super) source: Option<T::Tree>,
    pub(super) id: Option<Loose<T>>,
    pub(super) name: Option<Loose<T>>,
    pub(super) input: Option<T::Any>,
    pub(super) tool_use_id: Option<Loose<T>>,
    pub(super) content: Option<T::Any>,
    pub(super) is_error: Option<Value>,
    pub(super) thinking: Option<Loose<T>>,
    pub(super) signature: Option<Loose<T>>,
    pub(super) data: Option<Loose<T>>,
}

/// An element of a content array: a block (an object), or anything else, which has no `type`.
pub(crate) enum BlockItem<T: WireText = String> {
    Block(Box<BlockWire<T>>),
    Other,
}

impl<'de, T: WireText> Deserialize<'de> for BlockItem<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor<T>(PhantomData<T>);
        impl<'de, T: WireText> de::Visitor<'de> for ItemVisitor<T> {
            type Value = BlockItem<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a content block")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<BlockItem<T>, A::Error> {
                BlockWire::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|block| BlockItem::Block(Box::new(block)))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<BlockItem<T>, E> {
                Ok(BlockItem::Other)
            }
            scalars_read_as!(BlockItem<T>, BlockItem::Other);
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BlockItem<T>, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(BlockItem::Other)
            }
        }
        deserializer.deserialize_any(ItemVisitor(PhantomData))
    }
}

/// A message's `content`: a string, an array of blocks, or anything else (an error the decoder names).
pub(crate) enum MessageContent<T: WireText = String> {
    Text(T),
    Blocks(Vec<BlockItem<T>>),
    Other,
}

impl<'de, T: WireText> Deserialize<'de> for MessageContent<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor<T>(PhantomData<T>);
        impl<'de, T: WireText> de::Visitor<'de> for ContentVisitor<T> {
            type Value = MessageContent<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<MessageContent<T>, E> {
                Ok(MessageContent::Text(T::from_str(text)))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<MessageContent<T>, E> {
                Ok(MessageContent::Text(T::from_string(text)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<MessageContent<T>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(MessageContent::Blocks(items))
            }
            scalars_read_as!(MessageContent<T>, MessageContent::Other);
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<MessageContent<T>, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(MessageContent::Other)
            }
        }
        deserializer.deserialize_any(ContentVisitor(PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
pub(super) struct MessagesWire<T: WireText = String> {
    pub(super) model: Option<String>,
    pub(super) max_tokens: Option<u64>,
    pub(super) messages: Option<Vec<MessageWire<T>>>,
    pub(super) system: Option<Value>,
    pub(super) stream: Option<bool>,
    pub(super) temperature: Option<f64>,
    pub(super) top_p: Option<f64>,
    pub(super) top_k: Option<u64>,
    pub(super) stop_sequences: Option<Vec<String>>,
    pub(super) tools: Option<Vec<ToolWire<T>>>,
    pub(super) tool_choice: Option<ToolChoiceWire>,
    pub(super) metadata: Option<MetadataWire>,
}

#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
pub(super) struct MessageWire<T: WireText = String> {
    pub(super) role: Option<String>,
    pub(super) content: Option<MessageContent<T>>,
}

#[derive(Deserialize)]
#[serde(bound = "T: WireText")]
pub(super) struct ToolWire<T: WireText = String> {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) name: Option<T>,
    pub(super) description: Option<T>,
    pub(super) input_schema: Option<T::Raw>,
}

#[derive(Deserialize)]
pub(super) struct ToolChoiceWire {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) name: Option<String>,
    pub(super) disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
pub(super) struct MetadataWire {
    pub(super) user_id: Option<String>,
}
