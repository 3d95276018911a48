//! Simulated inference servers: what a vLLM or llama.cpp replica looks like from outside, in simulated
//! milliseconds.
//!
//! Each replica listens on its own 127.0.0.1 port and serves `POST /v1/chat/completions` (OpenAI JSON or
//! SSE stream), `GET /metrics` (vLLM names), `GET /slots` (llama.cpp's shape), `GET /v1/models` and
//! `GET /health`. The model of one replica:
//!
//! - **Tokens**: the prompt is rendered as `role NUL content NUL` per message (a chat template that only
//!   appends, so a later turn's prompt starts with the earlier turn's prompt and reply); one token is
//!   `BYTES_PER_TOKEN` bytes of it.
//! - **Prefix cache**: the rendered prompt is cut into blocks of `block_tokens` tokens, each block hashed
//!   together with the hash of the block before it (vLLM's automatic prefix caching). A request reuses the
//!   leading blocks present in the cache; the cache holds `cache_blocks` blocks and evicts the least
//!   recently used. Blocks are added when a request is scheduled (its prompt) and when it finishes (prompt
//!   plus the reply, as the next turn will render it).
//! - **Slots and queue**: `slots` requests run at once (vLLM's `max_num_seqs`, llama.cpp's `--parallel`);
//!   the others wait in a FIFO queue.
//! - **Time**: once scheduled, a request takes `overhead_us + uncached tokens × prefill_us_per_token`
//!   before its first token, then `decode_us_per_token` per output token, sent `chunk_tokens` at a time.
//!   Slots are independent: running requests do not slow each other down.
//!
//! A replica can be killed (listener closed, every connection and request dropped) and started again on
//! the same port with an empty cache, as a crashed and restarted server would be.

use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Bytes of rendered prompt per simulated token (a rough average for English text and code).
pub const BYTES_PER_TOKEN: usize = 4;

/// The knobs of one replica.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Requests running at once; the rest queue (FIFO).
    pub slots: usize,
    /// Tokens per cache block (vLLM's default block size is 16).
    pub block_tokens: usize,
    /// Blocks the prefix cache holds before it evicts the least recently used.
    pub cache_blocks: usize,
    /// Prefill cost of one uncached prompt token.
    pub prefill_us_per_token: f64,
    /// Decode cost of one output token.
    pub decode_us_per_token: f64,
    /// Output tokens per streamed chunk.
    pub chunk_tokens: usize,
    /// Fixed cost of scheduling one request (tokenizing, first forward pass set-up).
    pub overhead_us: u64,
}

type Body = BoxBody<Bytes, Infallible>;

/// Counters of one replica since the last [`Replica::reset`].
#[derive(Debug, Clone, Default)]
pub struct ReplicaStats {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    /// Requests that found every slot taken and waited.
    pub queued: u64,
    /// Longest queue seen.
    pub max_waiting: usize,
}

/// The LRU prefix cache of one replica: block hash → present.
struct PrefixCache {
    blocks: lru::LruCache<u64, ()>,
}

impl PrefixCache {
    fn new(capacity: usize) -> Self {
        PrefixCache {
            blocks: lru::LruCache::new(
                NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN),
            ),
        }
    }

    /// Leading blocks of `hashes` present in the cache (each one found becomes the most recently used).
    fn lookup(&mut self, hashes: &[u64]) -> usize {
        hashes
            .iter()
            .take_while(|hash| self.blocks.get(*hash).is_some())
            .count()
    }

    fn insert(&mut self, hashes: &[u64]) {
        for &hash in hashes {
            self.blocks.put(hash, ());
        }
    }
}

/// The chained hashes of the full blocks of `rendered` (a partial last block is not cached, as in vLLM).
pub fn block_hashes(rendered: &[u8], block_tokens: usize) -> Vec<u64> {
    let block_bytes = block_tokens.max(1) * BYTES_PER_TOKEN;
    let mut previous = 0u64;
    rendered
        .chunks_exact(block_bytes)
        .map(|block| {
            previous = xxhash_rust::xxh3::xxh3_64_with_seed(block, previous);
            previous
        })
        .collect()
}

/// Appends one message as the chat template renders it.
pub fn render_message(out: &mut Vec<u8>, role: &str, content: &str) {
    out.extend_from_slice(role.as_bytes());
    out.push(0);
    out.extend_from_slice(content.as_bytes());
    out.push(0);
}

pub fn tokens_of(rendered_len: usize) -> usize {
    rendered_len.div_ceil(BYTES_PER_TOKEN)
}

struct State {
    cache: PrefixCache,
    stats: ReplicaStats,
}

/// One simulated replica.
pub struct Replica {
    pub index: usize,
    pub port: u16,
    cfg: SimConfig,
    state: Mutex<State>,
    slots: Semaphore,
    running: AtomicUsize,
    waiting: AtomicUsize,
    /// Prompt tokens and hits ever (never reset), for the `/metrics` counters.
    queries_total: AtomicU64,
    hits_total: AtomicU64,
    /// `Some` while the replica is up; cancelling it kills the listener, connections and requests.
    life: Mutex<Option<CancellationToken>>,
}

impl Replica {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts replica `index` on `port` (0: any free port; the bound one is in `port`).
    pub async fn start(index: usize, port: u16, cfg: SimConfig) -> std::io::Result<Arc<Replica>> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let replica = Arc::new(Replica {
            index,
            port,
            state: Mutex::new(State {
                cache: PrefixCache::new(cfg.cache_blocks),
                stats: ReplicaStats::default(),
            }),
            slots: Semaphore::new(cfg.slots),
            cfg,
            running: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            queries_total: AtomicU64::new(0),
            hits_total: AtomicU64::new(0),
            life: Mutex::new(None),
        });
        replica.serve(listener);
        Ok(replica)
    }

    fn serve(self: &Arc<Self>, listener: TcpListener) {
        let token = CancellationToken::new();
        *self.life.lock().unwrap_or_else(PoisonError::into_inner) = Some(token.clone());
        let replica = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let replica = Arc::clone(&replica);
                let token = token.clone();
                tokio::spawn(async move {
                    let request_token = token.clone();
                    let service = service_fn(move |request| {
                        let replica = Arc::clone(&replica);
                        let token = request_token.clone();
                        async move { Ok::<_, Infallible>(replica.handle(request, token).await) }
                    });
                    let connection = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    // Dropping the connection on kill closes the socket under every request on it.
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = connection => {}
                    }
                });
            }
        });
    }

    /// Kills the replica: the port refuses connections, connections in use are closed, running and
    /// queued requests vanish. Returns false when it was already down.
    pub fn kill(&self) -> bool {
        let token = self
            .life
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match token {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Starts a killed replica again on its port, with an empty cache (a restarted server).
    pub async fn restart(self: &Arc<Self>) -> std::io::Result<()> {
        // The killed accept loop lets go of the port when it next runs: retry the bind for a while.
        let mut attempt = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) if attempt >= 200 => return Err(e),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        self.lock().cache = PrefixCache::new(self.cfg.cache_blocks);
        self.serve(listener);
        Ok(())
    }

    /// Empties the cache and the counters (between benchmark cells).
    pub fn reset(&self) {
        let mut state = self.lock();
        state.cache = PrefixCache::new(self.cfg.cache_blocks);
        state.stats = ReplicaStats::default();
    }

    /// Zeroes the counters and keeps the cache (after warming it up).
    pub fn reset_stats(&self) {
        self.lock().stats = ReplicaStats::default();
    }

    pub fn stats(&self) -> ReplicaStats {
        self.lock().stats.clone()
    }

    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        token: CancellationToken,
    ) -> Response<Body> {
        let path = request.uri().path().to_owned();
        match (request.method(), path.as_str()) {
            (&Method::POST, "/v1/chat/completions") => {
                let Ok(collected) = request.into_body().collect().await else {
                    return error(StatusCode::BAD_REQUEST, "could not read the body");
                };
                match serde_json::from_slice::<ChatRequest>(&collected.to_bytes()) {
                    Ok(chat) => self.chat(chat, token),
                    Err(e) => error(StatusCode::BAD_REQUEST, &format!("bad request body: {e}")),
                }
            }
            (&Method::GET, "/metrics") => text(self.metrics(), "text/plain; version=0.0.4"),
            (&Method::GET, "/slots") => text(self.slots_json(), "application/json"),
            (&Method::GET, "/v1/models") => text(
                r#"{"object":"list","data":[{"id":"sim","object":"model","owned_by":"fleet"}]}"#
                    .to_owned(),
                "application/json",
            ),
            (&Method::GET, "/health") => text(r#"{"status":"ok"}"#.to_owned(), "application/json"),
            _ => error(StatusCode::NOT_FOUND, "unknown route"),
        }
    }

    /// vLLM's metric names (both KV-cache usage names: `kv_cache_usage_perc` since v0.10, the older
    /// `gpu_cache_usage_perc`), and llama.cpp's for the same gauges.
    fn metrics(&self) -> String {
        let running = self.running.load(Ordering::Relaxed);
        let waiting = self.waiting.load(Ordering::Relaxed);
        let usage = {
            let state = self.lock();
            state.cache.blocks.len() as f64 / self.cfg.cache_blocks.max(1) as f64
        };
        let queries = self.queries_total.load(Ordering::Relaxed);
        let hits = self.hits_total.load(Ordering::Relaxed);
        let mut out = String::new();
        for (name, kind, value) in [
            ("vllm:num_requests_running", "gauge", running.to_string()),
            ("vllm:num_requests_waiting", "gauge", waiting.to_string()),
            ("vllm:kv_cache_usage_perc", "gauge", format!("{usage:.4}")),
            ("vllm:gpu_cache_usage_perc", "gauge", format!("{usage:.4}")),
            (
                "vllm:prefix_cache_queries_total",
                "counter",
                queries.to_string(),
            ),
            ("vllm:prefix_cache_hits_total", "counter", hits.to_string()),
        ] {
            let family = name.trim_end_matches("_total");
            out.push_str(&format!(
                "# TYPE {family} {kind}\n{name}{{model_name=\"sim\"}} {value}\n"
            ));
        }
        for (name, value) in [
            ("llamacpp:requests_processing", running.to_string()),
            ("llamacpp:requests_deferred", waiting.to_string()),
            ("llamacpp:kv_cache_usage_ratio", format!("{usage:.4}")),
        ] {
            out.push_str(&format!("# TYPE {name} gauge\n{name} {value}\n"));
        }
        out
    }

    /// llama.cpp's `GET /slots`: one object per slot, `is_processing` true for the busy ones.
    fn slots_json(&self) -> String {
        let running = self.running.load(Ordering::Relaxed);
        let slots: Vec<serde_json::Value> = (0..self.cfg.slots)
            .map(|id| serde_json::json!({"id": id, "id_task": -1, "n_ctx": 32768, "is_processing": id < running}))
            .collect();
        serde_json::Value::Array(slots).to_string()
    }

    fn chat(self: &Arc<Self>, chat: ChatRequest, token: CancellationToken) -> Response<Body> {
        let mut rendered = Vec::new();
        for message in &chat.messages {
            render_message(&mut rendered, &message.role, &message.content);
        }
        let output_tokens = chat.max_tokens.unwrap_or(64).max(1);
        let (sender, receiver) = mpsc::channel::<Bytes>(16);
        let replica = Arc::clone(self);
        let stream = chat.stream;
        let work = async move {
            let reply = replica
                .generate(rendered, output_tokens, stream, &sender)
                .await;
            if !stream {
                let body = serde_json::json!({
                    "id": "chatcmpl-sim", "object": "chat.completion", "created": 1_700_000_000,
                    "model": "sim",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                        "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": output_tokens,
                        "total_tokens": output_tokens}
                });
                let _ = sender.send(Bytes::from(body.to_string())).await;
            }
        };
        tokio::spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = work => {}
            }
        });
        let frames = tokio_stream::wrappers::ReceiverStream::new(receiver)
            .map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
        let content_type = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        // Headers go at once (as vLLM's streaming responses do); the first event after queue and prefill.
        let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        response
    }

    /// Queue, prefill, decode. Streams events into `sender` when `stream`; returns the reply's text.
    async fn generate(
        &self,
        rendered: Vec<u8>,
        output_tokens: u64,
        stream: bool,
        sender: &mpsc::Sender<Bytes>,
    ) -> String {
        let hashes = block_hashes(&rendered, self.cfg.block_tokens);
        let prompt_tokens = tokens_of(rendered.len());
        let queued = self.slots.available_permits() == 0;
        let waiting_now = self.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        let permit = {
            // Gives the slot back and the counters their values if the request is dropped (kill).
            let _waiting = Decrement(&self.waiting);
            self.slots.acquire().await
        };
        let Ok(_permit) = permit else {
            return String::new();
        };
        self.running.fetch_add(1, Ordering::Relaxed);
        let _running = Decrement(&self.running);
        let cached_tokens = {
            let mut state = self.lock();
            let hit_blocks = state.cache.lookup(&hashes);
            state.cache.insert(&hashes);
            let cached = (hit_blocks * self.cfg.block_tokens).min(prompt_tokens);
            let stats = &mut state.stats;
            stats.requests += 1;
            stats.prompt_tokens += prompt_tokens as u64;
            stats.cached_tokens += cached as u64;
            stats.queued += u64::from(queued);
            stats.max_waiting = stats.max_waiting.max(waiting_now);
            cached
        };
        self.queries_total
            .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        self.hits_total
            .fetch_add(cached_tokens as u64, Ordering::Relaxed);
        let prefill_us = self.cfg.overhead_us as f64
            + (prompt_tokens - cached_tokens) as f64 * self.cfg.prefill_us_per_token;
        let started = Instant::now();
        sleep_until(started, prefill_us).await;
        // The reply: pseudo-words drawn from the prompt's hash, so each conversation's replies differ.
        let mut rng =
            crate::workload::Rng::new(hashes.last().copied().unwrap_or(rendered.len() as u64));
        let mut reply = String::new();
        let mut sent_tokens = 0u64;
        let mut elapsed_us = prefill_us;
        while sent_tokens < output_tokens {
            let n = (self.cfg.chunk_tokens as u64).min(output_tokens - sent_tokens);
            let piece = rng.text(n as usize * BYTES_PER_TOKEN);
            if stream {
                let delta = if sent_tokens == 0 {
                    serde_json::json!({"role": "assistant", "content": piece})
                } else {
                    serde_json::json!({"content": piece})
                };
                if sender.send(chunk(&delta, None)).await.is_err() {
                    return reply;
                }
            }
            reply.push_str(&piece);
            sent_tokens += n;
            elapsed_us += n as f64 * self.cfg.decode_us_per_token;
            sleep_until(started, elapsed_us).await;
        }
        if stream {
            let _ = sender
                .send(chunk(&serde_json::json!({}), Some("length")))
                .await;
            let _ = sender.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
        }
        // The reply's KV stays cached too: the next turn renders prompt + this reply.
        let mut full = rendered;
        render_message(&mut full, "assistant", &reply);
        let hashes = block_hashes(&full, self.cfg.block_tokens);
        self.lock().cache.insert(&hashes);
        reply
    }
}

/// Sleeps until `us` microseconds after `start` (not after now: timer lateness does not add up).
async fn sleep_until(start: Instant, us: f64) {
    let deadline = start + Duration::from_micros(us.max(0.0) as u64);
    tokio::time::sleep_until(deadline.into()).await;
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn chunk(delta: &serde_json::Value, finish_reason: Option<&str>) -> Bytes {
    let chunk = serde_json::json!({
        "id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "sim",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    });
    Bytes::from(format!("data: {chunk}\n\n"))
}

fn text(body: String, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(body))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error",
        "param": null, "code": null}});
    let mut response = text(body.to_string(), "application/json");
    *response.status_mut() = status;
    response
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_turn_reuses_the_earlier_turns_blocks() {
        let mut first = Vec::new();
        render_message(&mut first, "system", &"s".repeat(200));
        render_message(&mut first, "user", &"u".repeat(90));
        let mut second = first.clone();
        render_message(&mut second, "assistant", &"a".repeat(70));
        render_message(&mut second, "user", &"v".repeat(30));
        let a = block_hashes(&first, 16);
        let b = block_hashes(&second, 16);
        assert_eq!(a.len(), first.len() / 64);
        assert_eq!(&b[..a.len()], &a[..]);
        let mut cache = PrefixCache::new(1000);
        cache.insert(&a);
        assert_eq!(cache.lookup(&b), a.len());
        // A different first block changes every hash after it.
        let mut other = Vec::new();
        render_message(&mut other, "system", &"t".repeat(200));
        assert_eq!(cache.lookup(&block_hashes(&other, 16)), 0);
    }

    #[test]
    fn the_cache_evicts_the_least_recently_used() {
        let mut cache = PrefixCache::new(3);
        cache.insert(&[1, 2, 3]);
        assert_eq!(cache.lookup(&[1]), 1);
        cache.insert(&[4]);
        assert_eq!(cache.lookup(&[2]), 0);
        assert_eq!(cache.lookup(&[1, 3, 4]), 3);
    }
}
