//! The Responses stream's event writers: each event written by hand, byte for byte what `write_event`
//! makes of its serde form (held to it by the tests here), without serde escaping every member name.

use bytes::BytesMut;
use serde::Serialize;

use crate::protocol::json_text::{Sink, plain_run, write_str, write_u64};
use crate::protocol::responses::write::{ItemOut, OutputTextOut, ReasoningTextOut};

#[derive(Serialize)]
pub(super) struct ItemEventOut<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) sequence_number: u64,
    pub(super) output_index: usize,
    pub(super) item: ItemOut<'a>,
}

#[derive(Serialize)]
pub(super) struct PartEventOut<'a, P: Serialize> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) sequence_number: u64,
    pub(super) item_id: &'a str,
    pub(super) output_index: usize,
    pub(super) content_index: u32,
    pub(super) part: P,
}

/// A text event of one content part: `response.output_text.delta`/`.done` and
/// `response.reasoning_text.delta`/`.done` (their serde forms are the four structs in the tests).
pub(super) struct PartTextOut<'a> {
    pub(super) kind: &'static str,
    pub(super) sequence_number: u64,
    pub(super) item_id: &'a str,
    pub(super) output_index: usize,
    pub(super) content_index: u32,
    /// The member the text goes in: `delta` (a piece) or `text` (the whole, in `.done`).
    pub(super) field: &'static str,
    pub(super) text: &'a str,
    /// Output text carries `"logprobs":[]`; reasoning text does not.
    pub(super) logprobs: bool,
}

#[derive(Serialize)]
pub(super) struct ArgsDeltaOut<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) sequence_number: u64,
    pub(super) item_id: &'a str,
    pub(super) output_index: usize,
    pub(super) delta: &'a str,
}

#[derive(Serialize)]
pub(super) struct ArgsDoneOut<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) sequence_number: u64,
    pub(super) item_id: &'a str,
    pub(super) output_index: usize,
    pub(super) name: &'a str,
    pub(super) arguments: &'a str,
}

#[derive(Serialize)]
pub(super) struct ErrorEventOut<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) sequence_number: u64,
    pub(super) code: &'a str,
    pub(super) message: &'a str,
    pub(super) param: Option<()>,
}

/// `event: <name>\ndata: {"type":"<name>","sequence_number":<seq>`: the start every event shares.
fn event_start(out: &mut BytesMut, name: &str, seq: u64, more: usize) {
    debug_assert_eq!(plain_run(name.as_bytes()), name.len());
    out.reserve(2 * name.len() + more + 64);
    out.put(b"event: ");
    out.put(name.as_bytes());
    out.put(b"\ndata: {\"type\":\"");
    out.put(name.as_bytes());
    out.put(b"\",\"sequence_number\":");
    write_u64(out, seq);
}

/// `,"item_id":…,"output_index":…`.
fn item_fields(out: &mut BytesMut, item_id: &str, output_index: usize) {
    out.put(b",\"item_id\":");
    write_str(out, item_id);
    out.put(b",\"output_index\":");
    write_u64(out, output_index as u64);
}

const EVENT_END: &[u8] = b"}\n\n";

impl PartTextOut<'_> {
    /// `,"content_index":…,"<field>":"<text>"` after the item's fields, then `,"logprobs":[]` for
    /// output text.
    pub(super) fn write(&self, out: &mut BytesMut) {
        debug_assert_eq!(plain_run(self.field.as_bytes()), self.field.len());
        event_start(out, self.kind, self.sequence_number, self.text.len() + 96);
        item_fields(out, self.item_id, self.output_index);
        out.put(b",\"content_index\":");
        write_u64(out, u64::from(self.content_index));
        out.put(b",\"");
        out.put(self.field.as_bytes());
        out.put(b"\":");
        write_str(out, self.text);
        if self.logprobs {
            out.put(b",\"logprobs\":[]");
        }
        out.put(EVENT_END);
    }
}

impl ItemEventOut<'_> {
    pub(super) fn write(&self, out: &mut BytesMut) {
        event_start(out, self.kind, self.sequence_number, 128);
        out.put(b",\"output_index\":");
        write_u64(out, self.output_index as u64);
        out.put(b",\"item\":");
        self.item.write(out);
        out.put(EVENT_END);
    }
}

/// A content part as written inside an event.
pub(super) trait PartOut: Serialize {
    fn write_part(&self, out: &mut BytesMut);
}

impl PartOut for OutputTextOut<'_> {
    fn write_part(&self, out: &mut BytesMut) {
        self.write(out);
    }
}

impl PartOut for ReasoningTextOut<'_> {
    fn write_part(&self, out: &mut BytesMut) {
        self.write(out);
    }
}

impl<P: PartOut> PartEventOut<'_, P> {
    pub(super) fn write(&self, out: &mut BytesMut) {
        event_start(out, self.kind, self.sequence_number, 128);
        item_fields(out, self.item_id, self.output_index);
        out.put(b",\"content_index\":");
        write_u64(out, u64::from(self.content_index));
        out.put(b",\"part\":");
        self.part.write_part(out);
        out.put(EVENT_END);
    }
}

impl ArgsDeltaOut<'_> {
    pub(super) fn write(&self, out: &mut BytesMut) {
        event_start(out, self.kind, self.sequence_number, self.delta.len() + 96);
        item_fields(out, self.item_id, self.output_index);
        out.put(b",\"delta\":");
        write_str(out, self.delta);
        out.put(EVENT_END);
    }
}

impl ArgsDoneOut<'_> {
    pub(super) fn write(&self, out: &mut BytesMut) {
        let more = self.name.len() + self.arguments.len() + 96;
        event_start(out, self.kind, self.sequence_number, more);
        item_fields(out, self.item_id, self.output_index);
        out.put(b",\"name\":");
        write_str(out, self.name);
        out.put(b",\"arguments\":");
        write_str(out, self.arguments);
        out.put(EVENT_END);
    }
}

impl ErrorEventOut<'_> {
    pub(super) fn write(&self, out: &mut BytesMut) {
        event_start(
            out,
            self.kind,
            self.sequence_number,
            self.message.len() + 64,
        );
        out.put(b",\"code\":");
        write_str(out, self.code);
        out.put(b",\"message\":");
        write_str(out, self.message);
        out.put(b",\"param\":null");
        out.put(EVENT_END);
    }
}

/// A lifecycle event (`response.created`, `.in_progress`, `.completed`, `.incomplete`, `.failed`)
/// around the `response` object already written.
pub(super) fn lifecycle_event(out: &mut BytesMut, name: &str, seq: u64, response: &[u8]) {
    out.reserve(response.len() + 2 * name.len() + 64);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: {\"type\":\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\",\"sequence_number\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b",\"response\":");
    out.extend_from_slice(response);
    out.extend_from_slice(b"}\n\n");
}

#[cfg(test)]
mod writer_tests {
    use super::*;
    use crate::protocol::responses::write::ItemBody;
    use crate::protocol::stream::write_event;
    use proptest::prelude::*;

    // The serde forms of the four content-part text events `PartTextOut` writes.

    #[derive(Serialize)]
    struct TextDeltaOut<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        content_index: u32,
        delta: &'a str,
        logprobs: [(); 0],
    }

    #[derive(Serialize)]
    struct TextDoneOut<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        content_index: u32,
        text: &'a str,
        logprobs: [(); 0],
    }

    #[derive(Serialize)]
    struct ReasoningDeltaOut<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        content_index: u32,
        delta: &'a str,
    }

    #[derive(Serialize)]
    struct ReasoningDoneOut<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        content_index: u32,
        text: &'a str,
    }

    fn text() -> impl Strategy<Value = String> {
        "(\\PC|[\"\\\\\n\\x01\\x7f]){0,12}"
    }

    /// `write` against `write_event` of the serde derive.
    fn same<T: Serialize>(
        kind: &str,
        event: &T,
        write: impl Fn(&T, &mut BytesMut),
    ) -> Result<(), TestCaseError> {
        let mut written = BytesMut::new();
        write(event, &mut written);
        let mut oracle = BytesMut::new();
        write_event(&mut oracle, Some(kind), event);
        prop_assert_eq!(
            String::from_utf8_lossy(&written),
            String::from_utf8_lossy(&oracle)
        );
        Ok(())
    }

    proptest! {
        /// Every event is byte for byte what `write_event` makes of its serde form.
        #[test]
        fn events_are_the_serde_form(
            seq in any::<u64>(),
            at in any::<usize>(),
            id in text(),
            a in text(),
            b in text(),
            status in prop_oneof![Just("in_progress"), Just("completed"), Just("incomplete")],
            full in any::<bool>(),
            encrypted in proptest::option::of(text()),
        ) {
            let kind = "response.x";
            let part_text = |field, logprobs| PartTextOut { kind, sequence_number: seq, item_id: &id, output_index: at, content_index: 0, field, text: &a, logprobs };
            same(kind, &TextDeltaOut { kind, sequence_number: seq, item_id: &id, output_index: at, content_index: 0, delta: &a, logprobs: [] }, |_, out| part_text("delta", true).write(out))?;
            same(kind, &TextDoneOut { kind, sequence_number: seq, item_id: &id, output_index: at, content_index: 0, text: &a, logprobs: [] }, |_, out| part_text("text", true).write(out))?;
            same(kind, &ReasoningDeltaOut { kind, sequence_number: seq, item_id: &id, output_index: at, content_index: 0, delta: &a }, |_, out| part_text("delta", false).write(out))?;
            same(kind, &ReasoningDoneOut { kind, sequence_number: seq, item_id: &id, output_index: at, content_index: 0, text: &a }, |_, out| part_text("text", false).write(out))?;
            same(kind, &ArgsDeltaOut { kind, sequence_number: seq, item_id: &id, output_index: at, delta: &a }, |e, out| e.write(out))?;
            same(kind, &ArgsDoneOut { kind, sequence_number: seq, item_id: &id, output_index: at, name: &a, arguments: &b }, |e, out| e.write(out))?;
            same("error", &ErrorEventOut { kind: "error", sequence_number: seq, code: &a, message: &b, param: None }, |e, out| e.write(out))?;
            same(kind, &PartEventOut { kind, sequence_number: seq, item_id: &id, output_index: at, content_index: 0, part: OutputTextOut::new(&a) }, |e, out| e.write(out))?;
            same(kind, &PartEventOut { kind, sequence_number: seq, item_id: &id, output_index: at, content_index: 0, part: ReasoningTextOut::new(&a) }, |e, out| e.write(out))?;
            let bodies = [
                ItemBody::Message { text: a.clone() },
                ItemBody::Reasoning { text: a.clone(), encrypted: encrypted.clone() },
                ItemBody::FunctionCall { call_id: a.clone(), name: b.clone(), arguments: a.clone() },
            ];
            for body in &bodies {
                same(kind, &ItemEventOut { kind, sequence_number: seq, output_index: at, item: body.out(&id, status, full) }, |e, out| e.write(out))?;
            }
        }
    }
}
