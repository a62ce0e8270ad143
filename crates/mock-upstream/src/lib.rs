//! A scriptable fake LLM provider that speaks OpenAI's, Anthropic's and Gemini's wire formats,
//! for tests and the benchmark.
//!
//! Start one with [`MockUpstream::start`], point the code under test at [`MockUpstream::url`]
//! (OpenAI paths under `/v1`, Anthropic's `/v1/messages`, Gemini's under
//! `/v1beta/models/{model}:{method}`), and either let
//! it answer with the default behaviour of that API (echoing the last user message, calling
//! tools, embedding deterministically, refusing what the real API refuses) or
//! [`MockUpstream::enqueue`] scripted [`Reply`]s for the next requests: errors, garbage, broken
//! streams, dropped connections.
//!
//! A prompt can steer the default behaviour where no script can reach (a separate `mock-upstream`
//! process behind a real coding agent): `mock-call: NAME {"json": "input"}` in the last user turn
//! makes the OpenAI and Anthropic APIs call the offered tool `NAME` with that input,
//! `mock-no-tools` makes them answer with text though tools are offered, and
//! `mock-fragments: N` makes every API stream its text (and tool input) in pieces of N
//! characters that cut through words, as real providers' token boundaries do.
//!
//! `/mcp` is a small MCP server (streamable HTTP) with tools `echo`, `add` and `fail`, for the
//! gateway's MCP client; the headers it received are recorded like every request's.
//!
//! `POST /v1/traces` takes OTLP/HTTP span batches like a collector (200, nothing decoded), so
//! the benchmark can point the gateway's trace export at the same process.

mod anthropic;
mod echo;
mod gemini;
mod mcp;
mod openai;
mod record;
mod script;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use record::Received;
pub use script::Reply;

use server::Shared;

/// How a mock server behaves independently of any scripted reply.
#[derive(Clone, Debug)]
pub struct Options {
    /// Waited before the head of every default reply, streaming or not (time to first byte).
    pub latency: Duration,
    /// Waited between the events of a streamed reply, as a model writes tokens, unless the
    /// reply has a [`Reply::chunk_delay`] of its own.
    pub event_gap: Duration,
    /// Keep every request for [`MockUpstream::received`]; turn off under load so memory stays flat.
    pub record: bool,
}

impl Default for Options {
    /// No latency, recording on: what tests want.
    fn default() -> Self {
        Options {
            latency: Duration::ZERO,
            event_gap: Duration::ZERO,
            record: true,
        }
    }
}

/// A running mock server. Clones share the server; it stops when the last clone is dropped
/// or when [`MockUpstream::shutdown`] is called.
#[derive(Clone, Debug)]
pub struct MockUpstream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addr: SocketAddr,
    shared: Arc<Shared>,
    // Dropping the sender (last handle gone) wakes every server task just like sending `true`.
    stop: watch::Sender<bool>,
}

impl MockUpstream {
    /// Starts a recording server with no latency on an ephemeral port of 127.0.0.1.
    pub async fn start() -> std::io::Result<MockUpstream> {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(addr, Options::default()).await
    }

    /// Starts a server on `addr` (port 0 picks a free one). Must be called inside a Tokio runtime.
    pub async fn start_on(addr: SocketAddr, options: Options) -> std::io::Result<MockUpstream> {
        let listener = server::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(options));
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(server::serve(listener, Arc::clone(&shared), stopped));
        Ok(MockUpstream {
            inner: Arc::new(Inner { addr, shared, stop }),
        })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Base URL without a path, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Queues `reply` for the next request on any path; replies are used first in, first out,
    /// and the default behaviour answers once the queue is empty.
    pub fn enqueue(&self, reply: Reply) {
        self.inner.shared.enqueue(reply);
    }

    /// Every request received so far, in arrival order (empty when recording is off).
    pub fn received(&self) -> Vec<Received> {
        self.inner.shared.received()
    }

    /// How many requests were received, counted even when recording is off.
    pub fn request_count(&self) -> usize {
        self.inner.shared.request_count()
    }

    /// Forgets received requests (and the count) and drops queued replies.
    pub fn clear(&self) {
        self.inner.shared.clear();
    }

    /// Stops accepting and closes every open connection, including hanging ones.
    pub fn shutdown(&self) {
        self.inner.stop.send_replace(true);
    }
}
