//! The upstream HTTP client: pooled HTTP/1.1 connections for `http://` upstreams ([`super::pool`]) and
//! hyper-util's pooled client over rustls for `https://`, and nothing more. No redirects, no retries and
//! no proxy (fail-over is the gateway's own, DESIGN "what fails over"), and URLs are parsed once when the
//! config loads, so a request pays only for the exchange itself.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Either;
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::describe;

pub use super::h1::SendError;
use super::pool::{Body, Pool};
use crate::http1::{self, HeaderSink};

/// A response whose body is still to be read or streamed.
pub type Response = http::Response<Body>;

/// The shared client; cheap to clone (one set of connection pools).
#[derive(Clone)]
pub struct HttpClient {
    plain: Arc<Pool>,
    tls: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    roots: TrustRoots,
}

/// What `https://` upstreams' certificates are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustRoots {
    /// The system's CA certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set), through the platform
    /// verifier.
    System,
    /// The system has none (a minimal container image): Mozilla's roots bundled in the binary
    /// (`webpki-roots`). Holds why the system's could not be used.
    Bundled(String),
}

impl HttpClient {
    /// Never fails for want of CA certificates: a config without `https://` upstreams must start
    /// anywhere, and one with them falls back to the bundled roots ([`TrustRoots::Bundled`]).
    pub fn new() -> anyhow::Result<HttpClient> {
        use rustls_platform_verifier::BuilderVerifierExt;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = || {
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
        };
        let (tls, roots) = match builder()?.with_platform_verifier() {
            Ok(config) => (config.with_no_client_auth(), TrustRoots::System),
            Err(error) => {
                let bundled = rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                let config = builder()?
                    .with_root_certificates(bundled)
                    .with_no_client_auth();
                (config, TrustRoots::Bundled(error.to_string()))
            }
        };
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(super::pool::CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let tls = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(super::pool::IDLE_TIMEOUT)
            .pool_max_idle_per_host(super::pool::MAX_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(HttpClient {
            plain: Arc::default(),
            tls,
            roots,
        })
    }

    /// What `https://` upstreams are verified against.
    pub fn trust_roots(&self) -> &TrustRoots {
        &self.roots
    }

    /// Send one request (absolute URI); the error is described without the URL (it may carry
    /// credentials).
    ///
    /// A plain function returning the pool's (or hyper-util's) future rather than an `async fn` around
    /// it: the request moves once, into the future that sends it, instead of through one more state
    /// machine of its own (every move is another copy of the request into the per-request future).
    pub fn send(
        &self,
        request: Request<Bytes>,
    ) -> impl Future<Output = Result<Response, SendError>> + Send + '_ {
        if request.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
            return Either::Left(self.plain.send(request));
        }
        Either::Right(self.tls.request(request.map(Full::new)).map(|result| {
            result
                .map(|response| response.map(Body::unpooled))
                .map_err(|error| SendError::Client(describe(&error)))
        }))
    }

    /// A `POST` of `body` to `uri` whose headers `headers` writes where they go: into the request's
    /// bytes for `http://` (no header map built and dropped), into a header map for `https://`.
    /// Bounded by `timeout` up to the response head.
    pub(crate) fn post<'a>(
        &'a self,
        uri: &'a Uri,
        headers: impl FnOnce(&mut dyn HeaderSink),
        body: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response, Failure>> + Send + 'a {
        let sent = if uri.scheme() == Some(&http::uri::Scheme::HTTP) {
            // A large body is written after the head from its own buffer, not copied behind it.
            let apart = body.len() >= super::pool::BODY_APART_FROM;
            let mut head = Vec::with_capacity(512 + if apart { 0 } else { body.len() });
            http1::encode_request_line(&Method::POST, uri, false, &mut head);
            headers(&mut http1::WireHeaders { out: &mut head });
            let wire = if apart {
                http1::encode_head_end(&Method::POST, body.len(), &mut head);
                super::pool::Wire { head, body }
            } else {
                http1::encode_request_end(&Method::POST, &body, &mut head);
                super::pool::Wire {
                    head,
                    body: Bytes::new(),
                }
            };
            Either::Left(self.plain.send_encoded(uri, wire))
        } else {
            let mut request = Request::new(body);
            *request.method_mut() = Method::POST;
            *request.uri_mut() = uri.clone();
            headers(request.headers_mut());
            // Boxed: hyper-util's future (≈ 1 KB) would size every call's future, `http://` ones
            // included, and each call copies it into the request's state (a cold block under many
            // connections).
            Either::Right(Box::pin(self.send(request)))
        };
        tokio::time::timeout(timeout, sent).map(|result| match result {
            Err(_) => Err(Failure::Timeout),
            Ok(Err(detail)) => Err(Failure::Connect(detail)),
            Ok(Ok(response)) => Ok(response),
        })
    }

    /// A request with a JSON or empty body, bounded by `timeout` up to the response head.
    pub(crate) fn send_within(
        &self,
        request: Request<Bytes>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response, Failure>> + Send + '_ {
        tokio::time::timeout(timeout, self.send(request)).map(|result| match result {
            Err(_) => Err(Failure::Timeout),
            Ok(Err(detail)) => Err(Failure::Connect(detail)),
            Ok(Ok(response)) => Ok(response),
        })
    }
}

/// Why a request got no response head.
#[derive(Debug)]
pub enum Failure {
    Timeout,
    Connect(SendError),
}

/// The whole body of a response.
/// A whole upstream body, at most `limit` bytes (`server.max_upstream_body_bytes`): a longer one is
/// not buffered — reading stops at the limit (at once when its `Content-Length` says so) and the body
/// is dropped, which closes its connection.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyReadError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyReadError::TooLarge);
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(BodyReadError::TooLarge)
        }
        Err(error) => Err(BodyReadError::Failed(describe(&*error))),
    }
}

/// Why [`read_body`] returned no body.
#[derive(Debug)]
pub enum BodyReadError {
    /// Longer than the limit.
    TooLarge,
    /// The body broke (described without the URL).
    Failed(String),
}

/// An upstream URL ready to send to: the URI without credentials, and the `Basic` authorization its
/// userinfo stood for (`https://user:pass@host/v1`), marked sensitive so it never prints.
#[derive(Clone)]
pub struct Target {
    pub uri: Uri,
    pub basic_auth: Option<HeaderValue>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("uri", &self.uri)
            .field(
                "basic_auth",
                &self.basic_auth.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Target {
    /// Parse an absolute http(s) URL.
    pub fn parse(url: &str) -> Result<Target, InvalidUrl> {
        let mut parsed = url::Url::parse(url).map_err(InvalidUrl::Parse)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(InvalidUrl::Scheme);
        }
        let basic_auth = if parsed.username().is_empty() && parsed.password().is_none() {
            None
        } else {
            use base64::Engine;
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(text)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let pair = format!(
                "{}:{}",
                decode(parsed.username()),
                decode(parsed.password().unwrap_or_default())
            );
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
                .map_err(|_| InvalidUrl::Credentials)?;
            value.set_sensitive(true);
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            Some(value)
        };
        let uri = parsed.as_str().parse::<Uri>().map_err(InvalidUrl::Uri)?;
        Ok(Target { uri, basic_auth })
    }
}

/// Why a backend URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InvalidUrl {
    #[error("{0}")]
    Parse(url::ParseError),
    #[error("the scheme must be http or https")]
    Scheme,
    #[error("the credentials in the URL are not valid in a header")]
    Credentials,
    #[error("{0}")]
    Uri(http::uri::InvalidUri),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_becomes_basic_auth_and_leaves_the_uri() {
        let target = Target::parse("https://us%40er:p%3Ass@api.example.com/v1/models").unwrap();
        assert_eq!(target.uri.to_string(), "https://api.example.com/v1/models");
        let auth = target.basic_auth.as_ref().unwrap();
        // base64("us@er:p:ss")
        assert_eq!(auth.to_str().unwrap(), "Basic dXNAZXI6cDpzcw==");
        assert!(auth.is_sensitive());
        assert!(!format!("{target:?}").contains("dXNA"));

        let plain = Target::parse("http://127.0.0.1:8000/v1/chat/completions").unwrap();
        assert!(plain.basic_auth.is_none());
        assert_eq!(plain.uri.port_u16(), Some(8000));
        assert!(Target::parse("ftp://host/x").is_err());
        assert!(Target::parse("not a url").is_err());
    }

    #[tokio::test]
    async fn a_refused_connection_is_described_with_its_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = HttpClient::new().unwrap();
        let request = Request::get(format!("http://{addr}/v1/models"))
            .body(Bytes::new())
            .unwrap();
        let detail = client.send(request).await.unwrap_err().to_string();
        assert!(detail.contains("onnect"), "{detail}");
        assert!(detail.to_lowercase().contains("refused"), "{detail}");
        assert!(!detail.contains("/v1/models"), "{detail}");
    }
}
