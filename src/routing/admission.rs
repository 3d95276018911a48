//! Admission: a per-instance cap on requests in flight (`max_in_flight`) with a bounded FIFO wait at the
//! gateway, so a burst waits here for a free slot on a good instance instead of deepening one replica's
//! queue — and a full queue or a wait that runs out is a 503 with `Retry-After`, never a hang.
//!
//! One fair semaphore per backend holds as many permits as its instances' caps add up to; a request takes
//! one before it picks an instance and keeps it for as long as it is in flight there (its whole stream),
//! so holding a permit means some instance has a free slot. Waiters are served in arrival order (tokio's
//! semaphore is FIFO and a newcomer never overtakes a waiter). At most `queue.max_waiting` wait; each at
//! most `queue.max_wait_s`. The instance is then chosen as usual, full ones last; instances ejected by
//! their breaker keep their permits, so while one is out the others may take a request beyond their cap
//! rather than leave it waiting.
//!
//! Long-lived per backend name, so a reload that keeps a backend's caps keeps its queue and the permits
//! in flight; one that changes them starts a new semaphore (requests already admitted finish on the old).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config_error::Invalid;

/// `queue:` of a backend whose instances have a `max_in_flight`.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Requests that may wait for a slot; beyond that a request is refused at once.
    pub max_waiting: usize,
    /// Longest wait for a slot.
    pub max_wait_s: f64,
    /// `Retry-After` sent with a refusal.
    pub retry_after_s: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_waiting: 256,
            max_wait_s: 30.0,
            retry_after_s: 1,
        }
    }
}

impl QueueConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if !(self.max_wait_s.is_finite() && self.max_wait_s >= 0.0 && self.max_wait_s <= 3600.0) {
            return Err(Invalid::new(
                "queue",
                format!(
                    "queue.max_wait_s is {}; it must be a number of seconds from 0 to 3600",
                    self.max_wait_s
                ),
            ));
        }
        if self.retry_after_s > 3600 {
            return Err(Invalid::new(
                "queue",
                format!(
                    "queue.retry_after_s is {}; it must be at most 3600",
                    self.retry_after_s
                ),
            ));
        }
        Ok(())
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_waiting` requests were already waiting.
    QueueFull,
    /// No slot freed within `max_wait_s`.
    Timeout,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::QueueFull => "queue_full",
            Refusal::Timeout => "timeout",
        }
    }
}

/// The admission state of one backend.
#[derive(Debug)]
pub struct Admission {
    semaphore: Arc<Semaphore>,
    slots: usize,
    queue: QueueConfig,
    waiting: AtomicUsize,
}

impl Admission {
    pub fn new(slots: usize, queue: QueueConfig) -> Admission {
        Admission {
            semaphore: Arc::new(Semaphore::new(slots.min(Semaphore::MAX_PERMITS))),
            slots,
            queue,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A slot somewhere in the backend: at once when one is free, else after the requests already
    /// waiting, within `max_wait_s`. `on_wait` is called with the queue length when this request starts
    /// and stops waiting (for the metrics).
    pub async fn acquire(&self, on_wait: impl Fn(usize)) -> Result<OwnedSemaphorePermit, Refusal> {
        if let Ok(permit) = Arc::clone(&self.semaphore).try_acquire_owned() {
            return Ok(permit);
        }
        let ahead = self.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting {
            count: &self.waiting,
            on_wait: &on_wait,
        };
        if ahead >= self.queue.max_waiting {
            drop(waiting);
            return Err(Refusal::QueueFull);
        }
        on_wait(ahead + 1);
        let wait = Duration::from_secs_f64(self.queue.max_wait_s);
        let acquired =
            tokio::time::timeout(wait, Arc::clone(&self.semaphore).acquire_owned()).await;
        drop(waiting);
        match acquired {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a closed one refuses like a full queue.
            Ok(Err(_)) => Err(Refusal::QueueFull),
            Err(_) => Err(Refusal::Timeout),
        }
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    pub fn free(&self) -> usize {
        self.semaphore.available_permits()
    }

    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(self.queue.retry_after_s)
    }

    pub fn max_waiting(&self) -> usize {
        self.queue.max_waiting
    }

    pub(crate) fn max_wait(&self) -> Duration {
        Duration::from_secs_f64(self.queue.max_wait_s)
    }
}

/// Counts a waiting request until it stops waiting (admitted, refused, or dropped with its client).
struct Waiting<'a, F: Fn(usize)> {
    count: &'a AtomicUsize,
    on_wait: &'a F,
}

impl<F: Fn(usize)> Drop for Waiting<'_, F> {
    fn drop(&mut self) {
        let before = self.count.fetch_sub(1, Ordering::Relaxed);
        (self.on_wait)(before.saturating_sub(1));
    }
}

/// Admission state by backend name, kept across reloads while the backend's caps stay the same.
#[derive(Debug, Default)]
pub(crate) struct Admissions {
    map: Mutex<HashMap<String, Arc<Admission>>>,
}

impl Admissions {
    pub(crate) fn get_or_create(
        &self,
        backend: &str,
        slots: usize,
        queue: &QueueConfig,
    ) -> Arc<Admission> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = map.get(backend)
            && existing.slots == slots
            && existing.queue == *queue
        {
            return Arc::clone(existing);
        }
        let admission = Arc::new(Admission::new(slots, queue.clone()));
        map.insert(backend.to_owned(), Arc::clone(&admission));
        admission
    }

    pub(crate) fn retain(&self, live: &[&str]) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|name, _| live.contains(&name.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(max_waiting: usize, max_wait_s: f64) -> QueueConfig {
        QueueConfig {
            max_waiting,
            max_wait_s,
            retry_after_s: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order_when_slots_free() {
        let admission = Arc::new(Admission::new(1, queue(10, 60.0)));
        let first = admission.acquire(|_| {}).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let admission = Arc::clone(&admission);
            let order = Arc::clone(&order);
            tasks.push(tokio::spawn(async move {
                let permit = admission.acquire(|_| {}).await.unwrap();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(permit);
            }));
            // Let each one queue before the next arrives.
            tokio::task::yield_now().await;
        }
        assert_eq!(admission.waiting(), 3);
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
        assert_eq!(admission.waiting(), 0);
        assert_eq!(admission.free(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_at_once_and_a_long_wait_times_out() {
        let admission = Arc::new(Admission::new(1, queue(1, 5.0)));
        let _held = admission.acquire(|_| {}).await.unwrap();
        let waiter = {
            let admission = Arc::clone(&admission);
            tokio::spawn(async move { admission.acquire(|_| {}).await.map(drop) })
        };
        tokio::task::yield_now().await;
        assert_eq!(
            admission.acquire(|_| {}).await.unwrap_err(),
            Refusal::QueueFull
        );
        // The waiter gives up after max_wait_s (paused time advances on its own).
        assert_eq!(waiter.await.unwrap().unwrap_err(), Refusal::Timeout);
        assert_eq!(admission.waiting(), 0);
    }

    #[test]
    fn reloads_keep_the_queue_unless_the_caps_change() {
        let all = Admissions::default();
        let a = all.get_or_create("v", 16, &QueueConfig::default());
        assert!(Arc::ptr_eq(
            &a,
            &all.get_or_create("v", 16, &QueueConfig::default())
        ));
        assert!(!Arc::ptr_eq(
            &a,
            &all.get_or_create("v", 8, &QueueConfig::default())
        ));
        assert!(
            queue(1, -1.0)
                .validate()
                .unwrap_err()
                .to_string()
                .contains("queue.max_wait_s is -1")
        );
    }
}
