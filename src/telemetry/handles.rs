//! `HandleCache`: metric handles found without a lock or an allocation, in front of prometheus-client families.
//!
//! `Family::get_or_create` takes the family's `RwLock` on every call, and a label set with owned `String`s
//! (backend, key and model names) has to be built — allocated — just to look it up. On the request path
//! that is several locks and allocations per request. A `HandleCache` keeps an immutable map from owned
//! label sets to cloned metric handles behind an `ArcSwap`, so a hit is one atomic load, one hash lookup
//! with *borrowed* labels (hashbrown's `Equivalent`), then the metric's own atomics. A miss — the first
//! time a label set is seen — asks the family once (`get_or_create_owned`, so the series is registered
//! and rendered exactly as before) and publishes a copy of the map with the new entry (`rcu`).
//!
//! Handles are `Arc`s into the family's series, so updating through the cache and through the family is
//! the same series. Label sets come from bounded sets (route templates, statuses, configured names), so
//! the map stays small; past [`MAX_ENTRIES`] new label sets are no longer cached, only looked up in the
//! family each time, so a misconfiguration cannot make the copy-on-insert grow without bound. Series are
//! never removed from the families, so a cached handle never goes stale.

use std::hash::Hash;

use arc_swap::ArcSwap;
use hashbrown::{Equivalent, HashMap};

/// Label sets one cache holds; further ones are served by the family on every call.
pub(super) const MAX_ENTRIES: usize = 1024;

/// A label set as the hot path has it (borrowed strings), able to stand for its owned key in a lookup.
///
/// The borrowed form must hash exactly like the owned one: derive `Hash` on both with the same fields in
/// the same order (`&str` and `String` hash alike).
pub(super) trait LabelKey<K>: Hash + Equivalent<K> {
    /// The owned key, built only on a miss.
    fn to_key(&self) -> K;
}

/// Label sets without owned strings are their own borrowed form.
impl<K: Clone + Hash + Eq> LabelKey<K> for K {
    fn to_key(&self) -> K {
        self.clone()
    }
}

/// Metric handles by label set, read without locks; see the module docs.
pub(super) struct HandleCache<K, H> {
    handles: ArcSwap<HashMap<K, H>>,
}

impl<K: Clone + Hash + Eq, H: Clone> Default for HandleCache<K, H> {
    fn default() -> Self {
        HandleCache {
            handles: ArcSwap::from_pointee(HashMap::new()),
        }
    }
}

impl<K: Clone + Hash + Eq, H: Clone> HandleCache<K, H> {
    /// Calls `update` with the handle for `labels`. `create` makes the handle from the owned key, from the
    /// family, the first time this label set is seen.
    #[inline]
    pub(super) fn with<Q, R>(
        &self,
        labels: &Q,
        create: impl FnOnce(&K) -> H,
        update: impl FnOnce(&H) -> R,
    ) -> R
    where
        Q: LabelKey<K> + ?Sized,
    {
        let handles = self.handles.load();
        if let Some(handle) = handles.get(labels) {
            return update(handle);
        }
        drop(handles);
        update(&self.insert(labels.to_key(), create))
    }

    /// The miss path: create the handle and publish a new map holding it (unless the cache is full).
    #[cold]
    fn insert(&self, key: K, create: impl FnOnce(&K) -> H) -> H {
        let handle = create(&key);
        if self.handles.load().len() < MAX_ENTRIES {
            // Racing inserts of the same key carry the same family series, so whichever wins is right.
            self.handles.rcu(|current| {
                let mut next = HashMap::clone(current);
                next.entry(key.clone()).or_insert_with(|| handle.clone());
                next
            });
        }
        handle
    }

    /// Label sets cached so far.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.handles.load().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq)]
    struct Owned {
        name: String,
        code: u16,
    }

    #[derive(Hash)]
    struct Borrowed<'a> {
        name: &'a str,
        code: u16,
    }

    impl Equivalent<Owned> for Borrowed<'_> {
        fn equivalent(&self, key: &Owned) -> bool {
            self.name == key.name && self.code == key.code
        }
    }

    impl LabelKey<Owned> for Borrowed<'_> {
        fn to_key(&self) -> Owned {
            Owned {
                name: self.name.to_owned(),
                code: self.code,
            }
        }
    }

    #[test]
    fn borrowed_labels_find_the_owned_entry_and_create_runs_once_per_label_set() {
        let cache: HandleCache<Owned, Arc<AtomicU64>> = HandleCache::default();
        let created = AtomicUsize::new(0);
        let bump = |name: &str, code| {
            cache.with(
                &Borrowed { name, code },
                |_| {
                    created.fetch_add(1, Ordering::Relaxed);
                    Arc::new(AtomicU64::new(0))
                },
                |n| n.fetch_add(1, Ordering::Relaxed),
            );
        };
        for _ in 0..3 {
            bump("team-a", 200);
            bump("team-a", 500);
            bump("team-b", 200);
        }
        // A miss on every call (hashes of borrowed and owned labels disagreeing) would create each time.
        assert_eq!(created.load(Ordering::Relaxed), 3);
        assert_eq!(cache.len(), 3);
        let count = |name: &str, code| {
            cache.with(
                &Borrowed { name, code },
                |_| unreachable!("cached"),
                |n| n.load(Ordering::Relaxed),
            )
        };
        assert_eq!(count("team-a", 200), 3);
        assert_eq!(count("team-b", 200), 3);
    }

    #[test]
    fn a_full_cache_still_returns_created_handles() {
        let cache: HandleCache<u32, u32> = HandleCache::default();
        for key in 0..MAX_ENTRIES as u32 + 10 {
            assert_eq!(cache.with(&key, |k| k * 2, |h| *h), key * 2);
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert_eq!(
            cache.with(&(MAX_ENTRIES as u32 + 5), |k| k + 1, |h| *h),
            MAX_ENTRIES as u32 + 6
        );
    }
}
