//! OpenAI wire format (chat completions, completions, embeddings): each concern in its own file, the
//! format's interface re-exported here so callers name `openai::X` whatever file `X` lives in.

mod answer;
mod content;
mod encode_request;
mod encode_response;
mod parse;
mod request;
mod response;

pub use answer::{TextAnswer, embeddings, error_body, text_completion};
pub(crate) use answer::{chat_chunks, chat_completion, text_completion_chunks};
pub(crate) use content::{KeptText, StringOrParts, Unread, WireText, image_part};
pub(crate) use encode_request::encode_request_bytes;
#[cfg(test)]
pub(crate) use encode_request::tests::request as any_chat_request;
pub use encode_response::encode_response;
pub(crate) use encode_response::{encode_response_bytes, usage_json};
pub(crate) use parse::{
    body_text, missing, parse, parse_field, parse_field_text, required_messages, response_object,
    str_member, tool_choice_word,
};
pub(crate) use request::decode_chat_typed;
#[cfg(test)]
pub(crate) use request::tests::{
    check_unread_table, replacement, sliced_agrees, unread_agrees, with_one_value_replaced,
};
pub use request::{decode_chat, decode_chat_sliced, decode_chat_unread, decode_request};
#[cfg(test)]
pub(crate) use request::{decode_completion, decode_embeddings};
pub use response::decode_response;
#[cfg(test)]
pub(crate) use response::decode_response_value;
pub(crate) use response::{exact_response, is_exact_answer, usage_from};

use super::FinishReason;

/// OpenAI `finish_reason` for a canonical reason.
pub(crate) fn finish_reason_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::StopSequence => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

/// Canonical reason for an OpenAI `finish_reason`; unknown values count as a normal stop.
pub fn finish_reason_from(reason: &str) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}
