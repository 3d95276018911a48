//! OpenAI Responses API wire format (`POST /v1/responses`): ids, what an answer repeats from its request,
//! and the submodules by concern — request decoding (`request.rs`, `input.rs`), request encoding for
//! backends that speak it (`encode_request.rs`), response decoding (`response.rs`), the byte writers of
//! response objects (`write.rs`), the stored-conversation layout (`stored.rs`) and streams (`stream/`).
//!
//! Conversion is hub and spoke like the other formats: a Responses request decodes into a
//! [`ChatRequest`](super::ChatRequest) (plus the few fields only this API has, [`ResponsesRequest`]),
//! and a canonical [`ChatResponse`](super::ChatResponse) encodes into a Responses `response` object.
//! What a conversion drops on purpose is listed in docs/conversion.md.

use std::sync::Arc;

mod encode_request;
mod input;
#[cfg(test)]
mod oracle;
mod request;
mod response;
mod stored;
pub(crate) mod stream;
mod write;

pub use encode_request::encode_request;
pub(crate) use input::join_items;
pub use request::{
    InputItems, ResponsesRequest, decode_request, decode_request_sliced, decode_request_unread,
};
pub use response::decode_response;
pub(crate) use stored::{StoredInput, StoredResponse};
pub(crate) use write::encode_response_bytes;

/// Prefix of a reasoning item's `encrypted_content` that carries Anthropic redacted thinking (plain
/// `encrypted_content` carries a thinking block's signature).
pub(crate) const REDACTED_PREFIX: &str = "redacted_thinking:";

/// The response id for a request id: `resp_<request id>` (an id that already starts with `resp_` is
/// kept), so a response's id names the request that made it, as every other endpoint's `id` does.
pub(crate) fn response_id(request_id: &str) -> String {
    if request_id.starts_with("resp_") {
        request_id.to_owned()
    } else {
        let mut id = String::with_capacity(request_id.len() + 5);
        id.push_str("resp_");
        id.push_str(request_id);
        id
    }
}

/// The id of output item `index` of response `response_id`: `msg_…`, `fc_…` or `rs_…` followed by the
/// response id's own part and the index, so ids are unique and the same for the same answer.
pub(crate) fn item_id(prefix: &str, response_id: &str, index: usize) -> String {
    let own = response_id.strip_prefix("resp_").unwrap_or(response_id);
    let index = itoa::Buffer::new().format(index).to_owned();
    let mut id = String::with_capacity(prefix.len() + own.len() + index.len() + 2);
    id.push_str(prefix);
    id.push('_');
    id.push_str(own);
    id.push('_');
    id.push_str(&index);
    id
}

/// What a Responses answer repeats from its request (`instructions`, `tools`, `text`, `reasoning`,
/// `metadata`, …): JSON object members without braces, rendered once when the request is decoded.
/// Empty means the defaults (a response converted without its request).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseEcho(pub Arc<str>);

impl ResponseEcho {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The members an answer shows when the request's are unknown.
const DEFAULT_ECHO: &str = r#""instructions":null,"max_output_tokens":null,"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":null,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":null,"truncation":"disabled","user":null,"metadata":{}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        "(\\PC|[\"\\\\\n\\x01\\x7f]){0,12}"
    }

    proptest! {
        #[test]
        fn item_ids_are_the_formatted_ones(id in text(), index in any::<usize>()) {
            let own = id.strip_prefix("resp_").unwrap_or(&id).to_owned();
            prop_assert_eq!(item_id("msg", &id, index), format!("msg_{own}_{index}"));
        }
    }
}
