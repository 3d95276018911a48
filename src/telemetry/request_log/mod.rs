//! Request logs: one JSON line per completed request, in hourly files `<dir>/YYYYMMDD_HH.jsonl`.
//!
//! The request path only calls [`RequestLogger::log`], which moves the record into a bounded queue and
//! returns: it never blocks and never touches the disk. A dedicated writer thread (`writer.rs`) redacts,
//! serializes (`sharegpt.rs` or `openai_layout.rs`, per `format`) and appends; when the queue is full the
//! record is dropped and counted through the drop hook (wired to `request_log_dropped_total` by the
//! caller). [`RequestLogger::shutdown`] drains everything that was accepted before it returns, so a clean
//! shutdown loses nothing.
//!
//! The file hour is the record's `timestamp` in the logger's time zone (the process's local zone, which
//! `TZ` decides, unless a zone is injected), so a record always lands in the file its own timestamp names.

mod openai_layout;
mod sharegpt;
#[cfg(test)]
mod tests;
mod writer;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crossbeam_channel::Sender;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use writer::WriterOptions;

use crate::protocol::Text;

/// Applied by the writer thread to every piece of logged text (messages, reply, reasoning, tool call
/// arguments, string request parameters), e.g. to mask keys or personal data.
/// Text without a match comes back borrowed, so the common case copies nothing. None where nothing is
/// redacted: texts taken from the request body are then written as the body wrote them, unread.
pub(crate) type Redactor = Option<Arc<RedactFn>>;

/// The function behind a [`Redactor`].
pub(crate) type RedactFn = dyn for<'a> Fn(&'a str) -> Cow<'a, str> + Send + Sync;

/// A [`Redactor`] from a function (the bound lets a closure's signature be inferred).
pub(crate) fn redactor(
    f: impl for<'a> Fn(&'a str) -> Cow<'a, str> + Send + Sync + 'static,
) -> Redactor {
    Some(Arc::new(f))
}

/// Text kept as it is (the OpenAI layout's redaction where none is configured).
fn keep_text(text: &str) -> Cow<'_, str> {
    Cow::Borrowed(text)
}

/// Called once per record dropped because the queue was full (or the logger was shut down).
pub(crate) type DropHook = Arc<dyn Fn() + Send + Sync>;

/// A redactor that keeps text as it is.
pub fn no_redaction() -> Redactor {
    None
}

/// The `request_log` config section.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLogConfig {
    /// Off by default: logs hold prompts and replies.
    pub enabled: bool,
    /// Directory of the hourly files; created on first write.
    pub dir: PathBuf,
    /// Line layout.
    pub format: LogFormat,
    /// Fraction of requests logged, 0..=1; sampling is deterministic (every 1/rate-th record).
    pub sample_rate: f64,
    /// Records that may wait for the writer; beyond this they are dropped, never waited for.
    pub queue_capacity: usize,
    /// Bytes of text the waiting records may hold (a coding agent's record is its whole conversation,
    /// hundreds of KB). Beyond this, new requests wait for the writer before their body is decoded:
    /// memory stays bounded and no record is dropped for it.
    pub queue_bytes: usize,
}

impl Default for RequestLogConfig {
    fn default() -> Self {
        RequestLogConfig {
            enabled: false,
            dir: PathBuf::from("data/requests_responses"),
            format: LogFormat::default(),
            sample_rate: 1.0,
            queue_capacity: 10_000,
            queue_bytes: 16 << 20,
        }
    }
}

/// A `request_log` value outside its allowed range.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum RequestLogConfigError {
    #[error("request_log.sample_rate must be between 0 and 1, got {0}")]
    SampleRate(f64),
    #[error("request_log.queue_capacity must be at least 1, got {0}")]
    QueueCapacity(usize),
    #[error("request_log.queue_bytes must be at least 1, got {0}")]
    QueueBytes(usize),
}

impl RequestLogConfig {
    /// Checks the ranges serde cannot express; the config loader calls this once.
    pub(crate) fn validate(&self) -> Result<(), RequestLogConfigError> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(RequestLogConfigError::SampleRate(self.sample_rate));
        }
        if self.queue_capacity == 0 {
            return Err(RequestLogConfigError::QueueCapacity(self.queue_capacity));
        }
        if self.queue_bytes == 0 {
            return Err(RequestLogConfigError::QueueBytes(self.queue_bytes));
        }
        Ok(())
    }
}

/// Line layout of the request log.
#[derive(Deserialize, Serialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `{"id",…,"conversations":[{"from","value"}]}`: ready for fine-tuning tools (seed 001's stated format).
    #[default]
    #[serde(rename = "sharegpt")]
    ShareGpt,
    /// The request fields plus `messages` with the assistant reply appended (seed 001's actual layout).
    #[serde(rename = "openai")]
    OpenAi,
}

/// Who wrote a message, in protocol-neutral terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogRole {
    System,
    User,
    Assistant,
    Tool,
}

/// A tool call made by the assistant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model produced them (a JSON text, not parsed).
    pub arguments: Text,
}

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMessage {
    pub role: LogRole,
    /// The text content (parts concatenated); empty for an assistant turn that only calls tools.
    pub text: Text,
    /// Tool calls of an assistant turn.
    pub tool_calls: Vec<LogToolCall>,
    /// For a `Tool` message: the call it answers.
    pub tool_call_id: Option<String>,
}

impl LogMessage {
    /// A plain text message.
    pub fn text(role: LogRole, text: impl Into<Text>) -> LogMessage {
        LogMessage {
            role,
            text: text.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// Everything logged about one completed request, in protocol-neutral form; built by the pipeline after
/// the last byte (streamed replies assembled).
#[derive(Clone, PartialEq)]
pub struct LogRecord {
    pub id: String,
    /// Completion time; also decides the hourly file.
    pub timestamp: Timestamp,
    pub model: String,
    pub backend: String,
    pub instance: Option<String>,
    pub status: u16,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    /// A top-level system prompt (Anthropic `system`); OpenAI system messages may stay in `messages`.
    pub system: Option<Text>,
    pub messages: Vec<LogMessage>,
    pub reply: String,
    pub reasoning: Option<String>,
    pub reply_tool_calls: Vec<LogToolCall>,
    /// For `format: openai`: the request fields other than `messages` (model, temperature, tools, …).
    pub request_params: Map<String, Value>,
    /// The reply is only what was sent before the stream broke or the client left (written as
    /// `"incomplete": true`; absent for complete answers).
    pub incomplete: bool,
}

impl LogRecord {
    /// The bytes of its texts: what it holds while it waits for the writer.
    pub(crate) fn text_bytes(&self) -> usize {
        let calls = |calls: &[LogToolCall]| -> usize {
            calls
                .iter()
                .map(|call| call.id.len() + call.name.len() + call.arguments.written_len())
                .sum()
        };
        let messages: usize = self
            .messages
            .iter()
            .map(|message| message.text.written_len() + calls(&message.tool_calls))
            .sum();
        self.system.as_ref().map_or(0, Text::written_len)
            + messages
            + self.reply.len()
            + self.reasoning.as_ref().map_or(0, String::len)
            + calls(&self.reply_tool_calls)
    }
}

/// The records waiting for the writer, in bytes of their texts ([`LogRecord::text_bytes`]), and the
/// wake-up of the requests waiting for them to be written ([`RequestLogger::room`]).
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    bytes: AtomicUsize,
    shrank: tokio::sync::Notify,
    /// The writer is gone: nobody would wake a waiter again.
    ended: AtomicBool,
}

impl Backlog {
    /// A record of `bytes` was written (or failed to be): it no longer waits.
    pub(super) fn written(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Wakes the requests waiting for room (the writer calls it after each batch).
    pub(super) fn wake(&self) {
        self.shrank.notify_waiters();
    }

    /// The writer stopped (however it stopped): waiters go on.
    pub(super) fn end(&self) {
        self.ended.store(true, Ordering::Relaxed);
        self.shrank.notify_waiters();
    }
}

/// Prompts and replies may carry personal data, so Debug shows only the metadata.
impl std::fmt::Debug for LogRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogRecord")
            .field("id", &self.id)
            .field("timestamp", &self.timestamp)
            .field("model", &self.model)
            .field("backend", &self.backend)
            .field("status", &self.status)
            .field("messages", &self.messages.len())
            .finish_non_exhaustive()
    }
}

/// Keeps an exact fraction of records without randomness: record `n` is kept when `floor((n+1)·rate)`
/// exceeds `floor(n·rate)`, so 0.25 keeps every 4th record and tests stay deterministic.
struct Sampler {
    rate: f64,
    seen: AtomicU64,
}

impl Sampler {
    fn keep(&self) -> bool {
        if self.rate >= 1.0 {
            return true;
        }
        if self.rate <= 0.0 || self.rate.is_nan() {
            return false;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.rate).floor() > (n * self.rate).floor()
    }
}

/// Handle to the background request log writer; share it behind an `Arc`.
pub struct RequestLogger {
    /// `None` when logging is disabled (or the writer thread could not start).
    tx: Option<Sender<Box<LogRecord>>>,
    /// Shutdown requests (unbounded: never waits behind a full record queue).
    control: Option<Sender<oneshot::Sender<()>>>,
    sampler: Sampler,
    on_drop: DropHook,
    dropped: AtomicU64,
    closed: AtomicBool,
    backlog: Arc<Backlog>,
    /// `queue_bytes`.
    max_backlog: usize,
}

impl std::fmt::Debug for RequestLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLogger")
            .field("enabled", &self.tx.is_some())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl RequestLogger {
    /// Starts the writer thread (when `cfg.enabled`); files use the process's local time zone.
    pub fn start(cfg: &RequestLogConfig, redact: Redactor, dropped: DropHook) -> RequestLogger {
        Self::start_with_zone(cfg, redact, dropped, TimeZone::system())
    }

    /// Like [`RequestLogger::start`] with an explicit time zone for the file hour.
    pub(crate) fn start_with_zone(
        cfg: &RequestLogConfig,
        redact: Redactor,
        dropped: DropHook,
        zone: TimeZone,
    ) -> RequestLogger {
        Self::start_inner(cfg, redact, dropped, WriterOptions::in_zone(zone))
    }

    fn start_inner(
        cfg: &RequestLogConfig,
        redact: Redactor,
        on_drop: DropHook,
        options: WriterOptions,
    ) -> RequestLogger {
        let sampler = Sampler {
            rate: cfg.sample_rate,
            seen: AtomicU64::new(0),
        };
        let mut logger = RequestLogger {
            tx: None,
            control: None,
            sampler,
            on_drop,
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            backlog: Arc::default(),
            max_backlog: cfg.queue_bytes,
        };
        if !cfg.enabled {
            return logger;
        }
        let (tx, rx) = crossbeam_channel::bounded(cfg.queue_capacity.max(1));
        let (control, control_rx) = crossbeam_channel::unbounded();
        let backlog = Arc::clone(&logger.backlog);
        match writer::spawn(cfg, redact, options, rx, control_rx, backlog) {
            Ok(()) => {
                logger.tx = Some(tx);
                logger.control = Some(control);
            }
            Err(err) => {
                tracing::error!(error = %err, dir = %cfg.dir.display(), "request log writer did not start");
                logger.closed.store(true, Ordering::Relaxed);
            }
        }
        logger
    }

    /// Queues one record; never blocks. Applies `sample_rate`; a full queue drops the record and calls
    /// the drop hook.
    pub fn log(&self, record: LogRecord) {
        if self.closed.load(Ordering::Relaxed) {
            self.count_drop();
            return;
        }
        let Some(tx) = &self.tx else {
            return;
        };
        if !self.sampler.keep() {
            return;
        }
        let bytes = record.text_bytes();
        self.backlog.bytes.fetch_add(bytes, Ordering::Relaxed);
        if tx.try_send(Box::new(record)).is_err() {
            self.backlog.written(bytes);
            self.count_drop();
        }
    }

    /// Waits while the records waiting for the writer hold more than `queue_bytes` of text; at once
    /// when they do not (or logging is off, or the writer is gone). The request path calls it before a
    /// body is decoded, so when the disk or the writer's share of the CPU falls behind, new requests
    /// wait holding only their bodies, instead of the backlog growing without bound or records being
    /// dropped.
    pub async fn room(&self) {
        while self.behind() {
            let shrank = self.backlog.shrank.notified();
            let mut shrank = std::pin::pin!(shrank);
            // Registered before the check, so a wake-up between the check and the wait is not lost.
            shrank.as_mut().enable();
            if !self.behind() {
                return;
            }
            shrank.await;
        }
    }

    /// The waiting records hold more than `queue_bytes` of text, and a writer is there to write them:
    /// [`RequestLogger::room`] would wait.
    pub fn behind(&self) -> bool {
        self.tx.is_some()
            && self.backlog.bytes.load(Ordering::Relaxed) > self.max_backlog
            && !self.backlog.ended.load(Ordering::Relaxed)
    }

    fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        (self.on_drop)();
    }

    /// Records dropped so far (queue full, or logged after shutdown).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes every record accepted so far, flushes and closes the file, and stops the writer. Records
    /// logged afterwards are dropped. Calling it again returns at once.
    pub async fn shutdown(&self) {
        let Some(control) = &self.control else {
            return;
        };
        self.closed.store(true, Ordering::Relaxed);
        let (reply, done) = oneshot::channel();
        if control.send(reply).is_ok() {
            // An error means the writer already exited: nothing is left to wait for.
            let _ = done.await;
        }
    }
}
