//! Anthropic Messages wire format: each concern in its own file, the format's interface re-exported
//! here so callers name `anthropic::X` whatever file `X` lives in.

mod answer;
mod count_tokens;
mod encode_request;
mod encode_response;
mod request;
mod response;
mod usage;
mod wire;

pub use answer::error_body;
pub(crate) use answer::{message_response, message_stream};
pub(crate) use count_tokens::{count_tokens_input, tools_text};
pub use encode_request::encode_request;
pub(crate) use encode_request::encode_request_bytes;
pub use encode_response::encode_response;
pub use request::{decode_request, decode_request_sliced, decode_request_unread};
pub(crate) use response::BlockIn;
pub use response::decode_response;
#[cfg(test)]
pub(crate) use response::decode_response_value;
pub(crate) use usage::{UsageIn, WireUsage, usage_json};

use super::FinishReason;

/// Anthropic `stop_reason` for a canonical reason.
pub(crate) fn stop_reason_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "end_turn",
        FinishReason::StopSequence => "stop_sequence",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// Canonical reason for an Anthropic `stop_reason`; unknown values count as a normal stop.
pub fn finish_reason_from(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "stop_sequence" => FinishReason::StopSequence,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}
