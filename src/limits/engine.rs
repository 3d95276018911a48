//! Bucket arithmetic shared by the in-memory store and mirrored by the Redis Lua scripts.
//!
//! Three bucket kinds cover every limit: GCRA (token bucket), a sliding-window counter (two fixed
//! windows, the previous one weighted by how much of it still overlaps the sliding window) and a
//! fixed counter for calendar quotas (whose key carries the period, so it resets by changing key).
//! All times are microseconds since the UNIX epoch as `f64` (exact for integers below 2^53).

/// What a bucket is and its parameters; the state lives in a store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BucketKind {
    /// GCRA: one unit is emitted every `emission_us`; up to `burst` units may be taken at once.
    Gcra { emission_us: f64, burst: f64 },
    /// At most `limit` units in any sliding window of `window_us`.
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BucketState {
    Gcra { tat: f64 },
    Window { idx: i64, prev: i64, cur: i64 },
    Fixed { used: i64 },
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
    /// Window index charged (sliding window), so a later refund hits the same counter.
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

/// Checks `cost` against the bucket at `now`; returns the outcome and, when allowed, the new state
/// with its expiry (after which the state equals an empty bucket and may be dropped).
pub(crate) fn evaluate(
    kind: BucketKind,
    state: Option<BucketState>,
    cost: u64,
    now: f64,
) -> (Outcome, Option<(BucketState, f64)>) {
    let cost_f = cost as f64;
    match kind {
        BucketKind::Gcra { emission_us, burst } => {
            let stored = match state {
                Some(BucketState::Gcra { tat }) => tat,
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
                (outcome, Some((BucketState::Gcra { tat: new_tat }, new_tat)))
            }
        }
        BucketKind::Window { window_us, limit } => {
            let idx = (now / window_us).floor() as i64;
            let elapsed = now - idx as f64 * window_us;
            let (prev, cur) = roll(state, idx);
            let count = prev as f64 * (window_us - elapsed) / window_us + cur as f64;
            let reset = |cur: i64| {
                if cur > 0 {
                    ceil_us(window_us - elapsed + window_us)
                } else if prev > 0 {
                    ceil_us(window_us - elapsed)
                } else {
                    0
                }
            };
            if count + cost_f <= limit + EPS {
                let new_cur = cur + cost as i64;
                let outcome = Outcome {
                    allowed: true,
                    retry_after_us: 0,
                    remaining: floor_u(limit - count - cost_f + EPS),
                    reset_us: reset(new_cur),
                    mark: idx,
                };
                let expires = (idx + 2) as f64 * window_us;
                (
                    outcome,
                    Some((
                        BucketState::Window {
                            idx,
                            prev,
                            cur: new_cur,
                        },
                        expires,
                    )),
                )
            } else {
                let need = (limit - cost_f).max(0.0);
                let wait = if (cur as f64) <= need && prev > 0 {
                    let fraction = 1.0 - (need - cur as f64) / prev as f64;
                    fraction * window_us - elapsed
                } else if cur > 0 {
                    let fraction = 1.0 - need / cur as f64;
                    (window_us - elapsed) + fraction * window_us
                } else {
                    window_us - elapsed
                };
                let outcome = Outcome {
                    allowed: false,
                    retry_after_us: ceil_us(wait).max(1),
                    remaining: floor_u(limit - count + EPS),
                    reset_us: reset(cur),
                    mark: idx,
                };
                (outcome, None)
            }
        }
        BucketKind::Fixed {
            limit,
            period_end_us,
        } => {
            let used = match state {
                Some(BucketState::Fixed { used }) => used,
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
                    Some((
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
    }
}

/// The (previous, current) window counts as seen from window `idx`.
fn roll(state: Option<BucketState>, idx: i64) -> (i64, i64) {
    match state {
        Some(BucketState::Window { idx: at, prev, cur }) if at == idx => (prev, cur),
        Some(BucketState::Window { idx: at, cur, .. }) if at + 1 == idx => (cur, 0),
        _ => (0, 0),
    }
}

/// Applies a correction of `delta` units (positive: charge more, negative: refund) to a bucket
/// charged earlier; `mark` is the window index from that charge. Returns the new state and expiry,
/// or `None` when there is nothing left to correct (the charge has already expired).
pub(crate) fn adjust(
    kind: BucketKind,
    state: Option<BucketState>,
    mark: i64,
    delta: i64,
    now: f64,
) -> Option<(BucketState, f64)> {
    match kind {
        BucketKind::Gcra { emission_us, .. } => {
            let tat = match state {
                Some(BucketState::Gcra { tat }) => tat.max(now),
                _ if delta > 0 => now,
                _ => return None,
            };
            let new_tat = (tat + emission_us * delta as f64).max(now);
            Some((BucketState::Gcra { tat: new_tat }, new_tat))
        }
        BucketKind::Window { window_us, .. } => {
            let idx = (now / window_us).floor() as i64;
            let (mut prev, mut cur) = roll(state, idx);
            if mark == idx {
                cur = (cur + delta).max(0);
            } else if mark + 1 == idx {
                prev = (prev + delta).max(0);
            } else {
                return None;
            }
            Some((
                BucketState::Window { idx, prev, cur },
                (idx + 2) as f64 * window_us,
            ))
        }
        BucketKind::Fixed { period_end_us, .. } => {
            if now >= period_end_us {
                return None;
            }
            let used = match state {
                Some(BucketState::Fixed { used }) => used,
                _ => 0,
            };
            Some((
                BucketState::Fixed {
                    used: (used + delta).max(0),
                },
                period_end_us,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: f64 = 1_000_000.0;

    /// Runs `costs` through one bucket at the given times; returns which were allowed.
    fn run(kind: BucketKind, steps: &[(f64, u64)]) -> Vec<Outcome> {
        let mut state = None;
        steps
            .iter()
            .map(|&(t, cost)| {
                let (outcome, next) = evaluate(kind, state, cost, t);
                if let Some((s, _)) = next {
                    state = Some(s);
                }
                outcome
            })
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

    #[test]
    fn sliding_window_weights_previous_window() {
        let kind = BucketKind::Window {
            window_us: 60.0 * S,
            limit: 5.0,
        };
        let t0 = 1_000.0 * 60.0 * S; // start of a window
        let mut steps: Vec<(f64, u64)> = (0..6).map(|i| (t0 + i as f64 * S, 1)).collect();
        // Half-way into the next window, the previous 5 count as 2.5 → 2 more fit.
        steps.extend([(t0 + 90.0 * S, 1), (t0 + 90.0 * S, 1), (t0 + 90.0 * S, 1)]);
        let out = run(kind, &steps);
        assert!(out[..5].iter().all(|o| o.allowed));
        assert!(!out[5].allowed);
        // 5 in the current window, need room for 1: wait until 4/5 of the next window has passed.
        // At t0+5s: 55 s to the next window, then 1/5 of it must pass.
        assert!(
            out[5].retry_after_us.abs_diff(67_000_000) <= 1,
            "{:?}",
            out[5]
        );
        assert!(
            out[6].allowed && out[7].allowed && !out[8].allowed,
            "{out:?}"
        );
    }

    #[test]
    fn sliding_window_retry_after_is_exact() {
        let kind = BucketKind::Window {
            window_us: 10.0 * S,
            limit: 4.0,
        };
        let t0 = 500.0 * 10.0 * S;
        let mut state = None;
        for _ in 0..4 {
            let (o, next) = evaluate(kind, state, 1, t0);
            assert!(o.allowed);
            state = next.map(|(s, _)| s);
        }
        let (denied, _) = evaluate(kind, state, 1, t0 + 2.0 * S);
        assert!(!denied.allowed);
        let at = t0 + 2.0 * S + denied.retry_after_us as f64;
        assert!(evaluate(kind, state, 1, at).0.allowed);
        assert!(!evaluate(kind, state, 1, at - 2.0).0.allowed);
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
        let (o, next) = evaluate(gcra, None, 100, now);
        assert!(o.allowed && o.remaining == 0);
        let (state, _) = adjust(gcra, next.map(|n| n.0), 0, -40, now).unwrap();
        assert_eq!(evaluate(gcra, Some(state), 0, now).0.remaining, 40);
        let (state, _) = adjust(gcra, Some(state), 0, 1000, now).unwrap();
        assert!(!evaluate(gcra, Some(state), 1, now).0.allowed);

        let window = BucketKind::Window {
            window_us: 60.0 * S,
            limit: 100.0,
        };
        let (o, next) = evaluate(window, None, 80, now);
        let (state, _) = adjust(window, next.map(|n| n.0), o.mark, -50, now).unwrap();
        assert_eq!(evaluate(window, Some(state), 0, now).0.remaining, 70);
        assert!(adjust(window, Some(state), o.mark - 5, -10, now).is_none());

        let fixed = BucketKind::Fixed {
            limit: 10.0,
            period_end_us: 200.0 * S,
        };
        let (state, _) = adjust(fixed, None, 0, -3, now).unwrap();
        assert_eq!(state, BucketState::Fixed { used: 0 });
        assert!(adjust(fixed, None, 0, 3, 300.0 * S).is_none());
    }
}
