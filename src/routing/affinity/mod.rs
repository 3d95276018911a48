//! `load_balancing: prefix_affinity`: send a session, or requests that share a prompt prefix, to the same
//! instance, so its KV cache (vLLM's automatic prefix caching, llama.cpp's slot cache) skips the prefill of
//! what it already holds — without piling sessions onto one instance.
//!
//! - **Key** ([`AffinityRules::key`]): a session header (`X-Session-ID` and the ones coding agents send;
//!   configurable), else the OpenAI `user` field / Anthropic `metadata.user_id`, else a hash of the prompt's
//!   leading content: the system prompt and the first message(s), at most `prompt_bytes` from the head and
//!   from the tail of each — a bounded amount of text whatever the body's size.
//! - **Home**: rendezvous (highest-random-weight) hashing of the key over the configured instances, weighted.
//!   A pure function of the key and the instance URLs, so every replica of the gateway computes the same
//!   home, and an instance joining or leaving moves only the keys it wins or held (1/n of them).
//! - **Table** ([`SessionTable`]): where each session was last served (key → instance, bounded, expiring
//!   `session_ttl_s` after its last use), so its next turn follows its cache. With `state.redis_url` it
//!   lives in Redis (`GETEX` per request, refreshing the expiry; `SET` when the answer changes), so replicas
//!   of the gateway agree on it; the local copy answers while Redis does not.
//! - **Placement** of a request with no history beyond its key's leading content (a session's first
//!   turn, a single-turn request): it loses nothing but the shared prefix every instance holds, so it goes
//!   to the least loaded instance (`placement: least_loaded`, the default with Redis: the table carries
//!   the choice to every replica), or to its home unless that would put the home above `load_factor` ×
//!   the mean load — Mirrokni, Thorup, Zadimoghaddam, "Consistent hashing with bounded loads": `load + 1 ≤
//!   ⌈factor × (total + 1) × weight / Σ weights⌉` — or the home is busy while another instance has a free
//!   slot (`placement: home`, the default without Redis: replicas that do not share the table still agree).
//! - **Later turns** stay where the table says (else at home): moving would cost the whole history's
//!   prefill. They leave only when their instance is busy and above `session_load_factor` (2) × the mean —
//!   then to the least loaded, and the table follows. An ejected instance's sessions go to the next
//!   instance in their rendezvous order; when it returns they stay where their cache now is, and only new
//!   conversations fill it. "Busy" means a new request would wait for a slot: known from `max_in_flight`
//!   or the engine's own metrics, assumed when neither says.
//!
//! Load is this gateway's in-flight count, plus the requests of others (other replicas, other clients)
//! when the engine's metrics are scraped (`engine_load`, see [`super::engine_load`]).

mod config;
mod key;
mod rendezvous;
mod sessions;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::routing::balance::InstanceView;
use crate::store::StateStore;
use config::{INDEX_HOLDERS, REDIS_LOOKUP_TIMEOUT};

pub use config::{AffinityConfig, Placement, PromptKey};
pub use key::{AffinityKey, AffinityRules, KeySource, PromptBlocks};
pub use rendezvous::{home, instance_id, rank};
pub use sessions::SessionTable;
pub(crate) use sessions::SessionTables;

/// How the balancer decided, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The key's home (rendezvous first choice).
    Home,
    /// Where the table says the session was served last.
    Sticky,
    /// A new conversation (or single-turn request) placed on the least loaded instance, not its home.
    Placed,
    /// A later turn's instance was busy and over `session_load_factor`: the least loaded instead.
    Overflow,
    /// The home or sticky instance is unusable (ejected): the next usable one in the key's order.
    Failover,
    /// No key: the least loaded.
    Unkeyed,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Home => "home",
            Decision::Sticky => "sticky",
            Decision::Placed => "placed",
            Decision::Overflow => "overflow",
            Decision::Failover => "failover",
            Decision::Unkeyed => "unkeyed",
        }
    }
}

/// `prefix_affinity` state of one backend in one config snapshot.
#[derive(Debug)]
pub struct Affinity {
    pub rules: AffinityRules,
    backend: String,
    /// Parallel to the backend's instances.
    ids: Box<[u64]>,
    weights: Box<[u32]>,
    load_factor: f64,
    session_load_factor: f64,
    placement: Placement,
    ttl: Duration,
    table: Arc<SessionTable>,
    /// Redis when `state.redis_url` is set: the table is shared by every replica.
    store: Option<StateStore>,
    redis_key_prefix: String,
}

impl Affinity {
    pub fn new(
        backend: &str,
        cfg: &AffinityConfig,
        urls: &[&str],
        weights: &[u32],
        table: Arc<SessionTable>,
        store: &StateStore,
        key_prefix: &str,
    ) -> Affinity {
        Affinity {
            rules: AffinityRules::new(cfg),
            backend: backend.to_owned(),
            ids: urls.iter().map(|u| instance_id(u)).collect(),
            weights: weights.into(),
            load_factor: cfg.load_factor,
            session_load_factor: cfg.session_load_factor,
            placement: match cfg.placement {
                Placement::Auto if store.is_shared() => Placement::LeastLoaded,
                Placement::Auto => Placement::Home,
                explicit => explicit,
            },
            ttl: Duration::from_secs_f64(cfg.session_ttl_s),
            table,
            store: store.is_shared().then(|| store.clone()),
            redis_key_prefix: format!("{key_prefix}:affinity:{backend}:"),
        }
    }

    fn redis_key(&self, key: u64) -> String {
        format!("{}{key:016x}", self.redis_key_prefix)
    }

    /// Where `key` was moved to, if anywhere: Redis first when shared (bounded wait), else this process's
    /// table. Returns the instance index, when that instance is still configured.
    pub async fn lookup(
        &self,
        key: Option<AffinityKey>,
        blocks: Option<&PromptBlocks>,
        now: Instant,
    ) -> Option<usize> {
        if let Some(blocks) = blocks {
            // `prompt: index`: the instance holding the longest prefix of this prompt, unless every
            // instance holds it (a shared system prompt says nothing about where a conversation is).
            let holders = self.table.longest_prefix(blocks)?;
            let known: Vec<usize> = holders
                .iter()
                .filter_map(|&id| self.ids.iter().position(|&i| i == id && id != 0))
                .collect();
            if known.len() >= self.ids.len().min(INDEX_HOLDERS) {
                return None;
            }
            return known.first().copied();
        }
        let key = key?.hash;
        let mut id = None;
        if let Some(StateStore::Redis(redis)) = &self.store {
            let mut cmd = redis::cmd("GETEX");
            cmd.arg(self.redis_key(key))
                .arg("EX")
                .arg(self.ttl.as_secs().max(1));
            // Redis unreachable or slow: the local table answers.
            if let Ok(Ok(found)) =
                tokio::time::timeout(REDIS_LOOKUP_TIMEOUT, redis.query::<Option<String>>(&cmd))
                    .await
            {
                id = Some(found.and_then(|text| u64::from_str_radix(&text, 16).ok()));
            }
        }
        let id = match id {
            Some(shared) => shared,
            None => self.table.get(key, now, self.ttl),
        }?;
        self.ids.iter().position(|&i| i == id)
    }

    /// Order in which to try the instances: the chosen one first, the other usable ones in the key's
    /// rendezvous order (so a fail-over goes where the next replica would also send it), then the
    /// unusable ones by soonest recovery. `sticky` is the result of [`Affinity::lookup`].
    pub fn order(
        &self,
        views: &[InstanceView],
        now: Instant,
        key: Option<AffinityKey>,
        sticky: Option<usize>,
    ) -> (Vec<usize>, Decision) {
        let n = views.len();
        let ranked: Vec<usize> = match key {
            Some(key) => rank(key.hash, &self.ids[..n.min(self.ids.len())], &self.weights),
            None => (0..n).collect(),
        };
        let mut usable: Vec<usize> = ranked
            .iter()
            .copied()
            .filter(|&i| views[i].is_usable(now))
            .collect();
        let mut unusable: Vec<usize> = (0..n).filter(|&i| !views[i].is_usable(now)).collect();
        unusable.sort_by_key(|&i| (views[i].retry_at.is_none(), views[i].retry_at));
        if usable.is_empty() {
            return (unusable, Decision::Failover);
        }
        let weight = |i: usize| f64::from(self.weights.get(i).copied().unwrap_or(1).max(1));
        let load = |i: usize| views[i].load() as f64;
        // The first in rank order among the least loaded (per unit of weight); `min_by` keeps the first.
        let least_loaded = |among: &mut dyn Iterator<Item = usize>| -> Option<usize> {
            among.min_by(|&a, &b| (load(a) / weight(a)).total_cmp(&(load(b) / weight(b))))
        };
        let total: f64 = usable.iter().map(|&i| load(i)).sum();
        let weights: f64 = usable.iter().map(|&i| weight(i)).sum();
        let over = |i: usize, factor: f64| {
            load(i) + 1.0 > (factor * (total + 1.0) * weight(i) / weights).ceil()
        };
        let (chosen, decision) = match key {
            None => (least_loaded(&mut usable.iter().copied()), Decision::Unkeyed),
            // A new conversation or a single-turn request: no cache to keep beyond the shared prefix.
            Some(key) if key.fresh && sticky.is_none() => {
                let home = ranked[0];
                let preferred = match self.placement {
                    Placement::LeastLoaded => least_loaded(&mut usable.iter().copied()),
                    // `Auto` is resolved when the snapshot is built; as `Home` if not.
                    Placement::Home | Placement::Auto => {
                        let preferred = usable[0];
                        let idle = |i: usize| i != preferred && !views[i].busy();
                        if over(preferred, self.load_factor)
                            || (views[preferred].busy() && usable.iter().any(|&i| idle(i)))
                        {
                            // Within the bound, or to an instance with a free slot: the least loaded.
                            least_loaded(&mut usable.iter().copied().filter(|&i| i != preferred))
                                .filter(|&i| load(i) < load(preferred) || idle(i))
                                .or(Some(preferred))
                        } else {
                            Some(preferred)
                        }
                    }
                };
                let decision = match preferred {
                    Some(i) if i == home => Decision::Home,
                    Some(_)
                        if !views[home].is_usable(now)
                            && self.placement != Placement::LeastLoaded =>
                    {
                        Decision::Failover
                    }
                    _ => Decision::Placed,
                };
                (preferred, decision)
            }
            // A later turn: its cache is where it was served last (`sticky`), else at home.
            Some(_) => {
                let home = ranked[0];
                let (preferred, decision) = match sticky.filter(|&i| i < n) {
                    Some(i) if views[i].is_usable(now) => (i, Decision::Sticky),
                    Some(_) => (usable[0], Decision::Failover),
                    None if views[home].is_usable(now) => (home, Decision::Home),
                    None => (usable[0], Decision::Failover),
                };
                if views[preferred].busy() && over(preferred, self.session_load_factor) {
                    match least_loaded(&mut usable.iter().copied().filter(|&i| i != preferred)) {
                        Some(other) if load(other) < load(preferred) => {
                            (Some(other), Decision::Overflow)
                        }
                        _ => (Some(preferred), decision),
                    }
                } else {
                    (Some(preferred), decision)
                }
            }
        };
        if let Some(first) = chosen
            && let Some(pos) = usable.iter().position(|&i| i == first)
        {
            let first = usable.remove(pos);
            usable.insert(0, first);
        }
        usable.extend(unusable);
        (usable, decision)
    }

    /// Records that `key` was served by instance `index`, so its next turn finds its cache: a later turn
    /// wherever it was served (its home included: then a side request of the session — one message, the
    /// same session header — cannot move it), a new conversation where it was placed when that is not
    /// its home. A fresh request of a known session changes nothing. `sticky` is what the lookup found:
    /// Redis is written only when the answer changed.
    pub fn served(
        &self,
        key: Option<AffinityKey>,
        blocks: Option<&PromptBlocks>,
        sticky: Option<usize>,
        index: usize,
        now: Instant,
    ) {
        let Some(key) = key else { return };
        let Some(&id) = self.ids.get(index) else {
            return;
        };
        if let Some(blocks) = blocks {
            self.table.index_blocks(&blocks.hashes, id);
            return;
        }
        if key.fresh {
            let home = home(key.hash, &self.ids, &self.weights);
            if sticky.is_some() || home == Some(index) {
                return;
            }
        }
        self.table.put(key.hash, id, now);
        if sticky != Some(index)
            && let Some(StateStore::Redis(redis)) = &self.store
        {
            let redis = redis.clone();
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.redis_key(key.hash))
                .arg(format!("{id:x}"))
                .arg("EX")
                .arg(self.ttl.as_secs().max(1));
            tokio::spawn(async move {
                let _ = redis.query::<()>(&cmd).await;
            });
        }
    }

    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Sessions remembered by this process's table.
    pub(crate) fn remembered(&self) -> usize {
        self.table.len()
    }
}
