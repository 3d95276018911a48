//! Responses API streams: the encoder (canonical [`StreamEvent`]s → the official semantic events, in
//! order, numbered by `sequence_number`; `encode.rs` with the event writers in `events.rs`), the decoder
//! (a Responses upstream's events → canonical; `decode.rs`), the pass-through observer for backends that
//! speak Responses natively (`pass_through.rs`), and replays of complete answers (`replay.rs`).
//!
//! Event order written for an answer (each event `event: <type>` + `data: {"type":…,"sequence_number":…}`):
//! `response.created`, `response.in_progress`, then per output item `response.output_item.added`,
//! (`response.content_part.added`, text or reasoning deltas, their `.done`, `response.content_part.done`)
//! or (`response.function_call_arguments.delta`…, `.done`), `response.output_item.done`; finally
//! `response.completed` (`response.incomplete` when the answer was cut by a length limit or a content
//! filter). A fault ends the stream with `error` and `response.failed`, never `response.completed`.
//!
//! [`StreamEvent`]: crate::protocol::stream::StreamEvent

mod decode;
mod encode;
mod events;
mod pass_through;
mod replay;

pub(crate) use decode::{ResponsesDecoder, final_response_of};
pub(crate) use encode::ResponsesEncoder;
pub(crate) use pass_through::{ResponsesPassThrough, Terminal};
pub use replay::replay;

/// What the stream tests share: options and a stream's events as JSON.
#[cfg(test)]
mod test_support {
    use serde_json::Value;

    use crate::protocol::sse::SseDecoder;
    use crate::protocol::stream::StreamOptions;

    pub(super) fn opts() -> StreamOptions {
        StreamOptions {
            id: "resp_t".into(),
            model: "m".into(),
            ..StreamOptions::default()
        }
    }

    pub(super) fn events(bytes: &[u8]) -> Vec<Value> {
        let mut decoder = SseDecoder::default();
        decoder.feed(bytes);
        let mut out = Vec::new();
        while let Ok(Some(event)) = decoder.next_event() {
            let value: Value = serde_json::from_slice(&event.data).unwrap();
            assert_eq!(event.event.as_deref(), value["type"].as_str());
            out.push(value);
        }
        out
    }
}
