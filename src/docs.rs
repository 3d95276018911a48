//! API documentation: the OpenAPI 3.1 document (`GET /openapi.json`) and Swagger UI (`GET /docs`).
//!
//! The schemas below are documentation-only mirrors of the wire formats: the gateway forwards bodies
//! it does not fully model, so these list the fields clients use, not every field that is accepted.
//! Paths are built with utoipa's builders rather than `#[utoipa::path]` on handlers, so this module
//! stays independent of the handlers and the lead can change them freely; a test checks every served
//! route is documented. Swagger UI assets are embedded (utoipa-swagger-ui `vendored`), so `/docs`
//! works on a closed network.

use axum::Router;
use utoipa::ToSchema;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ComponentsBuilder, Schema};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required,
};
use utoipa_swagger_ui::SwaggerUi;

use crate::telemetry::metrics::Metrics;

/// Documentation-only schemas of the request and response bodies.
pub mod schemas {
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
}

use schemas::*;

/// Adds a schema and every schema it references.
fn collect<T: ToSchema>(all: &mut Vec<(String, RefOr<Schema>)>) {
    all.push((T::name().into_owned(), T::schema()));
    T::schemas(all);
}

fn json_ref(name: &str) -> ContentBuilder {
    ContentBuilder::new().schema(Some(Ref::from_schema_name(name)))
}

/// The error schema of a route family.
#[derive(Clone, Copy)]
enum Errors {
    OpenAi,
    Anthropic,
}

impl Errors {
    fn schema(self) -> &'static str {
        match self {
            Errors::OpenAi => "ErrorResponse",
            Errors::Anthropic => "AnthropicErrorResponse",
        }
    }
}

/// One documented operation.
struct Op {
    method: HttpMethod,
    path: &'static str,
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    request: Option<&'static str>,
    /// (content type, schema name or `None` for free-form) of the 200 response.
    ok: Vec<(&'static str, Option<&'static str>)>,
    /// Error statuses documented with the family's error body.
    errors: &'static [(&'static str, &'static str)],
    error_schema: Errors,
    secured: bool,
}

const API_ERRORS: &[(&str, &str)] = &[
    ("400", "invalid request; the message names what was wrong"),
    ("401", "missing or unknown API key"),
    ("403", "the key may not use this model"),
    (
        "408",
        "the request body stopped arriving (no byte of it for `server.body_timeout_s`)",
    ),
    (
        "429",
        "rate limit or quota exceeded; see `Retry-After` and `x-ratelimit-*`",
    ),
    (
        "502",
        "every upstream candidate failed (an answer larger than `server.max_upstream_body_bytes` counts as failed)",
    ),
    ("504", "the upstream timed out"),
];

const RESPONSES_ERRORS: &[(&str, &str)] = &[
    ("400", "invalid request; the message names what was wrong"),
    ("401", "missing or unknown API key"),
    ("403", "the key may not use this model"),
    (
        "404",
        "`previous_response_id` names no stored response the key may continue",
    ),
    (
        "429",
        "rate limit or quota exceeded; see `Retry-After` and `x-ratelimit-*`",
    ),
    ("502", "every upstream candidate failed"),
    ("504", "the upstream timed out"),
];

const STORED_ERRORS: &[(&str, &str)] = &[
    ("401", "missing or unknown API key"),
    (
        "404",
        "no stored response with this id for the calling key (expired, deleted or `store: false`)",
    ),
];

const ADMIN_ERRORS: &[(&str, &str)] = &[
    ("401", "missing or unknown API key"),
    (
        "403",
        "the key is not an admin key; or no keys are configured and the client is not on this machine (loopback, not forwarded by a proxy) while `server.admin_open` is false",
    ),
];

fn operations() -> Vec<Op> {
    use HttpMethod::{Delete, Get, Post};
    let json = "application/json";
    let sse = "text/event-stream";
    vec![
        Op {
            method: Post,
            path: "/v1/chat/completions",
            id: "createChatCompletion",
            tag: "openai",
            summary: "Chat completion (OpenAI format), any backend",
            request: Some("ChatCompletionRequest"),
            ok: vec![
                (json, Some("ChatCompletionResponse")),
                (sse, Some("ChatCompletionChunk")),
            ],
            errors: API_ERRORS,
            error_schema: Errors::OpenAi,
            secured: true,
        },
        Op {
            method: Post,
            path: "/v1/completions",
            id: "createCompletion",
            tag: "openai",
            summary: "Text completion (OpenAI legacy format)",
            request: Some("CompletionRequest"),
            ok: vec![(json, Some("CompletionResponse")), (sse, None)],
            errors: API_ERRORS,
            error_schema: Errors::OpenAi,
            secured: true,
        },
        Op {
            method: Post,
            path: "/v1/embeddings",
            id: "createEmbedding",
            tag: "openai",
            summary: "Embeddings (OpenAI format)",
            request: Some("EmbeddingRequest"),
            ok: vec![(json, Some("EmbeddingResponse"))],
            errors: API_ERRORS,
            error_schema: Errors::OpenAi,
            secured: true,
        },
        Op {
            method: Get,
            path: "/v1/models",
            id: "listModels",
            tag: "openai",
            summary: "Configured model aliases and backends",
            request: None,
            ok: vec![(json, Some("ModelList"))],
            errors: &API_ERRORS[1..2],
            error_schema: Errors::OpenAi,
            secured: true,
        },
        Op {
            method: Get,
            path: "/v1/usage",
            id: "getUsage",
            tag: "openai",
            summary: "Usage and remaining quota of the calling key",
            request: None,
            ok: vec![(json, Some("UsageReport"))],
            errors: &API_ERRORS[1..2],
            error_schema: Errors::OpenAi,
            secured: true,
        },
        Op {
            method: Post,
            path: "/v1/messages",
            id: "createMessage",
            tag: "anthropic",
            summary: "Message (Anthropic format), any backend",
            request: Some("MessagesRequest"),
            ok: vec![
                (json, Some("MessagesResponse")),
                (sse, Some("MessageStreamEvent")),
            ],
            errors: API_ERRORS,
            error_schema: Errors::Anthropic,
            secured: true,
        },
        Op {
            method: Post,
            path: "/v1/responses",
            id: "createResponse",
            tag: "openai",
            summary: "Response (OpenAI Responses API), any backend; stored for previous_response_id",
            request: Some("ResponsesRequest"),
            ok: vec![
                (json, Some("ResponseObject")),
                (sse, Some("ResponseStreamEvent")),
            ],
            errors: RESPONSES_ERRORS,
            error_schema: Errors::OpenAi,
            secured: true,
        },
        Op {
            method: Get,
            path: "/v1/responses/{id}",
            id: "getResponse",
            tag: "openai",
            summary: "A stored Responses answer",
            request: None,
            ok: vec![(json, Some("ResponseObject"))],
            errors: STORED_ERRORS,
            error_schema: Errors::OpenAi,
            secured: true,
        },
        Op {
            method: Delete,
            path: "/v1/responses/{id}",
            id: "deleteResponse",
            tag: "openai",
            summary: "Delete a stored Responses answer (it can no longer be read or continued)",
            request: None,
            ok: vec![(json, Some("ResponseDeleted"))],
            errors: STORED_ERRORS,
            error_schema: Errors::OpenAi,
            secured: true,
        },
        Op {
            method: Post,
            path: "/v1/messages/count_tokens",
            id: "countMessageTokens",
            tag: "anthropic",
            summary: "Count the input tokens of a message request",
            request: Some("CountTokensRequest"),
            ok: vec![(json, Some("CountTokensResponse"))],
            errors: &API_ERRORS[..2],
            error_schema: Errors::Anthropic,
            secured: true,
        },
        Op {
            method: Get,
            path: "/health",
            id: "health",
            tag: "operations",
            summary: "Liveness, version, uptime and backend health",
            request: None,
            ok: vec![(json, Some("HealthResponse"))],
            errors: &[],
            error_schema: Errors::OpenAi,
            secured: false,
        },
        Op {
            method: Get,
            path: "/health/ready",
            id: "ready",
            tag: "operations",
            summary: "Readiness of this replica (config loaded, listening, Redis when fail_closed); not upstream health",
            request: None,
            ok: vec![(json, Some("ReadyResponse"))],
            errors: &[],
            error_schema: Errors::OpenAi,
            secured: false,
        },
        Op {
            method: Get,
            path: "/metrics",
            id: "metrics",
            tag: "operations",
            summary: "Prometheus metrics (classic text format, or OpenMetrics when asked for)",
            request: None,
            ok: vec![
                (Metrics::content_type(), None),
                (Metrics::openmetrics_content_type(), None),
            ],
            errors: &[(
                "404",
                "metrics are disabled in config (`metrics.enabled: false`)",
            )],
            error_schema: Errors::OpenAi,
            secured: false,
        },
        Op {
            method: Get,
            path: "/stats",
            id: "stats",
            tag: "operations",
            summary: "Request, error, latency and cache statistics",
            request: None,
            ok: vec![(json, Some("StatsResponse"))],
            errors: &[],
            error_schema: Errors::OpenAi,
            secured: false,
        },
        Op {
            method: Post,
            path: "/admin/reload",
            id: "reloadConfig",
            tag: "admin",
            summary: "Reload the config file; an invalid config is rejected and the old one stays",
            request: None,
            ok: vec![(json, Some("ReloadResponse"))],
            errors: ADMIN_ERRORS,
            error_schema: Errors::OpenAi,
            secured: true,
        },
        Op {
            method: Get,
            path: "/admin/keys",
            id: "listKeys",
            tag: "admin",
            summary: "Configured client keys, without secrets",
            request: None,
            ok: vec![(json, Some("KeyList"))],
            errors: ADMIN_ERRORS,
            error_schema: Errors::OpenAi,
            secured: true,
        },
    ]
}

fn build_operation(op: &Op) -> utoipa::openapi::path::Operation {
    let mut ok = ResponseBuilder::new().description("success");
    for (content_type, schema) in &op.ok {
        let content = match schema {
            Some(name) => json_ref(name),
            None => ContentBuilder::new(),
        };
        ok = ok.content(*content_type, content.build());
    }
    let mut builder = OperationBuilder::new()
        .operation_id(Some(op.id))
        .summary(Some(op.summary))
        .tag(op.tag)
        .response("200", ok.build());
    if op.path == "/health/ready" {
        builder = builder.response(
            "503",
            ResponseBuilder::new()
                .description("this replica cannot serve: redis does not answer and state.on_unavailable is fail_closed")
                .content("application/json", json_ref("ReadyResponse").build())
                .build(),
        );
    }
    for (status, description) in op.errors {
        builder = builder.response(
            *status,
            ResponseBuilder::new()
                .description(*description)
                .content(
                    "application/json",
                    json_ref(op.error_schema.schema()).build(),
                )
                .build(),
        );
    }
    if op.path.contains("{id}") {
        builder = builder.parameter(
            utoipa::openapi::path::ParameterBuilder::new()
                .name("id")
                .parameter_in(utoipa::openapi::path::ParameterIn::Path)
                .required(Required::True)
                .description(Some("the response id (`resp_…`)"))
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String),
                )),
        );
    }
    if let Some(schema) = op.request {
        builder = builder.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content("application/json", json_ref(schema).build())
                .build(),
        ));
    }
    if op.secured {
        builder = builder
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .security(SecurityRequirement::new("api_key", Vec::<String>::new()));
    }
    builder.build()
}

/// The OpenAPI 3.1 document of every gateway route.
pub fn openapi() -> OpenApi {
    let mut schemas = Vec::new();
    collect::<ChatCompletionRequest>(&mut schemas);
    collect::<ChatCompletionResponse>(&mut schemas);
    collect::<ChatCompletionChunk>(&mut schemas);
    collect::<CompletionRequest>(&mut schemas);
    collect::<CompletionResponse>(&mut schemas);
    collect::<EmbeddingRequest>(&mut schemas);
    collect::<EmbeddingResponse>(&mut schemas);
    collect::<ModelList>(&mut schemas);
    collect::<UsageReport>(&mut schemas);
    collect::<MessagesRequest>(&mut schemas);
    collect::<MessagesResponse>(&mut schemas);
    collect::<MessageStreamEvent>(&mut schemas);
    collect::<ResponsesRequest>(&mut schemas);
    collect::<ResponseObject>(&mut schemas);
    collect::<ResponseStreamEvent>(&mut schemas);
    collect::<ResponseDeleted>(&mut schemas);
    collect::<CountTokensRequest>(&mut schemas);
    collect::<CountTokensResponse>(&mut schemas);
    collect::<HealthResponse>(&mut schemas);
    collect::<ReadyResponse>(&mut schemas);
    collect::<StatsResponse>(&mut schemas);
    collect::<ReloadResponse>(&mut schemas);
    collect::<KeyList>(&mut schemas);
    collect::<ErrorResponse>(&mut schemas);
    collect::<AnthropicErrorResponse>(&mut schemas);

    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("client API key as `Authorization: Bearer <key>`"))
                    .build(),
            ),
        )
        .security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "client API key in the `x-api-key` header (Anthropic SDK style)",
            ))),
        )
        .build();

    let mut paths = PathsBuilder::new();
    let mut by_path: Vec<(&'static str, PathItem)> = Vec::new();
    for op in operations() {
        let operation = build_operation(&op);
        match by_path.iter_mut().find(|(p, _)| *p == op.path) {
            Some((_, item)) => item.merge_operations(PathItem::new(op.method, operation)),
            None => by_path.push((op.path, PathItem::new(op.method, operation))),
        }
    }
    for (path, item) in by_path {
        paths = paths.path(path, item);
    }

    let tags = [
        ("openai", "OpenAI-compatible endpoints"),
        ("anthropic", "Anthropic-compatible endpoints"),
        ("operations", "Health, metrics and statistics"),
        ("admin", "Administration"),
    ]
    .map(|(name, description)| {
        TagBuilder::new()
            .name(name)
            .description(Some(description))
            .build()
    });

    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("ai-gateway")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(env!("CARGO_PKG_DESCRIPTION")))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .tags(Some(tags))
        .build()
}

/// Serves `GET /openapi.json` and Swagger UI under `/docs` (assets embedded in the binary).
pub(crate) fn docs_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::from(SwaggerUi::new("/docs").url("/openapi.json", openapi()))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    /// Every route the gateway serves, with its method.
    const ROUTES: &[(&str, &str)] = &[
        ("post", "/v1/chat/completions"),
        ("post", "/v1/completions"),
        ("post", "/v1/embeddings"),
        ("post", "/v1/messages"),
        ("post", "/v1/messages/count_tokens"),
        ("post", "/v1/responses"),
        ("get", "/v1/responses/{id}"),
        ("delete", "/v1/responses/{id}"),
        ("get", "/v1/models"),
        ("get", "/v1/usage"),
        ("get", "/health"),
        ("get", "/health/ready"),
        ("get", "/metrics"),
        ("get", "/stats"),
        ("post", "/admin/reload"),
        ("get", "/admin/keys"),
    ];

    fn doc() -> Value {
        serde_json::to_value(openapi()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Follows a `$ref` to its component and checks it exists.
    fn resolve<'a>(doc: &'a Value, schema: &Value) -> &'a Value {
        let reference = schema["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("no $ref: {schema}"));
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("bad ref {reference}"));
        let target = &doc["components"]["schemas"][name];
        assert!(target.is_object(), "dangling ref {reference}");
        target
    }

    #[test]
    fn openapi_covers_every_route() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        for (method, path) in ROUTES {
            let op = &paths.get(*path).unwrap_or_else(|| panic!("{path} missing"))[*method];
            assert!(op.is_object(), "{method} {path} missing");
            assert!(
                op["responses"]["200"].is_object(),
                "{method} {path} has no 200"
            );
        }
        let documented: usize = paths
            .values()
            .map(|item| item.as_object().map_or(0, |o| o.len()))
            .sum();
        assert_eq!(documented, ROUTES.len());
    }

    #[test]
    fn api_routes_have_request_and_response_schemas() {
        let doc = doc();
        let api = [
            (
                "/v1/chat/completions",
                "ChatCompletionRequest",
                "ChatCompletionResponse",
            ),
            ("/v1/completions", "CompletionRequest", "CompletionResponse"),
            ("/v1/embeddings", "EmbeddingRequest", "EmbeddingResponse"),
            ("/v1/messages", "MessagesRequest", "MessagesResponse"),
            ("/v1/responses", "ResponsesRequest", "ResponseObject"),
            (
                "/v1/messages/count_tokens",
                "CountTokensRequest",
                "CountTokensResponse",
            ),
        ];
        for (path, request, response) in api {
            let op = &doc["paths"][path]["post"];
            let req = &op["requestBody"]["content"]["application/json"]["schema"];
            assert_eq!(
                req["$ref"],
                format!("#/components/schemas/{request}"),
                "{path}"
            );
            resolve(&doc, req);
            let res = &op["responses"]["200"]["content"]["application/json"]["schema"];
            assert_eq!(
                res["$ref"],
                format!("#/components/schemas/{response}"),
                "{path}"
            );
            resolve(&doc, res);
            assert!(op["responses"]["400"].is_object(), "{path} has no 400");
        }
        for (path, response) in [
            ("/v1/models", "ModelList"),
            ("/v1/usage", "UsageReport"),
            ("/health", "HealthResponse"),
            ("/health/ready", "ReadyResponse"),
            ("/stats", "StatsResponse"),
        ] {
            let res = &doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
                ["schema"];
            assert_eq!(
                res["$ref"],
                format!("#/components/schemas/{response}"),
                "{path}"
            );
        }
        let chat = resolve(
            &doc,
            &doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
                ["schema"],
        );
        assert_eq!(chat["required"], serde_json::json!(["model", "messages"]));
        assert!(
            doc["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
                ["text/event-stream"]
                .is_object()
        );
        let error = &doc["paths"]["/v1/messages"]["post"]["responses"]["429"]["content"]["application/json"]
            ["schema"];
        assert_eq!(error["$ref"], "#/components/schemas/AnthropicErrorResponse");
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }

    #[test]
    fn every_reference_resolves() {
        let doc = doc();
        fn walk(doc: &Value, v: &Value, count: &mut usize) {
            match v {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        let name = r.trim_start_matches("#/components/schemas/");
                        assert!(
                            doc["components"]["schemas"][name].is_object(),
                            "dangling {r}"
                        );
                        *count += 1;
                    }
                    map.values().for_each(|x| walk(doc, x, count));
                }
                Value::Array(items) => items.iter().for_each(|x| walk(doc, x, count)),
                _ => {}
            }
        }
        let mut count = 0;
        walk(&doc, &doc, &mut count);
        assert!(count > 40, "only {count} refs");
        // Wire field names follow serde renames.
        assert!(doc["components"]["schemas"]["ToolCall"]["properties"]["type"].is_object());
    }

    async fn get(path: &str) -> (StatusCode, Option<String>, Vec<u8>) {
        let response = docs_router::<()>()
            .oneshot(
                Request::get(path)
                    .body(Body::empty())
                    .unwrap_or_else(|e| panic!("{e}")),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = response.status();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        (status, content_type, body)
    }

    #[tokio::test]
    async fn router_serves_openapi_json() {
        let (status, content_type, body) = get("/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.is_some_and(|c| c.starts_with("application/json")));
        let served: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(served, doc());
    }

    #[tokio::test]
    async fn router_serves_swagger_ui_offline() {
        let (status, _, _) = get("/docs").await;
        assert!(status.is_redirection(), "{status}");

        let (status, content_type, body) = get("/docs/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.is_some_and(|c| c.starts_with("text/html")));
        let html = String::from_utf8_lossy(&body);
        assert!(html.contains("swagger-ui-bundle.js"), "{html}");

        let (status, _, body) = get("/docs/swagger-ui-bundle.js").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.len() > 500_000, "bundle is {} bytes", body.len());

        let (status, _, body) = get("/docs/swagger-initializer.js").await;
        assert_eq!(status, StatusCode::OK);
        assert!(String::from_utf8_lossy(&body).contains("/openapi.json"));
    }
}
