//! The upstream HTTP client shared by all providers.
//!
//! reqwest multiplexes every request to one host over a single HTTP/2 connection, which caps
//! concurrency at the server's stream limit (often 100). Keeping a few independent clients and
//! spreading requests over them gives several connections instead. For HTTP/1.1 upstreams each
//! client pools connections as usual.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
