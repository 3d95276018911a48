//! The `affinity:` settings of a backend (session headers, prompt key, placement, load factors) and
//! their checks.

use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

use crate::config_error::Invalid;

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
pub(super) const REDIS_LOOKUP_TIMEOUT: Duration = Duration::from_millis(50);

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
pub(super) const INDEX_HOLDERS: usize = 4;

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
