//! In-process bucket store: a map from bucket key to state, checked and charged all-or-nothing.

use hashbrown::HashMap;

use super::engine::{self, BucketKind, BucketState, Outcome};

/// Smallest map size at which stale entries are swept.
const SWEEP_FLOOR: usize = 10_000;

/// Bucket states keyed by bucket key, each with the time after which it equals an empty bucket.
#[derive(Debug, Default)]
pub(crate) struct MemoryBuckets {
    entries: HashMap<String, (BucketState, f64)>,
    /// The map is swept when it grows past this; after a sweep it is set to twice the live size,
    /// so sweeping costs O(1) amortized per insert while the map stays bounded by live buckets.
    sweep_at: usize,
}

impl MemoryBuckets {
    /// Checks every bucket; charges all of them only if all allow (`apply`), else none.
    pub(crate) fn check(
        &mut self,
        buckets: &[(&str, BucketKind, u64)],
        now: f64,
        apply: bool,
    ) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(buckets.len());
        let mut updates = Vec::with_capacity(buckets.len());
        for &(key, kind, cost) in buckets {
            let state = self.live_state(key, kind, now);
            let (outcome, update) = engine::evaluate(kind, state, cost, now);
            outcomes.push(outcome);
            updates.push(update);
        }
        if apply && outcomes.iter().all(|o| o.allowed) {
            for (&(key, _, _), update) in buckets.iter().zip(updates) {
                if let Some(update) = update {
                    self.update(key, now, |state| Some(engine::apply(state, update)));
                }
            }
        }
        outcomes
    }

    /// Applies a later correction (refund or extra charge) to a bucket charged before.
    pub(crate) fn adjust(&mut self, key: &str, kind: BucketKind, mark: i64, delta: i64, now: f64) {
        self.live_state(key, kind, now);
        self.update(key, now, |state| {
            engine::adjust(kind, state, mark, delta, now)
        });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The bucket's state brought up to `now` (a window log drops what left the window); `None` when
    /// it has none or it expired.
    fn live_state(&mut self, key: &str, kind: BucketKind, now: f64) -> Option<&BucketState> {
        let (state, expires) = self.entries.get_mut(key)?;
        if *expires <= now {
            return None;
        }
        engine::expire(kind, state, now);
        Some(state)
    }

    /// Change the bucket's state (`change` returns its new expiry, or `None` to leave it as it was).
    fn update(
        &mut self,
        key: &str,
        now: f64,
        change: impl FnOnce(&mut Option<BucketState>) -> Option<f64>,
    ) {
        let taken = self.entries.remove_entry(key);
        let (owned_key, mut state, old_expiry) = match taken {
            Some((owned, (state, expires))) if expires > now => (Some(owned), Some(state), expires),
            Some((owned, _)) => (Some(owned), None, 0.0),
            None => (None, None, 0.0),
        };
        let existed = state.is_some();
        let expires = change(&mut state);
        let (Some(state), Some(expires)) = (state, expires.or(existed.then_some(old_expiry)))
        else {
            return;
        };
        match owned_key {
            Some(owned) => {
                self.entries.insert(owned, (state, expires));
            }
            None => {
                if self.entries.len() >= self.sweep_at.max(SWEEP_FLOOR) {
                    self.entries.retain(|_, (_, expires)| *expires > now);
                    self.sweep_at = self.entries.len() * 2;
                }
                self.entries.insert(key.to_owned(), (state, expires));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_or_nothing_across_buckets() {
        let mut map = MemoryBuckets::default();
        let a = BucketKind::Fixed {
            limit: 10.0,
            period_end_us: 1e12,
        };
        let b = BucketKind::Fixed {
            limit: 1.0,
            period_end_us: 1e12,
        };
        assert!(
            map.check(&[("a", a, 1), ("b", b, 1)], 0.0, true)
                .iter()
                .all(|o| o.allowed)
        );
        let out = map.check(&[("a", a, 1), ("b", b, 1)], 0.0, true);
        assert!(out[0].allowed && !out[1].allowed);
        // "a" was not charged by the rejected request.
        assert_eq!(map.check(&[("a", a, 0)], 0.0, false)[0].remaining, 9);
    }

    #[test]
    fn stale_entries_are_swept() {
        let mut map = MemoryBuckets::default();
        let kind = BucketKind::Gcra {
            emission_us: 1.0,
            burst: 5.0,
        };
        for i in 0..SWEEP_FLOOR {
            map.check(&[(&format!("k{i}"), kind, 1)], 0.0, true);
        }
        assert_eq!(map.len(), SWEEP_FLOOR);
        // Every earlier entry expired 1 µs after it was charged.
        map.check(&[("fresh", kind, 1)], 100.0, true);
        assert_eq!(map.len(), 1);
    }
}
