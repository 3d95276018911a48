//! API documentation: the OpenAPI 3.1 document (`GET /openapi.json`) and Swagger UI (`GET /docs`).
//!
//! The schemas below are documentation-only mirrors of the wire formats: the gateway forwards bodies
//! it does not fully model, so these list the fields clients use, not every field that is accepted.
//! Paths are built with utoipa's builders rather than `#[utoipa::path]` on handlers, so this module
//! stays independent of the handlers and the lead can change them freely; a test checks every served
//! route is documented. Swagger UI assets are embedded (utoipa-swagger-ui `vendored`), so `/docs`
//! works on a closed network.

mod operations;
pub mod schemas;

use axum::Router;
use utoipa::ToSchema;
use utoipa::openapi::path::PathItem;
use utoipa::openapi::schema::{ComponentsBuilder, Schema};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, RefOr};
use utoipa_swagger_ui::SwaggerUi;

use schemas::*;

/// Adds a schema and every schema it references.
fn collect<T: ToSchema>(all: &mut Vec<(String, RefOr<Schema>)>) {
    all.push((T::name().into_owned(), T::schema()));
    T::schemas(all);
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
    for op in operations::all() {
        let operation = operations::build_operation(&op);
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
