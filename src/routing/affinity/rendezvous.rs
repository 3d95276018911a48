//! Weighted rendezvous (highest-random-weight) hashing: a key's home and preference order over the
//! instances, the same on every replica.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A stable identity of an instance for hashing: every replica of the gateway derives the same one from
/// the same URL (the display form: no credentials).
pub fn instance_id(url: &str) -> u64 {
    xxh3_64_with_seed(url.as_bytes(), 0x1D)
}

/// splitmix64's finalizer: a key and an instance id mixed into a uniformly spread score.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rendezvous score of `id` for `key`; higher wins. Weighted as in "weighted rendezvous hashing"
/// (Schindelhauer & Schomaker): −w / ln(u), with u uniform in (0, 1).
/// With equal weights the order of −1 / ln(u) is the order of u itself: the raw score, no logarithm.
pub(super) fn score(key: u64, id: u64, weight: Option<u32>) -> f64 {
    let h = mix(key ^ mix(id));
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    match weight {
        None => u,
        Some(weight) => -f64::from(weight.max(1)) / u.ln(),
    }
}

/// The scores of `key` for each of `ids`, with their indices.
pub(super) fn scores<'a>(
    key: u64,
    ids: &'a [u64],
    weights: &'a [u32],
) -> impl Iterator<Item = (f64, usize)> + 'a {
    let uniform = weights.windows(2).all(|w| w[0] == w[1]);
    ids.iter().enumerate().map(move |(i, &id)| {
        let weight = (!uniform).then(|| weights.get(i).copied().unwrap_or(1));
        (score(key, id, weight), i)
    })
}

/// A key's preference order over `ids` (indices, best first).
pub fn rank(key: u64, ids: &[u64], weights: &[u32]) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = scores(key, ids, weights).collect();
    scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// A key's first choice over `ids`: `rank(..)[0]` without the sort.
pub fn home(key: u64, ids: &[u64], weights: &[u32]) -> Option<usize> {
    scores(key, ids, weights)
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, i)| i)
}
