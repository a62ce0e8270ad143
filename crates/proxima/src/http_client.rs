//! The upstream HTTP client shared by all providers, without the per-request URL parsing and
//! middleware layers of a general-purpose client. Plain-http upstreams (self-hosted models)
//! get HTTP/1.1 connections that the request's own task drives ([`http1`]); https upstreams
//! go through hyper-util's pooled client over rustls.
//!
//! One pool multiplexes every request to a host over a single HTTP/2 connection, which caps
//! concurrency at the server's stream limit (often 100). Keeping a few independent pools and
//! spreading requests over them gives several connections instead. For HTTP/1.1 upstreams each
//! pool keeps connections as usual. Each worker thread has pools of its own: a pool's
//! connections run as tasks on the thread that opened them, so sharing one across workers
//! would wake another core on every request. Redirects are never followed: re-sending a POST
//! body to wherever a provider points is not the gateway's call, so a 3xx is answered as an
//! error.

mod connector;
mod http1;

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http::header::USER_AGENT;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;
use rustls_platform_verifier::BuilderVerifierExt;

use self::connector::Connector;
use crate::error::{Error, Result};
use crate::worker::{self, Worker};

/// Independent connection pools; enough to lift the HTTP/2 stream cap several times over. A
/// process with more workers than this has one pool per worker.
const POOLS: usize = 4;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub const USER_AGENT_VALUE: &str = concat!("proxima/", env!("CARGO_PKG_VERSION"));

pub struct HttpClient {
    /// For https upstreams.
    pools: Vec<Client<Connector, Full<Bytes>>>,
    /// Resting connections to plain-http upstreams.
    idle: Arc<http1::Idle>,
    /// The pools' connector, asked for the proxy credentials plain-http requests carry.
    connector: Connector,
}

/// A failure talking to an upstream, before or after the response head.
#[derive(Debug)]
pub enum HttpError {
    /// Through the pooled client (https): connecting, sending the request or reading the
    /// response head.
    Request(hyper_util::client::legacy::Error),
    /// Connecting to a plain-http upstream.
    Connect(connector::BoxError),
    /// Sending the request to a plain-http upstream or reading its response head.
    Exchange(std::io::Error),
    /// Reading the body.
    Body(connector::BoxError),
}

impl HttpError {
    /// Whether no connection could be made.
    pub fn is_connect(&self) -> bool {
        match self {
            HttpError::Request(e) => e.is_connect(),
            HttpError::Connect(_) => true,
            HttpError::Exchange(_) | HttpError::Body(_) => false,
        }
    }

    /// The failure itself, whose causes [`std::error::Error::source`] gives.
    pub fn inner(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            HttpError::Request(e) => e,
            HttpError::Connect(e) => e.as_ref(),
            HttpError::Exchange(e) => e,
            HttpError::Body(e) => e.as_ref(),
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self.inner(), f)
    }
}

impl std::error::Error for HttpError {
    // The inner error's own causes: this type only says which stage failed.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner().source()
    }
}

/// A response head, with the body still to read.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: UpstreamBody,
}

/// A body from the pooled client, or from a plain-http connection the body drives itself.
enum UpstreamBody {
    Pooled(Incoming),
    Driven(http1::DrivenBody),
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = connector::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<Bytes>, connector::BoxError>>>
    {
        match self.get_mut() {
            UpstreamBody::Pooled(body) => {
                std::pin::Pin::new(body).poll_frame(cx).map_err(Into::into)
            }
            UpstreamBody::Driven(body) => {
                std::pin::Pin::new(body).poll_frame(cx).map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pooled(body) => body.is_end_stream(),
            UpstreamBody::Driven(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            UpstreamBody::Pooled(body) => body.size_hint(),
            UpstreamBody::Driven(body) => body.size_hint(),
        }
    }
}

impl UpstreamResponse {
    /// The whole body.
    pub async fn bytes(self) -> std::result::Result<Bytes, HttpError> {
        let collected = self.body.collect().await.map_err(HttpError::Body)?;
        Ok(collected.to_bytes())
    }

    /// The body as it arrives, chunk by chunk.
    pub fn bytes_stream(
        self,
    ) -> impl Stream<Item = std::result::Result<Bytes, HttpError>> + Send + Unpin + 'static {
        BodyDataStream::new(self.body).map_err(HttpError::Body)
    }
}

impl HttpClient {
    /// A client using the proxies the environment names (`HTTPS_PROXY`, `HTTP_PROXY`,
    /// `ALL_PROXY`, `NO_PROXY`, or their lowercase forms).
    pub fn new() -> Result<HttpClient> {
        HttpClient::with_proxy(proxy_from_env())
    }

    /// A client sending requests the matcher intercepts through its proxy.
    pub fn with_proxy(proxy: Option<Matcher>) -> Result<HttpClient> {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // https:// destinations too; TLS is layered on top.
        tcp.enforce_http(false);
        // Finds upstreams that vanished mid-answer (long streams) without waiting on the OS.
        tcp.set_keepalive(Some(Duration::from_secs(15)));
        tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
        tcp.set_keepalive_retries(Some(3));
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        tcp.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        let connector = Connector::new(tcp, tls_config()?, proxy);

        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .http2_adaptive_window(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new());
        // Each `build` makes a pool of its own.
        let pools = (0..POOLS.max(worker::count_for_this_process()))
            .map(|_| builder.build(connector.clone()))
            .collect();
        Ok(HttpClient {
            pools,
            idle: Arc::new(http1::Idle::new()),
            connector,
        })
    }

    /// POSTs `body`; any status is an answer, only transport failures are errors.
    pub async fn post(
        &self,
        uri: Uri,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> std::result::Result<UpstreamResponse, HttpError> {
        self.send(Method::POST, uri, headers, Bytes::from(body))
            .await
    }

    pub async fn get(
        &self,
        uri: Uri,
        mut headers: HeaderMap,
    ) -> std::result::Result<UpstreamResponse, HttpError> {
        headers
            .entry(USER_AGENT)
            .or_insert(HeaderValue::from_static(USER_AGENT_VALUE));
        self.send(Method::GET, uri, headers, Bytes::new()).await
    }

    async fn send(
        &self,
        method: Method,
        uri: Uri,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> std::result::Result<UpstreamResponse, HttpError> {
        if let Some(auth) = self.connector.proxy_authorization(&uri) {
            headers.insert(http::header::PROXY_AUTHORIZATION, auth);
        }
        if uri.scheme() == Some(&http::uri::Scheme::HTTP) {
            let (status, headers, body) =
                http1::send(&self.idle, &self.connector, method, uri, headers, body).await?;
            return Ok(UpstreamResponse {
                status,
                headers,
                body: UpstreamBody::Driven(body),
            });
        }
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let response = self.pools[pool_for(worker::current(), self.pools.len())]
            .request(request)
            .await
            .map_err(HttpError::Request)?;
        let (head, body) = response.into_parts();
        Ok(UpstreamResponse {
            status: head.status,
            headers: head.headers,
            body: UpstreamBody::Pooled(body),
        })
    }
}

/// The pool `worker` sends its next request through: the pools whose index is the worker's
/// modulo the worker count, in turn. With more workers than pools, workers share them.
fn pool_for(worker: Worker, pools: usize) -> usize {
    thread_local! {
        static TURN: Cell<usize> = const { Cell::new(0) };
    }
    let turn = TURN.with(|turn| {
        let now = turn.get();
        turn.set(now.wrapping_add(1));
        now
    });
    if worker.count > pools {
        return worker.index % pools;
    }
    let first = worker.index % worker.count;
    let mine = (pools - first).div_ceil(worker.count);
    first + worker.count * (turn % mine)
}

/// TLS as the OS trusts it (its certificate store and revocation rules), with ring for the
/// cryptography, offering HTTP/2 and HTTP/1.1.
fn tls_config() -> Result<Arc<ClientConfig>> {
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_platform_verifier())
            .map_err(|e| Error::internal(format!("cannot set up TLS for upstreams: {e}")))?
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The environment's proxy settings, or `None` (no lookups per connection) when it names no
/// proxy at all.
fn proxy_from_env() -> Option<Matcher> {
    const VARS: [&str; 6] = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ];
    VARS.iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
        .then(Matcher::from_env)
}

/// An error's message followed by its causes'.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools_used(worker: Worker, pools: usize) -> Vec<usize> {
        let mut used: Vec<usize> = (0..2 * pools).map(|_| pool_for(worker, pools)).collect();
        used.sort_unstable();
        used.dedup();
        used
    }

    #[test]
    fn each_worker_sends_through_pools_of_its_own_in_turn() {
        let alone = Worker { index: 0, count: 1 };
        assert_eq!(pools_used(alone, 4), [0, 1, 2, 3]);
        let (first, second) = (Worker { index: 0, count: 2 }, Worker { index: 1, count: 2 });
        assert_eq!(pools_used(first, 4), [0, 2]);
        assert_eq!(pools_used(second, 4), [1, 3]);
        let third_of_three = Worker { index: 2, count: 3 };
        assert_eq!(pools_used(third_of_three, 4), [2]);
        assert_eq!(pools_used(Worker { index: 0, count: 3 }, 4), [0, 3]);
        // More workers than pools: shared, never out of range.
        assert_eq!(pools_used(Worker { index: 5, count: 6 }, 4), [1]);
    }
}
