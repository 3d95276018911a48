//! Alerts on upstream state changes: one JSON line in an hourly error log and an optional webhook POST.
//!
//! `Alerter::raise` only enqueues (never blocks, never awaits), so alerts never slow the request path. A
//! background task applies the cooldown, appends to `<dir>/errors/YYYYMMDD_HH.log` (local time) and posts
//! to `alerts.webhook_url` (Slack-compatible: the body has a `text` field) with a timeout.
//!
//! Cooldown: at most one alert per (instance, `cooldown_s`) for instance down/up, and per (backend,
//! `cooldown_s`) for backend exhausted. A repeat of the last reported kind is dropped (counted in the next
//! alert's `suppressed`). A different kind inside the cooldown (the instance came back) is held and sent
//! when the cooldown ends, unless the state flipped back meanwhile, so the last word is always accurate.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config_error::Invalid;
use crate::routing::health::{BreakerState, Transition, secs};
use crate::routing::instances::redacted_url;
use crate::upstream::client::{Failure, HttpClient, Target};

/// Alerts waiting for the background task; beyond this `raise` drops them (and counts the drop).
const QUEUE_CAPACITY: usize = 1024;

/// Cooldown slots kept before idle ones are pruned.
const MAX_SLOTS: usize = 4096;

/// `alerts:` section.
#[derive(Deserialize, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Where to POST alerts (Slack/Mattermost/any JSON webhook); `None` writes the error log only.
    pub webhook_url: Option<String>,
    /// Minimum seconds between two alerts about the same instance (or the same exhausted backend).
    pub cooldown_s: f64,
    /// Data directory; the log goes to `<dir>/errors/`. Default `data`.
    pub dir: Option<PathBuf>,
    /// Bound on one webhook POST.
    pub timeout_s: f64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            cooldown_s: 300.0,
            dir: None,
            timeout_s: 5.0,
        }
    }
}

impl fmt::Debug for AlertsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Webhook URLs embed their secret (Slack: /services/T../B../token), so only presence is shown.
        f.debug_struct("AlertsConfig")
            .field(
                "webhook_url",
                &self.webhook_url.as_ref().map(|_| "<redacted>"),
            )
            .field("cooldown_s", &self.cooldown_s)
            .field("dir", &self.dir)
            .field("timeout_s", &self.timeout_s)
            .finish()
    }
}

impl AlertsConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if !(self.cooldown_s.is_finite() && self.cooldown_s >= 0.0) {
            return Err(Invalid::new(
                "alerts",
                format!(
                    "alerts.cooldown_s is {}; it must be a number of seconds, 0 or more",
                    self.cooldown_s
                ),
            ));
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(Invalid::new(
                "alerts",
                format!(
                    "alerts.timeout_s is {}; it must be a number of seconds above 0",
                    self.timeout_s
                ),
            ));
        }
        if let Some(url) = &self.webhook_url
            && url::Url::parse(url).is_err()
        {
            return Err(Invalid::new(
                "alerts",
                format!(
                    "alerts.webhook_url '{}' is not a valid url",
                    redacted_url(url)
                ),
            ));
        }
        Ok(())
    }

    /// Directory holding the hourly error logs: `<dir>/errors`.
    pub(crate) fn errors_dir(&self) -> PathBuf {
        self.dir
            .as_deref()
            .unwrap_or_else(|| Path::new("data"))
            .join("errors")
    }
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    InstanceDown,
    InstanceUp,
    /// Every attempted instance of one backend failed for a request. Raised per backend of the chain, so
    /// the primary pool being down is reported even when a fallback backend then served the request.
    BackendExhausted,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InstanceDown => "instance_down",
            Self::InstanceUp => "instance_up",
            Self::BackendExhausted => "backend_exhausted",
        }
    }

    /// The alert a breaker transition deserves: opening → down, closing → up; a failed probe re-opening a
    /// breaker that is already reported down raises nothing.
    pub(crate) fn from_transition(t: Transition) -> Option<Self> {
        match (t.from, t.to) {
            (BreakerState::Closed, BreakerState::Open) => Some(Self::InstanceDown),
            (BreakerState::Open | BreakerState::HalfOpen, BreakerState::Closed) => {
                Some(Self::InstanceUp)
            }
            _ => None,
        }
    }

    /// Kinds sharing a cooldown: up and down of one instance are one stream of news.
    fn group(self) -> u8 {
        match self {
            Self::InstanceDown | Self::InstanceUp => 0,
            Self::BackendExhausted => 1,
        }
    }

    fn headline(self) -> &'static str {
        match self {
            Self::InstanceDown => "instance down",
            Self::InstanceUp => "instance back",
            Self::BackendExhausted => "backend exhausted",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub kind: AlertKind,
    pub backend: String,
    /// Instance URL; credentials in it are stripped before it is written anywhere.
    pub instance: Option<String>,
    /// Human detail, e.g. "5 errors in 60s, last: connect refused". Must not contain secrets.
    pub detail: String,
}

/// One emitted alert: the record written to the log and posted to the webhook.
#[derive(Serialize, Debug)]
struct Record<'a> {
    text: String,
    kind: &'static str,
    backend: &'a str,
    instance: Option<String>,
    detail: &'a str,
    /// Similar alerts dropped by the cooldown since the previous one for this key.
    suppressed: u32,
    timestamp: String,
}

impl<'a> Record<'a> {
    fn new(alert: &'a Alert, suppressed: u32) -> Self {
        let instance = alert.instance.as_deref().map(redacted_url);
        let mut text = format!(
            "[ai-gateway] {}: backend '{}'",
            alert.kind.headline(),
            alert.backend
        );
        if let Some(url) = &instance {
            text.push_str(&format!(" instance {url}"));
        }
        if !alert.detail.is_empty() {
            text.push_str(&format!(": {}", alert.detail));
        }
        if suppressed > 0 {
            text.push_str(&format!(" ({suppressed} similar suppressed)"));
        }
        Self {
            text,
            kind: alert.kind.as_str(),
            backend: &alert.backend,
            instance,
            detail: &alert.detail,
            suppressed,
            timestamp: jiff::Timestamp::now().to_string(),
        }
    }
}

type SlotKey = (u8, String, Option<String>);

#[derive(Debug)]
struct Slot {
    last_kind: AlertKind,
    last_at: Instant,
    suppressed: u32,
    /// A different kind raised inside the cooldown, sent when the cooldown ends.
    pending: Option<Alert>,
}

/// The cooldown policy, with time passed in so it is tested without sleeping.
#[derive(Debug)]
struct Gate {
    cooldown: Duration,
    slots: HashMap<SlotKey, Slot>,
}

impl Gate {
    fn new(cooldown: Duration) -> Self {
        Self {
            cooldown,
            slots: HashMap::new(),
        }
    }

    /// Returns the alert (and the number suppressed before it) when it should be emitted now.
    fn admit(&mut self, alert: Alert, now: Instant) -> Option<(Alert, u32)> {
        if self.slots.len() >= MAX_SLOTS {
            let cooldown = self.cooldown;
            self.slots.retain(|_, s| {
                s.pending.is_some() || now.saturating_duration_since(s.last_at) < cooldown
            });
        }
        let key = (
            alert.kind.group(),
            alert.backend.clone(),
            alert.instance.clone(),
        );
        match self.slots.get_mut(&key) {
            Some(slot) if now.saturating_duration_since(slot.last_at) < self.cooldown => {
                slot.suppressed = slot.suppressed.saturating_add(1);
                slot.pending = (alert.kind != slot.last_kind).then_some(alert);
                None
            }
            Some(slot) => {
                let suppressed = slot
                    .suppressed
                    .saturating_sub(u32::from(slot.pending.is_some()));
                *slot = Slot {
                    last_kind: alert.kind,
                    last_at: now,
                    suppressed: 0,
                    pending: None,
                };
                Some((alert, suppressed))
            }
            None => {
                self.slots.insert(
                    key,
                    Slot {
                        last_kind: alert.kind,
                        last_at: now,
                        suppressed: 0,
                        pending: None,
                    },
                );
                Some((alert, 0))
            }
        }
    }

    /// When the earliest held alert becomes due.
    fn next_due(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| s.pending.is_some())
            .map(|s| s.last_at + self.cooldown)
            .min()
    }

    /// Held alerts whose cooldown is over (all of them with `flush_all`, at shutdown).
    fn take_due(&mut self, now: Instant, flush_all: bool) -> Vec<(Alert, u32)> {
        let mut out = Vec::new();
        for slot in self.slots.values_mut() {
            let due = flush_all || now.saturating_duration_since(slot.last_at) >= self.cooldown;
            if !due {
                continue;
            }
            if let Some(alert) = slot.pending.take() {
                let suppressed = slot.suppressed.saturating_sub(1);
                slot.last_kind = alert.kind;
                slot.last_at = now;
                slot.suppressed = 0;
                out.push((alert, suppressed));
            }
        }
        out
    }
}

enum Msg {
    Alert(Alert),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the alert task. Cheap to clone; share one per process.
#[derive(Clone)]
pub(crate) struct Alerter {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl fmt::Debug for Alerter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alerter")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Alerter {
    /// Spawns the background task; must be called inside a tokio runtime. `client` is the shared HTTP client.
    pub fn start(cfg: &AlertsConfig, client: HttpClient) -> Alerter {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let worker = Worker {
            gate: Gate::new(secs(cfg.cooldown_s)),
            errors_dir: cfg.errors_dir(),
            // Validated with the config; an unparseable URL cannot reach here.
            webhook: cfg
                .webhook_url
                .as_deref()
                .and_then(|url| Target::parse(url).ok()),
            timeout: secs(cfg.timeout_s),
            client,
            deliveries: JoinSet::new(),
        };
        tokio::spawn(worker.run(rx));
        Alerter {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues an alert. Never blocks or awaits; when the queue is full the alert is dropped and counted.
    pub(crate) fn raise(&self, alert: Alert) {
        if self.tx.try_send(Msg::Alert(alert)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Alerts dropped because the queue was full or the task had stopped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Processes everything queued, sends held alerts, waits for webhook deliveries (each bounded by
    /// `timeout_s`), then stops the task. Later `raise` calls are dropped.
    pub async fn shutdown(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
    }
}

struct Worker {
    gate: Gate,
    errors_dir: PathBuf,
    webhook: Option<Target>,
    timeout: Duration,
    client: HttpClient,
    deliveries: JoinSet<()>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        loop {
            while self.deliveries.try_join_next().is_some() {}
            let due = self.gate.next_due();
            let wake = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Alert(alert)) => self.admit(alert).await,
                    Some(Msg::Shutdown(done)) => {
                        rx.close();
                        while let Ok(msg) = rx.try_recv() {
                            match msg {
                                Msg::Alert(alert) => self.admit(alert).await,
                                Msg::Shutdown(other) => { let _ = other.send(()); }
                            }
                        }
                        self.finish().await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.finish().await;
                        return;
                    }
                },
                () = wake => {
                    for (alert, suppressed) in self.gate.take_due(Instant::now(), false) {
                        self.emit(&alert, suppressed).await;
                    }
                }
            }
        }
    }

    async fn admit(&mut self, alert: Alert) {
        if let Some((alert, suppressed)) = self.gate.admit(alert, Instant::now()) {
            self.emit(&alert, suppressed).await;
        }
    }

    async fn finish(&mut self) {
        for (alert, suppressed) in self.gate.take_due(Instant::now(), true) {
            self.emit(&alert, suppressed).await;
        }
        while self.deliveries.join_next().await.is_some() {}
    }

    async fn emit(&mut self, alert: &Alert, suppressed: u32) {
        let record = Record::new(alert, suppressed);
        let line = match serde_json::to_string(&record) {
            Ok(line) => line,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialize alert");
                return;
            }
        };
        tracing::warn!(alert = %record.text, "upstream alert");
        if let Err(e) = append_line(&self.errors_dir, &line).await {
            tracing::warn!(dir = %self.errors_dir.display(), error = %e, "cannot write the alert error log");
        }
        if let Some(target) = &self.webhook {
            let mut request = http::Request::new(bytes::Bytes::from(line));
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = target.uri.clone();
            let headers = request.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            if let Some(basic) = &target.basic_auth {
                headers.insert(http::header::AUTHORIZATION, basic.clone());
            }
            let client = self.client.clone();
            let timeout = self.timeout;
            self.deliveries.spawn(async move {
                match client.send_within(request, timeout).await {
                    Ok(resp) if resp.status().is_success() => {}
                    Ok(resp) => {
                        tracing::warn!(status = %resp.status(), "alert webhook refused the alert")
                    }
                    // The URL holds the webhook's secret and is never logged: only the kind of failure.
                    Err(failure) => tracing::warn!(
                        timeout = matches!(failure, Failure::Timeout),
                        connect = matches!(failure, Failure::Connect(_)),
                        "alert webhook unreachable"
                    ),
                }
            });
        }
    }
}

/// Appends one line to `<dir>/YYYYMMDD_HH.log`, the hour in the process's local time zone.
async fn append_line(dir: &Path, line: &str) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let name = format!("{}.log", jiff::Zoned::now().strftime("%Y%m%d_%H"));
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .await?;
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    file.write_all(buf.as_bytes()).await?;
    file.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use axum::Json;
    use axum::extract::State;
    use axum::routing::post;

    fn alert(kind: AlertKind, instance: Option<&str>) -> Alert {
        Alert {
            kind,
            backend: "vllm".to_owned(),
            instance: instance.map(str::to_owned),
            detail: "5 errors in 60s".to_owned(),
        }
    }

    const A: &str = "http://user:s3cret@10.0.0.1:8000/v1?key=k3y";
    const B: &str = "http://10.0.0.2:8000/v1";

    #[test]
    fn config_defaults_and_redacted_debug() {
        let c: AlertsConfig =
            yaml_serde::from_str("{ webhook_url: 'https://hooks.slack.com/services/T0/B0/t0ken' }")
                .unwrap();
        assert_eq!(c.cooldown_s, 300.0);
        assert_eq!(c.timeout_s, 5.0);
        assert_eq!(c.errors_dir(), Path::new("data/errors"));
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("t0ken"));
        assert!(yaml_serde::from_str::<AlertsConfig>("{ cooldown: 1 }").is_err());
        let bad = AlertsConfig {
            cooldown_s: f64::NAN,
            ..AlertsConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("cooldown_s is NaN")
        );
        let bad = AlertsConfig {
            timeout_s: 0.0,
            ..AlertsConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("timeout_s is 0")
        );
    }

    #[test]
    fn transitions_map_to_alerts() {
        let t = |from, to| AlertKind::from_transition(Transition { from, to });
        use BreakerState::*;
        assert_eq!(t(Closed, Open), Some(AlertKind::InstanceDown));
        assert_eq!(t(HalfOpen, Closed), Some(AlertKind::InstanceUp));
        assert_eq!(t(Open, Closed), Some(AlertKind::InstanceUp));
        assert_eq!(t(HalfOpen, Open), None);
    }

    #[test]
    fn gate_allows_one_per_instance_per_cooldown() {
        let mut g = Gate::new(Duration::from_secs(300));
        let t0 = Instant::now();
        assert!(
            g.admit(alert(AlertKind::InstanceDown, Some(A)), t0)
                .is_some()
        );
        assert!(
            g.admit(alert(AlertKind::InstanceDown, Some(A)), t0)
                .is_none()
        );
        // Another instance, and the backend-level group, have their own cooldowns.
        assert!(
            g.admit(alert(AlertKind::InstanceDown, Some(B)), t0)
                .is_some()
        );
        assert!(
            g.admit(alert(AlertKind::BackendExhausted, None), t0)
                .is_some()
        );
        assert!(
            g.admit(alert(AlertKind::BackendExhausted, None), t0)
                .is_none()
        );
        assert_eq!(g.next_due(), None);
        // After the cooldown the same alert passes again, reporting what was suppressed.
        let (_, suppressed) = g
            .admit(
                alert(AlertKind::InstanceDown, Some(A)),
                t0 + Duration::from_secs(300),
            )
            .unwrap();
        assert_eq!(suppressed, 1);
    }

    #[test]
    fn gate_holds_a_state_flip_until_the_cooldown_ends() {
        let mut g = Gate::new(Duration::from_secs(300));
        let t0 = Instant::now();
        assert!(
            g.admit(alert(AlertKind::InstanceDown, Some(A)), t0)
                .is_some()
        );
        let t1 = t0 + Duration::from_secs(40);
        assert!(g.admit(alert(AlertKind::InstanceUp, Some(A)), t1).is_none());
        assert_eq!(g.next_due(), Some(t0 + Duration::from_secs(300)));
        assert!(g.take_due(t1, false).is_empty());
        let due = g.take_due(t0 + Duration::from_secs(300), false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0.kind, AlertKind::InstanceUp);
        assert_eq!(g.next_due(), None);

        // Down → up → down within the cooldown: the held "up" is cancelled, nothing more to say.
        let t2 = t0 + Duration::from_secs(1000);
        assert!(
            g.admit(alert(AlertKind::InstanceDown, Some(B)), t2)
                .is_some()
        );
        assert!(g.admit(alert(AlertKind::InstanceUp, Some(B)), t2).is_none());
        assert!(
            g.admit(alert(AlertKind::InstanceDown, Some(B)), t2)
                .is_none()
        );
        assert_eq!(g.next_due(), None);
    }

    #[derive(Clone, Default)]
    struct Received(Arc<Mutex<Vec<serde_json::Value>>>);

    async fn hook(State(rx): State<Received>, Json(body): Json<serde_json::Value>) {
        rx.0.lock().unwrap().push(body);
    }

    async fn webhook_server() -> (String, Received) {
        let received = Received::default();
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/hook"), received)
    }

    fn client() -> HttpClient {
        HttpClient::new().unwrap()
    }

    #[tokio::test]
    async fn webhook_and_error_log_get_one_message_per_state_change() {
        let (url, received) = webhook_server().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = AlertsConfig {
            webhook_url: Some(url),
            dir: Some(dir.path().to_owned()),
            ..AlertsConfig::default()
        };
        let alerter = Alerter::start(&cfg, client());
        for _ in 0..3 {
            alerter.raise(alert(AlertKind::InstanceDown, Some(A)));
        }
        alerter.raise(alert(AlertKind::InstanceDown, Some(B)));
        for _ in 0..5 {
            alerter.raise(alert(AlertKind::BackendExhausted, None));
        }
        // Instance A comes back within its cooldown: held, then sent at shutdown as the final word.
        alerter.raise(alert(AlertKind::InstanceUp, Some(A)));
        alerter.shutdown().await;
        assert_eq!(alerter.dropped(), 0);

        // Webhook deliveries run concurrently, so their arrival order is not fixed: sort by kind, instance.
        let mut bodies = received.0.lock().unwrap().clone();
        bodies.sort_by_key(|b| (b["kind"].to_string(), b["instance"].to_string()));
        let kinds: Vec<(String, Option<String>)> = bodies
            .iter()
            .map(|b| {
                (
                    b["kind"].as_str().unwrap().to_owned(),
                    b["instance"].as_str().map(str::to_owned),
                )
            })
            .collect();
        let redacted_a = Some("http://10.0.0.1:8000/v1".to_owned());
        assert_eq!(
            kinds,
            [
                ("backend_exhausted".to_owned(), None),
                ("instance_down".to_owned(), redacted_a.clone()),
                ("instance_down".to_owned(), Some(B.to_owned())),
                ("instance_up".to_owned(), redacted_a),
            ]
        );
        let first = &bodies[1];
        assert_eq!(
            first["text"],
            "[ai-gateway] instance down: backend 'vllm' instance http://10.0.0.1:8000/v1: 5 errors in 60s"
        );
        assert_eq!(first["backend"], "vllm");
        assert_eq!(first["detail"], "5 errors in 60s");
        assert!(
            first["timestamp"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        assert_eq!(bodies[3]["suppressed"], 2);
        let raw = serde_json::to_string(&bodies).unwrap();
        assert!(!raw.contains("s3cret") && !raw.contains("k3y"), "{raw}");

        let logs: Vec<_> = std::fs::read_dir(dir.path().join("errors"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(logs.len(), 1, "{logs:?}");
        let name = logs[0].file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(name.len(), "YYYYMMDD_HH.log".len(), "{name}");
        assert_eq!(&name[8..9], "_");
        assert!(name[..8].bytes().all(|b| b.is_ascii_digit()), "{name}");
        let text = std::fs::read_to_string(&logs[0]).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[2]["kind"], "backend_exhausted");
        assert!(!text.contains("s3cret"));

        // After shutdown, raising is a counted no-op.
        alerter.raise(alert(AlertKind::InstanceDown, Some(B)));
        assert_eq!(alerter.dropped(), 1);
    }

    #[tokio::test]
    async fn held_alert_is_sent_when_cooldown_ends() {
        // Real time with a short cooldown (tokio's `test-util` clock is not enabled in this crate); the
        // exact timing policy is covered by the `Gate` tests above, this checks the task's timer path.
        let dir = tempfile::tempdir().unwrap();
        let cfg = AlertsConfig {
            dir: Some(dir.path().to_owned()),
            cooldown_s: 0.2,
            ..AlertsConfig::default()
        };
        let alerter = Alerter::start(&cfg, client());
        alerter.raise(alert(AlertKind::InstanceDown, Some(B)));
        alerter.raise(alert(AlertKind::InstanceUp, Some(B)));
        let log = || -> Vec<serde_json::Value> {
            let Ok(entries) = std::fs::read_dir(dir.path().join("errors")) else {
                return Vec::new();
            };
            entries
                .flat_map(|e| {
                    let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
                    text.lines()
                        .map(|l| serde_json::from_str(l).unwrap())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while log().len() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Not flushed by shutdown: the timer sent it while the alerter was running.
        let lines = log();
        alerter.shutdown().await;
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["kind"], "instance_down");
        assert_eq!(lines[1]["kind"], "instance_up");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn raise_never_blocks_when_the_queue_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AlertsConfig {
            dir: Some(dir.path().to_owned()),
            ..AlertsConfig::default()
        };
        let alerter = Alerter::start(&cfg, client());
        // The task cannot run while this loop holds the only thread: the queue fills and raise drops.
        for i in 0..(QUEUE_CAPACITY + 10) {
            alerter.raise(Alert {
                kind: AlertKind::BackendExhausted,
                backend: format!("b{i}"),
                instance: None,
                detail: String::new(),
            });
        }
        assert_eq!(alerter.dropped(), 10);
    }
}
