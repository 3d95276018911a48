//! The stored-conversation layout: an answer as the conversation store keeps it (owner, the
//! conversation's input items, the `response` object), and reading one back.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::join_items;

// === Stored conversations ===

/// A stored answer as the conversation store keeps it: who owns it (the client key's name, `null` on an
/// open gateway), the whole conversation's input items, and the `response` object the client got.
pub(crate) fn stored_entry(owner: Option<&str>, input_items: &[u8], response: &[u8]) -> Vec<u8> {
    let owner = owner.map_or_else(
        || "null".to_owned(),
        crate::protocol::json_patch::json_string,
    );
    let mut out = Vec::with_capacity(owner.len() + input_items.len() + response.len() + 32);
    out.extend_from_slice(br#"{"owner":"#);
    out.extend_from_slice(owner.as_bytes());
    out.extend_from_slice(br#","input":"#);
    out.extend_from_slice(input_items);
    out.extend_from_slice(br#","response":"#);
    out.extend_from_slice(response);
    out.push(b'}');
    out
}

/// A stored answer, read without building a JSON tree.
#[derive(Deserialize)]
pub(crate) struct StoredView<'a> {
    #[serde(borrow)]
    pub owner: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub input: &'a RawValue,
    #[serde(borrow)]
    pub response: &'a RawValue,
}

#[derive(Deserialize)]
struct OutputOnly<'a> {
    #[serde(borrow)]
    output: Option<&'a RawValue>,
}

impl StoredView<'_> {
    /// Read an entry written by [`stored_entry`].
    pub fn read(bytes: &[u8]) -> Option<StoredView<'_>> {
        serde_json::from_slice(bytes).ok()
    }

    /// The conversation so far: the stored input items followed by the response's output items.
    pub fn conversation(&self) -> String {
        let output = serde_json::from_str::<OutputOnly<'_>>(self.response.get())
            .ok()
            .and_then(|response| response.output)
            .map_or("[]", RawValue::get);
        join_items(&[self.input.get(), output])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_entries_read_back() {
        let entry = stored_entry(
            Some("team-a"),
            br#"[{"role":"user","content":"hi"}]"#,
            br#"{"id":"resp_1","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"yo"}]}]}"#,
        );
        let view = StoredView::read(&entry).unwrap();
        assert_eq!(view.owner.as_deref(), Some("team-a"));
        let conversation = view.conversation();
        assert!(conversation.starts_with(r#"[{"role":"user""#));
        assert!(conversation.contains(r#""text":"yo""#));
    }
}
