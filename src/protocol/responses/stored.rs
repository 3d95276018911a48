//! The stored-conversation layout: an answer as the conversation store keeps it (owner, the
//! conversation's input items, the `response` object), in memory as parts and in Redis as one JSON
//! entry, and reading one back.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::join_items;
use crate::protocol::json_text::{member_range, member_ranges, read_str};

// === Stored conversations ===

/// A stored answer: who owns it (the client key's name, `None` on an open gateway), the whole
/// conversation's input items, and the `response` object the client got.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StoredResponse {
    pub owner: Option<String>,
    pub input: StoredInput,
    pub response: Bytes,
}

/// The conversation's input items as a stored answer holds them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum StoredInput {
    /// The items' JSON array.
    Items(Bytes),
    /// A request body (a copy of it) whose `input` member is the items' array. It is looked for
    /// when the answer is continued: most stored answers never are (a client that resends its
    /// history stores every turn), and finding the array is a read of the whole body.
    InBody(Bytes),
}

impl StoredInput {
    /// The items' JSON array.
    pub fn items(&self) -> Bytes {
        match self {
            StoredInput::Items(items) => items.clone(),
            StoredInput::InBody(body) => member_range(body, "input")
                .map_or_else(|| Bytes::from_static(b"[]"), |range| body.slice(range)),
        }
    }

    /// Itself with a request body copied out of the buffer it came in: a body may share its
    /// allocation with the connection's read buffer, which a stored answer must not hold for its TTL.
    pub fn detached(self) -> StoredInput {
        match self {
            StoredInput::InBody(body) => StoredInput::InBody(Bytes::copy_from_slice(&body)),
            items => items,
        }
    }

    fn len(&self) -> usize {
        match self {
            StoredInput::Items(bytes) | StoredInput::InBody(bytes) => bytes.len(),
        }
    }
}

#[derive(Deserialize)]
struct OutputOnly<'a> {
    #[serde(borrow)]
    output: Option<&'a RawValue>,
}

impl StoredResponse {
    /// The bytes it holds (what the in-memory store weighs).
    pub fn len(&self) -> usize {
        self.owner.as_ref().map_or(0, String::len) + self.input.len() + self.response.len()
    }

    /// The conversation so far: the stored input items followed by the response's output items.
    pub fn conversation(&self) -> String {
        let output = std::str::from_utf8(&self.response)
            .ok()
            .and_then(|response| serde_json::from_str::<OutputOnly<'_>>(response).ok())
            .and_then(|response| response.output)
            .map_or("[]", RawValue::get);
        let items = self.input.items();
        // A request body's, checked when it was decoded, or an entry's, checked when it was read.
        join_items(&[simdutf8::basic::from_utf8(&items).unwrap_or("[]"), output])
    }

    /// The entry as Redis keeps it: `{"owner":…,"input":[…],"response":{…}}`.
    pub fn to_json(&self) -> Vec<u8> {
        let owner = self.owner.as_deref().map_or_else(
            || "null".to_owned(),
            crate::protocol::json_patch::json_string,
        );
        let input = self.input.items();
        let mut out = Vec::with_capacity(owner.len() + input.len() + self.response.len() + 32);
        out.extend_from_slice(br#"{"owner":"#);
        out.extend_from_slice(owner.as_bytes());
        out.extend_from_slice(br#","input":"#);
        out.extend_from_slice(&input);
        out.extend_from_slice(br#","response":"#);
        out.extend_from_slice(&self.response);
        out.push(b'}');
        out
    }

    /// Read an entry written by [`StoredResponse::to_json`]; its parts are slices of `entry`. The
    /// members are found by [`member_range`] (a conversation's entry holds its whole history, which
    /// `RawValue` would skip a byte at a time); whoever uses `input` and `response` parses them (a
    /// continuation reads the items, `GET` checks the response).
    pub fn from_json(entry: &Bytes) -> Option<StoredResponse> {
        let text = simdutf8::basic::from_utf8(entry).ok()?;
        let [owner, input, response] = member_ranges(entry, ["owner", "input", "response"]);
        let owner = match text.get(owner?)? {
            "null" => None,
            quoted => match read_str(quoted)? {
                (owner, len) if len == quoted.len() => Some(owner.into_owned()),
                _ => return None,
            },
        };
        Some(StoredResponse {
            owner,
            input: StoredInput::Items(entry.slice(input?)),
            response: entry.slice(response?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_answers_read_back_from_json() {
        let response = Bytes::from_static(
            br#"{"id":"resp_1","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"yo"}]}]}"#,
        );
        for (owner, input) in [
            (
                Some("team \"a\""),
                StoredInput::Items(Bytes::from_static(br#"[{"role":"user","content":"hi"}]"#)),
            ),
            (
                None,
                StoredInput::InBody(Bytes::from_static(
                    br#"{"model":"m","input":[{"role":"user","content":"hi"}],"tools":[]}"#,
                )),
            ),
        ] {
            let stored = StoredResponse {
                owner: owner.map(str::to_owned),
                input,
                response: response.clone(),
            };
            let read = StoredResponse::from_json(&Bytes::from(stored.to_json())).unwrap();
            assert_eq!(read.owner.as_deref(), owner);
            assert_eq!(&read.response[..], &response[..]);
            assert_eq!(
                &read.input.items()[..],
                br#"[{"role":"user","content":"hi"}]"#
            );
            for conversation in [stored.conversation(), read.conversation()] {
                assert!(conversation.starts_with(r#"[{"role":"user""#));
                assert!(conversation.ends_with(r#""text":"yo"}]}]"#));
            }
        }
        assert_eq!(
            StoredResponse::from_json(&Bytes::from_static(b"{\"owner\":1")),
            None
        );
    }
}
