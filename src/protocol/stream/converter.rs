//! [`StreamConverter`]: one upstream stream converted to the client's protocol, event by event,
//! keeping the answer's summary and what the relay asks (how the upstream ended, a first error).

use bytes::BytesMut;

use super::dispatch::{Decoder, Encoder};
use super::encode_anthropic::AnthropicEncoder;
use super::encode_openai::OpenAiEncoder;
use super::summary::SummaryBuilder;
use super::{ResponseSummary, StreamError, StreamEvent, StreamOptions};
use crate::protocol::convert::unix_now;
use crate::protocol::responses::stream::ResponsesEncoder;
use crate::protocol::sse::{SseDecoder, SseEvent};
use crate::protocol::{Protocol, Usage};

/// Converts one upstream stream to the client's protocol, event by event.
#[derive(Debug)]
pub struct StreamConverter {
    opts: StreamOptions,
    sse: SseDecoder,
    decoder: Decoder,
    encoder: Encoder,
    events: Vec<StreamEvent>,
    summary: SummaryBuilder,
    /// The upstream sent its own end (`[DONE]`, `message_stop`) or an error event.
    upstream_ended: bool,
    /// The upstream reported usage; otherwise the end of the stream carries an estimate.
    usage_seen: bool,
    /// Canonical events decoded so far.
    decoded: u64,
    /// The upstream's very first event was an error: its message.
    first_error: Option<String>,
    /// The message of the error event the upstream ended its stream with, if it did.
    upstream_error: Option<String>,
}

impl StreamConverter {
    pub fn new(from: Protocol, to: Protocol, opts: StreamOptions) -> Self {
        StreamConverter {
            opts,
            sse: SseDecoder::default(),
            decoder: Decoder::new(from),
            encoder: match to {
                Protocol::OpenAi => Encoder::OpenAi(OpenAiEncoder::new(unix_now())),
                Protocol::Anthropic => Encoder::Anthropic(AnthropicEncoder::new()),
                Protocol::Responses => Encoder::Responses(ResponsesEncoder::new(unix_now())),
            },
            events: Vec::new(),
            summary: SummaryBuilder::default(),
            upstream_ended: false,
            usage_seen: false,
            decoded: 0,
            first_error: None,
            upstream_error: None,
        }
    }

    /// Pin OpenAI chunks' `created` (deterministic tests, cache replays).
    pub fn with_created(mut self, created: i64) -> Self {
        match &mut self.encoder {
            Encoder::OpenAi(encoder) => encoder.created = created,
            Encoder::Responses(encoder) => encoder.created_at = created,
            Encoder::Anthropic(_) => {}
        }
        self
    }

    /// A Responses client's final `response` object, once the stream ended with it (the
    /// conversation store keeps it).
    pub(crate) fn completed_response(&self) -> Option<&[u8]> {
        match &self.encoder {
            Encoder::Responses(encoder) => encoder.final_response.as_deref(),
            _ => None,
        }
    }

    /// Feed upstream bytes (any split); converted bytes for every completed event go to `out`.
    pub fn push(&mut self, upstream_bytes: &[u8], out: &mut BytesMut) -> Result<(), StreamError> {
        self.sse.feed(upstream_bytes);
        while let Some(event) = self.sse.next_event()? {
            self.process(&event, out)?;
        }
        Ok(())
    }

    fn process(&mut self, event: &SseEvent, out: &mut BytesMut) -> Result<(), StreamError> {
        let mut events = std::mem::take(&mut self.events);
        let result = self.decoder.decode(event, &mut events);
        for event in events.drain(..) {
            if let (0, StreamEvent::Error { message, .. }) = (self.decoded, &event) {
                self.first_error = Some(message.clone());
            }
            self.decoded += 1;
            if let (false, StreamEvent::Error { message, .. }) = (self.upstream_ended, &event) {
                self.upstream_error = Some(message.clone());
            }
            self.upstream_ended |= matches!(event, StreamEvent::Done | StreamEvent::Error { .. });
            self.usage_seen |= matches!(event, StreamEvent::Usage(_));
            if matches!(event, StreamEvent::Done) {
                self.estimate_usage(out);
            }
            self.summary.apply(&event);
            self.encoder.emit(&event, &self.opts, out);
        }
        self.events = events;
        result
    }

    /// True once the upstream ended its stream itself (`[DONE]`, `message_stop` or an error event). At
    /// EOF without it the upstream was cut off: call [`StreamConverter::abort`] instead of `finish` to
    /// tell the client, or `finish` to end it as if complete.
    pub(crate) fn upstream_finished(&self) -> bool {
        self.upstream_ended
    }

    /// The message of the upstream's error event when that is how it ended its stream.
    pub(crate) fn upstream_error(&self) -> Option<&str> {
        self.upstream_error.as_deref()
    }

    /// The message of an error event that was the upstream's very first event (nothing was answered):
    /// the caller may still fail over if nothing reached the client.
    pub(crate) fn first_event_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// Upstream EOF, before deciding between [`StreamConverter::finish`] and
    /// [`StreamConverter::abort`]: decode a last event that lacks its blank line (accepted only when
    /// its `data:` line is complete), so an upstream that ends with `data: [DONE]` and no blank line is
    /// still seen as finished.
    pub fn flush(&mut self, out: &mut BytesMut) -> Result<(), StreamError> {
        match self.sse.finish() {
            Some(event) => self.process(&event, out),
            None => Ok(()),
        }
    }

    /// Upstream EOF: handle a last unterminated event, close open blocks and end the stream.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), StreamError> {
        let last = self.sse.finish();
        let result = match last {
            Some(event) => self.process(&event, out),
            None => Ok(()),
        };
        if !self.encoder.ended() {
            self.estimate_usage(out);
            self.encoder.emit(&StreamEvent::Done, &self.opts, out);
        }
        result
    }

    /// Before the end of a stream whose upstream reported no usage (an OpenAI-compatible server that
    /// ignores `stream_options`), give the client encoder an estimate: `StreamOptions::input_tokens`
    /// and the o200k token count of the streamed text, reasoning and tool calls. The summary keeps
    /// `usage: None` (accounting sees only real counts).
    fn estimate_usage(&mut self, out: &mut BytesMut) {
        if self.usage_seen {
            return;
        }
        self.usage_seen = true;
        let summary = &self.summary.summary;
        let tools: u64 = summary
            .tool_calls
            .iter()
            .map(|call| crate::tokens::count(&call.name) + crate::tokens::count(&call.arguments))
            .sum();
        let usage = Usage {
            input_tokens: self.opts.input_tokens,
            output_tokens: crate::tokens::count(&summary.text)
                + crate::tokens::count(&summary.reasoning)
                + tools,
            ..Usage::default()
        };
        self.encoder
            .emit(&StreamEvent::Usage(usage), &self.opts, out);
    }

    /// Upstream fault mid-stream: a protocol-correct error event, then the end of the stream.
    pub(crate) fn abort(&mut self, message: &str, out: &mut BytesMut) {
        self.encoder.emit(
            &StreamEvent::Error {
                kind: "api_error".into(),
                message: message.to_owned(),
            },
            &self.opts,
            out,
        );
    }

    /// True once the client stream has ended (normally, by error or abort).
    pub fn is_finished(&self) -> bool {
        self.encoder.ended()
    }

    pub fn summary(&self) -> &ResponseSummary {
        &self.summary.summary
    }
}
