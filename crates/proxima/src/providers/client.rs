//! What every HTTP provider adapter does with the shared [`HttpClient`]: build headers and
//! URLs from its config, post JSON, and read the answer — with failures classified by
//! [`upstream_error`] for retries and for the client.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use super::upstream_error;
use crate::config::ProviderConfig;
use crate::error::{Error, Result};
use crate::http_client::{HttpClient, UpstreamResponse, USER_AGENT_VALUE};

/// POSTs a JSON body to `provider`: a success status is the answer, any other status or a
/// transport failure is an [`Error`] classified for retries.
pub async fn post_json(
    http: &HttpClient,
    provider: &str,
    uri: Uri,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> Result<UpstreamResponse> {
    let mut headers = headers.clone();
    // The attempt's span, so the upstream's own spans join the caller's trace.
    if let Some(traceparent) = crate::telemetry::trace::upstream_traceparent() {
        headers.insert(crate::telemetry::trace::TRACEPARENT, traceparent);
    }
    let response = http
        .post(uri, headers, body)
        .await
        .map_err(|e| upstream_error::transport(provider, e))?;
    if response.status.is_success() {
        return Ok(response);
    }
    let status = response.status;
    let headers = response.headers.clone();
    let body = response.bytes().await.unwrap_or_default();
    Err(upstream_error::from_status(
        provider, status, &headers, &body,
    ))
}

pub async fn read_body(provider: &str, response: UpstreamResponse) -> Result<Bytes> {
    response
        .bytes()
        .await
        .map_err(|e| upstream_error::transport(provider, e))
}

/// An upstream URL, parsed. A bad one fails the request as an upstream error, as if sending it
/// had failed.
pub fn parse_url(provider: &str, url: &str) -> Result<Uri> {
    url.parse().map_err(|e| {
        Error::upstream(format!(
            "provider `{provider}`: `{url}` is not a valid URL: {e}"
        ))
    })
}

/// Parses an upstream body, saying which provider sent what when it is not the expected shape.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    provider: &str,
    body: &[u8],
    what: &str,
) -> Result<T> {
    crate::wire::from_json(body).map_err(|e| {
        Error::upstream(format!(
            "provider `{provider}` returned something that is not {what}: {e}"
        ))
    })
}

/// The `host` header of a provider at a plain `http://` URL (a self-hosted model, say), which
/// speaks HTTP/1: hyper would otherwise write it from the URL for every request (about 2,000
/// instructions each), and it is the same for all of them. Not for `https://`, where the
/// upstream may choose HTTP/2, which names the host another way.
fn plain_http_host(base_url: Option<&str>) -> Option<HeaderValue> {
    let uri: Uri = base_url?.parse().ok()?;
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return None;
    }
    let host = uri.host()?;
    match uri.port_u16().filter(|&port| port != 80) {
        Some(port) => HeaderValue::from_str(&format!("{host}:{port}")).ok(),
        None => HeaderValue::from_str(host).ok(),
    }
}

/// Encodes a request body.
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(crate::wire::JSON_CAPACITY);
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

/// The headers every request to a provider carries: the gateway's user agent (unless one is
/// configured) and the JSON content type, the configured extra headers, then the credential
/// (`name: value`, marked sensitive so it never shows in debug output). Built once, so a
/// request only clones them.
pub fn provider_headers(
    provider: &str,
    config: &ProviderConfig,
    credential: Option<(HeaderName, String)>,
) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    // Validation has already refused invalid names and values; skipping here cannot hide one.
    for (k, v) in &config.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    if let Some(host) = plain_http_host(config.base_url.as_deref()) {
        headers.entry(HOST).or_insert(host);
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
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::plain_http_host;

    #[test]
    fn a_plain_http_provider_names_its_host_once_as_hyper_would() {
        let host =
            |url: &str| plain_http_host(Some(url)).and_then(|v| v.to_str().ok().map(str::to_owned));
        assert_eq!(
            host("http://127.0.0.1:8000/v1").as_deref(),
            Some("127.0.0.1:8000")
        );
        assert_eq!(
            host("http://vllm.internal/v1").as_deref(),
            Some("vllm.internal")
        );
        // The default port and any user info are left out, as hyper leaves them out.
        assert_eq!(
            host("http://me:secret@vllm.internal:80/v1").as_deref(),
            Some("vllm.internal")
        );
        assert_eq!(host("http://[::1]:11434").as_deref(), Some("[::1]:11434"));
        // TLS upstreams may speak HTTP/2; the provider's public URL is one of them.
        assert_eq!(host("https://api.openai.com/v1"), None);
        assert_eq!(plain_http_host(None), None);
    }
}
