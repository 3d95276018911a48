//! [`StreamTap`]: the same-protocol pass-through observer, which keeps the answer's summary from the
//! upstream events without changing a byte.

use super::dispatch::Decoder;
use super::exact::{ExactChunk, exact_chunk};
use super::summary::SummaryBuilder;
use super::{ResponseSummary, StreamEvent};
use crate::protocol::Protocol;
use crate::protocol::sse::SseEvent;

/// Same-protocol pass-through observer: sees every upstream event and keeps the summary (text, reasoning,
/// tool calls, usage, finish) without changing bytes.
#[derive(Debug)]
pub(crate) struct StreamTap {
    decoder: Decoder,
    events: Vec<StreamEvent>,
    summary: SummaryBuilder,
}

impl StreamTap {
    pub fn new(protocol: Protocol) -> Self {
        StreamTap {
            decoder: Decoder::new(protocol),
            events: Vec::new(),
            summary: SummaryBuilder::default(),
        }
    }

    /// Record one upstream event; events that do not parse are ignored (the bytes pass through anyway).
    pub fn observe(&mut self, event: &SseEvent) {
        // Most chunks of an OpenAI stream: text (and finish) straight into the summary, no events.
        if let Decoder::OpenAi(decoder) = &mut self.decoder
            && !decoder.value_only
            && !event.is_done()
            && let Some(chunk) = exact_chunk(&event.data, &mut decoder.prefix)
        {
            decoder.started = true;
            self.summary.apply_exact(&chunk);
            return;
        }
        self.events.clear();
        if self.decoder.decode(event, &mut self.events).is_ok() {
            for event in &self.events {
                self.summary.apply(event);
            }
        }
    }

    pub fn summary(&self) -> &ResponseSummary {
        &self.summary.summary
    }

    /// Record an OpenAI chunk the caller already read with [`exact_chunk`] (the same as observing it).
    pub(crate) fn observe_exact(&mut self, chunk: &ExactChunk<'_>) {
        if let Decoder::OpenAi(decoder) = &mut self.decoder {
            decoder.started = true;
        }
        self.summary.apply_exact(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FinishReason;
    use crate::protocol::stream::data_event;
    use crate::protocol::stream::decode_openai::OpenAiDecoder;

    /// The tap reads exact chunks straight into its summary: the same summary as through the `Value`
    /// path's events, for a whole stream (role chunk, text with escapes, finish, usage chunk, `[DONE]`).
    #[test]
    fn tap_summary_is_the_value_path_summary() {
        let head = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":"#;
        let tail = r#","logprobs":null}]}"#;
        let stream = [
            format!(r#"{head}{{"role":"assistant","content":"","refusal":null}},"finish_reason":null{tail}"#),
            format!(r#"{head}{{"content":"Hel"}},"finish_reason":null{tail}"#),
            format!(r#"{head}{{"content":"lo \"q\" ü"}},"finish_reason":null{tail}"#),
            format!(r#"{head}{{}},"finish_reason":"length"{tail}"#),
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#.to_owned(),
            "[DONE]".to_owned(),
        ];
        let mut tap = StreamTap::new(Protocol::OpenAi);
        let mut slow = StreamTap::new(Protocol::OpenAi);
        let mut value_only = OpenAiDecoder::default();
        value_only.value_only = true;
        slow.decoder = Decoder::OpenAi(value_only);
        for data in &stream {
            let event = data_event(data.as_str());
            tap.observe(&event);
            slow.observe(&event);
        }
        assert_eq!(tap.summary().text, "Hello \"q\" ü");
        assert_eq!(tap.summary().finish_reason, Some(FinishReason::Length));
        assert_eq!(tap.summary().usage.map(|u| u.output_tokens), Some(4));
        assert_eq!(tap.summary(), slow.summary());
    }
}
