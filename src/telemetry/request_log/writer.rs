//! The request log's writer thread: takes records off the queue in batches, picks the hourly file by
//! each record's timestamp, serializes it in the configured layout and appends it, off the request path.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, TryRecvError};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use tokio::sync::oneshot;

use super::openai_layout::openai_line;
use super::sharegpt::write_sharegpt_line;
use super::{Backlog, LogFormat, LogRecord, Redactor, RequestLogConfig};
use crate::telemetry::uncached::Uncached;

/// While records keep arriving, the writer naps this long between batches instead of being woken for
/// each record: a wake-up costs the request path a system call, a nap costs nothing there. Records reach
/// the file within about this delay; an idle writer blocks and the first record wakes it.
const BATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// Writer settings that tests override.
pub(super) struct WriterOptions {
    pub(super) zone: TimeZone,
    /// Test hook: the writer takes this lock before each record, so a test can stall it.
    #[cfg(test)]
    pub(super) gate: Option<Arc<std::sync::Mutex<()>>>,
    /// Test hook: counts the times a record woke the writer from a block.
    #[cfg(test)]
    pub(super) wakeups: Option<Arc<AtomicU64>>,
}

impl WriterOptions {
    /// Files named by the hour in `zone`, no test hooks.
    pub(super) fn in_zone(zone: TimeZone) -> WriterOptions {
        WriterOptions {
            zone,
            #[cfg(test)]
            gate: None,
            #[cfg(test)]
            wakeups: None,
        }
    }
}

/// Starts the writer thread for `cfg`: it drains `records` until the queue closes or a shutdown request
/// arrives on `control`.
pub(super) fn spawn(
    cfg: &RequestLogConfig,
    redact: Redactor,
    options: WriterOptions,
    records: Receiver<Box<LogRecord>>,
    control: Receiver<oneshot::Sender<()>>,
    backlog: Arc<Backlog>,
) -> std::io::Result<()> {
    let writer = Writer {
        backlog,
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
    std::thread::Builder::new()
        .name("request-log".into())
        .spawn(move || writer.run(&records, &control, gate))
        .map(drop)
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
    /// The logger's count of what waits for this thread.
    backlog: Arc<Backlog>,
    #[cfg(test)]
    wakeups: Option<Arc<AtomicU64>>,
}

/// However the writer stops (shutdown, or a panic unwinding its thread), requests waiting for room
/// go on.
impl Drop for Writer {
    fn drop(&mut self) {
        self.backlog.end();
    }
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

    /// Flushes the file and wakes the requests waiting for room: called after each batch.
    fn flush(&mut self) {
        self.backlog.wake();
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
        self.backlog.written(record.text_bytes());
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
                write_sharegpt_line(&mut self.line, record, self.redact.as_deref());
                Ok(())
            }
            LogFormat::OpenAi => {
                let redact = self.redact.as_deref().unwrap_or(&super::keep_text);
                serde_json::to_writer(&mut self.line, &openai_line(record, redact))
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
