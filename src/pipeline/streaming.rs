//! A relayed upstream stream as the client's response body: bytes as the upstream sends them, and at the
//! end (or when the client leaves) the request recorded, a complete answer stored in the response cache
//! and the Responses store.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;

use crate::protocol::Protocol;
use crate::routing::instances::InFlightGuard;
use crate::state::AppState;
use crate::upstream::relay::{Relay, StreamEnd};

use super::RequestCtx;
use super::reply::sse_response;

/// Relay an upstream stream: `first` is already in hand; the rest follows as the upstream sends it.
/// A fault after the first byte ends the stream with a protocol-correct error event (and without the
/// success sentinel) and counts against the instance. The request is recorded when the stream's last
/// bytes are handed to the connection — a client that closes right after reading the terminal event
/// got the whole answer — or, if the client leaves first, as a 499 with what it was sent (marked
/// incomplete). The in-flight guard lives as long as the stream.
pub fn stream(
    first: Bytes,
    relay: Relay,
    ctx: RequestCtx,
    guard: InFlightGuard,
    state: AppState,
    provider: &'static str,
    backend: &str,
) -> Response {
    let streaming = Streaming {
        relay,
        ctx,
        guard,
        state,
        provider,
        first: Some(first),
        done: false,
    };
    let body = futures_util::stream::unfold(streaming, |mut streaming| async move {
        if streaming.done {
            return None;
        }
        let next = match streaming.first.take() {
            Some(first) => Ok(Some(first)),
            None => streaming.relay.next_output().await,
        };
        match next {
            Ok(Some(bytes)) => {
                streaming.store_response().await;
                if let Some(end) = streaming.relay.end().cloned() {
                    streaming.ended(end);
                }
                Some((Ok::<Bytes, std::io::Error>(bytes), streaming))
            }
            Ok(None) => {
                let end = streaming
                    .relay
                    .end()
                    .cloned()
                    .unwrap_or(StreamEnd::Complete);
                streaming.ended(end);
                None
            }
            Err(fault) => {
                tracing::warn!(id = %streaming.ctx.id, fault = %fault, "stream ended by an upstream fault");
                let event = streaming
                    .relay
                    .error_event(&format!("upstream stream failed: {fault}"));
                streaming.failed();
                Some((Ok(event), streaming))
            }
        }
    });
    sse_response(Body::from_stream(body), backend)
}

/// A relayed stream in flight: the relay, the request's record and the instance it holds.
struct Streaming {
    relay: Relay,
    ctx: RequestCtx,
    guard: InFlightGuard,
    state: AppState,
    provider: &'static str,
    first: Option<Bytes>,
    /// The record is closed: nothing more is sent.
    done: bool,
}

impl Streaming {
    /// A Responses answer is stored before the bytes with its final event leave, so the client's
    /// next turn finds it.
    /// (Boxed: rare, and inline its Redis call would grow every stream's state.)
    async fn store_response(&mut self) {
        if self.ctx.responses.is_some()
            && let Some(last) = self.relay.completed_response().map(Bytes::copy_from_slice)
        {
            Box::pin(super::responses::store_final(
                &self.state,
                &mut self.ctx,
                last,
            ))
            .await;
        }
    }

    /// The stream's last bytes are in hand: record it as it ended.
    fn ended(&mut self, end: StreamEnd) {
        match end {
            StreamEnd::Complete => {
                self.done = true;
                self.close(true);
            }
            StreamEnd::UpstreamError(message) => {
                tracing::warn!(id = %self.ctx.id, error = %message, "upstream ended the stream with an error");
                self.failed();
            }
        }
    }

    /// The upstream failed mid-stream: count it against the instance and record the request.
    fn failed(&mut self) {
        self.done = true;
        let instance = self.guard.instance();
        if let Some(transition) = instance.breaker.on_failure(std::time::Instant::now()) {
            self.state.instance_transition(instance, transition);
        }
        self.ctx.error = Some("upstream_stream_error");
        self.close(false);
    }

    fn close(&mut self, complete: bool) {
        self.ctx.usage = self.relay.facts.usage.or(self.ctx.usage);
        if self.ctx.usage.is_none()
            && let Some(admission) = &self.ctx.admission
            && admission.counts_tokens()
        {
            // Streams without usage are counted from their text when limits count tokens.
            self.ctx.usage = Some(crate::protocol::Usage {
                input_tokens: admission.estimated_tokens(),
                output_tokens: crate::tokens::count(self.relay.text()),
                ..Default::default()
            });
        }
        self.ctx.streamed = Some((
            self.provider,
            self.relay.facts.events,
            self.relay.facts.bytes,
        ));
        let cache_key = self.ctx.cache_key.take();
        if self.ctx.request.is_some() || cache_key.is_some() {
            let summary = self.relay.summary();
            if complete && let Some(key) = cache_key {
                match self.relay.completed_response() {
                    // A Responses stream's final `response` object is the complete answer.
                    Some(last) => super::cached::store_json(
                        &self.state,
                        key,
                        super::cached::Stored {
                            body: Bytes::copy_from_slice(last),
                            backend: self.ctx.backend.as_deref().unwrap_or(""),
                            protocol: Protocol::Responses,
                            known_answer: true,
                        },
                    ),
                    None => super::cached::store_stream(&self.state, key, &summary, &self.ctx),
                }
            }
            if self.ctx.request.is_some() {
                self.ctx.reply = Some(summary);
            }
        }
        self.ctx.incomplete = !complete;
        self.ctx.finish();
    }
}

impl Drop for Streaming {
    /// The client left before the stream ended: a 499 with what it was sent, marked incomplete.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.ctx.status = 499;
        self.ctx.error = Some("client_disconnected");
        self.ctx.usage = self.relay.facts.usage.or(self.ctx.usage);
        self.ctx.streamed = Some((
            self.provider,
            self.relay.facts.events,
            self.relay.facts.bytes,
        ));
        if self.ctx.request.is_some() {
            self.ctx.reply = Some(self.relay.summary());
        }
        self.ctx.incomplete = true;
        self.ctx.finish();
    }
}
