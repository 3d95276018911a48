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

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName};
use serde::Deserialize;
use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

use crate::config_error::Invalid;
use crate::protocol::{ApiRequest, Part, Role};
use crate::routing::balance::InstanceView;
use crate::store::StateStore;

/// Session headers read by default, in this order (the first present wins). Values longer than
/// [`MAX_HEADER_VALUE`] bytes are ignored.
pub(crate) const DEFAULT_SESSION_HEADERS: &[&str] = &[
    // Generic; sent by OpenCode and many agent frameworks, hashed on by Caddy/nginx setups.
    "x-session-id",
    // Claude Code: one id per session, on every request.
    "x-claude-code-session-id",
    // Codex CLI.
    "session_id",
    "session-id",
    // The explicit session headers of other gateways and routers, which clients already send to them.
    "x-session-affinity",
    "x-litellm-session-id",
    "x-bf-session-id",
    "x-opencode-session",
    "x-dynamo-session-id",
];

/// Longest session header value taken as a key (Bifrost's limit is 255 runes).
pub(crate) const MAX_HEADER_VALUE: usize = 256;

/// How long a Redis lookup may take before the local table answers instead.
const REDIS_LOOKUP_TIMEOUT: Duration = Duration::from_millis(50);

/// `affinity:` of a backend with `load_balancing: prefix_affinity`.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AffinityConfig {
    /// Session headers, in order of preference (names, any case). Replaces the default list.
    pub headers: Vec<String>,
    /// Key by the OpenAI `user` field / Anthropic `metadata.user_id` when no header is present.
    pub user_field: bool,
    /// Key requests with neither by their leading prompt content (`leading`), by that and an index of
    /// prompt prefixes (`index`), or not at all (`off`: they are balanced by load alone).
    pub prompt: PromptKey,
    /// Leading non-system messages hashed with the system prompt.
    pub prompt_messages: usize,
    /// Bytes hashed from the head and from the tail of the system prompt and of each of those messages.
    pub prompt_bytes: usize,
    /// Where a new conversation or a single-turn request goes (`auto`, `least_loaded`, `home`).
    pub placement: Placement,
    /// With `placement: home`, a request with no history (a first turn, a single-turn request) does not
    /// go to an instance it would put above this multiple of the mean load (rounded up). At least 1; 1
    /// keeps single-turn traffic as balanced as `least_connections`.
    pub load_factor: f64,
    /// A later turn of a session leaves its instance only when that instance is busy and this multiple
    /// of the mean is exceeded. At least `load_factor`.
    pub session_load_factor: f64,
    /// A moved session's entry expires after this long without a request.
    pub session_ttl_s: f64,
    /// Sessions remembered in memory (least recently used forgotten first); with `prompt: index`, also
    /// the number of indexed prefix blocks.
    pub max_sessions: usize,
}

impl Default for AffinityConfig {
    fn default() -> Self {
        AffinityConfig {
            headers: DEFAULT_SESSION_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
            user_field: true,
            prompt: PromptKey::Leading,
            prompt_messages: 1,
            prompt_bytes: 1024,
            placement: Placement::Auto,
            load_factor: 1.0,
            session_load_factor: 2.0,
            session_ttl_s: 3600.0,
            max_sessions: 100_000,
        }
    }
}

/// Where a new conversation (or a single-turn request) goes.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// `least_loaded` when the session table is shared (Redis), else `home`.
    Auto,
    /// The least loaded instance (its home on a tie); the table remembers where. Replicas of the
    /// gateway agree on it only through Redis.
    LeastLoaded,
    /// Its home, unless that would put it above `load_factor` × the mean load or it is busy while
    /// another instance has a free slot; every replica computes the same home.
    Home,
}

/// How a request without a session header or `user` is keyed.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PromptKey {
    /// By the hash of its leading content (`prompt_messages`, `prompt_bytes`).
    Leading,
    /// Also by an approximate index of the prompt prefixes each instance was sent (as vLLM's router
    /// keeps): the chained hashes of the prompt's first [`INDEX_MAX_BYTES`] in [`INDEX_BLOCK`]-byte
    /// blocks; a request follows the instance that holds its longest indexed prefix, unless every
    /// instance holds it. Local to each gateway replica.
    Index,
    /// Not at all: balanced by load.
    Off,
}

/// Bytes of canonical prompt text per indexed block (`prompt: index`).
pub(crate) const INDEX_BLOCK: usize = 1024;
/// Prompt bytes indexed at most.
pub(crate) const INDEX_MAX_BYTES: usize = 128 * 1024;
/// Instances remembered per indexed block; a block held by this many counts as shared by all.
const INDEX_HOLDERS: usize = 4;

impl AffinityConfig {
    /// Checks what serde cannot; the error names the field and the bad value.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        for name in &self.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(Invalid::new(
                    "affinity",
                    format!("affinity.headers: '{name}' is not a valid header name"),
                ));
            }
        }
        if !(self.load_factor.is_finite() && self.load_factor >= 1.0 && self.load_factor <= 100.0) {
            return Err(Invalid::new(
                "affinity",
                format!(
                    "affinity.load_factor is {}; it must be a number from 1 to 100 (1.5: no new conversation on an instance above 1.5 × the mean load)",
                    self.load_factor
                ),
            ));
        }
        if !(self.session_load_factor.is_finite()
            && self.session_load_factor >= self.load_factor
            && self.session_load_factor <= 100.0)
        {
            return Err(Invalid::new(
                "affinity",
                format!(
                    "affinity.session_load_factor is {}; it must be a number from load_factor ({}) to 100",
                    self.session_load_factor, self.load_factor
                ),
            ));
        }
        if !(self.session_ttl_s.is_finite()
            && self.session_ttl_s > 0.0
            && self.session_ttl_s <= 30.0 * 86_400.0)
        {
            return Err(Invalid::new(
                "affinity",
                format!(
                    "affinity.session_ttl_s is {}; it must be a number of seconds above 0 and at most 30 days",
                    self.session_ttl_s
                ),
            ));
        }
        if self.max_sessions == 0 {
            return Err(Invalid::new(
                "affinity",
                "affinity.max_sessions is 0; it must be at least 1".to_owned(),
            ));
        }
        if !(16..=1 << 20).contains(&self.prompt_bytes) {
            return Err(Invalid::new(
                "affinity",
                format!(
                    "affinity.prompt_bytes is {}; it must be from 16 to 1048576",
                    self.prompt_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// Where a request's key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Header,
    User,
    Prompt,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Header => "header",
            KeySource::User => "user",
            KeySource::Prompt => "prompt",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinityKey {
    pub hash: u64,
    pub source: KeySource,
    /// Nothing in the request beyond its leading content (system prompt and first message(s)): no
    /// session history whose cache a move would lose.
    pub fresh: bool,
}

// Distinct seeds, so the same text as a header and as a prompt are different keys.
const SEED_HEADER: u64 = 0x5E55_1011;
const SEED_USER: u64 = 0x0005_E125;
const SEED_PROMPT: u64 = 0x0091_0397;

/// The compiled key rules of one backend.
#[derive(Debug, Clone)]
pub struct AffinityRules {
    headers: Vec<HeaderName>,
    user_field: bool,
    prompt: PromptKey,
    prompt_messages: usize,
    prompt_bytes: usize,
}

impl AffinityRules {
    pub fn new(cfg: &AffinityConfig) -> AffinityRules {
        AffinityRules {
            headers: cfg
                .headers
                .iter()
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
            user_field: cfg.user_field,
            prompt: cfg.prompt,
            prompt_messages: cfg.prompt_messages,
            prompt_bytes: cfg.prompt_bytes,
        }
    }

    /// The request's affinity key, from a bounded amount of its text.
    pub fn key(&self, headers: &HeaderMap, request: &ApiRequest) -> Option<AffinityKey> {
        let fresh = match request.chat() {
            Some(chat) => {
                chat.messages
                    .iter()
                    .filter(|m| m.role != Role::System)
                    .count()
                    <= self.prompt_messages.max(1)
            }
            None => true,
        };
        // One pass over the request's few headers (not one hash lookup per configured name): the
        // configured name that comes first in the list wins.
        let mut found: Option<(usize, &[u8])> = None;
        for (name, value) in headers {
            let bytes = value.as_bytes();
            if bytes.is_empty() || bytes.len() > MAX_HEADER_VALUE {
                continue;
            }
            if let Some(rank) = self.headers.iter().position(|h| h == name)
                && found.is_none_or(|(best, _)| rank < best)
            {
                found = Some((rank, bytes));
            }
        }
        if let Some((_, bytes)) = found {
            return Some(AffinityKey {
                hash: xxh3_64_with_seed(bytes, SEED_HEADER),
                source: KeySource::Header,
                fresh,
            });
        }
        if self.user_field
            && let Some(chat) = request.chat()
            && let Some(user) = chat.user.as_deref().filter(|u| !u.is_empty())
        {
            return Some(AffinityKey {
                hash: xxh3_64_with_seed(user.as_bytes(), SEED_USER),
                source: KeySource::User,
                fresh,
            });
        }
        if self.prompt == PromptKey::Off {
            return None;
        }
        let (hash, pieces) = self.prompt_hash(request)?;
        (pieces > 0).then_some(AffinityKey {
            hash,
            source: KeySource::Prompt,
            fresh,
        })
    }

    /// The hash of the prompt's leading content (system prompt, then the first `prompt_messages`
    /// messages with their roles) and how many pieces went into it; `None` for embeddings.
    fn prompt_hash(&self, request: &ApiRequest) -> Option<(u64, usize)> {
        let mut hasher = Xxh3::with_seed(SEED_PROMPT);
        let mut pieces = 0usize;
        match request {
            ApiRequest::Chat(_) | ApiRequest::Responses(_) => {
                let chat = request.chat()?;
                for system in &chat.system {
                    self.piece(&mut hasher, b's', system);
                    pieces += 1;
                }
                let mut taken = 0;
                for message in &chat.messages {
                    if taken == self.prompt_messages {
                        break;
                    }
                    let role = match message.role {
                        Role::System => {
                            // A system message before the first taken one belongs to the system prompt.
                            if taken == 0 {
                                for part in &message.parts {
                                    if let Part::Text(text) = part {
                                        self.piece(&mut hasher, b's', text);
                                        pieces += 1;
                                    }
                                }
                            }
                            continue;
                        }
                        Role::User => b'u',
                        Role::Assistant => b'a',
                        Role::Tool => b't',
                    };
                    for part in &message.parts {
                        let text = match part {
                            Part::Text(text) => text.as_str(),
                            Part::ToolResult(result) => result.content.as_str(),
                            Part::ToolCall(call) => call.arguments.as_str(),
                            Part::Image(_)
                            | Part::Thinking { .. }
                            | Part::RedactedThinking { .. } => {
                                continue;
                            }
                        };
                        self.piece(&mut hasher, role, text);
                        pieces += 1;
                    }
                    taken += 1;
                }
            }
            ApiRequest::Completion(completion) => {
                if let Some(prompt) = completion.prompt.first() {
                    self.piece(&mut hasher, b'p', prompt);
                    pieces += 1;
                }
            }
            ApiRequest::Embeddings(_) => return None,
        }
        Some((hasher.digest(), pieces))
    }

    /// With `prompt: index`, the chained hashes of the prompt's leading full blocks (system prompt, then
    /// each message with its role), at most [`INDEX_MAX_BYTES`] of text.
    pub fn blocks(&self, request: &ApiRequest) -> Option<PromptBlocks> {
        if self.prompt != PromptKey::Index {
            return None;
        }
        let chat = request.chat()?;
        let mut blocks = BlockHasher::default();
        for system in &chat.system {
            blocks.feed(b"\x00s");
            blocks.feed(system.as_bytes());
        }
        let mut conversation_from = None;
        for message in &chat.messages {
            if message.role != Role::System && conversation_from.is_none() {
                conversation_from = Some(blocks.hashes.len());
            }
            let tag: &[u8] = match message.role {
                Role::System => b"\x00s",
                Role::User => b"\x00u",
                Role::Assistant => b"\x00a",
                Role::Tool => b"\x00t",
            };
            blocks.feed(tag);
            for part in &message.parts {
                match part {
                    Part::Text(text) => blocks.feed(text.as_bytes()),
                    Part::ToolResult(result) => blocks.feed(result.content.as_bytes()),
                    Part::ToolCall(call) => blocks.feed(call.arguments.as_bytes()),
                    Part::Image(_) | Part::Thinking { .. } | Part::RedactedThinking { .. } => {}
                }
            }
            if blocks.is_full() {
                break;
            }
        }
        let conversation_from = conversation_from.unwrap_or(blocks.hashes.len());
        Some(PromptBlocks {
            hashes: blocks.hashes.into_boxed_slice(),
            conversation_from,
        })
    }

    /// Hashes one piece of text: its tag, its length, and at most `prompt_bytes` from each end.
    fn piece(&self, hasher: &mut Xxh3, tag: u8, text: &str) {
        let bytes = text.as_bytes();
        hasher.update(&[tag]);
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        let n = self.prompt_bytes;
        if bytes.len() <= 2 * n {
            hasher.update(bytes);
        } else {
            hasher.update(&bytes[..n]);
            hasher.update(&bytes[bytes.len() - n..]);
        }
    }
}

/// A prompt's prefix blocks (`prompt: index`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptBlocks {
    /// Chained hashes of the full blocks, in order.
    pub hashes: Box<[u64]>,
    /// The first block holding conversation text (past the system prompt): a match that ends before it
    /// is a shared system prompt, which says nothing about where the conversation is.
    pub conversation_from: usize,
}

/// Cuts a stream of text pieces into [`INDEX_BLOCK`]-byte blocks, each hashed with the hash of the one
/// before (so a block's hash stands for the whole prefix up to it).
struct BlockHasher {
    buffer: Box<[u8; INDEX_BLOCK]>,
    len: usize,
    hashes: Vec<u64>,
}

impl Default for BlockHasher {
    fn default() -> Self {
        BlockHasher {
            buffer: Box::new([0; INDEX_BLOCK]),
            len: 0,
            hashes: Vec::new(),
        }
    }
}

impl BlockHasher {
    fn is_full(&self) -> bool {
        self.hashes.len() * INDEX_BLOCK >= INDEX_MAX_BYTES
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.is_full() {
            let take = (INDEX_BLOCK - self.len).min(bytes.len());
            self.buffer[self.len..self.len + take].copy_from_slice(&bytes[..take]);
            self.len += take;
            bytes = &bytes[take..];
            if self.len == INDEX_BLOCK {
                let previous = self.hashes.last().copied().unwrap_or(0);
                self.hashes
                    .push(xxh3_64_with_seed(&self.buffer[..], previous));
                self.len = 0;
            }
        }
    }
}

/// A stable identity of an instance for hashing: every replica of the gateway derives the same one from
/// the same URL (the display form: no credentials).
pub fn instance_id(url: &str) -> u64 {
    xxh3_64_with_seed(url.as_bytes(), 0x1D)
}

/// splitmix64's finalizer: a key and an instance id mixed into a uniformly spread score.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rendezvous score of `id` for `key`; higher wins. Weighted as in "weighted rendezvous hashing"
/// (Schindelhauer & Schomaker): −w / ln(u), with u uniform in (0, 1).
/// With equal weights the order of −1 / ln(u) is the order of u itself: the raw score, no logarithm.
fn score(key: u64, id: u64, weight: Option<u32>) -> f64 {
    let h = mix(key ^ mix(id));
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    match weight {
        None => u,
        Some(weight) => -f64::from(weight.max(1)) / u.ln(),
    }
}

/// The scores of `key` for each of `ids`, with their indices.
fn scores<'a>(
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

/// Keys served away from their home, remembered so their next request follows their cache. Bounded
/// (least recently used forgotten first) and expiring (`session_ttl_s` after the last use). Long-lived:
/// kept across reloads for the backend of the same name.
#[derive(Debug)]
pub struct SessionTable {
    inner: Mutex<lru::LruCache<u64, (u64, Instant)>>,
    /// `prompt: index`: prefix block hash → the instances (ids, most recent first; 0: none) it was sent to.
    index: Mutex<lru::LruCache<u64, [u64; INDEX_HOLDERS]>>,
}

impl SessionTable {
    pub fn new(capacity: usize) -> SessionTable {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        SessionTable {
            inner: Mutex::new(lru::LruCache::new(capacity)),
            index: Mutex::new(lru::LruCache::new(capacity)),
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, lru::LruCache<u64, [u64; INDEX_HOLDERS]>> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The holders of the longest indexed prefix of `blocks` that reaches into the conversation.
    fn longest_prefix(&self, blocks: &PromptBlocks) -> Option<[u64; INDEX_HOLDERS]> {
        let mut index = self.index();
        blocks.hashes[blocks.conversation_from.min(blocks.hashes.len())..]
            .iter()
            .rev()
            .find_map(|hash| index.get(hash).copied())
    }

    /// Notes that `blocks` were sent to instance `id`.
    fn index_blocks(&self, blocks: &[u64], id: u64) {
        let mut index = self.index();
        for &hash in blocks {
            let holders = index.get_or_insert_mut(hash, || [0; INDEX_HOLDERS]);
            let at = holders
                .iter()
                .position(|&h| h == id)
                .unwrap_or(INDEX_HOLDERS - 1);
            holders.copy_within(0..at, 1);
            holders[0] = id;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<u64, (u64, Instant)>> {
        // A panic while holding this lock cannot leave the map invalid.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The instance id `key` was last served by, when it was moved off its home within `ttl`.
    pub fn get(&self, key: u64, now: Instant, ttl: Duration) -> Option<u64> {
        let mut map = self.lock();
        match map.get_mut(&key) {
            Some((id, seen)) if now.saturating_duration_since(*seen) <= ttl => {
                *seen = now;
                Some(*id)
            }
            Some(_) => {
                map.pop(&key);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, key: u64, id: u64, now: Instant) {
        self.lock().put(key, (id, now));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn resize(&self, capacity: usize) {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        self.lock().resize(capacity);
        self.index().resize(capacity);
    }
}

/// The session tables of every backend, by name; lives beside the instance registry so a reload keeps
/// them.
#[derive(Debug, Default)]
pub(crate) struct SessionTables {
    tables: Mutex<HashMap<String, Arc<SessionTable>>>,
}

impl SessionTables {
    pub(crate) fn get_or_create(&self, backend: &str, capacity: usize) -> Arc<SessionTable> {
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(table) = tables.get(backend) {
            table.resize(capacity);
            return Arc::clone(table);
        }
        let table = Arc::new(SessionTable::new(capacity));
        tables.insert(backend.to_owned(), Arc::clone(&table));
        table
    }

    /// Forgets the tables of backends no longer configured (or no longer using affinity).
    pub(crate) fn retain(&self, live: &[&str]) {
        self.tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|name, _| live.contains(&name.as_str()));
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ChatRequest, Message};

    fn up(n: usize) -> Vec<InstanceView> {
        vec![
            InstanceView {
                usable: true,
                ..InstanceView::default()
            };
            n
        ]
    }

    fn affinity(n: usize) -> Affinity {
        let urls: Vec<String> = (0..n)
            .map(|i| format!("http://10.0.0.{i}:8000/v1"))
            .collect();
        let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
        Affinity::new(
            "vllm",
            &AffinityConfig::default(),
            &refs,
            &vec![1; n],
            Arc::new(SessionTable::new(1000)),
            &StateStore::memory(),
            "aigw",
        )
    }

    /// A key for a later turn of session `i` (it has history).
    fn key(i: u64) -> Option<AffinityKey> {
        Some(AffinityKey {
            hash: xxh3_64_with_seed(&i.to_le_bytes(), 1),
            source: KeySource::Header,
            fresh: false,
        })
    }

    /// A key for the first turn of session `i`.
    fn fresh(i: u64) -> Option<AffinityKey> {
        key(i).map(|k| AffinityKey { fresh: true, ..k })
    }

    fn chat(system: &str, messages: &[(Role, &str)]) -> ApiRequest {
        ApiRequest::Chat(ChatRequest {
            system: if system.is_empty() {
                vec![]
            } else {
                vec![system.to_owned()]
            },
            messages: messages
                .iter()
                .map(|(role, text)| Message {
                    role: *role,
                    parts: vec![Part::Text((*text).to_owned())],
                    name: None,
                })
                .collect(),
            ..ChatRequest::default()
        })
    }

    #[test]
    fn keys_come_from_header_then_user_then_prompt() {
        let rules = AffinityRules::new(&AffinityConfig::default());
        let request = chat("sys", &[(Role::User, "hello")]);
        let mut headers = HeaderMap::new();
        let prompt = rules.key(&headers, &request).unwrap();
        assert_eq!(prompt.source, KeySource::Prompt);
        headers.insert("x-claude-code-session-id", "abc".parse().unwrap());
        let header = rules.key(&headers, &request).unwrap();
        assert_eq!(header.source, KeySource::Header);
        // The first configured header present wins; an over-long value is no key.
        headers.insert("x-session-id", "s-1".parse().unwrap());
        assert_ne!(rules.key(&headers, &request).unwrap(), header);
        headers.insert("x-session-id", "x".repeat(300).parse().unwrap());
        assert_eq!(rules.key(&headers, &request).unwrap(), header);

        let ApiRequest::Chat(mut with_user) = request.clone() else {
            unreachable!()
        };
        with_user.user = Some("user_1_account_2_session_3".into());
        let user = rules
            .key(&HeaderMap::new(), &ApiRequest::Chat(with_user))
            .unwrap();
        assert_eq!(user.source, KeySource::User);

        let off = AffinityRules::new(&AffinityConfig {
            prompt: PromptKey::Off,
            user_field: false,
            ..AffinityConfig::default()
        });
        assert_eq!(off.key(&HeaderMap::new(), &request), None);
        let custom = AffinityRules::new(&AffinityConfig {
            headers: vec!["X-Conversation".into()],
            ..AffinityConfig::default()
        });
        let mut h = HeaderMap::new();
        h.insert("x-session-id", "ignored".parse().unwrap());
        assert_eq!(custom.key(&h, &request), Some(prompt));
        h.insert("x-conversation", "c".parse().unwrap());
        assert_eq!(custom.key(&h, &request).unwrap().source, KeySource::Header);
    }

    #[test]
    fn the_prompt_key_stays_the_same_as_the_conversation_grows() {
        let rules = AffinityRules::new(&AffinityConfig::default());
        let system = "You are a coding agent. ".repeat(400);
        let first = chat(&system, &[(Role::User, "fix the bug in main.rs")]);
        let later = chat(
            &system,
            &[
                (Role::User, "fix the bug in main.rs"),
                (Role::Assistant, "done"),
                (Role::User, "now add a test"),
            ],
        );
        let other = chat(&system, &[(Role::User, "write a README")]);
        let h = HeaderMap::new();
        let hash = |request: &ApiRequest| rules.key(&h, request).unwrap().hash;
        assert_eq!(hash(&first), hash(&later));
        assert_ne!(hash(&first), hash(&other));
        // The first turn has nothing beyond its leading content; the later one has history.
        assert!(rules.key(&h, &first).unwrap().fresh);
        assert!(!rules.key(&h, &later).unwrap().fresh);
        // A change anywhere in a long system prompt's middle is not read (bounded), at its end it is.
        let mut tail = system.clone();
        tail.push_str("cwd: /tmp");
        assert_ne!(
            rules.key(&h, &chat(&tail, &[(Role::User, "fix the bug in main.rs")])),
            rules.key(&h, &first)
        );
    }

    #[test]
    fn homes_are_spread_evenly() {
        let a = affinity(4);
        let views = up(4);
        let now = Instant::now();
        let mut counts = [0usize; 4];
        for k in 0..8000 {
            let (order, decision) = a.order(&views, now, key(k), None);
            assert_eq!(decision, Decision::Home);
            counts[order[0]] += 1;
        }
        for c in counts {
            assert!((1700..2300).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn weights_shift_the_share_of_keys() {
        let mut a = affinity(2);
        a.weights = vec![3, 1].into();
        let views = up(2);
        let now = Instant::now();
        let first = (0..4000)
            .filter(|&k| a.order(&views, now, key(k), None).0[0] == 0)
            .count();
        assert!((2800..3200).contains(&first), "{first}");
        // `home` is the first of `rank`, weighted or not.
        for k in 0..200 {
            let hash = key(k).unwrap().hash;
            for weights in [&[3u32, 1][..], &[1, 1]] {
                assert_eq!(
                    home(hash, &a.ids, weights),
                    Some(rank(hash, &a.ids, weights)[0])
                );
            }
        }
    }

    #[test]
    fn removing_an_instance_moves_only_its_keys_and_adding_one_moves_a_fair_share() {
        let urls: Vec<u64> = (0..5)
            .map(|i| instance_id(&format!("http://h{i}:8000/v1")))
            .collect();
        let keys: Vec<u64> = (0..5000).map(|k| key(k).unwrap().hash).collect();
        let home = |ids: &[u64], k: u64| ids[rank(k, ids, &[])[0]];
        let four = &urls[..4];
        let mut moved = 0;
        for &k in &keys {
            let before = home(&urls, k);
            let after = home(four, k);
            if before != urls[4] {
                assert_eq!(before, after, "a key whose home stayed was moved");
            } else {
                moved += 1;
            }
        }
        assert!((800..1200).contains(&moved), "{moved}");
        // The keys the fifth instance takes when it joins come evenly from the other four.
        let mut taken = [0usize; 4];
        for &k in &keys {
            if home(&urls, k) == urls[4] {
                let was = four.iter().position(|&id| id == home(four, k)).unwrap();
                taken[was] += 1;
            }
        }
        assert!(taken.iter().all(|&t| (150..350).contains(&t)), "{taken:?}");
    }

    #[test]
    fn bounded_load_moves_a_busy_home_to_the_least_loaded() {
        let a = affinity(4);
        let now = Instant::now();
        let home = a.order(&up(4), now, key(42), None).0[0];
        let [second, third, fourth] = [1, 2, 3].map(|d| (home + d) % 4);
        let mut views = up(4);
        views[home].in_flight = 3;
        views[second].in_flight = 2;
        views[third].in_flight = 1;
        // A first turn: the bound is ⌈1 × (6 + 1) / 4⌉ = 2 and the home has 3 — the least loaded takes it.
        let (order, decision) = a.order(&views, now, fresh(42), None);
        assert_eq!((order[0], decision), (fourth, Decision::Placed));
        assert!(order.contains(&home));
        // A later turn stays: its bound is ⌈2 × 7 / 4⌉ = 4.
        let (order, decision) = a.order(&views, now, key(42), None);
        assert_eq!((order[0], decision), (home, Decision::Home));
        // Beyond that it moves too.
        views[home].in_flight = 6;
        views[second].in_flight = 1;
        let (order, decision) = a.order(&views, now, key(42), None);
        assert_eq!((order[0], decision), (fourth, Decision::Overflow));
        // A home that reports a free slot is not busy: a later turn stays however loaded it is.
        views[home].cap = Some(8);
        views[home].in_flight = 7;
        assert_eq!(a.order(&views, now, key(42), None).1, Decision::Home);
        views[home].in_flight = 8;
        assert_eq!(a.order(&views, now, key(42), None).1, Decision::Overflow);
        // A fresh request is placed by load whatever the slots say…
        views[home].in_flight = 7;
        assert_eq!(a.order(&views, now, fresh(42), None).1, Decision::Placed);
        // …and within the bound it still avoids a full home while another instance has a free slot.
        let mut views = up(4);
        for v in &mut views {
            v.cap = Some(2);
            v.in_flight = 1;
        }
        views[home].in_flight = 2;
        assert_eq!(a.order(&views, now, fresh(42), None).1, Decision::Placed);
        views[home].in_flight = 1;
        assert_eq!(
            a.order(&views, now, fresh(42), None),
            (a.order(&views, now, fresh(42), None).0, Decision::Home)
        );
    }

    #[test]
    fn least_loaded_placement_fills_the_emptiest_and_prefers_home_on_ties() {
        let urls = ["http://a/v1", "http://b/v1", "http://c/v1"];
        let a = Affinity::new(
            "vllm",
            &AffinityConfig {
                placement: Placement::LeastLoaded,
                ..AffinityConfig::default()
            },
            &urls,
            &[1, 1, 1],
            Arc::new(SessionTable::new(100)),
            &StateStore::memory(),
            "aigw",
        );
        let now = Instant::now();
        for k in 0..50 {
            let home = a.order(&up(3), now, key(k), None).0[0];
            // All idle: home.
            assert_eq!(
                a.order(&up(3), now, fresh(k), None),
                (a.order(&up(3), now, fresh(k), None).0, Decision::Home)
            );
            assert_eq!(a.order(&up(3), now, fresh(k), None).0[0], home);
            let mut views = up(3);
            views[home].in_flight = 1;
            let (order, decision) = a.order(&views, now, fresh(k), None);
            assert_ne!(order[0], home);
            assert_eq!(decision, Decision::Placed);
            // A later turn is not placed by load.
            assert_eq!(a.order(&views, now, key(k), None).0[0], home);
        }
    }

    #[test]
    fn bounded_load_keeps_every_instance_within_the_factor_of_the_mean() {
        // Many keys whose homes pile up: hand out 400 long requests one by one, none finishing.
        let a = affinity(4);
        let now = Instant::now();
        for (factor, make) in [(1.0, fresh as fn(u64) -> Option<AffinityKey>), (2.0, key)] {
            let mut views = up(4);
            for k in 0..400u64 {
                // Only 10 distinct sessions: their homes are uneven by construction.
                let (order, _) = a.order(&views, now, make(k % 10), None);
                views[order[0]].in_flight += 1;
                let total: u64 = views.iter().map(|v| v.in_flight).sum();
                let max = views.iter().map(|v| v.in_flight).max().unwrap();
                let bound = (factor * total as f64 / 4.0).ceil() as u64;
                assert!(
                    max <= bound,
                    "max {max} above {factor} × the mean at total {total}: {views:?}"
                );
            }
        }
    }

    #[test]
    fn an_ejected_home_moves_its_sessions_and_few_move_back() {
        let a = affinity(4);
        let t0 = Instant::now();
        let keys: Vec<_> = (0..400).map(key).collect();
        let homes: Vec<usize> = keys
            .iter()
            .map(|&k| a.order(&up(4), t0, k, None).0[0])
            .collect();
        let mut views = up(4);
        views[2].usable = false;
        views[2].retry_at = Some(t0 + Duration::from_secs(30));
        let mut moved = 0;
        for (i, &k) in keys.iter().enumerate() {
            let sticky = block_on(a.lookup(k, None, t0));
            let (order, decision) = a.order(&views, t0, k, sticky);
            assert_ne!(order[0], 2);
            assert_eq!(
                *order.last().unwrap(),
                2,
                "the ejected instance is tried last"
            );
            if homes[i] == 2 {
                assert_eq!(decision, Decision::Failover);
                moved += 1;
            } else {
                assert_eq!(
                    (order[0], decision),
                    (homes[i], Decision::Home),
                    "only the ejected instance's keys move"
                );
            }
            a.served_(k, sticky, order[0], t0);
        }
        assert!(moved > 50, "{moved}");
        assert_eq!(a.remembered(), keys.len());
        // Instance 2 is back: the moved sessions stay where their cache now is; the others never moved.
        let t1 = t0 + Duration::from_secs(60);
        let mut back = 0;
        for (i, &k) in keys.iter().enumerate() {
            let sticky = block_on(a.lookup(k, None, t1));
            let (order, decision) = a.order(&up(4), t1, k, sticky);
            if order[0] == 2 {
                back += 1;
            }
            if homes[i] == 2 {
                assert_eq!(decision, Decision::Sticky);
            }
        }
        assert_eq!(back, 0);
        // New sessions do go to it.
        let new_home = (1000..1100)
            .filter(|&k| a.order(&up(4), t1, key(k), None).0[0] == 2)
            .count();
        assert!(new_home > 10, "{new_home}");
        // Entries expire after the TTL: then the key goes home again.
        let late = t1 + Duration::from_secs(7200);
        let k = keys[homes.iter().position(|&h| h == 2).unwrap()];
        assert_eq!(block_on(a.lookup(k, None, late)), None);
    }

    #[test]
    fn a_side_request_of_a_session_does_not_move_it() {
        let a = affinity(3);
        let now = Instant::now();
        let home = a.order(&up(3), now, key(7), None).0[0];
        let elsewhere = (home + 1) % 3;
        // A later turn served away from home (moved by load): remembered.
        a.served_(key(7), None, elsewhere, now);
        assert_eq!(block_on(a.lookup(key(7), None, now)), Some(elsewhere));
        // A one-message request with the same session header (a title, a summary) served at home: the
        // session stays where its cache is.
        a.served_(fresh(7), Some(elsewhere), home, now);
        assert_eq!(block_on(a.lookup(key(7), None, now)), Some(elsewhere));
        // A later turn at home is remembered too, so a side request cannot move a session that never moved.
        a.served_(key(8), None, a.order(&up(3), now, key(8), None).0[0], now);
        assert!(block_on(a.lookup(key(8), None, now)).is_some());
        // A new conversation placed off its home is remembered; one served at home needs no entry.
        let before = a.remembered();
        let home9 = a.order(&up(3), now, key(9), None).0[0];
        a.served_(fresh(9), None, home9, now);
        assert_eq!(a.remembered(), before);
        a.served_(fresh(9), None, (home9 + 1) % 3, now);
        assert_eq!(block_on(a.lookup(key(9), None, now)), Some((home9 + 1) % 3));
    }

    #[test]
    fn unkeyed_requests_go_to_the_least_loaded() {
        let a = affinity(3);
        let mut views = up(3);
        views[0].in_flight = 2;
        views[1].in_flight = 1;
        views[2].in_flight = 3;
        let (order, decision) = a.order(&views, Instant::now(), None, None);
        assert_eq!((order[0], decision), (1, Decision::Unkeyed));
    }

    impl Affinity {
        /// `served` without prefix blocks.
        fn served_(
            &self,
            key: Option<AffinityKey>,
            sticky: Option<usize>,
            index: usize,
            now: Instant,
        ) {
            self.served(key, None, sticky, index, now);
        }
    }

    #[test]
    fn the_prefix_index_follows_a_conversation_but_not_a_shared_system_prompt() {
        let urls = ["http://a/v1", "http://b/v1", "http://c/v1"];
        let cfg = AffinityConfig {
            prompt: PromptKey::Index,
            ..AffinityConfig::default()
        };
        let a = Affinity::new(
            "vllm",
            &cfg,
            &urls,
            &[1, 1, 1],
            Arc::new(SessionTable::new(1000)),
            &StateStore::memory(),
            "aigw",
        );
        let now = Instant::now();
        let system = "shared agent instructions ".repeat(200);
        let question = "refactor the parser please ".repeat(80);
        let first = chat(&system, &[(Role::User, &question)]);
        let blocks = a.rules.blocks(&first).unwrap();
        assert!(
            blocks.hashes.len() >= 6 && blocks.conversation_from >= 4,
            "{blocks:?}"
        );
        assert_eq!(block_on(a.lookup(None, Some(&blocks), now)), None);
        a.served(
            a.rules.key(&HeaderMap::new(), &first),
            Some(&blocks),
            None,
            2,
            now,
        );
        // The next turn holds the first one's prompt as its prefix: instance 2.
        let later = chat(
            &system,
            &[
                (Role::User, &question),
                (Role::Assistant, "done"),
                (Role::User, "thanks"),
            ],
        );
        let later_blocks = a.rules.blocks(&later).unwrap();
        assert_eq!(
            &later_blocks.hashes[..blocks.hashes.len()],
            &blocks.hashes[..]
        );
        assert_eq!(block_on(a.lookup(None, Some(&later_blocks), now)), Some(2));
        // Another conversation shares only the system prompt: no preference.
        let other = chat(&system, &[(Role::User, &"write docs ".repeat(300))]);
        assert_eq!(
            block_on(a.lookup(None, a.rules.blocks(&other).as_ref(), now)),
            None
        );
        // Without `prompt: index` there are no blocks.
        assert_eq!(
            AffinityRules::new(&AffinityConfig::default()).blocks(&first),
            None
        );
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }
}
