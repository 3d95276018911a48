//! `/stats` after traffic, and the API documentation the gateway serves: `/openapi.json` (OpenAPI 3.1,
//! covering every route in `src/app.rs`) and Swagger UI under `/docs/`.

use serde_json::{Value, json};

use crate::support::mock::{Behavior, Mock};
use crate::support::{Gateway, client};

#[tokio::test]
async fn stats_count_requests_errors_and_per_backend_latency() {
    let mock = Mock::start().await;
    let broken = Mock::start().await;
    let gateway = Gateway::start(&format!(
        "default_backend: primary\nbackends:\n  primary: {{ type: openai, url: '{}' }}\n  broken: {{ type: openai, url: '{}', retries: 0 }}\n  local: {{ type: echo }}\n",
        mock.base(),
        broken.base()
    ))
    .await;
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        assert_eq!(gateway.chat(chat("primary")).await.0, 200);
    }
    assert_eq!(gateway.chat(chat("local")).await.0, 200);
    broken.script([Behavior::Status(500, "{}", None)]);
    assert_eq!(gateway.chat(chat("broken")).await.0, 502);
    let bad = gateway.post("/v1/chat/completions", "{not json").await;
    assert_eq!(bad.status(), 400);

    let response = client().get(gateway.url("/stats")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let stats: Value = response.json().await.unwrap();
    assert_eq!(stats["requests"], 6, "{stats:#}");
    assert_eq!(stats["errors"], 1, "{stats:#}");
    assert_eq!(stats["client_errors"], 1, "{stats:#}");
    assert_eq!(stats["error_rate"], 0.167, "{stats:#}");
    assert!(stats["uptime_seconds"].is_u64(), "{stats:#}");
    assert_eq!(stats["latency_ms"]["count"], 6, "{stats:#}");

    let primary = &stats["backends"]["primary"];
    assert_eq!(primary["requests"], 3, "{stats:#}");
    assert_eq!(primary["errors"], 0, "{stats:#}");
    let latency = &primary["latency_ms"];
    assert_eq!(latency["count"], 3, "{stats:#}");
    let p = |k: &str| {
        latency[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} missing: {stats:#}"))
    };
    assert!(p("p50") > 0.0, "{stats:#}");
    assert!(
        p("p50") <= p("p95") && p("p95") <= p("p99") && p("p99") <= p("max"),
        "{stats:#}"
    );
    assert_eq!(stats["backends"]["local"]["requests"], 1, "{stats:#}");
    // The failed request is an error of the backend that failed, not only of the totals.
    assert_eq!(stats["backends"]["broken"]["requests"], 1, "{stats:#}");
    assert_eq!(stats["backends"]["broken"]["errors"], 1, "{stats:#}");
}

/// `(method, path)` of every `.route(...)` in src/app.rs.
fn routes_in_app_rs() -> Vec<(String, String)> {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/app.rs")).unwrap();
    let mut routes = Vec::new();
    let declared = source.matches(".route(\"").count();
    for piece in source.split(".route(\"").skip(1) {
        let (path, rest) = piece.split_once('"').unwrap();
        let line = rest.split_once('\n').map_or(rest, |(line, _)| line);
        let rest = line.trim_start_matches(',').trim_start();
        for method in ["get", "post", "put", "delete", "patch"] {
            // `get(handler)`, and chained `get(h).post(h)` on one route.
            let call = rest.split_once(')').map_or(rest, |(head, _)| head);
            if call.starts_with(&format!("{method}(")) || rest.contains(&format!(".{method}(")) {
                routes.push((method.to_owned(), path.to_owned()));
            }
        }
    }
    assert!(
        routes.len() >= declared,
        "parsed {routes:?} from {declared} routes"
    );
    routes
}

#[tokio::test]
async fn openapi_is_3_1_and_documents_every_served_route() {
    let gateway = Gateway::start("backends:\n  local: { type: echo }\n").await;
    let response = client()
        .get(gateway.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: Value = response.json().await.unwrap();
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "{version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    let routes = routes_in_app_rs();
    assert!(routes.len() >= 10, "parsed {routes:?}");
    let mut undocumented = Vec::new();
    for (method, path) in &routes {
        let operation = &doc["paths"][path][method];
        if !operation.is_object() {
            undocumented.push(format!("{} {path}", method.to_uppercase()));
            continue;
        }
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{method} {path}: {operation}"
        );
        // The route is really there: anything but the router's JSON 404.
        let request = client().request(method.to_uppercase().parse().unwrap(), gateway.url(path));
        let response = request.send().await.unwrap();
        assert_ne!(
            response.status(),
            404,
            "{method} {path} is in app.rs but not served"
        );
    }
    assert!(
        undocumented.is_empty(),
        "served but not in /openapi.json: {undocumented:?}"
    );
}

#[tokio::test]
async fn docs_serve_swagger_ui_html_and_its_bundle() {
    let gateway = Gateway::start("backends:\n  local: { type: echo }\n").await;
    let html = client().get(gateway.url("/docs/")).send().await.unwrap();
    assert_eq!(html.status(), 200);
    assert!(
        html.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = html.text().await.unwrap();
    assert!(html.contains("swagger-ui-bundle.js"), "{html}");

    let bundle = client()
        .get(gateway.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200);
    assert!(bundle.bytes().await.unwrap().len() > 500_000);

    let init = client()
        .get(gateway.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    assert!(init.text().await.unwrap().contains("/openapi.json"));

    // `/docs` without the slash leads to the UI.
    let redirect = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(gateway.url("/docs"))
        .send()
        .await
        .unwrap();
    assert!(redirect.status().is_redirection(), "{}", redirect.status());
    assert_eq!(redirect.headers()["location"], "/docs/");
}
