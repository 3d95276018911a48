//! Idle connections: which connections wait with nothing of a request received, since when, and
//! closing them — when a new one sent nothing within `server.header_timeout_s`, when one waited
//! longer than `server.idle_timeout_s` between requests (HTTP/2: with no stream open), and the oldest
//! of them when accepting fails for want of file descriptors (nginx's `ngx_drain_connections`).
//!
//! No timer per request: a connection that starts to wait stamps its `Flags` with a coarse clock (the
//! time of the last sweep) and clears the stamp when bytes come; the accept loop sweeps every
//! connection a few times per timeout. A connection is closed by the sweeper only after it claimed
//! it (compare-and-swap from the very stamp it saw to `CLOSING`), so one that received a request
//! meanwhile is never closed: it took its stamp back first, or it sees `CLOSING` when its read returns
//! and stops. HTTP/1 connections are closed by aborting their task (they hold nothing else); HTTP/2
//! ones are woken to shut down gracefully (GOAWAY).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// `Flags::state` of a connection working on a request (or an HTTP/2 connection with a stream open).
const BUSY: u64 = 0;
/// `Flags::state` of a connection the sweeper is closing.
const CLOSING: u64 = u64::MAX;
/// Idle-state kinds (the low two bits; the rest is the stamp in milliseconds): waiting for the first
/// request (bounded by `header_timeout`) or between requests (`idle_timeout`).
const FIRST: u64 = 1;
const BETWEEN: u64 = 2;

/// Connections shed at most per failed accept, and at least one; nginx drains
/// `max(min(32, reusable / 8), 1)`.
const MAX_SHED: usize = 32;

/// What one connection's task, the shutdown watcher beside it and the sweeper share.
pub(crate) struct Flags {
    /// `BUSY`, `CLOSING`, or idle: `stamp_ms << 2 | kind`.
    state: AtomicU64,
    /// The server is stopping: no request after the one in flight.
    pub stop: AtomicBool,
    /// The connection speaks HTTP/2 (closed by `close`, not by aborting its task).
    h2: AtomicBool,
    /// HTTP/2 streams open.
    streams: AtomicUsize,
    /// Wakes an HTTP/2 connection the sweeper closes.
    close: Notify,
    shared: Arc<Shared>,
}

impl Flags {
    /// Waiting for a request with nothing of it received: the connection may be closed at once.
    pub(crate) fn is_idle(&self) -> bool {
        self.state.load(Ordering::Relaxed) != BUSY
    }

    /// The connection starts to wait for its next request.
    pub(crate) fn idle_between_requests(&self) {
        self.state
            .store(self.shared.stamp(BETWEEN), Ordering::Relaxed);
    }

    /// Bytes came: the connection works on a request. `false` when the sweeper is closing it (the
    /// connection must stop).
    pub fn busy(&self) -> bool {
        self.state.swap(BUSY, Ordering::AcqRel) != CLOSING
    }

    /// The connection turned out to speak HTTP/2: waiting for its first stream from now on.
    pub(crate) fn switch_to_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
        self.state
            .store(self.shared.stamp(FIRST), Ordering::Release);
    }

    /// An HTTP/2 stream opened.
    pub(crate) fn stream_opened(&self) {
        if self.streams.fetch_add(1, Ordering::AcqRel) == 0 {
            let _ = self
                .state
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                    (state != CLOSING).then_some(BUSY)
                });
        }
    }

    /// An HTTP/2 stream ended (its response body dropped, or its request abandoned).
    pub(crate) fn stream_closed(&self) {
        if self.streams.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let stamp = self.shared.stamp(BETWEEN);
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state == BUSY).then_some(stamp)
            });
        // A stream that opened meanwhile keeps the connection busy. (Were it closed anyway, its
        // shutdown is graceful: the open stream still finishes.)
        if self.streams.load(Ordering::Acquire) > 0 {
            let _ = self
                .state
                .compare_exchange(stamp, BUSY, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// HTTP/2 streams open.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    /// Resolves when the sweeper closes this (HTTP/2) connection.
    pub async fn closing(&self) {
        self.close.notified().await;
    }
}

/// Every connection of one server, for the sweeper.
pub(crate) struct Connections {
    shared: Arc<Shared>,
}

struct Shared {
    epoch: Instant,
    /// Milliseconds since `epoch` at the last sweep: the stamp of connections that start to wait.
    now_ms: AtomicU64,
    /// Connections by id; an entry whose connection ended (its `Flags` gone) is dropped by the next
    /// sweep.
    entries: Mutex<HashMap<u64, Entry>>,
}

struct Entry {
    flags: Weak<Flags>,
    abort: AbortHandle,
}

/// The timeouts a sweep applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// A new connection (or HTTP/2 connection with no stream yet) that sent nothing.
    pub header: Duration,
    /// Between requests (HTTP/2: no stream open).
    pub idle: Duration,
}

impl Timeouts {
    /// How often to sweep: an eighth of the shorter timeout, within 10 ms – 1 s. A connection is
    /// closed between its timeout and its timeout plus two sweep intervals.
    pub(crate) fn sweep_interval(&self) -> Duration {
        (self.header.min(self.idle) / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

impl Shared {
    fn stamp(&self, kind: u64) -> u64 {
        self.now_ms.load(Ordering::Relaxed) << 2 | kind
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            shared: Arc::new(Shared {
                epoch: Instant::now(),
                now_ms: AtomicU64::new(0),
                entries: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Connections {
    /// The flags of a connection just accepted: idle (nothing received yet) from now.
    pub fn flags(&self) -> Arc<Flags> {
        self.tick();
        Arc::new(Flags {
            state: AtomicU64::new(self.shared.stamp(FIRST)),
            stop: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            streams: AtomicUsize::new(0),
            close: Notify::new(),
            shared: Arc::clone(&self.shared),
        })
    }

    /// Track a connection whose task is running; it is forgotten once its task dropped its flags.
    pub(crate) fn track(&self, id: u64, flags: &Arc<Flags>, abort: AbortHandle) {
        let entry = Entry {
            flags: Arc::downgrade(flags),
            abort,
        };
        self.shared.entries().insert(id, entry);
    }

    /// Close the connections that waited longer than their timeout; how many were closed.
    pub(crate) fn sweep(&self, timeouts: Timeouts) -> usize {
        let now = self.tick();
        let slack = millis(timeouts.sweep_interval());
        let (header, idle) = (millis(timeouts.header), millis(timeouts.idle));
        let mut closed = 0;
        self.shared.entries().retain(|_, entry| {
            let Some(flags) = entry.flags.upgrade() else {
                return false;
            };
            let state = flags.state.load(Ordering::Acquire);
            let Some((stamp, kind)) = idle_since(state) else {
                return true;
            };
            let timeout = if kind == FIRST { header } else { idle };
            // The stamp is up to one sweep old: the slack keeps a connection from closing early.
            if now >= stamp.saturating_add(timeout).saturating_add(slack)
                && close(&flags, entry, state)
            {
                closed += 1;
            }
            true
        });
        closed
    }

    /// Out of file descriptors (or another resource accepting needs): close the connections that
    /// waited longest — up to an eighth of the idle ones, at least one, at most `MAX_SHED`. How many
    /// were closed; 0 when none was idle.
    pub(crate) fn shed(&self) -> usize {
        self.tick();
        let entries = self.shared.entries();
        let mut idle: Vec<(u64, Arc<Flags>, u64, &Entry)> = entries
            .values()
            .filter_map(|entry| {
                let flags = entry.flags.upgrade()?;
                let state = flags.state.load(Ordering::Acquire);
                let (stamp, _) = idle_since(state)?;
                Some((stamp, flags, state, entry))
            })
            .collect();
        let wanted = (idle.len() / 8).clamp(1, MAX_SHED);
        idle.sort_unstable_by_key(|(stamp, ..)| *stamp);
        idle.iter()
            .filter(|(_, flags, state, entry)| close(flags, entry, *state))
            .take(wanted)
            .count()
    }

    /// Connections tracked (ended ones included until the next sweep).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shared.entries().len()
    }

    /// Advance the coarse clock; the milliseconds since the epoch.
    fn tick(&self) -> u64 {
        let now = millis(self.shared.epoch.elapsed());
        self.shared.now_ms.store(now, Ordering::Relaxed);
        now
    }
}

/// Claim an idle connection (it is still in the state the caller saw) and close it.
fn close(flags: &Flags, entry: &Entry, seen: u64) -> bool {
    if flags
        .state
        .compare_exchange(seen, CLOSING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return false;
    }
    if flags.h2.load(Ordering::Acquire) {
        flags.close.notify_one();
    } else {
        entry.abort.abort();
    }
    true
}

/// The stamp and kind of an idle state; `None` for `BUSY` and `CLOSING`.
fn idle_since(state: u64) -> Option<(u64, u64)> {
    (state != BUSY && state != CLOSING).then_some((state >> 2, state & 3))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    /// A connection task that waits forever; its flags and its task's handle.
    fn connection(connections: &Connections, id: u64) -> (Arc<Flags>, tokio::task::JoinHandle<()>) {
        let flags = connections.flags();
        let held = Arc::clone(&flags);
        let task = tokio::spawn(async move {
            let _flags = held;
            std::future::pending::<()>().await;
        });
        connections.track(id, &flags, task.abort_handle());
        (flags, task)
    }

    #[tokio::test(start_paused = true)]
    async fn connections_idle_past_their_timeout_are_closed_busy_ones_never() {
        let connections = Connections::default();
        let (fresh, fresh_task) = connection(&connections, 1);
        let (working, working_task) = connection(&connections, 2);
        assert!(working.busy());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(connections.sweep(TIMEOUTS), 0, "within the header timeout");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(connections.sweep(TIMEOUTS), 1);
        assert!(!fresh.busy(), "closed: its next read must stop it");
        assert!(fresh_task.await.unwrap_err().is_cancelled());
        // Between requests the longer timeout applies.
        working.idle_between_requests();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(connections.sweep(TIMEOUTS), 0);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(connections.sweep(TIMEOUTS), 1);
        assert!(working_task.await.unwrap_err().is_cancelled());
        drop((fresh, working));
        connections.sweep(TIMEOUTS);
        assert_eq!(connections.len(), 0, "ended connections are forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_got_bytes_meanwhile_is_not_closed() {
        let connections = Connections::default();
        let (flags, task) = connection(&connections, 1);
        let seen = flags.state.load(Ordering::Acquire);
        assert!(flags.busy(), "bytes arrive before the sweeper claims it");
        let entries = connections.shared.entries();
        assert!(!close(&flags, &entries[&1], seen));
        drop(entries);
        assert!(!task.is_finished());
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn shedding_closes_the_oldest_idle_connections_first() {
        let connections = Connections::default();
        let mut all = Vec::new();
        for id in 0..20 {
            all.push(connection(&connections, id));
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        // The two oldest work on requests: the next oldest idle ones go.
        assert!(all[0].0.busy() && all[1].0.busy());
        assert_eq!(connections.shed(), 2, "an eighth of 18, at least one");
        let closed: Vec<usize> = all
            .iter()
            .enumerate()
            .filter(|(_, (flags, _))| flags.state.load(Ordering::Acquire) == CLOSING)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(closed, [2, 3]);
        for (flags, _) in &all[4..] {
            assert!(flags.busy());
        }
        assert_eq!(connections.shed(), 0, "nothing idle is left");
        for (_, task) in all {
            task.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_h2_connection_is_woken_not_aborted_and_streams_keep_it_busy() {
        let connections = Connections::default();
        let (flags, task) = connection(&connections, 1);
        assert!(flags.busy());
        flags.switch_to_h2();
        flags.stream_opened();
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(connections.sweep(TIMEOUTS), 0, "a stream is open");
        flags.stream_closed();
        assert!(flags.is_idle());
        tokio::time::advance(Duration::from_secs(62)).await;
        let woken = flags.closing();
        assert_eq!(connections.sweep(TIMEOUTS), 1);
        woken.await;
        assert!(
            !task.is_finished(),
            "an HTTP/2 connection shuts down by itself"
        );
        task.abort();
    }
}
