//! Bucket arithmetic shared by the in-memory store and mirrored by the Redis Lua scripts.
//!
//! Three bucket kinds cover every limit: GCRA (token bucket), an exact sliding window (a log of what was
//! admitted and when: a cost is admitted iff the units admitted in the trailing window plus the cost
//! fit the limit) and a fixed counter for calendar quotas (whose key carries the period, so it resets
//! by changing key). All times are microseconds since the UNIX epoch as `f64` (exact for integers
//! below 2^53).
//!
//! The window log keeps one entry per admission still inside the window (admissions in the same
//! microsecond share one), so a request limit of N holds at most N entries. A hard cap,
//! [`MAX_LOG_ENTRIES`], bounds a token limit's log too: past it the two oldest entries merge into the
//! later one's time, which can only delay a unit's expiry — never admit more than the limit.

/// What a bucket is and its parameters; the state lives in a store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BucketKind {
    /// GCRA: one unit is emitted every `emission_us`; up to `burst` units may be taken at once.
    Gcra { emission_us: f64, burst: f64 },
    /// At most `limit` units admitted in any trailing window of `window_us`.
    Window { window_us: f64, limit: f64 },
    /// At most `limit` units until `period_end_us`.
    Fixed { limit: f64, period_end_us: f64 },
}

impl BucketKind {
    /// Largest cost the bucket can ever admit.
    pub(crate) fn capacity(&self) -> f64 {
        match *self {
            BucketKind::Gcra { burst, .. } => burst,
            BucketKind::Window { limit, .. } | BucketKind::Fixed { limit, .. } => limit,
        }
    }
}

/// Stored state of one bucket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BucketState {
    Gcra { tat: f64 },
    Window(WindowLog),
    Fixed { used: i64 },
}

/// What a sliding window admitted and when: `(time, units)` in time order, and their sum.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct WindowLog {
    entries: std::collections::VecDeque<(f64, i64)>,
    total: i64,
}

/// Most entries one window log holds (see the module doc): 16 bytes each.
pub(crate) const MAX_LOG_ENTRIES: usize = 10_000;

impl WindowLog {
    /// Drop the entries that left the window (admitted at or before `now - window_us`).
    fn expire(&mut self, window_us: f64, now: f64) {
        while let Some(&(at, units)) = self.entries.front() {
            if at + window_us > now {
                break;
            }
            self.entries.pop_front();
            self.total -= units;
        }
    }

    /// Record `units` admitted at `at` (never before the newest entry: a clock that stepped back
    /// counts from the newest time).
    fn record(&mut self, at: f64, units: i64) {
        match self.entries.back_mut() {
            Some((last, sum)) if *last >= at => *sum += units,
            _ => self.entries.push_back((at, units)),
        }
        self.total += units;
        if self.entries.len() > MAX_LOG_ENTRIES
            && let Some((_, units)) = self.entries.pop_front()
            && let Some((_, next)) = self.entries.front_mut()
        {
            *next += units;
        }
    }

    /// Correct the entry admitted at `at` by `delta` (never below zero); an entry no longer in the log
    /// is added back when `delta` charges more and `at` is still inside the window.
    fn adjust(&mut self, at: f64, delta: i64, window_us: f64, now: f64) -> bool {
        let index = self.entries.partition_point(|&(time, _)| time < at);
        match self.entries.get_mut(index) {
            Some((time, units)) if *time == at => {
                let new = (*units + delta).max(0);
                self.total += new - *units;
                *units = new;
                true
            }
            _ if delta > 0 && at + window_us > now => {
                self.entries.insert(index, (at, delta));
                self.total += delta;
                true
            }
            _ => false,
        }
    }

    /// When the last entry leaves the window.
    fn empty_at(&self, window_us: f64) -> Option<f64> {
        self.entries.back().map(|&(at, _)| at + window_us)
    }
}

/// Result of checking one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub allowed: bool,
    /// When denied: how long until this cost would fit, assuming no other traffic.
    pub retry_after_us: u64,
    /// Units left after this request (when allowed) or now (when denied).
    pub remaining: u64,
    /// How long until the bucket is back to its full capacity.
    pub reset_us: u64,
    /// The admission's time in microseconds (sliding window), so a later correction finds its entry.
    pub mark: i64,
}

fn ceil_us(v: f64) -> u64 {
    if v <= 0.0 { 0 } else { v.ceil() as u64 }
}

fn floor_u(v: f64) -> u64 {
    if v <= 0.0 { 0 } else { v.floor() as u64 }
}

/// Small tolerance for the weighted window sum, whose fractions are not exact in binary.
const EPS: f64 = 1e-9;

/// What an allowed check changes in its bucket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Update {
    /// The bucket's new state and the time after which it equals an empty bucket.
    Set(BucketState, f64),
    /// Sliding window: record `units` admitted at `at`; the log is empty again after `expires`.
    Record { at: f64, units: i64, expires: f64 },
}

/// Bring a stored state up to `now` before it is read: a window log drops what left the window.
pub(crate) fn expire(kind: BucketKind, state: &mut BucketState, now: f64) {
    if let (BucketKind::Window { window_us, .. }, BucketState::Window(log)) = (kind, state) {
        log.expire(window_us, now);
    }
}

/// Apply an allowed check's update to the stored state (`None`: no state yet); returns the new expiry.
pub(crate) fn apply(state: &mut Option<BucketState>, update: Update) -> f64 {
    match update {
        Update::Set(new, expires) => {
            *state = Some(new);
            expires
        }
        Update::Record { at, units, expires } => {
            if !matches!(state, Some(BucketState::Window(_))) {
                *state = Some(BucketState::Window(WindowLog::default()));
            }
            if let Some(BucketState::Window(log)) = state
                && units > 0
            {
                log.record(at, units);
            }
            expires
        }
    }
}

/// Checks `cost` against the bucket at `now` (its state already brought up to `now` by [`expire`]);
/// returns the outcome and, when allowed, the update that charges it.
pub(crate) fn evaluate(
    kind: BucketKind,
    state: Option<&BucketState>,
    cost: u64,
    now: f64,
) -> (Outcome, Option<Update>) {
    match kind {
        BucketKind::Gcra { emission_us, burst } => gcra(emission_us, burst, state, cost, now),
        BucketKind::Window { window_us, limit } => window(window_us, limit, state, cost, now),
        BucketKind::Fixed {
            limit,
            period_end_us,
        } => fixed(limit, period_end_us, state, cost, now),
    }
}

/// A GCRA bucket: the theoretical arrival time moves on by `emission_us` per unit; a request fits
/// while it stays within `burst` emissions of now.
fn gcra(
    emission_us: f64,
    burst: f64,
    state: Option<&BucketState>,
    cost: u64,
    now: f64,
) -> (Outcome, Option<Update>) {
    let cost_f = cost as f64;
    let stored = match state {
        Some(BucketState::Gcra { tat }) => *tat,
        _ => now,
    };
    let tat = stored.max(now);
    let new_tat = tat + emission_us * cost_f;
    let allow_at = new_tat - emission_us * burst;
    if allow_at > now + EPS {
        let outcome = Outcome {
            allowed: false,
            retry_after_us: ceil_us(allow_at - now).max(1),
            remaining: floor_u(burst - (tat - now) / emission_us + EPS).min(burst as u64),
            reset_us: ceil_us(tat - now),
            mark: 0,
        };
        (outcome, None)
    } else {
        let outcome = Outcome {
            allowed: true,
            retry_after_us: 0,
            remaining: floor_u((now - allow_at) / emission_us + EPS),
            reset_us: ceil_us(new_tat - now),
            mark: 0,
        };
        (
            outcome,
            Some(Update::Set(BucketState::Gcra { tat: new_tat }, new_tat)),
        )
    }
}

/// A sliding window log: the units recorded in the last `window_us`, against `limit`.
fn window(
    window_us: f64,
    limit: f64,
    state: Option<&BucketState>,
    cost: u64,
    now: f64,
) -> (Outcome, Option<Update>) {
    let cost_f = cost as f64;
    let empty = WindowLog::default();
    let log = match state {
        Some(BucketState::Window(log)) => log,
        _ => &empty,
    };
    let used = log.total.max(0) as f64;
    let empty_at = log.empty_at(window_us);
    if used + cost_f <= limit {
        let outcome = Outcome {
            allowed: true,
            retry_after_us: 0,
            remaining: floor_u(limit - used - cost_f),
            reset_us: if cost > 0 {
                ceil_us(window_us)
            } else {
                empty_at.map_or(0, |at| ceil_us(at - now))
            },
            mark: now as i64,
        };
        let update = Update::Record {
            at: now,
            units: cost as i64,
            expires: if cost > 0 {
                now + window_us
            } else {
                empty_at.unwrap_or(now)
            },
        };
        (outcome, Some(update))
    } else {
        // The earliest time enough of the oldest entries have left the window for `cost`.
        let mut left = used;
        let mut fits_at = None;
        for &(at, units) in &log.entries {
            left -= units as f64;
            if left + cost_f <= limit {
                fits_at = Some(at + window_us);
                break;
            }
        }
        let outcome = Outcome {
            allowed: false,
            retry_after_us: ceil_us(fits_at.unwrap_or(now + window_us) - now).max(1),
            remaining: floor_u(limit - used),
            reset_us: empty_at.map_or(0, |at| ceil_us(at - now)),
            mark: now as i64,
        };
        (outcome, None)
    }
}

/// A fixed period (a quota): the units used until `period_end_us`, against `limit`.
fn fixed(
    limit: f64,
    period_end_us: f64,
    state: Option<&BucketState>,
    cost: u64,
    now: f64,
) -> (Outcome, Option<Update>) {
    let cost_f = cost as f64;
    let used = match state {
        Some(BucketState::Fixed { used }) => *used,
        _ => 0,
    };
    let left = ceil_us(period_end_us - now);
    if used as f64 + cost_f <= limit {
        let outcome = Outcome {
            allowed: true,
            retry_after_us: 0,
            remaining: floor_u(limit - used as f64 - cost_f),
            reset_us: left,
            mark: 0,
        };
        (
            outcome,
            Some(Update::Set(
                BucketState::Fixed {
                    used: used + cost as i64,
                },
                period_end_us,
            )),
        )
    } else {
        let outcome = Outcome {
            allowed: false,
            retry_after_us: left.max(1),
            remaining: floor_u(limit - used as f64),
            reset_us: left,
            mark: 0,
        };
        (outcome, None)
    }
}

/// Applies a correction of `delta` units (positive: charge more, negative: refund) to a bucket
/// charged earlier; `mark` is the outcome's mark from that charge. Returns the state's new expiry, or
/// `None` when there is nothing left to correct (the charge has already expired).
pub(crate) fn adjust(
    kind: BucketKind,
    state: &mut Option<BucketState>,
    mark: i64,
    delta: i64,
    now: f64,
) -> Option<f64> {
    match kind {
        BucketKind::Gcra { emission_us, .. } => {
            let tat = match state {
                Some(BucketState::Gcra { tat }) => tat.max(now),
                _ if delta > 0 => now,
                _ => return None,
            };
            let new_tat = (tat + emission_us * delta as f64).max(now);
            *state = Some(BucketState::Gcra { tat: new_tat });
            Some(new_tat)
        }
        BucketKind::Window { window_us, .. } => {
            if !matches!(state, Some(BucketState::Window(_))) {
                *state = Some(BucketState::Window(WindowLog::default()));
            }
            let Some(BucketState::Window(log)) = state else {
                return None;
            };
            log.expire(window_us, now);
            if !log.adjust(mark as f64, delta, window_us, now) {
                return None;
            }
            log.empty_at(window_us)
        }
        BucketKind::Fixed { period_end_us, .. } => {
            if now >= period_end_us {
                return None;
            }
            let used = match state {
                Some(BucketState::Fixed { used }) => *used,
                _ => 0,
            };
            *state = Some(BucketState::Fixed {
                used: (used + delta).max(0),
            });
            Some(period_end_us)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: f64 = 1_000_000.0;

    /// A bucket's stored state, checked and charged the way the stores do it.
    #[derive(Default)]
    struct Bucket(Option<BucketState>);

    impl Bucket {
        fn check(&mut self, kind: BucketKind, cost: u64, now: f64) -> Outcome {
            if let Some(state) = &mut self.0 {
                expire(kind, state, now);
            }
            let (outcome, update) = evaluate(kind, self.0.as_ref(), cost, now);
            if let Some(update) = update {
                apply(&mut self.0, update);
            }
            outcome
        }

        fn peek(&mut self, kind: BucketKind, now: f64) -> Outcome {
            if let Some(state) = &mut self.0 {
                expire(kind, state, now);
            }
            evaluate(kind, self.0.as_ref(), 0, now).0
        }
    }

    /// Runs `costs` through one bucket at the given times; returns the outcomes.
    fn run(kind: BucketKind, steps: &[(f64, u64)]) -> Vec<Outcome> {
        let mut bucket = Bucket::default();
        steps
            .iter()
            .map(|&(t, cost)| bucket.check(kind, cost, t))
            .collect()
    }

    #[test]
    fn gcra_rate_5_per_s_burst_10() {
        let kind = BucketKind::Gcra {
            emission_us: S / 5.0,
            burst: 10.0,
        };
        let t0 = 1_700_000_000.0 * S;
        let mut steps: Vec<(f64, u64)> = (0..11).map(|_| (t0, 1)).collect();
        steps.push((t0 + 0.2 * S, 1)); // one unit refilled after 200 ms
        steps.push((t0 + 0.2 * S, 1));
        let out = run(kind, &steps);
        assert!(out[..10].iter().all(|o| o.allowed));
        assert_eq!(out[0].remaining, 9);
        assert_eq!(out[9].remaining, 0);
        assert!(!out[10].allowed);
        assert_eq!(out[10].retry_after_us, 200_000);
        assert!(out[11].allowed);
        assert!(!out[12].allowed);
    }

    /// Issue 23 item 4: limit 2 per 2 s; 200, 200, 429; 2.5 s later the next request is admitted
    /// (the two-fixed-windows approximation refused it).
    #[test]
    fn sliding_window_admits_a_client_that_waited_a_full_window() {
        let kind = BucketKind::Window {
            window_us: 2.0 * S,
            limit: 2.0,
        };
        // A burst early in a window (the approximation's worst case).
        let t0 = 1_000.0 * 2.0 * S + 0.1 * S;
        let out = run(
            kind,
            &[
                (t0, 1),
                (t0, 1),
                (t0, 1),
                (t0 + 2.5 * S, 1),
                (t0 + 2.5 * S, 1),
                (t0 + 2.5 * S, 1),
            ],
        );
        let allowed: Vec<bool> = out.iter().map(|o| o.allowed).collect();
        assert_eq!(allowed, [true, true, false, true, true, false]);
        // The refused one was told to wait until the burst leaves the window.
        assert_eq!(out[2].retry_after_us, 2_000_000);
    }

    /// Seed 000: 5 per minute per IP; after a minute's wait request 7 is served.
    #[test]
    fn sliding_window_is_exact_over_the_trailing_window() {
        let kind = BucketKind::Window {
            window_us: 60.0 * S,
            limit: 5.0,
        };
        let t0 = 7_000.0 * S;
        let mut bucket = Bucket::default();
        // Admissions at t0, t0+10, t0+20, t0+30, t0+40; refused at t0+50 and at t0+59.999.
        for i in 0..5 {
            assert!(bucket.check(kind, 1, t0 + f64::from(i) * 10.0 * S).allowed);
        }
        let refused = bucket.check(kind, 1, t0 + 50.0 * S);
        assert!(!refused.allowed);
        assert_eq!(
            refused.retry_after_us, 10_000_000,
            "until t0's admission leaves"
        );
        assert_eq!(refused.remaining, 0);
        assert!(!bucket.check(kind, 1, t0 + 60.0 * S - 1.0).allowed);
        // At exactly t0+60 s the first admission has left the trailing window: one fits, not two.
        assert!(bucket.check(kind, 1, t0 + 60.0 * S).allowed);
        assert!(!bucket.check(kind, 1, t0 + 60.0 * S).allowed);
        // Refusals never count: at t0+70 the t0+10 admission left, so exactly one more fits.
        assert!(bucket.check(kind, 1, t0 + 70.0 * S).allowed);
        assert!(!bucket.check(kind, 1, t0 + 70.0 * S).allowed);
        // A minute after everything, the whole limit is back.
        let later = t0 + 200.0 * S;
        assert_eq!(bucket.peek(kind, later).remaining, 5);
        assert_eq!(bucket.peek(kind, later).reset_us, 0);
    }

    /// Every admission decision equals a brute-force count over all admissions so far.
    #[test]
    fn sliding_window_matches_a_brute_force_count() {
        let kind = BucketKind::Window {
            window_us: 10.0 * S,
            limit: 7.0,
        };
        let mut bucket = Bucket::default();
        let mut admitted: Vec<(f64, u64)> = Vec::new();
        let mut t = 1_000.0 * S;
        let mut seed: u64 = 42;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for _ in 0..5_000 {
            t += (next() % 3_000_000) as f64;
            let cost = next() % 4;
            let used: u64 = admitted
                .iter()
                .filter(|(at, _)| at + 10.0 * S > t)
                .map(|(_, units)| units)
                .sum();
            let expected = used + cost <= 7;
            let outcome = bucket.check(kind, cost, t);
            assert_eq!(outcome.allowed, expected, "t={t} used={used} cost={cost}");
            if outcome.allowed {
                admitted.push((t, cost));
                assert_eq!(outcome.remaining, 7 - used - cost);
            }
        }
    }

    #[test]
    fn window_log_is_bounded() {
        let kind = BucketKind::Window {
            window_us: 3600.0 * S,
            limit: 1e9,
        };
        let mut bucket = Bucket::default();
        for i in 0..(MAX_LOG_ENTRIES + 500) {
            assert!(bucket.check(kind, 2, 1e15 + i as f64).allowed);
        }
        let Some(BucketState::Window(log)) = &bucket.0 else {
            panic!("no window log");
        };
        assert_eq!(log.entries.len(), MAX_LOG_ENTRIES);
        // Merging keeps every unit: none are admitted beyond the limit.
        assert_eq!(log.total, 2 * (MAX_LOG_ENTRIES as i64 + 500));
        assert_eq!(log.entries.iter().map(|e| e.1).sum::<i64>(), log.total);
    }

    #[test]
    fn sliding_window_retry_after_is_exact() {
        let kind = BucketKind::Window {
            window_us: 10.0 * S,
            limit: 4.0,
        };
        let t0 = 500.0 * 10.0 * S;
        let mut bucket = Bucket::default();
        for i in 0..4 {
            assert!(bucket.check(kind, 1, t0 + f64::from(i) * S).allowed);
        }
        let denied = bucket.check(kind, 2, t0 + 5.0 * S);
        assert!(!denied.allowed);
        // Two units must leave: the second admission (t0+1 s) leaves at t0+11 s.
        let at = t0 + 5.0 * S + denied.retry_after_us as f64;
        assert_eq!(at, t0 + 11.0 * S);
        assert_eq!(bucket.peek(kind, at - 1.0).remaining, 1);
        assert!(bucket.check(kind, 2, at).allowed);
    }

    #[test]
    fn fixed_counter_until_period_end() {
        let end = 2_000.0 * S;
        let kind = BucketKind::Fixed {
            limit: 3.0,
            period_end_us: end,
        };
        let out = run(
            kind,
            &[(1_000.0 * S, 2), (1_000.0 * S, 1), (1_500.0 * S, 1)],
        );
        assert!(out[0].allowed && out[1].allowed && !out[2].allowed);
        assert_eq!(out[2].retry_after_us, 500_000_000);
        assert_eq!(out[1].remaining, 0);
    }

    #[test]
    fn adjust_refunds_and_charges() {
        let now = 100.0 * S;
        let gcra = BucketKind::Gcra {
            emission_us: 1000.0,
            burst: 100.0,
        };
        let mut bucket = Bucket::default();
        let o = bucket.check(gcra, 100, now);
        assert!(o.allowed && o.remaining == 0);
        assert!(adjust(gcra, &mut bucket.0, 0, -40, now).is_some());
        assert_eq!(bucket.peek(gcra, now).remaining, 40);
        assert!(adjust(gcra, &mut bucket.0, 0, 1000, now).is_some());
        assert!(!bucket.check(gcra, 1, now).allowed);

        let window = BucketKind::Window {
            window_us: 60.0 * S,
            limit: 100.0,
        };
        let mut bucket = Bucket::default();
        let o = bucket.check(window, 80, now);
        assert!(adjust(window, &mut bucket.0, o.mark, -50, now + S).is_some());
        assert_eq!(bucket.peek(window, now + S).remaining, 70);
        // The corrected entry still leaves the window with its admission.
        assert_eq!(bucket.peek(window, now + 60.0 * S).remaining, 100);
        // A correction after the charge left the window does nothing.
        assert!(adjust(window, &mut bucket.0, o.mark, 10, now + 61.0 * S).is_none());
        assert_eq!(bucket.peek(window, now + 61.0 * S).remaining, 100);
        // A charge of 0 corrected upwards is recorded at its admission time.
        let mut bucket = Bucket::default();
        let o = bucket.check(window, 0, now);
        assert!(adjust(window, &mut bucket.0, o.mark, 30, now + S).is_some());
        assert_eq!(bucket.peek(window, now + S).remaining, 70);
        assert_eq!(bucket.peek(window, now + 60.0 * S).remaining, 100);

        let fixed = BucketKind::Fixed {
            limit: 10.0,
            period_end_us: 200.0 * S,
        };
        let mut state = None;
        assert!(adjust(fixed, &mut state, 0, -3, now).is_some());
        assert_eq!(state, Some(BucketState::Fixed { used: 0 }));
        let mut state = None;
        assert!(adjust(fixed, &mut state, 0, 3, 300.0 * S).is_none());
    }
}
