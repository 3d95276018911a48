//! A request's affinity key (session header, user field or the prompt's leading content) and the
//! prompt's prefix blocks for `prompt: index`.

use http::{HeaderMap, HeaderName};
use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

use crate::protocol::{ApiRequest, Part, Role};

use super::config::*;

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
pub(super) const SEED_HEADER: u64 = 0x5E55_1011;
pub(super) const SEED_USER: u64 = 0x0005_E125;
pub(super) const SEED_PROMPT: u64 = 0x0091_0397;

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
pub(super) struct BlockHasher {
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
