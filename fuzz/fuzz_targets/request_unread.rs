//! Fuzz target: the readings of a request body that keep no conversation (`decode_chat_unread`,
//! `anthropic::decode_request_unread`, `responses::decode_request_unread`, used where nothing on a
//! route reads the conversation) against the typed readings that define the semantics. On any bytes,
//! each must accept exactly what its typed reading accepts, refuse the rest with the typed reading's
//! error, and agree with it on everything it keeps — an unread reading that accepted a body the typed
//! one refuses would forward it upstream. The sliced chat reading (`decode_chat_sliced`, a large body's
//! texts kept as slices of it) and the sliced Responses and Anthropic readings
//! (`responses::decode_request_sliced`, `anthropic::decode_request_sliced`) must read exactly what their
//! typed readings read, or refuse with their errors.
//!
//! Input: one byte choosing the front door (or a sliced reading), then the body.

#![no_main]

use ai_gateway::protocol::{ChatRequest, DecodeError, Text, anthropic, openai, responses};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let [door, body @ ..] = input else {
        return;
    };
    match door % 6 {
        3 => same(
            openai::decode_chat_sliced(&bytes::Bytes::copy_from_slice(body)),
            openai::decode_chat(body),
            |_| false,
            |typed| typed,
        ),
        4 => same(
            responses::decode_request_sliced(&bytes::Bytes::copy_from_slice(body)),
            responses::decode_request(body),
            |_| false,
            |typed| typed,
        ),
        5 => same(
            anthropic::decode_request_sliced(&bytes::Bytes::copy_from_slice(body)),
            anthropic::decode_request(body),
            |_| false,
            |typed| typed,
        ),
        0 => same(
            openai::decode_chat_unread(body),
            openai::decode_chat(body),
            |request| request.messages_unread,
            chat_kept,
        ),
        1 => same(
            anthropic::decode_request_unread(body),
            anthropic::decode_request(body),
            |request| request.messages_unread,
            chat_kept,
        ),
        _ => same(
            responses::decode_request_unread(body),
            responses::decode_request(body),
            |request| request.chat.messages_unread,
            |typed| responses::ResponsesRequest {
                chat: ChatRequest {
                    system: typed.instructions.iter().map(Text::from).collect(),
                    messages: Vec::new(),
                    messages_unread: true,
                    ..typed.chat.clone()
                },
                ..typed
            },
        ),
    }
});

/// What a chat reading that keeps no conversation keeps of the typed request.
fn chat_kept(typed: ChatRequest) -> ChatRequest {
    ChatRequest {
        system: Vec::new(),
        messages: Vec::new(),
        tools: Vec::new(),
        messages_unread: true,
        ..typed
    }
}

/// `unread` and `typed` agree: both refuse with one error, or both accept — the same request when the
/// unread reading fell back to the typed one (`is_unread` says it did not), else what `kept` leaves of
/// the typed one.
fn same<T: PartialEq + std::fmt::Debug>(
    unread: Result<T, DecodeError>,
    typed: Result<T, DecodeError>,
    is_unread: impl Fn(&T) -> bool,
    kept: impl FnOnce(T) -> T,
) {
    match (unread, typed) {
        (Ok(unread), Ok(typed)) if is_unread(&unread) => assert_eq!(unread, kept(typed)),
        (Ok(unread), Ok(typed)) => assert_eq!(unread, typed),
        (Err(unread), Err(typed)) => assert_eq!(unread.message, typed.message),
        (unread, typed) => panic!(
            "acceptance differs: unread {:?}, typed {:?}",
            unread.map(|_| ()),
            typed.map(|_| ())
        ),
    }
}
