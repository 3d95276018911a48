//! CPU-heavy work on a large body — decoding it, hashing it for the cache key, converting it to another
//! protocol, counting the tokens of its new text — runs on a blocking thread, so one coding-agent request of a megabyte never holds up the
//! other connections served by the same runtime thread (issue 25: no head-of-line blocking). Small
//! bodies are handled in place: a thread hand-off costs more than their work.

use std::sync::LazyLock;

use tokio::sync::Semaphore;

/// Bodies from this size are worked on off the runtime thread (their decode alone is about a
/// millisecond per 250 KB).
pub(crate) const OFFLOAD_FROM_BYTES: usize = 64 * 1024;

/// Offloaded jobs running at once: one per core, plus one so a core is never idle between jobs.
/// Others wait here without holding a thread (tokio would otherwise start up to 512 blocking threads,
/// each with a large body in flight).
static RUNNING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(cores() + 1));

/// Large requests between their decode and their admission at once: twice the jobs that run. A large
/// request waits for its turn here holding only its body. Without the bound, when the token counts are
/// what the gateway waits on (an agent's first turns: every text new), each waiting request would hold
/// its decoded copy as well — 256 cold turns in flight held two copies of their bodies each.
static DECODED: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(decoded_bound()));

fn decoded_bound() -> usize {
    2 * (cores() + 1)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// A turn to decode and admit a request of `bytes` bytes, to hold until it is admitted: `None` (no
/// wait) for a small body.
pub(crate) async fn decode_turn(bytes: usize) -> Option<tokio::sync::SemaphorePermit<'static>> {
    turn_in(&DECODED, bytes).await
}

async fn turn_in(turns: &Semaphore, bytes: usize) -> Option<tokio::sync::SemaphorePermit<'_>> {
    if bytes < OFFLOAD_FROM_BYTES {
        return None;
    }
    // Never closed, so acquiring cannot fail.
    turns.acquire().await.ok()
}

/// Run `work` (on a body of `bytes` bytes) in place when the body is small, else on a blocking thread.
/// A panic in `work` resumes on the caller, as if it had run in place. `None` only when the runtime is
/// shutting down and cancelled the job.
pub(crate) async fn run<T: Send + 'static>(
    bytes: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    if bytes < OFFLOAD_FROM_BYTES {
        return Some(work());
    }
    off_thread(work).await
}

/// Run `work` on a blocking thread, at most [`RUNNING`] such jobs at once: more threads than cores
/// only make each job slower (a one-core gateway running 256 token counts at once spent 4–6× the CPU
/// per request of one running them in turn).
pub(crate) async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    // The semaphore is never closed, so acquiring cannot fail; without a permit the job still runs.
    let _permit = RUNNING.acquire().await;
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Some(value),
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => None,
        },
    }
}

/// The error of a job the shutting-down runtime cancelled.
pub(crate) fn cancelled() -> crate::error::GatewayError {
    crate::error::GatewayError::new(
        crate::error::ErrorKind::ServiceUnavailable,
        "the gateway is shutting down; retry on another instance",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large work runs on another thread (the runtime thread stays free), small work in place.
    #[tokio::test(flavor = "current_thread")]
    async fn large_work_leaves_the_runtime_thread() {
        let here = std::thread::current().id();
        let small = run(10, move || std::thread::current().id()).await;
        assert_eq!(small, Some(here));
        let large = run(OFFLOAD_FROM_BYTES, move || std::thread::current().id()).await;
        assert!(large.is_some_and(|id| id != here));
        // While a long job runs, the runtime thread serves other tasks.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let job = tokio::spawn(run(OFFLOAD_FROM_BYTES, move || rx.recv().is_ok()));
        let other = tokio::spawn(async { 42 });
        assert_eq!(other.await.unwrap_or(0), 42);
        tx.send(()).unwrap_or(());
        assert_eq!(job.await.ok().flatten(), Some(true));
    }

    /// However many jobs are started, at most one per core plus one run at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_beyond_the_cores_wait_their_turn() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..32)
            .map(|_| {
                let (running, most) = (Arc::clone(&running), Arc::clone(&most));
                tokio::spawn(off_thread(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for job in jobs {
            assert_eq!(job.await.ok().flatten(), Some(()));
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let most = most.load(Ordering::SeqCst);
        assert!((1..=cores + 1).contains(&most), "{most} jobs ran at once");
    }

    /// Large requests take turns to be decoded and admitted (twice as many as the jobs that run); a
    /// small one never waits.
    #[tokio::test(flavor = "current_thread")]
    async fn large_requests_take_turns_between_decode_and_admission() {
        let turns: &'static Semaphore = Box::leak(Box::new(Semaphore::new(decoded_bound())));
        let mut held = Vec::new();
        for _ in 0..decoded_bound() {
            held.push(turn_in(turns, OFFLOAD_FROM_BYTES).await);
        }
        assert!(held.iter().all(Option::is_some));
        assert!(turn_in(turns, OFFLOAD_FROM_BYTES - 1).await.is_none());
        let waiting =
            tokio::spawn(async move { turn_in(turns, OFFLOAD_FROM_BYTES).await.is_some() });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a turn beyond the bound waits");
        held.pop();
        assert!(waiting.await.unwrap_or(false));
    }

    #[tokio::test]
    #[should_panic(expected = "boom")]
    async fn a_panic_resumes_on_the_caller() {
        let _: Option<()> = run(OFFLOAD_FROM_BYTES, || panic!("boom")).await;
    }
}
