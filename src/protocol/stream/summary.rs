//! The summary of a streamed answer (text, reasoning, tool calls, usage, finish) kept for logs and
//! accounting: built beside a conversion, or by [`StreamTap`] alone when the bytes pass through.

use super::exact::{ExactChunk, exact_chunk};
use super::{Decoder, ResponseSummary, StreamEvent};
use crate::protocol::sse::SseEvent;
use crate::protocol::{Protocol, ToolCall};

#[derive(Debug, Default)]
pub(super) struct SummaryBuilder {
    pub(super) summary: ResponseSummary,
    /// `(tool call index, position in summary.tool_calls)`.
    tools: Vec<(usize, usize)>,
}

/// Room a streamed answer's text starts with: a short answer's pieces then never grow it, where
/// starting empty took five reallocations for a 20-chunk answer of ≈ 100 bytes.
const TEXT_START: usize = 256;

/// Appends one streamed piece of text to the text collected so far.
pub(crate) fn push_piece(text: &mut String, piece: &str) {
    if text.capacity() == 0 {
        text.reserve(piece.len().max(TEXT_START));
    }
    text.push_str(piece);
}

impl SummaryBuilder {
    /// What an exactly read chunk adds: its text and finish reason.
    fn apply_exact(&mut self, chunk: &ExactChunk<'_>) {
        push_piece(&mut self.summary.text, &chunk.text);
        if chunk.finish.is_some() {
            self.summary.finish_reason = chunk.finish;
        }
    }

    pub(super) fn apply(&mut self, event: &StreamEvent) {
        let summary = &mut self.summary;
        match event {
            StreamEvent::Start { usage: Some(usage) } => summary.usage = Some(*usage),
            StreamEvent::Text(text) => push_piece(&mut summary.text, text),
            StreamEvent::Thinking(text) => summary.reasoning.push_str(text),
            StreamEvent::ToolCallStart { index, id, name } => {
                self.tools.push((*index, summary.tool_calls.len()));
                summary.tool_calls.push(ToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                });
            }
            StreamEvent::ToolCallArgs { index, arguments } => {
                if let Some((_, position)) = self.tools.iter().find(|(i, _)| i == index)
                    && let Some(call) = summary.tool_calls.get_mut(*position)
                {
                    call.arguments.push_str(arguments);
                }
            }
            StreamEvent::Finish { reason, .. } => summary.finish_reason = Some(*reason),
            StreamEvent::Usage(usage) => summary.usage = Some(*usage),
            _ => {}
        }
    }
}

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
