//! Test support: start a gateway in process with a config string, and an HTTP client.

pub mod canned;
pub mod engine;
pub mod mock;
pub mod mock_anthropic;
pub mod mock_responses;
pub mod process;
pub mod prom;
pub mod raw_upstream;
pub mod redis;
pub mod resil;

use std::net::SocketAddr;

use ai_gateway::config::{Env, Format, parse_str};
use ai_gateway::state::AppState;
use tokio::sync::oneshot;

pub struct Gateway {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
}

impl Gateway {
    /// Start a gateway serving `yaml` on 127.0.0.1:0.
    pub async fn start(yaml: &str) -> Gateway {
        Gateway::start_with_env(yaml, &[]).await
    }

    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = parse_str(yaml, Format::Yaml, &Env::from_pairs(env.iter().copied()))
            .unwrap_or_else(|(path, message)| panic!("test config invalid at {path:?}: {message}"));
        let state = AppState::new(config, ai_gateway::config::Source::Embedded).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(ai_gateway::server::run(
            listener,
            state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Gateway {
            addr,
            state,
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, body: &str) -> reqwest::Response {
        client()
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// POST `body` to `path` with extra headers; the reply's status, headers and body (JSON when it
    /// parses, else the text as a JSON string).
    pub async fn send(
        &self,
        path: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> (u16, http::HeaderMap, serde_json::Value) {
        let mut request = client().post(self.url(path)).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, headers, body)
    }

    /// POST a JSON body and return the response as it starts (a stream is still open): status checked.
    pub async fn open(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        let response = client()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response
    }

    /// `POST /admin/reload`.
    pub async fn admin_reload(&self) -> reqwest::Response {
        client()
            .post(self.url("/admin/reload"))
            .send()
            .await
            .unwrap()
    }

    /// `GET /metrics`, parsed by the strict exposition parser.
    pub async fn metrics(&self) -> prom::Scrape {
        let response = client().get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        prom::Scrape::parse(response.text().await.unwrap())
    }

    /// `GET path`, its body as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        client()
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `GET path`, its body as text.
    pub async fn get_text(&self, path: &str) -> String {
        client()
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn chat(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self.post("/v1/chat/completions", &body.to_string()).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Send `request`: its status, headers, and body as JSON (a body that is not JSON as a JSON string).
pub async fn respond(
    request: reqwest::RequestBuilder,
) -> (u16, http::HeaderMap, serde_json::Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Parse an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|frame| {
            let data: Vec<&str> = frame
                .lines()
                .filter_map(|line| {
                    line.strip_prefix("data: ")
                        .or_else(|| line.strip_prefix("data:"))
                })
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}
