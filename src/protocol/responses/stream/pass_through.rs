//! The pass-through observer for backends that speak Responses natively: events forwarded as received
//! with the gateway's response id, the final answer read once for the summary and the store.

use std::borrow::Cow;

use bytes::BytesMut;
use serde::Deserialize;
use serde_json::Value;

use crate::protocol::ResponseSummary;
use crate::protocol::json_patch::set_fields;
use crate::protocol::responses::response::response_from_value;
use crate::protocol::sse::{self, SseEvent};

use super::decode::LifecycleIn;
use super::events::{ErrorEventOut, lifecycle_event};

/// How a pass-through Responses stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Terminal {
    /// Not yet.
    Open,
    /// `response.completed` or `response.incomplete`.
    Completed,
    /// `response.failed` or `error`.
    Failed,
}

#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
}

/// Same protocol in and out (a backend that speaks Responses): events are forwarded as received, except
/// that the `response.id` of lifecycle events becomes the gateway's response id. The final
/// `response.completed` is read once for the summary (logs, usage) and kept for the conversation store;
/// deltas are not parsed.
#[derive(Debug)]
pub(crate) struct ResponsesPassThrough {
    id_json: String,
    /// Events forwarded so far: the next `sequence_number` for an event of the gateway's own.
    forwarded: u64,
    /// The last lifecycle `response` object (id rewritten); a fault's `response.failed` repeats it.
    last_response: Option<Vec<u8>>,
    completed: Option<Vec<u8>>,
    summary: Option<ResponseSummary>,
    terminal: Terminal,
    /// A lifecycle end (`response.completed`, `.incomplete`, `.failed`) went by.
    finished: bool,
    first_error: Option<String>,
}

impl ResponsesPassThrough {
    /// `response_id` is the gateway's id for the answer.
    pub fn new(response_id: &str) -> Self {
        ResponsesPassThrough {
            id_json: crate::protocol::json_patch::json_string(response_id),
            forwarded: 0,
            last_response: None,
            completed: None,
            summary: None,
            terminal: Terminal::Open,
            finished: false,
            first_error: None,
        }
    }

    /// True once the upstream's final lifecycle event (`response.completed`, `.incomplete` or
    /// `.failed`) went by: nothing after it changes the answer.
    pub fn finished(&self) -> bool {
        self.finished
    }

    pub fn terminal(&self) -> Terminal {
        self.terminal
    }

    /// The message of an error that was the upstream's very first event (nothing was answered).
    pub(crate) fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// The final `response` object, once `response.completed` (or `.incomplete`) passed.
    pub(crate) fn completed_response(&self) -> Option<&[u8]> {
        self.completed.as_deref()
    }

    /// What the final `response` says (text, reasoning, tool calls, usage, finish).
    pub fn summary(&self) -> Option<&ResponseSummary> {
        self.summary.as_ref()
    }

    /// Forward one upstream event to `out`.
    pub fn forward(&mut self, event: &SseEvent, out: &mut BytesMut) {
        let first = self.forwarded == 0;
        if !event.is_comment() {
            self.forwarded += 1;
        }
        let named;
        let kind = match event.event.as_deref() {
            Some(name) => name,
            None => {
                named =
                    crate::protocol::fast_decode::<TypeOnly<'_>>(&event.data).and_then(|t| t.kind);
                named.as_deref().unwrap_or_default()
            }
        };
        match kind {
            "response.created"
            | "response.in_progress"
            | "response.queued"
            | "response.completed"
            | "response.incomplete"
            | "response.failed" => {
                self.finished |= matches!(
                    kind,
                    "response.completed" | "response.incomplete" | "response.failed"
                );
                let Some((data, response)) = self.with_our_id(&event.data) else {
                    // Not an object we can read: forwarded as it came, still the end it says it is.
                    match kind {
                        "response.completed" | "response.incomplete" => {
                            self.terminal = Terminal::Completed;
                        }
                        "response.failed" => self.terminal = Terminal::Failed,
                        _ => {}
                    }
                    out.extend_from_slice(&event.raw);
                    return;
                };
                sse::encode(event.event.as_deref(), &data, out);
                match kind {
                    "response.completed" | "response.incomplete" => {
                        self.terminal = Terminal::Completed;
                        if let Ok(value) = serde_json::from_slice::<Value>(&response) {
                            self.summary =
                                Some(ResponseSummary::from_response(&response_from_value(&value)));
                        }
                        self.completed = Some(response);
                    }
                    "response.failed" => {
                        self.terminal = Terminal::Failed;
                        if first {
                            self.first_error = Some(failure_message(&event.data));
                        }
                        self.last_response = Some(response);
                    }
                    _ => self.last_response = Some(response),
                }
            }
            "error" => {
                self.terminal = Terminal::Failed;
                if first {
                    self.first_error = Some(failure_message(&event.data));
                }
                out.extend_from_slice(&event.raw);
            }
            _ => out.extend_from_slice(&event.raw),
        }
    }

    /// The event's data and its `response` object, with the response's id made ours.
    fn with_our_id(&self, data: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let lifecycle: LifecycleIn<'_> = serde_json::from_slice(data).ok()?;
        let response = set_fields(
            lifecycle.response?.get().as_bytes(),
            &[("id", &self.id_json)],
        )
        .ok()?;
        let response_text = std::str::from_utf8(&response).ok()?;
        let data = set_fields(data, &[("response", response_text)]).ok()?;
        Some((data, response))
    }

    /// The events that end the stream after a fault: `error`, then `response.failed` (when the
    /// upstream had announced the response).
    pub(crate) fn error_events(&mut self, message: &str, out: &mut BytesMut) {
        let seq = self.forwarded;
        ErrorEventOut {
            kind: "error",
            sequence_number: seq,
            code: "server_error",
            message,
            param: None,
        }
        .write(out);
        if let Some(response) = &self.last_response {
            let error = serde_json::json!({"code": "server_error", "message": message}).to_string();
            if let Ok(failed) = set_fields(response, &[("status", "\"failed\""), ("error", &error)])
            {
                lifecycle_event(out, "response.failed", seq + 1, &failed);
            }
        }
        self.forwarded += 2;
        self.terminal = Terminal::Failed;
    }
}

/// The message of an `error` or `response.failed` event.
fn failure_message(data: &[u8]) -> String {
    let value: Value = serde_json::from_slice(data).unwrap_or_default();
    let message = value
        .pointer("/response/error/message")
        .or_else(|| value.pointer("/error/message"))
        .or_else(|| value.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("upstream response failed");
    message
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::events;
    use super::*;

    #[test]
    fn pass_through_rewrites_only_the_response_id() {
        let upstream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_up\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[],\"extra\":1}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_up\",\"output_index\":0,\"content_index\":0,\"delta\":\"hi\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_up\",\"status\":\"completed\",\"output\":[{\"type\":\"message\",\"id\":\"msg_up\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"hi\"}]}],\"usage\":{\"input_tokens\":2,\"output_tokens\":1,\"total_tokens\":3}}}\n\n",
        );
        let mut decoder = crate::protocol::sse::SseDecoder::default();
        decoder.feed(upstream.as_bytes());
        let mut pass = ResponsesPassThrough::new("resp_gw");
        let mut out = BytesMut::new();
        while let Ok(Some(event)) = decoder.next_event() {
            pass.forward(&event, &mut out);
        }
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(!text.contains("resp_up"), "{text}");
        assert!(text.contains("\"extra\":1"));
        assert!(text.contains("\"item_id\":\"msg_up\""));
        assert_eq!(pass.terminal(), Terminal::Completed);
        let summary = pass.summary().unwrap();
        assert_eq!(summary.text, "hi");
        assert_eq!(summary.usage.map(|u| u.input_tokens), Some(2));
        let completed: Value = serde_json::from_slice(pass.completed_response().unwrap()).unwrap();
        assert_eq!(completed["id"], "resp_gw");
        let mut more = BytesMut::new();
        pass.error_events("boom", &mut more);
        let events = events(&more);
        assert_eq!(events[0]["sequence_number"], 3);
    }
}
