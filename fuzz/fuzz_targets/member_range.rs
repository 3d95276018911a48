//! Fuzz target: `member_range`, the hand-written scan that finds a member's value in a JSON object a
//! parser already accepted (a Responses request's `input`, a stored answer's parts), against serde_json.
//! On any bytes it must not panic and must give a range within them; on bytes serde_json reads as an
//! object, the range must be where `RawValue` puts the first member of that name.
//!
//! Input: one byte giving the length of the name to look up (mod 8), the name, then the document.

#![no_main]

use std::fmt;
use std::ops::Range;

use ai_gateway::protocol::member_range;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// An object's members in order, duplicates kept.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

fuzz_target!(|input: &[u8]| {
    let [name_len, rest @ ..] = input else {
        return;
    };
    let (name, doc) = rest.split_at(usize::from(*name_len % 8).min(rest.len()));
    let name = String::from_utf8_lossy(name);
    let found = member_range(doc, &name);
    if let Some(range) = &found {
        assert!(range.start <= range.end && range.end <= doc.len());
    }
    let Ok(text) = std::str::from_utf8(doc) else {
        return;
    };
    let Ok(Members(members)) = serde_json::from_str::<Members<'_>>(text) else {
        return;
    };
    let range_of = |raw: &RawValue| -> Range<usize> {
        let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
        start..start + raw.get().len()
    };
    let first = |key: &str| members.iter().find(|(k, _)| k == key).map(|(_, raw)| range_of(raw));
    assert_eq!(found, first(&name), "{name:?} in {text:?}");
    for (key, _) in &members {
        assert_eq!(member_range(doc, key), first(key), "{key:?} in {text:?}");
    }
});
