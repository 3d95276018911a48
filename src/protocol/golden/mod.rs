//! Golden fixture suites and property tests for every conversion (test-only): `chat.rs` (OpenAI chat
//! completions ⇄ Anthropic messages, fixtures in `../fixtures/`), `responses.rs` (the Responses API to
//! and from both, fixtures in `../fixtures_responses/`), and the harness they share (`harness.rs`).

mod chat;
mod harness;
mod responses;
