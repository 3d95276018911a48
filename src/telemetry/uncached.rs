//! A request log file that does not keep what it wrote in the page cache.
//!
//! The gateway writes its request logs once and never reads them back, yet every byte would stay in the
//! page cache until memory runs short: at 50,000 requests a second that is ≈ 25 MB of new cache a
//! second, every page one the kernel takes from free memory that may never have been used. On a
//! virtual machine such a page must first be backed by the host, and writing into it costs ≈ 10× the
//! write into a page freed a moment ago (measured on the benchmark VM: 500 MB appended to files that
//! keep growing took 0.8–1.1 s of system time, 0.13–0.15 s with the advice below, which made a logged
//! request ≈ 1 µs of CPU dearer). So every [`ADVISE_EVERY`] bytes the file tells the kernel it will not
//! read the last [`ADVISE_SPAN`] bytes again (`POSIX_FADV_DONTNEED`): that starts their write-back,
//! and the pages already written back are dropped and reused for what is written next. A page still
//! being written back when first advised is covered again by the following passes, so the log's share
//! of the page cache stays near [`ADVISE_SPAN`] however long the gateway runs.

use std::fs::File;
use std::io::{self, Write};

/// Bytes written between two pieces of advice.
const ADVISE_EVERY: u64 = 4 << 20;

/// How far back each piece of advice reaches: four passes over every byte.
const ADVISE_SPAN: u64 = 4 * ADVISE_EVERY;

/// Tells the kernel that the file's bytes `[from, to)` will not be read again.
type Advise = fn(&File, u64, u64);

/// The file under the request log's `BufWriter` (see the module docs).
pub(super) struct Uncached {
    file: File,
    /// The file's length: where the next write lands (the file is opened for appending).
    len: u64,
    /// The length at which the next advice is due.
    next_advice: u64,
    advise: Advise,
}

impl Uncached {
    /// `file` opened for appending, `len` bytes long.
    pub(super) fn new(file: File, len: u64) -> Uncached {
        Uncached::with_advice(file, len, drop_cached)
    }

    fn with_advice(file: File, len: u64, advise: Advise) -> Uncached {
        Uncached {
            file,
            len,
            next_advice: next_boundary(len),
            advise,
        }
    }
}

impl Write for Uncached {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.len += written as u64;
        if self.len >= self.next_advice {
            (self.advise)(&self.file, self.len.saturating_sub(ADVISE_SPAN), self.len);
            self.next_advice = next_boundary(self.len);
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The first multiple of [`ADVISE_EVERY`] past `len`.
fn next_boundary(len: u64) -> u64 {
    (len / ADVISE_EVERY + 1) * ADVISE_EVERY
}

#[cfg(target_os = "linux")]
fn drop_cached(file: &File, from: u64, to: u64) {
    if let Some(len) = std::num::NonZeroU64::new(to.saturating_sub(from)) {
        // Advice only: a kernel that ignores it or fails keeps the pages cached, nothing else changes.
        let _ = rustix::fs::fadvise(file, from, Some(len), rustix::fs::Advice::DontNeed);
    }
}

#[cfg(not(target_os = "linux"))]
fn drop_cached(_file: &File, _from: u64, _to: u64) {}

#[cfg(test)]
mod tests {
    use std::io::BufWriter;
    use std::sync::Mutex;

    use super::*;

    /// The ranges advised by the test below (one test uses the recorder).
    static ADVISED: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

    fn record(_file: &File, from: u64, to: u64) {
        ADVISED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((from, to));
    }

    /// Through a `BufWriter`, as the log writes: every byte that reached the file, except the last
    /// `ADVISE_EVERY`, is advised at least three times; no advice reaches past what was written or
    /// further back than `ADVISE_SPAN`; a file reopened with data in it continues from its length.
    #[test]
    fn written_bytes_are_advised_behind_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let line = [b'x'; 1000];
        let prior = 3 * ADVISE_EVERY + 123;
        std::fs::write(&path, vec![b'y'; prior as usize]).unwrap();
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let mut out =
            BufWriter::with_capacity(64 * 1024, Uncached::with_advice(file, prior, record));
        let lines = 40_000u64;
        for _ in 0..lines {
            out.write_all(&line).unwrap();
        }
        out.flush().unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, prior + lines * 1000);

        let advised = ADVISED.lock().unwrap().clone();
        assert!(!advised.is_empty());
        let mut at = prior;
        for &(from, to) in &advised {
            assert!(to > at && to <= len, "advice ({from}, {to}) after {at}");
            assert!(to >= next_boundary(at), "early advice at {to}");
            assert_eq!(from, to.saturating_sub(ADVISE_SPAN));
            at = to;
        }
        assert!(
            len - at < ADVISE_EVERY + 64 * 1024,
            "last advice at {at} of {len}"
        );
        // Every byte this writer wrote, but for the last ADVISE_SPAN, was covered 3+ times.
        let mut page = prior;
        while page + ADVISE_SPAN <= at {
            let covered = advised
                .iter()
                .filter(|(from, to)| *from <= page && page < *to)
                .count();
            assert!(covered >= 3, "byte {page} advised {covered} times");
            page += 4096 * 97;
        }
    }
}
