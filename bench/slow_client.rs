//! Slow-stream load client for the benchmark: holds many streaming chat requests open at once and reads
//! each one to its end (`bench/run.sh` slow-streams run; wrk cannot hold 10,000 long streams and count them).
//!
//! Every request is one `POST` of the body file (`__N__` replaced by the request's index), sent either over
//! its own HTTP/1.1 connection (the default) or, with `--h2-streams-per-conn N`, as one of N streams on an
//! HTTP/2 connection without TLS (prior knowledge): 10,000 HTTP/1.1 streams through a proxy need 20,000
//! sockets in the proxy alone, more than some machines' hard open-files limit allows.
//!
//! Streams start at `--rate` per second (every stream also costs the proxy an upstream connection; a burst
//! of thousands would overflow listen backlogs, and a dropped SYN costs a 1 s retransmit), and at most
//! `--opening` HTTP/1.1 connections are being set up at a time. The start is paced by time, not by response
//! headers: a proxy may hold its headers until the first upstream event, which a slow upstream sends late.
//! Once started, a stream stays open until its body ends. A stream counts as completed when it answered 2xx
//! and its body ended with `data: [DONE]` or `event: message_stop`; anything else (refused, reset, timed
//! out, cut short) is failed.
//!
//! The result is one line on stdout, `SLOW streams=… completed=… failed=… peak_open=… ramp_ms=…
//! elapsed_ms=… connections=…` (`peak_open`: most streams open at the same moment; `ramp_ms`: when the last
//! stream got its headers); failure reasons go to stderr with their counts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "slow_client",
    about = "Holds many streaming chat requests open at once and reads each to its end"
)]
struct Cli {
    /// URL of the streaming endpoint (http only), e.g. http://127.0.0.1:18102/v1/chat/completions.
    #[arg(long)]
    url: Uri,
    /// JSON request body with `"stream": true`; `__N__` is replaced by the request's index.
    #[arg(long)]
    body: PathBuf,
    /// Streams to hold open at once.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Streams started per second (0: all at once).
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// At most this many HTTP/1.1 connections being set up (connect + handshake) at a time.
    #[arg(long, default_value_t = 256)]
    opening: usize,
    /// 0: HTTP/1.1, one connection per stream; N > 0: HTTP/2 without TLS, N streams per connection.
    #[arg(long, default_value_t = 0)]
    h2_streams_per_conn: usize,
    /// A stream not finished after this many seconds counts as failed.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
}

/// Where requests go: the socket address to connect to and the two request-target forms.
struct Target {
    /// `host:port` for `TcpStream::connect` and the `Host` header.
    authority: String,
    /// The full URL: the request target on HTTP/2 (scheme and authority become pseudo-headers).
    url: Uri,
    /// Path and query: the request target on HTTP/1.1 (origin form).
    path: Uri,
}

impl Target {
    fn new(url: &Uri) -> anyhow::Result<Target> {
        if url.scheme_str() != Some("http") {
            anyhow::bail!("url '{url}' must start with http:// (no TLS here)");
        }
        let authority = url
            .authority()
            .ok_or_else(|| anyhow::anyhow!("url '{url}' has no host"))?;
        let authority = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        let path = url.path_and_query().map_or("/", |path| path.as_str());
        Ok(Target {
            authority,
            url: url.clone(),
            path: path.parse()?,
        })
    }

    /// An HTTP/1.1 request: origin-form target and a `Host` header.
    fn http1_request(&self, body: Bytes) -> anyhow::Result<Request<Full<Bytes>>> {
        let request = Request::post(self.path.clone()).header(header::HOST, &self.authority);
        Ok(with_body(request, body)?)
    }

    /// An HTTP/2 request: the full URL (its authority becomes `:authority`; a `Host` header as well would be
    /// a duplicate that nginx refuses with 400).
    fn http2_request(&self, body: Bytes) -> anyhow::Result<Request<Full<Bytes>>> {
        Ok(with_body(Request::post(self.url.clone()), body)?)
    }
}

fn with_body(request: http::request::Builder, body: Bytes) -> http::Result<Request<Full<Bytes>>> {
    request
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "text/event-stream")
        .body(Full::new(body))
}

/// Counters shared by every stream task.
#[derive(Default)]
struct Stats {
    open: AtomicUsize,
    peak_open: AtomicUsize,
    completed: AtomicUsize,
    failed: AtomicUsize,
    /// Milliseconds from the start until the last stream got its response headers.
    ramp_ms: AtomicU64,
    /// Failure reason → count, reported on stderr.
    reasons: Mutex<BTreeMap<String, usize>>,
}

impl Stats {
    fn opened(&self, started: Instant) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_open.fetch_max(open, Ordering::Relaxed);
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.ramp_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn fail(&self, reason: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut reasons) = self.reasons.lock() {
            *reasons.entry(reason).or_default() += 1;
        }
    }
}

/// The last bytes of a body, enough to find the end-of-stream marker across frame boundaries.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    const KEEP: usize = 64;

    fn push(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
        if self.0.len() > Self::KEEP {
            self.0.drain(..self.0.len() - Self::KEEP);
        }
    }

    /// Whether the body ended like a complete OpenAI or Anthropic stream.
    fn is_stream_end(&self) -> bool {
        let text = self.0.trim_ascii_end();
        text.ends_with(b"data: [DONE]")
            || memchr::memmem::find(text, b"event: message_stop").is_some()
    }
}

/// How a stream's request reaches the server.
enum Sender {
    /// A fresh HTTP/1.1 connection for this stream alone.
    Http1,
    /// A stream on a shared HTTP/2 connection.
    Http2(http2::SendRequest<Full<Bytes>>),
}

async fn connect(target: &Target) -> Result<TokioIo<TcpStream>, String> {
    let tcp = TcpStream::connect(&target.authority)
        .await
        .map_err(|error| format!("connect: {error}"))?;
    // Best effort: small SSE frames should not wait for delayed ACKs.
    let _ = tcp.set_nodelay(true);
    Ok(TokioIo::new(tcp))
}

/// Sends one request and reads its body to the end. `opening` is held while an HTTP/1.1 connection is set up.
async fn one_stream(
    target: &Target,
    sender: Sender,
    body: Bytes,
    opening: &Semaphore,
    stats: &Stats,
    started: Instant,
) -> Result<(), String> {
    let response = match sender {
        Sender::Http1 => {
            let permit = opening
                .acquire()
                .await
                .map_err(|_| "opening semaphore closed".to_owned())?;
            let io = connect(target).await?;
            let (mut sender, connection) = http1::handshake(io)
                .await
                .map_err(|error| format!("http1 handshake: {error}"))?;
            drop(permit);
            tokio::spawn(async move {
                // Ends with the stream; a reset shows up as a body error below.
                let _ = connection.await;
            });
            let request = target
                .http1_request(body)
                .map_err(|error| format!("request: {error}"))?;
            sender.send_request(request).await
        }
        Sender::Http2(mut sender) => {
            let request = target
                .http2_request(body)
                .map_err(|error| format!("request: {error}"))?;
            sender.send_request(request).await
        }
    }
    .map_err(|error| format!("response headers: {error}"))?;
    let status = response.status();
    stats.opened(started);
    let mut body = response.into_body();
    let mut tail = Tail::default();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| format!("body: {error}"))?;
            if let Some(data) = frame.data_ref() {
                tail.push(data);
            }
        }
        Ok::<(), String>(())
    }
    .await;
    stats.open.fetch_sub(1, Ordering::Relaxed);
    read?;
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    if !tail.is_stream_end() {
        return Err("stream ended without [DONE] or message_stop".to_owned());
    }
    Ok(())
}

/// Opens the HTTP/2 connections up front, one after the other (a few hundred at most).
async fn http2_senders(
    target: &Target,
    count: usize,
) -> anyhow::Result<Vec<http2::SendRequest<Full<Bytes>>>> {
    let mut senders = Vec::with_capacity(count);
    for _ in 0..count {
        let io = connect(target).await.map_err(anyhow::Error::msg)?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        senders.push(sender);
    }
    Ok(senders)
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let target = Arc::new(Target::new(&cli.url)?);
    let template = std::fs::read_to_string(&cli.body).map_err(|error| {
        anyhow::anyhow!("cannot read body file '{}': {error}", cli.body.display())
    })?;
    let streams = cli.streams;
    let per_conn = cli.h2_streams_per_conn;
    let senders = if per_conn > 0 {
        http2_senders(&target, streams.div_ceil(per_conn)).await?
    } else {
        Vec::new()
    };
    let connections = if per_conn > 0 { senders.len() } else { streams };
    let opening = Arc::new(Semaphore::new(cli.opening.max(1)));
    let stats = Arc::new(Stats::default());
    let timeout = Duration::from_secs(cli.timeout_s);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let step = (cli.rate > 0).then(|| Duration::from_secs(1) / cli.rate);
    for index in 0..streams {
        if let Some(step) = step {
            let due = started + step * u32::try_from(index).unwrap_or(u32::MAX);
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
        }
        let sender = match senders.get(index / per_conn.max(1)) {
            Some(sender) if per_conn > 0 => Sender::Http2(sender.clone()),
            _ => Sender::Http1,
        };
        let body = Bytes::from(template.replace("__N__", &format!("slow-{index}")));
        let (target, opening, stats) = (target.clone(), opening.clone(), stats.clone());
        tasks.spawn(async move {
            let stream = one_stream(&target, sender, body, &opening, &stats, started);
            let outcome = match tokio::time::timeout(timeout, stream).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("not finished within {} s", timeout.as_secs())),
            };
            match outcome {
                Ok(()) => {
                    stats.completed.fetch_add(1, Ordering::Relaxed);
                }
                Err(reason) => stats.fail(reason),
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined {
            stats.fail(format!("task: {error}"));
        }
    }
    let elapsed_ms = started.elapsed().as_millis();
    if let Ok(reasons) = stats.reasons.lock() {
        for (reason, count) in reasons.iter() {
            eprintln!("slow_client: {count} × {reason}");
        }
    }
    let failed = stats.failed.load(Ordering::Relaxed);
    let line = format!(
        "SLOW streams={streams} completed={} failed={failed} peak_open={} ramp_ms={} elapsed_ms={elapsed_ms} connections={connections}\n",
        stats.completed.load(Ordering::Relaxed),
        stats.peak_open.load(Ordering::Relaxed),
        stats.ramp_ms.load(Ordering::Relaxed),
    );
    std::io::Write::write_all(&mut std::io::stdout().lock(), line.as_bytes())?;
    Ok(failed == 0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("slow_client: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("slow_client: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_marker_is_found_across_frames() {
        let mut tail = Tail::default();
        tail.push(b"data: {\"choices\":[]}\n\n");
        assert!(!tail.is_stream_end());
        tail.push(b"data: [DO");
        assert!(!tail.is_stream_end());
        tail.push(b"NE]\n\n");
        assert!(tail.is_stream_end());

        let mut tail = Tail::default();
        tail.push(&[b'x'; 1000]);
        tail.push(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        assert!(tail.is_stream_end());
        assert!(tail.0.len() <= Tail::KEEP);
    }

    #[test]
    fn targets_split_the_url() {
        let target = Target::new(
            &"http://127.0.0.1:18102/v1/chat/completions"
                .parse()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(target.authority, "127.0.0.1:18102");
        assert_eq!(target.path, "/v1/chat/completions");
        assert!(Target::new(&"https://example.com/".parse().unwrap()).is_err());
        let default_port = Target::new(&"http://localhost/x".parse().unwrap()).unwrap();
        assert_eq!(default_port.authority, "localhost:80");
    }
}
