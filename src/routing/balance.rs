//! Instance selection within one backend: round robin, smooth weighted, least connections, latency (P2C);
//! `prefix_affinity` is ordered by [`super::affinity`], which needs the request's key.
//!
//! Pure: the caller passes one [`InstanceView`] per instance and gets back the order in which to try them.
//! The only state kept here is what a strategy needs between requests (cursor, weights, random seed).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde::Deserialize;

use crate::routing::engine_load::EngineView;

/// `load_balancing:` of a backend. A closed set, dispatched by `match`.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each usable instance in turn (seed 001's `round_robin`).
    #[default]
    #[serde(alias = "rr")]
    RoundRobin,
    /// Smooth weighted round robin as in nginx: weights 2:1 give a,b,a interleaved.
    #[serde(alias = "weighted_round_robin")]
    Weighted,
    /// Fewest in-flight requests, ties rotated (seed 001's `least_connections`).
    #[serde(alias = "least_conn", alias = "least_inflight")]
    LeastConnections,
    /// Power of two choices over peak-EWMA time-to-first-byte × (in-flight + 1).
    #[serde(alias = "p2c", alias = "peak_ewma")]
    Latency,
    /// Sessions and shared prompt prefixes stay on one instance (its KV cache), within a load bound
    /// ([`super::affinity`]).
    #[serde(
        alias = "affinity",
        alias = "session_affinity",
        alias = "cache_affinity"
    )]
    PrefixAffinity,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Weighted => "weighted",
            Self::LeastConnections => "least_connections",
            Self::Latency => "latency",
            Self::PrefixAffinity => "prefix_affinity",
        }
    }
}

/// What the balancer needs to know about instance `i` for one decision.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InstanceView {
    /// False while the breaker is open (or its probe is taken) or a Retry-After is pending.
    pub usable: bool,
    pub in_flight: u64,
    /// Peak-EWMA time-to-first-byte in µs; 0 means unknown.
    pub ewma_ttfb_us: f64,
    /// When an unusable instance becomes usable again; orders the last-resort tail.
    pub retry_at: Option<Instant>,
    /// Faults counted by the breaker in its window. Failures leave no latency sample (a timeout never
    /// answered), so `latency` prices each as one more request in flight: a failing instance does not look
    /// as cheap as an unknown one.
    pub recent_errors: u32,
    /// `max_in_flight` of the instance, when it has one.
    pub cap: Option<u64>,
    /// The engine's own load, from its metrics (fresh readings only).
    pub engine: Option<EngineView>,
}

impl InstanceView {
    pub(crate) fn is_usable(&self, now: Instant) -> bool {
        self.usable && self.retry_at.is_none_or(|t| t <= now)
    }

    /// Requests on the instance: ours in flight now, plus those of others (other gateways, other
    /// clients) from the engine's last reading.
    pub fn load(&self) -> u64 {
        self.engine
            .map_or(self.in_flight, |engine| engine.load(self.in_flight))
    }

    /// True when a new request would wait for a slot — or when nothing says it would not (no cap, no
    /// engine reading).
    pub fn busy(&self) -> bool {
        if let Some(cap) = self.cap
            && self.in_flight >= cap
        {
            return true;
        }
        match self.engine {
            Some(engine) => engine.busy(self.in_flight),
            None => self.cap.is_none(),
        }
    }

    /// At its `max_in_flight`.
    pub fn full(&self) -> bool {
        self.cap.is_some_and(|cap| self.in_flight >= cap)
    }
}

/// Balancing state of one backend. Lives in the config snapshot; rebuilt (cursors reset) on reload.
#[derive(Debug)]
pub struct Balancer {
    strategy: Strategy,
    /// Weight of instance i (missing entries count as 1). Only used by `Weighted`.
    weights: Box<[u32]>,
    /// Round-robin position, and the tie-break rotation for least connections.
    cursor: AtomicUsize,
    /// nginx's `current_weight` per instance. A short critical section per request.
    current: Mutex<Vec<i64>>,
    /// xorshift64* state for P2C; races between threads only lose randomness, never correctness.
    rng: AtomicU64,
}

impl Balancer {
    pub fn new(strategy: Strategy, weights: &[u32]) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
        Self::with_seed(strategy, weights, seed)
    }

    /// Like [`Balancer::new`] with a fixed random seed, for reproducible tests.
    pub(crate) fn with_seed(strategy: Strategy, weights: &[u32], seed: u64) -> Self {
        Self {
            strategy,
            weights: weights.into(),
            cursor: AtomicUsize::new(0),
            current: Mutex::new(Vec::new()),
            // xorshift must not start at 0.
            rng: AtomicU64::new(seed | 1),
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Order in which to try the instances for one request: first the pick of the strategy among usable
    /// instances, then the other usable ones (cyclically after the pick), then the unusable ones by soonest
    /// recovery, so a pool whose every instance is ejected is still tried. `views[i]` describes instance i;
    /// the result is a permutation of `0..views.len()`.
    pub fn order(&self, views: &[InstanceView], now: Instant) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::with_capacity(views.len());
        out.extend((0..views.len()).filter(|&i| views[i].is_usable(now)));
        let usable = out.len();
        if usable > 0 {
            let first = self.pick(&out, views);
            out.rotate_left(first);
        }
        out.extend((0..views.len()).filter(|&i| !views[i].is_usable(now)));
        // Unknown recovery time (None) sorts last; the sort is stable so ties keep index order.
        out[usable..].sort_by_key(|&i| (views[i].retry_at.is_none(), views[i].retry_at));
        out
    }

    /// Position in `usable` (non-empty, ascending instance indices) of the instance to try first.
    fn pick(&self, usable: &[usize], views: &[InstanceView]) -> usize {
        match self.strategy {
            Strategy::RoundRobin => self.next_cursor() % usable.len(),
            Strategy::Weighted => self.pick_weighted(usable, views.len()),
            // Ordered by `Affinity` when the request has gone through the pipeline; alone, by load.
            Strategy::LeastConnections | Strategy::PrefixAffinity => {
                self.pick_least_connections(usable, views)
            }
            Strategy::Latency => self.pick_latency(usable, views),
        }
    }

    fn next_cursor(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }

    fn weight(&self, i: usize) -> u32 {
        self.weights.get(i).copied().unwrap_or(1)
    }

    /// nginx smooth weighted round robin over the usable instances with a weight above 0: each gains its
    /// weight, the highest goes first and pays back the total. Weight 0 drains an instance (tried only
    /// after the others); when all usable weights are 0 this falls back to plain round robin.
    fn pick_weighted(&self, usable: &[usize], n: usize) -> usize {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.len() < n {
            current.resize(n, 0);
        }
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for (pos, &i) in usable.iter().enumerate() {
            let w = i64::from(self.weight(i));
            if w == 0 {
                continue;
            }
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[usable[b]]) {
                best = Some(pos);
            }
        }
        match best {
            Some(pos) => {
                current[usable[pos]] -= total;
                pos
            }
            None => {
                drop(current);
                self.next_cursor() % usable.len()
            }
        }
    }

    /// Fewest requests on the instance (ours in flight, plus others' from its engine's metrics with
    /// `engine_load`); among equals, a rotating cursor picks which one, so ties are shared evenly instead
    /// of always landing on the lowest index.
    fn pick_least_connections(&self, usable: &[usize], views: &[InstanceView]) -> usize {
        let min = usable.iter().map(|&i| views[i].load()).min().unwrap_or(0);
        let tied = usable.iter().filter(|&&i| views[i].load() == min).count();
        let nth = self.next_cursor() % tied.max(1);
        usable
            .iter()
            .enumerate()
            .filter(|&(_, &i)| views[i].load() == min)
            .nth(nth)
            .map_or(0, |(pos, _)| pos)
    }

    /// Power of two choices: two distinct random candidates, the cheaper wins. Cost is latency × load, with
    /// unknown latencies (0) priced at the mean of the known ones so new instances are neither flooded nor
    /// starved; recent faults count as load.
    fn pick_latency(&self, usable: &[usize], views: &[InstanceView]) -> usize {
        let len = usable.len();
        if len == 1 {
            return 0;
        }
        let (sum, known) = usable
            .iter()
            .map(|&i| views[i].ewma_ttfb_us)
            .filter(|e| *e > 0.0)
            .fold((0.0, 0u32), |(s, k), e| (s + e, k + 1));
        let default = if known > 0 {
            sum / f64::from(known)
        } else {
            1.0
        };
        let cost = |pos: usize| {
            let v = &views[usable[pos]];
            let latency = if v.ewma_ttfb_us > 0.0 {
                v.ewma_ttfb_us
            } else {
                default
            };
            latency * (v.load() as f64 + f64::from(v.recent_errors) + 1.0)
        };
        let a = self.random_below(len);
        let mut b = self.random_below(len - 1);
        if b >= a {
            b += 1;
        }
        if cost(b) < cost(a) { b } else { a }
    }

    fn random_below(&self, n: usize) -> usize {
        let step = |mut x: u64| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x
        };
        let prev = self
            .rng
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(step(x)))
            .unwrap_or_else(|x| x);
        let r = step(prev).wrapping_mul(0x2545_F491_4F6C_DD1D);
        // `n` is small; the modulo bias is negligible for balancing.
        usize::try_from(r >> 32).unwrap_or(0) % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn up(n: usize) -> Vec<InstanceView> {
        vec![
            InstanceView {
                usable: true,
                ..InstanceView::default()
            };
            n
        ]
    }

    fn firsts(b: &Balancer, views: &[InstanceView], rounds: usize) -> Vec<usize> {
        let now = Instant::now();
        (0..rounds).map(|_| b.order(views, now)[0]).collect()
    }

    fn counts(picks: &[usize], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &p in picks {
            c[p] += 1;
        }
        c
    }

    fn is_permutation(order: &[usize], n: usize) -> bool {
        let mut sorted = order.to_vec();
        sorted.sort_unstable();
        sorted == (0..n).collect::<Vec<_>>()
    }

    #[test]
    fn strategy_names_from_config() {
        for (text, expected) in [
            ("round_robin", Strategy::RoundRobin),
            ("weighted", Strategy::Weighted),
            ("least_connections", Strategy::LeastConnections),
            ("latency", Strategy::Latency),
            ("prefix_affinity", Strategy::PrefixAffinity),
        ] {
            let parsed: Strategy = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(parsed, expected);
            assert_eq!(parsed.as_str(), text);
        }
        assert!(serde_json::from_value::<Strategy>(serde_json::json!("random")).is_err());
        assert_eq!(Strategy::default(), Strategy::RoundRobin);
    }

    #[test]
    fn round_robin_is_exactly_even() {
        let b = Balancer::new(Strategy::RoundRobin, &[]);
        let picks = firsts(&b, &up(3), 30);
        assert_eq!(counts(&picks, 3), [10, 10, 10]);
        assert_eq!(&picks[..6], [0, 1, 2, 0, 1, 2]);
        // The rest of the order follows the pick cyclically.
        assert_eq!(b.order(&up(3), Instant::now()), [0, 1, 2]);
        assert_eq!(b.order(&up(3), Instant::now()), [1, 2, 0]);
    }

    #[test]
    fn weighted_two_to_one_is_exact_and_interleaved() {
        let b = Balancer::new(Strategy::Weighted, &[2, 1]);
        let picks = firsts(&b, &up(2), 30);
        assert_eq!(counts(&picks, 2), [20, 10]);
        // nginx's smooth sequence: a, b, a, repeated; never a,a,b.
        for chunk in picks.chunks(3) {
            assert_eq!(chunk, [0, 1, 0]);
        }
    }

    #[test]
    fn weighted_five_one_one_matches_nginx() {
        let b = Balancer::new(Strategy::Weighted, &[5, 1, 1]);
        let picks = firsts(&b, &up(3), 7);
        // The sequence from nginx's commit introducing smooth weighting.
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weighted_skips_unusable_and_zero_weight() {
        let b = Balancer::new(Strategy::Weighted, &[3, 1, 0]);
        let mut views = up(3);
        views[0].usable = false;
        let picks = firsts(&b, &views, 10);
        assert_eq!(counts(&picks, 3), [0, 10, 0]);
        let order = b.order(&views, Instant::now());
        assert_eq!(order, [1, 2, 0]);
        // All usable weights 0: plain round robin among them.
        views[1].usable = false;
        assert_eq!(counts(&firsts(&b, &views, 4), 3), [0, 0, 4]);
    }

    #[test]
    fn least_connections_prefers_fewer_in_flight() {
        let b = Balancer::new(Strategy::LeastConnections, &[]);
        let mut views = up(3);
        views[0].in_flight = 4;
        views[1].in_flight = 1;
        views[2].in_flight = 2;
        assert_eq!(counts(&firsts(&b, &views, 9), 3), [0, 9, 0]);
    }

    #[test]
    fn engine_load_from_other_clients_counts_as_connections() {
        let b = Balancer::new(Strategy::LeastConnections, &[]);
        let mut views = up(3);
        views[1].in_flight = 1;
        views[2].in_flight = 2;
        // Instance 0 has none of ours but 5 requests of other clients in its engine's last reading.
        views[0].engine = Some(EngineView {
            running: 5,
            external: 5,
            ..EngineView::default()
        });
        assert_eq!(counts(&firsts(&b, &views, 6), 3), [0, 6, 0]);
    }

    #[test]
    fn least_connections_shares_ties_fairly() {
        let b = Balancer::new(Strategy::LeastConnections, &[]);
        let mut views = up(4);
        views[3].in_flight = 1;
        // Instances 0..3 tie at 0: each gets a third, not all to index 0.
        assert_eq!(counts(&firsts(&b, &views, 30), 4), [10, 10, 10, 0]);
        assert_eq!(counts(&firsts(&b, &up(4), 40), 4), [10, 10, 10, 10]);
    }

    #[test]
    fn latency_shifts_traffic_away_from_slow_instance() {
        let b = Balancer::with_seed(Strategy::Latency, &[], 42);
        let mut views = up(3);
        views[0].ewma_ttfb_us = 50_000.0;
        views[1].ewma_ttfb_us = 50_000.0;
        views[2].ewma_ttfb_us = 900_000.0;
        let c = counts(&firsts(&b, &views, 300), 3);
        // P2C: the slow one only wins if drawn against itself, which distinct draws forbid.
        assert_eq!(c[2], 0, "{c:?}");
        assert!(c[0] > 100 && c[1] > 100, "{c:?}");

        // Load counts too: fast instances drowning in requests push traffic to the slow one.
        views[0].in_flight = 40;
        views[1].in_flight = 40;
        let c = counts(&firsts(&b, &views, 300), 3);
        assert!(c[2] > 150, "{c:?}");
    }

    #[test]
    fn latency_treats_unknown_as_average_and_is_deterministic_per_seed() {
        let mut views = up(2);
        views[0].ewma_ttfb_us = 0.0; // unknown → priced at the mean (here 100 ms)
        views[1].ewma_ttfb_us = 100_000.0;
        views[1].in_flight = 1;
        let b = Balancer::with_seed(Strategy::Latency, &[], 7);
        assert_eq!(counts(&firsts(&b, &views, 20), 2), [20, 0]);
        let a = firsts(&Balancer::with_seed(Strategy::Latency, &[], 9), &up(5), 50);
        let b = firsts(&Balancer::with_seed(Strategy::Latency, &[], 9), &up(5), 50);
        assert_eq!(a, b);
        assert!(counts(&a, 5).iter().all(|&c| c > 0), "{a:?}");
    }

    #[test]
    fn unusable_go_last_by_soonest_recovery() {
        let now = Instant::now();
        let b = Balancer::new(Strategy::RoundRobin, &[]);
        let mut views = up(4);
        views[0] = InstanceView {
            usable: false,
            retry_at: Some(now + Duration::from_secs(30)),
            ..views[0]
        };
        views[2] = InstanceView {
            usable: false,
            retry_at: Some(now + Duration::from_secs(5)),
            ..views[2]
        };
        let order = b.order(&views, now);
        assert!(is_permutation(&order, 4));
        assert_eq!(&order[2..], [2, 0]);
        assert!(order[..2].contains(&1) && order[..2].contains(&3));
        // `usable: false` wins over a passed retry time: the caller's breaker said no.
        views[2].usable = true;
        let later = b.order(&views, now + Duration::from_secs(10));
        assert!(is_permutation(&later, 4));
        assert!(later[..3].contains(&2), "{later:?}");
        assert_eq!(later[3], 0);
    }

    #[test]
    fn latency_prices_recent_faults_as_load() {
        // Instance 0 timed out (no latency sample, one fault); instance 1 answers in 1 ms.
        let mut views = up(2);
        views[0].recent_errors = 1;
        views[1].ewma_ttfb_us = 1_000.0;
        let b = Balancer::with_seed(Strategy::Latency, &[], 7);
        assert!(firsts(&b, &views, 50).iter().all(|&i| i == 1));
        // Without the fault the unknown instance is priced like the known one and gets explored.
        views[0].recent_errors = 0;
        assert!(firsts(&b, &views, 50).contains(&0));
    }

    #[test]
    fn all_open_pool_still_returns_an_order() {
        let now = Instant::now();
        for strategy in [
            Strategy::RoundRobin,
            Strategy::Weighted,
            Strategy::LeastConnections,
            Strategy::Latency,
        ] {
            let b = Balancer::new(strategy, &[1, 2, 3]);
            let views: Vec<InstanceView> = [20, 10, 30]
                .iter()
                .map(|&s| InstanceView {
                    usable: false,
                    retry_at: Some(now + Duration::from_secs(s)),
                    ..InstanceView::default()
                })
                .collect();
            assert_eq!(b.order(&views, now), [1, 0, 2], "{strategy:?}");
            assert!(b.order(&[], now).is_empty());
        }
    }
}
