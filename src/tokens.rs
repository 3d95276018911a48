//! Token counting with tiktoken's o200k encoding, used to estimate input tokens before an upstream call.
//!
//! The estimate feeds token rate limits, quotas and `max_input_tokens`; it is reconciled with the
//! upstream's reported usage afterwards, so a proxy encoding (also for Anthropic models, which have no
//! public tokenizer) is good enough. The BPE table is embedded in the binary: nothing is downloaded.

use tiktoken_rs::CoreBPE;

/// Tokens OpenAI adds per chat message for the role and separators.
const PER_MESSAGE_OVERHEAD: u64 = 3;
/// Tokens that prime the assistant reply in every chat request.
const REPLY_PRIMING: u64 = 3;

fn bpe() -> &'static CoreBPE {
    tiktoken_rs::o200k_base_singleton()
}

/// Parses the BPE table now (100–180 ms) so the first request does not pay for it.
pub fn warm() {
    let _ = bpe();
}

/// Number of o200k tokens in `text`; special-token text counts as ordinary text, since it is user input.
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    u64::try_from(bpe().count_ordinary(text)).unwrap_or(u64::MAX)
}

/// Estimated prompt tokens of a chat request from its message texts (role overhead included).
pub fn count_messages<'a>(messages: impl IntoIterator<Item = &'a str>) -> u64 {
    messages.into_iter().fold(REPLY_PRIMING, |total, text| {
        total + PER_MESSAGE_OVERHEAD + count(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
