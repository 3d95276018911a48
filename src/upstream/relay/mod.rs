//! Stream relay: reads the upstream SSE body and yields client-ready bytes event by event, never
//! holding more than the current unfinished event. Same-protocol streams are forwarded with only the
//! chunk `id` rewritten to the request id; the idle timeout bounds the gap between upstream reads.

use std::pin::Pin;
use std::time::Duration;

use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use memchr::memmem::Finder;

use crate::error::describe;
use crate::protocol::json_patch;
use crate::protocol::responses::stream::{ResponsesPassThrough, Terminal};
use crate::protocol::sse::{SseDecoder, SseEvent};
use crate::protocol::stream::exact::{ExactChunk, exact_chunk};
use crate::protocol::stream::{StreamConverter, StreamTap, push_piece};
use crate::protocol::{FinishReason, ResponseSummary, Usage};

mod observe;

pub(crate) use observe::usage_after_key;
use observe::{after_plain_id, error_message, observe_openai_chunk};

use super::call::Fault;
use super::client::Response;

/// The next data chunk of a response body (trailers are skipped).
async fn next_data(body: &mut super::pool::Body) -> Option<Result<Bytes, super::pool::BodyError>> {
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(error) => return Some(Err(error)),
        }
    }
}

/// How each upstream event becomes client bytes.
pub(crate) enum Transform {
    /// OpenAI in, OpenAI out: rewrite the chunk `id` to the request id, keep everything else.
    OpenAiPassThrough { id_json: String },
    /// Anthropic in, Anthropic out: forward verbatim.
    AnthropicPassThrough,
    /// Different protocols: an incremental converter, bytes in, bytes out.
    Convert(Box<StreamConverter>),
    /// Responses in, Responses out: forward, with the `response.id` of lifecycle events rewritten.
    ResponsesPassThrough(Box<ResponsesPassThrough>),
}

/// What the relay learned about the stream, for logs and token accounting.
#[derive(Debug, Default, Clone)]
pub(crate) struct StreamFacts {
    pub events: u64,
    pub bytes: u64,
    pub text: String,
    pub usage: Option<Usage>,
    pub finish_reason: Option<FinishReason>,
}

/// How a relayed stream ended, once its last bytes are in hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// The stream's terminal success event (`[DONE]`, `message_stop`) is in the output: the request is
    /// complete, whatever the client does next.
    Complete,
    /// The upstream ended the stream with its own error event, relayed (or converted) to the client;
    /// no success sentinel follows it.
    UpstreamError(String),
}

/// Where a relayed stream is: what may still happen to it.
enum Phase {
    /// Reading the upstream; nothing handed out yet, so an upstream whose very first event is an
    /// error is still a fault the attempt loop can fail over from.
    Opening,
    /// Reading the upstream; output was handed out (it may have reached the client).
    Streaming,
    /// The upstream's last event is in the output: nothing more is read; what is ready goes out, then
    /// the clean end. [`Relay::end`] says how it ended.
    Finished(StreamEnd),
    /// A fault met after some output was ready: that output goes out first, the fault on the next call.
    Failing(Fault),
    /// Ended by a fault (reported): nothing more comes.
    Closed,
}

impl Phase {
    /// The upstream is still read.
    fn reading(&self) -> bool {
        matches!(self, Phase::Opening | Phase::Streaming)
    }
}

/// One upstream event stream on its way to the client, event by event; its [`Phase`] says what may
/// still happen.
pub(crate) struct Relay {
    upstream: super::pool::Body,
    decoder: SseDecoder,
    transform: Transform,
    idle: Duration,
    phase: Phase,
    /// Upstream events forwarded by a pass-through transform.
    forwarded: u64,
    /// A pass-through upstream's very first event was an error: its message.
    first_error: Option<String>,
    /// Full decode of pass-through events, only when the request log needs the assembled reply.
    tap: Option<StreamTap>,
    /// Assemble the reply text of pass-through streams (token accounting, cache storage).
    collect_text: bool,
    /// The exact chunk reader's cache of an OpenAI stream's repeated leading fields.
    exact_prefix: Vec<u8>,
    /// The idle timer, armed on the first wait and reused for the whole stream.
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    pub facts: StreamFacts,
}

impl Relay {
    pub fn new(
        response: Response,
        transform: Transform,
        idle: Duration,
        tap: Option<StreamTap>,
        collect_text: bool,
    ) -> Relay {
        Relay {
            upstream: response.into_body(),
            decoder: SseDecoder::default(),
            transform,
            idle,
            phase: Phase::Opening,
            forwarded: 0,
            first_error: None,
            tap,
            collect_text,
            exact_prefix: Vec::new(),
            idle_timer: None,
            facts: StreamFacts::default(),
        }
    }

    /// The next client-ready bytes; `Ok(None)` at a clean end. After a fault the relay is ended.
    ///
    /// An upstream whose very first event is an error event (it answered 200, then refused) is a
    /// fault while nothing has been handed out, so the attempt loop can still fail over.
    pub(crate) async fn next_output(&mut self) -> Result<Option<Bytes>, Fault> {
        let opening = matches!(self.phase, Phase::Opening);
        let output = self.next_client_bytes().await;
        if opening {
            let first_error = match &self.transform {
                Transform::Convert(converter) => converter.first_event_error(),
                Transform::ResponsesPassThrough(pass) => pass.first_error(),
                _ => self.first_error.as_deref(),
            };
            if let Some(message) = first_error {
                let fault =
                    Fault::Broken(format!("upstream stream began with an error: {message}"));
                self.phase = Phase::Closed;
                return Err(fault);
            }
        }
        if let Ok(Some(bytes)) = &output {
            if let Phase::Opening = self.phase {
                self.phase = Phase::Streaming;
            }
            self.count_delivered(bytes);
        }
        output
    }

    /// Events and bytes that reach the client (the metrics count what the client got, also for
    /// converted streams and gateway-written `[DONE]`/error events).
    fn count_delivered(&mut self, bytes: &[u8]) {
        self.facts.bytes += bytes.len() as u64;
        // Pass-through events are counted as they are forwarded; converted output is counted here:
        // our encoders end every SSE event with a blank line (`\n\n`, never CRLF).
        if let Transform::Convert(_) = self.transform {
            self.facts.events += BLANK_LINE.find_iter(bytes).count() as u64;
        }
    }

    /// The next upstream chunk, or `Err(())` when none came within `idle`. One timer serves the whole
    /// stream: it is re-armed only when it fires early (data came since it was set), not per chunk, so
    /// a chunk costs a clock read instead of a timer registration.
    async fn next_upstream_chunk(
        &mut self,
    ) -> Result<Option<Result<Bytes, super::pool::BodyError>>, ()> {
        let deadline = tokio::time::Instant::now() + self.idle;
        let timer = self
            .idle_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            tokio::select! {
                biased;
                chunk = next_data(&mut self.upstream) => return Ok(chunk),
                () = timer.as_mut() => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(());
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        }
    }

    /// The next upstream chunk that is already there, without waiting: `None` when none is.
    ///
    /// A body read in place (`http://`, [`super::h1`]) hands over what its buffer and socket hold at
    /// once. hyper's client (`https://`) hands a body over one chunk per task switch, so an upstream
    /// that sent many events in one packet would otherwise cost one client write each: yielding once
    /// lets its connection task decode the next chunk it already holds. Nothing waits for data.
    async fn ready_upstream_chunk(
        &mut self,
    ) -> Option<Option<Result<Bytes, super::pool::BodyError>>> {
        if !self.upstream.reads_in_place() {
            tokio::task::yield_now().await;
        }
        futures_util::FutureExt::now_or_never(next_data(&mut self.upstream))
    }

    /// The upstream sent its last event: take the end of its body if it is already there (one yield,
    /// never a wait), so its connection goes back to the pool instead of closing.
    async fn read_upstream_end(&mut self) {
        use hyper::body::Body as _;
        for _ in 0..2 {
            if self.upstream.is_end_stream() {
                return;
            }
            // The end may be a packet behind the last event: one yield lets the runtime see it.
            tokio::task::yield_now().await;
            match futures_util::FutureExt::now_or_never(next_data(&mut self.upstream)) {
                Some(Some(Ok(_))) => {}
                _ => return,
            }
        }
    }

    async fn next_client_bytes(&mut self) -> Result<Option<Bytes>, Fault> {
        if let Phase::Failing(_) = self.phase
            && let Phase::Failing(fault) = std::mem::replace(&mut self.phase, Phase::Closed)
        {
            return Err(fault);
        }
        let mut out = BytesMut::new();
        let mut coalesced = 0usize;
        loop {
            if !self.phase.reading() {
                return Ok((!out.is_empty()).then(|| out.freeze()));
            }
            let next = if out.is_empty() {
                self.next_upstream_chunk().await
            } else if coalesced >= COALESCE_CHUNKS || out.len() >= COALESCE_BYTES {
                return Ok(Some(out.freeze()));
            } else {
                match self.ready_upstream_chunk().await {
                    Some(next) => Ok(next),
                    None => return Ok(Some(out.freeze())),
                }
            };
            coalesced += 1;
            match next {
                Err(_) => {
                    self.phase = Phase::Closed;
                    return Err(Fault::Timeout(self.idle));
                }
                Ok(Some(Err(error))) => {
                    let fault =
                        Fault::Broken(format!("upstream stream failed: {}", describe(&error)));
                    return self.deliver_then(out, fault);
                }
                Ok(Some(Ok(chunk))) => {
                    if let Transform::Convert(converter) = &mut self.transform {
                        if let Err(error) = converter.push(&chunk, &mut out) {
                            let fault = Fault::Broken(error.to_string());
                            return self.deliver_then(out, fault);
                        }
                        if converter.upstream_finished() {
                            let _ = converter.finish(&mut out);
                            self.end_converted();
                            self.read_upstream_end().await;
                            return Ok((!out.is_empty()).then(|| out.freeze()));
                        }
                        continue;
                    }
                    self.decoder.feed_bytes(chunk);
                    if let Err(fault) = self.drain(&mut out) {
                        return self.deliver_then(out, fault);
                    }
                    if let Phase::Finished(_) = self.phase {
                        // The upstream's last event is in `out`; what may follow it is not relayed.
                        self.read_upstream_end().await;
                    }
                }
                Ok(None) => {
                    if let Transform::Convert(converter) = &mut self.transform {
                        // A last event without its blank line may still be the upstream's own end.
                        let flushed = converter.flush(&mut out);
                        // EOF without the upstream's own end: a cut, unless nothing more was due.
                        if flushed.is_ok() && converter.upstream_finished() {
                            let _ = converter.finish(&mut out);
                            self.end_converted();
                            return Ok((!out.is_empty()).then(|| out.freeze()));
                        }
                        self.take_summary();
                        return self.deliver_then(out, cut());
                    }
                    if let Some(event) = self.decoder.finish() {
                        self.forward(&event, &mut out);
                    }
                    if self.phase.reading() {
                        let openai = matches!(self.transform, Transform::OpenAiPassThrough { .. });
                        if let Transform::ResponsesPassThrough(pass) = &self.transform
                            && pass.terminal() == Terminal::Failed
                        {
                            // The upstream's own error event, relayed, ended it.
                            self.phase = Phase::Finished(StreamEnd::UpstreamError(
                                "the upstream's response failed".to_owned(),
                            ));
                        } else if openai && self.facts.finish_reason.is_some() {
                            // The answer was finished; only the upstream's `[DONE]` was missing.
                            out.extend_from_slice(b"data: [DONE]\n\n");
                            self.facts.events += 1;
                            self.phase = Phase::Finished(StreamEnd::Complete);
                        } else {
                            return self.deliver_then(out, cut());
                        }
                    }
                    return Ok((!out.is_empty()).then(|| out.freeze()));
                }
            }
        }
    }

    /// A converted stream's upstream ended it: by its success end, or by its own error event.
    fn end_converted(&mut self) {
        self.take_summary();
        self.phase = match &self.transform {
            Transform::Convert(converter) => Phase::Finished(match converter.upstream_error() {
                Some(message) => StreamEnd::UpstreamError(message.to_owned()),
                None => StreamEnd::Complete,
            }),
            _ => Phase::Closed,
        };
    }

    /// How the stream ended, once its last bytes have been handed out: the caller records the request
    /// then, not when the client next asks for more (a client that closes right after reading the
    /// stream's terminal event got the whole answer).
    pub fn end(&self) -> Option<&StreamEnd> {
        match &self.phase {
            Phase::Finished(end) => Some(end),
            _ => None,
        }
    }

    /// The stream ends with `fault`: output already produced goes out first, and the fault is reported
    /// on the next call.
    fn deliver_then(&mut self, out: BytesMut, fault: Fault) -> Result<Option<Bytes>, Fault> {
        if out.is_empty() {
            self.phase = Phase::Closed;
            return Err(fault);
        }
        self.phase = Phase::Failing(fault);
        Ok(Some(out.freeze()))
    }

    fn drain(&mut self, out: &mut BytesMut) -> Result<(), Fault> {
        loop {
            match self.decoder.next_event() {
                Ok(Some(event)) => {
                    self.forward(&event, out);
                    if !self.phase.reading() {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(error) => {
                    return Err(Fault::Broken(error.to_string()));
                }
            }
        }
    }

    fn forward(&mut self, event: &SseEvent, out: &mut BytesMut) {
        if self.forwarded == 0 {
            self.first_error = error_message(event);
        }
        self.forwarded += 1;
        if !matches!(self.transform, Transform::Convert(_)) && !event.is_comment() {
            self.facts.events += 1;
        }
        if matches!(self.transform, Transform::ResponsesPassThrough(_)) {
            self.forward_responses(event, out);
            return;
        }
        // Most OpenAI chunks are read once, exactly, for everything below (facts, text, the tap);
        // the rest take the searches and parsers.
        let exact = match &self.transform {
            Transform::OpenAiPassThrough { .. } if event.data.first() == Some(&b'{') => {
                exact_chunk(&event.data, &mut self.exact_prefix)
            }
            _ => None,
        };
        if let Some(tap) = &mut self.tap {
            match &exact {
                Some(chunk) => tap.observe_exact(chunk),
                None => tap.observe(event),
            }
        }
        match &self.transform {
            Transform::OpenAiPassThrough { .. } => self.forward_openai(event, exact.as_ref(), out),
            Transform::Convert(_) | Transform::ResponsesPassThrough(_) => {}
            Transform::AnthropicPassThrough => self.forward_anthropic(event, out),
        }
    }

    /// A Responses pass-through event: forwarded by its own relay, which knows the lifecycle.
    fn forward_responses(&mut self, event: &SseEvent, out: &mut BytesMut) {
        let Transform::ResponsesPassThrough(pass) = &mut self.transform else {
            return;
        };
        pass.forward(event, out);
        // The stream ends at the upstream's final lifecycle event (an `error` event may still be
        // followed by its `response.failed`).
        if pass.finished() {
            self.phase = Phase::Finished(match pass.terminal() {
                Terminal::Completed => StreamEnd::Complete,
                Terminal::Failed | Terminal::Open => {
                    StreamEnd::UpstreamError("the upstream's response failed".to_owned())
                }
            });
        }
        if let Some(summary) = pass.summary() {
            self.facts.usage = summary.usage;
            self.facts.finish_reason = summary.finish_reason;
        }
    }

    /// An OpenAI pass-through event: its facts noted (from the exact read when there is one) and the
    /// chunk forwarded with the gateway's id.
    fn forward_openai(
        &mut self,
        event: &SseEvent,
        exact: Option<&ExactChunk<'_>>,
        out: &mut BytesMut,
    ) {
        let Transform::OpenAiPassThrough { id_json } = &self.transform else {
            return;
        };
        if event.is_done() {
            self.phase = Phase::Finished(StreamEnd::Complete);
            out.extend_from_slice(&event.raw);
            return;
        }
        if event.data.first() != Some(&b'{') {
            out.extend_from_slice(&event.raw);
            return;
        }
        match exact {
            // An exact chunk carries no error and no usage.
            Some(chunk) => {
                if chunk.finish.is_some() {
                    self.facts.finish_reason = chunk.finish;
                }
                if self.collect_text {
                    push_piece(&mut self.facts.text, &chunk.text);
                }
            }
            None => {
                if observe_openai_chunk(&event.data, self.collect_text, &mut self.facts) {
                    let message =
                        error_message(event).unwrap_or_else(|| "upstream stream error".to_owned());
                    self.phase = Phase::Finished(StreamEnd::UpstreamError(message));
                }
            }
        }
        if event.event.is_none()
            && let Some(rest) = after_plain_id(&event.data)
        {
            // What `set_fields` + `encode` write for it, without the copy between them.
            out.reserve(rest.len() + id_json.len() + 16);
            out.extend_from_slice(b"data: {\"id\":");
            out.extend_from_slice(id_json.as_bytes());
            out.extend_from_slice(rest);
            out.extend_from_slice(b"\n\n");
        } else {
            match json_patch::set_fields(&event.data, &[("id", id_json)]) {
                Ok(patched) => crate::protocol::sse::encode(event.event.as_deref(), &patched, out),
                Err(_) => out.extend_from_slice(&event.raw),
            }
        }
    }

    /// An Anthropic pass-through event: forwarded as it came; `message_stop` and `error` end the stream.
    fn forward_anthropic(&mut self, event: &SseEvent, out: &mut BytesMut) {
        match event.event.as_deref() {
            Some("message_stop") => {
                self.phase = Phase::Finished(StreamEnd::Complete);
                self.facts.finish_reason.get_or_insert(FinishReason::Stop);
            }
            Some("error") => {
                let message =
                    error_message(event).unwrap_or_else(|| "upstream stream error".to_owned());
                self.phase = Phase::Finished(StreamEnd::UpstreamError(message));
            }
            _ => {}
        }
        out.extend_from_slice(&event.raw);
    }

    /// The answer's text so far: the converter's or the tap's when there is one (they collect it
    /// anyway), else what `collect_text` gathered.
    pub fn text(&self) -> &str {
        if let Transform::Convert(converter) = &self.transform {
            return &converter.summary().text;
        }
        if let Some(tap) = &self.tap {
            return &tap.summary().text;
        }
        if let Transform::ResponsesPassThrough(pass) = &self.transform
            && let Some(summary) = pass.summary()
        {
            return &summary.text;
        }
        &self.facts.text
    }

    /// A Responses client's final `response` object, once it went by (converted or passed through).
    pub(crate) fn completed_response(&self) -> Option<&[u8]> {
        match &self.transform {
            Transform::Convert(converter) => converter.completed_response(),
            Transform::ResponsesPassThrough(pass) => pass.completed_response(),
            _ => None,
        }
    }

    /// The assembled reply (text, reasoning, tool calls, usage) as far as the stream went.
    pub fn summary(&self) -> ResponseSummary {
        if let Transform::Convert(converter) = &self.transform {
            return converter.summary().clone();
        }
        if let Some(tap) = &self.tap {
            return tap.summary().clone();
        }
        if let Transform::ResponsesPassThrough(pass) = &self.transform
            && let Some(summary) = pass.summary()
        {
            return summary.clone();
        }
        ResponseSummary {
            text: self.facts.text.clone(),
            usage: self.facts.usage,
            finish_reason: self.facts.finish_reason,
            ..ResponseSummary::default()
        }
    }

    /// Copy the converter's usage and finish reason into the stream facts (its text is read from it:
    /// [`Relay::text`]).
    fn take_summary(&mut self) {
        if let Transform::Convert(converter) = &self.transform {
            let summary = converter.summary();
            self.facts.usage = summary.usage.or(self.facts.usage);
            self.facts.finish_reason = summary.finish_reason.or(self.facts.finish_reason);
        }
    }

    /// The protocol-correct event that ends a stream after an upstream fault.
    pub(crate) fn error_event(&mut self, message: &str) -> Bytes {
        let mut out = BytesMut::new();
        match &mut self.transform {
            Transform::Convert(converter) => converter.abort(message, &mut out),
            Transform::OpenAiPassThrough { .. } => {
                let body = crate::protocol::openai::error_body(
                    message,
                    "server_error",
                    None,
                    Some("upstream_error"),
                );
                // No `[DONE]`: that is the success sentinel, and this answer was cut short.
                crate::protocol::sse::encode(None, body.to_string().as_bytes(), &mut out);
            }
            Transform::AnthropicPassThrough => {
                let body = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}});
                crate::protocol::sse::encode(Some("error"), body.to_string().as_bytes(), &mut out);
            }
            Transform::ResponsesPassThrough(pass) => pass.error_events(message, &mut out),
        }
        self.count_delivered(&out);
        out.freeze()
    }
}

/// Bounds on what one client write gathers from chunks that were already there.
const COALESCE_CHUNKS: usize = 64;
const COALESCE_BYTES: usize = 64 * 1024;

// Searchers built once: building a `memmem` searcher costs more than running it on a chunk.
static BLANK_LINE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));

fn cut() -> Fault {
    Fault::Broken("upstream closed the stream before it finished".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::client::HttpClient;
    use tokio::sync::oneshot;

    /// An upstream that sends `first` events in one write, then the end once `release` fires.
    async fn upstream(first: usize, release: oneshot::Receiver<()>) -> Response {
        let frame =
            |name: &str| Bytes::from(format!("event: {name}\ndata: {{\"type\":\"{name}\"}}\n\n"));
        let mut chunks: Vec<Result<Bytes, std::io::Error>> = Vec::new();
        chunks.extend((0..first).map(|_| Ok(frame("ping"))));
        let head = futures_util::stream::iter(chunks);
        let tail = futures_util::stream::once(async move {
            let _ = release.await;
            Ok(frame("message_stop"))
        });
        let body = std::sync::Arc::new(std::sync::Mutex::new(Some(
            futures_util::StreamExt::chain(head, tail),
        )));
        let app = axum::Router::new().route(
            "/v1/messages",
            axum::routing::post(move || {
                let stream = body.lock().unwrap().take().unwrap();
                async move {
                    http::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(axum::body::Body::from_stream(stream))
                        .unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let request = http::Request::post(format!("http://{addr}/v1/messages"))
            .body(Bytes::from_static(b"{}"))
            .unwrap();
        HttpClient::new().unwrap().send(request).await.unwrap()
    }

    #[tokio::test]
    async fn events_that_arrived_together_go_out_together_and_later_ones_are_not_waited_for() {
        let (release, released) = oneshot::channel();
        let response = upstream(20, released).await;
        let mut relay = Relay::new(
            response,
            Transform::AnthropicPassThrough,
            Duration::from_secs(10),
            None,
            false,
        );
        // The 20 events were written at once: one client write carries them all, and the relay does
        // not wait for the event still to come.
        let first = relay.next_output().await.unwrap().unwrap();
        assert_eq!(BLANK_LINE.find_iter(&first).count(), 20, "{first:?}");
        release.send(()).unwrap();
        let rest = relay.next_output().await.unwrap().unwrap();
        assert!(rest.starts_with(b"event: message_stop\n"), "{rest:?}");
        assert!(relay.next_output().await.unwrap().is_none());
        assert_eq!(relay.facts.events, 21);
    }

    /// A converted stream stops reading at the upstream's own last event; the end of the body that came
    /// with it is recognised, so the upstream connection carries the next stream instead of closing.
    #[tokio::test]
    async fn a_converted_stream_gives_its_upstream_connection_back() {
        use crate::protocol::Protocol;
        use crate::protocol::stream::{StreamConverter, StreamOptions};
        use std::sync::atomic::{AtomicUsize, Ordering};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_| async {
                        let chunk = |delta: &str, finish: &str| {
                            format!(
                                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
                            )
                        };
                        let frames = [
                            chunk(r#"{"role":"assistant","content":"Hi"}"#, "null"),
                            chunk("{}", r#""stop""#),
                            "data: [DONE]\n\n".to_owned(),
                        ]
                        .map(|text| {
                            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                Bytes::from(text),
                            ))
                        });
                        let body =
                            http_body_util::StreamBody::new(futures_util::stream::iter(frames));
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", "text/event-stream")
                                .body(body)
                                .unwrap(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let client = HttpClient::new().unwrap();
        for _ in 0..3 {
            let request = http::Request::post(format!("http://{addr}/v1/chat/completions"))
                .body(Bytes::from_static(b"{}"))
                .unwrap();
            let response = client.send(request).await.unwrap();
            let options = StreamOptions {
                id: "req-1".into(),
                model: "m".into(),
                include_usage: false,
                input_tokens: 1,
                ..Default::default()
            };
            let converter = StreamConverter::new(Protocol::OpenAi, Protocol::Anthropic, options);
            let mut relay = Relay::new(
                response,
                Transform::Convert(Box::new(converter)),
                Duration::from_secs(10),
                None,
                false,
            );
            let mut out = Vec::new();
            while let Some(bytes) = relay.next_output().await.unwrap() {
                out.extend_from_slice(&bytes);
            }
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("event: message_stop"), "{text}");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one upstream connection for three streams"
        );
    }
}
