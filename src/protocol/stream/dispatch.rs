//! The decoder and encoder of each protocol behind one enum each (the Responses ones included): the
//! one place that names them all, for the converter and the tap.

use bytes::BytesMut;

use super::decode_anthropic::AnthropicDecoder;
use super::decode_openai::OpenAiDecoder;
use super::encode_anthropic::AnthropicEncoder;
use super::encode_openai::OpenAiEncoder;
use super::{StreamError, StreamEvent, StreamOptions};
use crate::protocol::Protocol;
use crate::protocol::responses::stream::{ResponsesDecoder, ResponsesEncoder};
use crate::protocol::sse::SseEvent;

/// The upstream protocol's decoder.
#[derive(Debug)]
pub(super) enum Decoder {
    OpenAi(OpenAiDecoder),
    Anthropic(AnthropicDecoder),
    Responses(ResponsesDecoder),
}

impl Decoder {
    pub(super) fn new(protocol: Protocol) -> Self {
        match protocol {
            Protocol::OpenAi => Decoder::OpenAi(OpenAiDecoder::default()),
            Protocol::Anthropic => Decoder::Anthropic(AnthropicDecoder::default()),
            Protocol::Responses => Decoder::Responses(ResponsesDecoder::default()),
        }
    }

    pub(super) fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), StreamError> {
        match self {
            Decoder::OpenAi(decoder) => decoder.decode(event, out),
            Decoder::Anthropic(decoder) => decoder.decode(event, out),
            Decoder::Responses(decoder) => decoder.decode(event, out),
        }
    }
}

/// The client protocol's encoder.
#[derive(Debug)]
pub(super) enum Encoder {
    OpenAi(OpenAiEncoder),
    Anthropic(AnthropicEncoder),
    Responses(ResponsesEncoder),
}

impl Encoder {
    pub(super) fn emit(&mut self, event: &StreamEvent, opts: &StreamOptions, out: &mut BytesMut) {
        match self {
            Encoder::OpenAi(encoder) => encoder.emit(event, opts, out),
            Encoder::Anthropic(encoder) => encoder.emit(event, opts, out),
            Encoder::Responses(encoder) => encoder.emit(event, opts, out),
        }
    }

    pub(super) fn ended(&self) -> bool {
        match self {
            Encoder::OpenAi(encoder) => encoder.ended,
            Encoder::Anthropic(encoder) => encoder.ended,
            Encoder::Responses(encoder) => encoder.ended,
        }
    }
}

/// Tests only: decodes `events` twice, with the borrowed fast path and with the `Value` path alone, so
/// tests can check both give the same canonical events (and the same errors).
#[cfg(test)]
pub(crate) fn decode_both_ways(
    protocol: Protocol,
    events: &[SseEvent],
) -> (super::DecodedEvents, super::DecodedEvents) {
    let mut fast = Decoder::new(protocol);
    let mut slow = Decoder::new(protocol);
    match &mut slow {
        Decoder::OpenAi(decoder) => decoder.value_only = true,
        Decoder::Anthropic(decoder) => decoder.value_only = true,
        // One path only: the Responses decoder reads every event through the parser.
        Decoder::Responses(_) => {}
    }
    let run = |decoder: &mut Decoder| {
        events
            .iter()
            .map(|event| {
                let mut out = Vec::new();
                decoder
                    .decode(event, &mut out)
                    .map(|()| out)
                    .map_err(|error| error.to_string())
            })
            .collect::<Vec<_>>()
    };
    (run(&mut fast), run(&mut slow))
}
