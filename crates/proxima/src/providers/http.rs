//! The upstream HTTP client shared by all providers.
//!
//! reqwest multiplexes every request to one host over a single HTTP/2 connection, which caps
//! concurrency at the server's stream limit (often 100). Keeping a few independent clients and
//! spreading requests over them gives several connections instead. For HTTP/1.1 upstreams each
//! client pools connections as usual.
//!
//! The classification of upstream HTTP and transport failures, the same for every provider,
//! lives here too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::config::ProviderConfig;
use crate::error::{Error, ErrorKind, Result};

/// How much of an unparseable upstream error body is quoted back.
const QUOTE_LIMIT: usize = 300;

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

/// The error for a non-success upstream status, the same for every provider: `detail` is the
/// upstream's own message, `retry_after` what it asked for on 429.
pub fn status_error(
    provider: &str,
    status: StatusCode,
    detail: &str,
    retry_after: Option<Duration>,
) -> Error {
    let code = status.as_u16();
    match code {
        // Worth retrying elsewhere or later; the router honours `retry_after`.
        429 => Error::new(
            ErrorKind::UpstreamRateLimited,
            format!("provider `{provider}` is rate limiting (429): {detail}"),
        )
        .with_retry_after(retry_after),
        // The gateway's credentials, not the client's: an upstream failure, not a 401 to pass on.
        401 | 403 => Error::upstream(format!(
            "provider `{provider}` refused the gateway's credentials ({code}): {detail}"
        )),
        408 => Error::new(
            ErrorKind::UpstreamTimeout,
            format!("provider `{provider}` timed out (408): {detail}"),
        ),
        // The request itself is wrong: another target would refuse it too.
        400..=499 => Error::new(
            ErrorKind::UpstreamRejected(code),
            format!("provider `{provider}` rejected the request ({code}): {detail}"),
        ),
        _ => Error::upstream(format!("provider `{provider}` failed ({code}): {detail}")),
    }
}

/// An error from the connection itself, for any provider. The URL is left out: it is the
/// operator's business (and may carry a key in its query).
pub fn transport_error(provider: &str, e: reqwest::Error) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::UpstreamTimeout
    } else {
        ErrorKind::Upstream
    };
    let what = if e.is_connect() {
        "cannot connect to"
    } else if e.is_body() || e.is_decode() {
        "broke off the answer from"
    } else {
        "request failed to"
    };
    Error::new(
        kind,
        format!(
            "{what} provider `{provider}`: {}",
            source_chain(&e.without_url())
        ),
    )
}

/// The start of an error body that is not in the provider's error shape (an HTML page from a
/// proxy, truncated JSON ...), so the message still says something.
pub fn quote_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "no error message".into();
    }
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
