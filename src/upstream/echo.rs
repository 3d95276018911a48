//! The echo backend (seeds 000/003): answers `Echo: <last user message>`, word-count usage, streamed as
//! several chunks. It runs in process and speaks the OpenAI format; other front doors convert.

use crate::error::GatewayError;
use crate::protocol::{ApiRequest, Usage, word_count};

/// What the echo backend says to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct EchoAnswer {
    pub text: String,
    pub usage: Usage,
}

impl EchoAnswer {
    /// The answer cut into word-sized stream pieces, spaces kept, so joining them gives `text`.
    pub fn pieces(&self) -> Vec<&str> {
        self.text.split_inclusive(' ').collect()
    }
}

pub fn answer(request: &ApiRequest) -> Result<EchoAnswer, GatewayError> {
    let prompt = match request {
        ApiRequest::Chat(chat) => chat.last_user_text().ok_or_else(|| {
            GatewayError::invalid(
                "no user message in 'messages'; the echo backend answers the last user message",
                Some("messages".into()),
            )
        })?,
        other => other.prompt_text(),
    };
    let text = format!("Echo: {prompt}");
    Ok(EchoAnswer {
        usage: Usage {
            input_tokens: word_count(&prompt),
            output_tokens: word_count(&text),
            ..Usage::default()
        },
        text,
    })
}

/// A deterministic unit vector per input text, so echo embeddings are stable and comparable.
pub fn embedding(text: &str) -> Vec<f32> {
    const DIMENSIONS: usize = 16;
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    let mut vector = Vec::with_capacity(DIMENSIONS);
    for i in 0..DIMENSIONS {
        for byte in text.bytes().chain([i as u8]) {
            state ^= u64::from(byte);
            state = state.wrapping_mul(0x0100_0000_01b3);
        }
        vector.push(((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32);
    }
    let norm = vector
        .iter()
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    vector.iter().map(|v| v / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::openai::decode_chat;

    #[test]
    fn echoes_the_last_user_message_with_word_counts() {
        let request = ApiRequest::Chat(
            decode_chat(br#"{"messages":[{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":"Hello world"}]}"#).unwrap(),
        );
        let answer = answer(&request).unwrap();
        assert_eq!(answer.text, "Echo: Hello world");
        assert_eq!(
            (answer.usage.input_tokens, answer.usage.output_tokens),
            (2, 3)
        );
        assert_eq!(answer.pieces(), vec!["Echo: ", "Hello ", "world"]);
    }

    #[test]
    fn refuses_a_chat_without_user_message() {
        let request = ApiRequest::Chat(
            decode_chat(br#"{"messages":[{"role":"system","content":"x"}]}"#).unwrap(),
        );
        assert!(
            answer(&request)
                .unwrap_err()
                .message
                .contains("no user message")
        );
    }

    #[test]
    fn embeddings_are_stable_unit_vectors() {
        let a = embedding("hello");
        assert_eq!(a, embedding("hello"));
        assert_ne!(a, embedding("world"));
        let norm: f32 = a.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}
