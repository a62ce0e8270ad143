//! Plain-http upstreams (self-hosted models: vLLM, Ollama, TGI) over HTTP/1.1 connections that
//! the request's own task drives.
//!
//! A pooled client runs each connection as a task of its own and hands the answer over a
//! channel that holds one chunk. A streamed answer then costs two task switches per event: the
//! connection's task decodes a chunk and waits, the request's task takes it and wakes the
//! connection's again. Here the request's task polls the connection itself whenever the body
//! has nothing ready, so a burst of events that arrived together is decoded and passed on in
//! one go, and the client's connection writes it in one go. Between requests a connection
//! rests, undriven, in its worker's idle list, which a sweeper task clears of connections
//! that rested too long or that their upstream closed; a connection found closed when taken
//! gives the request back unsent, which then goes out on a fresh one.
//!
//! HTTPS upstreams stay with the pooled client: they may speak HTTP/2, whose connections many
//! requests share.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::{http1, TrySendError};
use hyper_util::client::legacy::connect::Connection as _;
use tokio::time::Instant;
use tower_service::Service;

use super::connector::{BoxError, Conn, Connector};
use super::HttpError;
use crate::worker;

/// How long an unused connection is kept; the pooled client's figure.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Unused connections kept per destination and worker; more are closed.
const MAX_IDLE_PER_HOST: usize = 1024;

/// How much of a body its reader left unread is read when the body is dropped, to keep the
/// connection; with more left, it is closed instead.
const DRAIN_LIMIT: usize = 64 * 1024;

/// The unused connections, one list per worker: a connection's socket belongs to the runtime
/// of the worker that opened it.
pub struct Idle {
    workers: Vec<WorkerIdle>,
}

#[derive(Default)]
struct WorkerIdle {
    resting: Mutex<ByDestination>,
    /// Whether the worker's sweeper runs: started with the first connection put to rest.
    swept: AtomicBool,
}

/// A worker's resting connections, most recently used last.
type ByDestination = HashMap<Authority, Vec<Resting>, foldhash::fast::RandomState>;

struct Resting {
    conn: Http1Conn,
    since: Instant,
}

/// One HTTP/1.1 connection: the handle requests are sent through and the state machine that
/// does the reading and writing, polled by whoever uses the connection.
pub struct Http1Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    /// `None` once the connection has ended. Boxed: large, and moved with every request.
    driver: Option<Box<Driver>>,
    /// To a proxy: requests carry the absolute URI.
    proxied: bool,
    /// What a request drives the connection with while it waits on it; `waker` wakes `wakes`.
    wakes: Arc<WakeFilter>,
    waker: Waker,
}

/// The waker a request drives its connection with while waiting for the response head or a
/// body chunk. It passes wakes on to the request's task, except those that come while the task
/// itself drives the connection: those are the connection's answers to what the task just did
/// (a chunk handed over, a chunk taken), and without this filter each would make the task run
/// again for nothing once per event. A wake that the drive may not have answered (another
/// thread's, or the connection yielding) is passed on when there is nothing to return.
#[derive(Default)]
struct WakeFilter {
    task: AtomicWaker,
    driving: AtomicBool,
    missed: AtomicBool,
}

impl std::task::Wake for WakeFilter {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.driving.load(Ordering::SeqCst) {
            self.missed.store(true, Ordering::SeqCst);
            // The drive may have ended before `missed` was set: then nobody will look.
            if self.driving.load(Ordering::SeqCst) {
                return;
            }
        }
        self.task.wake();
    }
}

/// What reads and writes a connection's socket.
type Driver = http1::Connection<Conn, Full<Bytes>>;

/// A response body read from a connection that this body drives, and which goes back to the
/// idle list once the body has been read to its end.
pub struct DrivenBody {
    body: Incoming,
    conn: Option<Http1Conn>,
    destination: Authority,
    idle: Arc<Idle>,
}

impl Idle {
    pub fn new() -> Idle {
        let workers = worker::count_for_this_process().max(1);
        Idle {
            workers: (0..workers).map(|_| WorkerIdle::default()).collect(),
        }
    }

    fn mine(&self) -> usize {
        worker::current().index % self.workers.len()
    }

    fn resting(&self, worker: usize) -> std::sync::MutexGuard<'_, ByDestination> {
        self.workers[worker]
            .resting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used connection to `destination` that is still open, if any. (The
    /// sweeper closes the others in time.)
    fn take(&self, destination: &Authority) -> Option<Http1Conn> {
        let mut idle = self.resting(self.mine());
        let resting = idle.get_mut(destination)?;
        while let Some(Resting { conn, since }) = resting.pop() {
            if since.elapsed() >= IDLE_TIMEOUT {
                // The rest rested longer still.
                resting.clear();
                break;
            }
            if conn.sender.is_ready() && conn.driver.is_some() {
                return Some(conn);
            }
        }
        None
    }

    fn put(self: &Arc<Self>, destination: Authority, conn: Http1Conn) {
        let worker = self.mine();
        if !self.workers[worker].swept.swap(true, Ordering::Relaxed) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(sweep(Arc::downgrade(self), worker));
            }
        }
        let mut idle = self.resting(worker);
        let resting = idle.entry(destination).or_default();
        if resting.len() < MAX_IDLE_PER_HOST {
            resting.push(Resting {
                conn,
                since: Instant::now(),
            });
        }
    }
}

/// Closes, every half idle timeout, the worker's connections that rested too long or that
/// their upstream closed (a server's keep-alive timeout), so that none stays open for a
/// destination no longer asked. Ends with the client.
async fn sweep(idle: Weak<Idle>, worker: usize) {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT / 2).await;
        let Some(idle) = idle.upgrade() else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        idle.resting(worker).retain(|_, resting| {
            resting.retain_mut(|r| {
                // Reads a close that came while it rested.
                r.conn.drive(&mut cx);
                r.since.elapsed() < IDLE_TIMEOUT && r.conn.driver.is_some()
            });
            !resting.is_empty()
        });
    }
}

/// Sends `request` (absolute URI, `http` scheme) on a resting connection to its destination,
/// or on a new one. The response's body drives the connection from then on.
pub async fn send(
    idle: &Arc<Idle>,
    connector: &Connector,
    mut request: Request<Full<Bytes>>,
) -> Result<(http::response::Parts, DrivenBody), HttpError> {
    let uri = request.uri().clone();
    let Some(destination) = uri.authority().cloned() else {
        return Err(HttpError::Connect(format!("no host in `{uri}`").into()));
    };
    if !request.headers().contains_key(http::header::HOST) {
        // Without any `user:password@` the URI may carry.
        let host = destination.as_str().rsplit('@').next().unwrap_or_default();
        let host = HeaderValue::from_str(host).map_err(|e| HttpError::Connect(e.into()))?;
        request.headers_mut().insert(http::header::HOST, host);
    }
    loop {
        let (mut conn, resting) = match idle.take(&destination) {
            Some(conn) => (conn, true),
            // Boxed: opening holds the handshake (2.5 KB), and every request's future, up
            // through the provider and the router, would carry that room and copy it.
            None => (
                Box::pin(Http1Conn::open(connector, uri.clone())).await?,
                false,
            ),
        };
        *request.uri_mut() = if conn.proxied {
            uri.clone()
        } else {
            origin_form(&uri)
        };
        match conn.exchange(request).await {
            Ok(response) => {
                let (head, body) = response.into_parts();
                let body = DrivenBody {
                    body,
                    conn: Some(conn),
                    destination,
                    idle: idle.clone(),
                };
                return Ok((head, body));
            }
            // The connection had closed while it rested, before any of the request went out:
            // safe to send again, on a fresh one.
            Err(mut failed) => match failed.take_message() {
                Some(unsent) if resting => request = unsent,
                _ => return Err(HttpError::Exchange(failed.into_error())),
            },
        }
    }
}

/// `/path?query` of `uri`, as a request line to the destination itself carries it.
fn origin_form(uri: &Uri) -> Uri {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(path)
}

impl Http1Conn {
    async fn open(connector: &Connector, uri: Uri) -> Result<Http1Conn, HttpError> {
        let io = connector
            .clone()
            .call(uri)
            .await
            .map_err(HttpError::Connect)?;
        let proxied = io.connected().is_proxied();
        let (sender, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| HttpError::Connect(BoxError::from(e)))?;
        let wakes = Arc::new(WakeFilter::default());
        Ok(Http1Conn {
            sender,
            driver: Some(Box::new(driver)),
            proxied,
            waker: Waker::from(wakes.clone()),
            wakes,
        })
    }

    /// Reads and writes what the connection can, without waiting.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = self.driver.as_mut() {
            if Pin::new(&mut **driver).poll(cx).is_ready() {
                self.driver = None;
            }
        }
    }

    /// Polls `ready`, and if it is not, drives the connection and polls it again: what the
    /// connection hands over (a response head, a body chunk) is taken in the same turn. The
    /// connection is driven through the wake filter (see [`WakeFilter`]).
    fn drive_for<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut ready: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.wakes.task.register(cx.waker());
        self.wakes.driving.store(true, Ordering::SeqCst);
        let waker = self.waker.clone();
        let mut filtered = Context::from_waker(&waker);
        let mut polled = ready(&mut filtered);
        if polled.is_pending() {
            // Whatever woke the connection so far, the drive answers.
            self.wakes.missed.store(false, Ordering::SeqCst);
            self.drive(&mut filtered);
            polled = ready(&mut filtered);
        }
        self.wakes.driving.store(false, Ordering::SeqCst);
        if polled.is_pending() && self.wakes.missed.swap(false, Ordering::SeqCst) {
            cx.waker().wake_by_ref();
        }
        polled
    }

    /// Sends `request` and waits for the response head, driving the connection meanwhile.
    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, TrySendError<Request<Full<Bytes>>>> {
        let mut response = std::pin::pin!(self.sender.try_send_request(request));
        poll_fn(|cx| self.drive_for(cx, |cx| response.as_mut().poll(cx))).await
    }
}

impl DrivenBody {
    /// The body has ended: the connection rests, if it can take another request.
    fn release(&mut self, cx: &mut Context<'_>) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // Lets the connection see the message's end and ask for the next.
        conn.drive(cx);
        if conn.driver.is_some() && conn.sender.is_ready() {
            self.idle.put(self.destination.clone(), conn);
        }
    }
}

impl Drop for DrivenBody {
    /// A reader may stop before the body's end: an SSE reader stops at the last event, before
    /// the chunked body's terminator. What is left and already arrived is read now, so that
    /// the connection rests instead of closing (a new connection per stream costs more than
    /// the rest of the request). Nothing here waits.
    fn drop(&mut self) {
        if self.conn.is_none() {
            return;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut left = 0;
        while left <= DRAIN_LIMIT {
            match Pin::new(&mut *self).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => left += frame.data_ref().map_or(0, Bytes::len),
                // The end: `poll_frame` let the connection rest.
                Poll::Ready(None) => return,
                Poll::Ready(Some(Err(_))) | Poll::Pending => return,
            }
        }
    }
}

impl Body for DrivenBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let body = &mut this.body;
        let Some(conn) = this.conn.as_mut() else {
            // Ended, or the connection is gone: the body says so itself.
            return Pin::new(body).poll_frame(cx);
        };
        // The connection hands the body at most one chunk per turn.
        let frame = conn.drive_for(cx, |cx| Pin::new(&mut *body).poll_frame(cx));
        if let Poll::Ready(None) = frame {
            this.release(cx);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    use futures_util::StreamExt;
    use http::HeaderMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use crate::http_client::{HttpClient, UpstreamResponse};

    /// How an upstream test server treats a connection after answering.
    #[derive(Clone, Copy)]
    enum After {
        KeepOpen,
        /// Closes it a moment later without saying so, as a server whose keep-alive timeout
        /// passed: the client has put the connection to rest by then.
        CloseSoon,
        /// Writes the rest of the answer a moment later, and keeps it open.
        ThenLater(&'static str),
    }

    /// An HTTP/1.1 server answering every request with `answer` (a whole response).
    struct Upstream {
        url: String,
        /// Connections accepted.
        accepted: Arc<AtomicUsize>,
        /// Connections the client closed.
        closed: Arc<AtomicUsize>,
    }

    async fn upstream(answer: &'static str, after: After) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (accepts, closes) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                accepts.fetch_add(1, Ordering::SeqCst);
                let closes = closes.clone();
                tokio::spawn(async move {
                    if serve(socket, answer, after).await {
                        closes.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Upstream {
            url,
            accepted,
            closed,
        }
    }

    /// Serves one connection; true when the client closed it.
    async fn serve(mut socket: TcpStream, answer: &'static str, after: After) -> bool {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // A request head (the tests send bodiless GETs).
            while memchr::memmem::find(&seen, b"\r\n\r\n").is_none() {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let end = memchr::memmem::find(&seen, b"\r\n\r\n").unwrap() + 4;
            seen.drain(..end);
            if socket.write_all(answer.as_bytes()).await.is_err() {
                return true;
            }
            match after {
                After::KeepOpen => {}
                After::CloseSoon => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return false;
                }
                After::ThenLater(rest) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if socket.write_all(rest.as_bytes()).await.is_err() {
                        return true;
                    }
                }
            }
        }
    }

    const PLAIN: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    /// Three events in one burst, each its own chunk, then the end.
    const EVENTS: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
        6\r\nfirst\n\r\n7\r\nsecond\n\r\n6\r\nthird\n\r\n0\r\n\r\n";

    /// A GET's answer, its body still to read.
    async fn open(client: &HttpClient, url: &str) -> UpstreamResponse {
        let response = client
            .get(url.parse().unwrap(), HeaderMap::new())
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        response
    }

    async fn get(client: &HttpClient, url: &str) -> String {
        let body = open(client, url).await.bytes().await.unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_read_to_its_end_serves_the_next_request() {
        let Upstream { url, accepted, .. } = upstream(PLAIN, After::KeepOpen).await;
        let client = HttpClient::with_proxy(None).unwrap();
        for _ in 0..3 {
            assert_eq!(get(&client, &url).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_resting_past_the_idle_timeout_is_closed() {
        let Upstream { url, closed, .. } = upstream(PLAIN, After::KeepOpen).await;
        let client = HttpClient::with_proxy(None).unwrap();
        assert_eq!(get(&client, &url).await, "ok");
        tokio::time::pause();
        tokio::time::sleep(IDLE_TIMEOUT / 2).await;
        settle().await;
        assert_eq!(closed.load(Ordering::SeqCst), 0, "closed before its time");
        tokio::time::sleep(IDLE_TIMEOUT).await;
        settle().await;
        assert_eq!(
            closed.load(Ordering::SeqCst),
            1,
            "no request came for it, yet it stays"
        );
    }

    /// Lets the sockets' events arrive (the clock is paused, so no sleep of tokio's waits).
    async fn settle() {
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(5));
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_connection_closed_while_resting_is_replaced_without_an_error() {
        let Upstream { url, accepted, .. } = upstream(PLAIN, After::CloseSoon).await;
        let client = HttpClient::with_proxy(None).unwrap();
        assert_eq!(get(&client, &url).await, "ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(get(&client, &url).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_stream_yields_every_chunk_of_a_burst_and_its_connection_rests_after() {
        let Upstream { url, accepted, .. } = upstream(EVENTS, After::KeepOpen).await;
        let client = HttpClient::with_proxy(None).unwrap();
        for _ in 0..2 {
            let response = open(&client, &url).await;
            let chunks: Vec<Bytes> = response
                .bytes_stream()
                .map(|chunk| chunk.unwrap())
                .collect()
                .await;
            assert_eq!(chunks, ["first\n", "second\n", "third\n"]);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// The first event now, the others a moment later.
    fn events_apart() -> (&'static str, After) {
        let (first, rest) = EVENTS.split_at(EVENTS.find("7\r\n").unwrap());
        (first, After::ThenLater(rest))
    }

    async fn read_events_that_come_apart() {
        let (first, rest) = events_apart();
        let Upstream { url, .. } = upstream(first, rest).await;
        let client = HttpClient::with_proxy(None).unwrap();
        let chunks = open(&client, &url).await.bytes_stream();
        let chunks: Vec<Bytes> = tokio::select! {
            // First: a timer's wake polls the reader too, and would let it finish late.
            biased;
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                panic!("the events came 50 ms apart, but their reader was not woken")
            }
            chunks = chunks.map(|chunk| chunk.unwrap()).collect() => chunks,
        };
        assert_eq!(chunks, ["first\n", "second\n", "third\n"]);
    }

    #[tokio::test]
    async fn events_that_come_apart_each_wake_their_reader() {
        read_events_that_come_apart().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_that_come_apart_wake_their_reader_from_another_thread() {
        read_events_that_come_apart().await;
    }

    #[tokio::test]
    async fn a_body_dropped_with_only_its_end_unread_lets_its_connection_rest() {
        let Upstream { url, accepted, .. } = upstream(EVENTS, After::KeepOpen).await;
        let client = HttpClient::with_proxy(None).unwrap();
        for _ in 0..2 {
            let response = open(&client, &url).await;
            let mut chunks = response.bytes_stream();
            for _ in 0..3 {
                chunks.next().await.unwrap().unwrap();
            }
            // As an SSE reader stops at its last event, before the body's terminator.
            drop(chunks);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_left_unread_closes_its_connection() {
        // The other events come when the reader has gone.
        let (first, rest) = events_apart();
        let Upstream { url, accepted, .. } = upstream(first, rest).await;
        let client = HttpClient::with_proxy(None).unwrap();
        let response = open(&client, &url).await;
        let mut chunks = response.bytes_stream();
        assert_eq!(chunks.next().await.unwrap().unwrap(), "first\n");
        drop(chunks);
        // Its unread events must not be taken for the next answer.
        let response = open(&client, &url).await;
        let mut chunks = response.bytes_stream();
        assert_eq!(chunks.next().await.unwrap().unwrap(), "first\n");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let client = HttpClient::with_proxy(None).unwrap();
        let error = client
            .get(url.parse().unwrap(), HeaderMap::new())
            .await
            .err()
            .expect("nobody listens");
        assert!(error.is_connect(), "{error:?}");
        let message = crate::http_client::source_chain(&error);
        assert!(message.contains("refused"), "{message}");
    }
}
