//! Connections to upstreams: direct, or through the proxy the environment names.
//!
//! The client asks for a connection only when its pool has none for a destination, so the proxy
//! decision costs nothing per request. Through a proxy, an https destination is reached inside
//! a CONNECT tunnel (TLS end to end); a plain-http one by connecting to the proxy and marking the
//! connection proxied, so the client writes absolute-form request lines the proxy can forward.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::Scheme;
use http::{HeaderValue, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tower_service::Service;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Tcp = TokioIo<TcpStream>;

#[derive(Clone)]
pub struct Connector {
    direct: HttpsConnector<HttpConnector>,
    proxy: Option<Arc<Proxy>>,
}

struct Proxy {
    matcher: Matcher,
    /// To the proxy itself (TLS for an `https://` proxy), offering no ALPN: CONNECT and
    /// absolute-form requests are HTTP/1.1.
    to_proxy: HttpsConnector<HttpConnector>,
    /// For the destination inside a tunnel.
    tls: Arc<ClientConfig>,
}

impl Connector {
    /// `tls` is the destinations' TLS config, ALPN included.
    pub fn new(tcp: HttpConnector, tls: Arc<ClientConfig>, proxy: Option<Matcher>) -> Connector {
        let proxy = proxy.map(|matcher| {
            let mut plain = (*tls).clone();
            plain.alpn_protocols.clear();
            Arc::new(Proxy {
                matcher,
                to_proxy: HttpsConnector::from((tcp.clone(), plain)),
                tls: tls.clone(),
            })
        });
        Connector {
            direct: HttpsConnector::from((tcp, tls)),
            proxy,
        }
    }

    /// The `proxy-authorization` a request to `uri` carries: only plain-http requests through
    /// a proxy, which the proxy reads itself (a tunnel authenticates once, at CONNECT).
    pub fn proxy_authorization(&self, uri: &Uri) -> Option<HeaderValue> {
        let proxy = self.proxy.as_ref()?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return None;
        }
        proxy.matcher.intercept(uri)?.basic_auth().cloned()
    }
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Every inner connector is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let route = self
            .proxy
            .as_ref()
            .and_then(|proxy| Some((proxy, proxy.matcher.intercept(&dst)?)));
        let Some((proxy, via)) = route else {
            let connecting = self.direct.call(dst);
            return Box::pin(async move { Ok(Conn::Direct(connecting.await?)) });
        };
        if dst.scheme() == Some(&Scheme::HTTPS) {
            let mut tunnel = Tunnel::new(via.uri().clone(), proxy.to_proxy.clone());
            if let Some(auth) = via.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            let connecting = HttpsConnector::from((tunnel, proxy.tls.clone())).call(dst);
            Box::pin(async move { Ok(Conn::Tunneled(Box::new(connecting.await?))) })
        } else {
            let connecting = proxy.to_proxy.clone().call(via.uri().clone());
            Box::pin(async move { Ok(Conn::Proxied(connecting.await?)) })
        }
    }
}

pub enum Conn {
    Direct(MaybeHttpsStream<Tcp>),
    /// To a proxy that gets plain-http requests to forward.
    Proxied(MaybeHttpsStream<Tcp>),
    /// TLS to the destination inside a CONNECT tunnel through a proxy (boxed: two TLS states).
    Tunneled(Box<MaybeHttpsStream<MaybeHttpsStream<Tcp>>>),
}

/// What the client needs of a connection, as one trait so [`Conn`] can forward to any variant.
trait Io: Read + Write + Unpin {}

impl<T: Read + Write + Unpin> Io for T {}

impl Conn {
    fn io(self: Pin<&mut Self>) -> Pin<&mut dyn Io> {
        match self.get_mut() {
            Conn::Direct(s) | Conn::Proxied(s) => Pin::new(s),
            Conn::Tunneled(s) => Pin::new(s.as_mut()),
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Direct(s) => s.connected(),
            Conn::Proxied(s) => s.connected().proxy(true),
            Conn::Tunneled(s) => s.connected(),
        }
    }
}

impl Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Direct(s) | Conn::Proxied(s) => s.is_write_vectored(),
            Conn::Tunneled(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http::HeaderMap;
    use hyper_util::client::proxy::matcher::Matcher;
    use mock_upstream::MockUpstream;
    use tokio::io::{copy_bidirectional, AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    use crate::http_client::HttpClient;

    /// "Basic " and base64 of `user:secret`.
    const AUTH: &str = "Basic dXNlcjpzZWNyZXQ=";

    /// A forward proxy that records each request head: it refuses CONNECT (407) and forwards
    /// absolute-form requests to their origin.
    async fn start_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://user:secret@{}", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut client = BufReader::new(client);
                    let mut head = String::new();
                    while !head.ends_with("\r\n\r\n") {
                        if client.read_line(&mut head).await.unwrap() == 0 {
                            return;
                        }
                    }
                    seen.lock().unwrap().push(head.clone());
                    let target = head.split(' ').nth(1).unwrap().to_owned();
                    if head.starts_with("CONNECT ") {
                        let refusal = b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n";
                        client.write_all(refusal).await.unwrap();
                        return;
                    }
                    let uri: http::Uri = target.parse().unwrap();
                    let mut origin = TcpStream::connect(uri.authority().unwrap().as_str())
                        .await
                        .unwrap();
                    let head = head.replacen(&target, uri.path(), 1);
                    origin.write_all(head.as_bytes()).await.unwrap();
                    let _ = copy_bidirectional(&mut client, &mut origin).await;
                });
            }
        });
        (url, heads)
    }

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers
    }

    #[tokio::test]
    async fn plain_http_goes_through_the_proxy_with_its_credentials() {
        let mock = MockUpstream::start().await.unwrap();
        let (proxy, heads) = start_proxy().await;
        let client = HttpClient::with_proxy(Some(Matcher::builder().http(proxy).build())).unwrap();
        let url = format!("{}/v1/chat/completions", mock.url());
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
        let response = client
            .post(url.parse().unwrap(), json_headers(), body)
            .await
            .expect("answered through the proxy");
        let answer: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(answer["object"], "chat.completion");

        let heads = heads.lock().unwrap();
        assert_eq!(heads.len(), 1);
        assert!(
            heads[0].starts_with(&format!("POST {url} HTTP/1.1\r\n")),
            "absolute form: {}",
            heads[0]
        );
        assert!(heads[0].contains(&format!("proxy-authorization: {AUTH}\r\n")));
        assert_eq!(mock.received().len(), 1);
    }

    #[tokio::test]
    async fn https_is_tunneled_with_connect() {
        let (proxy, heads) = start_proxy().await;
        let client = HttpClient::with_proxy(Some(Matcher::builder().https(proxy).build())).unwrap();
        let url = "https://upstream.example/v1/chat/completions"
            .parse()
            .unwrap();
        let error = client
            .post(url, json_headers(), b"{}".to_vec())
            .await
            .err()
            .expect("the proxy refuses the tunnel");
        let message = crate::http_client::source_chain(&error);
        assert!(message.starts_with("client error (Connect)"), "{message}");
        assert!(!message.contains("secret"), "{message}");

        let heads = heads.lock().unwrap();
        assert!(
            heads[0].starts_with("CONNECT upstream.example:443 HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert!(heads[0].contains(&format!("Proxy-Authorization: {AUTH}\r\n")));
    }
}
