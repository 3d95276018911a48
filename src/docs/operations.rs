//! The documented operations (path, method, request and answer schemas, error statuses) and their
//! OpenAPI form.

use utoipa::openapi::path::{HttpMethod, OperationBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ContentBuilder, Ref, Required};

use crate::telemetry::metrics::Metrics;

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
pub(super) struct Op {
    pub(super) method: HttpMethod,
    pub(super) path: &'static str,
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

pub(super) fn all() -> Vec<Op> {
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

pub(super) fn build_operation(op: &Op) -> utoipa::openapi::path::Operation {
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
