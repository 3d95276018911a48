//! Anthropic usage both ways: its `input_tokens` excludes cache reads and writes, the canonical count
//! includes them; stream events and answers merge counters field by field.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::protocol::Usage;

/// Anthropic `usage` object for canonical usage (its `input_tokens` excludes cached tokens).
pub(crate) fn usage_json(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage
            .input_tokens
            .saturating_sub(usage.cache_read_tokens)
            .saturating_sub(usage.cache_creation_tokens),
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens,
    })
}

/// Raw Anthropic usage counters, merged field by field as `message_start` and `message_delta` arrive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WireUsage {
    pub input: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
    pub output: u64,
}

impl WireUsage {
    /// Overwrite the counters present in `value` (an Anthropic `usage` object).
    pub fn merge(&mut self, value: &Value) {
        let field = |name: &str| value.get(name).and_then(Value::as_u64);
        if let Some(input) = field("input_tokens") {
            self.input = input;
        }
        if let Some(read) = field("cache_read_input_tokens") {
            self.cache_read = read;
        }
        if let Some(creation) = field("cache_creation_input_tokens") {
            self.cache_creation = creation;
        }
        if let Some(output) = field("output_tokens") {
            self.output = output;
        }
    }

    pub(crate) fn canonical(self) -> Usage {
        Usage {
            input_tokens: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_creation),
            output_tokens: self.output,
            cache_read_tokens: self.cache_read,
            cache_creation_tokens: self.cache_creation,
            reasoning_tokens: 0,
        }
    }
}

/// An Anthropic `usage` object as [`WireUsage::merge`] reads it: a present counter replaces the
/// running one.
#[derive(Deserialize)]
pub(crate) struct UsageIn {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl UsageIn {
    pub(crate) fn merge_into(&self, usage: &mut WireUsage) {
        if let Some(input) = self.input_tokens {
            usage.input = input;
        }
        if let Some(read) = self.cache_read_input_tokens {
            usage.cache_read = read;
        }
        if let Some(creation) = self.cache_creation_input_tokens {
            usage.cache_creation = creation;
        }
        if let Some(output) = self.output_tokens {
            usage.output = output;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_excludes_cache_on_the_wire() {
        let mut wire = WireUsage::default();
        wire.merge(&json!({"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 1}));
        let usage = wire.canonical();
        assert_eq!(usage.input_tokens, 115);
        assert_eq!(usage_json(&usage)["input_tokens"], 10);
    }
}
