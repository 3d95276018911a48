//! Request logs: one JSON line per completed request, in hourly files `<dir>/YYYYMMDD_HH.jsonl`.
//!
//! The request path only calls [`RequestLogger::log`], which moves the record into a bounded queue and
//! returns: it never blocks and never touches the disk. A dedicated writer thread redacts, serializes
//! and appends; when the queue is full the record is dropped and counted through the drop hook (wired to
//! `request_log_dropped_total` by the caller). [`RequestLogger::shutdown`] drains everything that was
//! accepted before it returns, so a clean shutdown loses nothing.
//!
//! The file hour is the record's `timestamp` in the logger's time zone (the process's local zone, which
//! `TZ` decides, unless a zone is injected), so a record always lands in the file its own timestamp names.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::uncached::Uncached;

/// Applied by the writer thread to every piece of logged text (messages, reply, reasoning, tool call
/// arguments, string request parameters), e.g. to mask keys or personal data.
/// Text without a match comes back borrowed, so the common case copies nothing.
pub(crate) type Redactor = Arc<RedactFn>;

/// The function behind a [`Redactor`].
pub(crate) type RedactFn = dyn for<'a> Fn(&'a str) -> Cow<'a, str> + Send + Sync;

/// A [`Redactor`] from a function (the bound lets a closure's signature be inferred).
pub(crate) fn redactor(
    f: impl for<'a> Fn(&'a str) -> Cow<'a, str> + Send + Sync + 'static,
) -> Redactor {
    Arc::new(f)
}

/// Called once per record dropped because the queue was full (or the logger was shut down).
pub(crate) type DropHook = Arc<dyn Fn() + Send + Sync>;

/// A redactor that keeps text as it is.
pub fn no_redaction() -> Redactor {
    redactor(|text| Cow::Borrowed(text))
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
}

impl Default for RequestLogConfig {
    fn default() -> Self {
        RequestLogConfig {
            enabled: false,
            dir: PathBuf::from("data/requests_responses"),
            format: LogFormat::default(),
            sample_rate: 1.0,
            queue_capacity: 10_000,
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
    pub arguments: String,
}

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMessage {
    pub role: LogRole,
    /// The text content (parts concatenated); empty for an assistant turn that only calls tools.
    pub text: String,
    /// Tool calls of an assistant turn.
    pub tool_calls: Vec<LogToolCall>,
    /// For a `Tool` message: the call it answers.
    pub tool_call_id: Option<String>,
}

impl LogMessage {
    /// A plain text message.
    pub fn text(role: LogRole, text: impl Into<String>) -> LogMessage {
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
    pub system: Option<String>,
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

/// While records keep arriving, the writer naps this long between batches instead of being woken for
/// each record: a wake-up costs the request path a system call, a nap costs nothing there. Records reach
/// the file within about this delay; an idle writer blocks and the first record wakes it.
const BATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

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
}

impl std::fmt::Debug for RequestLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLogger")
            .field("enabled", &self.tx.is_some())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// Writer settings that tests override.
struct WriterOptions {
    zone: TimeZone,
    /// Test hook: the writer takes this lock before each record, so a test can stall it.
    #[cfg(test)]
    gate: Option<Arc<std::sync::Mutex<()>>>,
    /// Test hook: counts the times a record woke the writer from a block.
    #[cfg(test)]
    wakeups: Option<Arc<AtomicU64>>,
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
        Self::start_inner(
            cfg,
            redact,
            dropped,
            WriterOptions {
                zone,
                #[cfg(test)]
                gate: None,
                #[cfg(test)]
                wakeups: None,
            },
        )
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
        };
        if !cfg.enabled {
            return logger;
        }
        let (tx, rx) = crossbeam_channel::bounded(cfg.queue_capacity.max(1));
        let (control, control_rx) = crossbeam_channel::unbounded();
        let writer = Writer {
            dir: cfg.dir.clone(),
            format: cfg.format,
            zone: options.zone,
            redact,
            current: None,
            line: Vec::with_capacity(4096),
            failed_hours: HashSet::new(),
            #[cfg(test)]
            wakeups: options.wakeups,
        };
        #[cfg(test)]
        let gate = options.gate;
        #[cfg(not(test))]
        let gate: Option<Arc<std::sync::Mutex<()>>> = None;
        let spawned = std::thread::Builder::new()
            .name("request-log".into())
            .spawn(move || writer.run(&rx, &control_rx, gate));
        match spawned {
            Ok(_) => {
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
        if tx.try_send(Box::new(record)).is_err() {
            self.count_drop();
        }
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

/// The open hourly file.
struct OpenFile {
    hour: String,
    /// The instants `[from, until)` whose records belong to this file, so most records need no time
    /// zone conversion.
    from: Timestamp,
    until: Timestamp,
    out: BufWriter<Uncached>,
}

/// The hour `zoned` falls in, as absolute instants; an empty span (no caching) if it cannot be computed.
fn hour_span(zoned: &jiff::Zoned) -> (Timestamp, Timestamp) {
    let at = zoned.timestamp();
    let start = zoned.round(
        jiff::ZonedRound::new()
            .smallest(jiff::Unit::Hour)
            .mode(jiff::RoundMode::Trunc),
    );
    match start {
        Ok(start) => {
            let from = start.timestamp();
            let until = from
                .checked_add(jiff::SignedDuration::from_hours(1))
                .unwrap_or(at);
            (from, until)
        }
        Err(_) => (at, at),
    }
}

/// Owned by the writer thread: all disk I/O and serialization happen here, off the request path.
struct Writer {
    dir: PathBuf,
    format: LogFormat,
    zone: TimeZone,
    redact: Redactor,
    current: Option<OpenFile>,
    /// Reused serialization buffer.
    line: Vec<u8>,
    /// Hours whose file could not be opened, so the failure is logged once rather than per record.
    failed_hours: HashSet<String>,
    #[cfg(test)]
    wakeups: Option<Arc<AtomicU64>>,
}

impl Writer {
    fn run(
        mut self,
        rx: &Receiver<Box<LogRecord>>,
        control: &Receiver<oneshot::Sender<()>>,
        gate: Option<Arc<std::sync::Mutex<()>>>,
    ) {
        loop {
            let mut wrote = false;
            loop {
                match rx.try_recv() {
                    Ok(record) => {
                        let _stalled = gate.as_ref().map(|g| g.lock());
                        self.write(&record);
                        wrote = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.close();
                        return;
                    }
                }
            }
            if let Ok(reply) = control.try_recv() {
                return self.shut_down(rx, control, reply);
            }
            // Make what was written visible before napping or sleeping.
            self.flush();
            if wrote {
                std::thread::sleep(BATCH_INTERVAL);
                continue;
            }
            crossbeam_channel::select! {
                recv(rx) -> record => match record {
                    Ok(record) => {
                        #[cfg(test)]
                        if let Some(wakeups) = &self.wakeups {
                            wakeups.fetch_add(1, Ordering::Relaxed);
                        }
                        {
                            let _stalled = gate.as_ref().map(|g| g.lock());
                            self.write(&record);
                        }
                        // The first record after a quiet spell is written at once; then a nap, so
                        // the records that follow it are a batch rather than one wake-up each.
                        self.flush();
                        std::thread::sleep(BATCH_INTERVAL);
                    }
                    Err(_) => break,
                },
                recv(control) -> reply => match reply {
                    Ok(reply) => return self.shut_down(rx, control, reply),
                    Err(_) => break,
                },
            }
        }
        self.close();
    }

    /// Writes every record already queued (the logger refuses new ones once shutdown began), closes the
    /// file and answers every shutdown request.
    fn shut_down(
        mut self,
        rx: &Receiver<Box<LogRecord>>,
        control: &Receiver<oneshot::Sender<()>>,
        reply: oneshot::Sender<()>,
    ) {
        while let Ok(record) = rx.try_recv() {
            self.write(&record);
        }
        self.close();
        let _ = reply.send(());
        while let Ok(reply) = control.try_recv() {
            let _ = reply.send(());
        }
    }

    fn flush(&mut self) {
        if let Some(file) = &mut self.current
            && let Err(err) = file.out.flush()
        {
            tracing::warn!(error = %err, hour = %file.hour, "request log flush failed");
        }
    }

    fn close(&mut self) {
        self.flush();
        self.current = None;
    }

    fn write(&mut self, record: &LogRecord) {
        let at = record.timestamp;
        let in_current = self
            .current
            .as_ref()
            .is_some_and(|file| file.from <= at && at < file.until);
        if !in_current {
            self.switch_file(at);
        }
        self.serialize_and_append(record);
    }

    /// Makes `current` the file of the hour `at` falls in (or `None` when it cannot be opened).
    fn switch_file(&mut self, at: Timestamp) {
        let zoned = at.to_zoned(self.zone.clone());
        let hour = zoned.strftime("%Y%m%d_%H").to_string();
        let (from, until) = hour_span(&zoned);
        if let Some(file) = &mut self.current
            && file.hour == hour
        {
            (file.from, file.until) = (from, until);
            return;
        }
        self.close();
        match open_hour_file(&self.dir, &hour) {
            Ok(out) => {
                self.failed_hours.remove(&hour);
                self.current = Some(OpenFile {
                    hour,
                    from,
                    until,
                    out,
                });
            }
            Err(err) => {
                if self.failed_hours.insert(hour.clone()) {
                    tracing::warn!(error = %err, dir = %self.dir.display(), hour = %hour, "request log file cannot be opened");
                }
            }
        }
    }

    fn serialize_and_append(&mut self, record: &LogRecord) {
        let Some(file) = &mut self.current else {
            return;
        };
        self.line.clear();
        let result = match self.format {
            LogFormat::ShareGpt => {
                write_sharegpt_line(&mut self.line, record, &*self.redact);
                Ok(())
            }
            LogFormat::OpenAi => {
                serde_json::to_writer(&mut self.line, &openai_line(record, &*self.redact))
            }
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, id = %record.id, "request log record not serializable");
            return;
        }
        self.line.push(b'\n');
        if let Err(err) = file.out.write_all(&self.line) {
            tracing::warn!(error = %err, hour = %file.hour, "request log write failed");
        }
    }
}

fn open_hour_file(dir: &Path, hour: &str) -> std::io::Result<BufWriter<Uncached>> {
    std::fs::create_dir_all(dir)?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{hour}.jsonl")))?;
    let len = file.metadata()?.len();
    Ok(BufWriter::with_capacity(
        64 * 1024,
        Uncached::new(file, len),
    ))
}

/// One `format: sharegpt` line (without the newline), written straight into `out`: the same bytes as
/// serializing the `ShareGptLine` of the tests (field order, escapes, numbers, optional fields), without
/// building it, and strings scanned eight bytes at a time.
fn write_sharegpt_line(out: &mut Vec<u8>, record: &LogRecord, redact: &RedactFn) {
    use crate::protocol::json_text::write_str;
    out.extend_from_slice(b"{\"id\":");
    write_str(out, &record.id);
    // A timestamp's Display form (RFC 3339) has nothing to escape.
    let _ = write!(out, ",\"timestamp\":\"{}\",\"model\":", record.timestamp);
    write_str(out, &record.model);
    out.extend_from_slice(b",\"backend\":");
    write_str(out, &record.backend);
    out.extend_from_slice(b",\"instance\":");
    match &record.instance {
        Some(instance) => write_str(out, instance),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"status\":");
    write_number(out, record.status);
    out.extend_from_slice(b",\"usage\":{\"prompt_tokens\":");
    write_number(out, record.prompt_tokens);
    out.extend_from_slice(b",\"completion_tokens\":");
    write_number(out, record.completion_tokens);
    out.extend_from_slice(b",\"total_tokens\":");
    write_number(out, record.prompt_tokens + record.completion_tokens);
    out.extend_from_slice(b"},\"latency_ms\":");
    write_number(out, record.latency_ms);
    out.extend_from_slice(b",\"ttft_ms\":");
    write_number(out, record.ttft_ms);
    out.extend_from_slice(b",\"conversations\":[");
    if let Some(system) = &record.system {
        write_turn(out, "system", &redact(system), &[], None, redact);
        out.push(b',');
    }
    for message in &record.messages {
        let from = sharegpt_from(message.role);
        let id = message.tool_call_id.as_deref();
        write_turn(
            out,
            from,
            &redact(&message.text),
            &message.tool_calls,
            id,
            redact,
        );
        out.push(b',');
    }
    write_turn(out, "gpt", &redact(&record.reply), &[], None, redact);
    out.push(b']');
    if let Some(reasoning) = &record.reasoning {
        out.extend_from_slice(b",\"reasoning\":");
        write_str(out, &redact(reasoning));
    }
    if !record.reply_tool_calls.is_empty() {
        out.extend_from_slice(b",\"tool_calls\":");
        write_tool_calls(out, &record.reply_tool_calls, redact);
    }
    if record.incomplete {
        out.extend_from_slice(b",\"incomplete\":true");
    }
    out.push(b'}');
}

fn write_turn(
    out: &mut Vec<u8>,
    from: &str,
    value: &str,
    tool_calls: &[LogToolCall],
    tool_call_id: Option<&str>,
    redact: &RedactFn,
) {
    use crate::protocol::json_text::write_str;
    out.extend_from_slice(b"{\"from\":");
    write_str(out, from);
    out.extend_from_slice(b",\"value\":");
    write_str(out, value);
    if !tool_calls.is_empty() {
        out.extend_from_slice(b",\"tool_calls\":");
        write_tool_calls(out, tool_calls, redact);
    }
    if let Some(id) = tool_call_id {
        out.extend_from_slice(b",\"tool_call_id\":");
        write_str(out, id);
    }
    out.push(b'}');
}

fn write_tool_calls(out: &mut Vec<u8>, calls: &[LogToolCall], redact: &RedactFn) {
    use crate::protocol::json_text::write_str;
    out.push(b'[');
    for (n, call) in calls.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        write_str(out, &call.id);
        out.extend_from_slice(b",\"name\":");
        write_str(out, &call.name);
        out.extend_from_slice(b",\"arguments\":");
        write_str(out, &redact(&call.arguments));
        out.push(b'}');
    }
    out.push(b']');
}

/// A number as `serde_json` writes it (integers exactly, floats shortest round-trip, `null` for a
/// non-finite float or `None`).
fn write_number(out: &mut Vec<u8>, number: impl Serialize) {
    // Writing a number into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &number);
}

fn sharegpt_from(role: LogRole) -> &'static str {
    match role {
        LogRole::System => "system",
        LogRole::User => "human",
        LogRole::Assistant => "gpt",
        LogRole::Tool => "tool",
    }
}

fn redact_value(value: &Value, redact: &RedactFn) -> Value {
    match value {
        Value::String(s) => Value::String(redact(s).into_owned()),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| redact_value(v, redact)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redact_value(v, redact)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn openai_tool_calls(calls: &[LogToolCall], redact: &RedactFn) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id,
                    "type": "function",
                    "function": { "name": c.name, "arguments": redact(&c.arguments) },
                })
            })
            .collect(),
    )
}

fn openai_message(
    role: LogRole,
    text: &str,
    tool_calls: &[LogToolCall],
    tool_call_id: Option<&str>,
    redact: &RedactFn,
) -> Value {
    let mut m = Map::new();
    m.insert(
        "role".into(),
        serde_json::to_value(role).unwrap_or(Value::Null),
    );
    let content = if text.is_empty() && !tool_calls.is_empty() {
        Value::Null
    } else {
        Value::String(redact(text).into_owned())
    };
    m.insert("content".into(), content);
    if !tool_calls.is_empty() {
        m.insert("tool_calls".into(), openai_tool_calls(tool_calls, redact));
    }
    if let Some(id) = tool_call_id {
        m.insert("tool_call_id".into(), Value::String(id.to_owned()));
    }
    Value::Object(m)
}

fn openai_line(record: &LogRecord, redact: &RedactFn) -> Value {
    let mut line: Map<String, Value> = record
        .request_params
        .iter()
        .filter(|(k, _)| k.as_str() != "messages")
        .map(|(k, v)| (k.clone(), redact_value(v, redact)))
        .collect();
    line.entry("model")
        .or_insert_with(|| Value::String(record.model.clone()));
    let mut messages = Vec::with_capacity(record.messages.len() + 2);
    if let Some(system) = &record.system {
        messages.push(openai_message(LogRole::System, system, &[], None, redact));
    }
    for m in &record.messages {
        messages.push(openai_message(
            m.role,
            &m.text,
            &m.tool_calls,
            m.tool_call_id.as_deref(),
            redact,
        ));
    }
    let mut reply = openai_message(
        LogRole::Assistant,
        &record.reply,
        &record.reply_tool_calls,
        None,
        redact,
    );
    if let (Some(reasoning), Value::Object(map)) = (&record.reasoning, &mut reply) {
        map.insert(
            "reasoning_content".into(),
            Value::String(redact(reasoning).into_owned()),
        );
    }
    messages.push(reply);
    line.insert("messages".into(), Value::Array(messages));
    if record.incomplete {
        line.insert("incomplete".into(), Value::Bool(true));
    }
    Value::Object(line)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    // The serde model of a sharegpt line: `write_sharegpt_line` must write exactly its bytes.
    #[derive(Serialize)]
    struct UsageOut {
        prompt_tokens: u64,
        completion_tokens: u64,
        total_tokens: u64,
    }

    #[derive(Serialize)]
    struct ToolCallOut<'a> {
        id: &'a str,
        name: &'a str,
        arguments: Cow<'a, str>,
    }

    #[derive(Serialize)]
    struct Turn<'a> {
        from: &'static str,
        value: Cow<'a, str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCallOut<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_call_id: Option<&'a str>,
    }

    #[derive(Serialize)]
    struct ShareGptLine<'a> {
        id: &'a str,
        timestamp: Timestamp,
        model: &'a str,
        backend: &'a str,
        instance: Option<&'a str>,
        status: u16,
        usage: UsageOut,
        latency_ms: f64,
        ttft_ms: Option<f64>,
        conversations: Vec<Turn<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reasoning: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCallOut<'a>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        incomplete: bool,
    }

    fn tool_calls_out<'a>(calls: &'a [LogToolCall], redact: &RedactFn) -> Vec<ToolCallOut<'a>> {
        calls
            .iter()
            .map(|c| ToolCallOut {
                id: &c.id,
                name: &c.name,
                arguments: redact(&c.arguments),
            })
            .collect()
    }

    fn sharegpt_line<'a>(record: &'a LogRecord, redact: &RedactFn) -> ShareGptLine<'a> {
        let mut conversations = Vec::with_capacity(record.messages.len() + 2);
        if let Some(system) = &record.system {
            conversations.push(Turn {
                from: "system",
                value: redact(system),
                tool_calls: Vec::new(),
                tool_call_id: None,
            });
        }
        for message in &record.messages {
            conversations.push(Turn {
                from: sharegpt_from(message.role),
                value: redact(&message.text),
                tool_calls: tool_calls_out(&message.tool_calls, redact),
                tool_call_id: message.tool_call_id.as_deref(),
            });
        }
        conversations.push(Turn {
            from: "gpt",
            value: redact(&record.reply),
            tool_calls: Vec::new(),
            tool_call_id: None,
        });
        ShareGptLine {
            id: &record.id,
            timestamp: record.timestamp,
            model: &record.model,
            backend: &record.backend,
            instance: record.instance.as_deref(),
            status: record.status,
            usage: UsageOut {
                prompt_tokens: record.prompt_tokens,
                completion_tokens: record.completion_tokens,
                total_tokens: record.prompt_tokens + record.completion_tokens,
            },
            latency_ms: record.latency_ms,
            ttft_ms: record.ttft_ms,
            conversations,
            reasoning: record.reasoning.as_deref().map(redact),
            tool_calls: tool_calls_out(&record.reply_tool_calls, redact),
            incomplete: record.incomplete,
        }
    }

    fn counter_hook() -> (DropHook, Arc<AtomicU64>) {
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        (
            Arc::new(move || {
                c.fetch_add(1, Ordering::Relaxed);
            }),
            count,
        )
    }

    fn cfg(dir: &Path, format: LogFormat) -> RequestLogConfig {
        RequestLogConfig {
            enabled: true,
            dir: dir.to_path_buf(),
            format,
            ..RequestLogConfig::default()
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn simple(id: &str, at: &str) -> LogRecord {
        LogRecord {
            id: id.into(),
            timestamp: ts(at),
            model: "m".into(),
            backend: "local".into(),
            instance: None,
            status: 200,
            prompt_tokens: 2,
            completion_tokens: 3,
            latency_ms: 1.5,
            ttft_ms: None,
            system: None,
            messages: vec![LogMessage::text(LogRole::User, "hi")],
            reply: "Echo: hi".into(),
            reasoning: None,
            reply_tool_calls: Vec::new(),
            request_params: Map::new(),
            incomplete: false,
        }
    }

    fn rich() -> LogRecord {
        let call = LogToolCall {
            id: "call_1".into(),
            name: "weather".into(),
            arguments: r#"{"city":"Zürich","key":"sk-secret"}"#.into(),
        };
        let mut params = Map::new();
        params.insert("model".into(), Value::String("claude".into()));
        params.insert("temperature".into(), serde_json::json!(0.2));
        params.insert("stream".into(), Value::Bool(true));
        params.insert("user".into(), Value::String("sk-secret".into()));
        params.insert("messages".into(), serde_json::json!(["ignored"]));
        LogRecord {
            id: "req-1".into(),
            timestamp: ts("2026-11-22T10:15:00Z"),
            model: "claude".into(),
            backend: "cloud".into(),
            instance: Some("https://api.anthropic.com".into()),
            status: 200,
            prompt_tokens: 10,
            completion_tokens: 7,
            latency_ms: 812.5,
            ttft_ms: Some(120.0),
            system: Some("Tu es un assistant. sk-secret".into()),
            messages: vec![
                LogMessage::text(LogRole::User, "Wetter in Zürich? 日本語 🚀"),
                LogMessage {
                    role: LogRole::Assistant,
                    text: String::new(),
                    tool_calls: vec![call.clone()],
                    tool_call_id: None,
                },
                LogMessage {
                    role: LogRole::Tool,
                    text: "12°C".into(),
                    tool_calls: Vec::new(),
                    tool_call_id: Some("call_1".into()),
                },
            ],
            reply: "Es sind 12°C in Zürich.".into(),
            reasoning: Some("the tool said sk-secret 12".into()),
            reply_tool_calls: vec![LogToolCall {
                id: "call_2".into(),
                name: "notify".into(),
                arguments: r#"{"msg":"✓"}"#.into(),
            }],
            request_params: params,
            incomplete: false,
        }
    }

    /// The hand-written sharegpt writer gives exactly the serde model's bytes.
    fn assert_sharegpt_bytes(record: &LogRecord, redact: &RedactFn) {
        let mut written = Vec::new();
        write_sharegpt_line(&mut written, record, redact);
        let expected = serde_json::to_vec(&sharegpt_line(record, redact)).unwrap();
        assert_eq!(
            String::from_utf8(written).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    #[test]
    fn sharegpt_writer_matches_the_serde_model() {
        let mut record = rich();
        assert_sharegpt_bytes(&record, &*redactor());
        record.instance = None;
        record.ttft_ms = None;
        record.latency_ms = f64::NAN;
        record.system = None;
        record.reasoning = None;
        record.reply_tool_calls.clear();
        record.timestamp = ts("2026-01-02T03:04:05.000000001Z");
        assert_sharegpt_bytes(&record, &*no_redaction());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

        /// Random texts (controls, quotes, any Unicode), numbers and optional parts: same bytes.
        #[test]
        fn sharegpt_writer_matches_the_serde_model_on_any_record(
            texts in proptest::collection::vec("(\\PC|[\\x00-\\x1f\"\\\\])*", 6),
            numbers in (proptest::prelude::any::<u16>(), 0u64..1 << 40, 0u64..1 << 40),
            latency in proptest::prelude::any::<f64>(),
            ttft in proptest::option::of(0.0f64..1e6),
            nanos in 0i64..2_000_000_000_000_000_000,
            optional in proptest::collection::vec(proptest::prelude::any::<bool>(), 4),
        ) {
            let call = LogToolCall {
                id: texts[0].clone(),
                name: texts[1].clone(),
                arguments: texts[2].clone(),
            };
            let record = LogRecord {
                id: texts[3].clone(),
                timestamp: Timestamp::from_nanosecond(i128::from(nanos)).unwrap(),
                model: texts[4].clone(),
                backend: texts[5].clone(),
                instance: optional[0].then(|| texts[1].clone()),
                status: numbers.0,
                prompt_tokens: numbers.1,
                completion_tokens: numbers.2,
                latency_ms: latency,
                ttft_ms: ttft,
                system: optional[1].then(|| texts[2].clone()),
                messages: vec![
                    LogMessage::text(LogRole::User, texts[0].clone()),
                    LogMessage {
                        role: LogRole::Assistant,
                        text: String::new(),
                        tool_calls: vec![call.clone(), call.clone()],
                        tool_call_id: None,
                    },
                    LogMessage {
                        role: LogRole::Tool,
                        text: texts[4].clone(),
                        tool_calls: Vec::new(),
                        tool_call_id: Some(texts[5].clone()),
                    },
                ],
                reply: texts[3].clone(),
                reasoning: optional[2].then(|| texts[1].clone()),
                reply_tool_calls: if optional[3] { vec![call] } else { Vec::new() },
                request_params: Map::new(),
                incomplete: numbers.0 % 2 == 1,
            };
            let mut written = Vec::new();
            write_sharegpt_line(&mut written, &record, &*redactor());
            let expected = serde_json::to_vec(&sharegpt_line(&record, &*redactor())).unwrap();
            proptest::prop_assert_eq!(written, expected);
        }
    }

    fn redactor() -> Redactor {
        super::redactor(|s| Cow::Owned(s.replace("sk-secret", "[REDACTED]")))
    }

    fn read_lines(dir: &Path, file: &str) -> Vec<Value> {
        let text =
            std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn sharegpt_line_has_conversation_tool_calls_and_raw_utf8() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (hook, dropped) = counter_hook();
        let logger = RequestLogger::start_with_zone(
            &cfg(dir.path(), LogFormat::ShareGpt),
            redactor(),
            hook,
            TimeZone::UTC,
        );
        logger.log(rich());
        logger.shutdown().await;
        assert_eq!(dropped.load(Ordering::Relaxed), 0);

        let raw = std::fs::read_to_string(dir.path().join("20261122_10.jsonl"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            raw.contains("日本語 🚀") && raw.contains("Zürich"),
            "not raw utf-8: {raw}"
        );
        assert!(!raw.contains("\\u"), "escaped: {raw}");
        assert!(!raw.contains("sk-secret"), "not redacted: {raw}");
        assert_eq!(raw.lines().count(), 1);

        let line: Value = serde_json::from_str(raw.trim_end()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(line["id"], "req-1");
        assert_eq!(line["timestamp"], "2026-11-22T10:15:00Z");
        assert_eq!(line["model"], "claude");
        assert_eq!(line["backend"], "cloud");
        assert_eq!(line["instance"], "https://api.anthropic.com");
        assert_eq!(line["status"], 200);
        assert_eq!(
            line["usage"],
            serde_json::json!({"prompt_tokens":10,"completion_tokens":7,"total_tokens":17})
        );
        assert_eq!(line["latency_ms"], 812.5);
        assert_eq!(line["ttft_ms"], 120.0);
        assert_eq!(line["reasoning"], "the tool said [REDACTED] 12");
        let froms: Vec<&str> = line["conversations"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["from"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(froms, ["system", "human", "gpt", "tool", "gpt"]);
        let conv = &line["conversations"];
        assert_eq!(conv[0]["value"], "Tu es un assistant. [REDACTED]");
        assert_eq!(conv[1]["value"], "Wetter in Zürich? 日本語 🚀");
        assert_eq!(conv[2]["tool_calls"][0]["name"], "weather");
        assert_eq!(
            conv[2]["tool_calls"][0]["arguments"],
            r#"{"city":"Zürich","key":"[REDACTED]"}"#
        );
        assert_eq!(conv[3]["tool_call_id"], "call_1");
        assert_eq!(conv[4]["value"], "Es sind 12°C in Zürich.");
        assert_eq!(line["tool_calls"][0]["id"], "call_2");
        assert_eq!(line["tool_calls"][0]["arguments"], r#"{"msg":"✓"}"#);
    }

    #[tokio::test]
    async fn openai_line_has_request_fields_and_reply_appended() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (hook, _) = counter_hook();
        let logger = RequestLogger::start_with_zone(
            &cfg(dir.path(), LogFormat::OpenAi),
            redactor(),
            hook,
            TimeZone::UTC,
        );
        logger.log(rich());
        let mut plain = simple("req-2", "2026-11-22T10:20:00Z");
        plain.model = "local-model".into();
        logger.log(plain);
        logger.shutdown().await;

        let raw = std::fs::read_to_string(dir.path().join("20261122_10.jsonl"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            raw.contains("日本語 🚀") && !raw.contains("sk-secret"),
            "{raw}"
        );
        let lines = read_lines(dir.path(), "20261122_10.jsonl");
        assert_eq!(lines.len(), 2);
        let line = &lines[0];
        assert_eq!(line["model"], "claude");
        assert_eq!(line["temperature"], 0.2);
        assert_eq!(line["stream"], true);
        assert_eq!(line["user"], "[REDACTED]");
        let messages = line["messages"].as_array().cloned().unwrap_or_default();
        let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "assistant"]);
        assert_eq!(messages[1]["content"], "Wetter in Zürich? 日本語 🚀");
        assert_eq!(messages[2]["content"], Value::Null);
        assert_eq!(messages[2]["tool_calls"][0]["type"], "function");
        assert_eq!(messages[2]["tool_calls"][0]["function"]["name"], "weather");
        assert_eq!(messages[3]["tool_call_id"], "call_1");
        assert_eq!(messages[4]["content"], "Es sind 12°C in Zürich.");
        assert_eq!(
            messages[4]["reasoning_content"],
            "the tool said [REDACTED] 12"
        );
        assert_eq!(
            messages[4]["tool_calls"][0]["function"]["arguments"],
            r#"{"msg":"✓"}"#
        );

        // Without request params the model still appears.
        assert_eq!(lines[1]["model"], "local-model");
        assert_eq!(
            lines[1]["messages"],
            serde_json::json!([
                {"role":"user","content":"hi"},
                {"role":"assistant","content":"Echo: hi"}
            ])
        );
    }

    #[tokio::test]
    async fn files_rotate_by_hour_in_the_logger_time_zone() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (hook, _) = counter_hook();
        let zone = TimeZone::fixed(jiff::tz::offset(5));
        let logger = RequestLogger::start_with_zone(
            &cfg(dir.path(), LogFormat::ShareGpt),
            no_redaction(),
            hook,
            zone,
        );
        // 05:59:59Z is 10:59:59 at +05; 06:00:00Z is 11:00; 19:00Z is 00:00 the next day.
        logger.log(simple("a", "2026-11-22T05:59:59Z"));
        logger.log(simple("b", "2026-11-22T06:00:00Z"));
        logger.log(simple("c", "2026-11-22T06:59:59.999Z"));
        logger.log(simple("d", "2026-11-22T19:00:00Z"));
        logger.log(simple("e", "2026-11-22T05:00:00Z"));
        logger.shutdown().await;

        assert_eq!(
            files(dir.path()),
            [
                "20261122_10.jsonl",
                "20261122_11.jsonl",
                "20261123_00.jsonl"
            ]
        );
        let ids = |file: &str| -> Vec<String> {
            read_lines(dir.path(), file)
                .iter()
                .filter_map(|l| l["id"].as_str().map(str::to_owned))
                .collect()
        };
        // Re-opening an hour appends rather than truncating.
        assert_eq!(ids("20261122_10.jsonl"), ["a", "e"]);
        assert_eq!(ids("20261122_11.jsonl"), ["b", "c"]);
        assert_eq!(ids("20261123_00.jsonl"), ["d"]);
    }

    /// With the writer stalled, `log()` must return at once: everything beyond the queue is dropped and
    /// counted, and everything accepted is written after the stall ends.
    #[tokio::test]
    async fn full_queue_drops_and_counts_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (hook, dropped) = counter_hook();
        let gate = Arc::new(Mutex::new(()));
        let config = RequestLogConfig {
            queue_capacity: 8,
            ..cfg(dir.path(), LogFormat::ShareGpt)
        };
        let logger = Arc::new(RequestLogger::start_inner(
            &config,
            no_redaction(),
            hook,
            WriterOptions {
                zone: TimeZone::UTC,
                gate: Some(gate.clone()),
                wakeups: None,
            },
        ));
        let stall = gate.lock().unwrap_or_else(|e| panic!("{e}"));

        let total = 1_000u64;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let producer = logger.clone();
        std::thread::spawn(move || {
            for i in 0..total {
                producer.log(simple(&format!("r{i}"), "2026-11-22T10:00:00Z"));
            }
            let _ = done_tx.send(());
        });
        // A generous bound that only a blocked log() could exceed; the stall is still in place here.
        assert!(
            done_rx.recv_timeout(Duration::from_secs(60)).is_ok(),
            "log() blocked on a stalled writer"
        );
        let dropped_now = dropped.load(Ordering::Relaxed);
        assert!(dropped_now >= total - 9, "dropped only {dropped_now}");
        assert_eq!(logger.dropped(), dropped_now);
        drop(stall);

        logger.shutdown().await;
        let written = read_lines(dir.path(), "20261122_10.jsonl").len() as u64;
        assert_eq!(written + dropped.load(Ordering::Relaxed), total);
        assert!(written >= 8, "written {written}");

        // After shutdown, records are dropped and counted rather than silently lost.
        logger.log(simple("late", "2026-11-22T10:00:00Z"));
        assert_eq!(dropped.load(Ordering::Relaxed), dropped_now + 1);
    }

    /// Records arriving one by one, faster than the batch interval, are written in batches: the
    /// writer is woken once per batch, not once per record (each wake-up is a system call on the
    /// request path and a switch to the writer thread).
    #[tokio::test]
    async fn steady_records_wake_the_writer_once_per_batch() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (hook, _) = counter_hook();
        let wakeups = Arc::new(AtomicU64::new(0));
        let logger = RequestLogger::start_inner(
            &cfg(dir.path(), LogFormat::ShareGpt),
            no_redaction(),
            hook,
            WriterOptions {
                zone: TimeZone::UTC,
                gate: None,
                wakeups: Some(wakeups.clone()),
            },
        );
        let total = 100;
        // The stimulus: one record every 2 ms (≈ 200 ms in all, ten batch intervals).
        for i in 0..total {
            logger.log(simple(&format!("r{i}"), "2026-11-22T10:00:00Z"));
            std::thread::sleep(Duration::from_millis(2));
        }
        logger.shutdown().await;
        assert_eq!(read_lines(dir.path(), "20261122_10.jsonl").len(), total);
        let woken = wakeups.load(Ordering::Relaxed);
        assert!(
            woken <= 30,
            "the writer was woken {woken} times for {total} records"
        );
    }

    #[tokio::test]
    async fn shutdown_flushes_ten_thousand_queued_records() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (hook, dropped) = counter_hook();
        let gate = Arc::new(Mutex::new(()));
        let logger = RequestLogger::start_inner(
            &cfg(dir.path(), LogFormat::OpenAi),
            no_redaction(),
            hook,
            WriterOptions {
                zone: TimeZone::UTC,
                gate: Some(gate.clone()),
                wakeups: None,
            },
        );
        let stall = gate.lock().unwrap_or_else(|e| panic!("{e}"));
        for i in 0..10_000 {
            logger.log(simple(&format!("r{i}"), "2026-11-22T10:00:00Z"));
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
        // Nothing can have been written yet: the writer is stalled on the first record.
        assert!(
            std::fs::read_to_string(dir.path().join("20261122_10.jsonl"))
                .unwrap_or_default()
                .is_empty()
        );
        drop(stall);
        logger.shutdown().await;
        let lines = read_lines(dir.path(), "20261122_10.jsonl");
        assert_eq!(lines.len(), 10_000);
        assert_eq!(lines[9_999]["messages"][1]["content"], "Echo: hi");
        // A second shutdown returns at once.
        logger.shutdown().await;
    }

    #[tokio::test]
    async fn sample_rate_keeps_an_exact_fraction() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (hook, dropped) = counter_hook();
        let config = RequestLogConfig {
            sample_rate: 0.25,
            ..cfg(dir.path(), LogFormat::ShareGpt)
        };
        let logger = RequestLogger::start_with_zone(&config, no_redaction(), hook, TimeZone::UTC);
        for i in 0..100 {
            logger.log(simple(&format!("r{i}"), "2026-11-22T10:00:00Z"));
        }
        logger.shutdown().await;
        assert_eq!(read_lines(dir.path(), "20261122_10.jsonl").len(), 25);
        assert_eq!(
            dropped.load(Ordering::Relaxed),
            0,
            "sampling is not dropping"
        );

        let none = Sampler {
            rate: 0.0,
            seen: AtomicU64::new(0),
        };
        assert!((0..100).all(|_| !none.keep()));
    }

    #[tokio::test]
    async fn disabled_logger_writes_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (hook, dropped) = counter_hook();
        let config = RequestLogConfig {
            enabled: false,
            ..cfg(&dir.path().join("logs"), LogFormat::ShareGpt)
        };
        let logger = RequestLogger::start(&config, no_redaction(), hook);
        logger.log(simple("a", "2026-11-22T10:00:00Z"));
        logger.shutdown().await;
        assert!(!dir.path().join("logs").exists());
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn config_defaults_and_validation() {
        let c: RequestLogConfig =
            yaml_serde::from_str("enabled: true").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c,
            RequestLogConfig {
                enabled: true,
                ..RequestLogConfig::default()
            }
        );
        assert_eq!(c.dir, PathBuf::from("data/requests_responses"));
        assert_eq!(c.format, LogFormat::ShareGpt);
        assert_eq!(c.sample_rate, 1.0);
        assert_eq!(c.queue_capacity, 10_000);
        assert_eq!(c.validate(), Ok(()));

        let c: RequestLogConfig = yaml_serde::from_str("format: openai\nsample_rate: 1.5")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.format, LogFormat::OpenAi);
        let err = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            err,
            "request_log.sample_rate must be between 0 and 1, got 1.5"
        );
        let c = RequestLogConfig {
            queue_capacity: 0,
            ..RequestLogConfig::default()
        };
        assert_eq!(c.validate(), Err(RequestLogConfigError::QueueCapacity(0)));

        assert!(yaml_serde::from_str::<RequestLogConfig>("enable: true").is_err());
        assert!(yaml_serde::from_str::<RequestLogConfig>("format: csv").is_err());
    }

    #[test]
    fn debug_hides_message_text() {
        let shown = format!("{:?}", rich());
        assert!(shown.contains("req-1"));
        assert!(
            !shown.contains("Zürich") && !shown.contains("sk-secret"),
            "{shown}"
        );
    }
}
