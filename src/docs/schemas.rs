//! Documentation-only schemas of the request and response bodies (mirrors of the wire formats that
//! list the fields clients use).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Author of an OpenAI chat message.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

/// A function call requested by the model.
#[derive(Serialize, ToSchema)]
pub struct FunctionCall {
    pub name: String,
    /// JSON-encoded arguments, as generated.
    pub arguments: String,
}

/// A tool call in an assistant message.
#[derive(Serialize, ToSchema)]
pub struct ToolCall {
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

/// One OpenAI chat message.
#[derive(Serialize, ToSchema)]
pub struct ChatMessage {
    pub role: ChatRole,
    /// A string, or an array of content parts (`{"type":"text","text":…}`, `image_url`, …).
    pub content: Option<Value>,
    pub name: Option<String>,
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For `role: tool`: the call this message answers.
    pub tool_call_id: Option<String>,
    /// Reasoning text of reasoning models, when the backend returns it.
    pub reasoning_content: Option<String>,
}

/// `POST /v1/chat/completions` request. Unknown fields are forwarded unchanged to OpenAI-type backends.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatCompletionRequest {
    /// A model alias, a backend name, or any model string (routed to the default backend).
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// Stream the reply as server-sent events (`text/event-stream`), ending with `data: [DONE]`.
    pub stream: Option<bool>,
    /// `{"include_usage": true}` adds a final chunk with usage.
    pub stream_options: Option<Value>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    /// A string or an array of up to 4 strings.
    pub stop: Option<Value>,
    pub n: Option<u32>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub seed: Option<i64>,
    /// Function tools the model may call.
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub response_format: Option<Value>,
    pub user: Option<String>,
}

/// Token counts of an OpenAI-format response.
#[derive(Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// One choice of a chat completion.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatChoice {
    pub index: u32,
    pub message: ChatMessage,
    /// `stop`, `length`, `tool_calls` or `content_filter`.
    pub finish_reason: Option<String>,
}

/// `POST /v1/chat/completions` response (non-streaming).
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatCompletionResponse {
    /// The request id (`X-Request-ID`).
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Option<Usage>,
    /// The backend that answered (after any fallback); also in the `X-Gateway-Backend` header.
    pub backend: Option<String>,
    /// Present when the response cache is enabled.
    pub cached: Option<bool>,
}

/// The incremental message of a streamed choice.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatDelta {
    pub role: Option<ChatRole>,
    pub content: Option<String>,
    pub tool_calls: Option<Vec<Value>>,
    pub reasoning_content: Option<String>,
}

/// One streamed choice.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatChunkChoice {
    pub index: u32,
    pub delta: ChatDelta,
    pub finish_reason: Option<String>,
}

/// One `data:` event of a streamed chat completion.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatCompletionChunk {
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChatChunkChoice>,
    /// Only on the last chunk, with `stream_options.include_usage`.
    pub usage: Option<Usage>,
}

/// `POST /v1/completions` request (legacy text completion).
#[derive(Serialize, ToSchema)]
pub struct CompletionRequest {
    pub model: String,
    /// A string or an array of strings.
    pub prompt: Value,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stream: Option<bool>,
    pub stop: Option<Value>,
    pub n: Option<u32>,
    pub user: Option<String>,
}

/// One choice of a text completion.
#[derive(Serialize, ToSchema)]
pub(crate) struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub finish_reason: Option<String>,
}

/// `POST /v1/completions` response.
#[derive(Serialize, ToSchema)]
pub(crate) struct CompletionResponse {
    pub id: String,
    /// Always `text_completion`.
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Option<Usage>,
    pub backend: Option<String>,
}

/// `POST /v1/embeddings` request.
#[derive(Serialize, ToSchema)]
pub(crate) struct EmbeddingRequest {
    pub model: String,
    /// A string, an array of strings, or token arrays.
    pub input: Value,
    /// `float` (default) or `base64`.
    pub encoding_format: Option<String>,
    pub dimensions: Option<u32>,
    pub user: Option<String>,
}

/// One embedding vector.
#[derive(Serialize, ToSchema)]
pub(crate) struct Embedding {
    /// Always `embedding`.
    pub object: String,
    pub index: u32,
    pub embedding: Vec<f32>,
}

/// Token counts of an embeddings response.
#[derive(Serialize, ToSchema)]
pub(crate) struct EmbeddingUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

/// `POST /v1/embeddings` response.
#[derive(Serialize, ToSchema)]
pub(crate) struct EmbeddingResponse {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

/// One entry of `GET /v1/models`: a configured model alias or backend.
#[derive(Serialize, ToSchema)]
pub(crate) struct Model {
    pub id: String,
    /// Always `model`.
    pub object: String,
    pub created: i64,
    pub owned_by: String,
}

/// `GET /v1/models` response.
#[derive(Serialize, ToSchema)]
pub(crate) struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Model>,
}

/// One Anthropic message.
#[derive(Serialize, ToSchema)]
pub(crate) struct AnthropicMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// A string or an array of content blocks (`text`, `image`, `tool_use`, `tool_result`, …).
    pub content: Value,
}

/// `POST /v1/messages` request. Unknown fields are forwarded unchanged to Anthropic-type backends.
#[derive(Serialize, ToSchema)]
pub(crate) struct MessagesRequest {
    pub model: String,
    pub max_tokens: u32,
    pub messages: Vec<AnthropicMessage>,
    /// A string or an array of text blocks.
    pub system: Option<Value>,
    /// Stream the reply as Anthropic server-sent events (`message_start` … `message_stop`).
    pub stream: Option<bool>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub stop_sequences: Option<Vec<String>>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    /// Extended thinking: `{"type":"enabled","budget_tokens":N}`.
    pub thinking: Option<Value>,
    pub metadata: Option<Value>,
}

/// A content block of an Anthropic response.
#[derive(Serialize, ToSchema)]
pub(crate) struct ContentBlock {
    /// `text`, `thinking` or `tool_use`.
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    pub thinking: Option<String>,
    /// For `tool_use`.
    pub id: Option<String>,
    pub name: Option<String>,
    pub input: Option<Value>,
}

/// Token counts of an Anthropic response.
#[derive(Serialize, ToSchema)]
pub(crate) struct AnthropicUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// `POST /v1/messages` response (non-streaming).
#[derive(Serialize, ToSchema)]
pub(crate) struct MessagesResponse {
    pub id: String,
    /// Always `message`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Always `assistant`.
    pub role: String,
    pub model: String,
    pub content: Vec<ContentBlock>,
    /// `end_turn`, `max_tokens`, `stop_sequence` or `tool_use`.
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    pub usage: AnthropicUsage,
}

/// One Anthropic stream event (`event:` name and `data:` JSON with the same `type`).
#[derive(Serialize, ToSchema)]
pub(crate) struct MessageStreamEvent {
    /// `message_start`, `content_block_start`, `content_block_delta`, `content_block_stop`,
    /// `message_delta`, `message_stop`, `ping` or `error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: Option<Value>,
    pub index: Option<u32>,
    pub content_block: Option<Value>,
    pub delta: Option<Value>,
    pub usage: Option<Value>,
}

/// `POST /v1/responses` request (OpenAI Responses API). Unknown fields are forwarded unchanged to
/// backends that serve the Responses API natively (`native_responses: true`).
#[derive(Serialize, ToSchema)]
pub struct ResponsesRequest {
    /// A model alias, a backend name, or any model string (routed to the default backend).
    pub model: Option<String>,
    /// A string, or input items: messages (`input_text`, `input_image`, `output_text` parts),
    /// `function_call`, `function_call_output`, `reasoning`.
    pub input: Value,
    /// A system message put first (not carried over by `previous_response_id`).
    pub instructions: Option<String>,
    /// Continue a stored answer: its conversation comes before `input`.
    pub previous_response_id: Option<String>,
    /// Keep the answer for `previous_response_id` and `GET /v1/responses/{id}` (default true).
    pub store: Option<bool>,
    /// Stream the answer as Responses events (`response.created` … `response.completed`).
    pub stream: Option<bool>,
    /// Function tools (`{"type":"function","name","parameters"}`).
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// `{"format": {"type": "json_schema", "name", "schema", "strict"}}` for structured output.
    pub text: Option<Value>,
    /// `{"effort": "low"|"medium"|"high", "summary": …}`.
    pub reasoning: Option<Value>,
    pub metadata: Option<Value>,
    pub user: Option<String>,
}

/// Token counts of a Responses answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct ResponsesUsage {
    pub input_tokens: u64,
    /// `{"cached_tokens": N}`.
    pub input_tokens_details: Value,
    pub output_tokens: u64,
    /// `{"reasoning_tokens": N}`.
    pub output_tokens_details: Value,
    pub total_tokens: u64,
}

/// A Responses API `response` object (`POST /v1/responses`, `GET /v1/responses/{id}`).
#[derive(Serialize, ToSchema)]
pub(crate) struct ResponseObject {
    /// `resp_<request id>`.
    pub id: String,
    /// Always `response`.
    pub object: String,
    pub created_at: i64,
    /// `completed`, `incomplete` (see `incomplete_details`), `failed` or `in_progress`.
    pub status: String,
    pub error: Option<Value>,
    /// `{"reason": "max_output_tokens" | "content_filter"}`.
    pub incomplete_details: Option<Value>,
    pub model: String,
    /// Output items: `message` (`output_text` parts), `function_call`, `reasoning`.
    pub output: Vec<Value>,
    pub usage: Option<ResponsesUsage>,
    pub previous_response_id: Option<String>,
    pub store: Option<bool>,
    pub metadata: Option<Value>,
    /// The backend that answered; also in the `X-Gateway-Backend` header.
    pub backend: Option<String>,
    /// Present when the response cache is enabled.
    pub cached: Option<bool>,
}

/// One Responses stream event (`event:` name and `data:` JSON with the same `type`), numbered by
/// `sequence_number` from 0.
#[derive(Serialize, ToSchema)]
pub(crate) struct ResponseStreamEvent {
    /// `response.created`, `response.in_progress`, `response.output_item.added`,
    /// `response.content_part.added`, `response.output_text.delta`, `response.output_text.done`,
    /// `response.reasoning_text.delta`, `response.function_call_arguments.delta`,
    /// `response.function_call_arguments.done`, `response.content_part.done`,
    /// `response.output_item.done`, `response.completed` (or `response.incomplete`); after a
    /// fault `error` then `response.failed`.
    #[serde(rename = "type")]
    pub kind: String,
    pub sequence_number: u64,
    pub response: Option<Value>,
    pub output_index: Option<u32>,
    pub item: Option<Value>,
    pub item_id: Option<String>,
    pub content_index: Option<u32>,
    pub delta: Option<String>,
}

/// `DELETE /v1/responses/{id}` response.
#[derive(Serialize, ToSchema)]
pub(crate) struct ResponseDeleted {
    pub id: String,
    /// Always `response.deleted`.
    pub object: String,
    pub deleted: bool,
}

/// `POST /v1/messages/count_tokens` request.
#[derive(Serialize, ToSchema)]
pub(crate) struct CountTokensRequest {
    pub model: String,
    pub messages: Vec<AnthropicMessage>,
    pub system: Option<Value>,
    pub tools: Option<Vec<Value>>,
}

/// `POST /v1/messages/count_tokens` response.
#[derive(Serialize, ToSchema)]
pub(crate) struct CountTokensResponse {
    /// An estimate for backends without a public tokenizer.
    pub input_tokens: u64,
}

/// `GET /v1/usage` response: the calling key's consumption and limits.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageReport {
    /// The configured key name (absent when the gateway is open).
    pub key_name: Option<String>,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Quota limits and what remains in the current period.
    pub quota: Option<Value>,
    /// Rate limit settings of the key.
    pub rate_limit: Option<Value>,
}

/// Health of one backend.
#[derive(Serialize, ToSchema)]
pub(crate) struct BackendHealth {
    pub healthy_instances: u32,
    pub instances: u32,
}

/// `GET /health` response.
#[derive(Serialize, ToSchema)]
pub(crate) struct HealthResponse {
    /// `healthy` while the process serves.
    pub status: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub backends: BTreeMap<String, BackendHealth>,
}

/// `GET /health/ready` response.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReadyResponse {
    /// `ready`, or `not_ready` (503) when this replica cannot serve.
    pub status: String,
    /// Why not ready: Redis does not answer and `state.on_unavailable` is `fail_closed`.
    pub reason: Option<String>,
}

/// Latency summary in milliseconds.
#[derive(Serialize, ToSchema)]
pub(crate) struct LatencySummary {
    pub count: u64,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// Per-backend counters of `/stats`.
#[derive(Serialize, ToSchema)]
pub(crate) struct BackendStats {
    pub requests: u64,
    pub errors: u64,
    pub latency_ms: LatencySummary,
}

/// `GET /stats` response.
#[derive(Serialize, ToSchema)]
pub(crate) struct StatsResponse {
    pub uptime_seconds: u64,
    pub requests: u64,
    /// Responses with status >= 500.
    pub errors: u64,
    /// Responses with status 4xx.
    pub client_errors: u64,
    /// Requests rejected by rate limits and quotas.
    pub rejected: u64,
    pub error_rate: f64,
    pub requests_per_second: f64,
    pub latency_ms: LatencySummary,
    pub backends: BTreeMap<String, BackendStats>,
    /// Live cache entries: in memory, or in Redis under `state.key_prefix` (counted by SCAN for
    /// this request, at most 1 s). When Redis does not answer: the last count, or null if there
    /// was none; `cache.size_source` (`memory`, `redis`, `last_known`, `unknown`, `disabled`)
    /// and `cache.size_age_s` say which.
    pub cache_size: Option<u64>,
    pub cache_capacity: Option<u64>,
    pub hits: Option<u64>,
    pub misses: Option<u64>,
}

/// `POST /admin/reload` response.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReloadResponse {
    /// `reloaded` or `rejected` (the old config stays).
    pub status: String,
    /// What was wrong with the new config, when rejected.
    pub error: Option<String>,
}

/// A configured client key, without its secret.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyInfo {
    pub name: String,
    /// Models the key may use (absent: all).
    pub models: Option<Vec<String>>,
    pub rate_limit: Option<Value>,
    pub quota: Option<Value>,
}

/// `GET /admin/keys` response.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// OpenAI-format error details.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// Error body on OpenAI-format routes and operational routes.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorResponse {
    pub error: ErrorDetail,
}

/// Anthropic-format error details.
#[derive(Serialize, ToSchema)]
pub(crate) struct AnthropicErrorDetail {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// Error body on `/v1/messages` routes.
#[derive(Serialize, ToSchema)]
pub(crate) struct AnthropicErrorResponse {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub error: AnthropicErrorDetail,
}
