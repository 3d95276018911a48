//! `RequestCtx`: what one request did (route, attempts, timings, usage), finished exactly once —
//! when the response (or its stream) ends, or when the client goes away (Drop). Finishing is the one
//! place that updates metrics and stats, queues the request-log record and writes the access line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{ApiRequest, Endpoint, Message, Part, ResponseSummary, Role, Text, Usage};
use crate::state::{AppState, Snapshot};
use crate::telemetry::request_log::{LogMessage, LogRecord, LogRole, LogToolCall};

pub struct RequestCtx {
    pub state: AppState,
    pub snapshot: Arc<Snapshot>,
    pub id: String,
    pub endpoint: Endpoint,
    pub started: Instant,
    /// The model the client asked for.
    pub model: Option<String>,
    pub backend: Option<String>,
    pub instance: Option<String>,
    pub stream: bool,
    pub status: u16,
    /// Time the upstream took until its response headers (or body, when not streaming).
    pub upstream_wait: Duration,
    /// Time until the first byte of the body was ready for the client.
    pub ttft: Option<Duration>,
    pub usage: Option<Usage>,
    pub error: Option<&'static str>,
    pub attempts: u32,
    /// Kept only when the request log is on.
    pub request: Option<Arc<ApiRequest>>,
    pub request_body: Option<Bytes>,
    pub reply: Option<ResponseSummary>,
    /// Stream counters for `streaming_*` metrics: (provider, events, bytes).
    pub streamed: Option<(&'static str, u64, u64)>,
    /// What the limiter charged up front, reconciled with the real usage at the end.
    pub admission: Option<crate::limits::Admission>,
    /// Set on a cache miss: where a finished stream is stored.
    pub cache_key: Option<crate::cache::CacheKey>,
    /// The reply is logged as far as it went: the stream was cut or the client left before its end.
    pub incomplete: bool,
    /// A Responses answer to keep in the conversation store once complete.
    pub responses: Option<Box<PendingResponse>>,
    finished: bool,
}

impl RequestCtx {
    pub fn new(
        state: &AppState,
        snapshot: Arc<Snapshot>,
        id: String,
        endpoint: Endpoint,
        started: Instant,
    ) -> RequestCtx {
        RequestCtx {
            state: state.clone(),
            snapshot,
            id,
            endpoint,
            started,
            model: None,
            backend: None,
            instance: None,
            stream: false,
            status: 0,
            upstream_wait: Duration::ZERO,
            ttft: None,
            usage: None,
            error: None,
            attempts: 0,
            request: None,
            request_body: None,
            reply: None,
            streamed: None,
            admission: None,
            cache_key: None,
            incomplete: false,
            responses: None,
            finished: false,
        }
    }

    /// Move the record out (into a response stream); `self` is left finished so it records nothing.
    pub(crate) fn detach(&mut self) -> RequestCtx {
        let detached = RequestCtx {
            state: self.state.clone(),
            snapshot: Arc::clone(&self.snapshot),
            id: std::mem::take(&mut self.id),
            endpoint: self.endpoint,
            started: self.started,
            model: self.model.take(),
            backend: self.backend.take(),
            instance: self.instance.take(),
            stream: self.stream,
            status: self.status,
            upstream_wait: self.upstream_wait,
            ttft: self.ttft,
            usage: self.usage,
            error: self.error,
            attempts: self.attempts,
            request: self.request.take(),
            request_body: self.request_body.take(),
            reply: self.reply.take(),
            streamed: self.streamed.take(),
            admission: self.admission.take(),
            cache_key: self.cache_key.take(),
            incomplete: self.incomplete,
            responses: self.responses.take(),
            finished: false,
        };
        self.finished = true;
        detached
    }

    /// A model label from a bounded set: a configured alias or backend name, else `other`.
    fn model_label(&self) -> &str {
        match self.model.as_deref() {
            Some(model)
                if self.snapshot.config.models.contains_key(model)
                    || self.snapshot.config.backend_index(model).is_some() =>
            {
                model
            }
            _ => "other",
        }
    }

    /// Record the request once: metrics, stats, request log, access line.
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let latency = self.started.elapsed();
        let metrics = self.state.metrics();
        metrics.http_request("POST", self.endpoint.path(), self.status, latency);
        let backend = self.backend.as_deref().unwrap_or("");
        if let Some(ttft) = self.ttft {
            metrics.overhead(ttft.saturating_sub(self.upstream_wait));
            if !backend.is_empty() {
                metrics.ttft(backend, ttft);
            }
        }
        let usage = self.usage.unwrap_or_default();
        if !backend.is_empty() && (usage.input_tokens > 0 || usage.output_tokens > 0) {
            metrics.tokens(
                backend,
                self.model_label(),
                usage.input_tokens,
                usage.output_tokens,
            );
        }
        if let Some((provider, events, bytes)) = self.streamed {
            metrics.stream_finished(provider, events, bytes, latency);
        }
        self.state.stats().record(backend, self.status, latency);
        if let Some(admission) = self.admission.take()
            && admission.counts_tokens()
        {
            let actual = match self.usage {
                Some(usage) => usage.input_tokens + usage.output_tokens,
                // A success without reported usage keeps its estimate; a failure is refunded.
                None if self.status < 400 => admission.estimated_tokens(),
                None => 0,
            };
            let limiter = std::sync::Arc::clone(&self.snapshot.limiter);
            tokio::spawn(async move { limiter.reconcile(&admission, actual).await });
        }
        if self.snapshot.config.logging.access_log {
            tracing::info!(
                target: "access",
                id = %self.id,
                route = self.endpoint.path(),
                model = self.model.as_deref().unwrap_or("-"),
                backend = self.backend.as_deref().unwrap_or("-"),
                status = self.status,
                stream = self.stream,
                latency_ms = latency.as_secs_f64() * 1000.0,
                ttft_ms = self.ttft.map(|d| d.as_secs_f64() * 1000.0),
                input_tokens = usage.input_tokens,
                output_tokens = usage.output_tokens,
                attempts = self.attempts,
                error = self.error,
                "request"
            );
        }
        // Last: the record takes the context's texts.
        if self.request.is_some() {
            self.log_record(latency, usage);
        }
    }

    fn log_record(&mut self, latency: Duration, usage: Usage) {
        let Some(request) = self.request.take() else {
            return;
        };
        let reply = self.reply.take().unwrap_or_default();
        // By now the pipeline has let go of the request, so its texts move into the record (a request
        // still shared elsewhere is copied first).
        let request = Arc::try_unwrap(request).unwrap_or_else(|shared| (*shared).clone());
        let chat = match request {
            ApiRequest::Chat(chat) => Ok(chat),
            ApiRequest::Responses(responses) => Ok(responses.chat),
            other => Err(other),
        };
        let (system, messages) = match chat {
            Ok(chat) => {
                let system = match chat.system.len() {
                    0 => None,
                    1 => chat.system.into_iter().next(),
                    _ => Some(chat.system.join("\n").into()),
                };
                let messages = chat.messages.into_iter().map(log_message).collect();
                (system, messages)
            }
            Err(other) => (
                None,
                vec![LogMessage::text(LogRole::User, other.all_input_text())],
            ),
        };
        // Only the `openai` layout writes the request's other fields; sharegpt needs no re-parse.
        let wants_params = self.snapshot.config.request_log.format
            == crate::telemetry::request_log::LogFormat::OpenAi;
        let mut request_params = self
            .request_body
            .take()
            .filter(|_| wants_params)
            .and_then(|body| {
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body).ok()
            })
            .unwrap_or_default();
        for key in ["messages", "system", "api_key", "key", "authorization"] {
            request_params.shift_remove(key);
        }
        if self.endpoint == Endpoint::Responses {
            // The conversation is the record's messages.
            for key in ["input", "instructions"] {
                request_params.shift_remove(key);
            }
        }
        self.state.request_log().log(LogRecord {
            id: std::mem::take(&mut self.id),
            timestamp: jiff::Timestamp::now(),
            model: self.model.take().unwrap_or_default(),
            backend: self.backend.take().unwrap_or_default(),
            instance: self.instance.take(),
            status: self.status,
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            latency_ms: latency.as_secs_f64() * 1000.0,
            ttft_ms: self.ttft.map(|d| d.as_secs_f64() * 1000.0),
            system,
            messages,
            reply: reply.text,
            reasoning: (!reply.reasoning.is_empty()).then_some(reply.reasoning),
            reply_tool_calls: reply
                .tool_calls
                .into_iter()
                .map(|call| LogToolCall {
                    id: call.id,
                    name: call.name,
                    arguments: call.arguments,
                })
                .collect(),
            request_params,
            incomplete: self.incomplete,
        });
    }
}

/// One message of the request as logged: its text (parts joined), tool calls and the call it answers.
fn log_message(message: Message) -> LogMessage {
    let role = match message.role {
        Role::System => LogRole::System,
        Role::User => LogRole::User,
        Role::Assistant => LogRole::Assistant,
        Role::Tool => LogRole::Tool,
    };
    let mut tool_calls = Vec::new();
    let mut tool_call_id = None;
    // One text part moves as it is (a body's text stays a slice of it); several are joined as
    // `Message::text` joins them.
    let mut text = Text::default();
    let mut add = |piece: Text| {
        if text.is_empty() {
            text = piece;
        } else {
            text.push_str("\n");
            text.push_str(&piece);
        }
    };
    for part in message.parts {
        match part {
            Part::Text(piece) => add(piece),
            Part::ToolResult(result) => {
                tool_call_id = Some(result.tool_call_id);
                add(result.content);
            }
            Part::ToolCall(call) => tool_calls.push(LogToolCall {
                id: call.id,
                name: call.name,
                arguments: call.arguments,
            }),
            _ => {}
        }
    }
    LogMessage {
        role,
        text,
        tool_calls,
        tool_call_id,
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        if !self.finished {
            // The client went away before the response was complete (nginx's 499).
            self.status = 499;
            self.error.get_or_insert("client_disconnected");
            self.incomplete = true;
            self.finish();
        }
    }
}

/// What an answer to a Responses request stores once it is complete (`pipeline::responses` fills and
/// stores it).
pub struct PendingResponse {
    /// The whole conversation's input items (the request body they are in when the request
    /// continued nothing).
    pub(super) input_items: crate::protocol::responses::StoredInput,
    /// The client key's name (`None` on an open gateway): only that key may read or continue it.
    pub(super) owner: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ToolCall, ToolResult};

    /// What a logged message says: the message's joined text, its tool calls, the call it answers.
    #[test]
    fn logged_messages_keep_text_calls_and_answers() {
        let text = |t: &str| Part::Text(t.into());
        let call = Part::ToolCall(ToolCall {
            id: "c1".into(),
            name: "f".into(),
            arguments: "{}".into(),
        });
        let result = Part::ToolResult(ToolResult {
            tool_call_id: "c1".into(),
            content: "42".into(),
            is_error: false,
        });
        for (role, parts) in [
            (Role::User, vec![text("hi")]),
            (Role::User, vec![text(""), text("a"), text(""), text("b")]),
            (Role::Assistant, vec![text("thinking aloud"), call.clone()]),
            (Role::Assistant, vec![call]),
            (Role::Tool, vec![result, text("more")]),
            (Role::System, vec![]),
        ] {
            let message = Message {
                role,
                parts,
                name: None,
            };
            let logged = log_message(message.clone());
            assert_eq!(logged.text, message.text(), "{message:?}");
            let calls: Vec<_> = message
                .parts
                .iter()
                .filter_map(|p| match p {
                    Part::ToolCall(c) => Some((c.id.clone(), c.name.clone(), c.arguments.clone())),
                    _ => None,
                })
                .collect();
            let logged_calls: Vec<_> = logged
                .tool_calls
                .iter()
                .map(|c| (c.id.clone(), c.name.clone(), c.arguments.clone()))
                .collect();
            assert_eq!(logged_calls, calls);
            let answers = message.parts.iter().rev().find_map(|p| match p {
                Part::ToolResult(r) => Some(r.tool_call_id.clone()),
                _ => None,
            });
            assert_eq!(logged.tool_call_id, answers);
        }
    }
}
