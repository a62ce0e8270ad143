//! The upstream HTTP client shared by all providers.
//!
//! reqwest multiplexes every request to one host over a single HTTP/2 connection, which caps
//! concurrency at the server's stream limit (often 100). Keeping a few independent clients and
//! spreading requests over them gives several connections instead. For HTTP/1.1 upstreams each
//! client pools connections as usual.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::upstream_error;
use crate::config::ProviderConfig;
use crate::error::{Error, Result};

/// Independent connection pools; enough to lift the HTTP/2 stream cap several times over.
const POOLS: usize = 4;

pub struct HttpClient {
    clients: Vec<reqwest::Client>,
    next: AtomicUsize,
}

impl HttpClient {
    pub fn new() -> Result<HttpClient> {
        // reqwest is built without a bundled TLS backend choice; ring builds fast and has no
        // C toolchain requirements beyond cc. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let clients = (0..POOLS)
            .map(|_| {
                reqwest::Client::builder()
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(10))
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(1024)
                    .http2_adaptive_window(true)
                    .user_agent(concat!("proxima/", env!("CARGO_PKG_VERSION")))
                    // An upstream redirect is answered, not followed: re-sending a POST body to
                    // wherever a provider points is not the gateway's call (and skips a layer).
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(HttpClient {
            clients,
            next: AtomicUsize::new(0),
        })
    }

    /// A client for the next request, in turn.
    pub fn client(&self) -> &reqwest::Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }
}

impl HttpClient {
    /// POSTs a JSON body. A non-success status becomes a classified error here, so adapters
    /// only ever see successful responses.
    pub async fn post_json(
        &self,
        provider: &str,
        url: impl reqwest::IntoUrl,
        headers: &HeaderMap,
        body: Vec<u8>,
    ) -> Result<reqwest::Response> {
        let response = self
            .client()
            .post(url)
            .headers(headers.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| upstream_error::transport(provider, e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        Err(upstream_error::from_status(
            provider, status, &headers, &body,
        ))
    }
}

/// The whole body of a successful response.
pub async fn read_body(provider: &str, response: reqwest::Response) -> Result<Bytes> {
    response
        .bytes()
        .await
        .map_err(|e| upstream_error::transport(provider, e))
}

/// Parses an upstream body, saying which provider sent what when it is not the expected shape.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    provider: &str,
    body: &[u8],
    what: &str,
) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        Error::upstream(format!(
            "provider `{provider}` returned something that is not {what}: {e}"
        ))
    })
}

/// Encodes a request body.
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(crate::surface::JSON_CAPACITY);
    serde_json::to_writer(&mut body, value)
        .map_err(|e| Error::internal(format!("cannot encode the upstream request: {e}")))?;
    Ok(body)
}

/// The provider's API root without a trailing slash, or the provider's public one.
pub fn base_url(config: &ProviderConfig, default: &str) -> String {
    config
        .base_url
        .as_deref()
        .unwrap_or(default)
        .trim_end_matches('/')
        .to_owned()
}

/// The headers every request to a provider carries: the configured extra headers, then the
/// credential (`name: value`, marked sensitive so it never shows in debug output).
pub fn provider_headers(
    provider: &str,
    config: &ProviderConfig,
    credential: Option<(HeaderName, String)>,
) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    // Validation has already refused invalid names and values; skipping here cannot hide one.
    for (k, v) in &config.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    if let Some((name, value)) = credential {
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            Error::internal(format!(
                "provider `{provider}`: the API key has characters not allowed in a header"
            ))
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}
