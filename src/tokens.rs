//! Token counting with tiktoken's o200k encoding, used to estimate input tokens before an upstream call.
//!
//! The estimate feeds token rate limits, quotas and `max_input_tokens`; it is reconciled with the
//! upstream's reported usage afterwards, so a proxy encoding (also for Anthropic models, which have no
//! public tokenizer) is good enough. The BPE table is embedded in the binary: nothing is downloaded.
//!
//! Coding agents resend their whole history every turn, so counting every text of every request grows
//! with the square of a session's length. [`TokenCounter`] counts each text of a request (system part,
//! message text, tool result, tool-call arguments) on its own and keeps the count by a 128-bit hash of
//! the text: a later turn counts only what is new. With `state.redis_url` the counts are shared, so a
//! turn that lands on another replica finds the history counted too. A request whose new text is large
//! is counted on a blocking thread, so it never holds up the other connections.

use std::sync::{Arc, Mutex, PoisonError};

use std::sync::LazyLock;

use tiktoken::CoreBpe;

use crate::protocol::ApiRequest;
use crate::store::{RedisStore, StateStore};

/// Tokens OpenAI adds per chat message for the role and separators.
const PER_MESSAGE_OVERHEAD: u64 = 3;
/// Tokens that prime the assistant reply in every chat request.
const REPLY_PRIMING: u64 = 3;

/// The `tiktoken` crate's o200k: the same counts as OpenAI's tiktoken (the tests hold it to
/// tiktoken-rs), its table in one arena (23 MB resident instead of tiktoken-rs's 45) and a hand-written
/// pre-tokenizer in front of the regex.
static BPE: LazyLock<CoreBpe> = LazyLock::new(tiktoken::encoding::o200k_base);

fn bpe() -> &'static CoreBpe {
    &BPE
}

/// Parses the BPE table now so the first request does not pay for it.
pub fn warm() {
    let _ = bpe();
}

/// Number of o200k tokens in `text`; special-token text counts as ordinary text, since it is user input.
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    u64::try_from(bpe().count(text)).unwrap_or(u64::MAX)
}

/// Estimated prompt tokens of a chat request from its message texts (role overhead included).
pub fn count_messages<'a>(messages: impl IntoIterator<Item = &'a str>) -> u64 {
    messages.into_iter().fold(REPLY_PRIMING, |total, text| {
        total + PER_MESSAGE_OVERHEAD + count(text)
    })
}

/// Texts from this size are cached: every non-empty text. Even a short text costs the tokenizer
/// microseconds (its regex runs per call), while a hash and a lookup cost tens of nanoseconds, and a
/// history of hundreds of short tool-call arguments would otherwise be counted inline every turn.
const CACHED_FROM_BYTES: usize = 1;

/// The key of a text's count, locally and in Redis: XXH3-128 (keys written by earlier versions, which
/// used another implementation of it, stay valid).
fn text_hash(text: &str) -> u128 {
    twox_hash::XxHash3_128::oneshot(text.as_bytes())
}

/// Counts the cache keeps: 16 bytes of hash and 4 of count each, plus the list's links.
const CACHED_COUNTS: usize = 1 << 17;

/// New text beyond this many bytes in one request is counted on a blocking thread (about 5–20 ms of
/// CPU per 100 KB): inline, it would hold up every other connection of this runtime thread.
const OFFLOAD_FROM_BYTES: usize = 32 * 1024;

/// How long a shared count stays in Redis: long enough for a session's turns, then it goes.
const SHARED_TTL_SECONDS: u64 = 3600;

/// Input-token estimates whose per-text counts are cached by content (in memory, and in Redis when the
/// gateway shares state). One per process: counts never change, so reloads keep them.
pub struct TokenCounter {
    local: Mutex<lru::LruCache<u128, u32>>,
    shared: Option<RedisStore>,
    /// Texts counted so far (the tokenizer's work the cache did not save).
    counted: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCounter")
            .field("cached", &self.lock().len())
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl TokenCounter {
    pub fn new(store: &StateStore) -> TokenCounter {
        TokenCounter {
            local: Mutex::new(lru::LruCache::unbounded()),
            shared: match store {
                StateStore::Redis(redis) => Some(redis.clone()),
                StateStore::Memory(_) => None,
            },
            counted: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Texts counted so far (not found in a cache).
    pub fn counted(&self) -> u64 {
        self.counted.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<u128, u32>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tokens of one text, from the cache when it was counted before (this gateway's only).
    pub(crate) fn count_cached(&self, text: &str) -> u64 {
        if text.len() < CACHED_FROM_BYTES {
            return count(text);
        }
        let hash = text_hash(text);
        if let Some(&cached) = self.lock().get(&hash) {
            return u64::from(cached);
        }
        let tokens = count(text);
        self.counted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut local = self.lock();
        local.put(hash, u32::try_from(tokens).unwrap_or(u32::MAX));
        if local.len() > CACHED_COUNTS {
            local.pop_lru();
        }
        tokens
    }

    /// The request's estimated input tokens: the sum of its texts' counts. Texts counted before (by
    /// this gateway, or by another replica sharing Redis) are not counted again.
    pub async fn estimate(&self, request: &Arc<ApiRequest>) -> u64 {
        let pieces = request.input_pieces();
        let mut total = 0u64;
        // (index into `pieces`, hash) of the texts whose counts are not at hand yet.
        let mut missing: Vec<(usize, u128)> = Vec::new();
        {
            let mut local = self.lock();
            for (index, piece) in pieces.iter().enumerate() {
                if piece.written_len() < CACHED_FROM_BYTES {
                    total += count(piece);
                    continue;
                }
                let hash = piece.hash128();
                match local.get(&hash) {
                    Some(&cached) => total += u64::from(cached),
                    None => missing.push((index, hash)),
                }
            }
        }
        if missing.is_empty() {
            return total;
        }
        if let Some(shared) = &self.shared {
            let found = shared_counts(shared, &missing).await;
            let mut local = self.lock();
            missing.retain(|(_, hash)| match found.get(hash) {
                Some(&cached) => {
                    total += u64::from(cached);
                    local.put(*hash, cached);
                    false
                }
                None => true,
            });
        }
        if missing.is_empty() {
            return total;
        }
        self.counted
            .fetch_add(missing.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let new_bytes: usize = missing
            .iter()
            .map(|(index, _)| pieces[*index].written_len())
            .sum();
        let indexes: Vec<usize> = missing.iter().map(|(index, _)| *index).collect();
        drop(pieces);
        let counted = if new_bytes >= OFFLOAD_FROM_BYTES {
            let shared_request = Arc::clone(request);
            let shared_indexes = indexes.clone();
            match crate::offload::off_thread(move || count_pieces(&shared_request, &shared_indexes))
                .await
            {
                Some(counted) => counted,
                // No blocking thread (the runtime is shutting down): count here.
                None => count_pieces(request, &indexes),
            }
        } else {
            count_pieces(request, &indexes)
        };
        let mut fresh = Vec::with_capacity(counted.len());
        {
            let mut local = self.lock();
            for ((_, hash), tokens) in missing.iter().zip(&counted) {
                total += tokens;
                let tokens = u32::try_from(*tokens).unwrap_or(u32::MAX);
                local.put(*hash, tokens);
                fresh.push((*hash, tokens));
            }
            while local.len() > CACHED_COUNTS {
                local.pop_lru();
            }
        }
        if let Some(shared) = &self.shared {
            store_shared(shared, fresh);
        }
        total
    }
}

/// The counts of the request's texts at `indexes` (of [`ApiRequest::input_pieces`]).
fn count_pieces(request: &ApiRequest, indexes: &[usize]) -> Vec<u64> {
    let pieces = request.input_pieces();
    indexes
        .iter()
        .map(|&index| pieces.get(index).map_or(0, |piece| count(piece)))
        .collect()
}

fn shared_key(store: &RedisStore, hash: u128) -> String {
    format!("{}:tok:{hash:032x}", store.prefix())
}

/// The counts Redis holds for these hashes (one MGET); none when Redis does not answer.
async fn shared_counts(
    store: &RedisStore,
    missing: &[(usize, u128)],
) -> std::collections::HashMap<u128, u32> {
    let mut command = redis::cmd("MGET");
    for (_, hash) in missing {
        command.arg(shared_key(store, *hash));
    }
    let Ok(values) = store.query::<Vec<Option<u32>>>(&command).await else {
        return std::collections::HashMap::new();
    };
    missing
        .iter()
        .zip(values)
        .filter_map(|((_, hash), value)| Some((*hash, value?)))
        .collect()
}

/// Publish fresh counts in the background (a lost write only means another replica counts again).
fn store_shared(store: &RedisStore, fresh: Vec<(u128, u32)>) {
    if fresh.is_empty() {
        return;
    }
    let store = store.clone();
    tokio::spawn(async move {
        let writes = fresh.iter().map(|(hash, tokens)| {
            let command =
                redis::Cmd::set_ex(shared_key(&store, *hash), *tokens, SHARED_TTL_SECONDS);
            let store = &store;
            async move { store.query::<()>(&command).await }
        });
        futures_util::future::join_all(writes).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ChatRequest, Message, Part, Role, ToolCall, ToolResult};

    /// tiktoken-rs, the reference: OpenAI's o200k BPE as tiktoken counts it, special-token text as
    /// ordinary text.
    fn reference_count(text: &str) -> u64 {
        tiktoken_rs::o200k_base_singleton().count_ordinary(text) as u64
    }

    proptest::proptest! {
        /// Any text counts as tiktoken counts it: words and contractions, runs of spaces and newlines
        /// (where the pre-tokenizer's rules are subtle), digits, punctuation, accented and CJK
        /// letters, emoji, special-token text and anything printable, in any mix.
        #[test]
        fn counts_match_tiktoken(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => "[a-zA-Z]{1,12}",
                    2 => " {1,5}",
                    2 => "[\\n\\r\\t ]{1,6}",
                    1 => "[0-9]{1,8}",
                    1 => "'(s|t|re|ve|m|ll|d|S|T|RE|LL)",
                    2 => "[.,;:!?(){}\\[\\]\"'`<>/=+*&|#@$%^~_-]{1,4}",
                    1 => "[À-ÿĀ-ž]{1,6}",
                    1 => "[一-龥ぁ-んァ-ンА-я]{1,8}",
                    1 => "[\\u{1F300}-\\u{1FAFF}]{1,3}",
                    1 => proptest::prelude::Just("<|endoftext|>".to_owned()),
                    2 => "\\PC{1,8}",
                ],
                0..60,
            )
        ) {
            let text = pieces.concat();
            proptest::prop_assert_eq!(count(&text), reference_count(&text), "{:?}", text);
        }
    }

    /// Every text of an agent turn (source in tool results, JSON arguments) counts as tiktoken
    /// counts it.
    #[test]
    fn agent_texts_count_as_tiktoken_counts_them() {
        let turn = agent_turn(30, "and now the tests, ok? 日本語も");
        let pieces = turn.input_pieces();
        assert!(pieces.len() > 60);
        for piece in pieces {
            assert_eq!(count(&piece), reference_count(&piece), "{piece:?}");
        }
    }

    /// The count keys are XXH3-128 as the reference defines it, whatever the input's length (the
    /// vector loop for long texts included): the keys replicas and earlier versions wrote to Redis.
    #[test]
    fn text_hashes_are_xxh3_128() {
        let long: String = (0..5000)
            .map(|n| char::from(b'a' + (n % 26) as u8))
            .collect();
        for len in [0, 1, 3, 16, 17, 128, 129, 240, 241, 1024, 4999, 5000] {
            let text = &long[..len];
            assert_eq!(
                text_hash(text),
                xxhash_rust::xxh3::xxh3_128(text.as_bytes()),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn counts_o200k_tokens() {
        warm();
        assert_eq!(count(""), 0);
        assert_eq!(
            count("Hello world, this is a test of the offline tokenizer."),
            12
        );
        assert_eq!(count("hello"), 1);
        // Special tokens in user text are not treated as control tokens.
        assert!(count("<|endoftext|>") > 1);
    }

    #[test]
    fn chat_estimate_adds_overhead() {
        assert_eq!(count_messages([]), 3);
        assert_eq!(count_messages(["hello", "hello"]), 3 + 2 * (3 + 1));
    }

    fn agent_turn(history: usize, last: &str) -> Arc<ApiRequest> {
        let text = |i: usize| {
            format!(
                "tool output {i}: {}",
                "let value = compute(input)?; ".repeat(40)
            )
        };
        let mut messages = vec![Message {
            role: Role::User,
            parts: vec![Part::Text("fix the failing test, please".into())],
            name: None,
        }];
        for i in 0..history {
            messages.push(Message {
                role: Role::Assistant,
                parts: vec![Part::ToolCall(ToolCall {
                    id: format!("call_{i}"),
                    name: "read_file".into(),
                    arguments: format!(
                        "{{\"path\": \"src/module_{i}/with/a/long/path.rs\", \"lines\": 400}}"
                    )
                    .into(),
                })],
                name: None,
            });
            messages.push(Message {
                role: Role::Tool,
                parts: vec![Part::ToolResult(ToolResult {
                    tool_call_id: format!("call_{i}"),
                    content: text(i).into(),
                    is_error: false,
                })],
                name: None,
            });
        }
        messages.push(Message {
            role: Role::User,
            parts: vec![Part::Text(last.into())],
            name: None,
        });
        Arc::new(ApiRequest::Chat(ChatRequest {
            system: vec!["You are a coding agent. ".repeat(30).into()],
            messages,
            ..ChatRequest::default()
        }))
    }

    /// The estimate is the sum of the texts' counts, whether they come from the cache or not, and a
    /// later turn counts only its new texts.
    #[tokio::test]
    async fn estimates_sum_the_texts_and_reuse_counted_history() {
        let counter = TokenCounter::new(&StateStore::memory());
        let first = agent_turn(30, "what changed?");
        let expected: u64 = first.input_pieces().iter().map(|p| count(p)).sum();
        assert_eq!(counter.estimate(&first).await, expected);
        let distinct = |request: &ApiRequest| {
            let mut texts: Vec<String> = request
                .input_pieces()
                .into_iter()
                .map(|piece| piece.to_string())
                .collect();
            texts.sort_unstable();
            texts.dedup();
            texts
        };
        let cached = counter.lock().len();
        assert_eq!(cached, distinct(&first).len());
        assert_eq!(counter.counted(), cached as u64);
        assert!(cached > 60, "{cached}");
        // The same turn again: all from the cache, same total, nothing counted.
        assert_eq!(counter.estimate(&first).await, expected);
        assert_eq!(counter.counted(), cached as u64);
        // The next turn: one more tool call and result in the history, a new last message.
        let next = agent_turn(31, "and now?");
        let expected: u64 = next.input_pieces().iter().map(|p| count(p)).sum();
        assert_eq!(counter.estimate(&next).await, expected);
        let seen = distinct(&first);
        let new = distinct(&next)
            .into_iter()
            .filter(|text| !seen.contains(text))
            .count();
        assert_eq!(new, 3);
        assert_eq!(
            counter.counted(),
            cached as u64 + 3,
            "only the new texts were counted"
        );
    }

    /// New text beyond the offload size is counted on a blocking thread, with the same result.
    #[tokio::test]
    async fn large_new_text_is_counted_off_the_runtime_thread_with_the_same_result() {
        let counter = TokenCounter::new(&StateStore::memory());
        let big = agent_turn(200, "go");
        let bytes: usize = big.input_pieces().iter().map(|p| p.len()).sum();
        assert!(bytes > OFFLOAD_FROM_BYTES, "{bytes}");
        let expected: u64 = big.input_pieces().iter().map(|p| count(p)).sum();
        assert_eq!(counter.estimate(&big).await, expected);
    }

    /// With Redis, a count made by one gateway is found by another (a fresh local cache).
    #[tokio::test]
    async fn counts_are_shared_through_redis() {
        let Some(server) = crate::store::test_redis::TestRedis::start() else {
            return;
        };
        let config = crate::store::StateConfig {
            redis_url: Some(server.url()),
            key_prefix: "tok-test".into(),
            ..Default::default()
        };
        let store = StateStore::connect(&config).await;
        let one = TokenCounter::new(&store);
        let two = TokenCounter::new(&store);
        let turn = agent_turn(10, "shared");
        let expected = one.estimate(&turn).await;
        // The counts are written in the background: wait until Redis has them.
        let StateStore::Redis(redis) = &store else {
            panic!("redis store expected");
        };
        let long: Vec<u128> = turn
            .input_pieces()
            .iter()
            .filter(|p| p.len() >= CACHED_FROM_BYTES)
            .map(|p| text_hash(p))
            .collect();
        let probe: Vec<(usize, u128)> = long.iter().map(|h| (0, *h)).collect();
        for _ in 0..200 {
            if shared_counts(redis, &probe).await.len() == long.len() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let published = shared_counts(redis, &probe).await;
        assert_eq!(published.len(), long.len());
        // Mark one published count: `two` must report it, so it read Redis instead of counting.
        let marked = long[0];
        let command = redis::Cmd::set(shared_key(redis, marked), published[&marked] + 1000);
        redis
            .query::<()>(&command)
            .await
            .unwrap_or_else(|_| panic!("redis SET"));
        assert_eq!(two.estimate(&turn).await, expected + 1000);
        assert_eq!(two.counted(), 0, "every long text's count came from Redis");
    }
}
